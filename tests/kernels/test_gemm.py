"""The GEMM kernel's three passes against the NumPy reference (tests/reference.py, itself
checked against torch) on every path.

Paths: direct 1x1 (no copy), im2col tiles (padded slab / unpadded view), row-shift im2col (stride 1
along the first axis: one GEMM per kernel row), polyphase im2col (strided), stride-1 grad_input as a
forward convolution of the padded gradient (including padding wider than the kernel, which
crops), strided grad_input by col2im, grouped and depthwise as batched matmuls, tiny workspace
caps (one output row per tile), one and two threads, N-d for 1-4 spatial dimensions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import reference
from kernel_checks import draw_geometry
from npconv.geometry import ConvGeometry
from npconv.kernels import gemm
from torch_oracle import TOL


def _geometry(kernel, stride, padding, dilation, groups, size):
    geom = ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=len(size))
    return geom.with_padding(geom.pads(size))


def _random(rng, shape, dtype):
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def _output_shape(x, w, geom):
    return (x.shape[0], w.shape[0]) + geom.output_size(x.shape[2:])


def check_passes(n, c, o, size, kernel, stride=1, padding=0, dilation=1, groups=1, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    geom = _geometry(kernel, stride, padding, dilation, groups, size)
    x = _random(rng, (n, c) + tuple(size), dtype)
    w = _random(rng, (o, c // groups) + geom.kernel_size, dtype)
    gy = _random(rng, _output_shape(x, w, geom), dtype)
    # complex gradients are J^H gy (as torch's): the kernel passes and the reference take conjugates
    y_ref = reference.conv_passes(x, w, gy, geom)[0]
    _, gx_ref, gw_ref = reference.conv_passes(np.conj(x), np.conj(w), gy, geom)
    y = gemm.forward(x, w, geom)
    gx = gemm.grad_input(gy, np.conj(w), geom, tuple(size))
    gw = gemm.grad_weight(np.conj(x), gy, geom)
    tol = TOL[np.dtype(dtype)]
    for name, ours, ref in (("y", y, y_ref), ("gx", gx, gx_ref), ("gw", gw, gw_ref)):
        assert ours.shape == ref.shape, name
        assert ours.dtype == np.dtype(dtype), name
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(
            ours,
            ref,
            rtol=tol["rtol"],
            atol=tol["atol"] * scale,
            err_msg=f"{name}: {size=} {kernel=} {stride=} {padding=} {dilation=} {groups=}",
        )


@pytest.fixture(params=[(1, False, True), (2, False, True), (2, True, True), (1, False, False),
                        (2, True, False)],
                ids=["1", "2blas", "2workers", "1per-image", "2workers-per-image"])
def threads(request, monkeypatch):
    """Thread count, whether work items run on Python worker threads (single-threaded BLAS), and
    whether small images take the batched path (else one image per work item)."""
    count, workers, batched = request.param
    previous = npconv.get_num_threads()
    npconv.set_num_threads(count)
    monkeypatch.setattr(gemm, "WORKER_THREADS", workers)
    if not batched:
        monkeypatch.setattr(gemm, "BATCH_CHUNK_BYTES", 0)
    monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 0)  # the tests' tiny convolutions use the workers too
    yield count
    npconv.set_num_threads(previous)


@pytest.fixture
def tiny_workspace(monkeypatch):
    """Force one output row per tile (and so many tiles per image)."""
    monkeypatch.setattr(gemm, "WORKSPACE_BYTES", 1)
    gemm.clear_workspace()


PATHS = {
    "direct 1x1": dict(n=3, c=6, o=4, size=(5, 7), kernel=1),
    "direct 1x1 grouped": dict(n=2, c=6, o=9, size=(5, 3), kernel=1, groups=3),
    "1x1 strided": dict(n=2, c=3, o=4, size=(7, 8), kernel=1, stride=(2, 3)),
    "1x1 padded": dict(n=2, c=3, o=2, size=(4, 5), kernel=1, padding=1),
    "3x3 same": dict(n=3, c=4, o=5, size=(7, 6), kernel=3, padding=1),
    "widening 3x3 (stride-1 grad_input by col2im)": dict(n=2, c=1, o=8, size=(6, 5), kernel=3, padding=1),
    "widening grouped 1-d": dict(n=2, c=2, o=8, size=(9,), kernel=3, padding=((2, 1),), groups=2),
    "unpadded (slab is a view)": dict(n=2, c=3, o=4, size=(6, 9), kernel=(3, 2)),
    "asymmetric padding": dict(n=2, c=3, o=4, size=(6, 5), kernel=3, padding=((2, 0), (1, 3))),
    "padding wider than kernel (crop in adjoint)": dict(n=1, c=2, o=3, size=(4, 5), kernel=2, padding=3),
    "strided col2im": dict(n=3, c=4, o=6, size=(9, 8), kernel=3, stride=2, padding=1),
    "stride larger than kernel": dict(n=2, c=3, o=2, size=(11, 10), kernel=2, stride=3),
    "stem-like 7x7/2 odd": dict(n=2, c=3, o=4, size=(15, 13), kernel=7, stride=2, padding=3),
    "dilated": dict(n=2, c=3, o=4, size=(9, 10), kernel=3, padding=2, dilation=2),
    "dilated strided": dict(n=2, c=4, o=4, size=(13, 11), kernel=3, stride=2, padding=1, dilation=(2, 3)),
    "grouped": dict(n=2, c=6, o=9, size=(7, 6), kernel=3, padding=1, groups=3),
    "grouped strided": dict(n=2, c=8, o=4, size=(9, 7), kernel=3, stride=2, groups=4),
    "depthwise": dict(n=2, c=5, o=5, size=(8, 7), kernel=3, padding=1, groups=5),
    "depthwise multiplier 2 strided": dict(
        n=2, c=3, o=6, size=(9, 9), kernel=5, stride=2, padding=2, groups=3
    ),
    "kernel equals input": dict(n=2, c=3, o=2, size=(5, 4), kernel=(5, 4)),
    "1-d long kernel": dict(n=2, c=3, o=2, size=(40,), kernel=17, padding=8),
    "1-d strided dilated": dict(n=3, c=2, o=3, size=(31,), kernel=4, stride=3, padding=2, dilation=2),
    "3-d": dict(n=2, c=3, o=4, size=(5, 6, 4), kernel=3, padding=1),
    "3-d strided grouped": dict(n=1, c=4, o=4, size=(7, 6, 5), kernel=(3, 2, 3), stride=(2, 1, 2), groups=2),
    "4-d": dict(n=2, c=2, o=3, size=(4, 5, 3, 4), kernel=(2, 3, 2, 2), padding=1),
    "4-d strided dilated": dict(n=1, c=2, o=2, size=(6, 4, 5, 5), kernel=2, stride=(2, 1, 2, 1), dilation=2),
}


@pytest.mark.parametrize("case", PATHS.values(), ids=PATHS.keys())
def test_paths_float64(case, threads):
    check_passes(**case)


@pytest.mark.parametrize("case", PATHS.values(), ids=PATHS.keys())
def test_paths_tiled_to_single_rows(case, tiny_workspace):
    check_passes(**case, seed=1)


@pytest.mark.parametrize("name", ["direct 1x1", "direct 1x1 grouped"])
def test_direct_1x1_over_worker_threads(name, threads, monkeypatch):
    """The per-image (worker thread) variant of the 1x1 path that the batched matmul replaces."""
    monkeypatch.setattr(gemm, "DIRECT_BATCHED", False)
    check_passes(**PATHS[name], seed=12)
    check_passes(**dict(PATHS[name], n=1), seed=13)


ROW_SHIFT_CASES = ["3x3 same", "asymmetric padding", "padding wider than kernel (crop in adjoint)", "dilated",
                   "grouped", "3-d", "4-d", "unpadded (slab is a view)"]


@pytest.mark.parametrize("name", ROW_SHIFT_CASES)
def test_full_im2col_without_row_shift(name, monkeypatch):
    """The plain im2col path that the row-shift path replaces for stride-1 first axes."""
    monkeypatch.setattr(gemm, "ROW_SHIFT", False)
    check_passes(**PATHS[name], seed=11)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.complex128])
@pytest.mark.parametrize(
    "name", ["direct 1x1 grouped", "3x3 same", "strided col2im", "grouped", "3-d", "depthwise"]
)
def test_dtypes(name, dtype):
    check_passes(**PATHS[name], dtype=dtype, seed=2)


def test_single_image_split_over_threads_and_tiles(tiny_workspace, monkeypatch):
    monkeypatch.setattr(gemm, "WORKER_THREADS", True)
    monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 0)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(2)
    try:
        check_passes(n=1, c=3, o=5, size=(9, 8), kernel=3, stride=1, padding=1, seed=3)
        check_passes(n=1, c=3, o=5, size=(9, 8), kernel=3, stride=2, padding=1, seed=4)
    finally:
        npconv.set_num_threads(previous)


def test_mixed_dtypes_promote():
    geom = _geometry(3, 1, 1, 1, 1, (5, 5))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3))
    y = gemm.forward(x, w, geom)
    assert y.dtype == np.float64  # float32 input values, float64 arithmetic: the reference's result
    expected = reference.conv(x.astype(np.float64), w, None, geom.stride, geom.pads(), geom.dilation)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_empty_batch():
    geom = _geometry(3, 1, 1, 1, 1, (5, 5))
    x = np.zeros((0, 3, 5, 5))
    w = np.ones((4, 3, 3, 3))
    assert gemm.forward(x, w, geom).shape == (0, 4, 5, 5)
    assert gemm.grad_input(np.zeros((0, 4, 5, 5)), w, geom, (5, 5)).shape == (0, 3, 5, 5)
    gw = gemm.grad_weight(x, np.zeros((0, 4, 5, 5)), geom)
    assert gw.shape == w.shape and not gw.any()


@given(
    nd=st.integers(1, 3),
    data=st.data(),
    groups=st.sampled_from([1, 2, 3]),
    per_group=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    batch=st.integers(1, 3),
    cap=st.sampled_from([1, 500, 64 * 2**20]),
    batched=st.booleans(),
)
def test_random_geometries(nd, data, groups, per_group, batch, cap, batched):
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 4, 3, 5)
    previous = gemm.WORKSPACE_BYTES, gemm.BATCH_CHUNK_BYTES
    gemm.WORKSPACE_BYTES = cap
    gemm.BATCH_CHUNK_BYTES = 4 * 2**20 if batched else 0
    try:
        check_passes(
            batch,
            groups * per_group[0],
            groups * per_group[1],
            size,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            seed=7,
        )
    finally:
        gemm.WORKSPACE_BYTES, gemm.BATCH_CHUNK_BYTES = previous


def test_finite_differences_without_torch():
    """Directional derivatives of ``L = <conv(x, w), gy>`` match the kernel's gradients."""
    rng = np.random.default_rng(8)
    geom = _geometry((3, 2), (2, 1), ((1, 0), (2, 1)), (1, 2), 2, (7, 6))
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    gy = rng.standard_normal(_output_shape(x, w, geom))
    vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    eps = 1e-6

    def loss(xv, wv):
        return float(np.sum(gemm.forward(xv, wv, geom) * gy))

    dx = (loss(x + eps * vx, w) - loss(x - eps * vx, w)) / (2 * eps)
    dw = (loss(x, w + eps * vw) - loss(x, w - eps * vw)) / (2 * eps)
    assert np.isclose(dx, np.sum(gemm.grad_input(gy, w, geom, (7, 6)) * vx), rtol=1e-7)
    assert np.isclose(dw, np.sum(gemm.grad_weight(x, gy, geom) * vw), rtol=1e-7)


ACCURACY_CASES = {
    "3x3 64ch": dict(n=2, c=64, o=32, size=(20, 20), kernel=3, padding=1),
    "7x7/2": dict(n=2, c=3, o=16, size=(40, 40), kernel=7, stride=2, padding=3),
    "1x1": dict(n=2, c=128, o=64, size=(10, 10), kernel=1),
    "1-d k31": dict(n=2, c=16, o=16, size=(300,), kernel=31, padding=15),
}


@pytest.mark.parametrize("case", ACCURACY_CASES.values(), ids=ACCURACY_CASES.keys())
def test_float32_accuracy_bound(case):
    """float32 results within 2e-6 norm-relative error of a float64 reference (tests/reference.py)."""
    rng = np.random.default_rng(9)
    geom = _geometry(case["kernel"], case.get("stride", 1), case.get("padding", 0), 1, 1, case["size"])
    x = rng.standard_normal((case["n"], case["c"]) + case["size"])
    w = rng.standard_normal((case["o"], case["c"]) + geom.kernel_size) / np.sqrt(
        case["c"] * np.prod(geom.kernel_size)
    )
    gy = rng.standard_normal(_output_shape(x, w, geom))
    refs = reference.conv_passes(x, w, gy, geom)
    x32, w32, gy32 = (a.astype(np.float32) for a in (x, w, gy))
    ours = (
        gemm.forward(x32, w32, geom),
        gemm.grad_input(gy32, w32, geom, case["size"]),
        gemm.grad_weight(x32, gy32, geom),
    )
    for name, a, r in zip(("y", "gx", "gw"), ours, refs, strict=True):
        assert a.dtype == np.float32
        error = np.linalg.norm(a.astype(np.float64) - r) / np.linalg.norm(r)
        assert error <= 2e-6, f"{name}: relative error {error:.2e}"


def test_workspace_cap_bounds_scratch_memory(monkeypatch):
    """With a 1 MiB cap, a 7x7 conv of a 256x256 image (full im2col: 37 MiB) uses a few MiB of scratch."""
    import tracemalloc

    monkeypatch.setattr(gemm, "WORKSPACE_BYTES", 2**20)
    rng = np.random.default_rng(10)
    size = (256, 256)
    geom = _geometry(7, 1, 3, 1, 1, size)
    x = rng.standard_normal((1, 3) + size).astype(np.float32)
    w = rng.standard_normal((4, 3, 7, 7)).astype(np.float32)
    gy = rng.standard_normal((1, 4) + size).astype(np.float32)
    passes = {
        "forward": lambda: gemm.forward(x, w, geom),
        "grad_input": lambda: gemm.grad_input(gy, w, geom, size),
        "grad_weight": lambda: gemm.grad_weight(x, gy, geom),
    }
    for name, run in passes.items():
        gemm.clear_workspace()
        tracemalloc.start()
        try:
            result = run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak - result.nbytes <= 4 * 2**20, f"{name}: {peak / 2**20:.1f} MiB"


def test_small_calls_stay_on_the_calling_thread(monkeypatch):
    """Below WORKER_MIN_MACS an ungrouped call runs on the caller; grouped calls always use workers."""
    monkeypatch.setattr(gemm, "WORKER_THREADS", True)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(2)
    try:
        geom = ConvGeometry.create((3, 3), 1, 1).with_padding(1)
        small = gemm._Layout((2, 4, 8, 8), (4, 4, 3, 3), geom, (8, 8), np.dtype(np.float32))
        assert gemm._workers(small) == 1
        monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 0)
        assert gemm._workers(small) == 2
        monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 2**24)
        grouped_geom = ConvGeometry.create((3, 3), 1, 1, 1, 2).with_padding(1)
        grouped = gemm._Layout((2, 4, 8, 8), (4, 2, 3, 3), grouped_geom, (8, 8), np.dtype(np.float32))
        assert gemm._workers(grouped) == 2
        with gemm.on_blas_threads():
            monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 0)
            assert gemm._workers(small) == 1
    finally:
        npconv.set_num_threads(previous)
