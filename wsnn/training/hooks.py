"""The trainer's built-in hooks (see `wsnn.training.loop`): one periodic action each.

`Trainer.hooks(stage)` lists them in the order they run; tools and tests add
their own after them. A hook reads the run through its `loop.RunContext`
(`run`); what only one hook needs (the loss, the neighbour batches) it is
given when made.
"""

import math
import time

import numpy as np
import tensorflow as tf

from wsnn import diagnostics, io_utils, search
from wsnn.training import outputs
from wsnn.training.loop import Hook
from wsnn.training.selection import mean_diagnostics


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss."""


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class NaNStop(Hook):
    """Stops the run at the first non-finite loss; the last checkpoint stays the last good one."""

    def after_step(self, run, context):
        if not all(math.isfinite(v) for v in context.values.values()):
            raise NonFiniteLossError(
                f"[{run.task}] non-finite loss {context.values} at stage {context.stage}, step "
                f"{context.global_step}; the last good checkpoint is "
                f"{tf.train.latest_checkpoint(run.state.checkpoint_dir)}")


class StepTimes(Hook):
    """Records (step seconds, of which building the batch) per step in `run.records.step_times`."""

    def after_step(self, run, context):
        run.records.step_times[context.stage].append(
            (context.batch_seconds + context.step_seconds, context.batch_seconds))


class InputWait(Hook):
    """How long the steps waited for their batches, against the stage's wall time (validation and
    every other hook included), in `run.records.input_wait[stage]`: `wait_s` for the part read ahead
    (`wsnn.training.inputs.Prefetcher`), `finish_s` for the part that needs the live weights
    (Algorithm 1's re-embedding and choice), their sum's `share` of the wall time, and images/s."""

    def __init__(self, prefetcher):
        self.prefetcher = prefetcher

    def begin_stage(self, run, stage):
        self.started, self.steps, self.images, self.wait, self.finish = time.perf_counter(), 0, 0, 0.0, 0.0

    def after_step(self, run, context):
        self.steps += 1
        self.images += len(context.idx)
        self.wait += self.prefetcher.wait_seconds
        self.finish += self.prefetcher.finish_seconds

    def end_stage(self, run, stage):
        wall = time.perf_counter() - self.started
        run.records.input_wait[stage] = {
            "wall_s": wall, "steps": self.steps, "images_per_s": self.images / wall if wall else 0.0,
            "wait_s": self.wait, "finish_s": self.finish, "share": (self.wait + self.finish) / wall if wall else 0.0,
            "prefetch": self.prefetcher.enabled}


class Diagnostics(Hook):
    """Stage 2: the share of selected neighbours that share a label with their anchor (every step,
    when the training images have labels) and each weighted term's gradient norm (on logging steps).

    Args:
      final_loss: the stage's `wsnn.losses.WeaklySupervisedLoss`.
    """

    def __init__(self, final_loss):
        self.final_loss = final_loss

    def after_step(self, run, context):
        config, labels = run.config, run.data.train_set.labels
        if labels is not None:
            run.records.watch("neighbour_label_share", diagnostics.neighbour_label_share(
                context.idx, labels, config.neighbours.group_size))
        if _logging_step(config, context):
            features, logits = run.steps.features_and_logits(tf.constant(context.images))
            for k, v in diagnostics.term_gradient_norms(self.final_loss, features, logits,
                                                        context.user_tags).items():
                run.records.watch(k, v)


def _logging_step(config, context):
    return context.stage_step % config.runtime.log_every_steps == 0 or context.done_here == 1


class Progress(Hook):
    """A progress line with ETA and the scalar summaries, every --log_every_steps steps."""

    def after_step(self, run, context):
        if not _logging_step(run.config, context):
            return
        stage, elapsed = context.stage, context.batch_seconds + context.step_seconds
        rate = len(context.idx) / elapsed
        total = context.epochs * context.steps_per_epoch
        eta = (time.perf_counter() - context.started) / context.done_here * (total - context.stage_step)
        terms = " ".join(f"{k} {v:.4f}" for k, v in context.values.items())
        run.log(f"stage {stage} epoch {context.epoch + 1}/{context.epochs} step {context.step + 1}/"
                f"{context.steps_per_epoch} {terms} | {rate:.0f} img/s | ETA {format_eta(eta)}"
                + (" (or less: stops early without validation gains)" if run.data.valid_source else ""))
        with run.writer.as_default(step=context.global_step):
            for k, v in context.values.items():
                tf.summary.scalar(f"stage{stage}/{k}", v)
            tf.summary.scalar(f"stage{stage}/learning_rate", float(run.state.optimizers[stage - 1].learning_rate))
            tf.summary.scalar(f"stage{stage}/images_per_second", rate)
            for k, v in run.records.epoch_diagnostics.items():
                tf.summary.scalar(f"diagnostics/{k}", v[-1])


class NeighbourImage(Hook):
    """Stage 2: the first group of a batch (anchor, then its neighbours) side by side (Fig. 4), every
    --image_summary_every_steps steps."""

    def after_step(self, run, context):
        config = run.config
        if context.stage_step % config.runtime.image_summary_every_steps != 1:
            return
        group = context.images[:config.neighbours.group_size]
        strip = np.concatenate(list(group), axis=1)[None]
        with run.writer.as_default(step=context.global_step):
            tf.summary.image("neighbours/anchor_then_selected", strip, step=context.global_step)


class Checkpoint(Hook):
    """A checkpoint every --checkpoint_every_steps steps (the loop saves at every epoch end too)."""

    def after_step(self, run, context):
        if context.global_step % run.config.runtime.checkpoint_every_steps == 0:
            run.state.save()


class BankRefresh(Hook):
    """Fast neighbours: every training image embedded into the bank when stage 2 starts or resumes,
    and again every --bank_refresh_steps steps (0: every epoch); each refresh's seconds in
    `run.records.bank_refresh_times`.

    Args:
      batches: the stage's `wsnn.neighbours.NeighbourBatches` (with a bank).
    """

    def __init__(self, batches):
        self.batches = batches

    def begin_stage(self, run, stage):
        self._refresh(run, int(run.state.epoch) * run.steps_per_epoch[2] + int(run.state.step_in_epoch))

    def before_batch(self, run, context):
        now = context.epoch * context.steps_per_epoch + context.step
        every = run.config.neighbours.bank_refresh_steps or context.steps_per_epoch
        if now - self.batches.bank_step >= every:
            self._refresh(run, now)

    def _refresh(self, run, step):
        started = time.perf_counter()
        self.batches.refresh_bank(step)
        run.records.bank_refresh_times.append(time.perf_counter() - started)
        run.log(f"fast neighbours: embedded {len(self.batches.bank)} images into the bank in "
                f"{run.records.bank_refresh_times[-1]:.1f} s")


class NeighbourSnapshots(Hook):
    """Stage 2: a fixed query's selected neighbours when the stage starts and after each epoch (the
    paper's Fig. 4), in `run.records.neighbour_snapshots` and neighbour_snapshots.json."""

    def begin_stage(self, run, stage):
        if run.state.at_start_of_stage():
            self._snapshot(run, 0)

    def end_epoch(self, run, stage, epoch):
        self._snapshot(run, epoch + 1)
        return False

    @staticmethod
    def _snapshot(run, epoch):
        records = run.records
        records.neighbour_snapshots = [x for x in records.neighbour_snapshots if x["epoch"] < epoch]
        records.neighbour_snapshots.append({"epoch": epoch, "step": run.state.global_step(), "query": 0,
                                            "neighbours": neighbours_of(run, 0).tolist()})
        io_utils.write_json(run.layout.snapshots, records.neighbour_snapshots)


def neighbours_of(run, anchor):
    """The m-1 candidates of training image `anchor` nearest under the current weights."""
    candidates = run.records.candidates[anchor]
    features = run.steps.embed(run.data.train_source.get(np.concatenate([[anchor], candidates])))
    distances = search.candidate_distances(features, [0], [np.arange(1, len(features))])
    return candidates[search.nearest_candidates(distances, run.config.neighbours.group_size - 1)[0]]


class Select(Hook):
    """Validation and selection (`wsnn.training.selection`): epoch 0 at the stage's start, every
    epoch (stage 1: validation check) after, the best restored at the end; stops the stage after
    --patience of them without a better validation mAP, once the stage has run --min_steps."""

    def begin_stage(self, run, stage):
        if run.state.at_start_of_stage():
            self._select(run, stage, 0)

    def end_epoch(self, run, stage, epoch):
        stop = self._select(run, stage, epoch + 1)
        return stop and (epoch + 1) * run.steps_per_epoch[stage] >= run.config.schedule.min_steps

    def end_stage(self, run, stage):
        run.selection.restore_best(stage)

    @staticmethod
    def _select(run, stage, epoch):
        watched = run.records.take_diagnostics()
        return run.selection.select(stage, epoch, run.state.global_step(), mean_diagnostics(watched))


class Evaluate(Hook):
    """After each epoch (chief): the evaluated images' metrics (monitoring only; never used for
    selection) and, in stage 2, a table of user against refined tags (Fig. 3)."""

    def end_epoch(self, run, stage, epoch):
        global_step = run.state.global_step()
        scores = outputs.evaluation_scores(run.steps, run.data, run.config.runtime.eval_max_images,
                                           run.config.runtime.seed)
        with run.writer.as_default(step=global_step):
            if scores:
                for k, v in scores.items():
                    tf.summary.scalar(f"metrics/{k}", v)
            if stage == 2:
                tf.summary.text("refined_tags", tag_table(run), step=global_step)
        if scores:
            run.log(f"stage {stage} epoch {epoch + 1} evaluated images (monitoring only) " +
                        " ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        return False



def tag_table(run, count=5):
    """User tags against the current refined tags for a few training images (Fig. 3), as Markdown."""
    data = run.data
    idx = np.arange(min(count, len(data.train_idx)))
    probs = run.steps.predict_images(data.train_source.get(idx))
    rows = ["| image | user tags | refined tags |", "|---|---|---|"]
    for i, p in zip(idx, probs):
        top = np.argsort(-p, kind="stable")[:5]
        refined = ", ".join(f"{data.dataset.tag_names[j]} {p[j]:.2f}" for j in top)
        rows.append(f"| {data.train_set.ids[i]} | {', '.join(data.train_set.tags_of(i))} | {refined} |")
    return "\n".join(rows)
