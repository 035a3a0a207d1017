"""BCELoss, SmoothL1Loss, HuberLoss and KLDivLoss (and their functional forms) against torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import compare, torch_module

DTYPES = [np.float64, np.float32]
REDUCTIONS = ["mean", "sum", "none"]


def _pair(dtype, shape=(4, 5), seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_matches_torch(dtype, reduction, weighted):
    torch = torch_module()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (4, 5)).astype(dtype)
    x.flat[:2] = [0.0, 1.0]  # clamped logs
    t = rng.uniform(0, 1, (4, 5)).astype(dtype)
    t.flat[:2] = [0.0, 1.0]
    w = rng.uniform(0.5, 2, (5,)).astype(dtype)
    inputs = [x, t, w] if weighted else [x, t]
    compare(
        lambda *a: F.binary_cross_entropy(*a[:2], weight=a[2] if weighted else None, reduction=reduction),
        lambda *a: torch.nn.functional.binary_cross_entropy(
            *a[:2], weight=a[2] if weighted else None, reduction=reduction
        ),
        inputs,
        grad=[True, False, False][: len(inputs)],
    )


def test_binary_cross_entropy_target_gradient_matches_torch():
    torch = torch_module()
    rng = np.random.default_rng(2)
    x, t = rng.uniform(0.01, 0.99, (3, 4)), rng.uniform(0, 1, (3, 4))
    compare(F.binary_cross_entropy, torch.nn.functional.binary_cross_entropy, [x, t])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0, 3.0])
def test_smooth_l1_matches_torch(dtype, reduction, beta):
    torch = torch_module()
    x, t = _pair(dtype)
    x.flat[0] = t.flat[0] + beta  # at the kink
    compare(
        lambda a, b: F.smooth_l1_loss(a, b, reduction=reduction, beta=beta),
        lambda a, b: torch.nn.functional.smooth_l1_loss(a, b, reduction=reduction, beta=beta),
        [x, t],
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_matches_torch(dtype, reduction, delta):
    torch = torch_module()
    x, t = _pair(dtype)
    x.flat[0] = t.flat[0] - delta
    compare(
        lambda a, b: F.huber_loss(a, b, reduction=reduction, delta=delta),
        lambda a, b: torch.nn.functional.huber_loss(a, b, reduction=reduction, delta=delta),
        [x, t],
    )
    w = np.random.default_rng(5).uniform(0, 2, x.shape).astype(dtype)
    compare(
        lambda a, b, c: F.huber_loss(a, b, reduction=reduction, delta=delta, weight=c),
        lambda a, b, c: torch.nn.functional.huber_loss(a, b, reduction=reduction, delta=delta, weight=c),
        [x, t, w],
        grad=[True, True, False],
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(dtype, reduction, log_target):
    torch = torch_module()
    rng = np.random.default_rng(3)
    x = np.log(rng.dirichlet(np.ones(5), 4)).astype(dtype)
    t = rng.dirichlet(np.ones(5), 4).astype(dtype)
    t[0, 0] = 0.0  # xlogy(0, 0) = 0 forward, NaN target gradient as torch
    if log_target:
        t = np.log(t + 0.1).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compare(
            lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
            lambda a, b: torch.nn.functional.kl_div(a, b, reduction=reduction, log_target=log_target),
            [x, t],
        )


@settings(max_examples=25, deadline=None)
@given(
    shape=st.sampled_from([(3,), (2, 3), (2, 1, 4)]),
    target_shape=st.sampled_from([None, (1,), "last"]),
    beta=st.floats(0, 2),
    delta=st.floats(0.1, 2),
)
def test_broadcast_targets_match_torch(shape, target_shape, beta, delta):
    torch = torch_module()
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    tshape = shape if target_shape is None else (1,) if target_shape == (1,) else shape[-1:]
    t = rng.standard_normal(tshape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compare(
            lambda a, b: F.smooth_l1_loss(a, b, beta=beta),
            lambda a, b: torch.nn.functional.smooth_l1_loss(a, b, beta=beta),
            [x, t],
        )
        compare(
            lambda a, b: F.huber_loss(a, b, delta=delta),
            lambda a, b: torch.nn.functional.huber_loss(a, b, delta=delta),
            [x, t],
        )


def test_size_mismatch_warns_like_torch():
    x, t = npconv.tensor(np.ones((2, 3))), npconv.tensor(np.ones(3))
    with pytest.warns(UserWarning, match="different to the input size"):
        F.smooth_l1_loss(x, t)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: F.binary_cross_entropy(npconv.tensor([1.5]), npconv.tensor([1.0])), ValueError),
        (lambda: F.binary_cross_entropy(npconv.tensor([0.5, 0.5]), npconv.tensor([1.0])), ValueError),
        (
            lambda: F.binary_cross_entropy(
                npconv.tensor([0.5]), npconv.tensor([1.0]), weight=npconv.tensor([1.0, 2.0])
            ),
            ValueError,
        ),
        (lambda: F.smooth_l1_loss(npconv.tensor([1.5]), npconv.tensor([1.0]), beta=-1.0), ValueError),
        (lambda: F.huber_loss(npconv.tensor([1.5]), npconv.tensor([1.0]), delta=0.0), ValueError),
        (lambda: F.huber_loss(npconv.tensor([1.5]), npconv.tensor([1.0]), reduction="avg"), ValueError),
        (
            lambda: F.huber_loss(
                npconv.tensor([1.5]), npconv.tensor([1.0]), weight=npconv.tensor([1.0, 1.0])
            ),
            ValueError,
        ),
        (lambda: F.kl_div(npconv.tensor([1.5]), npconv.tensor([1.0]), reduction="foo"), ValueError),
        (lambda: F.kl_div(npconv.tensor([1.5, 1.0]), npconv.tensor([1.0, 1.0, 1.0])), ValueError),
        (lambda: nn.HuberLoss(delta="1"), TypeError),
    ],
)
def test_bad_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()


def test_modules_match_torch():
    torch = torch_module()
    tnn = torch.nn
    w = np.array([1.0, 2.0, 0.5], np.float32)
    pairs = [
        (nn.BCELoss(), tnn.BCELoss()),
        (
            nn.BCELoss(weight=npconv.tensor(w), reduction="sum"),
            tnn.BCELoss(weight=torch.from_numpy(w), reduction="sum"),
        ),
        (nn.SmoothL1Loss(beta=0.5), tnn.SmoothL1Loss(beta=0.5)),
        (nn.HuberLoss(delta=2.0), tnn.HuberLoss(delta=2.0)),
        (
            nn.KLDivLoss(reduction="batchmean", log_target=True),
            tnn.KLDivLoss(reduction="batchmean", log_target=True),
        ),
        (nn.SmoothL1Loss(size_average=False), tnn.SmoothL1Loss(size_average=False)),
    ]
    rng = np.random.default_rng(4)
    x, t = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32), rng.uniform(0, 1, (2, 3)).astype(np.float32)
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        assert ours.reduction == theirs.reduction
        assert list(ours.state_dict()) == list(theirs.state_dict())
        compare(ours, theirs, [x, t])


@pytest.mark.parametrize("pos_weight", [None, np.array([0.5, 2.0, 1.0, 3.0, 1.5, 0.7], np.float32)])
def test_bce_with_logits_input_gradient_is_torchs_in_float32(pos_weight):
    """torch's formula (sigmoid(x) - t) keeps well-classified negatives' small gradients (x = -20, t = 0:
    2e-9; 1 - sigmoid(-x) cancelled to 0) and rounds large positives as torch does."""
    torch = torch_module()
    x = np.array([-20.0, -16.0, -12.492309, -10.0, 10.0, 16.0], np.float32)
    t = np.array([0, 0, 0, 0, 1, 1], np.float32)
    a = torch.from_numpy(x.copy()).requires_grad_()
    pw = None if pos_weight is None else torch.from_numpy(pos_weight)
    torch.nn.functional.binary_cross_entropy_with_logits(a, torch.from_numpy(t), reduction="sum",
                                                         pos_weight=pw).backward()
    b = npconv.tensor(x.copy(), requires_grad=True)
    ours_pw = None if pos_weight is None else npconv.tensor(pos_weight)
    F.binary_cross_entropy_with_logits(b, npconv.tensor(t), reduction="sum", pos_weight=ours_pw).backward()
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-6, atol=0)
    assert b.grad.numpy()[0] > 0


def test_bce_gradient_floor_is_torchs_float_constant():
    torch = torch_module()
    x = np.array([0.0, 1.0, 0.5])
    t = np.array([0.7, 0.2, 0.1])
    a = torch.from_numpy(x.copy()).requires_grad_()
    torch.nn.functional.binary_cross_entropy(a, torch.from_numpy(t), reduction="sum").backward()
    b = npconv.tensor(x.copy(), requires_grad=True)
    F.binary_cross_entropy(b, npconv.tensor(t), reduction="sum").backward()
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-15)


@pytest.mark.parametrize("target", ["index", "probability"])
def test_a_negative_label_smoothing_smooths_nothing_as_torchs(target):
    torch = torch_module()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    t = np.array([0, 2, 1, 1]) if target == "index" else rng.dirichlet(np.ones(3), 4)
    theirs = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), label_smoothing=-0.1)
    ours = F.cross_entropy(npconv.tensor(x), npconv.tensor(t), label_smoothing=-0.1)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-13)
    assert float(ours) == pytest.approx(float(F.cross_entropy(npconv.tensor(x), npconv.tensor(t))), rel=1e-13)
    with pytest.raises(ValueError, match="label_smoothing must be between"):
        F.cross_entropy(npconv.tensor(x), npconv.tensor(t), label_smoothing=1.5)
