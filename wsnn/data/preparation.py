"""Preparing a tagged image collection: import, normalise tags, save, report.

`prepare(config)` runs the importer of `config.source` (generating
FashionTags first when that is the source), normalises the tags
(`wsnn.data.normalize`) and saves the dataset to `<workdir>/prepared` (see
`wsnn.data.dataset`), recording the settings (`settings`) and the source's
fingerprint (`source_fingerprint`) so that a later run can tell whether it is
stale. `format_report` renders the paper's Table-1 statistics, what
normalisation removed, the timings and, when given, the RandomGuess and
UserTags scores (`baseline_scores`). The command line is `wsnn.prepare`.
`load_or_prepare(config)` is what training and the benchmark call: the
prepared set, made only when missing or stale.
"""

import dataclasses
import hashlib
import json
import os
import time

from absl import logging

from wsnn import checks
from wsnn import metrics
from wsnn import wordnet as wordnet_lib
from wsnn.baselines import trivial
from wsnn.config import check_fields, field
from wsnn.data import dataset as dataset_lib
from wsnn.data import fashion_tags, normalize

SOURCES = ("fashion_tags", "mirflickr", "nuswide", "jsonl")


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """What to prepare and how (one flag per field; in a training or benchmark run, `workdir` and
    `seed` are the run's: `shared`)."""

    source: str = field("fashion_tags", f"Where the collection comes from: {', '.join(SOURCES)}.")
    data_dir: str = field("", "fashion_tags: the Fashion-MNIST directory (default: Debian's); "
                              "mirflickr, nuswide: the unzipped archives; jsonl: annotations.jsonl "
                              "or its directory.")
    workdir: str = field("runs/fashion_tags", "Outputs go to <workdir>/prepared.", shared=True)
    num_images: int = field(10000, "FashionTags: number of images.")
    seed: int = field(0, "FashionTags and RandomGuess seed.", bounds=checks.SEED_BOUNDS, shared=True)
    min_tag_fraction: float = field(0.001, "Drop tags used by fewer than this fraction of the "
                                           "images (the paper: 0.001).")
    strict: bool = field(False, "Fail on a corrupt image instead of skipping it.")
    embed_images: bool = field(False, "Store the decoded images in the prepared dataset (small "
                                      "sets of one image size; always on for fashion_tags).")
    mirflickr_labels: str = field("r1", "MIRFlickr labels: r1 (the paper's 14) or potential (24).")
    mirflickr_tags: str = field("processed", "MIRFlickr tags: processed (meta/tags) or raw.")
    max_pixels: int = field(dataset_lib.MAX_PIXELS, "Images of more pixels (width x height, read from "
                                                   "the file's header) count as corrupt; the export's "
                                                   "serving signature and wsnn.annotate use the same limit.")
    nuswide_image_dir: str = field("", "NUS-WIDE image directory (default <data_dir>/Flickr).")
    wordnet_cache: str = field("", "Cache for WordNet built from Debian's files (default "
                                   "~/.cache/wsnn).")

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"--source={self.source}: must be one of {', '.join(SOURCES)}")
        if self.source != "fashion_tags" and not self.data_dir:
            raise ValueError(f"--data_dir is required for --source={self.source}")
        if self.data_dir and not os.path.exists(self.data_dir):
            raise ValueError(f"--data_dir={self.data_dir}: no such file or directory")
        if self.mirflickr_labels not in ("r1", "potential"):
            raise ValueError(f"--mirflickr_labels={self.mirflickr_labels}: must be r1 or potential")
        if self.mirflickr_tags not in ("processed", "raw"):
            raise ValueError(f"--mirflickr_tags={self.mirflickr_tags}: must be processed or raw")
        if not 0 <= self.min_tag_fraction < 1:
            raise ValueError(f"--min_tag_fraction={self.min_tag_fraction}: must be in [0, 1)")
        checks.at_least_one(max_pixels=self.max_pixels, num_images=self.num_images)
        check_fields(self)  # the seed's bounds


# PrepareConfig fields that name a path: compared as real paths (a trailing slash, a relative
# spelling or a symlink to the same place is the same setting).
_PATH_FIELDS = ("data_dir", "nuswide_image_dir", "wordnet_cache")


def settings(config):
    """The settings that decide the prepared data: every field but the workdir (where it is
    written is not what it is), paths resolved."""
    out = dataclasses.asdict(config)
    del out["workdir"]
    for name in _PATH_FIELDS:
        if out[name]:
            out[name] = os.path.realpath(out[name])
    return out


def _source_root(config):
    if config.source == "fashion_tags":
        return config.data_dir or fashion_tags.SOURCE_DIR
    return config.data_dir if os.path.isdir(config.data_dir) else os.path.dirname(config.data_dir) or "."


def source_fingerprint(config):
    """SHA-256 of the path, size and modification time of every file under the source.

    The source is the Fashion-MNIST directory (fashion_tags), the data_dir
    directory (mirflickr, nuswide, a jsonl directory) or the directory of the
    annotations file (jsonl), so that images beside it count; the workdir is
    skipped when it lies inside. Sizes and times, not contents: one stat per
    file (seconds for NUS-WIDE's 270k images, where hashing would take
    minutes); an edit that keeps both size and time is not noticed.
    """
    root = os.path.realpath(_source_root(config))
    skip = os.path.realpath(config.workdir)
    digest = hashlib.sha256()
    if not os.path.isdir(root):
        return digest.hexdigest()
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if os.path.realpath(os.path.join(directory, d)) != skip)
        for name in sorted(files):
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue  # a dangling link; the importer reports missing images
            digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode(
                "utf-8", "surrogateescape"))
    return digest.hexdigest()


def _fashion_tags_dir(config):
    return os.path.join(config.workdir, f"fashion_tags_v{fashion_tags.VERSION}")


def generate_fashion_tags(config):
    """Generates FashionTags unless the same version, size and seed is there."""
    out = _fashion_tags_dir(config)
    metadata_path = os.path.join(out, "metadata.json")
    if os.path.isfile(metadata_path):
        with open(metadata_path) as f:
            old = json.load(f)
        if (old.get("seed"), old.get("parameters", {}).get("num_images")) == (config.seed, config.num_images):
            logging.info("reusing %s", out)
            return
    logging.info("generating FashionTags (N=%d, seed=%d) in %s", config.num_images, config.seed, out)
    fashion_tags.generate(out, config.num_images, config.seed,
                          source_dir=config.data_dir or fashion_tags.SOURCE_DIR)


def import_raw(config):
    """Runs the importer of `config.source`; returns the raw TaggedImageSet."""
    # Imported here: the image check loads TensorFlow, which a config error should not wait for.
    from wsnn.data import images, jsonl, mirflickr, nuswide

    if config.source == "fashion_tags":
        return jsonl.load_jsonl(os.path.join(_fashion_tags_dir(config), "annotations.jsonl"),
                                config.strict, embed_images=True, max_pixels=config.max_pixels)
    if config.source == "jsonl":
        path = config.data_dir
        if os.path.isdir(path):
            path = os.path.join(path, "annotations.jsonl")
        return jsonl.load_jsonl(path, config.strict, config.embed_images, config.max_pixels)
    if config.source == "mirflickr":
        raw = mirflickr.load_mirflickr(config.data_dir, label_set=config.mirflickr_labels,
                                       tag_kind=config.mirflickr_tags, strict=config.strict,
                                       max_pixels=config.max_pixels)
    else:
        raw = nuswide.load_nuswide(config.data_dir, image_dir=config.nuswide_image_dir or None,
                                   strict=config.strict, max_pixels=config.max_pixels)
    if config.embed_images:
        paths = [raw.image_path(i) for i in range(raw.num_images)]
        raw = dataclasses.replace(raw, image_array=images.stack_images(paths, config.max_pixels),
                                  image_root=None, image_paths=None)
    return raw


def prepare(config):
    """Imports, normalises and saves a dataset; returns (dataset, timings)."""
    timings = {}
    if config.source == "fashion_tags":
        start = time.perf_counter()
        generate_fashion_tags(config)
        timings["generate_s"] = time.perf_counter() - start
    # Taken before the import: a source edited during it looks changed next time (prepared again)
    # rather than unchanged.
    fingerprint = source_fingerprint(config)
    start = time.perf_counter()
    raw = import_raw(config)
    timings["import_s"] = time.perf_counter() - start
    start = time.perf_counter()
    wordnet = wordnet_lib.get_wordnet(config.wordnet_cache or None)
    dataset = normalize.normalize(raw, wordnet, config.min_tag_fraction)
    timings["normalize_s"] = time.perf_counter() - start
    if not dataset.num_tags:
        norm = dataset.info["normalization"]
        raise dataset_lib.DataError(
            f"{config.data_dir or config.source}: no tag survives normalisation: of {norm['raw_tags']:,} "
            f"distinct tags, {norm['tags_not_in_wordnet']:,} are not in WordNet and the other "
            f"{norm['raw_tags'] - norm['tags_not_in_wordnet']:,} are on fewer than {norm['min_images']:g} images "
            f"(--min_tag_fraction={config.min_tag_fraction:g}); the tagger needs at least one tag")
    start = time.perf_counter()
    dataset.info["prepare_settings"] = settings(config)
    dataset.info["source_fingerprint"] = fingerprint
    manifest = dataset_lib.save(dataset, os.path.join(config.workdir, "prepared"))
    dataset.info["content_hash"] = manifest["content_hash"]
    timings["save_s"] = time.perf_counter() - start
    return dataset, timings


def load_or_prepare(config, chief=True, timeout_s=3600):
    """The prepared dataset in `<workdir>/prepared`, made if missing or stale.

    Stale: prepared with other settings (`settings`: paths resolved, the
    workdir itself not a setting) or from a source that changed since
    (`source_fingerprint`). Other workers than the chief never prepare: they
    wait up to `timeout_s` for the chief to write it (the workdir must be
    shared by all workers).

    Args:
      config: a `PrepareConfig`.
      chief: whether this process may prepare.
      timeout_s: how long another worker waits for the chief.

    Raises:
      RuntimeError: another worker waited `timeout_s` in vain.
    """
    directory = os.path.join(config.workdir, "prepared")
    manifest = os.path.join(directory, "manifest.json")
    waited, started = False, time.monotonic()
    while True:
        if os.path.isfile(manifest):
            dataset = dataset_lib.load(directory)
            if dataset.info.get("prepare_settings") != settings(config):
                stale = "data settings changed"
            elif dataset.info.get("source_fingerprint") != source_fingerprint(config):
                stale = "the source files changed"
            else:
                return dataset
            if chief:
                print(f"{stale} since {directory} was written: preparing again", flush=True)
        if chief:
            dataset, timings = prepare(config)
            print(format_report(dataset, timings, {}), flush=True)
            return dataset
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"waited {timeout_s} s for the chief to prepare {directory}; is the workdir "
                               "shared by all workers, and did the chief fail?")
        if not waited:
            print(f"waiting for the chief to prepare {directory}", flush=True)
            waited = True
        time.sleep(1)


def baseline_scores(dataset, seed=0):
    """RandomGuess and UserTags metrics on a labelled dataset."""
    random_mean, _ = trivial.random_guess(dataset.labels, seed=seed)
    user = metrics.evaluate(trivial.user_tags_scores(dataset), dataset.labels,
                            label_names=dataset.label_names)
    return {"RandomGuess": random_mean, "UserTags": user}


def format_report(dataset, timings, scores):
    """The human-readable report of a preparation (what `wsnn.prepare` prints)."""
    stats = dataset.statistics()
    norm = dataset.info["normalization"]
    lines = [
        "Table 1 statistics",
        f"  images N        {stats['images']:,}",
        f"  tag set size C  {stats['tags']:,}",
        f"  labels          {stats['labels']}",
        f"  tags per image  {stats['tags_per_image']:.2f}",
        "Normalisation (tokens = image-tag pairs)",
    ]
    rows = [
        ("tokens in", norm["tokens_in"], ""),
        ("removed: not in WordNet", norm["tokens_removed_not_in_wordnet"],
         f"{norm['tags_not_in_wordnet']:,} distinct tags"),
        ("merged: same lemma in image", norm["tokens_merged_same_lemma"], ""),
        ("removed: rare", norm["tokens_removed_rare"],
         f"{norm['tags_rare']:,} tags on < {norm['min_images']:g} images"),
        ("tokens out", norm["tokens_out"], ""),
    ]
    lines += [f"  {name:<28} {value:>10,}  {note}".rstrip() for name, value, note in rows]
    if norm["labels_without_tag"]:
        lines.append(f"  labels with no tag: {', '.join(norm['labels_without_tag'])}")
    skipped = {k: v for k, v in dataset.info.items() if k in ("corrupt_images", "missing_images") and v}
    if skipped:
        lines.append(f"Skipped images: {skipped}")
    lines.append("Timings: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items()))
    if scores:
        lines.append(f"{'Method':<12} {'miAP':>6} {'mAP':>6} {'MicroAUC':>9} {'MacroAUC':>9}")
        for name, s in scores.items():
            lines.append(f"{name:<12} {s['miAP']:6.3f} {s['mAP']:6.3f} {s['MicroAUC']:9.3f} {s['MacroAUC']:9.3f}")
        lines.append("(RandomGuess: mean of 80 draws; UserTags: the refinement protocol on all images)")
    return "\n".join(lines)
