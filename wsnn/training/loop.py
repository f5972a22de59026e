"""The outer loop of a stage and the hooks it runs.

`run_stage` runs a stage's remaining epochs from the state's position: per
step it builds the batch (`next_batch`), runs the distributed step and moves
the position; after each epoch it saves a checkpoint. Everything else a
step or an epoch does (progress and summaries, the NaN stop, periodic
checkpoints, validation and selection, evaluation, bank refresh, neighbour
snapshots) is a `Hook` (`wsnn.training.hooks`). Tools and tests observe or
steer a run by adding hooks, never by patching the trainer: a hook sees the
run's parts through a `RunContext`, not the trainer.
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


@dataclasses.dataclass
class RunRecords:
    """What a task's run has recorded so far, beyond the weights (the outputs read it).

    Attributes:
      stage1_metrics: {"Multi-CNN": phi_0's metrics, "tag_std"} once stage 1
        has finished (or a warm start or resume has read them), else None.
      head_init: the linear probe that started stage 1's head, or None.
      phi0: phi_0's {"train", "eval", "eval_tag_probs"} arrays
        (--save_stage1_features), or None.
      candidates: Z, each training image's M candidates, once stage 1 has
        computed them (or a warm start has read them), else None.
      neighbour_snapshots: a fixed query's selected neighbours per stage-2
        epoch ([{"epoch", "step", "query", "neighbours"}]).
      step_times: {stage: [(step seconds, of which building the batch)]}.
      bank_refresh_times: seconds of each fast-neighbour bank refresh.
      input_wait: {stage: how long its steps waited for their batches}
        (`wsnn.training.hooks.InputWait`).
      epoch_diagnostics: {name: values watched this epoch} (`watch`).
    """

    stage1_metrics: dict = None
    head_init: dict = None
    phi0: dict = None
    candidates: np.ndarray = None
    neighbour_snapshots: list = dataclasses.field(default_factory=list)
    step_times: dict = dataclasses.field(default_factory=lambda: {1: [], 2: []})
    bank_refresh_times: list = dataclasses.field(default_factory=list)
    input_wait: dict = dataclasses.field(default_factory=dict)  # {stage: `hooks.InputWait`'s record}
    epoch_diagnostics: dict = dataclasses.field(default_factory=dict)

    def watch(self, name, value):
        """Adds a diagnostic value of this epoch (averaged into the history at the epoch's end)."""
        self.epoch_diagnostics.setdefault(name, []).append(float(value))

    def take_diagnostics(self):
        """The values watched this epoch, emptied for the next one."""
        watched, self.epoch_diagnostics = self.epoch_diagnostics, {}
        return watched


@dataclasses.dataclass
class RunContext:
    """What hooks and the outputs see of a task's run: its parts, never the trainer.

    Attributes:
      config: the `wsnn.config.TrainConfig`.
      task: "annotation" or "refinement".
      layout: the task directory (`wsnn.training.layout.TaskLayout`).
      data: the split and image sources (`wsnn.training.task_data.TaskData`).
      steps: the training steps and inference (`wsnn.training.steps.Steps`).
      state: the model, optimisers, position and checkpoint
        (`wsnn.training.state.TrainState`).
      selection: validation history and best epochs
        (`wsnn.training.selection.Selection`).
      writer: the task's TensorBoard summary writer.
      log: callable(text) for progress lines (prefixed with the task).
      records: the run's `RunRecords`.
      steps_per_epoch: {stage: steps between validation checks}.
      strategy: the distribution strategy.
    """

    config: object
    task: str
    layout: object
    data: object
    steps: object
    state: object
    selection: object
    writer: object
    log: object
    records: RunRecords
    steps_per_epoch: dict
    strategy: object


class Hook:
    """Callbacks of `run_stage`; every method may be left out. `run` is the stage's `RunContext`."""

    def begin_stage(self, run, stage):
        """Before the stage's first step in this process (at its start or on resuming)."""

    def before_batch(self, run, context):
        """Before the step's batch is built (the weights are the step's)."""

    def before_step(self, run, context):
        """After the batch is built, before the weights change."""

    def after_step(self, run, context):
        """After the step; the position already counts it."""

    def end_epoch(self, run, stage, epoch):
        """After epoch `epoch` (0-based) of `stage`; return True to stop the stage early."""
        return False

    def end_stage(self, run, stage):
        """After the stage's last epoch in this process (or its early stop)."""


def run_stage(run, stage, epochs, next_batch, hooks):
    """Runs `stage` from the state's position to `epochs` epochs (or an early stop).

    Args:
      run: the task's `RunContext` (its `state`, `steps`, `strategy` and
        `steps_per_epoch` are used; the hooks get it).
      stage: 1 or 2.
      epochs: the stage's epoch count.
      next_batch: callable(epoch, step) -> (uint8 images, float32 user tags,
        training-image indices), the global batch.
      hooks: `Hook`s, called in order.
    """
    state, steps = run.state, run.steps_per_epoch[stage]
    step_fn = run.steps.train[stage]
    first_step = int(state.epoch) * steps + int(state.step_in_epoch)
    started, done_here = time.perf_counter(), 0
    for hook in hooks:
        hook.begin_stage(run, stage)
    while int(state.epoch) < epochs:
        epoch = int(state.epoch)
        while int(state.step_in_epoch) < steps:
            context = StepContext(stage, epoch, int(state.step_in_epoch), epochs, steps, first_step, done_here,
                                  started)
            for hook in hooks:
                hook.before_batch(run, context)
            t0 = time.perf_counter()
            context.images, context.user_tags, context.idx = next_batch(epoch, context.step)
            t1 = time.perf_counter()
            context.batch_seconds = t1 - t0
            for hook in hooks:
                hook.before_step(run, context)
            t2 = time.perf_counter()
            outputs = step_fn(*distribute.distribute(run.strategy, context.images, context.user_tags))
            context.values = {k: float(v) for k, v in outputs.items()}
            context.step_seconds = time.perf_counter() - t2
            state.step_in_epoch.assign_add(1)
            done_here += 1
            context.done_here = done_here
            context.global_step = state.global_step()
            for hook in hooks:
                hook.after_step(run, context)
        state.epoch.assign_add(1)
        state.step_in_epoch.assign(0)
        stop = [hook.end_epoch(run, stage, epoch) for hook in hooks]  # every hook runs
        state.save()
        if any(stop):
            run.log(f"stage {stage}: no better validation mAP for {run.config.schedule.patience} "
                    f"{'check' if stage == 1 else 'epoch'}(s); stopping")
            break
    for hook in hooks:
        hook.end_stage(run, stage)
