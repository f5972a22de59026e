"""A task directory's layout: the one place that names the files in `<workdir>/<task>/`.

    layout = TaskLayout.of(workdir, "refinement")
    layout.metrics            # <workdir>/refinement/metrics.json
    layout.finished()         # metrics.json is written last

Files (written atomically, the chief only): metrics.json (written last: its
presence means the task is finished), refined_tags.npz and refined_tags.tsv
(`wsnn.refined_tags`), evaluated_tag_probs.npz (the split and the evaluated
images' tag probabilities), history.json, stage1_metrics.json,
candidates.npy, phi0_features.npz (--save_stage1_features),
neighbour_snapshots.json, head_init.json (the linear probe that started
stage 1's head), model.json (the model's shape and vocabulary, for
re-exporting), data_identity.json, config.json, flags.txt,
prepare_config.json; directories checkpoints/, best/ (the best epoch's
weights), phi0/ (phi_0's weights, for --warm_start_from) and
export/<version>/. Other modules take paths from a `TaskLayout`, never
spell these names.
"""

import dataclasses
import os

METRICS = "metrics.json"
HISTORY = "history.json"
STAGE1_METRICS = "stage1_metrics.json"
CANDIDATES = "candidates.npy"
PHI0_FEATURES = "phi0_features.npz"
SNAPSHOTS = "neighbour_snapshots.json"
EVALUATED = "evaluated_tag_probs.npz"
HEAD_INIT = "head_init.json"
MODEL_FACTS = "model.json"
IDENTITY = "data_identity.json"
CONFIG = "config.json"
FLAGS = "flags.txt"
PREPARE_CONFIG = "prepare_config.json"
REFINED_NPZ = "refined_tags.npz"
REFINED_TSV = "refined_tags.tsv"
CHECKPOINTS = "checkpoints"
BEST = "best"
PHI0_WEIGHTS = "phi0"
EXPORT = "export"


@dataclasses.dataclass(frozen=True)
class TaskLayout:
    """The paths of one task directory.

    Attributes:
      dir: the task directory (`<workdir>/<task>`; a worker other than the
        chief writes into a scratch directory of the same layout).
    """

    dir: str

    @classmethod
    def of(cls, workdir, task):
        """The layout of task `task` ("annotation" or "refinement") of a run in `workdir`."""
        return cls(os.path.join(workdir, task))

    def path(self, name):
        """`name` (one of this module's names) inside the task directory."""
        return os.path.join(self.dir, name)

    def finished(self):
        """Whether the task has finished (metrics.json is written last)."""
        return os.path.isfile(self.metrics)

    def export_dir(self, export_root=""):
        """Where the task's SavedModel versions go: `<export_root>/<task>` (--export_dir), else the
        task directory's export/."""
        if export_root:
            return os.path.join(export_root, os.path.basename(os.path.normpath(self.dir)))
        return self.path(EXPORT)

    metrics = property(lambda self: self.path(METRICS))
    history = property(lambda self: self.path(HISTORY))
    stage1_metrics = property(lambda self: self.path(STAGE1_METRICS))
    candidates = property(lambda self: self.path(CANDIDATES))
    phi0_features = property(lambda self: self.path(PHI0_FEATURES))
    snapshots = property(lambda self: self.path(SNAPSHOTS))
    evaluated = property(lambda self: self.path(EVALUATED))
    head_init = property(lambda self: self.path(HEAD_INIT))
    model_facts = property(lambda self: self.path(MODEL_FACTS))
    identity = property(lambda self: self.path(IDENTITY))
    config = property(lambda self: self.path(CONFIG))
    flags = property(lambda self: self.path(FLAGS))
    prepare_config = property(lambda self: self.path(PREPARE_CONFIG))
    refined_npz = property(lambda self: self.path(REFINED_NPZ))
    refined_tsv = property(lambda self: self.path(REFINED_TSV))
    checkpoints = property(lambda self: self.path(CHECKPOINTS))
    best = property(lambda self: self.path(BEST))
    phi0_weights = property(lambda self: self.path(PHI0_WEIGHTS))
