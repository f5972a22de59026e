"""Tests for the SavedModel export (wsnn.serving)."""

import errno
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wsnn import export as export_cli
from wsnn import io_utils, models, serving
from wsnn.data import images, pipeline

TAGS = ["dog", "cat", "sky", "sea", "boot"]


def _model(seed=0):
    model = models.build_model("small_cnn", len(TAGS), (8, 8, 1))
    rng = np.random.default_rng(seed)
    # Spread the head's outputs so that probabilities and rankings differ between images.
    kernel, bias = model.get_layer("tag_probs").get_weights()
    model.get_layer("tag_probs").set_weights([rng.normal(0, 3, kernel.shape).astype(np.float32), bias])
    return model


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    model = _model()
    path = serving.export(model, TAGS, 8, 1, str(directory), top_k=3)
    return model, directory, path


def test_layout_and_versions(exported, tmp_path):
    model, directory, path = exported
    assert path == os.path.join(str(directory), "1")
    for name in ("saved_model.pb", "variables/variables.index", "assets/tags.txt", "assets/wsnn.json"):
        assert os.path.isfile(os.path.join(path, name)), name
    assert open(os.path.join(path, "assets", "tags.txt")).read().split() == TAGS
    assert json.load(open(os.path.join(path, "assets", "wsnn.json")))["image_size"] == 8
    second = serving.export(model, TAGS, 8, 1, str(tmp_path / "e"))
    third = serving.export(model, TAGS, 8, 1, str(tmp_path / "e"))
    assert [os.path.basename(second), os.path.basename(third)] == ["1", "2"]
    assert serving.resolve_version_dir(str(tmp_path / "e")) == third
    assert not [n for n in os.listdir(tmp_path / "e") if n.startswith(".")]
    with pytest.raises(ValueError, match="never overwritten"):
        serving.export(model, TAGS, 8, 1, str(tmp_path / "e"), version=2)


def test_fresh_process_with_only_tensorflow_matches_in_memory_model(exported, tmp_path):
    model, directory, _ = exported
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    big = rng.integers(0, 256, (20, 20), dtype=np.uint8)     # resized inside the graph
    files = [_png(a) for a in images] + [_png(big)]
    np.save(tmp_path / "bytes.npy", np.array(files, dtype=object), allow_pickle=True)
    script = f"""
import sys, numpy as np, tensorflow as tf
files = list(np.load({str(tmp_path / 'bytes.npy')!r}, allow_pickle=True))
loaded = tf.saved_model.load({str(directory)!r} + "/1")
out = loaded.signatures["serving_default"](image_bytes=tf.constant(files))
images = np.stack([np.asarray(tf.io.decode_png(f, channels=1)) for f in files[:-1]])
direct = loaded.signatures["serve_images"](images=tf.constant(images))
assert not [m for m in sys.modules if m.startswith("wsnn")]
np.savez({str(tmp_path / 'out.npz')!r}, probs=out["probabilities"].numpy(), tags=out["top_k_tags"].numpy(),
         scores=out["top_k_scores"].numpy(), direct=direct["probabilities"].numpy())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    out = np.load(tmp_path / "out.npz", allow_pickle=True)
    batch = np.concatenate([images[..., None], np.asarray(pipeline.resize_uint8(big[None, ..., None], 8))])
    expected = np.asarray(model(batch, training=False)["tag_probs"])
    np.testing.assert_allclose(out["probs"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["direct"], expected[:-1], rtol=1e-5, atol=1e-6)
    top = np.argsort(-expected, axis=1, kind="stable")[:, :3]
    assert [[t.decode() for t in row] for row in out["tags"]] == [[TAGS[j] for j in row] for row in top]
    np.testing.assert_allclose(out["scores"], np.take_along_axis(expected, top, axis=1), rtol=1e-5)


def test_saved_model_cli_lists_both_signatures(exported):
    _, directory, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--all", "--dir", os.path.join(str(directory), "1")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "signature_def['serving_default']" in result.stdout
    assert "signature_def['serve_images']" in result.stdout
    assert "inputs['image_bytes']" in result.stdout and "outputs['top_k_tags']" in result.stdout


def test_truncated_or_missing_saved_model_is_a_clear_error(exported, tmp_path):
    _, directory, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(os.path.join(str(directory), "1"), copy / "1")
    os.remove(copy / "1" / "variables" / "variables.index")
    with pytest.raises(ValueError, match=r"incomplete SavedModel \(variables/variables.index is missing\)"):
        serving.load(str(copy))
    with pytest.raises(ValueError, match="no such directory"):
        serving.load(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a SavedModel"):
        serving.load(str(tmp_path / "empty"))


def test_metadata_records_the_pixel_limit(exported, tmp_path):
    model, directory, path = exported
    assert json.load(open(os.path.join(path, "assets", "wsnn.json")))["max_pixels"] == 40_000_000
    small = serving.export(model, TAGS, 8, 1, str(tmp_path / "e"), max_pixels=64)
    assert serving.read_metadata(small)["max_pixels"] == 64


def _huge_png():
    """13000 x 13000 pixels in about 20 KB."""
    buffer = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buffer, "PNG")
    return buffer.getvalue()


def test_serving_signature_refuses_images_over_the_limit_before_decoding(exported, tmp_path):
    model, directory, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    huge = _huge_png()
    limit = "image is 13000 x 13000 pixels (width x height), more than the limit of 40000000 pixels"
    # The whole file, and its first 64 bytes (a decode would fail on the missing pixel data).
    for data in (huge, huge[:64]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(limit)) as info:
            serve(image_bytes=tf.constant([_png(np.zeros((8, 8), np.uint8)), data]))
        assert images.error_message(info.value) == limit    # as wsnn.annotate reports it
    # A limit given at export: 8 x 8 = 64 pixels pass, 9 x 8 do not.
    small = tf.saved_model.load(serving.export(model, TAGS, 8, 1, str(tmp_path / "e"), max_pixels=64))
    out = small.signatures["serving_default"](image_bytes=tf.constant([_png(np.zeros((8, 8), np.uint8))]))
    assert out["probabilities"].shape == (1, len(TAGS))
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
            "image is 9 x 8 pixels (width x height), more than the limit of 64 pixels")):
        small.signatures["serving_default"](image_bytes=tf.constant([_png(np.zeros((8, 9), np.uint8))]))


@pytest.mark.parametrize("text,message", [
    ('{"tag_names": ["dog"', "not valid JSON (Expecting ',' delimiter at line 1 column 21)"),
    ("", "not valid JSON (Expecting value at line 1 column 1)"),
    ('["dog"]', "expected a JSON object, got list"),
    ('{"image_size": 8, "channels": 1, "top_k": 3}', "'tag_names' must be a non-empty list of strings"),
    ('{"tag_names": ["dog"], "image_size": "8", "channels": 1, "top_k": 3}', "'image_size' must be a positive"),
    ('{"tag_names": ["dog"], "image_size": 8, "channels": 2, "top_k": 3}', "'channels' must be 1 or 3"),
    ('{"tag_names": ["dog"], "image_size": 8, "channels": 1, "top_k": 3, "max_pixels": 0}',
     "'max_pixels' must be a positive integer"),
])
def test_bad_metadata_is_one_error_naming_the_file(exported, tmp_path, text, message):
    _, directory, _ = exported
    shutil.copytree(os.path.join(str(directory), "1"), tmp_path / "1")
    (tmp_path / "1" / "assets" / "wsnn.json").write_text(text)
    with pytest.raises(ValueError) as info:
        serving.load(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path / '1' / 'assets' / 'wsnn.json'}: {message}")


def test_metadata_without_max_pixels_gets_the_default(exported, tmp_path):
    # Exports made before the pixel limit.
    _, directory, _ = exported
    shutil.copytree(os.path.join(str(directory), "1"), tmp_path / "1")
    metadata_path = tmp_path / "1" / "assets" / "wsnn.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["max_pixels"]
    metadata_path.write_text(json.dumps(metadata))
    assert serving.read_metadata(str(tmp_path / "1"))["max_pixels"] == 40_000_000


def test_cut_variables_file_is_one_error_naming_it(exported, tmp_path):
    _, directory, _ = exported
    shutil.copytree(os.path.join(str(directory), "1"), tmp_path / "1")
    data = tmp_path / "1" / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    with pytest.raises(ValueError) as info:
        serving.load(str(tmp_path))
    assert str(info.value) == (f"{data}: cannot load the SavedModel (IndexError: Read less bytes than "
                               "requested); export it again")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A task directory as training leaves it for `wsnn.export`: model.json and a checkpoint."""
    directory = tmp_path_factory.mktemp("task")
    serving.write_model_facts(str(directory / "model.json"), "small_cnn", TAGS, (8, 8, 1), 40_000_000)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=_model()), str(directory / "checkpoints"), 1).save()
    return directory


@pytest.mark.parametrize("top_k", [0, -5])
def test_top_k_is_checked_before_anything_is_traced_or_written(exported, tmp_path, top_k):
    model, _, _ = exported
    with pytest.raises(ValueError, match=rf"^--top_k={top_k}: must be >= 1$"):
        serving.export(model, TAGS, 8, 1, str(tmp_path / "e"), top_k=top_k)
    assert not (tmp_path / "e").exists()
    # The command line refuses it before TensorFlow loads: one line, status 2.
    result = subprocess.run([sys.executable, "-m", "wsnn.export", f"--workdir={tmp_path}",
                             f"--export_dir={tmp_path / 'e'}", f"--top_k={top_k}"],
                            capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"wsnn.export: error: --top_k={top_k}: must be >= 1\n")


def test_a_full_or_read_only_export_directory_is_one_line_naming_the_version(exported, task_dir, tmp_path,
                                                                            monkeypatch, capsys):
    model, _, _ = exported

    def full_disk(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(
            None, None, "/x/variables/variables.data-00000-of-00001.tempstate1; No space left on device")

    def read_only(parent, prefix):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(parent, prefix + "abc"))

    with monkeypatch.context() as patch:
        patch.setattr(tf.saved_model, "save", full_disk)
        with pytest.raises(serving.ExportError) as info:
            serving.export(model, TAGS, 8, 1, str(tmp_path / "full"))
        assert str(info.value) == (f"{tmp_path / 'full' / '1'}: cannot export (/x/variables/variables.data-"
                                   "00000-of-00001.tempstate1; No space left on device)")
        assert os.listdir(tmp_path / "full") == []     # the temporary directory is gone
        # wsnn.export: one line, status 1.
        assert export_cli.export_task(str(task_dir), str(tmp_path / "full"), 10) == 1
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"wsnn.export: error: {tmp_path / 'full' / '1'}: cannot export (/x/variables/variables.data-"
            "00000-of-00001.tempstate1; No space left on device)")
    with monkeypatch.context() as patch:
        patch.setattr(io_utils, "make_temp_dir", read_only)
        with pytest.raises(serving.ExportError, match=re.escape(
                f"{tmp_path / 'ro' / '1'}: cannot export (Read-only file system)")):
            serving.export(model, TAGS, 8, 1, str(tmp_path / "ro"))
    # Nothing was patched to exist: a file where the export directory should be.
    (tmp_path / "file").write_text("")
    with pytest.raises(serving.ExportError, match=re.escape(f"{tmp_path / 'file'}: cannot export (File exists)")):
        serving.export(model, TAGS, 8, 1, str(tmp_path / "file"))


def test_two_exports_into_one_directory_take_turns(exported, tmp_path):
    model, _, _ = exported
    directory = tmp_path / "e"
    directory.mkdir()
    # Another export holds the directory's lock (an flock on the directory itself).
    fd = os.open(directory, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = []
    thread = threading.Thread(target=lambda: done.append(serving.export(model, TAGS, 8, 1, str(directory))))
    try:
        thread.start()
        thread.join(2.0)
        assert thread.is_alive() and os.listdir(directory) == []   # it waits instead of racing to version 1
    finally:
        os.close(fd)
    thread.join(120)
    assert done == [str(directory / "1")]
    assert serving.export(model, TAGS, 8, 1, str(directory)) == str(directory / "2")
    assert sorted(os.listdir(directory)) == ["1", "2"]   # no lock file beside the versions


def test_versions_are_all_digit_names_compared_as_integers(exported, tmp_path):
    _, directory, _ = exported
    version = os.path.join(str(directory), "1")
    shutil.copytree(version, tmp_path / "padded" / "007")
    assert serving.resolve_version_dir(str(tmp_path / "padded")) == str(tmp_path / "padded" / "007")
    assert serving.load(str(tmp_path / "padded"))[1]["tag_names"] == TAGS
    assert serving.next_version(str(tmp_path / "padded")) == 8
    # A stray file named like a version is not one (it used to hide version 1), but no export takes its name.
    shutil.copytree(version, tmp_path / "stray" / "1")
    (tmp_path / "stray" / "5").write_text("notes")
    assert serving.resolve_version_dir(str(tmp_path / "stray")) == str(tmp_path / "stray" / "1")
    assert serving.next_version(str(tmp_path / "stray")) == 6
    for name in ("9", "10"):
        shutil.copytree(version, tmp_path / "ten" / name)
    shutil.copytree(version, tmp_path / "ten" / "\u0663")   # ARABIC-INDIC DIGIT THREE: not an ASCII digit
    assert serving.resolve_version_dir(str(tmp_path / "ten")) == str(tmp_path / "ten" / "10")
    assert serving.next_version(str(tmp_path / "ten")) == 11
    # Messages name the version directory as it is on disk.
    os.makedirs(tmp_path / "cut" / "007")
    with pytest.raises(ValueError, match=re.escape(f"--model={tmp_path / 'cut' / '007'}: incomplete SavedModel")):
        serving.resolve_version_dir(str(tmp_path / "cut"))


def test_temp_directories_of_killed_exports_are_removed_at_the_start(exported, tmp_path):
    model, _, _ = exported
    directory = tmp_path / "e"
    os.makedirs(directory / ".1.tmp-abc" / "variables")
    (directory / ".3.tmp-xyz").write_text("")
    (directory / ".keep").write_text("")
    assert serving.export(model, TAGS, 8, 1, str(directory)) == str(directory / "1")
    assert sorted(os.listdir(directory)) == [".keep", "1"]


@pytest.mark.parametrize("name,text,message", [
    ("model.json", '{"backbone": "small_cnn"', "not valid JSON (Expecting ',' delimiter at line 1 column 25)"),
    ("model.json", '{"tag_names": ["dog"], "input_shape": [8, 8, 1], "max_pixels": 9}',
     "'backbone' must be a string"),
    ("model.json", '{"backbone": "small_cnn", "tag_names": ["dog"], "input_shape": [8, 8], "max_pixels": 9}',
     "'input_shape' must be three positive integers"),
    ("data_identity.json", "{", "not valid JSON (Expecting property name enclosed in double quotes at line 1 "
                                "column 2)"),
    ("data_identity.json", b"\xff", "not UTF-8 text"),
])
def test_a_damaged_task_file_is_named(task_dir, tmp_path, capsys, name, text, message):
    task = tmp_path / "task"
    shutil.copytree(task_dir, task)
    (task / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as info:
        serving.export_from_checkpoint(str(task), str(tmp_path / "e"))
    assert str(info.value) == f"{task / name}: {message}"
    assert export_cli.export_task(str(task), str(tmp_path / "e"), 10) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"wsnn.export: error: {task / name}: {message}"
    assert not (tmp_path / "e").exists()

