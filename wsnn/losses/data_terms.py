"""The data terms: the predictions P against the user tags G, summed over the C tags per image.

`UserErrorSparsityLoss` (eq. 9, L_err: the user errors G - P are sparse)
and `MultiLabelLogisticLoss` (stage 1's loss, Algorithm 2 step 1; also the
"bce" variant of L_err).
"""

import keras
import tensorflow as tf

from wsnn.losses.shapes import check_matrix

# Keras' clipping of probabilities in its binary cross-entropy.
_EPSILON = 1e-7


class _UserTagLoss(keras.losses.Loss):
    """A loss of P against G with one value per image (`per_image`); the constructor, the checks
    and the config that both data terms share."""

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        """Per-example values.

        Args:
            y_true: user_tags G, s x C.
            y_pred: tag_probs P, s x C.

        Returns:
            A length-s tensor.
        """
        user_tags, tag_probs = tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
        check_matrix(tag_probs, "tag_probs (y_pred)")
        return self.per_image(user_tags, tag_probs)

    def per_image(self, user_tags, tag_probs):
        """The length-s values of G and P (tensors)."""
        raise NotImplementedError

    def get_config(self):
        """Returns the constructor arguments."""
        config = super().get_config()
        config.update({"dtype": self.dtype})
        return config


@keras.saving.register_keras_serializable(package="wsnn")
class UserErrorSparsityLoss(_UserTagLoss):
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

    def per_image(self, user_tags, tag_probs):
        """Per-example L1 distances ``sum_c |g_rc - p_rc|``."""
        if not user_tags.shape.is_compatible_with(tag_probs.shape):
            raise ValueError(f"user_tags shape {user_tags.shape} differs from tag_probs shape {tag_probs.shape}")
        return tf.reduce_sum(tf.abs(user_tags - tag_probs), axis=-1)


@keras.saving.register_keras_serializable(package="wsnn")
class MultiLabelLogisticLoss(_UserTagLoss):
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

    def per_image(self, user_tags, tag_probs):
        """Per-example logistic losses summed over the tags."""
        user_tags = tf.cast(user_tags, tag_probs.dtype)
        tag_probs = tf.clip_by_value(tag_probs, _EPSILON, 1.0 - _EPSILON)
        return -tf.reduce_sum(user_tags * tf.math.log(tag_probs) + (1.0 - user_tags) * tf.math.log(1.0 - tag_probs),
                              axis=-1)
