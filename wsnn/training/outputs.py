"""A task's outputs: the files in `<workdir>/<task>/` and the `TaskResult` handed back in memory.

The files are written atomically, by the chief only, at the paths of the
task's `wsnn.training.layout.TaskLayout`; metrics.json is written last (its
presence means the task is finished). `write_outputs` reads the run through
its `loop.RunContext`; callers (the benchmark) use `TaskResult`, also
loadable from a finished task's directory.
"""

import dataclasses
import io
import os

import numpy as np

from wsnn import diagnostics, io_utils, metrics, refined_tags, tag_sets
from wsnn.baselines import trivial
from wsnn.training import state as state_lib
from wsnn.training.layout import TaskLayout


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
        layout = TaskLayout(task_dir)
        summary = state_lib.read_json(layout.metrics)
        with np.load(layout.evaluated) as arrays:
            split = {k: arrays[k] for k in ("train_idx", "valid_idx", "eval_idx")}
            eval_tag_probs = arrays["eval_tag_probs"] if "eval_tag_probs" in arrays else None
        with np.load(layout.refined_npz) as arrays:
            refined = arrays["scores"]
        return cls(summary["task"], summary, refined=refined, eval_tag_probs=eval_tag_probs,
                   phi0=read_phi0(layout), neighbour_snapshots=state_lib.read_json(layout.snapshots, []),
                   reused=True, **split)


def write_npy(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    io_utils.write_bytes(path, buffer.getvalue())


def _write_npz(path, **arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    io_utils.write_bytes(path, buffer.getvalue())


def write_phi0(layout, phi0):
    _write_npz(layout.phi0_features, **phi0)


def read_phi0(layout):
    """phi_0's arrays saved in the task directory of `layout`, or None."""
    if not os.path.isfile(layout.phi0_features):
        return None
    with np.load(layout.phi0_features) as arrays:
        return {k: arrays[k] for k in arrays.files}


def label_metrics(tag_probs, subset, dataset):
    """The four metrics of tag probabilities P of `subset`'s images against its labels, and P's
    per-tag spread over the images (`tag_std`: near 0 when the model predicts each tag's prior)."""
    return dict(metrics.evaluate(dataset.label_scores(tag_probs), subset.labels, label_names=dataset.label_names),
                tag_std=diagnostics.prediction_spread(tag_probs)["tag_std"])


def validation_scores(steps, data):
    """The four metrics and the prediction spread of the current weights (`steps`) on the
    validation split of `data` (a `TaskData`)."""
    probs = steps.predict(data.valid_source)
    return dict(label_metrics(probs, data.valid_set, data.dataset), **diagnostics.prediction_spread(probs))


def evaluation_scores(steps, data, max_images=None, seed=0):
    """The four metrics of the current weights on the protocol's evaluated images (at most
    `max_images` of them, a sample seeded by `seed`; None: all); None without labels or with
    `max_images` 0."""
    if data.dataset.labels is None or max_images == 0:
        return None
    source, subset = data.eval_sample(max_images, seed)
    return label_metrics(steps.predict(source), subset, data.dataset)


def _tag_sets(run, refined, eval_probs):
    """The tag-set rule (`wsnn.tag_sets`): per-tag thresholds that keep k times the user tags'
    frequencies, k chosen by validation F1; with its precision, recall and F1 on the evaluated
    images (their probabilities `eval_probs`, or None without labels) beside the user tags'.

    Returns:
      (the record for metrics.json, the C thresholds).
    """
    data = run.data
    dataset = data.dataset
    out = {"rule": "per-tag thresholds keeping k x each tag's user-tag frequency (training images)"}
    if data.valid_source is not None:
        k, thresholds, trials = tag_sets.choose_frequency_factor(
            refined, data.user_tags, run.steps.predict(data.valid_source), data.valid_set.labels,
            dataset.label_to_tag)
        out.update(factor=k, chosen_on="validation micro-F1", validation_trials=trials)
    else:
        k, thresholds = 1.0, tag_sets.frequency_thresholds(refined, data.user_tags, 1.0)
        out.update(factor=k, chosen_on="default (no validation split)")
    if eval_probs is not None:
        sets = tag_sets.tag_sets(eval_probs, thresholds)
        out["Ours"] = tag_sets.set_scores(sets, data.eval_set.labels, dataset.label_to_tag)
        out["UserTags"] = tag_sets.set_scores(data.eval_set.user_tags, data.eval_set.labels,
                                              dataset.label_to_tag)
    out["thresholds"] = [float(t) if np.isfinite(t) else None for t in thresholds]
    return out, thresholds


def write_evaluated(layout, data, eval_probs):
    """Writes the split of `data` (a `TaskData`) and the evaluated images' tag probabilities (None:
    without labels) for `TaskResult.load`; returns the split as a dict."""
    split = dict(train_idx=data.train_idx, valid_idx=data.valid_idx, eval_idx=data.eval_idx)
    _write_npz(layout.evaluated, **split,
               **({} if eval_probs is None else {"eval_tag_probs": eval_probs.astype(np.float32)}))
    return split


def write_outputs(run, digest, export=None):
    """Writes a finished task's outputs (metrics.json last) and returns its `TaskResult`.

    Args:
      run: the task's `loop.RunContext` after both stages.
      digest: the final weights' SHA-256 (`state.weights_digest`).
      export: callable(export_dir) -> the SavedModel version's path, called
        with --export (None: nothing exported).
    """
    config, data, layout, records = run.config, run.data, run.layout, run.records
    dataset = data.dataset
    refined = run.steps.predict(data.train_source)
    # The evaluated images are predicted once, for the metrics, the tag sets and the result.
    eval_probs = run.steps.predict(data.eval_source) if data.eval_set.labels is not None else None
    sets, thresholds = _tag_sets(run, refined, eval_probs)
    refined_tags.write(layout.dir, data.train_set.ids, [data.train_set.tags_of(i) for i in
                                                        range(len(data.train_idx))],
                       dataset.tag_names, refined, config.output.refined_top_k,
                       tag_sets=tag_sets.tag_sets(refined, thresholds))
    split = write_evaluated(layout, data, eval_probs)

    result = {"Multi-CNN": records.stage1_metrics["Multi-CNN"]}
    result["Ours"] = None if eval_probs is None else label_metrics(eval_probs, data.eval_set, dataset)
    if run.task == "refinement" and dataset.labels is not None:
        result["UserTags"] = metrics.evaluate(trivial.user_tags_scores(data.eval_set), data.eval_set.labels,
                                              label_names=dataset.label_names)
    timing = {}
    for stage, times in records.step_times.items():
        if times:
            timing[f"stage{stage}_step_s"] = float(np.median([t for t, _ in times]))
            timing[f"stage{stage}_batch_s"] = float(np.median([b for _, b in times]))
    timing["input_wait"] = {f"stage{stage}": record for stage, record in sorted(records.input_wait.items())}
    selection = run.selection
    summary = {
        "task": run.task,
        "metrics": result,
        "tag_sets": sets,
        "selection": {"validation_images": len(data.valid_idx), "criterion": "validation mAP",
                      "patience": config.schedule.patience,
                      "stage1_epoch": selection.best_epoch(1), "stage2_epoch": selection.best_epoch(2),
                      "stage1_start": records.head_init or {"head_init": "random"},
                      "stage1_tag_std": records.stage1_metrics.get("tag_std")},
        "history": selection.history,
        "steps": {"stage1_per_epoch": run.steps_per_epoch[1], "stage2_per_epoch": run.steps_per_epoch[2],
                  "stage1_per_check": run.steps_per_epoch[1],
                  "completed": run.state.global_step()},
        "train_images": len(data.train_idx),
        "validation_images": len(data.valid_idx),
        "eval_images": len(data.eval_idx),
        "timing_this_process": timing,
        "weights_sha256": digest,
        "data_identity": data.identity,
    }
    summary["export"] = None if export is None else export(layout.export_dir(config.output.export_dir))
    io_utils.write_json(layout.metrics, summary)
    return TaskResult(run.task, summary, refined=refined, eval_tag_probs=eval_probs,
                      phi0=records.phi0, neighbour_snapshots=list(records.neighbour_snapshots), **split)


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
