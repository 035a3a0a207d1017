"""The compiled core's BLAS plumbing (csrc/blas.h) against NumPy's matmul."""

from __future__ import annotations

import numpy as np
import pytest

from npconv import backends
from npconv.kernels.blas import gemm_routines

pytestmark = pytest.mark.skipif(not backends.core.available, reason="the compiled core is not in use")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize(("m", "n", "k"), [(5, 7, 3), (1, 9, 1), (33, 2, 17), (4, 4, 0)])
def test_gemm_matches_matmul(dtype, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = 1.5 * ((a.T if trans_a else a) @ (b.T if trans_b else b)) + 0.5 * c
    backends.core.module.gemm(gemm_routines(), trans_a, trans_b, 1.5, a, b, 0.5, c)
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_gemm_rejects_mismatched_operands():
    a, b, c = np.ones((3, 4), np.float32), np.ones((5, 2), np.float32), np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        backends.core.module.gemm(gemm_routines(), False, False, 1.0, a, b, 0.0, c)
    with pytest.raises(ValueError, match="one element type"):
        backends.core.module.gemm(gemm_routines(), False, False, 1.0, a, b.astype(np.float64), 0.0, c)
    with pytest.raises(TypeError, match="capsules"):
        backends.core.module.gemm((1, 2), False, False, 1.0, a, np.ones((4, 2), np.float32), 0.0, c)
    assert not c.any()
