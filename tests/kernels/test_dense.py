"""The row-split products of the linear layer (kernels/dense.py) against torch's linear, on one and
two worker threads (the size threshold lowered so that small products take the split path)."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn.functional as F
from npconv.kernels import dense
from torch_oracle import assert_close


@pytest.mark.parametrize("x_shape", [(5, 4), (2, 3, 4), (4,), (1, 4), (0, 4)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_matches_torch(x_shape, dtype, parallel, torch):
    rng = np.random.default_rng(len(x_shape))

    def draw(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, w, b = draw(*x_shape), draw(3, 4), draw(3)
    gy = draw(*(x_shape[:-1] + (3,)))
    ours = [npconv.Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    theirs = [torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b)]
    y = F.linear(*ours)
    ty = torch.nn.functional.linear(*theirs)
    y.backward(gy)
    ty.backward(torch.from_numpy(gy))
    assert_close(y, ty, what="y")
    for name, a, t in zip(("gx", "gw", "gb"), ours, theirs, strict=True):
        assert_close(a.grad, t.grad, what=name)


def test_products_without_torch(parallel):
    rng = np.random.default_rng(3)
    a, b, c = rng.standard_normal((7, 5)), rng.standard_normal((5, 4)), rng.standard_normal((7, 3))
    np.testing.assert_allclose(dense.matmul_rows(a, b), a @ b, rtol=1e-12)
    np.testing.assert_allclose(dense.matmul_t_rows(a, c), a.T @ c, rtol=1e-12, atol=1e-12)
