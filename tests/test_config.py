"""Tests for wsnn.config (nested frozen configs) and wsnn.flags_lib (their flags)."""

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags

from wsnn import config as config_lib
from wsnn import flags_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flat_names_route_to_their_groups_and_round_trip():
    config = config_lib.TrainConfig.make(stage1_epochs=3, group_size=4, batch_size=16, num_candidates=12,
                                         lambda1=0.5, workdir="w")
    assert (config.schedule.stage1_epochs, config.neighbours.group_size, config.loss.lambda1) == (3, 4, 0.5)
    assert config.runtime.workdir == "w" and config.flat()["num_candidates"] == 12
    changed = config.replace(lambda1=2.0)
    assert changed.loss.lambda1 == 2.0 and config.loss.lambda1 == 0.5 and changed.schedule == config.schedule
    assert config_lib.TrainConfig.from_dict(dataclasses.asdict(config)) == config
    assert config_lib.TrainConfig.from_dict(config.flat()) == config  # config.json of older runs: flat
    # Before --candidate_search, --candidate_dims alone chose the PCA search.
    older = {k: v for k, v in config.flat().items() if k != "candidate_search"}
    older = config_lib.TrainConfig.from_dict(dict(older, candidate_dims=64))
    assert (older.neighbours.candidate_search, older.neighbours.candidate_dims) == ("pca", 64)
    with pytest.raises(ValueError, match="unknown config field"):
        config.replace(lambda3=1.0)


@pytest.mark.parametrize("change, message", [
    (dict(learning_rate=0.0), "--learning_rate=0.0: must be in (0, 10]"),
    (dict(validation_fraction=1.0), "--validation_fraction=1.0: must be in [0, 1)"),
    (dict(train_fraction=0.0), "--train_fraction=0.0: must be in (0, 1)"),
    (dict(batch_size=0), "--batch_size=0: must be >= 1"),
    (dict(momentum=float("nan")), "--momentum=nan: must be >= 0"),
    (dict(channels=2), "--channels=2: must be one of 0, 1, 3"),
    (dict(user_error="l2"), "--user_error=l2: must be one of l1, bce"),
    (dict(group_size=8, num_candidates=8), "--group_size=8: must be smaller than --num_candidates=8 (m < M)"),
    (dict(batch_size=18, group_size=4), "--batch_size=18: must be a multiple of --group_size=4"),
    (dict(backbone="small_cnn", weights="imagenet"), "small_cnn has no ImageNet weights"),
    (dict(candidate_search="hnsw"), "--candidate_search=hnsw: must be one of exact, pca, ivf"),
    (dict(candidate_search="pca"), "--candidate_dims=0: must be > 0 with --candidate_search=pca"),
    (dict(candidate_dims=64), "--candidate_dims=64: must be > 0 with --candidate_search=pca, and 0 otherwise"),
])
def test_bad_values_name_the_flag(change, message):
    with pytest.raises(ValueError) as info:
        config_lib.TrainConfig.make(**change)
    assert message in str(info.value)


def test_files_are_checked_apart_from_validation(tmp_path):
    config = config_lib.TrainConfig.make(backbone="vgg16", weights=str(tmp_path / "gone.h5"))  # valid
    with pytest.raises(ValueError, match="--weights=.*gone.h5: file not found"):
        config_lib.check_files(config)
    (tmp_path / "gone.h5").write_bytes(b"")
    config_lib.check_files(config)


def test_flags_are_defined_per_leaf_and_parsed_into_the_config():
    values = flags.FlagValues()
    flags_lib.define_flags(config_lib.TrainConfig, "train", flag_values=values)
    assert len(values) == len(config_lib.LEAVES)
    values(["prog", "--stage2_epochs=4", "--neighbour_mode=fast", "--shortlist=9"])
    config = flags_lib.from_flags(config_lib.TrainConfig, values, seed=5)
    assert config.schedule.stage2_epochs == 4 and config.neighbours.shortlist == 9 and config.runtime.seed == 5
    modules = values.flags_by_module_dict()
    assert {f.name for f in modules["train.neighbours"]} == {
        f.name for f in dataclasses.fields(config_lib.NeighboursConfig)}
    assert "One of: exact, fast." in values["neighbour_mode"].help


def test_a_field_without_a_flag_type_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Odd:
        sizes: tuple = config_lib.field((1, 2), "Sizes.")

    with pytest.raises(TypeError, match="Odd.sizes: no flag type"):
        flags_lib.define_flags(Odd, "odd", flag_values=flags.FlagValues())


def test_helpfull_lists_the_flags_by_group():
    result = subprocess.run([sys.executable, "-m", "wsnn.train", "--helpfull"], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    groups = [line[:-1] for line in result.stdout.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert [g for g in groups if g.startswith(("train", "prepare"))] == [
        "prepare", "train.data", "train.loss", "train.model", "train.neighbours", "train.output", "train.runtime",
        "train.schedule", "train.semantics"]


def _command_trees():
    from wsnn import train
    from wsnn.benchmark import config as bench_config

    return [train.TrainRun, bench_config.BenchmarkRun]


def test_every_command_tree_has_unique_flat_names_and_shares_one_runtime():
    from wsnn.benchmark import config as bench_config

    for tree in _command_trees():
        values = flags.FlagValues()
        flags_lib.define_flags(tree, flag_values=values)  # raises on a collision
        names = [f.name for _, f in config_lib.flag_leaves(tree)]
        assert len(names) == len(set(names)) == len(values)
        assert values["workdir"].help.startswith("Experiment directory")  # the runtime's, not the preparation's
    values = flags.FlagValues()
    flags_lib.define_flags(bench_config.BenchmarkRun, flag_values=values)
    values(["prog", "--workdir=w", "--seed=3", "--knn_k=7"])
    run = flags_lib.from_flags(bench_config.BenchmarkRun, values)
    assert (run.prepare.workdir, run.prepare.seed) == (run.train.runtime.workdir, run.train.runtime.seed) == ("w", 3)
    assert run.benchmark.knn_k == 7
    assert {m: sorted(f.name for f in fs) for m, fs in values.flags_by_module_dict().items()}["benchmark"] == sorted(
        f.name for f in dataclasses.fields(bench_config.BenchmarkConfig))
    with pytest.raises(ValueError, match="--grid_search .* --strategy=multi_worker"):
        bench_config.BenchmarkRun(config_lib.TrainConfig.make(strategy="multi_worker"),
                                  benchmark=bench_config.BenchmarkConfig(grid_search=True))


def test_a_leaf_name_twice_in_a_tree_or_a_flag_defined_twice_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Pretraining:
        batch_size: int = config_lib.field(32, "Images per step.")

    @dataclasses.dataclass(frozen=True)
    class Both:
        train: config_lib.TrainConfig = dataclasses.field(default_factory=config_lib.TrainConfig)
        pretrain: Pretraining = dataclasses.field(default_factory=Pretraining)

    with pytest.raises(ValueError, match="'batch_size' in both train.schedule and pretrain"):
        flags_lib.define_flags(Both, flag_values=flags.FlagValues())
    values = flags.FlagValues()
    flags_lib.define_flags(config_lib.TrainConfig, "train", flag_values=values)
    with pytest.raises(ValueError, match="--batch_size is already defined"):
        flags_lib.define_flags(Pretraining, "pretrain", flag_values=values)


@pytest.mark.parametrize("flagfile", sorted(os.listdir(os.path.join(ROOT, "flags"))))
def test_every_flagfile_parses_into_the_configs(flagfile):
    from wsnn.benchmark import config as bench_config

    values = flags.FlagValues()
    flags_lib.define_flags(bench_config.BenchmarkRun, flag_values=values)
    values(["prog", f"--flagfile={os.path.join(ROOT, 'flags', flagfile)}"])
    flags_lib.from_flags(config_lib.TrainConfig, values)  # the preparation may name data not here
    flags_lib.from_flags(bench_config.BenchmarkConfig, values)
