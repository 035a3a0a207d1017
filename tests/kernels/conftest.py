"""Fixtures shared by the kernel tests."""

from __future__ import annotations

import pytest

import npconv
from npconv import backends
from npconv.kernels import dense, pointwise


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def parallel(request, monkeypatch):
    """One and two worker threads, with the size thresholds of the pointwise and dense kernels
    lowered so that tiny test arrays take the split (worker-thread) path too."""
    monkeypatch.setattr(pointwise, "PARALLEL_MIN_SIZE", 0)
    monkeypatch.setattr(pointwise, "PARALLEL_CORE_MIN_SIZE", 0)
    monkeypatch.setattr(dense, "PARALLEL_MIN_MACS", 0)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(request.param)
    yield request.param
    npconv.set_num_threads(previous)


def _threads(count: int):
    previous = npconv.get_num_threads()
    npconv.set_num_threads(count)
    try:
        yield
    finally:
        npconv.set_num_threads(previous)


@pytest.fixture
def two_threads():
    """Two worker threads for the test, the previous count restored afterwards."""
    yield from _threads(2)


@pytest.fixture
def one_thread():
    """One thread for the test (every job runs on the calling thread), the previous count restored."""
    yield from _threads(1)


@pytest.fixture(params=("generic", "avx2", "avx512"))
def isa(request):
    """Each ISA variant of the compiled core in turn (skipped where the CPU lacks it), restored afterwards."""
    if request.param not in backends.core.isas:
        pytest.skip(f"this CPU lacks {request.param} (runs {backends.core.isas})")
    previous = backends.core.isa
    backends.core.isa = request.param
    yield request.param
    backends.core.isa = previous
