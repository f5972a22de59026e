"""Export a task's latest checkpoint as a SavedModel: `python -m wsnn.export`.

    python -m wsnn.export --workdir=runs/fashion_tags/refinement --export_dir=exports/fashion_tags

A thin entry point over `wsnn.serving.export_from_checkpoint`: only the
model is built (its shape and vocabulary from the task's model.json, its
weights from the checkpoint), so the starting weights file and the prepared
data need not be where they were. The layout, versions, lock and signatures
are `wsnn.serving`'s.

Exit status: 0 exported (stdout: "Exported <path>"); 2 a bad flag (checked
before TensorFlow loads) or task directory (no or a damaged model.json or
data_identity.json, no checkpoint); 1 the export could not be written (a
full disk, a read-only directory). Errors are one line naming the path.
"""

import sys

from absl import app, flags

from wsnn import checks, tf_start


def export_task(workdir, export_dir, top_k):
    """Exports a task directory's latest checkpoint; prints the result or one error line.

    Returns:
      The exit status: 0 exported, 1 the export could not be written (a full
      disk, a read-only directory), 2 a bad option or task directory.
    """
    try:
        checks.at_least_one(top_k=top_k)  # before TensorFlow loads and anything is traced
    except ValueError as e:
        print(f"wsnn.export: error: {e}", file=sys.stderr)
        return 2
    tf_start.start(log=lambda text: print(text, file=sys.stderr))  # stdout: the export's path
    from wsnn import serving

    try:
        path = serving.export_from_checkpoint(workdir, export_dir, top_k)
    except ValueError as e:
        print(f"wsnn.export: error: {e}", file=sys.stderr)
        return 2
    except serving.ExportError as e:
        print(f"wsnn.export: error: {e}", file=sys.stderr)
        return 1
    print(f"Exported {path}")
    return 0


def main(argv):
    """Exports a task directory's latest checkpoint."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = flags.FLAGS
    return export_task(config.workdir, config.export_dir, config.top_k)


def run():
    """Console-script entry point."""
    flags.DEFINE_string("workdir", None, "A task directory of a training run (e.g. runs/x/refinement).")
    flags.DEFINE_string("export_dir", None, "Where to add the next integer version.")
    flags.DEFINE_integer("top_k", 10, "Tags returned by the signatures' top_k outputs.")
    flags.mark_flags_as_required(["workdir", "export_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
