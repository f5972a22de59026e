"""A task's split, its data identity, and its training state: position, checkpoint, resume order.

Resume order (tested in tests/test_training_state.py):
  1. an existing checkpoint in `<workdir>/<task>/checkpoints` always wins;
  2. else a warm start (`--warm_start_from`: another run's phi_0) starts
     stage 2;
  3. else training starts fresh at stage 1.
A checkpoint holds the model, both optimisers and the position (stage, epoch,
step within the epoch); the data order of an epoch is a function of the seed
and the epoch, so a resumed run sees the same batches.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

from wsnn import io_utils


class DataChanged(ValueError):
    """A task directory holds checkpoints or outputs of other data."""


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


# The JSON at a path, or a default when there is no such file; a damaged file is one line naming it.
read_json = io_utils.read_json


def check_identity(layout, identity):
    """Refuses a task directory (its `TaskLayout`) whose checkpoints or outputs come from other data
    (or whose data is unknown); records `identity` in a fresh one.

    Raises:
      DataChanged: naming what changed.
    """
    path, task_dir = layout.identity, layout.dir
    fresh = " start fresh with another --workdir or with --overwrite"
    if not os.path.isfile(path):
        if tf.train.latest_checkpoint(layout.checkpoints) or layout.finished():
            raise DataChanged(f"{task_dir}: has checkpoints but no {os.path.basename(path)}, so the data they "
                              f"were trained on is unknown;{fresh}")
        io_utils.write_json(path, identity)
        return
    old = read_json(path, {})
    if old.get("vocabulary_hash") != identity["vocabulary_hash"]:
        what = (f"the tag vocabulary changed ({old.get('num_tags')} tags then, {identity['num_tags']} "
                "now, or the same count with other names)")
    elif old.get("data_hash") != identity["data_hash"]:
        what = (f"the images, tags or labels changed ({old.get('num_images')} images then, "
                f"{identity['num_images']} now)")
    else:
        return
    raise DataChanged(f"{task_dir} was trained on other data: {what};{fresh}")


def check_same_data(source, identity, flag="--warm_start_from"):
    """Refuses another run's task directory (its `TaskLayout`) trained on other data than `identity`'s."""
    theirs = read_json(source.identity)
    if theirs is not None and theirs.get("data_hash") != identity["data_hash"]:
        raise DataChanged(f"{flag}: {source.dir} was trained on other data than this run's")


class TrainState:
    """The model, both optimisers and the position, checkpointed together.

    Attributes:
      stage, epoch, step_in_epoch: the position (int64 variables; stage 3:
        both stages done).
      checkpoint, manager: `tf.train.Checkpoint` of everything above and its
        manager, which saves into `save_dir`; `resume` reads `checkpoint_dir`
        (multi-worker: every worker resumes from the chief's checkpoints and
        saves into its own scratch directory).
    """

    def __init__(self, model, optimizers, strategy, checkpoint_dir, save_dir=None, max_to_keep=3):
        self.model, self.optimizers = model, optimizers
        # The position is bookkeeping of the outer loop, not replicated state.
        self.stage = tf.Variable(1, dtype=tf.int64, trainable=False)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        with strategy.scope():
            self.checkpoint = tf.train.Checkpoint(
                model=model, stage1_optimizer=optimizers[0], stage2_optimizer=optimizers[1],
                stage=self.stage, epoch=self.epoch, step_in_epoch=self.step_in_epoch)
        self.checkpoint_dir = checkpoint_dir
        self.manager = tf.train.CheckpointManager(self.checkpoint, save_dir or checkpoint_dir, max_to_keep=max_to_keep)

    def position(self):
        """(stage, epoch, step within the epoch) as ints."""
        return int(self.stage), int(self.epoch), int(self.step_in_epoch)

    def at_start_of_stage(self):
        return int(self.epoch) == 0 and int(self.step_in_epoch) == 0

    def move_to(self, stage):
        """Moves the position to the start of `stage`."""
        self.stage.assign(stage)
        self.epoch.assign(0)
        self.step_in_epoch.assign(0)

    def global_step(self):
        """Steps trained so far, both stages (stage 1 may have stopped early)."""
        return int(self.optimizers[0].iterations.numpy()) + int(self.optimizers[1].iterations.numpy())

    def save(self):
        """Saves a checkpoint numbered by the steps trained, and always above the last one (after
        a selection restores earlier weights, the step count can go back)."""
        latest = self.manager.latest_checkpoint
        last = int(latest.rsplit("-", 1)[1]) if latest else -1
        self.manager.save(checkpoint_number=max(self.global_step(), last + 1))

    def resume(self, warm_start=None):
        """Applies the resume order: this directory's latest checkpoint, else `warm_start()` (a
        callable that loads another run's phi_0 and moves to stage 2; None: no warm start), else a
        fresh start.

        Returns:
          "checkpoint", "warm start" or "fresh".
        """
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            return "checkpoint"
        if warm_start is not None:
            warm_start()
            return "warm start"
        return "fresh"


def write_weights(model, directory):
    """The model's weights alone, as `<directory>/ckpt`."""
    tf.train.Checkpoint(model=model).write(os.path.join(directory, "ckpt"))


def read_weights(model, directory):
    """Loads weights written by `write_weights` into `model`."""
    tf.train.Checkpoint(model=model).read(os.path.join(directory, "ckpt")).expect_partial()


def weights_index(directory):
    """The index file of the weights `write_weights` wrote into `directory` (there once complete)."""
    return os.path.join(directory, "ckpt.index")


def weights_digest(model):
    """SHA-256 of every weight's bytes in order: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()
