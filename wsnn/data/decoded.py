"""A decoded-image cache for collections of image files: every file decoded once per prepared set.

A path-backed collection (JSONL, MIRFlickr, NUS-WIDE) names image files, and
training reads them again and again: stage 1 and every evaluation read each
image per epoch, and an exact stage-2 step gathers s/m x (M+1) images (4,104
at the paper's s=64, m=8, M=512). `decoded_images` decodes every file once,
in parallel, with the decoder and resize that serving uses
(`pipeline.decode_and_resize`, through `pipeline.ImageSource`), into one uint8
array N x S x S x C, stored as `<cache_dir>/decoded-<key>.npy`. The key
covers the prepared set's identity (ids, paths, tags, labels), its source
fingerprint and image root, S and C: another prepared set or another size
gets another file. The file is written under a temporary name and renamed.
An array of up to `max_in_memory_bytes` is read into memory; a larger one is
memory-mapped, and the page cache keeps what fits.
"""

import hashlib
import json
import os
import tempfile
import time

import numpy as np

from wsnn import io_utils
from wsnn.data import dataset as dataset_lib
from wsnn.data import pipeline

MAX_IN_MEMORY_BYTES = 4 << 30


def cache_key(dataset, image_size, channels):
    """The hex key of `dataset`'s decoded images at image_size x image_size x channels."""
    parts = {"identity": dataset_lib.identity(dataset)["data_hash"], "image_root": dataset.image_root,
             "source_fingerprint": dataset.info.get("source_fingerprint"), "image_size": int(image_size),
             "channels": int(channels), "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]


def decoded_images(dataset, image_size, channels, cache_dir, max_in_memory_bytes=MAX_IN_MEMORY_BYTES,
                   chunk=256, log=print):
    """Every image of a path-backed `dataset`, decoded and resized, from the cache (built if missing).

    Args:
      dataset: a `TaggedImageSet` of image files.
      image_size: S, the output height and width.
      channels: C, 1 or 3.
      cache_dir: where the cache files live (e.g. `<workdir>/prepared/cache`).
      max_in_memory_bytes: larger arrays are memory-mapped read-only.
      chunk: images decoded per batch of the thread pool (progress granularity).
      log: callable(text) for progress lines.

    Returns:
      uint8 array (N, S, S, C): in memory, or a read-only memmap.

    Raises:
      DataError: a file cannot be read or decoded (names the file).
    """
    if dataset.image_array is not None:
        raise ValueError("decoded_images is for sets of image files; this one holds its images")
    shape = (dataset.num_images, int(image_size), int(image_size), int(channels))
    path = os.path.join(cache_dir, f"decoded-{cache_key(dataset, image_size, channels)}.npy")
    if not os.path.isfile(path):
        _build(dataset, shape, path, chunk, log)
    size = int(np.prod(shape))
    return np.load(path, mmap_mode=None if size <= max_in_memory_bytes else "r")


def _build(dataset, shape, path, chunk, log):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    source = pipeline.ImageSource(dataset, shape[1], shape[3], num_workers=max(2, os.cpu_count() or 1))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=os.path.dirname(path))
    os.close(fd)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        started = last = time.perf_counter()
        n = shape[0]
        for start in range(0, n, chunk):
            indices = np.arange(start, min(start + chunk, n))
            array[indices] = source.get(indices)
            now = time.perf_counter()
            if now - last > 30 or indices[-1] + 1 == n:
                last = now
                done = indices[-1] + 1
                log(f"decoding {n} images once into {path}: {done}/{n}, {now - started:.0f} s, ETA "
                    f"{(now - started) / done * (n - done):.0f} s")
        array.flush()
        del array
        io_utils.set_umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
