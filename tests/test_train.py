"""End-to-end tests of `python -m wsnn.train`: smoke config, resume after SIGKILL,
NaN handling, TensorBoard contents, config errors and the MIRFlickr flagfile."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from wsnn.data.mirflickr import POTENTIAL_CONCEPTS, R1_CONCEPTS
from wsnn.training.hooks import NonFiniteLossError
from wsnn.training.loop import Hook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "flags", "smoke.cfg")


def _train(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "wsnn.train", *args], capture_output=True, text=True,
                          cwd=ROOT, check=False, **kwargs)


def _metrics(workdir, task):
    with open(os.path.join(workdir, task, "metrics.json")) as f:
        return json.load(f)


def _all_finite(summary):
    return all(math.isfinite(v) for scores in summary["metrics"].values() if scores for v in scores.values())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    result = _train(f"--flagfile={SMOKE}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_smoke_writes_every_output(smoke_run):
    workdir, result = smoke_run
    assert "2 replica(s)" in result.stdout
    # A quiet start: none of TensorFlow's start-up notices (wsnn.tf_start).
    assert "cuInit" not in result.stderr and "cpu_feature_guard" not in result.stderr, result.stderr[-2000:]
    for task in ("annotation", "refinement"):
        summary = _metrics(workdir, task)
        assert _all_finite(summary)
        steps = summary["steps"]
        # A stage-2 epoch makes every training image an anchor once: N / (s/m) steps.
        assert steps["stage2_per_epoch"] == -(-summary["train_images"] // 4)
        stage1 = [r for r in summary["history"] if r["stage"] == 1 and r["epoch"] > 0]
        stage2 = [r for r in summary["history"] if r["stage"] == 2 and r["epoch"] > 0]
        assert steps["completed"] == steps["stage1_per_epoch"] * len(stage1) + steps["stage2_per_epoch"] * len(stage2)
        names = {"Multi-CNN", "Ours"} | ({"UserTags"} if task == "refinement" else set())
        assert set(summary["metrics"]) == names
        # Selection: the kept epochs are the best by validation mAP (epoch 0 of stage 2 is phi_0).
        for stage in (1, 2):
            runs = [r for r in summary["history"] if r["stage"] == stage]
            best = max(runs, key=lambda r: r["validation"]["mAP"])["epoch"]
            assert summary["selection"][f"stage{stage}_epoch"] == best
        assert set(summary["tag_sets"]["Ours"]) == {"precision", "recall", "F1", "tags_per_image"}
        assert summary["tag_sets"]["factor"] in [t["factor"] for t in summary["tag_sets"]["validation_trials"]]
        refined = np.load(os.path.join(workdir, task, "refined_tags.npz"))
        assert refined["scores"].shape == (summary["train_images"], len(refined["tag_names"]))
        assert ((refined["scores"] >= 0) & (refined["scores"] <= 1)).all()
        lines = open(os.path.join(workdir, task, "refined_tags.tsv")).read().splitlines()
        assert lines[0] == "id\tuser_tags\ttag_set\trefined_tags" and len(lines) == summary["train_images"] + 1
        assert json.load(open(os.path.join(workdir, task, "config.json")))["neighbours"]["group_size"] == 4
        assert "--group_size=4" in open(os.path.join(workdir, task, "flags.txt")).read()
        assert np.load(os.path.join(workdir, task, "candidates.npy")).shape == (summary["train_images"], 12)
    annotation = _metrics(workdir, "annotation")
    # 1/5 of 240, of which 10% (5) are the validation split
    assert annotation["train_images"] == 43 and annotation["validation_images"] == 5
    assert annotation["eval_images"] == 192
    refinement = _metrics(workdir, "refinement")
    assert refinement["train_images"] == 240 and refinement["eval_images"] == 240 - 24
    assert "refinement  Ours" in result.stdout and "annotation  Multi-CNN" in result.stdout


def test_tensorboard_has_losses_metrics_images_and_text(smoke_run):
    workdir, _ = smoke_run
    directory = os.path.join(workdir, "tensorboard", "refinement")
    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    for name in ("stage2/total", "stage2/visual_consistency", "stage2/semantic_dependency",
                 "stage2/user_error", "stage2/learning_rate", "stage2/images_per_second", "stage1/loss",
                 "metrics/mAP", "metrics/miAP", "metrics/MicroAUC", "metrics/MacroAUC", "refined_tags",
                 "neighbours/anchor_then_selected", "validation/mAP", "validation/tag_std",
                 "diagnostics/grad_share/user_error", "diagnostics/neighbour_label_share",
                 "diagnostics_epoch/grad_norm/visual_consistency"):
        assert name in tags, (name, sorted(tags))
    image = accumulator.Tensors("neighbours/anchor_then_selected")[0].tensor_proto
    # Summary images are stored as [width, height, encoded PNG...]: the strip holds m = 4 images.
    assert image.string_val[0] == b"224" and image.string_val[1] == b"56"
    text = accumulator.Tensors("refined_tags")[0].tensor_proto.string_val[0].decode()
    assert text.startswith("| image | user tags | refined tags |")


def test_resume_after_sigkill_in_stage2(tmp_path):
    workdir = tmp_path / "run"
    args = [f"--flagfile={SMOKE}", f"--workdir={workdir}", "--task=refinement", "--stage2_epochs=2",
            "--patience=0", "--num_images=120"]
    process = subprocess.Popen([sys.executable, "-m", "wsnn.train", *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    killed = False
    deadline = time.time() + 300
    for line in process.stdout:
        if "stage 2 epoch 2/2 step 6/" in line:
            process.send_signal(signal.SIGKILL)
            killed = True
            break
        assert time.time() < deadline
    process.wait()
    assert killed and process.returncode == -signal.SIGKILL
    assert not (workdir / "refinement" / "metrics.json").exists()
    assert not [p for p in os.listdir(workdir / "refinement") if p.startswith(".tmp")]

    result = _train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout and "(stage 2, epoch 2" in result.stdout
    summary = _metrics(workdir, "refinement")
    assert summary["steps"]["completed"] == 2 * 8 + 2 * 30      # ceil(120 / 16) and 120 / (16 / 4)
    assert [(r["stage"], r["epoch"]) for r in summary["history"]] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert _all_finite(summary)


def _tiny_dataset(seed=0):
    """32 random 8x8 grey images with 0-3 of three tags each."""
    from wsnn.data.dataset import from_tag_lists

    rng = np.random.default_rng(seed)
    tags = [[t for t in ("sky", "sea", "dog") if rng.random() < 0.4] for _ in range(32)]
    return from_tag_lists([str(i) for i in range(32)], tags,
                          image_array=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8))


class _PoisonSecondStage2Step(Hook):
    """Makes the weights NaN before the second stage-2 step, so that its loss is NaN."""

    def before_step(self, run, context):
        if context.stage == 2 and context.done_here == 1:
            kernel = run.state.model.get_layer("tag_probs").kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, two_cpu_strategy):
    from wsnn.training.trainer import Trainer
    from wsnn.config import TrainConfig

    dataset = _tiny_dataset()
    config = TrainConfig.make(workdir=str(tmp_path), task="refinement", stage1_epochs=1, stage2_epochs=1,
                              batch_size=8, group_size=4, num_candidates=6, alpha=0.0, num_devices=2,
                              checkpoint_every_steps=100)
    trainer = Trainer(config, dataset, "refinement", two_cpu_strategy, hooks=[_PoisonSecondStage2Step()])
    with pytest.raises(NonFiniteLossError, match=r"at stage 2, step 6; the last good checkpoint"):
        trainer.run()
    # Stage 1 ended at global step 4 (32 images / 8: ckpt-4); the save when stage 2 began, at the same
    # step, is numbered 5 (numbers only grow) and is the last one.
    assert [int(p.rsplit("-", 1)[1]) for p in trainer.state.manager.checkpoints][-2:] == [4, 5]
    assert not (tmp_path / "refinement" / "metrics.json").exists()


@pytest.mark.parametrize("refresh_steps, refreshes", [(0, 3), (5, 10), (20, 3)])
def test_fast_mode_bank_is_refreshed_at_start_and_every_n_steps(tmp_path, two_cpu_strategy, refresh_steps,
                                                                refreshes):
    from wsnn.training.trainer import Trainer
    from wsnn.config import TrainConfig

    dataset = _tiny_dataset()
    config = TrainConfig.make(workdir=str(tmp_path), task="refinement", stage1_epochs=1, stage2_epochs=3,
                              batch_size=8, group_size=4, num_candidates=6, alpha=0.0, num_devices=2,
                              neighbour_mode="fast", shortlist=4, bank_refresh_steps=refresh_steps)
    trainer = Trainer(config, dataset, "refinement", two_cpu_strategy)
    summary = trainer.run().summary
    assert len(trainer.records.bank_refresh_times) == refreshes
    assert trainer.batches.shortlist == 4 and trainer.batches.bank.shape == (32, 256)
    # 3 stage-2 epochs of 16 steps: refreshed at step 0, then every 16 (an epoch) / 5 / 20 steps.
    assert summary["steps"]["completed"] == 4 + 3 * 16


def test_candidate_dims_searches_in_principal_components(tmp_path, two_cpu_strategy):
    from wsnn import search
    from wsnn.training.trainer import Trainer
    from wsnn.config import TrainConfig

    dataset = _tiny_dataset(seed=1)
    config = TrainConfig.make(workdir=str(tmp_path), task="refinement", stage1_epochs=1, stage2_epochs=0,
                              batch_size=8, group_size=4, num_candidates=6, alpha=0.0, num_devices=2,
                              candidate_search="pca", candidate_dims=5, save_stage1_features=True)
    trainer = Trainer(config, dataset, "refinement", two_cpu_strategy)
    phi0 = trainer.run().phi0["train"]
    expected = search.nearest(search.reduce_dimensions(phi0, 5, seed=0), 6, exclude_self=True)
    np.testing.assert_array_equal(trainer.records.candidates, expected)
    np.testing.assert_array_equal(np.load(tmp_path / "refinement" / "candidates.npy"), expected)


@pytest.mark.parametrize("flag, message", [
    ("--backbone=resnet", "--backbone=resnet: must be one of small_cnn, vgg16"),
    ("--num_candidates=4", "--group_size=4: must be smaller than --num_candidates=4 (m < M)"),
    ("--batch_size=18", "--batch_size=18: must be a multiple of --group_size=4"),
    ("--weights=/no/such/file.h5", "--weights=/no/such/file.h5: file not found"),
    ("--source=mirflickr", "--data_dir is required for --source=mirflickr"),
    ("--neighbour_mode=approx", "--neighbour_mode=approx: must be one of exact, fast"),
    ("--shortlist=6", "--shortlist=6: needs --neighbour_mode=fast"),
    ("--strategy=multi_worker", "--num_devices=2: must be 0 with --strategy=multi_worker"),
    ("--strategy=parameter_server", "--strategy=parameter_server: must be one of mirrored, multi_worker"),
    ("--learning_rate=0", "--learning_rate=0.0: must be in (0, 10]"),
    ("--learning_rate=1e30", "--learning_rate=1e+30: must be in (0, 10]"),
])
def test_config_errors_fail_before_any_work(tmp_path, flag, message):
    workdir = tmp_path / "run"
    extra = ["--backbone=vgg16"] if "weights" in flag else []
    result = _train(f"--flagfile={SMOKE}", f"--workdir={workdir}", *extra, flag)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("wsnn.train: config error: ") and message in lines[-1]
    assert not workdir.exists()


def _mirflickr_tree(root, count=40):
    """A tiny MIRFlickr-25K in the official layout: 16x16 JPEGs, processed tags, r1 labels."""
    rng = np.random.default_rng(0)
    mir = root / "mirflickr"
    (mir / "meta" / "tags").mkdir(parents=True)
    (mir / "meta" / "tags_raw").mkdir(parents=True)
    members = {"sky": [], "dog": [], "night": []}
    for i in range(1, count + 1):
        kind = ("sky", "dog", "night")[i % 3]
        colour = {"sky": (60, 120, 250), "dog": (150, 100, 40), "night": (10, 10, 30)}[kind]
        pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(mir / f"im{i}.jpg")
        tags = [kind] if rng.random() < 0.7 else []
        tags += ["nikon", "cloud"] if rng.random() < 0.3 else []
        (mir / "meta" / "tags" / f"tags{i}.txt").write_text("".join(t + "\n" for t in tags))
        (mir / "meta" / "tags_raw" / f"tags{i}.txt").write_text("".join(t + "\n" for t in tags))
        members[kind].append(i)
    annotations = root / "mirflickr25k_annotations_v080"
    annotations.mkdir()
    for concept in POTENTIAL_CONCEPTS:
        (annotations / f"{concept}.txt").write_text("")
    for concept in R1_CONCEPTS:
        ids = members.get(concept, [])
        (annotations / f"{concept}_r1.txt").write_text("".join(f"{i}\n" for i in ids))


def test_mirflickr_flagfile_runs_on_official_layout(tmp_path):
    _mirflickr_tree(tmp_path / "data")
    workdir = tmp_path / "run"
    result = _train(f"--flagfile={os.path.join(ROOT, 'flags', 'mirflickr.cfg')}",
                    f"--data_dir={tmp_path / 'data'}", f"--workdir={workdir}", "--backbone=small_cnn",
                    "--weights=none", "--image_size=16", "--stage1_epochs=1", "--stage2_epochs=1",
                    "--batch_size=8", "--group_size=4", "--num_candidates=6", "--task=refinement",
                    "--num_devices=1", "--min_tag_fraction=0")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _metrics(workdir, "refinement")
    assert summary["train_images"] == 40 and _all_finite(summary)
    assert "images N        40" in result.stdout


def test_export_cli_from_checkpoint_matches_end_of_training_export(smoke_run, tmp_path):
    import tensorflow as tf

    import shutil

    workdir, _ = smoke_run
    summary = _metrics(workdir, "refinement")
    assert os.path.basename(summary["export"]) == "1"
    # The task directory moved without its workdir's prepared data, and the starting weights file named
    # in its config is gone: re-exporting builds only the model (model.json) and reads the checkpoint.
    moved = tmp_path / "moved" / "refinement"
    shutil.copytree(workdir / "refinement", moved)
    recorded = json.loads((moved / "config.json").read_text())
    recorded["model"]["weights"] = str(tmp_path / "gone" / "backbone.npz")
    (moved / "config.json").write_text(json.dumps(recorded))
    result = subprocess.run([sys.executable, "-m", "wsnn.export", f"--workdir={moved}",
                             f"--export_dir={tmp_path / 'exports'}"], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"Exported {tmp_path / 'exports' / '1'}"
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 56, 56, 1), dtype=np.uint8))
    a = tf.saved_model.load(summary["export"]).signatures["serve_images"](images=images)
    b = tf.saved_model.load(str(tmp_path / "exports" / "1")).signatures["serve_images"](images=images)
    np.testing.assert_allclose(a["probabilities"].numpy(), b["probabilities"].numpy(), rtol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "wsnn.export", f"--workdir={tmp_path}",
                          f"--export_dir={tmp_path / 'x'}"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert bad.returncode == 2 and "no model.json" in bad.stderr


def test_warm_start_from_another_runs_phi0_skips_stage1(smoke_run, tmp_path):
    import shutil

    workdir, _ = smoke_run
    shutil.copytree(workdir / "prepared", tmp_path / "warm" / "prepared")  # the same data, not prepared again
    # Fast neighbours keep stage 2 cheap here; warm starting does not depend on the mode.
    result = _train(f"--flagfile={SMOKE}", f"--workdir={tmp_path / 'warm'}", "--task=refinement",
                    f"--warm_start_from={workdir}", "--lambda1=5", "--neighbour_mode=fast")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"stage 2 starts from phi_0 of {workdir / 'refinement'}" in result.stdout
    assert "stage 1 epoch" not in result.stdout
    summary = _metrics(tmp_path / "warm", "refinement")
    assert summary["metrics"]["Multi-CNN"] == _metrics(workdir, "refinement")["metrics"]["Multi-CNN"]
    assert summary["steps"]["completed"] == summary["steps"]["stage2_per_epoch"]   # no stage-1 step ran here
    bad = _train(f"--flagfile={SMOKE}", f"--workdir={tmp_path / 'warm'}", "--task=refinement",
                 f"--warm_start_from={tmp_path}", "--overwrite")
    assert bad.returncode == 1 and "has no finished stage 1" in bad.stderr.strip().splitlines()[-1]


def _labelled_dataset(seed=0, count=48):
    """`count` random 8x8 grey images whose three tags are noisy copies of three labels."""
    from wsnn.data.dataset import from_tag_lists

    rng = np.random.default_rng(seed)
    labels = (rng.random((count, 3)) < 0.4).astype(np.uint8)
    names = ("sky", "sea", "dog")
    tags = [[names[j] for j in range(3) if labels[i, j] and rng.random() < 0.7] for i in range(count)]
    dataset = from_tag_lists([str(i) for i in range(count)], tags,
                             image_array=rng.integers(0, 256, (count, 8, 8), dtype=np.uint8))
    dataset.labels, dataset.label_names = labels, list(names)
    dataset.label_to_tag = np.array([dataset.tag_names.index(n) for n in names])
    return dataset


def test_stage2_epoch_makes_every_training_image_an_anchor_once(tmp_path, two_cpu_strategy):
    from wsnn.training.trainer import Trainer
    from wsnn.config import TrainConfig

    config = TrainConfig.make(workdir=str(tmp_path), task="refinement", stage1_epochs=1, stage2_epochs=1,
                              batch_size=8, group_size=4, num_candidates=6, alpha=0.0, num_devices=2,
                              validation_fraction=0)
    trainer = Trainer(config, _tiny_dataset(), "refinement", two_cpu_strategy)
    summary = trainer.run().summary
    assert trainer.steps_per_epoch == {1: 4, 2: 16} and len(trainer.batches) == 16
    for epoch in (0, 1):
        trainer.batches.set_epoch(epoch)
        anchors = np.concatenate([trainer.batches.group_indices(i).reshape(-1, 4)[:, 0] for i in range(16)])
        np.testing.assert_array_equal(np.sort(anchors), np.arange(32))
    # Batches read ahead (the default) or in turn: the same steps, so the same weights.
    in_turn = Trainer(config.replace(workdir=str(tmp_path / "in_turn"), prefetch_batches=False), _tiny_dataset(),
                      "refinement", two_cpu_strategy).run().summary
    assert in_turn["weights_sha256"] == summary["weights_sha256"]
    # The InputWait hook's record of each stage: its steps, and waits within the wall time.
    for record, prefetch in ((summary, True), (in_turn, False)):
        waits = record["timing_this_process"]["input_wait"]
        assert [waits[s]["steps"] for s in ("stage1", "stage2")] == [4, 16]
        for w in waits.values():
            assert w["prefetch"] == prefetch and 0 <= w["wait_s"] + w["finish_s"] <= w["wall_s"]
            assert w["share"] == pytest.approx((w["wait_s"] + w["finish_s"]) / w["wall_s"])
            assert w["images_per_s"] == pytest.approx(8 * w["steps"] / w["wall_s"])


def test_selection_never_reads_the_evaluated_images_labels(tmp_path, two_cpu_strategy):
    """Scrambling the evaluated images' labels changes neither the selection nor the weights."""
    from wsnn.config import TrainConfig
    from wsnn.training.trainer import Trainer
    from wsnn.training.state import split

    runs = []
    for scramble in (False, True):
        dataset = _labelled_dataset()
        _, valid, evaluated = split(dataset.num_images, "annotation", 0.5, 0, 0.25)
        assert len(valid) == 6 and not np.intersect1d(valid, evaluated).size
        if scramble:
            dataset.labels[evaluated] = 1 - dataset.labels[evaluated]
        config = TrainConfig.make(workdir=str(tmp_path / str(scramble)), task="annotation", train_fraction=0.5,
                                  validation_fraction=0.25, stage1_epochs=2, stage2_epochs=2, batch_size=8,
                                  group_size=4, num_candidates=6, alpha=0.0, num_devices=2, patience=0,
                                  learning_rate=0.5, lambda2=0.1)
        trainer = Trainer(config, dataset, "annotation", two_cpu_strategy)
        summary = trainer.run().summary
        runs.append((summary["history"], summary["weights_sha256"], summary["metrics"]["Ours"]))
    (history_a, digest_a, ours_a), (history_b, digest_b, ours_b) = runs
    strip = [[{k: v for k, v in r.items() if k != "diagnostics"} for r in h] for h in (history_a, history_b)]
    assert strip[0] == strip[1] and digest_a == digest_b
    assert ours_a != ours_b   # the scrambled labels were read for the report, after selection
    # The kept stage-2 epoch is the best of the validation scores of epochs 0 (phi_0), 1 and 2.
    scores = [r["validation"]["mAP"] for r in history_a if r["stage"] == 2]
    assert len(scores) == 3


class _BatchIndices(Hook):
    """Records the training-image indices of every stage-2 batch."""

    def __init__(self):
        self.stage2 = []

    def before_step(self, run, context):
        if context.stage == 2:
            self.stage2.append(context.idx)


def test_multi_cnn_same_budget_runs_stage2_steps_with_the_logistic_loss(tmp_path, two_cpu_strategy):
    from wsnn.training.outputs import TaskResult
    from wsnn.training.trainer import Trainer
    from wsnn.config import TrainConfig

    config = TrainConfig.make(workdir=str(tmp_path), task="refinement", stage1_epochs=1, stage2_epochs=1,
                              batch_size=8, group_size=4, num_candidates=6, alpha=0.0, num_devices=2,
                              validation_fraction=0, stage2_objective="multi_cnn")
    batches = _BatchIndices()
    trainer = Trainer(config, _tiny_dataset(), "refinement", two_cpu_strategy, hooks=[batches])
    result = trainer.run()
    summary = result.summary
    assert summary["steps"]["completed"] == 4 + 16 and len(batches.stage2) == 16
    # 16 steps of 8 images = 4 passes over the 32 images, each pass a permutation.
    for p in range(4):
        np.testing.assert_array_equal(np.sort(np.concatenate(batches.stage2[4 * p:4 * p + 4])), np.arange(32))
    # What a rerun of the finished task hands back, read from its files, is what the run returned.
    loaded = TaskResult.load(str(tmp_path / "refinement"))
    assert loaded.summary == json.loads(json.dumps(summary)) and loaded.task == "refinement"
    for name in ("train_idx", "valid_idx", "eval_idx", "refined"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert loaded.eval_tag_probs is None and result.eval_tag_probs is None  # no labels


class _Stage1Indices(Hook):
    """Records the training-image indices of every stage-1 batch."""

    def __init__(self):
        self.stage1 = []

    def before_step(self, run, context):
        if context.stage == 1:
            self.stage1.append(context.idx)


def test_stage1_starts_from_the_linear_probe_and_checks_every_n_steps(tmp_path, two_cpu_strategy):
    """The head set from the probe scores, as stage 1's epoch 0, the validation mAP the probe search
    measured for the chosen C; stage 1 runs --stage1_steps rounded up to whole checks of
    --validate_every_steps, reading passes over the training images that are each a permutation."""
    from wsnn.config import TrainConfig
    from wsnn.training.trainer import Trainer

    config = TrainConfig.make(workdir=str(tmp_path), task="refinement", validation_fraction=0.25,
                              stage1_steps=7, validate_every_steps=3, stage2_epochs=0, batch_size=8,
                              group_size=4, num_candidates=6, alpha=0.0, num_devices=2, patience=0,
                              lr_schedule="cosine", warmup_steps=2, learning_rate=0.05)
    batches = _Stage1Indices()
    trainer = Trainer(config, _labelled_dataset(), "refinement", two_cpu_strategy, hooks=[batches])
    summary = trainer.run().summary
    start = summary["selection"]["stage1_start"]
    assert start["head_init"] == "linear_probe" and len(start["trials"]) == 4
    chosen = [t["validation_mAP"] for t in start["trials"] if t["C"] == start["C"]][0]
    assert chosen == max(t["validation_mAP"] for t in start["trials"])
    epoch0 = [r for r in summary["history"] if r["stage"] == 1 and r["epoch"] == 0][0]
    np.testing.assert_allclose(epoch0["validation"]["mAP"], chosen, atol=1e-5)
    assert [r["epoch"] for r in summary["history"] if r["stage"] == 1] == [0, 1, 2, 3]
    assert summary["steps"]["stage1_per_check"] == 3 and len(batches.stage1) == 9
    assert summary["selection"]["stage1_tag_std"] > 0
    # 9 steps of 8 = 72 positions = 1.5 passes over the 48 images: the first pass is a permutation.
    stream = np.concatenate(batches.stage1)
    np.testing.assert_array_equal(np.sort(stream[:48]), np.arange(48))
    assert len(np.unique(stream[48:])) == 24
