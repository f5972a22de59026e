"""Tests of wsnn.diagnostics against NumPy references."""

import numpy as np
import pytest

from wsnn import diagnostics, losses


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_gradient_norms_at_the_logits_match_numpy():
    rng = np.random.default_rng(0)
    s, c, d, m = 8, 5, 6, 4
    logits = rng.normal(size=(s, c)).astype(np.float32)
    features = rng.normal(size=(s, d)).astype(np.float32)
    user_tags = (rng.random((s, c)) < 0.3).astype(np.float32)
    xi = rng.random((c, c))
    xi = (xi + xi.T) / 2
    np.fill_diagonal(xi, 1.0)
    loss = losses.WeaklySupervisedLoss(xi, group_size=m, lambda1=0.5, lambda2=0.1, lambda_vis=2.0)
    out = diagnostics.term_gradient_norms(loss, features, logits, user_tags)

    p = _sigmoid(logits.astype(np.float64))
    dp = p * (1 - p)
    # L_err = (1/s) sum |g - p|: d/dlogit = lambda2 / s * sign(p - g) * p (1 - p).
    err = 0.1 / s * np.sign(p - user_tags) * dp
    # L_sem = (1/s) (2/C^2) Tr(P^T L P) per image rows, i.e. (2/(s C^2)) sum_r p_r L p_r^T;
    # d/dP = (4/(s C^2)) P L; times p (1 - p).
    laplacian = np.diag(xi.sum(1) - np.diag(xi)) - (xi - np.diag(np.diag(xi)))
    sem = 0.5 * 4 / (s * c ** 2) * (p @ laplacian) * dp
    # L_vis = (m / (s (m-1))) sum_j sum_e gamma_je ||p_j - p_e||^2, gamma held constant.
    groups = features.astype(np.float64).reshape(-1, m, d)
    dist = ((groups[:, 1:] - groups[:, :1]) ** 2).sum(-1)
    sigma = np.median(dist)
    gamma = np.exp(-dist / sigma)
    pg = p.reshape(-1, m, c)
    grad_p = np.zeros_like(pg)
    scale = m / (s * (m - 1))
    diff = pg[:, :1] - pg[:, 1:]                                  # anchor - neighbour
    grad_p[:, 0] = (2 * scale * gamma[..., None] * diff).sum(1)
    grad_p[:, 1:] = -2 * scale * gamma[..., None] * diff
    vis = 2.0 * grad_p.reshape(s, c) * dp
    expected = {"visual_consistency": np.linalg.norm(vis), "semantic_dependency": np.linalg.norm(sem),
                "user_error": np.linalg.norm(err)}
    total = sum(expected.values())
    for name, norm in expected.items():
        assert out[f"grad_norm/{name}"] == pytest.approx(norm, rel=1e-4), name
        assert out[f"grad_share/{name}"] == pytest.approx(norm / total, rel=1e-4), name


def test_prediction_spread():
    p = np.array([[0.01, 0.5], [0.03, 0.9], [0.2, 0.1]])
    out = diagnostics.prediction_spread(p)
    assert out["tag_std"] == pytest.approx((np.std([0.01, 0.03, 0.2]) + np.std([0.5, 0.9, 0.1])) / 2)
    assert out["share_below_0.05"] == pytest.approx(2 / 6)


def test_neighbour_label_share_hand_case():
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [0, 1], [1, 0]])
    # Group 1: anchor 0 (label 0) with 1 (shares), 2 (no). Group 2: anchor 4 (label 1) with 1 (yes), 3 (no).
    assert diagnostics.neighbour_label_share([0, 1, 2, 4, 1, 3], labels, 3) == pytest.approx(0.5)
    assert diagnostics.neighbour_label_share([5, 0, 1], labels, 3) == pytest.approx(1.0)


def test_low_spread_warning_names_the_flags_only_below_the_threshold():
    from wsnn.diagnostics import MIN_TAG_STD, low_spread_warning

    rng = np.random.default_rng(0)
    priors = np.tile([0.1, 0.3, 0.05], (50, 1)) + rng.normal(scale=0.005, size=(50, 3))  # ~the tag priors
    warning = low_spread_warning(priors)
    assert warning is not None and "--learning_rate" in warning and "--stage1_steps" in warning
    assert "\n" not in warning and f"< {MIN_TAG_STD:g}" in warning
    assert low_spread_warning(rng.uniform(0, 1, size=(50, 3))) is None
