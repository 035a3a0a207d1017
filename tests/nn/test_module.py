"""Module behaviour of the conv layers: repr, init statistics, state dicts, pickling, traversal, Lazy*."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy import stats

import npconv
from npconv import nn
from npconv.nn.modules.module import StateDictError
from torch_oracle import assert_close, to_torch, torch_module

CLASSES = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

# -- repr ---------------------------------------------------------------------------------------
REPR_CASES = [
    ("Conv1d", (2, 4, 3), {}),
    ("Conv1d", (2, 4, (5,)), dict(stride=3, padding="valid", bias=False)),
    ("Conv2d", (2, 4, (3, 2)), dict(stride=2, padding=1)),
    ("Conv2d", (2, 4, 3), dict(padding="same", padding_mode="reflect")),
    ("Conv2d", (2, 4, 3), dict(padding=(1, 0), padding_mode="circular", dilation=2)),
    ("Conv2d", (4, 8, 1), dict(groups=4, padding_mode="replicate", padding=2)),
    ("Conv3d", (4, 4, 1), dict(groups=2, bias=False, dilation=(1, 2, 3))),
    ("Conv3d", (1, 1, (1, 2, 3)), dict(stride=(1, 2, 1), padding=(0, 1, 0))),
    ("ConvTranspose1d", (4, 2, 2), dict(groups=2, dilation=2, padding=1, bias=False)),
    ("ConvTranspose2d", (2, 4, 3), dict(stride=2, output_padding=1)),
    ("ConvTranspose2d", (2, 4, 3), dict(stride=(2, 3), output_padding=(0, 2), padding=(1, 0))),
    ("ConvTranspose3d", (2, 2, 2), {}),
    ("LazyConv1d", (4, 3), dict(stride=2)),
    ("LazyConv2d", (4, 3), dict(padding="same")),
    ("LazyConv3d", (4, 1), dict(bias=False)),
    ("LazyConvTranspose1d", (4, 3), dict(stride=2, output_padding=1)),
    ("LazyConvTranspose2d", (4, 3), {}),
    ("LazyConvTranspose3d", (4, 3), dict(dilation=2, groups=2)),
]


@pytest.mark.parametrize("case", REPR_CASES, ids=lambda c: f"{c[0]}{c[1]}{c[2]}")
def test_repr_equals_torch(case, torch):
    name, args, kwargs = case
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert str(ours) == str(theirs)
    assert repr(ours) == repr(theirs)
    assert ours.extra_repr() == theirs.extra_repr()


def _nets():
    """The same container in npconv and in torch (class name Net in both)."""
    torch = torch_module()

    def make(lib):
        class Net(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = lib.nn.Conv2d(1, 2, 3, padding=1)
                self.up = lib.nn.ConvTranspose2d(2, 1, 2, stride=2, bias=False)
                self.inner = lib.nn.Module()
                self.inner.conv = lib.nn.Conv1d(2, 2, 1)

        return Net()

    return make(npconv), make(torch)


def test_nested_repr_equals_torch():
    ours, theirs = _nets()
    assert repr(ours) == repr(theirs)


# -- init ----------------------------------------------------------------------------------------
def _fan_in(layer) -> int:
    return layer.weight.shape[1] * math.prod(layer.weight.shape[2:])


@pytest.mark.parametrize("name", CLASSES)
def test_default_init_bounds_match_torch_formula(name, torch):
    npconv.manual_seed(0)
    args = (6, 4, (3, 2, 2)[: int(name[-2])]) if "Transpose" in name else (4, 6, (3, 2, 2)[: int(name[-2])])
    layer = getattr(nn, name)(*args, groups=2)
    fan_in = _fan_in(layer)
    gain = math.sqrt(2.0 / (1 + 5))  # leaky_relu gain for a = sqrt(5)
    bound = gain * math.sqrt(3.0 / fan_in)
    assert math.isclose(bound, 1 / math.sqrt(fan_in))
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert w.dtype == np.float32 and b.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= 1 / math.sqrt(fan_in)
    assert np.abs(w).max() > 0.5 * bound  # actually spread over the range
    theirs = getattr(torch.nn, name)(*args, groups=2)
    assert theirs.weight.shape == layer.weight.shape  # the same fan_in as torch


@pytest.mark.parametrize("transposed", [False, True])
def test_init_is_uniform_by_kolmogorov_smirnov(transposed):
    npconv.manual_seed(1234)
    layer = (nn.ConvTranspose2d if transposed else nn.Conv2d)(16, 32, 3, dtype=np.float64)
    bound = 1 / math.sqrt(_fan_in(layer))
    weights = layer.weight.numpy().ravel()
    assert stats.kstest(weights, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > 0.01
    assert abs(weights.std() - bound / math.sqrt(3)) < 0.05 * bound
    # the weights are not uniform over a wider or narrower interval
    assert stats.kstest(weights, stats.uniform(loc=-2 * bound, scale=4 * bound).cdf).pvalue < 1e-6
    assert stats.kstest(weights, stats.uniform(loc=-bound / 2, scale=bound).cdf).pvalue < 1e-6


def test_complex_init_draws_both_parts_like_torch():
    npconv.manual_seed(0)
    layer = nn.Conv2d(8, 16, 3, dtype=np.complex128)
    bound = 1 / math.sqrt(_fan_in(layer))
    w = layer.weight.numpy()
    for part in (w.real, w.imag):
        assert np.abs(part).max() <= bound and part.std() > 0.4 * bound
    assert np.abs(layer.bias.numpy().imag).max() > 0


def test_manual_seed_makes_init_reproducible():
    npconv.manual_seed(7)
    a = nn.Conv2d(2, 3, 3)
    npconv.manual_seed(7)
    b = nn.Conv2d(2, 3, 3)
    c = nn.Conv2d(2, 3, 3)
    assert np.array_equal(a.weight.numpy(), b.weight.numpy())
    assert np.array_equal(a.bias.numpy(), b.bias.numpy())
    assert not np.array_equal(b.weight.numpy(), c.weight.numpy())


def test_init_functions_follow_torch_formulas(torch):
    from npconv.nn import init

    w = nn.Parameter(np.empty((8, 4, 3, 3), np.float64))
    assert init._calculate_fan_in_and_fan_out(w) == (36, 72)
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == torch.nn.init.calculate_gain("leaky_relu",
                                                                                           math.sqrt(5))
    for name in ("relu", "tanh", "linear", "conv2d", "sigmoid", "selu"):
        assert init.calculate_gain(name) == torch.nn.init.calculate_gain(name)
    init.kaiming_uniform_(w, a=0, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(2) * math.sqrt(3 / 72)
    init.uniform_(w, -0.1, 0.2)
    assert w.numpy().min() >= -0.1 and w.numpy().max() <= 0.2
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(nn.Parameter(np.empty(3)))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(w, mode="fan_avg")


# -- state dict ----------------------------------------------------------------------------------
def test_state_dict_keys_and_round_trip():
    ours, theirs = _nets()
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    assert all(isinstance(v, npconv.Tensor) and not v.requires_grad for v in state.values())
    other, _ = _nets()
    result = other.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in other.state_dict().items():
        assert np.array_equal(value, state[key])
    # loading Tensors works too, and values are copied (not aliased)
    other.load_state_dict({k: npconv.tensor(v) for k, v in theirs.state_dict().items()
                           for v in [v.detach().numpy()]})
    state_after = other.state_dict()
    for key, value in theirs.state_dict().items():
        assert np.array_equal(state_after[key], value.numpy())
    source = {k: np.array(v) for k, v in state.items()}
    other.load_state_dict(source)
    source["conv1.weight"][...] = 123
    assert not np.any(other.conv1.weight.numpy() == 123)


def test_load_state_dict_casts_to_the_parameter_dtype():
    layer = nn.Conv1d(2, 2, 3)
    layer.load_state_dict({"weight": np.ones((2, 2, 3)), "bias": np.zeros(2)})
    assert layer.weight.dtype == np.float32 and layer.weight.numpy().sum() == 12


def test_load_state_dict_errors_match_torch_and_change_nothing(torch):
    ours, theirs = nn.Conv2d(2, 4, 3), torch.nn.Conv2d(2, 4, 3)
    before = {k: np.array(v) for k, v in ours.state_dict().items()}
    bad = {"weight": np.zeros((4, 2, 3, 2), np.float32), "foo": np.zeros(1, np.float32)}
    with pytest.raises(RuntimeError) as ours_error:
        ours.load_state_dict(bad)
    with pytest.raises(RuntimeError) as theirs_error:
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in bad.items()})
    assert isinstance(ours_error.value, StateDictError) and isinstance(ours_error.value, ValueError)
    expected = str(theirs_error.value).replace("torch.Size([", "(").replace("])", ")")
    assert str(ours_error.value) == expected
    for message in ('Missing key(s) in state_dict: "bias"', 'Unexpected key(s) in state_dict: "foo"',
                    "size mismatch for weight"):
        assert message in str(ours_error.value)
    # good values next to a bad one: nothing is loaded
    partial = {"weight": np.ones((4, 2, 3, 3), np.float32), "bias": np.ones(5, np.float32)}
    with pytest.raises(StateDictError, match="size mismatch for bias"):
        ours.load_state_dict(partial)
    with pytest.raises(StateDictError, match="size mismatch for weight"):
        ours.load_state_dict({"weight": np.ones((4, 2, 3, 2), np.float32)}, strict=False)
    for key, value in ours.state_dict().items():
        assert np.array_equal(value, before[key]), key
    with pytest.raises(TypeError, match="dict-like"):
        ours.load_state_dict([("weight", np.ones(3))])


def test_non_strict_load_reports_missing_and_unexpected(torch):
    ours, theirs = nn.Conv2d(2, 4, 3), torch.nn.Conv2d(2, 4, 3)
    state = {"weight": np.ones((4, 2, 3, 3), np.float32), "extra": np.ones(1, np.float32)}
    result = ours.load_state_dict(state, strict=False)
    expected = theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert result.missing_keys == expected.missing_keys == ["bias"]
    assert result.unexpected_keys == expected.unexpected_keys == ["extra"]
    assert repr(result) == repr(expected)
    assert ours.weight.numpy().sum() == 72
    assert repr(ours.load_state_dict(ours.state_dict())) == "<All keys matched successfully>"


# -- pickling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CLASSES)
def test_pickle_round_trip(name):
    nd = int(name[-2])
    layer = getattr(nn, name)(2, 4, 2, stride=2, padding=1, groups=2, dtype=np.float64)
    restored = pickle.loads(pickle.dumps(layer))
    assert type(restored) is type(layer) and repr(restored) == repr(layer)
    assert isinstance(restored.weight, nn.Parameter) and restored.weight.requires_grad
    x = np.random.default_rng(0).standard_normal((1, 2) + (4,) * nd)
    np.testing.assert_array_equal(restored(x).numpy(), layer(x).numpy())
    restored(x).sum().backward()
    assert restored.weight.grad is not None and layer.weight.grad is None


def test_old_pickle_without_padding_mode_loads_as_zeros(torch):
    layer = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64)
    del layer.__dict__["padding_mode"]  # the state of a pickle from before padding_mode existed
    restored = pickle.loads(pickle.dumps(layer))
    assert restored.padding_mode == "zeros"
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4))
    expected = torch.nn.functional.conv2d(to_torch(x), to_torch(restored.weight.numpy()),
                                          to_torch(restored.bias.numpy()), padding=1)
    assert_close(restored(x), expected, np.float64)
    state = dict(nn.ConvTranspose1d(2, 2, 3).__dict__)
    del state["padding_mode"]
    fresh = nn.ConvTranspose1d.__new__(nn.ConvTranspose1d)
    fresh.__setstate__(state)
    assert fresh.padding_mode == "zeros" and fresh(np.zeros((1, 2, 3), np.float32)).shape == (1, 2, 5)


# -- traversal, modes and gradients -------------------------------------------------------------
def test_parameters_children_modules_match_torch():
    ours, theirs = _nets()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [type(m).__name__ for m in ours.children()] == [type(m).__name__ for m in theirs.children()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]
    assert [n for n, _ in ours.named_parameters(recurse=False)] == []
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())


def test_train_eval_propagate():
    ours, _ = _nets()
    assert ours.training and ours.inner.conv.training
    assert ours.eval() is ours
    assert not any(m.training for m in ours.modules())
    ours.train()
    assert all(m.training for m in ours.modules())


def test_zero_grad():
    layer = nn.Conv1d(2, 2, 2, dtype=np.float64)
    layer(np.ones((1, 2, 3))).sum().backward()
    assert layer.weight.grad is not None
    layer.zero_grad(set_to_none=False)
    assert layer.weight.grad is not None and not layer.weight.grad.numpy().any()
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_gradients_accumulate_across_calls_like_torch(torch):
    ours, theirs = nn.Conv1d(2, 3, 2, dtype=np.float64), torch.nn.Conv1d(2, 3, 2, dtype=torch.float64)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 2, 5))
    for _ in range(2):
        (ours(x) ** 2).sum().backward()
        (theirs(to_torch(x)) ** 2).sum().backward()
    assert_close(ours.weight.grad, theirs.weight.grad, np.float64)
    assert_close(ours.bias.grad, theirs.bias.grad, np.float64)


def test_parameter_assignment_rules():
    layer = nn.Conv1d(2, 2, 2)
    with pytest.raises(TypeError, match="cannot assign"):
        layer.weight = np.ones((2, 2, 2))
    layer.bias = None
    assert layer.bias is None and [n for n, _ in layer.named_parameters()] == ["weight"]
    assert "bias=False" in repr(layer)


# -- lazy modules ---------------------------------------------------------------------------------
LAZY = [("LazyConv1d", "Conv1d", 1, {}), ("LazyConv2d", "Conv2d", 2, dict(stride=2, padding=1)),
        ("LazyConv3d", "Conv3d", 3, dict(groups=2)), ("LazyConvTranspose1d", "ConvTranspose1d", 1, {}),
        ("LazyConvTranspose2d", "ConvTranspose2d", 2, dict(stride=2, output_padding=1)),
        ("LazyConvTranspose3d", "ConvTranspose3d", 3, dict(groups=2, bias=False))]


@pytest.mark.parametrize("case", LAZY, ids=lambda c: c[0])
def test_lazy_module_matches_torch(case, torch):
    lazy_name, name, nd, kwargs = case
    ours = getattr(nn, lazy_name)(4, 2, dtype=np.float64, **kwargs)
    theirs = getattr(torch.nn, lazy_name)(4, 2, dtype=torch.float64, **kwargs)
    assert ours.has_uninitialized_params() and ours.in_channels == 0
    x = np.random.default_rng(0).standard_normal((2, 6) + (4,) * nd)
    first = ours(x)
    theirs(to_torch(x))
    assert type(ours) is getattr(nn, name) and type(theirs).__name__ == name
    assert ours.in_channels == theirs.in_channels == 6
    assert ours.weight.shape == tuple(theirs.weight.shape) and first.shape == tuple(theirs(to_torch(x)).shape)
    assert np.abs(ours.weight.numpy()).max() <= 1 / math.sqrt(_fan_in(ours))  # initialised, not empty
    assert repr(ours) == repr(theirs)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x_ours, x_theirs = npconv.tensor(x, requires_grad=True), to_torch(x, requires_grad=True)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert_close(y_ours, y_theirs, np.float64)
    gy = np.random.default_rng(1).standard_normal(y_ours.shape)
    y_ours.backward(gy)
    y_theirs.backward(to_torch(gy))
    assert_close(x_ours.grad, x_theirs.grad, np.float64)
    assert_close(ours.weight.grad, theirs.weight.grad, np.float64)


def test_lazy_module_unbatched_input_and_load_before_forward(torch):
    ours = nn.LazyConv2d(3, 2, dtype=np.float64)
    assert ours(np.zeros((5, 4, 4))).shape == (3, 3, 3) and ours.in_channels == 5
    source = torch.nn.Conv2d(2, 3, 2, dtype=torch.float64)
    lazy = nn.LazyConv2d(3, 2, dtype=np.float64)
    lazy.load_state_dict({k: v.detach().numpy() for k, v in source.state_dict().items()})
    assert type(lazy) is nn.Conv2d and lazy.in_channels == 2  # npconv infers in_channels on load
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4))
    assert_close(lazy(x), source(to_torch(x)), np.float64)


def test_lazy_module_pickles_before_and_after_initialisation():
    lazy = nn.LazyConvTranspose1d(2, 3)
    restored = pickle.loads(pickle.dumps(lazy))
    assert restored.has_uninitialized_params() and repr(restored) == repr(lazy)
    assert restored(np.zeros((1, 4, 5), np.float32)).shape == (1, 2, 7)
    again = pickle.loads(pickle.dumps(restored))
    assert type(again) is nn.ConvTranspose1d and again.weight.shape == (4, 2, 3)


def test_float_double_half_leave_complex_parameters_complex_as_torch():
    torch = pytest.importorskip("torch")
    for cast, expected in (("float", "float32"), ("double", "float64"), ("half", "float16")):
        model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        model[0].to(npconv.complex64)
        values = model[0].weight.detach().numpy().copy()
        getattr(model, cast)()
        assert model[0].weight.dtype == npconv.complex64
        np.testing.assert_array_equal(model[0].weight.detach().numpy(), values)  # the imaginary parts kept
        assert str(model[1].weight.dtype) == f"torch.{expected}"
    theirs = torch.nn.Linear(2, 2).to(torch.complex64)
    assert theirs.float().weight.dtype == torch.complex64


@pytest.mark.parametrize("case", ["buffer over a parameter", "module over a parameter",
                                  "parameter over a buffer", "buffer over an attribute", "number as a buffer",
                                  "number over a buffer"])
def test_registrations_refuse_what_torch_refuses(case):
    torch = pytest.importorskip("torch")

    def run(lib):
        m = lib.nn.Linear(1, 1)
        if case == "buffer over a parameter":
            m.register_buffer("weight", lib.ones(1))
        elif case == "module over a parameter":
            m.add_module("weight", lib.nn.ReLU())
        elif case == "parameter over a buffer":
            m.register_buffer("b", lib.ones(1))
            m.register_parameter("b", lib.nn.Parameter(lib.ones(1)))
        elif case == "buffer over an attribute":
            m.x = 1
            m.register_buffer("x", lib.ones(1))
        elif case == "number as a buffer":
            m.register_buffer("a", 3)
        else:
            m.register_buffer("a", lib.ones(1))
            m.a = 3

    errors = []
    for lib in (torch, npconv):
        with pytest.raises((KeyError, TypeError)) as info:
            run(lib)
        errors.append(info.type)
    assert errors[0] is errors[1]
    m = nn.Linear(1, 1)  # re-registering a name of the same kind, and assignments that replace, still work
    m.register_buffer("a", npconv.ones(1))
    m.register_buffer("a", np.zeros(2))
    m.a = npconv.ones(3)
    m.weight = nn.Parameter(npconv.ones(1, 1))
    m.child = nn.ReLU()
    m.child = nn.Tanh()
    assert m.a.shape == (3,) and isinstance(m.child, nn.Tanh)
