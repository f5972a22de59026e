"""Times the tag-similarity table xi at NUS-WIDE's vocabulary size (C = 3,010).

The vocabulary is the C most frequent WordNet lemmas by SemCor count (common
words have the most senses, the slow case for dist_KB); the user-tag matrix is
random with Zipf-like tag frequencies. The SemCor IC table is computed first
if it is not cached yet (timed separately), as the target is "with a warm IC
cache". Prints JSON.

    .venv/bin/python tools/bench_semantics.py [--tags=3010] [--images=200000]
"""

import argparse
import json
import resource
import time

import numpy as np
import scipy.sparse

from wsnn import similarity, wordnet as wordnet_lib
from wsnn.data.dataset import TaggedImageSet


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=3010)
    parser.add_argument("--images", type=int, default=200000)
    parser.add_argument("--tags_per_image", type=float, default=6.8)
    parser.add_argument("--measure", default="lin", choices=similarity.MEASURES)
    args = parser.parse_args()

    wordnet = wordnet_lib.get_wordnet()
    start = time.perf_counter()
    similarity.cached_semcor_ic(wordnet)
    ic_s = time.perf_counter() - start

    counts = {}
    for synset in wordnet.all_synsets("n"):
        for lemma in synset.lemmas():
            name = lemma.name().lower()
            counts[name] = counts.get(name, 0) + lemma.count()
    vocab = sorted(sorted(counts, key=lambda t: (-counts[t], t))[:args.tags])

    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, args.tags + 1)
    popularity /= popularity.sum()
    per_image = rng.poisson(args.tags_per_image, args.images).clip(0, args.tags)
    rows = np.repeat(np.arange(args.images), per_image)
    cols = rng.choice(args.tags, size=rows.size, p=popularity)
    user_tags = scipy.sparse.csr_matrix((np.ones(rows.size, np.uint8), (rows, cols)),
                                        shape=(args.images, args.tags))
    user_tags.data[:] = 1
    dataset = TaggedImageSet(ids=[str(i) for i in range(args.images)], tag_names=vocab,
                             user_tags=user_tags, image_paths=[""] * args.images)

    start = time.perf_counter()
    xi, info = similarity.tag_similarity(dataset, alpha=1.0, measure=args.measure, wordnet=wordnet)
    total_s = time.perf_counter() - start
    print(json.dumps({
        "tags": args.tags, "images": args.images, "measure": args.measure,
        "semcor_ic_s": round(ic_s, 1), "tag_similarity_s": round(total_s, 1),
        "parts_s": {k: round(v, 1) for k, v in info["timings"].items()},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "xi_finite": bool(np.isfinite(xi).all()), "sigma": info["sigma"],
    }, indent=1))


if __name__ == "__main__":
    main()
