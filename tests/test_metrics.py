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
