"""``optim.lr_scheduler.CyclicLR`` against torch 2.13: learning rates and momenta (SGD momentum, Adam's
beta1) over 50 steps for every mode, ``scale_fn``/``scale_mode``, state_dict round trips and errors."""

import numpy as np
import pytest

import npconv
import npconv.optim as optim


def _optimizers(torch, kind, groups=1):
    pt = [torch.nn.Parameter(torch.zeros(2)) for _ in range(groups)]
    pn = [npconv.nn.Parameter(npconv.zeros(2)) for _ in range(groups)]
    if kind == "sgd":
        return (torch.optim.SGD([{"params": [p]} for p in pt], lr=0.1, momentum=0.9),
                optim.SGD([{"params": [p]} for p in pn], lr=0.1, momentum=0.9))
    if kind == "adam":
        return (torch.optim.Adam([{"params": [p]} for p in pt], lr=0.1),
                optim.Adam([{"params": [p]} for p in pn], lr=0.1))
    return (torch.optim.SGD([{"params": [p]} for p in pt], lr=0.1),
            optim.SGD([{"params": [p]} for p in pn], lr=0.1))


def _compare(torch, kind, steps=50, groups=1, **kw):
    ot, on = _optimizers(torch, kind, groups)
    st = torch.optim.lr_scheduler.CyclicLR(ot, **kw)
    sn = optim.lr_scheduler.CyclicLR(on, **kw)
    seen = []
    for _ in range(steps + 1):
        for gt, gn in zip(ot.param_groups, on.param_groups, strict=True):
            assert gn["lr"] == pytest.approx(gt["lr"], rel=1e-12, abs=1e-15)
            for key in ("momentum", "betas"):
                if key in gt:
                    np.testing.assert_allclose(gn[key], gt[key], rtol=1e-12)
            seen.append(gn["lr"])
        assert sn.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-12)
        ot.step()
        on.step()
        st.step()
        sn.step()
    assert len(set(np.round(seen, 12))) > 3  # the schedule moved
    return st, sn


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_modes_match_torch(torch, kind, mode):
    _compare(torch, kind, base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=7, mode=mode, gamma=0.97)
    _compare(torch, kind, groups=2, base_lr=[0.01, 0.02], max_lr=[0.1, 0.3], step_size_up=5, mode=mode,
             gamma=0.99, base_momentum=[0.8, 0.7], max_momentum=[0.9, 0.95])


@pytest.mark.parametrize("scale_mode", ["cycle", "iterations"])
def test_scale_fn_matches_torch(torch, scale_mode):
    _compare(torch, "sgd", base_lr=0.001, max_lr=0.01, step_size_up=3, scale_fn=lambda x: 1 / (1 + 0.1 * x),
             scale_mode=scale_mode)


def test_without_momentum_cycling(torch):
    _, sn = _compare(torch, "plain", base_lr=0.01, max_lr=0.1, step_size_up=6, cycle_momentum=False)
    assert "momentum" not in sn.optimizer.param_groups[0] or sn.optimizer.param_groups[0]["momentum"] == 0


class _Scale:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return self.factor ** x


def test_state_dict_round_trip_and_torch_keys(torch):
    st, sn = _compare(torch, "sgd", steps=7, base_lr=0.01, max_lr=0.1, step_size_up=4, scale_fn=_Scale(0.9),
                      scale_mode="iterations")
    state = sn.state_dict()
    assert sorted(state) == sorted(st.state_dict())
    assert state["_scale_fn_custom"] == {"factor": 0.9}
    _, other = _optimizers(torch, "sgd")
    fn = _Scale(0.5)
    resumed = optim.lr_scheduler.CyclicLR(other, 0.01, 0.1, step_size_up=4, scale_fn=fn,
                                          scale_mode="iterations")
    resumed.load_state_dict(state)
    assert fn.factor == 0.9 and resumed.last_epoch == sn.last_epoch
    for _ in range(5):
        sn.step()
        resumed.step()
        assert resumed.get_last_lr() == sn.get_last_lr()
    _, plain = _compare(torch, "sgd", steps=3, base_lr=0.01, max_lr=0.1, mode="exp_range", gamma=0.9)
    assert plain.state_dict()["_scale_fn_custom"] is None


def test_errors(torch):
    _, on = _optimizers(torch, "sgd")
    with pytest.raises(ValueError, match="mode is invalid"):
        optim.lr_scheduler.CyclicLR(on, 0.01, 0.1, mode="sine")
    with pytest.raises(ValueError, match="must have the same length"):
        optim.lr_scheduler.CyclicLR(on, [0.01, 0.02], 0.1)
    with pytest.raises(TypeError, match="not an Optimizer"):
        optim.lr_scheduler.CyclicLR(object(), 0.01, 0.1)
    _, plain = _optimizers(torch, "plain")
    plain.defaults.pop("momentum", None)
    with pytest.raises(ValueError, match="support momentum"):
        optim.lr_scheduler.CyclicLR(plain, 0.01, 0.1)
    with pytest.raises(ValueError, match="step_size_up"):
        optim.lr_scheduler.CyclicLR(on, 0.01, 0.1, step_size_up=0)
