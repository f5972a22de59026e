"""Nothing stale, nothing unreadable, nothing raw: data identity of checkpoints, a changed source,
output permissions, the workdir lock, one-line errors of `wsnn.train` and what reruns and kills
leave. Tiny JSONL collections of 8x8 PNGs made here."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wsnn import io_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAGS = ("dog", "sky", "tree", "sea", "road")
# A tiny run of both stages: 40 images, 1 epoch each, small batches, one device.
TRAIN_FLAGS = ["--source=jsonl", "--task=refinement", "--backbone=small_cnn", "--stage1_epochs=1",
               "--stage2_epochs=1", "--batch_size=8", "--group_size=4", "--num_candidates=6",
               "--num_devices=1", "--image_size=8", "--alpha=0", "--min_tag_fraction=0", "--validation_fraction=0",
               "--eval_max_images=0", "--log_every_steps=50", "--checkpoint_every_steps=100",
               "--image_summary_every_steps=1000"]


def _collection(root, rename=None, count=40):
    """Writes root/img/<i>.png and root/annotations.jsonl (each image 1-2 of TAGS); `rename`
    {old: new} renames tags. Returns the JSONL path."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        tags = [TAGS[i % 5], TAGS[(i * 3 + 1) % 5]]
        tags = [(rename or {}).get(t, t) for t in tags]
        lines.append(json.dumps({"image": f"img/{i}.png", "tags": tags, "id": f"im{i:03d}"}))
    path = root / "annotations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(workdir, data, *extra):
    return subprocess.run([sys.executable, "-m", "wsnn.train", *TRAIN_FLAGS, f"--data_dir={data}",
                           f"--workdir={workdir}", *extra], capture_output=True, text=True, cwd=ROOT, check=False)


def _one_line_error(result, prefix="wsnn.train: error: "):
    """The error line, checked to be the last of stderr with no traceback (TensorFlow's start-up
    log lines may come before it)."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(prefix) and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (umask 022): (workdir, data, stdout)."""
    base = tmp_path_factory.mktemp("finished")
    data = _collection(base / "photos")
    old = os.umask(0o022)
    try:
        result = _train(base / "run", data)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run", data, result.stdout


def _versions(task_dir):
    return sorted(p for p in os.listdir(task_dir / "export") if not p.startswith("."))


def test_outputs_are_readable_by_others_under_umask_022(finished):
    workdir, _, _ = finished
    task = workdir / "refinement"
    for path in [task / "metrics.json", task / "refined_tags.tsv", task / "refined_tags.npz",
                 task / "config.json", workdir / "prepared" / "manifest.json"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path
    version = task / "export" / _versions(task)[0]
    for path in [workdir / "prepared", version, version / "variables"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755, path
    assert stat.S_IMODE(os.stat(version / "saved_model.pb").st_mode) == 0o644


def test_rerun_of_a_finished_run_says_already_done_and_leaves_everything(finished, tmp_path):
    workdir, data, _ = finished
    task = workdir / "refinement"
    before = (task / "metrics.json").read_bytes()
    config_before = (task / "config.json").read_bytes()
    versions = _versions(task)
    # Litter of killed runs: an export temp directory and a temp file.
    (task / "export" / ".9.tmp-abc").mkdir()
    (task / ".tmp-xyz").write_text("half")
    result = _train(workdir, data, "--log_every_steps=7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[refinement] already done" in result.stdout
    assert (task / "config.json").read_bytes() == config_before    # the config that made the outputs
    assert (task / "metrics.json").read_bytes() == before            # timings not overwritten
    assert _versions(task) == versions                               # no new export version
    assert not (task / "export" / ".9.tmp-abc").exists() and not (task / ".tmp-xyz").exists()


def test_checkpoints_are_numbered_in_order_and_the_last_holds_the_final_weights(finished):
    import tensorflow as tf

    from wsnn import models
    from wsnn.training.state import weights_digest

    workdir, _, _ = finished
    task = workdir / "refinement"
    summary = json.loads((task / "metrics.json").read_text())
    state = tf.train.get_checkpoint_state(str(task / "checkpoints"))
    numbers = [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]
    assert numbers == sorted(set(numbers)) and state.model_checkpoint_path.endswith(f"ckpt-{numbers[-1]}")
    model = models.build_model("small_cnn", summary["data_identity"]["num_tags"], (8, 8, 3), "none")
    tf.train.Checkpoint(model=model).read(state.model_checkpoint_path).expect_partial()
    assert weights_digest(model) == summary["weights_sha256"]
    # The JSONL's image files were decoded once, into the prepared set's cache (wsnn.data.decoded).
    assert len(list((workdir / "prepared" / "cache").glob("decoded-*.npy"))) == 1


def test_changed_vocabulary_stops_restoring_with_one_line_and_overwrite_starts_fresh(finished, tmp_path):
    import shutil

    workdir, _, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    data = _collection(tmp_path / "photos", rename={"dog": "wolf"})
    result = _train(copy, data)
    assert result.returncode == 1
    line = _one_line_error(result)
    assert "trained on other data: the tag vocabulary changed" in line and "--overwrite" in line
    assert "the source files changed" in result.stdout or "data settings changed" in result.stdout
    result = _train(copy, data, "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((copy / "refinement" / "metrics.json").read_text())
    header, first = (copy / "refinement" / "refined_tags.tsv").read_text().splitlines()[:2]
    assert "wolf" in first.split("\t")[1] and summary["data_identity"]["num_tags"] == 5
    metadata = json.loads((copy / "refinement" / "export" / _versions(copy / "refinement")[-1] / "assets"
                           / "wsnn.json").read_text())
    assert metadata["data_identity"] == summary["data_identity"]


def test_identity_ignores_info_and_follows_tags_labels_and_pixels():
    import scipy.sparse

    from wsnn.data import dataset as dataset_lib

    def make(tags=((1, 0), (0, 1)), pixels=0, info=None, names=("dog", "sky")):
        return dataset_lib.TaggedImageSet(ids=["a", "b"], tag_names=list(names),
                                          user_tags=scipy.sparse.csr_matrix(np.array(tags)),
                                          image_array=np.full((2, 4, 4), pixels, np.uint8), info=info or {})
    base = dataset_lib.identity(make())
    assert dataset_lib.identity(make(info={"prepare_settings": {"data_dir": "/elsewhere"}})) == base
    assert dataset_lib.identity(make(tags=((1, 1), (0, 1))))["data_hash"] != base["data_hash"]
    assert dataset_lib.identity(make(pixels=1))["data_hash"] != base["data_hash"]
    renamed = dataset_lib.identity(make(names=("wolf", "sky")))
    assert renamed["vocabulary_hash"] != base["vocabulary_hash"]


def test_warm_start_from_other_data_is_refused(tmp_path, two_cpu_strategy):
    from wsnn.config import TrainConfig
    from wsnn.training.state import DataChanged
    from wsnn.training.trainer import Trainer
    from wsnn.data.dataset import from_tag_lists

    rng = np.random.default_rng(0)
    tags = [[TAGS[i % 3]] for i in range(24)]
    images = rng.integers(0, 256, (24, 8, 8), dtype=np.uint8)
    one = from_tag_lists([str(i) for i in range(24)], tags, image_array=images)
    other = from_tag_lists([str(i) for i in range(24)], tags, image_array=255 - images)
    config = TrainConfig.make(workdir=str(tmp_path / "a"), task="refinement", stage1_epochs=1, stage2_epochs=0,
                              batch_size=8, group_size=4, num_candidates=6, alpha=0.0, num_devices=2,
                              validation_fraction=0.0, eval_max_images=0)
    Trainer(config, one, "refinement", two_cpu_strategy).run()
    warm = config.replace(workdir=str(tmp_path / "b"), warm_start_from=str(tmp_path / "a"))
    with pytest.raises(DataChanged, match="trained on other data than this run's"):
        Trainer(warm, other, "refinement", two_cpu_strategy).run()


def test_edited_source_is_prepared_again_and_workdir_spelling_is_not_a_setting(tmp_path, capsys, monkeypatch):
    from wsnn.data.preparation import PrepareConfig, load_or_prepare

    data = _collection(tmp_path / "photos", count=12)
    config = PrepareConfig(source="jsonl", data_dir=str(data), workdir=str(tmp_path / "run"),
                                   min_tag_fraction=0)
    load_or_prepare(config)
    manifest = tmp_path / "run" / "prepared" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    for spelling in (str(tmp_path / "run") + "/", "run", "./run/../run"):
        for data_dir in (str(data), "photos/annotations.jsonl"):
            same = PrepareConfig(source="jsonl", data_dir=data_dir, workdir=spelling, min_tag_fraction=0)
            load_or_prepare(same)
    assert manifest.stat().st_mtime_ns == written and "preparing again" not in capsys.readouterr().out
    _collection(tmp_path / "photos", rename={"dog": "wolf"}, count=12)
    dataset = load_or_prepare(config)
    assert "the source files changed" in capsys.readouterr().out and "wolf" in dataset.tag_names


def test_second_run_in_a_locked_workdir_gets_one_line_naming_the_pid(tmp_path):
    data = _collection(tmp_path / "photos", count=12)
    with io_utils.workdir_lock(str(tmp_path / "run")):
        result = _train(tmp_path / "run", data)
    assert result.returncode == 1
    line = _one_line_error(result)
    assert f"is in use by another wsnn run (PID {os.getpid()})" in line
    assert not (tmp_path / "run" / "prepared").exists()
    # The lock goes with its holder.
    with io_utils.workdir_lock(str(tmp_path / "run")):
        pass


def test_unwritable_workdir_is_one_line(tmp_path):
    data = _collection(tmp_path / "photos", count=12)
    (tmp_path / "file").write_text("not a directory")
    result = _train(tmp_path / "file" / "run", data)
    assert result.returncode == 1
    assert "file/run" in _one_line_error(result)


def test_nan_stop_is_one_line():
    # The entry point with runner.run replaced by one that stops as a NaN loss does.
    script = ("import sys; from wsnn import train\nfrom wsnn.training import runner\n"
              "from wsnn.training.hooks import NonFiniteLossError\n"
              "def diverge(*args):\n"
              "    raise NonFiniteLossError('loss became nan at stage 2, step 6; last checkpoint x')\n"
              "runner.run = diverge\n"
              "sys.argv = ['wsnn.train', '--workdir=unused']\n"
              "train.run()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 1
    assert _one_line_error(result) == "wsnn.train: error: loss became nan at stage 2, step 6; last checkpoint x"


def test_written_files_and_directories_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        io_utils.write_text(str(tmp_path / "a.txt"), "x")
        with io_utils.atomic_directory(str(tmp_path / "d")) as tmp:
            io_utils.write_text(os.path.join(tmp, "b.txt"), "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o750


def test_remove_stale_temps_keeps_everything_else(tmp_path):
    for name in (".tmp-1", ".3.tmp-ab", ".prepared.old-x", "keep.tmp-1", "3", "metrics.json"):
        (tmp_path / name).mkdir() if not name.endswith("json") else (tmp_path / name).write_text("{}")
    assert io_utils.remove_stale_temps(str(tmp_path)) == [".3.tmp-ab", ".prepared.old-x", ".tmp-1"]
    assert sorted(os.listdir(tmp_path)) == ["3", "keep.tmp-1", "metrics.json"]
