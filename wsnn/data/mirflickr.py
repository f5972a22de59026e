"""Importer for MIRFlickr-25K in the layout its two public archives unzip to.

`mirflickr25k.zip` gives `mirflickr/im<ID>.jpg`, the processed tags
`mirflickr/meta/tags/tags<ID>.txt` and the tags as typed
`mirflickr/meta/tags_raw/tags<ID>.txt` (one tag per line).
`mirflickr25k_annotations_v080.zip` gives one file per concept, each line a
1-based image ID: 24 "potential" files `<concept>.txt` and 14 "relevant"
files `<concept>_r1.txt` (the paper's 14 labels).

The result is a *raw* TaggedImageSet: tags as in the files, for the
normaliser to clean.
"""

import os
import re

import numpy as np

from wsnn.data.dataset import DataError, from_tag_lists, where
from wsnn.data.images import MAX_PIXELS, ImageCheck
from wsnn.data.text import read_lines

POTENTIAL_CONCEPTS = (
    "animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food",
    "indoor", "lake", "male", "night", "people", "plant_life", "portrait", "river",
    "sea", "sky", "structures", "sunset", "transport", "tree", "water")
R1_CONCEPTS = (
    "baby", "bird", "car", "clouds", "dog", "female", "flower", "male", "night",
    "people", "portrait", "river", "sea", "tree")
_LABEL_SETS = {"r1": (R1_CONCEPTS, "_r1"), "potential": (POTENTIAL_CONCEPTS, "")}
_TAG_FOLDERS = {"processed": "tags", "raw": "tags_raw"}
# No leading zeros, so every ID names exactly one file.
_IMAGE_NAME = re.compile(r"im([1-9][0-9]*)\.jpg")
_EXAMPLES = 20


def load_mirflickr(data_dir, label_set="r1", tag_kind="processed", annotations_dir=None,
                   strict=False, max_pixels=MAX_PIXELS):
    """Reads MIRFlickr-25K into a raw TaggedImageSet.

    Args:
      data_dir: the folder holding `mirflickr/`, or `mirflickr/` itself.
      label_set: "r1" (the 14 relevant-label concepts, as in the paper) or
        "potential" (the 24 concepts).
      tag_kind: "processed" (`meta/tags`) or "raw" (`meta/tags_raw`).
      annotations_dir: the folder with the annotation files; by default the
        first of `data_dir`, `data_dir/mirflickr25k_annotations_v080`,
        `data_dir/annotations` and `data_dir/mirflickr` holding `baby_r1.txt`.
      strict: if True a corrupt image raises DataError; else it is skipped
        and counted in `info["corrupt_images"]`.
      max_pixels: an image of more pixels (width x height, read from its
        header) counts as corrupt.

    Returns:
      A TaggedImageSet with ids the numeric IDs as strings ("17"), in ID order,
      image paths `im<ID>.jpg` relative to the `mirflickr/` folder, labels
      N x L and `info` reporting the options and counts.

    Raises:
      ValueError: an unknown `label_set` or `tag_kind`.
      DataError: missing folders or files, non-UTF-8 tag files, or a
        concept-file line that is not an integer (message `file:line`).
    """
    if label_set not in _LABEL_SETS:
        raise ValueError(f"label_set must be one of {sorted(_LABEL_SETS)}, got {label_set!r}")
    if tag_kind not in _TAG_FOLDERS:
        raise ValueError(f"tag_kind must be one of {sorted(_TAG_FOLDERS)}, got {tag_kind!r}")
    root = _image_folder(data_dir)
    annotations_dir = annotations_dir or _find_annotations(data_dir)
    tag_dir = os.path.join(root, "meta", _TAG_FOLDERS[tag_kind])
    if not os.path.isdir(tag_dir):
        raise DataError(f"{tag_dir}: tag folder not found (tag_kind={tag_kind!r})")

    found = sorted((int(m.group(1)) for m in map(_IMAGE_NAME.fullmatch, os.listdir(root)) if m))
    # Read every tag file before decoding images, so a broken download is
    # reported at once rather than after 25,000 decodes.
    tag_lists = [_read_tags(os.path.join(tag_dir, f"tags{i}.txt")) for i in found]
    names = [f"im{i}.jpg" for i in found]
    check = ImageCheck(strict, max_pixels)
    ok = check.ok_many([os.path.join(root, name) for name in names])
    kept = [k for k, good in enumerate(ok) if good]

    concepts, suffix = _LABEL_SETS[label_set]
    row = {found[k]: r for r, k in enumerate(kept)}
    present = set(found)
    labels = np.zeros((len(kept), len(concepts)), np.uint8)
    without_image = []
    for j, concept in enumerate(concepts):
        path = os.path.join(annotations_dir, f"{concept}{suffix}.txt")
        if not os.path.isfile(path):
            raise DataError(f"{path}: annotation file for concept {concept!r} not found")
        for number, image_id in _read_ids(path):
            if image_id in row:
                labels[row[image_id], j] = 1
            elif image_id not in present:
                without_image.append(where(path, number))

    info = {
        "source": "mirflickr",
        "data_dir": os.path.abspath(data_dir),
        "annotations_dir": os.path.abspath(annotations_dir),
        "label_set": label_set,
        "tag_kind": tag_kind,
        "strict": strict,
        "images_found": len(found),
        "images_kept": len(kept),
        "corrupt_images": check.corrupt,
        "corrupt_examples": check.examples,
        "images_without_tags": sum(1 for k in kept if not tag_lists[k]),
        "annotation_ids_without_image": len(without_image),
        "annotation_ids_without_image_examples": without_image[:_EXAMPLES],
    }
    return from_tag_lists(
        [str(found[k]) for k in kept], [tag_lists[k] for k in kept],
        image_root=os.path.abspath(root), image_paths=[names[k] for k in kept],
        labels=labels, label_names=list(concepts), info=info)


def _image_folder(data_dir):
    """The `mirflickr/` folder: `data_dir/mirflickr` or `data_dir` itself."""
    for folder in (os.path.join(data_dir, "mirflickr"), data_dir):
        if os.path.isdir(os.path.join(folder, "meta")):
            return folder
    raise DataError(f"{data_dir}: no MIRFlickr folder here (expected mirflickr/meta/ "
                    "or meta/ from mirflickr25k.zip)")


def _find_annotations(data_dir):
    """The first of the usual unzip places that holds the annotation files."""
    candidates = [os.fspath(data_dir)] + [os.path.join(data_dir, name) for name in
                               ("mirflickr25k_annotations_v080", "annotations", "mirflickr")]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "baby_r1.txt")):
            return folder
    raise DataError(f"MIRFlickr annotations (baby_r1.txt) not found in any of {candidates}; "
                    "unzip mirflickr25k_annotations_v080.zip there or pass annotations_dir")


def _read_tags(path):
    """The tags of one tag file: one per line, stripped, empty lines dropped."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: tag file missing for a present image")
    return [tag for tag in (text.strip() for _, text in read_lines(path)) if tag]


def _read_ids(path):
    """Yields (line_number, image ID) for the non-empty lines of a concept file."""
    for number, text in read_lines(path):
        text = text.strip()
        if not text:
            continue
        try:
            yield number, int(text)
        except ValueError:
            raise DataError(f"{where(path, number)}: image ID {text!r} is not an integer") from None
