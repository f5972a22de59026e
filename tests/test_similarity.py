"""Tests for the tag-similarity table xi (wsnn.similarity)."""

import math
import os
import tracemalloc

import numpy as np
import pytest
import scipy.sparse

from wsnn import similarity
from wsnn.data.dataset import from_tag_lists


def _ngd_reference(g):
    """Eq. 3 by explicit loops, with the documented maximum for log 0."""
    n, c = g.shape
    f = g.sum(0)
    dist = np.zeros((c, c))
    finite = []
    for i in range(c):
        for j in range(c):
            fij = (g[:, i] * g[:, j]).sum()
            if i != j and fij > 0:
                den = math.log(n) - min(math.log(f[i]), math.log(f[j]))
                dist[i, j] = 0.0 if den == 0 else (max(math.log(f[i]), math.log(f[j])) - math.log(fij)) / den
                finite.append(dist[i, j])
    maximum = max([1.0] + finite)
    for i in range(c):
        for j in range(c):
            if i != j and (g[:, i] * g[:, j]).sum() == 0:
                dist[i, j] = maximum
    return dist


def test_context_distance_matches_loops():
    rng = np.random.default_rng(0)
    g = (rng.random((60, 7)) < 0.3).astype(np.uint8)
    g[:, 6] = 0
    g[:3, 6] = 1          # a rare tag that co-occurs with few others
    np.testing.assert_allclose(similarity.context_distance(scipy.sparse.csr_matrix(g)), _ngd_reference(g))


def test_context_distance_hand_computed():
    # 4 images; a on 0,1; b on 1,2; c on 3 only.
    g = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
    dist = similarity.context_distance(scipy.sparse.csr_matrix(g))
    # NGD(a,b) = (log 2 - log 1) / (log 4 - log 2) = 1; c never co-occurs: max(1, 1) = 1.
    np.testing.assert_allclose(dist, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    # A tag on every image: denominator log N - log N = 0 for the pair with itself-like usage.
    g2 = np.array([[1, 1], [1, 1], [1, 0]])
    d2 = similarity.context_distance(scipy.sparse.csr_matrix(g2))
    # NGD(t0,t1) = (log 3 - log 2) / (log 3 - log 2) = 1.
    np.testing.assert_allclose(d2, [[0, 1], [1, 0]])
    assert np.isfinite(d2).all()


def _ancestor_synsets(synsets):
    seen = {}
    todo = list(synsets)
    while todo:
        s = todo.pop()
        if s.name() not in seen:
            seen[s.name()] = s
            todo.extend(s.hypernyms() + s.instance_hypernyms())
    return list(seen.values())


def _random_ic(wordnet, tags, seed=0):
    """A consistent IC table: random own counts, each added to every ancestor once."""
    rng = np.random.default_rng(seed)
    ic = {"n": {0: 0.0}, "v": {0: 0.0}, "a": {0: 0.0}}
    synsets = [s for t in tags for p in "nva" for s in wordnet.synsets(t, pos=p)]
    for s in _ancestor_synsets(synsets):
        pos = "a" if s.pos() == "s" else s.pos()
        own = float(rng.integers(1, 100))
        for a in _ancestor_synsets([s]):
            ic[pos][a.offset()] = ic[pos].get(a.offset(), 0.0) + own
        ic[pos][0] += own
    return ic


TAGS = ["dog", "cat", "boot", "shoe", "sandal", "bag", "handbag", "eat", "drink", "beautiful", "qqqxz"]


def _best_pair(wordnet, ic, a, b, measure):
    """Best synset pair by NLTK's own similarity functions (noun, else verb, else adj)."""
    def chosen(t):
        for p in "nva":
            s = wordnet.synsets(t, pos=p)
            if s:
                return p, s
        return None, []
    pa, sa = chosen(a)
    pb, sb = chosen(b)
    if pa is None or pa != pb:
        return None
    fn = {"lin": "lin_similarity", "res": "res_similarity", "jcn": "jcn_similarity"}[measure]
    values = []
    for x in sa:
        for y in sb:
            values.append(getattr(x, fn)(y, ic))
    return max(values)


@pytest.mark.parametrize("measure", ["lin", "res", "jcn"])
def test_knowledge_distance_matches_nltk(wordnet, measure):
    ic = _random_ic(wordnet, TAGS)
    dist = similarity.knowledge_distance(TAGS, wordnet, ic, measure)
    c = len(TAGS)
    sims = np.full((c, c), np.nan)
    for i in range(c):
        for j in range(c):
            if i != j:
                v = _best_pair(wordnet, ic, TAGS[i], TAGS[j], measure)
                sims[i, j] = np.nan if v is None else v
    if measure == "lin":
        expected = 1 - sims
    elif measure == "res":
        expected = 1 - sims / np.nanmax(sims)
    else:
        # NLTK's jcn similarity is 1 / distance; best pair = smallest distance.
        d = 1 / sims
        expected = d / np.nanmax(d[np.isfinite(d)])
    expected = np.where(np.isnan(expected), 1.0, expected)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(dist, expected, rtol=1e-5, atol=1e-5)
    # Different parts of speech and unknown words are at the maximum distance.
    assert dist[TAGS.index("dog"), TAGS.index("eat")] == 1.0
    assert dist[TAGS.index("qqqxz"), TAGS.index("dog")] == 1.0
    np.testing.assert_allclose(dist, dist.T)


class _Lemma:
    def __init__(self, count):
        self._count = count

    def count(self):
        return self._count


class _Synset:
    def __init__(self, offset, counts, parents=()):
        self._offset, self._lemmas, self._parents = offset, [_Lemma(c) for c in counts], list(parents)

    def offset(self):
        return self._offset

    def lemmas(self):
        return self._lemmas

    def hypernyms(self):
        return self._parents

    def instance_hypernyms(self):
        return []


class _TinyWordNet:
    """root(1) <- a(2), root <- b(3), a and b <- c(4): c has two paths to root."""

    def __init__(self):
        root = _Synset(1, [5])
        a = _Synset(2, [1, 2], [root])
        b = _Synset(3, [0], [root])
        c = _Synset(4, [4], [a, b])
        self.nouns = [root, a, b, c]

    def all_synsets(self, pos):
        return self.nouns if pos == "n" else []


def test_semcor_ic_counts_each_ancestor_once():
    ic = similarity.semcor_ic(_TinyWordNet(), smoothing=1.0)
    # own counts + 1: root 6, a 4, b 1, c 5. c reaches root by two paths but counts once.
    assert ic["n"][4] == 5
    assert ic["n"][2] == 4 + 5
    assert ic["n"][3] == 1 + 5
    assert ic["n"][1] == 6 + 4 + 1 + 5
    assert ic["n"][0] == 16
    assert ic["v"] == {0: 0.0}


def test_cached_semcor_ic_round_trip(tmp_path, monkeypatch):
    calls = []

    def fake(wordnet):
        calls.append(1)
        return {"n": {0: 3.0, 7: 2.0}, "v": {0: 0.0}, "a": {0: 0.0}}
    monkeypatch.setattr(similarity, "semcor_ic", fake)
    first = similarity.cached_semcor_ic(None, str(tmp_path))
    second = similarity.cached_semcor_ic(None, str(tmp_path))
    assert first == second == {"n": {0: 3.0, 7: 2.0}, "v": {0: 0.0}, "a": {0: 0.0}}
    assert len(calls) == 1


def test_read_ic_file(tmp_path):
    path = tmp_path / "ic-test.dat"
    path.write_text("wnver::eOS9lXC6GvMWznF1wkZofDdtbBU\n1740n 120.0 ROOT\n2137n 30.5\n"
                    "1831v 8.0 ROOT\n9999n 0\n")
    ic = similarity.read_ic_file(str(path))
    assert ic == {"n": {0: 120.0, 1740: 120.0, 2137: 30.5}, "v": {0: 8.0, 1831: 8.0}}
    path.write_text("header\n1740n 120.0 ROOT\n1740x 2\n")
    with pytest.raises(ValueError, match="ic-test.dat:3"):
        similarity.read_ic_file(str(path))
    path.write_text("header\n1740n 120.0\n")
    with pytest.raises(ValueError, match="no ROOT entries"):
        similarity.read_ic_file(str(path))


def test_similarity_from_distance():
    dist = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], float)
    xi, sigma = similarity.similarity_from_distance(dist)
    assert sigma == 4.0        # median of the off-diagonal squares 1,1,4,4,9,9
    np.testing.assert_allclose(xi, [[0, math.exp(-1 / 4), math.exp(-1)],
                                    [math.exp(-1 / 4), 0, math.exp(-9 / 4)],
                                    [math.exp(-1), math.exp(-9 / 4), 0]])


def _toy_dataset():
    tag_lists = [["dog", "cat"], ["dog"], ["cat", "bag"], ["bag", "handbag"], ["shoe", "boot"],
                 ["boot"], ["shoe", "sandal"], ["sandal", "boot"]]
    return from_tag_lists([str(i) for i in range(len(tag_lists))], tag_lists,
                          image_paths=[f"{i}.png" for i in range(len(tag_lists))])


def test_tag_similarity_combines_and_caches(wordnet, tmp_path):
    ds = _toy_dataset()
    ic = _random_ic(wordnet, ds.tag_names)
    ic_file = tmp_path / "ic.dat"
    roots = {s.offset() for t in ds.tag_names for s in _ancestor_synsets(wordnet.synsets(t))
             if not s.hypernyms() + s.instance_hypernyms()}
    ic_file.write_text("header\n" + "".join(
        f"{o}{p} {v}{' ROOT' if o in roots else ''}\n" for p in "nv" for o, v in ic[p].items() if o))
    xi, info = similarity.tag_similarity(ds, alpha=0.5, measure="lin", ic_file=str(ic_file),
                                        wordnet=wordnet, cache_dir=str(tmp_path / "cache"))
    read_back = similarity.read_ic_file(str(ic_file))
    dist = (similarity.context_distance(ds.user_tags)
            + 0.5 * similarity.knowledge_distance(ds.tag_names, wordnet, read_back, "lin"))
    expected, sigma = similarity.similarity_from_distance(dist)
    np.testing.assert_allclose(xi, expected, rtol=1e-6)
    assert info["sigma"] == pytest.approx(sigma)
    assert xi.dtype == np.float32 and np.allclose(xi, xi.T) and not np.diag(xi).any()
    again, info2 = similarity.tag_similarity(ds, alpha=0.5, measure="lin", ic_file=str(ic_file),
                                            wordnet=wordnet, cache_dir=str(tmp_path / "cache"))
    assert info2["cached"] and np.array_equal(again, xi)
    other, info3 = similarity.tag_similarity(ds, alpha=0.0, cache_dir=str(tmp_path / "cache"))
    assert not info3["cached"] and not np.allclose(other, xi)


def test_tag_similarity_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        similarity.tag_similarity(_toy_dataset(), alpha=float("nan"))
    with pytest.raises(ValueError, match="measure"):
        similarity.tag_similarity(_toy_dataset(), measure="wup")


def test_a_table_over_the_memory_limit_is_refused_before_it_is_built(wordnet, monkeypatch):
    ds = _toy_dataset()
    chosen = similarity.choose_synsets(ds.tag_names, wordnet, {"n": {}, "v": {}, "a": {}})
    nouns = sum(len(found) for pos, found in chosen if pos == "n")
    c = len(ds.tag_names)
    need = similarity.memory_estimate(c, [nouns])
    assert need == max(50 * c * c, 16 * c * c + 26 * nouns ** 2) + (32 << 20)

    def never(*args):
        raise AssertionError("computed despite the limit")

    # IC values do not change the sizes; a constant table keeps SemCor's out of the user's cache.
    monkeypatch.setattr(similarity, "cached_semcor_ic", lambda *args: {"n": {0: 1.0}, "v": {0: 1.0},
                                                                         "a": {0: 1.0}})
    with monkeypatch.context() as patch, pytest.raises(ValueError) as info:
        patch.setattr(similarity, "context_distance", never)
        similarity.tag_similarity(ds, alpha=1.0, wordnet=wordnet, max_bytes=need - 1)
    assert str(info.value) == (
        f"the tag-similarity table xi of {c} tags ({nouns} WordNet synsets) needs about {need / 2 ** 30:.2f} GiB of "
        f"memory to build, more than the limit of {(need - 1) / 2 ** 30:.2f} GiB (max_bytes); it grows with the "
        "square of the tag count: raise --min_tag_fraction for fewer tags")
    xi, info = similarity.tag_similarity(ds, alpha=1.0, wordnet=wordnet, max_bytes=need)
    assert xi.shape == (c, c) and info["memory_estimate"] == need
    # The default limit: 3/4 of this machine's memory.
    assert similarity.default_max_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4


def test_memory_estimate_bounds_the_measured_peak(wordnet, monkeypatch):
    # 1,000 WordNet nouns and verbs on 40 images; IC values do not change the sizes of the tables.
    monkeypatch.setattr(similarity, "cached_semcor_ic", lambda *args: {"n": {0: 1.0}, "v": {0: 1.0},
                                                                         "a": {0: 1.0}})
    rng = np.random.default_rng(0)
    names = sorted(n for n in wordnet.all_lemma_names("n") if n.isalpha())
    verbs = sorted(set(n for n in wordnet.all_lemma_names("v") if n.isalpha()) - set(names))
    tags = sorted(rng.choice(names, 750, replace=False).tolist() + rng.choice(verbs, 250, replace=False).tolist())
    ds = from_tag_lists([str(i) for i in range(40)], [tags[i::40] for i in range(40)],
                        image_paths=[f"{i}.png" for i in range(40)])
    tracemalloc.start()
    try:
        _, info = similarity.tag_similarity(ds, alpha=1.0, wordnet=wordnet)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ds.num_tags == 1000
    assert 0.4 * info["memory_estimate"] < peak <= info["memory_estimate"]
