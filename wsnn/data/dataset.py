"""TaggedImageSet: one type for a tagged image collection, and its on-disk form.

A collection is N images, a tag vocabulary of C tags, the user-tag matrix G
(N x C, sparse, 1 where a user gave the tag), and optionally ground-truth
labels (N x L) with their names and the label-to-tag mapping, image ids and
uploader ids. Importers produce a *raw* set (the tags as typed); the
normaliser (`wsnn.data.normalize`) turns it into the set that training uses.

A prepared-dataset directory holds:

  manifest.json  format, version, sizes, SHA-256 of every other file and a
                 content hash over them; loading checks all of them.
  dataset.json   ids, tag names, label names, label-to-tag map, image paths,
                 uploader ids and the import/normalisation reports.
  arrays.npz     the user-tag matrix in CSR form, labels, and (for small sets)
                 the images as one uint8 array. Read with allow_pickle=False.

The directory is written to a temporary name and renamed, so a killed run
never leaves a half-written dataset.
"""

import dataclasses
import hashlib
import json
import os
from typing import Optional

import numpy as np
import scipy.sparse

from wsnn import io_utils

FORMAT = "wsnn.tagged_image_set"
VERSION = 1
_FILES = ("dataset.json", "arrays.npz")


# 40 megapixels (e.g. 8000 x 5000) holds any photo of the collections wsnn
# imports (MIRFlickr and NUS-WIDE are web images under 1 MP) and a 36 MP
# camera's full size, while one decode stays bounded: 120 MB as uint8 RGB and
# 480 MB as float32 inside the resize, times the threads that decode at once.
# The default pixel limit (width x height) of an image, at import (`wsnn.data.images`), in
# `wsnn.annotate` and in the serving signature; here so that flags can use it without TensorFlow.
MAX_PIXELS = 40_000_000


class DataError(ValueError):
    """Bad input data: the message names the file (and line) at fault."""


def where(path, line=None):
    """Formats a location for DataError messages: `path:line`."""
    return f"{path}:{line}" if line is not None else str(path)


@dataclasses.dataclass
class TaggedImageSet:
    """A tagged image collection.

    Attributes:
      ids: N unique image ids (strings).
      tag_names: the C tags of the vocabulary.
      user_tags: G, an N x C `scipy.sparse.csr_matrix` of uint8 0/1.
      image_root: directory that `image_paths` are relative to, or None.
      image_paths: N paths relative to `image_root`, or None when the images
        are held in `image_array`.
      image_array: N x H x W (grey) or N x H x W x 3 uint8 images, or None.
      labels: N x L uint8 0/1 ground truth, or None when there is none.
      label_names: the L label names.
      label_to_tag: L ints, the tag column each label maps to (-1: none).
      users: N uploader ids, or None.
      info: free-form JSON-able reports (source, import counts, normalisation).
    """

    ids: list
    tag_names: list
    user_tags: scipy.sparse.csr_matrix
    image_root: Optional[str] = None
    image_paths: Optional[list] = None
    image_array: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    label_names: list = dataclasses.field(default_factory=list)
    label_to_tag: Optional[np.ndarray] = None
    users: Optional[list] = None
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.ids = [str(i) for i in self.ids]
        self.tag_names = list(self.tag_names)
        self.label_names = list(self.label_names)
        self.user_tags = scipy.sparse.csr_matrix(self.user_tags, dtype=np.uint8)
        self.user_tags.sum_duplicates()
        self.user_tags.sort_indices()
        if self.label_to_tag is None:
            self.label_to_tag = np.full(len(self.label_names), -1, np.int64)
        self.label_to_tag = np.asarray(self.label_to_tag, np.int64)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, np.uint8)
        self.validate()

    @property
    def num_images(self):
        return len(self.ids)

    @property
    def num_tags(self):
        return len(self.tag_names)

    @property
    def num_labels(self):
        return len(self.label_names)

    def validate(self):
        """Checks that all parts agree in size; raises DataError if not."""
        n, c = self.num_images, self.num_tags
        if self.user_tags.shape != (n, c):
            raise DataError(f"user_tags is {self.user_tags.shape}, expected ({n}, {c})")
        if self.user_tags.nnz and self.user_tags.data.max() > 1:
            raise DataError("user_tags must be 0/1")
        if len(set(self.ids)) != n:
            raise DataError("image ids are not unique")
        if len(set(self.tag_names)) != c:
            raise DataError("tag names are not unique")
        if (self.image_paths is None) == (self.image_array is None):
            raise DataError("exactly one of image_paths and image_array must be given")
        if self.image_paths is not None and len(self.image_paths) != n:
            raise DataError(f"{len(self.image_paths)} image paths for {n} images")
        if self.image_array is not None:
            if self.image_array.dtype != np.uint8 or self.image_array.ndim not in (3, 4):
                raise DataError("image_array must be uint8 N x H x W or N x H x W x 3")
            if len(self.image_array) != n:
                raise DataError(f"{len(self.image_array)} images in image_array for {n} ids")
        if self.labels is not None:
            if self.labels.shape != (n, self.num_labels):
                raise DataError(f"labels are {self.labels.shape}, expected ({n}, {self.num_labels})")
            if self.labels.max(initial=0) > 1:
                raise DataError("labels must be 0/1")
        if self.label_to_tag.shape != (self.num_labels,):
            raise DataError("label_to_tag must have one entry per label")
        if np.any((self.label_to_tag < -1) | (self.label_to_tag >= c)):
            raise DataError("label_to_tag points outside the tag vocabulary")
        if self.users is not None and len(self.users) != n:
            raise DataError(f"{len(self.users)} uploader ids for {n} images")

    def tags_of(self, index):
        """The tag names that users gave image `index`."""
        row = self.user_tags.indices[self.user_tags.indptr[index]:self.user_tags.indptr[index + 1]]
        return [self.tag_names[j] for j in row]

    def image_path(self, index):
        """Absolute path of image `index` (only for path-backed sets)."""
        return os.path.join(self.image_root or "", self.image_paths[index])

    def label_scores(self, tag_scores):
        """N x L float32 scores of the labels from N x C tag scores (dense or sparse): each label's
        tag column (`label_to_tag`), 0 for a label without a tag."""
        scores = np.zeros((tag_scores.shape[0], self.num_labels), np.float32)
        for l, tag in enumerate(self.label_to_tag):
            if tag >= 0:
                column = tag_scores[:, tag]
                scores[:, l] = column.toarray().ravel() if scipy.sparse.issparse(column) else column
        return scores

    def subset(self, indices):
        """A new set with the images at `indices` (same vocabulary and labels)."""
        indices = np.asarray(indices, np.int64)
        return dataclasses.replace(
            self,
            ids=[self.ids[i] for i in indices],
            user_tags=self.user_tags[indices],
            image_paths=None if self.image_paths is None else [self.image_paths[i] for i in indices],
            image_array=None if self.image_array is None else self.image_array[indices],
            labels=None if self.labels is None else self.labels[indices],
            users=None if self.users is None else [self.users[i] for i in indices],
            info=dict(self.info),
        )

    def statistics(self):
        """The paper's Table-1 statistics: N, C, labels, tags per image."""
        return {
            "images": self.num_images,
            "tags": self.num_tags,
            "labels": self.num_labels,
            "tags_per_image": float(self.user_tags.nnz / max(self.num_images, 1)),
        }


def from_tag_lists(ids, tag_lists, **kwargs):
    """Builds a set from per-image tag lists; the vocabulary is sorted.

    Args:
      ids: N image ids.
      tag_lists: N iterables of tag strings (duplicates are kept once).
      **kwargs: the other `TaggedImageSet` fields.

    Returns:
      A TaggedImageSet.
    """
    tag_lists = [list(tags) for tags in tag_lists]
    vocab = sorted({t for tags in tag_lists for t in tags})
    column = {t: j for j, t in enumerate(vocab)}
    indptr, indices = [0], []
    for tags in tag_lists:
        cols = sorted({column[t] for t in tags})
        indices.extend(cols)
        indptr.append(len(indices))
    user_tags = scipy.sparse.csr_matrix(
        (np.ones(len(indices), np.uint8), np.asarray(indices, np.int64), np.asarray(indptr, np.int64)),
        shape=(len(tag_lists), len(vocab)))
    return TaggedImageSet(ids=ids, tag_names=vocab, user_tags=user_tags, **kwargs)


def identity(dataset):
    """The data a model is trained on, as two SHA-256 hex digests.

    "data_hash" covers every image's id, path or pixels, user tags and labels,
    and the label names and mapping; "vocabulary_hash" the tag names in order
    (the meaning of the model's output columns). `info` (reports, settings,
    where the data was prepared) is left out: the same data prepared again
    has the same identity.
    """
    digest = hashlib.sha256()
    meta = [dataset.ids, dataset.tag_names, dataset.label_names, dataset.label_to_tag.tolist(),
            dataset.image_paths, dataset.users]
    digest.update(json.dumps(meta, ensure_ascii=False).encode("utf-8"))
    arrays = [dataset.user_tags.indptr.astype(np.int64), dataset.user_tags.indices.astype(np.int64)]
    arrays += [a for a in (dataset.labels, dataset.image_array) if a is not None]
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode("ascii"))
        digest.update(memoryview(array).cast("B"))
    vocabulary = hashlib.sha256("\n".join(dataset.tag_names).encode("utf-8")).hexdigest()
    return {"data_hash": digest.hexdigest(), "vocabulary_hash": vocabulary}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(dataset, directory):
    """Writes `dataset` to a prepared-dataset directory, atomically.

    Returns:
      The manifest dict (with the content hash).
    """
    dataset.validate()
    meta = {
        "ids": dataset.ids,
        "tag_names": dataset.tag_names,
        "label_names": dataset.label_names,
        "label_to_tag": dataset.label_to_tag.tolist(),
        "image_root": dataset.image_root,
        "image_paths": dataset.image_paths,
        "users": dataset.users,
        "info": dataset.info,
    }
    arrays = {
        "user_tags_indptr": dataset.user_tags.indptr.astype(np.int64),
        "user_tags_indices": dataset.user_tags.indices.astype(np.int64),
    }
    if dataset.labels is not None:
        arrays["labels"] = dataset.labels
    if dataset.image_array is not None:
        arrays["images"] = dataset.image_array
    with io_utils.atomic_directory(directory) as tmp:
        with open(os.path.join(tmp, "dataset.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False)
        np.savez(os.path.join(tmp, "arrays.npz"), **arrays)
        hashes = {name: _sha256(os.path.join(tmp, name)) for name in _FILES}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "num_images": dataset.num_images,
            "num_tags": dataset.num_tags,
            "num_labels": dataset.num_labels,
            "files": hashes,
            "content_hash": hashlib.sha256("".join(hashes[n] for n in _FILES).encode()).hexdigest(),
        }
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def read_manifest(directory):
    """Reads and checks a prepared directory's manifest.json."""
    path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a prepared dataset (no manifest.json); "
                        "create one with `python -m wsnn.prepare`")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise DataError(f"{path}: not a wsnn manifest (expected an object with 'files')")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(f"{path}: format {manifest.get('format')} v{manifest.get('version')}, "
                        f"expected {FORMAT} v{VERSION}")
    return manifest


def load(directory, image_root=None):
    """Loads a prepared-dataset directory, verifying every file's hash.

    Args:
      directory: the directory `save` wrote.
      image_root: overrides the stored image root (data moved elsewhere).

    Returns:
      The TaggedImageSet; `info["content_hash"]` holds the manifest's hash.

    Raises:
      DataError: missing, changed or truncated files, or inconsistent contents.
    """
    manifest = read_manifest(directory)
    for name in _FILES:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing from the prepared dataset")
        if _sha256(path) != manifest["files"].get(name):
            raise DataError(f"{path}: changed or truncated since it was written "
                            "(SHA-256 differs from manifest.json); prepare the dataset again")
    with open(os.path.join(directory, "dataset.json"), encoding="utf-8") as f:
        meta = json.load(f)
    with np.load(os.path.join(directory, "arrays.npz"), allow_pickle=False) as arrays:
        n, c = len(meta["ids"]), len(meta["tag_names"])
        indices = arrays["user_tags_indices"]
        user_tags = scipy.sparse.csr_matrix(
            (np.ones(len(indices), np.uint8), indices, arrays["user_tags_indptr"]), shape=(n, c))
        labels = arrays["labels"] if "labels" in arrays else None
        images = arrays["images"] if "images" in arrays else None
    info = dict(meta["info"], content_hash=manifest["content_hash"])
    return TaggedImageSet(
        ids=meta["ids"], tag_names=meta["tag_names"], user_tags=user_tags,
        image_root=image_root or meta["image_root"], image_paths=meta["image_paths"],
        image_array=images, labels=labels, label_names=meta["label_names"],
        label_to_tag=np.asarray(meta["label_to_tag"], np.int64), users=meta["users"], info=info)
