"""Helpers to run the same computation in torch (the oracle) and npconv, and compare."""

from __future__ import annotations

import numpy as np
import pytest

from npconv.geometry import ConvGeometry

torch = pytest.importorskip("torch")
TORCH_CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}

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


def conv_geom(kernel, stride, padding, dilation, groups, size):
    """ConvGeometry with its padding resolved to explicit (lo, hi) pairs for an input of ``size``."""
    geom = ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=len(size))
    return geom.with_padding(geom.pads(size))


def torch_conv_passes(x, w, gy, geom):
    """torch's ``y``, ``x.grad``, ``w.grad`` for ``y = conv(x, w)`` with upstream gradient ``gy``."""
    xt = torch.from_numpy(x.copy()).requires_grad_()
    wt = torch.from_numpy(w.copy()).requires_grad_()
    xp = torch.nn.functional.pad(xt, [p for pair in reversed(geom.pads()) for p in pair])
    y = TORCH_CONV[geom.ndim](xp, wt, None, geom.stride, 0, geom.dilation, geom.groups)
    y.backward(torch.from_numpy(gy.copy()))
    return y.detach(), xt.grad, wt.grad
