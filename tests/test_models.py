"""Tests for the backbones and the annotation head (wsnn.models)."""

import numpy as np
import pytest

from wsnn import models


def test_small_cnn_outputs_and_scaling():
    model = models.build_model("small_cnn", num_tags=7, input_shape=(16, 16, 1))
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1)).astype(np.uint8)
    out = model(images, training=False)
    assert out["features"].shape == (3, 256) and out["tag_probs"].shape == (3, 7)
    probs = np.asarray(out["tag_probs"])
    assert ((probs > 0) & (probs < 1)).all()
    # The head is sigmoid(Dense(features)): recompute it from the layer's weights.
    kernel, bias = model.get_layer("tag_probs").get_weights()
    logits = np.asarray(out["features"]) @ kernel + bias
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)


def test_vgg16_features_are_fc7_and_grey_is_replicated():
    model = models.build_model("vgg16", num_tags=5, input_shape=(32, 32, 1))
    assert model.get_layer("fc6").units == 4096 and model.get_layer("fc7").units == 4096
    grey = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1)).astype(np.uint8)
    out = model(grey, training=False)
    assert out["features"].shape == (2, 4096) and out["tag_probs"].shape == (2, 5)
    # A grey image and the same image as RGB give the same output.
    rgb_model = models.build_model("vgg16", num_tags=5, input_shape=(32, 32, 3))
    rgb_model.set_weights(model.get_weights())
    rgb = np.repeat(grey, 3, axis=-1)
    np.testing.assert_allclose(np.asarray(rgb_model(rgb, training=False)["tag_probs"]),
                               np.asarray(out["tag_probs"]), rtol=1e-5, atol=1e-6)


def test_vgg16_imagenet_preprocessing_is_bgr_minus_mean():
    model = models.build_model("vgg16", num_tags=2, input_shape=(32, 32, 3))
    probe = __import__("keras").Model(model.input, model.get_layer("imagenet_mean").output)
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[..., 0] = 200   # red
    out = np.asarray(probe(image))
    np.testing.assert_allclose(out[0, 0, 0], [0 - 103.939, 0 - 116.779, 200 - 123.68], rtol=1e-5)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        models.build_model("resnet", 3, (8, 8, 1))


def test_vgg16_loads_a_local_notop_weights_file(tmp_path):
    import keras

    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "vgg16_notop.weights.h5")
    base.save_weights(path)
    model = models.build_model("vgg16", num_tags=3, input_shape=(32, 32, 3), weights=path)
    loaded = model.get_layer("vgg16").get_layer("block5_conv3").get_weights()[0]
    np.testing.assert_array_equal(loaded, base.get_layer("block5_conv3").get_weights()[0])


def _backbone_file(path, model, backbone="small_cnn", seed=0, **changes):
    """Writes random backbone weights shaped like `model`'s (with `changes`); returns them."""
    rng = np.random.default_rng(seed)
    arrays = {k: rng.normal(size=v.shape).astype(np.float32)
              for k, v in models.backbone_arrays(model).items()}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    from wsnn import backbone_weights

    backbone_weights.write(path, arrays, {"backbone": backbone,
                                          "input_shape": [int(d) for d in model.input.shape[1:]]})
    return arrays


def test_small_cnn_loads_backbone_weights_exactly_and_keeps_a_random_head(tmp_path):
    path = str(tmp_path / "w.npz")
    source = models.build_model("small_cnn", num_tags=3, input_shape=(56, 56, 1))
    arrays = _backbone_file(path, source)
    assert len(arrays) == 32 and "feature/0" in arrays and "bn1_1/3" in arrays  # moving variance too
    # Another input size and tag count: the backbone does not depend on either.
    model = models.build_model("small_cnn", num_tags=7, input_shape=(24, 24, 1), weights=path)
    loaded = models.backbone_arrays(model)
    assert sorted(loaded) == sorted(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    kernel = model.get_layer("tag_probs").get_weights()[0]
    assert kernel.shape == (256, 7) and 0 < np.abs(kernel).max() < 1  # Glorot, not from the file
    # The loaded weights are the ones used: the feature layer's output is relu(gap @ W + b).
    images = np.random.default_rng(2).integers(0, 256, (2, 24, 24, 1)).astype(np.uint8)
    probe = __import__("keras").Model(model.input, model.get_layer("gap").output)
    expected = np.maximum(np.asarray(probe(images)) @ arrays["feature/0"] + arrays["feature/1"], 0)
    np.testing.assert_allclose(np.asarray(model(images, training=False)["features"]), expected,
                               rtol=1e-4, atol=1e-4)


def test_backbone_weights_that_do_not_fit_are_refused(tmp_path):
    model = models.build_model("small_cnn", num_tags=3, input_shape=(56, 56, 1))
    cases = {
        "shape": ({"conv2_1/0": np.zeros((3, 3, 16, 8), np.float32)},
                  "layer conv2_1: weight conv2_1/0 has shape (3, 3, 16, 8) in the file, "
                  "the model needs (3, 3, 16, 32)"),
        "missing": ({"bn3_1/2": None}, "layer bn3_1: no weight bn3_1/2 in the file"),
        "extra": ({"fc9/0": np.zeros(3, np.float32)},
                  "layer fc9: weight fc9/0 is in the file but not in the model"),
    }
    for name, (changes, why) in cases.items():
        path = str(tmp_path / f"{name}.npz")
        _backbone_file(path, model, **changes)
        with pytest.raises(ValueError) as info:
            models.build_model("small_cnn", 3, (56, 56, 1), weights=path)
        assert str(info.value) == f"{path}: {why}", name
    path = str(tmp_path / "grey.npz")
    _backbone_file(path, model)
    with pytest.raises(ValueError) as info:
        models.build_model("small_cnn", 3, (56, 56, 3), weights=path)
    assert str(info.value) == f"{path}: weights for 1 input channel(s), the model has 3"
    with pytest.raises(ValueError) as info:
        models.build_model("vgg16", 3, (32, 32, 1), weights=path)
    assert str(info.value) == f"{path}: weights of backbone small_cnn, the model is vgg16"
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"garbage\.npz: cannot read backbone weights"):
        models.build_model("small_cnn", 3, (56, 56, 1), weights=str(garbage))
    plain = str(tmp_path / "plain.npz")
    np.savez(plain, x=np.zeros(2))
    with pytest.raises(ValueError) as info:
        models.build_model("small_cnn", 3, (56, 56, 1), weights=plain)
    assert str(info.value) == f"{plain}: no __meta__ entry; not a wsnn-backbone-weights file"
    with pytest.raises(ValueError, match="small_cnn takes none or a backbone-weights .npz"):
        models.build_model("small_cnn", 3, (56, 56, 1), weights="imagenet")


def test_vgg16_features_are_dropout_free_fc7_in_training_mode():
    import keras

    model = models.build_model("vgg16", num_tags=4, input_shape=(32, 32, 1))
    images = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 1)).astype(np.uint8)
    first, second = model(images, training=True), model(images, training=True)
    np.testing.assert_array_equal(np.asarray(first["features"]), np.asarray(second["features"]))
    # The head still trains through dropout (drop6, drop7)...
    assert not np.allclose(np.asarray(first["tag_probs"]), np.asarray(second["tag_probs"]))
    # ...and features are fc7's ReLU output on fc6 (no dropout in between), as in inference.
    fc6 = np.asarray(keras.Model(model.input, model.get_layer("fc6").output)(images, training=False))
    kernel, bias = model.get_layer("fc7").get_weights()
    expected = np.maximum(fc6 @ kernel + bias, 0)
    np.testing.assert_allclose(np.asarray(first["features"]), expected, rtol=1e-4, atol=1e-5)
    inference = model(images, training=False)
    np.testing.assert_allclose(np.asarray(inference["features"]), expected, rtol=1e-4, atol=1e-5)
    head_kernel, head_bias = model.get_layer("tag_probs").get_weights()
    np.testing.assert_allclose(np.asarray(inference["tag_probs"]),
                               1 / (1 + np.exp(-(expected @ head_kernel + head_bias))), rtol=1e-4, atol=1e-5)
    assert set(first) == {"features", "tag_probs"}
