"""The refined-tags files: `refined_tags.npz` and `refined_tags.tsv`.

Written by a training run (the training images' refined tags) and by
`wsnn.blend` (a new collection's):

  refined_tags.npz: `ids` (N strings), `tag_names` (C strings) and `scores`
    (N x C float32).
  refined_tags.tsv: a header line, then one line per image with tab-separated
    `id`; `user_tags` (comma-joined); `tag_set` (comma-joined, most probable
    first; only when tag sets are given); `refined_tags` (the top_k best as
    `tag:0.123`, space-separated, ties in vocabulary order).
"""

import io
import os

import numpy as np

from wsnn import io_utils
from wsnn.training import layout

# The names a task directory gives these files (`wsnn.training.layout`); blend's --out uses them too.
NPZ, TSV = layout.REFINED_NPZ, layout.REFINED_TSV


def write(out_dir, ids, user_tags, tag_names, scores, top_k, tag_sets=None):
    """Writes refined_tags.npz and refined_tags.tsv to `out_dir`, each atomically.

    Args:
      out_dir: the directory (made if missing).
      ids: N image ids.
      user_tags: N lists of tag names, each image's user tags as the TSV
        lists them.
      tag_names: the C tag names (the columns of `scores`).
      scores: N x C refined scores; the npz stores them as float32, the TSV
        prints them as given.
      top_k: refined tags listed per image in the TSV.
      tag_sets: None, or N x C booleans (each image's tag set); given, the
        TSV has a `tag_set` column.

    Returns:
      (npz path, tsv path).
    """
    npz_path, tsv_path = os.path.join(out_dir, NPZ), os.path.join(out_dir, TSV)
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids), tag_names=np.array(tag_names), scores=np.asarray(scores).astype(np.float32))
    io_utils.write_bytes(npz_path, buffer.getvalue())

    columns = ["id", "user_tags"] + (["tag_set"] if tag_sets is not None else []) + ["refined_tags"]
    lines = ["\t".join(columns)]
    for i, p in enumerate(scores):
        fields = [f"{ids[i]}", ",".join(user_tags[i])]
        if tag_sets is not None:
            in_set = np.flatnonzero(tag_sets[i])
            in_set = in_set[np.argsort(-p[in_set], kind="stable")]
            fields.append(",".join(tag_names[j] for j in in_set))
        top = np.argsort(-p, kind="stable")[:top_k]
        fields.append(" ".join(f"{tag_names[j]}:{p[j]:.3f}" for j in top))
        lines.append("\t".join(fields))
    io_utils.write_text(tsv_path, "\n".join(lines) + "\n")
    return npz_path, tsv_path
