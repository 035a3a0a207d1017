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


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 16, 17, 40, 64, 65])
def test_few_rows_of_a_large_weight_run_as_a_convolution(rows, monkeypatch, parallel):
    """A linear layer of 2-64 rows (8-64 for grad_input) and a large float32 weight takes the planner's
    1x1 convolution over the rows, its forward also with a mid-sized weight at 8-16 rows on AVX-512
    (the core's AVX-512 and AVX2 variants in turn where the CPU has them); values and gradients match
    float64 NumPy either way; float64, one row, 65 rows and small weights keep the row-split
    products; a forward of up to FEW_ROWS_MAX float32 rows (one float64 row) of a weight of
    FEW_ROWS_MIN_WEIGHT elements runs on the core's linear_rows instead."""
    calls: list[str] = []
    for name in ("forward", "grad_input", "grad_weight"):
        original = getattr(dense.plan, name)
        monkeypatch.setattr(dense.plan, name,
                            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    compiled = npconv.kernels.algorithm.available()["gemm"].compiled
    rng = np.random.default_rng(rows)
    isas = [v for v in ("avx512", "avx2") if v in npconv.backends.core.isas] or [None]
    for isa in isas:
        if isa is not None:
            monkeypatch.setattr(npconv.backends.core, "isa", isa)
        for dtype, (out, inp) in ((np.float32, (1024, 512)), (np.float64, (1024, 512)),
                                  (np.float32, (256, 256)), (np.float32, (48, 64))):
            x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((rows, inp), (out, inp), (out,)))
            gy = rng.standard_normal((rows, out)).astype(dtype)
            xt, wt, bt = (npconv.Tensor(a.copy(), requires_grad=True) for a in (x, w, b))
            calls.clear()
            y = F.linear(xt, wt, bt)
            y.backward(npconv.Tensor(gy))
            wide = [a.astype(np.float64) for a in (x, w, b, gy)]
            tol = 1e-5 if dtype == np.float32 else 1e-12
            for got, expected in ((y, wide[0] @ wide[1].T + wide[2]), (xt.grad, wide[3] @ wide[1]),
                                  (wt.grad, wide[3].T @ wide[0]), (bt.grad, wide[3].sum(axis=0))):
                got = got.numpy()
                assert got.dtype == dtype and got.shape == expected.shape and got.flags.c_contiguous
                np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())
            large = dtype == np.float32 and out * inp >= dense.ROWS_AS_POSITIONS_MIN_WEIGHT and compiled
            # the forward's measured rule for mid-sized weights: 64 K elements, 8-16 rows, AVX-512
            mid = (dtype == np.float32 and out * inp >= 1 << 16 and compiled and 8 <= rows <= 16
                   and isa == "avx512")
            expected_calls = [name for name, low in (("forward", 2), ("grad_input", 8), ("grad_weight", 2))
                              if large and low <= rows <= dense.ROWS_AS_POSITIONS_MAX]
            expected_calls += ["forward"] if mid and not large else []
            few = (npconv.backends.core.available and out * inp >= dense.FEW_ROWS_MIN_WEIGHT
                   and rows <= (dense.FEW_ROWS_MAX if dtype == np.float32 else 1))
            if few:  # the forward on the core's linear_rows
                expected_calls = [name for name in expected_calls if name != "forward"]
            assert sorted(calls) == sorted(expected_calls), (isa, dtype, out, inp)


@pytest.mark.parametrize("rows, inner, cols, switches", [(1, 256, 10, False), (1, 9215, 1, False),
                                                         (1, 9216, 1, True), (2, 512, 256, False),
                                                         (2, 512, 257, True), (3, 1, 1, False)])
def test_products_openblas_runs_on_one_thread_keep_its_thread_count(rows, inner, cols, switches, monkeypatch):
    """A product under OpenBLAS's own one-thread thresholds (BLAS_ONE_THREAD_MACS: a matrix-vector
    product, NumPy's for one row, or a small matrix product) runs without switching BLAS's thread
    count; larger ones run with one BLAS thread per worker. The values are a @ b either way."""
    calls = []
    real = dense.workspace.blas_threads

    def counted(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(dense.workspace, "blas_threads", counted)
    rng = np.random.default_rng(rows * inner + cols)
    a, b = rng.standard_normal((rows, inner)), rng.standard_normal((inner, cols))
    np.testing.assert_allclose(dense.matmul_rows(a, b), a @ b, rtol=1e-12, atol=1e-12)
    assert bool(calls) == switches
