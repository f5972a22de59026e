"""The paper's four evaluation metrics (Zhang et al., AAAI 2018), vectorised with NumPy.

All functions score an ``N x L`` float matrix ``scores`` (N images, L labels)
against an ``N x L`` 0/1 matrix ``labels``:

* **miAP** (mean image AP): the AP of each image (row) ranking its L labels,
  averaged over images. An image without any positive label has undefined AP;
  by default (``no_positive="zero"``) it counts as AP 0, as the jingwei
  benchmark of Li et al. (2016) that the paper follows does, so numbers are
  comparable with the paper. ``no_positive="skip"`` leaves such images out.
* **mAP** (mean label AP): the AP of each label (column) ranking the N images,
  averaged over labels. By default (``empty_labels="skip"``) labels without
  positive images are left out, with a warning; ``empty_labels="zero"``
  counts them as AP 0, as jingwei does.
* **MicroAUC**: the ROC AUC of all ``N * L`` (score, label) pairs concatenated.
* **MacroAUC**: the ROC AUC of each label column, averaged over labels. Labels
  without positives or without negatives are left out, with a warning.

Tied scores in AP (``ties``):

* ``"threshold"`` (default; scikit-learn's): a tied group is one threshold.
  AP is ``(1/npos) * sum over positives i of TP(s_i) / count(s_i)``, where
  ``count(s)`` is the number of items scoring ``>= s`` and ``TP(s)`` the
  number of positives scoring ``>= s``, so it equals
  ``sklearn.metrics.average_precision_score``. The number does not depend on
  the order of the items.
* ``"position"`` (jingwei's): the items are ranked, tied items in their
  order in the input (lower index first, a stable sort), and AP is
  ``(1/npos) * sum over positives of (positives up to and including it) /
  (its 1-based position)``. jingwei ranks a label's images by score and then
  by image-id string, descending, and an image's labels by score, then in
  concept order; to reproduce its numbers exactly, order the rows (images)
  and columns (labels) that way. On tie-heavy scores (UserTags, whole-number
  votes) this is higher than ``"threshold"`` whenever positives happen to
  come first among their ties.

AUC uses the Mann-Whitney form with average ranks, ``(sum of positive ranks
- npos(npos+1)/2) / (npos * nneg)``, which equals
``sklearn.metrics.roc_auc_score``, under both tie conventions (jingwei
reports no AUC).

`CONVENTIONS` names the two sets of choices: "wsnn" (the defaults) and
"jingwei" (``ties="position"``, ``empty_labels="zero"``; its KNN and TagVote
also use cosine distance, see `wsnn.search.for_distance`).

Sparse (``scipy.sparse``) inputs are converted to dense arrays: L is small
here (labels are concepts, not the free-form tag vocabulary). Computation is
in float64.
"""

import warnings

import numpy as np
import scipy.sparse
from scipy.stats import rankdata

__all__ = ["CONVENTIONS", "miap", "mean_average_precision", "micro_auc", "macro_auc", "evaluate"]

# The metric options and the neighbour distance of each convention (the benchmark's --convention).
CONVENTIONS = {
    "wsnn": {"ties": "threshold", "empty_labels": "skip", "distance": "euclidean"},
    "jingwei": {"ties": "position", "empty_labels": "zero", "distance": "cosine"},
}
TIES = ("threshold", "position")
EMPTY_LABELS = ("skip", "zero")


def _check(scores, labels):
    """Validate inputs and return them as dense float64 arrays."""
    scores = scores.toarray() if scipy.sparse.issparse(scores) else scores
    labels = labels.toarray() if scipy.sparse.issparse(labels) else labels
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim != 2 or labels.ndim != 2:
        raise ValueError(f"scores and labels must be 2-D, got {scores.ndim}-D and {labels.ndim}-D")
    if scores.shape != labels.shape:
        raise ValueError(f"scores shape {scores.shape} differs from labels shape {labels.shape}")
    if scores.size == 0:
        raise ValueError(f"empty input of shape {scores.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must contain only 0 and 1")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    return scores, labels


def _check_option(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _row_ap(scores, labels, ties="threshold"):
    """AP of each row ranking its columns; NaN for rows without positives."""
    _check_option("ties", ties, TIES)
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    y = np.take_along_axis(labels, order, axis=1)
    n = s.shape[1]
    npos = y.sum(axis=1)
    if ties == "position":
        precision = np.cumsum(y, axis=1) / np.arange(1, n + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (y * precision).sum(axis=1) / npos
    # Index of the last item of each item's tie group: reverse running minimum
    # over the positions where the score changes (or the row ends).
    is_end = np.ones_like(s, dtype=bool)
    is_end[:, :-1] = s[:, :-1] != s[:, 1:]
    end = np.where(is_end, np.arange(n), n)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
    tp = np.take_along_axis(np.cumsum(y, axis=1), end, axis=1)
    precision = tp / (end + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (y * precision).sum(axis=1) / npos


def _col_auc(scores, labels):
    """ROC AUC of each column; NaN for columns without positives or negatives."""
    ranks = rankdata(scores, axis=0)
    npos = labels.sum(axis=0)
    nneg = labels.shape[0] - npos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(axis=0) - npos * (npos + 1) / 2) / (npos * nneg)


def _mean_valid(values, what, label_names):
    """Mean of non-NaN per-label values, warning about the NaN (left-out) ones."""
    bad = np.flatnonzero(np.isnan(values))
    if bad.size:
        shown = [label_names[i] for i in bad[:5]] if label_names is not None else bad[:5].tolist()
        more = ", ..." if bad.size > 5 else ""
        warnings.warn(f"{bad.size} label(s) with {what} left out of the mean: "
                      f"{', '.join(map(str, shown))}{more}", stacklevel=3)
    if bad.size == values.size:
        return float("nan")
    return float(np.nanmean(values))


def _check_names(label_names, n_labels):
    if label_names is not None and len(label_names) != n_labels:
        raise ValueError(f"label_names has {len(label_names)} entries, expected {n_labels}")


def miap(scores, labels, no_positive="zero", ties="threshold"):
    """Mean image average precision (miAP): AP of each image's label ranking, averaged.

    Args:
        scores: ``N x L`` array-like (or scipy.sparse) of real scores.
        labels: ``N x L`` array-like (or scipy.sparse) of 0/1 ground truth.
        no_positive: ``"zero"`` counts images without positive labels as AP 0
            (jingwei / paper convention); ``"skip"`` leaves them out of the mean.
        ties: ``"threshold"`` or ``"position"``, see the module docstring.

    Returns:
        The miAP as a float (NaN if ``"skip"`` leaves no image).

    Raises:
        ValueError: on invalid inputs or an unknown ``no_positive`` or ``ties`` value.
    """
    _check_option("no_positive", no_positive, ("zero", "skip"))
    scores, labels = _check(scores, labels)
    ap = _row_ap(scores, labels, ties)
    if no_positive == "zero":
        return float(np.nan_to_num(ap, nan=0.0).mean())
    return float(np.nanmean(ap)) if not np.all(np.isnan(ap)) else float("nan")


def mean_average_precision(scores, labels, label_names=None, ties="threshold", empty_labels="skip"):
    """Mean label average precision (mAP): AP of each label's image ranking, averaged.

    Args:
        scores: ``N x L`` array-like (or scipy.sparse) of real scores.
        labels: ``N x L`` array-like (or scipy.sparse) of 0/1 ground truth.
        label_names: optional sequence of L names used in the warning.
        ties: ``"threshold"`` or ``"position"``, see the module docstring.
        empty_labels: ``"skip"`` leaves labels without any positive image out
            of the mean, with a warning; ``"zero"`` (jingwei) counts them as
            AP 0.

    Returns:
        The mAP as a float (NaN if ``"skip"`` leaves no label).

    Raises:
        ValueError: on invalid inputs or an unknown option.
    """
    _check_option("empty_labels", empty_labels, EMPTY_LABELS)
    scores, labels = _check(scores, labels)
    _check_names(label_names, labels.shape[1])
    ap = _row_ap(scores.T, labels.T, ties)
    if empty_labels == "zero":
        return float(np.nan_to_num(ap, nan=0.0).mean())
    return _mean_valid(ap, "no positive image", label_names)


def micro_auc(scores, labels):
    """MicroAUC: ROC AUC over all ``N * L`` (score, label) pairs concatenated.

    Args:
        scores: ``N x L`` array-like (or scipy.sparse) of real scores.
        labels: ``N x L`` array-like (or scipy.sparse) of 0/1 ground truth.

    Returns:
        The MicroAUC as a float.

    Raises:
        ValueError: on invalid inputs, or if all labels are 0 or all are 1.
    """
    scores, labels = _check(scores, labels)
    auc = _col_auc(scores.reshape(-1, 1), labels.reshape(-1, 1))[0]
    if np.isnan(auc):
        raise ValueError("MicroAUC is undefined: labels are all 0 or all 1")
    return float(auc)


def macro_auc(scores, labels, label_names=None):
    """MacroAUC: ROC AUC of each label column, averaged over labels.

    Labels without positives or without negatives are left out with a warning.

    Args:
        scores: ``N x L`` array-like (or scipy.sparse) of real scores.
        labels: ``N x L`` array-like (or scipy.sparse) of 0/1 ground truth.
        label_names: optional sequence of L names used in the warning.

    Returns:
        The MacroAUC as a float (NaN if no label is usable).

    Raises:
        ValueError: on invalid inputs.
    """
    scores, labels = _check(scores, labels)
    _check_names(label_names, labels.shape[1])
    return _mean_valid(_col_auc(scores, labels), "no positive or no negative image", label_names)


def evaluate(scores, labels, no_positive="zero", label_names=None, ties="threshold", empty_labels="skip"):
    """Compute all four metrics of the paper.

    Args:
        scores: ``N x L`` array-like (or scipy.sparse) of real scores.
        labels: ``N x L`` array-like (or scipy.sparse) of 0/1 ground truth.
        no_positive: miAP convention for images without positives, see `miap`.
        label_names: optional sequence of L names used in warnings.
        ties: AP's tie convention (miAP and mAP), see the module docstring.
        empty_labels: mAP's convention for labels without positives, see
            `mean_average_precision`.

    Returns:
        ``{"miAP": float, "mAP": float, "MicroAUC": float, "MacroAUC": float}``.

    Raises:
        ValueError: on invalid inputs.
    """
    scores, labels = _check(scores, labels)
    return {
        "miAP": miap(scores, labels, no_positive, ties),
        "mAP": mean_average_precision(scores, labels, label_names, ties, empty_labels),
        "MicroAUC": micro_auc(scores, labels),
        "MacroAUC": macro_auc(scores, labels, label_names),
    }
