"""The annotation network: a backbone phi, its visual feature, and a sigmoid tag head.

Every model takes uint8-valued images (batch x S x S x channels, as
`wsnn.data.pipeline.ImageSource` yields them) and does its own scaling and
channel handling inside the graph, so training and serving cannot drift
apart. It returns a dict:

  features   phi(i), the visual feature used for neighbours (Algorithm 1) and
             for gamma in L_vis: VGG16's fc7 (4,096 units), or the small
             CNN's last dense layer;
  tag_probs  P, sigmoid(Dense(C)(features)): the tag probabilities.

Backbones:
  vgg16      keras.applications.VGG16's convolutional base, then fc6 and fc7
             (Dense 4096 + ReLU + dropout 0.5 each) as in the paper. Grey
             input is repeated to 3 channels; pixels are normalised as the
             ImageNet weights expect (BGR, mean-subtracted). Weights: "none",
             "imagenet" (Keras downloads them: online users only), or a local
             path to Keras' `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`
             (the convolutional base; fc6/fc7 start random).
  small_cnn  for CPUs: three blocks of two 3x3 convolutions (16, 32, 64
             filters, batch norm synchronised across replicas, ReLU) with 2x2 max pooling after the first
             two and global average pooling after the third, then a 256-unit
             dense feature layer (ReLU). Pixels are scaled to [0, 1].
"""

import keras

from wsnn.config import BACKBONES
_VGG_MEAN_BGR = (103.939, 116.779, 123.68)


def _small_cnn(x):
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(x)
    for block, filters in enumerate((16, 32, 64)):
        for i in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    name=f"conv{block + 1}_{i + 1}")(x)
            x = keras.layers.BatchNormalization(synchronized=True, name=f"bn{block + 1}_{i + 1}")(x)
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
    x = keras.layers.Dense(4096, activation="relu", name="fc6")(x)
    x = keras.layers.Dropout(0.5, name="drop6")(x)
    x = keras.layers.Dense(4096, activation="relu", name="fc7")(x)
    return keras.layers.Dropout(0.5, name="drop7")(x)


def build_model(backbone, num_tags, input_shape, weights="none"):
    """Builds the annotation network.

    Args:
      backbone: "small_cnn" or "vgg16".
      num_tags: C, the tag vocabulary size.
      input_shape: (S, S, channels) of the uint8-valued input images.
      weights: "none", "imagenet" or a local weights file (vgg16 only).

    Returns:
      A keras.Model from images to {"features", "tag_probs"}.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    images = keras.Input(shape=tuple(input_shape), name="images")
    x = keras.layers.Rescaling(1.0, name="to_float")(images)
    features = _small_cnn(x) if backbone == "small_cnn" else _vgg16(x, tuple(input_shape), weights)
    tag_probs = keras.layers.Dense(num_tags, activation="sigmoid", name="tag_probs")(features)
    return keras.Model(images, {"features": features, "tag_probs": tag_probs}, name=f"wsnn_{backbone}")
