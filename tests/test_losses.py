"""Tests of wsnn.losses against NumPy references of eqs. 1, 2, 6 and 9."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsnn.losses import (SemanticDependencyLoss, UserErrorSparsityLoss, VisualConsistencyLoss,
                         WeaklySupervisedLoss)


# --- NumPy references, written from the paper's sums ------------------------

def _ref_visual(features, tag_probs, m):
    """Eq. 2 with explicit loops over groups j and neighbours e."""
    s = len(tag_probs)
    pairs = []  # (squared feature distance, squared tag distance)
    for j in range(s // m):
        anchor = j * m
        for e in range(1, m):
            pairs.append((np.sum((features[anchor] - features[anchor + e]) ** 2),
                          np.sum((tag_probs[anchor] - tag_probs[anchor + e]) ** 2)))
    sigma = np.median([d for d, _ in pairs])
    return m / (s * (m - 1)) * sum(np.exp(-d / sigma) * p for d, p in pairs)


def _ref_semantic(tag_probs, xi):
    """Eq. 6: the double sum over tag pairs of column distances."""
    c = xi.shape[0]
    total = 0.0
    for i in range(c):
        for j in range(c):
            total += xi[i, j] * np.sum((tag_probs[:, i] - tag_probs[:, j]) ** 2)
    return total / c**2


def _ref_user_error(user_tags, tag_probs):
    """Eq. 9: the entry-wise L1 norm of G - P."""
    return np.sum(np.abs(user_tags - tag_probs))


def _random_table(rng, c):
    xi = rng.random((c, c))
    return (xi + xi.T) / 2


def _random_batch(seed, s=12, d=5, c=6):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(s, d))
    tag_probs = rng.uniform(0.05, 0.95, size=(s, c))
    user_tags = (rng.random((s, c)) < 0.3).astype(np.float64)
    return rng, features, tag_probs, user_tags


# --- values -------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("m,s", [(2, 8), (3, 12), (4, 12), (4, 16)])  # odd and even pair counts
def test_visual_consistency_matches_reference(seed, m, s):
    _, features, tag_probs, _ = _random_batch(seed, s=s)
    loss = VisualConsistencyLoss(group_size=m, dtype="float64")
    np.testing.assert_allclose(loss(features, tag_probs), _ref_visual(features, tag_probs, m), rtol=1e-12)
    per_example = VisualConsistencyLoss(group_size=m, reduction=None, dtype="float64")(features, tag_probs)
    assert per_example.shape == (s,)
    np.testing.assert_array_equal(per_example.numpy()[::m], 0.0)  # anchors


def test_visual_consistency_hand_case():
    # m=2, s=4: groups (rows 0,1) and (rows 2,3).
    # Squared feature distances: |[0,0]-[1,0]|^2 = 1, |[0,0]-[0,2]|^2 = 4;
    # sigma = median(1, 4) = 2.5; gamma = exp(-0.4) = 0.670320, exp(-1.6) = 0.201897.
    # Squared tag distances: |[1,0]-[0,0]|^2 = 1, |[1,1]-[0,0]|^2 = 2.
    # L_vis = m/(s(m-1)) * (0.670320*1 + 0.201897*2) = 0.5 * 1.074113 = 0.537057.
    features = [[0., 0.], [1., 0.], [0., 0.], [0., 2.]]
    tag_probs = [[1., 0.], [0., 0.], [1., 1.], [0., 0.]]
    expected = 0.5 * (np.exp(-0.4) + 2 * np.exp(-1.6))
    assert expected == pytest.approx(0.537057, abs=1e-6)
    loss = VisualConsistencyLoss(group_size=2, dtype="float64")
    assert float(loss(features, tag_probs)) == pytest.approx(expected, rel=1e-12)
    per_example = VisualConsistencyLoss(group_size=2, reduction=None, dtype="float64")(features, tag_probs)
    np.testing.assert_allclose(per_example, [0.0, 2 * np.exp(-0.4), 0.0, 4 * np.exp(-1.6)], rtol=1e-12)


def test_visual_consistency_sigma_floor():
    # Every neighbour duplicates its anchor: sigma would be 0; the floor keeps gamma = 1.
    features = np.ones((4, 3))
    tag_probs = np.array([[1., 0.], [0., 0.], [0., 1.], [0., 0.]])
    loss = VisualConsistencyLoss(group_size=2, dtype="float64")
    assert float(loss(features, tag_probs)) == pytest.approx(0.5 * (1 + 1))


@pytest.mark.parametrize("seed", range(3))
def test_semantic_dependency_matches_double_sum(seed):
    rng, _, tag_probs, _ = _random_batch(seed)
    xi = _random_table(rng, tag_probs.shape[1])
    expected = _ref_semantic(tag_probs, xi)
    summed = SemanticDependencyLoss(xi, reduction="sum", dtype="float64")(None, tag_probs)
    np.testing.assert_allclose(summed, expected, rtol=1e-10)
    per_image = SemanticDependencyLoss(xi, dtype="float64")(None, tag_probs)
    np.testing.assert_allclose(per_image, expected / len(tag_probs), rtol=1e-10)
    # The diagonal cancels in eq. 6, so it is ignored.
    np.fill_diagonal(xi, rng.random(xi.shape[0]) * 10)
    np.testing.assert_allclose(SemanticDependencyLoss(xi, reduction="sum", dtype="float64")(None, tag_probs),
                               expected, rtol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_user_error_matches_reference(seed):
    _, _, tag_probs, user_tags = _random_batch(seed)
    expected = _ref_user_error(user_tags, tag_probs)
    loss = UserErrorSparsityLoss(dtype="float64")
    np.testing.assert_allclose(loss(user_tags, tag_probs), expected / len(tag_probs), rtol=1e-12)
    summed = UserErrorSparsityLoss(reduction="sum", dtype="float64")(user_tags, tag_probs)
    np.testing.assert_allclose(summed, expected, rtol=1e-12)


def test_composite_adds_weighted_terms():
    rng, features, tag_probs, user_tags = _random_batch(0)
    xi = _random_table(rng, tag_probs.shape[1])
    terms = WeaklySupervisedLoss(xi, group_size=3, lambda1=0.3, lambda2=2.0, dtype="float64")(
        features, tag_probs, user_tags)
    s = len(tag_probs)
    vis = _ref_visual(features, tag_probs, 3)
    sem = _ref_semantic(tag_probs, xi) / s
    err = _ref_user_error(user_tags, tag_probs) / s
    np.testing.assert_allclose(terms["visual_consistency"], vis, rtol=1e-10)
    np.testing.assert_allclose(terms["semantic_dependency"], sem, rtol=1e-10)
    np.testing.assert_allclose(terms["user_error"], err, rtol=1e-10)
    np.testing.assert_allclose(terms["total"], vis + 0.3 * sem + 2.0 * err, rtol=1e-10)
    assert all(t.shape == () for t in terms.values())


# --- gradients ----------------------------------------------------------------

def _numeric_grad(fn, x, eps=1e-6):
    """Central differences of the scalar fn at x (float64)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (float(fn(x + step)) - float(fn(x - step))) / (2 * eps)
    return grad


def _tape_grad(fn, x):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        value = fn(x)
    return tape.gradient(value, x)


def _tiny_case():
    rng, features, tag_probs, user_tags = _random_batch(7, s=6, d=3, c=4)
    return features, tag_probs, user_tags, _random_table(rng, 4)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_visual_consistency_gradient_wrt_tag_probs(stop_gradient):
    features, tag_probs, _, _ = _tiny_case()
    loss = VisualConsistencyLoss(group_size=3, stop_gradient_through_similarity=stop_gradient, dtype="float64")
    fn = lambda p: loss(features, p)  # noqa: E731
    np.testing.assert_allclose(_tape_grad(fn, tag_probs), _numeric_grad(fn, tag_probs), rtol=1e-6, atol=1e-9)


def test_visual_consistency_gradient_wrt_features():
    features, tag_probs, _, _ = _tiny_case()
    loss = VisualConsistencyLoss(group_size=3, stop_gradient_through_similarity=False, dtype="float64")
    fn = lambda f: loss(f, tag_probs)  # noqa: E731
    analytic = _tape_grad(fn, features)
    np.testing.assert_allclose(analytic, _numeric_grad(fn, features), rtol=1e-6, atol=1e-9)
    assert np.abs(analytic).max() > 1e-3  # the check is not vacuous


def test_visual_consistency_default_gives_features_no_gradient():
    features, tag_probs, _, _ = _tiny_case()
    loss = VisualConsistencyLoss(group_size=3, dtype="float64")
    grad = _tape_grad(lambda f: loss(f, tag_probs), features)
    assert grad is None or not np.any(grad)


def test_semantic_dependency_gradient():
    _, tag_probs, _, xi = _tiny_case()
    loss = SemanticDependencyLoss(xi, dtype="float64")
    fn = lambda p: loss(None, p)  # noqa: E731
    np.testing.assert_allclose(_tape_grad(fn, tag_probs), _numeric_grad(fn, tag_probs), rtol=1e-6, atol=1e-9)


def test_user_error_gradient():
    _, tag_probs, user_tags, _ = _tiny_case()  # P in (0.05, 0.95), G in {0, 1}: no kinks
    loss = UserErrorSparsityLoss(dtype="float64")
    fn = lambda p: loss(user_tags, p)  # noqa: E731
    np.testing.assert_allclose(_tape_grad(fn, tag_probs), _numeric_grad(fn, tag_probs), rtol=1e-6, atol=1e-9)


# --- serialization --------------------------------------------------------------

def _all_losses():
    xi = _tiny_case()[3]
    return [
        VisualConsistencyLoss(group_size=3, stop_gradient_through_similarity=False, name="vis", dtype="float64"),
        SemanticDependencyLoss(xi, reduction="sum"),
        UserErrorSparsityLoss(reduction=None, name="err"),
    ]


@pytest.mark.parametrize("index", range(3))
def test_serialization_round_trip(index):
    features, tag_probs, user_tags, _ = _tiny_case()
    loss = _all_losses()[index]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y_true = features if isinstance(loss, VisualConsistencyLoss) else user_tags
    np.testing.assert_array_equal(restored(y_true, tag_probs), loss(y_true, tag_probs))


def test_composite_serialization_round_trip():
    features, tag_probs, user_tags, xi = _tiny_case()
    loss = WeaklySupervisedLoss(xi, group_size=3, lambda1=0.5, lambda2=0.25, stop_gradient_through_similarity=False)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored.get_config() == loss.get_config()
    expected = loss(features, tag_probs, user_tags)
    for key, value in restored(features, tag_probs, user_tags).items():
        np.testing.assert_array_equal(value, expected[key])


# --- bad input ------------------------------------------------------------------

def test_group_size_below_two_refused():
    with pytest.raises(ValueError, match="group_size"):
        VisualConsistencyLoss(group_size=1)
    with pytest.raises(ValueError, match="group_size"):
        WeaklySupervisedLoss(np.eye(2), group_size=1)


def test_shape_mismatches_refused():
    features, tag_probs, user_tags, xi = _tiny_case()
    with pytest.raises(ValueError, match="differs"):
        UserErrorSparsityLoss()(user_tags[:, :3], tag_probs)
    with pytest.raises(ValueError, match="rows"):
        VisualConsistencyLoss(group_size=3)(features[:3], tag_probs)
    with pytest.raises(ValueError, match="tags"):
        SemanticDependencyLoss(xi)(None, tag_probs[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        UserErrorSparsityLoss()(user_tags[0], tag_probs[0])


def test_batch_not_multiple_of_group_size_refused():
    features, tag_probs, _, _ = _tiny_case()  # s = 6
    loss = VisualConsistencyLoss(group_size=4)
    with pytest.raises(ValueError, match="multiple of group_size"):
        loss(features, tag_probs)

    @tf.function(input_signature=[tf.TensorSpec([None, 3]), tf.TensorSpec([None, 4])])
    def dynamic(f, p):
        return loss(f, p)

    assert np.isfinite(float(dynamic(features[:4], tag_probs[:4])))
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of group_size"):
        dynamic(features, tag_probs)


@pytest.mark.parametrize("table,match", [
    (np.ones(3), "square"),
    (np.ones((2, 3)), "square"),
    (np.array([[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
    (np.array([[1.0, np.inf], [np.inf, 1.0]]), "NaN or inf"),
    (np.array([[1.0, -0.5], [-0.5, 1.0]]), "non-negative"),
    (np.array([[1.0, 0.5], [-0.5, 1.0]]), "non-negative|symmetric"),
])
def test_bad_tag_similarity_refused(table, match):
    with pytest.raises(ValueError, match=match):
        SemanticDependencyLoss(table)


def test_tiny_asymmetry_accepted():
    SemanticDependencyLoss(np.array([[1.0, 0.5], [0.5 + 1e-7, 1.0]]))


# --- distribution ---------------------------------------------------------------

@pytest.mark.parametrize("stop_gradient", [True, False])
def test_two_replicas_equal_one_device(stop_gradient, two_cpu_strategy):
    """Summed per-replica losses and gradients equal the single-device ones.

    Keras divides sum_over_batch_size losses by num_replicas_in_sync itself,
    so the step below sums across replicas without dividing again. The two
    halves have different feature scales, so a per-replica sigma (instead of
    the global batch median) would change the loss.
    """
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.fail("tests/conftest.py must split the CPU into 2 logical devices before TensorFlow starts")
    m, s, d, c = 3, 12, 4, 5
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(s, d)).astype(np.float32)
    inputs[s // 2:] *= 3.0  # replica 1's neighbours are farther apart
    user_tags = (rng.random((s, c)) < 0.3).astype(np.float32)
    xi = _random_table(rng, c)
    init_v = rng.normal(size=(d, d)).astype(np.float32)
    init_w = rng.normal(size=(d, c)).astype(np.float32)
    loss = WeaklySupervisedLoss(xi, group_size=m, lambda1=0.7, lambda2=0.2,
                                stop_gradient_through_similarity=stop_gradient)

    def replica_step(x, g, v, w):
        with tf.GradientTape() as tape:
            features = tf.tanh(x @ v)
            total = loss(features, tf.sigmoid(features @ w), g)["total"]
        return total, tape.gradient(total, [v, w])

    v, w = tf.Variable(init_v), tf.Variable(init_w)
    single_loss, single_grads = tf.function(replica_step)(inputs, user_tags, v, w)

    strategy = two_cpu_strategy
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        v, w = tf.Variable(init_v), tf.Variable(init_w)
    halves = lambda a: strategy.experimental_distribute_values_from_function(  # noqa: E731
        lambda ctx: tf.constant(np.split(a, 2)[ctx.replica_id_in_sync_group]))

    @tf.function
    def distributed_step(x, g):
        total, grads = strategy.run(replica_step, args=(x, g, v, w))
        # Each replica's loss already carries 1/num_replicas (Keras); gradients all-reduce by sum.
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None),
                [strategy.reduce(tf.distribute.ReduceOp.SUM, grad, axis=None) for grad in grads])

    dist_loss, dist_grads = distributed_step(halves(inputs), halves(user_tags))
    np.testing.assert_allclose(dist_loss, single_loss, rtol=1e-5)
    for dist_grad, single_grad in zip(dist_grads, single_grads):
        np.testing.assert_allclose(dist_grad, single_grad, rtol=1e-5, atol=1e-7)


# --- stage 1's multi-label logistic loss ----------------------------------------

def test_multi_label_logistic_loss_sums_over_tags_and_averages_over_images():
    from wsnn.losses import MultiLabelLogisticLoss

    rng = np.random.default_rng(5)
    user_tags = (rng.random((6, 7)) < 0.3).astype(np.float32)
    tag_probs = rng.uniform(0.01, 0.99, size=(6, 7)).astype(np.float32)
    reference = -np.sum(user_tags * np.log(tag_probs) + (1 - user_tags) * np.log(1 - tag_probs)) / 6
    np.testing.assert_allclose(float(MultiLabelLogisticLoss()(user_tags, tag_probs)), reference, rtol=1e-5)
    # Hand case from the docstring: two tags at 0.5, 2 log 2.
    np.testing.assert_allclose(float(MultiLabelLogisticLoss()([[1.0, 0.0]], [[0.5, 0.5]])), 2 * np.log(2), rtol=1e-6)
    # Keras' BinaryCrossentropy is the same loss divided by the C tags.
    np.testing.assert_allclose(float(keras.losses.BinaryCrossentropy()(user_tags, tag_probs)) * 7, reference,
                               rtol=1e-5)
    # Probabilities of exactly 0 and 1 are clipped as Keras clips them: finite.
    assert np.isfinite(float(MultiLabelLogisticLoss()([[1.0, 0.0]], [[0.0, 1.0]])))


def test_bce_user_error_is_the_stage1_loss():
    from wsnn.losses import MultiLabelLogisticLoss

    rng = np.random.default_rng(6)
    user_tags = (rng.random((8, 5)) < 0.3).astype(np.float32)
    tag_probs = rng.uniform(0.05, 0.95, size=(8, 5)).astype(np.float32)
    features = rng.normal(size=(8, 3)).astype(np.float32)
    terms = WeaklySupervisedLoss(_random_table(rng, 5), group_size=4, lambda1=0.0, lambda2=1.0, lambda_vis=0.0,
                                 user_error="bce")(features, tag_probs, user_tags)
    np.testing.assert_allclose(float(terms["total"]), float(MultiLabelLogisticLoss()(user_tags, tag_probs)),
                               rtol=1e-6)
