"""Build and inspect the tag-similarity table xi (eqs. 3-5; see `wsnn.similarity`).

    python -m wsnn.semantics --data=runs/fashion_tags/prepared [--alpha=3 --tags=sneaker,bag]

Builds xi for a prepared dataset (or loads it from `<data>/cache/`), then
prints how long that took (and, when built, the estimated peak memory; a
table over the limit of `wsnn.similarity.tag_similarity` is refused in one
line) and each chosen tag's nearest tags by xi (default: the label tags,
else the most frequent tags).
"""

import os
import sys
import time

import numpy as np

from wsnn import checks, similarity
from wsnn import wordnet as wordnet_lib


def main(argv):
    """Builds and caches xi for a prepared dataset; prints timing and neighbours."""
    from absl import flags
    from wsnn.data import dataset as dataset_lib

    del argv
    config = flags.FLAGS
    try:
        checks.at_least_one(top_k=config.top_k)
        dataset = dataset_lib.load(config.data)
        start = time.perf_counter()
        xi, info = similarity.tag_similarity(dataset, config.alpha, config.measure, config.ic_file or None,
                                             cache_dir=os.path.join(config.data, "cache"))
        elapsed = time.perf_counter() - start
        tags = config.tags or [dataset.tag_names[j] for j in dataset.label_to_tag if j >= 0][:8]
        if not tags:
            counts = np.asarray(dataset.user_tags.sum(axis=0)).ravel()
            tags = [dataset.tag_names[j] for j in np.argsort(-counts, kind="stable")[:8]]
        unknown = [t for t in tags if t not in dataset.tag_names]
        if unknown:
            raise ValueError(f"--tags: {', '.join(unknown)} not in the vocabulary of {config.data}")
    except (ValueError, wordnet_lib.WordNetUnavailable) as e:
        print(f"wsnn.semantics: error: {e}", file=sys.stderr)
        return 2
    where_ = f"loaded from cache {info['cached']}" if info.get("cached") else (
        "built in " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in info["timings"].items())
        + f"; sigma {info['sigma']:.4g}; peak memory about {info['memory_estimate'] / 2 ** 20:,.0f} MiB")
    print(f"tag similarity xi: {xi.shape[0]} x {xi.shape[1]}, measure {config.measure}, "
          f"alpha {config.alpha:g}, {elapsed:.1f} s ({where_})")
    for tag in tags:
        nearest = similarity.most_similar(xi, dataset.tag_names, tag, config.top_k)
        neighbours = ", ".join(f"{t} {s:.2f}" for t, s in nearest)
        print(f"  {tag:<14} {neighbours}")
    return 0


def run():
    """Console-script entry point."""
    from absl import app, flags

    flags.DEFINE_string("data", None, "Prepared dataset directory (from wsnn.prepare).")
    flags.DEFINE_float("alpha", 1.0, "Weight of the WordNet distance in eq. 4.")
    flags.DEFINE_enum("measure", "lin", similarity.MEASURES, "WordNet IC similarity: lin, jcn or res.")
    flags.DEFINE_string("ic_file", "", "NLTK IC file (e.g. ic-brown.dat); default: SemCor counts.")
    flags.DEFINE_list("tags", [], "Tags whose neighbours to print (default: the label tags).")
    flags.DEFINE_integer("top_k", 5, "Neighbours to print per tag.")
    flags.mark_flag_as_required("data")
    app.run(main)


if __name__ == "__main__":
    run()
