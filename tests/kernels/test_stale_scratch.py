"""Junk lanes never compute on stale scratch: a kernel's vectors past the valid positions (a register
block's last columns, a tile run's last lanes) may read scratch it did not write in this call, and memory
left from earlier use, read as floats, is often subnormal (a pointer's high half is zero), which costs a
microcode assist per operation (a grouped forward ran 2.8x slower, Winograd's 1.2-1.4x). So every
compiled kernel's arithmetic reads only scratch it wrote or zeroed in the same call: with the thread's
scratch buffers filled with a subnormal bit pattern between two calls, the second call's arithmetic
meets no subnormal operand (the x86 MXCSR flag, ``_core.subnormal_operands``) and gives the same result."""

from __future__ import annotations

import numpy as np
import pytest

from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import plan, workspace

pytest.importorskip("npconv.kernels.compiled_gemm", reason="the compiled core is not in use")

#: ``(algorithm, x shape, weight shape, kernel, stride, padding, dilation, groups)``: each compiled
#: algorithm on sizes whose positions fill no whole vector (tiles, rows, planes)
CASES = [
    ("winograd", (2, 8, 10, 10), (8, 8, 3, 3), 3, 1, 1, 1, 1),
    ("winograd", (1, 4, 13, 11), (6, 4, 3, 3), 3, 1, 2, 2, 1),
    ("grouped", (2, 8, 11, 9), (8, 2, 3, 3), 3, 1, 1, 1, 4),
    ("grouped", (1, 3, 23, 20), (8, 3, 5, 5), 5, 2, 2, 1, 1),
    ("depthwise", (2, 4, 12, 11), (4, 1, 3, 3), 3, 1, 1, 1, 4),
    ("depthwise", (2, 4, 21, 19), (8, 1, 5, 5), 5, 1, 2, 1, 4),
    ("depthwise", (2, 4, 21, 19), (4, 1, 3, 3), 3, 2, 1, 1, 4),
    ("depthwise", (2, 32, 7, 7), (32, 1, 3, 3), 3, 1, 1, 1, 32),
    ("gemm", (2, 8, 9, 9), (8, 8, 3, 3), 3, 1, 1, 1, 1),
    ("gemm", (2, 8, 13, 13), (16, 8, 3, 3), 3, 2, 1, 1, 1),
    ("gemm", (2, 8, 9, 9), (8, 8, 1, 1), 1, 1, 0, 1, 1),
    ("gemm", (2, 16, 25, 25), (40, 16, 3, 3), 3, 2, 1, 1, 1),  # float32: the direct forward, ragged vectors
    ("fft", (1, 2, 40, 37), (2, 2, 15, 15), 15, 1, 7, 1, 1),
]

_SUBNORMAL_BITS = 0x00000FFF  # float32 1.4e-42; two of them a float64 of 3.5e-320


def _flag(clear: bool = False) -> bool:
    return backends.core.module.subnormal_operands(clear)


@pytest.fixture
def flags():
    if not backends.core.available or _flag(True) is None:
        pytest.skip("no x86 MXCSR to read")
    np.multiply(np.full(16, 1e-40, np.float32), np.float32(2))
    if not _flag(True):  # flush-to-zero / denormals-are-zero mode: the flag is never raised
        pytest.skip("subnormal operands are not flagged on this thread (DAZ set?)")


def _poison_scratch() -> int:
    arrays = workspace._thread_cache().arrays
    for raw in arrays.values():
        raw.view(np.uint32)[...] = _SUBNORMAL_BITS
    return len(arrays)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pass_name", ["forward", "grad_input", "grad_weight"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}-k{c[3]}s{c[4]}")
def test_no_pass_computes_on_stale_scratch(case, pass_name, dtype, isa, one_thread, flags):
    algorithm, x_shape, w_shape, k, stride, padding, dilation, groups = case
    geom = ConvGeometry.create(k, stride, padding, dilation, groups, ndim=2)
    geom = geom.with_padding(geom.pads(x_shape[2:]))
    if algorithm not in plan.candidates(pass_name, x_shape, w_shape, geom, np.dtype(dtype)):
        pytest.skip(f"{algorithm} does not take this {pass_name}")
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal((x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:])).astype(dtype)
    run = {"forward": lambda: plan.forward(x, w, geom),
           "grad_input": lambda: plan.grad_input(gy, w, geom, x_shape[2:]),
           "grad_weight": lambda: plan.grad_weight(x, gy, geom)}[pass_name]
    with backends.conv.force(algorithm):
        first = run()  # the scratch exists now
        assert _poison_scratch() > 0 or algorithm == "fft"
        _flag(True)
        again = run()
        stale = _flag(True)
    assert not stale, f"{algorithm} {pass_name} computed on scratch it did not write"
    np.testing.assert_array_equal(again, first)
