"""Pooling layers and functional forms against torch: forward, indices and input gradients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from npconv.geometry import ConvGeometry
from torch_oracle import assert_close, to_torch, torch_module

DTYPES = [np.float64, np.float32]


def _run(fn, x: np.ndarray, gy_seed: int = 0):
    """Output and input gradient of ``fn`` for a random output gradient."""
    xt = npconv.Tensor(x.copy(), requires_grad=True)
    out = fn(xt)
    y = out[0] if isinstance(out, tuple) else out
    gy = np.random.default_rng(gy_seed).standard_normal(y.shape).astype(x.dtype)
    y.backward(gy)
    return out, xt.grad, gy


def _run_torch(fn, x: np.ndarray, gy: np.ndarray):
    torch = torch_module()
    xt = to_torch(x, True)
    out = fn(xt)
    y = out[0] if isinstance(out, tuple) else out
    y.backward(torch.from_numpy(gy))
    return out, xt.grad


@st.composite
def pool_case(draw, max_pool: bool):
    nd = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if max_pool else (1,) * nd
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = tuple(draw(st.integers(max(e - 2 * p, 1), e + 4)) for e, p in zip(extent, padding, strict=True))
    ceil_mode = draw(st.booleans())
    batched = draw(st.booleans())
    # a dilated window lying wholly in the padding makes torch's CPU max pool read and write out of
    # bounds (heap corruption); npconv's answer for it is tested separately below
    geom = ConvGeometry.create(kernel, stride, padding, dilation, ndim=nd)
    out = geom.pool_output_size(size, ceil_mode)
    for n, m, k, s, p, d in zip(size, out, kernel, stride, padding, dilation, strict=True):
        assume(all(any(0 <= o * s - p + j * d < n for j in range(k)) for o in range(m)))
    return nd, kernel, stride, padding, dilation, size, ceil_mode, batched


@given(case=pool_case(True), dtype=st.sampled_from(DTYPES))
def test_max_pool_matches_torch(case, dtype, torch):
    TF = torch.nn.functional
    nd, kernel, stride, padding, dilation, size, ceil_mode, batched = case
    rng = np.random.default_rng(sum(size) + nd)
    x = rng.standard_normal(((2, 3) if batched else (3,)) + size).astype(dtype)
    x[..., 0] = x[..., -1]  # ties: the gradient must go to torch's choice
    ours = getattr(F, f"max_pool{nd}d")
    theirs = getattr(TF, f"max_pool{nd}d")
    (y, idx), gx, gy = _run(lambda t: ours(t, kernel, stride, padding, dilation, ceil_mode, True), x)
    (yt, idxt), gxt = _run_torch(
        lambda t: theirs(t, kernel, stride, padding, dilation, ceil_mode, True), x, gy
    )
    assert_close(y, yt, what="forward")
    np.testing.assert_array_equal(idx.numpy(), idxt.numpy())
    assert_close(gx, gxt, what="grad input")


@given(
    case=pool_case(False),
    dtype=st.sampled_from(DTYPES),
    count_include_pad=st.booleans(),
    divisor=st.sampled_from([None, 1, 5]),
)
def test_avg_pool_matches_torch(case, dtype, count_include_pad, divisor, torch):
    TF = torch.nn.functional
    nd, kernel, stride, padding, _, size, ceil_mode, batched = case
    # torch's avg_pool3d alone also demands an unpadded input at least the kernel's size
    assume(nd < 3 or all(n >= k for n, k in zip(size, kernel, strict=True)))
    rng = np.random.default_rng(sum(size) + 7 * nd)
    x = rng.standard_normal(((2, 3) if batched else (3,)) + size).astype(dtype)
    extra = () if nd == 1 else (divisor,)
    ours = getattr(F, f"avg_pool{nd}d")
    theirs = getattr(TF, f"avg_pool{nd}d")
    y, gx, gy = _run(lambda t: ours(t, kernel, stride, padding, ceil_mode, count_include_pad, *extra), x)
    yt, gxt = _run_torch(
        lambda t: theirs(t, kernel, stride, padding, ceil_mode, count_include_pad, *extra), x, gy
    )
    assert_close(y, yt, what="forward")
    assert_close(gx, gxt, what="grad input")


@given(nd=st.integers(1, 3), dtype=st.sampled_from(DTYPES), data=st.data())
def test_adaptive_avg_pool_matches_torch(nd, dtype, data, torch):
    TF = torch.nn.functional
    size = tuple(data.draw(st.integers(1, 7)) for _ in range(nd))
    keep = st.none() if nd > 1 else st.nothing()  # None (keep the size) is torch's for 2-d and 3-d only
    out = tuple(data.draw(st.one_of(st.integers(1, 8), keep)) for _ in range(nd))
    x = np.random.default_rng(sum(size)).standard_normal((2, 3) + size).astype(dtype)
    y, gx, gy = _run(lambda t: getattr(F, f"adaptive_avg_pool{nd}d")(t, out), x)
    yt, gxt = _run_torch(lambda t: getattr(TF, f"adaptive_avg_pool{nd}d")(t, out), x, gy)
    assert_close(y, yt, what="forward")
    assert_close(gx, gxt, what="grad input")


def test_max_pool_nan_and_minus_infinity_follow_torch(torch):
    TF = torch.nn.functional
    x = np.array([[[[np.nan, 1.0, -np.inf], [np.nan, 2.0, -np.inf], [3.0, -np.inf, -np.inf]]]])
    for args in [(2, 1, 1), (3, 1, 1), (2, 2, 0)]:
        (y, idx), gx, gy = _run(lambda t, a=args: F.max_pool2d(t, *a, return_indices=True), x)
        (yt, idxt), gxt = _run_torch(lambda t, a=args: TF.max_pool2d(t, *a, return_indices=True), x, gy)
        np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
        np.testing.assert_array_equal(idx.numpy(), idxt.numpy())
        assert_close(gx, gxt, what="grad input")


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.MaxPool1d(3),
        lambda m: m.MaxPool2d(2),
        lambda m: m.MaxPool2d((2, 3), 1, (1, 0), 2, False, True),
        lambda m: m.MaxPool3d(2, return_indices=True),
        lambda m: m.AvgPool1d(2),
        lambda m: m.AvgPool1d(3, 2, 1, True),
        lambda m: m.AvgPool2d(3, 1, 1, True, False, 2),
        lambda m: m.AvgPool3d(2, divisor_override=3),
        lambda m: m.AdaptiveAvgPool1d(3),
        lambda m: m.AdaptiveAvgPool2d(1),
        lambda m: m.AdaptiveAvgPool2d((2, None)),
        lambda m: m.AdaptiveAvgPool3d((1, 2, 3)),
    ],
)
def test_pool_modules_match_torch(make, torch):
    tnn = torch.nn
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    nd = int(type(ours).__name__[-2])
    x = np.random.default_rng(nd).standard_normal((2, 3) + (6,) * nd)
    out, gx, gy = _run(ours, x)
    outt, gxt = _run_torch(theirs, x, gy)
    if isinstance(out, tuple):
        np.testing.assert_array_equal(out[1].numpy(), outt[1].numpy())
        out, outt = out[0], outt[0]
    assert_close(out, outt, what="forward")
    assert_close(gx, gxt, what="grad input")


def test_max_pool_window_wholly_in_padding():
    x = npconv.Tensor(np.arange(4.0).reshape(1, 1, 1, 4), requires_grad=True)
    y, idx = F.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1), return_indices=True)
    assert y.shape == (1, 1, 1, 4)
    np.testing.assert_array_equal(y.numpy(), -np.inf)
    np.testing.assert_array_equal(idx.numpy(), -1)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0)


def test_max_pool_gradient_by_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.permutation(60).reshape(1, 2, 5, 6).astype(np.float64)  # distinct values: max is differentiable
    gy = rng.standard_normal((1, 2, 3, 4))

    def loss(a):
        return float((F.max_pool2d(npconv.Tensor(a), 3, 2, 1, ceil_mode=True).numpy() * gy).sum())

    xt = npconv.Tensor(x.copy(), requires_grad=True)
    (F.max_pool2d(xt, 3, 2, 1, ceil_mode=True) * gy).sum().backward()
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-3
        numeric[i] = (loss(x + e) - loss(x - e)) / 2e-3
    np.testing.assert_allclose(xt.grad.numpy(), numeric, atol=1e-8)


def test_avg_pool_gradient_by_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 1, 4, 5, 3))
    gy = rng.standard_normal(F.avg_pool3d(x, 2, 1, 1, True, False).shape)
    xt = npconv.Tensor(x.copy(), requires_grad=True)
    (F.avg_pool3d(xt, 2, 1, 1, True, False) * gy).sum().backward()
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        numeric[i] = (
            (F.avg_pool3d(x + e, 2, 1, 1, True, False).numpy() * gy).sum()
            - (F.avg_pool3d(x - e, 2, 1, 1, True, False).numpy() * gy).sum()
        ) / 2e-6
    np.testing.assert_allclose(xt.grad.numpy(), numeric, atol=1e-8)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: F.max_pool2d(x, 3, 1, 2), "pad should be smaller than or equal to half of kernel size"),
        (lambda x: F.avg_pool2d(x, 3, 1, 2), "pad should be smaller than or equal to half of kernel size"),
        (lambda x: F.max_pool2d(x, 7), "Output size is too small"),
        (lambda x: F.max_pool2d(x, 2, 0), "stride must be positive"),
        (lambda x: F.max_pool2d(x, 0), "kernel_size must be positive"),
        (lambda x: F.max_pool2d(x, 2, 2, -1), "padding must be non-negative"),
        (lambda x: F.max_pool2d(x, (2, 2, 2)), "kernel_size must be an int or a tuple of 2 ints"),
        (lambda x: F.max_pool2d(x[0, 0], 2), "3D \\(unbatched\\) or 4D \\(batched\\) input"),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=0), "divisor_override"),
        (lambda x: F.adaptive_avg_pool2d(x, (2, 2, 2)), "output_size must be 2 ints"),
        (lambda x: F.adaptive_avg_pool2d(x, -1), "non-negative ints"),
    ],
)
def test_pool_rejects_bad_arguments(call, match):
    x = npconv.Tensor(np.zeros((1, 2, 5, 5)))
    with pytest.raises(ValueError, match=match):
        call(x)


def test_pool_rejects_string_padding_and_integer_input():
    with pytest.raises(TypeError, match="padding"):
        F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding="same")
    with pytest.raises(TypeError, match="floating point"):
        F.max_pool2d(np.zeros((1, 1, 4, 4), dtype=np.int64), 2)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_adaptive_avg_pool_keeps_a_non_finite_value_in_its_windows(dims, value):
    """An averaging product would multiply the non-finite value by the other windows' zero weights; each
    output sees only its own window's values, as torch's, forward and backward."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(dims)
    shape = (2, 3) + (7, 5, 6)[:dims]
    out = (3, 2, 4)[:dims]
    x = rng.standard_normal(shape)
    x[(1, 2) + (1,) * dims] = value
    gy = rng.standard_normal(shape[:2] + out)
    gy[(0, 1) + (0,) * dims] = value
    ours_fn = getattr(npconv.nn.functional, f"adaptive_avg_pool{dims}d")
    theirs_fn = getattr(torch.nn.functional, f"adaptive_avg_pool{dims}d")
    xn = npconv.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    y_ours, y_theirs = ours_fn(xn, out), theirs_fn(xt, out)
    np.testing.assert_allclose(y_ours.detach().numpy(), y_theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    y_ours.backward(npconv.tensor(gy))
    y_theirs.backward(torch.tensor(gy))
    np.testing.assert_allclose(xn.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert np.isfinite(y_ours.detach().numpy()).sum() > 0  # the other windows stay finite


@pytest.mark.parametrize("dims, size", [(1, 0), (2, 0), (2, (0, 2)), (3, (2, 0, 1))])
def test_adaptive_avg_pool_to_an_empty_output_as_torch(dims, size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3) + (6, 5, 4)[:dims])
    xn, xt = npconv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yn = getattr(npconv.nn.functional, f"adaptive_avg_pool{dims}d")(xn, size)
    yt = getattr(torch.nn.functional, f"adaptive_avg_pool{dims}d")(xt, size)
    assert tuple(yn.shape) == tuple(yt.shape) and yn.numel() == 0
    yn.sum().backward()  # (torch's backward refuses an empty grad_output; the gradient is zero)
    np.testing.assert_array_equal(xn.grad.numpy(), np.zeros_like(x))
    with pytest.raises(ValueError, match="non-negative ints or None"):
        getattr(npconv.nn.functional, f"adaptive_avg_pool{dims}d")(xn, -1)
