"""NMF: the AAAI 2018 paper's stand-in for WDNL (Li and Tang 2017).

WDNL, "Weakly supervised deep matrix factorization for social image
understanding" (IEEE TIP 2017), factorises the image-tag matrix into image
factors and tag factors in a common low-dimensional latent space. The image
factors are produced by a deep network from the image, so new images can be
placed in the space, and the user tags are weak supervision: the product of
the factors is fitted to them, not taken as ground truth. (WDNL also
regularises the factors with visual and tag-similarity graphs, and trains
the network end to end.) The AAAI paper replaces it on NUS-WIDE by "an
equivalent model ... named NMF by using fixed VGG-16 feature matrix as input
with low rank matrix decomposition". This module is that reading: the
network becomes an affine map of the fixed features, the factors are
nonnegative, and the graph regularisers are left out.

Model. With G the N x C 0/1 user-tag matrix, X the N x d standardised
features (see Choices), W (N x r) >= 0 the image factors, H (r x C) >= 0 the
tag factors and (A, b) an affine map d -> r, minimise

    J = (1/N) ||G - W H||^2 + (beta/N) ||W - X A - 1 b'||^2 + reg (||H||^2 + ||A||^2)

(Frobenius norms). A new image x gets the factor w = max(0, x A + b) and the
scores w H.

Updates, one iteration = three blocks, each of which cannot increase J:

    H <- H * (W'G) / (W'W H + N reg H + eps)                     (multiplicative)
    W <- W * (G H' + beta P+) / (W (H H' + beta I) + beta P- + eps),
         P = X A + 1 b', P+ = max(P, 0), P- = max(-P, 0)          (multiplicative)
    A <- (X'X + (N reg / beta) I)^(-1) X'(W - 1 b'),  b = column means of W
                                                                  (exact minimiser)

The H rule is Lee and Seung's with an L2 term; the W rule is the
multiplicative rule for a nonnegative quadratic problem whose linear term
has both signs (the auxiliary-function argument of Lee and Seung, as used
for semi-NMF by Ding, Li and Jordan 2010): P may be negative, so its
positive and negative parts go to the numerator and denominator. The
(X, 1) regression for (A, b) decouples because X is centred; b is not
penalised. eps = 1e-12 in the denominators only enlarges the majorising
curvature, so the rules stay monotone while avoiding 0 / 0.

Choices:

* Loss: squared error on all entries of G, a missing tag counting as 0
  (the weak supervision: the low-rank fit decides which zeros are missed
  tags). Images without user tags are all-zero rows and stay in the fit.
* Tying: the soft penalty beta ||W - P||^2 (beta = 1) rather than W = P
  exactly, so that W can stay nonnegative and fit G while (A, b) learns to
  predict it; at test time the prediction is rectified to keep w >= 0.
* The 1/N scaling makes beta and reg independent of the number of images.
  reg (default 1e-3) is a ridge on H and A; it also removes the scale
  ambiguity W c, H / c of the factorisation.
* Features are standardised per column with the training mean and standard
  deviation (a constant column stays 0): the ridge on A then treats every
  feature alike, and negative features are fine since only W and H are
  constrained.
* Rank r = 16 by default (the paper gives none): clearly low-rank against
  C = 45 or 81 tags.
* Initialisation from `seed`: W and H uniform in (0, s], s = sqrt(2 mean(G)
  / r), so that W H starts at the scale of G (as scikit-learn's random NMF
  initialisation), then the exact (A, b) step. Entries must start positive:
  multiplicative updates never move an entry away from 0.
* Stopping: after `max_iter` (200) iterations, or earlier when an iteration
  lowers J by less than `tol` (1e-4) relative to J.
* Arithmetic in float64; X'X is formed and factorised once.
"""

import dataclasses

import numpy as np
import scipy.linalg

from wsnn import checks, search
from wsnn.baselines import common

__all__ = ["NMFModel", "fit_nmf", "nmf_scores"]

# Added to every multiplicative denominator (see the module docstring).
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class NMFModel:
    """A fitted NMF; `image_factors(features)` places any images in the latent space.

    Attributes:
      feature_mean, feature_scale: length-d standardisation of the features.
      image_factors_train: W, N x r >= 0, the training images' factors.
      tag_factors: H, r x C >= 0.
      mapping: A, d x r, on standardised features.
      intercept: b, length r.
      beta, reg: the weights of the objective.
      objective: J after initialisation and after each iteration.
    """
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    image_factors_train: np.ndarray
    tag_factors: np.ndarray
    mapping: np.ndarray
    intercept: np.ndarray
    beta: float
    reg: float
    objective: list

    def standardise(self, features):
        """Features as the model sees them: (x - mean) / scale, float64."""
        return (np.asarray(features, np.float64) - self.feature_mean) / self.feature_scale

    def image_factors(self, features):
        """max(0, x A + b) for each row of `features` (raw, not standardised)."""
        return np.maximum(self.standardise(features) @ self.mapping + self.intercept, 0.0)


def _objective(tags, image_factors, tag_factors, predicted, mapping, beta, reg):
    """J of the module docstring; `predicted` is X A + 1 b'."""
    fit = np.sum((tags - image_factors @ tag_factors) ** 2)
    tie = np.sum((image_factors - predicted) ** 2)
    return float((fit + beta * tie) / len(tags) + reg * (np.sum(tag_factors ** 2) + np.sum(mapping ** 2)))


def fit_nmf(features, tags, rank=16, beta=1.0, reg=1e-3, max_iter=200, tol=1e-4, seed=0):
    """Fits W, H, A, b by the block updates of the module docstring.

    Args:
      features: N x d image features (any sign).
      tags: N x C nonnegative target (scipy.sparse or dense); `nmf_scores`
        passes the 0/1 user tags.
      rank: r, the latent dimensions.
      beta: weight of the tie between W and the feature map; > 0.
      reg: ridge on H and A; >= 0.
      max_iter: iterations at most.
      tol: stop when an iteration lowers J by less than tol * J; 0 runs all
        `max_iter`.
      seed: seed of the random initialisation of W and H.

    Returns:
      An `NMFModel`.

    Raises:
      ValueError: malformed or non-finite features, rows of tags not N,
        negative or non-finite tags, bad rank, max_iter, beta, reg or tol,
        or (reg = 0) a singular Gram matrix X'X (e.g. a constant feature).
    """
    x = search.check_features(features)[0].astype(np.float64)
    g = tags.toarray() if hasattr(tags, "toarray") else np.asarray(tags)
    g = g.astype(np.float64)
    n = len(x)
    if g.ndim != 2 or len(g) != n:
        raise ValueError(f"tags must be 2-D with one row per image ({n}), got shape {g.shape}")
    if not (np.all(np.isfinite(g)) and np.all(g >= 0)):
        raise ValueError("tags must be finite and nonnegative")
    rank = checks.positive_int(rank, "rank")
    max_iter = checks.positive_int(max_iter, "max_iter")
    if not beta > 0 or not reg >= 0 or not tol >= 0:
        raise ValueError(f"need beta > 0, reg >= 0 and tol >= 0, got {beta!r}, {reg!r}, {tol!r}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    x = (x - mean) / scale

    rng = np.random.default_rng(seed)
    top = np.sqrt(2.0 * max(g.mean(), _EPS) / rank)
    # 1 - uniform[0, 1) lies in (0, 1]: every entry starts positive.
    w = top * (1.0 - rng.random((n, rank)))
    h = top * (1.0 - rng.random((rank, g.shape[1])))
    # The (A, b) step solves with the same matrix every time: factorise it once.
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += n * reg / beta
    try:
        gram = scipy.linalg.cho_factor(gram)
    except np.linalg.LinAlgError:
        raise ValueError("the features' Gram matrix is singular; use reg > 0") from None

    def map_step(w):
        """The exact (A, b) step, and the prediction P = X A + 1 b' that the W step and J use."""
        intercept = w.mean(axis=0)
        mapping = scipy.linalg.cho_solve(gram, x.T @ (w - intercept))
        return mapping, intercept, x @ mapping + intercept

    # W'G as (G'W)': OpenBLAS, multithreaded on a busy machine, was 100x slower on the r x N by N x C layout.
    g_t = np.ascontiguousarray(g.T)
    a, b, p = map_step(w)
    history = [_objective(g, w, h, p, a, beta, reg)]
    for _ in range(max_iter):
        h *= (g_t @ w).T / (w.T @ w @ h + n * reg * h + _EPS)
        w *= (g @ h.T + beta * np.maximum(p, 0)) / (w @ (h @ h.T) + beta * w + beta * np.maximum(-p, 0) + _EPS)
        a, b, p = map_step(w)
        history.append(_objective(g, w, h, p, a, beta, reg))
        if history[-2] - history[-1] < tol * history[-2]:
            break
    return NMFModel(mean, scale, w, h, a, b, float(beta), float(reg), history)


def nmf_scores(train_features, train_user_tags, query_features, rank=16, beta=1.0, reg=1e-3, max_iter=200,
               tol=1e-4, seed=0):
    """NMF relevance: max(0, x A + b) H for each query image x.

    Args:
      train_features, train_user_tags, query_features: the scorers' inputs
        (`wsnn.baselines.common`).
      rank, beta, reg, max_iter, tol, seed: see `fit_nmf`.

    Returns:
      float32 array Q x C, entries >= 0.

    Raises:
      ValueError: malformed inputs or parameters (see `fit_nmf`).
    """
    train, query = search.check_features(train_features, query_features)
    tags = common.binary_tags(train_user_tags, len(train))
    model = fit_nmf(train, tags, rank, beta, reg, max_iter, tol, seed)
    return (model.image_factors(query) @ model.tag_factors).astype(np.float32)
