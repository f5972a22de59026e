"""Tests for the SavedModel export (wsnn.serving)."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wsnn import models, serving
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
