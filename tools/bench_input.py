"""Batches read ahead or not, side by side: input wait and images/s per stage; prints JSON.

    .venv/bin/python tools/bench_input.py [--rounds=2] [--workdir=/tmp/bench_input] [-- wsnn.train flags]

Runs `python -m wsnn.train --flagfile=flags/fashion_tags.cfg` (the demo's
settings) with --prefetch_batches=false and =true in turn, --rounds times
(alternating, so that a change in the machine's load falls on both), each in
a fresh workdir that shares one prepared dataset. Flags after `--` override
the demo's (e.g. --num_images=1000 --stage1_steps=200 --task=refinement
for a shorter run). Reported per mode and stage, from each run's
metrics.json (`timing_this_process.input_wait`, written by
`wsnn.training.hooks.InputWait`): wall seconds, images/s, and the share of
the wall time the steps waited for their batches (read-ahead part and
Algorithm 1's weight-dependent part). Also checks that both modes end with
the same weights.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(workdir, prefetch, extra):
    command = [sys.executable, "-m", "wsnn.train", "--flagfile=flags/fashion_tags.cfg", f"--workdir={workdir}",
               f"--prefetch_batches={str(prefetch).lower()}", "--export=false", *extra]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    results = {}
    for task in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, task, "metrics.json")
        if os.path.isfile(path):
            with open(path) as f:
                summary = json.load(f)
            results[task] = {"input_wait": summary["timing_this_process"]["input_wait"],
                             "weights_sha256": summary["weights_sha256"]}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/bench_input")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    prepared = os.path.join(args.workdir, "prepared")
    runs = {False: [], True: []}
    for round_ in range(args.rounds):
        for prefetch in (False, True):
            workdir = os.path.join(args.workdir, f"round{round_}-prefetch{int(prefetch)}")
            shutil.rmtree(workdir, ignore_errors=True)
            os.makedirs(workdir)
            if os.path.isdir(prepared):
                os.symlink(prepared, os.path.join(workdir, "prepared"))
            runs[prefetch].append(_train(workdir, prefetch, extra))
            if not os.path.isdir(prepared):
                shutil.move(os.path.join(workdir, "prepared"), prepared)
                os.symlink(prepared, os.path.join(workdir, "prepared"))
            print(f"round {round_ + 1}, prefetch {prefetch}: done", file=sys.stderr, flush=True)
    report = {"command": " ".join(sys.argv), "extra_flags": extra, "modes": {}}
    for prefetch, results in runs.items():
        mode = report["modes"]["prefetch" if prefetch else "in_turn"] = {}
        for task in results[0]:
            for stage in results[0][task]["input_wait"]:
                records = [r[task]["input_wait"][stage] for r in results]
                mode[f"{task}/{stage}"] = {
                    "wall_s": [r["wall_s"] for r in records],
                    "images_per_s": float(np.mean([r["images_per_s"] for r in records])),
                    "wait_share": float(np.mean([r["wait_s"] / r["wall_s"] for r in records])),
                    "finish_share": float(np.mean([r["finish_s"] / r["wall_s"] for r in records])),
                    "share": float(np.mean([r["share"] for r in records]))}
    report["same_weights"] = all(r[task]["weights_sha256"] == runs[False][0][task]["weights_sha256"]
                                 for rs in runs.values() for r in rs for task in r)
    for key in report["modes"]["prefetch"]:
        report["modes"].setdefault("ratio_images_per_s", {})[key] = (
            report["modes"]["prefetch"][key]["images_per_s"] / report["modes"]["in_turn"][key]["images_per_s"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
