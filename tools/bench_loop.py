"""The trainer's own loop against `model.fit` on the same shapes: stage-1 steps per second; prints JSON.

    .venv/bin/python tools/bench_loop.py [--steps=200] [--rounds=2] [--image_size=56] [--batch_size=64]

Both train a fresh small CNN (the demo's shapes: 56 x 56 grey images, s=64,
the FashionTags tag count) with SGD and the multi-label logistic loss on the
same generated uint8 batches:
  loop  what `wsnn.training.loop.run_stage` does per step: the batch from
        `wsnn.training.inputs.Prefetcher` (read ahead), split over the
        replicas (`distribute.distribute`), the `tf.function` step of
        `wsnn.training.steps.Steps` under the strategy, its losses read
        back as Python floats (as the hooks use them);
  fit   `model.fit` on a `tf.data` pipeline of the same batches (prefetched),
        one epoch of --steps steps, under the same strategy.
Each is timed after a warm-up of 10 steps (tracing), --rounds times,
alternating; the ratio is loop steps/s over fit steps/s (1 = level).
"""

import argparse
import json
import sys
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=56)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_tags", type=int, default=36)
    args = parser.parse_args()

    from wsnn import tf_start

    tf = tf_start.start(log=lambda text: print(text, file=sys.stderr))  # stdout: the JSON
    import keras

    from wsnn import losses, models
    from wsnn.training import distribute, inputs
    from wsnn.training.steps import Steps

    strategy = distribute.make_strategy(1)
    rng = np.random.default_rng(0)
    shape = (args.image_size, args.image_size, 1)
    pool = 32  # distinct batches, reused in turn
    images = rng.integers(0, 256, (pool, args.batch_size, *shape), dtype=np.uint8)
    tags = (rng.random((pool, args.batch_size, args.num_tags)) < 0.1).astype(np.float32)

    def build():
        with strategy.scope():
            model = models.build_model("small_cnn", args.num_tags, shape, "none")
            optimizer = keras.optimizers.SGD(0.005, momentum=0.9)
            optimizer.build(model.trainable_variables)
        return model, optimizer

    def run_loop(steps):
        model, optimizer = build()
        train = Steps(model, [optimizer, optimizer], losses.MultiLabelLogisticLoss(), None, strategy, shape,
                      "multi_cnn").train[1]
        prefetcher = inputs.Prefetcher(lambda epoch, step: (images[step % pool], tags[step % pool], None), steps)
        try:
            for step in range(10):
                {k: float(v) for k, v in train(*distribute.distribute(strategy, *prefetcher(0, step)[:2])).items()}
            started = time.perf_counter()
            for step in range(10, 10 + steps):
                batch = prefetcher(0, step)
                {k: float(v) for k, v in train(*distribute.distribute(strategy, *batch[:2])).items()}
            return steps / (time.perf_counter() - started)
        finally:
            prefetcher.close()

    def run_fit(steps):
        model, optimizer = build()
        with strategy.scope():
            model.compile(optimizer=optimizer, loss={"tag_probs": losses.MultiLabelLogisticLoss()})
        dataset = tf.data.Dataset.from_tensor_slices(
            (images.reshape(-1, *shape), {"tag_probs": tags.reshape(-1, args.num_tags)}))
        dataset = dataset.batch(args.batch_size).repeat().prefetch(tf.data.AUTOTUNE)
        model.fit(dataset, epochs=1, steps_per_epoch=10, verbose=0, shuffle=False)  # warm-up: tracing
        started = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        return steps / (time.perf_counter() - started)

    report = {"steps": args.steps, "batch_size": args.batch_size, "image_size": args.image_size,
              "loop_steps_per_s": [], "fit_steps_per_s": []}
    for _ in range(args.rounds):
        report["loop_steps_per_s"].append(run_loop(args.steps))
        report["fit_steps_per_s"].append(run_fit(args.steps))
    report["loop_over_fit"] = float(np.mean(report["loop_steps_per_s"]) / np.mean(report["fit_steps_per_s"]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
