"""Tests for TagProp (wsnn.baselines.tagprop) against brute-force NumPy references."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse
import scipy.special
from scipy.spatial.distance import cdist

from wsnn.baselines import common, tagprop

EPS = tagprop.EPS


def make_data(n=30, q=7, d=3, c=4, seed=0):
    """Features of 2 clusters whose images share tags, plus some tag noise."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 2, n + q)
    features = rng.normal(size=(n + q, d)) + 3.0 * cluster[:, None]
    tags = np.zeros((n + q, c), bool)
    tags[:, 0] = cluster == 0
    tags[:, 1] = cluster == 1
    tags[:, 2:] = rng.random((n + q, c - 2)) < 0.3
    tags ^= rng.random(tags.shape) < 0.1
    return features[:n], scipy.sparse.csr_matrix(tags[:n]), features[n:]


def loo_neighbours(distances, k):
    """The k nearest of each row of a full N x N distance matrix, itself excluded."""
    distances = distances.copy()
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def reference_log_likelihood(weight, distances, neighbours, tags, rows, alpha=None, beta=None):
    """L written out directly: softmax weights, smoothed votes, weighted log-probabilities."""
    pi = np.exp(-weight * distances)
    pi /= pi.sum(axis=1, keepdims=True)
    smoothed = np.where(tags > 0, 1 - EPS, EPS)
    x = np.einsum("ij,ijt->it", pi, smoothed[neighbours])
    p = x if alpha is None else scipy.special.expit(alpha * x + beta)
    y = tags[rows] > 0
    c = np.where(y, 1 / y.sum(), 1 / (~y).sum())
    return np.sum(c * np.log(np.where(y, p, 1 - p)))


@pytest.mark.parametrize("sigmoid", [False, True])
def test_learning_raises_the_log_likelihood(sigmoid):
    train, tags, _ = make_data()
    model = tagprop.fit_tagprop(train, tags, k=10, sigmoid=sigmoid)
    assert model.weight >= 0
    learned = model.log_likelihood()
    if sigmoid:
        start = model.log_likelihood(1.0, np.ones(4), np.zeros(4))
        assert model.alpha.shape == model.beta.shape == (4,)
        # The last step fits the sigmoids under the final w: L is stationary in them.
        d_alpha, d_beta = tagprop.log_likelihood(model.weight, model.distances, model.neighbours,
                                                 model.train_tags, model.alpha, model.beta)[2:]
        np.testing.assert_allclose(np.concatenate([d_alpha, d_beta]), 0, atol=1e-8)
    else:
        start = model.log_likelihood(1.0)
        assert model.alpha is None and model.beta is None
    assert learned > start + 1e-3
    assert learned > model.log_likelihood(0.0) + 1e-3  # uniform weights over the K neighbours


@pytest.mark.parametrize("sigmoid", [False, True])
def test_gradient_matches_finite_differences(sigmoid):
    rng = np.random.default_rng(1)
    n, k, c = 12, 5, 4
    rows = np.array([0, 2, 3, 5, 8, 9, 10, 11])  # learning images, a subset of the N
    neighbours = np.array([rng.choice(np.setdiff1d(np.arange(n), [i]), k, replace=False) for i in rows])
    distances = rng.uniform(0.2, 2.0, (len(rows), k))
    tags = (rng.random((n, c)) < 0.4).astype(float)
    tags[0, 0] = 1  # some positives among the learning images
    tags_csr = scipy.sparse.csr_matrix(tags)
    alpha, beta = (rng.normal(2, 1, c), rng.normal(-1, 0.5, c)) if sigmoid else (None, None)

    def value(weight, alpha=alpha, beta=beta):
        # chunk_size 3: blocks of 3, 3 and 2 learning images.
        return tagprop.log_likelihood(weight, distances, neighbours, tags_csr, alpha, beta, rows, chunk_size=3)

    weight = 0.8
    total, d_weight, d_alpha, d_beta = value(weight)
    np.testing.assert_allclose(total, reference_log_likelihood(weight, distances, neighbours, tags, rows,
                                                                alpha, beta), rtol=1e-12)
    h = 1e-6
    np.testing.assert_allclose(d_weight, (value(weight + h)[0] - value(weight - h)[0]) / (2 * h), rtol=1e-5)
    if not sigmoid:
        assert d_alpha is None and d_beta is None
        return
    for t in range(c):
        step = np.eye(c)[t] * h
        np.testing.assert_allclose(d_alpha[t], (value(weight, alpha + step)[0] - value(weight, alpha - step)[0])
                                   / (2 * h), rtol=1e-5)
        np.testing.assert_allclose(d_beta[t], (value(weight, alpha, beta + step)[0]
                                               - value(weight, alpha, beta - step)[0]) / (2 * h), rtol=1e-5)


def test_scores_match_brute_force():
    train, tags, queries = make_data()
    k = 10
    model = tagprop.fit_tagprop(train, tags, k=k, sigmoid=True)
    train_distances = cdist(train, train)
    loo = loo_neighbours(train_distances, k)
    np.testing.assert_array_equal(model.neighbours, loo)
    np.testing.assert_allclose(model.scale, np.take_along_axis(train_distances, loo, axis=1).mean(), rtol=1e-10)

    # Fixed parameters, not the learned ones: the prediction alone is checked.
    weight, alpha, beta = 2.5, np.array([3.0, 4.0, 1.0, -2.0]), np.array([-1.0, -2.0, 0.5, 0.0])
    distances = cdist(queries, train)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
    pi = np.exp(-weight * np.take_along_axis(distances, nearest, axis=1) / model.scale)
    pi /= pi.sum(axis=1, keepdims=True)
    x = np.einsum("ij,ijt->it", pi, np.where(tags.toarray() > 0, 1 - EPS, EPS)[nearest])
    fixed = dataclasses.replace(model, weight=weight, alpha=alpha, beta=beta)
    scores = fixed.scores(queries)
    assert scores.dtype == np.float32 and scores.shape == (7, 4)
    np.testing.assert_allclose(scores, scipy.special.expit(alpha * x + beta), rtol=1e-6)
    linear = dataclasses.replace(model, weight=weight, alpha=None, beta=None)
    np.testing.assert_allclose(linear.scores(queries), x, rtol=1e-6)

    # tagprop_scores is fit_tagprop, then scores; dense tags as good as sparse.
    np.testing.assert_array_equal(tagprop.tagprop_scores(train, tags.toarray().astype(int), queries, k=k),
                                  model.scores(queries))


def test_cosine_neighbours_match_brute_force():
    train, tags, queries = make_data(seed=2)
    model = tagprop.fit_tagprop(train, tags, k=8, distance="cosine", sigmoid=False)
    cosine = cdist(train, train, "cosine")  # 1 - cos
    loo = loo_neighbours(cosine, 8)
    np.testing.assert_array_equal(model.neighbours, loo)
    np.testing.assert_allclose(model.distances * model.scale, np.take_along_axis(cosine, loo, axis=1),
                               rtol=1e-6, atol=1e-12)
    # Queries: all training images are candidates, by 1 - cos.
    nearest = np.argsort(cdist(queries, train, "cosine"), axis=1, kind="stable")[:, :8]
    pi = np.exp(-model.weight * np.take_along_axis(cdist(queries, train, "cosine"), nearest, axis=1)
                / model.scale)
    pi /= pi.sum(axis=1, keepdims=True)
    x = np.einsum("ij,ijt->it", pi, np.where(tags.toarray() > 0, 1 - EPS, EPS)[nearest])
    np.testing.assert_allclose(model.scores(queries), x, rtol=1e-5)


def test_fit_sample_learns_on_a_subset_with_leave_one_out_neighbours():
    train, tags, _ = make_data()
    model = tagprop.fit_tagprop(train, tags, k=6, sigmoid=False, fit_sample=12, seed=3)
    assert len(model.rows) == 12 and np.all(np.diff(model.rows) > 0)
    np.testing.assert_array_equal(model.neighbours, loo_neighbours(cdist(train, train), 6)[model.rows])
    other = tagprop.fit_tagprop(train, tags, k=6, sigmoid=False, fit_sample=12, seed=4)
    assert not np.array_equal(other.rows, model.rows)


def test_k_is_capped_at_n_minus_one():
    train, tags, queries = make_data(n=6)
    model = tagprop.fit_tagprop(train, tags, k=100, sigmoid=False)
    assert model.k == 5 and model.neighbours.shape == (6, 5)
    assert tagprop.tagprop_scores(train, tags, queries, k=100, sigmoid=False).shape == (7, 4)


def test_invalid_inputs():
    train, tags, queries = make_data()
    with pytest.raises(ValueError, match="train_user_tags has 29 rows for 30 training images"):
        tagprop.tagprop_scores(train, tags[:29], queries)
    with pytest.raises(ValueError, match="equal widths"):
        tagprop.tagprop_scores(train, tags, queries[:, :2])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        tagprop.fit_tagprop(train, tags, k=0)
    with pytest.raises(ValueError, match="distance must be one of"):
        tagprop.fit_tagprop(train, tags, distance="manhattan")
    with pytest.raises(ValueError, match="at least 2 training images"):
        tagprop.fit_tagprop(train[:1], tags[:1])
    with pytest.raises(ValueError, match="no learning image has a user tag"):
        tagprop.fit_tagprop(train, common.binary_tags(np.zeros((30, 4))))
