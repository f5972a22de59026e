"""Tests for wsnn.io_utils: errors name their path, the directory lock, JSON that names its file."""

import errno
import json
import os

import pytest

from wsnn import io_utils


def test_a_write_that_fails_unnamed_names_its_target(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text('{"old": 1}')

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        io_utils.write_json(str(path), {"new": 2})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert io_utils.os_error_line(info.value) == f"{path}: No space left on device"
    assert json.loads(path.read_text()) == {"old": 1} and os.listdir(tmp_path) == ["out.json"]


def test_read_json_names_the_file(tmp_path):
    assert io_utils.read_json(str(tmp_path / "missing.json"), default="none") == "none"
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'bad.json'}: not valid JSON \(Expecting value at line 1 "
                                         r"column 7\)$"):
        io_utils.read_json(str(tmp_path / "bad.json"))
