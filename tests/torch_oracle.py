"""torch-side test helpers: run a computation in torch (the oracle) and compare it with npconv's.

torch is imported only when a helper runs (``torch_module()`` skips the calling test where torch is
not installed), so the torch-free tests of a module that imports these helpers still run. Tests that
use torch directly take the ``torch`` fixture of ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

import npconv
from kernel_checks import npconv_grads
from npconv.geometry import ConvGeometry

TOL = {np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10), np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5),
       np.dtype(np.complex128): dict(rtol=1e-10, atol=1e-10),
       np.dtype(np.complex64): dict(rtol=2e-5, atol=2e-5)}
# np.pad's mode for each padding mode that torch's F.pad lacks (or lacks at some widths)
NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "symmetric": "symmetric"}


def torch_module():
    """The torch module; skips the calling test where torch is not installed."""
    return pytest.importorskip("torch")


def to_torch(a: np.ndarray, requires_grad: bool = False):
    t = torch_module().from_numpy(np.array(a, copy=True, order="C"))  # keeps 0-d arrays 0-d
    return t.requires_grad_(requires_grad)


def close(actual, expected, what: str = "", tol: float | None = None) -> None:
    """npconv's value equals torch's: shape, dtype, NaN positions, and values to the dtype's tolerance
    (or ``tol``) scaled by the largest finite magnitude; integers exactly."""
    a = np.asarray(getattr(actual, "data", actual))
    e = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != torch's {e.shape}"
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != torch's {e.dtype}"
    if a.dtype.kind not in "fc":
        np.testing.assert_array_equal(a, e, err_msg=what)
        return
    tol = TOL[np.dtype(a.dtype)]["rtol"] if tol is None else tol
    finite = np.isfinite(e)
    scale = max(1.0, float(np.abs(e[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, err_msg=what, equal_nan=True)


def assert_close(actual, expected, dtype=None, what: str = "") -> None:
    """npconv's values equal torch's (shape and values, not dtype) to the tolerance of ``dtype``
    (default: torch's dtype), scaled by the magnitude of the reference."""
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


def torch_pad(x, pads, mode: str):
    """torch tensor ``x`` padded on its spatial axes by one (lo, hi) pair each, differentiably.

    Zeros by torch's F.pad; the other modes (including 'symmetric' and circular wider than the
    input, which torch's F.pad lacks) by an index gather with NumPy's index map of the mode.
    """
    torch = torch_module()
    if mode == "zeros":
        return torch.nn.functional.pad(x, [v for lo_hi in reversed(pads) for v in lo_hi])
    for axis, (lo, hi) in enumerate(pads):
        index = np.pad(np.arange(x.shape[2 + axis]), (lo, hi), mode=NUMPY_PAD_MODE[mode])
        x = torch.index_select(x, 2 + axis, torch.from_numpy(index))
    return x


def torch_conv(xp, w, stride, dilation, groups: int):
    """torch's valid (unpadded) cross-correlation of ``xp`` with ``w`` of 1 to 4 spatial dims
    (4-d: ``y[:, :, t] = sum_i conv3d(xp[:, :, t*s + i*d], w[:, :, i])``), differentiable."""
    torch = torch_module()
    tf = torch.nn.functional
    nd = w.ndim - 2
    if nd <= 3:
        return getattr(tf, f"conv{nd}d")(xp, w, None, stride, 0, dilation, groups)
    s0, d0, k0 = stride[0], dilation[0], w.shape[2]
    out0 = (xp.shape[2] - d0 * (k0 - 1) - 1) // s0 + 1
    return torch.stack([sum(tf.conv3d(xp[:, :, t * s0 + i * d0], w[:, :, i], None, stride[1:], 0,
                                      dilation[1:], groups) for i in range(k0))
                        for t in range(out0)], dim=2)


def torch_conv_passes(x, w, gy, geom):
    """torch's ``y``, ``x.grad``, ``w.grad`` for ``y = conv(x, w)`` (zero padding ``geom.pads()``,
    1 to 4 spatial dims) with upstream gradient ``gy``."""
    xt = to_torch(x, requires_grad=True)
    wt = to_torch(w, requires_grad=True)
    y = torch_conv(torch_pad(xt, geom.pads(), "zeros"), wt, geom.stride, geom.dilation, geom.groups)
    y.backward(to_torch(gy))
    return y.detach(), xt.grad, wt.grad


def torch_grads(fn, arrays: dict, gy: np.ndarray):
    """torch's output of ``fn(**tensors)`` and the gradients of ``<y, gy>`` w.r.t. every array."""
    tensors = {k: to_torch(v, requires_grad=True) for k, v in arrays.items()}
    y = fn(**tensors)
    y.backward(to_torch(gy))
    return y, {k: t.grad for k, t in tensors.items()}


def check_against_torch(ours, theirs, arrays: dict, dtype=np.float64, what: str = "", seed: int = 0) -> None:
    """Output and gradients w.r.t. every array of ``ours(**arrays)`` equal those of ``theirs`` (torch)."""
    torch_module()  # skip before any npconv work where torch is absent
    y, gy, grads = npconv_grads(ours, arrays, seed=seed)
    y_t, grads_t = torch_grads(theirs, arrays, gy)
    assert_close(y, y_t, dtype, f"output {what}")
    for name in arrays:
        assert_close(grads[name], grads_t[name], dtype, f"d/d{name} {what}")


def backward_weighted(pairs, dtype, seed: int = 0) -> bool:
    """Backward through ``sum <o, g>`` in npconv and ``sum <t, g>`` in torch over the (npconv, torch) output
    pairs whose torch side requires a gradient, one random ``g`` per pair; False where none does."""
    torch = torch_module()
    rng = np.random.default_rng(seed)
    total_ours = total_theirs = 0
    for o, t in pairs:
        if t.requires_grad:
            g = rng.standard_normal(tuple(t.shape)).astype(dtype)
            total_ours = total_ours + (o * npconv.tensor(g)).sum()
            total_theirs = total_theirs + (t * torch.tensor(g)).sum()
    if isinstance(total_theirs, int):
        return False
    total_ours.backward()
    total_theirs.backward()
    return True


def compare(
    ours: Callable,
    theirs: Callable,
    inputs: Sequence[np.ndarray],
    grad: Sequence[bool] | None = None,
    seed: int = 0,
    tol: float | None = None,
) -> None:
    """``ours(*tensors)`` and ``theirs(*torch_tensors)`` give the same output and input gradients.

    ``grad[i]`` says whether input ``i`` requires a gradient (default: every floating input).
    """
    torch = torch_module()
    grad = [np.asarray(a).dtype.kind == "f" for a in inputs] if grad is None else list(grad)
    xs = [npconv.Tensor(np.array(a, copy=True), requires_grad=g) for a, g in zip(inputs, grad, strict=True)]
    ts = [
        torch.from_numpy(np.array(a, copy=True)).requires_grad_(g) for a, g in zip(inputs, grad, strict=True)
    ]
    y = ours(*xs)
    yt = theirs(*ts)
    close(y, yt, "forward", tol)
    if not any(grad) or not yt.requires_grad:
        return
    gy = np.random.default_rng(seed).standard_normal(yt.shape).astype(np.asarray(y.numpy()).dtype)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy.copy()))
    for i, (x, t) in enumerate(zip(xs, ts, strict=True)):
        if grad[i]:
            assert (x.grad is None) == (t.grad is None), f"grad {i}: None mismatch"
            if t.grad is not None:
                close(x.grad, t.grad, f"grad of input {i}", tol)
