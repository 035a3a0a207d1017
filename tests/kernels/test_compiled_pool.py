"""The compiled max pooling (npconv._core via kernels/pool.py) against the NumPy passes of the same
module and torch, on every ISA variant this CPU runs: values, argmax offsets, indices and the
backward pass in float32/float64 on random 1-d/2-d geometries (kernel, stride, dilation, padding at
its limit, ceil_mode, odd sizes), non-contiguous inputs, NaN/-inf rules, one and two threads, and
the extension's argument guards. The compiled global average pooling (``row_means``) likewise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import pool

pytestmark = pytest.mark.skipif(not backends.core.available,
                                reason=f"compiled core not in use: {backends.core.reason}")


def _compare(x: np.ndarray, geom: ConvGeometry, ceil_mode: bool, rng: np.random.Generator) -> None:
    y, arg = pool.max_pool_forward(x, geom, ceil_mode)
    y_ref, arg_ref = pool.max_pool_forward(x, geom, ceil_mode, compiled=False)
    assert y.dtype == x.dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(y, y_ref)  # max is exact; NaN where the reference has NaN
    np.testing.assert_array_equal(arg, arg_ref)
    for compiled in (True, False):  # without the argmax (no graph needs it): the same values
        values, no_arg = pool.max_pool_forward(x, geom, ceil_mode, compiled=compiled, argmax=False)
        assert no_arg is None
        np.testing.assert_array_equal(values, y_ref)
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    gx = pool.max_pool_backward(gy, arg, geom, x.shape[2:], ceil_mode)
    gx_ref = pool.max_pool_backward(gy, arg_ref, geom, x.shape[2:], ceil_mode, compiled=False)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-6 if x.dtype == np.float32 else 1e-14, atol=1e-6)


@st.composite
def geometries(draw):
    nd = draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # torch's limit: half the kernel
    size = tuple(draw(st.integers((k - 1) * d + 1, 12)) for k, d in zip(kernel, dilation, strict=True))
    return ConvGeometry.create(kernel, stride, padding, dilation, ndim=nd), size, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(case=geometries(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_matches_the_numpy_passes(case, dtype, seed):
    geom, size, ceil_mode = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3) + size).astype(dtype)
    x[rng.random(x.shape) < 0.1] = -np.inf  # windows of -inf keep their first in-bounds offset
    _compare(x, geom, ceil_mode, rng)


def test_every_isa_with_nan_ties_and_non_contiguous_input(isa):
    rng = np.random.default_rng(1)
    geom = ConvGeometry.create(3, 2, 1, ndim=2)
    x = rng.integers(-2, 3, (4, 6, 15, 17)).astype(np.float32)  # many ties: the first offset wins
    x[0, 0, 3, 4] = np.nan
    x[1, 2, 5:7, 5:7] = np.nan  # several NaN in one window: the last is kept
    x[2, 1] = -np.inf
    _compare(x, geom, False, rng)
    _compare(x.transpose(0, 1, 3, 2), geom, True, rng)  # non-contiguous
    _compare(x[:, ::2].astype(np.float64), ConvGeometry.create(3, 1, 1, 2, ndim=2), True, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_isa_on_rows_of_several_vectors(isa, dtype):
    """Rows wide enough for the vector taps of every ISA (strides 1 and 2, the last vector overlapping
    the previous one, the stride-2 loads stopping inside the row), with NaN, -inf and ties."""
    rng = np.random.default_rng(6)
    for width in (33, 64, 70, 97):
        x = rng.integers(-3, 4, (2, 3, 5, width)).astype(dtype)
        x[rng.random(x.shape) < 0.05] = np.nan
        x[rng.random(x.shape) < 0.05] = -np.inf
        for kernel, stride, padding, dilation in ((3, 2, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1), (3, 2, 0, 2),
                                                  (4, 2, 2, 1)):
            geom = ConvGeometry.create(kernel, stride, padding, dilation, ndim=2)
            _compare(x, geom, stride == 2, rng)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_alone_are_the_taps_rule_bit_for_bit(isa, dtype):
    """Without the argmax the compiled kernel takes a window's maximum row maxima first (separable)
    on planes without NaN and -0.0: every value, bit for bit, is still the one the taps' rule picks
    (the value at the argmax offset): +0.0/-0.0 ties and NaN planes take the taps' sweep, as do rows
    too wide for the separable buffer. Strides 1 and 2, dilation, padding, ceil_mode, edge outputs."""
    rng = np.random.default_rng(7)
    for width in (31, 33, 70, 97, 4200):
        x = rng.integers(-3, 4, (1, 6, 7 if width < 4200 else 3, width)).astype(dtype)
        x[0, 1][x[0, 1] == 0] = -0.0  # only negative zeros
        x[0, 2, :, ::3] *= -1  # both zeros (the same sign rule for the ties of -0.0 and 0.0)
        x[0, 2][x[0, 2] == 0] = np.where(rng.random(np.count_nonzero(x[0, 2] == 0)) < 0.5, -0.0, 0.0)
        x[0, 3, 1, 5] = np.nan
        x[0, 4] = -np.inf
        x[0, 5, ::2] = -np.inf
        for kernel, stride, padding, dilation in ((3, 2, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1), (3, 2, 1, 2),
                                                  (4, 2, 2, 1), (1, 1, 0, 1), ((2, 5), 1, (1, 2), (1, 3))):
            geom = ConvGeometry.create(kernel, stride, padding, dilation, ndim=2)
            for ceil_mode in (False, True):
                values, _ = pool.max_pool_forward(x, geom, ceil_mode, argmax=False)
                y, arg = pool.max_pool_forward(x, geom, ceil_mode)
                flat = pool.max_pool_indices(arg, geom, x.shape[2:], ceil_mode).reshape(6, -1)
                planes = x.reshape(6, -1)
                picked = np.where(flat >= 0, np.take_along_axis(planes, np.maximum(flat, 0), 1), -np.inf)
                np.testing.assert_array_equal(_bits(values.reshape(6, -1)), _bits(picked.astype(dtype)))
                np.testing.assert_array_equal(_bits(values), _bits(y))


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts_give_the_same_result(threads):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 20, 19)).astype(np.float32)
    geom = ConvGeometry.create(3, 2, 1, ndim=2)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    try:
        _compare(x, geom, False, rng)
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("threads", [2, 3])
def test_a_single_image_splits_its_output_rows(isa, threads):
    """With fewer images than threads each worker takes a band of every plane's output rows (the rows
    the convolution before it wrote on that thread) and checks only the input rows its band reads for
    the separable path: a NaN or -0.0 in one band's rows leaves the other band separable. Values and
    argmax equal the NumPy passes, and the bands computed one by one equal the whole call."""
    rng = np.random.default_rng(8)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    try:
        dilated = ConvGeometry.create((3, 2), 2, (1, 0), (2, 1), ndim=2)
        for shape, geom, ceil_mode in (((1, 4, 20, 37), ConvGeometry.create(3, 2, 1, ndim=2), False),
                                       ((1, 3, 17, 40), ConvGeometry.create(3, 1, 1, ndim=2), False),
                                       ((1, 2, 23, 33), dilated, True)):
            x = rng.integers(-3, 4, shape).astype(np.float32)
            x[0, 0, 1, 5] = np.nan  # in the first band's rows only
            x[0, 1] = -1.0  # -0.0 in the last band's rows only, below +0.0 one column to its right: the
            x[0, 1, -3, 1::2] = 0.0  # taps' rule keeps the +0.0 (first in row-major order), maxima of
            x[0, 1, -2, 0::2] = -0.0  # columns first the -0.0: this plane is not separable there
            spans = pool._forward_spans(1, shape[1], geom.pool_padding(shape[2:], ceil_mode)[0][0])
            assert len(spans) == threads and all(len(span) == 4 for span in spans)
            _compare(x, geom, ceil_mode, rng)
            values, _ = pool.max_pool_forward(x, geom, ceil_mode, argmax=False)
            y, arg = pool.max_pool_forward(x, geom, ceil_mode)
            picked = np.take_along_axis(x.reshape(shape[1], -1), pool.max_pool_indices(
                arg, geom, shape[2:], ceil_mode).reshape(shape[1], -1), 1)
            np.testing.assert_array_equal(_bits(values.reshape(shape[1], -1)), _bits(picked))
    finally:
        npconv.set_num_threads(previous)
    out_size, pads = geom.pool_padding(shape[2:], ceil_mode)
    geometry = pool._core_geometry(shape[1], shape[2:], out_size, geom, pads)
    whole = np.full((shape[1],) + out_size, 7.0, np.float32)
    core, isa_index = backends.core.module, backends.core.isa_index
    core.max_pool2d_forward(isa_index, x, whole, None, geometry, 0, shape[1])
    bands = np.full_like(whole, 7.0)
    for r0, r1 in ((0, 3), (3, 4), (4, out_size[0])):  # a band writes its rows alone
        core.max_pool2d_forward(isa_index, x, bands, None, geometry, 0, shape[1], r0, r1)
        assert (bands[:, r1:] == 7.0).all()
    np.testing.assert_array_equal(_bits(bands), _bits(whole))


def test_layer_matches_torch_values_indices_and_gradient():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 4, 23, 18)).astype(dtype)
        x[0, 1, 2, 3] = np.nan
        ours = npconv.tensor(x, requires_grad=True)
        y, idx = npconv.nn.functional.max_pool2d(ours, 3, 2, 1, ceil_mode=True, return_indices=True)
        gy = rng.standard_normal(y.shape).astype(dtype)
        y.backward(npconv.tensor(gy))
        theirs = torch.from_numpy(x).requires_grad_()
        ty, tidx = torch.nn.functional.max_pool2d(theirs, 3, 2, 1, ceil_mode=True, return_indices=True)
        ty.backward(torch.from_numpy(gy))
        np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
        np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-6, atol=1e-6)
        with npconv.no_grad():  # no graph: the values alone
            values = npconv.nn.functional.max_pool2d(ours, 3, 2, 1, ceil_mode=True)
        np.testing.assert_array_equal(values.numpy(), ty.detach().numpy())
        x1 = x[:, :, 0]
        y1 = npconv.nn.functional.max_pool1d(npconv.tensor(x1), 4, 3, 2, dilation=2)
        np.testing.assert_array_equal(y1.numpy(), torch.nn.functional.max_pool1d(
            torch.from_numpy(x1), 4, 3, 2, dilation=2).numpy())


def test_sizes_beyond_the_kernel_limits_run_on_numpy():
    x = np.random.default_rng(4).standard_normal((1, 2, 40)).astype(np.float32)
    geom = ConvGeometry.create(3, 2**25, 1, ndim=1)  # stride beyond the compiled kernel's limit
    _compare(x, geom, False, np.random.default_rng(5))
    assert pool.max_pool_forward(x, geom)[0].shape == (1, 2, 1)


def test_extension_guards():
    core = backends.core.module
    x = np.zeros((1, 4, 4), np.float32)
    y = np.zeros((1, 2, 2), np.float32)
    arg = np.zeros((1, 2, 2), np.int32)
    geometry = (1, 4, 4, 2, 2, 2, 2, 2, 2, 1, 1, 0, 0)
    core.max_pool2d_forward(0, x, y, arg, geometry, 0, 1)
    core.max_pool2d_forward(0, x, y, None, geometry, 0, 1)  # no argmax
    with pytest.raises(TypeError):
        core.max_pool2d_backward(0, y, None, x, geometry, 0, 1)  # the backward needs it
    with pytest.raises(TypeError, match="arg must hold int32"):
        core.max_pool2d_forward(0, x, y, arg.astype(np.int64), geometry, 0, 1)
    with pytest.raises(TypeError, match="same element type"):
        core.max_pool2d_forward(0, x, y.astype(np.float64), arg, geometry, 0, 1)
    with pytest.raises(ValueError, match="output has 3 elements, expected 4"):
        core.max_pool2d_forward(0, x, y.ravel()[:3], arg, geometry, 0, 1)
    with pytest.raises(ValueError, match="plane range"):
        core.max_pool2d_forward(0, x, y, arg, geometry, 0, 2)
    for rows in ((0, 3), (2, 1), (-1, 1), (0, -1)):
        with pytest.raises(ValueError, match="output row range"):
            core.max_pool2d_forward(0, x, y, arg, geometry, 0, 1, *rows)
    with pytest.raises(TypeError):  # the backward takes no row range
        core.max_pool2d_backward(0, y, arg, x, geometry, 0, 1, 0, 1)
    with pytest.raises(ValueError, match="out of range"):
        core.max_pool2d_forward(0, x, y, arg, (1, 4, 4, 2, 2, 0, 2, 2, 2, 1, 1, 0, 0), 0, 1)
    with pytest.raises(ValueError, match="out of range"):
        core.max_pool2d_forward(0, x, y, arg, (1, 4, 4, 2, 2, 2, 2, 2**31, 2, 1, 1, 0, 0), 0, 1)
    with pytest.raises(TypeError, match="13 ints"):
        core.max_pool2d_backward(0, y, arg, x, geometry[:12], 0, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_global_average_pooling_matches_numpy_and_float64(isa, dtype, threads, monkeypatch):
    """Rows of lengths around the vector widths, 1-d to 3-d, a non-contiguous input, split over the
    workers or not: against the NumPy pass and the float64 mean; a NaN or inf stays in its row."""
    monkeypatch.setattr(pool, "GLOBAL_MEANS_PARALLEL_MIN", 0)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    rng = np.random.default_rng(6)
    try:
        for shape in [(1, 1, 1), (2, 3, 7), (3, 5, 4, 4), (1, 7, 17), (2, 3, 7, 7), (1, 2, 33),
                      (2, 2, 2, 3, 11), (5, 64, 10, 10)]:
            x = rng.standard_normal(shape).astype(dtype)
            out = (1,) * (len(shape) - 2)
            y = pool.adaptive_avg_pool_forward(x, out)
            assert y.shape == shape[:2] + out and y.dtype == dtype
            expected = x.astype(np.float64).reshape(shape[0], shape[1], -1).mean(axis=2).reshape(y.shape)
            tol = 2e-6 if dtype == np.float32 else 1e-14
            np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)
            reference = pool.adaptive_avg_pool_forward(x, out, compiled=False)
            np.testing.assert_allclose(y, reference, rtol=tol, atol=tol)
        x = rng.standard_normal((3, 8, 9, 9)).astype(dtype)[:, ::2, 1:, ::-1]  # not contiguous
        np.testing.assert_allclose(pool.adaptive_avg_pool_forward(x, (1, 1))[..., 0, 0],
                                   x.astype(np.float64).mean(axis=(2, 3)), rtol=2e-6, atol=2e-6)
        x[1, 2, 3, 4], x[2, 0, 0, 7] = np.nan, np.inf
        y = pool.adaptive_avg_pool_forward(x, (1, 1))[..., 0, 0]
        assert np.isnan(y[1, 2]) and y[2, 0] == np.inf
        assert np.isfinite(np.delete(y.reshape(-1), [1 * 4 + 2, 2 * 4 + 0])).all()
    finally:
        npconv.set_num_threads(previous)


def test_row_means_guards():
    core, isa = backends.core.module, backends.core.isa_index
    x, y = np.ones(12, np.float32), np.zeros(3, np.float32)
    core.row_means(isa, x, y, 3, 4, 1, 3)
    assert y.tolist() == [0, 1, 1]  # rows [1, 3) only
    with pytest.raises(ValueError, match="count a positive size, got 3, 0"):
        core.row_means(isa, x, y, 3, 0, 0, 3)
    with pytest.raises(ValueError, match=r"row range \[0, 4\) outside"):
        core.row_means(isa, x, y, 3, 4, 0, 4)
    with pytest.raises(ValueError):
        core.row_means(isa, x[:11], y, 3, 4, 0, 3)  # too few values
    with pytest.raises(TypeError, match="same element type"):
        core.row_means(isa, x, y.astype(np.float64), 3, 4, 0, 3)
    with pytest.raises(ValueError):
        core.row_means(isa, x, y[::-1], 3, 4, 0, 3)  # y not contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_bound_pooling_is_the_eager_pass_bit_for_bit(dtype, threads, monkeypatch):
    """bind_max_pool / bind_global_means prepared on fixed arrays give max_pool_forward's values and
    adaptive_avg_pool_forward's means exactly, run after run on new values; arrays the kernels would not
    take (another dtype, shape or layout) are refused with None."""
    monkeypatch.setattr(pool, "GLOBAL_MEANS_PARALLEL_MIN", 0)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    rng = np.random.default_rng(8)
    try:
        for shape, geom, ceil_mode in [((2, 3, 11, 9), ConvGeometry.create(3, 2, 1, ndim=2), False),
                                       ((1, 4, 8, 8), ConvGeometry.create(2, 2, 0, 2, ndim=2), True),
                                       ((3, 2, 13), ConvGeometry.create(3, 2, 1, ndim=1), True)]:
            x = np.empty(shape, dtype)
            out = pool.max_pool_forward(x, geom, ceil_mode, argmax=False)[0]
            y, means = np.empty_like(out), np.empty(shape[:2] + (1,) * (len(shape) - 2), dtype)
            run_max, run_means = pool.bind_max_pool(x, y, geom, ceil_mode), pool.bind_global_means(x, means)
            for _ in range(2):
                x[...] = rng.standard_normal(shape)
                x.reshape(-1)[rng.integers(x.size)] = np.nan
                run_max()
                run_means()
                np.testing.assert_array_equal(y, pool.max_pool_forward(x, geom, ceil_mode, argmax=False)[0])
                expected = pool.adaptive_avg_pool_forward(x, (1,) * (len(shape) - 2))
                np.testing.assert_array_equal(means, expected)
            assert pool.bind_max_pool(x, y.astype(np.float16), geom, ceil_mode) is None
            assert pool.bind_global_means(x, means[:, :1]) is None
            assert pool.bind_global_means(np.asfortranarray(x), means) is None
    finally:
        npconv.set_num_threads(previous)
