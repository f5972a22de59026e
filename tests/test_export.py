"""Tests for the SavedModel export (wsnn.export)."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wsnn import export, models
from wsnn.data import pipeline

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
    path = export.export(model, TAGS, 8, 1, str(directory), top_k=3)
    return model, directory, path


def test_layout_and_versions(exported, tmp_path):
    model, directory, path = exported
    assert path == os.path.join(str(directory), "1")
    for name in ("saved_model.pb", "variables/variables.index", "assets/tags.txt", "assets/wsnn.json"):
        assert os.path.isfile(os.path.join(path, name)), name
    assert open(os.path.join(path, "assets", "tags.txt")).read().split() == TAGS
    assert json.load(open(os.path.join(path, "assets", "wsnn.json")))["image_size"] == 8
    second = export.export(model, TAGS, 8, 1, str(tmp_path / "e"))
    third = export.export(model, TAGS, 8, 1, str(tmp_path / "e"))
    assert [os.path.basename(second), os.path.basename(third)] == ["1", "2"]
    assert export.resolve_version_dir(str(tmp_path / "e")) == third
    assert not [n for n in os.listdir(tmp_path / "e") if n.startswith(".")]
    with pytest.raises(ValueError, match="never overwritten"):
        export.export(model, TAGS, 8, 1, str(tmp_path / "e"), version=2)


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
        export.load(str(copy))
    with pytest.raises(ValueError, match="no such directory"):
        export.load(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a SavedModel"):
        export.load(str(tmp_path / "empty"))
