"""Tests for CCA-KNN (wsnn.baselines.cca)."""

import numpy as np
import pytest
import scipy.sparse
from sklearn.cross_decomposition import CCA

from wsnn.baselines import cca, common


def correlated_views(n=400, d=6, e=4, shared=3, seed=0):
    """Two views that share `shared` latent variables, plus independent noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, shared))
    x = latent @ rng.normal(size=(shared, d)) + rng.normal(size=(n, d))
    t = latent @ rng.normal(size=(shared, e)) + rng.normal(size=(n, e))
    return x + 3.0, t - 1.0  # nonzero means: the model must centre


def test_variates_are_correlated_as_claimed_without_regularisation():
    x, t = correlated_views()
    model = cca.fit_cca(x, t, reg=0)
    assert model.image_projection.shape == (6, 4) and model.text_projection.shape == (4, 4)
    rho = model.correlations
    assert np.all(np.diff(rho) <= 0) and np.all((rho >= 0) & (rho <= 1))
    u, v = model.project_images(x), model.project_texts(t)
    joint = np.corrcoef(u.T, v.T)  # 8 x 8: image variates, then text variates
    np.testing.assert_allclose(joint[:4, 4:], np.diag(rho), atol=1e-10)  # pair i correlates by rho_i, others 0
    np.testing.assert_allclose(joint[:4, :4], np.eye(4), atol=1e-10)  # uncorrelated within a view
    np.testing.assert_allclose(joint[4:, 4:], np.eye(4), atol=1e-10)
    np.testing.assert_allclose(u.var(axis=0, ddof=1), 1, rtol=1e-10)
    np.testing.assert_allclose(u.mean(axis=0), 0, atol=1e-10)


def test_first_correlation_agrees_with_scikit_learn():
    x, t = correlated_views(n=300, d=4, e=3)
    model = cca.fit_cca(x, t, dims=1, reg=0)
    u, v = CCA(n_components=1, max_iter=2000, tol=1e-12).fit(x, t).transform(x, t)
    np.testing.assert_allclose(model.correlations[0], abs(np.corrcoef(u[:, 0], v[:, 0])[0, 1]), atol=1e-6)


def test_regularisation_lowers_the_correlations_only_slightly():
    x, t = correlated_views()
    model = cca.fit_cca(x, t, dims=2, reg=1e-3)
    assert model.correlations.shape == (2,)
    u, v = model.project_images(x), model.project_texts(t)
    empirical = [np.corrcoef(u[:, i], v[:, i])[0, 1] for i in range(2)]
    np.testing.assert_allclose(model.correlations, empirical, atol=1e-2)
    assert np.all(model.correlations < cca.fit_cca(x, t, dims=2, reg=0).correlations)


def test_planted_shared_variable_gives_correlation_near_one():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(500, 1))
    x = z @ rng.normal(size=(1, 8)) + 0.01 * rng.normal(size=(500, 8))
    t = z @ rng.normal(size=(1, 5)) + 0.01 * rng.normal(size=(500, 5))
    rho = cca.fit_cca(x, t, reg=0).correlations
    assert rho[0] > 0.999
    assert rho[1] < 0.5  # the rest is independent noise


def test_text_vectors_mean_embedding_and_bag_of_tags():
    tags = common.binary_tags(np.array([[1, 0, 1], [0, 0, 0], [0, 2, 0]]))
    emb = np.array([[1.0, 0.0], [0.0, 4.0], [3.0, 2.0]])
    texts, tagged = cca.text_vectors(tags, emb)
    np.testing.assert_array_equal(tagged, [True, False, True])
    np.testing.assert_allclose(texts, [[2.0, 1.0], [0.0, 4.0]])  # image 1 (no tags) is left out
    texts, _ = cca.text_vectors(tags)
    np.testing.assert_array_equal(texts, [[1, 0, 1], [0, 1, 0]])


def brute_force_scores(train, tags, query, k, embeddings, dims, power, distance, reg):
    """CCA-KNN from scratch: fit on tagged images, embed, full distance matrix, stable sort."""
    tagged = tags.any(axis=1)
    texts = tags[tagged] @ embeddings / tags[tagged].sum(axis=1, keepdims=True)
    model = cca.fit_cca(train[tagged], texts, dims, reg)

    def embed(f):
        z = (f - model.image_mean) @ model.image_projection * model.correlations ** power
        return z / np.linalg.norm(z, axis=1, keepdims=True) if distance == "cosine" else z

    a, b = embed(query), embed(train)
    dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    neighbours = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return tags[neighbours].sum(axis=1) / k


@pytest.mark.parametrize("distance, power, dims", [("cosine", 4.0, None), ("euclidean", 0.0, 2)])
def test_scores_equal_brute_force_reference(distance, power, dims):
    rng = np.random.default_rng(2)
    n, q, d, c = 60, 9, 5, 6
    train, query = rng.normal(size=(n, d)), rng.normal(size=(q, d))
    tags = (rng.random((n, c)) < 0.3).astype(np.float64)
    tags[:3] = 0  # untagged images: out of the fit, still neighbours
    emb = rng.random((c, 4))
    scores = cca.cca_scores(train, scipy.sparse.csr_matrix(tags), query, dims=dims, k=7, tag_embeddings=emb,
                            power=power, distance=distance, reg=1e-2)
    assert scores.dtype == np.float32 and scores.shape == (q, c)
    expected = brute_force_scores(train, tags, query, 7, emb, dims, power, distance, 1e-2)
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_one_hot_text_view_by_default():
    rng = np.random.default_rng(3)
    train, query = rng.normal(size=(50, 4)), rng.normal(size=(5, 4))
    tags = (rng.random((50, 3)) < 0.5).astype(float)
    scores = cca.cca_scores(train, tags, query, k=5, reg=1e-3)
    tagged = tags.any(axis=1)
    model = cca.fit_cca(train[tagged], tags[tagged], None, 1e-3)
    assert model.correlations.shape == (3,)  # min(d, e = C)
    z = lambda f: model.project_images(f) * model.correlations ** 4  # noqa: E731
    zq, zt = z(query), z(train)
    zq, zt = zq / np.linalg.norm(zq, axis=1, keepdims=True), zt / np.linalg.norm(zt, axis=1, keepdims=True)
    neighbours = np.argsort(-(zq @ zt.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(scores, tags[neighbours].mean(axis=1), atol=1e-6)


def test_invalid_inputs():
    rng = np.random.default_rng(4)
    train, query = rng.normal(size=(20, 3)), rng.normal(size=(4, 3))
    tags = (rng.random((20, 5)) < 0.5).astype(float)
    tags[:, 0] = 1
    with pytest.raises(ValueError, match="rows for 20 training images"):
        cca.cca_scores(train, tags[:19], query)
    with pytest.raises(ValueError, match="equal widths"):
        cca.cca_scores(train, tags, query[:, :2])
    with pytest.raises(ValueError, match="dims=4 exceeds"):
        cca.cca_scores(train, tags, query, dims=4, k=5)
    with pytest.raises(ValueError, match="reg must be >= 0"):
        cca.cca_scores(train, tags, query, k=5, reg=-1)
    with pytest.raises(ValueError, match="distance must be one of"):
        cca.cca_scores(train, tags, query, k=5, distance="manhattan")
    with pytest.raises(ValueError, match="one row per tag"):
        cca.cca_scores(train, tags, query, k=5, tag_embeddings=np.ones((4, 2)))
    with pytest.raises(ValueError, match="exceeds the 20 training images"):
        cca.cca_scores(train, tags, query, k=21)
    with pytest.raises(ValueError, match="at least 2 paired rows"):
        cca.cca_scores(train, np.eye(20, 5) * (np.arange(20) == 0)[:, None], query, k=5)
    with pytest.raises(ValueError, match="text covariance is singular"):
        cca.fit_cca(train, np.c_[tags, tags[:, :1] * 0], reg=0)  # a constant column
    with pytest.raises(ValueError, match="equal row counts"):
        cca.fit_cca(train, tags[:10])
    with pytest.raises(ValueError, match="NaN or Inf"):
        cca.fit_cca(np.r_[train[:-1], [[np.nan, 0, 0]]], tags)
