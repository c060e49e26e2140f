"""Shared test configuration: hypothesis profiles and the optional ../shared conformance layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile(
    "dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the repository; skips the test where it is absent (a fresh clone)."""
    if not (SHARED_DIR / "binance").is_dir():
        pytest.skip("../shared is absent: conformance layer skipped")
    return SHARED_DIR
