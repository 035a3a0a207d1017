"""swa_utils against torch: EMA and SWA averages, buffers, update_bn and the SWALR schedule."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import npconv
from npconv import nn, optim
from npconv.optim import swa_utils


def _models(torch):
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(8, 1)).double()
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 1)).double()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("kind", ["swa", "ema", "ema_fn", "swa_fn", "ema_buffers"])
def test_averaged_model_matches_torch(kind):
    torch = pytest.importorskip("torch")
    ours, theirs = _models(torch)
    make = {"swa": dict(), "ema": dict(multi_avg_fn="get_ema_multi_avg_fn"),
            "ema_fn": dict(avg_fn="get_ema_avg_fn"), "swa_fn": dict(avg_fn="get_swa_avg_fn"),
            "ema_buffers": dict(multi_avg_fn="get_ema_multi_avg_fn")}[kind]

    def build(module, lib, model):
        kwargs = {key: (getattr(module, name)(0.9) if "ema" in name else getattr(module, name)())
                  for key, name in make.items()}
        return lib(model, use_buffers=kind == "ema_buffers", **kwargs)

    our_avg = build(swa_utils, swa_utils.AveragedModel, ours)
    torch_avg = build(torch.optim.swa_utils, torch.optim.swa_utils.AveragedModel, theirs)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.standard_normal((3, 1, 4, 4))
        ours(npconv.tensor(x))  # training-mode forward: updates the BatchNorm statistics
        theirs(torch.from_numpy(x))
        with torch.no_grad():
            for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
                delta = rng.standard_normal(p.shape)
                p.numpy()[...] += delta
                q += torch.from_numpy(delta)
        our_avg.update_parameters(ours)
        torch_avg.update_parameters(theirs)
    mine, reference = our_avg.state_dict(), torch_avg.state_dict()
    assert list(mine) == list(reference)
    for key, value in reference.items():
        np.testing.assert_allclose(mine[key].numpy(), value.numpy(), rtol=1e-12, atol=1e-12, err_msg=key)


def test_update_bn_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _models(torch)
    data = [np.random.default_rng(i).standard_normal((4, 1, 4, 4)) for i in range(3)]
    swa_utils.update_bn([(npconv.tensor(x), 0) for x in data], ours)
    torch.optim.swa_utils.update_bn([(torch.from_numpy(x), 0) for x in data], theirs)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key].numpy(), value.numpy(), rtol=1e-12, err_msg=key)
    assert ours[1].momentum == theirs[1].momentum == 0.1 and ours.training


@pytest.mark.parametrize("kwargs", [dict(swa_lr=0.05), dict(swa_lr=[0.01, 0.2], anneal_epochs=3,
                                                             anneal_strategy="linear"),
                                    dict(swa_lr=0.02, anneal_epochs=0)])
def test_swalr_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    ours = optim.SGD([{"params": [nn.Parameter(np.zeros(1))], "lr": lr} for lr in (0.1, 0.5)], lr=1.0)
    theirs = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr}
                              for lr in (0.1, 0.5)], lr=1.0)
    our_sched, torch_sched = swa_utils.SWALR(ours, **kwargs), torch.optim.swa_utils.SWALR(theirs, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(15):
            assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12)
            our_sched.step()
            torch_sched.step()
    assert set(our_sched.state_dict()) == set(torch_sched.state_dict())
    resumed = swa_utils.SWALR(optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0), swa_lr=0.3)
    with pytest.raises(ValueError):
        resumed.load_state_dict(copy.deepcopy({**our_sched.state_dict(), "junk": 1}))


def test_errors():
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="Only one"):
        swa_utils.AveragedModel(model, avg_fn=swa_utils.get_swa_avg_fn(),
                                multi_avg_fn=swa_utils.get_swa_multi_avg_fn())
    with pytest.raises(ValueError, match="decay"):
        swa_utils.get_ema_multi_avg_fn(1.5)
    average = swa_utils.AveragedModel(model)
    with pytest.raises(ValueError, match="do not match"):
        average.update_parameters(nn.Linear(3, 1))
    assert int(average.n_averaged.numpy()) == 0
    with pytest.raises(ValueError, match="anneal_strategy"):
        swa_utils.SWALR(optim.SGD(model.parameters(), lr=0.1), swa_lr=0.1, anneal_strategy="exp")
