"""Module's torch surface: hooks (forward, pre-forward, full backward against torch), state_dict
values as Tensors, get_parameter/get_buffer/set_submodule, to()/half()/cuda(), named traversals."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import nn


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _pair(torch, build):
    """The same model in torch and npconv (float64, torch's weights copied)."""
    torch.manual_seed(0)
    theirs = build(torch.nn).double()
    ours = build(nn).double()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _net(lib):
    return lib.Sequential(lib.Conv2d(3, 4, 3), lib.ReLU(), lib.Conv2d(4, 2, 3, bias=False))


def _numpy(value):
    if value is None:
        return None
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value.numpy())


# -- forward hooks --------------------------------------------------------------------------------
def test_forward_hooks_order_replacement_kwargs_and_removal():
    layer = nn.Linear(3, 2)
    calls = []
    h1 = layer.register_forward_pre_hook(lambda m, args: calls.append("pre1"))
    layer.register_forward_pre_hook(lambda m, args: calls.append("pre0"), prepend=True)
    layer.register_forward_pre_hook(lambda m, args, kwargs: (args, kwargs), with_kwargs=True)
    layer.register_forward_hook(lambda m, args, out: calls.append(("post", out.shape)))
    doubled = layer.register_forward_hook(lambda m, args, kwargs, out: out * 2, with_kwargs=True)
    x = npconv.tensor(np.ones((1, 3), np.float32))
    expected = 2 * (x.numpy() @ layer.weight.numpy().T + layer.bias.numpy())
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6)
    assert calls == ["pre0", "pre1", ("post", (1, 2))]
    h1.remove()
    doubled.remove()
    calls.clear()
    np.testing.assert_allclose(layer(x).numpy(), expected / 2, rtol=1e-6)
    assert calls == ["pre0", ("post", (1, 2))]
    with layer.register_forward_pre_hook(lambda m, args: (args[0] * 0,)):
        np.testing.assert_allclose(layer(x).numpy(), np.broadcast_to(layer.bias.numpy(), (1, 2)), rtol=1e-6)
    np.testing.assert_allclose(layer(x).numpy(), expected / 2, rtol=1e-6)


def test_always_call_hook_runs_when_forward_raises():
    layer = nn.Linear(3, 2)
    seen = []
    layer.register_forward_hook(lambda m, args, out: seen.append(out), always_call=True)
    with pytest.raises((ValueError, RuntimeError)):
        layer(npconv.tensor(np.ones((1, 4), np.float32)))
    assert seen == [None]
    with pytest.raises(TypeError, match="callable"):
        layer.register_forward_hook(3)
    with pytest.raises(RuntimeError, match="forward pre-hook must return"):
        layer.register_forward_pre_hook(lambda m, a, k: 1, with_kwargs=True)
        layer(npconv.tensor(np.ones((1, 3), np.float32)))


def test_forward_hooks_match_torch_feature_extraction(torch):
    ours, theirs = _pair(torch, _net)
    features = {}
    ours[1].register_forward_hook(lambda m, a, out: features.__setitem__("ours", out.numpy().copy()))
    theirs[1].register_forward_hook(lambda m, a, out: features.__setitem__("theirs", out.detach().numpy()))
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    ours(npconv.tensor(x))
    theirs(torch.from_numpy(x))
    np.testing.assert_allclose(features["ours"], features["theirs"], rtol=1e-12, atol=1e-12)


# -- full backward hooks --------------------------------------------------------------------------
class TwoInputs:
    """A module of two inputs, (x * w) + y, built in either library."""

    @staticmethod
    def build(lib):
        class Module(lib.Module):
            def __init__(self):
                super().__init__()
                self.w = lib.Parameter(lib_tensor(lib, np.array([1.5, -2.0, 0.5])))

            def forward(self, x, y):
                return x * self.w + y, x - y

        return Module()


def lib_tensor(lib, array):
    import torch as real_torch
    return real_torch.from_numpy(array.copy()) if lib is real_torch.nn else npconv.tensor(array)


@pytest.mark.parametrize("replace", [False, True])
def test_full_backward_hook_matches_torch(torch, replace):
    ours, theirs = _pair(torch, _net)
    records = {"ours": [], "theirs": []}

    def hook(key):
        def record(module, grad_input, grad_output):
            records[key].append(([_numpy(g) for g in grad_input], [_numpy(g) for g in grad_output]))
            if replace:
                return tuple(None if g is None else g * 3 for g in grad_input)
            return None
        return record

    ours[2].register_full_backward_hook(hook("ours"))
    theirs[2].register_full_backward_hook(hook("theirs"))
    ours[0].register_full_backward_hook(hook("ours"))
    theirs[0].register_full_backward_hook(hook("theirs"))
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    xo, xt = npconv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (ours(xo) ** 2).sum().backward()
    (theirs(xt) ** 2).sum().backward()
    assert len(records["ours"]) == len(records["theirs"]) == 2
    for (gi_o, go_o), (gi_t, go_t) in zip(records["ours"], records["theirs"], strict=True):
        for a, b in zip(gi_o + go_o, gi_t + go_t, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


def test_full_backward_hook_with_two_inputs_and_one_without_grad(torch):
    records = {}
    for key, lib in (("ours", nn), ("theirs", torch.nn)):
        module = TwoInputs.build(lib)
        module.register_full_backward_hook(lambda m, gi, go, key=key: records.__setitem__(
            key, ([_numpy(g) for g in gi], [_numpy(g) for g in go])))
        x = lib_tensor(lib, np.array([1.0, 2.0, 3.0])).requires_grad_()
        y = lib_tensor(lib, np.array([0.5, 0.5, 0.5]))
        a, b = module(x, y)
        (a * a).sum().backward()
    (gi_o, go_o), (gi_t, go_t) = records["ours"], records["theirs"]
    assert [g is None for g in gi_o] == [g is None for g in gi_t] == [False, False]  # torch routes y too
    assert [g is None for g in go_o] == [g is None for g in go_t]
    np.testing.assert_allclose(gi_o[0], gi_t[0])
    np.testing.assert_allclose(go_o[0], go_t[0])


def test_full_backward_hook_when_no_input_requires_grad(torch):
    records = {}
    for key, lib in (("ours", nn), ("theirs", torch.nn)):
        torch.manual_seed(0)
        layer = lib.Linear(3, 2).double()
        layer.register_full_backward_hook(
            lambda m, gi, go, key=key: records.__setitem__(key, (list(gi), [_numpy(g) for g in go])))
        x = lib_tensor(lib, np.ones((1, 3)))
        layer(x).sum().backward()
    assert records["ours"][0] == records["theirs"][0] == [None]
    np.testing.assert_allclose(records["ours"][1][0], records["theirs"][1][0])
    with pytest.raises(NotImplementedError, match="register_full_backward_hook"):
        nn.Linear(2, 2).register_backward_hook(lambda *a: None)


# -- state_dict values ------------------------------------------------------------------------------
def test_state_dict_values_are_tensors_sharing_memory(torch):
    ours, theirs = _pair(torch, lambda lib: lib.Sequential(lib.Conv2d(1, 2, 3), lib.BatchNorm2d(2)))
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    for key, value in state.items():
        assert isinstance(value, npconv.Tensor) and not value.requires_grad, key
        assert value.shape == tuple(theirs.state_dict()[key].shape)
        np.testing.assert_array_equal(value.numpy(), theirs.state_dict()[key].numpy())
        assert value.clone().numpy() is not value.numpy()
    state["0.weight"].numpy()[...] = 7.0  # like torch: the tensors share the parameters' memory
    assert (ours[0].weight.numpy() == 7.0).all()
    assert ours.state_dict(keep_vars=True)["0.weight"] is ours[0].weight
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).double()
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh[1].running_var.numpy(), ours[1].running_var.numpy())


# -- access, conversion and traversal ---------------------------------------------------------------
def test_get_parameter_buffer_submodule_like_torch(torch):
    ours, theirs = _pair(torch, lambda lib: lib.Sequential(lib.Conv2d(1, 2, 3), lib.BatchNorm2d(2)))
    assert ours.get_parameter("0.weight") is ours[0].weight
    assert ours.get_buffer("1.running_mean") is ours[1].running_mean
    for call in [lambda m: m.get_parameter("1.running_mean"), lambda m: m.get_parameter("0.nothing"),
                 lambda m: m.get_buffer("0.weight"), lambda m: m.get_submodule("5")]:
        with pytest.raises(AttributeError) as ours_error:
            call(ours)
        with pytest.raises(AttributeError) as torch_error:
            call(theirs)
        assert str(ours_error.value) == str(torch_error.value)
    replacement = nn.Identity()
    ours.set_submodule("1", replacement)
    assert ours[1] is replacement
    with pytest.raises(AttributeError):
        ours.set_submodule("9", nn.Identity(), strict=True)


def test_to_half_double_type_and_devices():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    weight = model[0].weight
    assert model.to("cpu") is model and model.to("cpu", np.float64) is model
    assert model[0].weight is weight and weight.numpy().dtype == np.float64
    assert model[1].num_batches_tracked.numpy().dtype == np.int64  # integer buffers keep their dtype
    model.half()
    assert weight.numpy().dtype == np.float16
    model.to(npconv.tensor(np.zeros(1, dtype=np.float32)))
    assert weight.numpy().dtype == np.float32
    model.to(device="cpu", dtype=np.float64, non_blocking=True)
    model.type(np.float32)
    assert weight.numpy().dtype == np.float32
    for call in [lambda: model.to("cuda"), lambda: model.cuda(), lambda: model.to("cpu:1")]:
        with pytest.raises(ValueError, match="CPU only"):
            call()
    with pytest.raises(TypeError, match="floating point or complex"):
        model.to(np.int32)
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.to(colour="red")


def test_named_traversals_match_torch(torch):
    def build(lib):
        shared = lib.Linear(2, 2)
        model = lib.Sequential(shared, lib.ReLU(), shared)
        model.extra = lib.Linear(2, 1)
        model.extra.weight = shared.weight
        return model

    ours, theirs = build(nn), build(torch.nn)
    for remove_duplicate in (True, False):
        assert [n for n, _ in ours.named_parameters(prefix="m", remove_duplicate=remove_duplicate)] == \
            [n for n, _ in theirs.named_parameters(prefix="m", remove_duplicate=remove_duplicate)]
        assert [n for n, _ in ours.named_modules(prefix="net", remove_duplicate=remove_duplicate)] == \
            [n for n, _ in theirs.named_modules(prefix="net", remove_duplicate=remove_duplicate)]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    order = []
    ours.apply(lambda m: order.append(type(m).__name__))
    torch_order = []
    theirs.apply(lambda m: torch_order.append(type(m).__name__))
    assert order == torch_order


def test_zero_grad_requires_grad_and_train_eval():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model(npconv.tensor(np.ones((1, 2), np.float32))).sum().backward()
    model.zero_grad(set_to_none=False)
    assert (model[0].weight.grad.numpy() == 0).all()
    model.zero_grad()
    assert model[0].weight.grad is None
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    assert model.eval() is model and not model[1].training
    assert model.share_memory() is model and model.compile() is None
