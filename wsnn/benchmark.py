"""The paper's comparison: baselines and ours, both protocols, several seeds.

    python -m wsnn.benchmark --flagfile=flags/benchmark_fashion_tags.cfg

For each seed, every method sees the same data, split (training,
validation, evaluated images; see `wsnn.training.state.split`) and features:
  annotation  RandomGuess, KNN, TagVote, CCA, NMF, TagProp, TagFeature,
              TagExample, Linear probe, Multi-CNN (phi_0), Multi-CNN (same
              budget), ours [, ours with the variant]
  refinement  UserTags, TagCooccur, TagVote, RPCA, Linear probe, Multi-CNN
              (phi_0), Multi-CNN (same budget), ours [, ours with the variant]
"Linear probe" is a per-tag logistic regression on the pretrained
features, its L2 strength chosen on the validation split
(`wsnn.linear_probe`, the fit that starts phi_0's head): the floor every
network row must clear.
KNN, TagVote, the compared methods (CCA, NMF, TagProp, TagFeature,
TagExample; each in its module of `wsnn.baselines`) and RPCA's image graph
use the *pretrained* backbone's features (the `--weights` file: ImageNet
VGG16 in the paper, `wsnn.pretrain`'s small CNN on FashionTags), as the
paper uses pretrained VGG16 features; the rows
"KNN (phi_0 features)" and "TagVote (phi_0 features)" use phi_0's, which saw
the noisy tags. "Multi-CNN (same budget)" trains phi_0 on with the logistic
loss for as many steps as stage 2 takes, with the same stage-2 learning rate
and the same selection of its length on the validation split, so that ours
against it is not just more training. "Multi-CNN (true labels)" (annotation
only) is an upper bound, not a competitor: phi_0 trained, with the same
settings and selection, on the training images' true labels in place of
their user tags (`true_label_tags`).

`--convention=jingwei` switches every row to the conventions of Li et al.'s
benchmark code (jingwei), so numbers compare with those it published: AP
ties ranked by position, AP 0 for labels without positives, cosine distance
for the neighbour methods (KNN, TagVote, TagProp, TagExample). The default,
"wsnn", scores a tie group as one threshold, leaves such labels out of mAP
and uses Euclidean distance. The tables say which was used.

Optional extras:
  --grid_search  coarse to fine on the first seed's annotation validation
                 split (never the evaluated images): lambda2 x stage-2
                 learning rate (lambda1 = 0), then lambda1, then alpha; each
                 trial starts stage 2 from the same phi_0 and keeps its best
                 stage-2 epoch (zero allowed). One search per --grid_user_error
                 value: "l1" is the paper's objective (the row "Ours"),
                 "bce" a variant (the row "Ours (bce)"). Every trial goes to
                 results.json and to TensorBoard's HParams dashboard
                 (<workdir>/benchmark/hparams);
  --ablation     each constraint alone (the paper's Ablation Analysis), and
                 the variant's data term alone, first seed, both protocols.
Writes to `<workdir>/benchmark/` (`benchmark-jingwei/` under that
convention): results.json (every number, chosen values, wall time and peak
memory per method), tables.md (the paper's Tables 2-5 layout, mean +- std
over seeds), ap_per_label_<protocol>.png and dynamic_neighbours.png (the
paper's Fig. 4).
"""

import ctypes
import dataclasses
import os
import sys
import threading
import time

import numpy as np
import scipy.sparse

from wsnn import config as config_lib
from wsnn import flags_lib, io_utils, linear_probe, metrics, tf_start
from wsnn.baselines import cca, knn, nmf, rpca, tagcooccur, tagexample, tagfeature, tagprop, tagvote, trivial
from wsnn.config import field
from wsnn.data import preparation

METRICS = ("miAP", "mAP", "MicroAUC", "MacroAUC")
ANNOTATION_METHODS = ("RandomGuess", "KNN", "TagVote", "KNN (phi_0 features)", "TagVote (phi_0 features)",
                      "CCA", "NMF", "TagProp", "TagFeature", "TagExample", "Linear probe",
                      "Multi-CNN", "Multi-CNN (same budget)", "Ours", "Ours (bce)",
                      "Multi-CNN (true labels)")
REFINEMENT_METHODS = ("UserTags", "TagCooccur", "TagVote", "TagVote (phi_0 features)", "RPCA", "Linear probe",
                      "Multi-CNN",
                      "Multi-CNN (same budget)", "Ours", "Ours (bce)")
GRID_KEYS = ("lambda1", "lambda2", "alpha", "stage2_learning_rate", "user_error")


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What the benchmark runs besides the training flags."""

    seeds: int = field(5, "Repeats (seeds 0..n-1): split, initialisation and data order.", bounds="[1, inf)")
    convention: str = field("wsnn", "Metric and neighbour conventions: wsnn (AP ties as one threshold, labels "
                                    "without positives left out of mAP, Euclidean neighbours) or jingwei (Li et "
                                    "al.'s benchmark: ties ranked by position, AP 0 for labels without "
                                    "positives, cosine neighbours). Applies to every row.",
                            choices=tuple(metrics.CONVENTIONS))
    knn_k: int = field(50, "KNN: neighbours voting.", bounds="[1, inf)")
    tagvote_k: int = field(1000, "TagVote: neighbours voting (Li et al.'s benchmark: 1000).", bounds="[1, inf)")
    rpca_lam: float = field(0.3, "RPCA: weight of the sparse error (1/sqrt(max(N, C)) empties A on sparse "
                                 "tag matrices; see BUILD_NOTES.md).")
    rpca_max_iter: int = field(50, "RPCA: proximal-gradient iterations (jingwei's benchmark: 50).",
                               bounds="[1, inf)")
    tagprop_k: int = field(200, "TagProp: neighbours weighted.", bounds="[1, inf)")
    cca_dims: int = field(0, "CCA: dimensions of the common space (0: all, min(feature width, tags)).",
                          bounds="[0, inf)")
    nmf_rank: int = field(16, "NMF: rank of the tag-matrix decomposition.", bounds="[1, inf)")
    tagexample_positives: int = field(500, "TagExample: top-voted positive examples kept per tag.",
                                      bounds="[1, inf)")
    grid_search: bool = field(False, "Search lambda1, lambda2, alpha and the stage-2 learning rate on the "
                                     "first seed's validation split (coarse to fine).")
    grid_lambda1: str = field("0,1e-4,1e-3,1e-2,1e-1,1", "lambda1 values of the grid.")
    grid_lambda2: str = field("0,1e-4,1e-3,1e-2,1e-1,1", "lambda2 values of the grid.")
    grid_alpha: str = field("0,1,3", "alpha values of the grid.")
    grid_learning_rate: str = field("", "Stage-2 learning rates of the grid (default: the config's).")
    grid_user_error: str = field("l1,bce", "One search per L_err: l1 (the paper's; row Ours) and bce (a "
                                           "variant; row Ours (bce)).")
    grid_stage2_epochs: int = field(1, "Stage-2 epochs of each trial (its best epoch, zero included, "
                                       "scores it).", bounds="[1, inf)")
    ablation: bool = field(False, "Train with each constraint alone (first seed).")
    baselines_only: bool = field(False, "Train no network: only the rows that need none (RandomGuess, "
                                        "UserTags, KNN, TagVote, TagCooccur, RPCA, CCA, NMF, TagProp, "
                                        "TagFeature, TagExample, Linear probe), on the pretrained features "
                                        "(needs --weights), on the trainer's splits.")

    def __post_init__(self):
        config_lib.check_fields(self)
        if not self.rpca_lam > 0:
            raise ValueError(f"--rpca_lam={self.rpca_lam}: must be > 0")
        if self.baselines_only and (self.grid_search or self.ablation):
            raise ValueError("--baselines_only trains no network, so it cannot run with --grid_search or "
                             "--ablation")
        if not set(_strings(self.grid_user_error)) <= set(config_lib.USER_ERRORS) or not _strings(
                self.grid_user_error):
            raise ValueError(f"--grid_user_error={self.grid_user_error}: a comma-separated list of "
                             f"{', '.join(config_lib.USER_ERRORS)}")
        for name in ("grid_lambda1", "grid_lambda2", "grid_alpha") + (
                ("grid_learning_rate",) if self.grid_learning_rate else ()):
            try:
                values = _floats(getattr(self, name))
            except ValueError:
                values = []
            if not values or min(values) < 0:
                raise ValueError(f"--{name}={getattr(self, name)}: a comma-separated list of numbers >= 0")


def _floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def _strings(text):
    return [v.strip() for v in text.split(",") if v.strip()]


class PeakMemory:
    """Peak resident memory (MiB) above the level at entry, sampled every 20 ms.

    Memory freed by earlier methods is handed back to the system first (glibc's `malloc_trim`, where
    there is one): otherwise a method could reuse it without raising the resident size, and its peak
    would read 0.
    """

    def __enter__(self):
        _trim()
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


def _trim():
    """Hands memory freed by earlier methods back to the system (glibc's `malloc_trim`; elsewhere nothing,
    and a peak may then read low)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own symbols: no library search
    if trim is not None:
        trim(0)


def _train(config, dataset, task, strategy):
    """Trains one task; returns (its `TaskResult`, its time and peak memory)."""
    from wsnn import train_lib

    with PeakMemory() as usage:
        result = train_lib.train_task(config, dataset, task, strategy)
    return result, usage


def _cost(result, usage, earlier):
    """Time and peak memory of one training: measured now, or, for a task that had finished and was read
    back, those the earlier benchmark run recorded in its row `earlier` (left out when unknown)."""
    if not result.reused:
        return {"seconds": usage.seconds, "peak_mib": usage.mib}
    return {key: earlier[key] for key in ("seconds", "peak_mib") if earlier and key in earlier}


def _earlier_rows(workdir, bench):
    """{seed: {protocol: {method: row}}} of the results.json an earlier run left in this convention's
    output directory, else in the default one (a training's cost does not depend on the convention), or
    {}."""
    from wsnn.training import state

    default = dataclasses.replace(bench, convention="wsnn")
    for out_dir in (output_dir(workdir, bench), output_dir(workdir, default)):
        earlier = state.read_json(os.path.join(out_dir, "results.json"))
        if earlier is not None:
            return dict(enumerate(earlier.get("per_seed", [])))
    return {}


def _evaluate(tag_scores, dataset, labels, convention="wsnn"):
    """The four metrics and the per-label AP of N x C tag scores, under a `metrics.CONVENTIONS` name."""
    options = _metric_options(convention)
    scores = dataset.label_scores(tag_scores)
    result = metrics.evaluate(scores, labels, label_names=dataset.label_names, **options)
    result["tag_std"] = float(np.asarray(tag_scores, np.float64).std(axis=0).mean())  # diagnostics.prediction_spread
    result["ap_per_label"] = [
        float(metrics.mean_average_precision(scores[:, [l]], labels[:, [l]], ties=options["ties"]))
        if labels[:, l].any() else None for l in range(labels.shape[1])]
    return result


def _metric_options(convention):
    """The `metrics.evaluate` keywords of a convention (all but the neighbour distance)."""
    return {k: v for k, v in metrics.CONVENTIONS[convention].items() if k != "distance"}


def pretrained_features(config, dataset):
    """The pretrained backbone's features (the `--weights` file, before any training on tags) of every
    image, computed once for all seeds and protocols; None without pretrained weights."""
    if config.model.weights == "none":
        return None
    from wsnn import models
    from wsnn.data import pipeline

    source = pipeline.ImageSource(dataset, config.data.image_size or None, config.data.channels or None)
    model = models.build_model(config.model.backbone, dataset.num_tags, source.get([0]).shape[1:],
                               config.model.weights)
    return models.source_features(model, source)


def true_label_tags(dataset):
    """The dataset with every image's user tags replaced by the tags of its true labels (the upper
    bound's input; labels without a tag are dropped)."""
    has_tag = dataset.label_to_tag >= 0
    rows, cols = np.nonzero(np.asarray(dataset.labels)[:, has_tag])
    tags = dataset.label_to_tag[has_tag][cols]
    user_tags = scipy.sparse.csr_matrix((np.ones(len(rows), np.uint8), (rows, tags)),
                                        shape=(dataset.num_images, dataset.num_tags))
    return dataclasses.replace(dataset, user_tags=user_tags)


def run_seed(config, bench, dataset, seed, strategy, tag_similarity_fn, variant=None, pretrained=None,
             earlier=None):
    """All methods of both protocols for one seed; returns {protocol: {method: result}}.

    `variant`: the settings of the "Ours (bce)" row (from the grid search), or None. `pretrained`:
    `pretrained_features` of every image, or None. With `bench.baselines_only` no network is trained:
    the split is `wsnn.training.state.split`'s, as the trainer's, and the baselines use `pretrained`.
    `earlier`: this seed's rows of an earlier run (`_earlier_rows`), for the cost of reused tasks."""
    from wsnn.training import state

    workdir = os.path.join(config.runtime.workdir, f"seed{seed}")
    config = config.replace(seed=seed, workdir=workdir, save_stage1_features=True, task="both")
    results = {}
    for task in ("annotation", "refinement"):
        if bench.baselines_only:
            train_idx, valid_idx, eval_idx = state.split(dataset.num_images, task, config.data.train_fraction,
                                                         seed, config.data.validation_fraction)
            rows, phi0 = {}, None
        else:
            ours, rows = network_rows(config, dataset, task, strategy, variant, bench.convention,
                                      (earlier or {}).get(task, {}))
            train_idx, valid_idx, eval_idx, phi0 = ours.train_idx, ours.valid_idx, ours.eval_idx, ours.phi0
            if task == "refinement":
                results["neighbour_snapshots"] = ours.neighbour_snapshots
        if task == "annotation" and not bench.baselines_only:
            upper = config.replace(stage2_epochs=0, save_stage1_features=False,
                                   workdir=os.path.join(workdir, "true_labels"))
            result, use = _train(upper, true_label_tags(dataset), task, strategy)
            name = "Multi-CNN (true labels)"
            labels = dataset.labels[eval_idx]
            rows[name] = dict(_evaluate(result.eval_tag_probs, dataset, labels, bench.convention),
                              **_cost(result, use, (earlier or {}).get(task, {}).get(name)))
        visual = phi0 if pretrained is None else {"train": pretrained[train_idx], "eval": pretrained[eval_idx],
                                                  "valid": pretrained[valid_idx]}
        rows.update(baseline_rows(bench, dataset, task, train_idx, valid_idx, eval_idx, visual, phi0,
                                  lambda train_set: tag_similarity_fn(train_set, config), seed))
        results[task] = rows
    return results


def network_rows(config, dataset, task, strategy, variant, convention, earlier):
    """Ours, Multi-CNN (phi_0), Multi-CNN (same budget) [and Ours (bce)] of one protocol and seed;
    returns (ours' `TaskResult`, {method: result}). `earlier`: {method: row} of an earlier run."""
    workdir = config.runtime.workdir
    ours, usage = _train(config, dataset, task, strategy)
    labels = dataset.labels[ours.eval_idx]
    rows = {"Multi-CNN": _evaluate(ours.phi0["eval_tag_probs"], dataset, labels, convention),
            "Ours": dict(_evaluate(ours.eval_tag_probs, dataset, labels, convention),
                         **_cost(ours, usage, earlier.get("Ours")),
                         stage2_epoch=ours.summary["selection"]["stage2_epoch"])}
    extra = {"Multi-CNN (same budget)": dict(stage2_objective="multi_cnn")}
    if variant:
        extra["Ours (bce)"] = variant
    for name, change in extra.items():
        other = config.replace(**change, warm_start_from=workdir,
                               workdir=os.path.join(workdir, name.replace(" ", "_")))
        result, use = _train(other, dataset, task, strategy)
        rows[name] = dict(_evaluate(result.eval_tag_probs, dataset, labels, convention),
                          **_cost(result, use, earlier.get(name)),
                          stage2_epoch=result.summary["selection"]["stage2_epoch"])
    return ours, rows


def baseline_rows(bench, dataset, task, train_idx, valid_idx, eval_idx, visual, phi0, tag_similarity_of, seed):
    """Every method of one protocol that trains no network; returns {method: result}.

    `visual`: {"train", "eval"[, "valid"]} features of the neighbour methods and the compared methods
    (the pretrained backbone's with "valid", or phi_0's without one); `phi0`: phi_0's features for the
    "(phi_0 features)" rows, or None; `tag_similarity_of(train_set)`: xi (RPCA's tag graph, CCA's
    stand-in for word vectors). "Linear probe" needs the pretrained features and a validation split.
    """
    convention = bench.convention
    distance = metrics.CONVENTIONS[convention]["distance"]
    train_set = dataset.subset(train_idx)
    labels = dataset.labels[eval_idx]
    rows = {}

    def add(name, fn):
        with PeakMemory() as use:
            tag_scores = fn()
        rows[name] = dict(_evaluate(tag_scores, dataset, labels, convention), seconds=use.seconds,
                          peak_mib=use.mib)
        print(f"[{task}] seed {seed} {name}: mAP {rows[name]['mAP']:.3f} ({use.seconds:.1f} s)", flush=True)

    def tagvote_scores(features, refine):
        return tagvote.tagvote_scores(features["train"], train_set.user_tags,
                                      features["eval" if not refine else "train"], k=bench.tagvote_k,
                                      train_users=train_set.users, exclude_self=refine, distance=distance)

    with_phi0 = phi0 is not None and visual is not phi0

    def probe_scores(query):
        """The linear probe on the pretrained features, its C chosen on the validation split's mAP."""
        valid_labels = dataset.labels[valid_idx]

        def valid_score(tag_probs):
            return metrics.evaluate(dataset.label_scores(tag_probs), valid_labels, **_metric_options(convention))["mAP"]
        probe = linear_probe.fit(visual["train"], train_set.user_tags, visual["valid"], valid_score)
        return probe.predict(query)
    with_probe = "valid" in visual and len(valid_idx) > 0
    if task == "annotation":
        with PeakMemory() as use:
            random_guess = trivial.random_guess(labels, seed=seed, **_metric_options(convention))[0]
        rows["RandomGuess"] = dict(random_guess, seconds=use.seconds, peak_mib=use.mib)
        k = min(bench.knn_k, train_set.num_images)
        add("KNN", lambda: knn.knn_scores(visual["train"], train_set.user_tags, visual["eval"], k=k,
                                          distance=distance))
        add("TagVote", lambda: tagvote_scores(visual, False))
        if with_phi0:
            add("KNN (phi_0 features)", lambda: knn.knn_scores(phi0["train"], train_set.user_tags, phi0["eval"],
                                                              k=k, distance=distance))
            add("TagVote (phi_0 features)", lambda: tagvote_scores(phi0, False))
        # The compared methods of the paper's Tables 2 and 3, on the same features as KNN.
        train_x, train_g, eval_x = visual["train"], train_set.user_tags, visual["eval"]
        add("CCA", lambda: cca.cca_scores(train_x, train_g, eval_x, dims=bench.cca_dims or None, k=k,
                                          tag_embeddings=tag_similarity_of(train_set)))
        add("NMF", lambda: nmf.nmf_scores(train_x, train_g, eval_x, rank=bench.nmf_rank, seed=seed))
        add("TagProp", lambda: tagprop.tagprop_scores(train_x, train_g, eval_x, k=bench.tagprop_k,
                                                      distance=distance, seed=seed))
        add("TagFeature", lambda: tagfeature.tagfeature_scores(train_x, train_g, eval_x, seed=seed))
        add("TagExample", lambda: tagexample.tagexample_scores(
            train_x, train_g, eval_x, num_positives=bench.tagexample_positives, vote_k=bench.tagvote_k,
            train_users=train_set.users, distance=distance, seed=seed))
        if with_probe:
            add("Linear probe", lambda: probe_scores(eval_x))
    else:
        # Refinement scores every image; the evaluated ones are those outside the validation split.
        def add_refined(name, fn):
            add(name, lambda: fn()[eval_idx])
        add_refined("UserTags", lambda: train_set.user_tags.toarray().astype(np.float32))
        add_refined("TagCooccur", lambda: tagcooccur.tagcooccur_scores(train_set.user_tags))
        add_refined("TagVote", lambda: tagvote_scores(visual, True))
        if with_phi0:
            add_refined("TagVote (phi_0 features)", lambda: tagvote_scores(phi0, True))
        add_refined("RPCA", lambda: rpca.rpca_refine(train_set.user_tags, features=visual["train"],
                                                     tag_similarity=tag_similarity_of(train_set),
                                                     lam=bench.rpca_lam, max_iter=bench.rpca_max_iter)[0])
        if with_probe:
            add_refined("Linear probe", lambda: probe_scores(visual["train"]))
    return rows


def choose(trials):
    """The trial with the best validation mAP (the first of equals)."""
    return max(trials, key=lambda t: t["validation"]["mAP"])


def search_plan(lambda1s, lambda2s, alphas, rates):
    """The coarse-to-fine plan of `grid_search`: a list of trial settings (lambda2 x rate at
    lambda1 = 0), then two callables that take the best settings so far and return the next trials
    (lambda1, then alpha when the best lambda1 is not 0)."""
    alpha0 = 1.0 if 1.0 in alphas else alphas[0]
    yield [dict(lambda1=0.0, lambda2=l2, alpha=alpha0, stage2_learning_rate=r) for l2 in lambda2s for r in rates]
    yield lambda best: [dict(best, lambda1=l1) for l1 in lambda1s if l1 != best["lambda1"]]
    yield lambda best: ([dict(best, alpha=a) for a in alphas if a != best["alpha"]] if best["lambda1"] > 0
                        else [])


def grid_search(config, bench, dataset, strategy):
    """Chooses lambda1, lambda2, alpha and the stage-2 learning rate, per L_err, on the validation split
    of the first seed's annotation training images (the evaluated images' labels are never read: each
    trial is scored by `Trainer.history`'s validation mAP at its best stage-2 epoch)."""
    grid_dir = os.path.join(config.runtime.workdir, "grid")
    base = config.replace(task="annotation", stage2_epochs=bench.grid_stage2_epochs, eval_max_images=0,
                          workdir=grid_dir)
    phi0_dir = os.path.join(grid_dir, "phi0")
    _train(base.replace(stage2_epochs=0, workdir=phi0_dir), dataset, "annotation", strategy)  # one phi_0 for all
    schedule = config.schedule
    rates = _floats(bench.grid_learning_rate) or [schedule.stage2_learning_rate or schedule.learning_rate]
    out = {"trials": [], "chosen": {}, "searched_on": "validation split of seed 0's annotation training images",
           "validation_images": None}
    for user_error in _strings(bench.grid_user_error):
        trials, best = [], None
        for plan in search_plan(_floats(bench.grid_lambda1), _floats(bench.grid_lambda2),
                                    _floats(bench.grid_alpha), rates):
            for values in (plan if isinstance(plan, list) else plan({k: best[k] for k in GRID_KEYS[:4]})):
                values = dict(values, user_error=user_error)
                name = "_".join(f"{k}={v:g}" if isinstance(v, float) else f"{v}" for k, v in values.items())
                trial_config = base.replace(**values, warm_start_from=phi0_dir, workdir=os.path.join(grid_dir, name))
                result, usage = _train(trial_config, dataset, "annotation", strategy)
                stage2 = [r for r in result.history if r["stage"] == 2]
                kept = max(stage2, key=lambda r: r["validation"]["mAP"])
                trial = dict(values, validation=kept["validation"], stage2_epoch=kept["epoch"],
                             validation_per_epoch=[r["validation"]["mAP"] for r in stage2],
                             diagnostics=[r["diagnostics"] for r in stage2], seconds=usage.seconds)
                trials.append(trial)
                out["validation_images"] = result.summary["validation_images"]
                print(f"grid {name}: validation mAP {kept['validation']['mAP']:.4f} "
                      f"(stage-2 epoch {kept['epoch']})", flush=True)
            best = choose(trials)
        out["chosen"][user_error] = {k: best[k] for k in GRID_KEYS}
        out["trials"] += trials
    _hparams(out["trials"], os.path.join(config.runtime.workdir, "benchmark", "hparams"))
    return out


def _hparams(trials, directory):
    """Every trial in TensorBoard's HParams dashboard."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    for i, trial in enumerate(trials):
        with tf.summary.create_file_writer(os.path.join(directory, f"trial{i:03d}")).as_default():
            hp.hparams({k: trial[k] for k in GRID_KEYS}, trial_id=f"trial{i:03d}")
            tf.summary.scalar("validation/mAP", trial["validation"]["mAP"], step=0)
            tf.summary.scalar("validation/miAP", trial["validation"]["miAP"], step=0)
            tf.summary.scalar("stage2_epoch", trial["stage2_epoch"], step=0)


def ablation_variants(variant=None):
    """{name: config changes}: each constraint alone, and the variant's data term alone."""
    variants = {"L_vis only": dict(lambda_vis=1.0, lambda1=0.0, lambda2=0.0),
                "L_sem only": dict(lambda_vis=0.0, lambda2=0.0),
                "L_err only": dict(lambda_vis=0.0, lambda1=0.0)}
    if variant:
        variants["L_err (bce) only"] = dict(variant, lambda_vis=0.0, lambda1=0.0)
    return variants


def ablation(config, dataset, strategy, variant=None):
    """Each constraint alone (first seed, stage 2 from its phi_0), and the variant's data term alone:
    the four metrics per protocol."""
    out = {}
    for name, change in ablation_variants(variant).items():
        workdir = config.runtime.workdir
        variant_config = config.replace(task="both", seed=0, **change,
                                        workdir=os.path.join(workdir, "ablation", name.replace(" ", "_")),
                                        warm_start_from=os.path.join(workdir, "seed0"))
        out[name] = {}
        for task in ("annotation", "refinement"):
            summary = _train(variant_config, dataset, task, strategy)[0].summary
            out[name][task] = dict(summary["metrics"]["Ours"], stage2_epoch=summary["selection"]["stage2_epoch"])
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
                for key in (*METRICS, "tag_std", "seconds", "peak_mib", "stage2_epoch")
                if all(key in r for r in runs)}
            if "ap_per_label" in runs[0]:
                table[protocol][method]["ap_per_label_mean"] = [
                    None if any(r["ap_per_label"][l] is None for r in runs)
                    else float(np.mean([r["ap_per_label"][l] for r in runs]))
                    for l in range(len(runs[0]["ap_per_label"]))]
    return table


def convention_line(convention):
    """One sentence saying which metric and neighbour conventions a table uses."""
    c = metrics.CONVENTIONS[convention]
    ties = "ranked by position" if c["ties"] == "position" else "one threshold (scikit-learn)"
    empty = "count as AP 0" if c["empty_labels"] == "zero" else "left out of mAP"
    return (f"Convention: {convention} (AP ties: {ties}; labels without positives: {empty}; "
            f"neighbour distance: {c['distance']}).")


def format_tables(table, seeds, header):
    """Markdown in the paper's layout (Tables 2-5)."""
    lines = [header, ""]
    for protocol, methods in (("annotation", ANNOTATION_METHODS), ("refinement", REFINEMENT_METHODS)):
        lines += [f"### {protocol.capitalize()} (mean +- std over {seeds} seed(s))", "",
                  "| Method | miAP | mAP | MicroAUC | MacroAUC | tag_std | time (s) | peak memory (MiB) | "
                  "stage-2 epochs kept |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method in methods:
            row = table[protocol].get(method)
            if row is None:
                continue
            cells = [f"{row[m][0]:.3f} +- {row[m][1]:.3f}" for m in METRICS]
            cells.append(f"{row['tag_std'][0]:.3f}" if "tag_std" in row else "-")
            cells.append(f"{row['seconds'][0]:.1f}" if "seconds" in row else "-")
            cells.append(f"{row['peak_mib'][0]:.0f}" if "peak_mib" in row else "-")
            cells.append(f"{row['stage2_epoch'][0]:.1f}" if "stage2_epoch" in row else "-")
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
    # tab20 keeps up to 20 methods apart (the default cycle repeats after 10).
    colours = plt.get_cmap("tab20")(np.arange(len(methods)) % 20)
    figure, axes = plt.subplots(figsize=(max(10, len(label_names) * 1.1), 5))
    x = np.arange(len(label_names))
    for i, method in enumerate(methods):
        axes.bar(x + i * width, ap[method], width, label=method, color=colours[i])
    axes.set_xticks(x + 0.4 - width / 2, label_names, rotation=30, ha="right")
    axes.set_ylabel("AP")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(fontsize=8, ncol=min(len(methods), 5), loc="upper center", bbox_to_anchor=(0.5, -0.18))
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


def output_dir(workdir, bench):
    """`<workdir>/benchmark`, or `<workdir>/benchmark-jingwei` under jingwei's convention, so that a rerun
    under the other convention (which reuses every trained task) keeps the first one's tables."""
    return os.path.join(workdir, "benchmark" if bench.convention == "wsnn" else f"benchmark-{bench.convention}")


def run(config, prepare_config, bench):
    """The whole benchmark; returns the results dict written to results.json."""
    from wsnn import similarity, train_lib
    from wsnn.training import distribute

    started = time.perf_counter()
    strategy = distribute.make_strategy(config.runtime.num_devices)
    dataset = train_lib.load_or_prepare(prepare_config)
    if dataset.labels is None:
        raise ValueError("the benchmark needs ground-truth labels; this dataset has none")
    out_dir = output_dir(config.runtime.workdir, bench)
    config = config.replace(export=False)  # no run of the benchmark is served
    results = {"config": config.flat(), "benchmark": dataclasses.asdict(bench)}
    variant = None
    if bench.grid_search:
        results["grid_search"] = grid_search(config, bench, dataset, strategy)
        chosen = results["grid_search"]["chosen"]
        if "l1" in chosen:
            config = config.replace(**chosen["l1"])
        variant = chosen.get("bce")
        print(f"grid search chose {chosen}", flush=True)

    def tag_similarity_of(train_set, cfg):
        sem = cfg.semantics
        return similarity.tag_similarity(train_set, sem.alpha, sem.similarity_measure, sem.ic_file or None,
                                        cache_dir=os.path.join(config.runtime.workdir, "prepared", "cache"))[0]

    pretrained = pretrained_features(config, dataset)
    if bench.baselines_only and pretrained is None:
        raise ValueError("--baselines_only needs the pretrained features of --weights (it is 'none')")
    earlier = _earlier_rows(config.runtime.workdir, bench)
    per_seed = [run_seed(config, bench, dataset, seed, strategy, tag_similarity_of, variant, pretrained,
                         earlier.get(seed)) for seed in range(bench.seeds)]
    results["per_seed"] = per_seed
    results["table"] = aggregate(per_seed)
    if bench.ablation:
        results["ablation"] = ablation(config, dataset, strategy, variant)
    results["wall_seconds"] = time.perf_counter() - started
    os.makedirs(out_dir, exist_ok=True)
    io_utils.write_json(os.path.join(out_dir, "results.json"), results)
    header = (f"wsnn benchmark: {dataset.num_images} images, {dataset.num_tags} tags, {dataset.num_labels} "
              f"labels; {bench.seeds} seed(s); {results['wall_seconds'] / 60:.1f} min\n\n"
              f"{convention_line(bench.convention)}")
    io_utils.write_text(os.path.join(out_dir, "tables.md"), format_tables(results["table"], bench.seeds, header))
    _pictures(config, dataset, per_seed, out_dir)
    return results


def _pictures(config, dataset, per_seed, out_dir):
    """Per-label AP bars of every method (first seed) and the dynamic-neighbour figure."""
    from wsnn.data import pipeline

    for task, order in (("annotation", ANNOTATION_METHODS), ("refinement", REFINEMENT_METHODS)):
        rows = per_seed[0][task]
        ap = {method: [np.nan if v is None else v for v in rows[method]["ap_per_label"]]
              for method in order if "ap_per_label" in rows.get(method, {})}
        plot_ap_bars(ap, dataset.label_names, os.path.join(out_dir, f"ap_per_label_{task}.png"),
                     f"{task}: AP per label (seed 0)")
    # Refinement trains on every image, so its training-image indices are the dataset's.
    snapshots = per_seed[0].get("neighbour_snapshots")
    if snapshots:
        source = pipeline.ImageSource(dataset, config.data.image_size or None, config.data.channels or None)
        plot_neighbours(snapshots, dataset, source, os.path.join(out_dir, "dynamic_neighbours.png"))


def main(argv):
    if len(argv) > 1:
        print(f"wsnn.benchmark: error: unexpected arguments {' '.join(argv[1:])}", file=sys.stderr)
        return 2
    try:
        config = flags_lib.from_flags(config_lib.TrainConfig)
        config_lib.check_files(config)
        prepare_config = flags_lib.from_flags(preparation.PrepareConfig, workdir=config.runtime.workdir,
                                              seed=config.runtime.seed)
        bench = flags_lib.from_flags(BenchmarkConfig)
    except ValueError as e:
        print(f"wsnn.benchmark: config error: {e}", file=sys.stderr)
        return 2
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf_start.start()
    try:
        with io_utils.workdir_lock(config.runtime.workdir):
            results = run(config, prepare_config, bench)
    except (ValueError, RuntimeError, FloatingPointError, OSError) as e:
        print(f"wsnn.benchmark: error: {e}", file=sys.stderr)
        return 1
    out_dir = output_dir(config.runtime.workdir, bench)
    print(open(os.path.join(out_dir, "tables.md")).read())
    print(f"Results: {out_dir} ({results['wall_seconds'] / 60:.1f} min)")
    return 0


def run_cli():
    """Console-script entry point."""
    from absl import app

    flags_lib.define_flags(config_lib.TrainConfig, "train")
    flags_lib.define_flags(preparation.PrepareConfig, "prepare", skip=("workdir", "seed"))
    flags_lib.define_flags(BenchmarkConfig, "benchmark")
    app.run(main)


if __name__ == "__main__":
    run_cli()
