"""How fast stage-2 neighbours go stale: recall of bank-based choices against bank age; prints JSON.

    .venv/bin/python tools/bench_bank_age.py --flagfile=flags/fashion_tags.cfg --task=refinement \
        --warm_start_from=/tmp/bench_step/exact --workdir=/tmp/bank_age

Starts from the phi_0 of a finished run (`--warm_start_from`, e.g. the exact
run of tools/bench_step.py), trains --steps stage-2 steps with exact
Algorithm 1 and, from a hook, embeds every training image every --every
steps. For
--anchors sampled images and every pair of snapshots (then, now), it compares
with the exact choice at `now` (the m-1 candidates nearest under the current
weights) the choice made from the `then` bank in three ways:
  bank          anchor and candidates all from the `then` bank;
  fresh_anchor  the anchor embedded now, its candidates from the `then` bank
                (what writing rows back one at a time leads to);
  shortlist_k   the k candidates nearest in the `then` bank, then the m-1
                nearest among them under the current weights.
This is the measurement behind the fast mode's design (wsnn.neighbours).
"""

import json
import sys

import numpy as np
from absl import app, flags, logging

from wsnn import search
from wsnn import train as train_entry
from wsnn.training.loop import Hook

flags.DEFINE_integer("steps", 160, "Stage-2 steps to train.")
flags.DEFINE_integer("every", 20, "Embed every training image every this many steps.")
flags.DEFINE_integer("anchors", 500, "Sampled anchors per comparison.")
flags.DEFINE_list("shortlists", ["12", "16"], "Shortlist sizes k to compare.")
FLAGS = flags.FLAGS


def _choice(candidates, anchor_features, candidate_features, count):
    """Algorithm 1's choice (`wsnn.search`) of `count` candidates, given the features to compare."""
    features = np.concatenate([anchor_features[np.newaxis], candidate_features])
    distances = search.candidate_distances(features, [0], [np.arange(1, len(features))])
    return set(candidates[search.nearest_candidates(distances, count)[0]])


class _Enough(Exception):
    """Raised by `_Snapshots` once --steps stage-2 steps have run."""


class _Snapshots(Hook):
    """Every training image embedded when stage 2 starts and every `every` stage-2 steps; stops the run
    after `steps` steps."""

    def __init__(self, every, steps):
        self.every, self.steps, self.features = every, steps, {}

    def _take(self, run, step):
        self.features[step] = run.steps.features(run.data.train_source).astype(np.float64)
        print(f"step {step}: snapshot taken", file=sys.stderr, flush=True)

    def begin_stage(self, run, stage):
        if stage == 2:
            self._take(run, 0)

    def after_step(self, run, context):
        if context.stage != 2:
            return
        if context.stage_step % self.every == 0:
            self._take(run, context.stage_step)
        if context.stage_step >= self.steps:
            raise _Enough()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config, prepare_config = train_entry.configs_from_flags()
    except ValueError as e:
        print(f"bench_bank_age: config error: {e}", file=sys.stderr)
        return 2
    if config.data.task == "both" or not config.runtime.warm_start_from:
        print("bench_bank_age: give --task=annotation|refinement and --warm_start_from", file=sys.stderr)
        return 2
    from wsnn.data.preparation import load_or_prepare
    from wsnn.training import distribute
    from wsnn.training.trainer import Trainer

    logging.set_verbosity(logging.WARNING)
    strategy = distribute.make_strategy(config.runtime.num_devices)
    dataset = load_or_prepare(prepare_config)
    snapshots = _Snapshots(FLAGS.every, FLAGS.steps)
    # Exact Algorithm 1 for as many epochs as --steps needs; the hook stops it at --steps.
    config = config.replace(neighbour_mode="exact", shortlist=0, stage2_epochs=10 ** 6, eval_max_images=0)
    trainer = Trainer(config, dataset, config.data.task, strategy, hooks=[snapshots])
    try:
        trainer.run()
    except _Enough:
        pass
    candidates, m = trainer.records.candidates, config.neighbours.group_size
    sample = np.random.default_rng(0).choice(len(candidates), min(FLAGS.anchors, len(candidates)), replace=False)
    rows = []
    for now in sorted(snapshots.features):
        for then in sorted(t for t in snapshots.features if t < now):
            current, old = snapshots.features[now], snapshots.features[then]
            scores = {"bank": [], "fresh_anchor": [], **{f"shortlist_{k}": [] for k in FLAGS.shortlists}}
            for a in sample:
                z = candidates[a]
                exact = _choice(z, current[a], current[z], m - 1)
                scores["bank"].append(len(exact & _choice(z, old[a], old[z], m - 1)))
                scores["fresh_anchor"].append(len(exact & _choice(z, current[a], old[z], m - 1)))
                for k in FLAGS.shortlists:
                    short = np.array(sorted(_choice(z, old[a], old[z], int(k))))
                    scores[f"shortlist_{k}"].append(len(exact & _choice(short, current[a], current[short], m - 1)))
            rows.append({"now": now, "age": now - then,
                         **{name: float(np.mean(v)) / (m - 1) for name, v in scores.items()}})
    print(json.dumps({"task": config.data.task, "train_images": len(candidates),
                      "num_candidates": candidates.shape[1], "group_size": m, "recall": rows}, indent=1))
    return 0


if __name__ == "__main__":
    train_entry.define_flags()
    app.run(main)
