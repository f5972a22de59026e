"""Tagging image files with an exported tagger (a SavedModel from wsnn.serving).

`load_model` loads an export and checks its serving signature against its
metadata; `predict_files` sends image files, as raw bytes in batches, to the
`serving_default` signature, so they are decoded and resized exactly as TF
Serving would. Used by `wsnn.annotate` and `wsnn.blend`.

Loading a SavedModel runs the ops of its graph: use only models you trust.
"""

import collections
import os

import numpy as np
import tensorflow as tf

from wsnn import serving
from wsnn.data import images as images_lib

# A path that could not be tagged. `kind` is "unmatched" (a command-line
# argument that names no image file) or "skipped" (a file that does not
# decode, or is over the pixel limit).
Failure = collections.namedtuple("Failure", "path reason kind")


def load_model(model_path):
    """`serving.load`, also checking the serving_default signature against the metadata.

    Raises:
      ValueError: no SavedModel at `model_path`, an incomplete or damaged
        one, one without serving_default, or an assets/wsnn.json that is bad
        or lists another number of tags than the model outputs.
    """
    loaded, metadata = serving.load(model_path)
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"--model={model_path}: the SavedModel has no serving_default signature")
    num_tags = loaded.signatures["serving_default"].structured_outputs["probabilities"].shape[-1]
    if num_tags != len(metadata["tag_names"]):
        path = os.path.join(serving.resolve_version_dir(model_path), "assets", serving.METADATA)
        raise ValueError(f"{path}: lists {len(metadata['tag_names'])} tag names, but the model outputs "
                         f"{num_tags} probabilities; export the model again")
    return loaded, metadata


def predict_files(loaded, paths, batch_size=32, max_pixels=None):
    """Tag probabilities of image files through the serving_default signature.

    Files are read with `images_lib.read_file` (regular files only, never
    blocking; under `max_pixels` also its byte and header checks). A batch
    that the model's graph refuses (e.g. an export made by an older wsnn,
    whose graph decoded differently from `wsnn.data.images.decode`) is
    retried one file at a time, so only the files it refuses are lost.

    Args:
      loaded: a SavedModel from `serving.load`.
      paths: image files.
      batch_size: files per call.
      max_pixels: the pixel limit of `read_file`; None: the graph's alone.

    Returns:
      (probabilities, ok, failures): a len(ok) x C float32 array for the
      files at indices `ok` of `paths`, and a Failure for each other file.
    """
    serve = loaded.signatures["serving_default"]

    def run(contents):
        return serve(image_bytes=tf.constant(contents, tf.string))["probabilities"].numpy()

    rows, ok, failures = [], [], []
    for start in range(0, len(paths), batch_size):
        batch, contents = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                contents.append(images_lib.read_file(paths[i], max_pixels))
                batch.append(i)
            except (images_lib.NotReadable, OSError, tf.errors.InvalidArgumentError) as e:
                failures.append(Failure(paths[i], images_lib.read_error_message(e), "skipped"))
        if not batch:
            continue
        try:
            rows.append(run(contents))
            ok += batch
            continue
        except tf.errors.InvalidArgumentError:
            pass
        for i, data in zip(batch, contents):
            try:
                rows.append(run([data]))
                ok.append(i)
            except tf.errors.InvalidArgumentError as e:
                failures.append(Failure(paths[i], f"the model cannot decode it ({images_lib.error_message(e)})",
                                        "skipped"))
    num_tags = int(serve.structured_outputs["probabilities"].shape[-1])
    probabilities = np.concatenate(rows) if rows else np.zeros((0, num_tags), np.float32)
    return probabilities, ok, failures
