"""The GPU path at the paper's settings, measured on generated data; prints JSON.

    bash tools/gpu_check.sh                    # VGG16, 224x224 RGB, s=64, m=8, M=512
    bash tools/gpu_check.sh --image_size=32 --num_images=48 --batch_size=8 --group_size=4 \\
        --num_candidates=8 --steps=2          # toy size (the test suite runs this on the CPU)

Generates --num_images random RGB images with random tags (in memory), then
trains three short runs on one strategy (all GPUs, else the CPU), each from
its own fresh start: stage 1 (--steps steps of the logistic loss), and
stage 2 with exact Algorithm 1 and with the fast neighbours (--steps steps
each, from phi_0 = the initial weights: stage 1 has zero epochs there, so
the M candidates come from the untrained network, which costs the same).
Hooks record each step's time, of which building the batch on the host,
and stop a run after --steps steps. Reported per run: the median step time,
images per second (s / step), the batch's share of a step (building the
batch: gathering its images on the host and, for exact Algorithm 1,
embedding the candidates on the device; over the whole step) and the images
embedded per step to choose neighbours (the fast mode's bank refresh
included); and the peak device memory (GPU only; null on the CPU). The
first step of each run (tracing) is left out of the medians.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

TAGS = ("dog", "cat", "sky", "sea", "tree", "car", "road", "flower", "beach", "snow", "bird", "house")


class _Enough(Exception):
    """Raised by `_Measure` once the run's steps are done."""


def _measure_hook(stage, steps):
    from wsnn.training.loop import Hook

    class _Measure(Hook):
        def __init__(self):
            self.records = []

        def after_step(self, run, context):
            if context.stage != stage:
                return
            self.records.append((context.batch_seconds, context.batch_seconds + context.step_seconds))
            if context.done_here >= steps:
                raise _Enough()

    return _Measure()


def _dataset(count, size, seed=0):
    from wsnn.data.dataset import from_tag_lists

    rng = np.random.default_rng(seed)
    tags = [[t for t in TAGS if rng.random() < 0.25] or [TAGS[i % len(TAGS)]] for i in range(count)]
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return from_tag_lists([f"g{i}" for i in range(count)], tags, image_array=images)


def _run(config, dataset, strategy, stage, steps, tf, gpus):
    from wsnn.training.trainer import Trainer

    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    hook = _measure_hook(stage, steps)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(config, dataset, "refinement", strategy, hooks=[hook])
    started = time.perf_counter()
    # The trainer's progress lines go to stderr: stdout is the JSON report alone.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            trainer.run()
        except _Enough:
            pass
    records = hook.records[1:] or hook.records  # the first step traces
    step = float(np.median([total for _, total in records]))
    out = {"steps": len(hook.records), "step_s_median": step,
           "images_per_s": config.schedule.batch_size / step,
           "batch_share": float(np.median([batch / total for batch, total in records])),
           "wall_s": time.perf_counter() - started}
    if stage == 2:
        out["images_embedded_per_step"] = trainer.batches.images_embedded / len(hook.records)
    if gpus:
        out["peak_device_memory_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_images", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--group_size", type=int, default=8)
    parser.add_argument("--num_candidates", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    if args.num_images <= args.num_candidates or args.steps < 1:
        parser.error("--num_images must exceed --num_candidates, and --steps must be >= 1")
    from wsnn import tf_start

    tf = tf_start.start(log=lambda text: print(text, file=sys.stderr))
    from wsnn.config import TrainConfig
    from wsnn.training import distribute

    gpus = tf.config.list_physical_devices("GPU")
    strategy = distribute.make_strategy(0)
    dataset = _dataset(args.num_images, args.image_size)
    root = args.workdir or tempfile.mkdtemp(prefix="wsnn-gpu-check-")
    base = TrainConfig.make(
        task="refinement", backbone=args.backbone, image_size=args.image_size, channels=3,
        batch_size=args.batch_size, group_size=args.group_size, num_candidates=args.num_candidates,
        stage1_epochs=1, stage2_epochs=1, validation_fraction=0, eval_max_images=0, patience=0, alpha=0,
        learning_rate=0.001, log_every_steps=10 ** 6, checkpoint_every_steps=10 ** 6,
        image_summary_every_steps=10 ** 6)
    report = {"device": "GPU" if gpus else "CPU", "gpus": len(gpus),
              "replicas": strategy.num_replicas_in_sync, "cpu_count": os.cpu_count(),
              "settings": {k: v for k, v in vars(args).items() if k != "workdir"}}
    report["stage1"] = _run(base.replace(workdir=os.path.join(root, "stage1")), dataset, strategy, 1, args.steps,
                            tf, gpus)
    for mode in ("exact", "fast"):
        config = base.replace(workdir=os.path.join(root, mode), stage1_epochs=0, neighbour_mode=mode)
        report[f"stage2_{mode}"] = _run(config, dataset, strategy, 2, args.steps, tf, gpus)
    for mode in ("exact", "fast"):
        report[f"stage2_{mode}"]["step_vs_stage1"] = (report[f"stage2_{mode}"]["step_s_median"]
                                                     / report["stage1"]["step_s_median"])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
