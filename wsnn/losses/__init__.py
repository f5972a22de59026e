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

By idea: `wsnn.losses.structure` holds the constraints between images and
between tags (L_vis, L_sem), `wsnn.losses.data_terms` the terms of P against
the user tags G (L_err, the logistic loss), `wsnn.losses.shapes` the batch
checks they share; all are importable from here.

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

from wsnn.config import USER_ERRORS
from wsnn.losses.data_terms import MultiLabelLogisticLoss, UserErrorSparsityLoss
from wsnn.losses.structure import SemanticDependencyLoss, VisualConsistencyLoss

__all__ = [
    "VisualConsistencyLoss",
    "SemanticDependencyLoss",
    "UserErrorSparsityLoss",
    "WeaklySupervisedLoss",
    "MultiLabelLogisticLoss",
]


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
