"""The benchmark's network runs: ours, Multi-CNN and their variants, each one training task.

Every training goes through `train` (a task that finished earlier is read
back, not trained again) and is measured with `wsnn.meter.PeakMemory`; a
reused task's cost is the one its earlier benchmark run recorded (`cost`).
"""

import dataclasses
import os

import numpy as np
import scipy.sparse

from wsnn.benchmark import methods
from wsnn.meter import PeakMemory


def train(config, dataset, task, strategy):
    """Trains one task; returns (its `TaskResult`, or None on a worker other than the chief; its
    `PeakMemory`)."""
    from wsnn.training import runner

    with PeakMemory() as usage:
        result = runner.train_task(config, dataset, task, strategy)
    return result, usage


def cost(result, usage, earlier):
    """Time and peak memory of one training: measured now, or, for a task that had finished and was read
    back, those the earlier benchmark run recorded in its row `earlier` (left out when unknown)."""
    if not result.reused:
        return {"seconds": usage.seconds, "peak_mib": usage.mib}
    return {key: earlier[key] for key in ("seconds", "peak_mib") if earlier and key in earlier}


def pretrained_features(config, dataset):
    """The pretrained backbone's features (the `--weights` file, before any training on tags) of every
    image, computed once for all seeds and protocols; None without pretrained weights."""
    if config.model.weights == "none":
        return None
    from wsnn import models
    from wsnn.data import pipeline

    source = pipeline.ImageSource(dataset, config.data.image_size or None, config.data.channels or None)
    model = models.build_model(config.model.backbone, dataset.num_tags, source.get([0]).shape[1:],
                               config.model.weights)
    return models.source_features(model, source)


def true_label_tags(dataset):
    """The dataset with every image's user tags replaced by the tags of its true labels (the upper
    bound's input; labels without a tag are dropped)."""
    has_tag = dataset.label_to_tag >= 0
    rows, cols = np.nonzero(np.asarray(dataset.labels)[:, has_tag])
    tags = dataset.label_to_tag[has_tag][cols]
    user_tags = scipy.sparse.csr_matrix((np.ones(len(rows), np.uint8), (rows, tags)),
                                        shape=(dataset.num_images, dataset.num_tags))
    return dataclasses.replace(dataset, user_tags=user_tags)


def _row(result, usage, dataset, labels, convention, earlier, selected=True):
    """A trained method's row: its metrics on the evaluated images, its cost [and its kept stage-2 epoch]."""
    row = dict(methods.evaluate(result.eval_tag_probs, dataset, labels, convention), **cost(result, usage, earlier))
    if selected:
        row["stage2_epoch"] = result.summary["selection"]["stage2_epoch"]
    return row


def network_rows(config, dataset, task, strategy, variant, convention, earlier):
    """Ours, Multi-CNN (phi_0), Multi-CNN (same budget) [and Ours (bce)] of one protocol and seed;
    returns (ours' `TaskResult`, {method: result}); (None, {}) on a worker other than the chief.
    `earlier`: {method: row} of an earlier run."""
    workdir = config.runtime.workdir
    ours, usage = train(config, dataset, task, strategy)
    extra = {"Multi-CNN (same budget)": dict(stage2_objective="multi_cnn")}
    if variant:
        extra["Ours (bce)"] = variant
    results = {}
    for name, change in extra.items():
        other = config.replace(**change, warm_start_from=workdir,
                               workdir=os.path.join(workdir, name.replace(" ", "_")))
        results[name] = train(other, dataset, task, strategy)
    if ours is None:
        return None, {}
    labels = dataset.labels[ours.eval_idx]
    rows = {"Multi-CNN": methods.evaluate(ours.phi0["eval_tag_probs"], dataset, labels, convention),
            "Ours": _row(ours, usage, dataset, labels, convention, earlier.get("Ours"))}
    for name, (result, use) in results.items():
        rows[name] = _row(result, use, dataset, labels, convention, earlier.get(name))
    return ours, rows


def true_labels_row(config, dataset, eval_idx, strategy, convention, earlier):
    """The "Multi-CNN (true labels)" row of the annotation protocol (None on a worker other than the
    chief): phi_0 trained on the training images' true labels, scored on the evaluated images."""
    upper = config.replace(stage2_epochs=0, save_stage1_features=False,
                           workdir=os.path.join(config.runtime.workdir, "true_labels"))
    result, usage = train(upper, true_label_tags(dataset), "annotation", strategy)
    if result is None:
        return None
    return _row(result, usage, dataset, dataset.labels[eval_idx], convention, earlier, selected=False)
