r"""Annotate image files with an exported tagger (a SavedModel from wsnn.export).

    python -m wsnn.annotate --model=exports/fashion_tags photos/ extra/*.jpg
    python -m wsnn.annotate --model=exports/fashion_tags/3 --threshold=0.5 --format=jsonl a.png

Arguments are files, directories (every file with an image extension, .jpg
.jpeg .png .gif .bmp, found recursively) and glob patterns (`**` recurses);
each expands in sorted order, and a file named twice is annotated once. Every
file is first checked with the decoder that training and serving use
(`wsnn.data.images.decode`) and the export's pixel limit (`max_pixels` in
assets/wsnn.json, read from the file's header before decoding); a corrupt,
non-image or too large file is reported on stderr and skipped. The others
are sent, as raw file bytes in batches, to the model's `serving_default`
signature (`wsnn.tagger`), so they are decoded and resized exactly as TF
Serving would.

Loading a SavedModel runs the ops of its graph: use only models you trust.

Tags per image: the `--top_k` most probable (default 5, at most the
vocabulary size; taken from the full probabilities, so not limited by the
export's own top_k), or with `--threshold=T` > 0 every tag whose probability
is >= T, most probable first. Giving both --top_k and --threshold is an error.

Output (`--format`): `table` (path, then `tag 0.93, tag 0.81, ...`), `json`
(one array of {"image": path, "tags": [{"tag": t, "score": s}, ...]}) or
`jsonl` (one such object per line). In the table an image with no tag above
the threshold shows `-`. The output is UTF-8 whatever the locale. A file
name that is not valid UTF-8 is written, in every format and on stderr, with
each byte that does not decode as the four characters `\xNN` (Python's
'backslashreplace': the name b"\xff\xfe.png" prints as `\xff\xfe.png`, in
JSON "\\xff\\xfe.png"); such a printed name is for reading, not for opening.

Only regular files are read (a FIFO, socket or device is skipped as "not a
regular file", without blocking), and a file's size and header are checked
before its body is read (`wsnn.data.images.read_file`): a file larger than
8 bytes per allowed pixel plus 16 MiB, or whose header declares too many
pixels, costs no more than its first bytes.

Exit status: 0 if every input was annotated; 1 if a file was skipped or an
argument matched no file (the other images are still printed); 2 for a usage
or model error (no images given; a missing, incomplete or damaged SavedModel
or assets/wsnn.json), printed as one line naming the file.
"""

import concurrent.futures
import glob
import json
import os
import sys

import numpy as np

from wsnn import checks, tf_start
from wsnn.data.dataset import MAX_PIXELS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
FORMATS = ("table", "json", "jsonl")


def display_path(path):
    """`path` as printed: valid UTF-8 as it is, each other byte of the name as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def failure_line(failure):
    """The stderr line for a Failure."""
    if failure.kind == "unmatched":
        return f"wsnn.annotate: error: {display_path(failure.path)}: {failure.reason}"
    return f"wsnn.annotate: skipped {display_path(failure.path)}: {failure.reason}"


def _image_files(directory):
    found = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        found += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def expand_paths(args):
    """Expands files, directories and glob patterns into image files.

    Args:
      args: command-line arguments.

    Returns:
      (files, failures): the files in argument order (each argument's files
      sorted, duplicates dropped), and a Failure for every argument that
      yields no file.
    """
    from wsnn import tagger

    files, failures, seen = [], [], set()
    for arg in args:
        if os.path.isfile(arg):
            found = [arg]
        elif os.path.isdir(arg):
            found = _image_files(arg)
            if not found:
                failures.append(tagger.Failure(
                    arg, f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in this directory", "unmatched"))
                continue
        else:
            found = []
            for match in sorted(glob.glob(arg, recursive=True)):
                found += _image_files(match) if os.path.isdir(match) else [match]
            if not found:
                failures.append(tagger.Failure(arg, "no such file, and no image file matches it as a pattern",
                                               "unmatched"))
                continue
        for path in found:
            key = os.path.normpath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, failures


def check_files(paths, max_pixels=MAX_PIXELS, workers=8):
    """`images_lib.decode_error` of every file (in threads); returns (good paths, Failures).

    Interrupted (Ctrl-C), the files not yet started are dropped rather than waited for.
    """
    from wsnn import tagger
    from wsnn.data import images as images_lib

    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        errors = list(pool.map(lambda p: images_lib.decode_error(p, max_pixels), paths))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    good = [p for p, e in zip(paths, errors) if e is None]
    return good, [tagger.Failure(p, e, "skipped") for p, e in zip(paths, errors) if e is not None]


def select_tags(probabilities, tag_names, top_k=5, threshold=0.0):
    """The tags of one image: [{"tag", "score"}], most probable first.

    With threshold > 0 every tag with probability >= threshold, else the
    top_k most probable (ties keep vocabulary order).
    """
    order = np.argsort(-probabilities, kind="stable")
    if threshold > 0:
        order = [j for j in order if probabilities[j] >= threshold]
    else:
        order = order[:top_k]
    return [{"tag": tag_names[j], "score": float(probabilities[j])} for j in order]


def annotate(model_path, paths, top_k=5, threshold=0.0, batch_size=32):
    """Annotates image files with an exported tagger.

    Args:
      model_path: an export directory (its highest version is used) or a
        version directory.
      paths: files, directories and glob patterns (see `expand_paths`).
      top_k: tags per image (clipped to the vocabulary size).
      threshold: if > 0, every tag with probability >= threshold instead of
        the top_k.
      batch_size: images per call of the model.

    Returns:
      (results, failures): a {"image": path, "tags": [{"tag", "score"}]}
      dict per annotated file, in input order, and a Failure for each
      argument that matched nothing and each file that did not decode or is
      over the export's pixel limit.

    Raises:
      ValueError: bad options, no paths, or no usable SavedModel.
    """
    if not paths:
        raise ValueError("no images given: pass image files, directories or glob patterns")
    checks.at_least_one(top_k=top_k)
    checks.in_unit_interval(threshold=threshold)
    checks.at_least_one(batch_size=batch_size)
    from wsnn import tagger  # TensorFlow: imported here so that `main` can start it quietly first

    # The model first: a wrong --model should fail before minutes of decoding.
    loaded, metadata = tagger.load_model(model_path)
    tag_names = metadata["tag_names"]
    files, failures = expand_paths(paths)
    good, skipped = check_files(files, metadata["max_pixels"])
    probabilities, ok, undecodable = tagger.predict_files(loaded, good, batch_size, metadata["max_pixels"])
    failures += skipped + undecodable
    top_k = min(top_k, len(tag_names))
    results = [{"image": good[i], "tags": select_tags(p, tag_names, top_k, threshold)}
               for i, p in zip(ok, probabilities)]
    return results, failures


def format_results(results, output_format="table"):
    """Renders results as `table`, `json` or `jsonl` text (ends with a newline if not empty).

    Image paths are written with `display_path`, so the text always encodes as UTF-8.
    """
    results = [dict(r, image=display_path(r["image"])) for r in results]
    if output_format == "json":
        return json.dumps(results, indent=1, ensure_ascii=False) + "\n"
    if output_format == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    if output_format != "table":
        raise ValueError(f"unknown format {output_format!r}; choose one of {', '.join(FORMATS)}")
    width = max((len(r["image"]) for r in results), default=0)
    return "".join(f"{r['image']:<{width}}  "
                   + (", ".join(f"{t['tag']} {t['score']:.2f}" for t in r["tags"]) or "-") + "\n"
                   for r in results)


def main(argv):
    """Annotates the images named on the command line."""
    from absl import flags

    tf_start.start(log=lambda text: print(text, file=sys.stderr))  # stdout: the results
    config = flags.FLAGS
    try:
        if config.threshold > 0 and config["top_k"].present:
            raise ValueError("--top_k and --threshold are mutually exclusive; give one")
        results, failures = annotate(config.model, argv[1:], config.top_k, config.threshold, config.batch_size)
    except ValueError as e:
        print(f"wsnn.annotate: error: {e}", file=sys.stderr)
        return 2
    for failure in failures:
        print(failure_line(failure), file=sys.stderr)
    # UTF-8 bytes whatever the locale's encoding (display_path made every name encodable).
    sys.stdout.flush()
    sys.stdout.buffer.write(format_results(results, config.format).encode("utf-8"))
    sys.stdout.buffer.flush()
    return 1 if failures else 0


def run():
    """Console-script entry point."""
    from absl import app, flags

    flags.DEFINE_string("model", None, "An export directory (highest version) or one version directory; "
                                       "loading runs its graph, so use only models you trust.")
    flags.DEFINE_integer("top_k", 5, "Most probable tags printed per image.")
    flags.DEFINE_float("threshold", 0.0, "If > 0, print every tag with probability >= this instead of top_k.")
    flags.DEFINE_enum("format", "table", FORMATS, "Output: table, json (one array) or jsonl.")
    flags.DEFINE_integer("batch_size", 32, "Images per call of the model.")
    flags.mark_flag_as_required("model")
    app.run(main)


if __name__ == "__main__":
    run()
