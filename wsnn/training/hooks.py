"""The trainer's built-in hooks (see `wsnn.training.loop`): one periodic action each.

`Trainer.hooks(stage)` lists them in the order they run; tools and tests add
their own after them.
"""

import math
import time

import numpy as np
import tensorflow as tf

from wsnn import diagnostics
from wsnn.training.loop import Hook
from wsnn.training.selection import mean_diagnostics


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss."""


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class NaNStop(Hook):
    """Stops the run at the first non-finite loss; the last checkpoint stays the last good one."""

    def after_step(self, trainer, context):
        if not all(math.isfinite(v) for v in context.values.values()):
            raise NonFiniteLossError(
                f"[{trainer.task}] non-finite loss {context.values} at stage {context.stage}, step "
                f"{context.global_step}; the last good checkpoint is "
                f"{tf.train.latest_checkpoint(trainer.state.checkpoint_dir)}")


class StepTimes(Hook):
    """Records (step seconds, of which building the batch) per step in `trainer.step_times`."""

    def after_step(self, trainer, context):
        trainer.step_times[context.stage].append(
            (context.batch_seconds + context.step_seconds, context.batch_seconds))


class Diagnostics(Hook):
    """Stage 2: the share of selected neighbours that share a label with their anchor (every step,
    when the training images have labels) and each weighted term's gradient norm (on logging steps)."""

    def after_step(self, trainer, context):
        config = trainer.config
        if trainer.train_set.labels is not None:
            trainer.watch("neighbour_label_share", diagnostics.neighbour_label_share(
                context.idx, trainer.train_set.labels, config.neighbours.group_size))
        if _logging_step(config, context):
            features, logits = trainer.steps.features_and_logits(tf.constant(context.images))
            for k, v in diagnostics.term_gradient_norms(trainer.final_loss, features, logits,
                                                        context.user_tags).items():
                trainer.watch(k, v)


def _logging_step(config, context):
    return context.stage_step % config.runtime.log_every_steps == 0 or context.done_here == 1


class Progress(Hook):
    """A progress line with ETA and the scalar summaries, every --log_every_steps steps."""

    def after_step(self, trainer, context):
        if not _logging_step(trainer.config, context):
            return
        stage, elapsed = context.stage, context.batch_seconds + context.step_seconds
        rate = len(context.idx) / elapsed
        total = context.epochs * context.steps_per_epoch
        eta = (time.perf_counter() - context.started) / context.done_here * (total - context.stage_step)
        terms = " ".join(f"{k} {v:.4f}" for k, v in context.values.items())
        trainer.log(f"stage {stage} epoch {context.epoch + 1}/{context.epochs} step {context.step + 1}/"
                    f"{context.steps_per_epoch} {terms} | {rate:.0f} img/s | ETA {format_eta(eta)}"
                    + (" (or less: stops early without validation gains)" if trainer.valid_source else ""))
        with trainer.writer.as_default(step=context.global_step):
            for k, v in context.values.items():
                tf.summary.scalar(f"stage{stage}/{k}", v)
            tf.summary.scalar(f"stage{stage}/learning_rate", float(trainer.optimizers[stage - 1].learning_rate))
            tf.summary.scalar(f"stage{stage}/images_per_second", rate)
            for k, v in trainer.epoch_diagnostics.items():
                tf.summary.scalar(f"diagnostics/{k}", v[-1])


class NeighbourImage(Hook):
    """Stage 2: the first group of a batch (anchor, then its neighbours) side by side (Fig. 4), every
    --image_summary_every_steps steps."""

    def after_step(self, trainer, context):
        config = trainer.config
        if context.stage_step % config.runtime.image_summary_every_steps != 1:
            return
        group = context.images[:config.neighbours.group_size]
        strip = np.concatenate(list(group), axis=1)[None]
        with trainer.writer.as_default(step=context.global_step):
            tf.summary.image("neighbours/anchor_then_selected", strip, step=context.global_step)


class Checkpoint(Hook):
    """A checkpoint every --checkpoint_every_steps steps (the loop saves at every epoch end too)."""

    def after_step(self, trainer, context):
        if context.global_step % trainer.config.runtime.checkpoint_every_steps == 0:
            trainer.state.save()


class BankRefresh(Hook):
    """Fast neighbours: every training image embedded into the bank when stage 2 starts or resumes,
    and again every --bank_refresh_steps steps (0: every epoch)."""

    def begin_stage(self, trainer, stage):
        trainer.refresh_bank(int(trainer.state.epoch) * trainer.steps_per_epoch[2]
                             + int(trainer.state.step_in_epoch))

    def before_batch(self, trainer, context):
        now = context.epoch * context.steps_per_epoch + context.step
        every = trainer.config.neighbours.bank_refresh_steps or context.steps_per_epoch
        if now - trainer.batches.bank_step >= every:
            trainer.refresh_bank(now)


class NeighbourSnapshots(Hook):
    """Stage 2: a fixed query's selected neighbours when the stage starts and after each epoch (the
    paper's Fig. 4), in `trainer.neighbour_snapshots`."""

    def begin_stage(self, trainer, stage):
        if trainer.state.at_start_of_stage():
            trainer.snapshot_neighbours(0)

    def end_epoch(self, trainer, stage, epoch):
        trainer.snapshot_neighbours(epoch + 1)
        return False


class Select(Hook):
    """Validation and selection (`wsnn.training.selection`): epoch 0 at the stage's start, every
    epoch (stage 1: validation check) after, the best restored at the end; stops the stage after
    --patience of them without a better validation mAP, once the stage has run --min_steps."""

    def begin_stage(self, trainer, stage):
        if trainer.state.at_start_of_stage():
            self._select(trainer, stage, 0)

    def end_epoch(self, trainer, stage, epoch):
        stop = self._select(trainer, stage, epoch + 1)
        return stop and (epoch + 1) * trainer.steps_per_epoch[stage] >= trainer.config.schedule.min_steps

    def end_stage(self, trainer, stage):
        trainer.selection.restore_best(stage)

    @staticmethod
    def _select(trainer, stage, epoch):
        watched, trainer.epoch_diagnostics = trainer.epoch_diagnostics, {}
        return trainer.selection.select(stage, epoch, trainer.state.global_step(), mean_diagnostics(watched))


class Evaluate(Hook):
    """After each epoch (chief): the evaluated images' metrics (monitoring only; never used for
    selection) and, in stage 2, a table of user against refined tags (Fig. 3)."""

    def end_epoch(self, trainer, stage, epoch):
        global_step = trainer.state.global_step()
        scores = trainer.evaluate(trainer.config.runtime.eval_max_images)
        with trainer.writer.as_default(step=global_step):
            if scores:
                for k, v in scores.items():
                    tf.summary.scalar(f"metrics/{k}", v)
            if stage == 2:
                tf.summary.text("refined_tags", trainer.tag_table(), step=global_step)
        if scores:
            trainer.log(f"stage {stage} epoch {epoch + 1} evaluated images (monitoring only) " +
                        " ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        return False
