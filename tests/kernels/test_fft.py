"""The FFT kernel's three passes against the NumPy reference (tests/reference.py,
itself checked against torch).

Covers 1-3 spatial dimensions, depthwise with multipliers, dense and grouped channel mixing,
strides (subsampled), dilations (zero-inserted kernels), asymmetric and oversized padding,
float64 and float32 (complex64 spectra), the float32 accuracy bound against float64 on
benchmark-like large-kernel shapes, batch chunking, adjoint identities without torch, and
``supports()`` outside the domain.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from kernel_checks import assert_passes_are_adjoint, draw_geometry, relative_error
from npconv import backends
from npconv.kernels import fft
from torch_oracle import assert_close, conv_geom


def _check_all_passes(rng, x_shape, out_channels, groups, kernel, stride, padding, dilation, dtype):
    c = x_shape[1]
    geom = conv_geom(kernel, stride, padding, dilation, groups, x_shape[2:])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((out_channels, c // groups) + tuple(kernel)).astype(dtype)
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert fft.supports(pass_name, x.shape, w.shape, geom, x.dtype)
    gy = rng.standard_normal((x_shape[0], out_channels) + geom.output_size(x_shape[2:])).astype(dtype)
    y_ref, gx_ref, gw_ref = reference.conv_passes(x, w, gy, geom)
    y = fft.forward(x, w, geom)
    gx = fft.grad_input(gy, w, geom, x_shape[2:])
    gw = fft.grad_weight(x, gy, geom)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    assert_close(y, y_ref, what="forward")
    assert_close(gx, gx_ref, what="grad_input")
    assert_close(gw, gw_ref, what="grad_weight")


CASES = [
    # x_shape, out_channels, groups, kernel, stride, padding, dilation
    ((2, 3, 19, 21), 3, 3, (9, 7), 1, 4, 1),  # depthwise
    ((2, 3, 15, 12), 6, 3, (5, 4), 1, ((0, 4), (3, 1)), (2, 1)),  # multiplier 2, dilated
    ((1, 4, 40), 4, 4, (31,), 1, 15, 1),  # 1-D depthwise, long kernel
    ((2, 2, 33), 4, 2, (8,), 3, ((9, 2),), 2),  # strided, padding wider than the kernel
    ((2, 6, 11, 10), 4, 2, (3, 4), (2, 1), ((1, 2), (0, 3)), (1, 2)),  # grouped, 3 channels per group
    ((2, 4, 13), 6, 1, (5,), 1, 2, 1),  # dense
    ((1, 6, 5, 6, 7), 9, 3, (2, 3, 2), (1, 2, 1), 1, 1),  # 3-D grouped
    ((2, 2, 6, 7, 5), 2, 2, (3, 3, 3), 1, "same", (1, 1, 2)),  # 3-D depthwise
    ((1, 2, 7, 7), 2, 2, (7, 7), 1, "valid", 1),  # one output pixel
    ((2, 4, 9, 9), 2, 1, (3, 3), 1, 1, 1),  # C > O dense
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_passes_match_the_reference(rng, case, dtype):
    _check_all_passes(rng, *case, dtype)


@given(nd=st.integers(1, 3), n=st.integers(1, 2), groups=st.integers(1, 3), cg=st.integers(1, 2),
       og=st.integers(1, 2), data=st.data())
def test_random_geometries_match_the_reference(nd, n, groups, cg, og, data):
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 5, 2, 6)
    _check_all_passes(np.random.default_rng(data.draw(st.integers(0, 2**31))), (n, groups * cg) + size,
                      groups * og, groups, kernel, stride, padding, dilation, np.float64)


def test_batch_chunks_give_the_same_result(rng, monkeypatch):
    geom = conv_geom((5, 5), 1, 2, 1, 2, (12, 12))
    x = rng.standard_normal((5, 2, 12, 12))
    w = rng.standard_normal((4, 1, 5, 5))
    gy = rng.standard_normal((5, 4, 12, 12))
    y_ref, gx_ref, gw_ref = reference.conv_passes(x, w, gy, geom)
    monkeypatch.setattr(fft, "WORKSPACE_BYTES", 1)  # one image per chunk
    assert_close(fft.forward(x, w, geom), y_ref, what="forward")
    assert_close(fft.grad_input(gy, w, geom, (12, 12)), gx_ref, what="grad_input")
    assert_close(fft.grad_weight(x, gy, geom), gw_ref, what="grad_weight")


def test_adjoint_identities_without_torch(rng):
    """<forward(x, w), gy> = <x, grad_input(gy, w)> = <w, grad_weight(x, gy)> in float64."""
    for stride in (1, 2):
        geom = conv_geom((3, 4), stride, ((1, 2), (0, 3)), (2, 1), 2, (9, 8))
        x = rng.standard_normal((2, 4, 9, 8))
        w = rng.standard_normal((6, 2, 3, 4))
        assert_passes_are_adjoint(fft, x, w, geom, rng)


@pytest.mark.parametrize("x_shape,kernel", [((2, 8, 48, 48), (31, 31)), ((1, 4, 4096), (1023,)),
                                            ((2, 8, 40, 40), (13, 13))])
def test_float32_accuracy_bound(rng, x_shape, kernel):
    """float32 (complex64 spectra) within 2e-6 norm-relative of the float64 computation."""
    c = x_shape[1]
    geom = conv_geom(kernel, 1, "same", 1, c, x_shape[2:])
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((c, 1) + kernel) / np.sqrt(np.prod(kernel))
    gy = rng.standard_normal((x_shape[0], c) + geom.output_size(x_shape[2:]))
    f32 = [a.astype(np.float32) for a in (x, w, gy)]
    size = x_shape[2:]
    assert relative_error(fft.forward(f32[0], f32[1], geom), fft.forward(x, w, geom)) <= 2e-6
    gx32 = fft.grad_input(f32[2], f32[1], geom, size)
    assert relative_error(gx32, fft.grad_input(gy, w, geom, size)) <= 2e-6
    assert relative_error(fft.grad_weight(f32[0], f32[2], geom), fft.grad_weight(x, gy, geom)) <= 2e-6


def test_supports_and_recommended():
    dw = conv_geom(31, 1, 15, 1, 4, (64, 64))
    assert fft.supports("grad_weight", (2, 4, 64, 64), (4, 1, 31, 31), dw, np.float32)
    assert fft.recommended("forward", (2, 4, 64, 64), (4, 1, 31, 31), dw, np.float32)
    assert not fft.supports("forward", (2, 4, 64, 64), (4, 1, 31, 31), dw, np.float16)
    assert not fft.supports("forward", (2, 4, 64, 64), (4, 1, 31, 31), dw, np.complex64)
    assert not fft.supports("backward", (2, 4, 64, 64), (4, 1, 31, 31), dw, np.float32)
    assert not fft.supports("forward", (2, 4, 64, 64), (4, 2, 31, 31), dw, np.float32)  # channels mismatch
    assert not fft.supports("forward", (2, 4, 64), (4, 1, 31, 31), dw, np.float32)  # rank mismatch
    small = conv_geom(31, 1, 0, 1, 4, (16, 16))
    assert not fft.supports("forward", (2, 4, 16, 16), (4, 1, 31, 31), small, np.float32)  # kernel > input
    three = conv_geom(3, 1, 1, 1, 1, (56, 56))
    assert not fft.recommended("forward", (8, 64, 56, 56), (64, 64, 3, 3), three, np.float32)
    seven = conv_geom(7, 1, 3, 1, 4, (56, 56))  # 49 taps: the direct depthwise kernel's
    assert not fft.recommended("forward", (8, 4, 56, 56), (4, 1, 7, 7), seven, np.float32)
    nine = conv_geom(9, 1, 4, 1, 4, (56, 56))
    # beyond 49 taps: the NumPy engine's FFT; with the compiled core, its depthwise kernel up to 15x15
    # (forward, grad_input) and 11x11 (grad_weight) first
    compiled = backends.core.available
    assert fft.recommended("grad_weight", (8, 4, 56, 56), (4, 1, 9, 9), nine, np.float32) is not compiled
    thirteen = conv_geom(13, 1, 6, 1, 4, (56, 56))
    assert fft.recommended("grad_weight", (8, 4, 56, 56), (4, 1, 13, 13), thirteen, np.float32)
    assert fft.recommended("forward", (8, 4, 56, 56), (4, 1, 13, 13), thirteen, np.float32) is not compiled
    seventeen = conv_geom(17, 1, 8, 1, 4, (56, 56))
    assert fft.recommended("forward", (8, 4, 56, 56), (4, 1, 17, 17), seventeen, np.float32)


def test_rejects_non_float_arrays():
    geom = conv_geom(3, 1, 1, 1, 2, (5, 5))
    with pytest.raises(TypeError, match="float32 or float64"):
        fft.forward(np.ones((1, 2, 5, 5), np.int64), np.ones((2, 1, 3, 3), np.int64), geom)


@pytest.mark.parametrize("name, shape, axes, kwargs", [
    ("rfft", (3, 4, 7, 40), (3,), {}),
    ("fft", (5, 2, 33, 9), (2,), {"overwrite_x": True}),
    ("rfftn", (1, 6, 20, 18), (2, 3), {"s": (24, 20)}),
    ("irfftn", (4, 3, 12, 7), (2, 3), {"s": (12, 12), "overwrite_x": True}),
])
def test_transforms_split_over_npconv_threads_as_one_call(monkeypatch, name, shape, axes, kwargs):
    """The FFT path's transforms run split over npconv's workers, each piece with ``workers=1`` (scipy's
    own pool, whose fork handler can hang, is never started), with exactly one call's values; a
    complex-to-complex transform allowed to overwrite its input goes into it."""
    import scipy.fft

    rng = np.random.default_rng(8)
    a = rng.standard_normal(shape)
    if name in ("fft", "irfftn"):
        a = a + 1j * rng.standard_normal(shape)
    expected = getattr(scipy.fft, name)(a.copy(), **({"axis": axes[0]} if len(axes) == 1 else {"axes": axes}),
                                        **kwargs)
    seen = []
    original = getattr(scipy.fft, name)
    def recorded(*args, **kw):
        seen.append(kw["workers"])
        return original(*args, **kw)

    monkeypatch.setattr(scipy.fft, name, recorded)
    monkeypatch.setattr(fft, "PARALLEL_TRANSFORM_SIZE", 0)
    previous = backends.get_num_threads()
    backends.set_num_threads(2)
    try:
        got = fft._transform(name, a, axes, **kwargs)
    finally:
        backends.set_num_threads(previous)
    assert len(seen) > 1 and set(seen) == {1}
    np.testing.assert_array_equal(got, expected)
    if name == "fft":
        assert got is a


@pytest.mark.parametrize("shape, lengths, keep", [
    ((2, 3, 11), (16,), (np.array([15, 0, 3]),)),
    ((1, 4, 7, 9), (12, 15), (slice(2, 9), slice(0, 13, 3))),
    ((3, 2, 5, 6, 4), (8, 9, 6), (slice(1, 6), np.array([8, 0, 2]), slice(None))),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_pruned_transforms_are_scipys_whole_ones(monkeypatch, shape, lengths, keep, threads):
    """``_spectrum`` is ``rfftn`` of the zero-extended input and ``_signal`` the kept positions of
    ``irfftn``, whole or split over npconv's threads; the forward transforms only lines holding
    data (each axis's lines within the input's extent along the axes not yet transformed) and the
    inverse only kept lines; ``_signal`` leaves its spectrum alone unless allowed to overwrite it."""
    import scipy.fft

    rng = np.random.default_rng(3)
    a = rng.standard_normal(shape)
    first = len(shape) - len(lengths)
    axes = tuple(range(first, len(shape)))
    expected = scipy.fft.rfftn(a, s=lengths, axes=axes)
    kept = scipy.fft.irfftn(expected, s=lengths, axes=axes)
    for axis, index in enumerate(keep):
        kept = kept[(slice(None),) * (first + axis) + (index,)]
    lines = []
    for name in ("rfft", "fft", "ifft", "irfft"):
        original = getattr(scipy.fft, name)

        def recorded(x, *args, _name=name, _original=original, **kw):
            lines.append((_name, x.size // x.shape[kw["axis"]]))
            return _original(x, *args, **kw)

        monkeypatch.setattr(scipy.fft, name, recorded)
    monkeypatch.setattr(fft, "PARALLEL_TRANSFORM_SIZE", 0)
    previous = backends.get_num_threads()
    backends.set_num_threads(threads)
    try:
        got = fft._spectrum(a, lengths)
        spectrum = got.copy()
        back = fft._signal(spectrum, lengths, keep)
        np.testing.assert_array_equal(spectrum, got)
        again = fft._signal(spectrum, lengths, keep, overwrite=True)
    finally:
        backends.set_num_threads(previous)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(back, kept, rtol=0, atol=1e-12 * np.abs(kept).max())
    np.testing.assert_array_equal(again, back)
    batch, freq, extent = int(np.prod(shape[:first])), lengths[-1] // 2 + 1, shape[first:]
    sizes = [len(range(*k.indices(n))) if isinstance(k, slice) else len(k)
             for k, n in zip(keep, lengths, strict=True)]
    want = collections.Counter(rfft=batch * math.prod(extent[:-1]), irfft=2 * batch * math.prod(sizes[:-1]))
    for axis in range(len(lengths) - 1):
        # forward: the lines within the input's extent along the axes not yet transformed;
        # inverse (two calls): the kept positions along the axes already inverted
        want["fft"] += batch * math.prod(extent[:axis]) * math.prod(lengths[axis + 1:-1]) * freq
        want["ifft"] += 2 * batch * math.prod(sizes[:axis]) * math.prod(lengths[axis + 1:-1]) * freq
    counted = collections.Counter()
    for name, count in lines:
        counted[name] += count
    assert +counted == +want
