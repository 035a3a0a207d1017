"""Every optimizer against torch's: parameters and state after several steps, state_dict layout,
resuming from torch's state_dict; and the atomicity of rejected steps and loads (torch-free)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv import optim
from npconv.nn import Parameter

SHAPES = [(3, 2, 2), (4,), (2, 5)]
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6),
             np.complex128: dict(rtol=1e-12, atol=1e-12)}

CONFIGS = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.02, centered=True, eps=1e-3)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3, eps=1e-6,
                     maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.2, maximize=True)),
    ("Adamax", dict()),
    ("Adamax", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-4, weight_decay=0.1, maximize=True)),
    ("NAdam", dict()),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.9), momentum_decay=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict()),
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.1, maximize=True)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
]
IDS = [f"{name}-{index}" for index, (name, _) in enumerate(CONFIGS)]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _values(dtype, rng, shapes=SHAPES):
    out = []
    for shape in shapes:
        v = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            v = v + 1j * rng.standard_normal(shape)
        out.append(v.astype(dtype))
    return out


def _grad_sequence(values, steps, rng, skip=None):
    """A fixed gradient sequence; ``skip=(step, index)`` leaves one parameter without a gradient."""
    return [[None if skip == (step, i) else _values(v.dtype, rng, [v.shape])[0] for i, v in enumerate(values)]
            for step in range(steps)]


def _run(torch, name, kwargs, dtype, steps=8, seed=0):
    rng = np.random.default_rng(seed)
    values = _values(dtype, rng)
    ours = [Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    our_opt = getattr(optim, name)(ours, **kwargs)
    torch_opt = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    for grads in _grad_sequence(values, steps, rng, skip=(2, 1)):
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad = None if g is None else npconv.Tensor(g.copy())
            q.grad = None if g is None else torch.from_numpy(g.copy())
        our_opt.step()
        torch_opt.step()
    return ours, theirs, our_opt, torch_opt


def _assert_state_matches(our_opt, torch_opt, dtype):
    ours, theirs = our_opt.state_dict(), torch_opt.state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    for index, entry in theirs["state"].items():
        assert ours["state"][index].keys() == entry.keys()
        for key, value in entry.items():
            mine = ours["state"][index][key]
            assert isinstance(mine, npconv.Tensor)
            assert mine.numpy().dtype == value.numpy().dtype, key
            tol = TOLERANCE[np.float32 if value.numpy().dtype == np.float32 else dtype]
            np.testing.assert_allclose(mine.numpy(), value.numpy(), **tol, err_msg=f"state {index} {key}")
    mine_groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                   for g in ours["param_groups"]]
    their_groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                    for g in theirs["param_groups"]]
    for g in their_groups:
        g["foreach"] = None  # torch's runs were made with foreach=False
    for g in mine_groups:
        g["foreach"] = None
    assert mine_groups == their_groups


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_steps_and_state_match_torch(torch, name, kwargs, dtype):
    ours, theirs, our_opt, torch_opt = _run(torch, name, kwargs, dtype)
    for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), **TOLERANCE[dtype], err_msg=f"param {i}")
    _assert_state_matches(our_opt, torch_opt, dtype)


@pytest.mark.parametrize(("name", "kwargs"), [c for c in CONFIGS if c[0] != "SGD"],
                         ids=[i for i, c in zip(IDS, CONFIGS, strict=True) if c[0] != "SGD"])
def test_complex_parameters_match_torch(torch, name, kwargs):
    ours, theirs, _, _ = _run(torch, name, kwargs, np.complex128, steps=4)
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_resume_from_torch_state_dict(torch, name, kwargs):
    """Load torch's state_dict (torch tensors) after 4 steps; the next 4 steps match torch's."""
    rng = np.random.default_rng(7)
    values = _values(np.float64, rng)
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    torch_opt = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    grads = _grad_sequence(values, 8, rng)
    for step, step_grads in enumerate(grads):
        if step == 4:
            ours = [Parameter(q.detach().numpy().copy()) for q in theirs]
            our_opt = getattr(optim, name)(ours, lr=123.0)
            our_opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
            # torch resumes the same way (loading casts NAdam's float32 mu_product to the params' dtype)
            resumed = getattr(torch.optim, name)(theirs, lr=123.0, foreach=False)
            resumed.load_state_dict(torch_opt.state_dict())
            torch_opt = resumed
            assert our_opt.param_groups[0]["lr"] == torch_opt.param_groups[0]["lr"]
        for i, g in enumerate(step_grads):
            theirs[i].grad = torch.from_numpy(g.copy())
            if step >= 4:
                ours[i].grad = npconv.Tensor(g.copy())
        torch_opt.step()
        if step >= 4:
            our_opt.step()
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(["RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"]),
       lr=st.sampled_from([1e-3, 0.1]), weight_decay=st.sampled_from([0.0, 0.05]), maximize=st.booleans(),
       beta_or_rho=st.sampled_from([0.0, 0.5, 0.9]), eps=st.sampled_from([1e-8, 1e-2]))
def test_hyperparameter_combinations_match_torch(name, lr, weight_decay, maximize, beta_or_rho, eps):
    torch = pytest.importorskip("torch")
    kwargs = dict(lr=lr, weight_decay=weight_decay, maximize=maximize, eps=eps)
    if name in ("Adamax", "NAdam", "RAdam"):
        kwargs["betas"] = (beta_or_rho, 0.99)
    elif name == "Adadelta":
        kwargs["rho"] = beta_or_rho
    elif name == "RMSprop":
        kwargs.update(alpha=beta_or_rho, centered=beta_or_rho > 0.6, momentum=beta_or_rho / 2)
    else:
        kwargs["lr_decay"] = beta_or_rho
    ours, theirs, _, _ = _run(torch, name, kwargs, np.float64, steps=3, seed=3)
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-11, atol=1e-12)


def test_defaults_and_signatures_match_torch(torch):
    import inspect
    for name in ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "NAdam", "RAdam", "Adamax",
                 "LBFGS"]:
        ours = inspect.signature(getattr(optim, name))
        theirs = inspect.signature(getattr(torch.optim, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        for key, parameter in theirs.parameters.items():
            assert ours.parameters[key].default == parameter.default, (name, key)
            assert ours.parameters[key].kind == parameter.kind, (name, key)
        our_group = getattr(optim, name)([Parameter(np.zeros(2))]).param_groups[0]
        their_group = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))]).param_groups[0]
        assert list(our_group) == list(their_group), name


# -- torch-free: errors and atomicity --------------------------------------------------------------
ALL = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "NAdam", "RAdam", "Adamax"]


def _snapshot(opt, params):
    return ([p.numpy().copy() for p in params], copy.deepcopy(opt.param_groups),
            {id(k): copy.deepcopy(v) for k, v in opt.state.items()})


def _assert_unchanged(opt, params, snapshot):
    data, groups, state = snapshot
    for p, before in zip(params, data, strict=True):
        np.testing.assert_array_equal(p.numpy(), before)
        assert p.numpy().dtype == before.dtype
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in groups]
    assert {id(k) for k in opt.state} == set(state)
    for key, entry in opt.state.items():
        assert entry.keys() == state[id(key)].keys()
        for name, value in entry.items():
            np.testing.assert_array_equal(value, state[id(key)][name])


def _trained(name, **kwargs):
    params = [Parameter(np.ones((2, 3))), Parameter(np.ones(4)), Parameter(np.ones(1))]
    opt = getattr(optim, name)(params, **kwargs)
    for p in params:
        p.grad = npconv.Tensor(np.full(p.shape, 0.5))
    opt.step()
    return params, opt


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", ["shape", "dtype", "lr", "readonly"])
def test_rejected_step_changes_nothing(name, bad):
    kwargs = dict(momentum=0.9) if name in ("SGD", "RMSprop") else {}
    params, opt = _trained(name, **kwargs)
    fresh = Parameter(np.ones(3))
    opt.add_param_group({"params": [fresh]})  # no state yet: a rejected step must not create it
    for p in params + [fresh]:
        p.grad = npconv.Tensor(np.full(p.shape, 0.25))
    snapshot = _snapshot(opt, params + [fresh])
    if bad == "shape":
        params[1].grad = npconv.Tensor(np.ones(5))
        error = ValueError
    elif bad == "dtype":
        fresh.grad = npconv.Tensor(np.ones(3, dtype=np.complex128))
        error = TypeError
    elif bad == "lr":
        opt.param_groups[1]["lr"] = -1.0
        snapshot = _snapshot(opt, params + [fresh])
        error = ValueError
    else:
        fresh.numpy().flags.writeable = False
        error = ValueError
    with pytest.raises(error, match=r"param_groups\[\d\]"):
        opt.step()
    _assert_unchanged(opt, params + [fresh], snapshot)


@pytest.mark.parametrize("name", ALL)
def test_malformed_state_dicts_are_refused_and_change_nothing(name):
    kwargs = dict(momentum=0.9) if name in ("SGD", "RMSprop") else {}
    params, opt = _trained(name, **kwargs)
    good = opt.state_dict()
    first_key = next(iter(good["state"][0]))
    snapshot = _snapshot(opt, params)

    def edited(change):
        sd = copy.deepcopy(good)
        change(sd)
        return sd

    bad_dicts = [
        ([], ValueError),
        ({"state": {}}, ValueError),
        ({"state": [], "param_groups": good["param_groups"]}, TypeError),
        ({"state": {}, "param_groups": None}, TypeError),
        ({"state": {}, "param_groups": [1]}, TypeError),
        ({"state": {}, "param_groups": [{"lr": 0.1}]}, TypeError),
        (edited(lambda sd: sd["param_groups"][0].update(params=[0, 1])), ValueError),
        (edited(lambda sd: sd["param_groups"][0].update(params=[0, 0, 1])), ValueError),
        (edited(lambda sd: sd["param_groups"][0].update(params=["a", "b", "c"])), TypeError),
        (edited(lambda sd: sd["param_groups"][0].update(lr=-0.5)), ValueError),
        (edited(lambda sd: sd["param_groups"][0].update(lr="fast")), TypeError),
        (edited(lambda sd: sd["param_groups"][0].update(maximize="yes")), TypeError),
        (edited(lambda sd: sd["param_groups"][0].update(differentiable=True)), ValueError),
        (edited(lambda sd: sd["state"].update({7: sd["state"][0]})), ValueError),
        (edited(lambda sd: sd["state"].update({1: "garbage"})), TypeError),
        (edited(lambda sd: sd["state"][1].update({first_key: np.zeros(9)})), ValueError),
        (edited(lambda sd: sd["state"][1].update({first_key: "text"})), TypeError),
        (edited(lambda sd: sd["state"][2].update({"unknown": np.zeros(1)})), ValueError),
    ]
    if len(good["state"][2]) > 1:  # an empty entry is a fresh state; a partial one is refused
        bad_dicts.append((edited(lambda sd: sd["state"][2].pop(first_key)), ValueError))
    if "step" in good["state"][0]:
        bad_dicts.append((edited(lambda sd: sd["state"][0].update(step=np.array(-1.0))), ValueError))
        bad_dicts.append((edited(lambda sd: sd["state"][0].update(step=np.zeros(3))), ValueError))
    for bad, error in bad_dicts:
        with pytest.raises(error):
            opt.load_state_dict(bad)
        _assert_unchanged(opt, params, snapshot)
    # the good dict still loads, and training goes on
    opt.load_state_dict(good)
    for p in params:
        p.grad = npconv.Tensor(np.ones(p.shape))
    opt.step()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("flag", ["capturable", "differentiable", "fused"])
def test_unsupported_torch_flags_are_refused(name, flag):
    import inspect
    if flag not in inspect.signature(getattr(optim, name)).parameters:
        pytest.skip(f"torch's {name} has no {flag}")
    with pytest.raises(ValueError, match=f"{flag}=True"):
        getattr(optim, name)([Parameter(np.zeros(2))], **{flag: True})
    getattr(optim, name)([Parameter(np.zeros(2))], **{flag: False})


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("RMSprop", dict(alpha=-0.1), "Invalid alpha value"),
    ("RMSprop", dict(momentum=-1), "Invalid momentum value"),
    ("Adagrad", dict(lr_decay=-1), "Invalid lr_decay value"),
    ("Adagrad", dict(initial_accumulator_value=-1), "Invalid initial_accumulator_value value"),
    ("Adadelta", dict(rho=1.5), "Invalid rho value"),
    ("Adamax", dict(betas=(0.9, 1.0)), "beta parameter at index 1"),
    ("NAdam", dict(momentum_decay=-1), "Invalid momentum_decay value"),
    ("RAdam", dict(eps=-1), "Invalid epsilon value"),
    ("RAdam", dict(lr=-1), "Invalid learning rate"),
    ("NAdam", dict(betas=0.9), "betas must be a pair"),
    ("Adam", dict(amsgrad="no"), "amsgrad must be a bool"),
])
def test_bad_hyperparameters_are_rejected(name, kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        getattr(optim, name)([Parameter(np.zeros(2))], **kwargs)


def test_adagrad_creates_state_at_construction_like_torch():
    p = Parameter(np.ones(3))
    opt = optim.Adagrad([p], initial_accumulator_value=0.5)
    assert set(opt.state_dict()["state"][0]) == {"step", "sum"}
    np.testing.assert_array_equal(opt.state[p]["sum"], 0.5)
    q = Parameter(np.ones(2))
    opt.add_param_group({"params": [q]})
    assert float(opt.state[q]["step"]) == 0.0


def test_rmsprop_converges_on_a_quadratic():
    """A NumPy reference: minimise |x - c|^2 with every optimizer; all must get close to c."""
    target = np.array([1.0, -2.0, 0.5])
    for name, kwargs in [("RMSprop", dict(lr=0.01)), ("Adagrad", dict(lr=0.5)), ("Adadelta", dict(lr=10.0)),
                         ("Adamax", dict(lr=0.05)), ("NAdam", dict(lr=0.05)), ("RAdam", dict(lr=0.05))]:
        p = Parameter(np.zeros(3))
        opt = getattr(optim, name)([p], **kwargs)
        for _ in range(500):
            p.grad = npconv.Tensor(2 * (p.numpy() - target))
            opt.step()
        np.testing.assert_allclose(p.numpy(), target, atol=0.05, err_msg=name)
