"""Tests of the pretraining tool (wsnn.pretrain) on a tiny fake Fashion-MNIST.

The fake train split has 600 random images (class = index % 10), so its
pretraining pool is images 500-599 (the last 1/6) and the pool's held-out part
590-599. Every cell of a mosaic is compared with the source image its
recorded index names, so a wrong index or a wrong pool cannot pass.
"""

import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from wsnn import backbone_weights, models, pretrain
from wsnn.data import fashion_tags

IMAGES_FILE = "train-images-idx3-ubyte.gz"
LABELS_FILE = "train-labels-idx1-ubyte.gz"
# The specification's groups, written out rather than imported.
GROUPS = {"tops": ["t-shirt", "pullover", "coat", "shirt"], "long_garments": ["trouser", "dress"],
          "footwear_and_bags": ["sandal", "sneaker", "boot", "bag"]}
LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
GROUP_OF_CLASS = [[list(GROUPS).index(g) for g, members in GROUPS.items() if name in members][0]
                  for name in LABELS]


def _idx(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def _write_source(directory, n=600):
    images = np.random.default_rng(5).integers(1, 256, (n, 28, 28)).astype(np.uint8)
    classes = (np.arange(n) % 10).astype(np.uint8)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, IMAGES_FILE), "wb") as f:
        f.write(gzip.compress(_idx((n, 28, 28), images.tobytes()), mtime=0))
    with open(os.path.join(directory, LABELS_FILE), "wb") as f:
        f.write(gzip.compress(_idx((n,), classes.tobytes()), mtime=0))
    return images, classes


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("fashion-mnist"))
    images, classes = _write_source(directory)
    return directory, images, classes


def _cli(argv):
    flag_values = flags.FlagValues()
    pretrain.define_flags(flag_values)
    return pretrain.main(["wsnn.pretrain"] + argv, flag_values)


def test_mosaics_use_only_the_pool_and_show_what_they_record(source):
    directory, images, classes = source
    pool = fashion_tags.pretraining_pool(directory)
    assert (pool.start, len(pool.images)) == (500, 100)
    data = pretrain.build_mosaics(pool, num_mosaics=2000, seed=3)
    assert data.images.shape == (2000, 56, 56, 1) and data.images.dtype == np.uint8
    assert data.num_train == 1800
    used = data.items[data.items >= 0]
    assert used.min() >= 500 and used.max() < 600
    # Training mosaics never show the pool's held-out tenth, held-out mosaics show nothing else.
    train_items, held_items = data.items[:1800], data.items[1800:]
    assert train_items[train_items >= 0].max() < 590
    assert held_items[held_items >= 0].min() >= 590
    assert set(used.tolist()) == set(range(500, 600))
    counts = np.zeros(5)
    for i in range(2000):
        present = set()
        for cell in range(4):
            r, q = divmod(cell, 2)
            pixels = data.images[i, 28 * r:28 * r + 28, 28 * q:28 * q + 28, 0]
            if data.items[i, cell] < 0:
                assert not pixels.any()
            else:
                np.testing.assert_array_equal(pixels, images[data.items[i, cell]])
                present.add(GROUP_OF_CLASS[classes[data.items[i, cell]]])
        expected = np.zeros(3, np.float32)
        expected[sorted(present)] = 1
        np.testing.assert_array_equal(data.groups[i], expected)
        counts[(data.items[i] >= 0).sum()] += 1
    # FashionTags' item counts; classes uniform, so each group's share follows its size.
    np.testing.assert_allclose(counts[1:] / 2000, fashion_tags.ITEM_COUNT_PROBS, atol=0.04)
    item_classes = classes[used]
    np.testing.assert_allclose(np.bincount(item_classes, minlength=10) / len(used), 0.1, atol=0.025)


def test_mosaics_are_deterministic(source):
    pool = fashion_tags.pretraining_pool(source[0])
    a = pretrain.build_mosaics(pool, 200, seed=1)
    b = pretrain.build_mosaics(pool, 200, seed=1)
    c = pretrain.build_mosaics(pool, 200, seed=2)
    for name in ("images", "groups", "items"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.items, c.items)


def test_heldout_metrics_against_a_reference():
    probs = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.8, 0.6, 0.3], [0.1, 0.1, 0.7]])
    groups = np.array([[1, 0, 1], [0, 1, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    result = pretrain.heldout_metrics(probs, groups)
    # Decisions at 0.5: row 2 misses group 0 (0.8 > 0.5, absent); row 3 misses groups 0 and 2.
    assert result["images"] == 4
    assert result["accuracy"] == pytest.approx(9 / 12)
    assert result["exact_match"] == pytest.approx(2 / 4)
    # tops: ranking 0.9 (+), 0.8 (-), 0.4 (-), 0.1 (+): AP = (1/1 + 2/4) / 2.
    assert result["ap"]["tops"] == pytest.approx(0.75)
    assert result["ap"]["long_garments"] == pytest.approx(1.0)
    assert result["ap"]["footwear_and_bags"] == pytest.approx(0.5)  # 0.7 (-) then 0.6 (+)
    assert result["mAP"] == pytest.approx((0.75 + 1.0 + 0.5) / 3)


def test_recalibrated_batch_norm_makes_inference_match_training():
    import keras

    keras.utils.set_random_seed(0)
    model = models.build_model("small_cnn", 3, (16, 16, 1))
    images = np.random.default_rng(6).integers(0, 256, (24, 16, 16, 1)).astype(np.uint8)
    x = images.astype(np.float32)
    before = np.asarray(model(x, training=False)["features"])
    # One batch of all 24: its statistics become the moving ones, so inference equals training mode.
    pretrain.recalibrate_batch_norm(model, images, batch_size=24)
    training = np.asarray(model(x, training=True)["features"])
    np.testing.assert_allclose(np.asarray(model(x, training=False)["features"]), training,
                               rtol=1e-3, atol=1e-5)
    assert not np.allclose(before, training, rtol=1e-2, atol=1e-3)  # the default statistics were off
    # Three batches of 8: bn1_1's statistics are the averages of conv1_1's per-batch moments.
    pretrain.recalibrate_batch_norm(model, images, batch_size=8)
    conv = np.asarray(keras.Model(model.input, model.get_layer("conv1_1").output)(x)).astype(np.float64)
    batches = conv.reshape(3, 8 * 16 * 16, 16)
    bn = model.get_layer("bn1_1")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), batches.mean(axis=1).mean(axis=0),
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), batches.var(axis=1).mean(axis=0),
                               rtol=1e-4, atol=1e-9)


def test_cli_writes_weights_then_hits_the_cache(source, tmp_path, capsys):
    directory = source[0]
    out = str(tmp_path / "pre" / "small.npz")
    argv = [f"--out={out}", f"--source_dir={directory}", "--num_mosaics=60", "--epochs=1",
            "--batch_size=16", "--seed=4"]
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out coarse groups (6 mosaics)" in printed and "img/s" in printed and "ETA" in printed
    arrays, meta = backbone_weights.read(out)
    hashes = {}
    for name in (IMAGES_FILE, LABELS_FILE):
        with open(os.path.join(directory, name), "rb") as f:
            hashes[name] = hashlib.sha256(f.read()).hexdigest()
    assert meta["format"] == "wsnn-backbone-weights" and meta["format_version"] == 1
    assert meta["backbone"] == "small_cnn" and meta["input_shape"] == [56, 56, 1]
    assert meta["task"] == {"name": "coarse_groups", "groups": GROUPS}
    assert meta["pool"]["indices"] == [500, 600]
    assert meta["pool"]["training_indices"] == [500, 590] and meta["pool"]["heldout_indices"] == [590, 600]
    assert (meta["num_mosaics"], meta["epochs"], meta["batch_size"], meta["seed"]) == (60, 1, 16, 4)
    assert meta["learning_rate"] == 0.05 and meta["momentum"] == 0.9
    assert meta["fashion_tags_version"] == 2
    assert meta["source_sha256"] == hashes
    assert meta["steps"] == 4  # ceil(54 / 16)
    assert meta["heldout"]["images"] == 6 and 0 <= meta["heldout"]["accuracy"] <= 1
    # Every backbone weight, nothing of the head, with the model's shapes.
    reference = models.backbone_arrays(models.build_model("small_cnn", 3, (56, 56, 1)))
    assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in reference.items()}
    assert not any(k.startswith("tag_probs/") for k in arrays)
    assert {k.split("/")[0] for k in arrays} == {
        *(f"{kind}{b}_{i}" for kind in ("conv", "bn") for b in (1, 2, 3) for i in (1, 2)), "feature"}
    # Training moved the weights away from a fresh initialisation of the same seed.
    assert not np.allclose(arrays["conv1_1/0"], reference["conv1_1/0"])
    loaded = models.build_model("small_cnn", 10, (56, 56, 1), weights=out)
    np.testing.assert_array_equal(loaded.get_layer("bn3_2").get_weights()[3], arrays["bn3_2/3"])

    with open(out, "rb") as f:
        before = f.read()
    mtime = os.stat(out).st_mtime_ns
    assert _cli(argv) == 0
    assert capsys.readouterr().out == f"pretrained weights up to date: {out}\n"
    assert os.stat(out).st_mtime_ns == mtime
    with open(out, "rb") as f:
        assert f.read() == before
    # Any other setting, or another source, makes it stale.
    config = pretrain.PretrainConfig(out=out, source_dir=directory, num_mosaics=60, epochs=1,
                                     batch_size=16, seed=4)
    assert pretrain.stale_settings(config) == []
    assert pretrain.stale_settings(pretrain.PretrainConfig(
        out=out, source_dir=directory, num_mosaics=60, epochs=2, batch_size=16, seed=4)) == ["epochs"]
    other = str(tmp_path / "other-source")
    _write_source(other, n=660)
    assert pretrain.stale_settings(pretrain.PretrainConfig(
        out=out, source_dir=other, num_mosaics=60, epochs=1, batch_size=16, seed=4)) == ["source_sha256"]
    assert pretrain.stale_settings(pretrain.PretrainConfig(out=str(tmp_path / "none.npz"),
                                                           source_dir=directory)) == ["out"]


@pytest.mark.parametrize("argv, message", [
    (["--out=w.npz", "--epochs=0"], "wsnn.pretrain: config error: --epochs=0: must be >= 1"),
    (["--out=w.npz", "--num_mosaics=19"], "wsnn.pretrain: config error: --num_mosaics=19: must be >= 20"),
    (["--out=w.h5"], "wsnn.pretrain: config error: --out=w.h5: must end in .npz"),
    ([], "wsnn.pretrain: config error: --out is required (e.g. "
         "--out=runs/pretrained/small_cnn_fashion_mnist.npz)"),
    (["--out=w.npz", "--bogus=1"], "wsnn.pretrain: flag error: Unknown command line flag 'bogus'"),
    (["--out=w.npz", "--epochs=two"],
     "wsnn.pretrain: flag error: flag --epochs=two: invalid literal for int() with base 10: 'two'"),
    (["--out=w.npz", "extra"], "wsnn.pretrain: unexpected arguments: extra"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    assert _cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n" and captured.out == ""


def test_missing_fashion_mnist_exits_1(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert _cli([f"--out={tmp_path / 'w.npz'}", f"--source_dir={missing}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    path = os.path.join(missing, IMAGES_FILE)
    assert err.startswith(f"wsnn.pretrain: error: {path}: Fashion-MNIST not found")
    assert "apt-get install dataset-fashion-mnist" in err
    assert not os.path.exists(tmp_path / "w.npz")


def test_module_entry_point_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "wsnn.pretrain", f"--out={tmp_path / 'w.npz'}",
                             "--batch_size=0"], capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 2
    assert result.stderr == "wsnn.pretrain: config error: --batch_size=0: must be >= 1\n"
