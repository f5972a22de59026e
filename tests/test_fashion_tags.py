"""Tests of the FashionTags v2 generator (wsnn.data.fashion_tags) against its specification.

The specification is docs/fashion_tags.md. The tests never read the real
Fashion-MNIST: they write a tiny fake train split (60 images) whose every image
is one constant grey value, so the source image (and its class) behind each
cell of a generated mosaic can be read back from the PNG. Its scene pool is
images 0-49 and its pretraining pool 50-59 (the last 1/6, as 50,000-59,999 of
the real 60,000).
"""

import collections
import gzip
import hashlib
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from wsnn.data import fashion_tags
from wsnn.data.dataset import DataError
from wsnn.data.jsonl import load_jsonl

IMAGES_FILE = "train-images-idx3-ubyte.gz"
LABELS_FILE = "train-labels-idx1-ubyte.gz"

# The vocabulary of the specification, written out here rather than imported.
LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
PLURALS = {"t-shirt": "t-shirts", "trouser": "trousers", "pullover": "pullovers", "dress": "dresses",
           "coat": "coats", "sandal": "sandals", "shirt": "shirts", "sneaker": "sneakers", "bag": "bags",
           "boot": "boots"}
SYNONYMS = {"t-shirt": ["tee", "jersey"], "trouser": ["pants", "slacks"], "pullover": ["sweater", "jumper"],
            "dress": ["gown", "frock"], "coat": ["overcoat", "jacket"], "sandal": ["flip-flop"],
            "shirt": ["blouse"], "sneaker": ["trainer", "gym_shoe"], "bag": ["handbag", "purse"],
            "boot": ["wellington"]}
HYPERNYMS = {"t-shirt": ["top", "garment", "clothing"], "shirt": ["top", "garment", "clothing"],
             "pullover": ["top", "garment", "clothing"], "trouser": ["garment", "clothing"],
             "dress": ["garment", "clothing"], "coat": ["outerwear", "garment", "clothing"],
             "sandal": ["footwear", "shoe"], "sneaker": ["footwear", "shoe"], "boot": ["footwear", "shoe"],
             "bag": ["accessory", "container"]}
CONFUSABLE_GROUPS = [{"t-shirt", "shirt", "pullover", "coat"}, {"sneaker", "sandal", "boot"},
                     {"dress", "coat"}]
PET_TAGS = {"vintage", "fashion", "style", "wardrobe", "shopping", "gift", "sale", "love", "closet", "outfit"}
JUNK_TAGS = {"nikond70s", "365days", "project365", "img0042", "dsc01234", "2009", "iphoneography", "fujix100"}
CLASS_WORDS = {name: {name, PLURALS[name], *SYNONYMS[name], *HYPERNYMS[name]} for name in LABELS}
VOCABULARY = set().union(*CLASS_WORDS.values()) | PET_TAGS | JUNK_TAGS


def _value(index):
    """The constant grey value of fake source image `index` (never 0, i.e. never black)."""
    return 10 + 4 * index


def _idx(magic_dims, payload):
    ndim = len(magic_dims)
    return bytes([0, 0, 8, ndim]) + struct.pack(f">{ndim}I", *magic_dims) + payload


def _write_source(directory, per_class=6, cut_images=0):
    """Writes a fake Fashion-MNIST train split; returns (images, classes)."""
    n = 10 * per_class
    classes = np.arange(n, dtype=np.uint8) % 10
    images = np.stack([np.full((28, 28), _value(i), np.uint8) for i in range(n)])
    os.makedirs(directory, exist_ok=True)
    payload = images.tobytes()
    if cut_images:
        payload = payload[:-cut_images]
    with open(os.path.join(directory, IMAGES_FILE), "wb") as f:
        f.write(gzip.compress(_idx((n, 28, 28), payload), mtime=0))
    with open(os.path.join(directory, LABELS_FILE), "wb") as f:
        f.write(gzip.compress(_idx((n,), classes.tobytes()), mtime=0))
    return images, classes


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("fashion-mnist"))
    _write_source(directory)
    return directory


@pytest.fixture(scope="module")
def small(tmp_path_factory, source):
    """Three N=60 trees: seed 7 twice, seed 8 once."""
    root = tmp_path_factory.mktemp("small")
    trees = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = str(root / name)
        trees[name] = (out, fashion_tags.generate(out, num_images=60, seed=seed, source_dir=source))
    return trees


@pytest.fixture(scope="module")
def large(tmp_path_factory, source):
    out = str(tmp_path_factory.mktemp("large") / "fashion")
    fashion_tags.generate(out, num_images=2000, seed=3, source_dir=source)
    return out


def _annotations(out):
    with open(os.path.join(out, "annotations.jsonl"), encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _files(out):
    result = {}
    for parent, _, names in os.walk(out):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, out)] = f.read()
    return result


def _cells(out, record):
    """The source indices in the 4 cells of a record's image (None: empty cell)."""
    with Image.open(os.path.join(out, record["image"])) as image:
        assert image.format == "PNG"
        assert image.mode == "L"
        assert image.size == (56, 56)
        pixels = np.asarray(image)
    cells = []
    for r in range(2):
        for q in range(2):
            cell = pixels[28 * r:28 * r + 28, 28 * q:28 * q + 28]
            value = int(cell[0, 0])
            assert np.all(cell == value), "a cell holds more than one source image"
            if value == 0:
                cells.append(None)
            else:
                assert (value - 10) % 4 == 0 and 0 <= (value - 10) // 4 < 60
                cells.append((value - 10) // 4)
    return cells


def _confusables(name):
    return set().union(*(g for g in CONFUSABLE_GROUPS if name in g)) - {name}


def test_read_idx_round_trip(tmp_path):
    images, classes = _write_source(str(tmp_path))
    read_images = fashion_tags.read_idx(str(tmp_path / IMAGES_FILE))
    read_classes = fashion_tags.read_idx(str(tmp_path / LABELS_FILE))
    assert read_images.shape == (60, 28, 28) and read_images.dtype == np.uint8
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_classes, classes)
    assert read_images[59, 27, 27] == 246


def test_constants_match_spec():
    assert list(fashion_tags.LABELS) == LABELS
    assert dict(zip(fashion_tags.LABELS, fashion_tags.PLURALS)) == PLURALS
    assert {k: list(v) for k, v in fashion_tags.SYNONYMS.items()} == SYNONYMS
    assert {k: list(v) for k, v in fashion_tags.HYPERNYMS.items()} == HYPERNYMS
    assert set(fashion_tags.PET_TAGS) == PET_TAGS
    assert set(fashion_tags.JUNK_TAGS) == JUNK_TAGS


def test_same_seed_byte_identical(small):
    files_a, files_b = _files(small["a"][0]), _files(small["b"][0])
    expected = {"annotations.jsonl", "labels.txt", "metadata.json"} | {
        os.path.join("images", f"{i:02d}.png") for i in range(60)}
    assert set(files_a) == expected
    assert set(files_b) == expected
    for name in expected:
        assert files_a[name] == files_b[name], name
    assert small["a"][1] == small["b"][1]


def test_different_seed_differs(small):
    a, c = _annotations(small["a"][0]), _annotations(small["c"][0])
    assert [r["id"] for r in a] == [r["id"] for r in c]
    assert [r["labels"] for r in a] != [r["labels"] for r in c]
    assert [r["tags"] for r in a] != [r["tags"] for r in c]
    files_a, files_c = _files(small["a"][0]), _files(small["c"][0])
    assert sum(files_a[name] != files_c[name] for name in files_a if name.startswith("images")) > 30


def test_layout_and_labels(small, source):
    out, _ = small["a"]
    classes = fashion_tags.read_idx(os.path.join(source, LABELS_FILE))
    records = _annotations(out)
    assert len(records) == 60
    with open(os.path.join(out, "labels.txt"), encoding="utf-8") as f:
        assert f.read() == "\n".join(LABELS) + "\n"
    for i, record in enumerate(records):
        assert set(record) == {"id", "image", "tags", "labels", "user"}
        assert record["id"] == f"{i:02d}"
        assert record["image"] == f"images/{i:02d}.png"
        assert record["user"].startswith("user") and len(record["user"]) == 7
        assert 0 <= int(record["user"][4:]) < 400
        cells = _cells(out, record)
        items = [c for c in cells if c is not None]
        assert 1 <= len(items) <= 4
        present = sorted({int(classes[c]) for c in items})
        # Labels are exactly the classes visible, in label order.
        assert record["labels"] == [LABELS[c] for c in present]


def test_tags_in_vocabulary(small):
    for out, _ in small.values():
        for record in _annotations(out):
            lowered = [t.lower() for t in record["tags"]]
            assert len(set(lowered)) == len(lowered), record["tags"]
            for tag, low in zip(record["tags"], lowered):
                assert low in VOCABULARY, tag
                # As typed: lower case, or only its first character capitalised.
                assert tag in (low, low[:1].upper() + low[1:]), tag


def test_metadata(small, source):
    out, returned = small["a"]
    with open(os.path.join(out, "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    assert metadata == json.loads(json.dumps(returned))
    assert metadata["name"] == "FashionTags"
    assert metadata["generator_version"] == 2
    assert metadata["pools"] == {"scenes": [0, 50], "pretraining": [50, 60]}
    assert metadata["seed"] == 7
    assert metadata["parameters"]["num_images"] == 60
    assert metadata["parameters"]["num_users"] == 400
    assert metadata["parameters"]["item_count_probs"] == [0.2, 0.35, 0.3, 0.15]
    assert metadata["parameters"]["recall_range"] == [0.3, 0.85]
    assert metadata["parameters"]["wording_concentration"] == [6, 2, 2]
    hashes = {}
    for name in (IMAGES_FILE, LABELS_FILE):
        with open(os.path.join(source, name), "rb") as f:
            hashes[name] = hashlib.sha256(f.read()).hexdigest()
    assert metadata["source"]["sha256"] == hashes
    records = _annotations(out)
    assert metadata["counts"]["images"] == 60
    assert metadata["counts"]["typed_tags"] == sum(len(r["tags"]) for r in records)
    per_label = collections.Counter(l for r in records for l in r["labels"])
    assert metadata["counts"]["images_per_label"] == {name: per_label[name] for name in LABELS}
    assert small["c"][1]["seed"] == 8
    assert small["c"][1]["source"]["sha256"] == hashes


def test_reads_back_through_jsonl(small):
    out, _ = small["a"]
    records = _annotations(out)
    ds = load_jsonl(os.path.join(out, "annotations.jsonl"), strict=True)
    assert ds.num_images == 60
    assert ds.ids == [r["id"] for r in records]
    assert ds.label_names == LABELS
    expected = np.zeros((60, 10), np.uint8)
    for i, r in enumerate(records):
        expected[i, [LABELS.index(l) for l in r["labels"]]] = 1
    np.testing.assert_array_equal(ds.labels, expected)
    assert ds.users == [r["user"] for r in records]
    assert ds.info["corrupt_images"] == 0
    for i in (0, 59):
        assert ds.tags_of(i) == sorted(set(records[i]["tags"]))
    embedded = load_jsonl(os.path.join(out, "annotations.jsonl"), embed_images=True)
    assert embedded.image_array.shape == (60, 56, 56)


def test_pools_follow_the_fixed_rule():
    assert fashion_tags.pools(60000) == {"scenes": [0, 50000], "pretraining": [50000, 60000]}
    assert fashion_tags.pools(60) == {"scenes": [0, 50], "pretraining": [50, 60]}
    assert fashion_tags.pools(600) == {"scenes": [0, 500], "pretraining": [500, 600]}


def test_mosaics_never_show_a_pretraining_pool_image(large, small):
    used = set()
    for out in [large] + [tree for tree, _ in small.values()]:
        for record in _annotations(out):
            used.update(c for c in _cells(out, record) if c is not None)
    assert max(used) < 50, sorted(used - set(range(50)))
    # ~4,800 items over 50 scene images: every scene image is used (the pool is not smaller).
    assert used == set(range(50))


def test_pretraining_pool_is_the_last_sixth(source):
    pool = fashion_tags.pretraining_pool(source)
    assert pool.start == 50
    assert pool.images.shape == (10, 28, 28) and pool.images.dtype == np.uint8
    np.testing.assert_array_equal(pool.images[:, 0, 0], [_value(i) for i in range(50, 60)])
    np.testing.assert_array_equal(pool.classes, np.arange(50, 60) % 10)
    assert pool.sha256 == fashion_tags.source_sha256(source)
    with open(os.path.join(source, IMAGES_FILE), "rb") as f:
        assert pool.sha256[IMAGES_FILE] == hashlib.sha256(f.read()).hexdigest()


def test_class_missing_from_scene_pool(tmp_path):
    source = str(tmp_path / "src")
    _write_source(source)
    # Every sandal (class 5) moved into the pretraining pool: scenes cannot draw one.
    classes = (np.arange(60) % 10).astype(np.uint8)
    classes[classes == 5] = 0
    classes[55] = 5
    with open(os.path.join(source, LABELS_FILE), "wb") as f:
        f.write(gzip.compress(_idx((60,), classes.tobytes())))
    with pytest.raises(DataError) as info:
        fashion_tags.generate(str(tmp_path / "out"), num_images=5, source_dir=source)
    assert str(info.value) == (f"{source}: no images of class(es) ['sandal'] in the scene pool "
                               "(train images 0-49)")


def test_regenerate_replaces_output(tmp_path, source):
    out = tmp_path / "fashion"
    fashion_tags.generate(str(out), num_images=12, seed=1, source_dir=source)
    (out / "stale.txt").write_text("x")
    fashion_tags.generate(str(out), num_images=5, seed=1, source_dir=source)
    assert sorted(os.listdir(out)) == ["annotations.jsonl", "images", "labels.txt", "metadata.json"]
    # Width of the ids follows N: 5 images are 0-4.
    assert sorted(os.listdir(out / "images")) == [f"{i}.png" for i in range(5)]
    assert os.listdir(tmp_path) == ["fashion"]


def test_statistics_large(large, source):
    classes = fashion_tags.read_idx(os.path.join(source, LABELS_FILE))
    records = _annotations(large)
    assert len(records) == 2000
    counts = collections.Counter()
    tags = junk = 0
    pets_of_user = collections.defaultdict(set)
    for record in records:
        items = [c for c in _cells(large, record) if c is not None]
        counts[len(items)] += 1
        present = {LABELS[classes[c]] for c in items}
        assert record["labels"] == [name for name in LABELS if name in present]
        for tag in record["tags"]:
            low = tag.lower()
            assert low in VOCABULARY, tag
            tags += 1
            junk += low in JUNK_TAGS
            if low in PET_TAGS:
                pets_of_user[record["user"]].add(low)
            elif low not in JUNK_TAGS and low not in LABELS:
                # A plural, synonym or hypernym names a present class, or one confused with it.
                sources = {name for name in LABELS if low in CLASS_WORDS[name]}
                assert any(sources & ({p} | _confusables(p)) for p in present), (tag, sorted(present))
    fractions = [counts[k] / 2000 for k in (1, 2, 3, 4)]
    assert set(counts) <= {1, 2, 3, 4}
    for got, want in zip(fractions, (0.2, 0.35, 0.3, 0.15)):
        assert abs(got - want) < 0.05, fractions
    assert 0.05 < junk / tags < 0.4, junk / tags
    # Each user has at most 3 pet tags, reused across their uploads.
    assert max(len(p) for p in pets_of_user.values()) <= 3
    assert 0 < len(pets_of_user) <= 400


def test_truncated_idx_payload(tmp_path):
    source = str(tmp_path / "src")
    _write_source(source, cut_images=100)
    path = os.path.join(source, IMAGES_FILE)
    with pytest.raises(DataError) as info:
        fashion_tags.generate(str(tmp_path / "out"), num_images=5, source_dir=source)
    assert str(info.value) == f"{path}: truncated IDX file (46940 bytes for shape [60, 28, 28])"
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("name", [IMAGES_FILE, LABELS_FILE])
def test_truncated_gzip_stream(tmp_path, name):
    source = str(tmp_path / "src")
    _write_source(source)
    path = os.path.join(source, name)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(DataError) as info:
        fashion_tags.generate(str(tmp_path / "out"), num_images=5, source_dir=source)
    assert str(info.value).startswith(f"{path}: cannot read gzipped IDX file")


def test_corrupt_deflate_data(tmp_path):
    source = str(tmp_path / "src")
    _write_source(source)
    path = os.path.join(source, IMAGES_FILE)
    with open(path, "rb") as f:
        header = f.read(10)
    with open(path, "wb") as f:
        f.write(header + b"\xff" * 64)  # an invalid deflate block type
    with pytest.raises(DataError) as info:
        fashion_tags.read_idx(path)
    assert str(info.value).startswith(f"{path}: cannot read gzipped IDX file")


def test_not_an_idx_file(tmp_path):
    path = str(tmp_path / "x.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(bytes([0, 0, 9, 1, 0, 0, 0, 1, 5])))
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        fashion_tags.read_idx(path)


def test_class_out_of_range(tmp_path):
    source = str(tmp_path / "src")
    _write_source(source)
    path = os.path.join(source, LABELS_FILE)
    with open(path, "wb") as f:
        f.write(gzip.compress(_idx((60,), bytes([10] * 60))))
    with pytest.raises(DataError) as info:
        fashion_tags.generate(str(tmp_path / "out"), num_images=5, source_dir=source)
    assert str(info.value) == f"{path}: class 10 out of range 0-9"


def test_missing_source_directory(tmp_path):
    source = str(tmp_path / "no-such-dir")
    with pytest.raises(DataError) as info:
        fashion_tags.generate(str(tmp_path / "out"), num_images=5, source_dir=source)
    message = str(info.value)
    assert message.startswith(f"{os.path.join(source, IMAGES_FILE)}: Fashion-MNIST not found")
    assert "apt-get install dataset-fashion-mnist" in message
    assert not os.path.exists(tmp_path / "out")


def test_missing_labels_file(tmp_path):
    source = str(tmp_path / "src")
    _write_source(source)
    os.remove(os.path.join(source, LABELS_FILE))
    with pytest.raises(DataError) as info:
        fashion_tags.generate(str(tmp_path / "out"), num_images=5, source_dir=source)
    assert str(info.value).startswith(f"{os.path.join(source, LABELS_FILE)}: Fashion-MNIST not found")


def test_num_images_must_be_positive(tmp_path, source):
    with pytest.raises(ValueError, match="num_images must be positive"):
        fashion_tags.generate(str(tmp_path / "out"), num_images=0, source_dir=source)
