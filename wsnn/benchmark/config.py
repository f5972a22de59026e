"""The benchmark's settings: its own (`BenchmarkConfig`) and the command's config tree (`BenchmarkRun`).

Every field carries its help, `choices`, `bounds` or `listed` rule (see
`wsnn.config.field`) and is checked generically when the config is built;
only the rules that span fields are written here. `BenchmarkRun` is the
training command's tree (`wsnn.train.TrainRun`: one `runtime` group, the
preparation's workdir and seed shared with it) plus `benchmark`.
"""

import dataclasses

from wsnn import config as config_lib
from wsnn import metrics
from wsnn.config import field
from wsnn.data import preparation

_COUNT = "[1, inf)"
_WEIGHTS = "[0, inf)"


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What the benchmark runs besides the training flags."""

    seeds: int = field(5, "Repeats (seeds 0..n-1): split, initialisation and data order.", bounds=_COUNT)
    convention: str = field("wsnn", "Metric and neighbour conventions: wsnn (AP ties as one threshold, labels "
                                    "without positives left out of mAP, Euclidean neighbours) or jingwei (Li et "
                                    "al.'s benchmark: ties ranked by position, AP 0 for labels without "
                                    "positives, cosine neighbours). Applies to every row.",
                            choices=tuple(metrics.CONVENTIONS))
    knn_k: int = field(50, "KNN: neighbours voting.", bounds=_COUNT)
    tagvote_k: int = field(1000, "TagVote: neighbours voting (Li et al.'s benchmark: 1000).", bounds=_COUNT)
    rpca_lam: float = field(0.3, "RPCA: weight of the sparse error (1/sqrt(max(N, C)) empties A on sparse "
                                 "tag matrices; see BUILD_NOTES.md).", bounds="(0, inf)")
    rpca_max_iter: int = field(50, "RPCA: proximal-gradient iterations (jingwei's benchmark: 50).",
                               bounds=_COUNT)
    tagprop_k: int = field(200, "TagProp: neighbours weighted.", bounds=_COUNT)
    cca_dims: int = field(0, "CCA: dimensions of the common space (0: all, min(feature width, tags)).",
                          bounds="[0, inf)")
    nmf_rank: int = field(16, "NMF: rank of the tag-matrix decomposition.", bounds=_COUNT)
    tagexample_positives: int = field(500, "TagExample: top-voted positive examples kept per tag.",
                                      bounds=_COUNT)
    grid_search: bool = field(False, "Search lambda1, lambda2, alpha and the stage-2 learning rate on the "
                                     "first seed's validation split (coarse to fine).")
    grid_lambda1: str = field("0,1e-4,1e-3,1e-2,1e-1,1", "lambda1 values of the grid.", bounds=_WEIGHTS,
                              listed=True)
    grid_lambda2: str = field("0,1e-4,1e-3,1e-2,1e-1,1", "lambda2 values of the grid.", bounds=_WEIGHTS,
                              listed=True)
    grid_alpha: str = field("0,1,3", "alpha values of the grid.", bounds=_WEIGHTS, listed=True)
    grid_learning_rate: str = field("", "Stage-2 learning rates of the grid (default: the config's).",
                                    bounds=_WEIGHTS, listed=True)
    grid_user_error: str = field("l1,bce", "One search per L_err: l1 (the paper's; row Ours) and bce (a "
                                           "variant; row Ours (bce)).", choices=config_lib.USER_ERRORS,
                                 listed=True)
    grid_stage2_epochs: int = field(1, "Stage-2 epochs of each trial (its best epoch, zero included, "
                                       "scores it).", bounds=_COUNT)
    ablation: bool = field(False, "Train with each constraint alone (first seed).")
    baselines_only: bool = field(False, "Train no network: only the rows that need none (RandomGuess, "
                                        "UserTags, KNN, TagVote, TagCooccur, RPCA, CCA, NMF, TagProp, "
                                        "TagFeature, TagExample, Linear probe), on the pretrained features "
                                        "(needs --weights), on the trainer's splits.")

    def __post_init__(self):
        config_lib.check_fields(self)
        if self.baselines_only and (self.grid_search or self.ablation):
            raise ValueError("--baselines_only trains no network, so it cannot run with --grid_search or "
                             "--ablation")


@dataclasses.dataclass(frozen=True)
class BenchmarkRun:
    """The benchmark command's config tree: the training runs' config, the data preparation and the
    benchmark's own settings."""

    train: config_lib.TrainConfig = dataclasses.field(default_factory=config_lib.TrainConfig)
    prepare: preparation.PrepareConfig = dataclasses.field(default_factory=preparation.PrepareConfig)
    benchmark: BenchmarkConfig = dataclasses.field(default_factory=BenchmarkConfig)

    def __post_init__(self):
        if self.benchmark.grid_search and self.train.runtime.strategy == "multi_worker":
            raise ValueError("--grid_search chooses each next trial from the chief's scores, so it cannot run "
                             "with --strategy=multi_worker")


def floats(text):
    """The numbers of a `listed` field's text."""
    return [float(v) for v in config_lib.items(text)]
