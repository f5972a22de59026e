"""Tests for the preparation library (wsnn.data.preparation); the command line is tested in test_prepare."""

import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

from wsnn import io_utils
from wsnn import wordnet as wordnet_lib
from wsnn.data import preparation
from wsnn.data.dataset import DataError


def test_config_requires_input_for_real_datasets():
    with pytest.raises(ValueError, match="--data_dir is required"):
        preparation.PrepareConfig(source="mirflickr")


def test_config_rejects_counts_below_one():
    with pytest.raises(ValueError, match=r"^--num_images=0: must be >= 1$"):
        preparation.PrepareConfig(num_images=0)


def test_settings_leave_out_the_workdir_and_resolve_paths(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    one = preparation.PrepareConfig(data_dir=str(tmp_path / "real"), workdir="a")
    other = preparation.PrepareConfig(data_dir=str(tmp_path / "link") + "/", workdir="b")
    assert "workdir" not in preparation.settings(one)
    assert preparation.settings(one) == preparation.settings(other)


def _collection(root, tags_by_image):
    os.makedirs(root)
    lines = []
    for i, tags in enumerate(tags_by_image):
        Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(root / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "tags": tags}) + "\n")
    (root / "annotations.jsonl").write_text("".join(lines))
    return str(root / "annotations.jsonl")


def _config(tmp_path, data_dir, **kwargs):
    return preparation.PrepareConfig(source="jsonl", data_dir=data_dir, workdir=str(tmp_path / "run"), **kwargs)


@pytest.fixture
def shared_wordnet(wordnet, monkeypatch):
    """The session's WordNet for `preparation.prepare` (loading it again takes seconds)."""
    monkeypatch.setattr(wordnet_lib, "get_wordnet", lambda *args, **kwargs: wordnet)


def test_no_tag_surviving_normalisation_is_one_line_before_anything_is_saved(tmp_path, shared_wordnet):
    path = _collection(tmp_path / "photos", [["nikond70", "dog"], [], [], []])
    # "nikond70" is not in WordNet; "dog" is on 1 of 4 images, under 0.5 of them.
    with pytest.raises(DataError) as info:
        preparation.prepare(_config(tmp_path, path, min_tag_fraction=0.5))
    assert str(info.value) == (f"{path}: no tag survives normalisation: of 2 distinct tags, 1 are not in WordNet "
                               "and the other 1 are on fewer than 2 images (--min_tag_fraction=0.5); the tagger "
                               "needs at least one tag")
    assert not (tmp_path / "run" / "prepared").exists()


def test_a_full_disk_names_the_prepared_directory(tmp_path, shared_wordnet, monkeypatch):
    path = _collection(tmp_path / "photos", [["dog"], ["dog", "cat"], ["cat"]])

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")   # what a write() raises: no file name

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError) as info:
        preparation.prepare(_config(tmp_path, path))
    prepared = os.path.abspath(tmp_path / "run" / "prepared")
    assert info.value.filename == prepared
    assert io_utils.os_error_line(info.value, "ignored") == f"{prepared}: No space left on device"
    assert os.listdir(tmp_path / "run") == []   # no temp directory left
