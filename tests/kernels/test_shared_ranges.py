"""Shared item ranges (csrc/core.c ``jobs_share``, ``workspace.SHARED_RANGES``): the workers of a
GEMM, Winograd or grouped forward or grad_input call claim runs of items from one range instead of each
running a fixed share, so a worker that starts late or runs on a slowed CPU takes fewer. Every item
runs exactly once whichever worker claims it: results are bit for bit those of the fixed split."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import reference
from kernel_checks import relative_error
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import gemm, plan, workspace

compiled_depthwise = pytest.importorskip("npconv.kernels.compiled_depthwise",
                                         reason="the compiled core is not in use")
compiled_gemm = pytest.importorskip("npconv.kernels.compiled_gemm", reason="the compiled core is not in use")


def _dw_jobs(x, w, geom, count):
    """``count`` depthwise forward jobs over all of x's planes, each with its own scratch, and y."""
    core = backends.core.module
    n, c = x.shape[:2]
    geometry = compiled_depthwise._geometry(n, c, 1, x.shape[2:], geom)
    size = compiled_depthwise._scratch(0, geometry)
    y = np.full((n, c) + geom.output_size(x.shape[2:]), np.nan)
    isa = backends.core.isa_index
    jobs = [core.depthwise2d_forward_job(isa, x, w, None, y, np.empty(size), geometry, 0, n * c)
            for _ in range(count)]
    return jobs, y


def test_one_job_of_a_shared_range_runs_every_item():
    """A worker that never starts: the job that runs claims every run of the range, the last one
    short (7 planes in runs of 3)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 7, 9, 9)), rng.standard_normal((7, 1, 3, 3))
    geom = ConvGeometry.create(3, 2, 1, groups=7, ndim=2)
    jobs, y = _dw_jobs(x, w, geom, 2)
    counter = np.zeros(1, np.int64)
    backends.core.module.jobs_share(jobs, counter, 3)
    backends.core.module.job_run(jobs[0])
    assert counter[0] >= 7
    np.testing.assert_allclose(y, reference.conv(x, w, stride=2, padding=1, groups=7), rtol=1e-12, atol=1e-12)
    y[...] = np.nan  # the other job, run afterwards, finds nothing left
    backends.core.module.job_run(jobs[1])
    assert np.isnan(y).all()


def test_a_grouped_forward_of_one_item_shares_its_rows():
    """The grouped forward's job of a single item (one image, one group: a stem at batch 1) shares its
    output rows: one job run alone claims every band of rows (the counter passes the last row, not the
    one item), the other then finds none left; jobs over different rows are refused."""
    compiled_grouped = pytest.importorskip("npconv.kernels.compiled_grouped")
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 3, 23, 20)), rng.standard_normal((8, 3, 5, 5))
    geom = ConvGeometry.create(5, 2, 2, ndim=2)
    geometry = compiled_grouped._geometry(1, 1, 3, 8, (23, 20), geom)
    core, isa = backends.core.module, backends.core.isa_index
    size = core.grouped2d_scratch(0, geometry)
    y = np.full((1, 8) + geom.output_size((23, 20)), np.nan)
    rows = y.shape[2]
    def job(last_row: int):
        return core.grouped2d_forward_job(isa, x, w, None, y, np.empty(size), geometry, 0, 1, 0, 0.0, 0.0, 0,
                                          last_row)

    jobs = [job(rows), job(rows)]
    counter = np.zeros(1, np.int64)
    core.jobs_share(jobs, counter, 2)
    core.job_run(jobs[0])
    assert rows < counter[0] <= rows + 2  # the last claim finds the range used up
    np.testing.assert_allclose(y, reference.conv(x, w, stride=2, padding=2), rtol=1e-12, atol=1e-12)
    y[...] = np.nan
    core.job_run(jobs[1])
    assert np.isnan(y).all()
    whole, half = job(rows), job(5)
    with pytest.raises(ValueError, match=rf"every job must cover \[0, {rows}\), job 1 covers \[0, 5\)"):
        core.jobs_share([whole, half], counter, 2)


def test_jobs_share_checks_its_arguments():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 4, 6, 6)), rng.standard_normal((4, 1, 3, 3))
    geom = ConvGeometry.create(3, 1, 1, groups=4, ndim=2)
    core = backends.core.module
    jobs, _ = _dw_jobs(x, w, geom, 2)
    counter = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="chunk must be at least 1, got 0"):
        core.jobs_share(jobs, counter, 0)
    with pytest.raises(TypeError, match="int64"):
        core.jobs_share(jobs, np.zeros(1), 1)
    n, c = x.shape[:2]
    geometry = compiled_depthwise._geometry(n, c, 1, x.shape[2:], geom)
    other = core.depthwise2d_forward_job(backends.core.isa_index, x, w, None, np.empty((1, 4, 6, 6)),
                                         np.empty(compiled_depthwise._scratch(0, geometry)), geometry, 1, 4)
    with pytest.raises(ValueError, match=r"every job must cover \[0, 4\), job 1 covers \[1, 4\)"):
        core.jobs_share([jobs[0], other], counter, 1)
    flat = np.ones(8)
    relu = core.relu_forward_job(backends.core.isa_index, flat, flat, 0, 8)
    with pytest.raises(ValueError, match="no item range to share"):
        core.jobs_share([relu, relu], counter, 1)
    with pytest.raises(TypeError, match="expected a job"):
        core.jobs_share([jobs[0], 3], counter, 1)
    assert counter[0] == 0  # a rejected call leaves the counter alone


_CASES = {
    # name: (algorithm, x shape, w shape, stride, padding, groups)
    "gemm": ("gemm", (3, 8, 20, 20), (16, 8, 3, 3), 1, 1, 1),
    "gemm strided": ("gemm", (2, 8, 21, 19), (12, 8, 3, 3), 2, 1, 1),
    "gemm pointwise": ("gemm", (2, 24, 17, 15), (40, 24, 1, 1), 1, 0, 1),
    "winograd": ("winograd", (3, 16, 23, 21), (16, 16, 3, 3), 1, 1, 1),
    "grouped": ("grouped", (3, 32, 20, 19), (24, 4, 3, 3), 1, 1, 8),
}


@pytest.mark.parametrize("case", list(_CASES))
@pytest.mark.parametrize("claims", [4, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_and_fixed_splits_agree_bit_for_bit(case, claims, dtype, two_threads, monkeypatch):
    """Forward and grad_input on two threads, shared ranges (claims of about items / 8, and of one
    item) against the fixed split: equal bits, and the NumPy reference within rounding (float64: the
    BLAS products on each worker)."""
    algorithm, x_shape, w_shape, stride, padding, groups = _CASES[case]
    rng = np.random.default_rng(len(case) * 10 + claims)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    geom = ConvGeometry.create(w_shape[2:], stride, padding, groups=groups, ndim=2)
    geom = geom.with_padding(geom.pads(x_shape[2:]))
    gy = rng.standard_normal(x_shape[:1] + w_shape[:1] + geom.output_size(x_shape[2:])).astype(dtype)
    monkeypatch.setattr(workspace, "CLAIMS_PER_WORKER", claims)
    monkeypatch.setattr(workspace, "SHARED_MIN_MACS", 0)
    for module in (gemm, compiled_gemm):  # these small calls on both workers
        monkeypatch.setattr(module, "WORKER_MIN_MACS", 0)
    shared_calls = []
    share = backends.core.module.jobs_share
    monkeypatch.setattr(backends.core.module, "jobs_share", lambda *a: (shared_calls.append(a), share(*a))[1])
    results = {}
    with npconv.backends.conv.force(algorithm):
        for shared in (True, False):
            monkeypatch.setattr(workspace, "SHARED_RANGES", shared)
            results[shared] = (plan.forward(x, w, geom), plan.grad_input(gy, w, geom, x_shape[2:]))
            assert len(shared_calls) == (2 if shared else 0)
            shared_calls.clear()
    for got, fixed in zip(results[True], results[False], strict=True):
        np.testing.assert_array_equal(got, fixed)
    y64 = reference.conv(x.astype(np.float64), w.astype(np.float64), stride=stride, padding=padding,
                         groups=groups)
    assert relative_error(results[True][0], y64) < (1e-5 if dtype == np.float32 else 1e-12)


def test_small_calls_keep_fixed_ranges(two_threads, monkeypatch):
    """Below SHARED_MIN_MACS a call's workers keep their fixed ranges (sharing costs more than a
    stalled worker could); shared_chunk is the one rule."""
    claims = 2 * workspace.CLAIMS_PER_WORKER
    assert workspace.shared_chunk(100, 2, workspace.SHARED_MIN_MACS) == -(-100 // claims)
    assert workspace.shared_chunk(100, 2, workspace.SHARED_MIN_MACS - 1) == 0
    assert workspace.shared_chunk(100, 1, 10**12) == 0
    monkeypatch.setattr(workspace, "SHARED_RANGES", False)
    assert workspace.shared_chunk(100, 2, 10**12) == 0
    monkeypatch.setattr(workspace, "SHARED_RANGES", True)
    for module in (gemm, compiled_gemm):
        monkeypatch.setattr(module, "WORKER_MIN_MACS", 0)
    monkeypatch.setattr(compiled_gemm, "DIRECT_LANES", False)  # the packed path's items (direct: fixed parts)
    shared_calls = []
    share = backends.core.module.jobs_share
    monkeypatch.setattr(backends.core.module, "jobs_share", lambda *a: (shared_calls.append(a), share(*a))[1])
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 24, 24)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    geom = ConvGeometry.create(3, 2, 1, ndim=2)
    geom = geom.with_padding(geom.pads(x.shape[2:]))
    with npconv.backends.conv.force("gemm"):
        for least, expected in ((10**12, 0), (0, 1)):
            monkeypatch.setattr(workspace, "SHARED_MIN_MACS", least)
            plan.forward(x, w, geom)
            assert len(shared_calls) == expected
