"""The compiled grouped-convolution kernels (npconv._core via kernels/compiled_grouped) against the
NumPy reference oracle (tests/reference.py) and torch, on every ISA variant this CPU runs.

Covers the three passes in float32 and float64: groups with several input and output channels per
group (output-channel counts off the register block), 1-d and 2-d, strides, dilations, asymmetric
and oversized padding, odd sizes, rows wider than a register block and narrower than a vector,
grad_input as the stride-1 adjoint (the GEMM path beyond), the fused bias and activation epilogue
(against the unfused convolution then the activation, and torch through the planner), non-contiguous inputs,
one to three worker threads, NaN/inf locality, every padding mode through nn.Conv2d, the
extension's own guards, and supports()/recommended().
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
from npconv.kernels import gemm, plan
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation
from torch_oracle import assert_close, close

compiled_grouped = pytest.importorskip("npconv.kernels.compiled_grouped",
                                       reason=f"compiled core not in use: {backends.core.reason}")


def _geom(kernel, stride, padding, dilation, groups) -> ConvGeometry:
    return ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=len(kernel))


def _check(rng, n, groups, cg, og, size, kernel, stride, padding, dilation, dtype, bias=True):
    """The three passes (with fused biases) against the NumPy reference, elementwise to the dtype's
    tolerance; grad_input must be supported natively exactly at stride 1 within the kernel's extent."""
    geom = _geom(kernel, stride, padding, dilation, groups)
    x = rng.standard_normal((n, groups * cg) + tuple(size)).astype(dtype)
    w = rng.standard_normal((groups * og, cg) + tuple(kernel)).astype(dtype)
    b = rng.standard_normal(groups * og).astype(dtype) if bias else None
    bx = rng.standard_normal(groups * cg).astype(dtype) if bias else None
    for pass_name in ("forward", "grad_weight"):
        assert compiled_grouped.supports(pass_name, x.shape, w.shape, geom, np.dtype(dtype)), pass_name
    y = compiled_grouped.forward(x, w, geom, bias=b)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = compiled_grouped.grad_input(gy, w, geom, x.shape[2:], bias=bx)
    gw = compiled_grouped.grad_weight(x, gy, geom)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    r_y, r_gx, r_gw = reference.conv_passes(x, w, gy, geom.with_padding(geom.pads(x.shape[2:])))
    shape = (-1,) + (1,) * geom.ndim
    assert_close(y - (b.reshape(shape) if bias else 0), r_y, what="forward")
    assert_close(gx - (bx.reshape(shape) if bias else 0), r_gx, what="grad_input")
    assert_close(gw, r_gw, what="grad_weight")
    return geom, x, w


# (n, groups, Cg, Og, size, kernel, stride, padding, dilation): the benchmark's 8-channel groups,
# output channels off both register blocks (8 and 4 wide), rows wider than a 3-vector block with a
# ragged end, rows narrower than a vector, 1-d, asymmetric/oversized padding, strides beyond the
# kernel (pixels never read), phases wholly inside the padding, Cg = 1.
CASES = [
    (2, 4, 8, 8, (9, 10), (3, 3), 1, 1, 1),
    (1, 3, 5, 11, (13, 70), (3, 3), 1, 1, 1),
    (2, 2, 3, 6, (11, 53), (3, 3), 2, 1, 1),
    (1, 2, 4, 9, (12, 31), (5, 5), 1, 2, 1),
    (1, 2, 2, 3, (15, 19), (7, 7), 2, 3, 1),
    (2, 3, 2, 5, (5, 3), (3, 3), 1, 1, 1),
    (1, 2, 3, 4, (9, 11), (3, 3), 1, ((0, 2), (3, 1)), 2),
    (1, 2, 2, 3, (10, 9), (3, 2), 3, ((2, 0), (1, 3)), 2),
    (2, 2, 3, 5, (9, 7), (5, 3), (3, 2), 2, (1, 3)),
    (1, 2, 2, 2, (8, 8), (2, 2), 3, 0, 1),
    (1, 2, 2, 2, (3, 3), (3, 3), 3, ((2, 1), (0, 4)), 1),
    (1, 2, 3, 2, (13, 6), (5, 5), 1, 4, (1, 2)),
    (3, 2, 3, 2, (40,), (4,), 2, ((3, 0),), 1),
    (2, 3, 4, 5, (15,), (9,), 1, 4, 1),
    (1, 4, 1, 3, (7, 9), (3, 3), 1, 1, 1),
]
# grad_weight runs its positions in chunks (csrc/grouped.h GP_GW_CHUNK, 64 vectors) where a kernel has
# more than two tap blocks (11 taps on AVX-512, 7 below) and its wide rows hold more positions than a
# chunk on every ISA (1024 on AVX-512): output channels off the 4-wide block, a ragged last chunk, a
# stem-like stride 2 over four phase planes, 1-d.
CHUNKED = [
    (2, 2, 3, 5, (40, 41), (5, 5), 1, 2, 1),
    (1, 1, 3, 9, (75, 77), (7, 7), 2, 3, 1),
    (2, 3, 2, 3, (1200,), (11,), 1, 5, 1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_cases_match_the_reference(rng, isa, case, dtype):
    _check(rng, *case, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CHUNKED, ids=["25-taps", "stem-7x7-2", "1d-11-taps"])
def test_grad_weight_in_position_chunks_matches_the_reference(rng, isa, case, dtype):
    _check(rng, *case, dtype)


def test_grad_weight_in_position_chunks_keeps_non_finite_values_local(rng, isa):
    """An inf read by some taps of one input channel, in the last of several position chunks, makes
    exactly those weight taps non-finite; an inf in a column no tap reads (the junk lanes of every
    chunk read it) leaves grad_weight finite."""
    geom = _geom((5, 5), 2, 0, 1, 1)
    x = rng.standard_normal((1, 2, 80, 82))  # output 38x39 reads columns 0..80 only
    gy = rng.standard_normal((1, 6) + geom.output_size((80, 82)))
    x[0, 1, 70, 81] = np.inf
    assert np.isfinite(compiled_grouped.grad_weight(x, gy, geom)).all()
    x[0, 0, 75, 4] = np.inf  # read by outputs (row, col) = ((75 - kh) / 2, (4 - kw) / 2) for even offsets
    gw = compiled_grouped.grad_weight(x, gy, geom)
    bad = ~np.isfinite(gw)
    taps = [(kh, kw) for kh in range(5) for kw in range(5) if (75 - kh) % 2 == 0 and (4 - kw) % 2 == 0]
    assert bad.sum() == 6 * len(taps)
    assert all(bad[:, 0, kh, kw].all() for kh, kw in taps)


@settings(max_examples=30, deadline=None)
@given(nd=st.integers(1, 2), n=st.integers(1, 2), groups=st.integers(2, 3), cg=st.integers(1, 5),
       og=st.integers(1, 10), float32=st.booleans(), data=st.data())
def test_random_geometries_match_the_reference(nd, n, groups, cg, og, float32, data):
    """Random geometries on every ISA variant this CPU runs (drawn per example)."""
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 5, 2, 20)
    previous = backends.core.isa
    backends.core.isa = data.draw(st.sampled_from(backends.core.isas))
    try:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        _check(rng, n, groups, cg, og, size, kernel, stride, padding, dilation,
               np.float32 if float32 else np.float64, bias=data.draw(st.booleans()))
    finally:
        backends.core.isa = previous


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 1), (1, 2)])
def test_passes_match_torch(torch, isa, dtype, stride, dilation):
    """Forward (+ bias) and both gradients against torch's autograd."""
    rng = np.random.default_rng(stride * 10 + dilation)
    geom = _geom((3, 3), stride, 1, dilation, 4)
    x = rng.standard_normal((2, 32, 13, 21)).astype(dtype)
    w = rng.standard_normal((24, 8, 3, 3)).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride, 1, dilation, 4)
    gy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.from_numpy(gy))
    assert_close(compiled_grouped.forward(x, w, geom, bias=b), yt, what="forward")
    assert_close(compiled_grouped.grad_input(gy, w, geom, x.shape[2:]), xt.grad, what="grad_input")
    assert_close(compiled_grouped.grad_weight(x, gy, geom), wt.grad, what="grad_weight")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_every_padding_mode_through_conv2d_matches_torch(torch, padding_mode):
    """nn.Conv2d with groups and each padding mode (pre-padded by the op layer), the grouped
    algorithm forced for every pass, against torch in float64."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 12, 9, 11))
    gy = rng.standard_normal((2, 18, 9, 11))
    ours = npconv.nn.Conv2d(12, 18, 3, padding=1, groups=3, padding_mode=padding_mode, dtype=npconv.float64)
    theirs = torch.nn.Conv2d(12, 18, 3, padding=1, groups=3, padding_mode=padding_mode,
                             dtype=torch.float64)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(np.asarray(ours.weight.data)))
        theirs.bias.copy_(torch.from_numpy(np.asarray(ours.bias.data)))
    xo = npconv.tensor(x, requires_grad=True)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    with backends.conv.force("grouped"):
        yo = ours(xo)
        (yo * npconv.tensor(gy)).sum().backward()
    yt = theirs(xt)
    yt.backward(torch.from_numpy(gy))
    assert_close(yo, yt, what="forward")
    assert_close(xo.grad, xt.grad, what="grad_input")
    assert_close(ours.weight.grad, theirs.weight.grad, what="grad_weight")
    assert_close(ours.bias.grad, theirs.bias.grad, what="grad_bias")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_worker_threads_and_non_contiguous_inputs(rng, isa, threads):
    """Strided, transposed and reversed views; the items (images x groups, groups) split over one
    to three worker threads (three: uneven ranges on two cores)."""
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    try:
        geom = _geom((3, 3), 1, 1, 1, 5)
        x = rng.standard_normal((3, 10, 22, 17))[:, :, ::2, :]
        w = rng.standard_normal((15, 2, 3, 3)).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
        assert not x.flags.c_contiguous and not w.flags.c_contiguous
        gy = rng.standard_normal((3, 15, 11, 17))[..., ::-1]
        r_y, r_gx, r_gw = reference.conv_passes(x, w, gy, geom.with_padding(geom.pads(x.shape[2:])))
        assert_close(compiled_grouped.forward(x, w, geom), r_y, what="forward")
        assert_close(compiled_grouped.grad_input(gy, w, geom, x.shape[2:]), r_gx, what="grad_input")
        assert_close(compiled_grouped.grad_weight(x, gy, geom), r_gw, what="grad_weight")
    finally:
        npconv.set_num_threads(previous)


def test_adjoint_identities(rng, isa):
    """<forward(x, w), gy> = <x, grad_input(gy, w)> = <w, grad_weight(x, gy)>, without any reference."""
    for stride, dilation in ((1, 1), (1, 2), (2, 1), (3, 2)):
        geom = _geom((3, 4), stride, ((1, 2), (0, 3)), (dilation, 1), 3)
        x = rng.standard_normal((2, 6, 13, 12))
        w = rng.standard_normal((9, 2, 3, 4))
        assert_passes_are_adjoint(compiled_grouped, x, w, geom, rng)


def test_float32_accuracy_bound(rng, isa):
    """float32 within 2e-6 norm-relative of float64 (grad_weight sums per image in float64)."""
    geom = _geom((3, 3), 1, 1, 1, 4)
    x = rng.standard_normal((4, 32, 28, 28))
    w = rng.standard_normal((32, 8, 3, 3)) / 8
    gy = rng.standard_normal((4, 32, 28, 28))
    x32, w32, gy32 = (a.astype(np.float32) for a in (x, w, gy))
    assert relative_error(compiled_grouped.forward(x32, w32, geom),
                          compiled_grouped.forward(x, w, geom)) < 2e-6
    assert relative_error(compiled_grouped.grad_input(gy32, w32, geom, (28, 28)),
                          compiled_grouped.grad_input(gy, w, geom, (28, 28))) < 2e-6
    assert relative_error(compiled_grouped.grad_weight(x32, gy32, geom),
                          compiled_grouped.grad_weight(x, gy, geom)) < 2e-6


def test_non_finite_values_stay_local(rng, isa):
    """An inf in x reaches only the outputs and weight taps that read it (the wide layout's junk
    lanes must not multiply it): the last input column is never read with stride 2."""
    geom = _geom((3, 3), 2, 0, 1, 2)
    x = rng.standard_normal((1, 4, 9, 10))  # output 4x4 reads columns 0..8 only
    x[0, 1, 3, 9] = np.inf
    w = rng.standard_normal((6, 2, 3, 3))
    y = compiled_grouped.forward(x, w, geom)
    gy = rng.standard_normal(y.shape)
    assert np.isfinite(y).all()
    assert np.isfinite(compiled_grouped.grad_weight(x, gy, geom)).all()
    x[0, 1, 3, 8] = np.inf  # channel 1 (group 0): read by the last output column of row 1 (tap 1, 2)
    gw = compiled_grouped.grad_weight(x, gy, geom)
    bad = ~np.isfinite(gw)
    assert bad[:3, 1, 1, 2].all() and bad.sum() == 3
    y = compiled_grouped.forward(x, w, geom)
    assert (~np.isfinite(y)).sum() == 3  # one output in each of group 0's channels


def test_grad_input_beyond_stride_1_runs_the_gemm_path(rng):
    geom = _geom((3, 3), 2, 1, 1, 2)
    w, gy = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 5, 5))
    assert not compiled_grouped.supports("grad_input", (2, 6, 10, 10), w.shape, geom, np.float64)
    assert compiled_grouped.supports("forward", (2, 6, 10, 10), w.shape, geom, np.float64)
    np.testing.assert_array_equal(compiled_grouped.grad_input(gy, w, geom, (10, 10)),
                                  gemm.grad_input(gy, w, geom, (10, 10)))
    wide_pad = _geom((3, 3), 1, 3, 1, 2)  # padding beyond the kernel's extent: no adjoint forward
    assert not compiled_grouped.supports("grad_input", (2, 6, 10, 10), w.shape, wide_pad, np.float64)
    assert compiled_grouped.supports("grad_weight", (2, 6, 10, 10), w.shape, wide_pad, np.float64)


def test_forcing_it_runs_grad_weight_where_grad_input_goes_elsewhere(rng):
    """Forced for every pass at stride 2: grad_weight runs (the planner's look at the sibling passes
    does not trip over the unsupported one), grad_input is refused naming the algorithms that run it."""
    geom = _geom((3, 3), 2, 1, 1, 2)
    x, w = rng.standard_normal((2, 6, 10, 10)), rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 5, 5))
    with backends.conv.force("grouped"):
        gw = plan.grad_weight(x, gy, geom)
        with pytest.raises(ValueError, match="does not support the grad_input pass"):
            plan.grad_input(gy, w, geom, (10, 10))
    assert_close(gw, reference.conv_passes(x, w, gy, geom.with_padding(geom.pads((10, 10))))[2])


def test_extension_guards_its_buffers():
    """The extension checks sizes, element types and ranges itself (no out-of-bounds access)."""
    core = backends.core.module
    geometry = (1, 2, 2, 3, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1)
    x, w, y = np.zeros((1, 4, 5, 5)), np.zeros((6, 2, 3, 3)), np.zeros((1, 6, 5, 5))
    scratch = np.zeros(core.grouped2d_scratch(0, geometry))
    isa = backends.core.isa_index
    core.grouped2d_forward(isa, x, w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="scratch"):
        core.grouped2d_forward(isa, x, w, None, y, scratch[:-1], geometry, 0, 2)
    with pytest.raises(ValueError, match="output"):
        core.grouped2d_forward(isa, x, w, None, y[:, :1], scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="weight"):
        core.grouped2d_forward(isa, x, w[:5], None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="bias"):
        core.grouped2d_forward(isa, x, w, np.zeros(5), y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="range"):
        core.grouped2d_forward(isa, x, w, None, y, scratch, geometry, 1, 3)
    y[...] = 7.0
    core.grouped2d_forward(isa, x, w, None, y, scratch, geometry, 0, 2, 0, 0.0, 0.0, 1, 3)  # rows 1, 2 only
    assert (y[:, :, 1:3] == 0).all() and (y[:, :, [0, 3, 4]] == 7).all()
    for rows in ((3, 2), (-1, 2), (0, 6)):
        with pytest.raises(ValueError, match="row range"):
            core.grouped2d_forward(isa, x, w, None, y, scratch, geometry, 0, 2, 0, 0.0, 0.0, *rows)
    with pytest.raises(TypeError, match="element type"):
        core.grouped2d_forward(isa, x.astype(np.float32), w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        core.grouped2d_forward(isa, x.astype(np.int64), w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="contiguous"):
        core.grouped2d_forward(isa, x[..., ::-1], w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="geometry value"):
        core.grouped2d_forward(isa, x, w, None, y, scratch, (1, 0) + geometry[2:], 0, 2)
    with pytest.raises(TypeError, match="16 ints"):
        core.grouped2d_forward(isa, x, w, None, y, scratch, geometry[:-1], 0, 2)
    with pytest.raises(ValueError, match="ISA variant"):
        core.grouped2d_forward(99, x, w, None, y, scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="pass"):
        core.grouped2d_scratch(1, geometry)
    gw_scratch = np.zeros(core.grouped2d_scratch(2, geometry))
    core.grouped2d_grad_weight(isa, x, y, w, gw_scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="group range"):
        core.grouped2d_grad_weight(isa, x, y, w, gw_scratch, geometry, 0, 3)
    with pytest.raises(ValueError, match="grad_weight"):
        core.grouped2d_grad_weight(isa, x, y, w[:1], gw_scratch, geometry, 0, 2)
    with pytest.raises(ValueError, match="plane, stride or scratch"):  # a stride beyond the read extent
        core.grouped2d_scratch(0, geometry[:10] + (2**20, 2**20) + geometry[12:])


def test_supports_and_recommended():
    g32 = _geom((3, 3), 1, 1, 1, 32)
    args = ((8, 256, 28, 28), (256, 8, 3, 3), g32)
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert compiled_grouped.supports(pass_name, *args, np.dtype(np.float32))
        assert compiled_grouped.recommended(pass_name, *args, np.dtype(np.float64))
    assert not compiled_grouped.supports("forward", *args, np.dtype(np.float16))
    assert not compiled_grouped.supports("backward", *args, np.dtype(np.float32))
    three_d = _geom((3, 3, 3), 1, 1, 1, 2)
    assert not compiled_grouped.supports("forward", (1, 4, 5, 5, 5), (4, 2, 3, 3, 3), three_d, np.float32)
    dense = _geom((5, 5), 2, 2, 1, 1)  # ungrouped: the forward only, recommended for a stem's few channels
    assert compiled_grouped.supports("forward", (2, 8, 8, 8), (4, 8, 5, 5), dense, np.float32)
    assert compiled_grouped.recommended("forward", (2, 8, 8, 8), (4, 8, 5, 5), dense, np.float32)
    assert compiled_grouped.recommended("grad_weight", (2, 8, 8, 8), (4, 8, 5, 5), dense, np.float32)
    assert not compiled_grouped.supports("grad_input", (2, 4, 8, 8), (4, 4, 5, 5), dense, np.float32)
    assert not compiled_grouped.recommended("forward", (2, 9, 8, 8), (4, 9, 5, 5), dense, np.float32)
    small_kernel = _geom((3, 3), 2, 1, 1, 1)  # 9 taps: the forward here, grad_weight on the GEMM
    assert compiled_grouped.recommended("forward", (2, 3, 8, 8), (4, 3, 3, 3), small_kernel, np.float32)
    assert not compiled_grouped.recommended("grad_weight", (2, 3, 8, 8), (4, 3, 3, 3), small_kernel,
                                            np.float32)
    assert compiled_grouped.supports("forward", (2, 3, 8, 8), (4, 3, 3, 3), small_kernel, np.float32)
    two_by_two = _geom((2, 2), 2, 0, 1, 1)  # fewer taps: the GEMM
    assert not compiled_grouped.recommended("forward", (2, 3, 8, 8), (4, 3, 2, 2), two_by_two, np.float32)
    unit_stride = _geom((5, 5), 1, 2, 1, 1)  # the implicit GEMM
    assert not compiled_grouped.recommended("forward", (2, 3, 8, 8), (4, 3, 5, 5), unit_stride, np.float32)
    wide_groups = _geom((3, 3), 1, 1, 1, 2)
    assert not compiled_grouped.recommended("forward", (2, 128, 8, 8), (64, 64, 3, 3), wide_groups,
                                            np.float32)
    huge_padding = _geom((3, 3), 1, 300, 300, 2)
    assert not compiled_grouped.supports("forward", (1, 4, 8, 8), (4, 2, 3, 3), huge_padding,
                                         np.float32)
    if not registry.pure():
        assert registry.available()["grouped"].compiled
        for pass_name in ("forward", "grad_input", "grad_weight"):
            assert plan.choose(pass_name, *args, np.float32) == "grouped"
        depthwise = _geom((3, 3), 1, 1, 1, 4)
        assert plan.choose("forward", (2, 4, 8, 8), (4, 1, 3, 3), depthwise, np.float32) == "depthwise"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_activation_epilogue(rng, isa, dtype):
    """``epilogue=``: activation(conv + bias) equals the unfused convolution then the activation (NaN
    stays NaN and only where read); forward, grad_input at stride 1 (in the kernel) and stride 2 (the
    GEMM path, activation after), SiLU after the kernel."""
    geom = _geom((3, 3), 1, 1, 1, 4)
    x = rng.standard_normal((2, 16, 9, 21)).astype(dtype)
    x[1, 5, 4, 7] = np.nan
    w, b = rng.standard_normal((12, 4, 3, 3)).astype(dtype), rng.standard_normal(12).astype(dtype)
    plain = compiled_grouped.forward(x, w, geom, b)
    assert np.isnan(plain).any() and not np.isnan(plain).all()
    gy, bx = rng.standard_normal(plain.shape).astype(dtype), rng.standard_normal(16).astype(dtype)
    strided = _geom((3, 3), 2, 1, 1, 4)
    gy2 = rng.standard_normal((2, 12, 5, 11)).astype(dtype)
    for activation, apply in ((Activation("relu"), lambda y: np.maximum(y, 0)),
                              (Activation("hardtanh", 0.0, 6.0), lambda y: np.clip(y, 0, 6)),
                              (Activation("hardtanh", -0.5, 0.25), lambda y: np.clip(y, -0.5, 0.25))):
        fused = compiled_grouped.forward(x, w, geom, epilogue=Epilogue(b, activation))
        np.testing.assert_array_equal(fused, apply(plain))
        np.testing.assert_array_equal(
            compiled_grouped.grad_input(gy, w, geom, x.shape[2:], epilogue=Epilogue(bx, activation)),
            apply(compiled_grouped.grad_input(gy, w, geom, x.shape[2:], bx)))
        np.testing.assert_array_equal(
            compiled_grouped.grad_input(gy2, w, strided, x.shape[2:], epilogue=Epilogue(bx, activation)),
            apply(compiled_grouped.grad_input(gy2, w, strided, x.shape[2:], bx)))
    silu = compiled_grouped.forward(x, w, geom, epilogue=Epilogue(b, Activation("silu")))
    np.testing.assert_allclose(silu, plain / (1 + np.exp(-plain)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_epilogue_through_the_planner_matches_torch(torch, dtype):
    """plan.forward with ReLU6 (the fused inference path) against torch's grouped convolution then
    hardtanh, in the test's dtype."""
    rng = np.random.default_rng(7)
    geom = _geom((3, 3), 1, 1, 1, 8)
    x = rng.standard_normal((2, 32, 11, 19)).astype(dtype)
    w, b = rng.standard_normal((32, 4, 3, 3)).astype(dtype), rng.standard_normal(32).astype(dtype)
    assert plan.choose("forward", x.shape, w.shape, geom, np.dtype(dtype)) == "grouped"
    expected = torch.nn.functional.hardtanh(
        torch.nn.functional.conv2d(*(torch.from_numpy(a) for a in (x, w, b)), padding=1, groups=8), 0, 6)
    close(plan.forward(x, w, geom, b, activation=Activation("hardtanh", 0.0, 6.0)), expected)


STEMS = [  # (n, c, o, size, kernel, stride, padding, dilation): ungrouped, few input channels
    (1, 3, 64, (30, 29), (7, 7), 2, 3, 1),  # ResNet's stem, output rows split across the workers
    (1, 3, 13, (17, 16), (3, 3), 2, 1, 1),  # a block and a partial one
    (1, 1, 20, (11, 23), (5, 3), 1, (2, 0), (1, 2)),
    (3, 4, 9, (12, 12), (3, 3), 3, 1, 1),  # three images: split by image
    (1, 3, 16, (40,), (9,), 2, 4, 1),  # 1-d
]


@pytest.mark.parametrize("threads", [2, 3])
def test_a_single_images_rows_split_in_fixed_bands(rng, isa, threads, monkeypatch):
    """A single image's output rows: one fixed band per worker whether or not the workers share other
    calls' items (a max pooling after the layer splits the same rows: its input stays in each worker's
    cache), each band zeroing and filling only the phase rows it reads: the reference's values, run
    directly and bound, after a call of another geometry left NaN in the same scratch buffers (the
    padding cells a band reads must be zeroed again)."""
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    monkeypatch.setattr(compiled_grouped.workspace, "SHARED_MIN_MACS", 0)
    shared = []
    share = backends.core.module.jobs_share
    monkeypatch.setattr(backends.core.module, "jobs_share", lambda *a: (shared.append(a[2]), share(*a))[1])
    try:
        for size, kernel, stride, padding in [((37, 45), (7, 7), 2, 3), ((26, 19), (3, 3), 1, 1)]:
            geom = ConvGeometry.create(kernel, stride, padding, ndim=2)
            x = rng.standard_normal((1, 3) + size)
            w, b = rng.standard_normal((20, 3) + kernel), rng.standard_normal(20)
            poison = np.full((1, 3, 61, 70), np.nan)  # wider planes: NaN in every scratch cell the others use
            expected = reference.conv(x, w, b, stride, padding)
            rows = expected.shape[2]
            assert compiled_grouped._parts(1, 1, 20, rows, threads) == (
                "rows", [(rows * k // threads, rows * (k + 1) // threads) for k in range(threads)])
            for on in (False, True):
                monkeypatch.setattr(compiled_grouped.workspace, "SHARED_RANGES", on)
                compiled_grouped.forward(poison, w, geom)
                direct = compiled_grouped.prepare_forward(x.shape, x.dtype, w, geom, b).run(x)
                compiled_grouped.forward(poison, w, geom)
                y = np.full_like(direct, np.nan)
                prepared = compiled_grouped.prepare_forward(x.shape, x.dtype, w, geom, b)
                prepared.bind(x, y, lambda name, size_, dtype: np.full(size_, np.nan, dtype))()
                assert relative_error(direct, expected) < 1e-12
                np.testing.assert_array_equal(y, direct)
            assert shared == []
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ungrouped_forward_of_few_channels(rng, isa, dtype, threads, monkeypatch):
    """groups=1 (a network's stem) against the reference, with its bias and a fused ReLU6; a single
    image's output rows split across the worker threads (each call a band of rows: together every row
    once), a 1-d one's output channels (CHANNEL_BLOCK ranges, the last partial), more images by image;
    the prepared forward holds while the thread count does; grad_weight with the images split across
    the threads (partial sums added)."""
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    jobs: list[int] = []
    run_jobs = compiled_grouped.workspace.run_jobs
    monkeypatch.setattr(compiled_grouped.workspace, "run_jobs",
                        lambda js, *args: jobs.append(len(js)) or run_jobs(js, *args))
    bands: list[list[tuple]] = []  # each forward's calls' argument tails
    run_calls = compiled_grouped.workspace.run_calls
    monkeypatch.setattr(compiled_grouped.workspace, "run_calls", lambda kernel, calls, *args: (
        bands.append([tail for _, _, tail in calls]), run_calls(kernel, calls, *args))[1])
    try:
        for n, c, o, size, kernel, stride, padding, dilation in STEMS:
            geom = ConvGeometry.create(kernel, stride, padding, dilation, ndim=len(kernel))
            x = rng.standard_normal((n, c) + size).astype(dtype)
            w = rng.standard_normal((o, c) + kernel).astype(dtype)
            b = rng.standard_normal(o).astype(dtype)
            wide = (a.astype(np.float64) for a in (x, w, b))
            expected = reference.conv(*wide, geom.stride, geom.pads(size), geom.dilation).astype(dtype)
            jobs.clear()
            bands.clear()
            prepared = compiled_grouped.prepare_forward(x.shape, x.dtype, w, geom, b)
            assert_close(prepared.run(x), expected, what=f"forward {n, c, o, size}")
            if n == 1 and threads > 1 and len(size) == 2:  # rows [r0, r1) per call, in order, each once
                rows = [tail[-2:] for tail in bands[-1]]
                assert [r for r0, r1 in rows for r in range(r0, r1)] == list(range(expected.shape[2]))
                assert len(rows) == threads
            elif n == 1 and threads > 1:
                assert jobs == [min(threads, -(-o // compiled_grouped.CHANNEL_BLOCK))]
            gy = rng.standard_normal(expected.shape).astype(dtype)
            wide = [a.astype(np.float64) for a in (x, gy)]
            r_gw = reference.conv_grad_weight(*wide, kernel, geom.stride, geom.pads(size), geom.dilation)
            jobs.clear()
            assert_close(compiled_grouped.grad_weight(x, gy, geom), r_gw.astype(dtype), what="grad_weight")
            assert jobs == ([min(threads, n)] if n > 1 and threads > 1 else [])
            relu6 = Epilogue(b, Activation("hardtanh", 0.0, 6.0))
            relu6 = compiled_grouped.forward(x, w, geom, epilogue=relu6)
            assert_close(relu6, np.clip(expected, 0, 6), what="forward + ReLU6")
            assert prepared.valid()
            npconv.set_num_threads(threads % 3 + 1)
            assert not prepared.valid()
            npconv.set_num_threads(threads)
    finally:
        npconv.set_num_threads(previous)


def test_the_planner_runs_a_stem_here_and_its_gradients_elsewhere(torch):
    """A 3-channel 7x7/2 convolution: the planner's forward and grad_weight are this algorithm's
    (the forward through nn.Conv2d's planned inference call too), grad_input the GEMM's; all match
    torch."""
    rng = np.random.default_rng(3)
    geom = _geom((7, 7), 2, 3, 1, 1)
    x = rng.standard_normal((1, 3, 37, 35))
    assert plan.choose("forward", x.shape, (16, 3, 7, 7), geom, np.dtype(np.float64)) == "grouped"
    assert plan.choose("grad_weight", x.shape, (16, 3, 7, 7), geom, np.dtype(np.float64)) == "grouped"
    assert plan.choose("grad_input", x.shape, (16, 3, 7, 7), geom, np.dtype(np.float64)) != "grouped"
    conv = npconv.nn.Conv2d(3, 16, 7, 2, 3).double()
    reference_conv = torch.nn.Conv2d(3, 16, 7, 2, 3).double()
    reference_conv.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                                    for k, v in conv.state_dict().items()})
    with npconv.no_grad():
        for _ in range(2):  # the second call runs the plan
            close(conv(npconv.tensor(x)), reference_conv(torch.from_numpy(x)))
    xt = npconv.tensor(x, requires_grad=True)
    conv(xt).sum().backward()
    x_torch = torch.from_numpy(x).requires_grad_()
    reference_conv(x_torch).sum().backward()
    close(xt.grad, x_torch.grad)
    close(conv.weight.grad, reference_conv.weight.grad)


@settings(max_examples=30, deadline=None)
@given(nd=st.integers(1, 2), n=st.integers(1, 3), c=st.integers(1, 4), o=st.integers(1, 20),
       threads=st.integers(1, 3), float32=st.booleans(), data=st.data())
def test_random_ungrouped_geometries_match_the_reference(nd, n, c, o, threads, float32, data):
    """groups=1 (the forward split by output channels for one image, grad_weight by images) on random
    geometries, thread counts and ISA variants."""
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 5, 2, 20)
    geom = ConvGeometry.create(kernel, stride, padding, dilation, ndim=nd)
    previous, previous_threads = backends.core.isa, npconv.get_num_threads()
    backends.core.isa = data.draw(st.sampled_from(backends.core.isas))
    npconv.set_num_threads(threads)
    try:
        dtype = np.float32 if float32 else np.float64
        rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        x = rng.standard_normal((n, c) + tuple(size)).astype(dtype)
        w = rng.standard_normal((o, c) + tuple(kernel)).astype(dtype)
        b = rng.standard_normal(o).astype(dtype)
        assert compiled_grouped.supports("forward", x.shape, w.shape, geom, np.dtype(dtype))
        y = compiled_grouped.forward(x, w, geom, bias=b)
        gy = rng.standard_normal(y.shape).astype(dtype)
        r_y, _, r_gw = reference.conv_passes(x, w, gy, geom.with_padding(geom.pads(x.shape[2:])))
        assert_close(y - b.reshape((-1,) + (1,) * nd), r_y, what="forward")
        assert_close(compiled_grouped.grad_weight(x, gy, geom), r_gw, what="grad_weight")
    finally:
        backends.core.isa = previous
        npconv.set_num_threads(previous_threads)


def test_large_kernels_of_few_channels_per_group_split_with_the_fft():
    """2-4 input channels per group, stride 1: the grouped kernel up to 13x13 (forward, grad_input)
    and 21x21 (grad_weight), the FFT beyond; one channel per group (depthwise) keeps its rule;
    strided calls stay here at any size; 8-16 per group as the FFT's dense rule and
    LARGE_KERNEL_MAX_TAPS give it."""
    def choices(cg, k, stride=1):
        geom = _geom((k, k), stride, k // 2, 1, 64 // cg)
        return [plan.choose(p, (8, 64, 56, 56), (64, cg, k, k), geom, np.float32)
                for p in ("forward", "grad_input", "grad_weight")]

    assert choices(2, 9) == choices(4, 13) == ["grouped"] * 3
    assert choices(4, 15) == choices(2, 21) == ["fft", "fft", "grouped"]
    assert choices(2, 23) == ["fft"] * 3
    assert choices(1, 13) == ["depthwise", "depthwise", "fft"]  # depthwise: its own limits
    # strided (no FFT): here at any size for forward and grad_weight (grad_input: the GEMM)
    assert choices(4, 9, stride=2) == choices(16, 25, stride=2) == ["grouped", "gemm", "grouped"]
    # 8-16 per group: what the FFT's dense rule (against the grouped kernel up to 8 per group) does
    # not take, up to 17x17; the GEMM beyond
    assert choices(8, 9) == ["grouped"] * 3
    assert choices(16, 9) == choices(8, 13) == choices(16, 17) == ["fft", "fft", "grouped"]
    assert choices(16, 19)[2] == "gemm" and "grouped" not in choices(32, 9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("groups", "k"), [(4, 11), (2, 9)], ids=["4-per-group-11x11", "8-per-group-9x9"])
def test_large_grouped_kernel_through_conv2d_matches_torch(torch, dtype, groups, k):
    """Large kernels of 4 and 8 channels per group (on the grouped kernel by the rules above): output
    and every gradient against torch."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 16, 23, 19)).astype(dtype)
    conv = npconv.nn.Conv2d(16, 8, k, padding=k // 2, groups=groups).to(getattr(npconv, np.dtype(dtype).name))
    tconv = torch.nn.Conv2d(16, 8, k, padding=k // 2, groups=groups).to(getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(conv.weight.numpy()))
        tconv.bias.copy_(torch.from_numpy(conv.bias.numpy()))
    explicit = conv.geometry.with_padding(conv.geometry.pads(x.shape[2:]))
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert plan.choose(pass_name, x.shape, conv.weight.shape, explicit, dtype) == "grouped"

    xn, xt = npconv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = conv(xn), tconv(xt)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(npconv.tensor(gy))
    yt.backward(torch.from_numpy(gy))
    assert_close(y.detach().numpy(), yt.detach())
    assert_close(xn.grad.numpy(), xt.grad)
    assert_close(conv.weight.grad.numpy(), tconv.weight.grad)
    assert_close(conv.bias.grad.numpy(), tconv.bias.grad)
