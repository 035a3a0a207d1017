"""Helpers to run the same computation in torch (the oracle) and npconv, and compare."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

TOL = {np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10), np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5),
       np.dtype(np.complex128): dict(rtol=1e-10, atol=1e-10),
       np.dtype(np.complex64): dict(rtol=2e-5, atol=2e-5)}


def to_torch(a: np.ndarray, requires_grad: bool = False):
    t = torch.from_numpy(np.array(a, copy=True, order="C"))  # keeps 0-d arrays 0-d
    return t.requires_grad_(requires_grad)


def assert_close(actual, expected, dtype=None, what: str = "") -> None:
    """Compare npconv's result with torch's, scaled by the magnitude of the reference."""
    a = np.asarray(getattr(actual, "data", actual))
    e = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != torch's {e.shape}"
    tol = TOL[np.dtype(dtype or e.dtype)]
    scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
    np.testing.assert_allclose(a, e, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=what)
