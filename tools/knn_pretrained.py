"""Does the pretrained backbone make FashionTags trivial? KNN on frozen features; prints JSON.

    .venv/bin/python tools/knn_pretrained.py --weights=runs/pretrained/small_cnn_fashion_mnist.npz \
        --num_images=10000 --workdir=/tmp/knn_pretrained

Annotation protocol (seed 0: train on 1/5 less the validation split, score the
other 4/5 against labels). Features of the small CNN's phi layer, frozen, from
(a) a random initialisation and (b) the --weights file. For each, KNN (k=50)
voting with the user tags (the paper's KNN baseline) and, as a ceiling for
neighbour voting on those features, with the true labels of the training
images. No network is trained here.
"""

import argparse
import json

from wsnn import metrics, models
from wsnn.baselines import knn
from wsnn.data import pipeline
from wsnn.data.preparation import PrepareConfig, load_or_prepare
from wsnn.training.state import split


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--workdir", default="/tmp/knn_pretrained")
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()
    dataset = load_or_prepare(PrepareConfig(workdir=args.workdir, num_images=args.num_images))
    train_idx, _, eval_idx = split(dataset.num_images, "annotation", 0.2, 0, 0.1)
    train, evaluated = dataset.subset(train_idx), dataset.subset(eval_idx)
    sources = [pipeline.ImageSource(s) for s in (train, evaluated)]
    out = {"train_images": len(train_idx), "eval_images": len(eval_idx), "k": args.k}
    for name, weights in (("random", "none"), ("pretrained", args.weights)):
        model = models.build_model("small_cnn", dataset.num_tags, sources[0].get([0]).shape[1:], weights)
        feats = [models.source_features(model, s) for s in sources]
        tags = knn.knn_scores(feats[0], train.user_tags, feats[1], k=args.k)
        out[f"{name} KNN (user tags)"] = metrics.evaluate(dataset.label_scores(tags), evaluated.labels)
        by_label = knn.knn_scores(feats[0], train.labels, feats[1], k=args.k)
        out[f"{name} KNN (true labels)"] = metrics.evaluate(by_label, evaluated.labels)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
