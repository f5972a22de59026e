"""Image input: one decode-and-resize for training and serving, and ImageSource.

Every image the network sees goes through the same resize: bilinear with
antialiasing, rounded and clipped back to uint8. `decode_and_resize` does it
for encoded bytes (image files now, the serving signature's ``*_bytes`` input
later), after `wsnn.data.images.decode`, the decoder the import check and
embedding use too; `resize_uint8` does it for already-decoded arrays. So a
model never sees pixels decoded or resized one way in training and another
way in serving.

`ImageSource` hands out uint8 images of one size and channel count by index,
from either kind of `TaggedImageSet` (images held in an array, or files), or
from the decoded-image cache of a set of files (`wsnn.data.decoded`).
"""

import concurrent.futures

import numpy as np
import tensorflow as tf

from wsnn.data import images as images_lib
from wsnn.data.dataset import DataError

__all__ = ["decode_and_resize", "resize_uint8", "ImageSource"]


def _resize(images, image_size):
    """Resizes to image_size x image_size and rounds back to uint8."""
    resized = tf.image.resize(images, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _resize_if_needed(images, image_size):
    """`_resize`, skipped when the images already have the size.

    A tf.cond, not a Python `if`, so that it also works on the unknown shapes
    of decoded images inside a tf.function or SavedModel.
    """
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[-3], image_size), tf.equal(shape[-2], image_size))
    return tf.cond(same, lambda: images, lambda: _resize(images, image_size))


def decode_and_resize(image_bytes, image_size, channels, max_pixels=images_lib.MAX_PIXELS):
    """Decodes one encoded image (JPEG, PNG, GIF, BMP, WebP) and resizes it.

    Works eagerly and inside a tf.function.

    Args:
      image_bytes: a scalar tf.string with the file's bytes.
      image_size: the output height and width.
      channels: 1 (grey) or 3 (RGB); `wsnn.data.images.decode` converts.
      max_pixels: refuse an image of more pixels than this, read from its
        header before decoding (see `wsnn.data.images.decode`); None: no limit.

    Returns:
      A uint8 tensor of shape [image_size, image_size, channels].

    Raises:
      tf.errors.InvalidArgumentError: the bytes are not a decodable image, or
        the image is over `max_pixels`.
    """
    image = images_lib.decode(image_bytes, channels, max_pixels)
    image = _resize_if_needed(image, image_size)
    return tf.ensure_shape(image, [image_size, image_size, channels])


def resize_uint8(images, image_size):
    """The `decode_and_resize` resize for a decoded batch.

    Args:
      images: uint8 array or tensor [k, H, W, channels].
      image_size: the output height and width.

    Returns:
      A uint8 tensor [k, image_size, image_size, channels]; the input
      unchanged when H and W already equal image_size.
    """
    return _resize_if_needed(tf.convert_to_tensor(images, tf.uint8), image_size)


def _check_channels(channels):
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return channels


class ImageSource:
    """uint8 images of one size and channel count, looked up by index.

    Array-backed sets are gathered from `image_array`; grey arrays are
    repeated to 3 channels, and RGB arrays are turned grey with
    `wsnn.data.images.rgb_to_grey`: the conversions `decode` applies to
    files. Path-backed sets are read from disk and decoded with
    `decode_and_resize` in a thread pool, without a pixel limit: the import
    check applied the limit that the dataset was prepared with; or, given
    `decoded` (the whole prepared set decoded once, `wsnn.data.decoded`),
    gathered from it.

    Args:
      dataset: a `TaggedImageSet`.
      image_size: output height and width. Defaults to the size of the
        array's (square) images; path-backed sets must give it, since files
        may have any size.
      channels: 1 or 3. Defaults to the array's channel count, or 3 for
        path-backed sets.
      num_workers: threads that read and decode files (path-backed sets).
      decoded: optional uint8 array (N_all, S, S, C) of decoded images
        (`wsnn.data.decoded.decoded_images`) holding this set's images at
        rows `rows`; then images come from it, and image_size and channels
        must be S and C.
      rows: this set's row in `decoded` for each of its images.

    Raises:
      ValueError: bad `channels` or `image_size`, or no size to default to.
    """

    def __init__(self, dataset, image_size=None, channels=None, num_workers=8, decoded=None, rows=None):
        self.dataset = dataset
        self.decoded, self.rows = decoded, None if rows is None else np.asarray(rows, np.int64)
        if decoded is not None:
            if self.rows is None or len(self.rows) != dataset.num_images:
                raise ValueError("decoded images need `rows`, one per image of the set")
            if (image_size, channels) != (decoded.shape[1], decoded.shape[3]):
                raise ValueError(f"decoded images are {decoded.shape[1:]}, not {image_size} x {image_size} x "
                                 f"{channels}")
        array = dataset.image_array
        if array is not None:
            if image_size is None:
                if array.shape[1] != array.shape[2]:
                    raise ValueError(f"images are {array.shape[1]} x {array.shape[2]}, not square: "
                                     "give image_size")
                image_size = array.shape[1]
            if channels is None:
                channels = 1 if array.ndim == 3 else 3
        else:
            if image_size is None:
                raise ValueError("image_size is required for a set of image files")
            if channels is None:
                channels = 3
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.image_size = int(image_size)
        self.channels = _check_channels(channels)
        self.num_workers = num_workers
        # One traced function with a fixed signature: no retracing per file.
        self._decode = tf.function(
            lambda image_bytes: decode_and_resize(image_bytes, self.image_size, self.channels, max_pixels=None),
            input_signature=[tf.TensorSpec([], tf.string)])

    @property
    def num_images(self):
        return self.dataset.num_images

    def get(self, indices):
        """The images at `indices`, in that order.

        Args:
          indices: 1-D integer indices (repeats allowed).

        Returns:
          uint8 array (k, image_size, image_size, channels).

        Raises:
          IndexError: an index outside [0, num_images).
          DataError: an image file cannot be read or decoded (names the file).
        """
        indices = np.asarray(indices, np.int64).reshape(-1)
        if np.any((indices < 0) | (indices >= self.num_images)):
            raise IndexError(f"image indices must be in [0, {self.num_images})")
        if len(indices) == 0:
            return np.zeros((0, self.image_size, self.image_size, self.channels), np.uint8)
        if self.decoded is not None:
            return np.asarray(self.decoded[self.rows[indices]])
        if self.dataset.image_array is not None:
            return self._from_array(indices)
        paths = [self.dataset.image_path(i) for i in indices]
        with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
            return np.stack(list(pool.map(self._read, paths)))

    def chunks(self, chunk=512):
        """Yields the images of every index in order, `chunk` at a time, each chunk read in a
        background thread while the caller works on the one before (chunked inference)."""
        starts = range(0, self.num_images, chunk)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wsnn-chunks") as pool:
            ahead = None
            for start in starts:
                current = ahead or pool.submit(self.get, np.arange(start, min(start + chunk, self.num_images)))
                following = start + chunk
                ahead = (pool.submit(self.get, np.arange(following, min(following + chunk, self.num_images)))
                         if following < self.num_images else None)
                yield current.result()

    def _from_array(self, indices):
        images = self.dataset.image_array[indices]
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.shape[-1] == 1 and self.channels == 3:
            images = np.repeat(images, 3, axis=-1)
        elif images.shape[-1] == 3 and self.channels == 1:
            images = images_lib.rgb_to_grey(images)
        return np.asarray(resize_uint8(images, self.image_size))

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                image_bytes = f.read()
        except OSError as e:
            raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
        try:
            return self._decode(tf.constant(image_bytes)).numpy()
        except tf.errors.OpError as e:
            raise DataError(f"{path}: cannot decode image ({images_lib.error_message(e)})") from None
