"""The old name of `wsnn.blend`: `python -m wsnn.refine ...` and `wsnn-refine` run it.

The command was renamed because "refinement" is the paper's name for the
training task (refining the training images' own tags); this one blends a new
collection's user tags with an exported tagger's predictions. Same flags and
outputs; stderr has a note first, and an error line starts "wsnn.blend:".
"""

import sys

from wsnn import blend


def run():
    """Console-script entry point: `wsnn.blend.run` after a note on stderr."""
    print("wsnn.refine: note: this is the old name of wsnn.blend (python -m wsnn.blend, wsnn-blend)",
          file=sys.stderr)
    blend.run()


if __name__ == "__main__":
    run()
