"""Tests for the preparation library (wsnn.data.preparation); the command line is tested in test_prepare."""

import pytest

from wsnn.data import preparation


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
