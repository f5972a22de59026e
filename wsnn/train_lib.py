"""Training: stage 1 (phi_0, the Multi-CNN baseline) and stage 2 (Algorithm 2).

    stage 1  multi-label logistic loss on the user tags G;
             then phi_0's features of all training images give each image its
             M nearest candidates Z (exact, chunked; optionally in the first
             --candidate_dims principal components);
    stage 2  batches from Algorithm 1 (each anchor plus its m-1 nearest
             candidates under the current weights; or, with
             --neighbour_mode=fast, nearest in an embedding bank refreshed
             every --bank_refresh_steps) and
             L_final = L_vis + lambda1 L_sem + lambda2 L_err.

Both stages run the same two-level loop: an inner `tf.function` step run by
`strategy.run` under `tf.distribute.MirroredStrategy` (or
`MultiWorkerMirroredStrategy`: only the chief writes files), and an outer Python
loop that checkpoints, writes summaries, checks for NaN/Inf and prints
progress. The model, both optimisers and the checkpoint are built under
`strategy.scope()`.

Loss scaling happens in exactly one place: Keras (>= 3.8) divides each
`sum_over_batch_size` loss by `num_replicas_in_sync` when a strategy is
active, and the optimiser sums the replicas' gradients. The step therefore
neither divides nor averages again; the replicas' losses are summed for
reporting.

Resume order: an existing checkpoint in `<workdir>/<task>/checkpoints` always
wins. It holds the model, both optimisers and the position (stage, epoch,
step within the epoch); the data order of an epoch is a function of the seed
and the epoch, so a resumed run sees the same batches. Files that stage 1
leaves for stage 2 (candidates, phi_0's metrics) are written before the
checkpoint that moves the run into stage 2.

Outputs of a task, in `<workdir>/<task>/`: config.json, flags.txt,
checkpoints/, candidates.npy, stage1_metrics.json, refined_tags.npz,
refined_tags.tsv, metrics.json, neighbour_snapshots.json (a fixed query's
selected neighbours after each stage-2 epoch), export/<version>/ (the
SavedModel; see `wsnn.export`); summaries in `<workdir>/tensorboard/<task>/`.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from wsnn import config as config_lib
from wsnn import diagnostics, io_utils, losses, metrics, models, neighbours, prepare, semantics, tag_sets
from wsnn.baselines import trivial
from wsnn.data import dataset as dataset_lib
from wsnn.data import pipeline


IDENTITY_FILE = "data_identity.json"


class DataChanged(ValueError):
    """A task directory holds checkpoints or outputs of other data."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss."""


def make_strategy(num_devices, strategy="mirrored"):
    """The distribution strategy of a run.

    mirrored: MirroredStrategy over all GPUs, or over `num_devices` (logical)
    CPU devices. multi_worker: MultiWorkerMirroredStrategy over the cluster
    that the TF_CONFIG environment variable describes, each worker using its
    own GPUs (or its CPU).

    Logical CPU devices can only be made before TensorFlow initialises; the
    entry point calls this first.
    """
    if strategy == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise RuntimeError("--strategy=multi_worker: set TF_CONFIG to the cluster and this worker's task, "
                               'e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                               '"task": {"type": "worker", "index": 0}}')
        return tf.distribute.MultiWorkerMirroredStrategy()
    # list_physical_devices does not initialise the runtime; list_logical_devices does.
    if tf.config.list_physical_devices("GPU"):
        names = [d.name for d in tf.config.list_logical_devices("GPU")][:num_devices or None]
        return tf.distribute.MirroredStrategy(names)
    wanted = max(num_devices, 1)
    if wanted > 1:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * wanted)
        except RuntimeError:
            pass  # already initialised (e.g. by a test harness); checked below
    if len(tf.config.list_logical_devices("CPU")) < wanted:
        raise RuntimeError(f"--num_devices={num_devices}: TensorFlow was initialised with "
                           f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s) before the "
                           "strategy was made")
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:wanted]
    return tf.distribute.MirroredStrategy(cpus)


def worker_role(strategy):
    """(is this process the chief, its name) under `strategy`; a single process is the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, f"{task_type} {task_id}"


def weights_digest(model):
    """SHA-256 of every weight's bytes in order: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def load_or_prepare(prepare_config, chief=True, timeout_s=3600):
    """The prepared dataset in `<workdir>/prepared`, made if missing or stale.

    Stale: prepared with other settings (`prepare.settings`: paths resolved,
    the workdir itself not a setting) or from a source that changed since
    (`prepare.source_fingerprint`). Other workers than the chief never
    prepare: they wait up to `timeout_s` for the chief to write it (the
    workdir must be shared by all workers).
    """
    directory = os.path.join(prepare_config.workdir, "prepared")
    manifest = os.path.join(directory, "manifest.json")
    waited, started = False, time.monotonic()
    while True:
        if os.path.isfile(manifest):
            dataset = dataset_lib.load(directory)
            if dataset.info.get("prepare_settings") != prepare.settings(prepare_config):
                stale = "data settings changed"
            elif dataset.info.get("source_fingerprint") != prepare.source_fingerprint(prepare_config):
                stale = "the source files changed"
            else:
                return dataset
            if chief:
                print(f"{stale} since {directory} was written: preparing again", flush=True)
        if chief:
            dataset, timings = prepare.prepare(prepare_config)
            print(prepare.format_report(dataset, timings, {}), flush=True)
            return dataset
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"waited {timeout_s} s for the chief to prepare {directory}; is the workdir "
                               "shared by all workers, and did the chief fail?")
        if not waited:
            print(f"waiting for the chief to prepare {directory}", flush=True)
            waited = True
        time.sleep(1)


def split(num_images, task, train_fraction, seed, validation_fraction=0.0):
    """Training, validation and evaluation indices of a protocol.

    annotation: a seeded `train_fraction` of the images is the training part,
    the rest is evaluated; the first `validation_fraction` of the training
    part (in the seeded order) is held out of training as the validation
    split. refinement: every image is trained on (the paper refines them
    all); a seeded `validation_fraction` of them is the validation split and
    the rest is evaluated, so that no evaluated image's labels are read for
    selection.

    Returns:
      (train, validation, evaluation) sorted index arrays; validation is
      empty when `validation_fraction` is 0.
    """
    if task == "refinement":
        everything = np.arange(num_images)
        count = int(round(validation_fraction * num_images))
        if validation_fraction and not 0 < count < num_images:
            raise ValueError(f"--validation_fraction={validation_fraction} leaves no validation or no "
                             f"evaluation images of {num_images}")
        valid = np.sort(np.random.default_rng([seed, 2]).permutation(num_images)[:count])
        return everything, valid, np.setdiff1d(everything, valid)
    order = np.random.default_rng([seed, 1]).permutation(num_images)
    cut = max(1, int(round(train_fraction * num_images)))
    if cut >= num_images:
        raise ValueError(f"--train_fraction={train_fraction} leaves no test images of {num_images}")
    count = int(round(validation_fraction * cut))
    if validation_fraction and not 0 < count < cut:
        raise ValueError(f"--validation_fraction={validation_fraction} leaves no validation or no training "
                         f"images of the {cut} in the training part")
    return np.sort(order[count:cut]), np.sort(order[:count]), np.sort(order[cut:])


def label_scores(tag_probs, dataset):
    """N x L scores of the labels: each label's tag column (0 for a label without a tag)."""
    scores = np.zeros((len(tag_probs), dataset.num_labels), np.float32)
    for l, tag in enumerate(dataset.label_to_tag):
        if tag >= 0:
            scores[:, l] = tag_probs[:, tag]
    return scores


def _atomic_npy(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    io_utils.write_bytes(path, buffer.getvalue())


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
    """One task's run: model, optimisers, checkpoint, both stages and outputs."""

    def __init__(self, config, dataset, task, strategy):
        self.config, self.dataset, self.task, self.strategy = config, dataset, task, strategy
        self.dir = os.path.join(config.workdir, task)
        # Multi-worker: every worker computes and saves alike, but only the chief's files land in
        # the (shared) workdir; the others save into a scratch directory removed at the end.
        self.chief, self.role = worker_role(strategy)
        if self.chief:
            os.makedirs(self.dir, exist_ok=True)
        self.scratch = None if self.chief else tempfile.mkdtemp(prefix="wsnn-worker-")
        replicas = strategy.num_replicas_in_sync
        if config.batch_size % (config.group_size * replicas):
            raise ValueError(f"--batch_size={config.batch_size}: each of the {replicas} replicas needs whole "
                             f"groups; use a multiple of group_size x replicas = {config.group_size * replicas}")
        validation_fraction = config.validation_fraction if dataset.labels is not None else 0.0
        self.train_idx, self.valid_idx, self.eval_idx = split(
            dataset.num_images, task, config.train_fraction, config.seed, validation_fraction)
        self.train_set = dataset.subset(self.train_idx)
        self.valid_set = dataset.subset(self.valid_idx) if len(self.valid_idx) else None
        self.eval_set = dataset.subset(self.eval_idx)
        n = len(self.train_idx)
        self.num_candidates = min(config.num_candidates, n - 1)
        if config.group_size >= self.num_candidates:
            raise ValueError(f"--group_size={config.group_size}: needs more candidates than the "
                             f"{self.num_candidates} that {n} training images allow (m < M < N)")
        if self.num_candidates < config.num_candidates:
            print(f"[{task}] num_candidates capped at {self.num_candidates} (N = {n})", flush=True)
        channels = config.channels or self._dataset_channels()
        self.train_source = pipeline.ImageSource(self.train_set, config.image_size or None, channels)
        self.eval_source = pipeline.ImageSource(self.eval_set, config.image_size or None, channels)
        self.valid_source = (pipeline.ImageSource(self.valid_set, config.image_size or None, channels)
                             if self.valid_set is not None else None)
        self.input_shape = self.train_source.get([0]).shape[1:]
        # Stage 1: every image once; stage 2 (Algorithm 1): every image an anchor once, s/m per step.
        self.steps_per_epoch = {1: math.ceil(n / config.batch_size),
                                2: math.ceil(n / (config.batch_size // config.group_size))}
        self.user_tags = self.train_set.user_tags.toarray().astype(np.float32)

        tag_similarity, _ = semantics.tag_similarity(
            self.train_set, config.alpha, config.similarity_measure, config.ic_file or None,
            cache_dir=os.path.join(config.workdir, "prepared", "cache"))
        with strategy.scope():
            keras.utils.set_random_seed(config.seed)
            self.model = models.build_model(config.backbone, dataset.num_tags, self.input_shape, config.weights)
            self.optimizers = [keras.optimizers.SGD(
                keras.optimizers.schedules.ExponentialDecay(rate, config.lr_decay_epochs * self.steps_per_epoch[stage],
                                                            config.lr_decay_factor, staircase=True),
                momentum=config.momentum)
                for stage, rate in ((1, config.learning_rate),
                                    (2, config.stage2_learning_rate or config.learning_rate))]
            for optimizer in self.optimizers:
                optimizer.build(self.model.trainable_variables)
            self.logistic_loss = keras.losses.BinaryCrossentropy()
            self.final_loss = losses.WeaklySupervisedLoss(
                tag_similarity, config.group_size, config.lambda1, config.lambda2,
                config.stop_gradient_through_similarity, lambda_vis=config.lambda_vis,
                user_error=config.user_error)
        # The position is bookkeeping of the outer loop, not replicated state.
        self.stage = tf.Variable(1, dtype=tf.int64, trainable=False)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        with strategy.scope():
            self.checkpoint = tf.train.Checkpoint(
                model=self.model, stage1_optimizer=self.optimizers[0], stage2_optimizer=self.optimizers[1],
                stage=self.stage, epoch=self.epoch, step_in_epoch=self.step_in_epoch)
        self.checkpoint_dir = os.path.join(self.dir, "checkpoints")
        self.identity = dict(dataset_lib.identity(dataset), num_images=dataset.num_images,
                             num_tags=dataset.num_tags)
        if self.chief:
            self._check_identity()
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._output_dir("checkpoints"), max_to_keep=3 if self.chief else 1)
        self.writer = (tf.summary.create_file_writer(os.path.join(config.workdir, "tensorboard", task))
                       if self.chief else tf.summary.create_noop_writer())
        self.candidates = None  # Z, once stage 1 has computed or a warm start has read it
        self._build_steps()
        self.step_times = {1: [], 2: []}  # (step seconds, of which building the batch) per step
        self.bank_refresh_times = []
        # Per-epoch validation scores and diagnostics of both stages (history.json); the best
        # epoch's weights of the running stage are kept in best/ (see `_select`).
        self.history = self._read_json("history.json", [])
        self.epoch_diagnostics = {}

    def _dataset_channels(self):
        if self.dataset.image_array is not None:
            return 1 if self.dataset.image_array.ndim == 3 else 3
        return 3

    # ----- inner steps ---------------------------------------------------------------------------

    def _build_steps(self):
        model, strategy = self.model, self.strategy

        def logistic_replica(images, user_tags, optimizer):
            with tf.GradientTape() as tape:
                tag_probs = model(images, training=True)["tag_probs"]
                loss = self.logistic_loss(user_tags, tag_probs)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return {"loss": loss}

        def stage2_replica(images, user_tags):
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                terms = self.final_loss(outputs["features"], outputs["tag_probs"], user_tags)
            grads = tape.gradient(terms["total"], model.trainable_variables)
            self.optimizers[1].apply_gradients(zip(grads, model.trainable_variables))
            return terms

        def summed(per_replica):
            # Keras already divided each replica's loss by the replica count.
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        # Separate named functions rather than one factory or lambdas: AutoGraph caches what it
        # converts by code object and finds a lambda by its source line.
        @tf.function
        def stage1_step(images, user_tags):
            return summed(strategy.run(logistic_replica, args=(images, user_tags, self.optimizers[0])))

        @tf.function
        def stage2_step(images, user_tags):
            return summed(strategy.run(stage2_replica, args=(images, user_tags)))

        @tf.function
        def multi_cnn_step(images, user_tags):
            return summed(strategy.run(logistic_replica, args=(images, user_tags, self.optimizers[1])))

        spec = tf.TensorSpec([None, *self.input_shape], tf.uint8)

        @tf.function(input_signature=[spec])
        def embed(images):
            return model(images, training=False)["features"]

        @tf.function(input_signature=[spec])
        def predict(images):
            return model(images, training=False)["tag_probs"]

        @tf.function(input_signature=[spec])
        def features_and_logits(images):
            features = model(images, training=False)["features"]
            head = model.get_layer("tag_probs")
            return features, tf.matmul(features, head.kernel) + head.bias

        self._steps = {1: stage1_step, 2: stage2_step if self.config.stage2_objective == "ours" else multi_cnn_step}
        self._embed, self._predict, self._features_and_logits = embed, predict, features_and_logits

    def _distribute(self, *arrays):
        """Splits a global batch into contiguous per-replica shares (whole groups)."""
        replicas = self.strategy.num_replicas_in_sync
        share = len(arrays[0]) // replicas

        def value_fn(context):
            i = context.replica_id_in_sync_group
            return tuple(tf.constant(a[i * share:(i + 1) * share]) for a in arrays)
        return self.strategy.experimental_distribute_values_from_function(value_fn)

    # ----- helpers ----------------------------------------------------------------------------

    def embed(self, images):
        """phi of a uint8 batch with the current weights (chunked)."""
        return np.concatenate([self._embed(tf.constant(images[i:i + 1024])).numpy()
                               for i in range(0, len(images), 1024)])

    def predict(self, source, chunk=512):
        """Tag probabilities P of every image of an ImageSource."""
        out = [self._predict(tf.constant(source.get(np.arange(i, min(i + chunk, source.num_images))))).numpy()
               for i in range(0, source.num_images, chunk)]
        return np.concatenate(out)

    def features(self, source, chunk=512):
        """phi of every image of an ImageSource."""
        return np.concatenate([self.embed(source.get(np.arange(i, min(i + chunk, source.num_images))))
                               for i in range(0, source.num_images, chunk)])

    def validate(self):
        """The four metrics and the prediction spread of the current model on the validation split
        (None without one)."""
        if self.valid_source is None:
            return None
        probs = self.predict(self.valid_source)
        return dict(self._label_metrics(probs, self.valid_set), **diagnostics.prediction_spread(probs))

    def _label_metrics(self, tag_probs, subset):
        """The four metrics of tag probabilities P of `subset`'s images against its labels."""
        return metrics.evaluate(label_scores(tag_probs, self.dataset), subset.labels,
                                label_names=self.dataset.label_names)

    def evaluate(self, max_images=None):
        """The four metrics of the current model on the protocol's evaluation images."""
        if self.dataset.labels is None or max_images == 0:
            return None
        source, labels, idx = self.eval_source, self.eval_set.labels, None
        if max_images and source.num_images > max_images:
            idx = np.random.default_rng(self.config.seed).choice(source.num_images, max_images, replace=False)
            subset = self.eval_set.subset(np.sort(idx))
            source = pipeline.ImageSource(subset, self.config.image_size or None, self.input_shape[-1])
            labels = subset.labels
        probs = self.predict(source)
        return metrics.evaluate(label_scores(probs, self.dataset), labels, label_names=self.dataset.label_names)

    def _epoch_order(self, epoch, part=0):
        return np.random.default_rng([self.config.seed, 0, epoch] + ([1, part] if part else [])).permutation(
            len(self.train_idx))

    def _output_dir(self, name):
        """Where this process writes `name`: the task directory (chief) or its scratch directory."""
        return os.path.join(self.dir if self.chief else self.scratch, name)

    def _check_identity(self):
        """Refuses a task directory whose checkpoints or outputs come from other data (or whose
        data is unknown); records this data's identity in a fresh one."""
        path = os.path.join(self.dir, IDENTITY_FILE)
        fresh = " start fresh with another --workdir or with --overwrite"
        if not os.path.isfile(path):
            if tf.train.latest_checkpoint(self.checkpoint_dir) or os.path.isfile(
                    os.path.join(self.dir, "metrics.json")):
                raise DataChanged(f"{self.dir}: has checkpoints but no {IDENTITY_FILE}, so the data they "
                                  f"were trained on is unknown;{fresh}")
            io_utils.write_json(path, self.identity)
            return
        old = self._read_json(IDENTITY_FILE, {})
        if old.get("vocabulary_hash") != self.identity["vocabulary_hash"]:
            what = (f"the tag vocabulary changed ({old.get('num_tags')} tags then, {self.identity['num_tags']} "
                    "now, or the same count with other names)")
        elif old.get("data_hash") != self.identity["data_hash"]:
            what = (f"the images, tags or labels changed ({old.get('num_images')} images then, "
                    f"{self.identity['num_images']} now)")
        else:
            return
        raise DataChanged(f"{self.dir} was trained on other data: {what};{fresh}")

    def _save(self):
        """Saves a checkpoint numbered by the steps trained, and always above the last one (after
        a selection restores earlier weights, the step count can go back)."""
        latest = self.manager.latest_checkpoint
        last = int(latest.rsplit("-", 1)[1]) if latest else -1
        self.manager.save(checkpoint_number=max(self._global_step(), last + 1))

    def _global_step(self):
        """Steps trained so far, both stages (stage 1 may have stopped early)."""
        return int(self.optimizers[0].iterations.numpy()) + int(self.optimizers[1].iterations.numpy())

    def _read_json(self, name, default):
        path = os.path.join(self.dir, name)
        if not os.path.isfile(path):
            return default
        with open(path) as f:
            return json.load(f)

    # ----- the outer loop ---------------------------------------------------------------------

    def run(self):
        """Runs (or resumes) both stages and writes the task's outputs; returns metrics.json's dict.

        Resume order: this task's own checkpoint always wins; only a run with
        none starts stage 2 from `config.warm_start_from` (another run's
        phi_0), and only a run with neither trains stage 1.
        """
        done = self._read_json("metrics.json", None)
        if done is not None:
            # metrics.json is written last: the run is finished (its data checked in __init__).
            print(f"[{self.task}] already done: outputs in {self.dir} (metrics.json, refined_tags.tsv), export "
                  f"{done.get('export')}; to train again use --overwrite or another --workdir", flush=True)
            return done if self.chief else None
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)  # every worker resumes from the chief's
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            print(f"[{self.task}] resuming from {latest} (stage {int(self.stage)}, "
                  f"epoch {int(self.epoch) + 1}, step {int(self.step_in_epoch)})", flush=True)
        elif self.config.warm_start_from:
            self._warm_start(os.path.join(self.config.warm_start_from, self.task))
        if int(self.stage) == 1:
            if int(self.epoch) == 0 and int(self.step_in_epoch) == 0:
                self.history = []
                self._select(1, 0)  # the starting weights (random or pretrained) are epoch 0
            self._run_stage(1, self.config.stage1_epochs, self._stage1_batch)
            self._restore_best(1)
            self._finish_stage1()
        if int(self.stage) == 2 and self.config.stage2_objective == "multi_cnn":
            if int(self.epoch) == 0 and int(self.step_in_epoch) == 0:
                self._select(2, 0)
            self._run_stage(2, self.config.stage2_epochs, self._plain_batch)
            self._end_stage2()
        if int(self.stage) == 2:
            fast = self.config.neighbour_mode == "fast"
            if self.candidates is None:
                self.candidates = np.load(os.path.join(self.dir, "candidates.npy"))
            self.batches = neighbours.NeighbourBatches(
                self.train_source, self.user_tags, self.candidates,
                self.embed, self.config.batch_size, self.config.group_size, self.config.seed,
                bank=np.zeros((len(self.train_idx), self._feature_dim()), np.float32) if fast else None,
                shortlist=min(self.config.shortlist, self.num_candidates),
                extrapolation=self.config.bank_extrapolation)
            if fast:
                self._refresh_bank(int(self.epoch) * self.steps_per_epoch[2] + int(self.step_in_epoch))
            if int(self.epoch) == 0 and int(self.step_in_epoch) == 0:
                if self.chief:
                    self._snapshot_neighbours(0)
                self._select(2, 0)  # zero stage-2 epochs (phi_0 itself) is a candidate
            self._run_stage(2, self.config.stage2_epochs, self._stage2_batch)
            self._end_stage2()
        digest = weights_digest(self.model)
        print(f"[{self.task}] {self.role}: final weights sha256 {digest}", flush=True)
        if not self.chief:
            self.export(self._output_dir("export"), self.config.export_top_k)  # collective, as saving is
            shutil.rmtree(self.scratch, ignore_errors=True)
            return None
        return self._write_outputs(digest)

    def _warm_start(self, source):
        """Starts stage 2 from another run's phi_0 (same data, split and seed): its weights,
        candidates and Multi-CNN metrics. Stage 1 does not depend on lambda1, lambda2, alpha or
        lambda_vis, so grid search and ablations need not train it again."""
        files = ("candidates.npy", "stage1_metrics.json", "phi0/ckpt.index", "history.json")
        missing = [f for f in files if not os.path.isfile(os.path.join(source, f))]
        if missing:
            raise ValueError(f"--warm_start_from: {source} has no finished stage 1 ({', '.join(missing)} missing)")
        theirs = os.path.join(source, IDENTITY_FILE)
        if os.path.isfile(theirs):
            with open(theirs) as f:
                if json.load(f).get("data_hash") != self.identity["data_hash"]:
                    raise DataChanged(f"--warm_start_from: {source} was trained on other data than this run's")
        candidates = self.candidates = np.load(os.path.join(source, "candidates.npy"))
        if len(candidates) != len(self.train_idx):
            raise ValueError(f"--warm_start_from: {source} has candidates for {len(candidates)} training "
                             f"images, this run has {len(self.train_idx)} (different data, split or seed)")
        tf.train.Checkpoint(model=self.model).read(os.path.join(source, "phi0", "ckpt")).expect_partial()
        for name in ("candidates.npy", "stage1_metrics.json", "phi0_features.npz"):
            if self.chief and os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(self.dir, name))
        with open(os.path.join(source, "history.json")) as f:
            self.history = [r for r in json.load(f) if r["stage"] == 1]
        print(f"[{self.task}] stage 2 starts from phi_0 of {source}", flush=True)
        self.stage.assign(2)
        self.epoch.assign(0)
        self.step_in_epoch.assign(0)
        self._save()

    def _end_stage2(self):
        self._restore_best(2)
        self.stage.assign(3)
        self.epoch.assign(0)
        self.step_in_epoch.assign(0)
        self._save()

    def _stage1_batch(self, epoch, step):
        order = self._epoch_order(epoch)
        s = self.config.batch_size
        idx = np.take(order, np.arange(step * s, (step + 1) * s), mode="wrap")
        return self.train_source.get(idx), self.user_tags[idx], idx

    def _plain_batch(self, epoch, step):
        """Stage-2 steps of the 'Multi-CNN, same budget' baseline: shuffled batches as in stage 1.

        A stage-2 epoch is m passes over the images; pass p of stage-2 epoch e has its own order."""
        n, s = len(self.train_idx), self.config.batch_size
        start = step * s
        positions = np.arange(start, start + s)
        passes = positions // n
        idx = np.concatenate([np.take(self._epoch_order(epoch, 1 + int(p)), positions[passes == p] % n)
                              for p in np.unique(passes)])
        return self.train_source.get(idx), self.user_tags[idx], idx

    def _stage2_batch(self, epoch, step):
        self.batches.set_epoch(epoch)
        now = epoch * self.steps_per_epoch[2] + step
        if self.batches.bank is not None and now - self.batches.bank_step >= (self.config.bank_refresh_steps
                                                                               or self.steps_per_epoch[2]):
            self._refresh_bank(now)
        self.batches.set_step(now)
        return self.batches[step]

    def _feature_dim(self):
        return self.embed(self.train_source.get([0])).shape[1]

    def _refresh_bank(self, step):
        """Fast neighbours: every training image into the bank with the current weights."""
        started = time.perf_counter()
        self.batches.refresh_bank(step)
        self.bank_refresh_times.append(time.perf_counter() - started)
        print(f"[{self.task}] fast neighbours: embedded {len(self.batches.bank)} images into the bank in "
              f"{self.bank_refresh_times[-1]:.1f} s", flush=True)

    def _run_stage(self, stage, epochs, next_batch):
        config, steps = self.config, self.steps_per_epoch[stage]
        total = epochs * steps
        start_step = int(self.epoch) * steps + int(self.step_in_epoch)
        started, done_here = time.perf_counter(), 0
        optimizer = self.optimizers[stage - 1]
        watch = stage == 2 and config.stage2_objective == "ours"
        while int(self.epoch) < epochs:
            epoch = int(self.epoch)
            while int(self.step_in_epoch) < steps:
                step = int(self.step_in_epoch)
                t0 = time.perf_counter()
                images, user_tags, idx = next_batch(epoch, step)
                t1 = time.perf_counter()
                values = {k: float(v) for k, v in self._steps[stage](*self._distribute(images, user_tags)).items()}
                elapsed = time.perf_counter() - t0
                if not all(math.isfinite(v) for v in values.values()):
                    raise NonFiniteLossError(
                        f"[{self.task}] non-finite loss {values} at stage {stage}, step {self._global_step()}; "
                        f"the last good checkpoint is {tf.train.latest_checkpoint(self.checkpoint_dir)}")
                self.step_times[stage].append((elapsed, t1 - t0))
                self.step_in_epoch.assign_add(1)
                done_here += 1
                global_step = self._global_step()
                if watch and self.train_set.labels is not None:
                    self._watch("neighbour_label_share",
                                diagnostics.neighbour_label_share(idx, self.train_set.labels, config.group_size))
                if (start_step + done_here) % config.log_every_steps == 0 or done_here == 1:
                    if watch:
                        features, logits = self._features_and_logits(tf.constant(images))
                        for k, v in diagnostics.term_gradient_norms(self.final_loss, features, logits,
                                                                    user_tags).items():
                            self._watch(k, v)
                    rate = len(idx) / elapsed
                    eta = (time.perf_counter() - started) / done_here * (total - start_step - done_here)
                    terms = " ".join(f"{k} {v:.4f}" for k, v in values.items())
                    print(f"[{self.task}] stage {stage} epoch {epoch + 1}/{epochs} step {step + 1}/{steps} "
                          f"{terms} | {rate:.0f} img/s | ETA {_format_eta(eta)}"
                          + (" (or less: stops early without validation gains)" if self.valid_source else ""),
                          flush=True)
                    with self.writer.as_default(step=global_step):
                        for k, v in values.items():
                            tf.summary.scalar(f"stage{stage}/{k}", v)
                        tf.summary.scalar(f"stage{stage}/learning_rate",
                                          float(optimizer.learning_rate))
                        tf.summary.scalar(f"stage{stage}/images_per_second", rate)
                        for k, v in self.epoch_diagnostics.items():
                            tf.summary.scalar(f"diagnostics/{k}", v[-1])
                if watch and (start_step + done_here) % config.image_summary_every_steps == 1:
                    self._neighbour_image(images, global_step)
                if global_step % config.checkpoint_every_steps == 0:
                    self._save()
            self.epoch.assign_add(1)
            self.step_in_epoch.assign(0)
            stop = self._epoch_end(stage, epoch)
            self._save()
            if stop:
                print(f"[{self.task}] stage {stage}: no better validation mAP for {config.patience} epoch(s); "
                      "stopping", flush=True)
                break

    def _watch(self, name, value):
        self.epoch_diagnostics.setdefault(name, []).append(float(value))

    def _select(self, stage, epoch):
        """Scores the current weights on the validation split as `stage`'s epoch `epoch`, keeps them
        in best/ when they are the stage's best so far, and returns whether the stage should stop
        (`patience` epochs without a better validation mAP). Without a validation split, every epoch
        is the best (the last one is kept) and nothing stops."""
        record = {"stage": stage, "epoch": epoch, "step": self._global_step(), "validation": self.validate()}
        record["diagnostics"] = {k: float(np.mean(v)) for k, v in self.epoch_diagnostics.items()}
        self.epoch_diagnostics = {}
        self.history = [r for r in self.history if (r["stage"], r["epoch"]) < (stage, epoch)] + [record]
        runs = [r for r in self.history if r["stage"] == stage]
        valid = record["validation"] is not None
        best = max(runs, key=lambda r: r["validation"]["mAP"]) if valid else record  # first of equals
        if valid and best is record:
            tf.train.Checkpoint(model=self.model).write(os.path.join(self._output_dir("best"), "ckpt"))
        if self.chief:
            io_utils.write_json(os.path.join(self.dir, "history.json"), self.history)
        with self.writer.as_default(step=record["step"]):
            for k, v in (record["validation"] or {}).items():
                tf.summary.scalar(f"validation/{k}", v)
            for k, v in record["diagnostics"].items():
                tf.summary.scalar(f"diagnostics_epoch/{k}", v)
        if valid:
            print(f"[{self.task}] stage {stage} epoch {epoch} validation " +
                  " ".join(f"{k} {v:.3f}" for k, v in record["validation"].items())
                  + f" (best: epoch {best['epoch']})", flush=True)
        return valid and self.config.patience > 0 and epoch - best["epoch"] >= self.config.patience

    def best_epoch(self, stage):
        """The kept epoch of `stage` (by validation mAP; the last one without validation)."""
        runs = [r for r in self.history if r["stage"] == stage]
        if not runs:
            return None
        if runs[-1]["validation"] is None:
            return runs[-1]["epoch"]
        return max(runs, key=lambda r: r["validation"]["mAP"])["epoch"]

    def _restore_best(self, stage):
        """Loads the weights of `stage`'s best epoch (written by `_select`)."""
        path = os.path.join(self._output_dir("best"), "ckpt")
        if self.valid_source is None or self.best_epoch(stage) is None:
            return
        tf.train.Checkpoint(model=self.model).read(path).expect_partial()
        print(f"[{self.task}] stage {stage}: keeping epoch {self.best_epoch(stage)} (best validation mAP)",
              flush=True)

    def neighbours_of(self, anchor):
        """The m-1 candidates of training image `anchor` nearest under the current weights."""
        candidates = self.batches.candidates[anchor]
        features = self.embed(self.train_source.get(np.concatenate([[anchor], candidates])))
        distances = np.sum((features[1:] - features[0]) ** 2, axis=1)
        return candidates[np.argsort(distances, kind="stable")[:self.config.group_size - 1]]

    def _snapshot_neighbours(self, epoch):
        """Records a fixed query's selected neighbours after each stage-2 epoch (the paper's Fig. 4)."""
        path = os.path.join(self.dir, "neighbour_snapshots.json")
        snapshots = json.load(open(path)) if os.path.isfile(path) else []
        snapshots = [x for x in snapshots if x["epoch"] < epoch]
        snapshots.append({"epoch": epoch, "step": self._global_step(), "query": 0,
                          "neighbours": self.neighbours_of(0).tolist()})
        io_utils.write_json(path, snapshots)

    def _epoch_end(self, stage, epoch):
        """Validation (selection), evaluation (monitoring only) and pictures after an epoch; returns
        whether the stage should stop early."""
        if stage == 2 and self.chief and self.config.stage2_objective == "ours":
            self._snapshot_neighbours(epoch + 1)
        stop = self._select(stage, epoch + 1)
        if not self.chief:
            return stop
        global_step = self._global_step()
        scores = self.evaluate(self.config.eval_max_images)
        with self.writer.as_default(step=global_step):
            if scores:
                for k, v in scores.items():
                    tf.summary.scalar(f"metrics/{k}", v)
            if stage == 2:
                tf.summary.text("refined_tags", self._tag_table(), step=global_step)
        if scores:
            print(f"[{self.task}] stage {stage} epoch {epoch + 1} evaluated images (monitoring only) " +
                  " ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
        return stop

    def _neighbour_image(self, images, global_step):
        """The first group of the batch (anchor, then its neighbours) side by side (Fig. 4)."""
        group = images[:self.config.group_size]
        strip = np.concatenate(list(group), axis=1)[None]
        with self.writer.as_default(step=global_step):
            tf.summary.image("neighbours/anchor_then_selected", strip, step=global_step)

    def _tag_table(self, count=5):
        """User tags against the current refined tags for a few training images (Fig. 3)."""
        idx = np.arange(min(count, len(self.train_idx)))
        probs = self._predict(tf.constant(self.train_source.get(idx))).numpy()
        rows = ["| image | user tags | refined tags |", "|---|---|---|"]
        for i, p in zip(idx, probs):
            top = np.argsort(-p, kind="stable")[:5]
            refined = ", ".join(f"{self.dataset.tag_names[j]} {p[j]:.2f}" for j in top)
            rows.append(f"| {self.train_set.ids[i]} | {', '.join(self.train_set.tags_of(i))} | {refined} |")
        return "\n".join(rows)

    def _finish_stage1(self):
        """phi_0's metrics and the candidates Z, written before the checkpoint moves to stage 2."""
        if self.chief:
            io_utils.write_json(os.path.join(self.dir, "stage1_metrics.json"), {"Multi-CNN": self.evaluate()})
        print(f"[{self.task}] computing {self.num_candidates} candidates for {len(self.train_idx)} images"
              + (f" in {self.config.candidate_dims} principal components" if self.config.candidate_dims else ""),
              flush=True)
        train_features = self.features(self.train_source)
        if self.chief and self.config.save_stage1_features:
            buffer = io.BytesIO()
            np.savez(buffer, train=train_features.astype(np.float32),
                     eval=self.features(self.eval_source).astype(np.float32),
                     eval_tag_probs=self.predict(self.eval_source).astype(np.float32))
            io_utils.write_bytes(os.path.join(self.dir, "phi0_features.npz"), buffer.getvalue())
        if self.config.candidate_dims:
            train_features = neighbours.reduce_dimensions(train_features, self.config.candidate_dims, self.config.seed)
        started, last = time.perf_counter(), [time.perf_counter()]

        def progress(done, total):
            if time.perf_counter() - last[0] > 30 or done == total:
                last[0] = time.perf_counter()
                elapsed = last[0] - started
                print(f"[{self.task}] candidates: {done}/{total} images, {elapsed:.0f} s, "
                      f"ETA {_format_eta(elapsed / done * (total - done))}", flush=True)
        self.candidates = neighbours.nearest_candidates(train_features, self.num_candidates, progress=progress)
        # phi_0's weights alone, for runs that start stage 2 from it (--warm_start_from).
        tf.train.Checkpoint(model=self.model).write(os.path.join(self._output_dir("phi0"), "ckpt"))
        if self.chief:
            _atomic_npy(os.path.join(self.dir, "candidates.npy"), self.candidates)
        self.stage.assign(2)
        self.epoch.assign(0)
        self.step_in_epoch.assign(0)
        self._save()

    def _write_outputs(self, digest):
        refined = self.predict(self.train_source)
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.array(self.train_set.ids), tag_names=np.array(self.dataset.tag_names),
                 scores=refined.astype(np.float32))
        io_utils.write_bytes(os.path.join(self.dir, "refined_tags.npz"), buffer.getvalue())
        # The evaluated images are predicted once, for the metrics and the tag sets.
        eval_probs = self.predict(self.eval_source) if self.eval_set.labels is not None else None
        sets, thresholds = self._tag_sets(refined, eval_probs)
        chosen = tag_sets.tag_sets(refined, thresholds)
        lines = ["id\tuser_tags\ttag_set\trefined_tags"]
        for i, p in enumerate(refined):
            top = np.argsort(-p, kind="stable")[:self.config.refined_top_k]
            in_set = np.flatnonzero(chosen[i])
            in_set = in_set[np.argsort(-p[in_set], kind="stable")]
            lines.append(f"{self.train_set.ids[i]}\t{','.join(self.train_set.tags_of(i))}\t"
                         f"{','.join(self.dataset.tag_names[j] for j in in_set)}\t"
                         + " ".join(f"{self.dataset.tag_names[j]}:{p[j]:.3f}" for j in top))
        io_utils.write_text(os.path.join(self.dir, "refined_tags.tsv"), "\n".join(lines) + "\n")

        with open(os.path.join(self.dir, "stage1_metrics.json")) as f:
            result = json.load(f)
        result["Ours"] = None if eval_probs is None else self._label_metrics(eval_probs, self.eval_set)
        if self.task == "refinement" and self.dataset.labels is not None:
            result["UserTags"] = metrics.evaluate(trivial.user_tags_scores(self.eval_set), self.eval_set.labels,
                                                  label_names=self.dataset.label_names)
        timing = {}
        for stage, times in self.step_times.items():
            if times:
                timing[f"stage{stage}_step_s"] = float(np.median([t for t, _ in times]))
                timing[f"stage{stage}_batch_s"] = float(np.median([b for _, b in times]))
        summary = {
            "task": self.task,
            "metrics": result,
            "tag_sets": sets,
            "selection": {"validation_images": len(self.valid_idx), "criterion": "validation mAP",
                          "patience": self.config.patience,
                          "stage1_epoch": self.best_epoch(1), "stage2_epoch": self.best_epoch(2)},
            "history": self.history,
            "steps": {"stage1_per_epoch": self.steps_per_epoch[1], "stage2_per_epoch": self.steps_per_epoch[2],
                      "completed": self._global_step()},
            "train_images": len(self.train_idx),
            "validation_images": len(self.valid_idx),
            "eval_images": len(self.eval_idx),
            "timing_this_process": timing,
            "weights_sha256": digest,
            "data_identity": self.identity,
        }
        export_dir = os.path.join(self.config.export_dir, self.task) if self.config.export_dir else (
            os.path.join(self.dir, "export"))
        summary["export"] = self.export(export_dir, self.config.export_top_k)
        io_utils.write_json(os.path.join(self.dir, "metrics.json"), summary)
        return summary

    def _tag_sets(self, refined, eval_probs):
        """The tag-set rule (`wsnn.tag_sets`): per-tag thresholds that keep k times the user tags'
        frequencies, k chosen by validation F1; with its precision, recall and F1 on the evaluated
        images (their probabilities `eval_probs`, or None without labels) beside the user tags'.

        Returns:
          (the record for metrics.json, the C thresholds).
        """
        out = {"rule": "per-tag thresholds keeping k x each tag's user-tag frequency (training images)"}
        if self.valid_source is not None:
            k, thresholds, trials = tag_sets.choose_frequency_factor(
                refined, self.user_tags, self.predict(self.valid_source), self.valid_set.labels,
                self.dataset.label_to_tag)
            out.update(factor=k, chosen_on="validation micro-F1", validation_trials=trials)
        else:
            k, thresholds = 1.0, tag_sets.frequency_thresholds(refined, self.user_tags, 1.0)
            out.update(factor=k, chosen_on="default (no validation split)")
        if eval_probs is not None:
            sets = tag_sets.tag_sets(eval_probs, thresholds)
            out["Ours"] = tag_sets.set_scores(sets, self.eval_set.labels, self.dataset.label_to_tag)
            out["UserTags"] = tag_sets.set_scores(self.eval_set.user_tags, self.eval_set.labels,
                                                  self.dataset.label_to_tag)
        out["thresholds"] = [float(t) if np.isfinite(t) else None for t in thresholds]
        return out, thresholds

    def export(self, export_dir, top_k=10):
        """Exports the current model as a SavedModel version; returns its path."""
        from wsnn import export as export_lib

        # The prepared data's pixel limit (older prepared sets: the default) also guards serving.
        max_pixels = self.dataset.info.get("prepare_settings", {}).get("max_pixels", dataset_lib.MAX_PIXELS)
        return export_lib.export(self.model, self.dataset.tag_names, self.input_shape[0], self.input_shape[-1],
                                 export_dir, top_k, max_pixels=max_pixels, data_identity=self.identity)


def format_table(results):
    """The closing table: UserTags, Multi-CNN (phi_0) and ours for each task."""
    lines = [f"{'Task':<11} {'Method':<10} {'miAP':>6} {'mAP':>6} {'MicroAUC':>9} {'MacroAUC':>9}"]
    for task, summary in results.items():
        for name in ("UserTags", "Multi-CNN", "Ours"):
            s = summary["metrics"].get(name)
            if s:
                lines.append(f"{task:<11} {name:<10} {s['miAP']:6.3f} {s['mAP']:6.3f} "
                             f"{s['MicroAUC']:9.3f} {s['MacroAUC']:9.3f}")
    return "\n".join(lines)


def run(config, prepare_config, flag_values=None):
    """Prepares the data and trains every task of `config`.

    Returns:
      {task: metrics.json dict}; under --strategy=multi_worker, only the chief
      has them (the other workers' values are None).
    """
    strategy = make_strategy(config.num_devices, config.strategy)
    chief, role = worker_role(strategy)
    print(f"{strategy.num_replicas_in_sync} replica(s) in sync; this process ({role}): "
          f"{', '.join(d for d in strategy.extended.worker_devices)}", flush=True)
    tasks = ("annotation", "refinement") if config.task == "both" else (config.task,)
    # The chief holds the workdir (the other workers write only into scratch directories).
    with io_utils.workdir_lock(config.workdir) if chief else contextlib.nullcontext():
        if chief:
            _clean_workdir(config, tasks)
        dataset = load_or_prepare(prepare_config, chief)
        results = {}
        for task in tasks:
            trainer = Trainer(config, dataset, task, strategy)
            # A finished task keeps the config that produced its outputs (its run says "already done").
            if chief and not os.path.isfile(os.path.join(trainer.dir, "metrics.json")):
                config_lib.write_config(config, trainer.dir, flag_values)
                io_utils.write_json(os.path.join(trainer.dir, "prepare_config.json"),
                                    dataclasses.asdict(prepare_config))
            results[task] = trainer.run()
    return results


def _clean_workdir(config, tasks):
    """Under the workdir's lock: --overwrite removes the tasks' directories and TensorBoard logs;
    temp files and directories that killed runs left are removed."""
    for task in tasks:
        if config.overwrite:
            for path in (os.path.join(config.workdir, task), os.path.join(config.workdir, "tensorboard", task)):
                if os.path.isdir(path):
                    print(f"--overwrite: removing {path}", flush=True)
                    shutil.rmtree(path)
    export_root = config.export_dir or None
    directories = [config.workdir]
    for task in tasks:
        task_dir = os.path.join(config.workdir, task)
        export_dir = os.path.join(export_root, task) if export_root else os.path.join(task_dir, "export")
        directories += [task_dir, export_dir]
    for directory in directories:
        for name in io_utils.remove_stale_temps(directory):
            print(f"removed {os.path.join(directory, name)} (left by a killed run)", flush=True)
