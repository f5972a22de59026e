"""End-to-end test of `python -m wsnn.benchmark` on the smoke config."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wsnn import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, "-m", "wsnn.benchmark", f"--flagfile={os.path.join(ROOT, 'flags', 'smoke.cfg')}",
         f"--workdir={workdir}", "--seeds=2", "--knn_k=10", "--tagvote_k=50", "--grid_search",
         "--grid_lambda1=0.1,1", "--grid_lambda2=0.01", "--grid_alpha=1", "--ablation"],
        capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(workdir / "benchmark" / "results.json") as f:
        return workdir, json.load(f), run.stdout


def test_every_method_of_both_protocols_and_mean_std_over_seeds(results):
    _, out, stdout = results
    assert set(out["table"]["annotation"]) == set(benchmark.ANNOTATION_METHODS)
    assert set(out["table"]["refinement"]) == set(benchmark.REFINEMENT_METHODS)
    for protocol, methods in out["table"].items():
        for method, row in methods.items():
            for metric in benchmark.METRICS:
                values = [seed[protocol][method][metric] for seed in out["per_seed"]]
                assert row[metric] == pytest.approx([np.mean(values), np.std(values)])
    assert "| TagCooccur |" in stdout and "### Refinement (mean +- std over 2 seed(s))" in stdout
    # UserTags scores are the user tags themselves; the same for every seed.
    user = [seed["refinement"]["UserTags"]["mAP"] for seed in out["per_seed"]]
    assert user[0] == user[1]


def test_grid_search_uses_a_validation_split_of_the_training_part(results):
    _, out, _ = results
    grid = out["grid_search"]
    assert len(grid["trials"]) == 2
    best = max(grid["trials"], key=lambda t: t["validation"]["mAP"])
    assert grid["chosen"] == {k: best[k] for k in ("lambda1", "lambda2", "alpha")}
    assert grid["validation_images"] == 10          # 20% of the 48 annotation training images
    assert out["config"]["lambda1"] in (0.1, 1.0)


def test_ablation_and_pictures(results):
    workdir, out, _ = results
    assert set(out["ablation"]) == {"L_vis only", "L_sem only", "L_err only"}
    for variant in out["ablation"].values():
        assert set(variant) == {"annotation", "refinement"}
    for name in ("ap_per_label_annotation.png", "ap_per_label_refinement.png", "dynamic_neighbours.png",
                 "tables.md"):
        assert (workdir / "benchmark" / name).is_file(), name
    assert (workdir / "benchmark" / "dynamic_neighbours.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_benchmark_flag():
    run = subprocess.run([sys.executable, "-m", "wsnn.benchmark", "--seeds=0"], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    assert run.returncode == 2 and "--seeds=0: must be >= 1" in run.stderr
