"""Tests for the NMF stand-in for WDNL (wsnn.baselines.nmf)."""

import numpy as np
import pytest
import scipy.sparse
from sklearn.metrics import roc_auc_score

from wsnn.baselines import nmf


def planted(n=300, held_out=100, d=5, c=12, rank=3, seed=0):
    """Features and an exact rank-`rank` nonnegative G = X A H (X, A, H >= 0), train and held-out rows."""
    rng = np.random.default_rng(seed)
    x = rng.random((n + held_out, d))
    g = x @ rng.random((d, rank)) @ rng.random((rank, c))
    return x[:n], g[:n], x[n:], g[n:]


def objective(model, features, tags):
    """J recomputed from the model's factors with plain NumPy."""
    n = len(tags)
    w, h = model.image_factors_train, model.tag_factors
    predicted = (features - model.feature_mean) / model.feature_scale @ model.mapping + model.intercept
    return (np.sum((tags - w @ h) ** 2) / n + model.beta * np.sum((w - predicted) ** 2) / n
            + model.reg * (np.sum(h ** 2) + np.sum(model.mapping ** 2)))


def test_objective_never_increases_and_matches_the_formula():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(80, 6)) * [1, 10, 0.1, 1, 1, 1] + 5  # any sign and scale
    tags = (rng.random((80, 10)) < 0.3).astype(float)
    tags[:4] = 0  # untagged images stay in the fit
    model = nmf.fit_nmf(features, scipy.sparse.csr_matrix(tags), rank=4, beta=0.5, reg=1e-2, max_iter=60, tol=0)
    history = np.array(model.objective)
    assert len(history) == 61  # initialisation + every iteration (tol=0 never stops early)
    assert np.all(np.diff(history) <= 1e-12 * history[:-1])
    assert history[-1] < 0.8 * history[0]
    np.testing.assert_allclose(history[-1], objective(model, features, tags), rtol=1e-10)
    assert model.image_factors_train.shape == (80, 4) and model.tag_factors.shape == (4, 10)
    assert np.all(model.image_factors_train >= 0) and np.all(model.tag_factors >= 0)
    assert np.all(model.image_factors(rng.normal(size=(7, 6))) >= 0)


def test_tol_stops_early():
    rng = np.random.default_rng(4)
    model = nmf.fit_nmf(rng.normal(size=(100, 5)), rng.random((100, 8)) < 0.3, rank=3, max_iter=500, tol=1e-3)
    assert 1 < len(model.objective) < 501
    history = model.objective
    assert history[-2] - history[-1] < 1e-3 * history[-2]


def test_planted_low_rank_matrix_is_recovered_for_new_images():
    x, g, x_new, g_new = planted()
    model = nmf.fit_nmf(x, g, rank=3, reg=1e-8, max_iter=2000, tol=0)
    fitted = model.image_factors_train @ model.tag_factors
    assert np.linalg.norm(g - fitted) < 1e-3 * np.linalg.norm(g)
    predicted = model.image_factors(x_new) @ model.tag_factors
    assert np.linalg.norm(g_new - predicted) < 1e-3 * np.linalg.norm(g_new)


def test_scores_rank_planted_tags_of_held_out_images():
    x, g, x_new, g_new = planted(n=400, c=8)
    threshold = np.quantile(np.r_[g, g_new], 0.7)  # about 30% of the entries are tags
    tags, tags_new = g > threshold, g_new > threshold
    scores = nmf.nmf_scores(x, scipy.sparse.csr_matrix(tags), x_new, rank=3, max_iter=500)
    assert scores.dtype == np.float32 and scores.shape == tags_new.shape and np.all(scores >= 0)
    assert roc_auc_score(tags_new.ravel(), scores.ravel()) > 0.95


def test_same_seed_same_result_other_seed_differs():
    rng = np.random.default_rng(2)
    train, query = rng.normal(size=(60, 4)), rng.normal(size=(5, 4))
    tags = rng.random((60, 6)) < 0.3
    first = nmf.nmf_scores(train, tags, query, rank=3, max_iter=30, seed=7)
    np.testing.assert_array_equal(first, nmf.nmf_scores(train, tags, query, rank=3, max_iter=30, seed=7))
    assert not np.array_equal(first, nmf.nmf_scores(train, tags, query, rank=3, max_iter=30, seed=8))


def test_invalid_inputs():
    rng = np.random.default_rng(3)
    train, query = rng.normal(size=(20, 3)), rng.normal(size=(4, 3))
    tags = rng.random((20, 5)) < 0.5
    with pytest.raises(ValueError, match="rows for 20 training images"):
        nmf.nmf_scores(train, tags[:19], query)
    with pytest.raises(ValueError, match="equal widths"):
        nmf.nmf_scores(train, tags, query[:, :2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        nmf.nmf_scores(np.r_[train[:-1], [[np.inf, 0, 0]]], tags, query)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        nmf.nmf_scores(train, tags, query, rank=0)
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        nmf.nmf_scores(train, tags, query, max_iter=0)
    for bad in [{"beta": 0}, {"reg": -1}, {"tol": -1}]:
        with pytest.raises(ValueError, match="need beta > 0"):
            nmf.nmf_scores(train, tags, query, **bad)
    with pytest.raises(ValueError, match="finite and nonnegative"):
        nmf.fit_nmf(train, -tags.astype(float))
    with pytest.raises(ValueError, match="one row per image"):
        nmf.fit_nmf(train, tags[:10])
    with pytest.raises(ValueError, match="Gram matrix is singular"):
        nmf.fit_nmf(np.c_[train, np.ones(20)], tags, reg=0)  # a constant feature is 0 once standardised
