"""Host time to gather one exact stage-2 step's images: decoding files each time against the
decoded-image cache (`wsnn.data.decoded`); prints JSON.

    .venv/bin/python tools/bench_gather.py --num_images=5000 --workdir=/tmp/bench_gather

Writes --num_images JPEG files (smooth random colour images of --file_size
pixels square) once, then times, for the paper's s=64, m=8, M=512, gathering
s/m x (M+1) = 4,104 distinct images at --image_size RGB:
  files   `ImageSource.get` on the files (read and decode every image: the
          path before the cache, and still the first epoch's cost);
  cached  the same images from the cache, after building it once (its build
          time is reported as well).
Each is the median of --repeats draws of distinct random indices. The
machine's load average is reported beside the times.
"""

import argparse
import json
import os
import time

import numpy as np
from PIL import Image


def _collection(root, count, size):
    from wsnn.data.dataset import from_tag_lists

    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        name = f"{i:06d}.jpg"
        if not os.path.isfile(os.path.join(root, name)):
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(os.path.join(root, name), quality=90)
        paths.append(name)
    return from_tag_lists([str(i) for i in range(count)], [["x"]] * count, image_root=root, image_paths=paths)


def _median_seconds(fn, draws):
    times = []
    for indices in draws:
        started = time.perf_counter()
        fn(indices)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=5000)
    parser.add_argument("--file_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--gathered", type=int, default=4104, help="s/m x (M+1) at s=64, m=8, M=512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/bench_gather")
    args = parser.parse_args()
    if args.gathered > args.num_images:
        parser.error("--gathered must be at most --num_images (distinct images)")
    from wsnn import tf_start

    tf_start.start()
    from wsnn.data import decoded as decoded_lib
    from wsnn.data import pipeline

    dataset = _collection(os.path.join(args.workdir, "jpeg"), args.num_images, args.file_size)
    rng = np.random.default_rng(1)
    draws = [rng.choice(args.num_images, args.gathered, replace=False) for _ in range(args.repeats)]
    files = pipeline.ImageSource(dataset, args.image_size, 3)
    files.get(draws[0][:8])  # traces the decoder once
    out = {"num_images": args.num_images, "gathered": args.gathered, "image_size": args.image_size,
           "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()}
    out["files_s"] = _median_seconds(files.get, draws)
    cache_dir = os.path.join(args.workdir, "cache")
    for name in os.listdir(cache_dir) if os.path.isdir(cache_dir) else []:
        os.remove(os.path.join(cache_dir, name))
    started = time.perf_counter()
    decoded = decoded_lib.decoded_images(dataset, args.image_size, 3, cache_dir, log=lambda _: None)
    out["cache_build_s"] = time.perf_counter() - started
    out["cache_in_memory"] = not isinstance(decoded, np.memmap)
    cached = pipeline.ImageSource(dataset, args.image_size, 3, decoded=decoded, rows=np.arange(args.num_images))
    out["cached_s"] = _median_seconds(cached.get, draws)
    mapped = decoded_lib.decoded_images(dataset, args.image_size, 3, cache_dir, max_in_memory_bytes=0)
    out["cached_memmap_s"] = _median_seconds(
        pipeline.ImageSource(dataset, args.image_size, 3, decoded=mapped, rows=np.arange(args.num_images)).get,
        draws)
    out["speedup"] = out["files_s"] / out["cached_s"]
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
