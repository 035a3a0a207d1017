"""ReLU6, Hardtanh, Hardswish, Hardsigmoid, ELU, Softplus, Mish, GLU and PReLU against torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import compare, torch_module

DTYPES = [np.float64, np.float32]


def _values(dtype, shape=(3, 4, 5), seed=0):
    x = np.random.default_rng(seed).standard_normal(shape) * 4
    x.flat[:6] = [-3.0, 3.0, 0.0, -1.0, 1.0, 6.0]  # the kinks of every piecewise function
    return x.astype(dtype)


ELEMENTWISE = [
    ("relu6", {}),
    ("hardtanh", {}),
    ("hardtanh", {"min_val": -2.0, "max_val": 0.5}),
    ("hardswish", {}),
    ("hardsigmoid", {}),
    ("elu", {}),
    ("elu", {"alpha": 0.3}),
    ("softplus", {}),
    ("softplus", {"beta": 2.0, "threshold": 3.0}),
    ("mish", {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kwargs"), ELEMENTWISE)
def test_elementwise_matches_torch(name, kwargs, dtype):
    torch = torch_module()
    compare(
        lambda x: getattr(F, name)(x, **kwargs),
        lambda x: getattr(torch.nn.functional, name)(x, **kwargs),
        [_values(dtype)],
    )


@pytest.mark.parametrize("name", ["relu6", "hardtanh", "hardswish", "hardsigmoid", "elu", "softplus", "mish"])
def test_nan_and_infinities_match_torch(name):
    torch = torch_module()
    x = np.array([np.nan, -np.inf, np.inf, -1e30, 1e30, 0.5, 100.0, -100.0])
    compare(getattr(F, name), getattr(torch.nn.functional, name), [x])


@settings(max_examples=30, deadline=None)
@given(
    lo=st.floats(-5, 0),
    width=st.floats(0.01, 5),
    beta=st.floats(0.1, 5),
    threshold=st.floats(0.5, 30),
    alpha=st.floats(0, 3),
)
def test_parameters_match_torch(lo, width, beta, threshold, alpha):
    torch = torch_module()
    x = _values(np.float64, (40,), seed=3)
    TF = torch.nn.functional
    compare(lambda t: F.hardtanh(t, lo, lo + width), lambda t: TF.hardtanh(t, lo, lo + width), [x])
    compare(lambda t: F.softplus(t, beta, threshold), lambda t: TF.softplus(t, beta, threshold), [x])
    compare(lambda t: F.elu(t, alpha), lambda t: TF.elu(t, alpha), [x])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "dim"), [((4, 6), -1), ((4, 6), 0), ((2, 4, 3), 1), ((8,), 0)])
def test_glu_matches_torch(shape, dim, dtype):
    torch = torch_module()
    compare(lambda x: F.glu(x, dim), lambda x: torch.nn.functional.glu(x, dim), [_values(dtype, shape)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "channels"),
    [((2, 3, 4, 4), 3), ((2, 3, 4, 4), 1), ((5, 3), 3), ((7,), 1), ((), 1), ((2, 4, 5), 4)],
)
def test_prelu_matches_torch(shape, channels, dtype):
    torch = torch_module()
    w = np.linspace(-0.5, 0.8, channels).astype(dtype)
    compare(
        F.prelu, torch.nn.functional.prelu, [_values(dtype, shape) if shape else np.array(-2.0, dtype), w]
    )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: F.glu(npconv.tensor(np.ones(3))), ValueError),
        (lambda: F.glu(npconv.tensor(1.0)), ValueError),
        (lambda: F.glu(npconv.tensor(np.ones((2, 4))), dim=2), IndexError),
        (lambda: F.prelu(npconv.tensor(np.ones((2, 3))), npconv.tensor(np.ones(2, np.float32))), ValueError),
        (
            lambda: F.prelu(npconv.tensor(np.ones((2, 3))), npconv.tensor(np.ones((3, 1), np.float32))),
            ValueError,
        ),
        (lambda: F.prelu(npconv.tensor(1.0), npconv.tensor(np.ones(3, np.float32))), ValueError),
        (lambda: F.hardtanh(npconv.tensor(np.ones(3)), 2.0, 1.0), ValueError),
        (lambda: F.elu(npconv.tensor(np.ones(3)), "1"), TypeError),
        (lambda: F.relu6(np.arange(3)), TypeError),
        (lambda: nn.Hardtanh(1.0, 1.0), ValueError),
        (lambda: nn.PReLU(0), ValueError),
    ],
)
def test_bad_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()


def _modules(torch):
    tnn = torch.nn
    return [
        (nn.ReLU6(), tnn.ReLU6()),
        (nn.ReLU6(True), tnn.ReLU6(True)),
        (nn.Hardtanh(), tnn.Hardtanh()),
        (nn.Hardtanh(-2, 3, True), tnn.Hardtanh(-2, 3, True)),
        (nn.Hardswish(), tnn.Hardswish()),
        (nn.Hardsigmoid(), tnn.Hardsigmoid()),
        (nn.ELU(), tnn.ELU()),
        (nn.ELU(2.0, True), tnn.ELU(2.0, True)),
        (nn.Softplus(), tnn.Softplus()),
        (nn.Softplus(2, 10), tnn.Softplus(2, 10)),
        (nn.Mish(), tnn.Mish()),
        (nn.GLU(), tnn.GLU()),
        (nn.GLU(1), tnn.GLU(1)),
        (nn.PReLU(), tnn.PReLU()),
        (nn.PReLU(4, 0.1), tnn.PReLU(4, 0.1)),
    ]


def test_module_repr_state_dict_and_forward_match_torch():
    torch = torch_module()
    for ours, theirs in _modules(torch):
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for key, value in theirs.state_dict().items():
            np.testing.assert_array_equal(np.asarray(ours.state_dict()[key]), value.numpy())
        x = _values(np.float32, (2, 4, 6))
        # clone: modules with inplace=True refuse a leaf that requires grad, like torch
        compare(lambda t, m=ours: m(t.clone()), lambda t, m=theirs: m(t.clone()), [x])


def test_prelu_weight_gradient_through_module_matches_torch():
    torch = torch_module()
    ours, theirs = nn.PReLU(3, dtype=np.float64), torch.nn.PReLU(3, dtype=torch.float64)
    x = _values(np.float64, (2, 3, 5))
    y = ours(npconv.tensor(x))
    yt = theirs(torch.from_numpy(x))
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-12)


# -- edge shapes and dtypes, as torch ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "mish",
                                  "hardswish", "hardsigmoid", "hardtanh", "softplus", "sigmoid", "tanh",
                                  "logsigmoid"])
def test_a_zero_dim_input_keeps_its_shape_and_gradient_shape(name):
    torch = torch_module()
    for lib in (npconv, torch):
        x = lib.tensor(0.7, dtype=lib.float64, requires_grad=True)
        y = getattr(lib.nn.functional, name)(x)
        y.backward()
        assert tuple(y.shape) == () and tuple(x.grad.shape) == (), f"{lib.__name__} {name}"
    ours = getattr(F, name)(npconv.tensor(0.7, dtype=npconv.float64)).item()
    theirs = getattr(torch.nn.functional, name)(torch.tensor(0.7, dtype=torch.float64)).item()
    assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("shape, dim", [((0,), 0), ((3, 0), 1), ((3, 0), 0), ((2, 4, 0), -1)])
def test_softmax_over_an_empty_dimension_is_empty(shape, dim):
    torch = torch_module()
    for op in ("softmax", "log_softmax"):
        ours = getattr(F, op)(npconv.zeros(shape), dim=dim)
        theirs = getattr(torch.nn.functional, op)(torch.zeros(shape), dim=dim)
        assert tuple(ours.shape) == tuple(theirs.shape) == shape


def test_relu_of_an_integer_tensor_as_torch():
    torch = torch_module()
    data = np.array([-2, 0, 3], dtype=np.int64)
    expected = torch.nn.functional.relu(torch.from_numpy(data)).numpy()
    for call in (F.relu, nn.ReLU(), npconv.relu):
        got = call(npconv.tensor(data)).numpy()
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(TypeError, match="bool"):
        F.relu(npconv.tensor(np.array([True, False])))
