"""CCA-KNN: tag transfer from neighbours in a CCA space (Murthy, Maji and Manmatha 2015).

"Automatic image annotation using deep learning representations" (ICMR
2015), the CCA baseline of the AAAI 2018 paper. Two views of each training
image, its visual features x (d) and a text vector t (e) built from its user
tags, are mapped by canonical correlation analysis (CCA) to a common space of
`dims` dimensions; a query image is mapped with the image view and its k
nearest training images there transfer their tags, as KNN does
(`wsnn.baselines.knn`).

CCA (regularised, closed form). With centred views X (n x d) and T (n x e),

    C_xx = X'X / (n - 1) + reg * (tr(X'X / (n - 1)) / d) * I,
    C_tt = T'T / (n - 1) + reg * (tr(T'T / (n - 1)) / e) * I,
    C_xt = X'T / (n - 1),
    C_xx^(-1/2) C_xt C_tt^(-1/2) = U diag(rho) V'        (SVD),
    P_x = C_xx^(-1/2) U[:, :dims],   P_t = C_tt^(-1/2) V[:, :dims].

rho_1 >= rho_2 >= ... are the canonical correlations and P_x, P_t the image
and text projections: (x - mean_x) P_x and (t - mean_t) P_t are the canonical
variates, each of unit variance. With reg = 0 the variates within a view are
uncorrelated and variate i of one view correlates with variate i of the other
by exactly rho_i.

Annotation. Each image is embedded as

    z(x) = ((x - mean_x) P_x) * rho ** power        (per dimension),

and the relevance of tag t to query q is the fraction of the k training
images nearest to q in that space (by `distance`) that carry t,

    cca(q, t) = (1 / k) * sum_{j in N_k(z(q))} G[j, t].

Choices:

* Text view. Murthy et al. represent an image's tags by the mean word2vec
  embedding of its tags. Word embeddings cannot be downloaded here; the
  stand-in is `tag_embeddings` (C x e, one row per tag; the benchmark passes
  the project's NGD + WordNet tag-similarity rows) and the text vector is
  the mean of the rows of the image's tags. Without `tag_embeddings` the
  text vector is the image's 0/1 bag of tags, the "binary vectors" Murthy et
  al. compare against.
* Images without user tags have no text vector (a mean over no tags is
  undefined; a zero vector would be a fake text point), so they are left out
  of the CCA fit. They remain candidate neighbours, voting for no tag, as in
  the KNN baseline.
* Solver: the closed form above (eigendecompositions of the two covariance
  matrices and one SVD), not scikit-learn's `CCA`. The latter is iterative
  (NIPALS, one inner loop per component), has no regularisation, and
  becomes slow and unstable for wide features; the closed form costs one
  pass over the data for the covariances plus O(d^3 + e^3), is exact, and
  takes a ridge term. `reg` is relative to the average variance of each view
  (so it does not depend on the features' scale); it is needed whenever a
  covariance is singular (a tag never used, d >= n, tag embeddings of rank
  < e). reg = 0 is plain CCA and raises when a covariance is singular.
* The neighbours are found among the training images' *image-view*
  embeddings, so query and candidates are compared within one modality (the
  text view only shapes the space). This is our reading of Murthy et al.'s
  CCA-KNN (the projected test image retrieves its nearest training images,
  whose tags are transferred); their paper was not available to check the
  details, and jingwei (Li et al.'s benchmark code) has no CCA method.
* Weighting of the dimensions: each canonical dimension is scaled by rho
  to the power `power` (default 4), and neighbours are ranked by cosine
  similarity, following the similarity of Gong et al. (IJCV 2014), the CCA
  embedding Murthy et al. build on: weakly correlated dimensions, which
  carry image variation unrelated to tags, barely count. Gong et al. scale
  by the eigenvalues of their generalised eigenproblem; here the canonical
  correlations themselves are used. `power=0`, `distance="euclidean"` gives plain
  Euclidean distance between canonical variates.
* Neighbour votes: the unweighted fraction of the k neighbours carrying a
  tag (the KNN baseline's transfer), with k = 50 by default as for KNN;
  neither paper fixes k for this setting. Ties in distance go to the lower
  training index (`wsnn.search`).
* dims defaults to all min(d, e) canonical dimensions; with the rho ** 4
  weighting the weak ones contribute little, so truncation matters less
  than it does unweighted.
* The CCA is fitted in float64; the embeddings are searched in float32, like
  the project's features.
"""

import dataclasses

import numpy as np
import scipy.sparse

from wsnn import checks, search
from wsnn.baselines import common, knn

__all__ = ["CCAModel", "fit_cca", "text_vectors", "cca_scores"]


@dataclasses.dataclass(frozen=True)
class CCAModel:
    """A fitted CCA: canonical variates are ``(view - mean) @ projection``.

    Attributes:
      image_mean: length-d mean of the image view.
      text_mean: length-e mean of the text view.
      image_projection: d x dims matrix P_x.
      text_projection: e x dims matrix P_t.
      correlations: length-dims canonical correlations rho, decreasing (of
        the regularised problem: with reg > 0 slightly below the empirical
        correlations of the variates).
    """
    image_mean: np.ndarray
    text_mean: np.ndarray
    image_projection: np.ndarray
    text_projection: np.ndarray
    correlations: np.ndarray

    def project_images(self, features):
        """Canonical variates of the image view, rows x dims (float64)."""
        return (np.asarray(features, np.float64) - self.image_mean) @ self.image_projection

    def project_texts(self, texts):
        """Canonical variates of the text view, rows x dims (float64)."""
        return (np.asarray(texts, np.float64) - self.text_mean) @ self.text_projection


def _inverse_sqrt(covariance, view):
    """C^(-1/2) of a symmetric positive definite matrix, by eigendecomposition."""
    values, vectors = np.linalg.eigh(covariance)
    # Relative threshold: rounding leaves a singular covariance with eigenvalues near, not at, 0.
    if values[0] <= 1e-10 * max(values[-1], np.finfo(np.float64).tiny):
        raise ValueError(f"the {view} covariance is singular; use reg > 0")
    return (vectors / np.sqrt(values)) @ vectors.T


def fit_cca(image_features, text_features, dims=None, reg=1e-3):
    """Regularised CCA of two paired views (closed form; see the module docstring).

    Args:
      image_features: n x d image view.
      text_features: n x e text view, row i paired with image row i.
      dims: canonical dimensions kept; None: all min(d, e).
      reg: ridge on each covariance, relative to its average variance; >= 0.

    Returns:
      A `CCAModel`.

    Raises:
      ValueError: not 2-D, unequal row counts, fewer than 2 rows, NaN or Inf,
        dims outside 1..min(d, e), reg < 0, or (reg = 0) a singular
        covariance.
    """
    x = np.asarray(image_features, np.float64)
    t = np.asarray(text_features, np.float64)
    if x.ndim != 2 or t.ndim != 2 or len(x) != len(t):
        raise ValueError(f"the views must be 2-D with equal row counts, got {x.shape} and {t.shape}")
    if len(x) < 2:
        raise ValueError(f"CCA needs at least 2 paired rows, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t))):
        raise ValueError("the views contain NaN or Inf")
    if not reg >= 0:
        raise ValueError(f"reg must be >= 0, got {reg!r}")
    most = min(x.shape[1], t.shape[1])
    dims = most if dims is None else checks.positive_int(dims, "dims")
    if dims > most:
        raise ValueError(f"dims={dims} exceeds min(d, e) = {most}")
    x_mean, t_mean = x.mean(axis=0), t.mean(axis=0)
    x, t = x - x_mean, t - t_mean
    scale = 1.0 / (len(x) - 1)
    c_xx, c_tt, c_xt = scale * (x.T @ x), scale * (t.T @ t), scale * (x.T @ t)
    c_xx[np.diag_indices_from(c_xx)] += reg * np.trace(c_xx) / len(c_xx)
    c_tt[np.diag_indices_from(c_tt)] += reg * np.trace(c_tt) / len(c_tt)
    k_x, k_t = _inverse_sqrt(c_xx, "image"), _inverse_sqrt(c_tt, "text")
    u, rho, vt = np.linalg.svd(k_x @ c_xt @ k_t, full_matrices=False)
    return CCAModel(x_mean, t_mean, k_x @ u[:, :dims], k_t @ vt[:dims].T, rho[:dims])


def text_vectors(tags, tag_embeddings=None):
    """The text view of the tagged images.

    Args:
      tags: N x C 0/1 CSR matrix (see `wsnn.baselines.common.binary_tags`).
      tag_embeddings: optional C x e array, one row per tag; None: one-hot.

    Returns:
      (texts, tagged): tagged is the boolean length-N mask of images with at
      least one tag; texts has one row per tagged image, the mean embedding
      of its tags, or its 0/1 bag of tags without embeddings.

    Raises:
      ValueError: embeddings not C x e or not finite.
    """
    counts = np.asarray(tags.sum(axis=1)).ravel()
    tagged = counts > 0
    tags = tags[tagged]
    if tag_embeddings is None:
        return tags.toarray().astype(np.float64), tagged
    if scipy.sparse.issparse(tag_embeddings):
        tag_embeddings = tag_embeddings.toarray()
    embeddings = np.asarray(tag_embeddings, np.float64)
    if embeddings.ndim != 2 or len(embeddings) != tags.shape[1]:
        raise ValueError(f"tag_embeddings must have one row per tag ({tags.shape[1]}), got shape {embeddings.shape}")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("tag_embeddings contain NaN or Inf")
    return np.asarray(tags @ embeddings) / counts[tagged, np.newaxis], tagged


def cca_scores(train_features, train_user_tags, query_features, dims=None, k=50, tag_embeddings=None,
               power=4.0, distance="cosine", reg=1e-3, chunk_size=1024):
    """CCA-KNN relevance: the fraction of the k nearest training images, in the CCA space, carrying each tag.

    Args:
      train_features, train_user_tags, query_features: the scorers' inputs
        (`wsnn.baselines.common`).
      dims: canonical dimensions; None: min(d, e), e = C without embeddings.
      k: neighbours (1 <= k <= N).
      tag_embeddings: optional C x e tag vectors; an image's text vector is
        the mean of its tags' rows. None: its 0/1 bag of tags.
      power: each canonical dimension is scaled by its correlation to this
        power before the neighbour search.
      distance: "cosine" or "euclidean" between the scaled embeddings.
      reg: relative ridge on the covariances (see `fit_cca`).
      chunk_size: query rows per distance chunk.

    Returns:
      float32 array Q x C, entries in [0, 1].

    Raises:
      ValueError: malformed inputs, fewer than 2 tagged training images,
        bad dims, k, reg or distance.
    """
    train, query = search.check_features(train_features, query_features)
    tags = common.binary_tags(train_user_tags, len(train))
    if distance not in search.DISTANCES:  # checked before the fit, which is the slow part
        raise ValueError(f"distance must be one of {', '.join(search.DISTANCES)}, got {distance!r}")
    texts, tagged = text_vectors(tags, tag_embeddings)
    model = fit_cca(train[tagged], texts, dims, reg)
    weights = model.correlations ** power

    def embed(features):
        return search.for_distance((model.project_images(features) * weights).astype(np.float32), distance)

    return knn.knn_scores(embed(train), tags, embed(query), k, chunk_size=chunk_size)
