"""Shared test configuration: hypothesis profiles sized for a 2-core CI under 10 minutes, the
``torch`` fixture (the oracle, skipping where torch is absent) and ``--min-passed`` (CI's check that
the torch-free run stays large)."""

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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--min-passed", type=int, default=0, metavar="N",
                     help="fail the run if fewer than N tests pass (CI: the torch-free run stays large)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    minimum = session.config.getoption("--min-passed")
    if not minimum or hasattr(session.config, "workerinput"):  # xdist workers: the controller counts
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = sum(1 for report in reporter.stats.get("passed", []) if report.when == "call")
    if passed < minimum:
        reporter.write_line(f"only {passed} tests passed, fewer than --min-passed={minimum}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
