"""The direct depthwise kernel's three passes against the NumPy reference
(tests/reference.py, itself checked against torch).

Covers the flat-row path (stride 1) and the strided path, 1-3 spatial dimensions, channel
multipliers, dilations, asymmetric and oversized padding, float64 and float32, the float32
accuracy bound against float64 on benchmark-like shapes, adjoint identities without torch, and
``supports()`` outside the domain.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from kernel_checks import assert_passes_are_adjoint, draw_geometry, relative_error
from npconv.kernels import depthwise
from torch_oracle import assert_close, conv_geom


def _check_all_passes(rng, x_shape, multiplier, kernel, stride, padding, dilation, dtype):
    c = x_shape[1]
    geom = conv_geom(kernel, stride, padding, dilation, c, x_shape[2:])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c * multiplier, 1) + tuple(kernel)).astype(dtype)
    assert all(depthwise.supports(p, x.shape, w.shape, geom, x.dtype)
               for p in ("forward", "grad_input", "grad_weight"))
    out = geom.output_size(x_shape[2:])
    gy = rng.standard_normal((x_shape[0], c * multiplier) + out).astype(dtype)
    y_ref, gx_ref, gw_ref = reference.conv_passes(x, w, gy, geom)
    y = depthwise.forward(x, w, geom)
    assert y.dtype == dtype
    assert_close(y, y_ref, what="forward")
    assert_close(depthwise.grad_input(gy, w, geom, x_shape[2:]), gx_ref, what="grad_input")
    assert_close(depthwise.grad_weight(x, gy, geom), gw_ref, what="grad_weight")


CASES = [
    # x_shape, multiplier, kernel, stride, padding, dilation
    ((2, 3, 9, 11), 1, (3, 3), 1, 1, 1),
    ((2, 4, 7, 10), 2, (3, 2), 1, ((0, 2), (3, 1)), 2),
    ((1, 5, 13, 6), 3, (5, 5), 1, 4, (1, 2)),  # padding wider than half the kernel
    ((3, 2, 17), 1, (4,), 2, ((3, 0),), 1),
    ((2, 3, 10, 9), 1, (5, 5), (2, 3), 2, (2, 1)),
    ((1, 2, 5), 2, (5,), 1, ((4, 4),), 1),
    ((1, 2, 6, 7, 5), 2, (3, 3, 2), 1, 1, 1),
    ((2, 3, 7, 6, 8), 1, (2, 3, 3), (2, 1, 3), ((1, 0), (0, 2), (1, 1)), (1, 2, 1)),
    ((2, 6, 1, 8), 1, (1, 3), 1, "same", 1),
    ((2, 3, 8, 9), 1, (2, 3), 1, ((3, 2), (4, 0)), 1),  # grad_input as forward: gy cropped
    ((1, 3, 4, 4), 1, (4, 4), 1, "valid", 1),  # one output pixel
    # stride > 1 (polyphase grad_input, stacked windows): odd sizes, padding, dilation, multipliers
    ((2, 5, 11, 13), 2, (3, 3), 2, 1, 1),
    ((1, 3, 10, 9), 1, (3, 2), 3, ((2, 0), (1, 3)), 2),
    ((2, 4, 9, 7), 3, (5, 3), (3, 2), 2, (1, 3)),
    ((2, 3, 15), 2, (3,), 3, 1, 2),
    ((1, 2, 7, 6, 5), 2, (3, 2, 3), 2, 1, 1),
    ((1, 2, 8, 8), 1, (2, 2), 3, 0, 1),  # stride wider than the kernel: input pixels never read
    ((1, 2, 3, 3), 1, (3, 3), 3, ((2, 1), (0, 4)), 1),  # phases lying wholly in the padding
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_passes_match_the_reference(rng, case, dtype):
    _check_all_passes(rng, *case, dtype)


@given(
    nd=st.integers(1, 3), n=st.integers(1, 2), c=st.integers(1, 4), multiplier=st.integers(1, 3),
    data=st.data(),
)
def test_random_geometries_match_the_reference(nd, n, c, multiplier, data):
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 4, 2, 6)
    _check_all_passes(np.random.default_rng(data.draw(st.integers(0, 2**31))), (n, c) + size, multiplier,
                      kernel, stride, padding, dilation, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block", [1, 2])
def test_strided_channel_blocks_match_the_reference(rng, monkeypatch, dtype, block):
    """Stride > 1 with the 5 channels split into tasks of ``block`` channels (2: a ragged last one)."""
    shape, mult = (1, 5, 9, 8), 2
    plane = 11 * 10 * np.dtype(dtype).itemsize * mult  # padded 11x10 grid per channel
    monkeypatch.setattr(depthwise, "_STRIDED_BYTES", plane * block)
    geom = conv_geom((3, 3), 2, 1, 1, 5, shape[2:])
    assert depthwise._Layout(shape, mult, geom, dtype).block == block
    _check_all_passes(rng, shape, mult, (3, 3), 2, 1, 1, dtype)


def test_adjoint_identities_without_torch(rng):
    """<forward(x, w), gy> = <x, grad_input(gy, w)> = <w, grad_weight(x, gy)> in float64."""
    for stride in (1, 2):
        geom = conv_geom((3, 4), stride, ((1, 2), (0, 3)), (2, 1), 3, (9, 8))
        x = rng.standard_normal((2, 3, 9, 8))
        w = rng.standard_normal((6, 1, 3, 4))
        assert_passes_are_adjoint(depthwise, x, w, geom, rng)


@pytest.mark.parametrize("kernel,stride", [((3, 3), 1), ((5, 5), 1), ((3, 3), 2), ((5, 5), 2)])
def test_float32_accuracy_bound(rng, kernel, stride):
    """float32 result within 2e-6 norm-relative of the float64 computation (benchmark-like, scaled)."""
    c, size = 32, (28, 28)
    geom = conv_geom(kernel, stride, kernel[0] // 2, 1, c, size)
    x = rng.standard_normal((2, c) + size)
    w = rng.standard_normal((c, 1) + kernel) / kernel[0]
    gy = rng.standard_normal((2, c) + geom.output_size(size))
    f32 = [a.astype(np.float32) for a in (x, w, gy)]
    assert relative_error(depthwise.forward(f32[0], f32[1], geom), depthwise.forward(x, w, geom)) <= 2e-6
    gx32 = depthwise.grad_input(f32[2], f32[1], geom, size)
    assert relative_error(gx32, depthwise.grad_input(gy, w, geom, size)) <= 2e-6
    gw32 = depthwise.grad_weight(f32[0], f32[2], geom)
    assert relative_error(gw32, depthwise.grad_weight(x, gy, geom)) <= 2e-6


def test_supports_only_depthwise_float(rng):
    size = (8, 8)
    dw = conv_geom(3, 1, 1, 1, 4, size)
    assert depthwise.supports("forward", (2, 4, 8, 8), (8, 1, 3, 3), dw, np.float32)
    assert not depthwise.supports("forward", (2, 4, 8, 8), (8, 1, 3, 3), dw, np.float16)
    assert not depthwise.supports("forward", (2, 4, 8, 8), (8, 1, 3, 3), dw, np.complex128)
    assert not depthwise.supports("backward", (2, 4, 8, 8), (8, 1, 3, 3), dw, np.float32)
    grouped = conv_geom(3, 1, 1, 1, 2, size)  # two channels per group
    assert not depthwise.supports("forward", (2, 4, 8, 8), (4, 2, 3, 3), grouped, np.float32)
    dense = conv_geom(3, 1, 1, 1, 1, size)
    assert not depthwise.supports("forward", (2, 4, 8, 8), (4, 4, 3, 3), dense, np.float32)
    assert not depthwise.supports("forward", (2, 4, 8, 8), (6, 1, 3, 3), dw, np.float32)  # 6 % 4
    too_small = conv_geom(5, 1, 0, 1, 4, (3, 3))
    assert not depthwise.supports("forward", (2, 4, 3, 3), (4, 1, 5, 5), too_small, np.float32)
    assert not depthwise.supports("forward", (2, 4, 8), (4, 1, 3, 3), dw, np.float32)  # rank mismatch
    # stride-1 3x3 and 5x5: GEMM; strided: depthwise
    assert not depthwise.recommended("forward", (2, 4, 8, 8), (4, 1, 3, 3), dw, np.float32)
    strided = conv_geom(3, 2, 1, 1, 4, size)
    assert depthwise.recommended("forward", (2, 4, 8, 8), (4, 1, 3, 3), strided, np.float32)
    # a channel multiplier: GEMM for forward/grad_input, depthwise grad_weight only with > 1 channel
    assert not depthwise.recommended("forward", (2, 4, 8, 8), (8, 1, 3, 3), strided, np.float32)
    assert not depthwise.recommended("grad_input", (2, 4, 8, 8), (8, 1, 3, 3), strided, np.float32)
    assert depthwise.recommended("grad_weight", (2, 4, 8, 8), (8, 1, 3, 3), strided, np.float32)
    single = conv_geom(3, 2, 1, 1, 1, size)  # one input channel: a depthwise conv with multiplier O
    assert depthwise.supports("grad_weight", (2, 1, 8, 8), (16, 1, 3, 3), single, np.float32)
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert not depthwise.recommended(pass_name, (2, 1, 8, 8), (16, 1, 3, 3), single, np.float32)
    big = conv_geom(31, 1, 15, 1, 4, (64, 64))
    assert not depthwise.recommended("forward", (2, 4, 64, 64), (4, 1, 31, 31), big, np.float32)
    seven = conv_geom(7, 1, 3, 1, 4, (64, 64))
    for pass_name in ("forward", "grad_input", "grad_weight"):  # 7x7 (49 taps) stays direct
        assert depthwise.recommended(pass_name, (2, 4, 64, 64), (4, 1, 7, 7), seven, np.float32)
    nine = conv_geom(9, 1, 4, 1, 4, (64, 64))
    assert not depthwise.recommended("grad_weight", (2, 4, 64, 64), (4, 1, 9, 9), nine, np.float32)


def test_rejects_non_float_arrays(rng):
    geom = conv_geom(3, 1, 1, 1, 2, (5, 5))
    with pytest.raises(TypeError, match="float32 or float64"):
        depthwise.forward(np.ones((1, 2, 5, 5), np.int64), np.ones((2, 1, 3, 3), np.int64), geom)

