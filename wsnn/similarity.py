"""Tag similarity xi (eqs. 3-5): co-occurrence distance plus WordNet distance.

    dist_ctx(ti, tj) = (max(log f(ti), log f(tj)) - log f(ti, tj))
                       / (log N - min(log f(ti), log f(tj)))             (3)
    dist(ti, tj)     = dist_ctx(ti, tj) + alpha * dist_KB(ti, tj)         (4)
    xi(ti, tj)       = exp(-dist(ti, tj)^2 / sigma)                        (5)

dist_ctx is the Normalized Google Distance with images in place of web pages:
f(t) is the number of images tagged t, f(ti, tj) the number tagged both, N the
number of images. NGD is unbounded; pairs that never co-occur (log 0) get
`max(1, largest finite off-diagonal distance)`, so the table never holds inf
or NaN, and every distance is clipped to that maximum.

dist_KB is one minus a WordNet information-content (IC) similarity, "based on
the information content of the least common subsumer and input synsets":
  lin (default): 2 IC(lcs) / (IC(s1) + IC(s2)), already in [0, 1];
  jcn (Jiang-Conrath): IC(s1) + IC(s2) - 2 IC(lcs), divided by its largest
      value in the table;
  res (Resnik): IC(lcs), divided by its largest value in the table.
A tag uses its noun synsets, else its verb synsets, else its adjective ones,
and a pair of tags takes its best pair of synsets. Tags of different parts of
speech, or with no synset, are at the maximum distance 1. IC comes from a
user's NLTK IC file (ic-brown.dat style) when given, else from WordNet's own
SemCor sense counts with add-one smoothing, computed once and cached.

sigma is the median of the off-diagonal dist^2 (the paper's "median value").
xi is symmetric with a zero diagonal, and is cached as .npy keyed by the data,
vocabulary, alpha, measure and IC source. The command line that builds and
inspects it is `wsnn.semantics`.

Cost: xi is dense, C x C, and so are its intermediate tables. Building it
peaks at about `memory_estimate(C, S)` bytes: max(50 C^2, 16 C^2 + 26 sum
S_pos^2) + 32 MiB, where S_pos counts the WordNet synsets the tags use per part of
speech (the S x S synset tables of `knowledge_distance`, float32; S is about
1.5 C for frequent nouns, more for polysemous tags); 50 C^2 are the float64
C x C tables of eqs. 3 and 5 (measured with tracemalloc, within a few
percent). 4,000 noun tags: 1.1 GiB and 5 s on the 2-core development
machine; 10,000 real tags were reported at 9.7 GB and 120 s. `tag_similarity`
refuses, before computing anything, a table whose estimate exceeds
`max_bytes`: by default `default_max_bytes()`, 3/4 of the machine's
physical memory, so that a vocabulary too large for the machine is one line
naming the memory it would need instead of swapping or an out-of-memory
kill. Fewer tags (a higher --min_tag_fraction) make it quadratically smaller.
"""

import hashlib
import io
import json
import math
import os
import time

import numpy as np
import scipy.sparse

from wsnn import io_utils
from wsnn import wordnet as wordnet_lib

MEASURES = ("lin", "jcn", "res")
_FIXED_BYTES = 32 << 20  # the IC table and the synset lists, whatever C
_POS_ORDER = ("n", "v", "a")


def context_distance(user_tags):
    """dist_ctx (eq. 3) for all tag pairs, from the N x C user-tag matrix.

    Returns:
      C x C float64, symmetric, zero diagonal, finite.
    """
    user_tags = scipy.sparse.csr_matrix(user_tags, dtype=np.float64)
    user_tags.data[:] = 1
    n = user_tags.shape[0]
    co = (user_tags.T @ user_tags).toarray()
    f = np.diag(co).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f = np.log(f)
        numerator = np.maximum.outer(log_f, log_f) - np.log(co)
        denominator = math.log(n) - np.minimum.outer(log_f, log_f)
        dist = numerator / denominator
    # Both tags on every image: identical usage, distance 0.
    dist[(denominator == 0) & (co > 0)] = 0.0
    finite = np.isfinite(dist) & (co > 0)
    np.fill_diagonal(finite, False)
    maximum = max(1.0, float(dist[finite].max())) if finite.any() else 1.0
    dist = np.where(finite, np.clip(dist, 0.0, maximum), maximum)
    np.fill_diagonal(dist, 0.0)
    return dist


def _ancestors(synset, memo):
    """Offsets of `synset` and all its (instance) hypernyms, as NLTK walks them."""
    key = synset.offset()
    if key not in memo:
        result = {key}
        for h in synset.hypernyms() + synset.instance_hypernyms():
            result |= _ancestors(h, memo)
        memo[key] = frozenset(result)
    return memo[key]


def semcor_ic(wordnet, smoothing=1.0):
    """An NLTK-style IC table from WordNet's SemCor sense counts.

    Each synset's count (the sum of its lemmas' SemCor counts plus
    `smoothing`) is added to itself and every ancestor once; key 0 of each
    part of speech holds the total. `Synset.lin_similarity(other, ic)`
    accepts the result.

    Returns:
      {pos: {offset: count}} for "n", "v", "a".
    """
    ic = {pos: {0: 0.0} for pos in _POS_ORDER}
    for pos in _POS_ORDER:
        memo = {}
        table = ic[pos]
        for synset in wordnet.all_synsets(pos):
            own = sum(lemma.count() for lemma in synset.lemmas()) + smoothing
            for offset in _ancestors(synset, memo):
                table[offset] = table.get(offset, 0.0) + own
            table[0] += own
    return ic


def read_ic_file(path):
    """Reads an NLTK wordnet_ic file (e.g. ic-brown.dat) into an IC table.

    Lines: `<offset><n|v> <count> [ROOT]`; the first line is a header.
    """
    ic = {"n": {0: 0.0}, "v": {0: 0.0}}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read IC file ({e})") from None
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            pos, offset, value = fields[0][-1], int(fields[0][:-1]), float(fields[1])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{number}: expected '<offset><n|v> <count> [ROOT]'") from None
        if pos not in ic:
            raise ValueError(f"{path}:{number}: part of speech '{pos}' is not n or v")
        if len(fields) == 3 and fields[2] == "ROOT":
            ic[pos][0] += value
        if value:
            ic[pos][offset] = value
    for pos, table in ic.items():
        if len(table) > 1 and table[0] <= 0:
            raise ValueError(f"{path}: no ROOT entries for part of speech '{pos}'")
    return ic


def cached_semcor_ic(wordnet, cache_dir=None):
    """`semcor_ic` computed once and kept as JSON in the cache directory."""
    path = os.path.join(cache_dir or wordnet_lib.default_cache_dir(), "ic-semcor-smooth1.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return {pos: {int(k): v for k, v in table.items()} for pos, table in json.load(f).items()}
    ic = semcor_ic(wordnet)
    io_utils.write_json(path, ic)
    return ic


def _information_content(table, offset):
    count = table.get(offset, 0.0)
    return -math.log(count / table[0]) if count > 0 else math.inf


def _tag_synsets(tag, wordnet, ic):
    for pos in _POS_ORDER:
        if pos not in ic:
            continue
        synsets = wordnet.synsets(tag, pos=pos)
        if synsets:
            return pos, synsets
    return None, []


def choose_synsets(tag_names, wordnet, ic):
    """Each tag's (part of speech, synsets) as `knowledge_distance` uses them (see the module docstring)."""
    return [_tag_synsets(t, wordnet, ic) for t in tag_names]


def memory_estimate(num_tags, synsets_per_pos=()):
    """Peak bytes of building xi for `num_tags` tags whose chosen synsets number `synsets_per_pos`
    (one count per part of speech; empty without the WordNet term): see the module docstring."""
    c2 = num_tags * num_tags
    return max(50 * c2, 16 * c2 + 26 * sum(s * s for s in synsets_per_pos)) + _FIXED_BYTES


def default_max_bytes():
    """3/4 of this machine's physical memory: `tag_similarity`'s default limit."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4


def knowledge_distance(tag_names, wordnet, ic, measure="lin", chosen=None):
    """dist_KB for all tag pairs (see the module docstring).

    The IC of every pair's least common subsumer is found with one pass over
    the shared ancestors in increasing IC, writing blocks of a synset x
    synset matrix, then reduced to tags (best synset pair).

    Args:
      chosen: `choose_synsets(tag_names, wordnet, ic)`, when already made.

    Returns:
      C x C float64 in [0, 1], symmetric, zero diagonal.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    c = len(tag_names)
    chosen = chosen or choose_synsets(tag_names, wordnet, ic)
    # Tag-level similarity (lin, res) or distance (jcn); NaN where undefined.
    value = np.full((c, c), np.nan)
    for pos in _POS_ORDER:
        tags = [i for i, (p, _) in enumerate(chosen) if p == pos]
        if not tags:
            continue
        table = ic[pos]
        entries = [(i, s.offset()) for i in tags for s in chosen[i][1]]
        owner = np.array([i for i, _ in entries])
        own_ic = np.array([_information_content(table, o) for _, o in entries], np.float32)
        memo, members = {}, {}
        for row, (i, offset) in enumerate(entries):
            for a in _ancestors(wordnet.synset_from_pos_and_offset(pos, offset), memo):
                members.setdefault(a, []).append(row)
        # float32 halves the memory of these S x S synset matrices (S ~ 5 C).
        lcs = np.zeros((len(entries), len(entries)), np.float32)
        for a in sorted(members, key=lambda a: _information_content(table, a)):
            a_ic = _information_content(table, a)
            if a_ic > 0 and np.isfinite(a_ic):
                rows = np.array(members[a])
                lcs[np.ix_(rows, rows)] = a_ic
        total = own_ic[:, None] + own_ic[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            if measure == "lin":
                pair = np.where(np.isfinite(total), 2 * lcs / total, 0.0)
                same = np.array([o for _, o in entries])
                pair[(total == 0) & (same[:, None] == same[None, :])] = 1.0
                pair = np.nan_to_num(pair, nan=0.0)
            elif measure == "res":
                pair = lcs
            else:
                pair = np.where(np.isfinite(total), total - 2 * lcs, np.inf)
        reduce = np.minimum if measure == "jcn" else np.maximum
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        block = reduce.reduceat(reduce.reduceat(pair, starts, axis=0), starts, axis=1)
        value[np.ix_(tags, tags)] = block
    # A tag's similarity to itself is not a pair: keep it out of the scale.
    np.fill_diagonal(value, np.nan)
    if measure == "lin":
        dist = 1.0 - np.clip(value, 0.0, 1.0)
    else:
        finite = np.isfinite(value)
        scale = value[finite].max() if finite.any() and value[finite].max() > 0 else 1.0
        dist = value / scale if measure == "jcn" else 1.0 - value / scale
    dist = np.where(np.isfinite(dist), np.clip(dist, 0.0, 1.0), 1.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def similarity_from_distance(dist):
    """xi = exp(-dist^2 / sigma), sigma the median off-diagonal dist^2 (eq. 5)."""
    c = dist.shape[0]
    squared = dist ** 2
    off = squared[~np.eye(c, dtype=bool)]
    sigma = float(np.median(off)) if off.size else 1.0
    sigma = max(sigma, 1e-12)
    xi = np.exp(-squared / sigma)
    np.fill_diagonal(xi, 0.0)
    return xi, sigma


def _cache_key(dataset, alpha, measure, ic_source):
    digest = hashlib.sha256()
    digest.update("\n".join(dataset.tag_names).encode("utf-8"))
    digest.update(dataset.user_tags.indptr.astype(np.int64).tobytes())
    digest.update(dataset.user_tags.indices.astype(np.int64).tobytes())
    digest.update(f"|{alpha!r}|{measure}|{ic_source}".encode())
    return digest.hexdigest()[:20]


def tag_similarity(dataset, alpha=1.0, measure="lin", ic_file=None, wordnet=None, cache_dir=None,
                   ic_cache_dir=None, max_bytes=None):
    """The C x C tag-similarity table xi of a normalised dataset, cached.

    Args:
      dataset: a TaggedImageSet (normalised).
      alpha: weight of dist_KB in eq. 4.
      measure: "lin", "jcn" or "res".
      ic_file: an NLTK IC file; default: SemCor counts (cached).
      wordnet: an NLTK WordNet reader (default: `wsnn.wordnet.get_wordnet()`).
      cache_dir: where xi is cached; None: not cached.
      ic_cache_dir: where the SemCor IC table is cached (default:
        `wsnn.wordnet.default_cache_dir()`).
      max_bytes: refuse to build a table whose `memory_estimate` is larger;
        None: `default_max_bytes()`. A cached table is always read.

    Returns:
      (xi as float32, info dict with sigma, timings, the memory estimate
      and whether it was cached).

    Raises:
      ValueError: bad alpha or measure, a table over `max_bytes` (before any
        of it is computed; the message says how much memory it needs), or a
        table that is not finite.
    """
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    ic_source = f"file:{os.path.abspath(ic_file)}" if ic_file else "semcor-smooth1"
    path = None
    if cache_dir:
        key = _cache_key(dataset, alpha, measure, ic_source)
        path = os.path.join(cache_dir, f"tag_similarity-{measure}-{key}.npy")
        if os.path.isfile(path):
            xi = np.load(path, allow_pickle=False)
            if xi.shape == (dataset.num_tags, dataset.num_tags):
                return xi, {"cached": path}
    timings, chosen, synsets = {}, None, {}
    if alpha > 0:
        start = time.perf_counter()
        wordnet = wordnet or wordnet_lib.get_wordnet()
        ic = read_ic_file(ic_file) if ic_file else cached_semcor_ic(wordnet, ic_cache_dir)
        chosen = choose_synsets(dataset.tag_names, wordnet, ic)
        for pos, found in chosen:
            if pos:
                synsets[pos] = synsets.get(pos, 0) + len(found)
        timings["ic_s"] = time.perf_counter() - start
    c = len(dataset.tag_names)
    need = memory_estimate(c, synsets.values())
    limit = default_max_bytes() if max_bytes is None else max_bytes
    if need > limit:
        raise ValueError(
            f"the tag-similarity table xi of {c:,} tags ({sum(synsets.values()):,} WordNet synsets) needs about "
            f"{need / 2 ** 30:.2f} GiB of memory to build, more than the limit of {limit / 2 ** 30:.2f} GiB "
            f"({'3/4 of this machine' if max_bytes is None else 'max_bytes'}); it grows with the square of the "
            "tag count: raise --min_tag_fraction for fewer tags")
    start = time.perf_counter()
    dist = context_distance(dataset.user_tags)
    timings["context_s"] = time.perf_counter() - start
    if alpha > 0:
        start = time.perf_counter()
        dist = dist + alpha * knowledge_distance(dataset.tag_names, wordnet, ic, measure, chosen)
        timings["knowledge_s"] = time.perf_counter() - start
    xi, sigma = similarity_from_distance(dist)
    if not np.all(np.isfinite(xi)):
        raise ValueError("tag similarity table has NaN or inf entries")
    xi = xi.astype(np.float32)
    if path:
        buffer = io.BytesIO()
        np.save(buffer, xi)
        io_utils.write_bytes(path, buffer.getvalue())
    return xi, {"sigma": sigma, "timings": timings, "cached": None, "memory_estimate": need}


def most_similar(xi, tag_names, tag, k=5):
    """The k tags most similar to `tag` by xi, as (tag, similarity) pairs."""
    j = tag_names.index(tag)
    order = [i for i in np.argsort(-xi[j], kind="stable") if i != j][:k]
    return [(tag_names[i], float(xi[j, i])) for i in order]
