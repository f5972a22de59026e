"""Tests for annotating image files with an exported tagger (wsnn.annotate)."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wsnn import annotate, models, serving, tagger

TAGS = ["dog", "cat", "sky", "sea", "boot"]
SIZE = 8


def _model(seed=0):
    model = models.build_model("small_cnn", len(TAGS), (SIZE, SIZE, 3))
    rng = np.random.default_rng(seed)
    # Spread the head's outputs so that probabilities and rankings differ between images.
    kernel, bias = model.get_layer("tag_probs").get_weights()
    model.get_layer("tag_probs").set_weights([rng.normal(0, 3, kernel.shape).astype(np.float32), bias])
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An exported model, and PNG files (lossless) with the probabilities the in-memory model gives them."""
    root = tmp_path_factory.mktemp("annotate")
    model = _model()
    serving.export(model, TAGS, SIZE, 3, str(root / "export"))
    rng = np.random.default_rng(1)
    arrays = rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    names = ["a.png", "b.png", "c.png", "d.png", "sub/e.png", "sub/f.png"]
    os.makedirs(root / "images" / "sub")
    for name, array in zip(names, arrays):
        Image.fromarray(array).save(root / "images" / name)
    probs = model(arrays, training=False)["tag_probs"].numpy()
    expected = {str(root / "images" / n): p for n, p in zip(names, probs)}
    return root, expected


def _check(results, expected, top_k):
    for r in results:
        p = expected[r["image"]]
        order = np.argsort(-p, kind="stable")[:top_k]
        assert [t["tag"] for t in r["tags"]] == [TAGS[j] for j in order]
        np.testing.assert_allclose([t["score"] for t in r["tags"]], p[order], atol=1e-5)


def test_top_k_matches_model_for_files_directory_and_glob(exported):
    root, expected = exported
    images = root / "images"
    args = [str(images / "c.png"), str(images / "sub"), str(images / "*.png")]
    results, failures = annotate.annotate(str(root / "export"), args, top_k=3, batch_size=4)
    assert failures == []
    # c.png once (given as a file, then matched by the glob again); the directory's files sorted.
    assert [r["image"] for r in results] == [str(images / n) for n in
                                            ("c.png", "sub/e.png", "sub/f.png", "a.png", "b.png", "d.png")]
    _check(results, expected, 3)
    # A version directory works too; top_k is clipped to the vocabulary, beyond the export's top_k.
    everything, _ = annotate.annotate(str(root / "export" / "1"), [str(images)], top_k=50)
    assert len(everything) == 6 and all(len(r["tags"]) == len(TAGS) for r in everything)
    _check(everything, expected, len(TAGS))


def test_threshold_mode(exported):
    root, expected = exported
    threshold = float(np.median(np.stack(list(expected.values()))))
    results, _ = annotate.annotate(str(root / "export"), [str(root / "images")], top_k=1, threshold=threshold)
    for r in results:
        p = expected[r["image"]]
        want = [TAGS[j] for j in np.argsort(-p, kind="stable") if p[j] >= threshold]
        assert [t["tag"] for t in r["tags"]] == want
    assert sum(len(r["tags"]) for r in results) > len(results)   # not just top_k=1
    with pytest.raises(ValueError, match="threshold"):
        annotate.annotate(str(root / "export"), [str(root / "images")], threshold=1.5)


def test_formats(exported):
    root, expected = exported
    results, _ = annotate.annotate(str(root / "export"), [str(root / "images")], top_k=2)
    assert json.loads(annotate.format_results(results, "json")) == results
    lines = annotate.format_results(results, "jsonl").splitlines()
    assert [json.loads(line) for line in lines] == results
    table = annotate.format_results(results, "table").splitlines()
    width = max(len(r["image"]) for r in results)
    for line, r in zip(table, results):
        assert line[:width].rstrip() == r["image"] and line[width:width + 2] == "  "
        tags = r["tags"]
        assert line[width + 2:] == f"{tags[0]['tag']} {tags[0]['score']:.2f}, {tags[1]['tag']} {tags[1]['score']:.2f}"


def test_library_errors(exported, tmp_path):
    root, _ = exported
    with pytest.raises(ValueError, match="no images given"):
        annotate.annotate(str(root / "export"), [])
    with pytest.raises(ValueError, match="no such directory"):
        annotate.annotate(str(tmp_path / "missing"), [str(root / "images")])
    os.makedirs(tmp_path / "empty")
    results, failures = annotate.annotate(str(root / "export"), [str(tmp_path / "empty"), str(tmp_path / "*.jpg")])
    assert results == [] and [f.kind for f in failures] == ["unmatched", "unmatched"]


def test_the_commands_import_tensorflow_only_when_they_start_it():
    # `main` starts TensorFlow quietly (wsnn.tf_start); importing a command must not load it first.
    script = "import sys\nimport wsnn.annotate, wsnn.blend, wsnn.refine\nprint('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, check=True)
    assert result.stdout.strip() == "False"


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # quiet by itself
    return subprocess.Popen([sys.executable, "-m", "wsnn.annotate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_cli_skips_bad_files_and_reports_model_errors(exported, tmp_path):
    root, expected = exported
    corrupt, text = tmp_path / "corrupt.png", tmp_path / "notes.txt"
    corrupt.write_bytes(open(root / "images" / "a.png", "rb").read()[:40])   # truncated PNG
    text.write_text("not an image\n")
    truncated = tmp_path / "truncated"
    shutil.copytree(root / "export" / "1", truncated)
    os.remove(truncated / "variables" / "variables.index")
    good = [str(root / "images" / "a.png"), str(root / "images" / "sub")]
    # The three runs overlap: each spends most of its time importing TensorFlow.
    runs = [_cli(f"--model={root / 'export'}", "--top_k=2", good[0], str(corrupt), str(text), good[1],
                 str(tmp_path / "nothing*.png")),
            _cli(f"--model={tmp_path / 'missing'}", good[0]),
            _cli(f"--model={truncated}", good[0])]
    (out, err), (_, missing_err), (_, truncated_err) = [p.communicate(timeout=120) for p in runs]

    assert runs[0].returncode == 1, err
    printed = [line.split("  ")[0] for line in out.splitlines()]
    assert printed == [good[0], str(root / "images" / "sub" / "e.png"), str(root / "images" / "sub" / "f.png")]
    ours = [line for line in err.splitlines() if line.startswith("wsnn.annotate:")]
    assert len(ours) == 3
    # Quiet start: none of TensorFlow's start-up notices, only ours and the one line about the CPU.
    assert [line for line in err.splitlines() if line not in ours] == (
        [] if tf.config.list_physical_devices("GPU") else
        [f"no GPU found: TensorFlow runs on the CPU ({os.cpu_count()} cores)"]), err
    assert any(line.startswith(f"wsnn.annotate: skipped {corrupt}: ") for line in ours)
    assert any(line.startswith(f"wsnn.annotate: skipped {text}: ") for line in ours)
    assert any(line.startswith(f"wsnn.annotate: error: {tmp_path / 'nothing*.png'}: ") for line in ours)

    for run, err, message in ((runs[1], missing_err, "no such directory"),
                              (runs[2], truncated_err, "variables/variables.index is missing")):
        ours = [line for line in err.splitlines() if line.startswith("wsnn.annotate:")]
        assert run.returncode == 2, err
        assert len(ours) == 1 and ours[0].startswith("wsnn.annotate: error: --model=") and message in ours[0]


def test_files_over_the_limit_or_not_decodable_are_skipped(exported, tmp_path):
    root, expected = exported
    Image.new("1", (13000, 13000)).save(tmp_path / "huge.png")           # about 20 KB
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "a.tif")
    Image.new("CMYK", (SIZE, SIZE), (0, 50, 100, 0)).save(tmp_path / "cmyk.jpg", "JPEG")
    good = str(root / "images" / "a.png")
    args = [good, str(tmp_path / "huge.png"), str(tmp_path / "a.tif"), str(tmp_path / "cmyk.jpg")]
    results, failures = annotate.annotate(str(root / "export"), args, top_k=2)
    assert [r["image"] for r in results] == [good, str(tmp_path / "cmyk.jpg")]
    _check(results[:1], expected, 2)
    assert failures == [
        tagger.Failure(str(tmp_path / "huge.png"), "image is 13000 x 13000 pixels (width x height), "
                       "more than the limit of 40000000 pixels", "skipped"),
        tagger.Failure(str(tmp_path / "a.tif"), "cannot read the image size: not a JPEG, PNG, GIF, BMP or "
                       "WebP file", "skipped")]
    # The limit comes from the export's metadata.
    small = serving.export(_model(), TAGS, SIZE, 3, str(tmp_path / "small"), max_pixels=SIZE * SIZE - 1)
    results, failures = annotate.annotate(small, [good])
    assert results == [] and failures[0].reason == (
        f"image is {SIZE} x {SIZE} pixels (width x height), more than the limit of {SIZE * SIZE - 1} pixels")


def test_damaged_model_is_one_line_naming_the_file_and_status_2(exported, tmp_path):
    root, _ = exported
    image = str(root / "images" / "a.png")
    for name in ("cut", "json", "short"):
        shutil.copytree(root / "export" / "1", tmp_path / name)
    data = tmp_path / "cut" / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    # The CLI once printed a 42-line traceback with status 1 for this one.
    cut = _cli(f"--model={tmp_path / 'cut'}", image)
    # main() prints a ValueError from annotate() as one line and returns 2.
    metadata_path = tmp_path / "json" / "assets" / "wsnn.json"
    metadata_path.write_text(metadata_path.read_text()[:30])
    with pytest.raises(ValueError, match=f"^{re.escape(str(metadata_path))}: not valid JSON \\("):
        annotate.annotate(str(tmp_path / "json"), [image])
    metadata_path = tmp_path / "short" / "assets" / "wsnn.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["tag_names"] = metadata["tag_names"][:2]
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=f"^{re.escape(str(metadata_path))}: lists 2 tag names, but the model "
                                         f"outputs {len(TAGS)} probabilities"):
        annotate.annotate(str(tmp_path / "short"), [image])

    out, err = cut.communicate(timeout=120)
    assert cut.returncode == 2 and out == "", err
    lines = [line for line in err.splitlines() if line.startswith("wsnn.annotate:") or "Traceback" in line]
    assert lines == [f"wsnn.annotate: error: {data}: cannot load the SavedModel (IndexError: Read less bytes "
                     "than requested); export it again"], err


class _FifoUnblocker:
    """Opens the FIFOs for writing (a moment) if a reader still waits on them after `delay` seconds.

    Code that opens a FIFO for reading blocks until a writer comes; this releases such a reader
    (it then reads end-of-file), so that a regression fails the test instead of hanging it.
    """

    def __init__(self, fifos, delay=10.0):
        self.fifos, self.delay, self.fired = fifos, delay, False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        if self.stop.wait(self.delay):
            return
        while not self.stop.wait(0.2):
            for fifo in self.fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO: no reader waits
                    self.fired = True
                except OSError:
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_fifos_are_skipped_without_blocking(exported, tmp_path):
    root, expected = exported
    os.makedirs(tmp_path / "dir")
    good = tmp_path / "dir" / "a.png"
    shutil.copy(root / "images" / "a.png", good)
    in_dir, direct = tmp_path / "dir" / "pipe.png", tmp_path / "direct.jpg"
    os.mkfifo(in_dir)
    os.mkfifo(direct)
    start = time.perf_counter()
    with _FifoUnblocker([str(in_dir), str(direct)]) as unblocker:
        results, failures = annotate.annotate(str(root / "export"), [str(tmp_path / "dir"), str(direct)], top_k=2)
    assert not unblocker.fired, "annotate blocked on a FIFO"
    assert time.perf_counter() - start < 10
    assert [r["image"] for r in results] == [str(good)]
    assert sorted(failures) == sorted([tagger.Failure(str(in_dir), "not a regular file", "skipped"),
                                       tagger.Failure(str(direct), "not a regular file", "skipped")])


def test_a_huge_sparse_file_is_refused_by_its_size_before_reading(exported, tmp_path):
    root, _ = exported
    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(400 << 20)   # 400 MiB of holes: over 8 bytes x 40 million pixels + 16 MiB
    start = time.perf_counter()
    results, failures = annotate.annotate(str(root / "export"), [str(sparse)])
    assert time.perf_counter() - start < 10
    assert results == [] and failures == [tagger.Failure(
        str(sparse), "419,430,400 bytes, more than the 336,777,216 that an image of at most 40,000,000 pixels "
        "needs", "skipped")]


NOT_UTF8 = os.fsdecode(b"\xff\xfe.png")  # the name's bytes as surrogate escapes, as os.listdir gives them


def test_names_that_are_not_utf8_are_written_escaped_in_every_format():
    results = [{"image": f"/photos/{NOT_UTF8}", "tags": [{"tag": "dog", "score": 0.5}]}]
    for output_format in annotate.FORMATS:
        text = annotate.format_results(results, output_format)
        text.encode("utf-8")   # strict: no lone surrogate left
        assert "/photos/\\xff\\xfe.png" in (text if output_format == "table" else text.replace("\\\\", "\\"))
    assert json.loads(annotate.format_results(results, "json"))[0]["image"] == "/photos/\\xff\\xfe.png"
    assert annotate.format_results([dict(results[0], image="/photos/café.png")], "jsonl") == (
        '{"image": "/photos/café.png", "tags": [{"tag": "dog", "score": 0.5}]}\n')
    failure = tagger.Failure(f"/photos/{NOT_UTF8}", "not a regular file", "skipped")
    assert annotate.failure_line(failure) == "wsnn.annotate: skipped /photos/\\xff\\xfe.png: not a regular file"


def test_cli_writes_valid_utf8_for_a_name_that_is_not(exported, tmp_path):
    root, _ = exported
    os.makedirs(tmp_path / "photos")
    shutil.copy(root / "images" / "a.png", os.path.join(str(tmp_path / "photos"), NOT_UTF8))
    # Under a strict UTF-8 stdout this was a UnicodeEncodeError; under surrogateescape a raw 0xFF.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONIOENCODING="utf-8")
    result = subprocess.run([sys.executable, "-m", "wsnn.annotate", f"--model={root / 'export'}", "--format=jsonl",
                             str(tmp_path / "photos")], capture_output=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.decode("utf-8"))["image"] == os.path.join(str(tmp_path / "photos"),
                                                                             "\\xff\\xfe.png")
