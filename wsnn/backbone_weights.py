"""The backbone-weights file: a backbone's pretrained weights as one .npz.

`wsnn.pretrain` writes it and `wsnn.models.build_model(..., weights=PATH)`
reads it; this module is the format and nothing else (NumPy only, so a
caller can check a file's metadata without loading TensorFlow).

Entries:
  "<layer name>/<index>"  one array per weight of every layer except the tag
                          head, in the order of `layer.get_weights()` (batch
                          norm's moving statistics included);
  "__meta__"              a JSON string: {"format": "wsnn-backbone-weights",
                          "format_version": 1, "backbone", "input_shape", ...};
                          the writer adds how the weights were made.
"""

import io
import json
import zipfile

import numpy as np

from wsnn import io_utils

FORMAT = "wsnn-backbone-weights"
FORMAT_VERSION = 1
META_KEY = "__meta__"


def write(path, arrays, meta):
    """Writes a backbone-weights file atomically.

    Args:
      path: the output .npz.
      arrays: {"<layer name>/<index>": array}.
      meta: JSON-serialisable dict; "format" and "format_version" are added.

    Returns:
      The "__meta__" dict written.
    """
    meta = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{META_KEY: np.array(json.dumps(meta, sort_keys=True))})
    io_utils.write_bytes(path, buffer.getvalue())
    return meta


def read_meta(path):
    """The "__meta__" dict of a backbone-weights file, without reading its arrays.

    Raises:
      ValueError: unreadable, or not a backbone-weights file of this format version.
    """
    return _read(path, meta_only=True)[1]


def read(path):
    """Reads a backbone-weights file.

    Args:
      path: the .npz file.

    Returns:
      ({"<layer name>/<index>": array}, meta dict).

    Raises:
      ValueError: unreadable, or not a backbone-weights file of this format version.
    """
    return _read(path, meta_only=False)


def _read(path, meta_only):
    try:
        with np.load(path, allow_pickle=False) as f:
            if META_KEY not in f.files:
                raise ValueError(f"{path}: no {META_KEY} entry; not a {FORMAT} file")
            text = str(f[META_KEY])
            arrays = {} if meta_only else {k: f[k] for k in f.files if k != META_KEY}
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read backbone weights ({e})") from None
    except ValueError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: cannot read backbone weights ({e})") from None
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: {FORMAT} version {meta.get('format_version')}, "
                         f"expected {FORMAT_VERSION}")
    return arrays, meta
