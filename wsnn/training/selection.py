"""Model selection: every epoch scored on the validation split; each stage keeps its best.

Epoch 0 of a stage is the weights it starts from (stage 2: phi_0 itself, so
keeping zero stage-2 epochs is possible). The best epoch's weights are kept
in `best/ckpt` and restored when the stage ends; a stage stops after
`patience` epochs without a better validation mAP. Without a validation
split every epoch is the best (the last one is kept) and nothing stops. The
evaluated images' labels are never read here.
"""

import numpy as np
import tensorflow as tf

from wsnn import io_utils
from wsnn.training import state as state_lib


class Selection:
    """The per-epoch history of both stages and the best epoch of each.

    Args:
      validate: callable() -> validation scores of the current weights (a
        dict with "mAP"); None without a validation split.
      model: the model whose weights are kept and restored.
      best_dir: where the best weights are written.
      history_path: history.json, read at the start (resuming).
      write_history: whether this process writes history.json after every
        epoch (the chief only).
      writer: the task's summary writer.
      patience: epochs without a better validation mAP before a stage stops
        (0: never).
      log: callable(text) for progress lines.
    """

    def __init__(self, validate, model, best_dir, history_path, write_history, writer, patience, log):
        self.validate, self.model, self.best_dir = validate, model, best_dir
        self.history_path, self.write_history = history_path, write_history
        self.writer, self.patience, self.log = writer, patience, log
        self.history = state_lib.read_json(history_path, [])

    def select(self, stage, epoch, global_step, diagnostics):
        """Scores the current weights as `stage`'s epoch `epoch` (with the epoch's mean
        `diagnostics`), keeps them when they are the stage's best so far, and returns whether the
        stage should stop."""
        record = {"stage": stage, "epoch": epoch, "step": global_step, "validation": self.validate() if self.validate else None,
                  "diagnostics": diagnostics}
        self.history = [r for r in self.history if (r["stage"], r["epoch"]) < (stage, epoch)] + [record]
        runs = [r for r in self.history if r["stage"] == stage]
        valid = record["validation"] is not None
        best = max(runs, key=lambda r: r["validation"]["mAP"]) if valid else record  # first of equals
        if valid and best is record:
            state_lib.write_weights(self.model, self.best_dir)
        if self.write_history:
            io_utils.write_json(self.history_path, self.history)
        with self.writer.as_default(step=record["step"]):
            for k, v in (record["validation"] or {}).items():
                tf.summary.scalar(f"validation/{k}", v)
            for k, v in record["diagnostics"].items():
                tf.summary.scalar(f"diagnostics_epoch/{k}", v)
        if valid:
            self.log(f"stage {stage} epoch {epoch} validation " +
                     " ".join(f"{k} {v:.3f}" for k, v in record["validation"].items())
                     + f" (best: epoch {best['epoch']})")
        return valid and self.patience > 0 and epoch - best["epoch"] >= self.patience

    def best_epoch(self, stage):
        """The kept epoch of `stage` (by validation mAP; the last one without validation)."""
        runs = [r for r in self.history if r["stage"] == stage]
        if not runs:
            return None
        if runs[-1]["validation"] is None:
            return runs[-1]["epoch"]
        return max(runs, key=lambda r: r["validation"]["mAP"])["epoch"]

    def restore_best(self, stage):
        """Loads the weights of `stage`'s best epoch (with a validation split)."""
        if self.validate is None or self.best_epoch(stage) is None:
            return
        state_lib.read_weights(self.model, self.best_dir)
        self.log(f"stage {stage}: keeping epoch {self.best_epoch(stage)} (best validation mAP)")


def mean_diagnostics(watched):
    """{name: mean} of the values watched during an epoch."""
    return {k: float(np.mean(v)) for k, v in watched.items()}
