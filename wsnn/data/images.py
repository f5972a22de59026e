"""Image files: the one decoder, its pixel limit, the import check, embedding.

Every image file wsnn reads is decoded by `decode`: the importers' check
(`ImageCheck`, `decode_error`), `--embed_images` (`read_image`,
`stack_images`), training and the exported serving signature (both through
`wsnn.data.pipeline.decode_and_resize`). `decode` is TensorFlow's
`tf.io.decode_image` (JPEG, PNG, GIF, BMP, WebP; a 16-bit PNG comes out as
its high bytes, uint8) in the file's own channels, then one fixed
conversion: alpha dropped, grey repeated to RGB, RGB to grey by `rgb_to_grey`.
So a file that passes the import check is one that training and serving can
read at either channel count (TensorFlow's decoder itself cannot turn a CMYK
JPEG, a GIF, a BMP or a WebP grey, nor an RGBA WebP into RGB), and an
embedded image holds exactly the pixels that serving decodes from the same
file.

Before decoding, `decode` reads width and height from the file's header
(`header_size`; TensorFlow ops, so the same check runs inside the SavedModel)
and refuses an image of more than `max_pixels` pixels without decoding it: a
20 KB PNG can declare 13000 x 13000 pixels, 500 MB once decoded. While a
limit is set, formats whose header `header_size` cannot read (JPEG XL, which
TensorFlow's decode_image also accepts) are refused too.

Pillow is not used here (the tests use it to write image files).
"""

import concurrent.futures
import os
import re
import threading
from stat import S_ISREG

import numpy as np
import tensorflow as tf

from wsnn.data.dataset import MAX_PIXELS, DataError  # noqa: F401 (MAX_PIXELS: images.MAX_PIXELS)


_HEAD_BYTES = 32  # every size field `header_size` reads lies in a file's first 30 bytes


def header_size(image_bytes):
    """The height and width an image file's header declares; decodes no pixels.

    Reads JPEG (`tf.image.extract_jpeg_shape`), PNG (IHDR), GIF (logical
    screen), BMP (info header) and WebP (VP8, VP8L or VP8X canvas) headers.
    TensorFlow ops: works eagerly and inside a tf.function or SavedModel.

    Args:
      image_bytes: a scalar tf.string with the file's bytes.

    Returns:
      An int64 tensor [height, width]; [-1, -1] for bytes of none of these
      formats.

    Raises:
      tf.errors.InvalidArgumentError: a JPEG whose header is cut or damaged.
    """
    def from_head():
        # The first bytes, zero-padded so that a short file still has them all.
        head = tf.strings.substr(tf.strings.join([tf.strings.substr(image_bytes, 0, _HEAD_BYTES),
                                                  b"\0" * _HEAD_BYTES]), 0, _HEAD_BYTES)
        head = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

        def number(start, length, big_endian=False):
            weights = 256 ** np.arange(length, dtype=np.int64)
            return tf.reduce_sum(head[start:start + length] * (weights[::-1] if big_endian else weights))

        def magic(start, text):
            return tf.reduce_all(tf.equal(head[start:start + len(text)], list(text)))

        def bmp_int32(start):  # signed; a negative height means rows stored top-down
            value = number(start, 4)
            return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

        vp8l = number(21, 4)
        riff = magic(0, b"RIFF") & magic(8, b"WEBP")
        formats = [  # (is this format, [height, width])
            (magic(0, b"\x89PNG\r\n\x1a\n"), [number(20, 4, True), number(16, 4, True)]),
            (magic(0, b"GIF8"), [number(8, 2), number(6, 2)]),
            (magic(0, b"BM"), [bmp_int32(22), bmp_int32(18)]),
            (riff & magic(12, b"VP8 "), [number(28, 2) % 2 ** 14, number(26, 2) % 2 ** 14]),
            (riff & magic(12, b"VP8L"), [vp8l // 2 ** 14 % 2 ** 14 + 1, vp8l % 2 ** 14 + 1]),
            (riff & magic(12, b"VP8X"), [number(27, 3) + 1, number(24, 3) + 1]),
        ]
        size = tf.constant([-1, -1], tf.int64)
        for is_format, height_width in formats:
            size = tf.where(is_format, tf.stack(height_width), size)
        return size

    return tf.cond(tf.io.is_jpeg(image_bytes),
                   lambda: tf.image.extract_jpeg_shape(image_bytes, output_type=tf.int64)[:2], from_head)


def _check_size(image_bytes, max_pixels):
    """An assertion op: the header is readable and declares at most max_pixels pixels."""
    height, width = tf.unstack(header_size(image_bytes))
    # float64: a forged header's 2^32 x 2^32 overflows int64.
    pixels = tf.cast(height, tf.float64) * tf.cast(width, tf.float64)
    max_pixels = tf.cast(max_pixels, tf.float64)
    ok = (height >= 0) & (pixels <= max_pixels)
    message = tf.where(height >= 0, tf.strings.format(
        "image is {} x {} pixels (width x height), more than the limit of {} pixels",
        (width, height, tf.cast(max_pixels, tf.int64))),
        "cannot read the image size: not a JPEG, PNG, GIF, BMP or WebP file")
    if tf.executing_eagerly():
        # Eagerly, tf.debugging.Assert would wrap the message in tensor reprs.
        if not ok:
            raise tf.errors.InvalidArgumentError(None, None, message.numpy().decode())
        return None
    return tf.debugging.Assert(ok, [message])


def rgb_to_grey(images):
    """RGB uint8 images [..., 3] to grey [..., 1]: `tf.image.rgb_to_grayscale`, rounded."""
    grey = tf.image.rgb_to_grayscale(tf.cast(images, tf.float32))
    return tf.cast(tf.clip_by_value(tf.round(grey), 0.0, 255.0), tf.uint8)


def decode(image_bytes, channels, max_pixels=MAX_PIXELS):
    """Decodes one image file's bytes: the one decoder of wsnn (see the module docstring).

    Works eagerly and inside a tf.function or SavedModel.

    Args:
      image_bytes: a scalar tf.string with the file's bytes.
      channels: 1 (grey), 3 (RGB), or 0 for the file's own: 1 for a grey
        file (with or without alpha), else 3.
      max_pixels: refuse an image of more pixels (width x height, read from
        the header before decoding) than this; None: no limit.

    Returns:
      A uint8 tensor [height, width, channels] (the file's channels for 0).

    Raises:
      tf.errors.InvalidArgumentError: the bytes are not a decodable image, or
        the image is over `max_pixels`.
      ValueError: `channels` is not 0, 1 or 3.
    """
    if channels not in (0, 1, 3):
        raise ValueError(f"channels must be 0, 1 (grey) or 3 (RGB), got {channels!r}")
    check = None if max_pixels is None else _check_size(image_bytes, max_pixels)
    with tf.control_dependencies([check] if check is not None else []):
        image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)
    grey = tf.shape(image)[-1] < 3  # 1 or 2 channels (grey, grey + alpha); else RGB or RGBA
    if channels == 1:
        return tf.cond(grey, lambda: image[..., :1], lambda: rgb_to_grey(image[..., :3]))
    if channels == 3:
        return tf.cond(grey, lambda: tf.repeat(image[..., :1], 3, axis=-1), lambda: image[..., :3])
    return tf.cond(grey, lambda: image[..., :1], lambda: image[..., :3])


# `decode` in the file's own channels, traced once for every call from the
# check and from embedding (max_pixels as a float64 tensor: no retracing).
_decode_own = tf.function(lambda image_bytes, max_pixels: decode(image_bytes, 0, max_pixels),
                          input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float64)])

_HEAD_READ = 1 << 16  # a JPEG's size (its SOF marker) usually lies in the first 64 KiB
# `header_size` and `_check_size` of a file's head, traced once (eagerly, each would run dozens of ops).
_head_size = tf.function(header_size, input_signature=[tf.TensorSpec([], tf.string)])


@tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float64)])
def _check_head(head, max_pixels):
    with tf.control_dependencies([_check_size(head, max_pixels)]):
        return tf.constant(True)


_traced = threading.Lock()


_trace_done = []


def _trace_once():
    """Traces the three functions above before their first call. tf.function caches a trace only
    after it finishes: files checked in several threads at once would each trace them again (and
    TensorFlow warns about retracing)."""
    if _trace_done:
        return  # every later file: no lock, no lookup
    with _traced:
        if not _trace_done:
            for function in (_head_size, _check_head, _decode_own):
                function.get_concrete_function()
            _trace_done.append(True)


class NotReadable(ValueError):
    """A path that `read_file` refuses to read: not a regular file, or too large."""


def max_file_bytes(max_pixels):
    """The largest image file read under a pixel limit: 8 bytes per pixel (16-bit RGBA,
    uncompressed) plus 16 MiB of metadata."""
    return 8 * int(max_pixels) + (16 << 20)


def read_file(path, max_pixels=MAX_PIXELS):
    """The bytes of the image file at `path`, read only after cheap checks.

    The file is opened without blocking (O_NONBLOCK, so a FIFO or a device
    cannot hang the caller) and refused unless it is a regular file. Under a
    pixel limit it is also refused, before its body is read, when it is
    larger than `max_file_bytes(max_pixels)` or when its first bytes declare
    more than `max_pixels` pixels or no size at all (the check of `decode`,
    applied to the head: 32 bytes, or up to 64 KiB for a JPEG).

    Args:
      path: the file.
      max_pixels: the pixel limit; None: only the regular-file check.

    Returns:
      The file's bytes.

    Raises:
      NotReadable: not a regular file, or larger than the byte limit.
      OSError: it cannot be opened or read.
      tf.errors.InvalidArgumentError: its header is over the pixel limit or
        unreadable (the message is `decode`'s).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        stat = os.fstat(fd)
        if not S_ISREG(stat.st_mode):
            raise NotReadable("not a regular file")
        if max_pixels is None:
            return f.read()
        if stat.st_size > max_file_bytes(max_pixels):
            raise NotReadable(f"{stat.st_size:,} bytes, more than the {max_file_bytes(max_pixels):,} that "
                              f"an image of at most {max_pixels:,} pixels needs")
        head = tf.constant(f.read(_HEAD_READ))
        _trace_once()
        try:
            _head_size(head)
            readable = True
        except tf.errors.InvalidArgumentError:
            readable = False  # a JPEG header cut by the head (or damaged): `decode` checks the whole file
        if readable or stat.st_size <= _HEAD_READ:
            _check_head(head, float(max_pixels))
        return head.numpy() + f.read()


def _decode_file(path, max_pixels):
    """`_decode_own` of a file (read by `read_file`); raises NotReadable, OSError or tf.errors.OpError."""
    _trace_once()
    return _decode_own(tf.constant(read_file(path, max_pixels)), float(max_pixels))


def error_message(error):
    """The op's own message from a TensorFlow error: one line, without graph locations."""
    for line in (error.message or "").splitlines():
        line = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", line).strip()
        if line and not line.startswith(("Graph execution error", "Detected at node", "<stack traces", "File ",
                                          "[[")):
            return re.sub(r"^assertion failed: \[(.*)\]$", r"\1", line)
    return type(error).__name__


def read_error_message(error):
    """Why a file was not read or decoded, in one line: from a NotReadable, OSError or
    tf.errors.OpError."""
    if isinstance(error, NotReadable):
        return str(error)
    if isinstance(error, OSError):
        return f"cannot read it ({error.strerror or error})"
    return error_message(error)


def decode_error(path, max_pixels=MAX_PIXELS):
    """None if the file at `path` decodes with `decode` within `max_pixels`, else why not (one line)."""
    try:
        _decode_file(path, max_pixels)
    except (OSError, NotReadable, tf.errors.OpError) as e:
        return read_error_message(e)
    return None


class ImageCheck:
    """Decodes image files with `decode` and counts the ones that fail.

    Args:
      strict: if True a failing image raises DataError; else it is skipped,
        counted in `corrupt` and listed (the first 20) in `examples`.
      max_pixels: an image of more pixels (width x height) fails, found from
        its header without decoding it.
    """

    def __init__(self, strict=False, max_pixels=MAX_PIXELS):
        self.strict = strict
        self.max_pixels = max_pixels
        self.corrupt = 0
        self.examples = []

    def ok_many(self, paths, wheres=None, workers=4):
        """For each path, True if it decodes as an image within max_pixels; see `strict`.

        Decodes in threads (TensorFlow's ops release the GIL). `wheres`, if
        given, names each path's source line for the messages.
        """
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            errors = list(pool.map(lambda p: decode_error(p, self.max_pixels), paths))
        return [self._record(path, error, wheres[i] if wheres else None)
                for i, (path, error) in enumerate(zip(paths, errors))]

    def _record(self, path, error, where_):
        if error is None:
            return True
        message = f"{where_ or path}: corrupt image {path} ({error})"
        if self.strict:
            raise DataError(message)
        self.corrupt += 1
        if len(self.examples) < 20:
            self.examples.append(message)
        return False


def read_image(path, max_pixels=MAX_PIXELS):
    """Decodes an image file with `decode`: uint8 H x W for a grey file, else H x W x 3.

    Raises:
      DataError: the file cannot be read or decoded, or is over max_pixels
        (the message names it).
    """
    try:
        image = _decode_file(path, max_pixels).numpy()
    except NotReadable as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    except tf.errors.OpError as e:
        raise DataError(f"{path}: cannot decode image ({error_message(e)})") from None
    return image[..., 0] if image.shape[-1] == 1 else image


def is_inside(path, root):
    """True if `path` resolves to a location inside directory `root`."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def stack_images(paths, max_pixels=MAX_PIXELS, workers=4):
    """Decodes images of one size and kind (all grey or all colour) into one array.

    Args:
      paths: image files.
      max_pixels: see `read_image`.
      workers: threads that decode.

    Returns:
      uint8 N x H x W (grey files) or N x H x W x 3 (colour files).

    Raises:
      DataError: a file cannot be decoded, or the files mix grey and colour
        or differ in size (the message names an example of each).
    """
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda p: read_image(p, max_pixels), paths))
    grey = [p for p, a in zip(paths, arrays) if a.ndim == 2]
    colour = [p for p, a in zip(paths, arrays) if a.ndim == 3]
    if grey and colour:
        raise DataError(f"cannot embed grey and colour images together: {len(grey)} grey "
                        f"(e.g. {grey[0]}), {len(colour)} colour (e.g. {colour[0]}); "
                        "embed only collections of one kind")
    sizes = {}
    for path, array in zip(paths, arrays):
        sizes.setdefault(array.shape[:2], path)
    if len(sizes) > 1:
        examples = ", ".join(f"{path} is {w} x {h}" for (h, w), path in list(sizes.items())[:3])
        raise DataError(f"cannot embed images of different sizes ({examples}; width x height); "
                        "embed only collections whose images share one size")
    return np.stack(arrays)
