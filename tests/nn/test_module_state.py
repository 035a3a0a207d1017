"""A rejected ``load_state_dict`` changes nothing: modules, lazy modules and buffers stay bit-identical."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import npconv
from npconv import nn
from npconv.nn.modules.module import StateDictError


def _snapshot(module):
    return (type(module), {k: (type(v), v.numpy().copy(), v.numpy().dtype) for k, v in
                           module.state_dict(keep_vars=True).items()},
            [type(m) for m in module.modules()], copy.deepcopy(module.__dict__.get("in_channels")))


def _assert_same(module, snapshot):
    cls, values, classes, in_channels = snapshot
    assert type(module) is cls
    assert [type(m) for m in module.modules()] == classes
    now = module.state_dict(keep_vars=True)
    assert now.keys() == values.keys()
    for key, (kind, data, dtype) in values.items():
        assert type(now[key]) is kind, key
        assert now[key].numpy().dtype == dtype, key
        assert now[key].numpy().tobytes() == data.tobytes(), key
    assert module.__dict__.get("in_channels") == in_channels


def _model():
    npconv.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 1, 1, bias=True))


def _good(model):
    return {k: np.array(v.numpy()) + 1 for k, v in model.state_dict(keep_vars=True).items()}


BAD_VALUES = [
    ("3.bias", np.zeros(2), "size mismatch for 3.bias"),
    ("3.bias", np.array(["a"]), "expected a numeric"),
    ("3.bias", np.array([object()]), "expected a numeric"),
    ("3.bias", np.array([1 + 2j]), "complex"),
    ("3.bias", "text", "expected a numeric"),
    ("1.running_mean", np.zeros((3, 1)), "size mismatch for 1.running_mean"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_good_weights_and_one_bad_value_change_nothing(key, value, message):
    model = _model()
    before = _snapshot(model)
    state = _good(model)
    state[key] = value
    with pytest.raises(StateDictError, match=message) as info:
        model.load_state_dict(state)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)
    _assert_same(model, before)
    with pytest.raises(StateDictError):
        model.load_state_dict(state, strict=False)
    _assert_same(model, before)


def test_all_errors_are_listed_together_and_keys_first():
    model = _model()
    state = _good(model)
    state["0.weight"] = np.zeros(1)
    state["3.bias"] = np.array(["x"])
    state.pop("1.running_var")
    state["extra"] = np.zeros(1)
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(state)
    lines = str(info.value).split("\n\t")[1:]
    assert lines[0].startswith('Missing key(s) in state_dict: "1.running_var"')
    assert lines[1].startswith('Unexpected key(s) in state_dict: "extra"')
    assert "size mismatch for 0.weight" in lines[2] and "3.bias" in lines[3]


def test_good_state_dict_loads_from_tensors_arrays_and_casts():
    model = _model()
    state = _good(model)
    state["0.weight"] = npconv.tensor(state["0.weight"])
    state["3.bias"] = state["3.bias"].astype(np.float64)
    model.load_state_dict(state)
    assert model[3].bias.numpy().dtype == np.float32
    np.testing.assert_array_equal(model[0].weight.numpy(), np.asarray(state["0.weight"].numpy(), np.float32))


def test_torch_tensors_load(request):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Conv2d(2, 3, 3)
    ours = nn.Conv2d(2, 3, 3)
    ours.load_state_dict(theirs.state_dict())
    np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())


LAZY_BAD = [
    (lambda: nn.LazyConv2d(4, 3), {"weight": np.zeros(4), "bias": np.zeros(4)}),
    (lambda: nn.LazyConv2d(4, 3), {"weight": np.zeros((4, 2, 3, 2)), "bias": np.zeros(4)}),
    (lambda: nn.LazyConv2d(4, 3), {"weight": np.zeros((5, 2, 3, 3)), "bias": np.zeros(4)}),
    (lambda: nn.LazyConv2d(4, 3), {"weight": np.zeros((4, 0, 3, 3)), "bias": np.zeros(4)}),
    (lambda: nn.LazyConv2d(4, 3), {"weight": np.zeros((4, 2, 3, 3)), "bias": np.zeros(3)}),
    (lambda: nn.LazyConv2d(4, 3), {"weight": np.zeros((4, 2, 3, 3)), "bias": np.array(["a"] * 4)}),
    (lambda: nn.LazyConv1d(4, 3, groups=2), {"weight": np.zeros((3, 2, 3)), "bias": np.zeros(4)}),
    (lambda: nn.LazyConvTranspose2d(4, 3, groups=2), {"weight": np.zeros((3, 2, 3, 3)), "bias": np.zeros(4)}),
    (lambda: nn.LazyConvTranspose2d(4, 3, groups=2), {"weight": np.zeros((4, 4, 3, 3)), "bias": np.zeros(4)}),
    (lambda: nn.LazyConv3d(4, 3), {"weight": np.zeros((4, 1, 3, 3)), "bias": np.zeros(4)}),
]


@pytest.mark.parametrize(("make", "state"), LAZY_BAD)
def test_lazy_module_rejects_bad_shapes_and_stays_lazy(make, state):
    module = make()
    before = _snapshot(module)
    with pytest.raises(StateDictError, match="cannot materialize|cannot load"):
        module.load_state_dict(state)
    _assert_same(module, before)
    assert module.has_uninitialized_params()
    # still usable: a good checkpoint or a first forward materialises it
    nd = len(module.kernel_size)
    x = npconv.tensor(np.ones((1, 2) + (5,) * nd, dtype=np.float32))
    module(x)
    assert not isinstance(module.weight, nn.UninitializedParameter)
    assert not type(module).__name__.startswith("Lazy")


@pytest.mark.parametrize(("make", "weight_shape", "in_channels"), [
    (lambda: nn.LazyConv2d(4, 3, groups=2), (4, 3, 3, 3), 6),
    (lambda: nn.LazyConvTranspose1d(4, 3, groups=2), (6, 2, 3), 6),
])
def test_lazy_module_accepts_every_consistent_shape(make, weight_shape, in_channels):
    module = make()
    module.load_state_dict({"weight": np.ones(weight_shape), "bias": np.ones(4)})
    assert module.in_channels == in_channels and module.weight.shape == weight_shape
    assert not type(module).__name__.startswith("Lazy")


def test_non_mapping_is_a_type_error():
    model = _model()
    with pytest.raises(TypeError, match="dict-like"):
        model.load_state_dict([("0.weight", np.zeros(1))])
