"""Frozen configs: what a run does, validated before any work starts.

A training run's config (`TrainConfig`) is a tree of small frozen dataclasses,
one per concern: `data` (protocol and input), `model`, `schedule`, `loss`,
`neighbours` (Algorithm 1), `semantics` (the tag similarity xi), `runtime`
and `output`. Every leaf field carries its help text and, where it has one,
its allowed values (`choices`) or range (`bounds`); a group checks its own
fields generically when it is built, and `TrainConfig` checks what spans
groups. Validation is pure: nothing here touches the file system (the entry
points check files with `check_files`).

Leaf names are unique across groups, so a leaf is also a flat name: the
command-line flags are those names (`wsnn.flags_lib`), `TrainConfig.make`
and `replace` take them, and `flat` gives them back. A command's config is a
tree of such configs (the train command's: `TrainConfig` and the data
preparation; the benchmark's adds `BenchmarkConfig`), walked generically
(`leaves`, `flag_leaves`, `build`); a leaf name used twice in one tree is an
error, unless one of the two is `shared` (the preparation's workdir and seed
are the run's). Library code receives the config and never reads flags.
"""

import dataclasses
import math
import os

from wsnn import checks


def field(default, help_text, choices=None, bounds=None, listed=False, shared=False):
    """A dataclass field with its flag help.

    Args:
      default: the default value.
      help_text: the flag's help.
      choices: the allowed values, or None.
      bounds: the allowed range as interval text, e.g. "[0, 1)", "(0, 10]",
        "[1, inf)"; None: any.
      listed: the value is text, a comma-separated list whose every item
        (a number where `bounds` is given) obeys `choices` and `bounds`; it
        may be empty only where the default is.
      shared: in a config tree that has another leaf of this name, this
        leaf takes that leaf's value and has no flag of its own (e.g.
        `PrepareConfig.workdir` is the run's `runtime.workdir`).
    """
    metadata = {"help": help_text, "choices": tuple(choices) if choices else None, "bounds": bounds,
                "listed": listed, "shared": shared}
    return dataclasses.field(default=default, metadata=metadata)


def items(text):
    """The items of a `listed` field's comma-separated text (blanks dropped)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def leaves(cls, path=()):
    """(group path, field) of every leaf of config tree `cls`, in field order: a field whose type is a
    dataclass is a group, walked in turn."""
    found = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            found += leaves(f.type, path + (f.name,))
        else:
            found.append((path, f))
    return found


def flag_leaves(cls):
    """The leaves of config tree `cls` that are flags: all but the `shared` ones that another leaf of
    their name stands for.

    Raises:
      ValueError: two leaves of one name, neither of them shared.
    """
    found, seen = [], {}
    every = leaves(cls)
    owned = {f.name for _, f in every if not f.metadata.get("shared")}
    for path, f in every:
        if f.metadata.get("shared") and f.name in owned:
            continue
        if f.name in seen:
            raise ValueError(f"{cls.__name__}: leaf name {f.name!r} in both {'.'.join(seen[f.name]) or 'top'} "
                             f"and {'.'.join(path) or 'top'}; leaf names are flag names and must be unique")
        seen[f.name] = path
        found.append((path, f))
    return found


def build(cls, flat):
    """Config tree `cls` from flat leaf names (a name sets every leaf of that name; a missing one keeps
    its default); each group checks itself as it is built, inner groups first."""
    values = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            values[f.name] = build(f.type, flat)
        elif f.name in flat:
            values[f.name] = flat[f.name]
    return cls(**values)


def check_fields(instance):
    """Checks every field of a dataclass against its `choices` and `bounds`.

    Raises:
      ValueError: "--name=value: must be ..." for the first bad field.
    """
    for f in dataclasses.fields(instance):
        value, choices, bounds = getattr(instance, f.name), f.metadata.get("choices"), f.metadata.get("bounds")
        if f.metadata.get("listed"):
            _check_list(f, value)
        elif choices and value not in choices:
            raise ValueError(f"--{f.name}={value}: must be one of {', '.join(str(c) for c in choices)}")
        elif bounds and not _within(value, bounds):
            raise ValueError(f"--{f.name}={value}: must be {_describe(bounds)}")


def _check_list(f, text):
    """Checks a `listed` field: "--name=text: a comma-separated list of ..." when it fails."""
    choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds")
    values = items(text)
    try:
        values = [float(v) for v in values] if bounds else values
    except ValueError:
        values = []
    good = (bool(values) or not f.default) and all(
        (not choices or v in choices) and (not bounds or _within(v, bounds)) for v in values)
    if not good or (text and not values):
        kind = ", ".join(choices) if choices else f"numbers {_describe(bounds)}" if bounds else "values"
        raise ValueError(f"--{f.name}={text}: a comma-separated list of {kind}")


def _interval(bounds):
    low, high = (float(x) for x in bounds[1:-1].split(","))
    return bounds[0] == "[", low, high, bounds[-1] == "]"


def _within(value, bounds):
    closed_low, low, high, closed_high = _interval(bounds)
    if isinstance(value, float) and math.isnan(value):
        return False
    return (value >= low if closed_low else value > low) and (value <= high if closed_high else value < high)


def _describe(bounds):
    closed_low, low, high, _ = _interval(bounds)
    if math.isinf(high):
        return f"{'>=' if closed_low else '>'} {low:g}"
    return f"in {bounds[0]}{low:g}, {high:g}{bounds[-1]}"


TASKS = ("annotation", "refinement", "both")
BACKBONES = ("small_cnn", "vgg16")
MEASURES = ("lin", "jcn", "res")
NEIGHBOUR_MODES = ("exact", "fast")
CANDIDATE_SEARCHES = ("exact", "pca", "ivf")  # wsnn.search.CANDIDATE_SEARCHES
STRATEGIES = ("mirrored", "multi_worker")
MAX_LEARNING_RATE = 10.0
USER_ERRORS = ("l1", "bce")
STAGE2_OBJECTIVES = ("ours", "multi_cnn")
LR_SCHEDULES = ("staircase", "cosine")
HEAD_INITS = ("linear_probe", "random")
BATCH_NORMS = ("train", "frozen")


class _Group:
    """A config group: its fields check themselves when it is built."""

    def __post_init__(self):
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Group):
    """The protocol (which images train, select and are evaluated) and the input size."""

    task: str = field("both", "annotation (train on a seeded 1/5, predict the other 4/5), refinement "
                              "(train on all images, refine their tags) or both.", choices=TASKS)
    train_fraction: float = field(0.2, "Annotation protocol: fraction of images used for training.",
                                  bounds="(0, 1)")
    validation_fraction: float = field(0.1, "Share of the training images whose labels select each "
                                            "stage's best epoch (annotation: held out of training; "
                                            "refinement: trained on, left out of the reported "
                                            "metrics). 0, or a dataset without labels: no selection.",
                                       bounds="[0, 1)")
    image_size: int = field(0, "Input size S (S x S); 0: the dataset's own size (embedded images). "
                               "small_cnn needs S >= 4, vgg16 S >= 32.", bounds="[0, 4096]")
    channels: int = field(0, "Input channels (1 or 3); 0: the dataset's own.", choices=(0, 1, 3))


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Group):
    """The network and its starting weights."""

    backbone: str = field("small_cnn", "Network.", choices=BACKBONES)
    weights: str = field("none", "Backbone start: none (random), imagenet (vgg16; downloads: online "
                                 "only), or a local file: Keras' VGG16 notop .h5 for vgg16, or the "
                                 ".npz of `python -m wsnn.pretrain` for small_cnn.")
    head_init: str = field("linear_probe", "Stage 1's tag head: linear_probe (a per-tag logistic regression "
                                           "on the starting backbone's frozen features, its L2 strength "
                                           "chosen on validation mAP; then the whole network fine-tunes) "
                                           "or random.", choices=HEAD_INITS)
    batch_norm: str = field("train", "Batch norm: train (batch statistics in training steps, moving "
                                     "averages updated) or frozen (inference mode with the starting "
                                     "weights' statistics and scale, the Keras transfer-learning recipe).",
                            choices=BATCH_NORMS)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(_Group):
    """How long and how fast each stage trains, and how its best epoch is kept.

    Durations are steps inside the trainer; the user gives epochs or, for
    stage 1, steps. A stage-1 epoch is ceil(N / s) steps (every training
    image once); a stage-2 epoch is ceil(N / (s / m)) steps, so that every
    training image is an anchor once (Algorithm 1), i.e. m times as many
    images as a stage-1 epoch. Stage 1 is scored on the validation split
    every `validate_every_steps` steps (default: every epoch); its patience
    counts those checks.
    """

    stage1_epochs: int = field(30, "Epochs of stage 1 (phi_0, the Multi-CNN baseline).", bounds="[0, inf)")
    stage1_steps: int = field(0, "Stage-1 length in steps (0: --stage1_epochs epochs); rounded up to whole "
                                 "validation checks.", bounds="[0, inf)")
    validate_every_steps: int = field(0, "Stage 1: score the validation split (and keep the best weights) "
                                         "every this many steps; 0: every epoch.", bounds="[0, inf)")
    lr_schedule: str = field("staircase", "staircase (the paper's: divide by 1/lr_decay_factor every "
                                          "lr_decay_epochs epochs) or cosine (linear warm-up over "
                                          "--warmup_steps, then a half cosine to 0 at the end of the "
                                          "stage's steps).", choices=LR_SCHEDULES)
    warmup_steps: int = field(0, "cosine: warm-up steps at the start of stage 1 (stage 2 starts from the "
                                 "trained phi_0 at its full rate).", bounds="[0, inf)")
    min_steps: int = field(0, "A stage never stops on patience before this many of its steps.",
                           bounds="[0, inf)")
    stage2_epochs: int = field(30, "Epochs of stage 2 (the three constraints).", bounds="[0, inf)")
    batch_size: int = field(64, "s, images per step.", bounds="[1, inf)")
    learning_rate: float = field(0.001, "SGD learning rate at the start of each stage.",
                                 bounds=f"(0, {MAX_LEARNING_RATE:g}]")
    stage2_learning_rate: float = field(0.0, "Stage-2 learning rate at its start; 0: --learning_rate.",
                                        bounds=f"[0, {MAX_LEARNING_RATE:g}]")
    lr_decay_epochs: int = field(10, "Divide the learning rate by 1/lr_decay_factor every this many epochs.",
                                 bounds="[1, inf)")
    lr_decay_factor: float = field(0.1, "Learning-rate decay factor.", bounds="[0, inf)")
    momentum: float = field(0.9, "SGD momentum.", bounds="[0, inf)")
    patience: int = field(3, "Stop a stage after this many validation checks (stage 1) or epochs (stage "
                             "2) without a better validation mAP (0: run them all); the best is kept "
                             "either way.", bounds="[0, inf)")
    stage2_objective: str = field("ours", "ours (L_final on Algorithm 1 batches) or multi_cnn (stage 1's "
                                          "logistic loss on shuffled batches for the same number of "
                                          "steps: the 'Multi-CNN, same budget' baseline).",
                                  choices=STAGE2_OBJECTIVES)

    def __post_init__(self):
        super().__post_init__()
        if self.warmup_steps and self.lr_schedule != "cosine":
            raise ValueError(f"--warmup_steps={self.warmup_steps}: needs --lr_schedule=cosine")


@dataclasses.dataclass(frozen=True)
class LossConfig(_Group):
    """L_final = lambda_vis L_vis + lambda1 L_sem + lambda2 L_err (eq. 1)."""

    lambda_vis: float = field(1.0, "Weight of L_vis (1 in eq. 1; 0 only for ablations).", bounds="[0, inf)")
    lambda1: float = field(1.0, "Weight of L_sem (eq. 1).", bounds="[0, inf)")
    lambda2: float = field(1.0, "Weight of L_err (eq. 1).", bounds="[0, inf)")
    user_error: str = field("l1", "L_err: l1 (eq. 9, the paper's) or bce (a variant: the logistic loss "
                                  "of stage 1 as the data term).", choices=USER_ERRORS)
    stop_gradient_through_similarity: bool = field(True, "L_vis: no gradient through gamma.")


@dataclasses.dataclass(frozen=True)
class NeighboursConfig(_Group):
    """Algorithm 1: each anchor's M candidates and its m-1 selected neighbours."""

    group_size: int = field(8, "m, an anchor plus its m-1 selected neighbours.", bounds="[2, inf)")
    num_candidates: int = field(512, "M, neighbour candidates per image (capped below N).", bounds="[1, inf)")
    candidate_search: str = field("exact", "How the M candidates are found among phi_0's features: exact "
                                           "(chunked matrix products; TensorFlow's on a GPU), pca (exact in "
                                           "the first --candidate_dims principal components) or ivf (faiss's "
                                           "inverted-file index, lists and probes from N). "
                                           "tools/bench_search.py measures time and recall.",
                                  choices=CANDIDATE_SEARCHES)
    candidate_dims: int = field(0, "--candidate_search=pca: principal components kept (0: the search is "
                                   "exact); cuts the search cost by dims/d.", bounds="[0, inf)")
    neighbour_mode: str = field("exact", "Stage-2 neighbours: exact (Algorithm 1: embed every anchor's M "
                                         "candidates each step) or fast (rank them against an embedding "
                                         "bank; see wsnn.neighbours).", choices=NEIGHBOUR_MODES)
    shortlist: int = field(0, "Fast mode: candidates per anchor embedded anew after ranking against the "
                              "bank (0: the bank alone; else m-1 <= k, capped at M).", bounds="[0, inf)")
    bank_refresh_steps: int = field(0, "Fast mode: embed every training image into the bank again every "
                                       "this many stage-2 steps (0: once per epoch), and when stage 2 "
                                       "starts or resumes.", bounds="[0, inf)")
    bank_extrapolation: float = field(0.5, "Fast mode: read each bank row as row + c * age * drift, the "
                                           "drift per step from the last two refreshes (0: as stored).",
                                      bounds="[0, inf)")

    def __post_init__(self):
        super().__post_init__()
        if (self.candidate_search == "pca") != bool(self.candidate_dims):
            raise ValueError(f"--candidate_dims={self.candidate_dims}: must be > 0 with --candidate_search=pca, "
                             f"and 0 otherwise (--candidate_search={self.candidate_search})")
        if self.shortlist and (self.neighbour_mode != "fast" or self.shortlist < self.group_size - 1):
            raise ValueError(f"--shortlist={self.shortlist}: needs --neighbour_mode=fast and >= group_size - 1 "
                             f"= {self.group_size - 1} (or 0)")


@dataclasses.dataclass(frozen=True)
class SemanticsConfig(_Group):
    """The tag similarity xi of L_sem (eq. 4)."""

    alpha: float = field(1.0, "Weight of the WordNet distance in the tag similarity (eq. 4).", bounds="[0, inf)")
    similarity_measure: str = field("lin", "WordNet IC similarity.", choices=MEASURES)
    ic_file: str = field("", "NLTK information-content file; default: WordNet's SemCor counts.")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(_Group):
    """Where and how the run executes: workdir, seed, devices, resume, periodic actions."""

    workdir: str = field("runs/fashion_tags", "Experiment directory: prepared data, checkpoints, "
                                               "tensorboard, outputs.")
    seed: int = field(0, "Seed of the split, data order and initialisation.", bounds="[0, 1e9]")
    num_devices: int = field(0, "Replicas: 0 = all GPUs (else the CPU); n > 0 = n devices "
                                "(logical CPU devices when there is no GPU).", bounds="[0, inf)")
    strategy: str = field("mirrored", "mirrored (one process: all GPUs or --num_devices) or multi_worker "
                                      "(MultiWorkerMirroredStrategy over the cluster in TF_CONFIG; every "
                                      "worker runs the same command on a shared workdir).", choices=STRATEGIES)
    warm_start_from: str = field("", "Start stage 2 from the phi_0 of another run's workdir (same data, "
                                     "split and seed) instead of training stage 1; this run's own "
                                     "checkpoint still wins.")
    overwrite: bool = field(False, "Start fresh: remove this run's task directories (checkpoints, "
                                   "outputs) and TensorBoard logs first; the prepared data and "
                                   "export versions elsewhere stay.")
    prefetch_batches: bool = field(True, "Read each step's batch (all that does not depend on the weights) "
                                         "in a background thread while the step before it trains "
                                         "(wsnn.training.inputs); the batches are the same either way.")
    checkpoint_every_steps: int = field(200, "Checkpoint every this many steps (and at epoch ends).",
                                        bounds="[1, inf)")
    log_every_steps: int = field(20, "Progress line and scalar summaries every this many steps.",
                                 bounds="[1, inf)")
    image_summary_every_steps: int = field(200, "Anchor-and-neighbours image every this many stage-2 steps.",
                                           bounds="[1, inf)")
    eval_max_images: int = field(5000, "Per-epoch metrics of the evaluated images (monitoring only; "
                                       "never used for selection) on at most this many images; 0: none.",
                                 bounds="[0, inf)")

    def __post_init__(self):
        super().__post_init__()
        if self.strategy == "multi_worker" and self.num_devices:
            raise ValueError(f"--num_devices={self.num_devices}: must be 0 with --strategy=multi_worker (each "
                             "worker uses all its GPUs, or its CPU)")


@dataclasses.dataclass(frozen=True)
class OutputConfig(_Group):
    """What a finished task writes besides metrics.json."""

    refined_top_k: int = field(10, "Refined tags listed per image in refined_tags.tsv.", bounds="[1, inf)")
    export: bool = field(True, "Export the trained tagger as a SavedModel when the task ends (the "
                               "benchmark's runs, never served, skip it).")
    export_dir: str = field("", "Export the trained tagger as a SavedModel here (a new integer "
                                "version); default <workdir>/<task>/export.")
    export_top_k: int = field(10, "Tags in the exported signatures' top_k outputs.", bounds="[1, inf)")
    save_stage1_features: bool = field(False, "Keep phi_0's features of the training and evaluation "
                                              "images and its evaluation tag probabilities "
                                              "(phi0_features.npz; `TaskResult.phi0`) for the "
                                              "benchmark's baselines.")


GROUPS = {"data": DataConfig, "model": ModelConfig, "schedule": ScheduleConfig, "loss": LossConfig,
          "neighbours": NeighboursConfig, "semantics": SemanticsConfig, "runtime": RuntimeConfig,
          "output": OutputConfig}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (the paper's Algorithm 2): a tree of groups.

    Model selection: with labels and `data.validation_fraction` > 0, a
    validation split of the training images (see `training.state.split`)
    scores every epoch (stage 1: every `schedule.validate_every_steps`
    steps); each stage keeps its best by validation mAP (stage 1 may keep
    the linear-probe start, stage 2 none of its epochs: phi_0 itself) and
    stops after `schedule.patience` checks without a better one.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    neighbours: NeighboursConfig = dataclasses.field(default_factory=NeighboursConfig)
    semantics: SemanticsConfig = dataclasses.field(default_factory=SemanticsConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

    def __post_init__(self):
        checks.batch_shape(self.schedule.batch_size, self.neighbours.group_size, self.neighbours.num_candidates)
        if self.model.backbone == "small_cnn" and self.model.weights == "imagenet":
            raise ValueError("--weights=imagenet: small_cnn has no ImageNet weights; give a `wsnn.pretrain` "
                             ".npz or none")

    @classmethod
    def make(cls, **flat):
        """A config from flat leaf names (the flags' names); unknown names are an error."""
        return cls().replace(**flat)

    def replace(self, **flat):
        """A copy with the leaves named by their flat names changed."""
        unknown = set(flat) - set(LEAVES)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        groups = {}
        for name, value in flat.items():
            groups.setdefault(LEAVES[name], {})[name] = value
        return dataclasses.replace(self, **{g: dataclasses.replace(getattr(self, g), **values)
                                            for g, values in groups.items()})

    def flat(self):
        """{leaf name: value} of every leaf."""
        return {name: getattr(getattr(self, group), name) for name, group in LEAVES.items()}

    @classmethod
    def from_dict(cls, values):
        """A config from `dataclasses.asdict` output (config.json) or from flat names (older files)."""
        flat = {}
        for key, value in values.items():
            flat.update(value if key in GROUPS and isinstance(value, dict) else {key: value})
        if flat.get("candidate_dims") and "candidate_search" not in flat:
            flat["candidate_search"] = "pca"  # before --candidate_search, --candidate_dims alone meant PCA
        return cls.make(**{k: v for k, v in flat.items() if k in LEAVES})


# {leaf name: its group}; leaf names are unique across groups (`flag_leaves` raises otherwise, at import).
LEAVES = {f.name: path[0] for path, f in flag_leaves(TrainConfig)}


def check_files(config):
    """Checks the files a training run reads (not part of validation: a finished run's config stays
    usable, e.g. for re-exporting, after they move).

    Raises:
      ValueError: naming the flag of a missing file.
    """
    weights = config.model.weights
    if weights not in ("none", "imagenet") and not os.path.isfile(weights):
        raise ValueError(f"--weights={weights}: file not found (vgg16: Keras' VGG16 notop .h5, or imagenet "
                         "when online; small_cnn: the .npz that `python -m wsnn.pretrain --out=PATH` writes; "
                         "or none)")
    if config.semantics.ic_file and not os.path.isfile(config.semantics.ic_file):
        raise ValueError(f"--ic_file={config.semantics.ic_file}: file not found")

