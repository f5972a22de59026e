"""Train wsnn: `python -m wsnn.train --flagfile=flags/fashion_tags.cfg`.

A thin entry point: flags -> a frozen config tree (`TrainRun`: `TrainConfig`, `PrepareConfig`)
-> `wsnn.training.runner.run`. Flags: every leaf of both configs, listed by group in
`--helpfull` (train.data, train.model, train.schedule, ...; prepare); absl
reads `--flagfile` natively, so a flagfile is an experiment. Flags after the
flagfile override it.
"""

import dataclasses
import sys

from absl import app, flags, logging

from wsnn import checks
from wsnn import config as config_lib
from wsnn import flags_lib, tf_start
from wsnn import wordnet as wordnet_lib
from wsnn.data import preparation

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """The train command's config tree: the training run and the data it prepares (whose workdir and
    seed are the run's `runtime` ones)."""

    train: config_lib.TrainConfig = dataclasses.field(default_factory=config_lib.TrainConfig)
    prepare: preparation.PrepareConfig = dataclasses.field(default_factory=preparation.PrepareConfig)


def define_flags():
    """One flag per leaf of `TrainRun` (the tools that train use them too)."""
    flags_lib.define_flags(TrainRun)


def configs_from_flags():
    """(TrainConfig, PrepareConfig) from the parsed flags, with the files they name and the input size
    the backbone needs checked; ValueError names a bad flag."""
    run = flags_lib.from_flags(TrainRun)
    config = run.train
    if config.data.image_size:
        checks.input_size(config.model.backbone, config.data.image_size)
    config_lib.check_files(config)
    return config, run.prepare


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config, prepare_config = configs_from_flags()
    except ValueError as e:
        print(f"wsnn.train: config error: {e}", file=sys.stderr)
        return 2
    # Started here so that a config error is reported before TensorFlow loads.
    tf = tf_start.start()

    from wsnn.training import runner

    # Progress goes to stdout; TensorFlow's per-step INFO lines would drown it.
    logging.set_verbosity(logging.WARNING)
    try:
        results = runner.run(config, prepare_config, FLAGS)
    except (ValueError, RuntimeError, FloatingPointError, OSError, tf.errors.OpError,
            wordnet_lib.WordNetUnavailable) as e:
        # Bad data, a busy or changed workdir, a NaN/Inf loss, a workdir that cannot be written:
        # one line, and what was already saved stays (every output is written atomically).
        print(f"wsnn.train: error: {e}", file=sys.stderr)
        return 1
    if None in results.values():
        print("done; this worker writes no outputs (the chief does)")
        return 0
    workdir = config.runtime.workdir
    print(runner.format_table(results))
    print(f"Outputs: {workdir}/<task>/ (metrics.json, refined_tags.tsv, refined_tags.npz); "
          f"TensorBoard: tensorboard --logdir {workdir}/tensorboard")
    return 0


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
