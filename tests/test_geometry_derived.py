"""The kernel-side quantities of ConvGeometry (padded grid, strided positions, stride-1 adjoint)
against brute force, and the shared kernel pieces built on them (torch-free)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from npconv.geometry import ConvGeometry
from npconv.kernels import common, gemm


@given(n=st.integers(1, 20), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3),
       lo=st.integers(0, 5), hi=st.integers(0, 5))
def test_padded_grid_and_strided_positions(n, k, s, d, lo, hi):
    geom = ConvGeometry.create((k, 1), (s, 1), ((lo, hi), (0, 0)), (d, 1))
    if n + lo + hi < d * (k - 1) + 1:
        return
    assert geom.padded_size((n, 3)) == (n + lo + hi, 3)
    grid = np.arange(n + lo + hi)
    assert list(grid[geom.interior((n, 3))[0]]) == list(range(lo, lo + n))
    out = geom.output_size((n, 3))
    positions = list(range(len(grid)))[geom.strided_positions(out)[0]]
    assert positions == [o * s for o in range(out[0])]  # where each output's window starts
    assert geom.spread_size(out)[0] == positions[-1] + 1


def _transposed_reference(gy, w, pads, input_size, dilation):
    """``gx[n, c, i] = sum_{o, t, k: t + k*d - lo = i} gy[n, o, t] w[o, c, k]`` (1-d, one group)."""
    gx = np.zeros((gy.shape[0], w.shape[1], input_size))
    lo = pads[0]
    for t, k in itertools.product(range(gy.shape[2]), range(w.shape[2])):
        i = t + k * dilation - lo
        if 0 <= i < input_size:
            gx[:, :, i] += gy[:, :, t] @ w[:, :, k]
    return gx


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 5), d=st.integers(1, 3), lo=st.integers(0, 7),
       hi=st.integers(0, 7), seed=st.integers(0, 2**16))
def test_stride1_adjoint_is_the_transposed_convolution(n, k, d, lo, hi, seed):
    """Pads larger than ``e - 1`` (negative adjoint padding) crop ``gy`` instead."""
    geom = ConvGeometry.create((k,), 1, ((lo, hi),), d)
    if n + lo + hi < geom.extent[0]:
        return
    rng = np.random.default_rng(seed)
    out = geom.output_size((n,))
    gy, w = rng.standard_normal((2, 3) + out), rng.standard_normal((3, 2, k))
    adjoint, crop = geom.stride1_adjoint((n,), out)
    assert all(lo_ >= 0 and hi_ >= 0 for lo_, hi_ in adjoint.pads())
    gx = gemm.forward(gy[(slice(None), slice(None)) + crop], common.adjoint_kernel(w, 1), adjoint)
    np.testing.assert_allclose(gx, _transposed_reference(gy, w, (lo, hi), n, d), rtol=1e-12, atol=1e-12)
    gx2 = common.grad_input_as_forward(gemm.forward, gy, w, geom, (n,))
    np.testing.assert_array_equal(gx, gx2)


def test_adjoint_kernel_groups():
    w = np.arange(2 * 6 * 2 * 3, dtype=float).reshape(6, 2, 3, 2)  # groups 3: Og = 2, Cg = 2
    a = common.adjoint_kernel(w, 3)
    assert a.shape == (6, 2, 3, 2) and a.flags.c_contiguous
    for g, o, c in itertools.product(range(3), range(2), range(2)):
        np.testing.assert_array_equal(a[g * 2 + c, o], w[g * 2 + o, c, ::-1, ::-1])


def test_windows_view_is_every_window():
    geom = ConvGeometry.create((2, 3), (2, 1), 0, (2, 1))
    x = np.arange(2 * 9 * 7, dtype=float).reshape(1, 2, 9, 7)
    out = geom.output_size((9, 7))
    view = common.windows(x, geom, out)
    assert view.shape == (1, 2) + out + (2, 3)
    for i, j, a, b in itertools.product(range(out[0]), range(out[1]), range(2), range(3)):
        assert view[0, 1, i, j, a, b] == x[0, 1, i * 2 + a * 2, j + b]
    assert not view.flags.writeable
    one = common.windows(x[0], geom, out, lead=1)  # one image (C, *out, *k)
    np.testing.assert_array_equal(one, view[0])
    with pytest.raises(ValueError, match="do not fit"):  # never a view beyond the array
        common.windows(x, geom, (out[0] + 1, out[1]))


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation", "groups"), [
    ((2, 6, 9, 11), (4, 3, 3, 2), 2, 1, 1, 2), ((1, 3, 17), (5, 3, 4), 3, 0, 2, 1),
    ((3, 4, 5, 6, 7), (8, 4, 2, 3, 1), 1, "same", 1, 1)])
def test_multiply_adds_count_the_reference_products(x_shape, w_shape, stride, padding, dilation, groups):
    """One multiply-add per output element and weight tap of its group: the reference's output size
    times the weight's per-output extent."""
    geom = ConvGeometry.create(w_shape[2:], stride, padding, dilation, groups, ndim=len(w_shape) - 2)
    rng = np.random.default_rng(0)
    y = reference.conv(rng.standard_normal(x_shape), rng.standard_normal(w_shape), None, geom.stride,
                       geom.pads(x_shape[2:]), geom.dilation, groups)
    assert geom.multiply_adds(x_shape, w_shape) == y.size * math.prod(w_shape[1:])
