"""Tests for TagExample (wsnn.baselines.tagexample), against brute-force NumPy references."""

import numpy as np
import pytest
import scipy.sparse
from sklearn.svm import LinearSVC

from wsnn.baselines import tagexample

RNG = np.random.default_rng(1)
W = np.array([1.0, -2.0, 0.5, 1.0])


def _tagvote(features, tags, k, distances):
    """Brute-force TagVote of every training image: leave-one-out k nearest (ties by lower index), minus prior."""
    distances = distances.astype(np.float64).copy()
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return tags[neighbours].sum(axis=1) - k * tags.sum(axis=0) / len(tags)


def _top_voted(relevance, tags, count):
    """Per tag, its tagged images by decreasing relevance, equal relevance by lower index, the first `count`."""
    chosen = []
    for t in range(tags.shape[1]):
        tagged = [i for i in range(len(tags)) if tags[i, t]]
        tagged.sort(key=lambda i: (-relevance[i, t], i))
        chosen.append(tagged[:count])
    return chosen


def test_select_positives_are_the_top_voted_tagged_images():
    # Small integers: many equal distances and equal votes, so both tie rules are exercised.
    features = RNG.integers(0, 3, size=(60, 4)).astype(np.float64)
    tags = (RNG.random((60, 3)) < [0.5, 0.3, 0.1]).astype(np.float32)
    squared = ((features[:, None, :] - features[None, :, :]) ** 2).sum(axis=-1)
    expected = _top_voted(_tagvote(features, tags, 7, squared), tags, 10)
    chosen = tagexample.select_positives(features, scipy.sparse.csr_matrix(tags), num_positives=10, vote_k=7)
    assert [list(c) for c in chosen] == expected
    assert len(chosen[2]) == min(10, int(tags[:, 2].sum()))


def test_select_positives_cosine():
    features = RNG.normal(size=(60, 4))
    tags = (RNG.random((60, 3)) < 0.4).astype(np.float32)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = _top_voted(_tagvote(features, tags, 5, 1 - unit @ unit.T), tags, 8)
    chosen = tagexample.select_positives(features, tags, num_positives=8, vote_k=5, distance="cosine")
    assert [list(c) for c in chosen] == expected


def _svm(features, positives, negatives):
    rows = np.concatenate([positives, negatives])
    labels = np.arange(len(rows)) < len(positives)
    svm = LinearSVC(C=1.0, dual=False, tol=0.01, class_weight="balanced").fit(features[rows], labels)
    return svm.coef_[0], svm.intercept_[0]


def test_negative_bootstrap_picks_the_highest_scoring_candidates():
    # 150 images, tag = noisy linear function (not separable, so no early stop).
    features = RNG.normal(size=(150, 4))
    tagged = features @ W + RNG.normal(size=150) > 1.5
    positives, pool = np.flatnonzero(tagged)[:30], np.flatnonzero(~tagged)
    assert len(pool) >= 100  # so the top 1% of the candidates, one image, is skipped
    w, v, bags = tagexample.negative_bootstrap(features, positives, pool, np.random.default_rng(0), rounds=3,
                                               num_negatives=20)
    assert len(bags) == 3
    bag_size = max(len(positives), 20)
    assert all(len(bag) == bag_size and not tagged[bag].any() for bag in bags)  # never a tagged image
    assert set(bags[0]) <= set(pool)
    # Rounds 2 and 3: every pool image is a candidate (default |U| >= 5000 > |pool|); rank them by the
    # average of the earlier rounds' SVMs, skip floor(|pool| / 100), take the next bag_size.
    models = [_svm(features, positives, bags[0])]
    for r in (1, 2):
        w_mean = np.mean([m[0] for m in models], axis=0)
        v_mean = np.mean([m[1] for m in models])
        scores = features[pool] @ w_mean + v_mean
        ranked = sorted(pool, key=lambda i: -scores[np.searchsorted(pool, i)])
        skip = len(pool) // 100
        np.testing.assert_array_equal(bags[r], np.sort(ranked[skip:skip + bag_size]))
        models.append(_svm(features, positives, bags[r]))
    np.testing.assert_allclose(w, np.mean([m[0] for m in models], axis=0), rtol=1e-10)
    np.testing.assert_allclose(v, np.mean([m[1] for m in models]), rtol=1e-10)


def _planted(n):
    x = RNG.normal(size=(4 * n, 4))
    x = x[np.abs(x @ W) > 0.5][:n]
    return x, np.stack([x @ W > 0, RNG.random(n) < 0.3, np.zeros(n, bool)], axis=1).astype(np.float32)


TRAIN, G = _planted(60)
QUERY, QUERY_TAGS = _planted(40)


def test_planted_tag_ranks_its_images_first_and_constants():
    scores = tagexample.tagexample_scores(TRAIN, G, QUERY, vote_k=5)
    assert scores.dtype == np.float32 and scores.shape == (40, 3)
    positive = QUERY_TAGS[:, 0] > 0
    assert scores[positive, 0].min() > scores[~positive, 0].max()
    np.testing.assert_array_equal(scores[:, 2], 0.0)  # no positive: constant 0
    everyone = np.hstack([G, np.ones((60, 1), np.float32)])
    np.testing.assert_array_equal(tagexample.tagexample_scores(TRAIN, everyone, QUERY, vote_k=5)[:, 3], 1.0)


def test_seed_determinism():
    kwargs = dict(vote_k=5, num_negatives=5, num_candidates=10)
    first = tagexample.tagexample_scores(TRAIN, G, QUERY, seed=3, **kwargs)
    np.testing.assert_array_equal(first, tagexample.tagexample_scores(TRAIN, G, QUERY, seed=3, **kwargs))
    assert not np.array_equal(first, tagexample.tagexample_scores(TRAIN, G, QUERY, seed=4, **kwargs))


@pytest.mark.parametrize("kwargs", [
    dict(train_user_tags=G[:59]),
    dict(query_features=QUERY[:, :3]),
    dict(train_features=TRAIN[:, 0]),
    dict(num_positives=0),
    dict(vote_k=0),
    dict(bootstrap_rounds=0),
    dict(num_negatives=0),
    dict(num_candidates=0),
    dict(distance="manhattan"),
    dict(train_users=np.arange(59)),
])
def test_value_errors(kwargs):
    arguments = dict(train_features=TRAIN, train_user_tags=G, query_features=QUERY, vote_k=5) | kwargs
    with pytest.raises(ValueError):
        tagexample.tagexample_scores(**arguments)
