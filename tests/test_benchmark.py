"""End-to-end test of `python -m wsnn.benchmark` on the smoke config."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wsnn.benchmark import config as bench_config
from wsnn.benchmark import grid, methods, networks, report, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark(workdir):
    return subprocess.run(
        [sys.executable, "-m", "wsnn.benchmark", f"--flagfile={os.path.join(ROOT, 'flags', 'smoke.cfg')}",
         f"--workdir={workdir}", "--num_images=120", "--stage1_epochs=1", "--seeds=1", "--num_devices=1",
         "--knn_k=10", "--tagvote_k=50", "--grid_search", "--grid_lambda1=0,0.1", "--grid_lambda2=0.01,1",
         "--grid_alpha=1", "--grid_user_error=bce"],
        capture_output=True, text=True, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bench")
    run = _benchmark(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(workdir / "benchmark" / "results.json") as f:
        return workdir, json.load(f), run.stdout


def test_a_rerun_over_finished_tasks_reports_the_same_numbers(results):
    # Every task is finished: their results are read back (TaskResult.load), nothing is trained again.
    workdir, out, _ = results
    run = _benchmark(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "stage 1 epoch" not in run.stdout and "already done" in run.stdout
    again = json.loads((workdir / "benchmark" / "results.json").read_text())
    strip = [[{p: {m: {k: v for k, v in r.items() if k not in ("seconds", "peak_mib")} for m, r in seed[p].items()}
               for p in ("annotation", "refinement")} for seed in x["per_seed"]] for x in (out, again)]
    assert strip[0] == strip[1] and again["grid_search"]["chosen"] == out["grid_search"]["chosen"]
    # A reused training's cost is the one measured when it ran, not the time to read it back.
    for protocol, method in (("annotation", "Ours"), ("refinement", "Multi-CNN (same budget)")):
        assert again["per_seed"][0][protocol][method]["seconds"] == out["per_seed"][0][protocol][method]["seconds"]


def test_every_method_of_both_protocols_and_mean_std_over_seeds(results):
    _, out, stdout = results
    # Without pretrained weights (--weights=none) the neighbour baselines use phi_0's features alone,
    # and there is no linear probe on pretrained features (tested below on features given directly).
    pretrained_only = {"KNN (phi_0 features)", "TagVote (phi_0 features)", "Linear probe"}
    assert set(out["table"]["annotation"]) == set(methods.ANNOTATION_METHODS) - pretrained_only
    assert set(out["table"]["refinement"]) == set(methods.REFINEMENT_METHODS) - pretrained_only
    for protocol, table in out["table"].items():
        for method, row in table.items():
            for metric in report.METRICS:
                values = [seed[protocol][method][metric] for seed in out["per_seed"]]
                assert row[metric] == pytest.approx([np.mean(values), np.std(values)])
    assert "| TagCooccur |" in stdout and "### Refinement (mean +- std over 1 seed(s))" in stdout
    # Ours (the paper's L_err, the config's values) and the variant chosen by the bce search; the
    # same-budget Multi-CNN row is there for both protocols.
    assert "Multi-CNN (same budget)" in out["per_seed"][0]["annotation"]
    assert "Multi-CNN (true labels)" not in out["per_seed"][0]["refinement"]


def test_aggregate_is_mean_and_std_over_seeds():
    def seed(m, extra):
        row = dict(zip(report.METRICS, (m, m / 2, 0.5, 0.5)), seconds=extra, ap_per_label=[m, None])
        return {"annotation": {"KNN": row}, "refinement": {"KNN": dict(row, stage2_epoch=extra)}}

    table = report.aggregate([seed(0.2, 1.0), seed(0.4, 3.0), seed(0.9, 2.0)])
    knn = table["annotation"]["KNN"]
    assert knn["miAP"] == pytest.approx([0.5, np.std([0.2, 0.4, 0.9])])   # np.std: population, ddof 0
    assert knn["mAP"] == pytest.approx([0.25, np.std([0.1, 0.2, 0.45])]) and knn["MicroAUC"] == [0.5, 0.0]
    assert knn["seconds"] == pytest.approx([2.0, np.sqrt(2 / 3)]) and "stage2_epoch" not in knn
    assert table["refinement"]["KNN"]["stage2_epoch"] == pytest.approx([2.0, np.sqrt(2 / 3)])
    assert knn["ap_per_label_mean"] == [pytest.approx(0.5), None]  # a label without AP in any seed: None


def test_grid_search_is_coarse_to_fine_on_the_validation_split(results):
    workdir, out, _ = results
    search = out["grid_search"]
    # lambda2 in {0.01, 1} at lambda1 = 0, then lambda1 = 0.1 at the better lambda2; one alpha.
    for user_error in ("bce",):
        trials = [t for t in search["trials"] if t["user_error"] == user_error]
        assert [(t["lambda1"], t["lambda2"]) for t in trials[:2]] == [(0.0, 0.01), (0.0, 1.0)]
        first = grid.choose(trials[:2])
        assert (trials[2]["lambda1"], trials[2]["lambda2"]) == (0.1, first["lambda2"]) and len(trials) == 3
        best = grid.choose(trials)
        assert search["chosen"][user_error] == {k: best[k] for k in grid.GRID_KEYS}
        # Each trial keeps its best stage-2 epoch (0 = phi_0 itself) by validation mAP.
        for t in trials:
            assert t["validation"]["mAP"] == max(t["validation_per_epoch"])
    assert search["validation_images"] == 2           # 10% of the 24 annotation training images
    assert set(search["chosen"]) == {"bce"}
    assert (workdir / "benchmark" / "hparams" / "trial000").is_dir()


def test_choose_takes_the_better_validation_trial_and_the_first_of_equals():
    a = {"name": "a", "validation": {"mAP": 0.4}}
    b = {"name": "b", "validation": {"mAP": 0.5}}
    c = {"name": "c", "validation": {"mAP": 0.5}}
    assert grid.choose([a, b])["name"] == "b" and grid.choose([b, a])["name"] == "b"
    assert grid.choose([a, b, c])["name"] == "b"


def test_search_plan_is_coarse_to_fine():
    first, then_lambda1, then_alpha = grid.search_plan([0, 0.1, 1], [1e-4, 1e-2], [0, 1, 3], [0.005, 0.05])
    assert [(t["lambda1"], t["lambda2"], t["stage2_learning_rate"], t["alpha"]) for t in first] == [
        (0, 1e-4, 0.005, 1), (0, 1e-4, 0.05, 1), (0, 1e-2, 0.005, 1), (0, 1e-2, 0.05, 1)]
    best = dict(first[2])
    assert [t["lambda1"] for t in then_lambda1(best)] == [0.1, 1]
    assert then_alpha(best) == []                                      # lambda1 = 0: alpha plays no part
    assert [t["alpha"] for t in then_alpha(dict(best, lambda1=0.1))] == [0, 3]


def test_ablation_variants_switch_off_the_other_terms():
    variants = grid.ablation_variants({"user_error": "bce", "lambda2": 0.01})
    assert variants["L_vis only"] == dict(lambda_vis=1.0, lambda1=0.0, lambda2=0.0)
    assert variants["L_sem only"] == dict(lambda_vis=0.0, lambda2=0.0)
    assert variants["L_err only"] == dict(lambda_vis=0.0, lambda1=0.0)
    assert variants["L_err (bce) only"] == dict(user_error="bce", lambda2=0.01, lambda_vis=0.0, lambda1=0.0)
    assert "L_err (bce) only" not in grid.ablation_variants(None)


def test_pictures(results):
    workdir, out, _ = results
    for name in ("ap_per_label_annotation.png", "ap_per_label_refinement.png", "dynamic_neighbours.png",
                 "tables.md"):
        assert (workdir / "benchmark" / name).is_file(), name
    assert (workdir / "benchmark" / "dynamic_neighbours.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_benchmark_flag():
    run = subprocess.run([sys.executable, "-m", "wsnn.benchmark", "--seeds=0"], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    assert run.returncode == 2 and "--seeds=0: must be >= 1" in run.stderr


def test_true_label_tags_replace_the_user_tags_by_the_labels_tags():
    import scipy.sparse

    from wsnn.data.dataset import TaggedImageSet

    dataset = TaggedImageSet(ids=["a", "b", "c"], tag_names=["dog", "sky", "cat"],
                             user_tags=scipy.sparse.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 1, 1]])),
                             image_array=np.zeros((3, 4, 4), np.uint8),
                             labels=np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]], np.uint8),
                             label_names=["cat", "dog", "tree"], label_to_tag=[2, 0, -1])
    upper = networks.true_label_tags(dataset)
    # a: labels dog (tag 0) and tree (no tag); b: cat (tag 2); c: tree only -> no tag.
    np.testing.assert_array_equal(upper.user_tags.toarray(), [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(dataset.user_tags.toarray(), [[1, 1, 0], [0, 0, 0], [0, 1, 1]])


def _toy_set(seed=0, n=80):
    """A labelled set whose user tags are noisy copies of its labels, and features that cluster by label."""
    from wsnn.data.dataset import TaggedImageSet

    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < 0.4).astype(np.uint8)
    labels[:3] = np.eye(3, dtype=np.uint8)
    tags = np.concatenate([labels & (rng.random((n, 3)) < 0.8), rng.random((n, 1)) < 0.3], axis=1)
    features = labels @ rng.normal(size=(3, 6)) + 0.3 * rng.normal(size=(n, 6))
    features *= rng.uniform(0.2, 5.0, size=(n, 1))  # row scales: cosine and Euclidean neighbours differ
    dataset = TaggedImageSet(ids=[str(i) for i in range(n)], tag_names=["cat", "dog", "sky", "noise"],
                             user_tags=tags.astype(np.uint8), image_array=np.zeros((n, 4, 4), np.uint8),
                             labels=labels, label_names=["cat", "dog", "sky"], label_to_tag=[0, 1, 2])
    return dataset, features


@pytest.mark.parametrize("convention", ["wsnn", "jingwei"])
def test_one_convention_flag_switches_metrics_and_distance_of_every_baseline_row(convention):
    from wsnn import config as config_lib
    from wsnn import metrics
    from wsnn.baselines import knn, tagprop, tagvote
    from wsnn.training import state

    dataset, features = _toy_set()
    bench = bench_config.BenchmarkConfig(seeds=1, knn_k=5, tagvote_k=10, tagprop_k=10, tagexample_positives=20,
                                      baselines_only=True, convention=convention)
    config = config_lib.TrainConfig.make(train_fraction=0.5, validation_fraction=0.2, workdir="unused")
    out = runner.run_seed(config, bench, dataset, 0, None, lambda s, c: np.eye(s.num_tags), pretrained=features)
    no_network = {"RandomGuess", "KNN", "TagVote", "CCA", "NMF", "TagProp", "TagFeature", "TagExample",
                  "Linear probe"}
    assert set(out["annotation"]) == no_network
    assert set(out["refinement"]) == {"UserTags", "TagCooccur", "TagVote", "RPCA", "Linear probe"}
    # The rows are those of the trainer's split, scored under the convention's metric options with the
    # convention's neighbour distance.
    train, _, test = state.split(80, "annotation", 0.5, 0, 0.2)
    options = {"ties": "position", "empty_labels": "zero"} if convention == "jingwei" else {}
    distance = "cosine" if convention == "jingwei" else "euclidean"
    g = dataset.user_tags[train]

    def score(tag_scores, rows=test):
        return metrics.evaluate(dataset.label_scores(tag_scores), dataset.labels[rows], **options)

    expected = {
        "KNN": score(knn.knn_scores(features[train], g, features[test], k=5, distance=distance)),
        "TagVote": score(tagvote.tagvote_scores(features[train], g, features[test], k=10, distance=distance)),
        "TagProp": score(tagprop.tagprop_scores(features[train], g, features[test], k=10, distance=distance)),
    }
    for method, want in expected.items():
        for metric in report.METRICS:
            assert out["annotation"][method][metric] == pytest.approx(want[metric], abs=1e-12), (method, metric)
    knn_labels = dataset.label_scores(knn.knn_scores(features[train], g, features[test], k=5, distance=distance))
    assert out["annotation"]["KNN"]["ap_per_label"] == pytest.approx(
        [metrics.mean_average_precision(knn_labels[:, [l]], dataset.labels[test][:, [l]], ties=options.get(
            "ties", "threshold")) for l in range(3)], abs=1e-12)
    _, _, refined = state.split(80, "refinement", 0.5, 0, 0.2)
    user_tags = score(dataset.user_tags.toarray().astype(np.float32)[refined], refined)
    assert out["refinement"]["UserTags"]["mAP"] == pytest.approx(user_tags["mAP"], abs=1e-12)
    assert report.convention_line(convention).startswith(f"Convention: {convention} (")


def test_baselines_only_refuses_training_extras():
    with pytest.raises(ValueError, match="--baselines_only"):
        bench_config.BenchmarkConfig(baselines_only=True, grid_search=True)
    with pytest.raises(ValueError, match="--convention=other: must be one of wsnn, jingwei"):
        bench_config.BenchmarkConfig(convention="other")


def test_linear_probe_row_is_the_probe_fitted_on_training_and_chosen_on_validation_images():
    from wsnn import linear_probe, metrics
    from wsnn.data.dataset import from_tag_lists
    from wsnn.training.state import split

    rng = np.random.default_rng(0)
    labels = (rng.random((60, 3)) < 0.4).astype(np.uint8)
    names = ["sky", "sea", "dog"]
    tags = [[names[j] for j in range(3) if labels[i, j] and rng.random() < 0.7] for i in range(60)]
    dataset = from_tag_lists([str(i) for i in range(60)], tags, image_array=np.zeros((60, 4, 4), np.uint8))
    dataset.labels, dataset.label_names = labels, names
    dataset.label_to_tag = np.array([dataset.tag_names.index(n) for n in names])
    features = labels @ rng.normal(size=(3, 8)) + rng.normal(scale=0.7, size=(60, 8))
    train, valid, evaluated = split(60, "annotation", 0.5, 0, 0.25)
    visual = {"train": features[train], "valid": features[valid], "eval": features[evaluated]}
    bench = bench_config.BenchmarkConfig(knn_k=5, tagvote_k=10, tagprop_k=5, tagexample_positives=5)
    rows = methods.baseline_rows(bench, dataset, "annotation", (train, valid, evaluated), visual, None,
                                 lambda train_set: np.eye(dataset.num_tags), 0)

    def valid_map(tag_probs):
        return metrics.evaluate(dataset.label_scores(tag_probs), labels[valid])["mAP"]
    probe = linear_probe.fit(features[train], dataset.subset(train).user_tags, features[valid], valid_map)
    expected = metrics.evaluate(dataset.label_scores(probe.predict(features[evaluated])), labels[evaluated])
    assert rows["Linear probe"]["mAP"] == pytest.approx(expected["mAP"])
    assert rows["Linear probe"]["mAP"] > rows["RandomGuess"]["mAP"] + 0.2  # the planted rule is found


@pytest.mark.parametrize("name, value, message", [
    ("seeds", 0, "--seeds=0: must be >= 1"), ("knn_k", 0, "--knn_k=0: must be >= 1"),
    ("tagvote_k", -3, "--tagvote_k=-3: must be >= 1"), ("rpca_max_iter", 0, "--rpca_max_iter=0: must be >= 1"),
    ("grid_stage2_epochs", 0, "--grid_stage2_epochs=0: must be >= 1"), ("rpca_lam", 0.0, "--rpca_lam=0.0: must be > 0")])
def test_benchmark_counts_are_bounded(name, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bench_config.BenchmarkConfig(**{name: value})


def test_the_benchmark_trains_under_the_strategy_of_its_config(tmp_path, monkeypatch):
    # --strategy=multi_worker reaches the benchmark's strategy: without a cluster (TF_CONFIG) it stops
    # before any data is read, instead of silently running as one process.
    from wsnn import config as config_lib
    from wsnn.data import preparation

    monkeypatch.delenv("TF_CONFIG", raising=False)
    (tmp_path / "annotations.jsonl").write_text("")
    config = config_lib.TrainConfig.make(strategy="multi_worker", workdir=str(tmp_path))
    prepare_config = preparation.PrepareConfig(source="jsonl", data_dir=str(tmp_path / "annotations.jsonl"),
                                               workdir=str(tmp_path))
    with pytest.raises(RuntimeError, match="--strategy=multi_worker: set TF_CONFIG"):
        runner.run(config, prepare_config, bench_config.BenchmarkConfig(seeds=1))
