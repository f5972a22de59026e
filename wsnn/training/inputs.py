"""Batches read ahead: the input side of a stage overlapped with its steps.

Building a batch has a part that does not depend on the weights (which
images, reading them from the decoded cache or the image array, their user
tags; for Algorithm 1 also every anchor's candidates and their images) and,
in stage 2, a part that does (re-embedding the candidates with the live
network and keeping the m-1 nearest). `Prefetcher` is the `next_batch` of
`wsnn.training.loop.run_stage`: while step t trains, one background thread
prepares step t+1; the weight-dependent part runs in the caller's thread
after step t, so every batch is exactly the batch it would be without
reading ahead (same neighbours, same weights digest).

Why a thread, not `tf.data`: the batches are NumPy arrays built by fancy
indexing into a uint8 array (`wsnn.data.decoded`) and by Algorithm 1's
NumPy ranking; a `tf.data` pipeline would only wrap the same Python in
`tf.numpy_function`, which runs it in a thread of TensorFlow's pool, and
it would hold the GIL alike.

`wsnn.training.hooks.InputWait` reports how long steps waited: for the
prepared part (`wait_seconds`) and for the weight-dependent part
(`finish_seconds`).
"""

import concurrent.futures
import time


class Prefetcher:
    """`next_batch(epoch, step)` that prepares the following step's batch in the background.

    Args:
      prepare: callable(epoch, step) -> the batch's weight-independent part;
        must not read anything a step or a hook changes.
      steps_per_epoch: steps per epoch of the stage (to know the next
        position).
      finish: callable(prepared) -> (images, user_tags, indices); runs in
        the caller's thread. Default: `prepare` already gives the batch.
      enabled: False reads every batch when it is asked for (the same
        batches, nothing overlapped).
    """

    def __init__(self, prepare, steps_per_epoch, finish=None, enabled=True):
        self.prepare = prepare
        self.finish = finish or (lambda prepared: prepared)
        self.steps_per_epoch = steps_per_epoch
        self.enabled = bool(enabled)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wsnn-input") if enabled else None
        self._ahead = None  # (position, future) of the batch being prepared
        self.wait_seconds = 0.0  # the last batch: waiting for its prepared part
        self.finish_seconds = 0.0  # the last batch: its weight-dependent part

    def __call__(self, epoch, step):
        started = time.perf_counter()
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == (epoch, step):
            prepared = ahead[1].result()
        else:  # the first batch, or a position other than the one read ahead
            if ahead is not None:
                ahead[1].cancel()
            prepared = self.prepare(epoch, step)
        if self._pool is not None:
            following = (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)
            self._ahead = (following, self._pool.submit(self.prepare, *following))
        waited = time.perf_counter()
        batch = self.finish(prepared)
        self.wait_seconds, self.finish_seconds = waited - started, time.perf_counter() - waited
        return batch

    def close(self):
        """Drops the batch read ahead (a stage's last one has no step) and ends the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._ahead = None
