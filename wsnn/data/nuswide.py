"""Importer for NUS-WIDE in the layout of its public release.

Under the data folder:
  ImageList/Imagelist.txt          one image per line; fixes the sample order.
                                   Lines look like `C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg`
                                   or `actor\\0001_2124494179.jpg`.
  NUS_WID_Tags/All_Tags.txt        `<photo id> <tag> <tag> ...`, same order.
  ConceptsList/Concepts81.txt      the 81 concept names, in order.
  Groundtruth/AllLabels/Labels_<concept>.txt
                                   one 0/1 per line, same order.
The images are `<image_dir>/<folder>/<nnnn>_<photo id>.jpg`; only part of
them can still be downloaded, so missing ones are skipped and counted.

The result is a *raw* TaggedImageSet: tags as in the files, for the
normaliser to clean.
"""

import logging
import os

import numpy as np

from wsnn.data.dataset import DataError, from_tag_lists, where
from wsnn.data.images import MAX_PIXELS, ImageCheck
from wsnn.data.text import read_lines

_EXAMPLES = 20


def load_nuswide(data_dir, image_dir=None, strict=False, max_pixels=MAX_PIXELS):
    """Reads NUS-WIDE into a raw TaggedImageSet.

    Args:
      data_dir: the folder holding ImageList/, NUS_WID_Tags/, ConceptsList/
        and Groundtruth/.
      image_dir: the folder holding the `<folder>/<file>.jpg` images;
        default `data_dir/Flickr`.
      strict: if True a corrupt image raises DataError; else it is skipped
        and counted in `info["corrupt_images"]`.
      max_pixels: an image of more pixels (width x height, read from its
        header) counts as corrupt.

    Returns:
      A TaggedImageSet in image-list order with ids the Flickr photo ids,
      image paths like `actor/0001_2124494179.jpg` relative to `image_dir`,
      labels N x 81 named in Concepts81 order and `info` reporting the counts.
      A label line other than 0 or 1 is logged as a warning, counted in
      `info["bad_label_lines"]` and read as 0.

    Raises:
      DataError: a missing or non-UTF-8 file, a malformed image-list line,
        files whose line counts disagree with the image list, a photo id in
        All_Tags.txt that differs from the image list's, or a corrupt image
        when `strict`.
    """
    image_dir = image_dir or os.path.join(data_dir, "Flickr")
    list_path = os.path.join(data_dir, "ImageList", "Imagelist.txt")
    tags_path = os.path.join(data_dir, "NUS_WID_Tags", "All_Tags.txt")
    concepts_path = os.path.join(data_dir, "ConceptsList", "Concepts81.txt")

    paths, photo_ids = [], []
    for number, text in read_lines(list_path):
        path, photo_id = _parse_list_line(text, where(list_path, number))
        paths.append(path)
        photo_ids.append(photo_id)
    n = len(paths)

    # Lines stay unsplit until the kept images are known: splitting all
    # 269,648 up front would hold millions of small strings.
    tag_lines = [text for _, text in read_lines(tags_path)]
    _check_count(tags_path, len(tag_lines), n)
    for number, (text, photo_id) in enumerate(zip(tag_lines, photo_ids), start=1):
        found = (text.split(None, 1) or ["nothing"])[0]
        if found != photo_id:
            raise DataError(f"{where(tags_path, number)}: photo id {found}, but "
                            f"{where(list_path, number)} names photo {photo_id}")

    concepts = [c.strip() for _, c in read_lines(concepts_path) if c.strip()]
    labels = np.zeros((n, len(concepts)), np.uint8)
    bad_count, bad_examples = 0, []
    for j, concept in enumerate(concepts):
        path = os.path.join(data_dir, "Groundtruth", "AllLabels", f"Labels_{concept}.txt")
        labels[:, j], bad = _read_labels(path, n)
        bad_count += len(bad)
        # Log only the first few so a broken file cannot flood the log.
        for location in bad[:_EXAMPLES - len(bad_examples)]:
            logging.warning("%s is not a 0/1 label; read as 0", location)
            bad_examples.append(location)

    # Only existing files are decoded; the rest of the release is missing.
    present = [k for k in range(n) if os.path.exists(os.path.join(image_dir, paths[k]))]
    missing = sorted(set(range(n)) - set(present))
    check = ImageCheck(strict, max_pixels)
    ok = check.ok_many([os.path.join(image_dir, paths[k]) for k in present],
                       wheres=[where(list_path, k + 1) for k in present])
    kept, seen, duplicates = [], set(), []
    for k, good in zip(present, ok):
        if not good:
            continue
        # Ids must be unique in a TaggedImageSet; keep the first copy.
        if photo_ids[k] in seen:
            duplicates.append(where(list_path, k + 1))
            continue
        seen.add(photo_ids[k])
        kept.append(k)
    if duplicates:
        logging.warning("%s: %d repeated photo ids skipped, first at %s",
                        list_path, len(duplicates), duplicates[0])

    tag_lists = [tag_lines[k].split()[1:] for k in kept]
    info = {
        "source": "nuswide",
        "data_dir": os.path.abspath(data_dir),
        "image_dir": os.path.abspath(image_dir),
        "strict": strict,
        "images_listed": n,
        "images_kept": len(kept),
        "missing_images": len(missing),
        "missing_examples": [paths[k] for k in missing[:_EXAMPLES]],
        "corrupt_images": check.corrupt,
        "corrupt_examples": check.examples,
        "duplicate_ids": len(duplicates),
        "duplicate_examples": duplicates[:_EXAMPLES],
        "bad_label_lines": bad_count,
        "bad_label_examples": bad_examples,
        "images_without_tags": sum(1 for tags in tag_lists if not tags),
    }
    return from_tag_lists(
        [photo_ids[k] for k in kept], tag_lists,
        image_root=os.path.abspath(image_dir), image_paths=[paths[k] for k in kept],
        labels=labels[kept], label_names=concepts, info=info)


def _parse_list_line(text, location):
    """Returns (`folder/file.jpg`, photo id) for one Imagelist.txt line."""
    # The list was written on Windows, some copies with the absolute
    # `C:\ImageData\Flickr\` prefix: only the last two parts name the file.
    parts = [p for p in text.strip().replace("\\", "/").split("/") if p]
    if len(parts) < 2:
        raise DataError(f"{location}: expected `<folder>\\<nnnn>_<photo id>.jpg`, got {text!r}")
    folder, name = parts[-2:]
    stem, ext = os.path.splitext(name)
    _, underscore, photo_id = stem.partition("_")
    if not underscore or not photo_id or ext.lower() != ".jpg":
        raise DataError(f"{location}: expected `<folder>\\<nnnn>_<photo id>.jpg`, got {text!r}")
    return f"{folder}/{name}", photo_id


def _check_count(path, count, n):
    if count != n:
        raise DataError(f"{path}: {count} lines, but the image list has {n}")


def _read_labels(path, n):
    """Reads one label file.

    Returns:
      (n uint8 0/1 labels, the `file:line: value` of each line that is not 0
      or 1); such lines read as 0, as the official files have one.
    """
    lines = [text.strip() for _, text in read_lines(path)]
    _check_count(path, len(lines), n)
    column = np.zeros(n, np.uint8)
    bad = []
    for number, text in enumerate(lines, start=1):
        if text == "1":
            column[number - 1] = 1
        elif text != "0":
            bad.append(f"{where(path, number)}: {text!r}")
    return column, bad
