"""Shared fixtures: a TestClock and an in-memory engine factory."""

import pytest

from durable_jobs.testing import TestClock


@pytest.fixture
def clock() -> TestClock:
    """A deterministic clock starting at 2026-01-01T00:00Z."""
    return TestClock()
