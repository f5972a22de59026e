"""Tests for KNN and TagVote and their one-image-per-user search (wsnn.baselines.knn, wsnn.baselines.tagvote).

The plain search is tested in tests/test_search.py.
"""

import numpy as np
import pytest
import scipy.sparse

from wsnn.baselines import knn, tagvote


def _reference(train, query, k, exclude_self=False, users=None):
    """Brute force: the full distance matrix, a stable argsort, then (optionally) one image per user."""
    distances = ((query[:, np.newaxis, :] - train[np.newaxis, :, :]) ** 2).sum(axis=-1)
    if exclude_self:
        distances[np.arange(len(query)), np.arange(len(query))] = np.inf
    order = np.argsort(distances, axis=1, kind="stable")
    if users is None:
        return order[:, :k]
    rows = []
    for i, row in enumerate(order):
        seen, kept = set(), []
        for j in row:
            if np.isfinite(distances[i, j]) and users[j] not in seen:
                seen.add(users[j])
                kept.append(j)
        rows.append(kept[:k])
    return np.array(rows)


# Small integer features in {0, 1, 2}^2: many exactly equal distances, so tie-breaking is exercised;
# every distance is an exact small integer in floating point.
RNG = np.random.default_rng(0)
TRAIN = RNG.integers(0, 3, size=(23, 2)).astype(np.float64)
QUERY = RNG.integers(0, 3, size=(11, 2)).astype(np.float64)
USERS = np.array(list("abcabcdeffghabcdeijkkla"))  # 12 distinct users over 23 images


@pytest.mark.parametrize("exclude_self", [False, True])
def test_nearest_neighbours_unique_users_matches_brute_force(exclude_self):
    query = TRAIN[:11] if exclude_self else QUERY
    for k in (1, 5, 11):  # 12 users; with exclude_self user "g" (only image 10) is missing for query 10
        got = knn.nearest_neighbours(TRAIN, query, k, exclude_self=exclude_self, chunk_size=4,
                                     train_users=USERS, unique_users=True)
        np.testing.assert_array_equal(got, _reference(TRAIN, query, k, exclude_self, USERS))
        assert all(len(set(USERS[row])) == k for row in got)


def test_unique_users_keeps_each_users_nearest_image():
    # 1-D: images at 0, 1, 2, 3; users a, a, b, a. From query 0.2 the plain order is 0, 1, 2, 3;
    # with one image per user, user a is image 0 (its nearest) and images 1 and 3 are skipped.
    train = np.array([[0.0], [1.0], [2.0], [3.0]])
    query = np.array([[0.2], [2.9]])
    got = knn.nearest_neighbours(train, query, 2, train_users=["a", "a", "b", "a"], unique_users=True)
    # From 2.9: a's nearest is image 3 (0.1), then b's image 2 (0.9).
    np.testing.assert_array_equal(got, [[0, 2], [3, 2]])
    # Equal distances: images 0 and 2 (users a and b) are both 1 away from 1.0; user a also has
    # image 1 at distance 0. Query 1.0 -> a: image 1, then b: image 2.
    np.testing.assert_array_equal(
        knn.nearest_neighbours(train, [[1.0]], 2, train_users=["a", "a", "b", "a"], unique_users=True), [[1, 2]])


def test_nearest_neighbours_rejects_too_many_neighbours():
    with pytest.raises(ValueError, match="exceeds"):
        knn.nearest_neighbours(TRAIN, QUERY, 24)
    with pytest.raises(ValueError, match="exceeds"):
        knn.nearest_neighbours(TRAIN, TRAIN, 23, exclude_self=True)
    with pytest.raises(ValueError, match="exceeds"):
        knn.nearest_neighbours(TRAIN, QUERY, 13, train_users=USERS, unique_users=True)
    with pytest.raises(ValueError, match="train_users"):
        knn.nearest_neighbours(TRAIN, QUERY, 2, unique_users=True)


# A 1-D collection for KNN and TagVote, features scaled by 10 so every squared distance is exact.
#   image:  0    1    2    3        4    5
#   x:      0    10   20   30       40   50
#   tags:   t0   t0   t1   t0,t1    t1   -
#   user:   A    A    B    C        C    D
# f(t0) = 3, f(t1) = 3, N = 6.
X = np.array([[0.0], [10.0], [20.0], [30.0], [40.0], [50.0]])
G = scipy.sparse.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 1], [0, 0]]))
UPLOADERS = np.array(["A", "A", "B", "C", "C", "D"])


def test_knn_occurrence_rates():
    # Query 4: neighbours 0 (d=4), 1 (6), 2 (16), 3 (26). k=3 -> images 0, 1, 2 with tags t0, t0, t1:
    # t0 = 2/3, t1 = 1/3.  Query 33: 3 (3), 4 (7), 2 (13) -> t0 = 1/3, t1 = 3/3.
    scores = knn.knn_scores(X, G, [[4.0], [33.0]], k=3)
    np.testing.assert_allclose(scores, [[2 / 3, 1 / 3], [1 / 3, 1.0]], rtol=1e-6)
    # Dense G gives the same; k=1 is the nearest image's tags.
    np.testing.assert_allclose(knn.knn_scores(X, G.toarray(), [[4.0], [33.0]], k=1), [[1, 0], [1, 1]])


def test_knn_exclude_self():
    # Refinement, k=2. Image 0 (x=0): neighbours 1 (10), 2 (20) -> t0 1/2, t1 1/2.
    # Image 2 (x=20): 1 and 3 both at 10 -> t0 (1 + 1)/2 = 1, t1 (0 + 1)/2 = 1/2.
    # Image 5 (x=50): 4 (10), 3 (20) -> t0 1/2, t1 2/2.
    scores = knn.knn_scores(X, G, X, k=2, exclude_self=True, chunk_size=4)
    np.testing.assert_allclose(scores[[0, 2, 5]], [[0.5, 0.5], [1.0, 0.5], [0.5, 1.0]], rtol=1e-6)
    # Without exclude_self, image 0 is its own nearest neighbour: images 0, 1 -> t0 1, t1 0.
    np.testing.assert_allclose(knn.knn_scores(X, G, X[:1], k=2), [[1.0, 0.0]])


def test_tagvote_votes_minus_prior():
    # Query 4, k=3: images 0, 1, 2 vote t0 2, t1 1; prior k f(t)/N = 3 * 3 / 6 = 1.5 for both tags.
    np.testing.assert_allclose(tagvote.tagvote_scores(X, G, [[4.0]], k=3), [[0.5, -0.5]], rtol=1e-6)
    # Refinement, k=1: image 2 (x=20) has images 1 and 3 tied at 10 -> the lower index, 1 (t0);
    # prior 1 * 3 / 6 = 0.5 -> t0 1 - 0.5, t1 0 - 0.5.
    scores = tagvote.tagvote_scores(X, G, X, k=1, exclude_self=True)
    np.testing.assert_allclose(scores[2], [0.5, -0.5], rtol=1e-6)


def test_tagvote_one_vote_per_uploader():
    # Query 4, k=3 with uploaders: image 0 (A), image 1 is A again and is skipped, image 2 (B),
    # image 3 (C). Votes t0 = 1 + 0 + 1 = 2, t1 = 0 + 1 + 1 = 2; prior 1.5 -> 0.5, 0.5
    # (instead of 0.5, -0.5 when user A's second image votes).
    np.testing.assert_allclose(
        tagvote.tagvote_scores(X, G, [[4.0]], k=3, train_users=UPLOADERS), [[0.5, 0.5]], rtol=1e-6)


def test_tagvote_caps_k():
    # No uploaders, k=100 -> k = N = 6: every image votes, t0 3, t1 3, prior 6 * 3 / 6 = 3 -> 0.
    np.testing.assert_allclose(tagvote.tagvote_scores(X, G, [[44.0]], k=100), [[0.0, 0.0]], atol=1e-6)
    # With uploaders k is capped at the 4 users. From 44 each user's nearest image: A image 1 (34),
    # B image 2 (24), C image 4 (4), D image 5 (6). Votes t0 = 1 (image 1), t1 = 2 (images 2, 4);
    # prior 4 * 3 / 6 = 2 -> -1, 0.
    np.testing.assert_allclose(
        tagvote.tagvote_scores(X, G, [[44.0]], k=100, train_users=UPLOADERS), [[-1.0, 0.0]], atol=1e-6)
    # Refinement with uploaders: image 5 is user D's only image, so query 5 has 3 other users and
    # k = 3 for every query (prior 3 * 3 / 6 = 1.5). Query 5: A image 1, B image 2, C image 4 ->
    # t0 1, t1 2 -> -0.5, 0.5. Query 0: A image 1 (10), B image 2 (20), C image 3 (30) -> t0 2, t1 2.
    scores = tagvote.tagvote_scores(X, G, X, k=100, train_users=UPLOADERS, exclude_self=True)
    np.testing.assert_allclose(scores[[5, 0]], [[-0.5, 0.5], [0.5, 0.5]], atol=1e-6)
    assert tagvote.available_neighbours(6, 6, UPLOADERS, exclude_self=True) == 3
    assert tagvote.available_neighbours(6, 6, exclude_self=True) == 5


def test_cosine_distance_ranks_by_cosine_and_ignores_scale():
    rng = np.random.default_rng(3)
    train, query = rng.normal(size=(25, 4)), rng.normal(size=(7, 4))
    cosine = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (
        train / np.linalg.norm(train, axis=1, keepdims=True)).T
    want = np.argsort(-cosine, axis=1, kind="stable")[:, :5]
    got = knn.nearest_neighbours(train, query, 5, distance="cosine")
    np.testing.assert_array_equal(got, want)
    # Rescaling a training row changes its Euclidean distances, not its cosine.
    scaled = train * rng.uniform(0.1, 10, size=(25, 1))
    np.testing.assert_array_equal(knn.nearest_neighbours(scaled, query, 5, distance="cosine"), want)
    assert not np.array_equal(knn.nearest_neighbours(scaled, query, 5), knn.nearest_neighbours(train, query, 5))
    tags = (rng.random((25, 3)) < 0.4).astype(np.float32)
    np.testing.assert_allclose(knn.knn_scores(scaled, tags, query, k=5, distance="cosine"),
                               tags[want].mean(axis=1), atol=1e-6)
    prior = 5 * tags.sum(axis=0) / 25
    np.testing.assert_allclose(tagvote.tagvote_scores(scaled, tags, query, k=5, distance="cosine"),
                               tags[want].sum(axis=1) - prior, atol=1e-5)
    with pytest.raises(ValueError, match="distance"):
        knn.knn_scores(train, tags, query, k=5, distance="manhattan")
