"""F.unfold / F.fold and nn.Unfold / nn.Fold against torch, and their adjointness without torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import compare, torch_module

pair = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))


@settings(max_examples=25, deadline=None)
@given(
    kernel=pair,
    dilation=pair,
    stride=pair,
    padding=st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 1))),
    size=st.tuples(st.integers(3, 7), st.integers(3, 7)),
    batched=st.booleans(),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_unfold_and_fold_match_torch(kernel, dilation, stride, padding, size, batched, dtype):
    torch = torch_module()
    kw = dict(kernel_size=kernel, dilation=dilation, padding=padding, stride=stride)
    x = np.random.default_rng(0).standard_normal(((2,) if batched else ()) + (3,) + size).astype(dtype)
    try:
        expected = torch.nn.functional.unfold(torch.from_numpy(x), **kw)
    except RuntimeError:
        with pytest.raises(ValueError, match="sliding blocks"):
            F.unfold(npconv.tensor(x), **kw)
        return
    compare(lambda t: F.unfold(t, **kw), lambda t: torch.nn.functional.unfold(t, **kw), [x])
    cols = np.random.default_rng(1).standard_normal(expected.shape).astype(dtype)
    compare(lambda t: F.fold(t, size, **kw), lambda t: torch.nn.functional.fold(t, size, **kw), [cols])


def test_fold_is_the_adjoint_of_unfold_without_torch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5))
    kw = dict(kernel_size=(2, 3), dilation=(2, 1), padding=(1, 2), stride=(1, 2))
    cols = F.unfold(npconv.tensor(x), **kw).numpy()
    c = rng.standard_normal(cols.shape)
    back = F.fold(npconv.tensor(c), (6, 5), **kw).numpy()
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-12)
    # by hand: column (i, j) of the (6, 4) block grid reads xp[2*a + i, b + 2*j] at offset (a, b)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    assert cols.shape == (2, 18, 6 * 4)
    for a in range(2):
        for b in range(3):
            block = cols[:, a * 3 + b :: 6].reshape(2, 3, 6, 4)
            np.testing.assert_array_equal(block, xp[:, :, 2 * a : 2 * a + 6, b : b + 7 : 2])


def test_modules_repr_and_forward_match_torch():
    torch = torch_module()
    pairs = [
        (nn.Unfold(3), torch.nn.Unfold(3)),
        (
            nn.Unfold((2, 3), dilation=2, padding=1, stride=2),
            torch.nn.Unfold((2, 3), dilation=2, padding=1, stride=2),
        ),
        (nn.Fold((4, 5), 2), torch.nn.Fold((4, 5), 2)),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
    compare(pairs[1][0], pairs[1][1], [np.random.default_rng(3).standard_normal((2, 3, 7, 8))])
    compare(pairs[2][0], pairs[2][1], [np.random.default_rng(3).standard_normal((2, 12, 12))])


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: F.unfold(npconv.tensor(np.ones((2, 3, 4, 4, 4))), 2), ValueError),
        (lambda: F.unfold(npconv.tensor(np.ones((1, 1, 2, 2))), 3), ValueError),
        (lambda: F.unfold(npconv.tensor(np.ones((1, 1, 4, 4))), 0), ValueError),
        (lambda: F.unfold(npconv.tensor(np.ones((1, 1, 4, 4))), 2, padding="same"), TypeError),
        (lambda: F.fold(npconv.tensor(np.ones((1, 5, 9))), (4, 4), 2), ValueError),
        (lambda: F.fold(npconv.tensor(np.ones((1, 4, 8))), (4, 4), 2), ValueError),
        (lambda: F.fold(npconv.tensor(np.ones((1, 1, 4, 9))), (4, 4), 2), ValueError),
    ],
)
def test_bad_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()
