"""Tests of wsnn.training.inputs: batches read ahead are the batches read in turn."""

import threading

import numpy as np
import pytest

from wsnn.training import inputs


class _Recorder:
    """prepare/finish that record which thread ran them and build a batch from the position."""

    def __init__(self):
        self.prepared, self.finished = [], []

    def prepare(self, epoch, step):
        self.prepared.append(((epoch, step), threading.current_thread().name))
        return np.full(3, 10 * epoch + step)

    def finish(self, prepared):
        self.finished.append(threading.current_thread().name)
        return prepared, prepared * 2, prepared + 1


@pytest.mark.parametrize("enabled", [True, False])
def test_read_ahead_gives_the_same_batches_and_finishes_in_the_caller(enabled):
    recorder = _Recorder()
    prefetcher = inputs.Prefetcher(recorder.prepare, 3, recorder.finish, enabled=enabled)
    positions = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    try:
        batches = [prefetcher(*p) for p in positions]
    finally:
        prefetcher.close()
    for (epoch, step), (a, b, c) in zip(positions, batches):
        np.testing.assert_array_equal(a, np.full(3, 10 * epoch + step))
        np.testing.assert_array_equal(b, 2 * a)
        np.testing.assert_array_equal(c, a + 1)
    caller = threading.current_thread().name
    assert recorder.finished == [caller] * len(positions)
    done = [p for p, _ in recorder.prepared]
    if enabled:
        # The first batch in the caller's thread, then always the next position (across the epoch's
        # end) in the reading thread, one ahead; the last one read ahead is dropped (or cancelled).
        assert recorder.prepared[0] == ((0, 0), caller)
        assert done in (positions, positions + [(1, 2)])
        assert all(name.startswith("wsnn-input") for _, name in recorder.prepared[1:])
    else:
        assert recorder.prepared == [(p, caller) for p in positions]
    assert prefetcher.wait_seconds >= 0 and prefetcher.finish_seconds >= 0


def test_a_position_other_than_the_one_read_ahead_is_read_then():
    recorder = _Recorder()
    prefetcher = inputs.Prefetcher(recorder.prepare, 5, recorder.finish)
    try:
        prefetcher(0, 0)
        batch = prefetcher(3, 4)  # e.g. resuming elsewhere: (0, 1) was read ahead and is not used
        np.testing.assert_array_equal(batch[0], np.full(3, 34))
        np.testing.assert_array_equal(prefetcher(4, 0)[0], np.full(3, 40))  # (3, 4) was the epoch's last
    finally:
        prefetcher.close()


def test_an_error_while_reading_ahead_reaches_the_caller():
    def prepare(epoch, step):
        if step == 1:
            raise ValueError("bad batch")
        return step

    prefetcher = inputs.Prefetcher(prepare, 4)
    try:
        assert prefetcher(0, 0) == 0
        with pytest.raises(ValueError, match="bad batch"):
            prefetcher(0, 1)
    finally:
        prefetcher.close()
