"""Tests for the option range checks (wsnn.checks)."""

import os
import re
import subprocess
import sys

import pytest

from wsnn import checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_at_least_one_names_the_first_bad_option():
    checks.at_least_one(top_k=1, batch_size=32)
    with pytest.raises(ValueError, match=r"^--top_k=0: must be >= 1$"):
        checks.at_least_one(top_k=0, batch_size=-1)
    with pytest.raises(ValueError, match=r"^--batch_size=-1: must be >= 1$"):
        checks.at_least_one(top_k=1, batch_size=-1)


def test_in_unit_interval_includes_the_ends_and_rejects_nan():
    checks.in_unit_interval(a=0, b=1, c=0.5)
    for value in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"^--w={value}: must be in \[0, 1\]$"):
            checks.in_unit_interval(w=value)


def test_input_size_follows_each_backbones_pooling():
    checks.input_size("small_cnn", 4)      # 4 -> 2 -> 1 after two 2 x 2 poolings
    checks.input_size("vgg16", 32)         # 32 -> 1 after five
    with pytest.raises(ValueError, match=r"^--image_size=3: small_cnn needs inputs of at least 4 x 4 pixels "
                                         r"\(it max-pools 2 x 2 twice before its global pooling\)$"):
        checks.input_size("small_cnn", 3)
    with pytest.raises(ValueError, match=r"^--image_size=31: vgg16 needs inputs of at least 32 x 32 pixels"):
        checks.input_size("vgg16", 31)


def test_small_cnn_minimum_is_what_its_pooling_allows():
    from wsnn import models

    need = checks.MIN_INPUT_SIZE["small_cnn"]
    models.build_model("small_cnn", 2, (need, need, 1))
    with pytest.raises(ValueError):   # Keras' own (multi-line) error: what the check keeps users from
        models.build_model("small_cnn", 2, (need - 1, need - 1, 1))


def test_training_data_bounds_name_the_flag():
    checks.training_data(32, 32, 5, "small_cnn", 0, data_image_size=28)
    with pytest.raises(ValueError, match=r"^--batch_size=1000000000: more than the 32 training images of the "
                                         r"annotation task; use at most 32$"):
        checks.training_data(10 ** 9, 32, 5, "small_cnn", 0, task="annotation")
    with pytest.raises(ValueError, match=r"^the prepared data has no tags \(none survived normalisation\)"):
        checks.training_data(8, 32, 0, "small_cnn", 0)
    with pytest.raises(ValueError, match=r"^--image_size=2: small_cnn needs inputs of at least 4 x 4"):
        checks.training_data(8, 32, 5, "small_cnn", 2, data_image_size=28)
    with pytest.raises(ValueError, match=r"^--image_size=0: the dataset's own images are 28 x 28 pixels, and "
                                         r"vgg16 needs inputs of at least 32 x 32 pixels"):
        checks.training_data(8, 32, 5, "vgg16", 0, data_image_size=28)


def test_seed_and_image_size_are_bounded_in_every_config():
    from wsnn import config as config_lib
    from wsnn import pretrain
    from wsnn.data import preparation

    for seed in (0, 10 ** 9):
        assert config_lib.TrainConfig.make(seed=seed).runtime.seed == seed
    for seed in (-1, 10 ** 9 + 1):
        message = rf"^--seed={seed}: must be in \[0, 1e\+09\]$"
        with pytest.raises(ValueError, match=message):
            config_lib.TrainConfig.make(seed=seed)
        with pytest.raises(ValueError, match=message):
            preparation.PrepareConfig(seed=seed)
        with pytest.raises(ValueError, match=message):
            pretrain.PretrainConfig(out="x.npz", seed=seed)
    with pytest.raises(ValueError, match=r"^--image_size=5000: must be in \[0, 4096\]$"):
        config_lib.TrainConfig.make(image_size=5000)


def test_train_refuses_an_image_size_below_the_backbones_pooling_before_any_work(tmp_path):
    # It used to fail after 12 s with Keras' multi-line pooling error (the seed's bounds: above).
    result = subprocess.run([sys.executable, "-m", "wsnn.train", "--flagfile=flags/smoke.cfg",
                             f"--workdir={tmp_path / 'run'}", "--image_size=1"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "wsnn.train: config error: --image_size=1: small_cnn needs inputs of at least 4 x 4 pixels (it max-pools "
        "2 x 2 twice before its global pooling)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    ((18, 4), "--batch_size=18: must be a multiple of --group_size=4"),
    ((12, 4, None, 2), "--batch_size=12: must be a multiple of --group_size=4 x 2 replicas = 8"),
    ((16, 1), "--group_size=1: must be >= 2"),
    ((16, 8, 8), "--group_size=8: must be smaller than --num_candidates=8 (m < M)"),
])
def test_batch_shape_is_algorithm_1s_rule(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        checks.batch_shape(*args)
    checks.batch_shape(16, 4, 5, replicas=2)  # 2 groups of 4 per replica, m < M
