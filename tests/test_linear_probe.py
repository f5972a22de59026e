"""Tests of wsnn.linear_probe against scikit-learn, and of stage 1's step against the probe."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from wsnn import linear_probe


def _data(seed, n=300, d=12, c=4, noise=1.0):
    """Features with a planted linear rule per tag (plus label noise through the logistic link)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)
    w = rng.normal(size=(d, c)) * 1.5
    logits = (x - x.mean(0)) / x.std(0) @ w / np.sqrt(d) * 3 - 1.5 + rng.normal(size=(n, c)) * noise
    return x, (logits > 0).astype(np.float64)


def _sklearn_probs(x, y, query, c):
    scaler = StandardScaler().fit(x)
    return np.stack([LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(scaler.transform(x), y[:, t])
                     .predict_proba(scaler.transform(query))[:, 1] for t in range(y.shape[1])], axis=1)


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_probe_equals_sklearn_logistic_regression_per_tag(c):
    x, y = _data(0)
    probe = linear_probe.fit(x, y, c_grid=(c,), valid_features=x[:10], valid_score=lambda p: 0.0, max_iter=2000)
    # Standardisation folded into the kernel: raw features in, sklearn's probabilities out.
    np.testing.assert_allclose(probe.predict(x), _sklearn_probs(x, y, x, c), atol=2e-4)
    assert probe.c == c


def test_probe_chooses_c_by_validation_score_and_records_every_trial():
    x, y = _data(1)
    seen = []

    def score(tag_probs):
        seen.append(tag_probs)
        return [0.3, 0.7, 0.7, 0.5][len(seen) - 1]  # 0.1 and 1 tie: the first (stronger) is kept

    probe = linear_probe.fit(x[:200], y[:200], x[200:], score, c_grid=(1.0, 0.001, 0.1, 0.01))
    assert [t["C"] for t in probe.trials] == [0.001, 0.01, 0.1, 1.0]
    assert probe.c == 0.01
    np.testing.assert_allclose(probe.predict(x[200:]), seen[1], rtol=1e-6)


def test_probe_without_validation_uses_the_default_c():
    x, y = _data(2)
    probe = linear_probe.fit(x, y)
    assert probe.c == linear_probe.DEFAULT_C and probe.trials == []


def _mean_ap(scores, labels):
    return np.mean([average_precision_score(labels[:, t], scores[:, t]) for t in range(labels.shape[1])
                    if labels[:, t].any()])


def test_stage1_step_from_a_random_head_reaches_the_probe():
    """A linear head on fixed features trained by stage 1's step (its loss, schedule and optimiser)
    from a random start reaches scikit-learn's logistic regression within .02 mAP on held-out rows.
    With Keras' BinaryCrossentropy (each tag's gradient divided by C) the same steps fall short."""
    from wsnn.losses import MultiLabelLogisticLoss
    from wsnn.training import schedules
    from wsnn.training.steps import Steps

    x, y = _data(3, n=1200, d=16, c=20, noise=0.5)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    train, test = slice(0, 800), slice(800, None)
    reference = _mean_ap(_sklearn_probs(x[train], y[train], x[test], 1.0), y[test])

    def trained_map(loss, steps=300, batch=32):
        keras.utils.set_random_seed(0)
        features = keras.Input((x.shape[1],))
        model = keras.Model(features, {"features": features,
                                       "tag_probs": keras.layers.Dense(y.shape[1], activation="sigmoid",
                                                                       name="tag_probs")(features)})
        optimizer = keras.optimizers.SGD(schedules.make("cosine", 0.05, steps, 20, 1, 1.0), momentum=0.9)
        step = Steps(model, [optimizer, optimizer], loss, None, tf.distribute.get_strategy(), x.shape[1:],
                     "multi_cnn").train[1]
        order = np.random.default_rng(0).permutation(np.tile(np.arange(800), steps * batch // 800 + 1))
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            step(tf.constant(x[idx]), tf.constant(y[idx], tf.float32))
        return _mean_ap(np.asarray(model(x[test])["tag_probs"]), y[test])

    assert trained_map(MultiLabelLogisticLoss()) >= reference - 0.02
    assert trained_map(keras.losses.BinaryCrossentropy()) < reference - 0.02
