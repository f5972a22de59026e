"""Exact nearest-neighbour search and PCA, shared by the trainer and the baselines.

One search serves the candidate sets Z of stage 2 (`wsnn.neighbours`), the
KNN and TagVote baselines (`wsnn.baselines.knn`) and RPCA's image graph
(`wsnn.baselines.rpca`).

Distances are squared Euclidean, computed as ``(-2 q.x + ||q||^2) + ||x||^2``
in the features' floating dtype (at least float32; float64 stays float64),
over chunks of query rows: one matrix product per chunk, and memory
O(chunk_size * N) instead of Q x N. This order of the additions is the one
the candidate search and KNN always used: another order changes the last
bits and so, on near ties, the neighbours.

The k nearest of a query are sorted nearest first, and equal computed
distances go to the lower base index, so results do not depend on how
`np.partition` happens to order ties.
"""

import numpy as np

from wsnn import checks

__all__ = ["DISTANCES", "CANDIDATE_SEARCHES", "for_distance", "check_features", "distance_chunks", "smallest",
           "candidate_distances", "nearest_candidates", "nearest", "nearest_on_device", "ivf_parameters", "ivf_index", "nearest_ivf", "reduce_dimensions",
           "candidates"]

DISTANCES = ("euclidean", "cosine")
CANDIDATE_SEARCHES = ("exact", "pca", "ivf")


def for_distance(features, distance):
    """Features whose squared Euclidean distances rank neighbours as `distance` does.

    "euclidean": the features themselves. "cosine" (jingwei's KNN and TagVote
    on VGG features): every row scaled to unit L2 norm, since for unit rows
    ``||a - b||^2 = 2 - 2 cos(a, b)``. An all-zero row stays zero; its cosine
    is undefined, and it is at squared distance 1 from every unit row.

    Raises:
      ValueError: an unknown `distance`.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    if distance == "euclidean":
        return features
    features = np.asarray(features)
    features = features.astype(np.result_type(features, np.float32), copy=False)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)


def check_features(base, queries=None):
    """Checks the features of a search and gives them one floating dtype.

    Args:
      base: N x d features searched.
      queries: Q x d query features; None: the base rows themselves.

    Returns:
      (base, queries) as 2-D arrays of the dtype `np.result_type(base,
      queries, float32)`; queries stays None when it was None.

    Raises:
      ValueError: not 2-D, unequal widths, or NaN or Inf.
    """
    base = np.asarray(base)
    checked = [base] if queries is None else [base, np.asarray(queries)]
    if any(x.ndim != 2 for x in checked) or checked[-1].shape[1] != base.shape[1]:
        raise ValueError(f"features must be 2-D with equal widths, got {[x.shape for x in checked]}")
    dtype = np.result_type(*checked, np.float32)
    checked = [x.astype(dtype, copy=False) for x in checked]
    if not all(np.all(np.isfinite(x)) for x in checked):
        raise ValueError("features contain NaN or Inf")
    return checked[0], (None if queries is None else checked[1])


def distance_chunks(base, queries=None, exclude_self=False, chunk_size=1024):
    """Yields ``(start, stop, distances)`` for consecutive chunks of query rows.

    Args:
      base: N x d features, as returned by `check_features`.
      queries: Q x d features of the same dtype; None: the base rows.
      exclude_self: query i is base row i (Q <= N): that distance is +inf,
        so a query is never its own neighbour.
      chunk_size: query rows per chunk.

    Yields:
      (start, stop, distances), distances a (stop - start) x N array of the
      squared distances of queries start..stop-1 to every base row.
    """
    base_norms = np.einsum("ij,ij->i", base, base)
    num_queries = len(base) if queries is None else len(queries)
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        # Base rows are copied: NumPy multiplies a view of the whole base by
        # its own transpose with SYRK, not GEMM, and the last bits differ. The
        # copy keeps the candidate search's results, and given queries are
        # used as they are, which keeps KNN's.
        chunk = base[start:stop].copy() if queries is None else queries[start:stop]
        distances = chunk @ base.T
        # In place: a chunk x N temporary per operation would raise the peak memory.
        distances *= -2
        distances += np.einsum("ij,ij->i", chunk, chunk)[:, np.newaxis]
        distances += base_norms[np.newaxis, :]
        if exclude_self:
            distances[np.arange(stop - start), np.arange(start, stop)] = np.inf
        yield start, stop, distances


def smallest(distances, k):
    """Column indices of the k smallest entries of each row.

    Args:
      distances: rows x N array.
      k: entries per row, 1 <= k <= N.

    Returns:
      int64 array rows x k, nearest first; equal distances keep the lower
      column first.
    """
    kth = np.partition(distances, k - 1, axis=1)[:, k - 1:k]
    keep = distances <= kth
    # Ties at the k-th distance keep too many in a row: drop the extra tied
    # columns with the highest indices. A loop over those rows only, because
    # a vectorised cumulative count would add a rows x N int64 array.
    extra = keep.sum(axis=1) - k
    for row in np.flatnonzero(extra):
        tied = np.flatnonzero(distances[row] == kth[row, 0])
        keep[row, tied[len(tied) - extra[row]:]] = False
    columns = np.nonzero(keep)[1].reshape(len(distances), k)  # ascending within a row
    order = np.argsort(np.take_along_axis(distances, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


def candidate_distances(features, anchors, candidates):
    """a x k squared distances between features[anchors[i]] and features[candidates[i, j]].

    In float64, so that distances between nearby features keep their order,
    whatever the features' dtype (Algorithm 1's choice and everything that
    shows or measures it must agree on near ties).
    """
    # One group at a time: a x k x d differences at once would be large.
    features = np.asarray(features)
    return np.stack([np.sum((features[group].astype(np.float64) - features[anchor]) ** 2, axis=1)
                     for anchor, group in zip(anchors, candidates)])


def nearest_candidates(distances, count):
    """Column positions of each row's `count` smallest `candidate_distances`, nearest first; equal
    distances keep the lower position (the candidate nearer under phi_0) first."""
    return np.argsort(distances, axis=1, kind="stable")[:, :count]


def _neighbour_count(k, n, exclude_self):
    """k as an int, checked against the N base rows (one fewer when a query may not find itself)."""
    available = n - bool(exclude_self)
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= available:
        raise ValueError(f"k={k!r} must be in [1, {available}]: N={n} base rows"
                         + (", each query excluded" if exclude_self else ""))
    return int(k)


def nearest(base, k, queries=None, exclude_self=False, chunk_size=1024, progress=None,
            return_distances=False):
    """The k base rows nearest to each query: exact, squared Euclidean.

    Memory is about (2 * itemsize + 1) * chunk_size * N bytes at the peak
    besides the features. Time is 2 Q N d multiply-adds: for N = Q = 200,000
    and d = 4,096 about an hour on two CPU cores (tools/bench_search.py);
    `reduce_dimensions` first cuts d.

    Args:
      base: N x d features searched.
      k: neighbours per query.
      queries: Q x d query features; None: the base rows themselves.
      exclude_self: query i is base row i (Q <= N) and is never its own
        neighbour; usually with queries None.
      chunk_size: query rows per chunk.
      progress: optional callable(done, total) called after each chunk with
        the number of queries done so far and Q.
      return_distances: also return the squared distances.

    Returns:
      int64 array Q x k of base indices, nearest first, equal distances by
      lower index; with `return_distances`, (indices, distances), distances
      Q x k in the features' dtype.

    Raises:
      ValueError: malformed or non-finite features, Q > N with
        `exclude_self`, or k not in [1, N] ([1, N - 1] with `exclude_self`).
    """
    base, queries = check_features(base, queries)
    n = len(base)
    q = n if queries is None else len(queries)
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    if exclude_self and q > n:
        raise ValueError(f"exclude_self needs query i to be base row i, but Q={q} > N={n}")
    k = _neighbour_count(k, n, exclude_self)
    indices = np.empty((q, k), np.int64)
    distances = np.empty((q, k), base.dtype) if return_distances else None
    for start, stop, block in distance_chunks(base, queries, exclude_self, chunk_size):
        indices[start:stop] = smallest(block, k)
        if return_distances:
            distances[start:stop] = np.take_along_axis(block, indices[start:stop], axis=1)
        if progress is not None:
            progress(stop, q)
    return (indices, distances) if return_distances else indices


def reduce_dimensions(features, dims, seed=0, fit_sample=20000):
    """Projects features on their first `dims` principal components.

    For search at scale: distances in the projection approximate the
    original ones (exactly when the features lie in a `dims`-dimensional
    affine subspace), at dims/d of the search cost.

    Args:
      features: N x d array.
      dims: components to keep.
      seed: seed of the fitting sample and of the randomised SVD.
      fit_sample: the components are fitted on at most this many rows, drawn
        with `seed`; fitting on all N would cost more than the search saves.

    Returns:
      float32 N x min(dims, sample size) array; the features themselves
      (float32) when d <= dims.
    """
    from sklearn.decomposition import PCA  # imported here: slow, and only some runs reduce

    features = np.asarray(features, np.float32)
    if int(dims) != dims or dims < 1:
        raise ValueError(f"dims must be a positive integer, got {dims!r}")
    if features.shape[1] <= dims:
        return features
    rng = np.random.default_rng(seed)
    sample = features if len(features) <= fit_sample else features[np.sort(rng.choice(len(features), fit_sample,
                                                                                       replace=False))]
    pca = PCA(n_components=min(int(dims), len(sample)), svd_solver="randomized", random_state=seed).fit(sample)
    # Transformed in blocks: one float64 N x dims intermediate could be large.
    return np.concatenate([pca.transform(features[i:i + 65536]).astype(np.float32)
                           for i in range(0, len(features), 65536)])


def nearest_on_device(base, k, exclude_self=False, chunk_size=1024, progress=None):
    """`nearest` of the base rows themselves as TensorFlow matrix products (on the GPU when there is one).

    The same distance formula and order of additions as `distance_chunks`,
    in float32; the k nearest by `tf.math.top_k`, which also keeps the lower
    index first among equal distances. A GPU's matrix product may round the
    last bits differently from the CPU's, so on near ties the two can choose
    differently.

    Returns:
      int64 array N x k of base indices, nearest first.
    """
    import tensorflow as tf  # imported here: the baselines use this module without TensorFlow

    base = check_features(base)[0].astype(np.float32)
    n = len(base)
    k = _neighbour_count(k, n, exclude_self)
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    features = tf.constant(base)
    norms = tf.einsum("ij,ij->i", features, features)
    found = np.empty((n, k), np.int64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        chunk = features[start:stop]
        distances = (-2 * tf.matmul(chunk, features, transpose_b=True) + norms[start:stop, tf.newaxis]) + norms
        if exclude_self:
            distances = tf.tensor_scatter_nd_update(
                distances, tf.stack([tf.range(stop - start), tf.range(start, stop)], axis=1),
                tf.fill([stop - start], np.float32(np.inf)))
        found[start:stop] = tf.math.top_k(-distances, k).indices.numpy()
        if progress is not None:
            progress(stop, n)
    return found


def ivf_parameters(n):
    """(lists, lists probed per query) of the inverted-file search for N images: about 4 sqrt(N)
    lists (a power of two, and at least 39 training images each, as faiss asks), an eighth of
    them probed."""
    lists = 2 ** int(round(np.log2(4 * np.sqrt(n))))
    lists = int(max(1, min(lists, n // 39)))
    return lists, max(1, lists // 8)


def ivf_index(base, lists, seed=0):
    """faiss's IndexIVFFlat over the float32 rows `base`: k-means into `lists` lists, fitted on at
    most 64 rows per list drawn with `seed`, then every row added to its list."""
    import faiss  # imported here: only this search needs it

    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(base.shape[1]), base.shape[1], lists)
    index.cp.seed = seed
    sample = np.random.default_rng(seed).choice(len(base), min(len(base), 64 * lists), replace=False)
    index.train(base[np.sort(sample)])
    index.add(base)
    return index


def nearest_ivf(base, k, exclude_self=False, lists=None, probes=None, seed=0, chunk_size=4096, progress=None):
    """The approximately k nearest base rows of every base row: faiss's inverted-file index.

    k-means (on at most 64 images per list, drawn with `seed`) splits the
    images into `lists` lists; each query is compared with the images of
    the `probes` lists whose centres are nearest to it. Cost about
    N (probes / lists) N d plus the clustering, against N^2 d for `nearest`;
    recall below 1 (`tools/bench_search.py` measures it). A query whose
    probed lists hold fewer than k other images is searched again over all
    lists, so every row has k neighbours. Equal distances are ordered as
    faiss finds them.

    Args:
      base: N x d features (float32 is used).
      k: neighbours per image.
      exclude_self: an image is never its own neighbour.
      lists, probes: default `ivf_parameters(N)`.
      seed: seed of the clustering and its sample.
      chunk_size: queries per faiss call (progress is reported after each).
      progress: optional callable(done, N).

    Returns:
      int64 array N x k of base indices, nearest first.
    """
    base = np.ascontiguousarray(check_features(base)[0], np.float32)
    n = len(base)
    k = _neighbour_count(k, n, exclude_self)
    default_lists, default_probes = ivf_parameters(n)
    lists, probes = lists or default_lists, probes or default_probes
    if not 1 <= probes <= lists <= n:
        raise ValueError(f"probes={probes}, lists={lists}: need 1 <= probes <= lists <= N={n}")
    index = ivf_index(base, lists, seed)
    index.nprobe = probes
    wanted = k + bool(exclude_self)
    found = np.empty((n, k), np.int64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        _, rows = index.search(base[start:stop], wanted)
        short = np.flatnonzero((rows < 0).any(axis=1))
        if len(short):  # too few images in the probed lists: all lists for these queries
            index.nprobe = lists
            rows[short] = index.search(base[start + short], wanted)[1]
            index.nprobe = probes
        if exclude_self:
            own = rows == np.arange(start, stop)[:, np.newaxis]
            # Drop the query itself (or, when it is not among them, the farthest one).
            own[~own.any(axis=1), -1] = True
            rows = rows[~own].reshape(stop - start, k)
        found[start:stop] = rows
        if progress is not None:
            progress(stop, n)
    return found


def candidates(features, num_candidates, method="exact", dims=0, seed=0, on_device=False, progress=None):
    """Z: each image's M nearest other images by `method` (one of `CANDIDATE_SEARCHES`).

    exact: `nearest` (`nearest_on_device` with `on_device`); pca: exact in
    the first `dims` principal components (`reduce_dimensions`); ivf:
    `nearest_ivf` with its parameters from N.

    Returns:
      int32 array N x M (int32 halves a large candidate file).
    """
    if method not in CANDIDATE_SEARCHES:
        raise ValueError(f"candidate search must be one of {', '.join(CANDIDATE_SEARCHES)}, got {method!r}")
    features = np.asarray(features, np.float32)
    if method == "ivf":
        return nearest_ivf(features, num_candidates, exclude_self=True, seed=seed, progress=progress).astype(np.int32)
    if method == "pca":
        features = reduce_dimensions(features, dims, seed)
    search = nearest_on_device if on_device else nearest
    return search(features, num_candidates, exclude_self=True, chunk_size=2048, progress=progress).astype(np.int32)
