"""Tests for TagFeature (wsnn.baselines.tagfeature), against a NumPy/SciPy reconstruction."""

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
from sklearn.svm import LinearSVC

from wsnn.baselines import tagfeature

# 60 training and 40 query images, d = 4. Tag 0 is a linear function of the features, x . W > 0, with a
# margin; tag 1 is noise; tag 2 nobody used. With so few images every classifier learns from all its
# positives and negatives (fewer than num_positives = 500 and 1000), so nothing depends on the samples.
RNG = np.random.default_rng(0)
W = np.array([1.0, -2.0, 0.5, 1.0])


def _planted(n):
    x = RNG.normal(size=(4 * n, 4))
    x = x[np.abs(x @ W) > 0.5][:n]  # keep a margin around the boundary
    tags = np.stack([x @ W > 0, RNG.random(n) < 0.3, np.zeros(n, bool)], axis=1)
    return x, tags.astype(np.float32)


TRAIN, G = _planted(60)
QUERY, QUERY_TAGS = _planted(40)


def _platt(f, y):
    """Platt's sigmoid by a generic minimiser of the same cross-entropy."""
    n_pos, n_neg = y.sum(), (~y).sum()
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab):
        p = 1 / (1 + np.exp(ab[0] * f + ab[1]))
        return -np.sum(target * np.log(p) + (1 - target) * np.log(1 - p))

    return scipy.optimize.minimize(loss, [0.0, 0.0], method="Nelder-Mead",
                                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000}).x


def _probabilities(x_learn, y, x_apply):
    """One tag classifier: SVM on all positives vs all negatives (every bag is the same), then Platt."""
    if y.all() or not y.any():
        return np.full(len(x_apply), float(y.any()))
    rows = np.concatenate([np.flatnonzero(y), np.flatnonzero(~y)])  # positives first, as the bags
    svm = LinearSVC(C=1.0, dual=False, tol=0.01, class_weight="balanced").fit(x_learn[rows], y[rows])
    a, b = _platt(svm.decision_function(x_learn[rows]), y[rows])
    return 1 / (1 + np.exp(a * svm.decision_function(x_apply) + b))


def test_augmented_features_match_reconstruction():
    folds, seed = 3, 7
    train_aug, query_aug = tagfeature.augmented_features(TRAIN, scipy.sparse.csr_matrix(G), QUERY, folds=folds,
                                                         seed=seed)
    fold = tagfeature.fold_ids(len(TRAIN), folds, np.random.default_rng(seed))
    np.testing.assert_array_equal(np.sort(np.bincount(fold)), [20, 20, 20])
    x = TRAIN / np.linalg.norm(TRAIN, axis=1, keepdims=True)
    q = QUERY / np.linalg.norm(QUERY, axis=1, keepdims=True)
    labels = G > 0
    used = [0, 1]  # by decreasing frequency (tag 0 is more frequent here); tag 2 is never used
    assert labels[:, 0].sum() > labels[:, 1].sum()
    train_tag = np.zeros((len(x), 2))
    for k in range(folds):
        learn = fold != k
        for j, u in enumerate(used):  # cross-fitted: each fold from the classifiers of the other folds
            train_tag[~learn, j] = _probabilities(x[learn], labels[learn, u], x[~learn])
    query_tag = np.stack([_probabilities(x, labels[:, u], q) for u in used], axis=1)
    np.testing.assert_allclose(train_aug, np.hstack([x, train_tag / train_tag.sum(1, keepdims=True)]), atol=1e-6)
    np.testing.assert_allclose(query_aug, np.hstack([q, query_tag / query_tag.sum(1, keepdims=True)]), atol=1e-6)
    # In-sample tag features (jingwei's) would differ: the reconstruction tells them apart.
    in_sample = np.stack([_probabilities(x, labels[:, u], x) for u in used], axis=1)
    assert np.abs(in_sample / in_sample.sum(1, keepdims=True) - train_aug[:, 4:]).max() > 1e-3


def test_planted_tag_ranks_its_images_first_and_unused_tag_is_constant():
    scores = tagfeature.tagfeature_scores(TRAIN, G, QUERY)
    assert scores.dtype == np.float32 and scores.shape == (40, 3)
    positive = QUERY_TAGS[:, 0] > 0
    assert scores[positive, 0].min() > scores[~positive, 0].max()
    assert np.all((scores[:, :2] > 0) & (scores[:, :2] < 1))
    np.testing.assert_array_equal(scores[:, 2], 0.0)  # no positive: constant 0
    everyone = np.hstack([G, np.ones((60, 1), np.float32)])
    np.testing.assert_array_equal(tagfeature.tagfeature_scores(TRAIN, everyone, QUERY)[:, 3], 1.0)  # no negative


def test_seed_determinism():
    first = tagfeature.tagfeature_scores(TRAIN, G, QUERY, num_positives=5, num_bags=2, seed=3)
    np.testing.assert_array_equal(first, tagfeature.tagfeature_scores(TRAIN, G, QUERY, num_positives=5,
                                                                      num_bags=2, seed=3))
    # With 5 of ~30 positives sampled, another seed draws other samples.
    assert not np.array_equal(first, tagfeature.tagfeature_scores(TRAIN, G, QUERY, num_positives=5,
                                                                   num_bags=2, seed=4))


def test_platt_fit_matches_minimiser():
    f = RNG.normal(size=50)
    y = f + RNG.normal(size=50) > 0
    np.testing.assert_allclose(tagfeature.platt_fit(f, y), _platt(f, y), atol=1e-4)


@pytest.mark.parametrize("kwargs", [
    dict(train_user_tags=G[:59]),
    dict(query_features=QUERY[:, :3]),
    dict(train_features=TRAIN[:, 0]),
    dict(train_features=np.where(np.eye(60, 4) > 0, np.nan, TRAIN)),
    dict(folds=1),
    dict(folds=61),
    dict(num_bags=0),
    dict(num_positives=0),
    dict(num_tag_features=0),
])
def test_value_errors(kwargs):
    arguments = dict(train_features=TRAIN, train_user_tags=G, query_features=QUERY) | kwargs
    with pytest.raises(ValueError):
        tagfeature.tagfeature_scores(**arguments)
