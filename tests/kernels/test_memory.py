"""Memory and cost bounds of every algorithm and pass.

* Memory: the peak extra memory of a pass (its result included, tracemalloc from cold scratch
  caches) is at most ``2 * (operands + result) + 64 MiB`` (:func:`npconv.kernels.workspace.memory_bound`)
  for every registered algorithm that supports the call, on shapes where a full-size intermediate
  (padded slab, whole-image spectra, untiled transforms) would break it.
* Cost: a huge stride or padding costs no more than the output needs (every pass in milliseconds,
  checked with a generous wall-clock cap), with torch parity or a NumPy reference.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np
import pytest

import npconv
from kernel_checks import assert_passes_are_adjoint, direct_conv
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm, fft, gemm, plan, workspace

MiB = 2**20


def _peak_extra(run):
    """``(result, peak bytes allocated while run() ran)`` from cold scratch caches."""
    workspace.clear()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = run()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        workspace.clear()
    return result, peak


#: name -> (x shape, w shape, geometry arguments): shapes where a full-size intermediate breaks the
#: bound scaled to a 4 MiB scratch term (see ``small_scratch``): a dense layer's whole kernel
#: spectrum, a padded slab growing with padding^2, a single image's untiled Winograd transforms,
#: the shifted copies of one big depthwise plane.
CASES = {
    "dense 3x3": ((1, 32, 80, 80), (32, 32, 3, 3), dict(padding=1)),
    "dense 4->32 9x9": ((1, 4, 96, 96), (32, 4, 9, 9), dict(padding=4)),
    "depthwise 31x31": ((2, 8, 40, 40), (8, 1, 31, 31), dict(padding=15, groups=8)),
    "depthwise 7x7 one big plane": ((1, 1, 320, 320), (1, 1, 7, 7), dict(padding=3)),
    "strided 3x3/2": ((2, 16, 96, 96), (16, 16, 3, 3), dict(stride=2, padding=1)),
    "dilated, padding 300": ((1, 4, 8, 8), (4, 4, 3, 3), dict(padding=300, dilation=300)),
    "depthwise dilated, padding 150": ((1, 32, 8, 8), (32, 1, 3, 3),
                                       dict(padding=150, dilation=150, groups=32)),
    "1-d long, k=255": ((1, 8, 25_000), (8, 8, 255), dict(padding=127)),
    "wide 3x3 on few pixels": ((8, 256, 8, 8), (256, 256, 3, 3), dict(padding=1)),  # Winograd's U: 4x w
    "wide 3x3 on 32x32": ((8, 256, 32, 32), (256, 256, 3, 3), dict(padding=1)),
    # Winograd's 3-d: the depth-padded input and the image-major output besides the 2-d call's
    "3-d 3x3x3": ((2, 16, 12, 40, 40), (16, 16, 3, 3, 3), dict(padding=1)),
    "3-d 5x3x3, depth padding 4": ((1, 8, 8, 32, 32), (8, 8, 5, 3, 3), dict(padding=(4, 1, 1))),
    "3-d depthwise 3x3x3": ((2, 16, 12, 40, 40), (16, 1, 3, 3, 3), dict(padding=1, groups=16)),
}


@pytest.fixture
def small_scratch(monkeypatch):
    """The bound's constant term and the algorithms' scratch caps at 4 MiB instead of 64 MiB, so
    that small shapes show whether anything beyond the scratch grows faster than the operands."""
    monkeypatch.setattr(workspace, "SCRATCH_BYTES", 4 * MiB)
    monkeypatch.setattr(gemm, "WORKSPACE_BYTES", 4 * MiB)
    monkeypatch.setattr(fft, "WORKSPACE_BYTES", 4 * MiB)


def _geometry(w_shape, arguments) -> ConvGeometry:
    nd = len(w_shape) - 2
    return ConvGeometry.create(w_shape[2:], arguments.get("stride", 1), arguments.get("padding", 0),
                               arguments.get("dilation", 1), arguments.get("groups", 1), ndim=nd)


def _runs():
    for name in algorithm.names():
        for pass_name in algorithm.PASSES:
            for case in CASES:
                yield pytest.param(name, pass_name, case, id=f"{name}-{pass_name}-{case}")


def _pass_calls(x, w, gy, geom):
    """pass name -> (call, operands)."""
    return {
        "forward": (lambda: plan.forward(x, w, geom), (x, w)),
        "grad_input": (lambda: plan.grad_input(gy, w, geom, x.shape[2:]), (gy, w)),
        "grad_weight": (lambda: plan.grad_weight(x, gy, geom), (x, gy)),
    }


@pytest.mark.parametrize(("name", "pass_name", "case"), list(_runs()))
def test_peak_memory_within_the_bound(name, pass_name, case, two_threads, small_scratch):
    x_shape, w_shape, arguments = CASES[case]
    geom = _geometry(w_shape, arguments)
    if name not in algorithm.available():
        pytest.skip(f"{name} is not available here")
    if name not in plan.candidates(pass_name, x_shape, w_shape, geom, np.float32):
        pytest.skip(f"{name} does not run the {pass_name} pass of {case} (within the bound)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    gy = rng.standard_normal((x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:]), dtype=np.float32)
    run, operands = _pass_calls(x, w, gy, geom)[pass_name]
    fft._scipy_fft()  # scipy.fft is imported at the first FFT call: that one-time import is not the pass's
    with npconv.backends.conv.force({pass_name: name}):
        result, peak = _peak_extra(run)
    bound = workspace.memory_bound(*(a.nbytes for a in operands), result.nbytes)
    assert peak <= bound, (f"{name} {pass_name} {case}: {peak / MiB:.1f} MiB extra, "
                           f"bound {bound / MiB:.1f} MiB ({peak / bound:.2f}x)")


@pytest.mark.parametrize("case", ["wide 3x3 on few pixels", "wide 3x3 on 32x32"])
def test_a_winograd_plan_keeping_its_transform_stays_within_the_bound(case, two_threads, small_scratch):
    """A Winograd plan's first run, which keeps the transformed weight and a copy of the weight
    (``compiled_winograd.KEPT_TRANSFORM_BYTES``), within the forward's bound where Winograd supports
    the call; where it does not (its transform beyond the bound), the planner picks another."""
    x_shape, w_shape, arguments = CASES[case]
    geom = _geometry(w_shape, arguments)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    explicit = geom.with_padding(geom.pads(x_shape[2:]))
    if "winograd" not in plan.candidates("forward", x_shape, w_shape, geom, np.float32):
        assert case == "wide 3x3 on few pixels"
        assert plan.choose("forward", x_shape, w_shape, geom, np.float32) != "winograd"
        return
    assert case == "wide 3x3 on 32x32"
    with npconv.backends.conv.force("winograd"):
        prepared = plan.prepare_forward(x.shape, x.dtype, w, explicit)  # None: NumPy's Winograd
        y, peak = _peak_extra(lambda: plan.forward(x, w, explicit) if prepared is None else prepared.run(x))
    assert peak <= workspace.memory_bound(x.nbytes, w.nbytes, y.nbytes)
    direct = plan.forward(x, w, explicit)
    assert np.linalg.norm(y - direct) <= 1e-5 * np.linalg.norm(direct)


def test_full_scale_bound_for_the_planners_choice(two_threads):
    """At the real 64 MiB scale: the layer that was routed to FFT with a whole kernel spectrum
    (dense 4 -> 64 channels, 9x9, on 384x384: 0.9 GiB extra at 512x512 before blocking)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 384, 384), dtype=np.float32)
    w = rng.standard_normal((64, 4, 9, 9), dtype=np.float32)
    geom = ConvGeometry.create(9, 1, 4, ndim=2)
    y, peak = _peak_extra(lambda: plan.forward(x, w, geom))
    assert peak <= workspace.memory_bound(x.nbytes, w.nbytes, y.nbytes)


@pytest.mark.parametrize("cap", [1, 3 * 2**16])
@pytest.mark.parametrize(("groups", "cg", "og", "stride"),
                         [(1, 3, 4, 1), (2, 3, 2, 2), (4, 1, 1, 1), (3, 1, 2, 3)])
def test_fft_blocks_give_the_same_convolution(monkeypatch, cap, groups, cg, og, stride):
    """FFT blocked down to single images, groups and channel pairs (cap 1) or a few planes: the
    forward pass matches a direct NumPy convolution and the passes stay adjoint."""
    monkeypatch.setattr(fft, "WORKSPACE_BYTES", cap)
    rng = np.random.default_rng(groups * 10 + cg)
    x = rng.standard_normal((3, groups * cg, 11, 9))
    w = rng.standard_normal((groups * og, cg, 4, 3))
    geom = ConvGeometry.create((4, 3), stride, ((2, 1), (0, 3)), (1, 2), groups)
    expected = direct_conv(np.pad(x, ((0, 0), (0, 0), (2, 1), (0, 3))), w, stride, 0, (1, 2), groups)
    np.testing.assert_allclose(fft.forward(x, w, geom), expected, rtol=1e-10, atol=1e-10)
    assert_passes_are_adjoint(fft, x, w, geom, rng)


# -- cost independent of absurd strides and paddings ------------------------------------------------
HUGE = [
    # (x shape, w shape, stride, padding, dilation, groups)
    ((1, 2, 8, 8), (3, 2, 3, 3), 2000, 1, 1, 1),
    ((1, 3, 8, 8), (3, 1, 3, 3), (1000, 3), 0, 1, 3),
    ((2, 2, 20), (2, 2, 3), 10**7, 0, 1, 1),
    ((1, 2, 20), (2, 1, 3), 10**7, 5, 2, 2),
    ((1, 4, 8, 8), (4, 4, 3, 3), 1, 150, 150, 1),
    ((1, 4, 8, 8), (4, 1, 3, 3), 3, 400, 400, 4),
    ((1, 3, 8, 8), (3, 1, 3, 3), 2**31, 0, 1, 3),  # the compiled kernel's int limits: crashed once
    ((2, 2, 9), (4, 1, 2), 2**40, 1, 3, 2),
    ((1, 2, 5, 6), (2, 1, 3, 3), (7, 2), 3, 1, 2),  # strides beyond the read extent, padding > input
]


def _huge_runs():
    for name in algorithm.names():
        for index in range(len(HUGE)):
            yield pytest.param(name, index, id=f"{name}-{index}")


@pytest.mark.parametrize(("name", "index"), list(_huge_runs()))
def test_huge_stride_or_padding_costs_milliseconds(name, index):
    """Every pass of every algorithm that runs it: fast (a 3x3 stride-2000 conv took 51 s, a 1-d
    stride-1e7 one 113 s, looping over every stride phase), correct against NumPy, adjoint."""
    x_shape, w_shape, stride, padding, dilation, groups = HUGE[index]
    nd = len(x_shape) - 2
    geom = ConvGeometry.create(w_shape[2:], stride, padding, dilation, groups, ndim=nd)
    if name not in algorithm.available():
        pytest.skip(f"{name} is not available here")
    runs = [p for p in algorithm.PASSES if name in plan.candidates(p, x_shape, w_shape, geom, np.float64)]
    if not runs:
        pytest.skip(f"{name} runs no pass of this convolution")
    rng = np.random.default_rng(index)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    expected = direct_conv(x, w, stride, padding, dilation, groups)
    gy = rng.standard_normal(expected.shape)
    calls = _pass_calls(x, w, gy, geom)
    with npconv.backends.conv.force(name):
        for pass_name in runs:
            start = time.perf_counter()
            result = calls[pass_name][0]()
            elapsed = time.perf_counter() - start
            assert elapsed < 2.0, f"{name} {pass_name} took {elapsed:.1f} s"
            if pass_name == "forward":
                np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-10)
            elif pass_name == "grad_input":
                assert np.isclose(np.vdot(result, x), np.vdot(gy, expected), rtol=1e-10)
            else:
                assert np.isclose(np.vdot(result, w), np.vdot(gy, expected), rtol=1e-10)


def test_huge_strides_match_torch():
    """torch parity of every pass for absurd strides (1-d 1e7, 2-d 2000) and transposed conv."""
    torch = pytest.importorskip("torch")
    from npconv.nn import functional as F

    for x_shape, w_shape, stride, padding, transposed in [((2, 2, 20), (3, 2, 3), 10**7, 1, False),
                                                          ((1, 2, 8, 8), (3, 2, 3, 3), 2000, 2, False),
                                                          ((1, 2, 3), (2, 3, 3), 10**6, 1, True)]:
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
        nd = len(x_shape) - 2
        name = f"conv{'_transpose' if transposed else ''}{nd}d"
        xn, wn = npconv.tensor(x, requires_grad=True), npconv.tensor(w, requires_grad=True)
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        start = time.perf_counter()
        y = getattr(F, name)(xn, wn, stride=stride, padding=padding)
        gy = rng.standard_normal(y.shape)
        y.backward(npconv.tensor(gy))
        assert transposed or time.perf_counter() - start < 2.0  # a transposed output is huge
        yt = getattr(torch.nn.functional, name)(xt, wt, stride=stride, padding=padding)
        yt.backward(torch.tensor(gy))
        for ours, theirs in [(y, yt), (xn.grad, xt.grad), (wn.grad, wt.grad)]:
            np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("isa", [isa for isa in ("generic", "avx2", "avx512") if isa in backends.core.isas]
                         if backends.core.available else [])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_single_image_scratch_within_the_bound(isa, dtype, monkeypatch, two_threads, small_scratch):
    """One big plane split over two workers on the explicit (row-shifted or banded) GEMM path: each
    worker's scratch, slab and packing included, stays within its share of the workspace (float64
    and the generic build never take the implicit GEMM)."""
    compiled_gemm = pytest.importorskip("npconv.kernels.compiled_gemm")
    monkeypatch.setattr(backends.core, "isa", isa)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    x_shape, w_shape, arguments = CASES["depthwise 7x7 one big plane"]
    geom = _geometry(w_shape, arguments)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    for pass_name in ("forward", "grad_input"):
        gy = rng.standard_normal((1, 1) + geom.output_size(x_shape[2:])).astype(dtype)
        run, operands = _pass_calls(x, w, gy, geom)[pass_name]
        with npconv.backends.conv.force({pass_name: "gemm"}):
            result, peak = _peak_extra(run)
        bound = workspace.memory_bound(*(a.nbytes for a in operands), result.nbytes)
        assert peak <= bound, f"{isa} {dtype.__name__} {pass_name}: {peak / MiB:.1f} MiB > {bound / MiB:.1f}"
