"""Sequential, ModuleList and ModuleDict: torch's naming, indexing, state dicts and repr."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import npconv
import npconv.nn as nn
from torch_oracle import assert_close, to_torch


def _small_cnn(m):
    return m.Sequential(
        m.Conv2d(1, 4, 3, padding=1),
        m.BatchNorm2d(4),
        m.ReLU(),
        m.MaxPool2d(2),
        m.Conv2d(4, 6, 3),
        m.GELU(),
        m.AdaptiveAvgPool2d(1),
        m.Flatten(),
        m.Dropout(0.2),
        m.Linear(6, 3),
        m.LogSoftmax(dim=1),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sequential_cnn_trains_like_torch(dtype, torch):
    tnn = torch.nn
    ours, theirs = _small_cnn(nn).to(dtype), _small_cnn(tnn).to(getattr(torch, np.dtype(dtype).name))
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.eval()  # dropout off: its random mask is the only thing that cannot match
    theirs.eval()
    ours[1].train()  # batch statistics and running-stat updates in the graph
    theirs[1].train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 8, 8)).astype(dtype)
    target = rng.integers(0, 3, 4)
    xn, xt = npconv.Tensor(x, requires_grad=True), to_torch(x, True)
    loss = nn.NLLLoss()(ours(xn), target)
    loss_t = tnn.NLLLoss()(theirs(xt), torch.from_numpy(target))
    assert_close(loss, loss_t, what="loss")
    loss.backward()
    loss_t.backward()
    assert_close(xn.grad, xt.grad, what="grad input")
    params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, params[name].grad, what=f"grad {name}")
    buffers = theirs.state_dict()
    for name, value in ours.state_dict().items():
        if value.dtype.kind == "f":
            assert_close(value, buffers[name], dtype=dtype, what=name)


def test_sequential_indexing_matches_torch(torch):
    tnn = torch.nn
    def named(m):
        return m.Sequential(OrderedDict([("a", m.ReLU()), ("b", m.Tanh()), ("c", m.Sigmoid())]))

    assert repr(named(nn)) == repr(named(tnn))
    assert repr(named(nn)[1:]) == repr(named(tnn)[1:])
    assert type(named(nn)[1]) is nn.Tanh and type(named(nn)[-1]) is nn.Sigmoid

    def build(m):
        return m.Sequential(m.ReLU(), m.Tanh(), m.Sigmoid())

    ours, theirs = build(nn), build(tnn)
    ours.append(nn.Identity())
    theirs.append(tnn.Identity())
    ours.insert(0, nn.GELU())
    theirs.insert(0, tnn.GELU())
    del ours[2]
    del theirs[2]
    assert repr(ours) == repr(theirs)
    assert repr(ours + nn.Sequential(nn.ReLU())) == repr(theirs + tnn.Sequential(tnn.ReLU()))
    assert len(ours) == len(theirs) == 4
    assert type(ours.pop(0)) is nn.GELU and len(ours) == 3
    with pytest.raises(IndexError, match="out of range"):
        ours[5]
    with pytest.raises(ValueError, match="only objects of Sequential class"):
        ours + nn.ReLU()


def test_module_list_matches_torch(torch):
    tnn = torch.nn
    def build(m):
        return m.ModuleList([m.Linear(2, 2) for _ in range(3)] + [m.ReLU(), m.Linear(2, 2)])

    ours, theirs = build(nn), build(tnn)
    assert repr(ours) == repr(theirs)  # runs of identical layers collapse: "(0-2): 3 x Linear(...)"
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.insert(1, nn.Tanh())
    theirs.insert(1, tnn.Tanh())
    del ours[-1]
    del theirs[-1]
    ours += [nn.Sigmoid()]
    theirs += [tnn.Sigmoid()]
    assert repr(ours) == repr(theirs)
    assert repr(ours[::2]) == repr(theirs[::2])
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert repr(nn.ModuleList()) == repr(tnn.ModuleList())
    with pytest.raises(TypeError, match="iterable"):
        nn.ModuleList(nn.ReLU())


def test_module_dict_matches_torch(torch):
    tnn = torch.nn
    def build(m):
        return m.ModuleDict({"conv": m.Conv1d(1, 2, 3), "act": m.ReLU()})

    ours, theirs = build(nn), build(tnn)
    assert repr(ours) == repr(theirs)
    ours.update([("pool", nn.MaxPool1d(2))])
    theirs.update([("pool", tnn.MaxPool1d(2))])
    ours["norm"] = nn.BatchNorm1d(2)
    theirs["norm"] = tnn.BatchNorm1d(2)
    assert type(ours.pop("act")) is nn.ReLU
    theirs.pop("act")
    assert repr(ours) == repr(theirs)
    assert list(ours.keys()) == list(theirs.keys()) and "conv" in ours and len(ours) == 3
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with pytest.raises(ValueError, match="key/value pair"):
        ours.update([("x",)])


def test_train_eval_reaches_every_child():
    model = nn.Sequential(
        nn.ModuleList([nn.Dropout(), nn.BatchNorm1d(2)]), nn.ModuleDict({"d": nn.Dropout()})
    )
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_sequential_passes_over_plain_identity_modules_but_runs_hooked_ones(monkeypatch):
    """A plain ``Identity`` in a Sequential (what optimize_for_inference leaves for each fused module)
    is not called: its input goes on as it is. An Identity with a hook, or a subclass, is called."""
    calls: list[str] = []
    real = nn.Identity.forward
    monkeypatch.setattr(nn.Identity, "forward",
                        lambda self, input: (calls.append("identity"), real(self, input))[1])

    class Marked(nn.Identity):
        def forward(self, input):
            calls.append("subclass")
            return input * 2

    x = npconv.tensor(np.arange(6.0).reshape(2, 3))
    seq = nn.Sequential(nn.Identity(), nn.ReLU(), nn.Identity())
    y = seq(x)
    assert calls == [] and np.array_equal(y.numpy(), np.arange(6.0).reshape(2, 3))
    hooked = nn.Identity()
    seen = []
    hooked.register_forward_hook(lambda module, args, output: seen.append(output))
    y = nn.Sequential(hooked, Marked())(x)
    assert calls == ["identity", "subclass"] and len(seen) == 1 and seen[0] is x
    assert np.array_equal(y.numpy(), 2 * np.arange(6.0).reshape(2, 3))
    assert nn.Sequential(nn.Identity())(x) is x


def test_a_model_with_a_shared_module_loads_its_own_and_torchs_state_dict():
    """A module used at two places is saved under both names (torch's state_dict) and each name is
    expected when loading, the later one's values winning, as in torch."""
    torch = pytest.importorskip("torch")
    for lib in (npconv, torch):
        c = lib.nn.Conv2d(2, 2, 1)
        model = lib.nn.Sequential(c, lib.nn.ReLU(), c)
        state = model.state_dict()
        assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert str(model.load_state_dict(state)) == "<All keys matched successfully>"
        partial = {k: v for k, v in state.items() if k.startswith("0.")}
        result = model.load_state_dict(partial, strict=False)
        assert sorted(result.missing_keys) == ["2.bias", "2.weight"] and result.unexpected_keys == []
    ours = npconv.nn.Sequential(c := npconv.nn.Conv2d(2, 2, 1), npconv.nn.ReLU(), c)
    theirs = torch.nn.Sequential(t := torch.nn.Conv2d(2, 2, 1), torch.nn.ReLU(), t)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(ours[0].weight.detach().numpy(), t.weight.detach().numpy())
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(npconv.tensor(x)).detach().numpy(), expected, rtol=1e-6, atol=1e-6)
