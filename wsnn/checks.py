"""Small validators, one of each.

`at_least_one` and `in_unit_interval` check command-line options: each takes
options as keyword arguments named like their flags and raises
ValueError("--name=value: must be ...") for the first bad one, in argument
order. `positive_int` checks a function argument. `input_size` and
`training_data` check the bounds that depend on the backbone and on the
prepared data: a training run calls them before any work on that data.
"""

# Seeds: numpy's legacy seeding (keras.utils.set_random_seed) takes [0, 2**32); a round bound.
SEED_BOUNDS = "[0, 1e9]"
# The smallest input side each backbone can pool: small_cnn max-pools 2 x 2 twice (valid padding)
# before its global pooling, so S // 4 >= 1; Keras' VGG16 base pools five times and refuses S < 32.
MIN_INPUT_SIZE = {"small_cnn": 4, "vgg16": 32}
_POOLING = {"small_cnn": "it max-pools 2 x 2 twice before its global pooling",
            "vgg16": "its convolutional base pools 2 x 2 five times"}


def at_least_one(**values):
    """Checks that every value is >= 1 (counts and sizes).

    Raises:
      ValueError: "--name=value: must be >= 1".
    """
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"--{name}={value}: must be >= 1")


def in_unit_interval(**values):
    """Checks that every value is in [0, 1] (NaN is not).

    Raises:
      ValueError: "--name=value: must be in [0, 1]".
    """
    for name, value in values.items():
        if not 0 <= value <= 1:
            raise ValueError(f"--{name}={value}: must be in [0, 1]")


def positive_int(value, name):
    """`value` as an int when it is a whole number >= 1 (not a bool); for function arguments.

    Raises:
      ValueError: "<name> must be a positive integer, got <value>".
    """
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def batch_shape(batch_size, group_size, num_candidates=None, replicas=1):
    """Algorithm 1's batch rule, the one place it is checked: s/m whole groups of an anchor and its
    m-1 neighbours (per replica: s a multiple of m x replicas), 2 <= m < M.

    Raises:
      ValueError: naming the flags.
    """
    if group_size < 2:
        raise ValueError(f"--group_size={group_size}: must be >= 2 (an anchor plus at least one neighbour)")
    if batch_size % (group_size * replicas):
        whole = f"--group_size={group_size}" + (f" x {replicas} replicas = {group_size * replicas} (each replica "
                                                 f"takes whole groups)" if replicas > 1 else "")
        raise ValueError(f"--batch_size={batch_size}: must be a multiple of {whole}")
    if num_candidates is not None and group_size >= num_candidates:
        raise ValueError(f"--group_size={group_size}: must be smaller than --num_candidates={num_candidates} (m < M)")


def input_size(backbone, size, own_size=False):
    """Checks that `backbone` can take S x S inputs (`MIN_INPUT_SIZE`).

    Args:
      backbone: "small_cnn" or "vgg16".
      size: the input side S.
      own_size: S is the dataset's own image size (--image_size=0).

    Raises:
      ValueError: e.g. "--image_size=1: small_cnn needs inputs of at least 4 x 4 pixels (...)".
    """
    need = MIN_INPUT_SIZE.get(backbone, 1)
    if size < need:
        what = (f"--image_size=0: the dataset's own images are {size} x {size} pixels, and" if own_size
                else f"--image_size={size}:")
        raise ValueError(f"{what} {backbone} needs inputs of at least {need} x {need} pixels "
                         f"({_POOLING[backbone]})")


def training_data(batch_size, num_train, num_tags, backbone, image_size, data_image_size=None, task=None):
    """Checks a training config against the prepared data, before any work on it.

    Args:
      batch_size: s (--batch_size).
      num_train: the task's training images (after the split; validation images excluded).
      num_tags: the prepared vocabulary's size C.
      backbone: --backbone.
      image_size: --image_size (0: the dataset's own size).
      data_image_size: the side of the dataset's embedded images; None for image files.
      task: named in the message, e.g. "annotation".

    Raises:
      ValueError: one line naming the flag: no tags; a batch larger than the
        training images; an input too small for the backbone's pooling.
    """
    if num_tags < 1:
        raise ValueError("the prepared data has no tags (none survived normalisation); the tagger needs "
                         "at least one: lower --min_tag_fraction or check the collection's tags")
    if batch_size > num_train:
        where = f" of the {task} task" if task else ""
        raise ValueError(f"--batch_size={batch_size}: more than the {num_train} training images{where}; "
                         f"use at most {num_train}")
    if image_size:
        input_size(backbone, image_size)
    elif data_image_size is not None:
        input_size(backbone, data_image_size, own_size=True)
