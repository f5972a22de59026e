"""Numeric tests of wsnn.metrics against scikit-learn and hand-computed values."""

import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn.metrics import average_precision_score, roc_auc_score

from wsnn.metrics import evaluate, macro_auc, mean_average_precision, miap, micro_auc


def _random_case(seed, n=40, l=7, ties=False):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (n, l)).astype(float) if ties else rng.random((n, l))
    labels = (rng.random((n, l)) < 0.3).astype(int)
    labels[0, :] = 1  # every label has a positive ...
    labels[1, :] = 0  # ... and a negative
    return scores, labels


def _ref_miap(scores, labels):
    aps = [average_precision_score(y, s) if y.any() else 0.0 for s, y in zip(scores, labels)]
    return np.mean(aps)


CASES = [(seed, ties) for seed in range(4) for ties in (False, True)]


@pytest.mark.parametrize("seed,ties", CASES)
def test_miap_matches_sklearn(seed, ties):
    scores, labels = _random_case(seed, ties=ties)
    labels[5, :] = 0  # an image without positives counts as AP 0
    assert miap(scores, labels) == pytest.approx(_ref_miap(scores, labels), abs=1e-12)
    has_pos = labels.any(axis=1)
    skip_ref = _ref_miap(scores[has_pos], labels[has_pos])
    assert miap(scores, labels, no_positive="skip") == pytest.approx(skip_ref, abs=1e-12)


@pytest.mark.parametrize("seed,ties", CASES)
def test_map_matches_sklearn(seed, ties):
    scores, labels = _random_case(seed, ties=ties)
    ref = np.mean([average_precision_score(labels[:, j], scores[:, j]) for j in range(labels.shape[1])])
    assert mean_average_precision(scores, labels) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed,ties", CASES)
def test_auc_matches_sklearn(seed, ties):
    scores, labels = _random_case(seed, ties=ties)
    micro_ref = roc_auc_score(labels.ravel(), scores.ravel())
    macro_ref = np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in range(labels.shape[1])])
    assert micro_auc(scores, labels) == pytest.approx(micro_ref, abs=1e-12)
    assert macro_auc(scores, labels) == pytest.approx(macro_ref, abs=1e-12)


def test_sparse_input_matches_dense():
    scores, labels = _random_case(7, ties=True)
    dense = evaluate(scores, labels)
    sparse = evaluate(scipy.sparse.csr_matrix(scores), scipy.sparse.csr_matrix(labels))
    assert sparse == pytest.approx(dense, abs=1e-12)


def test_hand_computed_ap():
    # Ranking 0.9(+) 0.8(-) 0.7(+) 0.6(-): precisions at positives 1/1, 2/3.
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    labels = np.array([[1, 0, 1, 0]])
    assert miap(scores, labels) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert mean_average_precision(scores.T, labels.T) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_hand_computed_ties():
    # scores 0.9(-) 0.5(+) 0.5(-) 0.1(+): the two 0.5s form one threshold.
    # Positive at 0.5: TP(>=0.5)=1, count(>=0.5)=3 -> 1/3; at 0.1: 2/4. AP = (1/3 + 1/2)/2 = 5/12.
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    labels = np.array([[0, 1, 0, 1]])
    assert miap(scores, labels) == pytest.approx(5 / 12)
    # AUC: pos/neg pairs (0.5,0.9)=0, (0.5,0.5)=1/2, (0.1,0.9)=0, (0.1,0.5)=0 -> 0.5/4 = 0.125.
    # Average ranks: 0.1->1, 0.5->2.5, 0.5->2.5, 0.9->4; (2.5+1 - 2*3/2)/(2*2) = 0.125.
    assert micro_auc(scores, labels) == pytest.approx(0.125)
    assert macro_auc(scores.T, labels.T) == pytest.approx(0.125)
    # Two positives tied with a negative at the top: 0.5(+) 0.5(+) 0.5(-) 0.1(-).
    # Each positive: TP(>=0.5)=2, count(>=0.5)=3 -> AP = 2/3.
    assert miap(np.array([[0.5, 0.5, 0.5, 0.1]]), np.array([[1, 1, 0, 0]])) == pytest.approx(2 / 3)


def test_no_positive_image_conventions():
    # Image 0: 0.9(+) 0.8(-) 0.7(+) -> AP = (1 + 2/3)/2 = 5/6. Image 1 has no positive label.
    scores = np.array([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]])
    labels = np.array([[1, 0, 1], [0, 0, 0]])
    assert miap(scores, labels) == pytest.approx((5 / 6 + 0) / 2)  # "zero" is the default
    assert miap(scores, labels, no_positive="zero") == pytest.approx(5 / 12)
    assert miap(scores, labels, no_positive="skip") == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        miap(scores, labels, no_positive="ignore")


def test_label_without_positives_left_out_with_warning():
    # Label 0 ranking: 0.9(+) 0.8(-) 0.7(+) 0.1(-) -> AP = (1 + 2/3)/2 = 5/6,
    #   AUC: positives beat 2 + 1 of 4 pairs -> 3/4.
    # Label 1: no positive image -> left out of mAP and MacroAUC.
    # Label 2: all positive -> AP = 1, but no negative -> left out of MacroAUC only.
    scores = np.array([[0.9, 0.3, 0.5], [0.8, 0.2, 0.4], [0.7, 0.1, 0.3], [0.1, 0.0, 0.2]])
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    names = ["cat", "dog", "sky"]
    with pytest.warns(UserWarning, match=r"1 label.*dog"):
        assert mean_average_precision(scores, labels, label_names=names) == pytest.approx((5 / 6 + 1) / 2)
    with pytest.warns(UserWarning, match=r"2 label.*dog, sky"):
        assert macro_auc(scores, labels, label_names=names) == pytest.approx(3 / 4)
    with pytest.warns(UserWarning, match=r"1 label.*: 1$"):
        mean_average_precision(scores, labels)
    with pytest.raises(ValueError):
        mean_average_precision(scores, labels, label_names=["cat"])


def test_warning_lists_at_most_five_labels():
    scores = np.random.default_rng(0).random((5, 8))
    labels = np.zeros((5, 8))
    labels[:, 7] = [1, 0, 1, 0, 0]
    with pytest.warns(UserWarning, match=r"^7 label.*: 0, 1, 2, 3, 4, \.\.\.$"):
        mean_average_precision(scores, labels)


def test_perfect_and_reversed_scores():
    rng = np.random.default_rng(3)
    labels = (rng.random((30, 6)) < 0.3).astype(int)
    rows = np.arange(30)
    labels[rows, rows % 6] = 1  # every image and label has a positive ...
    labels[rows, (rows + 1) % 6] = 0  # ... and a negative
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every label has positives and negatives
        perfect = evaluate(labels.astype(float), labels)
    assert perfect == {"miAP": 1.0, "mAP": 1.0, "MicroAUC": 1.0, "MacroAUC": 1.0}
    assert all(type(v) is float for v in perfect.values())
    reversed_scores = 1.0 - labels
    assert micro_auc(reversed_scores, labels) == 0.0
    assert macro_auc(reversed_scores, labels) == 0.0


def test_evaluate_matches_individual_metrics():
    scores, labels = _random_case(11, ties=True)
    labels[4, :] = 0
    result = evaluate(scores, labels, no_positive="skip")
    assert result == {
        "miAP": miap(scores, labels, no_positive="skip"),
        "mAP": mean_average_precision(scores, labels),
        "MicroAUC": micro_auc(scores, labels),
        "MacroAUC": macro_auc(scores, labels),
    }


GOOD_S = np.array([[0.1, 0.2], [0.3, 0.4]])
GOOD_Y = np.array([[1, 0], [0, 1]])


@pytest.mark.parametrize("fn", [miap, mean_average_precision, micro_auc, macro_auc, evaluate])
@pytest.mark.parametrize(
    "scores,labels",
    [
        (GOOD_S, GOOD_Y[:1]),  # shapes differ
        (GOOD_S[0], GOOD_Y[0]),  # 1-D
        (GOOD_S[None], GOOD_Y[None]),  # 3-D
        (GOOD_S, np.array([[1, 0], [2, 1]])),  # label 2
        (GOOD_S, np.array([[1, 0], [0.5, 1]])),  # label 0.5
        (np.array([[0.1, np.nan], [0.3, 0.4]]), GOOD_Y),  # NaN score
        (np.array([[0.1, np.inf], [0.3, 0.4]]), GOOD_Y),  # inf score
        (np.zeros((0, 2)), np.zeros((0, 2))),  # empty
    ],
)
def test_bad_input_raises(fn, scores, labels):
    with pytest.raises(ValueError):
        fn(scores, labels)


# jingwei's conventions: ties ranked by position, labels without positives count as AP 0.


def _positional_ap(ranked_labels):
    """AP of a ranked 0/1 list, written from the formula: precision at each positive's position; 0 without
    positives (Li et al.'s benchmark)."""
    hits, total = 0, 0.0
    for position, label in enumerate(ranked_labels, start=1):
        if label:
            hits += 1
            total += hits / position
    return total / hits if hits else 0.0


def _jingwei_reference(scores, labels):
    """(miAP, mAP) with every ranking sorted by score, highest first, ties in index order (Python's
    stable sort), and AP 0 for a row or column without positives."""
    def mean_ap(s, y):
        aps = []
        for row_s, row_y in zip(s.tolist(), y.tolist()):
            order = sorted(range(len(row_s)), key=lambda i: -row_s[i])
            aps.append(_positional_ap([row_y[i] for i in order]))
        return float(np.mean(aps))
    return mean_ap(scores, labels), mean_ap(scores.T, labels.T)


def test_position_ties_hand_computed():
    # 0.9(-) 0.5(+) 0.5(-) 0.1(+), ties in input order: positives at positions 2 and 4 -> (1/2 + 2/4)/2 = 1/2
    # (one threshold: 5/12). The tied pair the other way round: positions 3 and 4 -> (1/3 + 2/4)/2 = 5/12.
    labels = np.array([[0, 1, 0, 1]])
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    assert miap(scores, labels, ties="position") == pytest.approx(1 / 2)
    assert miap(scores, labels, ties="threshold") == pytest.approx(5 / 12)
    assert miap(scores, np.array([[0, 0, 1, 1]]), ties="position") == pytest.approx(5 / 12)
    assert mean_average_precision(scores.T, labels.T, ties="position") == pytest.approx(1 / 2)


@pytest.mark.parametrize("seed", range(3))
def test_position_ties_equal_threshold_without_ties(seed):
    scores, labels = _random_case(seed)
    assert miap(scores, labels, ties="position") == pytest.approx(miap(scores, labels), abs=1e-12)
    assert mean_average_precision(scores, labels, ties="position") == pytest.approx(
        mean_average_precision(scores, labels), abs=1e-12)


def test_empty_label_counts_as_zero_under_jingwei_convention():
    # Label 0: 0.9(+) 0.8(-) 0.7(+) 0.1(-) -> AP 5/6; label 1 has no positive image.
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "zero" warns about nothing
        assert mean_average_precision(scores, labels, empty_labels="zero") == pytest.approx((5 / 6 + 0) / 2)
    with pytest.warns(UserWarning, match="1 label"):
        assert mean_average_precision(scores, labels) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="empty_labels"):
        mean_average_precision(scores, labels, empty_labels="drop")
    with pytest.raises(ValueError, match="ties"):
        miap(scores, labels, ties="random")


@pytest.mark.parametrize("seed", range(3))
def test_jingwei_convention_matches_a_fixed_tie_order_reference(seed):
    # UserTags-like 0/1 scores: nearly every score is tied. An empty label is included.
    rng = np.random.default_rng(seed)
    labels = (rng.random((30, 5)) < 0.3).astype(int)
    labels[:, 4] = 0
    scores = np.where(rng.random((30, 5)) < 0.7, labels, 1 - labels).astype(float)
    want_miap, want_map = _jingwei_reference(scores, labels)
    got = evaluate(scores, labels, ties="position", empty_labels="zero")
    assert got["miAP"] == pytest.approx(want_miap, abs=1e-12)
    assert got["mAP"] == pytest.approx(want_map, abs=1e-12)
    # Permuting the images changes the tie order, so the position convention's mAP moves with it, while
    # the threshold convention's does not.
    perm = rng.permutation(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mean_average_precision(scores[perm], labels[perm]) == pytest.approx(
            mean_average_precision(scores, labels), abs=1e-12)
    assert mean_average_precision(scores[perm], labels[perm], ties="position", empty_labels="zero") == \
        pytest.approx(_jingwei_reference(scores[perm], labels[perm])[1], abs=1e-12)
