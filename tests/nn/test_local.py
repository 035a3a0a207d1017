"""Locally connected convolutions (``Conv{1,2,3}dLocal``, ``F.conv{1,2,3}d_local``).

References: torch ``unfold`` + ``einsum`` (2-d) and an explicit torch loop over output positions
(1-, 2- and 3-d); non-zero padding modes are built in torch by index gathers from NumPy's pad
index maps. Gradients also by finite differences without torch.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import TOL, assert_close, to_torch, torch_module, torch_pad

LOCAL = {1: F.conv1d_local, 2: F.conv2d_local, 3: F.conv3d_local}
MODULES = {1: nn.Conv1dLocal, 2: nn.Conv2dLocal, 3: nn.Conv3dLocal}
MODES = ["zeros", "reflect", "replicate", "circular", "symmetric"]


# -- torch references ------------------------------------------------------------------------
def torch_local_loop(xp, w, b, stride, dilation):
    """Locally connected conv of the padded ``xp``: one matrix product per output position."""
    torch = torch_module()
    nd = xp.ndim - 2
    out_size = tuple(w.shape[:nd])
    n, o = xp.shape[0], w.shape[nd]
    kernel = tuple(w.shape[nd + 2:])
    columns = []
    for position in itertools.product(*(range(m) for m in out_size)):
        region = tuple(slice(p * s, p * s + (k - 1) * d + 1, d)
                       for p, s, k, d in zip(position, stride, kernel, dilation, strict=True))
        window = xp[(slice(None), slice(None)) + region].reshape(n, -1)
        columns.append(window @ w[position].reshape(o, -1).T)
    y = torch.stack(columns, dim=-1).reshape((n, o) + out_size)
    return y if b is None else y + b


def torch_local_unfold(xp, w, b, stride, dilation):
    """2-d locally connected conv by ``unfold`` + ``einsum`` (the usual hand-rolled torch layer)."""
    torch = torch_module()
    TF = torch.nn.functional
    oh, ow, o, c, kh, kw = w.shape
    cols = TF.unfold(xp, (kh, kw), dilation=dilation, stride=stride)  # (N, C*kh*kw, L)
    y = torch.einsum("ncl,loc->nol", cols, w.reshape(oh * ow, o, c * kh * kw)).reshape(-1, o, oh, ow)
    return y if b is None else y + b


def _as_tuple(value, nd):
    return value if isinstance(value, tuple) else (value,) * nd


def _pairs(padding, nd):
    if isinstance(padding, tuple) and padding and isinstance(padding[0], tuple):
        return padding
    return tuple((p, p) for p in _as_tuple(padding, nd))


@st.composite
def local_cases(draw, nd):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = draw(st.one_of(st.integers(1, 2), st.tuples(*[st.integers(1, 3)] * nd)))
    dilation = draw(st.one_of(st.integers(1, 2), st.tuples(*[st.integers(1, 2)] * nd)))
    pair = st.tuples(st.integers(0, 2), st.integers(0, 2))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(*[pair] * nd)))
    mode = draw(st.sampled_from(MODES))
    pads = _pairs(padding, nd)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, _as_tuple(dilation, nd), strict=True)]
    size_cap = 6 if nd < 3 else 4
    # reflect needs pads smaller than the input; every case needs a padded input >= the kernel extent
    low = [max(e - lo - hi, max(lo, hi) + 1, 1) for e, (lo, hi) in zip(extent, pads, strict=True)]
    in_size = tuple(draw(st.integers(lw, max(lw, size_cap))) for lw in low)
    n = draw(st.integers(1, 2))
    out_size = tuple((i + lo + hi - e) // s + 1 for i, (lo, hi), e, s
                     in zip(in_size, pads, extent, _as_tuple(stride, nd), strict=True))
    x = rng.standard_normal((n, c) + in_size)
    w = rng.standard_normal(out_size + (o, c) + kernel)
    b = rng.standard_normal((o,) + out_size) if draw(st.booleans()) else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode)


def check_against(reference, nd, x, w, b, kwargs, dtype, seed=0):
    """Compare F.conv{nd}d_local with a torch reference in output and every gradient."""
    arrays = {"input": x.astype(dtype), "weight": w.astype(dtype),
              "bias": None if b is None else b.astype(dtype)}
    ours = {k: None if a is None else npconv.tensor(a, requires_grad=True) for k, a in arrays.items()}
    theirs = {k: None if a is None else to_torch(a, requires_grad=True) for k, a in arrays.items()}
    y = LOCAL[nd](ours["input"], ours["weight"], ours["bias"], **kwargs)
    xp = torch_pad(theirs["input"], _pairs(kwargs["padding"], nd), kwargs["padding_mode"])
    y_ref = reference(xp, theirs["weight"], theirs["bias"], _as_tuple(kwargs["stride"], nd),
                      _as_tuple(kwargs["dilation"], nd))
    assert_close(y, y_ref, dtype, f"output {kwargs}")
    gy = np.random.default_rng(seed).standard_normal(tuple(y_ref.shape)).astype(dtype)
    y.backward(gy)
    y_ref.backward(to_torch(gy))
    for name in arrays:
        if ours[name] is not None:
            assert_close(ours[name].grad, theirs[name].grad, dtype, f"gradient in {name}, {kwargs}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_local_matches_torch_loop(nd, dtype, data):
    x, w, b, kwargs = data.draw(local_cases(nd))
    check_against(torch_local_loop, nd, x, w, b, kwargs, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_local2d_matches_unfold_einsum(dtype, data):
    x, w, b, kwargs = data.draw(local_cases(2))
    check_against(torch_local_unfold, 2, x, w, b, kwargs, dtype)


@pytest.mark.parametrize("requires_grad", [True, False])
def test_batch_chunked_passes(monkeypatch, requires_grad):
    """A tiny workspace makes every pass loop over single images and rebuild the columns."""
    from npconv.kernels import local as kernels

    monkeypatch.setattr(kernels, "WORKSPACE_BYTES", 1)
    monkeypatch.setattr(kernels, "RETAINED_COLUMNS_BYTES", 1)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((3, 2, 6, 5)), rng.standard_normal((2, 2, 3, 2, 3, 2))
    b = rng.standard_normal((3, 2, 2))
    kwargs = dict(stride=2, padding=0, dilation=1, padding_mode="zeros")
    if requires_grad:
        check_against(torch_local_unfold, 2, x, w, b, kwargs, np.float64)
    else:
        with npconv.no_grad():
            y = F.conv2d_local(x, w, b, stride=2)
        assert_close(y, torch_local_unfold(to_torch(x), to_torch(w), to_torch(b), (2, 2), (1, 1)), np.float64)


def test_unbatched_input_matches_batched(torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4))
    layer = nn.Conv2dLocal(3, 2, (5, 4), (2, 3), padding=1, dtype=np.float64)
    y = layer(x)
    xt = to_torch(x[None])
    ref = torch_local_loop(TF.pad(xt, (1, 1, 1, 1)), to_torch(layer.weight.numpy()),
                           to_torch(layer.bias.numpy()), (1, 1), (1, 1))[0]
    assert_close(y, ref, np.float64)


def test_local_finite_differences():
    """Gradients of the 2-d local conv (reflect padding, stride, dilation) by central differences."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 4, 3, 2, 2, 2))
    b = rng.standard_normal((3, 3, 4))
    kwargs = dict(stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2), padding_mode="reflect")
    tensors = [npconv.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = F.conv2d_local(*tensors, **kwargs)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)

    def loss(*arrays):
        with npconv.no_grad():
            return float(np.sum(F.conv2d_local(*arrays, **kwargs).numpy() * gy))

    eps = 1e-6
    for position, (array, tensor) in enumerate(zip((x, w, b), tensors, strict=True)):
        for flat in rng.choice(array.size, size=min(array.size, 12), replace=False):
            plus, minus = [a.copy() for a in (x, w, b)], [a.copy() for a in (x, w, b)]
            plus[position].flat[flat] += eps
            minus[position].flat[flat] -= eps
            numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
            assert math.isclose(numeric, tensor.grad.numpy().flat[flat], rel_tol=1e-6, abs_tol=1e-8)


# -- modules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_module_layout_init_and_parity(nd):
    npconv.manual_seed(0)
    input_size = (7, 6, 5)[:nd]
    layer = MODULES[nd](3, 4, input_size, 3, stride=2, padding=1, padding_mode="circular", dtype=np.float64)
    out_size = tuple((n + 2 - 3) // 2 + 1 for n in input_size)
    assert layer.output_size == out_size
    assert layer.weight.shape == out_size + (4, 3) + (3,) * nd
    assert layer.bias.shape == (4,) + out_size
    bound = 1 / math.sqrt(3 * 3**nd)
    for param in (layer.weight, layer.bias):
        assert np.abs(param.numpy()).max() <= bound
        assert np.abs(param.numpy()).max() > 0.8 * bound  # drawn over the whole interval
    x = np.random.default_rng(1).standard_normal((2, 3) + input_size)
    xt = to_torch(x)
    ref = torch_local_loop(torch_pad(xt, ((1, 1),) * nd, "circular"), to_torch(layer.weight.numpy()),
                           to_torch(layer.bias.numpy()), (2,) * nd, (1,) * nd)
    assert_close(layer(x), ref, np.float64)


def test_module_gradients_and_float32_default():
    layer = nn.Conv2dLocal(2, 3, 5, 2)
    assert layer.weight.dtype == np.float32
    x = npconv.tensor(np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32),
                      requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad.shape == layer.weight.shape
    assert layer.bias.grad.shape == layer.bias.shape
    np.testing.assert_allclose(layer.bias.grad.numpy(), np.full(layer.bias.shape, 2.0),
                               **TOL[np.dtype(np.float32)])
    assert x.grad.shape == x.shape


def test_repr():
    assert repr(nn.Conv2dLocal(3, 8, (16, 16), 3)) == \
        "Conv2dLocal(3, 8, input_size=(16, 16), kernel_size=(3, 3), stride=(1, 1))"
    layer = nn.Conv1dLocal(2, 4, 10, 3, stride=2, padding=1, dilation=2, bias=False, padding_mode="reflect")
    text = repr(layer)
    assert text == ("Conv1dLocal(2, 4, input_size=(10,), kernel_size=(3,), stride=(2,), padding=(1,), "
                    "dilation=(2,), bias=False, padding_mode=reflect)")


def test_state_dict_round_trip():
    a, b = nn.Conv2dLocal(2, 3, 6, 3), nn.Conv2dLocal(2, 3, 6, 3)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert set(a.state_dict()) == {"weight", "bias"}


# -- bad input -------------------------------------------------------------------------------
def test_wrong_input_size_is_a_clear_error():
    layer = nn.Conv2dLocal(2, 3, (6, 5), 3, stride=2)
    with pytest.raises(ValueError, match=r"input_size=\(6, 5\).*\(7, 5\)"):
        layer(np.zeros((1, 2, 7, 5), np.float32))  # same output size with stride 2, still refused
    with pytest.raises(ValueError, match="3 channels|2 channels"):
        layer(np.zeros((1, 3, 6, 5), np.float32))
    with pytest.raises(ValueError, match="4D"):
        layer(np.zeros((6, 5), np.float32))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(in_channels=0), ValueError, "in_channels"),
    (dict(out_channels=2.5), TypeError, "out_channels"),
    (dict(input_size=(4, 0)), ValueError, "input_size"),
    (dict(input_size=(4, 4, 4)), ValueError, "input_size"),
    (dict(kernel_size=9), ValueError, "Kernel size can't be greater"),
    (dict(padding_mode="mirror"), ValueError, "padding_mode"),
    (dict(stride=0), ValueError, "stride"),
    (dict(dtype=np.int32), TypeError, "dtype"),
])
def test_bad_module_arguments(kwargs, error, match):
    arguments = dict(in_channels=2, out_channels=3, input_size=(6, 6), kernel_size=3) | kwargs
    with pytest.raises(error, match=match):
        nn.Conv2dLocal(**arguments)


def test_bad_functional_arguments():
    x = np.zeros((1, 2, 6, 6))
    w = np.zeros((4, 4, 3, 2, 3, 3))
    F.conv2d_local(x, w)  # valid
    with pytest.raises(ValueError, match="6-dimensional"):
        F.conv2d_local(x, np.zeros((3, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"output size \(4, 4\).*\(2, 2\)|output size"):
        F.conv2d_local(x, w, stride=2)
    with pytest.raises(ValueError, match="channels"):
        F.conv2d_local(np.zeros((1, 3, 6, 6)), w)
    with pytest.raises(ValueError, match="bias"):
        F.conv2d_local(x, w, np.zeros(3))
    with pytest.raises(TypeError, match="float32"):
        F.conv2d_local(x.astype(np.float32), w)
    with pytest.raises(TypeError, match="input"):
        F.conv2d_local("x", w)
    with pytest.raises(ValueError, match="padding_mode"):
        F.conv2d_local(x, w, padding_mode="wrap")
