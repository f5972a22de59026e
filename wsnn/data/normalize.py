"""Tag normalisation, as the paper's Data Preprocessing.

Rules, applied to each distinct raw tag (so cost grows with the vocabulary,
not with the number of images):
  1. lowercase, trim, and join words with "_" (WordNet's form for
     collocations: "New York" -> "new_york");
  2. lemmatise to the dictionary form with WordNet's morphology, trying noun,
     verb, adjective, adverb in that order ("Dresses" -> "dress");
  3. drop tags that are not in WordNet ("nikond70s", "2009");
  4. drop tags used by fewer than `min_image_fraction` of the images (the
     paper's 0.1%), except the tags that labels map to, which are always kept.
Raw tags that share a lemma become one tag; an image that had several of them
has that tag once. Every removed token is counted by rule.
"""

import dataclasses
import re

import numpy as np
import scipy.sparse

from wsnn import wordnet as wordnet_lib

_POS_ORDER = ("n", "v", "a", "r")


def lemmatize(tag, wordnet):
    """Dictionary form of `tag` in WordNet, or None if WordNet has no such word."""
    word = re.sub(r"\s+", "_", tag.strip().lower())
    if not word:
        return None
    for pos in _POS_ORDER:
        lemma = wordnet.morphy(word, pos)
        if lemma is not None:
            return lemma
    return None


def merge_columns(user_tags, columns, num_columns):
    """Maps the columns of a user-tag matrix onto another vocabulary.

    Args:
      user_tags: N x C_raw sparse 0/1 matrix.
      columns: C_raw ints, the new column of each raw column (-1: dropped).
        Several raw columns may map onto one.
      num_columns: the size of the new vocabulary.

    Returns:
      An N x num_columns int32 CSR 0/1 matrix: an image has a new tag once
      if any of its raw tags maps onto it.
    """
    columns = np.asarray(columns, np.int64)
    rows = np.flatnonzero(columns >= 0)
    # G @ merge counts an image's raw tags per new column.
    merge = scipy.sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, columns[rows])),
                                    shape=(len(columns), num_columns))
    merged = (user_tags.astype(np.int32) @ merge).tocsr()
    merged.data[:] = 1
    return merged


def normalize(raw, wordnet=None, min_image_fraction=0.001):
    """Normalises the tags of a raw TaggedImageSet.

    Args:
      raw: a set with tags as typed (an importer's output).
      wordnet: an NLTK WordNet reader (default: `wsnn.wordnet.get_wordnet()`).
      min_image_fraction: tags on fewer than this fraction of the images are
        dropped (0 keeps all).

    Returns:
      A new TaggedImageSet with the normalised vocabulary, `label_to_tag`
      filled in, and `info["normalization"]` reporting what each rule removed.
    """
    if not 0 <= min_image_fraction < 1:
        raise ValueError(f"min_image_fraction must be in [0, 1), got {min_image_fraction}")
    wordnet = wordnet or wordnet_lib.get_wordnet()
    lemmas = [lemmatize(t, wordnet) for t in raw.tag_names]
    label_lemmas = [lemmatize(name, wordnet) for name in raw.label_names]

    vocab = sorted({l for l in lemmas if l is not None})
    column = {l: j for j, l in enumerate(vocab)}
    known = np.array([l is not None for l in lemmas], bool)
    tokens_in = raw.user_tags.nnz
    tokens_known = int(raw.user_tags[:, known].nnz) if known.any() else 0
    merged = merge_columns(raw.user_tags, [column.get(l, -1) for l in lemmas], len(vocab))

    min_images = min_image_fraction * raw.num_images
    counts = np.asarray(merged.sum(axis=0)).ravel()
    protected = np.zeros(len(vocab), bool)
    for l in label_lemmas:
        if l in column:
            protected[column[l]] = True
    keep = (counts >= min_images) | protected
    user_tags = merged[:, keep]
    tag_names = [t for t, k in zip(vocab, keep) if k]
    kept_column = {t: j for j, t in enumerate(tag_names)}
    label_to_tag = np.array([kept_column.get(l, -1) for l in label_lemmas], np.int64)

    report = {
        "min_image_fraction": min_image_fraction,
        "min_images": min_images,
        "raw_tags": raw.num_tags,
        "tags_not_in_wordnet": int((~known).sum()),
        "tags_rare": int((~keep).sum()),
        "tags_out": len(tag_names),
        "tokens_in": tokens_in,
        "tokens_removed_not_in_wordnet": tokens_in - tokens_known,
        "tokens_merged_same_lemma": tokens_known - merged.nnz,
        "tokens_removed_rare": int(merged.nnz - user_tags.nnz),
        "tokens_out": int(user_tags.nnz),
        "labels_without_tag": [n for n, j in zip(raw.label_names, label_to_tag) if j < 0],
    }
    return dataclasses.replace(
        raw, tag_names=tag_names, user_tags=user_tags, label_to_tag=label_to_tag,
        info=dict(raw.info, normalization=report))
