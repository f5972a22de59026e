"""Tests for wsnn.data.decoded: the decoded-image cache of a set of image files."""

import os

import numpy as np
import pytest
from PIL import Image

from wsnn.data import decoded as decoded_lib
from wsnn.data import pipeline
from wsnn.data.dataset import DataError, from_tag_lists


def _files(root, count=9):
    """`count` images of assorted sizes and kinds (grey PNG, RGB PNG, RGB JPEG) under root."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        kind = ("png_grey", "png_rgb", "jpg")[i % 3]
        size = (12 + i, 9 + 2 * i)
        shape = (size[1], size[0]) if kind == "png_grey" else (size[1], size[0], 3)
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        name = f"{i}.{'jpg' if kind == 'jpg' else 'png'}"
        image.save(root / name, quality=90) if kind == "jpg" else image.save(root / name)
        paths.append(name)
    return from_tag_lists([f"im{i}" for i in range(count)], [["a"] if i % 2 else ["b"] for i in range(count)],
                          image_root=str(root), image_paths=paths)


@pytest.mark.parametrize("channels", [1, 3])
def test_cache_holds_exactly_what_the_file_decode_path_gives(tmp_path, channels):
    dataset = _files(tmp_path / "img")
    cached = decoded_lib.decoded_images(dataset, 8, channels, str(tmp_path / "cache"), log=lambda _: None)
    expected = pipeline.ImageSource(dataset, 8, channels).get(np.arange(dataset.num_images))
    assert cached.dtype == np.uint8 and cached.shape == (9, 8, 8, channels)
    np.testing.assert_array_equal(cached, expected)
    # A source over a subset gathers the subset's rows from the cache, as the file path would.
    rows = np.array([7, 2, 5])
    subset = dataset.subset(rows)
    gathered = pipeline.ImageSource(subset, 8, channels, decoded=cached, rows=rows).get([2, 0, 0, 1])
    np.testing.assert_array_equal(gathered, pipeline.ImageSource(subset, 8, channels).get([2, 0, 0, 1]))


def test_built_once_and_again_for_another_size_or_prepared_set(tmp_path):
    dataset = _files(tmp_path / "img")
    cache = tmp_path / "cache"
    lines = []
    decoded_lib.decoded_images(dataset, 8, 3, str(cache), log=lines.append)
    (first,) = os.listdir(cache)
    built = (cache / first).stat().st_mtime_ns
    assert lines and "decoding 9 images once" in lines[-1]
    lines.clear()
    decoded_lib.decoded_images(dataset, 8, 3, str(cache), log=lines.append)
    assert not lines and (cache / first).stat().st_mtime_ns == built and os.listdir(cache) == [first]
    decoded_lib.decoded_images(dataset, 10, 3, str(cache), log=lines.append)  # another size
    other = from_tag_lists(dataset.ids, [["c"]] * 9, image_root=dataset.image_root, image_paths=dataset.image_paths)
    decoded_lib.decoded_images(other, 8, 3, str(cache), log=lines.append)  # another prepared set
    assert len(os.listdir(cache)) == 3 and not [n for n in os.listdir(cache) if n.startswith(".tmp-")]


def test_large_arrays_are_memory_mapped_with_the_same_pixels(tmp_path):
    dataset = _files(tmp_path / "img")
    in_memory = decoded_lib.decoded_images(dataset, 8, 3, str(tmp_path / "cache"), log=lambda _: None)
    mapped = decoded_lib.decoded_images(dataset, 8, 3, str(tmp_path / "cache"), max_in_memory_bytes=0)
    assert isinstance(mapped, np.memmap) and not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(mapped, in_memory)


def test_a_broken_file_is_named_and_leaves_no_cache(tmp_path):
    dataset = _files(tmp_path / "img")
    (tmp_path / "img" / "4.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="4.png: cannot decode image"):
        decoded_lib.decoded_images(dataset, 8, 3, str(tmp_path / "cache"), log=lambda _: None)
    assert os.listdir(tmp_path / "cache") == []
