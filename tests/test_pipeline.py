"""Tests of wsnn.data.pipeline: the shared resize, decoding and ImageSource."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wsnn.data.dataset import DataError, from_tag_lists
from wsnn.data.pipeline import ImageSource, decode_and_resize, resize_uint8


def _array_set(images):
    ids = [f"im{i}" for i in range(len(images))]
    return from_tag_lists(ids, [["sky"]] * len(images), image_array=images)


def _path_set(root, names):
    ids = [os.path.splitext(n)[0] for n in names]
    return from_tag_lists(ids, [["sky"]] * len(names), image_root=str(root), image_paths=names)


def _encode(array, fmt):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _random_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- the shared resize -------------------------------------------------------

def test_resize_uint8_is_noop_at_same_size():
    images = _random_images((2, 5, 5, 3))
    np.testing.assert_array_equal(resize_uint8(images, 5).numpy(), images)


def test_resize_uint8_keeps_a_constant_image_and_changes_size():
    images = np.full((2, 9, 7, 1), 173, np.uint8)
    resized = resize_uint8(images, 4).numpy()
    assert resized.shape == (2, 4, 4, 1) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, 173)


def test_decode_of_lossless_png_equals_array_resize():
    # Training (arrays) and serving (bytes) must see the same pixels.
    image = _random_images((9, 7, 3), seed=1)
    png = tf.constant(_encode(image, "PNG"))
    np.testing.assert_array_equal(
        decode_and_resize(png, 4, 3).numpy(), resize_uint8(image[np.newaxis], 4).numpy()[0])
    square = _random_images((6, 6, 3), seed=2)
    np.testing.assert_array_equal(decode_and_resize(tf.constant(_encode(square, "PNG")), 6, 3), square)


def test_decode_and_resize_works_inside_tf_function():
    image_bytes = tf.constant(_encode(_random_images((10, 8, 3), seed=3), "JPEG"))
    traced = tf.function(lambda b: decode_and_resize(b, 5, 1),
                         input_signature=[tf.TensorSpec([], tf.string)])
    out = traced(image_bytes)
    assert out.shape == (5, 5, 1) and out.dtype == tf.uint8
    np.testing.assert_array_equal(out.numpy(), decode_and_resize(image_bytes, 5, 1).numpy())


# --- ImageSource on arrays ---------------------------------------------------

def test_array_source_returns_exact_pixels_in_index_order():
    images = _random_images((5, 6, 6, 3))
    source = ImageSource(_array_set(images))
    assert (source.image_size, source.channels, source.num_images) == (6, 3, 5)
    out = source.get([3, 0, 3, 4])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, images[[3, 0, 3, 4]])


def test_grey_array_to_one_and_three_channels():
    images = _random_images((4, 5, 5))
    grey = ImageSource(_array_set(images)).get([2, 1])
    assert grey.shape == (2, 5, 5, 1)
    np.testing.assert_array_equal(grey[..., 0], images[[2, 1]])
    rgb = ImageSource(_array_set(images), channels=3).get([2, 1])
    assert rgb.shape == (2, 5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], images[[2, 1]])


def test_rgb_array_to_grey_rounds_rgb_to_grayscale():
    # Pure colours and greys, away from .5 rounding boundaries:
    # 0.2989 * 255 = 76.2, 0.5870 * 255 = 149.7, 0.1140 * 255 = 29.1, v * 0.9999 -> v.
    pixels = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 200]], np.uint8)
    images = pixels.reshape(1, 2, 2, 3)
    out = ImageSource(_array_set(images), channels=1).get([0])
    np.testing.assert_array_equal(out.reshape(-1), [76, 150, 29, 200])


def test_array_source_resize_equals_resize_uint8():
    images = _random_images((3, 8, 8, 3), seed=4)
    out = ImageSource(_array_set(images), image_size=5).get([2, 0])
    assert out.shape == (2, 5, 5, 3)
    np.testing.assert_array_equal(out, resize_uint8(images[[2, 0]], 5).numpy())


def test_bad_channels_and_sizes_raise(tmp_path):
    images_set = _array_set(_random_images((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="channels"):
        ImageSource(images_set, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        ImageSource(images_set, image_size=0)
    with pytest.raises(ValueError, match="square"):
        ImageSource(_array_set(_random_images((2, 4, 5, 3))))
    with pytest.raises(ValueError, match="image_size is required"):
        ImageSource(_path_set(tmp_path, ["a.png"]))
    with pytest.raises(IndexError):
        ImageSource(images_set).get([2])


# --- ImageSource on files ----------------------------------------------------

def test_path_source_equals_decode_and_resize_of_the_bytes(tmp_path):
    files = {
        "a.png": _encode(_random_images((8, 8, 3), seed=5), "PNG"),
        "b.jpg": _encode(_random_images((12, 10, 3), seed=6), "JPEG"),
        "c.png": _encode(_random_images((7, 9), seed=7), "PNG"),  # grey
        "d.jpg": _encode(_random_images((8, 8), seed=8), "JPEG"),  # grey
    }
    (tmp_path / "sub").mkdir()
    names = []
    for name, data in files.items():
        names.append(f"sub/{name}")
        (tmp_path / "sub" / name).write_bytes(data)
    dataset = _path_set(tmp_path, names)
    order = [3, 0, 2, 1, 0]
    for channels in (1, 3):
        out = ImageSource(dataset, image_size=8, channels=channels, num_workers=2).get(order)
        assert out.shape == (5, 8, 8, channels) and out.dtype == np.uint8
        for row, i in zip(out, order):
            expected = decode_and_resize(tf.constant(files[os.path.basename(names[i])]), 8, channels)
            np.testing.assert_array_equal(row, expected.numpy())


def test_corrupt_and_missing_files_raise_data_error_naming_them(tmp_path):
    (tmp_path / "good.png").write_bytes(_encode(_random_images((4, 4, 3)), "PNG"))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    source = ImageSource(_path_set(tmp_path, ["good.png", "bad.jpg", "gone.png"]), image_size=4)
    assert source.get([0]).shape == (1, 4, 4, 3)
    with pytest.raises(DataError, match="bad.jpg"):
        source.get([0, 1])
    with pytest.raises(DataError, match="gone.png"):
        source.get([2])


def test_grey_from_colour_files_equals_grey_from_colour_arrays(tmp_path):
    # One RGB-to-grey conversion for files (training from paths, serving) and
    # embedded arrays; TensorFlow's own decoder used libpng's weights for files.
    image = _random_images((6, 6, 3), seed=9)
    (tmp_path / "a.png").write_bytes(_encode(image, "PNG"))
    from_file = ImageSource(_path_set(tmp_path, ["a.png"]), image_size=6, channels=1).get([0])
    from_array = ImageSource(_array_set(image[np.newaxis]), channels=1).get([0])
    np.testing.assert_array_equal(from_file, from_array)


def test_grey_model_reads_cmyk_jpeg_gif_and_bmp_files(tmp_path):
    # TensorFlow's decoder refuses channels=1 for these; training used to stop on them.
    image = _random_images((6, 6, 3), seed=10)
    buffer = io.BytesIO()
    Image.fromarray(image).convert("CMYK").save(buffer, "JPEG")
    (tmp_path / "cmyk.jpg").write_bytes(buffer.getvalue())
    (tmp_path / "g.gif").write_bytes(_encode(image, "GIF"))
    (tmp_path / "b.bmp").write_bytes(_encode(image, "BMP"))
    names = ["cmyk.jpg", "g.gif", "b.bmp"]
    dataset = _path_set(tmp_path, names)
    grey = ImageSource(dataset, image_size=6, channels=1).get([0, 1, 2])
    rgb = ImageSource(dataset, image_size=6, channels=3).get([0, 1, 2])
    np.testing.assert_array_equal(rgb[2], image)     # BMP is lossless
    np.testing.assert_array_equal(grey, ImageSource(_array_set(rgb), channels=1).get([0, 1, 2]))


def test_chunks_cover_every_image_in_order():
    images = np.random.default_rng(7).integers(0, 256, (11, 5, 5), dtype=np.uint8)
    source = ImageSource(from_tag_lists([f"i{i}" for i in range(11)], [["a"]] * 11, image_array=images))
    chunks = list(source.chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), source.get(np.arange(11)))
    assert [len(c) for c in source.chunks(11)] == [11]
