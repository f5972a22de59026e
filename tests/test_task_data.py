"""Tests for a task's data (wsnn.training.task_data) and its directory layout (wsnn.training.layout)."""

import os

import numpy as np

from wsnn.config import TrainConfig
from wsnn.data.dataset import from_tag_lists
from wsnn.training import layout as layout_lib
from wsnn.training.state import split
from wsnn.training.task_data import TaskData


def _dataset(count=20):
    rng = np.random.default_rng(0)
    tags = [["sky", "sea", "dog"][i % 3:i % 3 + 1 + i % 2] for i in range(count)]
    return from_tag_lists([f"i{i}" for i in range(count)], tags,
                          image_array=rng.integers(0, 256, (count, 8, 8), dtype=np.uint8))


def test_task_data_is_the_trainers_split_with_parts_and_sources():
    dataset = _dataset()
    data = TaskData(dataset, "annotation", TrainConfig.make(train_fraction=0.5).data, seed=3)
    for got, expected in zip((data.train_idx, data.valid_idx, data.eval_idx),
                             split(20, "annotation", 0.5, 3, 0.0)):   # no labels: no validation split
        np.testing.assert_array_equal(got, expected)
    assert data.valid_set is None and data.valid_source is None and data.channels == 1
    np.testing.assert_array_equal(data.user_tags, dataset.user_tags[data.train_idx].toarray())
    assert data.user_tags.dtype == np.float32
    np.testing.assert_array_equal(data.train_source.get([1])[0, :, :, 0], dataset.image_array[data.train_idx[1]])
    source, subset = data.eval_sample(4, seed=0)
    assert source.num_images == 4 and set(subset.ids) <= set(data.eval_set.ids)
    assert data.eval_sample(None, seed=0)[0] is data.eval_source


def test_layout_names_every_file_once():
    layout = layout_lib.TaskLayout.of("/w", "refinement")
    assert layout.metrics == os.path.join("/w", "refinement", "metrics.json")
    assert layout.export_dir() == os.path.join("/w", "refinement", "export")
    assert layout.export_dir("/models") == os.path.join("/models", "refinement")
    names = [v for k, v in vars(layout_lib).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == len(set(names))
