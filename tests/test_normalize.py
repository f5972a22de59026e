"""Tests for tag normalisation (wsnn.data.normalize), on real WordNet."""

import numpy as np
import pytest
import scipy.sparse

from wsnn.data import normalize
from wsnn.data.dataset import from_tag_lists


def _raw(tag_lists, labels=None, label_names=()):
    return from_tag_lists([str(i) for i in range(len(tag_lists))], tag_lists,
                          image_paths=[f"{i}.png" for i in range(len(tag_lists))],
                          labels=labels, label_names=label_names)


@pytest.mark.parametrize("typed, expected", [
    ("Dresses", "dress"), ("  BOOTS ", "boot"), ("t-shirts", "t-shirt"), ("New York", "new_york"),
    ("running", "running"), ("nikond70s", None), ("2009", None), ("", None),
])
def test_lemmatize(wordnet, typed, expected):
    assert normalize.lemmatize(typed, wordnet) == expected


def test_merge_columns_sets_each_new_tag_once():
    # Raw columns 0 and 2 map onto new column 1, raw column 1 is dropped, raw column 3 maps onto 0.
    user_tags = scipy.sparse.csr_matrix(np.array([[1, 1, 1, 0],
                                                  [0, 1, 0, 1],
                                                  [0, 0, 0, 0]], np.uint8))
    merged = normalize.merge_columns(user_tags, [1, -1, 1, 0], 3)
    assert merged.format == "csr" and merged.dtype == np.int32
    np.testing.assert_array_equal(merged.toarray(), [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_normalize_merges_drops_and_reports(wordnet):
    tag_lists = [
        ["Dress", "dresses", "nikond70s"],   # two spellings of one lemma -> one tag
        ["boot", "Boots", "2009"],
        ["dress", "sandal"],                 # sandal: used by 1 of 4 images
        [],                                  # no tags is valid
    ]
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]])
    raw = _raw(tag_lists, labels, ["dresses", "boot", "coat"])
    out = normalize.normalize(raw, wordnet, min_image_fraction=0.3)   # needs >= 1.2 images
    # sandal is rare (1 image < 1.2) and dropped; dress and boot are label tags anyway.
    assert out.tag_names == ["boot", "dress"]
    np.testing.assert_array_equal(out.user_tags.toarray(), [[0, 1], [1, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(out.label_to_tag, [1, 0, -1])
    report = out.info["normalization"]
    assert report["tokens_in"] == 8
    assert report["tokens_removed_not_in_wordnet"] == 2
    assert report["tokens_merged_same_lemma"] == 2
    assert report["tokens_removed_rare"] == 1
    assert report["tokens_out"] == 3
    assert report["tags_not_in_wordnet"] == 2
    assert report["labels_without_tag"] == ["coat"]
    np.testing.assert_array_equal(out.labels, labels)


def test_label_tags_are_kept_even_when_rare(wordnet):
    raw = _raw([["sandal"], ["dress"], ["dress"], ["dress"]], np.zeros((4, 1)), ["sandals"])
    out = normalize.normalize(raw, wordnet, min_image_fraction=0.5)
    assert out.tag_names == ["dress", "sandal"]
    assert out.label_to_tag.tolist() == [1]


def test_zero_fraction_keeps_all_wordnet_tags(wordnet):
    out = normalize.normalize(_raw([["cat"], ["dog"], ["xyzzyq"]]), wordnet, min_image_fraction=0)
    assert out.tag_names == ["cat", "dog"]


def test_bad_fraction_raises(wordnet):
    with pytest.raises(ValueError, match="min_image_fraction"):
        normalize.normalize(_raw([["cat"]]), wordnet, min_image_fraction=1.5)
