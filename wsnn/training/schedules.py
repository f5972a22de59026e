"""Learning-rate schedules, counted in optimisation steps of one stage.

  staircase  the paper's: the rate divided by 1 / factor every `decay_steps`
             steps (`--lr_decay_epochs` turned into steps);
  cosine     linear warm-up over `warmup_steps` steps from rate / warmup to
             the rate (stage 1 only), then a half cosine down to 0 at
             `total_steps`, the stage's step budget. A budget in steps gives
             400 and 25,000 training images alike enough updates.

Each stage has its own optimiser, whose `iterations` is the step count here.
"""

import math

import keras
import tensorflow as tf

from wsnn.config import LR_SCHEDULES


@keras.saving.register_keras_serializable(package="wsnn")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """rate x (step + 1) / warmup_steps while step < warmup_steps, then
    rate x (1 + cos(pi x t)) / 2 with t = (step - warmup_steps) / (total_steps - warmup_steps),
    clipped to [0, 1] (0 from `total_steps` on)."""

    def __init__(self, rate, warmup_steps, total_steps):
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warm-up of {warmup_steps} steps must be shorter than the stage's "
                             f"{total_steps} steps")
        self.rate, self.warmup_steps, self.total_steps = float(rate), int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = self.rate * (step + 1.0) / max(self.warmup_steps, 1)
        progress = tf.clip_by_value((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 0.0, 1.0)
        decayed = self.rate * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {"rate": self.rate, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def make(kind, rate, total_steps, warmup_steps, decay_steps, decay_factor):
    """The schedule `kind` of one stage.

    Args:
      kind: "staircase" or "cosine".
      rate: the peak (cosine) or starting (staircase) rate.
      total_steps: the stage's step budget (cosine).
      warmup_steps: cosine's warm-up (staircase: must be 0).
      decay_steps: staircase's steps between divisions.
      decay_factor: staircase's factor.
    """
    if kind == "cosine":
        return WarmupCosine(rate, warmup_steps, max(total_steps, warmup_steps + 1))
    if kind == "staircase":
        return keras.optimizers.schedules.ExponentialDecay(rate, decay_steps, decay_factor, staircase=True)
    raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(LR_SCHEDULES)}")
