"""Prepare a tagged image collection: import, normalise tags, save, report.

    python -m wsnn.prepare --source=fashion_tags --workdir=runs/fashion_tags
    python -m wsnn.prepare --source=mirflickr --data_dir=/data/mirflickr25k --workdir=runs/mirflickr
    python -m wsnn.prepare --source=nuswide --data_dir=/data/nuswide --workdir=runs/nuswide
    python -m wsnn.prepare --source=jsonl --data_dir=photos/annotations.jsonl --workdir=runs/photos

Writes the prepared dataset to `<workdir>/prepared` (see `wsnn.data.dataset`)
and prints the paper's Table-1 statistics, what normalisation removed, the
timings, and, when labels exist, the RandomGuess and UserTags scores.
"""

import os
import sys

from absl import app, flags

from wsnn import flags_lib, io_utils
from wsnn import wordnet as wordnet_lib
from wsnn.data import preparation

FLAGS = flags.FLAGS


def main(argv):
    """Prepares the collection that the flags name and prints the report."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = flags_lib.from_flags(preparation.PrepareConfig)
        with io_utils.workdir_lock(config.workdir):
            dataset, timings = preparation.prepare(config)
    except OSError as e:  # e.g. a full disk: the file, else the workdir
        print(f"wsnn.prepare: error: {io_utils.os_error_line(e, FLAGS.workdir)}", file=sys.stderr)
        return 2
    except (ValueError, io_utils.WorkdirBusy, wordnet_lib.WordNetUnavailable) as e:
        print(f"wsnn.prepare: error: {e}", file=sys.stderr)
        return 2
    scores = preparation.baseline_scores(dataset, config.seed) if dataset.labels is not None else {}
    print(preparation.format_report(dataset, timings, scores))
    print(f"Prepared dataset: {os.path.join(config.workdir, 'prepared')} "
          f"(content hash {dataset.info['content_hash'][:16]})")
    return 0


def run():
    """Console-script entry point."""
    flags_lib.define_flags(preparation.PrepareConfig, "wsnn.prepare")
    app.run(main)


if __name__ == "__main__":
    run()
