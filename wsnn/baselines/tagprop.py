"""TagProp: tag prediction by weighted nearest neighbours (Guillaumin, Mensink, Verbeek and Schmid 2009).

"TagProp: Discriminative metric learning in nearest neighbor models for image
auto-annotation" (ICCV 2009), the annotation baseline of the AAAI 2018 paper,
in its distance-based form with one base distance and, optionally, the
word-specific logistic discriminants ("sigmoids").

The relevance of tag t to image i is a weighted vote of its K nearest
training images j, with weights that decay with the base distance d_ij:

    pi_ij = exp(-w * d_ij / s) / sum_{j' in N_K(i)} exp(-w * d_ij' / s),   w >= 0,
    x_it  = sum_{j in N_K(i)} pi_ij * y~_jt,   y~_jt = 1 - eps if G[j, t] else eps,

with G the N x C 0/1 user-tag matrix of the training images, eps = 1e-5 (the
smoothing keeps every probability in [eps, 1 - eps], so the log-likelihood
stays finite) and s a fixed scale (see Choices). Then

    p(y_it = +1) = x_it                                (sigmoid=False)
    p(y_it = +1) = sigma(alpha_t * x_it + beta_t)      (sigmoid=True)

The parameters maximise the weighted log-likelihood of the training user
tags, each training image i predicted from its leave-one-out neighbours:

    L = sum_i sum_t c_it * log p(y_it),   c_it = 1/n+ if G[i, t] else 1/n-,

n+ and n- the numbers of positive and negative (image, tag) pairs. For the
linear model its gradient in w is the paper's, with the weights c:
sum_it c_it sum_j (pi_ij - rho_ijt) d_ij / s, rho_ijt = pi_ij p(y_it | j) /
p(y_it) the posterior weight of neighbour j given image i's actual tag. For
both models it is computed through x as

    dL/dw = sum_it dL/dx_it * sum_j pi_ij (dbar_i - d_ij) / s * y~_jt,   dbar_i = sum_j pi_ij d_ij,

and in the sigmoid parameters it is that of weighted logistic regression on
the x_it: dL/dalpha_t = sum_i c_it (y_it - p_it) x_it, dL/dbeta_t =
sum_i c_it (y_it - p_it).

Choices:

* Distance-based weights with a single base distance. Li et al.'s benchmark
  (jingwei, model_based/tagprop/tagprop.py, a wrapper of the authors' Matlab
  code) offers rank-based and distance-based variants, each with or without
  sigmoids, and defaults to rank-based with sigmoids, K = 1000 and cosine
  distance; here the distance-based variant is implemented, with sigmoids by
  default as in jingwei, and K = 200 by default (jingwei's 1000 is an
  argument away).
* Base distance d_ij: the Euclidean distance ||a - b|| for "euclidean", the
  cosine distance 1 - cos(a, b) for "cosine" (jingwei's default), computed by
  the project's exact search (`wsnn.search`: squared Euclidean distances of
  the features, of unit-normalised features for cosine, where
  ||a - b||^2 / 2 = 1 - cos).
* Scale s: the mean base distance over the training neighbour lists used for
  learning, so that w is dimensionless (w = 1: weights decay by e per mean
  neighbour distance) and one starting value w = 1 suits every feature
  space. It is a fixed reparametrisation of the paper's w and changes no
  optimum. (s = 1 if that mean is 0.)
* Class weighting c_it: the paper's 1/n+ for present and 1/n- for absent
  tags, counted over all pairs of the learning images (not per tag), which
  is also what the authors' code does with its "weighted" option (it then
  rescales the weights to unit sum, which changes L by a constant factor
  only). Positives and negatives thus weigh the same in total.
* Optimisation. w: L-BFGS-B with the bound w >= 0 (the paper projects its
  gradient steps onto w >= 0), from w = 1, with the analytic gradient.
  Sigmoids follow the authors' code (as jingwei runs it): first the linear
  model's w; then (alpha_t, beta_t) of every tag by weighted
  logistic-regression maximum likelihood on the leave-one-out x_it under
  that w (Newton's method per tag with step halving, from alpha = 1,
  beta = 0, later from the previous values; the authors use conjugate
  gradients); then alternations of w under fixed (alpha, beta) and
  (alpha, beta) under the new w, at most `rounds` of them, until a round
  raises L by less than 1e-4 |L|. No step lowers L. alpha is not
  constrained.
* Training images are predicted from their K nearest *other* training
  images (leave-one-out, as in the paper; jingwei likewise searches K + 1
  and drops each training image's first neighbour), queries from their K nearest
  training images; K is capped at N - 1. With N > `fit_sample` the
  parameters are learned on `fit_sample` training images drawn with `seed`
  (still predicted from neighbours among all N); prediction always uses all
  N. The parameters are a scalar and 2C numbers, which a sample of that size
  determines well, and learning costs time and memory proportional to the
  sample.
* Scores are the probabilities p(y_it = +1) in float32 (computed in float64).

Cost: the search of `wsnn.search` (N^2 d for learning, Q N d for scoring),
then per evaluation of L about m K (1 + tags per image) + m C operations;
learning holds, besides the m x K neighbour lists, one sparse entry per
(neighbour, neighbour's tag) pair, about 12 m K (tags per image) bytes, and
m x C float64 predictions while fitting sigmoids. On two CPU cores, d = 64,
C = 45, K = 200, with sigmoids: N = 2,000 about 2 s, N = 20,000 about 25 s
(half of it the search).
"""

import dataclasses

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.special

from wsnn import checks, search
from wsnn.baselines import common

__all__ = ["EPS", "TagPropModel", "fit_tagprop", "tagprop_scores", "log_likelihood"]

EPS = 1e-5
ROUNDS_TOLERANCE = 1e-4  # alternations stop once a round raises L by less than this fraction of |L|


def _base_distance(squared, distance):
    """The base distance d from the search's squared Euclidean distances (float64)."""
    squared = np.maximum(np.asarray(squared, np.float64), 0)  # rounding can make them slightly negative
    return np.sqrt(squared) if distance == "euclidean" else squared / 2


def _neighbour_weights(weight, distances):
    """pi: the softmax of -weight * distances over each row's neighbours."""
    # Shifted by the row minimum: the same softmax, and exp never overflows.
    logits = -weight * (distances - distances.min(axis=1, keepdims=True))
    pi = np.exp(logits)
    return pi / pi.sum(axis=1, keepdims=True)


def _votes(neighbours, tags):
    """The sparse (b * C) x (b * K) matrix V with x_it = eps + (1 - 2 eps) (V pi)_{iC+t}.

    V sums each neighbour's weight pi_ij into the cells (i, t) of that
    neighbour's tags, i.e. (V pi)_{iC+t} = sum_j pi_ij G[j, t]; with
    sum_j pi_ij = 1 this is sum_j pi_ij y~_jt. It depends only on the
    neighbour lists, so learning builds it once and every evaluation of L is
    one sparse product over the (neighbour, tag) pairs, G never dense.
    """
    rows, k = neighbours.shape
    tagged = tags[neighbours.ravel()]  # row i K + j: the tags of neighbour j of row i
    slots = np.repeat(np.arange(rows * k), np.diff(tagged.indptr))
    cells = slots // k * tags.shape[1] + tagged.indices
    # Column i K + j holds neighbour j's tags, so `tagged`'s rows are V's columns: built as CSC
    # without sorting, then converted, since CSR's product is the faster one.
    return scipy.sparse.csc_matrix((np.ones(len(cells)), cells, tagged.indptr),
                                   shape=(rows * tags.shape[1], rows * k)).tocsr()


def _predictions(votes, pi):
    """x, the smoothed weighted votes, rows x C."""
    return EPS + (1 - 2 * EPS) * (votes @ pi.ravel()).reshape(len(pi), -1)


def _label_terms(x, y, costs, alpha, beta):
    """(L, dL/dx, dL/dalpha, dL/dbeta) of predictions x of 0/1 tags y, weighted by `costs` (1/n+, 1/n-)."""
    c = np.where(y, costs[0], costs[1])
    if alpha is None:
        value = np.sum(c * np.where(y, np.log(x), np.log1p(-x)))
        return value, c * np.where(y, 1 / x, -1 / (1 - x)), None, None
    z = alpha * x + beta
    d_z = c * (y - scipy.special.expit(z))
    return np.sum(c * (y * z - np.logaddexp(0, z))), d_z * alpha, np.sum(d_z * x, axis=0), np.sum(d_z, axis=0)


def _fit_sigmoids(x, y, costs, alpha, beta, max_iter):
    """(alpha, beta, L) maximising L under fixed x: per-tag weighted logistic regression of y on x.

    Newton's method on all tags at once (each tag's problem is 2-D and
    concave), each step halved until that tag's likelihood does not
    decrease; a tag whose data are separable or never positive has no
    finite optimum and moves for `max_iter` steps.
    """
    c = np.where(y, costs[0], costs[1])

    def per_tag(alpha, beta):
        z = alpha * x + beta
        return np.sum(c * (y * z - np.logaddexp(0, z)), axis=0)

    current = per_tag(alpha, beta)
    for _ in range(max_iter):
        p = scipy.special.expit(alpha * x + beta)
        r, h = c * (y - p), c * p * (1 - p)
        g_a, g_b = np.sum(r * x, axis=0), np.sum(r, axis=0)
        h_aa, h_ab, h_bb = np.sum(h * x * x, axis=0), np.sum(h * x, axis=0), np.sum(h, axis=0)
        # A relative ridge keeps the 2 x 2 solve defined when a tag's x are all equal (det = 0).
        ridge = 1e-9 * (h_aa + h_bb) + np.finfo(float).tiny
        h_aa, h_bb = h_aa + ridge, h_bb + ridge
        det = h_aa * h_bb - h_ab ** 2
        step_a, step_b = (h_bb * g_a - h_ab * g_b) / det, (h_aa * g_b - h_ab * g_a) / det
        if np.all(g_a * step_a + g_b * step_b <= 1e-12 * np.abs(current)):  # Newton decrements: converged
            break
        size = np.ones_like(current)
        for _ in range(30):
            candidate = per_tag(alpha + size * step_a, beta + size * step_b)
            worse = candidate < current
            if not worse.any():
                break
            size[worse] /= 2
        size[worse] = 0
        alpha, beta = alpha + size * step_a, beta + size * step_b
        current = np.where(worse, current, candidate)
    return alpha, beta, float(np.sum(current))


class _Likelihood:
    """L and its gradient over fixed neighbour lists; see `log_likelihood` for the arguments."""

    def __init__(self, distances, neighbours, tags, rows, chunk_size):
        self.blocks = []  # (distances, votes V, tags y) per block of learning images
        for start in range(0, len(neighbours), chunk_size):
            stop = min(start + chunk_size, len(neighbours))
            self.blocks.append((distances[start:stop], _votes(neighbours[start:stop], tags),
                                tags[rows[start:stop]].toarray() > 0))
        positives = sum(int(y.sum()) for _, _, y in self.blocks)
        self.costs = (1 / max(positives, 1), 1 / max(len(neighbours) * tags.shape[1] - positives, 1))

    def predictions(self, weight):
        """x of every learning image, m x C."""
        return np.concatenate([_predictions(votes, _neighbour_weights(weight, block))
                               for block, votes, _ in self.blocks])

    def tags(self):
        """The 0/1 user tags of the learning images, m x C bool."""
        return np.concatenate([y for _, _, y in self.blocks])

    def __call__(self, weight, alpha=None, beta=None):
        total, d_weight, d_alpha, d_beta = 0.0, 0.0, 0.0, 0.0
        for block, votes, y in self.blocks:
            pi = _neighbour_weights(weight, block)
            value, d_x, d_a, d_b = _label_terms(_predictions(votes, pi), y, self.costs, alpha, beta)
            total += value
            if alpha is not None:
                d_alpha, d_beta = d_alpha + d_a, d_beta + d_b
            # dx_it/dw = (1 - 2 eps) sum_j dpi_ij/dw G[j, t], dpi_ij/dw = pi_ij (dbar_i - d_ij).
            d_pi = pi * (np.sum(pi * block, axis=1, keepdims=True) - block)
            d_weight += (1 - 2 * EPS) * np.sum(d_x.ravel() * (votes @ d_pi.ravel()))
        return (total, d_weight) + ((None, None) if alpha is None else (d_alpha, d_beta))


def log_likelihood(weight, distances, neighbours, tags, alpha=None, beta=None, rows=None, chunk_size=1024):
    """TagProp's weighted training log-likelihood L and its gradient.

    Args:
      weight: w >= 0.
      distances: m x k base distances of each learning image to its
        neighbours, already divided by the scale s.
      neighbours: m x k int training indices of those neighbours.
      tags: G, N x C 0/1 float64 CSR matrix of the training user tags.
      alpha, beta: length-C sigmoid parameters; None: the linear model.
      rows: length-m training indices of the learning images, whose tags
        are predicted; None: 0..m-1.
      chunk_size: learning images per block.

    Returns:
      (L, dL/dw, dL/dalpha, dL/dbeta); the last two are None for the linear
      model.
    """
    rows = np.arange(len(neighbours)) if rows is None else np.asarray(rows)
    return _Likelihood(distances, neighbours, tags, rows, chunk_size)(weight, alpha, beta)


@dataclasses.dataclass
class TagPropModel:
    """A fitted TagProp model, with what it needs to score queries and to evaluate L.

    Attributes:
      weight: the learned w (>= 0; distances are divided by `scale`).
      alpha, beta: length-C learned sigmoid parameters; None without sigmoids.
      scale: s, the mean base distance of the learning neighbour lists.
      distance: "euclidean" or "cosine".
      train_features: N x d training features, as searched (unit rows for cosine).
      train_tags: G, N x C 0/1 float64 CSR matrix.
      rows: length-m training indices of the learning images.
      neighbours: m x K leave-one-out neighbours of the learning images.
      distances: m x K their base distances divided by `scale`.
      chunk_size: rows per block when searching and scoring.
    """
    weight: float
    alpha: np.ndarray | None
    beta: np.ndarray | None
    scale: float
    distance: str
    train_features: np.ndarray
    train_tags: scipy.sparse.csr_matrix
    rows: np.ndarray
    neighbours: np.ndarray
    distances: np.ndarray
    chunk_size: int

    @property
    def k(self):
        return self.neighbours.shape[1]

    def log_likelihood(self, weight=None, alpha=None, beta=None):
        """The training log-likelihood L at the given parameters (None: the learned ones)."""
        weight = self.weight if weight is None else weight
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        return log_likelihood(weight, self.distances, self.neighbours, self.train_tags, alpha, beta,
                              self.rows, self.chunk_size)[0]

    def scores(self, query_features):
        """p(y_qt = +1) for every query q (not a training image) and tag t: float32 Q x C.

        Raises:
          ValueError: malformed or non-finite query features.
        """
        queries = search.for_distance(query_features, self.distance)
        train, queries = search.check_features(self.train_features, queries)
        scores = np.empty((len(queries), self.train_tags.shape[1]), np.float32)
        for start in range(0, len(queries), self.chunk_size):
            stop = min(start + self.chunk_size, len(queries))
            neighbours, squared = search.nearest(train, self.k, queries[start:stop], chunk_size=self.chunk_size,
                                                 return_distances=True)
            distances = _base_distance(squared, self.distance) / self.scale
            x = _predictions(_votes(neighbours, self.train_tags), _neighbour_weights(self.weight, distances))
            scores[start:stop] = x if self.alpha is None else scipy.special.expit(self.alpha * x + self.beta)
        return scores


def _learning_neighbours(train, k, fit_sample, seed, chunk_size):
    """(rows, neighbours, squared distances) of the learning images, leave-one-out among all N."""
    n = len(train)
    if n <= fit_sample:
        neighbours, squared = search.nearest(train, k, exclude_self=True, chunk_size=chunk_size,
                                             return_distances=True)
        return np.arange(n), neighbours, squared
    rows = np.sort(np.random.default_rng(seed).choice(n, fit_sample, replace=False))
    # search.nearest excludes query i as base row i: search a base reordered with the sample first.
    order = np.concatenate([rows, np.setdiff1d(np.arange(n), rows)])
    base = train[order]
    neighbours, squared = search.nearest(base, k, base[:fit_sample], exclude_self=True, chunk_size=chunk_size,
                                         return_distances=True)
    return rows, order[neighbours], squared


def fit_tagprop(train_features, train_user_tags, k=200, distance="euclidean", sigmoid=True, max_iter=100,
                rounds=10, fit_sample=20000, seed=0, chunk_size=1024):
    """Learns TagProp's distance weight (and sigmoids) by maximising the training log-likelihood.

    Args:
      train_features, train_user_tags: the scorers' inputs (`wsnn.baselines.common`).
      k: neighbours K; capped at N - 1, since training images are predicted
        from their leave-one-out neighbours.
      distance: base distance, "euclidean" or "cosine".
      sigmoid: learn the word-specific sigmoids (alpha_t, beta_t).
      max_iter: iterations per step: L-BFGS-B's for w, Newton's for the
        sigmoids.
      rounds: at most this many alternations of w and the sigmoids (with
        `sigmoid`); they stop earlier once L gains less than 1e-4 |L|.
      fit_sample: the parameters are learned on at most this many training
        images.
      seed: seed of that sample's draw.
      chunk_size: rows per block of the search and of L.

    Returns:
      TagPropModel.

    Raises:
      ValueError: malformed or non-finite features, rows of features and
        tags that differ, N < 2, k, fit_sample or chunk_size not positive
        integers, an unknown distance, or no tag among the learning images.
    """
    train, _ = search.check_features(search.for_distance(train_features, distance))
    n = len(train)
    tags = common.binary_tags(train_user_tags, n).astype(np.float64)
    if n < 2:
        raise ValueError(f"TagProp needs at least 2 training images (leave-one-out neighbours), got {n}")
    k = min(checks.positive_int(k, "k"), n - 1)
    fit_sample = checks.positive_int(fit_sample, "fit_sample")
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    rows, neighbours, squared = _learning_neighbours(train, k, fit_sample, seed, chunk_size)
    if tags[rows].nnz == 0:
        raise ValueError("no learning image has a user tag")
    distances = _base_distance(squared, distance)
    scale = float(distances.mean()) or 1.0
    distances /= scale

    likelihood = _Likelihood(distances, neighbours, tags, rows, chunk_size)
    learning_tags = likelihood.tags()

    def fit_weight(weight, alpha, beta):
        def negated(w):
            value, d_weight = likelihood(w[0], alpha, beta)[:2]
            return -value, -np.array([d_weight])
        result = scipy.optimize.minimize(negated, [weight], jac=True, method="L-BFGS-B", bounds=[(0, None)],
                                         options={"maxiter": max_iter})
        return float(result.x[0])

    def fit_sigmoids(weight, alpha, beta):
        return _fit_sigmoids(likelihood.predictions(weight), learning_tags, likelihood.costs, alpha, beta, max_iter)

    weight = fit_weight(1.0, None, None)
    alpha = beta = None
    if sigmoid:
        alpha, beta, value = fit_sigmoids(weight, np.ones(tags.shape[1]), np.zeros(tags.shape[1]))
        for _ in range(rounds):
            weight = fit_weight(weight, alpha, beta)
            previous = value
            alpha, beta, value = fit_sigmoids(weight, alpha, beta)
            if value - previous <= ROUNDS_TOLERANCE * abs(value):
                break
    return TagPropModel(weight, alpha, beta, scale, distance, train, tags, rows, neighbours, distances, chunk_size)


def tagprop_scores(train_features, train_user_tags, query_features, k=200, distance="euclidean", sigmoid=True,
                   max_iter=100, seed=0, chunk_size=1024):
    """TagProp annotation scores: fits on the training images, then scores the queries.

    Args:
      train_features, train_user_tags: the scorers' inputs (`wsnn.baselines.common`).
      query_features: Q x d visual features of new images (not training
        images).
      k: neighbours K; capped at N - 1 (training images are predicted from
        their leave-one-out neighbours while learning).
      distance: base distance, "euclidean" or "cosine".
      sigmoid: with the word-specific sigmoids; else the weighted votes x.
      max_iter: iterations per learning step (L-BFGS-B for w, Newton for
        the sigmoids).
      seed: seed of the learning sample's draw when N > 20,000.
      chunk_size: rows per block of the search, of L and of the scoring.

    Returns:
      float32 array Q x C of p(y_qt = +1), higher = more relevant.

    Raises:
      ValueError: as `fit_tagprop`, or malformed query features.
    """
    search.check_features(train_features, query_features)  # fail before learning, not after
    model = fit_tagprop(train_features, train_user_tags, k=k, distance=distance, sigmoid=sigmoid,
                        max_iter=max_iter, seed=seed, chunk_size=chunk_size)
    return model.scores(query_features)
