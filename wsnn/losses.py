"""The three weakly-supervised constraints of the paper as Keras losses.

Zhang et al. (AAAI 2018) train the network with eq. 1,
``L_final = L_vis + lambda1 * L_sem + lambda2 * L_err``:

* `VisualConsistencyLoss` (eq. 2): visually similar neighbours should get
  similar tag probabilities.
* `SemanticDependencyLoss` (eqs. 6-8): similar tags (by the ``tag_similarity``
  table xi) should get similar probabilities across the batch.
* `UserErrorSparsityLoss` (eq. 9): the user tags G differ from the predictions
  P in few places (an L1 penalty).
* `WeaklySupervisedLoss` adds the three up (eq. 1) and returns every term.
* `MultiLabelLogisticLoss`: the multi-label logistic loss that trains phi_0
  (stage 1, Algorithm 2 step 1), summed over the C tags as the paper writes
  it, and the data term of the "bce" variant of L_err.

Each loss's ``call`` returns one value per batch row, scaled so that Keras'
default ``"sum_over_batch_size"`` reduction gives the paper's batch quantity
(divided by the batch size s where the paper has no normalisation; see each
class). Keras >= 3.8 also divides that reduction by ``num_replicas_in_sync``
under a ``tf.distribute`` strategy, so per-replica losses summed over replicas
equal the single-device loss; do not scale again in the training loop.

Batch layout (Algorithm 1): a batch of s rows is s/m consecutive groups of
m = ``group_size`` rows; row 0 of each group is the anchor image i_j and rows
1..m-1 are its selected neighbours z_e.
"""

import keras
import numpy as np
import tensorflow as tf

from wsnn.config import USER_ERRORS

__all__ = [
    "VisualConsistencyLoss",
    "SemanticDependencyLoss",
    "UserErrorSparsityLoss",
    "WeaklySupervisedLoss",
    "MultiLabelLogisticLoss",
]

# Keras' clipping of probabilities in its binary cross-entropy.
_EPSILON = 1e-7

# Floor for the kernel width sigma: the median squared distance is 0 when most
# neighbours duplicate their anchor, and exp(-d / 0) would be NaN for d = 0.
_SIGMA_FLOOR = 1e-12


def _check_group_size(group_size):
    """Validate m: a group needs an anchor plus at least one neighbour."""
    if int(group_size) != group_size or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2 (anchor plus neighbours), got {group_size!r}")
    return int(group_size)


def _check_matrix(x, what):
    """Require a statically rank-2 tensor (s x something)."""
    if x.shape.rank is not None and x.shape.rank != 2:
        raise ValueError(f"{what} must be 2-D (batch x columns), got shape {x.shape}")


def _check_same_rows(a, b, what_a, what_b):
    """Require equal static batch sizes where both are known."""
    if a.shape[0] is not None and b.shape[0] is not None and a.shape[0] != b.shape[0]:
        raise ValueError(f"{what_a} has {a.shape[0]} rows but {what_b} has {b.shape[0]}")


def _to_groups(x, group_size, what):
    """Reshape s x k to (s/m) x m x k, refusing s that is not a multiple of m.

    Static batch sizes are checked at trace time (ValueError); dynamic ones at
    run time (tf.errors.InvalidArgumentError from tf.debugging.assert_equal).
    """
    rows = x.shape[0]
    if rows is not None:
        if rows % group_size:
            raise ValueError(f"{what} has {rows} rows, not a multiple of group_size={group_size}")
    else:
        check = tf.debugging.assert_equal(
            tf.shape(x)[0] % group_size, 0,
            message=f"{what}: batch size must be a multiple of group_size={group_size}")
        with tf.control_dependencies([check]):
            x = tf.identity(x)
    return tf.reshape(x, [-1, group_size, tf.shape(x)[-1]])


def _median(values):
    """Median of all entries, numpy convention (mean of the two middle values)."""
    flat = tf.sort(tf.reshape(values, [-1]))
    n = tf.size(flat)
    return 0.5 * (tf.gather(flat, (n - 1) // 2) + tf.gather(flat, n // 2))


def _global_median(values):
    """Median over the global batch, also when it is split across replicas.

    Each replica sees only its share of the batch; gathering the values first
    makes sigma (and so the loss) equal to the single-device one. all_gather
    has a gradient, so this also holds when gradients flow through sigma.
    """
    context = tf.distribute.get_replica_context()
    flat = tf.reshape(values, [-1])
    if context is not None and context.num_replicas_in_sync > 1:
        flat = context.all_gather(flat, axis=0)
    return _median(flat)


@keras.saving.register_keras_serializable(package="wsnn")
class VisualConsistencyLoss(keras.losses.Loss):
    """Visual consistency among an image and its neighbours (eq. 2).

    ``L_vis = m / (s (m-1)) * sum_{j=1}^{s/m} sum_{e=1}^{m-1}
    gamma_{j,e} ||p_{i_j} - p_{z_e}||^2``, with
    ``gamma_{j,e} = exp(-||phi(i_j) - phi(z_e)||^2 / sigma)`` and sigma the
    median of the batch's s/m * (m-1) anchor-neighbour squared feature
    distances (the paper says "the medium value"; an even count takes the mean
    of the two middle values, as ``np.median``). Under a ``tf.distribute``
    strategy sigma is the median over the global batch, gathered from all
    replicas, so results equal the single-device ones.

    Convention: ``y_true`` is the visual features phi (s x d), ``y_pred`` the
    tag probabilities P (s x C). The batch holds s/m groups of m rows, anchor
    first (see the module docstring).

    Per-example values: for neighbour row e of group j,
    ``m / (m-1) * gamma_{j,e} * ||p_{i_j} - p_{z_e}||^2``; anchor rows are 0.
    The default ``"sum_over_batch_size"`` reduction (sum / s) is then exactly
    eq. 2.

    ``stop_gradient_through_similarity`` (default True) treats gamma as fixed
    pair weights, as graph-regularised losses do: with gradients through
    gamma the network can lower L_vis by pushing neighbours' features apart
    (gamma -> 0) instead of making their tags agree, which works against the
    feature learning. With True the features get no gradient from this loss.

    Example:

    ```python
    loss = VisualConsistencyLoss(group_size=2)
    features = [[0., 0.], [1., 0.], [0., 0.], [0., 2.]]   # phi, s=4, d=2
    tag_probs = [[1., 0.], [0., 0.], [1., 1.], [0., 0.]]  # P, C=2
    loss(features, tag_probs)  # 0.5 * (exp(-1/2.5) * 1 + exp(-4/2.5) * 2) = 0.5371
    ```

    Args:
        group_size: m, the anchor plus its neighbours; at least 2.
        stop_gradient_through_similarity: if True, gamma (and sigma) carry no
            gradient.
        reduction: Keras reduction; see above.
        name: loss name.
        dtype: computation dtype; defaults to ``keras.config.floatx()``.

    Raises:
        ValueError: group_size < 2; or, for static shapes, inputs that are not
            2-D, differ in row count, or have a row count that is not a
            multiple of group_size.
    """

    def __init__(self, group_size=8, stop_gradient_through_similarity=True,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.group_size = _check_group_size(group_size)
        self.stop_gradient_through_similarity = bool(stop_gradient_through_similarity)

    def call(self, y_true, y_pred):
        """Per-example visual consistency values.

        Args:
            y_true: features phi, s x d.
            y_pred: tag_probs P, s x C.

        Returns:
            A length-s tensor; anchor rows are 0.
        """
        # Keras converts nested lists element-wise; pack them into one tensor.
        features, tag_probs = tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
        _check_matrix(features, "features (y_true)")
        _check_matrix(tag_probs, "tag_probs (y_pred)")
        _check_same_rows(features, tag_probs, "features (y_true)", "tag_probs (y_pred)")
        m = self.group_size
        feature_groups = _to_groups(features, m, "features (y_true)")
        prob_groups = _to_groups(tag_probs, m, "tag_probs (y_pred)")

        feature_dist = tf.reduce_sum(tf.square(feature_groups[:, 1:] - feature_groups[:, :1]), axis=-1)
        if self.stop_gradient_through_similarity:
            feature_dist = tf.stop_gradient(feature_dist)
        sigma = tf.maximum(_global_median(feature_dist), tf.cast(_SIGMA_FLOOR, feature_dist.dtype))
        gamma = tf.exp(-feature_dist / sigma)

        prob_dist = tf.reduce_sum(tf.square(prob_groups[:, 1:] - prob_groups[:, :1]), axis=-1)
        values = (m / (m - 1)) * gamma * prob_dist
        # Anchors are compared with their neighbours, not with themselves.
        values = tf.pad(values, [[0, 0], [1, 0]])
        return tf.reshape(values, [-1])

    def get_config(self):
        """Returns the constructor arguments."""
        config = super().get_config()
        config.update({
            "group_size": self.group_size,
            "stop_gradient_through_similarity": self.stop_gradient_through_similarity,
            "dtype": self.dtype,
        })
        return config


def _check_tag_similarity(tag_similarity):
    """Validate the xi table; returns it as a float64 array."""
    table = np.array(tag_similarity, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise ValueError(f"tag_similarity must be a square C x C matrix, got shape {table.shape}")
    if not np.all(np.isfinite(table)):
        raise ValueError("tag_similarity contains NaN or inf")
    if np.any(table < 0):
        raise ValueError("tag_similarity must be non-negative")
    if not np.allclose(table, table.T, rtol=0.0, atol=1e-6):
        raise ValueError("tag_similarity must be symmetric (atol 1e-6)")
    return table


@keras.saving.register_keras_serializable(package="wsnn")
class SemanticDependencyLoss(keras.losses.Loss):
    """Semantic dependency between tag pairs (eqs. 6-8).

    Eq. 6: ``L_sem = 1/C^2 * sum_{i,j} xi_ij ||p'_i - p'_j||^2``, where p'_t
    is column t of P (the batch's probabilities for tag t, length s) and xi
    the C x C ``tag_similarity`` table. In matrix form (eqs. 7-8), with the
    Laplacian ``L = Q - xi`` and ``Q_ii = sum_{j != i} xi_ij``:
    ``sum_{i,j} xi_ij ||p'_i - p'_j||^2 = 2 Tr(P L P^T)`` (P is s x C, so the
    trace is of ``P L P^T``, not the printed ``P^T L P``; eq. 8 as printed
    also drops the factor 2). The diagonal of xi is ignored (treated as 0): it
    cancels in eq. 6.

    Per-example values: ``(2 / C^2) p_r L p_r^T`` for row r, so that
    ``reduction="sum"`` gives eq. 6 exactly, and the default
    ``"sum_over_batch_size"`` gives eq. 6 divided by s, i.e. per image, which
    keeps lambda1 independent of the batch size.

    ``y_true`` is ignored (pass the user tags or None); ``y_pred`` is P.

    Example:

    ```python
    tag_similarity = [[1.0, 0.5], [0.5, 1.0]]
    loss = SemanticDependencyLoss(tag_similarity, reduction="sum")
    loss(None, [[1.0, 0.0], [0.5, 0.5]])  # 1/4 * 2 * 0.5 * (1^2 + 0^2) = 0.25
    ```

    Args:
        tag_similarity: the symmetric, finite, non-negative C x C xi table.
            ``get_config`` stores it as a nested list (C^2 numbers).
        reduction: Keras reduction; see above.
        name: loss name.
        dtype: computation dtype; defaults to ``keras.config.floatx()``.

    Raises:
        ValueError: the table is not 2-D and square, not symmetric within
            1e-6, has NaN/inf or negative entries; or, for static shapes, P is
            not 2-D or has a column count other than C.
    """

    def __init__(self, tag_similarity, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.tag_similarity = _check_tag_similarity(tag_similarity)
        off_diagonal = self.tag_similarity.copy()
        np.fill_diagonal(off_diagonal, 0.0)
        self._laplacian = np.diag(off_diagonal.sum(axis=1)) - off_diagonal

    def __call__(self, y_true, y_pred, sample_weight=None):
        """Computes the loss; ``y_true`` may be None (it is not used)."""
        # Keras' __call__ converts y_true to a tensor, which fails for None.
        return super().__call__(y_pred if y_true is None else y_true, y_pred, sample_weight=sample_weight)

    @property
    def num_tags(self):
        """C, the number of tags in the table."""
        return self.tag_similarity.shape[0]

    def call(self, y_true, y_pred):
        """Per-example semantic dependency values.

        Args:
            y_true: ignored.
            y_pred: tag_probs P, s x C.

        Returns:
            A length-s tensor ``(2 / C^2) p_r L p_r^T``.
        """
        del y_true  # eq. 6 depends on the predictions only
        tag_probs = tf.convert_to_tensor(y_pred)
        _check_matrix(tag_probs, "tag_probs (y_pred)")
        c = self.num_tags
        if tag_probs.shape[-1] is not None and tag_probs.shape[-1] != c:
            raise ValueError(f"tag_probs has {tag_probs.shape[-1]} tags but tag_similarity is {c} x {c}")
        laplacian = tf.constant(self._laplacian, dtype=tag_probs.dtype)
        quadratic = tf.reduce_sum(tf.matmul(tag_probs, laplacian) * tag_probs, axis=-1)
        return (2.0 / c**2) * quadratic

    def get_config(self):
        """Returns the constructor arguments; the table as a nested list."""
        config = super().get_config()
        config.update({"tag_similarity": self.tag_similarity.tolist(), "dtype": self.dtype})
        return config


@keras.saving.register_keras_serializable(package="wsnn")
class UserErrorSparsityLoss(keras.losses.Loss):
    """Sparsity of the user errors G - P (eq. 9).

    ``L_err = ||G - P||_1`` over the batch (entry-wise L1 norm), with G the
    user tags (s x C, 0/1) and P the tag probabilities.

    Per-example values: ``sum_c |g_rc - p_rc|`` for row r. The default
    ``"sum_over_batch_size"`` reduction gives ``||G - P||_1 / s``, the batch
    L1 norm per image (the paper leaves the normalisation open; per image
    keeps lambda2 independent of the batch size). ``reduction="sum"`` gives
    eq. 9 as printed.

    Example:

    ```python
    loss = UserErrorSparsityLoss()
    loss([[1., 0.], [0., 1.]], [[0.75, 0.5], [0., 1.]])  # (0.25 + 0.5) / 2 = 0.375
    ```

    Args:
        reduction: Keras reduction; see above.
        name: loss name.
        dtype: computation dtype; defaults to ``keras.config.floatx()``.

    Raises:
        ValueError: for static shapes, G and P of different shapes.
    """

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        """Per-example L1 distances.

        Args:
            y_true: user_tags G, s x C.
            y_pred: tag_probs P, s x C.

        Returns:
            A length-s tensor.
        """
        user_tags, tag_probs = tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
        _check_matrix(tag_probs, "tag_probs (y_pred)")
        if not user_tags.shape.is_compatible_with(tag_probs.shape):
            raise ValueError(f"user_tags shape {user_tags.shape} differs from tag_probs shape {tag_probs.shape}")
        return tf.reduce_sum(tf.abs(user_tags - tag_probs), axis=-1)

    def get_config(self):
        """Returns the constructor arguments."""
        config = super().get_config()
        config.update({"dtype": self.dtype})
        return config


@keras.saving.register_keras_serializable(package="wsnn")
class MultiLabelLogisticLoss(keras.losses.Loss):
    """The multi-label logistic loss of phi_0 (Algorithm 2, step 1), summed over tags.

    Per-example values: ``-sum_c [g_rc log p_rc + (1 - g_rc) log(1 - p_rc)]``
    for row r, with P clipped to ``[1e-7, 1 - 1e-7]`` as Keras clips it. The
    default ``"sum_over_batch_size"`` reduction averages over the images of
    the batch: one logistic regression per tag, each with its full gradient.
    ``keras.losses.BinaryCrossentropy`` also averages over the C tags, which
    divides every tag's gradient by C (45 on FashionTags, 444 on MIRFlickr):
    at the same learning rate its training moves C times slower.

    Example:

    ```python
    loss = MultiLabelLogisticLoss()
    loss([[1., 0.]], [[0.5, 0.5]])  # 2 log 2 = 1.386
    ```

    Args:
        reduction: Keras reduction; see above.
        name: loss name.
        dtype: computation dtype; defaults to ``keras.config.floatx()``.
    """

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        """Per-example losses summed over tags.

        Args:
            y_true: user_tags G, s x C.
            y_pred: tag_probs P, s x C.

        Returns:
            A length-s tensor.
        """
        tag_probs = tf.convert_to_tensor(y_pred)
        user_tags = tf.cast(tf.convert_to_tensor(y_true), tag_probs.dtype)
        _check_matrix(tag_probs, "tag_probs (y_pred)")
        tag_probs = tf.clip_by_value(tag_probs, _EPSILON, 1.0 - _EPSILON)
        return -tf.reduce_sum(user_tags * tf.math.log(tag_probs) + (1.0 - user_tags) * tf.math.log(1.0 - tag_probs),
                              axis=-1)

    def get_config(self):
        """Returns the constructor arguments."""
        config = super().get_config()
        config.update({"dtype": self.dtype})
        return config


@keras.saving.register_keras_serializable(package="wsnn")
class WeaklySupervisedLoss:
    """The paper's training objective (eq. 1), term by term.

    ``L_final = L_vis + lambda1 * L_sem + lambda2 * L_err``, each term with
    its loss's default ``"sum_over_batch_size"`` reduction: eq. 2 exactly, and
    eqs. 6 and 9 per image (divided by s). Under a ``tf.distribute`` strategy
    Keras divides each term by ``num_replicas_in_sync``, so summing the
    per-replica totals (and gradients) gives the single-device values.

    Example:

    ```python
    loss = WeaklySupervisedLoss(tag_similarity, group_size=8, lambda1=0.1)
    terms = loss(features, tag_probs, user_tags)
    terms["total"]  # also "visual_consistency", "semantic_dependency", "user_error"
    ```

    Args:
        tag_similarity: the C x C xi table (see `SemanticDependencyLoss`).
        group_size: m (see `VisualConsistencyLoss`).
        lambda1: weight of L_sem.
        lambda2: weight of L_err.
        stop_gradient_through_similarity: see `VisualConsistencyLoss`.
        dtype: computation dtype of all terms.
        lambda_vis: weight of L_vis; 1 in the paper, 0 for the ablation
            without it.
        user_error: the data term L_err: "l1" (eq. 9, the paper's) or "bce"
            (a documented variant: the logistic loss of stage 1,
            `MultiLabelLogisticLoss`, summed over the C tags per image; with
            lambda_vis = lambda1 = 0 and lambda2 = 1 it is exactly stage 1's
            objective).

    Raises:
        ValueError: as the three losses do, or for a negative or non-finite
            lambda.
    """

    def __init__(self, tag_similarity, group_size=8, lambda1=1.0, lambda2=1.0,
                 stop_gradient_through_similarity=True, dtype=None, lambda_vis=1.0, user_error="l1"):
        if user_error not in USER_ERRORS:
            raise ValueError(f"user_error must be one of {', '.join(USER_ERRORS)}, got {user_error!r}")
        for name, value in (("lambda1", lambda1), ("lambda2", lambda2), ("lambda_vis", lambda_vis)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        self.lambda1 = float(lambda1)
        self.lambda2 = float(lambda2)
        self.lambda_vis = float(lambda_vis)
        self.visual_consistency = VisualConsistencyLoss(
            group_size=group_size, stop_gradient_through_similarity=stop_gradient_through_similarity,
            dtype=dtype)
        self.semantic_dependency = SemanticDependencyLoss(tag_similarity, dtype=dtype)
        self.user_error_kind = user_error
        self.user_error = (UserErrorSparsityLoss(dtype=dtype) if user_error == "l1"
                           else MultiLabelLogisticLoss(dtype=dtype))

    def __call__(self, features, tag_probs, user_tags):
        """Computes the three terms and their weighted sum.

        Args:
            features: phi, s x d.
            tag_probs: P, s x C.
            user_tags: G, s x C.

        Returns:
            A dict of scalar tensors with keys "total", "visual_consistency",
            "semantic_dependency" and "user_error" (the unweighted terms;
            "user_error" is L1 or BCE as chosen).
        """
        visual = self.visual_consistency(features, tag_probs)
        semantic = self.semantic_dependency(user_tags, tag_probs)
        error = self.user_error(user_tags, tag_probs)
        return {
            "total": self.lambda_vis * visual + self.lambda1 * semantic + self.lambda2 * error,
            "visual_consistency": visual,
            "semantic_dependency": semantic,
            "user_error": error,
        }

    def get_config(self):
        """Returns the constructor arguments; the table as a nested list."""
        return {
            "tag_similarity": self.semantic_dependency.tag_similarity.tolist(),
            "group_size": self.visual_consistency.group_size,
            "lambda1": self.lambda1,
            "lambda2": self.lambda2,
            "lambda_vis": self.lambda_vis,
            "user_error": self.user_error_kind,
            "stop_gradient_through_similarity": self.visual_consistency.stop_gradient_through_similarity,
            "dtype": self.visual_consistency.dtype,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds the loss from `get_config`'s output."""
        return cls(**config)
