"""The outer loop of a stage and the hooks it runs.

`run_stage` runs a stage's remaining epochs from the state's position: per
step it builds the batch (`next_batch`), runs the distributed step and moves
the position; after each epoch it saves a checkpoint. Everything else a
step or an epoch does (progress and summaries, the NaN stop, periodic
checkpoints, validation and selection, evaluation, bank refresh, neighbour
snapshots) is a `Hook` (`wsnn.training.hooks`). Tools and tests observe or
steer a run by adding hooks, never by patching the trainer.
"""

import dataclasses
import time

import numpy as np

from wsnn.training import distribute


@dataclasses.dataclass
class StepContext:
    """What hooks see of one step.

    Filled in order: the position (before the batch), then the batch
    (before the step), then the step's results (after it).
    """

    stage: int
    epoch: int  # 0-based epoch of this step
    step: int  # 0-based step within the epoch
    epochs: int
    steps_per_epoch: int
    first_step: int  # the stage's step (epoch * steps_per_epoch + step) this process started at
    done_here: int  # steps this process has run in this stage, this one excluded until after it
    started: float  # time.perf_counter() when this process started the stage
    images: np.ndarray = None
    user_tags: np.ndarray = None
    idx: np.ndarray = None  # the batch's training-image indices
    values: dict = None  # {loss name: value} of the step
    batch_seconds: float = 0.0  # building the batch
    step_seconds: float = 0.0  # the distributed step
    global_step: int = 0  # steps trained in both stages, this one included (after the step)

    @property
    def stage_step(self):
        """The stage's 0-based step count, this step included after it ran."""
        return self.first_step + self.done_here


class Hook:
    """Callbacks of `run_stage`; every method may be left out. `trainer` is the
    `wsnn.training.trainer.Trainer` running the stage."""

    def begin_stage(self, trainer, stage):
        """Before the stage's first step in this process (at its start or on resuming)."""

    def before_batch(self, trainer, context):
        """Before the step's batch is built (the weights are the step's)."""

    def before_step(self, trainer, context):
        """After the batch is built, before the weights change."""

    def after_step(self, trainer, context):
        """After the step; the position already counts it."""

    def end_epoch(self, trainer, stage, epoch):
        """After epoch `epoch` (0-based) of `stage`; return True to stop the stage early."""
        return False

    def end_stage(self, trainer, stage):
        """After the stage's last epoch in this process (or its early stop)."""


def run_stage(trainer, stage, epochs, next_batch, hooks):
    """Runs `stage` from the trainer's position to `epochs` epochs (or an early stop).

    Args:
      trainer: the `Trainer` (its `state`, `steps`, `strategy` and
        `steps_per_epoch` are used).
      stage: 1 or 2.
      epochs: the stage's epoch count.
      next_batch: callable(epoch, step) -> (uint8 images, float32 user tags,
        training-image indices), the global batch.
      hooks: `Hook`s, called in order.
    """
    state, steps = trainer.state, trainer.steps_per_epoch[stage]
    step_fn = trainer.steps.train[stage]
    first_step = int(state.epoch) * steps + int(state.step_in_epoch)
    started, done_here = time.perf_counter(), 0
    for hook in hooks:
        hook.begin_stage(trainer, stage)
    while int(state.epoch) < epochs:
        epoch = int(state.epoch)
        while int(state.step_in_epoch) < steps:
            context = StepContext(stage, epoch, int(state.step_in_epoch), epochs, steps, first_step, done_here,
                                  started)
            for hook in hooks:
                hook.before_batch(trainer, context)
            t0 = time.perf_counter()
            context.images, context.user_tags, context.idx = next_batch(epoch, context.step)
            t1 = time.perf_counter()
            context.batch_seconds = t1 - t0
            for hook in hooks:
                hook.before_step(trainer, context)
            t2 = time.perf_counter()
            outputs = step_fn(*distribute.distribute(trainer.strategy, context.images, context.user_tags))
            context.values = {k: float(v) for k, v in outputs.items()}
            context.step_seconds = time.perf_counter() - t2
            state.step_in_epoch.assign_add(1)
            done_here += 1
            context.done_here = done_here
            context.global_step = state.global_step()
            for hook in hooks:
                hook.after_step(trainer, context)
        state.epoch.assign_add(1)
        state.step_in_epoch.assign(0)
        stop = [hook.end_epoch(trainer, stage, epoch) for hook in hooks]  # every hook runs
        state.save()
        if any(stop):
            trainer.log(f"stage {stage}: no better validation mAP for {trainer.config.schedule.patience} "
                        f"{'check' if stage == 1 else 'epoch'}(s); stopping")
            break
    for hook in hooks:
        hook.end_stage(trainer, stage)
