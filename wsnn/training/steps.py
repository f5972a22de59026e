"""The inner steps: `tf.function`s run by `strategy.run`, and chunked inference helpers.

Stage 1 minimises the multi-label logistic loss on the user tags G; stage 2
minimises L_final (`wsnn.losses.WeaklySupervisedLoss`) on Algorithm 1
batches, or, for the "Multi-CNN, same budget" baseline, the logistic loss
again with the stage-2 optimiser. Inference (`embed`, `predict`) runs in
chunks so that any number of images fits.
"""

import numpy as np
import tensorflow as tf

from wsnn.training.distribute import summed


class Steps:
    """The training steps and inference functions of one model.

    Attributes:
      train: {stage: step(images, user_tags) -> {name: summed loss}} taking
        per-replica values (`distribute.distribute`); stage 2 is L_final or
        the logistic loss by `stage2_objective`.
    """

    def __init__(self, model, optimizers, logistic_loss, final_loss, strategy, input_shape, stage2_objective):
        def logistic_replica(images, user_tags, optimizer):
            with tf.GradientTape() as tape:
                tag_probs = model(images, training=True)["tag_probs"]
                loss = logistic_loss(user_tags, tag_probs)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return {"loss": loss}

        def stage2_replica(images, user_tags):
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                terms = final_loss(outputs["features"], outputs["tag_probs"], user_tags)
            grads = tape.gradient(terms["total"], model.trainable_variables)
            optimizers[1].apply_gradients(zip(grads, model.trainable_variables))
            return terms

        # Separate named functions rather than one factory or lambdas: AutoGraph caches what it
        # converts by code object and finds a lambda by its source line.
        @tf.function
        def stage1_step(images, user_tags):
            return summed(strategy, strategy.run(logistic_replica, args=(images, user_tags, optimizers[0])))

        @tf.function
        def stage2_step(images, user_tags):
            return summed(strategy, strategy.run(stage2_replica, args=(images, user_tags)))

        @tf.function
        def multi_cnn_step(images, user_tags):
            return summed(strategy, strategy.run(logistic_replica, args=(images, user_tags, optimizers[1])))

        spec = tf.TensorSpec([None, *input_shape], tf.uint8)

        @tf.function(input_signature=[spec])
        def embed(images):
            return model(images, training=False)["features"]

        @tf.function(input_signature=[spec])
        def predict(images):
            return model(images, training=False)["tag_probs"]

        @tf.function(input_signature=[spec])
        def features_and_logits(images):
            features = model(images, training=False)["features"]
            head = model.get_layer("tag_probs")
            return features, tf.matmul(features, head.kernel) + head.bias

        self.train = {1: stage1_step, 2: stage2_step if stage2_objective == "ours" else multi_cnn_step}
        self._embed, self._predict, self.features_and_logits = embed, predict, features_and_logits

    def embed(self, images):
        """phi of a uint8 batch with the current weights (chunked)."""
        return np.concatenate([self._embed(tf.constant(images[i:i + 1024])).numpy()
                               for i in range(0, len(images), 1024)])

    def predict_images(self, images):
        """Tag probabilities P of a uint8 batch."""
        return self._predict(tf.constant(images)).numpy()

    def predict(self, source, chunk=512):
        """Tag probabilities P of every image of an ImageSource (the next chunk read meanwhile)."""
        return np.concatenate([self.predict_images(images) for images in source.chunks(chunk)])

    def features(self, source, chunk=512):
        """phi of every image of an ImageSource (the next chunk read meanwhile)."""
        return np.concatenate([self.embed(images) for images in source.chunks(chunk)])
