"""TagCooccur: tag relevance from tag co-occurrence (Sigurbjoernsson and van Zwol 2008).

"Flickr tag recommendation based on collective knowledge" (WWW 2008), with
the "vote+" aggregation, as benchmarked for tag refinement by Li et al. 2016
(ACM Computing Surveys 49(1); their code: jingwei,
instance_based/tagcooccur.py), with m = 25, k_r = 4, k_s = 9, k_d = 11.

Statistics come from the training user-tag matrix G (N x C, 0/1): |u| is
the number of training images tagged u and |u & c| the number tagged both.

For each tag u, its candidate list ranks tags c by the asymmetric
co-occurrence P(c|u) = |u & c| / |u|, highest first, keeping only tags that
co-occur with u at least once. u itself (P(u|u) = 1) is always first, rank
r = 1; equal P(c|u) are broken by lower tag index. Then, for an image with
user tags U (those of its tags that occur in the training set):

    vote(u, c)         = 1 if c is among the first m of u's list, else 0
    rank(u, c)         = k_r / (k_r + (r - 1)),  r = c's position in u's list
    stability(u)       = k_s / (k_s + |k_s - log2 max(|u|, 1)|)
    descriptiveness(c) = k_d / (k_d + |k_d - log2 max(|c|, 1)|)
    promotion(u, c)    = rank(u, c) * stability(u) * descriptiveness(c)

    score(c) = (1 / |U|) * sum_{u in U} vote(u, c) * promotion(u, c)

Choices where the literature leaves room:

* Aggregation: the sum over user tags of vote(u, c) * promotion(u, c), the
  paper's "vote+" strategy exactly as Li et al.'s benchmark code computes
  it; not the product of a summed vote and a summed promotion. Li et al.'s code also
  divides by |U| (the number of user tags with statistics), so that images
  with many user tags do not outscore images with few when a tag's images
  are ranked; `normalize=False` drops the division (the ranking of tags
  within one image is the same either way).
* Refinement: the user tags of the image must be ranked too. Li et al.'s
  code does not place them above the candidates (their "bonus" is off in the
  benchmark); instead each user tag u heads its own candidate list (rank 1,
  as P(u|u) = 1), so u gets a vote and promotion from itself and further
  evidence from the image's other user tags, and is scored by the same
  formula as any other tag. That is what is implemented.
* Logarithm base 2 in stability and descriptiveness, as in Li et al.'s code
  (the paper writes only "log"); a count of 0 is treated as 1.
* A user tag that never occurs in the training set has no candidate list: it
  neither votes nor counts in |U|. An image without such user tags scores 0
  for every tag.
"""

import numpy as np
import scipy.sparse

from wsnn import checks
from wsnn.baselines import common

__all__ = ["tagcooccur_scores", "candidate_ranks", "frequency_promotion"]


def frequency_promotion(counts, k):
    """k / (k + |k - log2 max(count, 1)|): stability (k = k_s) or descriptiveness (k = k_d)."""
    logs = np.log2(np.maximum(np.asarray(counts, np.float64), 1.0))
    return k / (k + np.abs(k - logs))


def candidate_ranks(train_tags):
    """Each tag's candidate list as a sparse C x C matrix of ranks.

    Args:
      train_tags: N x C 0/1 CSR matrix (see `wsnn.baselines.common.binary_tags`).

    Returns:
      (ranks, counts): ranks is an int64 CSR matrix whose entry (u, c) is the
      1-based position of c in u's list (u first, then decreasing
      |u & c|, ties by lower index), stored only where |u & c| > 0; counts is
      the length-C array of |u|.
    """
    cooccur = (train_tags.T @ train_tags).tocoo()
    rows, cols, joint = cooccur.row, cooccur.col, np.rint(cooccur.data)
    keep = joint > 0
    rows, cols, joint = rows[keep], cols[keep], joint[keep]
    # Sort by tag u, then by decreasing |u & c| (same order as P(c|u)), u itself first, lower c first.
    order = np.lexsort((cols, cols != rows, -joint, rows))
    rows, cols = rows[order], cols[order]
    num_tags = train_tags.shape[1]
    row_starts = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_tags))])
    ranks = np.arange(len(rows)) - row_starts[rows] + 1
    counts = np.asarray(train_tags.sum(axis=0)).ravel()
    return scipy.sparse.csr_matrix((ranks, (rows, cols)), shape=(num_tags, num_tags)), counts


def tagcooccur_scores(user_tags, train_user_tags=None, m=25, k_r=4, k_s=9, k_d=11, normalize=True):
    """TagCooccur relevance of every tag to every image, from its user tags.

    Args:
      user_tags: Q x C user tags of the images to score (scipy.sparse or
        dense; nonzero means tagged).
      train_user_tags: N x C user tags the co-occurrence statistics come from;
        default `user_tags` itself (refinement).
      m: candidates kept per user tag (u itself included).
      k_r, k_s, k_d: rank, stability and descriptiveness damping constants.
      normalize: divide by the number of user tags with statistics, as Li et
        al.'s code does.

    Returns:
      float32 array Q x C; rows of images without (known) user tags are 0.
    """
    m = checks.positive_int(m, "m")
    tags = common.binary_tags(user_tags)
    train = tags if train_user_tags is None else common.binary_tags(train_user_tags)
    if tags.shape[1] != train.shape[1]:
        raise ValueError(f"user_tags has {tags.shape[1]} tags but train_user_tags has {train.shape[1]}")
    ranks, counts = candidate_ranks(train)
    # promotion(u, c) / descriptiveness(c) for every c within u's first m; zero elsewhere.
    rank_promotion = ranks.astype(np.float64)
    rank_promotion.data = np.where(ranks.data <= m, k_r / (k_r + ranks.data - 1.0), 0.0)
    rank_promotion.eliminate_zeros()
    weights = scipy.sparse.diags(frequency_promotion(counts, k_s)) @ rank_promotion
    known = tags @ scipy.sparse.diags((counts > 0).astype(np.float32))
    scores = (known @ weights).toarray() * frequency_promotion(counts, k_d)[np.newaxis, :]
    if normalize:
        scores /= np.maximum(np.asarray(known.sum(axis=1)), 1.0)
    return scores.astype(np.float32)
