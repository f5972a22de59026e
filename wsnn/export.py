"""Export a task's latest checkpoint as a SavedModel: `python -m wsnn.export`.

    python -m wsnn.export --workdir=runs/fashion_tags/refinement --export_dir=exports/fashion_tags

A thin entry point over `wsnn.serving.export_from_checkpoint`: only the
model is built (its shape and vocabulary from the task's model.json, its
weights from the checkpoint), so the starting weights file and the prepared
data need not be where they were. The layout and signatures are
`wsnn.serving`'s.
"""

import sys

from absl import app, flags

from wsnn import tf_start


def main(argv):
    """Exports a task directory's latest checkpoint."""
    del argv
    config = flags.FLAGS
    tf_start.start(log=lambda text: print(text, file=sys.stderr))  # stdout: the export's path
    from wsnn import serving

    try:
        path = serving.export_from_checkpoint(config.workdir, config.export_dir, config.top_k)
    except ValueError as e:
        print(f"wsnn.export: error: {e}", file=sys.stderr)
        return 2
    print(f"Exported {path}")
    return 0


def run():
    """Console-script entry point."""
    flags.DEFINE_string("workdir", None, "A task directory of a training run (e.g. runs/x/refinement).")
    flags.DEFINE_string("export_dir", None, "Where to add the next integer version.")
    flags.DEFINE_integer("top_k", 10, "Tags returned by the signatures' top_k outputs.")
    flags.mark_flags_as_required(["workdir", "export_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
