"""Tests of wsnn.data.dataset: TaggedImageSet, from_tag_lists, save/load and their checks."""

import hashlib
import json
import os

import numpy as np
import pytest
import scipy.sparse

from wsnn import io_utils
from wsnn.data import dataset as dataset_lib
from wsnn.data.dataset import DataError, TaggedImageSet, from_tag_lists

IDS = ["a", "b", "c"]
# "sky" twice in image a is kept once; image b has no tags.
TAG_LISTS = [["sky", "dog", "sky"], [], ["cat", "dog"]]
VOCAB = ["cat", "dog", "sky"]
G = np.array([[0, 1, 1],
              [0, 0, 0],
              [1, 1, 0]], np.uint8)
LABELS = np.array([[1, 0], [0, 0], [1, 1]], np.uint8)


def _path_set(**overrides):
    kwargs = dict(
        labels=LABELS, label_names=["animal", "outdoor"], label_to_tag=[1, -1],
        image_root="/data/photos", image_paths=["a.jpg", "sub/b.jpg", "c.png"],
        users=["alice", "bob", "alice"],
        info={"source": "test", "counts": {"lines": 3}, "notes": ["x", "ü"]})
    kwargs.update(overrides)
    return from_tag_lists(IDS, TAG_LISTS, **kwargs)


def _array_set():
    pixels = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) * 10
    return from_tag_lists(IDS, TAG_LISTS, image_array=pixels)


def _assert_same(loaded, original):
    assert loaded.ids == original.ids
    assert loaded.tag_names == original.tag_names
    np.testing.assert_array_equal(loaded.user_tags.toarray(), original.user_tags.toarray())
    assert loaded.user_tags.dtype == np.uint8
    if original.labels is None:
        assert loaded.labels is None
    else:
        np.testing.assert_array_equal(loaded.labels, original.labels)
        assert loaded.labels.dtype == np.uint8
    assert loaded.label_names == original.label_names
    np.testing.assert_array_equal(loaded.label_to_tag, original.label_to_tag)
    assert loaded.image_root == original.image_root
    assert loaded.image_paths == original.image_paths
    if original.image_array is None:
        assert loaded.image_array is None
    else:
        assert loaded.image_array.dtype == np.uint8
        np.testing.assert_array_equal(loaded.image_array, original.image_array)
    assert loaded.users == original.users
    info = dict(loaded.info)
    info.pop("content_hash")
    assert info == original.info


def test_from_tag_lists_vocabulary_and_matrix():
    ds = from_tag_lists(IDS, TAG_LISTS, image_paths=["a", "b", "c"])
    assert ds.tag_names == VOCAB
    assert isinstance(ds.user_tags, scipy.sparse.csr_matrix)
    assert ds.user_tags.dtype == np.uint8
    np.testing.assert_array_equal(ds.user_tags.toarray(), G)
    assert ds.user_tags.nnz == 4
    assert ds.tags_of(0) == ["dog", "sky"]
    assert ds.tags_of(1) == []
    assert ds.tags_of(2) == ["cat", "dog"]
    assert (ds.num_images, ds.num_tags, ds.num_labels) == (3, 3, 0)
    assert ds.labels is None
    np.testing.assert_array_equal(ds.label_to_tag, np.zeros(0, np.int64))


def test_from_tag_lists_defaults_label_to_tag_to_minus_one():
    ds = from_tag_lists(["x"], [["t"]], image_paths=["x"], labels=[[1, 0, 1]],
                        label_names=["p", "q", "r"])
    np.testing.assert_array_equal(ds.label_to_tag, [-1, -1, -1])
    assert ds.label_to_tag.dtype == np.int64


def test_image_path_joins_root():
    ds = _path_set()
    assert ds.image_path(1) == os.path.join("/data/photos", "sub/b.jpg")


def test_save_load_round_trip_paths(tmp_path):
    original = _path_set()
    manifest = dataset_lib.save(original, tmp_path / "prepared")
    loaded = dataset_lib.load(tmp_path / "prepared")
    _assert_same(loaded, original)
    assert loaded.info["content_hash"] == manifest["content_hash"]
    with open(tmp_path / "prepared" / "manifest.json") as f:
        on_disk = json.load(f)
    assert on_disk == manifest
    assert on_disk["format"] == "wsnn.tagged_image_set"
    assert on_disk["version"] == 1
    assert (on_disk["num_images"], on_disk["num_tags"], on_disk["num_labels"]) == (3, 3, 2)
    # The manifest's file hashes and content hash, recomputed here.
    hashes = {name: hashlib.sha256((tmp_path / "prepared" / name).read_bytes()).hexdigest()
              for name in ("dataset.json", "arrays.npz")}
    assert on_disk["files"] == hashes
    expected = hashlib.sha256((hashes["dataset.json"] + hashes["arrays.npz"]).encode()).hexdigest()
    assert on_disk["content_hash"] == expected
    assert sorted(os.listdir(tmp_path / "prepared")) == ["arrays.npz", "dataset.json", "manifest.json"]


def test_save_load_round_trip_image_array(tmp_path):
    original = _array_set()
    manifest = dataset_lib.save(original, tmp_path / "prepared")
    loaded = dataset_lib.load(tmp_path / "prepared")
    _assert_same(loaded, original)
    assert loaded.image_paths is None and loaded.image_root is None
    assert loaded.users is None and loaded.labels is None
    np.testing.assert_array_equal(loaded.image_array[2], [[80, 90], [100, 110]])
    assert loaded.info == {"content_hash": manifest["content_hash"]}


def test_load_image_root_override(tmp_path):
    dataset_lib.save(_path_set(), tmp_path / "prepared")
    loaded = dataset_lib.load(tmp_path / "prepared", image_root="/elsewhere")
    assert loaded.image_root == "/elsewhere"
    assert loaded.image_path(2) == os.path.join("/elsewhere", "c.png")


def test_content_hash_depends_on_content(tmp_path):
    first = dataset_lib.save(_path_set(), tmp_path / "one")
    again = dataset_lib.save(_path_set(), tmp_path / "two")
    other = dataset_lib.save(_path_set(users=["alice", "bob", "carol"]), tmp_path / "three")
    assert first["content_hash"] == again["content_hash"]
    assert first["content_hash"] != other["content_hash"]


def _saved(tmp_path):
    directory = tmp_path / "prepared"
    dataset_lib.save(_path_set(), directory)
    return directory


def test_load_truncated_arrays(tmp_path):
    directory = _saved(tmp_path)
    path = directory / "arrays.npz"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="arrays.npz: changed or truncated"):
        dataset_lib.load(directory)


def test_load_dataset_json_changed_by_one_byte(tmp_path):
    directory = _saved(tmp_path)
    path = directory / "dataset.json"
    data = bytearray(path.read_bytes())
    position = data.index(b"alice") + 1
    data[position] = ord("x")  # still valid JSON: "axice"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        dataset_lib.load(directory)
    assert str(path) in str(info.value)
    assert "SHA-256 differs" in str(info.value)


def test_load_missing_manifest(tmp_path):
    directory = _saved(tmp_path)
    os.remove(directory / "manifest.json")
    with pytest.raises(DataError) as info:
        dataset_lib.load(directory)
    assert str(directory / "manifest.json") in str(info.value)
    assert "no manifest.json" in str(info.value)


def test_load_missing_directory(tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        dataset_lib.load(tmp_path / "never-written")


@pytest.mark.parametrize("name", ["dataset.json", "arrays.npz"])
def test_load_missing_file(tmp_path, name):
    directory = _saved(tmp_path)
    os.remove(directory / name)
    with pytest.raises(DataError) as info:
        dataset_lib.load(directory)
    assert f"{directory / name}: missing" in str(info.value)


@pytest.mark.parametrize("field,value", [("version", 2), ("format", "something.else")])
def test_load_wrong_format_version(tmp_path, field, value):
    directory = _saved(tmp_path)
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError) as info:
        dataset_lib.load(directory)
    assert str(path) in str(info.value)
    assert "expected wsnn.tagged_image_set v1" in str(info.value)


def test_load_unreadable_manifest(tmp_path):
    directory = _saved(tmp_path)
    (directory / "manifest.json").write_bytes(b"{not json")
    with pytest.raises(DataError, match="manifest.json: unreadable manifest"):
        dataset_lib.load(directory)


def test_save_replaces_existing_directory(tmp_path):
    directory = tmp_path / "prepared"
    dataset_lib.save(_path_set(), directory)
    (directory / "stale.txt").write_text("left over")
    replacement = _array_set()
    dataset_lib.save(replacement, directory)
    _assert_same(dataset_lib.load(directory), replacement)
    assert sorted(os.listdir(directory)) == ["arrays.npz", "dataset.json", "manifest.json"]
    assert os.listdir(tmp_path) == ["prepared"]


def test_failed_atomic_directory_keeps_previous(tmp_path):
    directory = tmp_path / "prepared"
    original = _path_set()
    dataset_lib.save(original, directory)
    before = {n: (directory / n).read_bytes() for n in os.listdir(directory)}
    with pytest.raises(RuntimeError, match="boom"):
        with io_utils.atomic_directory(directory) as tmp:
            with open(os.path.join(tmp, "manifest.json"), "w") as f:
                f.write("half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["prepared"]
    assert {n: (directory / n).read_bytes() for n in os.listdir(directory)} == before
    _assert_same(dataset_lib.load(directory), original)


def test_failed_save_keeps_previous(tmp_path):
    directory = tmp_path / "prepared"
    original = _path_set()
    dataset_lib.save(original, directory)
    # Valid as a set, but the info cannot be written as JSON: save fails mid-way.
    broken = _path_set(info={"not json": object()})
    with pytest.raises(TypeError):
        dataset_lib.save(broken, directory)
    assert os.listdir(tmp_path) == ["prepared"]
    _assert_same(dataset_lib.load(directory), original)


def test_atomic_directory_creates_new(tmp_path):
    target = tmp_path / "deep" / "new"
    with io_utils.atomic_directory(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path / "deep")
        with open(os.path.join(tmp, "f.txt"), "w") as f:
            f.write("done")
    assert (target / "f.txt").read_text() == "done"
    assert os.listdir(tmp_path / "deep") == ["new"]


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "out.json"
    io_utils.write_json(path, {"b": 1, "a": "ü"})
    assert path.read_text(encoding="utf-8") == '{\n "a": "ü",\n "b": 1\n}\n'
    io_utils.write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path / "sub") == ["out.json"]


def test_validate_user_tags_shape():
    with pytest.raises(DataError, match=r"user_tags is \(2, 3\), expected \(3, 3\)"):
        TaggedImageSet(ids=IDS, tag_names=VOCAB, user_tags=np.zeros((2, 3)), image_paths=IDS)


def test_validate_labels_shape():
    with pytest.raises(DataError, match=r"labels are \(3, 1\), expected \(3, 2\)"):
        _path_set(labels=np.ones((3, 1), np.uint8))


def test_validate_image_paths_count():
    with pytest.raises(DataError, match="2 image paths for 3 images"):
        _path_set(image_paths=["a", "b"])


def test_validate_users_count():
    with pytest.raises(DataError, match="1 uploader ids for 3 images"):
        _path_set(users=["alice"])


def test_validate_needs_exactly_one_image_source():
    with pytest.raises(DataError, match="exactly one of image_paths and image_array"):
        from_tag_lists(IDS, TAG_LISTS)
    with pytest.raises(DataError, match="exactly one of image_paths and image_array"):
        _path_set(image_array=np.zeros((3, 2, 2), np.uint8))


def test_validate_image_array():
    with pytest.raises(DataError, match="2 images in image_array for 3 ids"):
        from_tag_lists(IDS, TAG_LISTS, image_array=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        from_tag_lists(IDS, TAG_LISTS, image_array=np.zeros((3, 2, 2), np.float32))
    with pytest.raises(DataError, match="uint8"):
        from_tag_lists(IDS, TAG_LISTS, image_array=np.zeros((3, 4), np.uint8))


def test_validate_duplicate_ids():
    with pytest.raises(DataError, match="image ids are not unique"):
        from_tag_lists(["a", "b", "a"], TAG_LISTS, image_paths=IDS)


def test_validate_duplicate_tag_names():
    with pytest.raises(DataError, match="tag names are not unique"):
        TaggedImageSet(ids=["a"], tag_names=["x", "x"], user_tags=np.zeros((1, 2)), image_paths=["a"])


def test_validate_labels_not_binary():
    with pytest.raises(DataError, match="labels must be 0/1"):
        _path_set(labels=np.array([[1, 0], [0, 2], [0, 0]]))
    ds = _path_set()
    ds.labels = np.array([[1, 0], [0, 0], [3, 1]], np.uint8)
    with pytest.raises(DataError, match="labels must be 0/1"):
        ds.validate()


def test_validate_user_tags_not_binary():
    with pytest.raises(DataError, match="user_tags must be 0/1"):
        TaggedImageSet(ids=["a"], tag_names=["x"], user_tags=np.array([[2]]), image_paths=["a"])


@pytest.mark.parametrize("label_to_tag", [[3, -1], [0, -2], [-1, 10]])
def test_validate_label_to_tag_out_of_range(label_to_tag):
    with pytest.raises(DataError, match="label_to_tag points outside the tag vocabulary"):
        _path_set(label_to_tag=label_to_tag)


def test_validate_label_to_tag_length():
    with pytest.raises(DataError, match="one entry per label"):
        _path_set(label_to_tag=[0, 1, 2])


def test_subset():
    ds = _path_set()
    sub = ds.subset([2, 0])
    assert sub.ids == ["c", "a"]
    assert sub.tag_names == VOCAB
    np.testing.assert_array_equal(sub.user_tags.toarray(), [[1, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(sub.labels, [[1, 1], [1, 0]])
    assert sub.image_paths == ["c.png", "a.jpg"]
    assert sub.image_root == "/data/photos"
    assert sub.users == ["alice", "alice"]
    assert sub.label_names == ["animal", "outdoor"]
    np.testing.assert_array_equal(sub.label_to_tag, [1, -1])
    assert sub.tags_of(0) == ["cat", "dog"]
    # The original is untouched.
    assert ds.ids == IDS
    np.testing.assert_array_equal(ds.user_tags.toarray(), G)


def test_subset_image_array():
    ds = _array_set()
    sub = ds.subset([1])
    assert sub.ids == ["b"]
    np.testing.assert_array_equal(sub.image_array, [[[40, 50], [60, 70]]])
    assert sub.user_tags.shape == (1, 3) and sub.user_tags.nnz == 0
    assert sub.labels is None and sub.users is None and sub.image_paths is None


def test_statistics():
    stats = _path_set().statistics()
    # Tags per image: (2 + 0 + 2) / 3.
    assert stats == {"images": 3, "tags": 3, "labels": 2, "tags_per_image": pytest.approx(4 / 3)}
    assert _path_set().subset([1]).statistics()["tags_per_image"] == 0.0
    assert _path_set().subset([0, 2]).statistics()["tags_per_image"] == 2.0
