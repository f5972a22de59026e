"""Frozen configs, and absl flags made from them at the command-line edge.

Each config is a frozen dataclass whose fields carry their help text; the
entry points define one flag per field (`define_flags`) and turn the parsed
flags into a config once (`from_flags`). Library code receives the config and
never reads flags.
"""

import dataclasses
import os

from absl import flags


def field(default, help_text):
    """A dataclass field with its flag help."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def define_flags(cls, skip=(), flag_values=flags.FLAGS):
    """Defines one absl flag per field of dataclass `cls` (except `skip`)."""
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in flag_values:
            continue
        help_text = f.metadata.get("help", f.name)
        if f.type in (bool, "bool"):
            flags.DEFINE_bool(f.name, f.default, help_text, flag_values=flag_values)
        elif f.type in (int, "int"):
            flags.DEFINE_integer(f.name, f.default, help_text, flag_values=flag_values)
        elif f.type in (float, "float"):
            flags.DEFINE_float(f.name, f.default, help_text, flag_values=flag_values)
        elif f.type in (str, "str"):
            flags.DEFINE_string(f.name, f.default, help_text, flag_values=flag_values)


def from_flags(cls, flag_values=flags.FLAGS, **overrides):
    """Builds `cls` from parsed flags; `overrides` win over flags."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif f.name in flag_values:
            values[f.name] = flag_values[f.name].value
    return cls(**values)


def write_config(config, directory, flag_values=None):
    """Records the resolved config (config.json) and flags (flags.txt) in `directory`."""
    from wsnn import io_utils

    io_utils.write_json(os.path.join(directory, "config.json"), dataclasses.asdict(config))
    if flag_values is not None:
        io_utils.write_text(os.path.join(directory, "flags.txt"), flag_values.flags_into_string())


TASKS = ("annotation", "refinement", "both")
BACKBONES = ("small_cnn", "vgg16")
MEASURES = ("lin", "jcn", "res")
NEIGHBOUR_MODES = ("exact", "fast")
STRATEGIES = ("mirrored", "multi_worker")
MAX_LEARNING_RATE = 10.0
USER_ERRORS = ("l1", "bce")
STAGE2_OBJECTIVES = ("ours", "multi_cnn")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (the paper's Algorithm 2); one flag per field.

    Durations: epochs are given by the user and turned into steps once. A
    stage-1 epoch is ceil(N / s) steps (every training image once); a stage-2
    epoch is ceil(N / (s / m)) steps, so that every training image is an
    anchor once (Algorithm 1), i.e. m times as many images as a stage-1 epoch.

    Model selection: with labels and `validation_fraction` > 0, a validation
    split of the training images (see `train_lib.split`) scores every epoch;
    each stage keeps its best epoch by validation mAP (stage 2 may keep
    none of its epochs: phi_0 itself) and stops after `patience` epochs
    without a better one.
    """

    workdir: str = field("runs/fashion_tags", "Experiment directory: prepared data, checkpoints, "
                                               "tensorboard, outputs.")
    task: str = field("both", "annotation (train on a seeded 1/5, predict the other 4/5), refinement "
                              "(train on all images, refine their tags) or both.")
    seed: int = field(0, "Seed of the split, data order and initialisation.")
    train_fraction: float = field(0.2, "Annotation protocol: fraction of images used for training.")
    backbone: str = field("small_cnn", f"Network: {', '.join(BACKBONES)}.")
    weights: str = field("none", "Backbone start: none (random), imagenet (vgg16; downloads: online "
                                 "only), or a local file: Keras' VGG16 notop .h5 for vgg16, or the "
                                 ".npz of `python -m wsnn.pretrain` for small_cnn.")
    image_size: int = field(0, "Input size S (S x S); 0: the dataset's own size (embedded images).")
    channels: int = field(0, "Input channels (1 or 3); 0: the dataset's own.")
    stage1_epochs: int = field(30, "Epochs of stage 1 (phi_0, the Multi-CNN baseline).")
    stage2_epochs: int = field(30, "Epochs of stage 2 (the three constraints).")
    batch_size: int = field(64, "s, images per step.")
    group_size: int = field(8, "m, an anchor plus its m-1 selected neighbours.")
    num_candidates: int = field(512, "M, neighbour candidates per image (capped below N).")
    learning_rate: float = field(0.001, "SGD learning rate at the start of each stage.")
    stage2_learning_rate: float = field(0.0, "Stage-2 learning rate at its start; 0: --learning_rate.")
    lr_decay_epochs: int = field(10, "Divide the learning rate by 1/lr_decay_factor every this many epochs.")
    lr_decay_factor: float = field(0.1, "Learning-rate decay factor.")
    momentum: float = field(0.9, "SGD momentum.")
    lambda_vis: float = field(1.0, "Weight of L_vis (1 in eq. 1; 0 only for ablations).")
    lambda1: float = field(1.0, "Weight of L_sem (eq. 1).")
    lambda2: float = field(1.0, "Weight of L_err (eq. 1).")
    user_error: str = field("l1", "L_err: l1 (eq. 9, the paper's) or bce (a variant: the logistic loss "
                                  "of stage 1 as the data term).")
    stage2_objective: str = field("ours", "ours (L_final on Algorithm 1 batches) or multi_cnn (stage 1's "
                                          "logistic loss on shuffled batches for the same number of "
                                          "steps: the 'Multi-CNN, same budget' baseline).")
    validation_fraction: float = field(0.1, "Share of the training images whose labels select each "
                                            "stage's best epoch (annotation: held out of training; "
                                            "refinement: trained on, left out of the reported "
                                            "metrics). 0, or a dataset without labels: no selection.")
    patience: int = field(3, "Stop a stage after this many epochs without a better validation mAP "
                             "(0: run every epoch); the best epoch is kept either way.")
    candidate_dims: int = field(0, "Search the M candidates in the first this many principal components of "
                                   "phi_0's features (0: the full features); cuts the search cost by "
                                   "dims/d at large N (tools/bench_search.py measures its recall).")
    neighbour_mode: str = field("exact", "Stage-2 neighbours: exact (Algorithm 1: embed every anchor's M "
                                         "candidates each step) or fast (rank them against an embedding "
                                         "bank; see wsnn.neighbours).")
    shortlist: int = field(0, "Fast mode: candidates per anchor embedded anew after ranking against the "
                              "bank (0: the bank alone; else m-1 <= k, capped at M).")
    bank_refresh_steps: int = field(0, "Fast mode: embed every training image into the bank again every "
                                       "this many stage-2 steps (0: once per epoch), and when stage 2 "
                                       "starts or resumes.")
    bank_extrapolation: float = field(0.5, "Fast mode: read each bank row as row + c * age * drift, the "
                                           "drift per step from the last two refreshes (0: as stored).")
    alpha: float = field(1.0, "Weight of the WordNet distance in the tag similarity (eq. 4).")
    similarity_measure: str = field("lin", f"WordNet IC similarity: {', '.join(MEASURES)}.")
    ic_file: str = field("", "NLTK information-content file; default: WordNet's SemCor counts.")
    stop_gradient_through_similarity: bool = field(True, "L_vis: no gradient through gamma.")
    num_devices: int = field(0, "Replicas: 0 = all GPUs (else the CPU); n > 0 = n devices "
                                "(logical CPU devices when there is no GPU).")
    strategy: str = field("mirrored", "mirrored (one process: all GPUs or --num_devices) or multi_worker "
                                      "(MultiWorkerMirroredStrategy over the cluster in TF_CONFIG; every "
                                      "worker runs the same command on a shared workdir).")
    checkpoint_every_steps: int = field(200, "Checkpoint every this many steps (and at epoch ends).")
    log_every_steps: int = field(20, "Progress line and scalar summaries every this many steps.")
    image_summary_every_steps: int = field(200, "Anchor-and-neighbours image every this many stage-2 steps.")
    eval_max_images: int = field(5000, "Per-epoch metrics of the evaluated images (monitoring only; "
                                       "never used for selection) on at most this many images; 0: none.")
    refined_top_k: int = field(10, "Refined tags listed per image in refined_tags.tsv.")
    export_dir: str = field("", "Export the trained tagger as a SavedModel here (a new integer "
                                "version); default <workdir>/<task>/export.")
    export_top_k: int = field(10, "Tags in the exported signatures' top_k outputs.")
    warm_start_from: str = field("", "Start stage 2 from the phi_0 of another run's workdir (same data, "
                                     "split and seed) instead of training stage 1; this run's own "
                                     "checkpoint still wins.")
    overwrite: bool = field(False, "Start fresh: remove this run's task directories (checkpoints, "
                                   "outputs) and TensorBoard logs first; the prepared data and "
                                   "export versions elsewhere stay.")
    save_stage1_features: bool = field(False, "Save phi_0's features of the training and evaluation "
                                              "images and its evaluation tag probabilities "
                                              "(phi0_features.npz) for the benchmark's baselines.")

    def __post_init__(self):
        def fail(flag, why):
            raise ValueError(f"--{flag}={getattr(self, flag)}: {why}")
        if self.task not in TASKS:
            fail("task", f"must be one of {', '.join(TASKS)}")
        if self.backbone not in BACKBONES:
            fail("backbone", f"must be one of {', '.join(BACKBONES)}")
        if self.neighbour_mode not in NEIGHBOUR_MODES:
            fail("neighbour_mode", f"must be one of {', '.join(NEIGHBOUR_MODES)}")
        if self.shortlist and (self.neighbour_mode != "fast" or self.shortlist < self.group_size - 1):
            fail("shortlist", f"needs --neighbour_mode=fast and >= group_size - 1 = {self.group_size - 1} (or 0)")
        if self.candidate_dims < 0:
            fail("candidate_dims", "must be >= 0")
        if not self.bank_extrapolation >= 0:
            fail("bank_extrapolation", "must be >= 0")
        if self.bank_refresh_steps < 0:
            fail("bank_refresh_steps", "must be >= 0")
        if self.user_error not in USER_ERRORS:
            fail("user_error", f"must be one of {', '.join(USER_ERRORS)}")
        if self.stage2_objective not in STAGE2_OBJECTIVES:
            fail("stage2_objective", f"must be one of {', '.join(STAGE2_OBJECTIVES)}")
        if not 0 <= self.validation_fraction < 1:
            fail("validation_fraction", "must be in [0, 1)")
        if self.patience < 0:
            fail("patience", "must be >= 0")
        if self.similarity_measure not in MEASURES:
            fail("similarity_measure", f"must be one of {', '.join(MEASURES)}")
        if not 0 < self.train_fraction < 1:
            fail("train_fraction", "must be in (0, 1)")
        if self.channels not in (0, 1, 3):
            fail("channels", "must be 0, 1 or 3")
        if self.image_size < 0:
            fail("image_size", "must be >= 0")
        for name in ("stage1_epochs", "stage2_epochs"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        for name in ("batch_size", "lr_decay_epochs", "checkpoint_every_steps", "log_every_steps",
                     "image_summary_every_steps", "refined_top_k", "export_top_k"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1")
        if self.eval_max_images < 0:
            fail("eval_max_images", "must be >= 0")
        if self.group_size < 2:
            fail("group_size", "must be >= 2 (an anchor and at least one neighbour)")
        if self.batch_size % self.group_size:
            fail("batch_size", f"must be a multiple of --group_size={self.group_size}")
        if self.group_size >= self.num_candidates:
            fail("group_size", f"must be smaller than --num_candidates={self.num_candidates} (m < M)")
        for name in ("stage2_learning_rate", "lambda_vis", "lambda1", "lambda2", "alpha", "lr_decay_factor",
                     "momentum"):
            if not getattr(self, name) >= 0:
                fail(name, "must be >= 0")
        # A rate of 0 trains nothing; above MAX_LEARNING_RATE SGD diverges at once (the NaN stop
        # would end the run after the first step anyway).
        if not 0 < self.learning_rate <= MAX_LEARNING_RATE:
            fail("learning_rate", f"must be in (0, {MAX_LEARNING_RATE:g}]")
        if self.stage2_learning_rate > MAX_LEARNING_RATE:
            fail("stage2_learning_rate", f"must be 0 (= --learning_rate) or in (0, {MAX_LEARNING_RATE:g}]")
        if self.num_devices < 0:
            fail("num_devices", "must be >= 0")
        if self.strategy not in STRATEGIES:
            fail("strategy", f"must be one of {', '.join(STRATEGIES)}")
        if self.strategy == "multi_worker" and self.num_devices:
            fail("num_devices", "must be 0 with --strategy=multi_worker (each worker uses all its GPUs, "
                                "or its CPU)")
        if self.weights not in ("none", "imagenet") and not os.path.isfile(self.weights):
            fail("weights", "file not found (vgg16: Keras' VGG16 notop .h5, or imagenet when online; "
                            "small_cnn: the .npz that `python -m wsnn.pretrain --out=PATH` writes; or none)")
        if self.backbone == "small_cnn" and self.weights == "imagenet":
            fail("weights", "small_cnn has no ImageNet weights; give a `wsnn.pretrain` .npz or none")
        if self.ic_file and not os.path.isfile(self.ic_file):
            fail("ic_file", "file not found")
