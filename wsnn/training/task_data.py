"""One task's data: its split of the prepared set and the image sources of each part.

    data = TaskData(dataset, "annotation", config.data, seed=0)
    data.train_idx, data.valid_idx, data.eval_idx   # the split (`wsnn.training.state.split`)
    data.train_set.user_tags                       # a part as a `TaggedImageSet`
    data.train_source.get([0, 1])                  # uint8 images at the run's input size

The trainer trains and scores on it, and the benchmark's baselines compare on
the same split. The image sources are made on first use: a set of image
files is then decoded once, at the input size, into `cache_dir` (see
`wsnn.data.decoded`), so that code which needs only the split reads no
image.
"""

import functools

import numpy as np

from wsnn.data import dataset as dataset_lib
from wsnn.data import decoded as decoded_lib
from wsnn.data import pipeline
from wsnn.training import state as state_lib


class TaskData:
    """The split and image sources of one task.

    Args:
      dataset: the prepared `TaggedImageSet`.
      task: "annotation" or "refinement".
      data_config: the config's `data` group (train_fraction,
        validation_fraction, image_size, channels).
      seed: the split's seed.
      cache_dir: where decoded image files are cached (path-backed sets
        with an image size; e.g. `<workdir>/prepared/cache`).
      log: callable(text) for the decoding's progress lines.

    Attributes:
      dataset, task: as given.
      train_idx, valid_idx, eval_idx: the split, sorted indices into the
        dataset; valid_idx is empty without labels or validation fraction.
      train_set, valid_set, eval_set: the parts (valid_set None when empty).
      user_tags: G of the training images, N_train x C float32.
      image_size: the input size S (0: the dataset's own).
      channels: the input channels (1 or 3).
    """

    def __init__(self, dataset, task, data_config, seed, cache_dir=None, log=print):
        self.dataset, self.task, self.cache_dir, self.log = dataset, task, cache_dir, log
        validation_fraction = data_config.validation_fraction if dataset.labels is not None else 0.0
        self.train_idx, self.valid_idx, self.eval_idx = state_lib.split(
            dataset.num_images, task, data_config.train_fraction, seed, validation_fraction)
        self.train_set = dataset.subset(self.train_idx)
        self.valid_set = dataset.subset(self.valid_idx) if len(self.valid_idx) else None
        self.eval_set = dataset.subset(self.eval_idx)
        self.user_tags = self.train_set.user_tags.toarray().astype(np.float32)
        self.image_size = data_config.image_size
        self.channels = data_config.channels or (
            (1 if dataset.image_array.ndim == 3 else 3) if dataset.image_array is not None else 3)

    @functools.cached_property
    def identity(self):
        """The data's identity (`wsnn.data.dataset.identity` with the image and tag counts), as
        data_identity.json records it."""
        return dict(dataset_lib.identity(self.dataset), num_images=self.dataset.num_images,
                    num_tags=self.dataset.num_tags)

    @functools.cached_property
    def decoded(self):
        """Every image of a set of image files decoded at the input size (None for an array-backed set
        or without an image size)."""
        if self.dataset.image_array is not None or not self.image_size:
            return None
        if self.cache_dir is None:
            raise ValueError("TaskData: a set of image files needs a cache_dir for its decoded images")
        return decoded_lib.decoded_images(self.dataset, self.image_size, self.channels, self.cache_dir,
                                          log=self.log)

    def source(self, rows, subset=None):
        """An ImageSource of the dataset's images `rows` at the input size and channels (`subset`:
        `dataset.subset(rows)` when already made)."""
        subset = self.dataset.subset(rows) if subset is None else subset
        if self.decoded is not None:
            return pipeline.ImageSource(subset, self.image_size, self.channels, decoded=self.decoded, rows=rows)
        return pipeline.ImageSource(subset, self.image_size or None, self.channels)

    @functools.cached_property
    def train_source(self):
        return self.source(self.train_idx, self.train_set)

    @functools.cached_property
    def valid_source(self):
        """None without a validation split."""
        return self.source(self.valid_idx, self.valid_set) if self.valid_set is not None else None

    @functools.cached_property
    def eval_source(self):
        return self.source(self.eval_idx, self.eval_set)

    def eval_sample(self, max_images, seed):
        """(ImageSource, subset) of at most `max_images` evaluated images, a seeded sample (None or 0:
        all of them)."""
        if not max_images or len(self.eval_idx) <= max_images:
            return self.eval_source, self.eval_set
        idx = np.random.default_rng(seed).choice(len(self.eval_idx), max_images, replace=False)
        source = self.source(self.eval_idx[np.sort(idx)])
        return source, source.dataset
