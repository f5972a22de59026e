"""Run the benchmark: `python -m wsnn.benchmark --flagfile=flags/benchmark_fashion_tags.cfg`.

A thin entry point: flags -> a frozen config tree (`BenchmarkRun`:
`TrainConfig`, `PrepareConfig`, `BenchmarkConfig`) ->
`wsnn.benchmark.runner.run`, then the tables.
"""

import os
import sys

from absl import app

from wsnn import config as config_lib
from wsnn import flags_lib, tf_start
from wsnn.benchmark import report
from wsnn.benchmark.config import BenchmarkRun


def main(argv):
    if len(argv) > 1:
        print(f"wsnn.benchmark: error: unexpected arguments {' '.join(argv[1:])}", file=sys.stderr)
        return 2
    try:
        run_config = flags_lib.from_flags(BenchmarkRun)
        config, prepare_config, bench = run_config.train, run_config.prepare, run_config.benchmark
        config_lib.check_files(config)
    except ValueError as e:
        print(f"wsnn.benchmark: config error: {e}", file=sys.stderr)
        return 2
    from absl import logging

    from wsnn.benchmark import runner

    logging.set_verbosity(logging.WARNING)
    tf_start.start()
    try:
        results = runner.run(config, prepare_config, bench)
    except (ValueError, RuntimeError, FloatingPointError, OSError) as e:
        print(f"wsnn.benchmark: error: {e}", file=sys.stderr)
        return 1
    if results is None:
        print("done; this worker writes no outputs (the chief does)")
        return 0
    out_dir = report.output_dir(config.runtime.workdir, bench)
    print(open(os.path.join(out_dir, "tables.md")).read())
    print(f"Results: {out_dir} ({results['wall_seconds'] / 60:.1f} min)")
    return 0


def run():
    """Console-script entry point."""
    flags_lib.define_flags(BenchmarkRun)
    app.run(main)


if __name__ == "__main__":
    run()
