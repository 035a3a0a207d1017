"""Linear, Identity, Flatten/Unflatten, activations, softmax and dropout against torch."""

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


def _copy_parameters(ours, theirs) -> None:
    torch = torch_module()
    with torch.no_grad():
        for name, value in ours.state_dict().items():
            theirs.state_dict()[name].copy_(torch.from_numpy(np.array(value)))


def _compare_module(ours, theirs, x: np.ndarray, seed: int = 0) -> None:
    """Forward, input gradient and every parameter gradient of ``ours`` equal torch's."""
    torch = torch_module()
    xn = npconv.Tensor(x.copy(), requires_grad=True)
    xt = to_torch(x, True)
    y, yt = ours(xn.clone()), theirs(xt.clone())  # in-place layers refuse a leaf (torch and npconv)
    assert_close(y, yt, what="forward")
    gy = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    assert_close(xn.grad, xt.grad, what="grad input")
    params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, params[name].grad, what=f"grad {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 4), (4,), (2, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(dtype, shape, bias, torch):
    tnn = torch.nn
    ours = nn.Linear(4, 3, bias=bias, dtype=dtype)
    theirs = tnn.Linear(4, 3, bias=bias, dtype=getattr(torch, np.dtype(dtype).name))
    _copy_parameters(ours, theirs)
    assert repr(ours) == repr(theirs)
    _compare_module(ours, theirs, np.random.default_rng(1).standard_normal(shape).astype(dtype))


def test_linear_initialisation_bounds_and_state_dict_keys(torch):
    tnn = torch.nn
    npconv.manual_seed(0)
    layer = nn.Linear(50, 20)
    assert list(layer.state_dict()) == list(tnn.Linear(50, 20).state_dict())
    bound = 1 / np.sqrt(50)
    assert np.abs(layer.weight.numpy()).max() <= bound and np.abs(layer.bias.numpy()).max() <= bound
    assert np.abs(layer.weight.numpy()).max() > 0.8 * bound  # kaiming_uniform(a=sqrt(5)) spans U(-b, b)


def test_linear_rejects_mismatched_features():
    with pytest.raises(ValueError, match="mat1 and mat2 shapes cannot be multiplied"):
        F.linear(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="bias must have 4 elements"):
        F.linear(np.zeros((2, 5)), np.zeros((4, 5)), np.zeros(3))
    with pytest.raises(TypeError, match="should be the same"):
        F.linear(np.zeros((2, 5), np.float32), np.zeros((4, 5)))


ACTIVATIONS = [
    lambda m: m.ReLU(),
    lambda m: m.ReLU(inplace=True),
    lambda m: m.LeakyReLU(),
    lambda m: m.LeakyReLU(0.2, True),
    lambda m: m.GELU(),
    lambda m: m.GELU(approximate="tanh"),
    lambda m: m.SiLU(),
    lambda m: m.SiLU(True),
    lambda m: m.Sigmoid(),
    lambda m: m.Tanh(),
    lambda m: m.Softmax(dim=1),
    lambda m: m.Softmax(dim=-1),
    lambda m: m.LogSoftmax(dim=0),
    lambda m: m.LogSoftmax(1),
    lambda m: m.Identity(3, key="ignored"),
    lambda m: m.Flatten(),
    lambda m: m.Flatten(0, 1),
    lambda m: m.Unflatten(1, (2, 2)),
    lambda m: m.Unflatten(-1, (-1, 5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", ACTIVATIONS)
def test_activation_modules_match_torch(make, dtype, torch):
    tnn = torch.nn
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(dtype) * 3
    x[0, 0, :3] = [0.0, -0.0, 1e-3]  # the kinks
    _compare_module(ours, theirs, x)


@given(
    dtype=st.sampled_from(DTYPES),
    slope=st.floats(-2, 2),
    dim=st.integers(-3, 2),
    shape=st.lists(st.integers(1, 4), min_size=3, max_size=3),
)
def test_functional_activations_match_torch(dtype, slope, dim, shape, torch):
    TF = torch.nn.functional
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype) * 4
    for ours, theirs in [
        (lambda t: F.leaky_relu(t, slope), lambda t: TF.leaky_relu(t, slope)),
        (lambda t: F.softmax(t, dim), lambda t: TF.softmax(t, dim)),
        (lambda t: F.log_softmax(t, dim), lambda t: TF.log_softmax(t, dim)),
        (lambda t: F.gelu(t, approximate="tanh"), lambda t: TF.gelu(t, approximate="tanh")),
        (lambda t: F.flatten(t, 1), lambda t: torch.flatten(t, 1)),
    ]:
        xn, xt = npconv.Tensor(x.copy(), requires_grad=True), to_torch(x, True)
        y, yt = ours(xn), theirs(xt)
        assert_close(y, yt, what="forward")
        gy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
        y.backward(gy)
        yt.backward(torch.from_numpy(gy))
        assert_close(xn.grad, xt.grad, what="grad input")


def test_softmax_implicit_dim_and_extremes_match_torch(torch):
    TF = torch.nn.functional
    x = np.array([[1000.0, 0.0, -1000.0], [-np.inf, 0.0, 1.0]])
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = F.softmax(x)
    assert_close(y, TF.softmax(torch.from_numpy(x), 1))
    assert_close(F.log_softmax(x[:1], 1), TF.log_softmax(torch.from_numpy(x[:1]), 1))
    assert_close(
        F.softmax(x, dim=1, dtype=np.float32), TF.softmax(torch.from_numpy(x), 1, dtype=torch.float32)
    )


def test_gelu_and_silu_gradients_by_finite_differences():
    x = np.linspace(-4, 4, 41)
    for fn in [lambda t: F.gelu(t), lambda t: F.gelu(t, approximate="tanh"), F.silu, F.sigmoid, F.tanh]:
        xt = npconv.Tensor(x.copy(), requires_grad=True)
        fn(xt).sum().backward()
        numeric = (fn(x + 1e-6).numpy() - fn(x - 1e-6).numpy()) / 2e-6
        np.testing.assert_allclose(xt.grad.numpy(), numeric, atol=1e-8)


def test_dropout_training_eval_and_statistics(torch):
    tnn = torch.nn
    npconv.manual_seed(0)
    layer = nn.Dropout(0.25)
    assert repr(layer) == repr(tnn.Dropout(0.25))
    x = np.ones((200, 100))
    xt = npconv.Tensor(x, requires_grad=True)
    y = layer(xt)
    kept = y.numpy() != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.75)
    y.sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), y.numpy())  # gradient is the same mask and scale
    layer.eval()
    assert layer(xt) is xt
    npconv.manual_seed(5)
    first = F.dropout(x, 0.5).numpy()
    npconv.manual_seed(5)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)  # the global generator drives it
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), 0)
    assert F.dropout(xt, 0.3, training=False) is xt


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: nn.Dropout(1.5), ValueError, "dropout probability has to be between 0 and 1, but got 1.5"),
        (lambda: F.dropout(np.zeros(3), -0.1), ValueError, "between 0 and 1"),
        (lambda: F.gelu(np.zeros(3), approximate="foo"), ValueError, "approximate"),
        (lambda: nn.GELU("foo"), ValueError, "approximate"),
        (lambda: F.softmax(np.zeros((2, 3)), 2), ValueError, "Dimension out of range"),
        (lambda: F.relu(np.zeros(3, dtype=bool)), TypeError, "bool tensors are not supported"),
        (lambda: F.relu("x"), TypeError, "input must be a Tensor"),
        (lambda: F.flatten(np.zeros((2, 3)), 1, 0), ValueError, "start_dim cannot come after end_dim"),
        (lambda: nn.Unflatten(1, (2, 3))(np.zeros((2, 5))), ValueError, "don't multiply up"),
        (lambda: nn.Unflatten(1, 6), TypeError, "unflattened_size must be a tuple of ints"),
    ],
)
def test_layers_reject_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
