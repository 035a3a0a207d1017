"""The compiled core's ``linear_rows`` (kernels/dense.py's one-row linear product, the weight's rows
split over the worker threads) on every ISA variant this CPU runs, against a float64 NumPy product:
sizes around the vector widths and the 4-row blocks, column ranges, NaN/inf staying in their row and
column, the extension's guards; and ``nn.Linear`` at batch 1 through it against torch."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import backends
from npconv.kernels import dense

pytestmark = pytest.mark.skipif(not backends.core.available,
                                reason=f"compiled core not in use: {backends.core.reason}")

TOL = {np.float32: 2e-6, np.float64: 1e-14}


def _linear_rows(x: np.ndarray, w: np.ndarray, y: np.ndarray, start: int, stop: int) -> None:
    backends.core.module.linear_rows(backends.core.isa_index, x, w, y, x.shape[0], x.shape[1], w.shape[0],
                                     start, stop)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_columns_match_the_float64_product(dtype, isa):
    rng = np.random.default_rng(0)
    for rows, k, m in [(1, 1, 1), (1, 15, 3), (1, 16, 4), (1, 17, 5), (2, 33, 9), (3, 64, 8), (1, 1280, 37),
                       (4, 7, 6), (1, 0, 3)]:
        x = rng.standard_normal((rows, k)).astype(dtype)
        w = rng.standard_normal((m, k)).astype(dtype)
        expected = x.astype(np.float64) @ w.astype(np.float64).T
        scale = max(1.0, float(np.abs(x).sum(axis=1).max(initial=0) * np.abs(w).max(initial=0)))
        for start, stop in [(0, m), (m // 2, m), (1 if m > 1 else 0, max(m - 1, 1 if m > 1 else 0))]:
            y = np.full((rows, m), 7.0, dtype)
            _linear_rows(x, w, y, start, stop)
            assert (np.abs(y[:, start:stop] - expected[:, start:stop]) <= TOL[dtype] * scale).all()
            assert (y[:, :start] == 7).all() and (y[:, stop:] == 7).all()  # only its columns written


def test_non_finite_values_stay_in_their_row_and_column(isa):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 21)).astype(np.float32)
    w = rng.standard_normal((10, 21)).astype(np.float32)
    x[1, 20] = np.nan  # the tail, past the whole vectors
    w[6, 3] = np.inf
    y = np.zeros((3, 10), np.float32)
    _linear_rows(x, w, y, 0, 10)
    assert np.isnan(y[1]).all()
    rest = np.delete(np.delete(y, 1, axis=0), 6, axis=1)
    assert np.isfinite(rest).all()
    assert np.isinf(y[[0, 2], 6]).all() or np.isnan(y[[0, 2], 6]).any()  # inf times a value: +-inf
    expected = np.delete(np.delete(x @ w.T, 1, axis=0), 6, axis=1)
    np.testing.assert_allclose(rest, expected, rtol=1e-5, atol=1e-5)


def test_extension_rejects_bad_arguments():
    core, isa = backends.core.module, backends.core.isa_index
    x, w, y = np.ones((1, 8), np.float32), np.ones((4, 8), np.float32), np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="column range"):
        core.linear_rows(isa, x, w, y, 1, 8, 4, 0, 5)
    with pytest.raises(ValueError, match="column range"):
        core.linear_rows(isa, x, w, y, 1, 8, 4, 3, 2)
    with pytest.raises(ValueError, match="non-negative sizes"):
        core.linear_rows(isa, x, w, y, -1, 8, 4, 0, 4)
    with pytest.raises(ValueError, match="non-negative sizes"):
        core.linear_rows(isa, x, w, y, 2**62, 2**62, 4, 0, 4)
    with pytest.raises(ValueError, match="elements"):
        core.linear_rows(isa, x, w, y, 1, 8, 3, 0, 3)  # w holds 4 rows, not 3
    with pytest.raises(TypeError, match="element type"):
        core.linear_rows(isa, x, w.astype(np.float64), y, 1, 8, 4, 0, 4)
    with pytest.raises(TypeError, match="float32 or float64"):
        core.linear_rows(isa, x.astype(np.int32), w, y, 1, 8, 4, 0, 4)
    with pytest.raises((ValueError, TypeError, BufferError)):
        core.linear_rows(isa, x, np.ones((8, 4), np.float32).T, y, 1, 8, 4, 0, 4)  # not C-contiguous
    assert (y == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_at_small_batches_runs_on_the_core_and_matches_torch(dtype, torch, monkeypatch, two_threads):
    """A one-row input (float32: up to FEW_ROWS_MAX rows, each row count through the kernel's tiles of
    four rows) and a weight of FEW_ROWS_MIN_WEIGHT elements or more: the core's product over the
    threads (its kernel is called once per worker), equal to torch's within the dtype's tolerance; one
    element fewer, a transposed weight or more rows (float64: a second row): the previous paths, the
    same results."""
    calls = []
    run_spans = dense.workspace.run_spans

    def counted(kernel, args, spans, *rest, **kwargs):
        if kernel is backends.core.module.linear_rows:
            calls.extend(spans)
        return run_spans(kernel, args, spans, *rest, **kwargs)

    monkeypatch.setattr(dense.workspace, "run_spans", counted)
    rng = np.random.default_rng(2)
    k = 520  # not a whole number of vectors: the kernel's scalar tail too
    m = -(-dense.FEW_ROWS_MIN_WEIGHT // k)
    w = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    tf = torch.nn.functional
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-11)
    most = dense.FEW_ROWS_MAX if dtype == np.float32 else 1
    for rows in range(1, most + 1):
        calls.clear()
        x = rng.standard_normal((rows, k)).astype(dtype)
        expected = tf.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
        y = npconv.nn.functional.linear(*(npconv.from_numpy(a) for a in (x, w, b))).numpy()
        np.testing.assert_allclose(y, expected, **tol)
        assert sorted(calls) == [(0, m // 2), (m // 2, m)]
    x = x[:1]
    w_small = w[:(dense.FEW_ROWS_MIN_WEIGHT - 1) // k]
    for other_x, other_w in [(x, w_small), (x, np.asfortranarray(w)), (np.concatenate([x] * (most + 1)), w)]:
        calls.clear()
        got = npconv.nn.functional.linear(npconv.from_numpy(other_x), npconv.from_numpy(other_w)).numpy()
        dense_w = torch.from_numpy(np.ascontiguousarray(other_w))
        reference = tf.linear(torch.from_numpy(other_x), dense_w).numpy()
        np.testing.assert_allclose(got, reference, **tol)
        assert calls == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_few_rows_product_is_the_layer_s_forward_bit_for_bit(dtype, monkeypatch):
    """dense.bind_linear prepared on fixed arrays gives ops.linear's few-rows forward (with and without a
    bias) exactly, run after run; it refuses with None what linear_forward would not run on the kernel."""
    monkeypatch.setattr(dense, "FEW_ROWS_MIN_WEIGHT", 0)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((37, 50)).astype(dtype)
    b = rng.standard_normal(37).astype(dtype)
    most = dense.FEW_ROWS_MAX if dtype == np.float32 else 1
    for rows in sorted({1, min(3, most), most}):
        x, y = np.empty((rows, 50), dtype), np.empty((rows, 37), dtype)
        for bias in (None, b):
            run = dense.bind_linear(x, w, bias, y)
            for _ in range(2):
                x[...] = rng.standard_normal(x.shape)
                run()
                expected = npconv.nn.functional.linear(npconv.tensor(x), npconv.tensor(w),
                                                       None if bias is None else npconv.tensor(bias)).numpy()
                np.testing.assert_array_equal(y, expected)
    x, y = x[:1], y[:1]
    assert dense.bind_linear(np.empty((most + 1, 50), dtype), w, b, np.empty((most + 1, 37), dtype)) is None
    assert dense.bind_linear(x, w, b.astype(np.float16), y) is None
    assert dense.bind_linear(x, np.asfortranarray(w), b, y) is None
