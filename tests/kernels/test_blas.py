"""The compiled core's matrix product (csrc/gemm.h, csrc/blas.h) alone, against NumPy's matmul in
float64: npconv's own gemm on each ISA build and SciPy's BLAS."""

from __future__ import annotations

import numpy as np
import pytest

from npconv import backends
from npconv.kernels import blas
from npconv.kernels.blas import gemm_routines

pytestmark = pytest.mark.skipif(not backends.core.available, reason="the compiled core is not in use")


@pytest.fixture(params=[True, False], ids=["own", "blas"])
def own(request, monkeypatch):
    monkeypatch.setattr(blas, "OWN_GEMM", request.param)
    return request.param


def _gemm(*args):
    backends.core.module.gemm(backends.core.isa_index, gemm_routines(), *args)


# sizes around the register tile (8 or 4 rows x 48 or 24 columns), the packing blocks (256 deep,
# 768 wide, 256 rows) and degenerate ones; 512 and 1024 rows: a transposed A's pitch of 2 or 4 KiB,
# which the 32-byte build copies into rows block by block
SHAPES = [(5, 7, 3), (1, 9, 1), (33, 2, 17), (4, 4, 0), (8, 48, 256), (9, 49, 257), (17, 100, 33),
          (3, 770, 5), (260, 20, 12), (64, 65, 300), (512, 49, 300), (1024, 20, 33)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_gemm_matches_matmul(isa, own, dtype, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    op_a, op_b = (a.T if trans_a else a).astype(np.float64), (b.T if trans_b else b).astype(np.float64)
    expected = 1.5 * (op_a @ op_b) + 0.5 * c
    _gemm(trans_a, trans_b, 1.5, a, b, 0.5, c)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol * max(1, np.sqrt(k)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_beta_zero_does_not_read_c_and_keeps_nan_local(isa, own, dtype):
    """beta == 0 overwrites C (NaN there does not leak); a NaN/inf in A or B reaches exactly the
    rows/columns it multiplies, whichever product runs (zero padding of the tiles adds none)."""
    m, n, k = 11, 53, 9
    a, b = np.ones((m, k), dtype), np.ones((k, n), dtype)
    a[3, 2], b[4, 50] = np.nan, np.inf
    c = np.full((m, n), np.nan, dtype)
    _gemm(False, False, 1.0, a, b, 0.0, c)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(c), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(expected))
    assert np.isnan(c).sum() == n and np.isinf(c).sum() == m - 1


# widths past whole vectors of 16 (AVX-512) and 8 (AVX2) lanes by 1..8 columns, which the gemm computes
# as dot products beside its tiles (gm_dots); rows around the tile and the packing threshold, depths
# with and without a scalar tail and across packing blocks
LEFTOVER_WIDTHS = [1, 3, 7, 8, 9, 11, 17, 20, 24, 26, 33, 40, 49, 52, 56, 98, 104]


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m", [3, 8, 13, 170])
@pytest.mark.parametrize("k", [1, 21, 300])
def test_gemm_leftover_columns_match_matmul(isa, trans_a, m, k):
    rng = np.random.default_rng(m * 1000 + k)
    for n in LEFTOVER_WIDTHS:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = rng.standard_normal((m, n)).astype(np.float32)
        expected = 0.75 * ((a.T if trans_a else a).astype(np.float64) @ b) - 2.0 * c
        _gemm(trans_a, False, 0.75, a, b, -2.0, c)
        np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k), err_msg=f"n={n}")


@pytest.mark.parametrize("n", [17, 49])
def test_gemm_leftover_columns_keep_nan_and_inf_local(isa, n):
    """A NaN in A's row and an inf in a leftover column of B reach exactly their row and column."""
    m, k = 170, 300
    a, b = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
    a[100, 290], b[299, n - 1] = np.nan, np.inf
    c = np.full((m, n), np.nan, np.float32)
    _gemm(False, False, 1.0, a, b, 0.0, c)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(c), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(expected))
    assert np.isnan(c).sum() == n and np.isinf(c).sum() == m - 1


def test_gemm_rejects_mismatched_operands():
    a, b, c = np.ones((3, 4), np.float32), np.ones((5, 2), np.float32), np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        _gemm(False, False, 1.0, a, b, 0.0, c)
    with pytest.raises(ValueError, match="one element type"):
        _gemm(False, False, 1.0, a, b.astype(np.float64), 0.0, c)
    with pytest.raises(TypeError, match="sgemm capsule"):
        backends.core.module.gemm(backends.core.isa_index, (1, 2, True), False, False, 1.0, a,
                                  np.ones((4, 2), np.float32), 0.0, c)
    with pytest.raises(TypeError, match="own: bool"):
        backends.core.module.gemm(backends.core.isa_index, gemm_routines()[:2], False, False, 1.0, a,
                                  np.ones((4, 2), np.float32), 0.0, c)
    assert not c.any()
