"""Tests for the refined-tags writer (wsnn.refined_tags)."""

import os

import numpy as np

from wsnn import refined_tags

IDS = ["a", "b", "c"]
TAG_NAMES = ["cat", "dog", "sea"]
USER_TAGS = [["dog"], [], ["sea", "cat"]]
SCORES = np.array([[0.1, 0.5, 0.9],
                   [0.7, 0.2, 0.7],
                   [0.25, 0.0004, 0.6]], np.float64)
TAG_SETS = np.array([[False, True, True],
                     [True, False, False],
                     [False, False, False]])


def test_with_tag_sets(tmp_path):
    npz, tsv = refined_tags.write(str(tmp_path), IDS, USER_TAGS, TAG_NAMES, SCORES, 2, tag_sets=TAG_SETS)
    assert (npz, tsv) == (str(tmp_path / "refined_tags.npz"), str(tmp_path / "refined_tags.tsv"))
    # Tag sets most probable first (a: sea before dog); top 2 with ties in vocabulary order (b: cat, sea);
    # user tags as given (c: sea,cat); scores as given, to 3 decimals.
    assert (tmp_path / "refined_tags.tsv").read_text() == (
        "id\tuser_tags\ttag_set\trefined_tags\n"
        "a\tdog\tsea,dog\tsea:0.900 dog:0.500\n"
        "b\t\tcat\tcat:0.700 sea:0.700\n"
        "c\tsea,cat\t\tsea:0.600 cat:0.250\n")
    with np.load(npz) as out:
        assert sorted(out.files) == ["ids", "scores", "tag_names"]
        assert list(out["ids"]) == IDS and list(out["tag_names"]) == TAG_NAMES
        assert out["scores"].dtype == np.float32
        np.testing.assert_array_equal(out["scores"], SCORES.astype(np.float32))
    assert sorted(os.listdir(tmp_path)) == ["refined_tags.npz", "refined_tags.tsv"]   # no temp files left


def test_without_tag_sets_and_top_k_beyond_the_vocabulary(tmp_path):
    refined_tags.write(str(tmp_path / "new"), IDS[:2], USER_TAGS[:2], TAG_NAMES, SCORES[:2].astype(np.float32), 5)
    assert (tmp_path / "new" / "refined_tags.tsv").read_text() == (
        "id\tuser_tags\trefined_tags\n"
        "a\tdog\tsea:0.900 dog:0.500 cat:0.100\n"
        "b\t\tcat:0.700 sea:0.700 dog:0.200\n")
