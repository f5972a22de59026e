"""Shared test fixtures."""

import os

import pytest

from wsnn import wordnet as wordnet_lib


@pytest.fixture(scope="session")
def wordnet(tmp_path_factory):
    """WordNet built from Debian's files into a test-private cache."""
    if not os.path.isdir(wordnet_lib.SYSTEM_DIR):
        pytest.fail(f"{wordnet_lib.SYSTEM_DIR} missing: run `bash tools/setup.sh` "
                    "(installs wordnet-base and wordnet-sense-index)")
    return wordnet_lib.get_wordnet(cache_dir=str(tmp_path_factory.mktemp("wsnn-cache")),
                                   use_nltk_data=False)


# Distribution tests (tests/test_losses.py) compare 2 replicas with 1 on this
# CPU-only machine; MirroredStrategy needs 2 devices, and TensorFlow can split
# the CPU into logical devices only before its runtime initialises (at the
# first op). conftest is imported before any test module, so it is done here.
import tensorflow as tf  # noqa: E402

try:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
    pass  # already initialised; the distribution test then fails with a clear message


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One MirroredStrategy over the 2 logical CPUs for every in-process test.

    Several strategies in one process can hand out clashing collective
    instance keys; sharing one avoids that.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
