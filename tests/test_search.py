"""Tests of wsnn.search: the exact search against brute force, and the PCA reduction.

Features are mostly small integers, so float32 distances are exact and ties
are real ties that the search and the NumPy reference must break alike.
"""

import numpy as np
import pytest

from wsnn import search


def _reference(base, k, queries=None, exclude_self=False):
    """Full distance matrix by direct differences, stable argsort: (indices, distances)."""
    x = np.asarray(base, np.float64)
    q = x if queries is None else np.asarray(queries, np.float64)
    distances = ((q[:, np.newaxis] - x[np.newaxis]) ** 2).sum(-1)
    if exclude_self:
        distances[np.arange(len(q)), np.arange(len(q))] = np.inf
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


def _integers(n, d, high, seed):
    return np.random.default_rng(seed).integers(-high, high + 1, (n, d)).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [1, 7, 52, 53, 1024])
def test_base_against_itself_matches_brute_force(chunk_size):
    features = _integers(53, 6, 20, 0)  # 53 rows: no chunk size but 1 and 53 divides them
    for k in (1, 9, 52):
        got, distances = search.nearest(features, k, exclude_self=True, chunk_size=chunk_size,
                                        return_distances=True)
        expected, expected_distances = _reference(features, k, exclude_self=True)
        assert got.dtype == np.int64 and got.shape == (53, k) and distances.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(distances, expected_distances)
        assert not np.any(got == np.arange(53)[:, np.newaxis])


def test_ties_and_duplicate_rows_go_to_the_lower_index():
    # 5 distinct points, each repeated 6 times: every row is full of exact ties.
    rng = np.random.default_rng(1)
    features = rng.integers(0, 4, (5, 3)).astype(np.float32)[rng.integers(0, 5, 30)]
    for k in (1, 4, 8, 29):
        for chunk_size in (8, 30):
            np.testing.assert_array_equal(search.nearest(features, k, exclude_self=True, chunk_size=chunk_size),
                                          _reference(features, k, exclude_self=True)[0])
    # Without exclude_self a query's own row ties with its duplicates at 0; k = N is allowed.
    np.testing.assert_array_equal(search.nearest(features, 30, chunk_size=7), _reference(features, 30)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_separate_queries_and_dtypes(dtype):
    base = (_integers(23, 2, 1, 2) + 1).astype(dtype)  # values in {0, 1, 2}: many ties
    queries = (_integers(11, 2, 1, 3) + 1).astype(dtype)
    for k in (1, 7, 23):
        got, distances = search.nearest(base, k, queries=queries, chunk_size=4, return_distances=True)
        expected, expected_distances = _reference(base, k, queries)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(distances, expected_distances)
        assert distances.dtype == np.result_type(dtype, np.float32)  # int64 -> float64
    # exclude_self with separate queries: query i is base row i.
    got = search.nearest(base, 22, queries=base[:17], exclude_self=True, chunk_size=5)
    np.testing.assert_array_equal(got, _reference(base, 22, base[:17], exclude_self=True)[0])


def test_real_valued_features_match_brute_force():
    features = np.random.default_rng(4).normal(size=(60, 5))
    got, distances = search.nearest(features, 7, exclude_self=True, chunk_size=16, return_distances=True)
    expected, expected_distances = _reference(features, 7, exclude_self=True)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12, atol=1e-12)


def test_distance_chunks_cover_the_queries():
    features = _integers(10, 3, 5, 5)
    base, queries = search.check_features(features)
    assert queries is None
    chunks = list(search.distance_chunks(base, queries, exclude_self=True, chunk_size=4))
    assert [(start, stop) for start, stop, _ in chunks] == [(0, 4), (4, 8), (8, 10)]
    distances = np.concatenate([block for _, _, block in chunks])
    expected = ((features[:, np.newaxis] - features[np.newaxis]) ** 2).sum(-1)
    np.fill_diagonal(expected, np.inf)
    np.testing.assert_array_equal(distances, expected)


def test_progress_and_checks():
    calls = []
    search.nearest(np.eye(10, dtype=np.float32), 3, exclude_self=True, chunk_size=4,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]
    assert search.nearest(np.eye(10), 2, queries=np.zeros((0, 10))).shape == (0, 2)
    with pytest.raises(ValueError, match=r"k=10 must be in \[1, 9\]"):
        search.nearest(np.eye(10), 10, exclude_self=True)
    with pytest.raises(ValueError, match=r"k=0"):
        search.nearest(np.eye(10), 0)
    with pytest.raises(ValueError, match="2-D"):
        search.nearest(np.zeros(10), 3)
    with pytest.raises(ValueError, match="equal widths"):
        search.nearest(np.eye(10), 3, queries=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        search.nearest(np.full((4, 2), np.nan), 2)
    with pytest.raises(ValueError, match="Q=5 > N=4"):
        search.nearest(np.eye(4), 2, queries=np.eye(5, 4), exclude_self=True)
    with pytest.raises(ValueError, match="chunk_size"):
        search.nearest(np.eye(4), 2, chunk_size=0)


def test_reduce_dimensions_are_the_principal_components():
    # Rank-4 centred data with distinct singular values: the projection is U S of the
    # SVD of the centred data, up to the sign of each component.
    rng = np.random.default_rng(6)
    latent = rng.normal(size=(300, 4)) * [8.0, 4.0, 2.0, 1.0]
    features = (latent @ np.linalg.qr(rng.normal(size=(32, 4)))[0].T + rng.normal(size=32)).astype(np.float32)
    reduced = search.reduce_dimensions(features, 3)
    assert reduced.shape == (300, 3) and reduced.dtype == np.float32
    centred = features.astype(np.float64) - features.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    expected = u[:, :3] * s[:3]
    signs = np.sign(np.sum(reduced * expected, axis=0))
    np.testing.assert_allclose(reduced * signs, expected, atol=1e-3 * s[0])
    np.testing.assert_array_equal(search.reduce_dimensions(features, 32), features)  # d <= dims: unchanged


def test_reduce_dimensions_keeps_neighbours_of_low_rank_features():
    # 400 points on a random 6-dimensional affine subspace of R^64, components fitted on
    # a sample of 150: projecting on 6 components keeps every distance, so the neighbours.
    rng = np.random.default_rng(4)
    features = (rng.normal(size=(400, 6)) @ rng.normal(size=(6, 64)) + rng.normal(size=64)).astype(np.float32)
    reduced = search.reduce_dimensions(features, 6, fit_sample=150)
    assert reduced.shape == (400, 6)
    expected = search.nearest(features, 10, exclude_self=True)
    np.testing.assert_array_equal(search.nearest(reduced, 10, exclude_self=True), expected)
    # Too few components: the ranking changes.
    assert not np.array_equal(search.nearest(search.reduce_dimensions(features, 2), 10, exclude_self=True), expected)


def test_exact_search_on_device_matches_brute_force_with_ties():
    # Small integers: float32 products are exact on any device, and the duplicate rows are real ties.
    rng = np.random.default_rng(4)
    features = rng.integers(0, 4, (6, 3)).astype(np.float32)[rng.integers(0, 6, 40)]
    for k in (1, 5, 39):
        np.testing.assert_array_equal(search.nearest_on_device(features, k, exclude_self=True, chunk_size=9),
                                      _reference(features, k, exclude_self=True)[0])


def test_ivf_parameters_grow_with_n():
    assert search.ivf_parameters(200_000) == (2048, 256)  # about 4 sqrt(N) lists, an eighth probed
    assert search.ivf_parameters(10_000) == (256, 32)  # 4 sqrt(N) = 400 -> 512, capped at N // 39
    assert search.ivf_parameters(100) == (2, 1)  # at least 39 training images per list


def test_ivf_search_is_exact_when_every_list_is_probed_and_finds_clusters():
    # Well-separated clusters of 30 points: distinct distances, so exact and IVF agree row for row.
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(10, 8)) * 10
    features = (centres[np.repeat(np.arange(10), 30)] + rng.normal(size=(300, 8))).astype(np.float32)
    exact = search.nearest(features, 12, exclude_self=True)
    np.testing.assert_array_equal(search.nearest_ivf(features, 12, exclude_self=True, lists=4, probes=4), exact)
    # The default parameters (7 lists, 1 probed): no image is its own candidate, every row complete,
    # and a cluster's 12 nearest are in its own list.
    found = search.nearest_ivf(features, 12, exclude_self=True)
    assert found.shape == (300, 12) and found.min() >= 0
    assert not np.any(found == np.arange(300)[:, np.newaxis])
    recall = np.mean([len(np.intersect1d(a, b)) / 12 for a, b in zip(found, exact)])
    assert recall > 0.9, recall
    # Probed lists too small for k: those queries are searched over all lists.
    everything = search.nearest_ivf(features, 299, exclude_self=True, lists=7, probes=1)
    np.testing.assert_array_equal(np.sort(everything, axis=1), np.sort(search.nearest(features, 299, exclude_self=True),
                                                                       axis=1))


def test_candidates_by_each_search():
    features = _integers(60, 5, 20, 6)
    exact = search.nearest(features, 7, exclude_self=True)
    np.testing.assert_array_equal(search.candidates(features, 7), exact)
    assert search.candidates(features, 7).dtype == np.int32
    np.testing.assert_array_equal(search.candidates(features, 7, "pca", dims=3, seed=2),
                                  search.nearest(search.reduce_dimensions(features, 3, seed=2), 7, exclude_self=True))
    assert search.candidates(features, 7, "ivf").shape == (60, 7)
    with pytest.raises(ValueError, match="must be one of exact, pca, ivf"):
        search.candidates(features, 7, "hnsw")


def test_candidate_ranking_is_float64_and_keeps_ties_in_candidate_order():
    features = np.array([[0, 0], [3, 4], [0, 5], [1, 1], [5, 0]], np.float32)
    distances = search.candidate_distances(features, [0, 3], [[1, 2, 3, 4], [0, 1, 2, 4]])
    assert distances.dtype == np.float64
    np.testing.assert_array_equal(distances, [[25, 25, 2, 25], [2, 13, 17, 17]])
    # Equal distances keep the lower candidate position first.
    np.testing.assert_array_equal(search.nearest_candidates(distances, 3), [[2, 0, 1], [0, 1, 2]])
    # Two candidates whose float32 differences from the anchor round alike but whose float64 do not.
    near = np.array([[1.0], [1.0 + 2 ** -23], [1.0 + 2 ** -22]], np.float32) * 4096
    d = search.candidate_distances(near, [2], [[0, 1]])
    assert d[0, 0] > d[0, 1] and list(search.nearest_candidates(d, 2)[0]) == [1, 0]
