"""A task's outputs: the files in `<workdir>/<task>/` and the `TaskResult` handed back in memory.

Files (written atomically, the chief only): metrics.json (written last: its
presence means the task is finished), refined_tags.npz and refined_tags.tsv
(`wsnn.refined_tags`), evaluated_tag_probs.npz, history.json,
stage1_metrics.json, candidates.npy, phi0_features.npz
(--save_stage1_features), neighbour_snapshots.json, head_init.json (the
linear probe that started stage 1's head), config.json, flags.txt,
data_identity.json, checkpoints/, best/, phi0/ and export/<version>/.
Only this module and the trainer know these names; callers (the benchmark)
use `TaskResult`.
"""

import dataclasses
import io
import os

import numpy as np

from wsnn import diagnostics, io_utils, metrics, refined_tags, tag_sets
from wsnn.baselines import trivial
from wsnn.training import state as state_lib

METRICS = "metrics.json"
HISTORY = "history.json"
STAGE1_METRICS = "stage1_metrics.json"
CANDIDATES = "candidates.npy"
PHI0 = "phi0_features.npz"
SNAPSHOTS = "neighbour_snapshots.json"
EVALUATED = "evaluated_tag_probs.npz"
HEAD_INIT = "head_init.json"


@dataclasses.dataclass
class TaskResult:
    """What a finished task hands back.

    Attributes:
      task: "annotation" or "refinement".
      summary: metrics.json's dict (metrics, tag sets, selection, history,
        steps, timing, weights digest, data identity, export path or None).
      train_idx, valid_idx, eval_idx: the split (indices into the dataset).
      refined: N_train x C tag probabilities of the training images (the
        refined tags).
      eval_tag_probs: tag probabilities of the evaluated images, or None
        without labels.
      phi0: {"train", "eval": phi_0's features; "eval_tag_probs"} with
        --save_stage1_features, else None.
      neighbour_snapshots: a fixed query's selected neighbours per stage-2
        epoch ([{"epoch", "step", "query", "neighbours"}]).
      reused: True when the task had finished before and its result was
        read back from its directory (`load`), not trained by this call.
    """

    task: str
    summary: dict
    train_idx: np.ndarray
    valid_idx: np.ndarray
    eval_idx: np.ndarray
    refined: np.ndarray
    eval_tag_probs: np.ndarray
    phi0: dict
    neighbour_snapshots: list
    reused: bool = False

    @property
    def history(self):
        return self.summary["history"]

    @classmethod
    def load(cls, task_dir):
        """The result of a finished task, from its directory."""
        summary = state_lib.read_json(os.path.join(task_dir, METRICS))
        with np.load(os.path.join(task_dir, EVALUATED)) as arrays:
            split = {k: arrays[k] for k in ("train_idx", "valid_idx", "eval_idx")}
            eval_tag_probs = arrays["eval_tag_probs"] if "eval_tag_probs" in arrays else None
        with np.load(os.path.join(task_dir, "refined_tags.npz")) as arrays:
            refined = arrays["scores"]
        return cls(summary["task"], summary, refined=refined, eval_tag_probs=eval_tag_probs,
                   phi0=read_phi0(task_dir), neighbour_snapshots=state_lib.read_json(
                       os.path.join(task_dir, SNAPSHOTS), []), reused=True, **split)


def write_json(directory, name, value):
    io_utils.write_json(os.path.join(directory, name), value)


def write_npy(directory, name, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    io_utils.write_bytes(os.path.join(directory, name), buffer.getvalue())


def _write_npz(path, **arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    io_utils.write_bytes(path, buffer.getvalue())


def write_phi0(directory, phi0):
    _write_npz(os.path.join(directory, PHI0), **phi0)


def read_phi0(directory):
    """phi_0's arrays saved in `directory`, or None."""
    path = os.path.join(directory, PHI0)
    if not os.path.isfile(path):
        return None
    with np.load(path) as arrays:
        return {k: arrays[k] for k in arrays.files}


def label_metrics(tag_probs, subset, dataset):
    """The four metrics of tag probabilities P of `subset`'s images against its labels, and P's
    per-tag spread over the images (`tag_std`: near 0 when the model predicts each tag's prior)."""
    return dict(metrics.evaluate(dataset.label_scores(tag_probs), subset.labels, label_names=dataset.label_names),
                tag_std=diagnostics.prediction_spread(tag_probs)["tag_std"])


def _tag_sets(trainer, refined, eval_probs):
    """The tag-set rule (`wsnn.tag_sets`): per-tag thresholds that keep k times the user tags'
    frequencies, k chosen by validation F1; with its precision, recall and F1 on the evaluated
    images (their probabilities `eval_probs`, or None without labels) beside the user tags'.

    Returns:
      (the record for metrics.json, the C thresholds).
    """
    dataset = trainer.dataset
    out = {"rule": "per-tag thresholds keeping k x each tag's user-tag frequency (training images)"}
    if trainer.valid_source is not None:
        k, thresholds, trials = tag_sets.choose_frequency_factor(
            refined, trainer.user_tags, trainer.predict(trainer.valid_source), trainer.valid_set.labels,
            dataset.label_to_tag)
        out.update(factor=k, chosen_on="validation micro-F1", validation_trials=trials)
    else:
        k, thresholds = 1.0, tag_sets.frequency_thresholds(refined, trainer.user_tags, 1.0)
        out.update(factor=k, chosen_on="default (no validation split)")
    if eval_probs is not None:
        sets = tag_sets.tag_sets(eval_probs, thresholds)
        out["Ours"] = tag_sets.set_scores(sets, trainer.eval_set.labels, dataset.label_to_tag)
        out["UserTags"] = tag_sets.set_scores(trainer.eval_set.user_tags, trainer.eval_set.labels,
                                              dataset.label_to_tag)
    out["thresholds"] = [float(t) if np.isfinite(t) else None for t in thresholds]
    return out, thresholds


def write_evaluated(trainer, eval_probs):
    """Writes the split and the evaluated images' tag probabilities (None: without labels) for
    `TaskResult.load`; returns the split as a dict."""
    split = dict(train_idx=trainer.train_idx, valid_idx=trainer.valid_idx, eval_idx=trainer.eval_idx)
    _write_npz(os.path.join(trainer.dir, EVALUATED), **split,
               **({} if eval_probs is None else {"eval_tag_probs": eval_probs.astype(np.float32)}))
    return split


def write_outputs(trainer, digest):
    """Writes a finished task's outputs (metrics.json last) and returns its `TaskResult`."""
    config, dataset, directory = trainer.config, trainer.dataset, trainer.dir
    refined = trainer.predict(trainer.train_source)
    # The evaluated images are predicted once, for the metrics, the tag sets and the result.
    eval_probs = trainer.predict(trainer.eval_source) if trainer.eval_set.labels is not None else None
    sets, thresholds = _tag_sets(trainer, refined, eval_probs)
    refined_tags.write(directory, trainer.train_set.ids, [trainer.train_set.tags_of(i) for i in
                                                          range(len(trainer.train_idx))],
                       dataset.tag_names, refined, config.output.refined_top_k,
                       tag_sets=tag_sets.tag_sets(refined, thresholds))
    split = write_evaluated(trainer, eval_probs)

    result = {"Multi-CNN": trainer.stage1_metrics["Multi-CNN"]}
    result["Ours"] = None if eval_probs is None else label_metrics(eval_probs, trainer.eval_set, dataset)
    if trainer.task == "refinement" and dataset.labels is not None:
        result["UserTags"] = metrics.evaluate(trivial.user_tags_scores(trainer.eval_set), trainer.eval_set.labels,
                                              label_names=dataset.label_names)
    timing = {}
    for stage, times in trainer.step_times.items():
        if times:
            timing[f"stage{stage}_step_s"] = float(np.median([t for t, _ in times]))
            timing[f"stage{stage}_batch_s"] = float(np.median([b for _, b in times]))
    selection = trainer.selection
    summary = {
        "task": trainer.task,
        "metrics": result,
        "tag_sets": sets,
        "selection": {"validation_images": len(trainer.valid_idx), "criterion": "validation mAP",
                      "patience": config.schedule.patience,
                      "stage1_epoch": selection.best_epoch(1), "stage2_epoch": selection.best_epoch(2),
                      "stage1_start": trainer.head_init or {"head_init": "random"},
                      "stage1_tag_std": trainer.stage1_metrics.get("tag_std")},
        "history": selection.history,
        "steps": {"stage1_per_epoch": trainer.steps_per_epoch[1], "stage2_per_epoch": trainer.steps_per_epoch[2],
                  "stage1_per_check": trainer.steps_per_epoch[1],
                  "completed": trainer.state.global_step()},
        "train_images": len(trainer.train_idx),
        "validation_images": len(trainer.valid_idx),
        "eval_images": len(trainer.eval_idx),
        "timing_this_process": timing,
        "weights_sha256": digest,
        "data_identity": trainer.identity,
    }
    export_root = config.output.export_dir
    summary["export"] = None if not config.output.export else trainer.export(
        os.path.join(export_root, trainer.task) if export_root else os.path.join(directory, "export"))
    write_json(directory, METRICS, summary)
    return TaskResult(trainer.task, summary, refined=refined, eval_tag_probs=eval_probs,
                      phi0=trainer.phi0, neighbour_snapshots=list(trainer.neighbour_snapshots), **split)


def format_table(results):
    """The closing table: UserTags, Multi-CNN (phi_0) and ours for each task ({task: TaskResult})."""
    lines = [f"{'Task':<11} {'Method':<10} {'miAP':>6} {'mAP':>6} {'MicroAUC':>9} {'MacroAUC':>9} {'tag_std':>8}"]
    for task, result in results.items():
        for name in ("UserTags", "Multi-CNN", "Ours"):
            s = result.summary["metrics"].get(name)
            if s:
                spread = f"{s['tag_std']:8.3f}" if "tag_std" in s else f"{'-':>8}"
                lines.append(f"{task:<11} {name:<10} {s['miAP']:6.3f} {s['mAP']:6.3f} "
                             f"{s['MicroAUC']:9.3f} {s['MacroAUC']:9.3f} {spread}")
    return "\n".join(lines)
