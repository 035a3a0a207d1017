"""LBFGS against torch's on a small least-squares problem (both step rules, float64 and float32)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import npconv
from npconv import optim
from npconv.nn import Parameter

TOLERANCE = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=1e-4, atol=1e-5)}


def _problem(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, 5)).astype(dtype)
    b = rng.standard_normal((12, 2)).astype(dtype)
    w0 = rng.standard_normal((5, 2)).astype(dtype)
    c0 = rng.standard_normal(2).astype(dtype)
    return a, b, w0, c0


def _closure(lib, opt, params, a, b):
    w, c = params
    if lib == "torch":
        import torch
        b = torch.from_numpy(b)
    else:
        b = npconv.tensor(b)

    def closure():
        opt.zero_grad()
        residual = lib_matmul(lib, a, w) + c - b
        loss = (residual * residual).sum() + 0.1 * (w * w * w * w).sum()
        loss.backward()
        return loss

    return closure


def lib_matmul(lib, a, w):
    if lib == "torch":
        import torch
        return torch.from_numpy(a) @ w
    return npconv.tensor(a) @ w


KWARGS = [dict(), dict(line_search_fn="strong_wolfe"), dict(lr=0.5, max_iter=4, history_size=3),
          dict(line_search_fn="strong_wolfe", max_iter=7, history_size=2)]


@pytest.mark.parametrize("kwargs", KWARGS)
def test_lbfgs_float32_short_run_matches_torch_and_long_run_reaches_torch_float64(kwargs):
    """float32 rounding (dot-product order) changes L-BFGS' stopping decisions after a few
    iterations in torch too: compare the first iterations with torch float32, and where the run
    ends with torch float64."""
    torch = pytest.importorskip("torch")
    a, b, w0, c0 = _problem(np.float32)
    ours = [Parameter(w0.copy()), Parameter(c0.copy())]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in (w0, c0)]
    short = dict(kwargs, max_iter=3)
    our_opt, torch_opt = optim.LBFGS(ours, **short), torch.optim.LBFGS(theirs, **short)
    our_opt.step(_closure("npconv", our_opt, ours, a, b))
    torch_opt.step(_closure("torch", torch_opt, theirs, a, b))
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-4, atol=2e-5)
    a64, b64, w64, c64 = _problem(np.float64)
    ours = [Parameter(w0.copy()), Parameter(c0.copy())]
    reference = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in (w64, c64)]
    our_opt, torch_opt = optim.LBFGS(ours, **kwargs), torch.optim.LBFGS(reference, **kwargs)
    for _ in range(6):
        our_opt.step(_closure("npconv", our_opt, ours, a, b))
        torch_opt.step(_closure("torch", torch_opt, reference, a64, b64))
    for p, q in zip(ours, reference, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("dtype", [np.float64])
@pytest.mark.parametrize("kwargs", KWARGS)
def test_lbfgs_matches_torch(kwargs, dtype):
    torch = pytest.importorskip("torch")
    a, b, w0, c0 = _problem(dtype)
    ours = [Parameter(w0.copy()), Parameter(c0.copy())]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in (w0, c0)]
    our_opt, torch_opt = optim.LBFGS(ours, **kwargs), torch.optim.LBFGS(theirs, **kwargs)
    for _ in range(3):
        our_loss = our_opt.step(_closure("npconv", our_opt, ours, a, b))
        torch_loss = torch_opt.step(_closure("torch", torch_opt, theirs, a, b))
        np.testing.assert_allclose(float(our_loss), float(torch_loss), **TOLERANCE[dtype])
        for p, q in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), **TOLERANCE[dtype])
    ours_state = our_opt.state_dict()["state"][0]
    theirs_state = torch_opt.state_dict()["state"][0]
    assert ours_state.keys() == theirs_state.keys()
    assert ours_state["func_evals"] == theirs_state["func_evals"]
    assert ours_state["n_iter"] == theirs_state["n_iter"]
    # resume from torch's state: the next step matches
    resumed = [Parameter(q.detach().numpy().copy()) for q in theirs]
    resumed_opt = optim.LBFGS(resumed, **kwargs)
    resumed_opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    resumed_opt.step(_closure("npconv", resumed_opt, resumed, a, b))
    torch_opt.step(_closure("torch", torch_opt, theirs, a, b))
    for p, q in zip(resumed, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), **TOLERANCE[dtype])


def test_lbfgs_errors_and_a_raising_closure_changes_nothing():
    p = Parameter(np.ones(3))
    with pytest.raises(ValueError, match="line_search_fn"):
        optim.LBFGS([p], line_search_fn="armijo")
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [p]}, {"params": [Parameter(np.ones(1))]}])
    with pytest.raises(ValueError, match="max_iter"):
        optim.LBFGS([p], max_iter=0)
    opt = optim.LBFGS([p], max_iter=5)
    with pytest.raises(TypeError, match="closure"):
        opt.step(None)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("diverged")
        opt.zero_grad()
        loss = ((p - 2.0) ** 2).sum()
        loss.backward()
        return loss

    with pytest.raises(FloatingPointError):
        opt.step(closure)
    np.testing.assert_array_equal(p.numpy(), 1.0)
    assert not opt.state[p]
    good = {"state": {0: {"func_evals": 1, "n_iter": 1, "d": np.zeros(3)}},
            "param_groups": opt.state_dict()["param_groups"]}
    for bad in [{**good, "state": {0: {"d": np.zeros(4)}}}, {**good, "state": {0: {"old_dirs": np.zeros(3)}}},
                {**good, "state": {0: {"junk": 1}}}]:
        with pytest.raises((TypeError, ValueError)):
            opt.load_state_dict(bad)
        assert not opt.state[p]
    opt.load_state_dict(good)
