"""Tests for blending a new collection's tags with an exported tagger's (wsnn.blend)."""

import errno
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from wsnn import blend, io_utils, models, serving
from wsnn import wordnet as wordnet_lib
from wsnn.data.dataset import DataError

TAGS = ["boot", "cat", "dog", "sea", "tree"]
SIZE = 8

# id -> (tags as typed, the vocabulary tags they map onto). "nikon" is not in
# WordNet and "zebra" is but not in the vocabulary: both are dropped.
COLLECTION = {
    "a": (["Dogs", "sea", "nikon"], ["dog", "sea"]),
    "b": (["zebra", "Trees"], ["tree"]),
    "c": ([], []),
    "d": (["dog", "DOGS", "cats"], ["cat", "dog"]),
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """An exported model, a JSONL collection with one corrupt image, and the model's probabilities."""
    root = tmp_path_factory.mktemp("blend")
    model = models.build_model("small_cnn", len(TAGS), (SIZE, SIZE, 3))
    kernel, bias = model.get_layer("tag_probs").get_weights()
    rng = np.random.default_rng(0)
    model.get_layer("tag_probs").set_weights([rng.normal(0, 3, kernel.shape).astype(np.float32), bias])
    serving.export(model, TAGS, SIZE, 3, str(root / "export"))

    data = root / "data"
    os.makedirs(data / "photos")
    arrays = rng.integers(0, 256, (len(COLLECTION), SIZE, SIZE, 3), dtype=np.uint8)
    lines = []
    for (image_id, (tags, _)), array in zip(COLLECTION.items(), arrays):
        Image.fromarray(array).save(data / "photos" / f"{image_id}.png")
        lines.append({"image": f"photos/{image_id}.png", "tags": tags, "id": image_id})
    (data / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    lines.append({"image": "photos/broken.png", "tags": ["sea"], "id": "broken"})
    (data / "annotations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    probs = model(arrays, training=False)["tag_probs"].numpy()
    return root, probs


def _write_collection(directory, tags_by_image):
    os.makedirs(directory)
    lines = []
    for i, tags in enumerate(tags_by_image):
        Image.fromarray(np.full((SIZE, SIZE, 3), 40 * i, np.uint8)).save(directory / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "tags": tags}) + "\n")
    (directory / "annotations.jsonl").write_text("".join(lines))
    return str(directory / "annotations.jsonl")


def test_scores_are_weighted_user_tags_plus_model(collection, tmp_path, wordnet):
    root, probs = collection
    w = 0.3
    summary = blend.blend(str(root / "export"), str(root / "data" / "annotations.jsonl"), str(tmp_path / "out"),
                            user_tag_weight=w, wordnet=wordnet)
    g = np.zeros((len(COLLECTION), len(TAGS)), np.float32)
    for i, (_, mapped) in enumerate(COLLECTION.values()):
        g[i, [TAGS.index(t) for t in mapped]] = 1

    out = np.load(tmp_path / "out" / "refined_tags.npz")
    assert sorted(out.files) == ["ids", "scores", "tag_names"]
    assert list(out["ids"]) == list(COLLECTION) and list(out["tag_names"]) == TAGS
    assert out["scores"].dtype == np.float32 and out["scores"].shape == g.shape
    np.testing.assert_allclose(out["scores"], w * g + (1 - w) * probs, atol=1e-5)

    lines = (tmp_path / "out" / "refined_tags.tsv").read_text().splitlines()
    assert lines[0] == "id\tuser_tags\trefined_tags"
    for line, (image_id, (_, mapped)), scores in zip(lines[1:], COLLECTION.items(), out["scores"]):
        fields = line.split("\t")
        assert fields[:2] == [image_id, ",".join(mapped)]
        pairs = [re.fullmatch(r"(\w+):(\d\.\d{3})", item).groups() for item in fields[2].split(" ")]
        order = np.argsort(-scores, kind="stable")
        assert [t for t, _ in pairs] == [TAGS[j] for j in order]
        assert [s for _, s in pairs] == [f"{scores[j]:.3f}" for j in order]

    assert summary["images"] == 4 and summary["skipped_images"] == 1
    assert summary["tag_tokens"] == 8 and summary["tag_tokens_mapped"] == 6 and summary["tag_tokens_dropped"] == 2
    assert sorted(summary["dropped_examples"]) == ["nikon", "zebra"]
    assert summary["npz"] == str(tmp_path / "out" / "refined_tags.npz")


def test_strict_rejects_corrupt_image(collection, tmp_path, wordnet):
    root, _ = collection
    with pytest.raises(DataError, match="corrupt image"):
        blend.blend(str(root / "export"), str(root / "data" / "annotations.jsonl"), str(tmp_path / "out"),
                      strict=True, wordnet=wordnet)
    assert not os.path.exists(tmp_path / "out")


def test_unmappable_vocabulary_and_bad_weight(collection, tmp_path, wordnet):
    root, _ = collection
    path = _write_collection(tmp_path / "other", [["zebra", "Nikon"], ["zebras"]])
    with pytest.raises(ValueError, match=r"vocabulary cannot be mapped") as error:
        blend.blend(str(root / "export"), path, str(tmp_path / "out"), wordnet=wordnet)
    assert path in str(error.value) and "zebra" in str(error.value)
    for w in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="user_tag_weight"):
            blend.blend(str(root / "export"), path, str(tmp_path / "out"), user_tag_weight=w, wordnet=wordnet)


def test_collection_without_tags_is_the_model_alone(collection, tmp_path, wordnet):
    root, _ = collection
    path = _write_collection(tmp_path / "untagged", [[], []])
    summary = blend.blend(str(root / "export"), path, str(tmp_path / "out"), user_tag_weight=0.5, wordnet=wordnet)
    scores = np.load(tmp_path / "out" / "refined_tags.npz")["scores"]
    assert summary["tag_tokens"] == 0 and scores.shape == (2, len(TAGS)) and scores.max() <= 0.5


def test_cli_prints_summary_under_both_names(collection, tmp_path):
    root, _ = collection
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # quiet by itself
    # wsnn.refine is the old name; both run at once (each spends most of its time importing TensorFlow).
    runs = [subprocess.Popen(
        [sys.executable, "-m", module, f"--model={root / 'export'}", f"--data={root / 'data' / 'annotations.jsonl'}",
         f"--out={tmp_path / module}", "--user_tag_weight=0.7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for module in ("wsnn.blend", "wsnn.refine")]
    for module, run in zip(("wsnn.blend", "wsnn.refine"), runs):
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-2000:]
        lines = out.splitlines()
        assert lines[0] == "refined 4 images (1 corrupt skipped) with user_tag_weight 0.7"
        assert lines[1].startswith("user tags: 6 of 8 mapped onto the model's 5 tags; 2 of ")
        assert lines[2:] == [f"wrote {tmp_path / module / 'refined_tags.npz'}",
                             f"wrote {tmp_path / module / 'refined_tags.tsv'}"]
        assert ("old name of wsnn.blend" in err) == (module == "wsnn.refine")
        # Quiet start: none of TensorFlow's start-up notices (the broken image's warning is ours).
        notices = ("cpu_feature_guard", "oneDNN", "cuInit", "cudart", "before absl::InitializeLog")
        assert not [line for line in err.splitlines() if any(n in line for n in notices)], err
    assert (tmp_path / "wsnn.blend" / "refined_tags.tsv").read_bytes() == (
        tmp_path / "wsnn.refine" / "refined_tags.tsv").read_bytes()


def _options(root, out, w):
    return types.SimpleNamespace(model=str(root / "export"), data=str(root / "data" / "annotations.jsonl"),
                                 out=str(out), user_tag_weight=w, strict=False, top_k=10, batch_size=32)


def test_outputs_are_replaced_together_or_not_at_all(collection, tmp_path, wordnet, monkeypatch, capsys):
    root, _ = collection
    out = tmp_path / "out"
    os.makedirs(tmp_path / ".out.tmp-killed")      # left by a killed blend into out
    (tmp_path / ".other.tmp-x").write_text("")     # not ours
    blend.blend(str(root / "export"), str(root / "data" / "annotations.jsonl"), str(out), user_tag_weight=0.3,
                wordnet=wordnet)
    first = {name: (out / name).read_bytes() for name in ("refined_tags.npz", "refined_tags.tsv")}
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-x", "out"]

    def full_disk(path, text):   # the disk fills while the TSV is written, after the npz
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_utils, "write_text", full_disk)
    with pytest.raises(OSError) as info:
        blend.blend(str(root / "export"), str(root / "data" / "annotations.jsonl"), str(out),
                    user_tag_weight=0.7, wordnet=wordnet)
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(out))
    # Both files are the first run's: never the second run's npz beside the first run's TSV.
    assert {name: (out / name).read_bytes() for name in first} == first
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-x", "out"] and sorted(os.listdir(out)) == sorted(first)
    # The command line: one line naming --out, status 1.
    monkeypatch.setattr(wordnet_lib, "get_wordnet", lambda *args, **kwargs: wordnet)
    assert blend.run_blend(_options(root, out, 0.7)) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"wsnn.blend: error: {out}: No space left on device"
    assert {name: (out / name).read_bytes() for name in first} == first


def test_out_must_be_a_writable_directory_of_blend_outputs(collection, tmp_path, wordnet, monkeypatch, capsys):
    root, _ = collection
    (tmp_path / "file").write_text("")
    os.makedirs(tmp_path / "mine")
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for out, message in ((tmp_path / "file", f"--out={tmp_path / 'file'}: exists and is not a directory"),
                         (tmp_path / "mine", f"--out={tmp_path / 'mine'}: holds other files than refined_tags.npz "
                                             "and refined_tags.tsv (e.g. notes.txt); blend replaces the whole "
                                             "directory, so give a new one")):
        assert blend.run_blend(_options(root, out, 0.5)) == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"wsnn.blend: error: {message}"
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # Read-only (root ignores permission bits, so both ways it shows are simulated): --out itself
    # refused before the model loads, or the directory made beside it.
    with monkeypatch.context() as patch:
        patch.setattr(os, "access", lambda path, mode: False)
        assert blend.run_blend(_options(root, tmp_path / "ro", 0.5)) == 1
        assert capsys.readouterr().err.splitlines()[-1] == f"wsnn.blend: error: {tmp_path}: not writable"

    def read_only(parent, prefix):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(parent, prefix + "abc"))

    monkeypatch.setattr(io_utils, "make_temp_dir", read_only)
    with pytest.raises(OSError, match=re.escape(f"[Errno 30] Read-only file system: '{tmp_path / 'ro'}'")):
        blend.blend(str(root / "export"), str(root / "data" / "annotations.jsonl"), str(tmp_path / "ro"),
                    wordnet=wordnet)
    assert not (tmp_path / "ro").exists()
