"""BatchNorm1d/2d/3d and GroupNorm against torch: forward, gradients, running statistics, repr."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import assert_close, to_torch, torch_module

DTYPES = [np.float64, np.float32]
SHAPES = {1: [(6, 3), (4, 3, 5)], 2: [(3, 3, 4, 5)], 3: [(2, 3, 2, 3, 4)]}


def _torch_dtype(dtype):
    torch = torch_module()
    return getattr(torch, np.dtype(dtype).name)


def _randomise_affine(ours, theirs, rng) -> None:
    torch = torch_module()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.numpy()[...] = rng.standard_normal(p.shape)
            dict(theirs.named_parameters())[name].copy_(torch.from_numpy(p.numpy().copy()))


def _step(ours, theirs, x: np.ndarray, seed: int) -> None:
    """One forward/backward of both; outputs and gradients must agree."""
    torch = torch_module()
    xn = npconv.Tensor(x.copy(), requires_grad=True)
    xt = to_torch(x, True)
    y, yt = ours(xn), theirs(xt)
    assert_close(y, yt, what="forward")
    gy = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    assert_close(xn.grad, xt.grad, what="grad input")
    params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, params[name].grad, what=f"grad {name}")
        p.grad = None
        params[name].grad = None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"momentum": None},
        {"momentum": 0.3, "affine": False},
        {"track_running_stats": False},
        {"eps": 1e-3, "bias": False},
    ],
)
def test_batch_norm_train_then_eval_matches_torch(nd, dtype, kwargs, torch):
    tnn = torch.nn
    ours = getattr(nn, f"BatchNorm{nd}d")(3, dtype=dtype, **kwargs)
    theirs = getattr(tnn, f"BatchNorm{nd}d")(3, dtype=_torch_dtype(dtype), **kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    rng = np.random.default_rng(nd)
    _randomise_affine(ours, theirs, rng)
    for step, shape in enumerate(SHAPES[nd] * 2):
        x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
        _step(ours, theirs, x, step)
    for name, buffer in theirs.state_dict().items():
        if "running" in name:
            assert_close(ours.state_dict()[name], buffer, what=name)
        if "num_batches" in name:
            np.testing.assert_array_equal(ours.state_dict()[name], buffer.numpy())
        assert ours.state_dict()[name].dtype == buffer.numpy().dtype
    ours.eval()
    theirs.eval()
    _step(ours, theirs, (rng.standard_normal(SHAPES[nd][0]) * 2).astype(dtype), 99)


@given(
    dtype=st.sampled_from(DTYPES),
    training=st.booleans(),
    momentum=st.floats(0, 1),
    eps=st.sampled_from([1e-5, 1e-2]),
    shape=st.lists(st.integers(2, 4), min_size=2, max_size=4),
)
def test_functional_batch_norm_matches_torch(dtype, training, momentum, eps, shape, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    ours = [npconv.Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    theirs = [to_torch(a, True) for a in (x, w, b)]
    rm_n, rv_n = npconv.Tensor(rm.copy()), npconv.Tensor(rv.copy())
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    y = F.batch_norm(ours[0], rm_n, rv_n, ours[1], ours[2], training, momentum, eps)
    yt = TF.batch_norm(theirs[0], rm_t, rv_t, theirs[1], theirs[2], training, momentum, eps)
    assert_close(y, yt, what="forward")
    assert_close(rm_n, rm_t, what="running_mean")
    assert_close(rv_n, rv_t, what="running_var")
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    for a, e, name in zip(ours, theirs, ("input", "weight", "bias"), strict=True):
        assert_close(a.grad, e.grad, what=f"grad {name}")


def test_batch_norm_is_stable_for_a_large_offset(torch):
    TF = torch.nn.functional
    x = 1e8 + np.random.default_rng(0).standard_normal((64, 2))
    y = F.batch_norm(x, None, None, training=True)
    exact = x.astype(np.longdouble)
    centred = exact - exact.mean(axis=0)
    reference = centred / np.sqrt((centred * centred).mean(axis=0) + 1e-5)
    error = np.abs(y.numpy() - reference).max()
    theirs = TF.batch_norm(torch.from_numpy(x), None, None, training=True).numpy()
    error_torch = np.abs(theirs - reference).max()
    assert error <= 2 * error_torch + 1e-12


def test_batch_norm_gradient_by_finite_differences():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal(2), rng.standard_normal(2)
    gy = rng.standard_normal(x.shape)

    def loss(xa, wa, ba):
        return float((F.batch_norm(xa, None, None, wa, ba, True).numpy() * gy).sum())

    tensors = [npconv.Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    (F.batch_norm(tensors[0], None, None, tensors[1], tensors[2], True) * gy).sum().backward()
    arrays = [x, w, b]
    for k, t in enumerate(tensors):
        numeric = np.zeros_like(arrays[k])
        for i in np.ndindex(numeric.shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[k][i] += 1e-6
            minus[k][i] -= 1e-6
            numeric[i] = (loss(*plus) - loss(*minus)) / 2e-6
        np.testing.assert_allclose(t.grad.numpy(), numeric, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "groups, channels, shape, kwargs",
    [
        (2, 4, (3, 4, 5), {}),
        (1, 6, (2, 6, 3, 3), {}),
        (3, 3, (2, 3, 2, 2, 2), {"eps": 1e-3}),
        (2, 4, (3, 4), {"affine": False}),
        (2, 4, (2, 4, 7), {"bias": False}),
    ],
)
def test_group_norm_matches_torch(groups, channels, shape, kwargs, dtype, torch):
    tnn = torch.nn
    ours = nn.GroupNorm(groups, channels, dtype=dtype, **kwargs)
    theirs = tnn.GroupNorm(groups, channels, dtype=_torch_dtype(dtype), **kwargs)
    assert repr(ours) == repr(theirs)
    rng = np.random.default_rng(channels)
    _randomise_affine(ours, theirs, rng)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    _step(ours, theirs, x, 0)
    ours.eval()
    theirs.eval()
    _step(ours, theirs, x, 1)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 5))), "expected 2D or 3D input \\(got 4D input\\)"),
        (lambda: nn.BatchNorm2d(3)(np.zeros((2, 4, 4, 5))), "running_mean should contain 4 elements not 3"),
        (lambda: nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32)),
         "Expected more than 1 value per channel when training"),
        (lambda: F.batch_norm(np.zeros((2, 3)), None, None), "running_mean and running_var must be given"),
        (lambda: F.group_norm(np.zeros((1, 2, 5)), 3), "divisible by num_groups"),
        (lambda: nn.GroupNorm(3, 4), "num_channels \\(4\\) must be divisible by num_groups \\(3\\)"),
        (lambda: F.group_norm(np.zeros((2, 4, 3)), 2, np.ones(3)), "weight should contain 4 elements"),
    ],
)
def test_norm_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_rejected_batch_norm_call_leaves_running_stats_alone():
    layer = nn.BatchNorm1d(3)
    with pytest.raises(ValueError):
        layer(np.zeros((1, 3), np.float32))
    assert layer.num_batches_tracked.item() == 0
    np.testing.assert_array_equal(layer.running_mean.numpy(), 0)
