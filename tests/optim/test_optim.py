"""Optimizers and schedulers against torch's, step by step on the same parameters and gradients."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.nn import Parameter
from npconv.optim import SGD, Adam, AdamW
from npconv.optim.lr_scheduler import CosineAnnealingLR, StepLR
from torch_oracle import assert_close, torch_module

SHAPES = [(3, 2, 2, 2), (3,), (4, 5)]
TORCH_ONLY_KEYS = {"differentiable", "fused", "capturable", "foreach"}  # foreach: False passed to torch


def make_params(dtype, rng, shapes=SHAPES):
    torch = torch_module()
    values = []
    for shape in shapes:
        v = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            v = v + 1j * rng.standard_normal(shape)
        values.append(v.astype(dtype))
    ours = [Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    return ours, theirs


def gradients(params, steps, rng, skip=None):
    """A fixed gradient sequence; ``skip=(step, index)`` leaves one parameter without a gradient."""
    out = []
    for step in range(steps):
        grads = []
        for index, p in enumerate(params):
            if skip == (step, index):
                grads.append(None)
                continue
            g = rng.standard_normal(p.shape)
            if p.dtype.kind == "c":
                g = g + 1j * rng.standard_normal(p.shape)
            grads.append(g.astype(p.dtype))
        out.append(grads)
    return out


def run_steps(ours, theirs, our_opt, torch_opt, grads, our_params=None):
    torch = torch_module()
    for step_grads in grads:
        for p, q, g in zip(ours, theirs, step_grads, strict=True):
            p.grad = None if g is None else npconv.Tensor(g.copy())
            q.grad = None if g is None else torch.from_numpy(g.copy())
        our_opt.step()
        torch_opt.step()
    dtype = ours[0].numpy().dtype
    for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(p.numpy(), q, dtype, what=f"param {i}")
        for key, value in torch_opt.state[q].items():
            assert_close(our_opt.state[p][key], value, dtype if key != "step" else np.float32,
                         what=f"state {key} of param {i}")


# (npconv optimizer, its arguments, name of torch's optimizer in torch.optim)
CONFIGS = [
    (SGD, dict(lr=0.1), "SGD"),
    (SGD, dict(lr=0.1, momentum=0.9), "SGD"),
    (SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01), "SGD"),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True), "SGD"),
    (Adam, dict(lr=0.01), "Adam"),
    (Adam, dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), "Adam"),
    (Adam, dict(lr=0.01, amsgrad=True, maximize=True), "Adam"),
    (Adam, dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True), "Adam"),
    (AdamW, dict(lr=0.01), "AdamW"),
    (AdamW, dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.2, amsgrad=True), "AdamW"),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("ours_cls", "kwargs", "torch_cls"), CONFIGS,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CONFIGS)])
def test_steps_match_torch(ours_cls, kwargs, torch_cls, dtype, torch):
    rng = np.random.default_rng(0)
    ours, theirs = make_params(dtype, rng)
    our_opt = ours_cls(ours, **kwargs)
    torch_opt = getattr(torch.optim, torch_cls)(theirs, foreach=False, **kwargs)
    # parameter 1 gets no gradient at step 2: both optimizers must skip it (state untouched)
    run_steps(ours, theirs, our_opt, torch_opt, gradients(ours, 6, rng, skip=(2, 1)))


@pytest.mark.parametrize(("ours_cls", "kwargs", "torch_cls"), [
    (SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1), "SGD"),
    (Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True), "Adam"),
    (AdamW, dict(lr=0.01), "AdamW"),
])
def test_complex_parameters_match_torch(ours_cls, kwargs, torch_cls, torch):
    rng = np.random.default_rng(1)
    ours, theirs = make_params(np.complex128, rng)
    torch_opt = getattr(torch.optim, torch_cls)(theirs, foreach=False, **kwargs)
    run_steps(ours, theirs, ours_cls(ours, **kwargs), torch_opt,
              gradients(ours, 4, rng))


@given(momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.2]),
       nesterov=st.booleans(), weight_decay=st.sampled_from([0.0, 1e-3, 0.3]), maximize=st.booleans(),
       lr=st.floats(1e-3, 0.5))
def test_sgd_hyperparameter_combinations(momentum, dampening, nesterov, weight_decay, maximize, lr, torch):
    kwargs = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                  weight_decay=weight_decay, maximize=maximize)
    if nesterov and (momentum == 0 or dampening != 0):
        with pytest.raises(ValueError, match="Nesterov"):
            SGD([Parameter(np.zeros(2))], **kwargs)
        return
    rng = np.random.default_rng(2)
    ours, theirs = make_params(np.float64, rng, [(2, 3)])
    run_steps(ours, theirs, SGD(ours, **kwargs), torch.optim.SGD(theirs, foreach=False, **kwargs),
              gradients(ours, 3, rng))


@given(beta1=st.sampled_from([0.0, 0.3, 0.9]), beta2=st.sampled_from([0.0, 0.9, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 0.1]),
       amsgrad=st.booleans(), decoupled=st.booleans())
def test_adam_hyperparameter_combinations(beta1, beta2, eps, weight_decay, amsgrad, decoupled, torch):
    kwargs = dict(lr=0.01, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                  decoupled_weight_decay=decoupled)
    rng = np.random.default_rng(3)
    ours, theirs = make_params(np.float64, rng, [(2, 3)])
    run_steps(ours, theirs, Adam(ours, **kwargs), torch.optim.Adam(theirs, foreach=False, **kwargs),
              gradients(ours, 3, rng))


def test_param_groups_with_own_options_match_torch(torch):
    rng = np.random.default_rng(4)
    ours, theirs = make_params(np.float64, rng)
    our_opt = SGD([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.5, "momentum": 0.0}],
                  lr=0.1, momentum=0.9)
    torch_opt = torch.optim.SGD([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.5, "momentum": 0.0}],
                                lr=0.1, momentum=0.9, foreach=False)
    run_steps(ours, theirs, our_opt, torch_opt, gradients(ours, 3, rng))
    assert [g["lr"] for g in our_opt.param_groups] == [0.1, 0.5]
    assert "momentum_buffer" not in our_opt.state[ours[2]]


def _comparable_groups(groups):
    return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k not in TORCH_ONLY_KEYS}
            for g in groups]


@pytest.mark.parametrize(("ours_cls", "kwargs", "torch_cls"), [CONFIGS[2], CONFIGS[6], CONFIGS[9]],
                         ids=["SGD", "Adam", "AdamW"])
def test_state_dict_round_trip_mid_training(ours_cls, kwargs, torch_cls, torch):
    rng = np.random.default_rng(5)
    ours, theirs = make_params(np.float64, rng)
    our_opt = ours_cls(ours, **kwargs)
    torch_opt = getattr(torch.optim, torch_cls)(theirs, foreach=False, **kwargs)
    grads = gradients(ours, 6, rng)
    run_steps(ours, theirs, our_opt, torch_opt, grads[:3])

    saved = our_opt.state_dict()
    torch_saved = torch_opt.state_dict()
    # torch's layout: same indices, same state names, same hyper-parameters
    assert saved["state"].keys() == torch_saved["state"].keys()
    for index, entry in torch_saved["state"].items():
        assert saved["state"][index].keys() == entry.keys()
    assert _comparable_groups(saved["param_groups"]) == _comparable_groups(torch_saved["param_groups"])

    # a fresh optimizer over copies of the parameters resumes exactly where the first one was
    resumed_params = [Parameter(p.numpy().copy()) for p in ours]
    resumed = ours_cls(resumed_params, lr=123.0)
    resumed.load_state_dict(copy.deepcopy(saved))
    assert resumed.param_groups[0]["lr"] == kwargs["lr"]
    run_steps(resumed_params, theirs, resumed, torch_opt, grads[3:])

    # loading torch's own state dict (tensors as arrays) into npconv resumes the same way
    rng = np.random.default_rng(5)
    ours2, theirs2 = make_params(np.float64, rng)
    torch_opt2 = getattr(torch.optim, torch_cls)(theirs2, foreach=False, **kwargs)
    run_steps(ours2, theirs2, ours_cls(ours2, **kwargs), torch_opt2, grads[:3])
    from_torch = {"state": {i: {k: v.numpy().copy() for k, v in s.items()}
                            for i, s in torch_opt2.state_dict()["state"].items()},
                  "param_groups": copy.deepcopy(torch_opt2.state_dict()["param_groups"])}
    fresh = ours_cls(ours2, **kwargs)
    fresh.load_state_dict(from_torch)
    run_steps(ours2, theirs2, fresh, torch_opt2, grads[3:])


def test_load_state_dict_casts_to_parameter_dtype_and_copies():
    p = Parameter(np.ones(3, dtype=np.float32))
    opt = SGD([p], lr=0.1, momentum=0.9)
    buffer = np.arange(3.0)
    opt.load_state_dict({"state": {0: {"momentum_buffer": buffer}}, "param_groups": [
        {"lr": 0.2, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False,
         "maximize": False, "foreach": None, "params": [0]}]})
    loaded = opt.state[p]["momentum_buffer"]
    assert loaded.dtype == np.float32 and loaded is not buffer
    p.grad = npconv.Tensor(np.ones(3, dtype=np.float32))
    opt.step()
    np.testing.assert_allclose(p.numpy(), 1 - 0.2 * (0.9 * np.arange(3.0) + 1), rtol=1e-6)
    np.testing.assert_array_equal(buffer, np.arange(3.0))


def test_load_state_dict_rejects_mismatch_and_changes_nothing():
    p, q = Parameter(np.ones(3)), Parameter(np.ones(2))
    opt = Adam([p, q], lr=0.1)
    p.grad, q.grad = npconv.Tensor(np.ones(3)), npconv.Tensor(np.ones(2))
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    good = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict({"state": {}, "param_groups": [dict(good["param_groups"][0], params=[0])]})
    bad_state = copy.deepcopy(good)
    bad_state["param_groups"][0]["lr"] = 5.0
    bad_state["state"][1]["exp_avg"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"shape \(7,\).*shape \(2,\)"):
        opt.load_state_dict(bad_state)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, entry in before["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after["state"][index][key], value)


def test_zero_grad():
    p, q = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD([p, q], lr=0.1)
    p.grad, q.grad = npconv.Tensor(np.ones(2)), npconv.Tensor(np.ones(2))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), 0)
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_named_parameters_and_add_param_group():
    layer = npconv.nn.Conv2d(1, 2, 3)
    opt = Adam(layer.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.state_dict()["param_groups"][0]["params"] == [0, 1]
    extra = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="with/without names"):
        opt.add_param_group({"params": [extra]})
    opt.add_param_group({"params": [("extra", extra)], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    assert opt.state_dict()["param_groups"][1]["params"] == [2]
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [("weight", layer.weight)]})


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: SGD(p, lr=-1.0), "Invalid learning rate"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "Invalid momentum"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: Adam(p, betas=(1.0, 0.9)), "beta parameter at index 0"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda p: Adam(p, eps=-1e-8), "Invalid epsilon"),
    (lambda p: AdamW(p, weight_decay=-1), "Invalid weight_decay"),
    (lambda p: SGD([], lr=0.1), "empty parameter list"),
    (lambda p: SGD(p[0], lr=0.1), "iterable of Tensors"),
    (lambda p: SGD([np.zeros(2)], lr=0.1), "can only optimize Tensors"),
    (lambda p: SGD({p[0]}, lr=0.1), "ordered collections"),
    (lambda p: SGD([p[0], p[0]], lr=0.1), "duplicate"),
])
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call([Parameter(np.zeros(2))])


def test_gradient_of_wrong_shape_is_reported():
    p = Parameter(np.zeros(2))
    opt = Adam([p])
    p.grad = npconv.Tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(2,\) has a gradient of shape \(3,\)"):
        opt.step()
    assert not opt.state[p]
    np.testing.assert_array_equal(p.numpy(), 0)


def test_closure_result_is_returned():
    p = Parameter(np.array([2.0]))
    opt = SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.numpy()) == 4.0 and p.numpy()[0] == 2.0 - 0.25 * 4.0


def test_trains_a_model_end_to_end():
    """Fit a 1-d convolution to a known filter with Adam; the loss must drop by orders of magnitude."""
    npconv.manual_seed(0)
    rng = np.random.default_rng(0)
    x = npconv.tensor(rng.standard_normal((8, 1, 20)))
    target_filter = np.array([[[0.5, -1.0, 0.25]]])
    y = npconv.nn.functional.conv1d(x, npconv.tensor(target_filter))
    model = npconv.nn.Conv1d(1, 1, 3, bias=False, dtype=np.float64)
    opt = Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(200):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
    assert losses[-1] < 1e-4 * losses[0]
    np.testing.assert_allclose(model.weight.numpy(), target_filter, atol=1e-2)


# -- schedulers ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _quiet_torch_scheduler_order_warning():
    """The scheduler tests step schedulers without optimizer steps; torch warns about that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of")
        yield


def _scheduler_pair(kind, kwargs, lrs=(0.1, 0.02)):
    torch = torch_module()
    ours = SGD([{"params": [Parameter(np.zeros(1))], "lr": lr} for lr in lrs], lr=1.0)
    theirs = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs],
                             lr=1.0)
    our_cls, torch_cls = {"step": (StepLR, torch.optim.lr_scheduler.StepLR),
                          "cosine": (CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR)}[kind]
    return ours, our_cls(ours, **kwargs), theirs, torch_cls(theirs, **kwargs)


SCHEDULES = [("step", dict(step_size=3, gamma=0.5)), ("step", dict(step_size=1)),
             ("cosine", dict(T_max=5)), ("cosine", dict(T_max=4, eta_min=0.01))]


@pytest.mark.parametrize(("kind", "kwargs"), SCHEDULES)
def test_scheduler_chained_form_matches_torch(kind, kwargs):
    ours, our_sched, theirs, torch_sched = _scheduler_pair(kind, kwargs)
    assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-15)
    for epoch in range(1, 25):
        ours.step()
        theirs.step()
        our_sched.step()
        torch_sched.step()
        assert our_sched.last_epoch == torch_sched.last_epoch == epoch
        assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12, abs=1e-15)
        assert [g["lr"] for g in ours.param_groups] == our_sched.get_last_lr()


@pytest.mark.parametrize(("kind", "kwargs"), SCHEDULES)
def test_scheduler_closed_form_matches_torch(kind, kwargs):
    ours, our_sched, theirs, torch_sched = _scheduler_pair(kind, kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in [4, 9, 2, 13]:
            our_sched.step(epoch)
            torch_sched.step(epoch)
            assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12, abs=1e-15)
    with pytest.warns(UserWarning, match="epoch parameter"):
        our_sched.step(1)


def test_scheduler_chains_with_external_lr_changes_like_torch():
    ours, our_sched, theirs, torch_sched = _scheduler_pair("cosine", dict(T_max=6))
    for epoch in range(8):
        if epoch == 3:
            ours.param_groups[0]["lr"] *= 0.5
            theirs.param_groups[0]["lr"] *= 0.5
        our_sched.step()
        torch_sched.step()
        assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("kind", "kwargs"), SCHEDULES)
def test_scheduler_state_dict_round_trip_and_resume(kind, kwargs):
    ours, our_sched, theirs, torch_sched = _scheduler_pair(kind, kwargs)
    for _ in range(7):
        our_sched.step()
        torch_sched.step()
    saved = our_sched.state_dict()
    assert "optimizer" not in saved
    assert set(saved) == set(torch_sched.state_dict())
    # resume as torch documents it: build the scheduler, then load the optimizer's and its own state
    resumed_opt = SGD([{"params": [Parameter(np.zeros(1))], "lr": lr} for lr in (0.1, 0.02)], lr=1.0)
    resumed = type(our_sched)(resumed_opt, **kwargs)
    resumed_opt.load_state_dict(ours.state_dict())
    resumed.load_state_dict(copy.deepcopy(saved))
    for _ in range(10):
        resumed.step()
        torch_sched.step()
        assert resumed.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12, abs=1e-15)


def test_cosine_reaches_eta_min_at_t_max_and_closed_form_values():
    ours, sched, _, _ = _scheduler_pair("cosine", dict(T_max=10, eta_min=0.001), lrs=(0.1,))
    for epoch in range(1, 11):
        sched.step()
        expected = 0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * epoch / 10)) / 2
        assert sched.get_last_lr()[0] == pytest.approx(expected, rel=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(0.001)


@pytest.mark.parametrize(("make", "message"), [
    (lambda o: StepLR(o, step_size=0), "step_size"),
    (lambda o: CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: StepLR(o, step_size=2, last_epoch=3), "initial_lr"),
    (lambda o: StepLR(object(), step_size=2), "is not an Optimizer"),
])
def test_scheduler_bad_arguments(make, message):
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises((TypeError, ValueError, KeyError), match=message):
        make(opt)
    assert opt.param_groups[0] == {**opt.defaults, "params": opt.param_groups[0]["params"]}


def test_an_optimizer_keeping_nothing_has_no_state_entries_as_torchs():
    torch = torch_module()
    for lib in (npconv, torch):
        p = lib.nn.Parameter(lib.ones(2))
        opt = lib.optim.SGD([p], lr=0.1)
        p.grad = lib.ones(2)
        opt.step()
        assert opt.state_dict()["state"] == {}
        momentum = lib.optim.SGD([p], lr=0.1, momentum=0.9)
        momentum.step()
        assert set(momentum.state_dict()["state"]) == {0}  # the buffer is kept once there is one


@pytest.mark.parametrize("kind", ["Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adagrad", "RMSprop",
                                  "Adadelta"])
def test_scalar_state_follows_the_default_dtype_as_torchs(kind):
    torch = torch_module()
    data = np.random.default_rng(0).standard_normal(3)
    results = []
    for lib in (npconv, torch):
        previous = lib.get_default_dtype()
        lib.set_default_dtype(lib.float64)
        try:
            p = lib.nn.Parameter(lib.tensor(data))
            opt = getattr(lib.optim, kind)([p], lr=0.1)
            for step in range(3):
                p.grad = lib.tensor(data * (step + 1))
                opt.step()
            state = opt.state_dict()["state"][0]
            results.append((state, p.detach().numpy().copy()))
        finally:
            lib.set_default_dtype(previous)
    (ours, ours_p), (theirs, theirs_p) = results
    for name in ("step", "mu_product"):
        if name in theirs:
            assert str(ours[name].dtype) == str(theirs[name].dtype) == "torch.float64", name
            assert float(ours[name]) == pytest.approx(float(theirs[name]), rel=1e-15)
    np.testing.assert_allclose(ours_p, theirs_p, rtol=1e-13)
