"""Tests for RandomGuess and UserTags (wsnn.baselines.trivial)."""

import numpy as np

from wsnn import metrics
from wsnn.baselines import trivial
from wsnn.data.dataset import from_tag_lists


def test_user_tags_scores_follow_label_to_tag():
    ds = from_tag_lists(["a", "b", "c"], [["dog"], ["cat", "dog"], []],
                        image_paths=["a", "b", "c"], labels=np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]]),
                        label_names=["dog", "cat", "bird"], label_to_tag=[1, 0, -1])
    # vocabulary is sorted: cat=0, dog=1; the bird label has no tag and scores 0.
    np.testing.assert_array_equal(trivial.user_tags_scores(ds), [[1, 0, 0], [1, 1, 0], [0, 0, 0]])


def test_random_guess_is_mean_over_draws_and_near_chance():
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 5)) < 0.2).astype(int)
    mean, std = trivial.random_guess(labels, draws=80, seed=3)
    # The mean is exactly the average of the per-draw metrics with the same seed.
    draw_rng = np.random.default_rng(3)
    expected = np.mean([metrics.evaluate(draw_rng.random(labels.shape), labels)["mAP"] for _ in range(80)])
    assert abs(mean["mAP"] - expected) < 1e-12
    # Chance levels: AUC 0.5; AP about the positive rate.
    assert abs(mean["MicroAUC"] - 0.5) < 0.02 and abs(mean["MacroAUC"] - 0.5) < 0.02
    assert abs(mean["mAP"] - labels.mean()) < 0.03
    assert all(s > 0 for s in std.values())
