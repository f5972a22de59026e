"""The paper's comparison: baselines and ours, both protocols, several seeds.

    python -m wsnn.benchmark --flagfile=flags/benchmark_fashion_tags.cfg

For each seed, every method sees the same data, split and phi_0 features:
  annotation  RandomGuess, KNN, TagVote, Multi-CNN (phi_0), ours
  refinement  UserTags, TagCooccur, TagVote, RPCA, Multi-CNN (phi_0), ours
KNN and TagVote use phi_0's visual features (the small CNN's feature layer, or
VGG16's fc7), as the paper uses VGG16 features. Optional extras:
  --grid_search  lambda1 x lambda2 x alpha on a validation split drawn from
                 the first seed's annotation training images only (never the
                 test images); the chosen values are used for every run
                 and recorded;
  --ablation     each constraint alone (the paper's Ablation Analysis), first
                 seed, both protocols.
Writes to `<workdir>/benchmark/`: results.json (every number, chosen values,
wall time and peak memory per method), tables.md (the paper's Tables 2-5
layout, mean +- std over seeds), ap_per_label_<protocol>.png and
dynamic_neighbours.png (the paper's Fig. 4).
"""

import dataclasses
import itertools
import json
import os
import sys
import threading
import time

import numpy as np

from wsnn import config as config_lib
from wsnn import io_utils, metrics, prepare
from wsnn.baselines import knn, rpca, tagcooccur, tagvote, trivial
from wsnn.config import field

METRICS = ("miAP", "mAP", "MicroAUC", "MacroAUC")
ANNOTATION_METHODS = ("RandomGuess", "KNN", "TagVote", "Multi-CNN", "Ours")
REFINEMENT_METHODS = ("UserTags", "TagCooccur", "TagVote", "RPCA", "Multi-CNN", "Ours")


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What the benchmark runs besides the training flags."""

    seeds: int = field(5, "Repeats (seeds 0..n-1): split, initialisation and data order.")
    knn_k: int = field(50, "KNN: neighbours voting.")
    tagvote_k: int = field(1000, "TagVote: neighbours voting (Li et al.'s benchmark: 1000).")
    rpca_lam: float = field(0.3, "RPCA: weight of the sparse error (1/sqrt(max(N, C)) empties A on sparse "
                                 "tag matrices; see BUILD_NOTES.md).")
    rpca_max_iter: int = field(50, "RPCA: proximal-gradient iterations (jingwei's benchmark: 50).")
    grid_search: bool = field(False, "Grid-search lambda1, lambda2, alpha on a validation split.")
    grid_lambda1: str = field("0.1,1,10", "lambda1 values of the grid.")
    grid_lambda2: str = field("0.003,0.01,0.03", "lambda2 values of the grid.")
    grid_alpha: str = field("1,3", "alpha values of the grid.")
    validation_fraction: float = field(0.2, "Grid search: share of the training images held out.")
    ablation: bool = field(False, "Train with each constraint alone (first seed).")

    def __post_init__(self):
        if not self.rpca_lam > 0 or self.rpca_max_iter < 1:
            raise ValueError("--rpca_lam must be > 0 and --rpca_max_iter >= 1")
        if self.seeds < 1:
            raise ValueError(f"--seeds={self.seeds}: must be >= 1")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"--validation_fraction={self.validation_fraction}: must be in (0, 1)")
        for name in ("grid_lambda1", "grid_lambda2", "grid_alpha"):
            try:
                values = _floats(getattr(self, name))
            except ValueError:
                values = []
            if not values or min(values) < 0:
                raise ValueError(f"--{name}={getattr(self, name)}: a comma-separated list of numbers >= 0")


def _floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


class PeakMemory:
    """Peak resident memory (MiB) above the level at entry, sampled every 20 ms."""

    def __enter__(self):
        self._start = self._peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._time = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._time
        self.mib = max(self._peak, self._rss()) - self._start

    def _sample(self):
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, self._rss())

    @staticmethod
    def _rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def _train(config, dataset, task, strategy):
    from wsnn import train_lib

    trainer = train_lib.Trainer(config, dataset, task, strategy)
    config_lib.write_config(config, trainer.dir)
    with PeakMemory() as usage:
        summary = trainer.run()
    return trainer, summary, usage


def _evaluate(tag_scores, dataset, labels):
    """The four metrics and the per-label AP of N x C tag scores."""
    from wsnn.train_lib import label_scores

    scores = label_scores(tag_scores, dataset)
    result = metrics.evaluate(scores, labels, label_names=dataset.label_names)
    result["ap_per_label"] = [float(metrics.mean_average_precision(scores[:, [l]], labels[:, [l]]))
                              if labels[:, l].any() else None for l in range(labels.shape[1])]
    return result


def run_seed(config, bench, dataset, seed, strategy, tag_similarity_fn):
    """All methods of both protocols for one seed; returns {protocol: {method: result}}."""
    config = dataclasses.replace(config, seed=seed, workdir=os.path.join(config.workdir, f"seed{seed}"),
                                 save_stage1_features=True, task="both")
    results = {}
    for task in ("annotation", "refinement"):
        trainer, summary, usage = _train(config, dataset, task, strategy)
        features = np.load(os.path.join(trainer.dir, "phi0_features.npz"))
        train_set, eval_set = trainer.train_set, trainer.eval_set
        labels = eval_set.labels
        rows = {"Multi-CNN": _evaluate(features["eval_tag_probs"], dataset, labels),
                "Ours": dict(_evaluate(trainer.predict(trainer.eval_source), dataset, labels),
                             seconds=usage.seconds, peak_mib=usage.mib)}

        def add(name, fn):
            with PeakMemory() as use:
                tag_scores = fn()
            rows[name] = dict(_evaluate(tag_scores, dataset, labels), seconds=use.seconds, peak_mib=use.mib)

        if task == "annotation":
            with PeakMemory() as use:
                random_guess = trivial.random_guess(labels, seed=seed)[0]
            rows["RandomGuess"] = dict(random_guess, seconds=use.seconds, peak_mib=use.mib)
            add("KNN", lambda: knn.knn_scores(features["train"], train_set.user_tags, features["eval"],
                                              k=min(bench.knn_k, train_set.num_images)))
            add("TagVote", lambda: tagvote.tagvote_scores(features["train"], train_set.user_tags,
                                                          features["eval"], k=bench.tagvote_k,
                                                          train_users=train_set.users))
        else:
            add("UserTags", lambda: train_set.user_tags.toarray().astype(np.float32))
            add("TagCooccur", lambda: tagcooccur.tagcooccur_scores(train_set.user_tags))
            add("TagVote", lambda: tagvote.tagvote_scores(features["train"], train_set.user_tags,
                                                          features["train"], k=bench.tagvote_k,
                                                          train_users=train_set.users, exclude_self=True))
            add("RPCA", lambda: rpca.rpca_refine(train_set.user_tags, features=features["train"],
                                                 tag_similarity=tag_similarity_fn(train_set, config),
                                                 lam=bench.rpca_lam, max_iter=bench.rpca_max_iter)[0])
        results[task] = rows
    return results


def grid_search(config, bench, dataset, strategy):
    """Chooses lambda1, lambda2, alpha by mAP on a validation split of seed 0's training images."""
    from wsnn import train_lib

    train_idx, _ = train_lib.split(dataset.num_images, "annotation", config.train_fraction, config.seed)
    part = dataset.subset(train_idx)
    trials, first = [], None
    for lambda1, lambda2, alpha in itertools.product(
            _floats(bench.grid_lambda1), _floats(bench.grid_lambda2), _floats(bench.grid_alpha)):
        name = f"l1_{lambda1:g}_l2_{lambda2:g}_a_{alpha:g}"
        trial = dataclasses.replace(config, lambda1=lambda1, lambda2=lambda2, alpha=alpha,
                                    train_fraction=1 - bench.validation_fraction,
                                    workdir=os.path.join(config.workdir, "grid", name),
                                    warm_start_from=first or "")
        _, summary, _ = _train(trial, part, "annotation", strategy)
        # Every trial shares the first one's phi_0: stage 1 does not depend on the grid's values.
        first = first or trial.workdir
        trials.append({"lambda1": lambda1, "lambda2": lambda2, "alpha": alpha,
                       "validation": summary["metrics"]["Ours"]})
        print(f"grid {name}: validation mAP {summary['metrics']['Ours']['mAP']:.4f}", flush=True)
    best = max(trials, key=lambda t: t["validation"]["mAP"])
    return {"chosen": {k: best[k] for k in ("lambda1", "lambda2", "alpha")}, "trials": trials,
            "validation_images": int(round(bench.validation_fraction * len(train_idx))),
            "drawn_from": "the first seed's annotation training images"}


def ablation(config, dataset, strategy):
    """Each constraint alone (first seed, stage 2 from its phi_0): the four metrics per protocol."""
    variants = {"L_vis only": dict(lambda_vis=1.0, lambda1=0.0, lambda2=0.0),
                "L_sem only": dict(lambda_vis=0.0, lambda2=0.0),
                "L_err only": dict(lambda_vis=0.0, lambda1=0.0)}
    out = {}
    for name, change in variants.items():
        variant = dataclasses.replace(config, task="both", seed=0, **change,
                                      workdir=os.path.join(config.workdir, "ablation", name.split()[0]),
                                      warm_start_from=os.path.join(config.workdir, "seed0"))
        out[name] = {}
        for task in ("annotation", "refinement"):
            _, summary, _ = _train(variant, dataset, task, strategy)
            out[name][task] = summary["metrics"]["Ours"]
    return out


def aggregate(per_seed):
    """{protocol: {method: {metric: (mean, std)}}} over seeds."""
    table = {}
    for protocol in ("annotation", "refinement"):
        table[protocol] = {}
        for method in per_seed[0][protocol]:
            runs = [seed[protocol][method] for seed in per_seed]
            table[protocol][method] = {
                key: [float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs]))]
                for key in (*METRICS, "seconds", "peak_mib") if key in runs[0]}
            if "ap_per_label" in runs[0]:
                table[protocol][method]["ap_per_label_mean"] = [
                    None if any(r["ap_per_label"][l] is None for r in runs)
                    else float(np.mean([r["ap_per_label"][l] for r in runs]))
                    for l in range(len(runs[0]["ap_per_label"]))]
    return table


def format_tables(table, seeds, header):
    """Markdown in the paper's layout (Tables 2-5)."""
    lines = [header, ""]
    for protocol, methods in (("annotation", ANNOTATION_METHODS), ("refinement", REFINEMENT_METHODS)):
        lines += [f"### {protocol.capitalize()} (mean +- std over {seeds} seed(s))", "",
                  "| Method | miAP | mAP | MicroAUC | MacroAUC | time (s) | peak memory (MiB) |",
                  "|---|---|---|---|---|---|---|"]
        for method in methods:
            row = table[protocol].get(method)
            if row is None:
                continue
            cells = [f"{row[m][0]:.3f} +- {row[m][1]:.3f}" for m in METRICS]
            cells.append(f"{row['seconds'][0]:.1f}" if "seconds" in row else "-")
            cells.append(f"{row['peak_mib'][0]:.0f}" if "peak_mib" in row else "-")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_ap_bars(ap, label_names, path, title):
    """Per-label AP bars, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    methods = list(ap)
    width = 0.8 / len(methods)
    figure, axes = plt.subplots(figsize=(max(8, len(label_names) * 0.9), 4))
    x = np.arange(len(label_names))
    for i, method in enumerate(methods):
        axes.bar(x + i * width, ap[method], width, label=method)
    axes.set_xticks(x + 0.4 - width / 2, label_names, rotation=30, ha="right")
    axes.set_ylabel("AP")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(fontsize=8, ncol=len(methods))
    figure.tight_layout()
    figure.savefig(path + ".tmp.png", dpi=100)
    plt.close(figure)
    os.replace(path + ".tmp.png", path)


def plot_neighbours(snapshots, train_set, source, path):
    """A query and its selected neighbours after each stage-2 epoch; green: shares a label."""
    from PIL import Image, ImageDraw

    query = snapshots[0]["query"]
    size, pad = 64, 4
    columns = 1 + max(len(s["neighbours"]) for s in snapshots)
    canvas = Image.new("RGB", (columns * (size + pad) + 90, len(snapshots) * (size + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)

    def tile(index):
        array = source.get([index])[0]
        mode = "L" if array.shape[-1] == 1 else "RGB"
        return Image.fromarray(array[..., 0] if mode == "L" else array, mode).convert("RGB").resize((size, size))

    for row, snapshot in enumerate(snapshots):
        y = pad + row * (size + pad)
        draw.text((4, y + size // 2 - 6), f"epoch {snapshot['epoch']}", fill="black")
        canvas.paste(tile(query), (90, y))
        for col, index in enumerate(snapshot["neighbours"], start=1):
            x = 90 + col * (size + pad)
            canvas.paste(tile(index), (x, y))
            shared = train_set.labels is not None and bool(
                (train_set.labels[index] & train_set.labels[query]).any())
            draw.rectangle([x, y, x + size - 1, y + size - 1], outline="green" if shared else "red", width=3)
    io_utils.write_bytes(path, _png_bytes(canvas))


def _png_bytes(image):
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def run(config, prepare_config, bench):
    """The whole benchmark; returns the results dict written to results.json."""
    from wsnn import semantics, train_lib

    started = time.perf_counter()
    strategy = train_lib.make_strategy(config.num_devices)
    dataset = train_lib.load_or_prepare(prepare_config)
    if dataset.labels is None:
        raise ValueError("the benchmark needs ground-truth labels; this dataset has none")
    out_dir = os.path.join(config.workdir, "benchmark")
    results = {"config": dataclasses.asdict(config), "benchmark": dataclasses.asdict(bench)}
    if bench.grid_search:
        results["grid_search"] = grid_search(config, bench, dataset, strategy)
        config = dataclasses.replace(config, **results["grid_search"]["chosen"])
        print(f"grid search chose {results['grid_search']['chosen']}", flush=True)

    def similarity(train_set, cfg):
        return semantics.tag_similarity(train_set, cfg.alpha, cfg.similarity_measure, cfg.ic_file or None,
                                        cache_dir=os.path.join(config.workdir, "prepared", "cache"))[0]

    per_seed = [run_seed(config, bench, dataset, seed, strategy, similarity) for seed in range(bench.seeds)]
    results["per_seed"] = per_seed
    results["table"] = aggregate(per_seed)
    if bench.ablation:
        results["ablation"] = ablation(config, dataset, strategy)
    results["wall_seconds"] = time.perf_counter() - started
    os.makedirs(out_dir, exist_ok=True)
    io_utils.write_json(os.path.join(out_dir, "results.json"), results)
    header = (f"wsnn benchmark: {dataset.num_images} images, {dataset.num_tags} tags, {dataset.num_labels} "
              f"labels; {bench.seeds} seed(s); {results['wall_seconds'] / 60:.1f} min")
    io_utils.write_text(os.path.join(out_dir, "tables.md"), format_tables(results["table"], bench.seeds, header))
    _pictures(config, dataset, per_seed, out_dir)
    return results


def _pictures(config, dataset, per_seed, out_dir):
    """Per-label AP bars of every method (first seed) and the dynamic-neighbour figure."""
    from wsnn.data import pipeline

    for task in ("annotation", "refinement"):
        ap = {method: [np.nan if v is None else v for v in row["ap_per_label"]]
              for method, row in per_seed[0][task].items() if "ap_per_label" in row}
        plot_ap_bars(ap, dataset.label_names, os.path.join(out_dir, f"ap_per_label_{task}.png"),
                     f"{task}: AP per label (seed 0)")
    snapshots_path = os.path.join(config.workdir, "seed0", "refinement", "neighbour_snapshots.json")
    if os.path.isfile(snapshots_path):
        source = pipeline.ImageSource(dataset, config.image_size or None, config.channels or None)
        with open(snapshots_path) as f:
            plot_neighbours(json.load(f), dataset, source, os.path.join(out_dir, "dynamic_neighbours.png"))


def main(argv):
    if len(argv) > 1:
        print(f"wsnn.benchmark: error: unexpected arguments {' '.join(argv[1:])}", file=sys.stderr)
        return 2
    try:
        config = config_lib.from_flags(config_lib.TrainConfig)
        prepare_config = config_lib.from_flags(prepare.PrepareConfig, workdir=config.workdir, seed=config.seed)
        bench = config_lib.from_flags(BenchmarkConfig)
    except ValueError as e:
        print(f"wsnn.benchmark: config error: {e}", file=sys.stderr)
        return 2
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    try:
        results = run(config, prepare_config, bench)
    except (ValueError, RuntimeError) as e:
        print(f"wsnn.benchmark: error: {e}", file=sys.stderr)
        return 1
    print(open(os.path.join(config.workdir, "benchmark", "tables.md")).read())
    print(f"Results: {os.path.join(config.workdir, 'benchmark')} ({results['wall_seconds'] / 60:.1f} min)")
    return 0


def run_cli():
    """Console-script entry point."""
    from absl import app

    config_lib.define_flags(config_lib.TrainConfig)
    config_lib.define_flags(prepare.PrepareConfig, skip=("workdir", "seed"))
    config_lib.define_flags(BenchmarkConfig)
    app.run(main)


if __name__ == "__main__":
    run_cli()
