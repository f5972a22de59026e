"""Tests of wsnn.training.schedules against hand-computed rates."""

import math

import numpy as np
import pytest

from wsnn.training import schedules


def test_warmup_cosine_hand_computed_rates():
    schedule = schedules.make("cosine", 0.1, total_steps=14, warmup_steps=4, decay_steps=1, decay_factor=1.0)
    rates = [float(schedule(step)) for step in range(16)]
    # Warm-up: 0.1 x (step + 1) / 4 for steps 0-3.
    np.testing.assert_allclose(rates[:4], [0.025, 0.05, 0.075, 0.1], rtol=1e-6)
    # Then 0.1 x (1 + cos(pi (step - 4) / 10)) / 2: the peak at step 4, half at step 9, 0 from step 14.
    np.testing.assert_allclose(rates[4], 0.1, rtol=1e-6)
    np.testing.assert_allclose(rates[9], 0.05, rtol=1e-6)
    np.testing.assert_allclose(rates[6], 0.05 * (1 + math.cos(math.pi * 0.2)), rtol=1e-6)
    np.testing.assert_allclose(rates[14:], [0.0, 0.0], atol=1e-9)


def test_cosine_without_warmup_starts_at_the_rate():
    schedule = schedules.make("cosine", 0.2, total_steps=10, warmup_steps=0, decay_steps=1, decay_factor=1.0)
    np.testing.assert_allclose([float(schedule(0)), float(schedule(5))], [0.2, 0.1], rtol=1e-6)


def test_staircase_is_the_papers_division_every_decay_steps():
    schedule = schedules.make("staircase", 0.001, total_steps=100, warmup_steps=0, decay_steps=10,
                              decay_factor=0.1)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 9, 10, 19, 20)],
                               [1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-5)


def test_warmup_needs_cosine_and_must_fit_the_stage():
    from wsnn.config import TrainConfig

    with pytest.raises(ValueError, match="--warmup_steps=5: needs --lr_schedule=cosine"):
        TrainConfig.make(warmup_steps=5)
    with pytest.raises(ValueError, match="shorter than"):
        schedules.WarmupCosine(0.1, warmup_steps=10, total_steps=10)
