"""Tests of wsnn.data.jsonl.load_jsonl on tiny JSONL collections with 4x4 grey PNGs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wsnn.data import images
from wsnn.data.dataset import DataError
from wsnn.data.jsonl import load_jsonl

# Image name -> the constant grey value of its 4x4 pixels.
PIXELS = {"a": 10, "b": 120, "c": 250}


def _write_png(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def _make_root(tmp_path, lines, labels=None):
    """Writes img/{a,b,c}.png, annotations.jsonl (objects dumped, strings as-is) and labels.txt."""
    root = tmp_path / "set"
    for name, value in PIXELS.items():
        _write_png(str(root / "img" / f"{name}.png"), value)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (root / "annotations.jsonl").write_text(text, encoding="utf-8")
    if labels is not None:
        (root / "labels.txt").write_text("".join(f"{l}\n" for l in labels))
    return root / "annotations.jsonl"


FULL = [
    {"image": "img/a.png", "tags": [" Sea ", "holiday", "Sea"], "labels": ["sky", "sea"],
     "user": "alice", "id": "beach-001"},
    {"image": "img/b.png", "tags": [], "labels": [], "user": 7},
    {"image": "img/c.png", "tags": ["nikon", "holiday", "  "], "labels": ["beach"]},
]


def test_full_collection(tmp_path):
    path = _make_root(tmp_path, FULL, labels=["sea", "sky", "beach"])
    ds = load_jsonl(str(path))
    root = os.path.dirname(os.path.abspath(str(path)))
    # The default id is the image path.
    assert ds.ids == ["beach-001", "img/b.png", "img/c.png"]
    # Tags as typed but stripped; whitespace-only tags dropped; the vocabulary sorted.
    assert ds.tag_names == ["Sea", "holiday", "nikon"]
    np.testing.assert_array_equal(ds.user_tags.toarray(), [[1, 1, 0], [0, 0, 0], [0, 1, 1]])
    # Label columns follow labels.txt, not sorted order.
    assert ds.label_names == ["sea", "sky", "beach"]
    np.testing.assert_array_equal(ds.labels, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    assert ds.labels.dtype == np.uint8
    np.testing.assert_array_equal(ds.label_to_tag, [-1, -1, -1])
    assert ds.users == ["alice", "7", ""]
    assert ds.image_root == root
    assert ds.image_paths == ["img/a.png", "img/b.png", "img/c.png"]
    assert ds.image_array is None
    assert ds.image_path(2) == os.path.join(root, "img/c.png")
    assert ds.info["source"] == "jsonl"
    assert ds.info["path"] == os.path.abspath(str(path))
    assert ds.info["corrupt_images"] == 0
    assert ds.info["corrupt_examples"] == []


def test_labels_sorted_without_labels_txt(tmp_path):
    path = _make_root(tmp_path, FULL)
    ds = load_jsonl(str(path))
    assert ds.label_names == ["beach", "sea", "sky"]
    np.testing.assert_array_equal(ds.labels, [[0, 1, 1], [0, 0, 0], [1, 0, 0]])


def test_labels_txt_without_any_line_labels(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png", "tags": ["x"]}], labels=["p", "q"])
    ds = load_jsonl(str(path))
    assert ds.label_names == ["p", "q"]
    np.testing.assert_array_equal(ds.labels, [[0, 0]])


def test_minimal_lines_no_labels_no_users(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/b.png"}, {"image": "img/a.png", "tags": ["t"]}])
    ds = load_jsonl(str(path))
    assert ds.ids == ["img/b.png", "img/a.png"]
    assert ds.tag_names == ["t"]
    np.testing.assert_array_equal(ds.user_tags.toarray(), [[0], [1]])
    assert ds.labels is None
    assert ds.label_names == []
    assert ds.users is None


def test_embed_images(tmp_path):
    path = _make_root(tmp_path, FULL, labels=["sea", "sky", "beach"])
    ds = load_jsonl(str(path), embed_images=True)
    assert ds.image_paths is None and ds.image_root is None
    assert ds.image_array.dtype == np.uint8
    assert ds.image_array.shape == (3, 4, 4)
    for i, name in enumerate("abc"):
        np.testing.assert_array_equal(ds.image_array[i], np.full((4, 4), PIXELS[name], np.uint8))


def test_embed_images_needs_one_shape(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png"}, {"image": "img/big.png"}])
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(str(path.parent / "img" / "big.png"))
    assert load_jsonl(str(path)).ids == ["img/a.png", "img/big.png"]
    with pytest.raises(DataError) as info:
        load_jsonl(str(path), embed_images=True)
    img = path.parent / "img"
    assert str(info.value) == (f"cannot embed images of different sizes ({img / 'a.png'} is 4 x 4, "
                               f"{img / 'big.png'} is 4 x 5; width x height); embed only collections "
                               "whose images share one size")


def test_embed_images_names_grey_and_colour_examples(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png"}, {"image": "img/rgb.png"}, {"image": "img/b.png"}])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(str(path.parent / "img" / "rgb.png"))
    with pytest.raises(DataError) as info:
        load_jsonl(str(path), embed_images=True)
    img = path.parent / "img"
    assert str(info.value) == (f"cannot embed grey and colour images together: 2 grey (e.g. {img / 'a.png'}), "
                               f"1 colour (e.g. {img / 'rgb.png'}); embed only collections of one kind")


def test_embedded_16_bit_png_equals_tensorflows_decode(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png"}, {"image": "img/deep.png"}])
    values = np.array([[0, 255, 256, 1000], [3000, 20000, 40000, 65535]] * 2, np.uint16)
    deep = Image.new("I;16", (4, 4))
    deep.frombytes(values.astype("<u2").tobytes())
    deep.save(str(path.parent / "img" / "deep.png"))
    ds = load_jsonl(str(path), embed_images=True)
    served = tf.io.decode_image((path.parent / "img" / "deep.png").read_bytes(), channels=1)
    np.testing.assert_array_equal(ds.image_array[1], served.numpy()[..., 0])
    # TensorFlow keeps the high byte; Pillow's conversion clipped these to 255.
    np.testing.assert_array_equal(ds.image_array[1], values >> 8)


def test_blank_lines_skipped(tmp_path):
    lines = [FULL[0], "", "   ", FULL[1], "\t", FULL[2]]
    path = _make_root(tmp_path, lines, labels=["sea", "sky", "beach"])
    ds = load_jsonl(str(path))
    assert ds.ids == ["beach-001", "img/b.png", "img/c.png"]
    np.testing.assert_array_equal(ds.user_tags.toarray(), [[1, 1, 0], [0, 0, 0], [0, 1, 1]])


def test_blank_line_keeps_line_numbers(tmp_path):
    path = _make_root(tmp_path, [FULL[1], "", "{broken"])
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value).startswith(f"{path}:3: malformed JSON")


GOOD = {"image": "img/a.png", "tags": ["ok"]}


@pytest.mark.parametrize("line,message", [
    ('{"image": "img/b.png", "tags": ["x"]', "malformed JSON"),
    ("not json at all", "malformed JSON"),
    ('["img/b.png"]', "expected a JSON object, got list"),
    ('"img/b.png"', "expected a JSON object, got str"),
    ({"image": "img/missing.png"}, "image file not found"),
    ({"tags": ["x"]}, "'image' must be a non-empty path string"),
    ({"image": ""}, "'image' must be a non-empty path string"),
    ({"image": 3}, "'image' must be a non-empty path string"),
    ({"image": "../outside.png"}, "is outside the dataset root"),
    ({"image": "img/../../outside.png"}, "is outside the dataset root"),
    ({"image": "img/b.png", "tags": "sky"}, "'tags' must be a list of strings"),
    ({"image": "img/b.png", "tags": ["sky", 1]}, "'tags' must be a list of strings"),
    ({"image": "img/b.png", "labels": "sea"}, "'labels' must be a list of strings"),
    ({"image": "img/b.png", "tag": ["sky"]}, "unknown field(s) ['tag']"),
    ({"image": "img/b.png", "labels": ["moon"]}, "label(s) ['moon'] not in"),
    ({"image": "img/b.png", "id": ["b"]}, "'id' must be a string or an integer"),
    ({"image": "img/b.png", "user": {"name": "x"}}, "'user' must be a string or an integer"),
    ({"image": "img/b.png", "id": True}, "'id' must be a string or an integer"),
    ({"image": "img/b.png", "id": "b\tc"}, "id 'b\\tc' holds a tab or line break, which would break "
                                           "refined_tags.tsv"),
    ({"image": "img/b.png", "id": "b\nc"}, "id 'b\\nc' holds a tab or line break"),
    ({"image": "img/b.png", "id": "b\u2028c"}, "holds a tab or line break"),
    ({"image": "img/b\u0000.png"}, "'image' holds a NUL character: 'img/b\\x00.png'"),
])
def test_bad_line(tmp_path, line, message):
    path = _make_root(tmp_path, [GOOD, line], labels=["sea", "sky"])
    # The outside image exists, so only the root check can reject it.
    _write_png(str(tmp_path / "outside.png"), 1)
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    text = str(info.value)
    assert text.startswith(f"{path}:2: ")
    assert message in text


def test_tab_in_image_path_refused_as_default_id(tmp_path):
    path = _make_root(tmp_path, [GOOD, {"image": "img/t\tb.png"}])
    _write_png(str(path.parent / "img" / "t\tb.png"), 1)
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value) == (f"{path}:2: image path (the default id) 'img/t\\tb.png' holds a tab or line "
                               "break, which would break refined_tags.tsv")


def test_byte_order_mark_accepted(tmp_path):
    path = _make_root(tmp_path, [])
    path.write_bytes("\ufeff".encode("utf-8") + json.dumps(FULL[0]).encode("utf-8") + b"\n")
    (path.parent / "labels.txt").write_bytes("\ufeffsea\nsky\n".encode("utf-8"))
    ds = load_jsonl(str(path))
    assert ds.ids == ["beach-001"] and ds.label_names == ["sea", "sky"]
    np.testing.assert_array_equal(ds.labels, [[1, 1]])


def test_absolute_image_path_elsewhere(tmp_path):
    outside = tmp_path / "elsewhere" / "x.png"
    _write_png(str(outside), 1)
    path = _make_root(tmp_path, [GOOD, {"image": str(outside)}])
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value).startswith(f"{path}:2: image '{outside}' is outside the dataset root")


def test_absolute_image_path_inside_root(tmp_path):
    path = _make_root(tmp_path, [{"image": str(tmp_path / "set" / "img" / "c.png")}])
    ds = load_jsonl(str(path))
    assert ds.image_paths == ["img/c.png"]


def test_non_utf8_tag(tmp_path):
    path = _make_root(tmp_path, [GOOD])
    with open(path, "ab") as f:
        f.write(b'{"image": "img/b.png", "tags": ["caf\xe9", "ok"]}\n')
        f.write(b'{"image": "img/c.png", "tags": ["\xff"]}\n')
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value).startswith(f"{path}:2: not UTF-8 text")
    assert "\\xe9" in str(info.value)


def test_lone_surrogate_escape_in_tag(tmp_path):
    path = _make_root(tmp_path, [GOOD, '{"image": "img/b.png", "tags": ["\\udcff"]}'])
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value).startswith(f"{path}:2: 'tags' holds a string that is not valid Unicode")


def test_non_ascii_utf8_tag_is_fine(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png", "tags": ["café", "日本"]}])
    ds = load_jsonl(str(path))
    assert ds.tag_names == ["café", "日本"]


def test_duplicate_explicit_id(tmp_path):
    lines = [{"image": "img/a.png", "id": "x"}, {"image": "img/b.png"}, {"image": "img/c.png", "id": "x"}]
    path = _make_root(tmp_path, lines)
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value) == f"{path}:3: duplicate id 'x' (first on line 1)"


def test_duplicate_default_id(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png"}, "", {"image": "img/a.png", "tags": ["t"]}])
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value) == f"{path}:3: duplicate id 'img/a.png' (first on line 1)"


def test_numeric_id_becomes_string(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png", "id": 17}])
    assert load_jsonl(str(path)).ids == ["17"]


def test_labels_txt_duplicate(tmp_path):
    path = _make_root(tmp_path, [GOOD], labels=["sea", "sky", "sea"])
    with pytest.raises(DataError) as info:
        load_jsonl(str(path))
    assert str(info.value) == f"{path.parent / 'labels.txt'}:3: label 'sea' listed twice"


def test_empty_file(tmp_path):
    path = _make_root(tmp_path, ["", "  "])
    with pytest.raises(DataError, match="no images"):
        load_jsonl(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothing.jsonl: cannot read"):
        load_jsonl(str(tmp_path / "nothing.jsonl"))


def _with_corrupt(tmp_path):
    lines = [{"image": "img/a.png", "tags": ["sea"], "labels": ["sea"]},
             {"image": "img/bad.png", "tags": ["junk"], "labels": ["sky"]},
             {"image": "img/c.png", "tags": ["sun"]}]
    path = _make_root(tmp_path, lines)
    noise = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    (path.parent / "img" / "bad.png").write_bytes(noise)
    return path


def test_corrupt_image_skipped(tmp_path):
    path = _with_corrupt(tmp_path)
    ds = load_jsonl(str(path))
    assert ds.ids == ["img/a.png", "img/c.png"]
    # The skipped image's tags and labels leave the vocabulary too.
    assert ds.tag_names == ["sea", "sun"]
    np.testing.assert_array_equal(ds.user_tags.toarray(), [[1, 0], [0, 1]])
    assert ds.label_names == ["sea"]
    np.testing.assert_array_equal(ds.labels, [[1], [0]])
    assert ds.info["corrupt_images"] == 1
    assert len(ds.info["corrupt_examples"]) == 1
    assert ds.info["corrupt_examples"][0].startswith(f"{path}:2: corrupt image ")
    assert "bad.png" in ds.info["corrupt_examples"][0]


def test_truncated_png_is_corrupt(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png"}, {"image": "img/c.png"}])
    png = path.parent / "img" / "c.png"
    # Cut inside the IDAT chunk: the pixel data ends early.
    png.write_bytes(png.read_bytes()[:45])
    ds = load_jsonl(str(path))
    assert ds.ids == ["img/a.png"]
    assert ds.info["corrupt_images"] == 1


def test_corrupt_image_strict(tmp_path):
    path = _with_corrupt(tmp_path)
    with pytest.raises(DataError) as info:
        load_jsonl(str(path), strict=True)
    assert str(info.value).startswith(f"{path}:2: corrupt image ")
    assert str(path.parent / "img" / "bad.png") in str(info.value)


def test_images_tensorflow_cannot_use_are_corrupt(tmp_path):
    # Pillow reads all three; TensorFlow decodes the CMYK JPEG but not the TIFF,
    # and the 13000 x 13000 PNG (about 20 KB) is over the pixel limit.
    lines = [{"image": f"img/{n}"} for n in ("a.png", "cmyk.jpg", "b.tif", "huge.png")]
    path = _make_root(tmp_path, lines)
    img = path.parent / "img"
    Image.new("CMYK", (4, 4), (0, 50, 100, 0)).save(str(img / "cmyk.jpg"), "JPEG")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(str(img / "b.tif"))
    Image.new("1", (13000, 13000)).save(str(img / "huge.png"))
    ds = load_jsonl(str(path))
    assert ds.ids == ["img/a.png", "img/cmyk.jpg"]
    assert ds.info["corrupt_images"] == 2
    assert ds.info["corrupt_examples"] == [
        f"{path}:3: corrupt image {img / 'b.tif'} (cannot read the image size: not a JPEG, PNG, GIF, BMP "
        "or WebP file)",
        f"{path}:4: corrupt image {img / 'huge.png'} (image is 13000 x 13000 pixels (width x height), "
        f"more than the limit of {images.MAX_PIXELS} pixels)"]
    with pytest.raises(DataError) as info:
        load_jsonl(str(path), strict=True)
    assert str(info.value).startswith(f"{path}:3: corrupt image {img / 'b.tif'} ")
    # The limit is an argument: one pixel under the 4 x 4 images skips all of them.
    with pytest.raises(DataError, match="every image is corrupt, e.g. .*more than the limit of 15 pixels"):
        load_jsonl(str(path), max_pixels=15)


def test_all_images_corrupt_is_an_error(tmp_path):
    path = _make_root(tmp_path, [{"image": "img/a.png"}])
    (path.parent / "img" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="every image is corrupt"):
        load_jsonl(str(path))
