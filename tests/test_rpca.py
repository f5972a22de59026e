"""Tests for RPCA tag refinement (wsnn.baselines.rpca)."""

import numpy as np
import pytest
import scipy.sparse

from wsnn.baselines import rpca


def _low_rank_plus_sparse(n, c, rank, error_rate, seed):
    rng = np.random.default_rng(seed)
    low_rank = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, c))
    support = rng.random((n, c)) < error_rate
    errors = np.where(support, rng.choice([-1.0, 1.0], (n, c)) * rng.uniform(3, 6, (n, c)), 0.0)
    return low_rank, errors, support


def test_proximal_operators_on_2x2():
    np.testing.assert_allclose(rpca.soft_threshold(np.array([[3.0, -0.5], [-2.0, 1.0]]), 1.0),
                               [[2.0, 0.0], [-1.0, 0.0]])
    # [[2, 1], [1, 2]] has singular values 3 and 1 with vectors (1, 1) and (1, -1) / sqrt(2):
    # thresholding by 0.5 leaves 2.5 P + 0.5 Q, by 2 leaves 1 P (P, Q the two projectors).
    x = np.array([[2.0, 1.0], [1.0, 2.0]])
    shrunk, s = rpca.singular_value_threshold(x, 0.5)
    np.testing.assert_allclose(shrunk, [[1.5, 1.0], [1.0, 1.5]], atol=1e-12)
    np.testing.assert_allclose(s, [2.5, 0.5])
    shrunk, s = rpca.singular_value_threshold(x, 2.0)
    np.testing.assert_allclose(shrunk, [[0.5, 0.5], [0.5, 0.5]], atol=1e-12)
    np.testing.assert_allclose(s, [1.0, 0.0])


def test_recovers_low_rank_and_error_support_without_priors():
    # 200 x 40, rank 2, 5% gross errors: inside RPCA's exact-recovery regime for the
    # default lam = 1 / sqrt(200) (at 60 x 12 some seeds fail for the convex problem itself).
    low_rank, errors, support = _low_rank_plus_sparse(200, 40, 2, 0.05, seed=0)
    a, e, info = rpca.rpca_refine(low_rank + errors, eta=0.0)
    assert info["converged"] and info["rank"] == 2
    assert np.linalg.norm(a - low_rank) / np.linalg.norm(low_rank) < 0.1
    np.testing.assert_array_equal(np.abs(e) > 0.5, support)
    assert np.abs(e[support] - errors[support]).max() < 0.1
    assert np.abs(e[~support]).max() < 0.1


def test_objective_decreases_after_continuation():
    low_rank, errors, _ = _low_rank_plus_sparse(80, 15, 2, 0.05, seed=1)
    rng = np.random.default_rng(2)
    features = rng.standard_normal((80, 5))
    budgets = {}
    for iterations in (50, 198, 400):
        _, _, info = rpca.rpca_refine(scipy.sparse.csr_matrix(low_rank + errors),
                                      features=features, eta=0.01, knn=5,
                                      max_iter=iterations, tol=0.0)
        budgets[iterations] = info
    history = np.array(budgets[400]["history"])
    # mu reaches mu_bar = 1e-9 mu_0 at iteration 1 + ceil(log(1e-9) / log(0.9)) = 198:
    # from there on F_mu_bar is non-increasing (FISTA, up to rounding).
    tail = history[197:]
    assert np.all(np.diff(tail) <= 1e-9 * np.abs(tail[:-1]))
    # The target objective F_mu_bar improves with the iteration budget.
    assert budgets[50]["objective"] > budgets[198]["objective"] >= budgets[400]["objective"]


def _dense_image_laplacian(features, k):
    squared = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(squared, np.inf)
    nearest = np.argsort(squared, axis=1, kind="stable")[:, :k]  # ties: lower index
    distances = np.take_along_axis(squared, nearest, axis=1)
    sigma = np.median(distances)
    weights = np.zeros_like(squared)
    np.put_along_axis(weights, nearest, np.exp(-distances / sigma), axis=1)
    weights = np.maximum(weights, weights.T)
    return np.diag(weights.sum(1)) - weights, sigma


@pytest.mark.parametrize("features", [
    np.random.default_rng(3).standard_normal((9, 4)),
    np.random.default_rng(3).integers(0, 3, (12, 2)).astype(float),  # exact ties and duplicate rows
])
def test_image_laplacian_matches_dense_reference(features):
    expected, expected_sigma = _dense_image_laplacian(features, k=3)
    for chunk_size in (None, 2):  # one chunk, and chunks that split the rows
        laplacian, sigma = rpca.image_laplacian(features, knn=3, chunk_size=chunk_size)
        assert scipy.sparse.issparse(laplacian)
        dense = laplacian.toarray()
        np.testing.assert_allclose(dense, expected, atol=1e-12)
        np.testing.assert_allclose(dense, dense.T)
        np.testing.assert_allclose(dense.sum(axis=1), 0.0, atol=1e-12)
        assert sigma == pytest.approx(expected_sigma)


def test_step_size_bound_covers_the_hessian():
    # Lip(mu) = 2 / mu + eta (lmax(L_img) + lmax(L_tag)) must bound the Hessian of the
    # smooth part f(A, E) = (eta / 2) sum(A * K(A)) + ||A + E - D||^2 / (2 mu).
    rng = np.random.default_rng(4)
    n, c, eta, mu = 7, 3, 0.7, 0.5
    l_img, _ = rpca.image_laplacian(rng.standard_normal((n, 2)), knn=2)
    l_tag = rpca.tag_laplacian(rng.random((c, c)))
    # Column-major vec: vec(L_img A + A L_tag) = (I_C (x) L_img + L_tag (x) I_N) vec(A).
    k = np.kron(np.eye(c), l_img.toarray()) + np.kron(l_tag, np.eye(n))
    identity = np.eye(n * c) / mu
    hessian = np.block([[eta * k + identity, identity], [identity, identity]])
    largest = np.linalg.eigvalsh(hessian)[-1]
    bound = 2.0 / mu + eta * rpca.prior_norm_bound(l_img, l_tag)
    assert largest <= bound + 1e-12
    assert bound < 1.5 * largest  # and not uselessly loose here


def test_tag_graph_defaults_to_cooccurrence_cosine():
    tags = scipy.sparse.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]]))
    cosine = rpca.cooccurrence_cosine(tags)
    # counts: n_0 = 3, n_1 = 2, n_2 = 2; n_01 = 2, n_02 = 1, n_12 = 1.
    expected = np.array([[0, 2 / np.sqrt(6), 1 / np.sqrt(6)],
                         [2 / np.sqrt(6), 0, 1 / 2],
                         [1 / np.sqrt(6), 1 / 2, 0]])
    np.testing.assert_allclose(cosine, expected)
    laplacian = rpca.tag_laplacian(cosine)
    np.testing.assert_allclose(laplacian.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(laplacian, laplacian.T)


def test_tag_prior_pulls_related_columns_together():
    rng = np.random.default_rng(0)
    d = np.zeros((40, 4))
    d[:20, 0] = 1
    d[:20, 1] = rng.random(20) < 0.6  # tag 1: an incomplete copy of tag 0
    d[20:, 2] = 1
    d[10:30, 3] = 1
    similarity = np.zeros((4, 4))
    similarity[0, 1] = similarity[1, 0] = 1.0  # only tags 0 and 1 are related
    plain, _, _ = rpca.rpca_refine(d, tag_similarity=similarity, lam=0.3, eta=0.0)
    prior, _, _ = rpca.rpca_refine(d, tag_similarity=similarity, lam=0.3, eta=1.0)
    gap = lambda a, i, j: np.linalg.norm(a[:, i] - a[:, j])  # noqa: E731
    assert gap(plain, 0, 1) == pytest.approx(gap(d, 0, 1), abs=0.05)  # A = D without priors
    assert gap(prior, 0, 1) < 0.25 * gap(plain, 0, 1)
    assert gap(prior, 2, 3) == pytest.approx(gap(plain, 2, 3), abs=0.05)  # unrelated: untouched


def test_max_elements_guard_raises_before_allocating():
    huge = scipy.sparse.csr_matrix((1_000_000, 10_000), dtype=np.uint8)  # 80 GB dense
    with pytest.raises(ValueError, match="exceeds max_elements"):
        rpca.rpca_refine(huge)
    with pytest.raises(ValueError, match="max_elements=100"):
        rpca.rpca_refine(np.zeros((20, 10)), max_elements=100)
