"""RPCA tag refinement (Zhu, Yan, Ma, ACM MM 2010), a baseline of Li et al. 2016.

The N x C user-tag matrix D (rows images) is split into a low-rank refined
matrix A and a sparse error E, with a content prior (similar images, similar
tag rows) and a tag prior (related tags, similar columns). The constraint
D = A + E is relaxed to a penalty, as in Zhu et al.'s Algorithm 2 (Lin et
al.'s accelerated proximal gradient); one weight eta on both Laplacian terms,
as in jingwei's implementation. Minimised, for mu > 0:

    F_mu(A, E) = ||A||_* + lam ||E||_1
                 + (eta / 2) [tr(A^T L_img A) + tr(A L_tag A^T)]
                 + ||D - A - E||_F^2 / (2 mu)

by FISTA with continuation mu_k = max(rho mu_{k-1}, mu_bar), mu_0 = 0.99
||D||_2, mu_bar = delta mu_0. Each step is a singular value thresholding of
A and a soft thresholding of E, with step 1 / Lip, Lip = 2 / mu + eta
(lmax(L_img) + lmax(L_tag)) (lmax(L_img) bounded by twice the largest
degree). Once mu = mu_bar, a step that would increase F_mu_bar is rejected
and the momentum restarted; iterations stop when mu = mu_bar and the
subgradient norm is below tol (relative).

L_img is the Laplacian of the symmetric kNN graph of `features` (weights
exp(-d^2 / sigma), sigma the median kNN squared distance; neighbours from
`wsnn.search`), sparse. L_tag = D_S - S from a C x C tag similarity S, by
default the co-occurrence cosine. The solver holds about a dozen dense N x C
float64 arrays (~100 bytes per element, tools/bench_rpca.py);
`max_elements` refuses larger problems before allocating.
"""

import time

import numpy as np
import scipy.linalg
import scipy.sparse

from wsnn import search

__all__ = ["rpca_refine", "image_laplacian", "tag_laplacian", "cooccurrence_cosine",
           "singular_value_threshold", "soft_threshold", "MAX_ELEMENTS"]

# Default bound on N * C: at the measured ~100 bytes per element (about a dozen
# float64 N x C arrays, tools/bench_rpca.py) 1e8 elements peak near 10 GB.
MAX_ELEMENTS = 100_000_000


def soft_threshold(x, tau):
    """Entrywise soft thresholding, the proximal operator of tau ||.||_1.

    Args:
      x: array.
      tau: threshold >= 0.

    Returns:
      sign(x) * max(|x| - tau, 0).
    """
    out = np.abs(x) - tau
    np.maximum(out, 0.0, out=out)
    return np.copysign(out, x, out=out)


def singular_value_threshold(x, tau):
    """Singular value thresholding, the proximal operator of tau ||.||_*.

    Args:
      x: M x C array (thin SVD; cheapest with C the small side).
      tau: threshold >= 0.

    Returns:
      (U diag(s') V^T, s') with s' = max(s - tau, 0) the thresholded singular
      values: their sum is the nuclear norm and their nonzeros the rank.
    """
    try:
        u, s, vt = scipy.linalg.svd(x, full_matrices=False, check_finite=False)
    except np.linalg.LinAlgError:  # gesdd can fail to converge; gesvd is slower, sturdier
        u, s, vt = scipy.linalg.svd(x, full_matrices=False, check_finite=False,
                                    lapack_driver="gesvd")
    s = np.maximum(s - tau, 0.0)
    keep = s > 0
    return (u[:, keep] * s[keep]) @ vt[keep], s


def _laplacian(weights):
    """D - W for a symmetric weight matrix W (sparse or dense)."""
    degree = np.asarray(weights.sum(axis=1)).ravel()
    if scipy.sparse.issparse(weights):
        return (scipy.sparse.diags(degree) - weights).tocsr()
    return np.diag(degree) - weights


def image_laplacian(features, knn, chunk_size=None):
    """Sparse Laplacian of the symmetric heat-kernel kNN graph of the images.

    Args:
      features: N x d array of image features.
      knn: neighbours per image, clipped to N - 1 (`wsnn.search.nearest`:
        equal distances go to the lower index).
      chunk_size: query rows per chunk; default keeps each distance block
        near 2^22 entries (32 MB).

    Returns:
      (N x N scipy.sparse CSR Laplacian D - W, sigma of the heat kernel).
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    k = min(int(knn), n - 1)
    if k < 1:
        raise ValueError(f"need knn >= 1 and at least 2 images, got knn={knn}, N={n}")
    chunk_size = chunk_size or max(1, 2 ** 22 // n)
    columns, distances = search.nearest(x, k, exclude_self=True, chunk_size=chunk_size, return_distances=True)
    distances = np.maximum(distances, 0.0)  # rounding can make a squared distance negative
    sigma = float(np.median(distances))
    if sigma <= 0:
        sigma = 1.0  # all neighbours coincide: every weight is 1
    weights = scipy.sparse.csr_matrix(
        (np.exp(-distances.ravel() / sigma), (np.repeat(np.arange(n), k), columns.ravel())),
        shape=(n, n))
    return _laplacian(weights.maximum(weights.T)), sigma


def cooccurrence_cosine(user_tags):
    """C x C cosine of tag columns: n_ij / sqrt(n_i n_j), zero diagonal.

    Args:
      user_tags: N x C matrix (dense or scipy.sparse); nonzeros count as tags.

    Returns:
      C x C float64 array, n_ij the number of images with tags i and j.
    """
    g = (scipy.sparse.csr_matrix(user_tags) != 0).astype(np.float64)
    co = (g.T @ g).toarray()
    norms = np.sqrt(np.diag(co))
    norms[norms == 0] = 1.0
    cosine = co / np.outer(norms, norms)
    np.fill_diagonal(cosine, 0.0)
    return cosine


def tag_laplacian(similarity):
    """Dense C x C Laplacian D - S of a tag similarity (symmetrised, zero diagonal).

    Args:
      similarity: C x C non-negative tag similarity, e.g. wsnn's xi.

    Returns:
      C x C float64 array.
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"tag_similarity must be C x C, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or s.min() < 0:
        raise ValueError("tag_similarity must be finite and non-negative")
    s = (s + s.T) / 2.0
    np.fill_diagonal(s, 0.0)
    return _laplacian(s)


def prior_norm_bound(l_img, l_tag):
    """Upper bound on lmax(L_img) + lmax(L_tag), the norm of A -> L_img A + A L_tag.

    lmax(L_tag) exactly (C x C); lmax(L_img) <= 2 max_i deg_i by Gershgorin
    (the N x N eigenproblem is not worth solving).

    Args:
      l_img: the image graph's N x N Laplacian, or None.
      l_tag: the tag graph's C x C Laplacian.
    """
    bound = float(np.linalg.eigvalsh(l_tag)[-1])
    if l_img is not None:
        bound += 2.0 * float(l_img.diagonal().max())
    return bound


def rpca_refine(user_tags, features=None, tag_similarity=None, lam=None, eta=2.0 ** -10,
                knn=25, max_iter=300, tol=1e-6, rho=0.9, delta=1e-9,
                max_elements=MAX_ELEMENTS, verbose=False):
    """Refines a user-tag matrix by RPCA with content and tag priors.

    Minimises F_mu (module docstring) by accelerated proximal gradient with
    continuation on mu.

    Args:
      user_tags: N x C 0/1 user-tag matrix D (dense or scipy.sparse).
      features: N x d image features for the image graph; None: no content
        prior.
      tag_similarity: C x C tag similarity for the tag graph; None: the
        co-occurrence cosine of `user_tags`.
      lam: weight of ||E||_1; None: 1 / sqrt(max(N, C)) (Candes et al.).
      eta: weight of the two Laplacian terms; 0 turns both priors off (no
        graph is built). The default 2^-10 is jingwei's chosen lambda2.
      knn: neighbours per image in the image graph (jingwei: 0.1% of N, i.e.
        25 on MIRFlickr-25K).
      max_iter: iteration cap.
      tol: relative tolerance of the stopping test.
      rho: continuation factor, mu_k = max(rho mu_{k-1}, mu_bar).
      delta: mu_bar = delta mu_0.
      max_elements: refuse N * C above this (ValueError) before allocating.
      verbose: print progress every 10 iterations.

    Returns:
      (A, E, info): A the N x C refined scores (the baseline's output), E the
      N x C sparse error, both float64; info a dict with iterations,
      objective (F_mu_bar at the result), history (F_mu_k after each
      accepted iteration), restarts (rejected ascent steps at mu_bar),
      converged, rank, mu_bar, lipschitz (final Lip), lam, eta,
      sigma (heat kernel; None without features), graph_seconds (building
      the Laplacians) and seconds (wall time, all of it).
    """
    start_time = time.perf_counter()
    n, c = user_tags.shape
    if n * c > max_elements:
        raise ValueError(
            f"RPCA holds about a dozen dense N x C float64 arrays (~100 bytes per element): "
            f"N x C = {n} x {c} = {n * c:,} elements exceeds max_elements={max_elements:,} "
            f"(~{100 * n * c / 2 ** 30:.0f} GiB needed); subsample images or tags, or raise "
            "max_elements if memory allows")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if features is not None and len(features) != n:
        raise ValueError(f"features has {len(features)} rows for {n} images")
    lam = 1.0 / np.sqrt(max(n, c)) if lam is None else float(lam)

    sparse_tags = scipy.sparse.csr_matrix(user_tags, dtype=np.float64)
    l_img = l_tag = None
    sigma = None
    lmax = 0.0
    if eta > 0:
        if features is not None:
            l_img, sigma = image_laplacian(features, knn)
        sim = cooccurrence_cosine(sparse_tags) if tag_similarity is None else tag_similarity
        l_tag = tag_laplacian(sim)
        if l_tag.shape != (c, c):
            raise ValueError(f"tag_similarity is {l_tag.shape}, expected {c} x {c}")
        lmax = prior_norm_bound(l_img, l_tag)
    graph_seconds = time.perf_counter() - start_time

    def prior(a):
        """K(a) = L_img a + a L_tag, so sum(a * K(a)) = both trace terms."""
        out = a @ l_tag
        if l_img is not None:
            out += l_img @ a
        return out

    # ||D||_2 from the C x C Gram matrix, without a dense SVD.
    gram = (sparse_tags.T @ sparse_tags).toarray()
    mu = 0.99 * np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)) or 1.0
    mu_bar = delta * mu
    d = sparse_tags.toarray()
    a = np.zeros((n, c))
    e = np.zeros((n, c))
    a_old, e_old, singular_values = a, e, np.zeros(c)
    t = t_old = 1.0
    history, restarts, converged, at_target = [], 0, False, False
    for iteration in range(1, max_iter + 1):
        lip = 2.0 / mu + eta * lmax
        beta = (t_old - 1.0) / t
        # Extrapolation Y and gradient step G = Y - grad f(Y) / Lip, in place (ga, ge).
        ga = a - a_old
        ga *= beta
        ga += a
        ge = e - e_old
        ge *= beta
        ge += e
        step = ga + ge
        step -= d
        step /= mu * lip
        if eta > 0:
            k_y = prior(ga)
            k_y *= eta / lip
            ga -= k_y
            del k_y
        ga -= step
        ge -= step
        del step
        new_a, new_s = singular_value_threshold(ga, 1.0 / lip)
        new_e = soft_threshold(ge, lam / lip)

        # F_mu at the new iterate X and its subgradient S = grad f(X) + Lip (G - X),
        # the latter in place of G.
        residual = new_a + new_e
        residual -= d
        residual /= mu
        value = (new_s.sum() + lam * np.abs(new_e).sum()
                 + mu / 2.0 * np.vdot(residual, residual))
        ga -= new_a
        ga *= lip
        ga += residual
        ge -= new_e
        ge *= lip
        ge += residual
        del residual
        if eta > 0:
            k_a = prior(new_a)
            value += eta / 2.0 * np.vdot(new_a, k_a)
            k_a *= eta
            ga += k_a
            del k_a
        if at_target and beta > 0 and value > history[-1]:
            # FISTA is not monotone: on the final problem, reject an ascent step and
            # restart the momentum; the plain proximal step that follows cannot ascend.
            t = t_old = 1.0
            restarts += 1
            continue
        a_old, e_old, a, e, singular_values = a, e, new_a, new_e, new_s
        history.append(float(value))
        at_target = mu <= mu_bar
        gap = np.sqrt(np.vdot(ga, ga) + np.vdot(ge, ge))
        scale = lip * max(1.0, np.sqrt(np.vdot(a, a) + np.vdot(e, e)))
        del ga, ge
        if verbose and iteration % 10 == 0:
            print(f"rpca: iter {iteration} mu {mu:.3g} F {value:.6g} "
                  f"rank(A) {np.count_nonzero(singular_values)} nnz(E) {np.count_nonzero(e)} "
                  f"stop {gap / scale:.3g}")
        if at_target and gap <= tol * scale:
            converged = True
            break
        t_old, t = t, (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mu = max(rho * mu, mu_bar)

    # Final objective on the target problem (mu = mu_bar).
    residual = a + e - d
    objective = (singular_values.sum() + lam * np.abs(e).sum()
                 + np.vdot(residual, residual) / (2.0 * mu_bar))
    del residual
    if eta > 0:
        objective += eta / 2.0 * np.vdot(a, prior(a))
    info = {
        "iterations": iteration, "objective": float(objective), "history": history,
        "restarts": restarts, "converged": converged,
        "rank": int(np.count_nonzero(singular_values)), "mu_bar": float(mu_bar),
        "lipschitz": float(lip), "lam": float(lam), "eta": float(eta), "sigma": sigma,
        "graph_seconds": graph_seconds, "seconds": time.perf_counter() - start_time,
    }
    return a, e, info
