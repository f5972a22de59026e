"""Stage-2 step cost, neighbour agreement and final mAP: exact against fast neighbours; prints JSON.

    .venv/bin/python tools/bench_step.py --flagfile=flags/fashion_tags.cfg --workdir=/tmp/bench_step

Takes every training flag (the flagfile's settings are the experiment) plus
the few below. For each task it runs, on one strategy in one process:

  exact       stage 1 (phi_0, the plain Multi-CNN step), then stage 2 with
              exact Algorithm 1 (`--neighbour_mode=exact`);
  exact_again stage 2 once more from the same phi_0 (`--warm_start_from`):
              how far two exact runs differ (TensorFlow's CPU kernels are
              not bit-reproducible), the yardstick for the mAP gap;
  fast_k_r_c  stage 2 from the same phi_0 with `--neighbour_mode=fast
              --shortlist=k --bank_refresh_steps=r --bank_extrapolation=c`,
              for each "k/r/c" of --fast_variants. Every --overlap_every_steps-th step a
              hook also builds the exact batch with the same weights and
              records the recall of its m-1 neighbours in the fast batch
              (outside the step timings).

Step time is the whole outer step (building the batch plus the distributed
train step); ratios divide a stage-2 median by the stage-1 median. The fast
mode's amortised ratio adds the time of its whole-bank embeddings (at the
start and every r steps) spread over its steps. images_embedded_per_step
counts the forward passes spent on choosing neighbours (refreshes included).
Targets: fast step at most 1.3x the stage-1 step, recall at least 0.9, mAP
within 0.005 of exact. Writes the JSON to <workdir>/bench_step.json too.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

from wsnn import io_utils, neighbours
from wsnn import train as train_entry
from wsnn.training.loop import Hook

flags.DEFINE_list("fast_variants", ["0/0/0", "0/0/0.5", "16/0/0.5"],
                  "Fast-mode settings to measure, each shortlist/bank_refresh_steps/bank_extrapolation.")
flags.DEFINE_integer("overlap_every_steps", 5, "Measure the recall against exact batches every this many steps.")
FLAGS = flags.FLAGS


def _summary(trainer):
    """Stage-2 step seconds and neighbour-choosing forward passes."""
    times = [t for t, _ in trainer.records.step_times[2]]
    batch = [b for _, b in trainer.records.step_times[2]]
    steps = len(times)
    refresh_times = trainer.records.bank_refresh_times
    refreshes = len(refresh_times)
    embedded = trainer.batches.images_embedded  # refreshes included
    return {"step_s_median": float(np.median(times)), "batch_s_median": float(np.median(batch)),
            "steps_timed": steps, "images_embedded_per_step": embedded / steps,
            "bank_refreshes": refreshes, "bank_refresh_s_per_step": float(np.sum(refresh_times)) / steps}


class _Recall(Hook):
    """Every `every`-th stage-2 step, before the weights change: the recall of the batch's m-1
    neighbours per anchor in the exact Algorithm 1 batch built with the same weights (hooks run
    outside the step timings)."""

    def __init__(self, every):
        self.every, self.exact, self.recalls = every, None, []

    def before_step(self, run, context):
        if context.stage != 2 or context.step % self.every:
            return
        config = run.config
        if self.exact is None:  # exact Algorithm 1 on the same candidates and the same live model
            self.exact = neighbours.NeighbourBatches(
                run.data.train_source, run.data.user_tags, run.records.candidates, run.steps.embed,
                config.schedule.batch_size, config.neighbours.group_size, config.runtime.seed)
        self.exact.set_epoch(context.epoch)
        self.recalls.append(neighbours.neighbour_recall(context.idx, self.exact.group_indices(context.step),
                                                        config.neighbours.group_size))


def _run(config, dataset, task, strategy, overlap_every=0):
    """Trains one task; with overlap_every, measures the fast batches against exact ones."""
    from wsnn.training.trainer import Trainer

    recall = _Recall(overlap_every) if overlap_every else None
    trainer = Trainer(config, dataset, task, strategy, hooks=[recall] if recall else [])
    started = time.perf_counter()
    summary = trainer.run().summary
    result = {"mAP": summary["metrics"]["Ours"]["mAP"], "wall_s": time.perf_counter() - started}
    result.update(_summary(trainer))
    if recall:
        result["recall"] = float(np.mean(recall.recalls))
        result["recall_min"] = float(np.min(recall.recalls))
        result["recall_batches"] = len(recall.recalls)
    return trainer, result


def _variants():
    variants = [v.split("/") for v in FLAGS.fast_variants]
    if any(len(v) != 3 for v in variants):
        raise ValueError(f"--fast_variants={','.join(FLAGS.fast_variants)}: each must be "
                         "shortlist/refresh_steps/extrapolation")
    return [(int(k), int(r), float(c)) for k, r, c in variants]


def _task(config, dataset, task, strategy):
    root = config.runtime.workdir
    phi0 = os.path.join(root, "exact")
    exact_config = config.replace(workdir=phi0, neighbour_mode="exact", shortlist=0, task=task)
    trainer, exact = _run(exact_config, dataset, task, strategy)
    stage1 = float(np.median([t for t, _ in trainer.records.step_times[1]]))
    _, again = _run(exact_config.replace(workdir=os.path.join(root, "exact_again"), warm_start_from=phi0),
                    dataset, task, strategy)
    out = {"train_images": len(trainer.data.train_idx), "stage2_steps": len(trainer.records.step_times[2]),
           "stage1_step_s_median": stage1,
           "exact": dict(exact, ratio=exact["step_s_median"] / stage1),
           "exact_again": dict(again, ratio=again["step_s_median"] / stage1,
                               mAP_minus_exact=again["mAP"] - exact["mAP"]),
           "fast": []}
    for k, r, c in _variants():
        fast_config = config.replace(workdir=os.path.join(root, f"fast_{k}_{r}_{c:g}"), task=task,
                                     neighbour_mode="fast", shortlist=k, bank_refresh_steps=r,
                                     bank_extrapolation=c, warm_start_from=phi0)
        _, fast = _run(fast_config, dataset, task, strategy, FLAGS.overlap_every_steps)
        amortised = fast["step_s_median"] + fast["bank_refresh_s_per_step"]
        fast.update(shortlist=k, bank_refresh_steps=r, bank_extrapolation=c, ratio=fast["step_s_median"] / stage1,
                    ratio_amortised=amortised / stage1, mAP_minus_exact=fast["mAP"] - exact["mAP"])
        fast["meets_targets"] = bool(fast["ratio_amortised"] <= 1.3 and fast["recall"] >= 0.9
                                     and abs(fast["mAP_minus_exact"]) <= 0.005)
        out["fast"].append(fast)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config, prepare_config = train_entry.configs_from_flags()
        variants = _variants()
    except ValueError as e:
        print(f"bench_step: config error: {e}", file=sys.stderr)
        return 2
    from wsnn.data.preparation import load_or_prepare
    from wsnn.training import distribute

    logging.set_verbosity(logging.WARNING)
    strategy = distribute.make_strategy(config.runtime.num_devices)
    dataset = load_or_prepare(prepare_config)
    flat = config.flat()
    tasks = ("annotation", "refinement") if flat["task"] == "both" else (flat["task"],)
    report = {"settings": {"num_images": dataset.num_images,
                           **{k: flat[k] for k in ("backbone", "batch_size", "group_size", "num_candidates",
                                                   "stage1_epochs", "stage2_epochs")},
                           "fast_variants": variants,
                           "replicas": strategy.num_replicas_in_sync, "cpu_count": os.cpu_count()},
              "targets": {"fast_ratio_max": 1.3, "recall_min": 0.9, "mAP_gap_max": 0.005}}
    for task in tasks:
        report[task] = _task(config, dataset, task, strategy)
    text = json.dumps(report, indent=2)
    io_utils.write_text(os.path.join(config.runtime.workdir, "bench_step.json"), text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    train_entry.define_flags()
    app.run(main)
