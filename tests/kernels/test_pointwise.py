"""The per-image worker-thread passes of batch norm and ReLU (kernels/pointwise.py) against torch,
with the size threshold lowered so that tiny tensors take the 2-thread path too."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn.functional as F
from npconv.kernels import pointwise
from torch_oracle import assert_close


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (5, 3), (2, 3, 4, 2, 3), (1, 2, 7)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_matches_torch(shape, training, affine, dtype, parallel, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    w, b = (rng.standard_normal(c).astype(dtype) for _ in range(2))
    rm, rv = rng.standard_normal(c).astype(dtype), (1 + rng.random(c)).astype(dtype)
    ours = [npconv.Tensor(x.copy(), requires_grad=True)]
    theirs = [torch.from_numpy(x.copy()).requires_grad_()]
    if affine:
        ours += [npconv.Tensor(a.copy(), requires_grad=True) for a in (w, b)]
        theirs += [torch.from_numpy(a.copy()).requires_grad_() for a in (w, b)]
    ours_rm, ours_rv = npconv.Tensor(rm.copy()), npconv.Tensor(rv.copy())
    theirs_rm, theirs_rv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    y = F.batch_norm(ours[0], ours_rm, ours_rv, *ours[1:], training=training, momentum=0.3, eps=1e-3)
    ty = TF.batch_norm(theirs[0], theirs_rm, theirs_rv, *theirs[1:], training=training, momentum=0.3,
                       eps=1e-3)
    y.backward(gy)
    ty.backward(torch.from_numpy(gy))
    assert_close(y, ty, what="y")
    for name, a, t in zip(("gx", "gw", "gb"), ours, theirs, strict=False):
        assert_close(a.grad, t.grad, what=name)
    assert_close(ours_rm, theirs_rm, what="running_mean")
    assert_close(ours_rv, theirs_rv, what="running_var")


@pytest.mark.parametrize("shape", [(4, 3, 5), (6, 7), (2, 3, 2, 2)])
def test_relu_matches_torch(shape, parallel, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape)
    x.flat[0] = np.nan
    x.flat[1] = 0.0
    gy = rng.standard_normal(shape)
    xt = npconv.Tensor(x.copy(), requires_grad=True)
    tt = torch.from_numpy(x.copy()).requires_grad_()
    y = F.relu(xt)
    ty = TF.relu(tt)
    y.backward(gy)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())  # NaN stays NaN
    np.testing.assert_array_equal(xt.grad.numpy(), tt.grad.numpy())


def test_channel_reductions_without_torch(parallel):
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((5, 3, 4, 4)), rng.standard_normal((5, 3, 4, 4))
    mean = rng.standard_normal(3)
    axes = (0, 2, 3)
    centred = x - mean[None, :, None, None]
    np.testing.assert_allclose(pointwise.channel_sums(x), x.sum(axis=axes), rtol=1e-12)
    first, second = pointwise.centred_moments(x, mean)
    np.testing.assert_allclose(first, centred.sum(axis=axes), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(second, (centred ** 2).sum(axis=axes), rtol=1e-12)
    total, dot = pointwise.centred_dot(g, x, mean)
    np.testing.assert_allclose(total, g.sum(axis=axes), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dot, (g * centred).sum(axis=axes), rtol=1e-12, atol=1e-12)


def test_relu_grad_of_non_finite_upstream_gradient(parallel, torch):
    """Where the ReLU is inactive the gradient is 0 even when the upstream gradient is inf or NaN."""
    y = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 3.0, 0.0, 0.0]])
    g = np.array([[np.inf, np.inf, np.nan, 1.0], [-np.inf, 2.0, 5.0, np.nan]])
    reference = torch.ops.aten.threshold_backward(torch.from_numpy(g), torch.from_numpy(y), 0).numpy()
    np.testing.assert_array_equal(pointwise.relu_grad(g, y), reference)


@pytest.mark.parametrize("value", [-2.0, 0.0, 3.0])
def test_relu_of_a_scalar(value, parallel):
    x = npconv.Tensor(np.array(value), requires_grad=True)
    y = F.relu(x)
    y.backward()
    assert y.numpy().shape == () and y.numpy() == max(value, 0.0)
    assert x.grad.numpy() == (1.0 if value > 0 else 0.0)


def test_batch_norm_float16_takes_statistics_in_float32(parallel, torch):
    """float16 sums of 16384 values near 100 overflow; the statistics are taken in float32, and the
    result (float16) is as close to a float64 reference as torch's float16 result."""
    TF = torch.nn.functional
    rng = np.random.default_rng(7)
    x = (100 + 3 * rng.standard_normal((64, 4, 16, 16))).astype(np.float16)
    gy = rng.standard_normal(x.shape).astype(np.float16)
    w, b = np.full(4, 1.5, np.float16), np.full(4, 0.25, np.float16)
    ours = [npconv.Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    theirs = [torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, w, b)]
    y = F.batch_norm(ours[0], None, None, ours[1], ours[2], training=True)
    y.backward(gy)
    reference = TF.batch_norm(theirs[0], None, None, theirs[1], theirs[2], training=True)
    reference.backward(torch.from_numpy(gy.astype(np.float64)))
    assert y.numpy().dtype == np.float16 and ours[0].grad.numpy().dtype == np.float16
    for name, ours_value, exact in (("y", y.numpy(), reference), ("gx", ours[0].grad.numpy(), theirs[0].grad),
                                    ("gw", ours[1].grad.numpy(), theirs[1].grad),
                                    ("gb", ours[2].grad.numpy(), theirs[2].grad)):
        exact = exact.detach().numpy()
        scale = np.abs(exact).max()
        assert np.isfinite(ours_value).all(), name
        assert np.abs(ours_value.astype(np.float64) - exact).max() <= 4e-3 * scale, name


def _specials(rng: np.random.Generator, size: int, dtype: type) -> np.ndarray:
    x = rng.standard_normal(size).astype(dtype)
    for value in (np.nan, -0.0, 0.0, np.inf, -np.inf):
        x[rng.integers(0, size, max(1, size // 20))] = value
    return x


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("size", [5, pointwise.ZERO_ROW, 3 * pointwise.ZERO_ROW + 7])
def test_maximum_zero_is_relu(dtype, size, torch):
    """The row-wise maximum (contiguous data against a zero row, scalar for the tail) is torch's relu
    on every value: NaN kept, infinities, both zeros; also in place and on strided views."""
    x = _specials(np.random.default_rng(size), size, dtype)
    expected = torch.relu(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_array_equal(pointwise.maximum_zero(x, np.empty_like(x)), expected)
    strided = np.repeat(x, 2)[::2]
    np.testing.assert_array_equal(pointwise.maximum_zero(strided, np.empty_like(x)), expected)
    pointwise.maximum_zero(x, x)
    np.testing.assert_array_equal(x, expected)


def test_maximum_zero_without_torch():
    x = _specials(np.random.default_rng(3), 5 * pointwise.ZERO_ROW + 3, np.float32).reshape(1, 1, -1)
    expected = np.where(np.isnan(x) | (x > 0), x, np.float32(0))
    for out in (np.empty_like(x), x):
        np.testing.assert_array_equal(pointwise.maximum_zero(x, out), expected)
