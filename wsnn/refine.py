"""Deprecated: the old name of `wsnn.blend`; `python -m wsnn.refine ...` and `wsnn-refine` still run it.

The command was renamed because "refinement" is the paper's name for the
training task (refining the training images' own tags); this one blends a new
collection's user tags with an exported tagger's predictions. Same flags and
outputs; stderr starts with a deprecation warning, and an error line starts
"wsnn.blend:". Kept so that existing scripts keep working; use `wsnn.blend`.
"""

import sys

from wsnn import blend


def run():
    """Console-script entry point: `wsnn.blend.run` after a deprecation warning on stderr."""
    print("wsnn.refine: warning: deprecated, the old name of wsnn.blend; run python -m wsnn.blend "
          "(wsnn-blend) instead", file=sys.stderr)
    blend.run()


if __name__ == "__main__":
    run()
