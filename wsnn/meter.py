"""Wall time and peak resident memory of a block of code.

    with meter.PeakMemory() as usage:
        run()
    print(usage.seconds, usage.mib)

The benchmark measures every method with it (its rows' `seconds` and
`peak_mib`), and the tools that time a part of a run read `elapsed()` inside
the block.
"""

import ctypes
import threading
import time


class PeakMemory:
    """Peak resident memory (MiB) above the level at entry, sampled every 20 ms, and the wall time.

    Memory freed by earlier methods is handed back to the system first (glibc's `malloc_trim`, where
    there is one): otherwise a method could reuse it without raising the resident size, and its peak
    would read 0.

    Attributes (after the block):
      seconds: wall time of the block.
      mib: peak resident memory above the level at entry.
    """

    def __enter__(self):
        trim()
        self._start = self._peak = resident_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seconds = self.elapsed()
        self.mib = max(self._peak, resident_mib()) - self._start

    def elapsed(self):
        """Seconds since the block was entered (inside it: the time so far)."""
        return time.perf_counter() - self._started

    def _sample(self):
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, resident_mib())


def resident_mib():
    """This process's resident memory (VmRSS, read from /proc/self/status) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def trim():
    """Hands memory freed by earlier methods back to the system (glibc's `malloc_trim`; elsewhere nothing,
    and a peak may then read low)."""
    trim_fn = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own symbols: no library search
    if trim_fn is not None:
        trim_fn(0)
