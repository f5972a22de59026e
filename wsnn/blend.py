"""Blend a new collection's user tags with a trained, exported tagger's predictions.

    python -m wsnn.blend --model=exports/fashion_tags --data=photos/annotations.jsonl --out=refined/

(`python -m wsnn.refine`, the old name, still runs this.)

The collection is a JSONL file (see wsnn.data.jsonl). Rule:
  1. Each distinct tag is normalised as training data is: lowercased, words
     joined with "_", lemmatised with WordNet (`normalize.lemmatize`:
     "Dogs" -> "dog"). It maps onto the model's vocabulary tag with that
     lemma, or failing that (a tag not in WordNet) onto a vocabulary tag
     spelt exactly like its normalised form. Other tags are dropped and
     counted. Several tags of one image that map onto one vocabulary tag
     ("dog", "Dogs") set it once.
  2. G is the resulting N x C 0/1 user-tag matrix and P the model's
     probabilities for the images (file bytes through the `serving_default`
     signature, so decoded and resized as TF Serving does). The refined score
     of image i and tag j is
         R[i, j] = w * G[i, j] + (1 - w) * P[i, j],    w = --user_tag_weight
     (default 0.5, in [0, 1]): a tag the user gave keeps at least w, the
     model demotes the user's tags it does not see (down to w) and adds the
     tags it sees (up to 1 - w). w = 0 is the model alone, w = 1 the user
     tags alone.
If the collection has tags but none maps onto the vocabulary, that is an error
("vocabulary cannot be mapped"): the model was trained on other tags. A
corrupt image is skipped and counted, or is an error with --strict.

Writes `<out>/refined_tags.npz` (ids, tag_names, scores: N x C float32) and
`<out>/refined_tags.tsv` (`id`, `user_tags`: the image's vocabulary tags
comma-joined, `refined_tags`: the --top_k best as `tag:0.123`) with
`wsnn.refined_tags.write`, the writer of a training run's refined tags.
Both files are replaced together: they are written into a new directory
beside `<out>` (`.<out>.tmp-*`), which then replaces `<out>` by rename
(`io_utils.atomic_directory`), so `<out>` never holds the npz of one run
beside the TSV of another. Hence `<out>` must be missing, empty or hold only
those two files; it is checked, with its being a writable directory, before
the model loads. The replacement runs under a lock on `<out>`'s parent,
where the temporary directories of killed blends are removed first.

Exit status: 0 done; 2 a bad option, model, collection or `--out`; 1 the
output cannot be written (a full disk, a read-only directory). Errors are
one line naming the path.
"""

import errno
import os
import sys

import numpy as np

from wsnn import checks, io_utils, refined_tags, tf_start
from wsnn import wordnet as wordnet_lib
from wsnn.data import normalize


def map_tags(raw_tags, vocabulary, wordnet):
    """The vocabulary column of each raw tag, or -1 when it is outside the vocabulary.

    Args:
      raw_tags: tags as typed.
      vocabulary: the model's tag names.
      wordnet: an NLTK WordNet reader.

    Returns:
      An int64 array with one entry per raw tag.
    """
    column = {t: j for j, t in enumerate(vocabulary)}
    columns = []
    for tag in raw_tags:
        lemma = normalize.lemmatize(tag, wordnet)
        spelt = "_".join(tag.strip().lower().split())
        columns.append(column.get(lemma, column.get(spelt, -1)))
    return np.array(columns, np.int64)


def check_out_dir(out_dir):
    """Refuses an --out that blend cannot replace as a whole.

    Raises:
      ValueError: it is not a directory, or holds other files than blend's outputs.
      OSError: it (or, when missing, its parent) is not writable.
    """
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out={out_dir}: exists and is not a directory")
    if os.path.isdir(out_dir):
        others = sorted(set(os.listdir(out_dir)) - {refined_tags.NPZ, refined_tags.TSV})
        if others:
            raise ValueError(f"--out={out_dir}: holds other files than {refined_tags.NPZ} and {refined_tags.TSV} "
                             f"(e.g. {others[0]}); blend replaces the whole directory, so give a new one")
    existing = out_dir if os.path.isdir(out_dir) else os.path.dirname(os.path.abspath(out_dir))
    if os.path.isdir(existing) and not os.access(existing, os.W_OK):
        raise OSError(errno.EACCES, "not writable", existing)


def write_outputs(out_dir, ids, tag_lists, vocabulary, scores, top_k):
    """Replaces `out_dir` by a directory holding both refined-tags files (see the module docstring).

    Returns:
      (npz path, tsv path) in `out_dir`.

    Raises:
      OSError: naming `out_dir`; `out_dir` is then as it was.
    """
    path = os.path.abspath(out_dir)
    parent, name = os.path.dirname(path), os.path.basename(path)
    try:
        os.makedirs(parent, exist_ok=True)
        with io_utils.directory_lock(parent):
            io_utils.remove_stale_temps(parent, prefix=f".{name}.")
            with io_utils.atomic_directory(path) as tmp:
                refined_tags.write(tmp, ids, tag_lists, vocabulary, scores, top_k)
    except OSError as e:
        raise OSError(e.errno, e.strerror, out_dir) from None
    return os.path.join(out_dir, refined_tags.NPZ), os.path.join(out_dir, refined_tags.TSV)


def blend(model_path, jsonl_path, out_dir, user_tag_weight=0.5, strict=False, wordnet=None, top_k=10,
          batch_size=32):
    """Blends a JSONL collection's tags with an exported tagger's and writes the results.

    Args:
      model_path: an export directory (its highest version) or a version directory.
      jsonl_path: the collection's annotations.jsonl.
      out_dir: where refined_tags.npz and refined_tags.tsv are written.
      user_tag_weight: w in [0, 1], see the module docstring.
      strict: a corrupt image is an error instead of being skipped.
      wordnet: an NLTK WordNet reader (default: `wsnn.wordnet.get_wordnet()`).
      top_k: refined tags listed per image in the TSV.
      batch_size: images per call of the model.

    Returns:
      A summary dict: images, skipped images, tag tokens mapped and dropped,
      distinct tags mapped and dropped (with examples), and output paths.

    Raises:
      ValueError: w outside [0, 1], an --out that is not a directory or
        holds other files, no usable SavedModel, a bad collection
        (`DataError`), a corrupt image with `strict`, or tags that cannot be
        mapped onto the vocabulary.
      OSError: the outputs cannot be written (naming `out_dir`); an earlier
        blend's outputs there are left as they were.
    """
    w = float(user_tag_weight)
    checks.in_unit_interval(user_tag_weight=w)
    checks.at_least_one(top_k=top_k, batch_size=batch_size)
    check_out_dir(out_dir)
    from wsnn import tagger  # TensorFlow: imported here so that `main` can start it quietly first
    from wsnn.data import jsonl as jsonl_lib

    loaded, metadata = tagger.load_model(model_path)
    vocabulary = list(metadata["tag_names"])
    raw = jsonl_lib.load_jsonl(jsonl_path, strict=strict, max_pixels=metadata["max_pixels"])
    columns = map_tags(raw.tag_names, vocabulary, wordnet or wordnet_lib.get_wordnet())
    known = columns >= 0
    if raw.num_tags and not known.any():
        raise ValueError(
            f"{jsonl_path}: vocabulary cannot be mapped: none of its {raw.num_tags} tags (e.g. "
            f"{', '.join(raw.tag_names[:5])}) is among the model's {len(vocabulary)} tags (e.g. "
            f"{', '.join(vocabulary[:5])}), even after WordNet lemmatisation")

    user_tags = normalize.merge_columns(raw.user_tags, columns, len(vocabulary)).toarray().astype(np.float32)

    probabilities, ok, failures = tagger.predict_files(
        loaded, [raw.image_path(i) for i in range(raw.num_images)], batch_size, metadata["max_pixels"])
    if failures and strict:
        raise ValueError(f"{jsonl_path}: image {failures[0].path}: {failures[0].reason}")
    if not ok:
        raise ValueError(f"{jsonl_path}: no image can be decoded, e.g. {failures[0].path}: {failures[0].reason}")
    ids, user_tags = [raw.ids[i] for i in ok], user_tags[ok]
    scores = (w * user_tags + (1 - w) * probabilities).astype(np.float32)

    tag_lists = [[vocabulary[j] for j in np.flatnonzero(g)] for g in user_tags]
    npz_path, tsv_path = write_outputs(out_dir, ids, tag_lists, vocabulary, scores, top_k)

    tokens = raw.user_tags.nnz
    tokens_known = int(raw.user_tags[:, known].nnz) if known.any() else 0
    counts = np.asarray(raw.user_tags.sum(axis=0)).ravel()
    dropped = [raw.tag_names[j] for j in np.argsort(-counts, kind="stable") if not known[j]]
    return {
        "images": len(ids),
        "skipped_images": int(raw.info.get("corrupt_images", 0)) + len(failures),
        "user_tag_weight": w,
        "vocabulary_size": len(vocabulary),
        "tag_tokens": int(tokens),
        "tag_tokens_mapped": tokens_known,
        "tag_tokens_dropped": int(tokens - tokens_known),
        "distinct_tags": raw.num_tags,
        "distinct_tags_mapped": int(known.sum()),
        "distinct_tags_dropped": len(dropped),
        "dropped_examples": dropped[:10],
        "npz": npz_path,
        "tsv": tsv_path,
    }


def main(argv):
    """Blends a collection's tags with the model's and prints a summary."""
    from absl import flags

    del argv
    tf_start.start(log=lambda text: print(text, file=sys.stderr))  # stdout: the results
    return run_blend(flags.FLAGS)


def run_blend(config):
    """`blend` with the options of `config` (the flags); prints the summary or one error line.

    Returns:
      The exit status (see the module docstring).
    """
    try:
        s = blend(config.model, config.data, config.out, config.user_tag_weight, config.strict,
                  top_k=config.top_k, batch_size=config.batch_size)
    except (ValueError, wordnet_lib.WordNetUnavailable) as e:
        print(f"wsnn.blend: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"wsnn.blend: error: {io_utils.os_error_line(e, config.out)}", file=sys.stderr)
        return 1
    skipped = f" ({s['skipped_images']} corrupt skipped)" if s["skipped_images"] else ""
    print(f"refined {s['images']} images{skipped} with user_tag_weight {s['user_tag_weight']:g}")
    examples = f" (e.g. {', '.join(s['dropped_examples'][:5])})" if s["dropped_examples"] else ""
    print(f"user tags: {s['tag_tokens_mapped']} of {s['tag_tokens']} mapped onto the model's "
          f"{s['vocabulary_size']} tags; {s['distinct_tags_dropped']} of {s['distinct_tags']} distinct tags "
          f"dropped{examples}")
    print(f"wrote {s['npz']}")
    print(f"wrote {s['tsv']}")
    return 0


def run():
    """Console-script entry point."""
    from absl import app, flags

    flags.DEFINE_string("model", None, "An export directory (highest version) or one version directory.")
    flags.DEFINE_string("data", None, "The collection's annotations.jsonl.")
    flags.DEFINE_string("out", None, "Directory for refined_tags.npz and refined_tags.tsv.")
    flags.DEFINE_float("user_tag_weight", 0.5, "w in [0, 1]: refined = w * user tags + (1 - w) * model.")
    flags.DEFINE_bool("strict", False, "A corrupt image is an error instead of being skipped.")
    flags.DEFINE_integer("top_k", 10, "Refined tags listed per image in refined_tags.tsv.")
    flags.DEFINE_integer("batch_size", 32, "Images per call of the model.")
    flags.mark_flags_as_required(["model", "data", "out"])
    app.run(main)


if __name__ == "__main__":
    run()
