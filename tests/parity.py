"""One helper to compare an npconv function with torch's: output and the gradient of every input.

torch is imported only when a comparison runs, so torch-free tests in the same modules still run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

import npconv

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}


def torch_module():
    return pytest.importorskip("torch")


def close(actual, expected, what: str = "", tol: float | None = None) -> None:
    """npconv's value equals torch's (shape, and values to the dtype's tolerance scaled by magnitude)."""
    a = np.asarray(getattr(actual, "data", actual))
    e = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != torch's {e.shape}"
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != torch's {e.dtype}"
    if a.dtype.kind not in "fc":
        np.testing.assert_array_equal(a, e, err_msg=what)
        return
    tol = TOL[np.dtype(a.dtype)] if tol is None else tol
    finite = np.isfinite(e)
    scale = max(1.0, float(np.abs(e[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, err_msg=what, equal_nan=True)


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
