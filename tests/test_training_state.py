"""Tests for wsnn.training.state: the split, the resume order and checkpoint numbering."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsnn.training import state as state_lib


def _state(directory, strategy, seed):
    with strategy.scope():
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizers = [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)]
        for optimizer in optimizers:
            optimizer.build(model.trainable_variables)
    return state_lib.TrainState(model, optimizers, strategy, str(directory))


class _WarmStart:
    """Stands in for a warm start: loads given weights and moves to stage 2."""

    def __init__(self, state, weights):
        self.state, self.weights, self.calls = state, weights, 0

    def __call__(self):
        self.calls += 1
        self.state.model.set_weights(self.weights)
        self.state.move_to(2)


def test_resume_order_checkpoint_beats_warm_start_beats_fresh_start(tmp_path):
    strategy = tf.distribute.get_strategy()
    directory = tmp_path / "checkpoints"
    other = [np.full((3, 2), 7.0, np.float32), np.full(2, 7.0, np.float32)]

    # 3. Neither a checkpoint nor a warm start: a fresh start at stage 1, weights as initialised.
    fresh = _state(directory, strategy, seed=0)
    initial = fresh.model.get_weights()
    assert fresh.resume(None) == "fresh" and fresh.position() == (1, 0, 0)

    # 2. A warm start and no checkpoint: the warm start runs.
    warm_state = _state(directory, strategy, seed=0)
    warm = _WarmStart(warm_state, other)
    assert warm_state.resume(warm) == "warm start" and warm.calls == 1
    assert warm_state.position() == (2, 0, 0)
    np.testing.assert_array_equal(warm_state.model.get_weights()[0], other[0])

    # 1. A checkpoint exists: it wins, and the warm start is never called.
    fresh.stage.assign(2)
    fresh.epoch.assign(1)
    fresh.step_in_epoch.assign(3)
    fresh.save()
    resumed = _state(directory, strategy, seed=1)  # other initial weights
    warm = _WarmStart(resumed, other)
    assert resumed.resume(warm) == "checkpoint" and warm.calls == 0
    assert resumed.position() == (2, 1, 3)
    for a, b in zip(resumed.model.get_weights(), initial):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_numbers_only_grow(tmp_path):
    state = _state(tmp_path, tf.distribute.get_strategy(), seed=0)
    state.save()
    state.save()  # no step trained: still numbered above the last
    state.optimizers[0].iterations.assign(5)
    state.save()
    state.optimizers[0].iterations.assign(2)  # e.g. the best epoch's weights restored
    state.save()
    assert [int(p.rsplit("-", 1)[1]) for p in state.manager.checkpoints] == [1, 5, 6]


@pytest.mark.parametrize("task", ["annotation", "refinement"])
def test_split_is_disjoint_and_complete(task):
    train, valid, evaluated = state_lib.split(50, task, 0.2, seed=3, validation_fraction=0.2)
    if task == "annotation":
        assert (len(train), len(valid), len(evaluated)) == (8, 2, 40)
        assert sorted(np.concatenate([train, valid, evaluated]).tolist()) == list(range(50))
    else:
        np.testing.assert_array_equal(train, np.arange(50))
        assert len(valid) == 10 and sorted(np.concatenate([valid, evaluated]).tolist()) == list(range(50))
    again = state_lib.split(50, task, 0.2, seed=3, validation_fraction=0.2)
    for a, b in zip((train, valid, evaluated), again):
        np.testing.assert_array_equal(a, b)
