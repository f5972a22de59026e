"""TensorFlow, started quietly: its start-up notices filtered out, and one line of ours instead.

TensorFlow's C++ runtime writes notices to stderr while it loads, before any
log setting applies: absl's "All log messages before absl::InitializeLog()",
cudart_stub's "Could not find cuda drivers", cpu_feature_guard's build hint
and, on a machine without a GPU, an error-level "failed call to cuInit" that
reads like a failure. `start` sets TF_CPP_MIN_LOG_LEVEL to 2 (errors only)
unless the user set it, imports TensorFlow and lists the GPUs with file
descriptor 2 sent to a temporary file, then writes back every line but those
notices; without a GPU it says so in one line. A user who set
TF_CPP_MIN_LOG_LEVEL sees TensorFlow's output untouched.
"""

import contextlib
import os
import re
import sys
import tempfile

# TensorFlow's start-up notices (one pattern per kind of line).
NOTICES = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
    r"cuda_(platform|executor|diagnostics)\.cc:\d+\] (failed call to cuInit|.*kernel driver does not appear)",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc:\d+\] computation placer already registered",
    r"oneDNN custom operations are on",
]))


@contextlib.contextmanager
def filtered_stderr():
    """Sends file descriptor 2 to a temporary file for the block, then writes back every line that is
    not one of TensorFlow's start-up `NOTICES` (all of them, if the block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if failed or not NOTICES.search(line)))
            sys.stderr.flush()


@contextlib.contextmanager
def _log_level(level):
    """TF_CPP_MIN_LOG_LEVEL=`level` while TensorFlow loads (it reads the variable then), and unset
    again after, so that processes this one starts are not taken for a user's setting."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
    try:
        yield
    finally:
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


def start(log=print):
    """Imports TensorFlow quietly (see the module docstring) and returns it.

    Args:
      log: callable(text) for our one line when there is no GPU.
    """
    user_set = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    with contextlib.nullcontext() if user_set else _log_level("2"), \
            contextlib.nullcontext() if user_set else filtered_stderr():
        import tensorflow as tf

        # Lists devices without initialising the runtime (logical CPU devices can still be made);
        # this is where a machine without a GPU logs "failed call to cuInit".
        gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        log(f"no GPU found: TensorFlow runs on the CPU ({os.cpu_count()} cores)")
    return tf
