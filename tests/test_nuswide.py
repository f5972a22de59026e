"""Tests of wsnn.data.nuswide on tiny trees in the official NUS-WIDE layout."""

import io
import logging

import numpy as np
import pytest
from PIL import Image

from wsnn.data.dataset import DataError
from wsnn.data.nuswide import load_nuswide

CONCEPTS = ["animal", "beach", "dog"]
# (Imagelist line, All_Tags line, labels in CONCEPTS order, whether the image file exists)
ENTRIES = [
    (r"C:\ImageData\Flickr\actor\0001_111.jpg", "111 Actor movie", "000", True),
    (r"actor\0002_222.jpg", "222 film", "000", False),
    (r"animal\0001_333.jpg", "333", "101", True),
    (r"C:\ImageData\Flickr\animal\0002_444.jpg", "444   dog\tcute  Dog", "101", True),
    (r"beach\0001_555.jpg", "555 sea beach", "010", True),
]


def _jpeg_bytes(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _write_lines(path, lines, newline="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode("utf-8"))


def _make_tree(root, image_dir=None):
    """Writes the release under `root`, the images under `image_dir` (default root/Flickr)."""
    image_dir = image_dir or root / "Flickr"
    # The official list was written on Windows: CRLF line ends.
    _write_lines(root / "ImageList/Imagelist.txt", [e[0] for e in ENTRIES], newline="\r\n")
    _write_lines(root / "NUS_WID_Tags/All_Tags.txt", [e[1] for e in ENTRIES])
    _write_lines(root / "ConceptsList/Concepts81.txt", CONCEPTS)
    for j, concept in enumerate(CONCEPTS):
        _write_lines(root / f"Groundtruth/AllLabels/Labels_{concept}.txt", [e[2][j] for e in ENTRIES])
    for k, (line, _, _, exists) in enumerate(ENTRIES):
        if exists:
            path = image_dir.joinpath(*line.split("\\")[-2:])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg_bytes(k))
    return image_dir


def test_contents(tmp_path):
    image_dir = _make_tree(tmp_path)
    data = load_nuswide(tmp_path)
    assert data.ids == ["111", "333", "444", "555"]
    assert data.image_root == str(image_dir)
    assert data.image_paths == ["actor/0001_111.jpg", "animal/0001_333.jpg",
                                "animal/0002_444.jpg", "beach/0001_555.jpg"]
    # Tags as in the file: case kept, "film" gone with the missing image 222.
    assert data.tag_names == ["Actor", "Dog", "beach", "cute", "dog", "movie", "sea"]
    np.testing.assert_array_equal(data.user_tags.toarray(), [
        [1, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0],  # 333 has no tags and keeps an empty row
        [0, 1, 0, 1, 1, 0, 0],
        [0, 0, 1, 0, 0, 0, 1],
    ])
    assert data.label_names == CONCEPTS
    np.testing.assert_array_equal(data.labels, [[0, 0, 0], [1, 0, 1], [1, 0, 1], [0, 1, 0]])
    assert (data.label_to_tag == -1).all()
    info = data.info
    assert info["source"] == "nuswide" and info["strict"] is False
    assert (info["images_listed"], info["images_kept"]) == (5, 4)
    assert info["missing_images"] == 1
    assert info["missing_examples"] == ["actor/0002_222.jpg"]
    assert (info["corrupt_images"], info["bad_label_lines"], info["duplicate_ids"]) == (0, 0, 0)
    assert info["images_without_tags"] == 1


def test_image_dir_option(tmp_path):
    image_dir = _make_tree(tmp_path / "meta", image_dir=tmp_path / "pictures")
    data = load_nuswide(tmp_path / "meta", image_dir=image_dir)
    assert data.image_root == str(image_dir) and data.info["image_dir"] == str(image_dir)
    assert data.ids == ["111", "333", "444", "555"]


def test_bad_label_line(tmp_path, caplog):
    _make_tree(tmp_path)
    _write_lines(tmp_path / "Groundtruth/AllLabels/Labels_dog.txt", ["0", "0", "1", "-1130179", " 0 "])
    with caplog.at_level(logging.WARNING):
        data = load_nuswide(tmp_path)
    assert "Labels_dog.txt:4" in caplog.text
    np.testing.assert_array_equal(data.labels[:, 2], [0, 1, 0, 0])  # 444's bad line reads as 0
    assert data.info["bad_label_lines"] == 1
    assert data.info["bad_label_examples"][0].endswith("Labels_dog.txt:4: '-1130179'")


def test_corrupt_image(tmp_path):
    image_dir = _make_tree(tmp_path)
    (image_dir / "animal/0001_333.jpg").write_bytes(_jpeg_bytes(9)[:300])
    data = load_nuswide(tmp_path)
    assert data.ids == ["111", "444", "555"]
    np.testing.assert_array_equal(data.labels, [[0, 0, 0], [1, 0, 1], [0, 1, 0]])
    assert data.info["corrupt_images"] == 1 and data.info["images_kept"] == 3
    assert "Imagelist.txt:3" in data.info["corrupt_examples"][0]
    with pytest.raises(DataError, match=r"Imagelist\.txt:3"):
        load_nuswide(tmp_path, strict=True)


def test_tag_count_mismatch(tmp_path):
    _make_tree(tmp_path)
    _write_lines(tmp_path / "NUS_WID_Tags/All_Tags.txt", [e[1] for e in ENTRIES] + ["666 extra"])
    with pytest.raises(DataError, match=r"All_Tags\.txt: 6 lines, but the image list has 5"):
        load_nuswide(tmp_path)


def test_label_count_mismatch(tmp_path):
    _make_tree(tmp_path)
    _write_lines(tmp_path / "Groundtruth/AllLabels/Labels_beach.txt", ["0", "0", "0", "1"])
    with pytest.raises(DataError, match=r"Labels_beach\.txt: 4 lines, but the image list has 5"):
        load_nuswide(tmp_path)


def test_id_mismatch(tmp_path):
    _make_tree(tmp_path)
    lines = [e[1] for e in ENTRIES]
    lines[2], lines[3] = lines[3], lines[2]
    _write_lines(tmp_path / "NUS_WID_Tags/All_Tags.txt", lines)
    with pytest.raises(DataError, match=r"All_Tags\.txt:3: photo id 444.*Imagelist\.txt:3"):
        load_nuswide(tmp_path)


def test_missing_label_file(tmp_path):
    _make_tree(tmp_path)
    (tmp_path / "Groundtruth/AllLabels/Labels_dog.txt").unlink()
    with pytest.raises(DataError, match=r"Labels_dog\.txt"):
        load_nuswide(tmp_path)


def test_malformed_list_line(tmp_path):
    _make_tree(tmp_path)
    _write_lines(tmp_path / "ImageList/Imagelist.txt", [e[0] for e in ENTRIES[:4]] + ["beach.jpg"])
    with pytest.raises(DataError, match=r"Imagelist\.txt:5"):
        load_nuswide(tmp_path)


def test_repeated_photo_id_kept_once(tmp_path, caplog):
    image_dir = _make_tree(tmp_path)
    entries = ENTRIES + [(r"dog\0001_444.jpg", "444 puppy", "001", True)]
    _write_lines(tmp_path / "ImageList/Imagelist.txt", [e[0] for e in entries])
    _write_lines(tmp_path / "NUS_WID_Tags/All_Tags.txt", [e[1] for e in entries])
    for j, concept in enumerate(CONCEPTS):
        _write_lines(tmp_path / f"Groundtruth/AllLabels/Labels_{concept}.txt",
                     [e[2][j] for e in entries])
    (image_dir / "dog").mkdir()
    (image_dir / "dog/0001_444.jpg").write_bytes(_jpeg_bytes(6))
    with caplog.at_level(logging.WARNING):
        data = load_nuswide(tmp_path)
    assert data.ids == ["111", "333", "444", "555"] and "puppy" not in data.tag_names
    assert data.info["duplicate_ids"] == 1
    assert "Imagelist.txt:6" in caplog.text


def test_non_utf8_tags(tmp_path):
    _make_tree(tmp_path)
    lines = [e[1].encode() for e in ENTRIES]
    lines[1] = b"222 caf\xe9"
    (tmp_path / "NUS_WID_Tags/All_Tags.txt").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"All_Tags\.txt:2"):
        load_nuswide(tmp_path)
