"""Tests of wsnn.tag_sets: the frequency-keeping tag-set rule on hand-computed cases."""

import numpy as np
import pytest
import scipy.sparse

from wsnn import tag_sets

# 4 images x 3 tags. Users gave tag 0 to 2 images, tag 1 to 1, tag 2 to none.
SCORES = np.array([[0.9, 0.2, 0.5],
                   [0.4, 0.8, 0.1],
                   [0.7, 0.3, 0.6],
                   [0.1, 0.6, 0.2]])
USER_TAGS = np.array([[1, 0, 0],
                      [0, 1, 0],
                      [0, 0, 0],
                      [1, 0, 0]])


def test_thresholds_keep_k_times_the_user_tag_frequency():
    # k = 1: tag 0 keeps its 2nd largest score (0.7), tag 1 its largest (0.8), tag 2 nothing.
    np.testing.assert_array_equal(tag_sets.frequency_thresholds(SCORES, USER_TAGS, 1.0), [0.7, 0.8, np.inf])
    # k = 1.5: ceil(3) = 3rd largest for tag 0 (0.4), ceil(1.5) = 2nd for tag 1 (0.6).
    np.testing.assert_array_equal(tag_sets.frequency_thresholds(SCORES, USER_TAGS, 1.5), [0.4, 0.6, np.inf])
    # k = 3: tag 0 capped at N = 4 images (0.1); tag 1 its 3rd largest (0.3).
    thresholds = tag_sets.frequency_thresholds(scipy.sparse.csr_matrix(SCORES).toarray(),
                                               scipy.sparse.csr_matrix(USER_TAGS), 3.0)
    np.testing.assert_array_equal(thresholds, [0.1, 0.3, np.inf])
    sets = tag_sets.tag_sets(SCORES, [0.7, 0.8, np.inf])
    np.testing.assert_array_equal(sets, [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_set_scores_micro_precision_recall_f1():
    # Labels: 2 labels; label 0 -> tag 0, label 1 -> tag 1.
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    sets = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
    out = tag_sets.set_scores(sets, labels, [0, 1])
    # Predicted label tags: (0,0) (1,0) (1,1) (3,1) -> 4; true positives (0,0) (1,1) -> 2; labels 4.
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == pytest.approx(0.5)
    assert out["F1"] == pytest.approx(0.5) and out["tags_per_image"] == pytest.approx(1.0)
    # A label with no tag is never predicted: only its positives count (as misses).
    out = tag_sets.set_scores(sets, labels, [0, -1])
    assert out["precision"] == pytest.approx(1 / 2) and out["recall"] == pytest.approx(1 / 4)
    empty = tag_sets.set_scores(np.zeros((4, 3)), labels, [0, 1])
    assert empty == {"precision": 0.0, "recall": 0.0, "F1": 0.0, "tags_per_image": 0.0}


def test_factor_is_chosen_by_validation_f1_only():
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])   # validation labels of the same 4 images
    k, thresholds, trials = tag_sets.choose_frequency_factor(SCORES, USER_TAGS, SCORES, labels, [0, 1],
                                                             factors=(1.0, 1.5))
    # k=1: sets {0:t0, 1:t1, 2:t0} -> 3 right of 3 predicted, 4 labels: P 1, R .75, F1 .857.
    # k=1.5: thresholds (0.4, 0.6) -> tag0 on 0,1,2; tag1 on 1,3: 4 right of 5: P .8, R 1, F1 .889.
    assert [t["factor"] for t in trials] == [1.0, 1.5]
    assert trials[0]["F1"] == pytest.approx(6 / 7) and trials[1]["F1"] == pytest.approx(8 / 9)
    assert k == 1.5
    np.testing.assert_array_equal(thresholds, [0.4, 0.6, np.inf])


def test_bad_input():
    with pytest.raises(ValueError, match="same N x C"):
        tag_sets.frequency_thresholds(SCORES, USER_TAGS[:3])
    with pytest.raises(ValueError, match="factor must be > 0"):
        tag_sets.frequency_thresholds(SCORES, USER_TAGS, 0)
