"""What stage 2 is doing, in numbers: term gradients, prediction spread, neighbour quality.

* `term_gradient_norms`: each weighted term of eq. 1 differentiated with
  respect to the logits of the tag head (P = sigmoid(logits)), its L2 norm
  over the batch, and its share of the three norms: which constraint actually
  moves the network.
* `prediction_spread`: the per-tag standard deviation of P over images
  (averaged over tags) and the share of scores below 0.05: a collapse of the
  refined scores toward a constant shows as both; `low_spread_warning`
  words it for phi_0 after stage 1.
* `neighbour_label_share`: the share of selected neighbours that share at
  least one ground-truth label with their anchor. Labels are used only to
  monitor; nothing is selected on it.
"""

import numpy as np
import scipy.sparse
import tensorflow as tf

__all__ = ["TERMS", "term_gradient_norms", "prediction_spread", "low_spread_warning", "neighbour_label_share"]

TERMS = ("visual_consistency", "semantic_dependency", "user_error")
# phi_0's per-tag spread of predictions (std over images, mean over tags) below which stage 1 is
# taken to predict the tag priors, i.e. not to have learnt (FashionTags: ~.012 for such a phi_0,
# ~.085 for the untrained head, > .05 after a stage 1 that learnt).
MIN_TAG_STD = 0.02


def term_gradient_norms(final_loss, features, logits, user_tags):
    """L2 norms of d(weighted term)/d(logits) for the three terms of eq. 1.

    Args:
      final_loss: a `wsnn.losses.WeaklySupervisedLoss` (its lambdas weight the terms).
      features: s x d features phi (for gamma in L_vis).
      logits: s x C pre-sigmoid outputs of the tag head.
      user_tags: s x C user tags G.

    Returns:
      {"grad_norm/<term>": norm, "grad_share/<term>": norm / sum of norms} (floats;
      shares are 0 when every norm is 0).
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    features = tf.convert_to_tensor(features, tf.float32)
    user_tags = tf.convert_to_tensor(user_tags, tf.float32)
    weights = {"visual_consistency": final_loss.lambda_vis, "semantic_dependency": final_loss.lambda1,
               "user_error": final_loss.lambda2}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        terms = final_loss(features, tf.sigmoid(logits), user_tags)
        weighted = {name: weights[name] * terms[name] for name in TERMS}
    norms = {}
    for name in TERMS:
        grad = tape.gradient(weighted[name], logits)
        norms[name] = 0.0 if grad is None else float(tf.norm(grad))
    del tape
    total = sum(norms.values())
    out = {f"grad_norm/{name}": norms[name] for name in TERMS}
    out.update({f"grad_share/{name}": norms[name] / total if total else 0.0 for name in TERMS})
    return out


def prediction_spread(tag_probs, low=0.05):
    """{"tag_std": mean over tags of the std over images, "share_below_<low>": share of P < low}."""
    tag_probs = np.asarray(tag_probs, np.float64)
    return {"tag_std": float(tag_probs.std(axis=0).mean()),
            f"share_below_{low:g}": float(np.mean(tag_probs < low))}


def low_spread_warning(tag_probs, threshold=MIN_TAG_STD):
    """A one-line warning when phi_0's predictions hardly vary from image to image, else None."""
    spread = prediction_spread(tag_probs)["tag_std"]
    if spread >= threshold:
        return None
    return (f"phi_0's per-tag prediction spread is {spread:.3f} (< {threshold:g}): stage 1 predicts about each "
            "tag's prior; raise --learning_rate or --stage1_steps, or use --head_init=linear_probe")


def neighbour_label_share(indices, labels, group_size):
    """Share of the selected neighbours that share a label with their anchor.

    Args:
      indices: flat s-vector of image indices, s/m groups of m (anchor first).
      labels: N x L 0/1 ground truth of the images that `indices` index.
      group_size: m.

    Returns:
      A float in [0, 1].
    """
    labels = labels.toarray() if scipy.sparse.issparse(labels) else np.asarray(labels)
    groups = np.asarray(indices).reshape(-1, group_size)
    anchors = labels[groups[:, 0]] > 0                       # a x L
    neighbours = labels[groups[:, 1:]] > 0                   # a x (m-1) x L
    shared = np.any(neighbours & anchors[:, np.newaxis, :], axis=-1)
    return float(shared.mean())
