"""KNN tag relevance (Makadia, Pavlovic and Kumar 2010) and the neighbour search of KNN and TagVote.

KNN, as the AAAI 2018 paper describes it ("the tags are assigned based on
their occurrence rates among the k nearest neighbours"): the relevance of tag
t to a query image q is the fraction of its k visual neighbours tagged t,

    knn(q, t) = (1 / k) * sum_{j in N_k(q)} G[j, t],

where N_k(q) are the k training images nearest to q and G is the N x C 0/1
user-tag matrix of the training images. Makadia et al.'s full JEC method also
combines several distances and transfers labels greedily (the nearest
neighbour's tags first); the paper's baseline is the occurrence-rate vote
above, on the phi_0 features, which is what is implemented.

Neighbour search (`nearest_neighbours`, also used by TagVote): the exact
search of `wsnn.search`, in the features' floating dtype (float32 stays
float32, float64 stays float64), nearest first, equal computed distances
broken by the lower training index. ``distance="euclidean"`` (ours, the
default) or ``"cosine"`` (jingwei's, on L2-normalised VGG features; see
`wsnn.search.for_distance`). Two uses:

* annotation: query images are not training images, every training image is
  a candidate neighbour;
* refinement (``exclude_self=True``): query i *is* training image i and is
  never its own neighbour.

With ``unique_users=True`` each uploader contributes at most one neighbour:
a user is represented by its nearest image (lower index on equal distances)
and the k nearest representatives are returned.
"""

import numpy as np
import scipy.sparse

from wsnn import checks, search
from wsnn.baselines.common import binary_tags

__all__ = ["nearest_neighbours", "knn_scores"]


def user_codes(train_users, num_train):
    """Uploader ids (any hashable values) as integer codes 0..U-1."""
    users = np.asarray(train_users)
    if users.shape != (num_train,):
        raise ValueError(f"train_users must have one id per training image ({num_train}), got shape {users.shape}")
    return np.unique(users, return_inverse=True)[1].ravel()


def _one_per_user(distances, perm, starts):
    """`distances` with every image but each user's nearest one set to +inf.

    `perm` orders the training images by user (stably, so by index within a
    user) and `starts` are the first positions of each user in `perm`.
    """
    grouped = distances[:, perm]
    nearest = np.minimum.reduceat(grouped, starts, axis=1)  # chunk x U
    sizes = np.diff(np.append(starts, len(perm)))
    is_nearest = grouped == np.repeat(nearest, sizes, axis=1)
    positions = np.where(is_nearest, np.arange(len(perm)), len(perm))
    first = np.minimum.reduceat(positions, starts, axis=1)  # lowest index among a user's nearest
    masked = np.full_like(distances, np.inf)
    np.put_along_axis(masked, perm[first], nearest, axis=1)
    return masked


def neighbour_chunks(train_features, query_features, k, exclude_self=False, chunk_size=1024,
                     train_users=None, unique_users=False, distance="euclidean"):
    """Yields ``(start, stop, neighbours)`` for consecutive chunks of query rows.

    Same arguments and per-row result as `nearest_neighbours`, which
    concatenates the chunks; scorers consume them one at a time so that only
    a chunk's neighbours are ever held.
    """
    train, query = search.check_features(train_features, query_features)
    train, query = search.for_distance(train, distance), search.for_distance(query, distance)
    n, q = len(train), len(query)
    k = checks.positive_int(k, "k")
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    if exclude_self and q > n:
        raise ValueError(f"exclude_self needs query i to be training image i, but Q={q} > N={n}")
    if k > n - bool(exclude_self):
        raise ValueError(f"k={k} exceeds the {n - bool(exclude_self)} training images available")
    if unique_users:
        if train_users is None:
            raise ValueError("unique_users=True needs train_users")
        codes = user_codes(train_users, n)
        perm = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(np.diff(codes[perm], prepend=-1))
    for start, stop, distances in search.distance_chunks(train, query, exclude_self, chunk_size):
        if unique_users:
            distances = _one_per_user(distances, perm, starts)
        neighbours = search.smallest(distances, k)
        if np.isinf(np.take_along_axis(distances, neighbours[:, -1:], axis=1)).any():
            # Fewer than k finite distances: with unique_users, fewer other users than k.
            raise ValueError(f"k={k} exceeds the candidate neighbours available to a query")
        yield start, stop, neighbours


def nearest_neighbours(train_features, query_features, k, exclude_self=False, chunk_size=1024,
                       train_users=None, unique_users=False, distance="euclidean"):
    """The k training images nearest to each query (exact).

    Args:
      train_features: N x d visual features of the training images.
      query_features: Q x d visual features of the queries.
      k: neighbours per query.
      exclude_self: refinement: query i is training image i and is not its
        own neighbour (needs Q <= N).
      chunk_size: query rows per chunk; memory is O(chunk_size * N).
      train_users: optional length-N uploader ids (any hashable values);
        only used with `unique_users`.
      unique_users: at most one neighbour per uploader: each user is
        represented by its nearest image (lower index on ties).
      distance: "euclidean" or "cosine".

    Returns:
      int array Q x k of training indices, nearest first, equal distances by
      lower index.

    Raises:
      ValueError: malformed or non-finite features, k < 1, more neighbours
        requested than a query has available (images, or distinct users
        with `unique_users`), or an unknown distance.
    """
    chunks = [neighbours for _, _, neighbours in neighbour_chunks(
        train_features, query_features, k, exclude_self, chunk_size, train_users, unique_users, distance)]
    if not chunks:
        return np.zeros((0, checks.positive_int(k, "k")), np.int64)
    return np.concatenate(chunks)


def neighbour_votes(neighbours, train_tags):
    """Per query, how many of its neighbours carry each tag: dense float32 (rows x C)."""
    rows, k = neighbours.shape
    indicator = scipy.sparse.csr_matrix(
        (np.ones(rows * k, np.float32), neighbours.ravel(), np.arange(0, rows * k + 1, k)),
        shape=(rows, train_tags.shape[0]))
    return (indicator @ train_tags).toarray()


def knn_scores(train_features, train_user_tags, query_features, k=50, exclude_self=False, chunk_size=1024,
               distance="euclidean"):
    """KNN tag relevance: the fraction of the k nearest training images carrying each tag.

    Args:
      train_features, train_user_tags, query_features: the scorers' inputs
        (`wsnn.baselines.common`).
      k: neighbours (1 <= k <= N, or N - 1 with `exclude_self`).
      exclude_self: refinement: query i is training image i and does not vote
        for itself.
      chunk_size: query rows per distance chunk.
      distance: "euclidean" or "cosine" (jingwei's).

    Returns:
      float32 array Q x C, entries in [0, 1].
    """
    tags = binary_tags(train_user_tags, len(train_features))
    scores = np.zeros((len(query_features), tags.shape[1]), np.float32)
    for start, stop, neighbours in neighbour_chunks(train_features, query_features, k, exclude_self, chunk_size,
                                                    distance=distance):
        scores[start:stop] = neighbour_votes(neighbours, tags) / np.float32(k)
    return scores
