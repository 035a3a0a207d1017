"""AdaptiveMaxPool1d/2d/3d (values, indices, gradients), Embedding and F.one_hot against torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from npconv.ops.pool import adaptive_max_pool_array
from torch_oracle import close, compare, torch_module


@settings(max_examples=25, deadline=None)
@given(
    nd=st.integers(1, 3),
    data=st.data(),
    dtype=st.sampled_from([np.float64, np.float32]),
    batched=st.booleans(),
    ties=st.booleans(),
)
def test_adaptive_max_pool_matches_torch(nd, data, dtype, batched, ties):
    torch = torch_module()
    spatial = tuple(data.draw(st.lists(st.integers(1, 7), min_size=nd, max_size=nd)))
    out = tuple(
        data.draw(st.one_of(st.none(), st.integers(1, 8)) if nd > 1 else st.integers(1, 8)) for _ in range(nd)
    )
    if nd > 1 and data.draw(st.booleans()):
        out = out[0] if out[0] is not None else 2
    shape = ((2,) if batched else ()) + (3,) + spatial
    rng = np.random.default_rng(0)
    x = (rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    ours = getattr(F, f"adaptive_max_pool{nd}d")
    theirs = getattr(torch.nn.functional, f"adaptive_max_pool{nd}d")
    compare(lambda t: ours(t, out), lambda t: theirs(t, out), [x])
    y, idx = ours(npconv.tensor(x), out, return_indices=True)
    yt, it = theirs(torch.from_numpy(x), out, return_indices=True)
    close(y, yt)
    close(idx, it, "indices")


def test_adaptive_max_pool_nan_and_inf_follow_torch():
    torch = torch_module()
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 6))
    x[0, 0, 1, 2] = np.nan
    x[0, 0, 1, 4] = np.nan
    x[0, 1] = -np.inf
    for out in [(2, 3), (3, 4), (1, 1)]:
        compare(
            lambda t, o=out: F.adaptive_max_pool2d(t, o),
            lambda t, o=out: torch.nn.functional.adaptive_max_pool2d(t, o),
            [x],
        )
        close(
            F.adaptive_max_pool2d(npconv.tensor(x), out, True)[1],
            torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(x), out, True)[1],
        )


def test_adaptive_max_pool_numpy_reference_without_torch():
    """A per-window loop over the definition (first maximum in row-major order)."""
    x = np.random.default_rng(2).integers(0, 4, (2, 3, 5, 7)).astype(np.float64)
    y, idx = adaptive_max_pool_array(x, (3, 4))
    for i in range(3):
        h0, h1 = (i * 5) // 3, -((-(i + 1) * 5) // 3)
        for j in range(4):
            w0, w1 = (j * 7) // 4, -((-(j + 1) * 7) // 4)
            window = x[:, :, h0:h1, w0:w1].reshape(2, 3, -1)
            np.testing.assert_array_equal(y[:, :, i, j], window.max(axis=2))
            first = window.argmax(axis=2)
            np.testing.assert_array_equal(
                idx[:, :, i, j], (h0 + first // (w1 - w0)) * 7 + w0 + first % (w1 - w0)
            )


def test_adaptive_max_pool_modules_match_torch():
    torch = torch_module()
    for ours, theirs, shape in [
        (nn.AdaptiveMaxPool1d(3), torch.nn.AdaptiveMaxPool1d(3), (2, 3, 7)),
        (nn.AdaptiveMaxPool2d((2, None)), torch.nn.AdaptiveMaxPool2d((2, None)), (2, 3, 5, 4)),
        (nn.AdaptiveMaxPool3d(2), torch.nn.AdaptiveMaxPool3d(2), (1, 2, 3, 4, 5)),
    ]:
        assert repr(ours) == repr(theirs)
        compare(ours, theirs, [np.random.default_rng(3).standard_normal(shape)])
    with pytest.raises(ValueError):
        F.adaptive_max_pool2d(npconv.tensor(np.ones((2, 3))), 2)
    with pytest.raises(ValueError):
        F.adaptive_max_pool1d(npconv.tensor(np.ones((1, 2, 3))), (2, 2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("padding_idx", "scale", "max_norm"),
    [(None, False, None), (1, False, None), (-1, True, None), (None, False, 1.2), (2, True, 0.5)],
)
def test_embedding_matches_torch(padding_idx, scale, max_norm, dtype):
    torch = torch_module()
    idx = np.array([[0, 2, 1, 2], [3, 3, 3, 0]], np.int64)
    w = np.random.default_rng(4).standard_normal((5, 3)).astype(dtype)
    wn, wt = npconv.tensor(w.copy(), requires_grad=True), torch.from_numpy(w.copy()).requires_grad_()
    kwargs = dict(padding_idx=padding_idx, scale_grad_by_freq=scale, max_norm=max_norm)
    y = F.embedding(npconv.tensor(idx), wn, **kwargs)
    yt = torch.nn.functional.embedding(torch.from_numpy(idx), wt, **kwargs)
    close(y, yt)
    close(wn, wt.detach(), "renormalised weight")
    g = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    close(wn.grad, wt.grad, "grad weight")


def test_embedding_module_matches_torch():
    torch = torch_module()
    for args, kwargs in [
        ((10, 3), {}),
        ((10, 3), {"padding_idx": 0, "max_norm": 1.0, "sparse": True}),
        ((4, 2), {"norm_type": 1.0, "scale_grad_by_freq": True, "padding_idx": -2}),
    ]:
        ours, theirs = nn.Embedding(*args, **kwargs), torch.nn.Embedding(*args, **kwargs)
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        if ours.padding_idx is not None:
            assert ours.padding_idx == theirs.padding_idx
            assert not ours.weight.numpy()[ours.padding_idx].any()
    pretrained = np.arange(6.0).reshape(3, 2)
    ours = nn.Embedding.from_pretrained(npconv.tensor(pretrained))
    theirs = torch.nn.Embedding.from_pretrained(torch.from_numpy(pretrained))
    assert ours.weight.requires_grad == theirs.weight.requires_grad is False
    close(ours(npconv.tensor(np.array([2, 0]))), theirs(torch.tensor([2, 0])))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: F.embedding(npconv.tensor(np.array([1, 5])), npconv.tensor(np.ones((3, 2)))), IndexError),
        (lambda: F.embedding(npconv.tensor(np.array([1.0])), npconv.tensor(np.ones((3, 2)))), TypeError),
        (
            lambda: F.embedding(npconv.tensor(np.array([1])), npconv.tensor(np.ones((3, 2))), padding_idx=3),
            ValueError,
        ),
        (
            lambda: F.embedding(npconv.tensor(np.array([1])), npconv.tensor(np.ones((3, 2))), sparse=True),
            ValueError,
        ),
        (lambda: nn.Embedding(3, 2, padding_idx=3), ValueError),
        (lambda: F.one_hot(npconv.tensor(np.array([1.0, 2.0]))), TypeError),
        (lambda: F.one_hot(npconv.tensor(np.array([1, -2]))), ValueError),
        (lambda: F.one_hot(npconv.tensor(np.array([1, 5])), 3), ValueError),
        (lambda: F.one_hot(npconv.tensor(np.array([], np.int64))), ValueError),
    ],
)
def test_bad_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()


def test_rejected_max_norm_call_leaves_the_weight_unchanged():
    w = npconv.tensor(np.full((3, 2), 5.0))
    with pytest.raises(IndexError):
        F.embedding(npconv.tensor(np.array([0, 7])), w, max_norm=1.0)
    assert (w.numpy() == 5.0).all()


@pytest.mark.parametrize(("shape", "classes"), [((4,), -1), ((2, 3), 5), ((0,), 3), ((), 4)])
def test_one_hot_matches_torch(shape, classes):
    torch = torch_module()
    idx = np.random.default_rng(6).integers(0, 3, shape).astype(np.int64)
    close(F.one_hot(npconv.tensor(idx), classes), torch.nn.functional.one_hot(torch.from_numpy(idx), classes))
