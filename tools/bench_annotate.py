"""Times annotation throughput on the CPU for a FashionTags-shaped tagger; prints JSON.

Without --model it builds `small_cnn` with FashionTags' shape (45 tags, 56 x 56
grey) and exports it to a temporary directory. On one batch of random images
it times, after warm-up, the median of several repetitions of:
  keras            the Keras model called directly in a tf.function (only
                   without --model: an export holds no callable Keras model);
  serve_images     the SavedModel's serve_images signature (uint8 images);
  serving_default  the serving_default signature on PNG bytes of the same
                   images, so decoding and resizing in the graph included.
The target is serve_images within 10% of keras (ratio >= 0.9).

    .venv/bin/python tools/bench_annotate.py [--batch_size=256] [--model=exports/fashion_tags]
"""

import argparse
import io
import json
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from wsnn import models, serving


def _median_seconds(fns, warmup, repeats):
    """Median seconds per call of each fn; repetitions take turns so that load drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="An export or version directory (default: build one).")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    model = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            loaded, metadata = serving.load(args.model)
        else:
            model = models.build_model("small_cnn", 45, (56, 56, 1))
            loaded, metadata = serving.load(serving.export(model, [f"tag{j}" for j in range(45)], 56, 1,
                                                         os.path.join(tmp, "export")))
        size, channels = metadata["image_size"], metadata["channels"]
        images = np.random.default_rng(0).integers(0, 256, (args.batch_size, size, size, channels), np.uint8)
        pngs = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if channels == 1 else image).save(buffer, "PNG")
            pngs.append(buffer.getvalue())
        images_t, pngs_t = tf.constant(images), tf.constant(pngs, tf.string)

        fns = {}
        if model is not None:
            keras_fn = tf.function(lambda x: model(x, training=False)["tag_probs"])
            fns["keras"] = lambda: keras_fn(images_t).numpy()
        serve_images, serve_bytes = loaded.signatures["serve_images"], loaded.signatures["serving_default"]
        fns["serve_images"] = lambda: serve_images(images=images_t)["probabilities"].numpy()
        fns["serving_default_png"] = lambda: serve_bytes(image_bytes=pngs_t)["probabilities"].numpy()
        seconds = _median_seconds(fns, args.warmup, args.repeats)

    rates = {f"{k}_images_per_s": round(args.batch_size / s, 1) for k, s in seconds.items()}
    ratio = seconds["keras"] / seconds["serve_images"] if "keras" in seconds else None
    print(json.dumps({
        "model": args.model or "small_cnn (untrained, exported to a temporary directory)",
        "image_shape": [size, size, channels],
        "tags": len(metadata["tag_names"]),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpu_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                        "cpus": os.cpu_count()},
        **rates,
        "decode_ms_per_image": round(1000 * (seconds["serving_default_png"] - seconds["serve_images"])
                                     / args.batch_size, 3),
        "serve_images_to_keras_ratio": None if ratio is None else round(ratio, 3),
        "target_met": None if ratio is None else ratio >= 0.9,
    }, indent=1))


if __name__ == "__main__":
    main()
