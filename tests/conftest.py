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
