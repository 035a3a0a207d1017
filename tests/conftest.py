"""Shared test configuration: hypothesis profiles sized for a 2-core CI under 10 minutes."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("NPCONV_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def torch():
    """The torch module, the oracle for parity tests; a test that takes it is skipped without torch
    (so the torch-free tests of the same module still run)."""
    return pytest.importorskip("torch")
