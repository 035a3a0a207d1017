"""nn.utils (gradient clipping, vector conversion, conv-BN fusion, weight_norm / spectral_norm
parametrizations) and ParameterList / ParameterDict against torch."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn as nn
from torch_oracle import close, torch_module


def _copy_into(ours, theirs):
    """Load torch's state into ours through the shared state-dict keys."""
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})


def _grads(seed, shapes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) * 3 for s in shapes]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf"), "inf", 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = torch_module()
    shapes = [(3, 4), (5,), (2, 2, 2)]
    grads = _grads(0, shapes)
    ours = [npconv.Tensor(np.zeros(s), requires_grad=True) for s in shapes]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for o, t, g in zip(ours, theirs, grads, strict=True):
        o.grad, t.grad = npconv.Tensor(g.copy()), torch.from_numpy(g.copy())
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    close(total, expected, "total norm")
    for o, t in zip(ours, theirs, strict=True):
        close(o.grad, t.grad, "clipped grad")


def test_clip_grad_norm_edge_cases():
    p = npconv.Tensor(np.zeros(3), requires_grad=True)
    assert float(nn.utils.clip_grad_norm_([p], 1.0).numpy()) == 0.0  # no gradients at all
    p.grad = npconv.Tensor(np.array([np.inf, 1.0, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad.numpy(), [np.inf, 1.0, 0.0])  # a rejected call changes nothing
    with pytest.raises(TypeError):
        nn.utils.clip_grad_norm_([p], "1")


def test_clip_grad_value_matches_torch():
    torch = torch_module()
    g = _grads(1, [(4, 5)])[0]
    o = npconv.Tensor(np.zeros((4, 5)), requires_grad=True)
    t = torch.zeros((4, 5), dtype=torch.float64, requires_grad=True)
    o.grad, t.grad = npconv.Tensor(g.copy()), torch.from_numpy(g.copy())
    nn.utils.clip_grad_value_([o], 0.7)
    torch.nn.utils.clip_grad_value_([t], 0.7)
    close(o.grad, t.grad)


def test_parameters_to_vector_round_trip_and_gradient():
    torch = torch_module()
    ours, theirs = nn.Linear(3, 2, dtype=np.float64), torch.nn.Linear(3, 2, dtype=torch.float64)
    _copy_into(ours, theirs)
    v, vt = (
        nn.utils.parameters_to_vector(ours.parameters()),
        torch.nn.utils.parameters_to_vector(theirs.parameters()),
    )
    close(v, vt)
    weights = np.arange(8.0)
    (v * npconv.Tensor(weights)).sum().backward()
    (vt * torch.from_numpy(weights)).sum().backward()
    close(ours.weight.grad, theirs.weight.grad)
    close(ours.bias.grad, theirs.bias.grad)
    nn.utils.vector_to_parameters(npconv.Tensor(-weights), ours.parameters())
    torch.nn.utils.vector_to_parameters(torch.from_numpy(-weights), theirs.parameters())
    close(ours.weight, theirs.weight.detach())
    close(ours.bias, theirs.bias.detach())
    with pytest.raises(TypeError):
        nn.utils.vector_to_parameters(np.zeros(8), ours.parameters())
    with pytest.raises(ValueError):
        nn.utils.vector_to_parameters(npconv.Tensor(np.zeros(7)), ours.parameters())


@pytest.mark.parametrize("transpose", [False, True])
def test_fuse_conv_bn_eval_matches_torch_and_the_unfused_pair(transpose):
    torch = torch_module()
    conv_cls = "ConvTranspose2d" if transpose else "Conv2d"
    conv, tconv = (
        getattr(nn, conv_cls)(3, 4, 3, dtype=np.float64),
        getattr(torch.nn, conv_cls)(3, 4, 3, dtype=torch.float64),
    )
    bn, tbn = nn.BatchNorm2d(4, dtype=np.float64), torch.nn.BatchNorm2d(4, dtype=torch.float64)
    with torch.no_grad():
        tbn.running_mean.uniform_(-1, 1), tbn.running_var.uniform_(0.5, 2), tbn.weight.uniform_(0.5, 2)
        tbn.bias.uniform_(-1, 1)
    _copy_into(conv, tconv)
    _copy_into(bn, tbn)
    for m in (conv, bn, tconv, tbn):
        m.eval()
    fused = nn.utils.fuse_conv_bn_eval(conv, bn, transpose=transpose)
    tfused = torch.nn.utils.fuse_conv_bn_eval(tconv, tbn, transpose=transpose)
    close(fused.weight, tfused.weight.detach())
    close(fused.bias, tfused.bias.detach())
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6))
    np.testing.assert_allclose(
        fused(npconv.tensor(x)).numpy(), bn(conv(npconv.tensor(x))).numpy(), rtol=1e-10, atol=1e-10
    )
    with pytest.raises(ValueError, match="eval"):
        nn.utils.fuse_conv_bn_eval(conv.train(), bn)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_copies_share_nothing_with_the_originals(bias):
    """fuse_conv_bn_eval / fuse_linear_bn_eval return copies: new weight and bias Parameters, the
    originals' values and the rest of their state unchanged, no array shared."""
    rng = np.random.default_rng(0)
    for layer, bn in ((nn.Conv2d(3, 4, 3, bias=bias), nn.BatchNorm2d(4)), (nn.Linear(5, 4, bias=bias),
                                                                         nn.BatchNorm1d(4))):
        bn.running_mean.numpy()[...] = rng.standard_normal(4)
        layer.eval(), bn.eval()
        before = {k: v.numpy().copy() for k, v in layer.state_dict().items()}
        fuse = nn.utils.fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else nn.utils.fuse_linear_bn_eval
        fused = fuse(layer, bn)
        assert fused is not layer and fused.weight is not layer.weight and fused.bias is not layer.bias
        assert (layer.bias is None) is (not bias)
        fused.weight.numpy()[...] = 7.0
        fused.bias.numpy()[...] = 7.0
        for k, v in layer.state_dict().items():
            np.testing.assert_array_equal(v.numpy(), before[k])
        assert not any(np.shares_memory(a.numpy(), b.numpy()) for a in fused.parameters()
                       for b in layer.parameters())


@pytest.mark.parametrize("dim", [0, 1, None, -1])
def test_weight_norm_matches_torch(dim):
    torch = torch_module()
    ours = nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3, dtype=np.float64), dim=dim)
    theirs = torch.nn.utils.parametrizations.weight_norm(
        torch.nn.Conv2d(3, 4, 3, dtype=torch.float64), dim=dim
    )
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    _copy_into(ours, theirs)
    close(ours.weight, theirs.weight.detach(), "parametrized weight")
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 5))
    y, yt = ours(npconv.tensor(x)), theirs(torch.from_numpy(x))
    close(y, yt)
    g = np.random.default_rng(4).standard_normal(y.shape)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, tparams[name].grad, f"grad {name}")


def test_weight_norm_at_registration_keeps_the_weight_and_g_is_its_norm():
    layer = nn.Linear(4, 3, dtype=np.float64)
    before = layer.weight.numpy().copy()
    nn.utils.parametrizations.weight_norm(layer)
    np.testing.assert_allclose(layer.weight.numpy(), before, rtol=1e-12)
    np.testing.assert_allclose(
        layer.parametrizations.weight.original0.numpy()[:, 0], np.linalg.norm(before, axis=1)
    )


@pytest.mark.parametrize(
    ("cls", "args"), [("Linear", (5, 4)), ("Conv2d", (3, 4, 3)), ("ConvTranspose2d", (3, 4, 3))]
)
def test_spectral_norm_matches_torch(cls, args):
    torch = torch_module()
    ours = nn.utils.parametrizations.spectral_norm(getattr(nn, cls)(*args, dtype=np.float64))
    theirs = torch.nn.utils.parametrizations.spectral_norm(getattr(torch.nn, cls)(*args, dtype=torch.float64))
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    _copy_into(ours, theirs)  # the same u, v: the power iterations then agree
    shape = (2, args[0]) if cls == "Linear" else (2, 3, 6, 6)
    x = np.random.default_rng(5).standard_normal(shape)
    for training in (True, True, False):
        ours.train(training), theirs.train(training)
        y, yt = ours(npconv.tensor(x)), theirs(torch.from_numpy(x))
        close(y, yt)
        for key, value in theirs.state_dict().items():
            close(ours.state_dict()[key], value, key)
    g = np.random.default_rng(6).standard_normal(y.shape)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, tparams[name].grad, f"grad {name}")
    w = ours.weight.numpy()
    matrix = (
        np.moveaxis(w, 1, 0).reshape(w.shape[1], -1) if cls.startswith("ConvT") else w.reshape(w.shape[0], -1)
    )
    sigma = np.linalg.svd(matrix, compute_uv=False)[0]
    assert abs(sigma - 1) < 0.1  # the normalised weight's largest singular value is ~1


def test_remove_parametrizations_restores_a_plain_module():
    torch = torch_module()
    ours = nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    theirs = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 2))
    _copy_into(ours, theirs)
    nn.utils.parametrize.remove_parametrizations(ours, "weight")
    torch.nn.utils.parametrize.remove_parametrizations(theirs, "weight")
    assert type(ours) is nn.Linear
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    close(ours.weight, theirs.weight.detach())
    assert not nn.utils.parametrize.is_parametrized(ours)


def test_register_parametrization_with_a_custom_module_and_assignment():
    class Symmetric(nn.Module):
        def forward(self, x):
            return (x + x.T) * 0.5

    layer = nn.Linear(3, 3, dtype=np.float64)
    nn.utils.parametrize.register_parametrization(layer, "weight", Symmetric())
    w = layer.weight.numpy()
    np.testing.assert_allclose(w, w.T)
    assert list(layer.state_dict()) == ["bias", "parametrizations.weight.original"]
    layer.weight = np.eye(3)  # right_inverse is the identity: the original becomes the value
    np.testing.assert_array_equal(layer.parametrizations.weight.original.numpy(), np.eye(3))
    with pytest.raises(ValueError):
        nn.utils.parametrize.register_parametrization(layer, "missing", Symmetric())


def test_parameter_list_and_dict_match_torch():
    torch = torch_module()
    ours = nn.ParameterList([nn.Parameter(np.zeros((2, 3), np.float32)), np.zeros(4)])
    theirs = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.zeros(2, 3)), torch.zeros(4, dtype=torch.float64)]
    )
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert isinstance(ours[1], nn.Parameter) and len(ours) == 2
    ours.append(np.ones(1, np.float32))
    theirs.append(torch.ones(1))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["0", "1", "2"]
    assert len(ours[1:]) == 2
    assert repr(nn.ParameterList()) == repr(torch.nn.ParameterList())
    d = nn.ParameterDict({"b": np.zeros(2, np.float32), "a": nn.Parameter(np.zeros((2, 3)))})
    td = torch.nn.ParameterDict(
        {"b": torch.zeros(2), "a": torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))}
    )
    assert repr(d) == repr(td)
    assert list(d.state_dict()) == list(td.state_dict())
    assert "a" in d and list(d.keys()) == list(td.keys())
    d["c"] = np.ones(3, np.float32)
    assert d.pop("c").shape == (3,) and "c" not in d
    model = nn.Module()
    model.params = d
    assert [k for k, _ in model.named_parameters()] == ["params.a", "params.b"]
    with pytest.raises(TypeError):
        ours.extend(np.zeros(3))
    with pytest.raises(TypeError):
        ours(1)
