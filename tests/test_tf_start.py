"""Tests for wsnn.tf_start: TensorFlow's start-up notices filtered, everything else kept."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796003665.184314   11809 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "I0000 00:00:1796003665.300358   11809 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
    "E0000 00:00:1796003801.341441   13331 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
]
OTHERS = ["E0000 00:00:1 some_op.cc:12] a real error", "Traceback-like line from Python"]


def _run(script, env=None):
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False,
                          env=dict(os.environ, **(env or {})))


def test_notices_are_dropped_and_other_lines_kept_in_order():
    lines = [NOTICES[0], OTHERS[0], *NOTICES[1:], OTHERS[1]]
    script = ("import os, sys\nfrom wsnn import tf_start\n"
              "with tf_start.filtered_stderr():\n"
              f"    os.write(2, {repr(''.join(line + chr(10) for line in lines[:4]))}.encode())\n"
              f"    print({lines[4]!r}, file=sys.stderr)\n"
              f"    os.write(2, {repr(''.join(line + chr(10) for line in lines[5:]))}.encode())\n"
              "print('after', file=sys.stderr)\n")
    result = _run(script)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [*OTHERS, "after"]


def test_everything_is_kept_when_the_block_fails():
    script = ("import os\nfrom wsnn import tf_start\n"
              "try:\n"
              "    with tf_start.filtered_stderr():\n"
              f"        os.write(2, {(NOTICES[2] + chr(10))!r}.encode())\n"
              "        raise RuntimeError('boom')\n"
              "except RuntimeError:\n"
              "    pass\n")
    assert _run(script).stderr.splitlines() == [NOTICES[2]]


def test_start_is_quiet_and_says_when_there_is_no_gpu():
    script = ("import os\nfrom wsnn import tf_start\ntf = tf_start.start()\n"
              "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\nprint(len(tf.config.list_physical_devices('GPU')))")
    result = _run(script)
    level, gpus = result.stdout.strip().splitlines()[-2:]
    assert not [line for line in result.stderr.splitlines() if line.strip()], result.stderr
    assert ("no GPU found: TensorFlow runs on the CPU" in result.stdout) == (gpus == "0")
    # Processes started after it are not taken for a user's setting: the variable is unset again.
    assert level == "None"
    # A user's own TF_CPP_MIN_LOG_LEVEL leaves TensorFlow's output alone.
    loud = _run(script, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert "cpu_feature_guard" in loud.stderr or gpus != "0"
