"""Times RPCA tag refinement and measures its peak memory (wsnn.baselines.rpca).

Each size runs in a fresh subprocess, so each peak RSS (resource.getrusage,
ru_maxrss) is that size's own: the random data, the image and tag graphs and
the solver. The user-tag matrix is random sparse (Poisson tags per image,
Zipf-like tag frequencies), the features random Gaussian (d = 256); the tag
graph is the co-occurrence cosine. Prints one JSON object per size, then a
summary line with the solver's bytes per N x C element at the largest size
(smaller sizes are dominated by fixed costs: features, graphs, imports).

BLAS threads default to 1 (`--threads`): on a shared, loaded machine
multi-threaded OpenBLAS spins and an N x C SVD ran 10-50x slower than
single-threaded in our measurements; set it to the core count on an idle one.

    .venv/bin/python tools/bench_rpca.py                      # the default grid
    .venv/bin/python tools/bench_rpca.py --sizes=5000x45 --max_iter=300
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import scipy.sparse


def _random_tags(images, tags, tags_per_image, rng):
    popularity = 1.0 / np.arange(1, tags + 1)
    popularity /= popularity.sum()
    per_image = rng.poisson(tags_per_image, images).clip(1, tags)
    rows = np.repeat(np.arange(images), per_image)
    cols = rng.choice(tags, size=rows.size, p=popularity)
    user_tags = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(images, tags))
    user_tags.data[:] = 1.0
    return user_tags


def run_one(images, tags, args):
    """One size in this process; returns its JSON record."""
    from wsnn.baselines import rpca

    rng = np.random.default_rng(0)
    user_tags = _random_tags(images, tags, args.tags_per_image, rng)
    features = rng.standard_normal((images, args.dim))
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    a, _, info = rpca.rpca_refine(user_tags, features=features, eta=args.eta, knn=args.knn,
                                  max_iter=args.max_iter)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    elements = images * tags
    solve_seconds = info["seconds"] - info["graph_seconds"]
    return {
        "images": images, "tags": tags, "threads": args.threads, "dim": args.dim,
        "knn": args.knn, "eta": args.eta,
        "elements": elements, "iterations": info["iterations"], "converged": info["converged"],
        "rank": info["rank"], "seconds": round(seconds, 2),
        "graph_seconds": round(info["graph_seconds"], 2),
        "seconds_per_iteration": round(solve_seconds / info["iterations"], 4),
        "rss_before_mb": round(before_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
        "solver_bytes_per_element": round((peak_kb - before_kb) * 1024 / elements, 1),
        "refined_nonzero": bool(np.abs(a).max() > 0),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x45,5000x444,25000x45,25000x444",
                        help="comma-separated NxC")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--knn", type=int, default=25)
    parser.add_argument("--eta", type=float, default=2.0 ** -10)
    parser.add_argument("--tags_per_image", type=float, default=5.0)
    parser.add_argument("--max_iter", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per run")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    if args.one:
        print(json.dumps(run_one(*sizes[0], args)))
        return
    records = []
    for images, tags in sizes:
        command = [sys.executable, __file__, "--one", f"--sizes={images}x{tags}",
                   f"--dim={args.dim}", f"--knn={args.knn}", f"--eta={args.eta}",
                   f"--tags_per_image={args.tags_per_image}", f"--max_iter={args.max_iter}",
                   f"--threads={args.threads}"]
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
                   OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        records.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(records[-1]), flush=True)
    largest = max(records, key=lambda r: r["elements"])
    print(json.dumps({"largest": f"{largest['images']}x{largest['tags']}",
                      "solver_bytes_per_element": largest["solver_bytes_per_element"]}))


if __name__ == "__main__":
    main()
