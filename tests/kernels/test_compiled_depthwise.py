"""The compiled depthwise kernels (npconv._core via kernels/compiled_depthwise) against the NumPy
reference engine (kernels/depthwise) and the NumPy reference oracle (tests/reference.py), on every ISA
variant this CPU runs.

Covers the three passes in float32 and float64, the specialised tap counts (3x3, 5x5, 7x7: 9, 25
and 49 taps) at strides 1 and 2 with rows wider than a 4-vector block and narrower than one
vector, random 1-d/2-d geometries (stride, dilation, per-side padding at their edges, channel
multiplier, odd sizes), non-contiguous inputs, the fused bias and activation epilogue (against the
unfused convolution then the activation, and torch through the planner), NaN/inf locality, one and two
worker threads and the small-call rule, the extension's own argument guards, and supports()/recommended().
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import reference
from kernel_checks import assert_passes_are_adjoint, draw_geometry, relative_error
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import depthwise, plan
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation
from torch_oracle import assert_close, close

compiled_depthwise = pytest.importorskip("npconv.kernels.compiled_depthwise",
                                         reason=f"compiled core not in use: {backends.core.reason}")


def _geom(kernel, stride, padding, dilation, groups) -> ConvGeometry:
    return ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=len(kernel))


TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6}


def _check_against_reference(rng, x_shape, mult, kernel, stride, padding, dilation, dtype, bias=True,
                             oracle_too=False):
    """Compiled passes vs the NumPy engine (norm-relative, dtype-sized bound) and, with
    ``oracle_too``, vs the NumPy reference of tests/reference.py (elementwise, the dtype's tolerance)."""
    c = x_shape[1]
    geom = _geom(kernel, stride, padding, dilation, c)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c * mult, 1) + tuple(kernel)).astype(dtype)
    b = rng.standard_normal(c * mult).astype(dtype) if bias else None
    bx = rng.standard_normal(c).astype(dtype) if bias else None
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert compiled_depthwise.supports(pass_name, x.shape, w.shape, geom, np.dtype(dtype))
    y = compiled_depthwise.forward(x, w, geom, bias=b)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = compiled_depthwise.grad_input(gy, w, geom, x_shape[2:], bias=bx)
    gw = compiled_depthwise.grad_weight(x, gy, geom)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    y_ref = depthwise.forward(x, w, geom)
    gx_ref = depthwise.grad_input(gy, w, geom, x_shape[2:])
    if bias:
        y_ref = y_ref + b.reshape((-1,) + (1,) * geom.ndim)
        gx_ref = gx_ref + bx.reshape((-1,) + (1,) * geom.ndim)
    gw_ref = depthwise.grad_weight(x, gy, geom)
    tol = TOL[np.dtype(dtype)]
    for name, got, ref in (("forward", y, y_ref), ("grad_input", gx, gx_ref), ("grad_weight", gw, gw_ref)):
        assert got.shape == ref.shape, name
        # norm-relative, absolute below norm 1 (an output wholly in the padding is exactly zero)
        assert np.linalg.norm(got - ref) <= tol * max(1.0, np.linalg.norm(ref)), name
    if oracle_too:
        resolved = geom.with_padding(geom.pads(x_shape[2:]))
        r_y, r_gx, r_gw = reference.conv_passes(x, w, gy, resolved)
        bias_shape = (-1,) + (1,) * geom.ndim
        assert_close(y - (b.reshape(bias_shape) if bias else 0), r_y, what="forward")
        assert_close(gx - (bx.reshape(bias_shape) if bias else 0), r_gx, what="grad_input")
        assert_close(gw, r_gw, what="grad_weight")


# (x_shape, multiplier, kernel, stride, padding, dilation): the specialised tap counts at
# strides 1 and 2, rows wider than 4 vectors of the widest variant (70 > 64 float32 lanes) with a
# ragged end, rows narrower than one vector, a multiplier, 1-d, asymmetric and oversized padding.
CASES = [
    ((2, 3, 19, 70), 1, (3, 3), 1, 1, 1),
    ((2, 3, 19, 71), 1, (3, 3), 2, 1, 1),
    ((1, 2, 13, 67), 1, (5, 5), 1, 2, 1),
    ((1, 2, 13, 69), 2, (5, 5), 2, 2, 1),
    ((1, 2, 15, 66), 1, (7, 7), 1, 3, 1),
    ((1, 2, 15, 73), 1, (7, 7), 2, 3, 1),
    ((2, 4, 5, 3), 1, (3, 3), 1, 1, 1),  # rows narrower than a vector
    ((2, 3, 9, 11), 3, (3, 3), 1, ((0, 2), (3, 1)), 2),
    ((1, 3, 10, 9), 1, (3, 2), 3, ((2, 0), (1, 3)), 2),
    ((2, 4, 9, 7), 3, (5, 3), (3, 2), 2, (1, 3)),
    ((1, 2, 8, 8), 1, (2, 2), 3, 0, 1),  # stride wider than the kernel: pixels never read
    ((1, 2, 3, 3), 1, (3, 3), 3, ((2, 1), (0, 4)), 1),  # phases wholly inside the padding
    ((1, 5, 13, 6), 3, (5, 5), 1, 4, (1, 2)),  # padding wider than half the kernel
    ((3, 2, 40), 2, (4,), 2, ((3, 0),), 1),
    ((2, 3, 15), 1, (9,), 1, 4, 1),
    ((1, 1, 6, 1000), 2, (1, 11), 1, ((0, 0), (5, 5)), 1),  # long rows, a first layer with multiplier
    # rows of 1-4 vectors in one register block (28, 40, 56 float32 columns; 24 float64), row counts
    # that leave 1-3 rows after the bands of shared rows
    ((1, 2, 11, 28), 1, (3, 3), 1, 1, 1),
    ((1, 2, 10, 56), 1, (3, 3), 1, 1, 1),
    ((1, 2, 9, 40), 1, (5, 5), 1, 2, 1),
    ((1, 2, 7, 24), 1, (7, 7), 1, 3, 1),
    ((1, 2, 6, 56), 1, (3, 3), 2, 1, 1),
    # narrow planes (rows under one vector) of many channels: planes in the vector lanes, blocks of
    # 16 / 8 planes crossing the image boundary and a ragged last block
    ((2, 20, 7, 7), 1, (3, 3), 1, 1, 1),
    ((3, 19, 14, 14), 1, (3, 3), 2, 1, 1),
    ((2, 33, 9, 6), 1, (5, 5), 1, ((2, 1), (0, 3)), (1, 2)),
    ((1, 17, 12, 5), 1, (3, 2), (2, 3), 0, 1),
    ((2, 9, 4, 2), 1, (3, 3), 1, 2, 1),  # a plane smaller than a register block of positions
    # strided rows of one to two vectors (AVX2 8-15, AVX-512 16-31 columns) also run in the lanes
    ((2, 18, 40, 40), 1, (3, 3), 2, 1, 1),
    ((1, 17, 58, 61), 1, (5, 5), 2, 2, 1),
    ((1, 16, 30, 24), 1, (3, 3), (2, 1), 1, 1),
    ((1, 19, 33, 27), 1, (3, 3), 2, ((0, 2), (1, 1)), (1, 2)),
    # 3x3 stride-1 rows filling most of one vector (3/4 VL < OW <= VL: AVX-512 float32 13-16 columns,
    # float64 and AVX2 float32 7-8, AVX2 float64 4): one vector per output row, plane by plane
    ((2, 20, 14, 14), 1, (3, 3), 1, 1, 1),
    ((1, 5, 16, 16), 2, (3, 3), 1, 1, (1, 2)),
    ((2, 3, 17, 15), 1, (3, 3), 1, 0, 1),
    ((1, 3, 7, 15), 2, (3, 3), 1, ((0, 1), (1, 1)), 1),
    ((3, 7, 20, 8), 1, (3, 3), 1, 1, 1),
    ((1, 4, 9, 6), 1, (3, 3), 1, ((2, 0), (3, 1)), 1),
    ((2, 6, 5, 4), 1, (3, 3), 1, 1, 1),
    ((1, 2, 3, 16), 1, (3, 3), 1, ((4, 3), (1, 1)), 1),  # more padding rows than input rows
    # 3x3 stride 2 of rows >= 1 vector (AVX-512, >= 2 on AVX2): the taps as shuffles of a ring of
    # padded rows; output widths 16, 17, 31-33, 56 (whole and ragged blocks of 1 and 2 vectors), odd
    # and even output row counts (a last row alone), a multiplier, no / asymmetric / oversized
    # padding, input rows and columns past the last ones read, padding rows around few input rows
    ((2, 3, 9, 32), 1, (3, 3), 2, 1, 1),
    ((1, 2, 8, 34), 2, (3, 3), 2, 1, 1),
    ((1, 3, 11, 63), 1, (3, 3), 2, 1, 1),
    ((1, 2, 12, 65), 1, (3, 3), 2, 0, 1),
    ((2, 2, 13, 66), 3, (3, 3), 2, ((0, 2), (2, 1)), 1),
    ((1, 3, 10, 112), 1, (3, 3), 2, 1, 1),
    ((1, 2, 16, 70), 1, (3, 3), 2, ((3, 0), (0, 0)), 1),
    ((1, 2, 2, 40), 1, (3, 3), 2, ((5, 4), (7, 2)), 1),
    ((1, 2, 5, 1), 1, (3, 3), 2, ((1, 1), (41, 0)), 1),  # no input column is ever read
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_cases_match_numpy_engine_and_the_reference(rng, isa, case, dtype):
    _check_against_reference(rng, *case, dtype, oracle_too=True)


@settings(max_examples=30, deadline=None)
@given(nd=st.integers(1, 2), n=st.integers(1, 2), c=st.integers(1, 3), multiplier=st.integers(1, 3),
       float32=st.booleans(), data=st.data())
def test_random_geometries_match_numpy_engine(nd, n, c, multiplier, float32, data):
    """Random geometries on every ISA variant this CPU runs (drawn per example)."""
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 7, 2, 20)
    previous = backends.core.isa
    backends.core.isa = data.draw(st.sampled_from(backends.core.isas))
    try:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        _check_against_reference(rng, (n, c) + size, multiplier, kernel, stride, padding, dilation,
                                 np.float32 if float32 else np.float64, bias=data.draw(st.booleans()))
    finally:
        backends.core.isa = previous


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_random_geometries_match_the_reference(data):
    kernel, stride, dilation, padding, size = draw_geometry(data, 2, 5, 2, 12)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    _check_against_reference(rng, (2, 3) + size, data.draw(st.integers(1, 2)), kernel, stride, padding,
                             dilation, np.float64, oracle_too=True)


def test_two_worker_threads_and_non_contiguous_inputs(rng, isa, parallel):
    """Strided/transposed views and one or two worker threads (planes and channels split)."""
    geom = _geom((3, 3), 2, 1, 1, 5)
    base = rng.standard_normal((3, 5, 22, 17))
    x = base[:, :, ::2, :]  # (3, 5, 11, 17), non-contiguous
    w = rng.standard_normal((5, 1, 3, 3)).T.T  # a C-contiguous copy would hide nothing; views next
    w_view = np.ascontiguousarray(w.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not x.flags.c_contiguous and not w_view.flags.c_contiguous
    y = compiled_depthwise.forward(x, w_view, geom)
    np.testing.assert_allclose(y, depthwise.forward(np.ascontiguousarray(x), w, geom), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)[..., ::-1]  # negative strides
    gx = compiled_depthwise.grad_input(gy, w_view, geom, x.shape[2:])
    np.testing.assert_allclose(gx, depthwise.grad_input(gy.copy(), w, geom, x.shape[2:]), rtol=1e-12,
                               atol=1e-12)
    gw = compiled_depthwise.grad_weight(x, gy, geom)
    np.testing.assert_allclose(gw, depthwise.grad_weight(x.copy(), gy.copy(), geom), rtol=1e-12, atol=1e-12)


def test_adjoint_identities(rng, isa):
    """<forward(x, w), gy> = <x, grad_input(gy, w)> = <w, grad_weight(x, gy)>, without any reference."""
    for stride, dilation in ((1, 1), (2, 1), (3, 2)):
        geom = _geom((3, 4), stride, ((1, 2), (0, 3)), (dilation, 1), 3)
        x = rng.standard_normal((2, 3, 13, 12))
        w = rng.standard_normal((6, 1, 3, 4))
        assert_passes_are_adjoint(compiled_depthwise, x, w, geom, rng)


def test_float32_accuracy_bound(rng, isa):
    """float32 within 2e-6 norm-relative of float64 (grad_weight sums per plane in float64)."""
    geom = _geom((3, 3), 1, 1, 1, 16)
    x = rng.standard_normal((4, 16, 56, 56))
    w = rng.standard_normal((16, 1, 3, 3)) / 3
    gy = rng.standard_normal((4, 16, 56, 56))
    x32, w32, gy32 = (a.astype(np.float32) for a in (x, w, gy))
    assert relative_error(compiled_depthwise.forward(x32, w32, geom),
                          compiled_depthwise.forward(x, w, geom)) < 2e-6
    assert relative_error(compiled_depthwise.grad_input(gy32, w32, geom, (56, 56)),
                          compiled_depthwise.grad_input(gy, w, geom, (56, 56))) < 2e-6
    assert relative_error(compiled_depthwise.grad_weight(x32, gy32, geom),
                          compiled_depthwise.grad_weight(x, gy, geom)) < 2e-6


def test_non_finite_values_stay_local(rng, isa):
    """An inf in x reaches only the outputs and weight taps that read it (the kernels' junk lanes
    past a row's end must not multiply it): here the last input column, never read with stride 2."""
    geom = _geom((3, 3), 2, 0, 1, 2)
    x = rng.standard_normal((1, 2, 9, 10))  # output 4x4 reads columns 0..8 only
    x[0, :, 3, 9] = np.inf
    w = rng.standard_normal((2, 1, 3, 3))
    y = compiled_depthwise.forward(x, w, geom)
    gy = rng.standard_normal(y.shape)
    assert np.isfinite(y).all()
    assert np.isfinite(compiled_depthwise.grad_weight(x, gy, geom)).all()
    x[0, :, 3, 8] = np.inf  # read by the last output column of rows 1 (tap kh=1, kw=2) only
    gw = compiled_depthwise.grad_weight(x, gy, geom)
    assert np.isinf(gw[:, 0, 1, 2]).all() and np.isfinite(np.delete(gw.reshape(2, 9), 5, axis=1)).all()
    y = compiled_depthwise.forward(x, w, geom)
    assert (~np.isfinite(y)).sum() == 2  # one output per channel


def test_non_finite_values_stay_in_their_plane(rng, isa):
    """Narrow planes run with planes in the vector lanes: an inf or NaN in one plane reaches only
    the outputs of that plane's channel (lanes of other planes, and lanes past a block's last
    plane, never carry it)."""
    geom = _geom((3, 3), 1, 1, 1, 21)
    x = rng.standard_normal((2, 21, 7, 7))
    x[0, 4, 3, 3], x[1, 20, 0, 6] = np.inf, np.nan
    y = compiled_depthwise.forward(x, rng.standard_normal((21, 1, 3, 3)), geom)
    bad = ~np.isfinite(y)
    assert bad[0, 4, 2:5, 2:5].all() and bad[1, 20, 0:2, 5:7].all()
    assert bad.sum() == 9 + 4


def test_bias_is_added_in_the_epilogue(rng, isa):
    geom = _geom((3,), 1, 1, 1, 4)
    x, w, b = rng.standard_normal((2, 4, 9)), rng.standard_normal((8, 1, 3)), rng.standard_normal(8)
    np.testing.assert_allclose(compiled_depthwise.forward(x, w, geom, bias=b),
                               compiled_depthwise.forward(x, w, geom) + b[:, None], rtol=1e-13, atol=1e-13)
    gy, bx = rng.standard_normal((2, 8, 9)), rng.standard_normal(4)
    np.testing.assert_allclose(compiled_depthwise.grad_input(gy, w, geom, (9,), bias=bx),
                               compiled_depthwise.grad_input(gy, w, geom, (9,)) + bx[:, None], rtol=1e-13,
                               atol=1e-13)


def _binding_operands():
    """``(module, isa, geometry, x, w, y, scratch)`` of a valid 3x3 depthwise forward call (2 planes of
    5x5) for the tests of the extension's own checks."""
    core = backends.core.module
    geometry = (1, 2, 1, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1)
    x, w, y = np.zeros((1, 2, 5, 5)), np.zeros((2, 1, 3, 3)), np.zeros((1, 2, 5, 5))
    scratch = np.zeros(core.depthwise2d_scratch(0, geometry))
    return core, backends.core.isa_index, geometry, x, w, y, scratch


def test_extension_guards_its_buffers():
    """The extension checks sizes, element types and ranges itself (no out-of-bounds access)."""
    core, isa, geometry, x, w, y, scratch = _binding_operands()
    core.depthwise2d_forward(isa, x, w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="scratch"):
        core.depthwise2d_forward(isa, x, w, None, y, scratch[:-1], geometry, 0, 2)
    with pytest.raises(ValueError, match="output"):
        core.depthwise2d_forward(isa, x, w, None, y[:, :1], scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="range"):
        core.depthwise2d_forward(isa, x, w, None, y, scratch, geometry, 1, 3)
    with pytest.raises(TypeError, match="element type"):
        core.depthwise2d_forward(isa, x.astype(np.float32), w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        core.depthwise2d_forward(isa, x.astype(np.int64), w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="contiguous"):
        core.depthwise2d_forward(isa, x[..., ::-1], w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="geometry value"):
        core.depthwise2d_forward(isa, x, w, None, y, scratch, (0,) + geometry[1:], 0, 2)
    with pytest.raises(ValueError, match="ISA variant"):
        core.depthwise2d_forward(99, x, w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="channel range"):
        core.depthwise2d_grad_weight(isa, x, y, w, np.zeros(core.depthwise2d_scratch(2, geometry)), geometry,
                                     0, 3)


def test_supports_and_recommended():
    dw = _geom((3, 3), 1, 1, 1, 4)
    args = ((2, 4, 8, 8), (8, 1, 3, 3), dw)
    assert compiled_depthwise.supports("forward", *args, np.dtype(np.float32))
    assert compiled_depthwise.recommended("grad_weight", *args, np.dtype(np.float64))
    assert not compiled_depthwise.supports("forward", *args, np.dtype(np.float16))
    assert not compiled_depthwise.supports("backward", *args, np.dtype(np.float32))
    grouped = _geom((3, 3), 1, 1, 1, 2)
    assert not compiled_depthwise.supports("forward", (2, 4, 8, 8), (4, 2, 3, 3), grouped, np.float32)
    # beyond 49 taps: here up to 15x15 (11x11 for grad_weight), the FFT beyond
    large = _geom((9, 9), 1, 4, 1, 4)
    assert compiled_depthwise.supports("forward", (2, 4, 20, 20), (4, 1, 9, 9), large, np.float32)
    assert compiled_depthwise.recommended("forward", (2, 4, 20, 20), (4, 1, 9, 9), large, np.float32)
    larger, shape13 = _geom((13, 13), 1, 6, 1, 4), ((2, 4, 30, 30), (4, 1, 13, 13))
    assert compiled_depthwise.recommended("grad_input", *shape13, larger, np.float32)
    assert not compiled_depthwise.recommended("grad_weight", *shape13, larger, np.float32)
    largest = _geom((17, 17), 1, 8, 1, 4)
    assert not compiled_depthwise.recommended("forward", (2, 4, 40, 40), (4, 1, 17, 17), largest, np.float32)
    strided = _geom((17, 17), 2, 8, 1, 4)  # no FFT at stride 2: here at any size (the GEMM took 10x as long)
    assert compiled_depthwise.recommended("forward", (2, 4, 40, 40), (4, 1, 17, 17), strided, np.float32)
    small_stride_1 = ((2, 4, 8, 8), (4, 1, 3, 3), dw)  # the NumPy rule leaves these to GEMM
    assert compiled_depthwise.recommended("forward", *small_stride_1, np.float32)
    assert not depthwise.recommended("forward", *small_stride_1, np.float32)
    if not registry.pure():
        assert registry.available()["depthwise"].compiled
        assert plan.choose("forward", *args, np.float32) == "depthwise"


def test_three_d_forward_in_c_the_rest_on_the_numpy_implementation(rng):
    """3-d depthwise: the forward in C (the NumPy implementation's values up to rounding); a strided
    grad_input and the grad_weight handed to kernels/depthwise (the same results, its rule)."""
    geom = _geom((3, 3, 3), 2, 1, 1, 3)
    x, w = rng.standard_normal((1, 3, 6, 7, 5)), rng.standard_normal((6, 1, 3, 3, 3))
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert compiled_depthwise.supports(pass_name, x.shape, w.shape, geom, x.dtype)
    assert compiled_depthwise.recommended("forward", x.shape, w.shape, geom, x.dtype)
    for pass_name in ("grad_input", "grad_weight"):
        assert (compiled_depthwise.recommended(pass_name, x.shape, w.shape, geom, x.dtype)
                == depthwise.recommended(pass_name, x.shape, w.shape, geom, x.dtype))
    y = compiled_depthwise.forward(x, w, geom)
    np.testing.assert_allclose(y, depthwise.forward(x, w, geom), rtol=0, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(compiled_depthwise.grad_input(gy, w, geom, (6, 7, 5)),
                                  depthwise.grad_input(gy, w, geom, (6, 7, 5)))
    np.testing.assert_array_equal(compiled_depthwise.grad_weight(x, gy, geom),
                                  depthwise.grad_weight(x, gy, geom))


#: (activation, its NumPy form): ReLU, ReLU6 and another Hardtanh in the kernels' stores, SiLU after.
ACTIVATIONS = (
    (Activation("relu"), lambda y: np.maximum(y, 0)),
    (Activation("hardtanh", 0.0, 6.0), lambda y: np.clip(y, 0, 6)),
    (Activation("hardtanh", -0.5, 0.25), lambda y: np.clip(y, -0.5, 0.25)),
    (Activation("silu"), lambda y: y / (1 + np.exp(-y))),
)
#: (x_shape, kernel, stride, padding): every path of the forward's stores: bands of shared rows
#: (stride 1, rows of >= 1 vector), the row stencil (stride 2), rows narrower than a vector (flat
#: stencil, activation over the plane), a 1-d call without junk columns, 3-d on the NumPy variant,
#: 3x3 stride 2 of rows of several vectors (the ring of padded rows).
EPILOGUE_CASES = (
    ((2, 3, 9, 40), (3, 3), 1, 1),
    ((1, 2, 7, 37), (5, 5), 2, 2),
    ((2, 3, 6, 5), (3, 3), 1, 1),
    ((2, 9, 14, 14), (3, 3), 1, 1),
    ((2, 5, 11, 8), (3, 3), 1, 1),
    ((2, 3, 30), (3,), 1, 0),
    ((1, 2, 5, 6, 4), (3, 3, 3), 1, 1),
    ((2, 3, 7, 70), (3, 3), 2, 1),
)


def _assert_activation_equal(fused, expected, kind):
    if kind == "silu":
        np.testing.assert_allclose(fused, expected, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(fused, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", EPILOGUE_CASES, ids=[f"case{i}" for i in range(len(EPILOGUE_CASES))])
def test_fused_activation_epilogue(rng, isa, case, dtype):
    """``epilogue=``: activation(conv + bias) equals the unfused convolution followed by the activation,
    NaN staying NaN (as torch's relu/hardtanh) and reaching only the outputs that read it; forward and
    grad_input (stride 1: in the shared-row stores; stride 2: over each plane)."""
    x_shape, kernel, stride, padding = case
    c = x_shape[1]
    geom = _geom(kernel, stride, padding, 1, c)
    x = rng.standard_normal(x_shape).astype(dtype)
    x.reshape(-1)[x.size // 3] = np.nan
    w = rng.standard_normal((2 * c, 1) + kernel).astype(dtype)
    b = rng.standard_normal(2 * c).astype(dtype)
    plain = compiled_depthwise.forward(x, w, geom, b)
    assert np.isnan(plain).any() and not np.isnan(plain).all()
    gy = rng.standard_normal(plain.shape).astype(dtype)
    bx = rng.standard_normal(c).astype(dtype)
    plain_gx = compiled_depthwise.grad_input(gy, w, geom, x_shape[2:], bx)
    for activation, apply in ACTIVATIONS:
        fused = compiled_depthwise.forward(x, w, geom, epilogue=Epilogue(b, activation))
        _assert_activation_equal(fused, apply(plain), activation.kind)
        assert np.array_equal(np.isnan(fused), np.isnan(plain))
        fused_gx = compiled_depthwise.grad_input(gy, w, geom, x_shape[2:], epilogue=Epilogue(bx, activation))
        _assert_activation_equal(fused_gx, apply(plain_gx), activation.kind)
    relu_only = compiled_depthwise.forward(x, w, geom, epilogue=Epilogue(None, Activation("relu")))
    np.testing.assert_array_equal(relu_only, np.maximum(compiled_depthwise.forward(x, w, geom), 0))


@settings(max_examples=25, deadline=None)
@given(nd=st.integers(1, 2), multiplier=st.integers(1, 2), act=st.integers(0, len(ACTIVATIONS) - 1),
       float32=st.booleans(), data=st.data())
def test_random_geometries_fuse_the_epilogue(nd, multiplier, act, float32, data):
    """Random geometries and ISA variants: the fused epilogue equals the NumPy engine's convolution
    plus bias followed by the activation."""
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 7, 2, 40)
    previous = backends.core.isa
    backends.core.isa = data.draw(st.sampled_from(backends.core.isas))
    try:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        dtype = np.float32 if float32 else np.float64
        geom = _geom(kernel, stride, padding, dilation, 2)
        x = rng.standard_normal((2, 2) + size).astype(dtype)
        w = rng.standard_normal((2 * multiplier, 1) + kernel).astype(dtype)
        b = rng.standard_normal(2 * multiplier).astype(dtype)
        activation, apply = ACTIVATIONS[act]
        fused = compiled_depthwise.forward(x, w, geom, epilogue=Epilogue(b, activation))
        expected = apply(depthwise.forward(x, w, geom) + b.reshape((-1,) + (1,) * nd))
        assert np.linalg.norm(fused - expected) <= TOL[np.dtype(dtype)] * max(1.0, np.linalg.norm(expected))
    finally:
        backends.core.isa = previous


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_epilogue_through_the_planner_matches_torch(rng, dtype):
    """plan.forward with an activation (the fused inference path) against torch's convolution followed
    by relu / hardtanh (ReLU6), a MobileNetV2-style 3x3 depthwise layer at strides 1 and 2."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 8, 20, 36)).astype(dtype)
    x[1, 3, 4, 5] = np.nan
    w, b = rng.standard_normal((8, 1, 3, 3)).astype(dtype), rng.standard_normal(8).astype(dtype)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    relu6 = Activation("hardtanh", 0.0, 6.0)
    for stride in (1, 2):
        geom = _geom((3, 3), stride, 1, 1, 8)
        assert plan.choose("forward", x.shape, w.shape, geom, np.dtype(dtype)) == "depthwise"
        conv = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=1, groups=8)
        for activation, expected in ((Activation("relu"), torch.relu(conv)),
                                     (relu6, torch.nn.functional.hardtanh(conv, 0, 6))):
            got = plan.forward(x, w, geom, b, activation=activation)
            close(got, expected, what=f"{activation.kind} stride {stride}")


def test_extension_checks_the_activation():
    core, isa, geometry, x, w, y, scratch = _binding_operands()
    with pytest.raises(ValueError, match="act must be"):
        core.depthwise2d_forward(isa, x, w, None, y, scratch, geometry, 0, 2, 4, 0.0, 0.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        core.depthwise2d_forward(isa, x, w, None, y, scratch, geometry, 0, 2, 2, 1.0, 0.0)


def test_small_calls_stay_on_the_calling_thread(rng, monkeypatch):
    """Calls below MIN_THREAD_MACS per thread run on the calling thread (a hand-off costs more than
    they do); larger ones use every worker thread. Results are the same either way."""
    import npconv
    from npconv.kernels import workspace

    seen = []
    real_run = workspace.run_spans
    monkeypatch.setattr(workspace, "run_spans", lambda kernel, args, spans, *a, **k: (
        seen.append(len(spans)), real_run(kernel, args, spans, *a, **k))[1])
    previous = npconv.get_num_threads()
    npconv.set_num_threads(2)
    try:
        geom = _geom((3, 3), 1, 1, 1, 4)
        x, w = rng.standard_normal((1, 4, 8, 8)), rng.standard_normal((4, 1, 3, 3))
        small = compiled_depthwise.forward(x, w, geom)
        monkeypatch.setattr(compiled_depthwise, "MIN_THREAD_MACS", 1)
        split = compiled_depthwise.forward(x, w, geom)
    finally:
        npconv.set_num_threads(previous)
    assert seen == [1, 2]
    np.testing.assert_array_equal(small, split)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_epilogue_keeps_the_activation_ops_signed_zeros_and_specials(isa, dtype):
    """The fused ReLU / Hardtanh equal npconv's activation ops bit for bit on -0.0, +-inf and NaN
    (ReLU: -0.0 -> 0.0; Hardtanh passes -0.0 and NaN), a 1x1 depthwise layer so the outputs are the
    inputs (plus a -0.0 bias: -0.0 stays -0.0) over rows of several vectors."""
    from npconv.kernels import pointwise

    values = np.array([-0.0, 0.0, -1.0, 7.0, np.nan, np.inf, -np.inf, 0.5], dtype)
    x = np.tile(values, 12).reshape(1, 2, 3, 16)
    w, b = np.ones((2, 1, 1, 1), dtype), np.full(2, -0.0, dtype)
    geom = _geom((1, 1), 1, 0, 1, 2)
    plain = compiled_depthwise.forward(x, w, geom, b)
    np.testing.assert_array_equal(np.signbit(plain), np.signbit(x))
    for kind, lo, hi in (("relu", 0.0, 0.0), ("hardtanh", 0.0, 6.0), ("hardtanh", -0.5, 0.25)):
        fused = compiled_depthwise.forward(x, w, geom, epilogue=Epilogue(b, Activation(kind, lo, hi)))
        expected = pointwise.activate_(plain.copy(), kind, lo, hi)
        np.testing.assert_array_equal(fused, expected)
        np.testing.assert_array_equal(np.signbit(fused), np.signbit(expected))


def test_prepared_forward_holds_its_worker_split_while_the_threads_do(rng, monkeypatch):
    """A prepared forward splits the planes as the thread count and MIN_THREAD_MACS were when it was
    made: its token stops holding when either changes; while it holds, run() is the planned split's
    result (the reference's)."""
    import npconv

    geom = _geom((3, 3), 1, 1, 1, 64)
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(2)
        prepared = compiled_depthwise.prepare_forward(x.shape, x.dtype, w, geom)
        assert prepared.valid()
        spans = []
        real = compiled_depthwise.workspace.run_spans
        monkeypatch.setattr(compiled_depthwise.workspace, "run_spans", lambda kernel, args, s, *rest, **k:
                            (spans.append(list(s)), real(kernel, args, s, *rest, **k))[1])
        y = prepared.run(x)
        assert spans == [[(0, 32), (32, 64)]]
        assert relative_error(y, reference.conv(x, w, padding=1, groups=64)) < 1e-6
        monkeypatch.setattr(compiled_depthwise, "MIN_THREAD_MACS", 1 << 40)
        assert not prepared.valid()
        monkeypatch.undo()
        assert prepared.valid()
        npconv.set_num_threads(1)
        assert not prepared.valid()
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("k", "stride"), [(13, 1), (11, 2)], ids=["13x13", "11x11-stride2"])
def test_large_depthwise_kernels_through_conv2d_match_torch(torch, dtype, k, stride):
    """Large depthwise kernels on this kernel by the rule (13x13 forward and grad_input, grad_weight
    on the FFT; 11x11/2 all three passes): output and every gradient against torch."""
    from npconv.kernels import plan

    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 6, 29, 33)).astype(dtype)
    conv = npconv.nn.Conv2d(6, 6, k, stride, k // 2, groups=6).to(getattr(npconv, np.dtype(dtype).name))
    tconv = torch.nn.Conv2d(6, 6, k, stride, k // 2, groups=6).to(getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(conv.weight.numpy()))
        tconv.bias.copy_(torch.from_numpy(conv.bias.numpy()))
    explicit = conv.geometry.with_padding(conv.geometry.pads(x.shape[2:]))
    chosen = [plan.choose(p, x.shape, conv.weight.shape, explicit, dtype) for p in ("forward", "grad_input")]
    assert chosen == ["depthwise", "depthwise"]
    xn, xt = npconv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = conv(xn), tconv(xt)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(npconv.tensor(gy))
    yt.backward(torch.from_numpy(gy))
    assert_close(y.detach().numpy(), yt.detach())
    assert_close(xn.grad.numpy(), xt.grad)
    assert_close(conv.weight.grad.numpy(), tconv.weight.grad)
    assert_close(conv.bias.grad.numpy(), tconv.bias.grad)
