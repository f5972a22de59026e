"""FashionTags v2: real Fashion-MNIST photos in small scenes, tagged by simulated users.

The specification is docs/fashion_tags.md. In short: each image is a 2x2 mosaic
(56x56 grey) of 1-4 Fashion-MNIST items drawn from one of four styles; its
labels are the classes present; one of 400 simulated Flickr users tags it,
incompletely (recall), imprecisely (confusable classes, synonyms, hypernyms,
plurals, capitals), with spurious class words, personal pet tags and junk
tokens that are not in WordNet.

v2 splits Fashion-MNIST's train split by a fixed rule (not by the seed): the
first 5/6 (indices 0-49,999) is the scene pool, the only images mosaics use;
the last 1/6 (50,000-59,999) is the pretraining pool (`pretraining_pool`),
which `wsnn.pretrain` uses in ImageNet's role and no mosaic ever shows.
Fashion-MNIST's test split is never read.

The generator is deterministic: one seed gives byte-identical output
(`numpy.random.Generator(PCG64(seed))`, fixed PNG settings, no timestamps).
Output is written in the JSONL format (`wsnn.data.jsonl`) and replaces the
output directory only when complete.
"""

import dataclasses
import gzip
import hashlib
import io
import json
import os
import zlib

import numpy as np
from PIL import Image

from wsnn import io_utils
from wsnn.data.dataset import DataError

VERSION = 2
SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
SOURCE_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")

LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
PLURALS = ("t-shirts", "trousers", "pullovers", "dresses", "coats", "sandals", "shirts", "sneakers",
           "bags", "boots")
SYNONYMS = {
    "t-shirt": ("tee", "jersey"), "trouser": ("pants", "slacks"), "pullover": ("sweater", "jumper"),
    "dress": ("gown", "frock"), "coat": ("overcoat", "jacket"), "sandal": ("flip-flop",),
    "shirt": ("blouse",), "sneaker": ("trainer", "gym_shoe"), "bag": ("handbag", "purse"),
    "boot": ("wellington",),
}
HYPERNYMS = {
    "t-shirt": ("top", "garment", "clothing"), "shirt": ("top", "garment", "clothing"),
    "pullover": ("top", "garment", "clothing"), "trouser": ("garment", "clothing"),
    "dress": ("garment", "clothing"), "coat": ("outerwear", "garment", "clothing"),
    "sandal": ("footwear", "shoe"), "sneaker": ("footwear", "shoe"), "boot": ("footwear", "shoe"),
    "bag": ("accessory", "container"),
}
CONFUSABLE_GROUPS = (("t-shirt", "shirt", "pullover", "coat"), ("sneaker", "sandal", "boot"), ("dress", "coat"))
STYLES = {
    "summer": {"t-shirt": 3, "dress": 3, "sandal": 3, "shirt": 1, "bag": 1, "trouser": 0.5},
    "winter": {"pullover": 3, "coat": 3, "boot": 3, "trouser": 1, "bag": 0.5},
    "office": {"shirt": 3, "trouser": 3, "bag": 2, "coat": 1, "boot": 0.5},
    "casual": {"sneaker": 3, "t-shirt": 2, "trouser": 2, "pullover": 1, "bag": 1},
}
# The last 1/PRETRAINING_POOL_DIVISOR of the train split is the pretraining pool
# (60,000 images: 50,000-59,999); everything before it is the scene pool.
PRETRAINING_POOL_DIVISOR = 6
UNLISTED_WEIGHT = 0.2
ITEM_COUNTS = (1, 2, 3, 4)
ITEM_COUNT_PROBS = (0.2, 0.35, 0.3, 0.15)
NUM_USERS = 400
RECALL_RANGE = (0.3, 0.85)
WORDING_CONCENTRATION = (6, 2, 2)  # exact word, synonym, hypernym
PET_TAGS = ("vintage", "fashion", "style", "wardrobe", "shopping", "gift", "sale", "love", "closet",
            "outfit")
PET_TAG_PROB = 0.7
CONFUSE_PROB = 0.12
PLURAL_PROB = 0.3
SPURIOUS_RATE = 0.25
JUNK_TAGS = ("nikond70s", "365days", "project365", "img0042", "dsc01234", "2009", "iphoneography",
             "fujix100")
JUNK_RATE = 0.6
CAPITAL_PROB = 0.2


def _confusables():
    result = {}
    for name in LABELS:
        others = sorted({c for g in CONFUSABLE_GROUPS if name in g for c in g} - {name},
                        key=LABELS.index)
        result[name] = tuple(others)
    return result


def read_idx(path):
    """Reads a gzipped IDX file (images: N x H x W uint8, labels: N uint8)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read gzipped IDX file ({e})") from None
    if len(data) < 8 or data[:2] != b"\0\0" or data[2] != 8:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file ({len(data) - offset} bytes for shape {dims})")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _source_paths(source_dir):
    paths = [os.path.join(source_dir, name) for name in SOURCE_FILES]
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"{p}: Fashion-MNIST not found; install Debian's package "
                            "(`apt-get install dataset-fashion-mnist`) or pass the directory "
                            "holding train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz")
    return paths


def source_sha256(source_dir=SOURCE_DIR):
    """The SHA-256 of each Fashion-MNIST source file, by file name.

    Args:
      source_dir: directory with Fashion-MNIST's gzipped IDX train files.

    Returns:
      {file name: hex digest} for the two train files.

    Raises:
      DataError: a file is missing.
    """
    hashes = {}
    for p in _source_paths(source_dir):
        with open(p, "rb") as f:
            hashes[os.path.basename(p)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def pools(num_source):
    """The scene and pretraining pools of a train split of `num_source` images.

    Args:
      num_source: images in the source train split (60,000 for Fashion-MNIST).

    Returns:
      {"scenes": [0, end), "pretraining": [end, num_source)} as [start, stop]
      lists; end = num_source - num_source // PRETRAINING_POOL_DIVISOR.
    """
    end = num_source - num_source // PRETRAINING_POOL_DIVISOR
    return {"scenes": [0, end], "pretraining": [end, num_source]}


def _read_source(source_dir):
    paths = _source_paths(source_dir)
    images, classes = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or classes.shape != (len(images),):
        raise DataError(f"{source_dir}: expected N x 28 x 28 images and N labels, "
                        f"got {images.shape} and {classes.shape}")
    if classes.max() >= len(LABELS):
        raise DataError(f"{paths[1]}: class {classes.max()} out of range 0-9")
    return images, classes, source_sha256(source_dir)


@dataclasses.dataclass(frozen=True)
class Pool:
    """A contiguous part of Fashion-MNIST's train split.

    Attributes:
      images: n x 28 x 28 uint8.
      classes: n uint8 class indices into LABELS.
      start: the train-split index of images[0] (image i is train image start + i).
      sha256: the source files' SHA-256 ({file name: hex digest}).
    """

    images: np.ndarray
    classes: np.ndarray
    start: int
    sha256: dict


def pretraining_pool(source_dir=SOURCE_DIR):
    """The pretraining pool: the train images no FashionTags mosaic uses.

    Args:
      source_dir: directory with Fashion-MNIST's gzipped IDX train files.

    Returns:
      A Pool of the train images in pools(N)["pretraining"] (50,000-59,999 of 60,000).

    Raises:
      DataError: the source is missing or malformed.
    """
    images, classes, hashes = _read_source(source_dir)
    start, stop = pools(len(images))["pretraining"]
    return Pool(images[start:stop], classes[start:stop], start, hashes)


def _make_users(rng):
    users = []
    for _ in range(NUM_USERS):
        recall = rng.uniform(*RECALL_RANGE)
        wording = rng.dirichlet(WORDING_CONCENTRATION)
        num_pets = int(rng.integers(0, 4))
        pets = [PET_TAGS[i] for i in rng.choice(len(PET_TAGS), num_pets, replace=False)]
        users.append((recall, wording, pets))
    return users


def _word(rng, name, wording):
    mode = rng.choice(3, p=wording)
    if mode == 0:
        return PLURALS[LABELS.index(name)] if rng.random() < PLURAL_PROB else name
    choices = SYNONYMS[name] if mode == 1 else HYPERNYMS[name]
    return choices[int(rng.integers(len(choices)))]


def _tags(rng, present, user, confusables):
    recall, wording, pets = user
    tokens = []
    for c in present:
        if rng.random() < recall:
            name = LABELS[c]
            if confusables[name] and rng.random() < CONFUSE_PROB:
                name = confusables[name][int(rng.integers(len(confusables[name])))]
            tokens.append(_word(rng, name, wording))
    absent = [c for c in range(len(LABELS)) if c not in present]
    for _ in range(rng.poisson(SPURIOUS_RATE)):
        if absent:
            tokens.append(LABELS[absent[int(rng.integers(len(absent)))]])
    tokens.extend(p for p in pets if rng.random() < PET_TAG_PROB)
    tokens.extend(JUNK_TAGS[int(rng.integers(len(JUNK_TAGS)))] for _ in range(rng.poisson(JUNK_RATE)))
    tokens = list(dict.fromkeys(tokens))
    return [t[:1].upper() + t[1:] if rng.random() < CAPITAL_PROB else t for t in tokens]


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array, "L").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def generate(out_dir, num_images=10000, seed=0, source_dir=SOURCE_DIR):
    """Writes FashionTags v2 to `out_dir` (replaced only when complete).

    Mosaic items come only from the scene pool (`pools`); the pretraining pool
    is never used.

    Args:
      out_dir: output directory: images/<id>.png, annotations.jsonl,
        labels.txt, metadata.json.
      num_images: N.
      seed: the seed; the same seed gives byte-identical output.
      source_dir: directory with Fashion-MNIST's gzipped IDX train files.

    Returns:
      The metadata dict written to metadata.json.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    images, classes, hashes = _read_source(source_dir)
    source_pools = pools(len(images))
    scene_end = source_pools["scenes"][1]
    by_class = [np.flatnonzero(classes[:scene_end] == c) for c in range(len(LABELS))]
    missing = [LABELS[c] for c in range(len(LABELS)) if not len(by_class[c])]
    if missing:
        raise DataError(f"{source_dir}: no images of class(es) {missing} in the scene pool "
                        f"(train images 0-{scene_end - 1})")
    style_names = sorted(STYLES)
    style_weights = []
    for s in style_names:
        w = np.array([STYLES[s].get(name, UNLISTED_WEIGHT) for name in LABELS])
        style_weights.append(w / w.sum())
    confusables = _confusables()

    rng = np.random.Generator(np.random.PCG64(seed))
    users = _make_users(rng)
    width = len(str(num_images - 1))
    lines, class_counts, tag_count = [], np.zeros(len(LABELS), np.int64), 0
    with io_utils.atomic_directory(out_dir) as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        for i in range(num_images):
            style = int(rng.integers(len(style_names)))
            k = int(rng.choice(ITEM_COUNTS, p=ITEM_COUNT_PROBS))
            items = rng.choice(len(LABELS), size=k, p=style_weights[style])
            mosaic = np.zeros((56, 56), np.uint8)
            free = [0, 1, 2, 3]
            for c in items:
                source = by_class[c][int(rng.integers(len(by_class[c])))]
                cell = free.pop(int(rng.integers(len(free))))
                r, q = divmod(cell, 2)
                mosaic[28 * r:28 * r + 28, 28 * q:28 * q + 28] = images[source]
            present = sorted(set(int(c) for c in items))
            user = int(rng.integers(NUM_USERS))
            tags = _tags(rng, present, users[user], confusables)
            image_id = f"{i:0{width}d}"
            with open(os.path.join(tmp, "images", image_id + ".png"), "wb") as f:
                f.write(_png(mosaic))
            lines.append(json.dumps({
                "id": image_id, "image": f"images/{image_id}.png", "tags": tags,
                "labels": [LABELS[c] for c in present], "user": f"user{user:03d}"}))
            class_counts[present] += 1
            tag_count += len(tags)
        with open(os.path.join(tmp, "annotations.jsonl"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(tmp, "labels.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(LABELS) + "\n")
        metadata = {
            "name": "FashionTags", "generator_version": VERSION, "seed": seed,
            "parameters": {"num_images": num_images, "num_users": NUM_USERS, "styles": STYLES,
                           "unlisted_weight": UNLISTED_WEIGHT, "item_count_probs": ITEM_COUNT_PROBS,
                           "recall_range": RECALL_RANGE, "wording_concentration": WORDING_CONCENTRATION,
                           "confuse_prob": CONFUSE_PROB, "plural_prob": PLURAL_PROB,
                           "spurious_rate": SPURIOUS_RATE, "pet_tag_prob": PET_TAG_PROB,
                           "junk_rate": JUNK_RATE, "capital_prob": CAPITAL_PROB},
            "source": {"dataset": "Fashion-MNIST train split", "sha256": hashes},
            "pools": source_pools,
            "counts": {"images": num_images, "typed_tags": tag_count,
                       "images_per_label": dict(zip(LABELS, class_counts.tolist()))},
        }
        with open(os.path.join(tmp, "metadata.json"), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=1, sort_keys=True)
            f.write("\n")
    return metadata
