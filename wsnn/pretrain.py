"""Pretrain small_cnn on Fashion-MNIST's pretraining pool: FashionTags' ImageNet.

    python -m wsnn.pretrain --out=runs/pretrained/small_cnn_fashion_mnist.npz

The paper's VGG16 starts from ImageNet weights: features learnt with full
supervision on other images and another label set. This plays that role for
the embedded FashionTags benchmark (docs/fashion_tags.md, "Pretraining"):

  images  2x2 mosaics laid out as FashionTags' (56x56 grey, 1-4 items in
          random free cells, black empty cells; item classes uniform), built
          in memory from a seed, only from the pretraining pool (train images
          50,000-59,999, which no FashionTags mosaic shows; `fashion_tags.pools`).
          The pool's last 1/10 feeds only the held-out mosaics (the last 1/10
          of them), so the held-out score is on unseen photos;
  task    multi-label presence of 3 coarse groups (GROUPS), none of them a
          benchmark label: tops, long garments, footwear and bags. What the
          benchmark scores (t-shirt vs shirt vs pullover vs coat, trouser vs
          dress, sandal vs sneaker vs boot vs bag) is still learnt from the
          noisy user tags;
  model   `models.build_model("small_cnn", 3, (56, 56, 1))`, SGD with momentum
          and a cosine learning-rate decay, sigmoid cross-entropy, one device;
          batch-norm statistics measured on training mosaics at the end
          (`recalibrate_batch_norm`).

The output is a backbone-weights .npz (`wsnn.backbone_weights`) that
`build_model(..., weights=PATH)` loads; its "__meta__" records the settings,
the pool, the source's SHA-256 and the held-out metrics. It is cached: when
PATH exists with the same settings and source, nothing is trained (--force
retrains). Exit status: 0 done, 1 missing or bad Fashion-MNIST, 2 bad flags.
"""

import dataclasses
import math
import os
import sys
import time

import numpy as np
from absl import flags

from wsnn import backbone_weights, checks, flags_lib, tf_start
from wsnn.config import check_fields, field
from wsnn.data import fashion_tags
from wsnn.data.dataset import DataError

BACKBONE = "small_cnn"
INPUT_SHAPE = (56, 56, 1)
DEFAULT_OUT = "runs/pretrained/small_cnn_fashion_mnist.npz"
TASK_NAME = "coarse_groups"
GROUPS = (("tops", ("t-shirt", "pullover", "coat", "shirt")),
          ("long_garments", ("trouser", "dress")),
          ("footwear_and_bags", ("sandal", "sneaker", "boot", "bag")))
TASK = {"name": TASK_NAME, "groups": {name: list(members) for name, members in GROUPS}}
# The class of Fashion-MNIST label c belongs to group CLASS_GROUP[c].
CLASS_GROUP = np.array([next(g for g, (_, members) in enumerate(GROUPS) if name in members)
                        for name in fashion_tags.LABELS])
HOLDOUT_DIVISOR = 10  # the last 1/10 of the mosaics (and of the pool's images) is held out
CALIBRATION_IMAGES = 2048  # training mosaics that set the batch-norm statistics at the end


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run (one flag per field)."""

    out: str = field("", "Output backbone-weights .npz (required), e.g. " + DEFAULT_OUT + ".")
    num_mosaics: int = field(24000, "Mosaics built from the pretraining pool; the last 1/10 are held out.")
    epochs: int = field(1, "Passes over the training mosaics (fresh mosaics cost nothing, so the "
                             "default is one pass over more of them).")
    batch_size: int = field(64, "Mosaics per SGD step.")
    learning_rate: float = field(0.05, "SGD learning rate at the start (cosine decay to 0 at the end).")
    momentum: float = field(0.9, "SGD momentum.")
    seed: int = field(0, "Seed of the mosaics, their order and the initialisation.", bounds=checks.SEED_BOUNDS)
    source_dir: str = field(fashion_tags.SOURCE_DIR, "Directory with Fashion-MNIST's gzipped IDX train "
                                                     "files (the test split is never read).")
    log_every_steps: int = field(50, "Progress line every this many steps.")
    force: bool = field(False, "Train even when --out is up to date.")

    def __post_init__(self):
        def fail(flag, why):
            raise ValueError(f"--{flag}={getattr(self, flag)}: {why}")
        if not self.out:
            raise ValueError("--out is required (e.g. --out=" + DEFAULT_OUT + ")")
        if not self.out.endswith(".npz"):
            fail("out", "must end in .npz")
        if self.num_mosaics < 2 * HOLDOUT_DIVISOR:
            fail("num_mosaics", f"must be >= {2 * HOLDOUT_DIVISOR}")
        checks.at_least_one(epochs=self.epochs, batch_size=self.batch_size, log_every_steps=self.log_every_steps)
        check_fields(self)  # the seed's bounds
        if not self.learning_rate > 0:
            fail("learning_rate", "must be > 0")
        if not 0 <= self.momentum < 1:
            fail("momentum", "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class Mosaics:
    """Pretraining mosaics and their coarse-group targets.

    Attributes:
      images: n x 56 x 56 x 1 uint8.
      groups: n x len(GROUPS) float32, 1 where a group is present.
      items: n x 4 int64, the Fashion-MNIST train index shown in each cell
        (row-major), -1 for an empty cell.
      num_train: mosaics [0, num_train) are for training, the rest held out.
    """

    images: np.ndarray
    groups: np.ndarray
    items: np.ndarray
    num_train: int


def build_mosaics(pool, num_mosaics, seed):
    """Builds pretraining mosaics deterministically from the pretraining pool.

    The layout rules are FashionTags' (k items with fashion_tags.ITEM_COUNT_PROBS,
    each in a random free cell of the 2x2 grid); item classes are uniform.
    Training mosaics use the pool's first 9/10 of images, held-out mosaics
    (the last num_mosaics // 10) only its last 1/10.

    Args:
      pool: `fashion_tags.Pool`, the pretraining pool.
      num_mosaics: n (>= 20).
      seed: the same seed gives identical mosaics.

    Returns:
      Mosaics.

    Raises:
      DataError: a class is missing from either part of the pool.
    """
    num_pool = len(pool.images)
    split = num_pool - num_pool // HOLDOUT_DIVISOR
    num_train = num_mosaics - num_mosaics // HOLDOUT_DIVISOR
    by_class = []
    for part, (lo, hi) in (("training", (0, split)), ("held-out", (split, num_pool))):
        members = [lo + np.flatnonzero(pool.classes[lo:hi] == c) for c in range(len(fashion_tags.LABELS))]
        missing = [fashion_tags.LABELS[c] for c, m in enumerate(members) if not len(m)]
        if missing:
            raise DataError(f"pretraining pool (train images {pool.start + lo}-{pool.start + hi - 1}, "
                            f"its {part} part): no images of class(es) {missing}")
        by_class.append(members)
    rng = np.random.Generator(np.random.PCG64(seed))
    images = np.zeros((num_mosaics, 56, 56, 1), np.uint8)
    groups = np.zeros((num_mosaics, len(GROUPS)), np.float32)
    items = np.full((num_mosaics, 4), -1, np.int64)
    for i in range(num_mosaics):
        members = by_class[0 if i < num_train else 1]
        k = int(rng.choice(fashion_tags.ITEM_COUNTS, p=fashion_tags.ITEM_COUNT_PROBS))
        free = [0, 1, 2, 3]
        for c in rng.integers(len(fashion_tags.LABELS), size=k):
            source = members[c][int(rng.integers(len(members[c])))]
            cell = free.pop(int(rng.integers(len(free))))
            r, q = divmod(cell, 2)
            images[i, 28 * r:28 * r + 28, 28 * q:28 * q + 28, 0] = pool.images[source]
            items[i, cell] = pool.start + source
            groups[i, CLASS_GROUP[c]] = 1
    return Mosaics(images, groups, items, num_train)


def settings(config, source_sha256):
    """What determines the weights: the cache key, recorded in "__meta__"."""
    return {"format_version": backbone_weights.FORMAT_VERSION, "backbone": BACKBONE,
            "input_shape": list(INPUT_SHAPE), "task": TASK, "fashion_tags_version": fashion_tags.VERSION,
            "num_mosaics": config.num_mosaics, "epochs": config.epochs, "batch_size": config.batch_size,
            "learning_rate": config.learning_rate, "momentum": config.momentum, "seed": config.seed,
            "source_sha256": source_sha256}


def stale_settings(config):
    """The settings in which `config.out` differs from `config` (["out"] if unreadable).

    Returns:
      [] when config.out is up to date, else the names of the differing settings.

    Raises:
      DataError: Fashion-MNIST is missing (its hash is part of the settings).
    """
    wanted = settings(config, fashion_tags.source_sha256(config.source_dir))
    if not os.path.isfile(config.out):
        return ["out"]
    try:
        meta = backbone_weights.read_meta(config.out)
    except ValueError:
        return ["out"]
    return [k for k, v in wanted.items() if meta.get(k) != v]


def _eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _nan_to_none(x):
    return None if math.isnan(x) else round(x, 6)


def heldout_metrics(probs, groups):
    """Coarse-group metrics of held-out predictions.

    Args:
      probs: n x len(GROUPS) predicted probabilities.
      groups: n x len(GROUPS) 0/1 targets.

    Returns:
      {"images", "accuracy" (of the n * 3 decisions at 0.5), "exact_match"
      (images with all 3 right), "mAP", "ap": {group: AP}} (None: no positive).
    """
    from wsnn import metrics

    right = (probs >= 0.5) == (groups > 0.5)
    ap = {}
    for g, (name, _) in enumerate(GROUPS):
        column = groups[:, g:g + 1]
        ap[name] = (metrics.mean_average_precision(probs[:, g:g + 1], column)
                    if column.any() else float("nan"))
    valid = [v for v in ap.values() if not math.isnan(v)]
    return {"images": int(len(probs)), "accuracy": round(float(right.mean()), 6),
            "exact_match": round(float(right.all(axis=1).mean()), 6),
            "mAP": _nan_to_none(float(np.mean(valid)) if valid else float("nan")),
            "ap": {k: _nan_to_none(v) for k, v in ap.items()}}


def recalibrate_batch_norm(model, images, batch_size):
    """Sets every batch-norm layer's moving statistics to their average over `images` ("precise BN").

    Moving averages lag the weights: the statistics they hold mix batches
    from many steps back, when the weights were different. Keras's default
    momentum (0.99) left the moving variance ~10x too large after the
    default 338 steps (held-out accuracy 0.57 instead of 0.96); small_cnn
    now uses momentum 0.9, and the statistics are still measured after
    training so that the saved file holds exact ones. They are measured as
    the network computes them in training mode: each layer's moving mean and
    variance become the averages of its per-batch mean and variance.

    Args:
      model: a model from `models.build_model`.
      images: uint8 images, a multiple of `batch_size` of them is used.
      batch_size: images per batch (as in training).
    """
    import keras
    import tensorflow as tf

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    probe = keras.Model(model.input, [layer.input for layer in layers])

    @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.uint8)])
    def moments(batch):
        # training=True: every layer normalises with batch statistics, as in a training step.
        # It also moves the layers' statistics, which are overwritten below.
        inputs = probe(tf.cast(batch, tf.float32), training=True)
        return [tf.nn.moments(x, axes=list(range(len(x.shape) - 1))) for x in inputs]

    num_batches = max(1, len(images) // batch_size)
    sums = None
    for b in range(num_batches):
        stats = [(m.numpy().astype(np.float64), v.numpy().astype(np.float64))
                 for m, v in moments(images[b * batch_size:(b + 1) * batch_size])]
        sums = stats if sums is None else [(sm + m, sv + v) for (sm, sv), (m, v) in zip(sums, stats)]
    for layer, (mean_sum, var_sum) in zip(layers, sums):
        layer.moving_mean.assign((mean_sum / num_batches).astype(np.float32))
        layer.moving_variance.assign((var_sum / num_batches).astype(np.float32))


def _print(line):
    print(line, flush=True)


def pretrain(config, log=_print):
    """Trains small_cnn on the coarse-group task and writes its backbone weights.

    Always trains (the cache check is `stale_settings`).

    Args:
      config: PretrainConfig.
      log: where progress lines go.

    Returns:
      The "__meta__" dict written to config.out.

    Raises:
      DataError: Fashion-MNIST is missing or malformed.
      RuntimeError: the loss became NaN or infinite.
    """
    pool = fashion_tags.pretraining_pool(config.source_dir)
    data = build_mosaics(pool, config.num_mosaics, config.seed)
    stop = pool.start + len(pool.images)
    split = pool.start + len(pool.images) - len(pool.images) // HOLDOUT_DIVISOR

    # Imported here so that flag and data errors come before TensorFlow loads.
    import keras
    import tensorflow as tf

    from wsnn import models

    keras.utils.set_random_seed(config.seed)
    model = models.build_model(BACKBONE, len(GROUPS), INPUT_SHAPE)
    steps_per_epoch = math.ceil(data.num_train / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps), momentum=config.momentum)

    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.uint8),
                                  tf.TensorSpec([None, len(GROUPS)], tf.float32)])
    def train_step(images, groups):
        with tf.GradientTape() as tape:
            probs = model(tf.cast(images, tf.float32), training=True)["tag_probs"]
            # The batch mean is the whole scaling: one device, no replicas to sum over.
            loss = tf.reduce_mean(keras.losses.binary_crossentropy(groups, probs))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.uint8)])
    def predict(images):
        return model(tf.cast(images, tf.float32), training=False)["tag_probs"]

    log(f"pretraining {BACKBONE} on {data.num_train} mosaics of Fashion-MNIST train images "
        f"{pool.start}-{split - 1} ({len(data.images) - data.num_train} held-out mosaics of "
        f"{split}-{stop - 1}): {config.epochs} epoch(s), {total_steps} steps of {config.batch_size}")
    order_rng = np.random.Generator(np.random.PCG64([config.seed, 1]))
    start = time.perf_counter()
    step, seen, running = 0, 0, []
    for epoch in range(config.epochs):
        order = order_rng.permutation(data.num_train)
        for b in range(steps_per_epoch):
            batch = order[b * config.batch_size:(b + 1) * config.batch_size]
            loss = float(train_step(data.images[batch], data.groups[batch]))
            if not math.isfinite(loss):
                raise RuntimeError(f"pretraining loss is {loss} at step {step + 1}; lower --learning_rate")
            step, seen = step + 1, seen + len(batch)
            running.append(loss)
            if step % config.log_every_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - start
                log(f"pretrain epoch {epoch + 1}/{config.epochs} step {step}/{total_steps} | "
                    f"loss {np.mean(running):.4f} | {seen / elapsed:.0f} img/s | "
                    f"ETA {_eta(elapsed / step * (total_steps - step))}")
                running = []
    calibration = data.images[order_rng.permutation(data.num_train)[:CALIBRATION_IMAGES]]
    recalibrate_batch_norm(model, calibration, config.batch_size)
    train_seconds = time.perf_counter() - start

    held = slice(data.num_train, None)
    probs = np.concatenate([np.asarray(predict(data.images[held][i:i + 256]))
                            for i in range(0, len(data.images) - data.num_train, 256)])
    result = heldout_metrics(probs, data.groups[held])
    meta = {**settings(config, pool.sha256),
            "pool": {"dataset": "Fashion-MNIST train split", "rule": "pretraining pool of FashionTags v2",
                     "indices": [pool.start, stop], "training_indices": [pool.start, split],
                     "heldout_indices": [split, stop]},
            "heldout": result, "steps": total_steps, "train_seconds": round(train_seconds, 1)}
    meta = models.save_backbone_weights(model, config.out, BACKBONE, meta)
    ap = ", ".join(f"{k} {v:.3f}" for k, v in result["ap"].items() if v is not None)
    log(f"held-out coarse groups ({result['images']} mosaics): accuracy {result['accuracy']:.3f}, "
        f"exact match {result['exact_match']:.3f}, mAP {result['mAP']:.3f} ({ap})")
    log(f"wrote {config.out} ({train_seconds:.0f} s of training)")
    return meta


def define_flags(flag_values=flags.FLAGS):
    """One flag per field of PretrainConfig."""
    flags_lib.define_flags(PretrainConfig, "wsnn.pretrain", flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """Parses `argv` (argv[0]: the program) into `flag_values` and runs; returns the exit status."""
    def error(status, message):
        print(f"wsnn.pretrain: {message}", file=sys.stderr)
        return status

    try:
        rest = flag_values(argv)
    except flags.Error as e:
        return error(2, f"flag error: {str(e).splitlines()[0]}")
    if len(rest) > 1:
        return error(2, f"unexpected arguments: {' '.join(rest[1:])}")
    try:
        config = flags_lib.from_flags(PretrainConfig, flag_values)
    except ValueError as e:
        return error(2, f"config error: {e}")
    try:
        stale = stale_settings(config)
        if not stale and not config.force:
            print(f"pretrained weights up to date: {config.out}")
            return 0
        if stale != ["out"] and not config.force:
            print(f"{config.out} was made with other {', '.join(stale)}; retraining")
        tf_start.start()
        pretrain(config)
    except (DataError, RuntimeError) as e:
        return error(1, f"error: {e}")
    return 0


def run():
    """Console-script entry point."""
    from absl import app, logging

    # Progress goes to stdout; TensorFlow's INFO lines would drown it.
    logging.set_verbosity(logging.WARNING)
    app.define_help_flags()  # --help, --helpshort, --helpfull, as under app.run
    define_flags()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
