"""Tests of wsnn.data.images: the one decoder, its pixel limit, the import check and embedding.

Pillow only writes the test files; every expected pixel is computed with NumPy.
"""

import io
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wsnn.data import images, pipeline
from wsnn.data.dataset import DataError

RGB = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)  # height 7, width 11
# 16-bit grey values across the range; TensorFlow keeps the high byte (v >> 8).
GREY16 = (np.arange(77, dtype=np.uint32).reshape(7, 11) * 851).astype(np.uint16)


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _grey16_png():
    image = Image.new("I;16", (11, 7))
    image.frombytes(GREY16.astype("<u2").tobytes())
    return _encode(image, "PNG")


def _grey_reference(rgb):
    """NumPy reference of rgb_to_grey: tf.image.rgb_to_grayscale's weights, rounded."""
    weights = np.array([0.2989, 0.5870, 0.1140], np.float32)
    return np.round(rgb.astype(np.float32) @ weights).astype(np.uint8)[..., None]


FILES = {
    "png": _encode(Image.fromarray(RGB), "PNG"),
    "grey16.png": _grey16_png(),
    "rgba.png": _encode(Image.fromarray(np.dstack([RGB, RGB[..., :1]])), "PNG"),
    "jpg": _encode(Image.fromarray(RGB), "JPEG"),
    "cmyk.jpg": _encode(Image.fromarray(RGB).convert("CMYK"), "JPEG"),
    "gif": _encode(Image.fromarray(RGB), "GIF"),
    "bmp": _encode(Image.fromarray(RGB), "BMP"),
    "webp": _encode(Image.fromarray(RGB), "WEBP"),
    "lossless.webp": _encode(Image.fromarray(RGB), "WEBP", lossless=True),
    "alpha.webp": _encode(Image.fromarray(np.dstack([RGB, RGB[..., :1]])), "WEBP"),
}


def _huge_png():
    """A 13000 x 13000 PNG of about 20 KB: 169 million pixels, 507 MB decoded as RGB."""
    return _encode(Image.new("1", (13000, 13000)), "PNG")


# --- header_size -------------------------------------------------------------

_traced_header_size = tf.function(images.header_size, input_signature=[tf.TensorSpec([], tf.string)])


@pytest.mark.parametrize("name", sorted(FILES))
def test_header_size_of_every_format_eagerly_and_traced(name):
    for size_of in (images.header_size, _traced_header_size):
        np.testing.assert_array_equal(size_of(tf.constant(FILES[name])).numpy(), [7, 11])


def test_header_size_of_top_down_bmp_and_of_non_images():
    bmp = bytearray(FILES["bmp"])
    bmp[22:26] = (-7).to_bytes(4, "little", signed=True)     # rows stored top-down
    np.testing.assert_array_equal(images.header_size(tf.constant(bytes(bmp))).numpy(), [7, 11])
    for junk in (b"", b"GIF", b"not an image at all"):
        np.testing.assert_array_equal(images.header_size(tf.constant(junk)).numpy(), [-1, -1])
    # A cut PNG still has its IHDR: the size is known though the pixels are gone.
    np.testing.assert_array_equal(images.header_size(tf.constant(FILES["png"][:30])).numpy(), [7, 11])
    # Cut inside the IHDR: the missing bytes read as zeros (the decoder then rejects the file).
    np.testing.assert_array_equal(images.header_size(tf.constant(FILES["png"][:10])).numpy(), [0, 0])


# --- decode: one decoder, one conversion ------------------------------------

def test_decode_converts_between_grey_and_rgb_like_the_array_pipeline():
    png = tf.constant(FILES["png"])
    np.testing.assert_array_equal(images.decode(png, 3).numpy(), RGB)
    np.testing.assert_array_equal(images.decode(png, 0).numpy(), RGB)
    np.testing.assert_array_equal(images.decode(png, 1).numpy(), _grey_reference(RGB))
    # Alpha is dropped, not composited.
    np.testing.assert_array_equal(images.decode(tf.constant(FILES["rgba.png"]), 3).numpy(), RGB)
    grey = RGB[..., 0]
    grey_png = tf.constant(_encode(Image.fromarray(grey), "PNG"))
    np.testing.assert_array_equal(images.decode(grey_png, 0).numpy(), grey[..., None])
    np.testing.assert_array_equal(images.decode(grey_png, 1).numpy(), grey[..., None])
    np.testing.assert_array_equal(images.decode(grey_png, 3).numpy(), np.repeat(grey[..., None], 3, -1))
    with pytest.raises(ValueError, match="channels"):
        images.decode(png, 2)


@pytest.mark.parametrize("name", ["cmyk.jpg", "gif", "bmp", "webp", "alpha.webp"])
def test_formats_tensorflow_cannot_convert_decode_at_both_channel_counts(name):
    # tf.io.decode_image(channels=1) refuses all of these ("jpeg::Uncompress
    # failed" for CMYK; "channels must be 0 or 3" for GIF and BMP), and
    # channels=3 an RGBA WebP, so a model used to fail mid-training on a file
    # the import check had passed.
    data = tf.constant(FILES[name])
    rgb = images.decode(data, 3).numpy()
    assert rgb.shape == (7, 11, 3)
    np.testing.assert_array_equal(images.decode(data, 1).numpy(), _grey_reference(rgb))
    np.testing.assert_array_equal(pipeline.decode_and_resize(data, 5, 1).numpy(),
                                  pipeline.resize_uint8(_grey_reference(rgb)[None], 5).numpy()[0])


def test_sixteen_bit_png_decodes_to_its_high_byte_everywhere(tmp_path):
    path = tmp_path / "grey16.png"
    path.write_bytes(FILES["grey16.png"])
    expected = (GREY16 >> 8).astype(np.uint8)
    assert len(np.unique(expected)) == 77     # Pillow's old conversion clipped all but one pixel to 255
    embedded = images.read_image(str(path))
    assert embedded.dtype == np.uint8 and embedded.shape == (7, 11)
    np.testing.assert_array_equal(embedded, expected)
    # The serving decode of the same bytes gives the same pixels.
    served = pipeline.decode_and_resize(tf.constant(FILES["grey16.png"]), 11, 1).numpy()
    np.testing.assert_array_equal(pipeline.resize_uint8(embedded[None, ..., None], 11).numpy()[0], served)
    np.testing.assert_array_equal(images.stack_images([str(path)] * 2), [expected, expected])


# --- the pixel limit ---------------------------------------------------------

def test_limit_is_checked_from_the_header_without_decoding(tmp_path):
    huge = _huge_png()
    assert len(huge) < 30_000
    path, cut = tmp_path / "huge.png", tmp_path / "cut.png"
    path.write_bytes(huge)
    cut.write_bytes(huge[:64])     # the header only: a decode would fail on the missing pixel data
    message = "image is 13000 x 13000 pixels (width x height), more than the limit of 40000000 pixels"
    assert images.MAX_PIXELS == 40_000_000
    images.decode_error(str(path))   # traces the check once
    start = time.perf_counter()
    assert images.decode_error(str(path)) == message
    assert time.perf_counter() - start < 0.5     # a full decode of 507 MB takes longer
    assert images.decode_error(str(cut)) == message   # the header check comes first
    # Under a higher limit the cut file fails in the decoder instead.
    assert "more than the limit" not in images.decode_error(str(cut), max_pixels=13000 * 13000)


def _bytes_read():
    """Bytes this process has read with read() so far (Linux: /proc/self/io rchar)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_size_and_header_are_checked_before_the_body_is_read(tmp_path):
    over_header = tmp_path / "over.png"
    with open(over_header, "wb") as f:    # a 13000 x 13000 header, then 8 MiB (holes)
        f.write(_huge_png()[:64])
        f.truncate(8 << 20)
    images.decode_error(str(over_header))   # traces the checks once
    before = _bytes_read()
    assert images.decode_error(str(over_header)) == (
        "image is 13000 x 13000 pixels (width x height), more than the limit of 40000000 pixels")
    assert _bytes_read() - before < 1 << 20   # the first 64 KiB, not the 8 MiB body
    # Over the byte limit (8 bytes a pixel + 16 MiB) the header is not read either.
    assert images.max_file_bytes(10) == 80 + (16 << 20)
    zeros = tmp_path / "zeros.png"
    with open(zeros, "wb") as f:
        f.truncate(images.max_file_bytes(10) + 1)
    before = _bytes_read()
    assert images.decode_error(str(zeros), max_pixels=10) == (
        f"{images.max_file_bytes(10) + 1:,} bytes, more than the {images.max_file_bytes(10):,} that an image of "
        "at most 10 pixels needs")
    assert _bytes_read() - before < 1 << 16
    # A JPEG whose size marker lies beyond the first 64 KiB (a large ICC profile) still decodes.
    jpeg = tmp_path / "profile.jpg"
    Image.fromarray(RGB).save(jpeg, "JPEG", icc_profile=b"\0" * 100_000)
    assert images.decode_error(str(jpeg)) is None
    assert images.read_image(str(jpeg)).shape == RGB.shape


def test_only_regular_files_are_read_and_never_block(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def blocked(*_):
        raise TimeoutError("blocked on a FIFO")

    # Opened for reading with a plain open(), a FIFO without a writer blocks forever: the alarm
    # turns that into a failure.
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(10)
    try:
        assert images.decode_error(str(fifo)) == "not a regular file"
        with pytest.raises(DataError, match=r"pipe.png: cannot read image \(not a regular file\)"):
            images.read_image(str(fifo))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(images.NotReadable, match="^not a regular file$"):
        images.read_file("/dev/zero", max_pixels=None)


def test_limit_boundary_and_image_check_messages(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(FILES["png"])     # 11 x 7 = 77 pixels
    assert images.decode_error(str(path), max_pixels=77) is None
    assert images.decode_error(str(path), max_pixels=76) == (
        "image is 11 x 7 pixels (width x height), more than the limit of 76 pixels")
    check = images.ImageCheck(max_pixels=76)
    assert check.ok_many([str(path), str(path)], wheres=["list.txt:1", "list.txt:2"]) == [False, False]
    assert check.corrupt == 2
    assert check.examples[1] == (f"list.txt:2: corrupt image {path} (image is 11 x 7 pixels (width x height), "
                                 "more than the limit of 76 pixels)")
    with pytest.raises(DataError, match=r"^list.txt:5: corrupt image .*a.png \(image is 11 x 7 pixels"):
        images.ImageCheck(strict=True, max_pixels=76).ok_many([str(path)], ["list.txt:5"])
    with pytest.raises(DataError, match=r"a.png: cannot decode image \(image is 11 x 7 pixels"):
        images.read_image(str(path), max_pixels=76)


def test_decode_and_resize_applies_the_limit_inside_a_tf_function():
    traced = tf.function(lambda b: pipeline.decode_and_resize(b, 4, 3, max_pixels=76),
                         input_signature=[tf.TensorSpec([], tf.string)])
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        traced(tf.constant(FILES["png"]))
    assert images.error_message(info.value) == (
        "image is 11 x 7 pixels (width x height), more than the limit of 76 pixels")
    small = _encode(Image.fromarray(RGB[:4, :4]), "PNG")
    np.testing.assert_array_equal(traced(tf.constant(small)).numpy(), RGB[:4, :4])


# --- the import check agrees with training -----------------------------------

def test_check_passes_exactly_the_files_training_can_decode(tmp_path):
    files = dict(FILES)
    files["tiff"] = _encode(Image.fromarray(RGB), "TIFF")       # Pillow reads it, TensorFlow does not
    files["cut.png"] = FILES["png"][:60]
    files["noise.jpg"] = b"\xff\xd8\xff" + bytes(200)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        error = images.decode_error(str(tmp_path / name))
        for channels in (1, 3):
            try:
                pipeline.decode_and_resize(tf.constant(data), 6, channels)
                decodes = True
            except tf.errors.InvalidArgumentError:
                decodes = False
            assert (error is None) == decodes, (name, channels, error)
    assert images.decode_error(str(tmp_path / "tiff")) == (
        "cannot read the image size: not a JPEG, PNG, GIF, BMP or WebP file")
    assert images.decode_error(str(tmp_path / "missing.png")) == "cannot read it (No such file or directory)"


# --- embedding -----------------------------------------------------------------

def test_read_image_keeps_grey_files_grey_and_drops_alpha(tmp_path):
    for name in ("png", "rgba.png", "gif"):
        (tmp_path / name).write_bytes(FILES[name])
        np.testing.assert_array_equal(images.read_image(str(tmp_path / name)),
                                      images.decode(tf.constant(FILES[name]), 3).numpy())
    (tmp_path / "grey.png").write_bytes(_encode(Image.fromarray(RGB[..., 1]), "PNG"))
    np.testing.assert_array_equal(images.read_image(str(tmp_path / "grey.png")), RGB[..., 1])


def test_stack_images_names_grey_and_colour_examples_and_sizes(tmp_path):
    (tmp_path / "colour.png").write_bytes(FILES["png"])
    (tmp_path / "grey.png").write_bytes(FILES["grey16.png"])
    (tmp_path / "small.png").write_bytes(_encode(Image.fromarray(RGB[:5]), "PNG"))
    with pytest.raises(DataError) as info:
        images.stack_images([str(tmp_path / n) for n in ("colour.png", "grey.png", "colour.png")])
    assert str(info.value) == (f"cannot embed grey and colour images together: 1 grey "
                               f"(e.g. {tmp_path}/grey.png), 2 colour (e.g. {tmp_path}/colour.png); "
                               "embed only collections of one kind")
    with pytest.raises(DataError) as info:
        images.stack_images([str(tmp_path / "colour.png"), str(tmp_path / "small.png")])
    assert str(info.value) == (f"cannot embed images of different sizes ({tmp_path}/colour.png is 11 x 7, "
                               f"{tmp_path}/small.png is 11 x 5; width x height); embed only collections "
                               "whose images share one size")
    stacked = images.stack_images([str(tmp_path / "colour.png")] * 3)
    assert stacked.shape == (3, 7, 11, 3) and stacked.dtype == np.uint8
