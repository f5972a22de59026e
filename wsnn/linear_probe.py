"""Linear probing: one L2-regularised logistic regression per tag on frozen features.

Two users:
  * stage 1 starts phi_0's tag head from the probe on the starting
    backbone's features (`--head_init=linear_probe`): linear probing, then
    fine-tuning (Kumar et al., ICLR 2022). A random head fine-tuned at a
    high rate first has to undo what it does to the pretrained features;
  * the benchmark's "Linear probe" row: the same fit on the pretrained
    features, the floor every network row must clear (phi_0's head sits on
    exactly these features at the start of stage 1).

The fit is scikit-learn's `LogisticRegression(C=c)` for every tag at once:
on features standardised with the training images' mean and standard
deviation, each tag minimises ``c * sum_i logloss_i + ||w||^2 / 2`` (the
bias unpenalised). All tags are one Newton-CG problem (the objective is a
sum of independent per-tag terms). The inverse strength c is chosen from
`C_GRID` by validation mAP when a validation split with labels exists,
else `DEFAULT_C`. The returned kernel and bias act on raw features: the
standardisation is folded in, so they can be set as a Dense layer's weights.
"""

import dataclasses

import numpy as np
import scipy.optimize
import scipy.special

C_GRID = (1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_C = 1.0


@dataclasses.dataclass
class Probe:
    """A fitted probe: tag_probs = sigmoid(features @ kernel + bias).

    Attributes:
      kernel: d x C, acting on raw (unstandardised) features.
      bias: C.
      c: the inverse L2 strength used.
      trials: [{"C": c, "validation_mAP": value}] of the search (empty without one).
    """

    kernel: np.ndarray
    bias: np.ndarray
    c: float
    trials: list

    def predict(self, features):
        """Tag probabilities of N x d features."""
        return scipy.special.expit(np.asarray(features, np.float64) @ self.kernel + self.bias).astype(np.float32)


def _standardise(features):
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std[std < 1e-8] = 1.0  # constant (e.g. dead ReLU) units: left at 0 after centring
    return mean, std


def _fit(z, y, c, start, max_iter):
    """Weights (d + 1) x C on standardised z minimising the sum over tags of c * logloss + ||w||^2 / 2,
    scaled by 1 / (c n) for the optimiser: Newton-CG with exact Hessian-vector products (two
    matrix products each, whatever d and C; scipy's L-BFGS-B spent ~0.1 s of bookkeeping per
    iteration at d x C = 11,500 here)."""
    n, d = z.shape
    tags = y.shape[1]
    curvature = {}

    def linear(flat):
        w = flat.reshape(d + 1, tags)
        return w, z @ w[:d] + w[d]

    def objective(flat):
        w, logits = linear(flat)
        return np.sum(np.logaddexp(0.0, logits) - y * logits) / n + np.sum(w[:d] ** 2) / (2 * c * n)

    def gradient(flat):
        w, logits = linear(flat)
        probs = scipy.special.expit(logits)
        curvature["at"], curvature["weights"] = flat, probs * (1 - probs) / n
        residual = (probs - y) / n
        return np.vstack([z.T @ residual + w[:d] / (c * n), residual.sum(axis=0, keepdims=True)]).ravel()

    def hessian_product(flat, vector):
        if curvature.get("at") is not flat:
            gradient(flat)
        v, change = linear(vector)
        weighted = curvature["weights"] * change
        return np.vstack([z.T @ weighted + v[:d] / (c * n), weighted.sum(axis=0, keepdims=True)]).ravel()

    result = scipy.optimize.minimize(objective, start.ravel(), jac=gradient, hessp=hessian_product,
                                     method="Newton-CG", options={"maxiter": max_iter, "xtol": 1e-4})
    return result.x.reshape(d + 1, tags)


def fit(train_features, train_tags, valid_features=None, valid_score=None, c_grid=C_GRID, max_iter=100):
    """Fits the per-tag logistic regressions, choosing c on validation when it can.

    Args:
      train_features: N x d frozen features of the training images.
      train_tags: N x C user tags G (0/1, dense or scipy sparse).
      valid_features: V x d features of the validation images, or None.
      valid_score: callable(V x C tag probabilities) -> validation mAP (it
        reads the validation labels), or None: c = `DEFAULT_C`.
      c_grid: inverse L2 strengths tried, fitted from the strongest
        regularisation to the weakest, each warm-started from the last.
      max_iter: Newton iterations per fit.

    Returns:
      a `Probe` (the first of equally good c).
    """
    x = np.asarray(train_features, np.float64)
    y = np.asarray(train_tags.toarray() if hasattr(train_tags, "toarray") else train_tags, np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features {x.shape} and tags {y.shape} must have one row per training image")
    mean, std = _standardise(x)
    z = (x - mean) / std
    prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    start = np.vstack([np.zeros((x.shape[1], y.shape[1])), np.log(prior / (1 - prior))[None]])
    searched = valid_score is not None and valid_features is not None
    trials, best = [], None
    for c in sorted(c_grid) if searched else [DEFAULT_C]:
        start = _fit(z, y, c, start, max_iter)
        probe = Probe(start[:-1] / std[:, None], start[-1] - (mean / std) @ start[:-1], float(c), trials)
        if not searched:
            return probe
        value = float(valid_score(probe.predict(valid_features)))
        trials.append({"C": float(c), "validation_mAP": value})
        if best is None or value > best[0]:
            best = (value, probe)
    return best[1]
