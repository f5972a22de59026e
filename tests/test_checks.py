"""Tests for the option range checks (wsnn.checks)."""

import pytest

from wsnn import checks


def test_at_least_one_names_the_first_bad_option():
    checks.at_least_one(top_k=1, batch_size=32)
    with pytest.raises(ValueError, match=r"^--top_k=0: must be >= 1$"):
        checks.at_least_one(top_k=0, batch_size=-1)
    with pytest.raises(ValueError, match=r"^--batch_size=-1: must be >= 1$"):
        checks.at_least_one(top_k=1, batch_size=-1)


def test_in_unit_interval_includes_the_ends_and_rejects_nan():
    checks.in_unit_interval(a=0, b=1, c=0.5)
    for value in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"^--w={value}: must be in \[0, 1\]$"):
            checks.in_unit_interval(w=value)
