"""Batch norm's passes (kernels/pointwise.batch_norm_forward/backward) on both engines, the compiled
per-channel kernel (npconv._core, every ISA variant this CPU runs) and the NumPy passes, against
torch: values, every gradient and the running statistics in float64 and float32 for 1-d/2-d/3-d
inputs, non-contiguous inputs, odd plane sizes (vector tails), affine=False, no running statistics,
eval mode, NaN/inf locality, large means; and the extension's argument guards."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from npconv import backends
from npconv.kernels import pointwise
from torch_oracle import assert_close


@pytest.fixture(params=["compiled", "numpy"])
def engine(request, monkeypatch):
    """Batch norm on the compiled core, then on the NumPy passes (the fallback)."""
    if request.param == "compiled" and not backends.core.available:
        pytest.skip(f"compiled core not in use: {backends.core.reason}")
    if request.param == "numpy":
        monkeypatch.setattr(pointwise, "_core_takes", lambda x: False)
    return request.param


def _pair(torch, array, grad=True):
    ours = npconv.Tensor(array.copy(), requires_grad=grad)
    return ours, torch.from_numpy(array.copy()).requires_grad_(grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 7), (3, 2, 5, 9), (2, 3, 2, 3, 5), (2, 4, 33)])
@pytest.mark.parametrize("kwargs", [{"momentum": None}, {"affine": False, "momentum": 0.3},
                                    {"track_running_stats": False}])
def test_modules_train_then_eval_match_torch(shape, dtype, kwargs, engine, parallel, torch):
    """Two training steps on non-contiguous inputs (running statistics, momentum=None's cumulative
    average, num_batches_tracked), then eval mode; outputs and the gradients of input and affine."""
    nd = {2: 1, 3: 1, 4: 2, 5: 3}[len(shape)]
    ours = getattr(nn, f"BatchNorm{nd}d")(shape[1], dtype=dtype, **kwargs)
    torch_dtype = getattr(torch, np.dtype(dtype).name)
    theirs = getattr(torch.nn, f"BatchNorm{nd}d")(shape[1], dtype=torch_dtype, **kwargs)
    rng = np.random.default_rng(len(shape))
    if ours.affine:
        for name, p in ours.named_parameters():
            p.numpy()[...] = rng.standard_normal(p.shape)
            dict(theirs.named_parameters())[name].data.copy_(torch.from_numpy(p.numpy().copy()))
    for step in range(3):
        if step == 2:
            ours.eval()
            theirs.eval()
        x = (3 + 2 * rng.standard_normal(shape[::-1])).astype(dtype).T  # non-contiguous
        gy = rng.standard_normal(shape).astype(dtype)
        xn, xt = npconv.Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
        y, yt = ours(xn), theirs(xt)
        y.backward(gy)
        yt.backward(torch.from_numpy(gy))
        assert_close(y, yt, what="y")
        assert_close(xn.grad, xt.grad, what="grad input")
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            assert_close(p.grad, q.grad, what=f"grad {name}")
            p.grad, q.grad = None, None
        for name, buffer in theirs.state_dict().items():
            if name in ("running_mean", "running_var"):
                assert_close(ours.state_dict()[name], buffer, what=name)
            elif name == "num_batches_tracked":
                assert int(ours.state_dict()[name].item()) == int(buffer)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("wants", ["input", "params"])
def test_partial_gradients_match_torch(training, wants, engine, torch):
    """Only the input's gradient, or only the affine parameters' (the other sums are skipped)."""
    rng = np.random.default_rng(3)
    x, gy = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    w, b, rm, rv = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), 1 + rng.random(3)
    ours = [_pair(torch, a, grad=(wants == "input") == (k == 0)) for k, a in enumerate((x, w, b))]
    y = F.batch_norm(ours[0][0], rm, rv, ours[1][0], ours[2][0], training)
    yt = torch.nn.functional.batch_norm(ours[0][1], torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy()),
                                        ours[1][1], ours[2][1], training)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    for (a, t), name in zip(ours, ("input", "weight", "bias"), strict=True):
        assert (a.grad is None) == (t.grad is None), name
        if t.grad is not None:
            assert_close(a.grad, t.grad, what=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_values_stay_in_their_channel(dtype, engine, torch):
    """A NaN in channel 0 and an inf in channel 2 make those channels NaN (training) and leave the
    others exact; in eval mode an inf input still passes a finite gradient (g * weight * invstd)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 6, 6)).astype(dtype)
    x[1, 0, 2, 3], x[2, 2, 5, 5] = np.nan, np.inf
    gy = rng.standard_normal(x.shape).astype(dtype)
    w, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    for training in (True, False):
        xn, xt = _pair(torch, x)
        rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
        rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
        y = F.batch_norm(xn, rm, rv, w, b, training)
        yt = torch.nn.functional.batch_norm(xt, rm_t, rv_t, torch.from_numpy(w), torch.from_numpy(b),
                                            training)
        y.backward(gy)
        yt.backward(torch.from_numpy(gy))
        for ours, theirs in ((y.numpy(), yt.detach().numpy()), (xn.grad.numpy(), xt.grad.numpy())):
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
            np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
            finite = np.isfinite(theirs)
            np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-5, atol=1e-5)
        if training:
            assert np.isnan(y.numpy()[:, [0, 2]]).all() and np.isfinite(y.numpy()[:, [1, 3]]).all()
            # the NaN channel's running mean NaN, the inf channel's inf (torch's), the others finite
            assert np.isnan(rm[0]) and rm[2] == np.inf and np.isfinite(rm[[1, 3]]).all()
            np.testing.assert_allclose(rm, rm_t.numpy(), rtol=1e-5)
        else:
            assert np.isfinite(xn.grad.numpy()).all()


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_float32_statistics_of_a_large_plane_are_as_accurate_as_torch(offset, engine, torch):
    """float32 with a large mean over 2 x 2 x 128 x 128 values per channel: the output and the input
    gradient are within 2x torch's float32 error of the float64 result."""
    rng = np.random.default_rng(5)
    x = (offset + rng.standard_normal((32, 2, 64, 64))).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    xn = npconv.Tensor(x, requires_grad=True)
    y = F.batch_norm(xn, None, None, training=True)
    y.backward(gy)
    results = {}
    for name, dtype in (("torch32", torch.float32), ("exact", torch.float64)):
        xt = torch.from_numpy(x).to(dtype).requires_grad_()
        yt = torch.nn.functional.batch_norm(xt, None, None, training=True)
        yt.backward(torch.from_numpy(gy).to(dtype))
        results[name] = (yt.detach().double().numpy(), xt.grad.double().numpy())
    for k, what in enumerate(("y", "grad input")):
        exact = results["exact"][k]
        ours = (y.numpy() if k == 0 else xn.grad.numpy()).astype(np.float64)

        def error(a, exact=exact):
            return np.linalg.norm(a - exact) / np.linalg.norm(exact)

        assert error(ours) <= 2 * error(results["torch32"][k]) + 1e-7, what


def test_every_isa_with_vector_tails(isa, torch):
    """Plane sizes around every vector width (1..70 values per row) on each ISA variant."""
    rng = np.random.default_rng(6)
    for size in (1, 3, 8, 17, 33, 70):
        for dtype in (np.float32, np.float64):
            x = (rng.standard_normal((3, 2, size)) * 4 - 1).astype(dtype)
            gy = rng.standard_normal(x.shape).astype(dtype)
            w, b = rng.standard_normal(2).astype(dtype), rng.standard_normal(2).astype(dtype)
            ours, theirs = zip(*(_pair(torch, a) for a in (x, w, b)), strict=True)
            y = F.batch_norm(ours[0], None, None, ours[1], ours[2], True)
            yt = torch.nn.functional.batch_norm(theirs[0], None, None, theirs[1], theirs[2], True)
            y.backward(gy)
            yt.backward(torch.from_numpy(gy))
            assert_close(y, yt, what=f"y {size}")
            for a, t in zip(ours, theirs, strict=True):
                assert_close(a.grad, t.grad, what=f"grads {size}")


@pytest.mark.skipif(not backends.core.available, reason="compiled core not in use")
def test_extension_rejects_bad_arguments():
    core, isa = backends.core.module, backends.core.isa_index
    x, y = np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 4), np.float32)
    stats = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="channel range"):
        core.batch_norm_forward(isa, x, y, None, None, stats, (2, 3, 4), True, 1e-5, 0, 4)
    with pytest.raises(ValueError, match="input has 24 elements, expected 48"):
        core.batch_norm_forward(isa, x, y, None, None, stats, (2, 3, 8), True, 1e-5, 0, 3)
    with pytest.raises(ValueError, match="geometry value 1 out of range: -3"):
        core.batch_norm_forward(isa, x, y, None, None, stats, (2, -3, 4), True, 1e-5, 0, 0)
    with pytest.raises(TypeError, match="same element type"):
        core.batch_norm_forward(isa, x, y.astype(np.float64), None, None, stats, (2, 3, 4), True, 1e-5, 0, 3)
    with pytest.raises(ValueError, match="overflows"):
        core.batch_norm_forward(isa, x, y, None, None, stats, (2**40, 2**40, 4), True, 1e-5, 0, 0)
    with pytest.raises(ValueError, match="sums has 3 elements, expected 6"):
        core.batch_norm_backward(isa, y, x, None, None, stats, np.zeros(3, np.float32), (2, 3, 4), True, 0, 3)
    assert not y.any() and not stats.any()  # rejected calls wrote nothing


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 0), (0, 3, 2), (0, 3), (1, 3), (1, 3, 1)])
def test_empty_and_single_value_batches_as_torch(shape, engine, torch):
    """As torch: one value per channel is rejected in training; no values (N = 0) gives an empty
    result, zero parameter gradients and running statistics left alone; no channels, empty results."""
    c = shape[1]
    for training in (True, False):
        x = npconv.Tensor(np.zeros(shape), requires_grad=True)
        w = npconv.Tensor(np.ones(c), requires_grad=True)
        rm, rv = np.zeros(c), np.ones(c)
        xt = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        wt = torch.ones(c, dtype=torch.float64, requires_grad=True)
        rmt, rvt = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
        if training and shape[0] * int(np.prod(shape[2:])) == 1:
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                F.batch_norm(x, rm, rv, w, None, training)
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                torch.nn.functional.batch_norm(xt, rmt, rvt, wt, None, training)
            continue
        # no weight without channels: torch raises IndexError for a weight of no elements
        y = F.batch_norm(x, rm, rv, w if c else None, None, training)
        yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt if c else None, None, training)
        y.sum().backward()
        yt.sum().backward()
        assert y.shape == tuple(yt.shape) and x.grad.shape == tuple(xt.grad.shape)
        if c:
            np.testing.assert_array_equal(w.grad.numpy(), wt.grad.numpy())
        np.testing.assert_array_equal(rm, rmt.numpy())
        np.testing.assert_array_equal(rv, rvt.numpy())


def _reference(x, g, w, b, eps):
    """Training-mode batch norm and its gradients from the textbook formulas in float64 (NumPy only)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x, g = x.astype(np.float64), g.astype(np.float64)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    y = xhat * w.reshape(shape) + b.reshape(shape)
    gxhat = g * w.reshape(shape)
    gx = (gxhat - gxhat.mean(axis=axes, keepdims=True)
          - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)) * invstd.reshape(shape)
    return y, mean, var, gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (6, 2), (2, 5, 33)])
def test_both_engines_equal_the_formulas_without_torch(shape, dtype, engine, parallel):
    rng = np.random.default_rng(8)
    x = (2 - 3 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    y, mean, var, invstd = pointwise.batch_norm_forward(x, w, b, 1e-3)
    gx, gw, gb = pointwise.batch_norm_backward(g, x, mean, invstd, w, True, True, True)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for ours, exact in zip((y, mean, var, gx, gw, gb), _reference(x, g, w, b, 1e-3), strict=True):
        assert ours.dtype == np.dtype(dtype)
        np.testing.assert_allclose(ours, exact, rtol=tol, atol=tol * max(1.0, np.abs(exact).max()))
    np.testing.assert_allclose(invstd, 1 / np.sqrt(var.astype(np.float64) + 1e-3), rtol=tol)
    gx_fixed, gw_fixed, gb_fixed = pointwise.batch_norm_backward(g, x, mean, invstd, w, False, True, False)
    assert gw_fixed is None and gb_fixed is None
    np.testing.assert_allclose(gx_fixed, g * (w * invstd).reshape((1, -1) + (1,) * (x.ndim - 2)), rtol=tol)
