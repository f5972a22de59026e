"""TagVote: tag relevance by neighbour voting (Li, Snoek and Worring 2009).

"Learning social tag relevance by neighbor voting" (IEEE TMM 11(7)), as
benchmarked by Li et al. 2016 (ACM Computing Surveys 49(1)): the relevance of
tag t to image q is the number of its k visual neighbours tagged t, minus the
number expected from a random sample of k training images,

    tagvote(q, t) = sum_{j in N_k(q)} G[j, t]  -  k * f(t) / N,

where G is the N x C 0/1 user-tag matrix of the training images, f(t) the
number of training images tagged t, and N_k(q) the k neighbours of q (exact
Euclidean distance on the given features, or cosine as in jingwei, nearest
first, ties by lower index; see `wsnn.baselines.knn.nearest_neighbours`).
Li et al.'s benchmark uses k = 1000.

Choices:

* One vote per uploader. When `train_users` is given, the neighbour set is
  the k nearest images *with distinct uploaders*: each user is represented
  by their nearest image, the others are skipped. This is Li et al.'s
  unique-user constraint (their implementation skips a neighbour whose user
  has already voted): a user who uploads many near-duplicate photos with the
  same tags would otherwise fill the neighbourhood and dominate the votes.
  Without `train_users` every image votes.
* The prior always uses the whole training set, f(t) and N counted over all
  N training images (also in refinement, where the query's own image does
  not vote), as Li et al. do.
* k is capped at the neighbours every query has available: N (N - 1 with
  `exclude_self`), or with uploaders the number of distinct users (minus one
  if some query's own image is its user's only image). The prior uses the
  capped k, so a query whose neighbours are the whole collection scores 0.
* Refinement (`exclude_self=True`): query i is training image i and never
  votes for itself; annotation queries vote with all training images.
"""

import numpy as np

from wsnn import checks
from wsnn.baselines import common, knn

__all__ = ["tagvote_scores", "available_neighbours"]


def available_neighbours(num_train, num_queries, train_users=None, exclude_self=False):
    """How many neighbours every query can have (the cap on k).

    Args:
      num_train: N, the training images.
      num_queries: Q; with `exclude_self` query i is training image i.
      train_users: optional length-N uploader ids; then neighbours are
        distinct users.
      exclude_self: whether a query's own image is excluded.

    Returns:
      The largest k that `nearest_neighbours` accepts for these queries.
    """
    if train_users is None:
        return num_train - bool(exclude_self)
    codes = knn.user_codes(train_users, num_train)
    counts = np.bincount(codes)
    available = len(counts)
    if exclude_self and num_queries and np.any(counts[codes[:num_queries]] == 1):
        available -= 1  # that query's only candidate for its own user is itself
    return available


def tagvote_scores(train_features, train_user_tags, query_features, k=1000, train_users=None,
                   exclude_self=False, chunk_size=1024, distance="euclidean"):
    """TagVote relevance: neighbour votes minus the tag's prior, for every query and tag.

    Args:
      train_features, train_user_tags, query_features: the scorers' inputs
        (`wsnn.baselines.common`).
      k: neighbours that vote; capped at `available_neighbours`.
      train_users: optional length-N uploader ids; if given, at most one
        neighbour (the nearest image) per uploader.
      exclude_self: refinement: query i is training image i and does not vote
        for itself.
      chunk_size: query rows per distance chunk.
      distance: "euclidean" or "cosine" (jingwei's).

    Returns:
      float32 array Q x C of votes minus k * f(t) / N.

    Raises:
      ValueError: malformed inputs, k < 1, or no training image available.
    """
    n = len(train_features)
    tags = common.binary_tags(train_user_tags, n)
    k = checks.positive_int(k, "k")
    k = min(k, available_neighbours(n, len(query_features), train_users, exclude_self))
    if k < 1:
        raise ValueError("no training image is available to vote")
    prior = (k * np.asarray(tags.sum(axis=0)).ravel() / n).astype(np.float32)
    scores = np.zeros((len(query_features), tags.shape[1]), np.float32)
    chunks = knn.neighbour_chunks(train_features, query_features, k, exclude_self, chunk_size,
                                  train_users=train_users, unique_users=train_users is not None,
                                  distance=distance)
    for start, stop, neighbours in chunks:
        scores[start:stop] = knn.neighbour_votes(neighbours, tags) - prior
    return scores
