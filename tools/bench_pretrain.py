"""What pretraining puts into small_cnn's features: a 10-class linear probe; prints JSON.

    .venv/bin/python tools/bench_pretrain.py [--weights=runs/pretrained/small_cnn_fashion_mnist.npz]

Images: the 1,000 photos of the pretraining pool's held-out tenth (Fashion-MNIST
train images 59,000-59,999: never a FashionTags image, never a pretraining
training image), each alone in a random cell of an otherwise black 56x56
mosaic. Features, in inference mode, at two layers: "gap" (the 64 pooled
convolution channels) and "feature" (phi, the 256-unit layer), for
  random      small_cnn as `build_model` initialises it (seed 0), its
              batch-norm statistics measured on these images so that its
              features are not distorted by the default statistics;
  pretrained  the --weights file.
Probe: standardised features, multinomial logistic regression (C=1), 5-fold
cross-validated accuracy on the 10 Fashion-MNIST classes, which pretraining
never saw (it learns 3 coarse groups). The pretraining pool is the only data
read; the scene pool and the test split are not.
"""

import argparse
import json
import time

import numpy as np

from wsnn import models, pretrain
from wsnn.data import fashion_tags


def probe_images(pool, seed=0):
    """The held-out tenth of the pool, each image alone in a random cell; (images, classes)."""
    start = len(pool.images) - len(pool.images) // pretrain.HOLDOUT_DIVISOR
    items, classes = pool.images[start:], pool.classes[start:]
    rng = np.random.default_rng(seed)
    images = np.zeros((len(items), 56, 56, 1), np.uint8)
    for i, item in enumerate(items):
        r, q = divmod(int(rng.integers(4)), 2)
        images[i, 28 * r:28 * r + 28, 28 * q:28 * q + 28, 0] = item
    return images, classes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=pretrain.DEFAULT_OUT)
    parser.add_argument("--source_dir", default=fashion_tags.SOURCE_DIR)
    args = parser.parse_args()

    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, classes = probe_images(fashion_tags.pretraining_pool(args.source_dir))
    result = {"images": len(images), "weights": args.weights}
    for name, weights in (("random", "none"), ("pretrained", args.weights)):
        start = time.perf_counter()
        keras.utils.set_random_seed(0)
        model = models.build_model("small_cnn", 10, (56, 56, 1), weights=weights)
        if weights == "none":
            pretrain.recalibrate_batch_norm(model, images, 100)
        layers = keras.Model(model.input, [model.get_layer("gap").output, model.get_layer("feature").output])
        for layer, features in zip(("gap", "feature"), layers(images.astype(np.float32), training=False)):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            scores = cross_val_score(probe, np.asarray(features), classes, cv=5)
            result[f"{name}/{layer}"] = {"accuracy": round(float(scores.mean()), 4),
                                         "std": round(float(scores.std()), 4)}
        result[f"{name}/seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
