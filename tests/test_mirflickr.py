"""Tests of wsnn.data.mirflickr on tiny trees in the official MIRFlickr-25K layout."""

import io

import numpy as np
import pytest
from PIL import Image

from wsnn.data.dataset import DataError
from wsnn.data.mirflickr import POTENTIAL_CONCEPTS, R1_CONCEPTS, load_mirflickr

# Image 10 comes after 3: IDs sort as numbers, not as file names.
IDS = (1, 2, 3, 10)
PROCESSED = {1: "sky\nclouds\n", 2: "  dog \n\nsky\ndog\n", 3: "", 10: "night\n"}
RAW = {1: "Sky\nSan Francisco\n", 2: "Dog\n", 3: "", 10: "NIGHT \n"}
# Concept -> image IDs; 99 has no image, and concepts left out are empty files.
R1 = {"clouds": [1], "dog": [2, 99], "night": [10, 1]}
POTENTIAL = {"sky": [1, 2], "animals": [2], "night": [10]}


def _jpeg_bytes(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _write_annotations(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for concept in POTENTIAL_CONCEPTS:
        (folder / f"{concept}.txt").write_text("".join(f"{i}\n" for i in POTENTIAL.get(concept, [])))
    for concept in R1_CONCEPTS:
        (folder / f"{concept}_r1.txt").write_text("".join(f"{i}\n" for i in R1.get(concept, [])))


def _make_tree(root, annotations="mirflickr25k_annotations_v080"):
    """Writes the unzipped archives under `root`; returns the mirflickr/ folder."""
    mir = root / "mirflickr"
    for sub in ("meta/tags", "meta/tags_raw", "doc"):
        (mir / sub).mkdir(parents=True)
    for i in IDS:
        (mir / f"im{i}.jpg").write_bytes(_jpeg_bytes(i))
        (mir / "meta/tags" / f"tags{i}.txt").write_text(PROCESSED[i])
        (mir / "meta/tags_raw" / f"tags{i}.txt").write_text(RAW[i])
    (mir / "doc/common_tags.txt").write_text("sky 2\ndog 1\n")
    if annotations is not None:
        _write_annotations(root / annotations)
    return mir


def _column(names, name):
    return names.index(name)


def test_r1_processed(tmp_path):
    mir = _make_tree(tmp_path)
    data = load_mirflickr(tmp_path)
    assert data.ids == ["1", "2", "3", "10"]
    assert data.image_root == str(mir)
    assert data.image_paths == ["im1.jpg", "im2.jpg", "im3.jpg", "im10.jpg"]
    assert data.tag_names == ["clouds", "dog", "night", "sky"]
    np.testing.assert_array_equal(data.user_tags.toarray(), [
        [1, 0, 0, 1],
        [0, 1, 0, 1],
        [0, 0, 0, 0],  # an image with no tags keeps an empty row
        [0, 0, 1, 0],
    ])
    assert data.label_names == list(R1_CONCEPTS) and len(data.label_names) == 14
    expected = np.zeros((4, 14), np.uint8)
    expected[0, _column(data.label_names, "clouds")] = 1
    expected[1, _column(data.label_names, "dog")] = 1
    expected[3, _column(data.label_names, "night")] = 1
    expected[0, _column(data.label_names, "night")] = 1
    np.testing.assert_array_equal(data.labels, expected)
    assert (data.label_to_tag == -1).all()
    info = data.info
    assert info["source"] == "mirflickr"
    assert (info["label_set"], info["tag_kind"], info["strict"]) == ("r1", "processed", False)
    assert info["annotations_dir"] == str(tmp_path / "mirflickr25k_annotations_v080")
    assert (info["images_found"], info["images_kept"], info["corrupt_images"]) == (4, 4, 0)
    assert info["images_without_tags"] == 1
    assert info["annotation_ids_without_image"] == 1
    assert info["annotation_ids_without_image_examples"][0].endswith("dog_r1.txt:2")


def test_potential_raw(tmp_path):
    _make_tree(tmp_path)
    data = load_mirflickr(tmp_path, label_set="potential", tag_kind="raw")
    # Raw tags are kept as typed (case and spaces inside), only stripped.
    assert data.tag_names == ["Dog", "NIGHT", "San Francisco", "Sky"]
    assert [data.tags_of(k) for k in range(4)] == [["San Francisco", "Sky"], ["Dog"], [], ["NIGHT"]]
    assert data.label_names == list(POTENTIAL_CONCEPTS) and len(data.label_names) == 24
    expected = np.zeros((4, 24), np.uint8)
    expected[[0, 1], _column(data.label_names, "sky")] = 1
    expected[1, _column(data.label_names, "animals")] = 1
    expected[3, _column(data.label_names, "night")] = 1
    np.testing.assert_array_equal(data.labels, expected)
    assert (data.info["label_set"], data.info["tag_kind"]) == ("potential", "raw")
    assert data.info["annotation_ids_without_image"] == 0


@pytest.mark.parametrize("place", ["", "mirflickr25k_annotations_v080", "annotations", "mirflickr"])
def test_annotation_dir_discovery(tmp_path, place):
    _make_tree(tmp_path, annotations=place)
    data = load_mirflickr(tmp_path)
    assert data.info["annotations_dir"] == str(tmp_path / place)
    assert data.labels.sum() == 4


def test_data_dir_is_the_mirflickr_folder(tmp_path):
    mir = _make_tree(tmp_path, annotations="mirflickr")
    data = load_mirflickr(mir)
    assert data.ids == ["1", "2", "3", "10"] and data.image_root == str(mir)
    assert data.info["annotations_dir"] == str(mir)


def test_explicit_annotations_dir(tmp_path):
    _make_tree(tmp_path, annotations=None)
    _write_annotations(tmp_path / "elsewhere")
    data = load_mirflickr(tmp_path, annotations_dir=tmp_path / "elsewhere")
    assert data.labels.sum() == 4


def test_annotations_not_found(tmp_path):
    _make_tree(tmp_path, annotations=None)
    with pytest.raises(DataError, match="annotations_dir") as error:
        load_mirflickr(tmp_path)
    assert "mirflickr25k_annotations_v080" in str(error.value)


def test_missing_concept_file(tmp_path):
    _make_tree(tmp_path)
    (tmp_path / "mirflickr25k_annotations_v080" / "tree_r1.txt").unlink()
    with pytest.raises(DataError, match="tree_r1.txt"):
        load_mirflickr(tmp_path)


def test_non_integer_id(tmp_path):
    _make_tree(tmp_path)
    (tmp_path / "mirflickr25k_annotations_v080" / "baby_r1.txt").write_text("3\nim4\n")
    with pytest.raises(DataError, match=r"baby_r1\.txt:2"):
        load_mirflickr(tmp_path)


def test_missing_tag_file(tmp_path):
    mir = _make_tree(tmp_path)
    (mir / "meta/tags_raw/tags3.txt").unlink()
    load_mirflickr(tmp_path)  # the processed tags are all there
    with pytest.raises(DataError, match=r"tags_raw/tags3\.txt"):
        load_mirflickr(tmp_path, tag_kind="raw")


def test_non_utf8_tags(tmp_path):
    mir = _make_tree(tmp_path)
    (mir / "meta/tags/tags2.txt").write_bytes(b"dog\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"tags2\.txt:2"):
        load_mirflickr(tmp_path)


@pytest.mark.parametrize("corrupt", [b"not a jpeg at all", _jpeg_bytes(7)[:300]])
def test_corrupt_image(tmp_path, corrupt):
    mir = _make_tree(tmp_path)
    (mir / "im2.jpg").write_bytes(corrupt)
    data = load_mirflickr(tmp_path)
    assert data.ids == ["1", "3", "10"]
    assert data.image_paths == ["im1.jpg", "im3.jpg", "im10.jpg"]
    assert data.tag_names == ["clouds", "night", "sky"]  # "dog" was only on image 2
    assert data.labels[:, _column(data.label_names, "dog")].sum() == 0
    assert (data.info["images_found"], data.info["images_kept"]) == (4, 3)
    assert data.info["corrupt_images"] == 1
    # The dropped image's annotation is not an "ID without image".
    assert data.info["annotation_ids_without_image"] == 1
    with pytest.raises(DataError, match="im2.jpg"):
        load_mirflickr(tmp_path, strict=True)


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="label_set"):
        load_mirflickr(tmp_path, label_set="r2")
    with pytest.raises(ValueError, match="tag_kind"):
        load_mirflickr(tmp_path, tag_kind="clean")


def test_no_mirflickr_folder(tmp_path):
    with pytest.raises(DataError, match="mirflickr"):
        load_mirflickr(tmp_path)
