"""The constraints between images and between tags: L_vis (eq. 2) and L_sem (eqs. 6-8).

`VisualConsistencyLoss`: visually similar neighbours should get similar tag
probabilities. `SemanticDependencyLoss`: similar tags (by the
``tag_similarity`` table xi) should get similar probabilities across the
batch. Both read a batch laid out as Algorithm 1 makes it (`wsnn.losses.shapes`).
"""

import keras
import numpy as np
import tensorflow as tf

from wsnn.losses.shapes import check_group_size, check_matrix, check_same_rows, to_groups

# Floor for the kernel width sigma: the median squared distance is 0 when most
# neighbours duplicate their anchor, and exp(-d / 0) would be NaN for d = 0.
_SIGMA_FLOOR = 1e-12


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
    first (see `wsnn.losses.shapes`).

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
        self.group_size = check_group_size(group_size)
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
        check_matrix(features, "features (y_true)")
        check_matrix(tag_probs, "tag_probs (y_pred)")
        check_same_rows(features, tag_probs, "features (y_true)", "tag_probs (y_pred)")
        m = self.group_size
        feature_groups = to_groups(features, m, "features (y_true)")
        prob_groups = to_groups(tag_probs, m, "tag_probs (y_pred)")

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
        check_matrix(tag_probs, "tag_probs (y_pred)")
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
