"""Every scheduler against torch's over many epochs: lrs (and cycled momenta), state_dict layout,
resuming; plus torch-free checks of argument errors and of steps that raise changing nothing."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest

from npconv import optim
from npconv.nn import Parameter
from npconv.optim import lr_scheduler as ls


class Warmup:
    """A callable object: LambdaLR saves its __dict__ in state_dict (torch's rule)."""

    def __init__(self, epochs):
        self.epochs = epochs

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.epochs)


SIMPLE = [
    ("MultiStepLR", dict(milestones=[3, 7, 7, 12], gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("LinearLR", dict()),
    ("LinearLR", dict(start_factor=0.25, end_factor=0.75, total_iters=8)),
    ("ConstantLR", dict(factor=0.5, total_iters=4)),
    ("PolynomialLR", dict(total_iters=10, power=2.0)),
    ("StepLR", dict(step_size=4, gamma=0.3)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("CosineAnnealingWarmRestarts", dict(T_0=5)),
    ("CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2, eta_min=0.01)),
    ("LambdaLR", dict(lr_lambda=lambda epoch: 0.95**epoch)),
    ("LambdaLR", dict(lr_lambda=Warmup(6))),
    ("MultiplicativeLR", dict(lr_lambda=lambda epoch: 0.9)),
    ("OneCycleLR", dict(max_lr=[0.5, 0.2], total_steps=40)),
    ("OneCycleLR", dict(max_lr=0.3, epochs=4, steps_per_epoch=10, anneal_strategy="linear",
                        three_phase=True)),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=30, cycle_momentum=False, pct_start=0.5)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(SIMPLE)]
EPOCHS = 40


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of")
        yield torch


def _optimizers(torch, kind="SGD"):
    lrs = (0.1, 0.02)
    ours = getattr(optim, kind)([{"params": [Parameter(np.zeros(1))], "lr": lr} for lr in lrs],
                                **({"momentum": 0.9} if kind == "SGD" else {}))
    theirs = getattr(torch.optim, kind)([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr}
                                         for lr in lrs], **({"momentum": 0.9} if kind == "SGD" else {}))
    return ours, theirs


def _groups_match(ours, theirs):
    for mine, their in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert set(mine) == set(their)
        for key, value in their.items():
            if key == "params":
                continue
            if not isinstance(value, (float, int, tuple)):
                assert mine[key] == value, key
                continue
            assert mine[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
@pytest.mark.parametrize(("name", "kwargs"), SIMPLE, ids=IDS)
def test_schedule_matches_torch_over_many_epochs(torch, name, kwargs, kind):
    ours, theirs = _optimizers(torch, kind)
    our_sched = getattr(ls, name)(ours, **kwargs)
    torch_sched = getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
    epochs = min(EPOCHS, getattr(torch_sched, "total_steps", EPOCHS))
    for _ in range(epochs):
        assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12, abs=1e-15)
        _groups_match(ours, theirs)
        ours.step()
        theirs.step()
        our_sched.step()
        torch_sched.step()
        assert our_sched.last_epoch == torch_sched.last_epoch


@pytest.mark.parametrize(("name", "kwargs"), [c for c in SIMPLE if c[0] != "OneCycleLR"],
                         ids=[i for i, c in zip(IDS, SIMPLE, strict=True) if c[0] != "OneCycleLR"])
def test_step_with_epoch_matches_torch(torch, name, kwargs):
    ours, theirs = _optimizers(torch)
    our_sched = getattr(ls, name)(ours, **kwargs)
    torch_sched = getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in [4, 9, 2, 13, 0, 30] + ([2.5, 7.25] if "Warm" in name else []):
            our_sched.step(epoch)
            torch_sched.step(epoch)
            assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12, abs=1e-15)
            assert our_sched.last_epoch == torch_sched.last_epoch


@pytest.mark.parametrize(("name", "kwargs"), SIMPLE, ids=IDS)
def test_state_dict_layout_and_resume_match_torch(torch, name, kwargs):
    ours, theirs = _optimizers(torch)
    our_sched = getattr(ls, name)(ours, **kwargs)
    torch_sched = getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
    for _ in range(9):
        ours.step()
        our_sched.step()
        theirs.step()
        torch_sched.step()
    saved, their_saved = our_sched.state_dict(), torch_sched.state_dict()
    assert set(saved) == set(their_saved)
    for key, value in their_saved.items():
        if key not in ("_schedule_phases",):
            numeric = isinstance(value, float) or (isinstance(value, list) and all(
                isinstance(v, float) for v in value))
            assert saved[key] == (pytest.approx(value, rel=1e-12) if numeric else value), key
    # resume as torch documents it: a fresh optimizer and scheduler, then the two state dicts
    resumed_opt, _ = _optimizers(torch)
    resumed = getattr(ls, name)(resumed_opt, **kwargs)
    resumed_opt.load_state_dict(ours.state_dict())
    resumed.load_state_dict(copy.deepcopy(saved))
    for _ in range(min(10, getattr(torch_sched, "total_steps", 99) - 10)):
        resumed_opt.step()
        resumed.step()
        theirs.step()
        torch_sched.step()
        assert resumed.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12, abs=1e-15)


def _sequential(module, optimizer, nested=False):
    warm = module.LinearLR(optimizer, start_factor=0.1, total_iters=4)
    cosine = module.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.001)
    decay = module.ExponentialLR(optimizer, gamma=0.8)
    if nested:
        inner = module.SequentialLR(optimizer, [warm, cosine], milestones=[4])
        return module.SequentialLR(optimizer, [inner, decay], milestones=[12])
    return module.SequentialLR(optimizer, [warm, cosine, decay], milestones=[4, 14])


@pytest.mark.parametrize("nested", [False, True])
def test_sequential_lr_matches_torch(torch, nested):
    ours, theirs = _optimizers(torch)
    our_sched = _sequential(ls, ours, nested)
    torch_sched = _sequential(torch.optim.lr_scheduler, theirs, nested)
    for epoch in range(30):
        assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12), epoch
        assert [g["lr"] for g in ours.param_groups] == pytest.approx([g["lr"] for g in theirs.param_groups])
        if epoch == 15:
            saved = copy.deepcopy(our_sched.state_dict())
            assert set(saved) == set(torch_sched.state_dict())
            assert [set(s) for s in saved["_schedulers"]] == \
                [set(s) for s in torch_sched.state_dict()["_schedulers"]]
            our_sched.load_state_dict(saved)
        ours.step()
        theirs.step()
        our_sched.step()
        torch_sched.step()


@pytest.mark.parametrize("kwargs", [dict(),
                                    dict(mode="max", factor=0.5, patience=2, threshold=0.1, cooldown=2),
                                    dict(threshold_mode="abs", patience=1, min_lr=[0.05, 0.001], eps=1e-3)])
def test_reduce_lr_on_plateau_matches_torch(torch, kwargs):
    ours, theirs = _optimizers(torch)
    our_sched = ls.ReduceLROnPlateau(ours, **kwargs)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
    metrics = np.random.default_rng(0).standard_normal(60).cumsum() * 0.1 + 5
    for index, metric in enumerate(metrics):
        value = float(metric) if index % 2 else np.float64(metric)
        our_sched.step(value)
        torch_sched.step(float(metric))
        assert our_sched.get_last_lr() == pytest.approx(torch_sched.get_last_lr(), rel=1e-12)
        for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            assert getattr(our_sched, key) == getattr(torch_sched, key)
    assert set(our_sched.state_dict()) == set(torch_sched.state_dict())
    reloaded = ls.ReduceLROnPlateau(ours)
    reloaded.load_state_dict(copy.deepcopy(torch_sched.state_dict()))
    assert reloaded.mode == torch_sched.mode and reloaded.best == torch_sched.best


def test_lambda_lr_state_dict_keeps_callable_object_state():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    sched = ls.LambdaLR(opt, Warmup(5))
    saved = sched.state_dict()
    assert saved["lr_lambdas"] == [{"epochs": 5}]
    other = ls.LambdaLR(optim.SGD([Parameter(np.zeros(1))], lr=0.1), Warmup(2))
    other.load_state_dict(saved)
    assert other.lr_lambdas[0].epochs == 5
    functional = ls.LambdaLR(optim.SGD([Parameter(np.zeros(1))], lr=0.1), lambda e: 1.0)
    assert functional.state_dict()["lr_lambdas"] == [None]


# -- torch-free -------------------------------------------------------------------------------------
def _opt():
    return optim.SGD([Parameter(np.zeros(1))], lr=0.1, momentum=0.9)


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda o: ls.MultiStepLR(o, milestones=3), TypeError, "milestones"),
    (lambda o: ls.MultiStepLR(o, milestones=[2, -1]), ValueError, "milestone"),
    (lambda o: ls.ExponentialLR(o, gamma="0.9"), TypeError, "gamma"),
    (lambda o: ls.LinearLR(o, start_factor=0), ValueError, "Starting multiplicative factor"),
    (lambda o: ls.LinearLR(o, end_factor=2), ValueError, "Ending multiplicative factor"),
    (lambda o: ls.LinearLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: ls.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "T_0"),
    (lambda o: ls.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0), ValueError, "T_mult"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1), ValueError, "total_steps OR"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1), ValueError, "pct_start"),
    (lambda o: ls.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=10), ValueError, "same length"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"), ValueError, "anneal"),
    (lambda o: ls.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor"),
    (lambda o: ls.ReduceLROnPlateau(o, mode="up"), ValueError, "mode up"),
    (lambda o: ls.ReduceLROnPlateau(o, min_lr=[0.1, 0.2]), ValueError, "min_lrs"),
    (lambda o: ls.LambdaLR(o, lr_lambda=3), TypeError, "lr_lambda"),
    (lambda o: ls.LambdaLR(o, lr_lambda=[abs, abs]), ValueError, "lr_lambdas"),
    (lambda o: ls.SequentialLR(o, [], milestones=[]), ValueError, "at least one"),
    (lambda o: ls.SequentialLR(o, [ls.StepLR(o, 2), ls.StepLR(o, 3)], milestones=[]), ValueError,
     "milestone"),
    (lambda o: ls.SequentialLR(o, [ls.StepLR(_opt(), 2)], milestones=[]), ValueError, "same optimizer"),
    (lambda o: ls.SequentialLR(o, [ls.ReduceLROnPlateau(o)], milestones=[]), ValueError, "ReduceLROnPlateau"),
    (lambda o: ls.StepLR(o, step_size=2, last_epoch=-2), ValueError, "last_epoch"),
])
def test_bad_arguments_are_refused(make, error, message):
    with pytest.raises(error, match=message):
        make(_opt())


def test_one_cycle_beyond_total_steps_raises_and_changes_nothing():
    opt = _opt()
    sched = ls.OneCycleLR(opt, max_lr=0.5, total_steps=5)
    for _ in range(5):
        sched.step()
    before = (copy.deepcopy(sched.state_dict()), copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                                                                  for g in opt.param_groups]))
    with pytest.raises(ValueError, match="Tried to step 6 times"):
        sched.step()
    after = (sched.state_dict(), [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    assert after == before


def test_a_raising_lambda_changes_nothing():
    opt = _opt()
    calls = []

    def schedule(epoch):
        calls.append(epoch)
        if epoch == 3:
            raise ArithmeticError("schedule undefined at 3")
        return 0.5**epoch

    sched = ls.LambdaLR(opt, schedule)
    sched.step()
    sched.step()
    before = copy.deepcopy(sched.state_dict()), opt.param_groups[0]["lr"]
    with pytest.raises(ArithmeticError):
        sched.step()
    assert (sched.state_dict(), opt.param_groups[0]["lr"]) == before


def test_load_state_dict_refuses_another_schedulers_state():
    opt = _opt()
    step = ls.StepLR(opt, 3)
    cosine = ls.CosineAnnealingLR(_opt(), T_max=4)
    before = copy.deepcopy(step.state_dict())
    with pytest.raises(ValueError, match="T_max"):
        step.load_state_dict(cosine.state_dict())
    with pytest.raises(TypeError, match="mapping"):
        step.load_state_dict([1, 2])
    assert step.state_dict() == before


def test_cosine_warm_restarts_closed_form_values():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    sched = ls.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(6):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    cycle = [(1 + math.cos(math.pi * t / n)) / 2 for n in (2, 4) for t in range(n)]
    np.testing.assert_allclose(lrs, cycle + [1.0], rtol=1e-15)


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_chained_scheduler_matches_torch_and_round_trips(torch, kind):
    ours, theirs = _optimizers(torch, kind)

    def chain(lib, opt):
        return lib.ChainedScheduler([lib.ConstantLR(opt, factor=0.1, total_iters=2),
                                     lib.ExponentialLR(opt, gamma=0.9)])

    mine, their = chain(ls, ours), chain(torch.optim.lr_scheduler, theirs)
    for _ in range(12):
        ours.step(), theirs.step(), mine.step(), their.step()
        assert mine.get_last_lr() == pytest.approx(their.get_last_lr(), rel=1e-12)
        _groups_match(ours, theirs)
    state = mine.state_dict()
    assert set(state) == set(their.state_dict())
    assert [set(s) for s in state["_schedulers"]] == [set(s) for s in their.state_dict()["_schedulers"]]
    fresh_opt, _ = _optimizers(torch, kind)
    fresh = chain(ls, fresh_opt)
    fresh.load_state_dict(copy.deepcopy(state))
    assert fresh.get_last_lr() == mine.get_last_lr()
    with pytest.raises(ValueError, match="at least one scheduler"):
        ls.ChainedScheduler([])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        ls.ChainedScheduler([ls.ReduceLROnPlateau(ours)])
