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
              for each "k/r/c" of --fast_variants. Every --overlap_every_steps-th step also
              builds the exact batch with the same weights and records the
              recall of its m-1 neighbours in the fast batch; those steps
              are left out of the timings.

Step time is the whole outer step (building the batch plus the distributed
train step); ratios divide a stage-2 median by the stage-1 median. The fast
mode's amortised ratio adds the time of its whole-bank embeddings (at the
start and every r steps) spread over its steps. images_embedded_per_step
counts the forward passes spent on choosing neighbours (refreshes included).
Targets: fast step at most 1.3x the stage-1 step, recall at least 0.9, mAP
within 0.005 of exact. Writes the JSON to <workdir>/bench_step.json too.
"""

import dataclasses
import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

from wsnn import io_utils
from wsnn import train as train_entry

flags.DEFINE_list("fast_variants", ["0/0/0", "0/0/0.5", "16/0/0.5"],
                  "Fast-mode settings to measure, each shortlist/bank_refresh_steps/bank_extrapolation.")
flags.DEFINE_integer("overlap_every_steps", 5, "Measure the recall against exact batches every this many steps.")
FLAGS = flags.FLAGS


def _summary(trainer, skip=()):
    """Stage-2 step seconds (steps in `skip` left out) and neighbour-choosing forward passes."""
    times = [t for i, (t, _) in enumerate(trainer.step_times[2]) if i not in skip]
    batch = [b for i, (_, b) in enumerate(trainer.step_times[2]) if i not in skip]
    steps = len(trainer.step_times[2])
    refreshes = len(trainer.bank_refresh_times)
    embedded = trainer.batches.images_embedded  # refreshes included
    return {"step_s_median": float(np.median(times)), "batch_s_median": float(np.median(batch)),
            "steps_timed": len(times), "images_embedded_per_step": embedded / steps,
            "bank_refreshes": refreshes, "bank_refresh_s_per_step": float(np.sum(trainer.bank_refresh_times)) / steps}


def _run(config, dataset, task, strategy, overlap_every=0):
    """Trains one task; with overlap_every, measures the fast batches against exact ones."""
    from wsnn import neighbours, train_lib

    trainer = train_lib.Trainer(config, dataset, task, strategy)
    recalls, measured, reference = [], set(), []
    if overlap_every:
        build = trainer._stage2_batch

        def measuring(epoch, step):
            batch = build(epoch, step)
            if step % overlap_every == 0:
                if not reference:  # exact Algorithm 1 on the same candidates and the same live model
                    reference.append(neighbours.NeighbourBatches(
                        trainer.train_source, trainer.user_tags, trainer.batches.candidates, trainer.embed,
                        config.batch_size, config.group_size, config.seed))
                exact = reference[0]
                exact.set_epoch(epoch)
                recalls.append(neighbours.neighbour_recall(batch[2], exact.group_indices(step), config.group_size))
                measured.add(len(trainer.step_times[2]))  # the index this step's time will get
            return batch

        trainer._stage2_batch = measuring
    started = time.perf_counter()
    summary = trainer.run()
    result = {"mAP": summary["metrics"]["Ours"]["mAP"], "wall_s": time.perf_counter() - started}
    result.update(_summary(trainer, measured))
    if recalls:
        result["recall"] = float(np.mean(recalls))
        result["recall_min"] = float(np.min(recalls))
        result["recall_batches"] = len(recalls)
    return trainer, result


def _variants():
    variants = [v.split("/") for v in FLAGS.fast_variants]
    if any(len(v) != 3 for v in variants):
        raise ValueError(f"--fast_variants={','.join(FLAGS.fast_variants)}: each must be "
                         "shortlist/refresh_steps/extrapolation")
    return [(int(k), int(r), float(c)) for k, r, c in variants]


def _task(config, dataset, task, strategy):
    root = config.workdir
    exact_config = dataclasses.replace(config, workdir=os.path.join(root, "exact"), neighbour_mode="exact",
                                       shortlist=0, task=task)
    trainer, exact = _run(exact_config, dataset, task, strategy)
    stage1 = float(np.median([t for t, _ in trainer.step_times[1]]))
    phi0 = exact_config.workdir
    _, again = _run(dataclasses.replace(exact_config, workdir=os.path.join(root, "exact_again"),
                                        warm_start_from=phi0), dataset, task, strategy)
    out = {"train_images": len(trainer.train_idx), "stage2_steps": len(trainer.step_times[2]),
           "stage1_step_s_median": stage1,
           "exact": dict(exact, ratio=exact["step_s_median"] / stage1),
           "exact_again": dict(again, ratio=again["step_s_median"] / stage1,
                               mAP_minus_exact=again["mAP"] - exact["mAP"]),
           "fast": []}
    for k, r, c in _variants():
        fast_config = dataclasses.replace(config, workdir=os.path.join(root, f"fast_{k}_{r}_{c:g}"), task=task,
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
    from wsnn import train_lib

    logging.set_verbosity(logging.WARNING)
    strategy = train_lib.make_strategy(config.num_devices)
    dataset = train_lib.load_or_prepare(prepare_config)
    tasks = ("annotation", "refinement") if config.task == "both" else (config.task,)
    report = {"settings": {"num_images": dataset.num_images, "backbone": config.backbone,
                           "batch_size": config.batch_size, "group_size": config.group_size,
                           "num_candidates": config.num_candidates, "stage1_epochs": config.stage1_epochs,
                           "stage2_epochs": config.stage2_epochs, "fast_variants": variants,
                           "replicas": strategy.num_replicas_in_sync, "cpu_count": os.cpu_count()},
              "targets": {"fast_ratio_max": 1.3, "recall_min": 0.9, "mAP_gap_max": 0.005}}
    for task in tasks:
        report[task] = _task(config, dataset, task, strategy)
    text = json.dumps(report, indent=2)
    io_utils.write_text(os.path.join(config.workdir, "bench_step.json"), text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    train_entry.define_flags()
    app.run(main)
