"""Losses against torch: cross entropy (indices and probabilities), NLL, MSE, L1, BCE with logits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import assert_close, to_torch, torch_module

DTYPES = [np.float64, np.float32]
REDUCTIONS = ["mean", "sum", "none"]


def _compare(ours, theirs, inputs: list[np.ndarray], grad_of: tuple[int, ...], seed: int = 0) -> None:
    """Loss value and gradients w.r.t. ``inputs[i]`` for ``i in grad_of`` equal torch's."""
    torch = torch_module()
    ours_in = [npconv.Tensor(a.copy(), requires_grad=i in grad_of) for i, a in enumerate(inputs)]
    theirs_in = [to_torch(a, i in grad_of) for i, a in enumerate(inputs)]
    loss, loss_t = ours(*ours_in), theirs(*theirs_in)
    assert_close(loss, loss_t, dtype=inputs[0].dtype, what="loss")
    gy = np.random.default_rng(seed).standard_normal(loss.shape).astype(inputs[0].dtype)
    loss.backward(gy)
    loss_t.backward(torch.from_numpy(gy))
    for i in grad_of:
        assert_close(ours_in[i].grad, theirs_in[i].grad, dtype=inputs[0].dtype, what=f"grad of argument {i}")


@st.composite
def class_problem(draw):
    batch = draw(st.integers(1, 4))
    classes = draw(st.integers(2, 5))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    seed = draw(st.integers(0, 100))
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((batch, classes) + extra) * 3
    target = rng.integers(0, classes, (batch,) + extra)
    ignore = draw(st.sampled_from([-100, 0, 1]))
    if draw(st.booleans()):
        target.flat[0] = ignore
    weight = rng.uniform(0.1, 2, classes) if draw(st.booleans()) else None
    return logits, target, ignore, weight


@given(
    problem=class_problem(),
    reduction=st.sampled_from(REDUCTIONS),
    smoothing=st.sampled_from([0.0, 0.1, 0.5]),
    dtype=st.sampled_from(DTYPES),
)
def test_cross_entropy_with_class_indices_matches_torch(problem, reduction, smoothing, dtype, torch):
    TF = torch.nn.functional
    logits, target, ignore, weight = problem
    w = None if weight is None else weight.astype(dtype)
    _compare(
        lambda x, t: F.cross_entropy(
            x, t, w, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing
        ),
        lambda x, t: TF.cross_entropy(
            x,
            t,
            None if w is None else torch.from_numpy(w),
            ignore_index=ignore,
            reduction=reduction,
            label_smoothing=smoothing,
        ),
        [logits.astype(dtype), target],
        (0,),
    )
    log_probs = np.asarray(TF.log_softmax(torch.from_numpy(logits), 1)).astype(dtype)
    _compare(
        lambda x, t: F.nll_loss(x, t, w, ignore_index=ignore, reduction=reduction),
        lambda x, t: TF.nll_loss(
            x, t, None if w is None else torch.from_numpy(w), ignore_index=ignore, reduction=reduction
        ),
        [log_probs, target],
        (0,),
    )


@given(
    problem=class_problem(),
    reduction=st.sampled_from(REDUCTIONS),
    smoothing=st.sampled_from([0.0, 0.2]),
    dtype=st.sampled_from(DTYPES),
)
def test_cross_entropy_with_probabilities_matches_torch(problem, reduction, smoothing, dtype, torch):
    TF = torch.nn.functional
    logits, _, _, weight = problem
    rng = np.random.default_rng(logits.size)
    target = rng.dirichlet(np.ones(logits.shape[1]), (logits.shape[0],) + logits.shape[2:])
    target = np.moveaxis(target, -1, 1).astype(dtype)
    w = None if weight is None else weight.astype(dtype)
    _compare(
        lambda x, t: F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=smoothing),
        lambda x, t: TF.cross_entropy(
            x, t, None if w is None else torch.from_numpy(w), reduction=reduction, label_smoothing=smoothing
        ),
        [logits.astype(dtype), target],
        (0, 1),
    )


def test_unbatched_and_all_ignored_cross_entropy_match_torch(torch):
    TF = torch.nn.functional
    x = np.random.default_rng(0).standard_normal(4)
    for reduction in REDUCTIONS:
        _compare(
            lambda a, t, r=reduction: F.cross_entropy(a, t, reduction=r),
            lambda a, t, r=reduction: TF.cross_entropy(a, t, reduction=r),
            [x, np.array(2)],
            (0,),
        )
    ours = F.cross_entropy(np.zeros((2, 3)), np.array([-100, -100]))
    theirs = TF.cross_entropy(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([-100, -100]))
    assert np.isnan(ours.item()) and np.isnan(theirs.item())


@given(
    dtype=st.sampled_from(DTYPES),
    reduction=st.sampled_from(REDUCTIONS),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    weighted=st.booleans(),
)
def test_mse_and_l1_match_torch(dtype, reduction, shape, weighted, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(len(shape))
    x, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(0.1, 1, shape).astype(dtype) if weighted else None
    args = [x, t] + ([w] if weighted else [])
    grads = (0, 1, 2) if weighted else (0, 1)
    for ours, theirs in [(F.mse_loss, TF.mse_loss), (F.l1_loss, TF.l1_loss)]:
        _compare(
            lambda a, b, *c, f=ours: f(a, b, reduction=reduction, weight=c[0] if c else None),
            lambda a, b, *c, f=theirs: f(a, b, reduction=reduction, weight=c[0] if c else None),
            args,
            grads,
        )


def test_mse_broadcasting_warns_like_torch(torch):
    TF = torch.nn.functional
    x, t = np.ones((3, 1)), np.arange(4.0)
    with pytest.warns(UserWarning, match="different to the input size"):
        ours = F.mse_loss(x, t)
    with pytest.warns(UserWarning):
        theirs = TF.mse_loss(torch.from_numpy(x), torch.from_numpy(t))
    assert_close(ours, theirs)


@given(
    dtype=st.sampled_from(DTYPES),
    reduction=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    positive=st.booleans(),
)
def test_bce_with_logits_matches_torch(dtype, reduction, weighted, positive, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(int(weighted) + 2 * int(positive))
    x = (rng.standard_normal((4, 3)) * 10).astype(dtype)
    x[0] = [40.0, -40.0, 0.0]  # saturated logits stay finite
    t = rng.uniform(0, 1, (4, 3)).astype(dtype)
    w = rng.uniform(0.5, 2, (1, 3)).astype(dtype) if weighted else None
    pw = rng.uniform(0.5, 3, 3).astype(dtype) if positive else None

    def theirs(a, b):
        return TF.binary_cross_entropy_with_logits(
            a,
            b,
            None if w is None else torch.from_numpy(w),
            reduction=reduction,
            pos_weight=None if pw is None else torch.from_numpy(pw),
        )

    _compare(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, w, reduction=reduction, pos_weight=pw),
        theirs,
        [x, t],
        (0, 1),
    )


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda m: m.CrossEntropyLoss(), "indices"),
        (lambda m: m.CrossEntropyLoss(weight=WEIGHT(m), ignore_index=1, label_smoothing=0.1), "indices"),
        (lambda m: m.CrossEntropyLoss(reduction="sum"), "probabilities"),
        (lambda m: m.NLLLoss(weight=WEIGHT(m), reduction="none"), "indices"),
        (lambda m: m.MSELoss(), "regression"),
        (lambda m: m.L1Loss(reduction="sum"), "regression"),
        (lambda m: m.BCEWithLogitsLoss(pos_weight=WEIGHT(m)), "binary"),
        (lambda m: m.BCEWithLogitsLoss(weight=WEIGHT(m), reduction="none"), "binary"),
        (lambda m: m.MSELoss(size_average=False), "regression"),
    ],
)
def test_loss_modules_match_torch(make, problem, torch):
    tnn = torch.nn
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.reduction == theirs.reduction
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3))
    target = {
        "indices": rng.integers(0, 3, 5),
        "probabilities": rng.dirichlet(np.ones(3), 5),
        "regression": rng.standard_normal((5, 3)),
        "binary": rng.integers(0, 2, (5, 3)).astype(np.float64),
    }[problem]
    _compare(ours, theirs, [x, target], (0,))


def WEIGHT(m):  # noqa: N802 - a class-weight vector in the module library's own tensor type
    torch = torch_module()
    tnn = torch.nn
    values = np.array([0.5, 2.0, 1.0])
    return torch.from_numpy(values) if m is tnn else npconv.Tensor(values)


def test_cross_entropy_gradient_by_finite_differences():
    rng = np.random.default_rng(2)
    x, target, w = rng.standard_normal((3, 4, 2)), rng.integers(0, 4, (3, 2)), rng.uniform(0.5, 2, 4)

    def loss(a):
        return F.cross_entropy(a, target, w, label_smoothing=0.3).item()

    xt = npconv.Tensor(x.copy(), requires_grad=True)
    F.cross_entropy(xt, target, w, label_smoothing=0.3).backward()
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        numeric[i] = (loss(x + e) - loss(x - e)) / 2e-6
    np.testing.assert_allclose(xt.grad.numpy(), numeric, atol=1e-8)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 5])),
            ValueError,
            "Target 5 is out of bounds",
        ),
        (lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0, 1])), ValueError, "batch_size \\(3\\)"),
        (lambda: F.nll_loss(np.zeros((3, 4)), np.array([0.0, 1, 2])), TypeError, "integer type"),
        (lambda: F.cross_entropy(np.zeros((3, 4)), np.zeros((3, 5))), ValueError, "the input's shape"),
        (
            lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]), np.ones(3)),
            ValueError,
            "all 4 classes",
        ),
        (
            lambda: F.cross_entropy(np.zeros((1, 2)), np.array([0]), label_smoothing=2),
            ValueError,
            "label_smoothing",
        ),
        (
            lambda: F.mse_loss(np.zeros(3), np.zeros(3), reduction="avg"),
            ValueError,
            "avg is not a valid value",
        ),
        (lambda: F.mse_loss(np.zeros(3), np.zeros(4)), ValueError, "cannot be broadcast"),
        (lambda: F.l1_loss(np.zeros(3), np.zeros(3), weight=np.ones(2)), ValueError, "Weights and input"),
        (lambda: F.binary_cross_entropy_with_logits(np.zeros(3), np.zeros(2)), ValueError, "Target size"),
        (lambda: nn.CrossEntropyLoss(reduction="bad"), ValueError, "not a valid value for reduction"),
    ],
)
@pytest.mark.filterwarnings("ignore:Using a target size")
def test_losses_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_mean_over_only_ignored_targets_is_nan_with_zero_gradients(loss):
    """torch's values: the mean over no kept target is 0/0, and no logit receives a gradient."""
    x = npconv.tensor(np.array([[0.4, -0.4], [1.0, 2.0]]), requires_grad=True)
    y = getattr(F, loss)(x, npconv.tensor(np.array([1, 1])), ignore_index=1)
    y.backward()
    assert np.isnan(y.numpy())
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)
