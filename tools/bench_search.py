"""Candidate search at NUS-WIDE's size: exact chunked search, scikit-learn brute force, PCA, IVF; prints JSON.

    .venv/bin/python tools/bench_search.py [--n=200000] [--d=4096] [--m=512] [--queries=2000] [--dims=256]

Features: N x d synthetic float32 features shaped like fc7 activations: ReLU
of a random linear map of points drawn around 2,000 cluster centres in a
64-dimensional latent space, plus noise. (Random Gaussian features would have
no structure, and every method's recall would be meaningless.)

Timed, each with its peak resident memory above the level before it:
  exact        `wsnn.search.nearest` for --queries sampled images against
               all N (M + 1 neighbours, the query itself then dropped; the
               cost is linear in the queries, so the full N x M table is
               projected as time * N / queries);
  sklearn      NearestNeighbors(algorithm="brute") fit on all N, kneighbors
               of the same queries (projected alike);
  pca          `wsnn.search.reduce_dimensions` to --dims components, then the exact
               search of ALL N images in the reduced space (the whole run,
               not projected); its recall@M against the exact sets of the
               sampled queries, and the share of each query's 7 (m-1)
               exact nearest images that are among its PCA candidates.
  ivf          `wsnn.search.ivf_index` (faiss IndexIVFFlat, `ivf_parameters(N)`
               lists) built on all N (timed whole), then the sampled queries
               searched with 1/32, 1/8 (the default), 1/4 and 1/2 of the lists
               probed (projected to all N and added to the build time); recall@M
               against the exact sets, and the speed-up over exact (timed
               before and again after ivf, the mean of both: the load of a
               shared machine changes during the run).
BLAS and faiss use every core the machine has (2 on the development machine).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from wsnn import search
from wsnn.meter import PeakMemory


def synthetic_features(n, d, seed=0, clusters=2000, latent=64):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, latent)).astype(np.float32)
    mapping = rng.normal(size=(latent, d)).astype(np.float32) / np.sqrt(latent)
    features = np.empty((n, d), np.float32)
    for start in range(0, n, 20000):
        block = points[start:start + 20000] @ mapping
        block += 0.1 * rng.normal(size=block.shape).astype(np.float32)
        features[start:start + 20000] = np.maximum(block, 0)
    return features


def _drop_self(found, rows, m):
    """The M neighbours of each query but itself (normally its first of M + 1)."""
    return np.array([[j for j in row if j != i][:m] for i, row in zip(rows, found)])


def _recall(found, reference, k):
    return float(np.mean([len(np.intersect1d(a[:k], b[:k])) / k for a, b in zip(found, reference)]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200000)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--m", type=int, default=512, help="candidates per image (M)")
    parser.add_argument("--queries", type=int, default=2000, help="images whose candidates exact and sklearn find")
    parser.add_argument("--dims", type=int, default=256, help="PCA components")
    parser.add_argument("--chunk_size", type=int, default=1024)
    parser.add_argument("--skip_sklearn", action="store_true")
    parser.add_argument("--skip_pca", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    features = synthetic_features(args.n, args.d)
    report = {"n": args.n, "d": args.d, "m": args.m, "queries": args.queries, "dims": args.dims,
              "cpu_count": os.cpu_count(), "features_gib": features.nbytes / 2 ** 30,
              "generate_s": time.perf_counter() - started}
    print(f"features ready ({report['generate_s']:.0f} s)", file=sys.stderr, flush=True)
    rows = np.sort(np.random.default_rng(1).choice(args.n, args.queries, replace=False))
    scale = args.n / args.queries

    with PeakMemory() as usage:
        exact = _drop_self(search.nearest(features, args.m + 1, queries=features[rows], chunk_size=args.chunk_size),
                           rows, args.m)
    report["exact"] = {"queries_s": usage.seconds, "projected_all_s": usage.seconds * scale,
                       "peak_mib": usage.mib}
    print(f"exact: {report['exact']}", file=sys.stderr, flush=True)

    if not args.skip_sklearn:
        from sklearn.neighbors import NearestNeighbors

        with PeakMemory() as usage:
            index = NearestNeighbors(n_neighbors=args.m + 1, algorithm="brute").fit(features)
            found = index.kneighbors(features[rows], return_distance=False)
        found = _drop_self(found, rows, args.m)
        report["sklearn_brute"] = {"queries_s": usage.seconds, "projected_all_s": usage.seconds * scale,
                                   "peak_mib": usage.mib, "recall_vs_exact": _recall(found, exact, args.m)}
        print(f"sklearn: {report['sklearn_brute']}", file=sys.stderr, flush=True)
        del index, found

    if not args.skip_pca:
        with PeakMemory() as usage:
            reduced = search.reduce_dimensions(features, args.dims)
            reduce_s = usage.elapsed()
            candidates = search.nearest(reduced, args.m, exclude_self=True, chunk_size=args.chunk_size)
        report["pca"] = {"all_s": usage.seconds, "reduce_s": reduce_s, "peak_mib": usage.mib,
                         "recall_at_m": _recall(candidates[rows], exact, args.m),
                         "exact_top7_in_candidates": float(np.mean([len(np.intersect1d(a, b[:7])) / 7
                                                                     for a, b in zip(candidates[rows], exact)]))}
        print(f"pca: {report['pca']}", file=sys.stderr, flush=True)
        del reduced, candidates

    # ivf: the index is built once (fixed cost); searching is linear in the queries, so the
    # sampled queries' time is projected to all N, as for exact.
    lists, default_probes = search.ivf_parameters(args.n)
    with PeakMemory() as usage:
        index = search.ivf_index(features, lists)
    report["ivf"] = {"lists": lists, "default_probes": default_probes, "build_s": usage.seconds,
                     "build_peak_mib": usage.mib, "by_probes": []}
    for probes in sorted({max(1, lists // 32), lists // 8, lists // 4, lists // 2}):
        index.nprobe = probes
        with PeakMemory() as usage:
            found = _drop_self(index.search(features[rows], args.m + 1)[1], rows, args.m)
        row = {"probes": probes, "queries_s": usage.seconds,
               "projected_all_s": report["ivf"]["build_s"] + usage.seconds * scale,
               "recall_at_m": _recall(found, exact, args.m)}
        report["ivf"]["by_probes"].append(row)
        print(f"ivf: {row}", file=sys.stderr, flush=True)
    # exact again: on a shared machine the load changes during the run; the speed-ups use the mean
    # of both exact timings.
    del index
    with PeakMemory() as usage:
        search.nearest(features, args.m + 1, queries=features[rows], chunk_size=args.chunk_size)
    report["exact_again"] = {"queries_s": usage.seconds, "projected_all_s": usage.seconds * scale}
    exact_s = (report["exact"]["projected_all_s"] + report["exact_again"]["projected_all_s"]) / 2
    for row in report["ivf"]["by_probes"]:
        row["speedup_vs_exact"] = exact_s / row["projected_all_s"]
    report["total_s"] = time.perf_counter() - started
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
