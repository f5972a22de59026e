"""The annotation network: a backbone phi, its visual feature, and a sigmoid tag head.

Every model takes uint8-valued images (batch x S x S x channels, as
`wsnn.data.pipeline.ImageSource` yields them) and does its own scaling and
channel handling inside the graph, so training and serving cannot drift
apart. It returns a dict:

  features   phi(i), the visual feature used for neighbours (Algorithm 1) and
             for gamma in L_vis: VGG16's fc7 (4,096 units) without dropout,
             or the small CNN's last dense layer. It is the same in training
             and inference mode, so gamma in a training step and the
             neighbour search compare the same features;
  tag_probs  P, sigmoid(Dense(C)(.)): the tag probabilities, computed from
             `features` (small_cnn) or from fc7 with the paper's dropout
             (vgg16).

Backbones:
  vgg16      keras.applications.VGG16's convolutional base, then fc6 and fc7
             (Dense 4096 + ReLU each) as in the paper. The head sees
             fc7(dropout_0.5(fc6)) through another dropout 0.5 (drop6, drop7,
             active in training only); `features` is the same fc7 layer (shared
             weights) applied to fc6 without dropout. Grey input is repeated
             to 3 channels; pixels are normalised as the ImageNet weights
             expect (BGR, mean-subtracted). Weights: "none", "imagenet" (Keras
             downloads them: online users only), or a local path to Keras'
             `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` (the
             convolutional base; fc6/fc7 start random).
  small_cnn  for CPUs: three blocks of two 3x3 convolutions (16, 32, 64
             filters, batch norm synchronised across replicas, ReLU) with 2x2
             max pooling after the first two and global average pooling after
             the third, then a 256-unit dense feature layer (ReLU). Pixels are
             scaled to [0, 1]. Weights: "none" or a backbone-weights .npz
             (below) such as `wsnn.pretrain` writes: FashionTags' stand-in for
             ImageNet weights.

Backbone-weights files (.npz, any backbone; format in `wsnn.backbone_weights`):
one array per weight of every layer except the tag head, keyed
"<layer name>/<index>", and a JSON "__meta__" that records the backbone and
input shape. Loading checks the backbone, the input channel count and every
layer's names and shapes; the tag head keeps its random initialisation.
"""

import keras
import numpy as np

from wsnn import backbone_weights
from wsnn.config import BACKBONES

_VGG_MEAN_BGR = (103.939, 116.779, 123.68)
HEAD = "tag_probs"
# Keras's default 0.99 moves the moving statistics 1% a step: the small CNN's
# activations have a variance near 1e-3 while the moving variance starts at 1,
# so inference-mode outputs (phi_0 features, per-epoch metrics, neighbour
# embeddings) were far off for the first few hundred steps of a run from
# scratch. At 0.9 the start is forgotten within ~50 steps.
_BN_MOMENTUM = 0.9


def _small_cnn(x):
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(x)
    for block, filters in enumerate((16, 32, 64)):
        for i in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    name=f"conv{block + 1}_{i + 1}")(x)
            x = keras.layers.BatchNormalization(
                synchronized=True, momentum=_BN_MOMENTUM, name=f"bn{block + 1}_{i + 1}")(x)
            x = keras.layers.ReLU()(x)
        if block < 2:
            x = keras.layers.MaxPooling2D(name=f"pool{block + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.layers.Dense(256, activation="relu", name="feature")(x)


def _vgg16(x, input_shape, weights):
    if input_shape[-1] == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    # RGB -> BGR and ImageNet mean subtraction ("caffe" mode of vgg16.preprocess_input).
    x = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1), name="rgb_to_bgr")(x)
    x = keras.layers.Normalization(mean=_VGG_MEAN_BGR, variance=(1.0, 1.0, 1.0), name="imagenet_mean")(x)
    try:
        base = keras.applications.VGG16(include_top=False, weights=None if weights == "none" else weights,
                                        input_shape=input_shape[:-1] + (3,))
    except Exception as e:  # Keras raises a bare Exception when the download fails
        raise RuntimeError(f"--weights={weights}: cannot load VGG16 weights ({e}); without internet, pass "
                           "a local vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") from None
    x = base(x)
    x = keras.layers.Flatten(name="flatten")(x)
    fc6 = keras.layers.Dense(4096, activation="relu", name="fc6")(x)
    fc7 = keras.layers.Dense(4096, activation="relu", name="fc7")
    # One fc7 layer, called twice: without dropout for phi (so gamma and the
    # neighbour search see the same features in training and inference), and
    # with the paper's dropout on both fc layers on the way to the head.
    features = fc7(fc6)
    head_input = keras.layers.Dropout(0.5, name="drop7")(fc7(keras.layers.Dropout(0.5, name="drop6")(fc6)))
    return features, head_input


def source_features(model, source, chunk=512):
    """phi of every image of an ImageSource (`wsnn.data.pipeline`), in inference mode, N x d NumPy."""
    return np.concatenate([np.asarray(model(images, training=False)["features"]) for images in source.chunks(chunk)])


def build_model(backbone, num_tags, input_shape, weights="none", freeze_batch_norm=False):
    """Builds the annotation network.

    Args:
      backbone: "small_cnn" or "vgg16".
      num_tags: C, the tag vocabulary size.
      input_shape: (S, S, channels) of the uint8-valued input images.
      weights: "none"; a backbone-weights .npz (see the module docstring;
        any backbone); for vgg16 also "imagenet" or Keras' VGG16 notop .h5.
      freeze_batch_norm: batch norm layers not trainable, which in Keras 3
        also runs them in inference mode (moving statistics, never updated).

    Returns:
      A keras.Model from images to {"features", "tag_probs"}.

    Raises:
      ValueError: unknown backbone, weights small_cnn cannot take, or a .npz
        that does not fit the model (the message names the file and layer).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    from_npz = weights != "none" and weights.endswith(".npz")
    if backbone == "small_cnn" and weights != "none" and not from_npz:
        raise ValueError(f"weights={weights}: small_cnn takes none or a backbone-weights .npz "
                         "(python -m wsnn.pretrain)")
    images = keras.Input(shape=tuple(input_shape), name="images")
    x = keras.layers.Rescaling(1.0, name="to_float")(images)
    if backbone == "small_cnn":
        features = head_input = _small_cnn(x)
    else:
        features, head_input = _vgg16(x, tuple(input_shape), "none" if from_npz else weights)
    tag_probs = keras.layers.Dense(num_tags, activation="sigmoid", name=HEAD)(head_input)
    model = keras.Model(images, {"features": features, "tag_probs": tag_probs}, name=f"wsnn_{backbone}")
    if from_npz:
        load_backbone_weights(model, weights, backbone)
    if freeze_batch_norm:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def backbone_arrays(model):
    """Every backbone weight of `model` (all layers but the tag head) by "<layer name>/<index>"."""
    return {f"{layer.name}/{i}": np.asarray(w) for layer in model.layers if layer.name != HEAD
            for i, w in enumerate(layer.get_weights())}


def save_backbone_weights(model, path, backbone, meta):
    """Writes `model`'s backbone weights to a backbone-weights .npz atomically.

    Args:
      model: a model from `build_model`.
      path: the output .npz.
      backbone: the backbone name recorded in the file.
      meta: further JSON-serialisable facts to record (task, data, metrics, ...).

    Returns:
      The "__meta__" dict written.
    """
    meta = {**meta, "backbone": backbone, "input_shape": [int(d) for d in model.input.shape[1:]]}
    return backbone_weights.write(path, backbone_arrays(model), meta)


def load_backbone_weights(model, path, backbone):
    """Sets every backbone layer of `model` from a backbone-weights .npz; the head is untouched.

    Every weight of every layer but the tag head must be in the file with the
    same shape, and the file may hold no other layer: a partial load would
    silently train from a half-random backbone.

    Args:
      model: a model from `build_model`.
      path: the .npz file.
      backbone: `model`'s backbone name (must equal the file's).

    Raises:
      ValueError: naming the file and the first layer that does not fit.
    """
    arrays, meta = backbone_weights.read(path)
    if meta.get("backbone") != backbone:
        raise ValueError(f"{path}: weights of backbone {meta.get('backbone')}, the model is {backbone}")
    channels = int(model.input.shape[-1])
    file_channels = (meta.get("input_shape") or [None])[-1]
    if file_channels != channels:
        raise ValueError(f"{path}: weights for {file_channels} input channel(s), the model has {channels}")
    expected = backbone_arrays(model)
    for key, value in expected.items():
        if key not in arrays:
            raise ValueError(f"{path}: layer {key.split('/')[0]}: no weight {key} in the file")
        if arrays[key].shape != value.shape:
            raise ValueError(f"{path}: layer {key.split('/')[0]}: weight {key} has shape "
                             f"{arrays[key].shape} in the file, the model needs {value.shape}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise ValueError(f"{path}: layer {extra[0].split('/')[0]}: weight {extra[0]} is in the file "
                         "but not in the model")
    for layer in model.layers:
        if layer.name != HEAD and layer.weights:
            layer.set_weights([arrays[f"{layer.name}/{i}"] for i in range(len(layer.get_weights()))])
