"""Tests for the tag-similarity command line (python -m wsnn.semantics)."""

import subprocess
import sys

from wsnn.data import dataset as dataset_lib
from wsnn.data.dataset import from_tag_lists


def test_cli_prints_timing_and_neighbours(tmp_path):
    tag_lists = [["dog", "cat"], ["dog"], ["cat", "bag"], ["bag", "handbag"], ["shoe", "boot"],
                 ["boot"], ["shoe", "sandal"], ["sandal", "boot"]]
    ds = from_tag_lists([str(i) for i in range(len(tag_lists))], tag_lists,
                        image_paths=[f"{i}.png" for i in range(len(tag_lists))])
    dataset_lib.save(ds, str(tmp_path / "prepared"))
    result = subprocess.run(
        [sys.executable, "-m", "wsnn.semantics", f"--data={tmp_path / 'prepared'}", "--alpha=0",
         "--tags=boot,dog", "--top_k=2"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tag similarity xi: 7 x 7, measure lin, alpha 0")
    # By co-occurrence alone boot's nearest tags are sandal and shoe (footwear), not bag words.
    assert lines[1].split()[0] == "boot" and lines[1].split()[1] in ("sandal", "shoe")
    assert "handbag" not in lines[1]
    bad = subprocess.run(
        [sys.executable, "-m", "wsnn.semantics", f"--data={tmp_path / 'prepared'}", "--alpha=0",
         "--tags=zebra"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "zebra not in the vocabulary" in bad.stderr
