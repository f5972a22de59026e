"""End-to-end test of `python -m wsnn.prepare` on a tiny JSONL collection."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from wsnn.data import dataset as dataset_lib


def _collection(root):
    rows = [
        ("0", ["Dog", "dogs", "nikon_d70"], ["dog"]),
        ("1", ["cat", "IMG0042"], ["cat"]),
        ("2", ["dog", "cat"], ["dog", "cat"]),
        ("3", [], ["cat"]),
    ]
    (root / "img").mkdir()
    lines = []
    for image_id, tags, labels in rows:
        Image.fromarray(np.full((4, 4), int(image_id) * 40, np.uint8)).save(root / "img" / f"{image_id}.png")
        lines.append(json.dumps({"id": image_id, "image": f"img/{image_id}.png", "tags": tags,
                                 "labels": labels}))
    (root / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    (root / "labels.txt").write_text("dog\ncat\n")
    return root / "annotations.jsonl"


def test_prepare_cli_writes_dataset_and_prints_report(tmp_path, wordnet):
    path = _collection(tmp_path)
    workdir = tmp_path / "run"
    cache = wordnet.root.path.rsplit("/nltk_data/", 1)[0]
    result = subprocess.run(
        [sys.executable, "-m", "wsnn.prepare", "--source=jsonl", f"--data_dir={path}",
         f"--workdir={workdir}", "--embed_images", f"--wordnet_cache={cache}"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    ds = dataset_lib.load(str(workdir / "prepared"))
    assert ds.tag_names == ["cat", "dog"]
    np.testing.assert_array_equal(ds.user_tags.toarray(), [[0, 1], [1, 0], [1, 1], [0, 0]])
    np.testing.assert_array_equal(ds.label_to_tag, [1, 0])
    assert ds.image_array.shape == (4, 4, 4)
    out = result.stdout
    assert "images N        4" in out and "tag set size C  2" in out
    # UserTags here: labels dog=[1,0,1,0], cat=[0,1,1,1]; tags dog=[1,0,1,0], cat=[0,1,1,0].
    # dog AP = 1; cat AP = (1 + 1 + 3/4)/3 = 11/12 -> mAP = 23/24 = 0.958.
    user_line = next(l for l in out.splitlines() if l.startswith("UserTags"))
    assert user_line.split()[2] == "0.958"
    assert "RandomGuess" in out


def test_prepare_cli_bad_flag_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wsnn.prepare", "--source=jsonl", f"--data_dir={tmp_path / 'missing.jsonl'}"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("wsnn.prepare: error: --data_dir=")
