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
