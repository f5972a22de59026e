"""Refined tags a person can read: a tag set per image from the refined scores.

The network gives every image a score in [0, 1] for every tag; a person wants
a set. The rule here keeps each tag about as frequent as the users made it,
times one factor chosen on the validation split:

    threshold_c = the score above which k * f_c of the training images lie,

where f_c is the share of training images whose user tags contain tag c and
k is the *frequency factor*. Per-tag thresholds follow each tag's own score
scale (a tag the network is unsure about everywhere still gets its share),
and k corrects for the users' incompleteness (k > 1: users forgot tags) or
over-tagging (k < 1). The thresholds use no labels; only the choice of k
reads labels, of the validation images alone (`choose_frequency_factor`: best
micro-F1 of the label tags).

An image's set is every tag whose score reaches its threshold
(`tag_sets`). `set_scores` compares sets with ground-truth labels:
micro-averaged precision, recall and F1 over the label tags.
"""

import numpy as np
import scipy.sparse

__all__ = ["FACTORS", "frequency_thresholds", "tag_sets", "set_scores", "choose_frequency_factor"]

# The frequency factors tried on the validation split.
FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _dense(x):
    return np.asarray(x.toarray() if scipy.sparse.issparse(x) else x)


def frequency_thresholds(scores, user_tags, factor=1.0):
    """Per-tag thresholds that give each tag `factor` times its user-tag frequency.

    Args:
      scores: N x C refined scores of the training images.
      user_tags: N x C 0/1 user tags G of the same images (dense or sparse).
      factor: k > 0.

    Returns:
      float64 C-vector: tag c's threshold is the ceil(k * n_c)-th largest of
      its scores (n_c: images with user tag c, capped at N), so that at least
      that many images reach it (more only on ties); inf for a tag no user
      gave, which is then never in a set.

    Raises:
      ValueError: shapes differ, or factor <= 0.
    """
    scores = np.asarray(scores, np.float64)
    user_tags = _dense(user_tags)
    if scores.ndim != 2 or scores.shape != user_tags.shape:
        raise ValueError(f"scores {scores.shape} and user_tags {user_tags.shape} must be the same N x C")
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    n = len(scores)
    counts = np.minimum(np.ceil(factor * (user_tags > 0).sum(axis=0)), n).astype(np.int64)
    ranked = -np.sort(-scores, axis=0)  # each column descending
    thresholds = np.full(scores.shape[1], np.inf)
    keep = counts > 0
    thresholds[keep] = ranked[counts[keep] - 1, np.flatnonzero(keep)]
    return thresholds


def tag_sets(scores, thresholds):
    """N x C boolean: tag c is in image i's set when scores[i, c] >= thresholds[c]."""
    return np.asarray(scores) >= np.asarray(thresholds)[np.newaxis, :]


def set_scores(tag_set, labels, label_to_tag):
    """Micro precision, recall and F1 of tag sets against labels, over the label tags.

    Args:
      tag_set: N x C 0/1 (boolean, dense or sparse): each image's tags.
      labels: N x L 0/1 ground truth.
      label_to_tag: L ints, the tag column of each label (-1: none; such a
        label is never predicted, so it only adds to the false negatives).

    Returns:
      {"precision", "recall", "F1", "tags_per_image"} (tags_per_image counts
      label tags only). Precision is 0 when no label tag is predicted.
    """
    tag_set = _dense(tag_set) > 0
    labels = _dense(labels) > 0
    label_to_tag = np.asarray(label_to_tag, np.int64)
    if labels.shape[1] != len(label_to_tag) or len(labels) != len(tag_set):
        raise ValueError(f"labels {labels.shape}, tag sets {tag_set.shape} and {len(label_to_tag)} label "
                         "tags do not fit together")
    predicted = np.zeros_like(labels)
    has_tag = label_to_tag >= 0
    predicted[:, has_tag] = tag_set[:, label_to_tag[has_tag]]
    tp = float(np.sum(predicted & labels))
    p, t = float(predicted.sum()), float(labels.sum())
    precision = tp / p if p else 0.0
    recall = tp / t if t else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "F1": f1, "tags_per_image": p / max(len(labels), 1)}


def choose_frequency_factor(train_scores, user_tags, valid_scores, valid_labels, label_to_tag,
                            factors=FACTORS):
    """The frequency factor k with the best validation micro-F1 (ties: the first in `factors`).

    Thresholds come from the training images' scores and user tags (no
    labels); only the validation images' labels are read.

    Returns:
      (k, its thresholds, [{"factor", "precision", "recall", "F1", ...}] for every k tried).
    """
    trials = []
    for k in factors:
        thresholds = frequency_thresholds(train_scores, user_tags, k)
        trials.append(dict(factor=float(k), **set_scores(tag_sets(valid_scores, thresholds), valid_labels,
                                                         label_to_tag)))
    best = max(range(len(trials)), key=lambda i: (trials[i]["F1"], -i))
    return float(factors[best]), frequency_thresholds(train_scores, user_tags, factors[best]), trials
