"""Image files: decoding checks shared by the importers.

Importers decode every image once so that a corrupt file is found at import
time, not hours into training. JPEGs are decoded at reduced scale (PIL's
draft mode), which still reads the whole file and so still finds truncation.
"""

import concurrent.futures
import os

import numpy as np
from PIL import Image

from wsnn.data.dataset import DataError


class ImageCheck:
    """Decodes image files and counts the corrupt ones.

    Args:
      strict: if True a corrupt image raises DataError; else it is skipped,
        counted in `corrupt` and listed (the first 20) in `examples`.
    """

    def __init__(self, strict=False):
        self.strict = strict
        self.corrupt = 0
        self.examples = []

    def ok(self, path, where_=None):
        """True if `path` decodes as an image; see `strict`."""
        return self._record(path, decode_error(path), where_)

    def ok_many(self, paths, wheres=None, workers=4):
        """`ok` over many paths, decoding in threads (PIL releases the GIL)."""
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            errors = list(pool.map(decode_error, paths))
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


def decode_error(path):
    """Returns None if `path` decodes fully as an image, else the error text."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (64, 64))
            image.load()
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"


def read_image(path):
    """Reads an image as a uint8 array: H x W for grey, H x W x 3 otherwise."""
    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB" if image.mode not in ("1", "I", "I;16", "F") else "L")
        return np.asarray(image, np.uint8)


def is_inside(path, root):
    """True if `path` resolves to a location inside directory `root`."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def stack_images(paths):
    """Reads images of one shape into an N x H x W (x 3) uint8 array."""
    arrays = [read_image(p) for p in paths]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DataError(f"cannot embed images of different shapes {shapes[:3]}; "
                        "embed only collections whose images share one size")
    return np.stack(arrays)
