"""The JSONL format: how a user's own photo collection enters wsnn.

`annotations.jsonl` has one JSON object per line:

  {"image": "photos/beach.jpg",          # path relative to the JSONL file
   "tags": ["Sea", "holiday", "nikon"],  # as typed, may be empty
   "labels": ["sea"],                     # optional ground truth
   "user": "alice",                       # optional uploader id
   "id": "beach-001"}                     # optional; default: the image path

An optional `labels.txt` beside it lists the label names, one per line; a
line whose label is not in it is an error. Without it the label names are the
sorted union of the lines' labels. Both files are UTF-8, with or without a
byte-order mark. Blank lines are skipped. Any fault names the file and line.
An id (or, by default, image path) may not hold a tab or line break: ids are
written one per line into tab-separated outputs (refined_tags.tsv).
"""

import json
import logging
import os

import numpy as np

from wsnn.data import images as images_lib
from wsnn.data.dataset import DataError, from_tag_lists, where
from wsnn.data.text import read_lines

_KEYS = {"image", "tags", "labels", "user", "id"}
# Characters that would split a row or line of refined_tags.tsv: tab, and
# every line boundary of str.splitlines.
_TSV_BREAKS = set("\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _lines(path):
    """`read_lines`, less a UTF-8 byte-order mark at the start of the file."""
    for number, text in read_lines(path):
        yield number, text.removeprefix("\ufeff") if number == 1 else text


def _string_list(value, field, at):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{at}: '{field}' must be a list of strings")
    for v in value:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{at}: '{field}' holds a string that is not valid Unicode: {v!r}") from None
    return [v.strip() for v in value if v.strip()]


def _read_label_names(path):
    names = []
    for number, text in _lines(path):
        if text.strip():
            if text.strip() in names:
                raise DataError(f"{where(path, number)}: label '{text.strip()}' listed twice")
            names.append(text.strip())
    return names


def load_jsonl(path, strict=False, embed_images=False, max_pixels=images_lib.MAX_PIXELS):
    """Reads a JSONL collection into a raw TaggedImageSet.

    Args:
      path: the `annotations.jsonl` file.
      strict: a corrupt image is an error (default: skipped and counted).
      embed_images: decode every image into one uint8 array held by the set
        (all images must share one size, and be all grey or all colour); for
        small sets such as FashionTags.
      max_pixels: an image of more pixels (width x height, read from its
        header) counts as corrupt.

    Returns:
      A raw TaggedImageSet (tags as typed), image paths relative to the
      JSONL file's directory.

    Raises:
      DataError: malformed line, missing or outside image, duplicate id or
        one with a tab or line break, unknown label, non-UTF-8 text, or
        (strict) a corrupt image.
    """
    root = os.path.dirname(os.path.abspath(path))
    labels_file = os.path.join(root, "labels.txt")
    label_names = _read_label_names(labels_file) if os.path.isfile(labels_file) else None

    records, seen = [], {}
    for number, text in _lines(path):
        if not text.strip():
            continue
        at = where(path, number)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{at}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{at}: expected a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - _KEYS
        if unknown:
            raise DataError(f"{at}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        image = obj.get("image")
        if not isinstance(image, str) or not image:
            raise DataError(f"{at}: 'image' must be a non-empty path string")
        if "\0" in image:
            raise DataError(f"{at}: 'image' holds a NUL character: {image!r}")
        full = os.path.join(root, image)
        if not images_lib.is_inside(full, root):
            raise DataError(f"{at}: image '{image}' is outside the dataset root {root}")
        if not os.path.isfile(full):
            raise DataError(f"{at}: image file not found: {full}")
        tags = _string_list(obj.get("tags", []), "tags", at)
        labels = _string_list(obj.get("labels", []), "labels", at)
        if label_names is not None:
            unknown_labels = [l for l in labels if l not in label_names]
            if unknown_labels:
                raise DataError(f"{at}: label(s) {unknown_labels} not in {labels_file}")
        for field in ("id", "user"):
            value = obj.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                raise DataError(f"{at}: '{field}' must be a string or an integer")
        image_id = str(obj.get("id", image))
        if _TSV_BREAKS & set(image_id):
            raise DataError(f"{at}: {'id' if 'id' in obj else 'image path (the default id)'} {image_id!r} "
                            "holds a tab or line break, which would break refined_tags.tsv")
        if image_id in seen:
            raise DataError(f"{at}: duplicate id '{image_id}' (first on line {seen[image_id]})")
        seen[image_id] = number
        user = obj.get("user")
        records.append((at, image_id, os.path.relpath(full, root), tags, labels,
                        None if user is None else str(user)))
    if not records:
        raise DataError(f"{path}: no images")

    check = images_lib.ImageCheck(strict, max_pixels)
    good = check.ok_many([os.path.join(root, r[2]) for r in records], wheres=[r[0] for r in records])
    records = [r for r, g in zip(records, good) if g]
    if check.corrupt:
        logging.warning("%s: skipped %d corrupt image(s), e.g. %s", path, check.corrupt, check.examples[0])
    if not records:
        raise DataError(f"{path}: every image is corrupt, e.g. {check.examples[0]}")

    has_labels = label_names is not None or any(r[4] for r in records)
    if label_names is None:
        label_names = sorted({l for r in records for l in r[4]})
    label_index = {l: j for j, l in enumerate(label_names)}
    labels = None
    if has_labels:
        labels = np.zeros((len(records), len(label_names)), np.uint8)
        for i, r in enumerate(records):
            labels[i, [label_index[l] for l in r[4]]] = 1
    users = [r[5] for r in records]
    image_kwargs = {"image_root": root, "image_paths": [r[2] for r in records]}
    if embed_images:
        image_kwargs = {"image_array": images_lib.stack_images([os.path.join(root, r[2]) for r in records],
                                                               max_pixels)}
    return from_tag_lists(
        [r[1] for r in records], [r[3] for r in records], labels=labels, label_names=label_names,
        users=None if all(u is None for u in users) else [u or "" for u in users],
        info={"source": "jsonl", "path": os.path.abspath(path), "corrupt_images": check.corrupt,
              "corrupt_examples": check.examples},
        **image_kwargs)

