"""Differentiable affine map ``y = x @ W^T + b`` over the last axis."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..kernels import dense
from ..tensor import Tensor, _conj, as_array, make_result

__all__ = ["linear"]


def _wants_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def linear(x: Any, w: Any, b: Any = None) -> Tensor:
    """``x (*, in)``, ``w (out, in)``, ``b (out,)`` -> ``(*, out)``.

    Backward: ``gx = g @ conj(W)``, ``gW = g2^T @ conj(x2)`` (batch axes flattened), ``gb = sum g``.
    """
    xd, wd = as_array(x), as_array(w)
    empty = xd.size == 0 or wd.size == 0  # explicit row counts: reshape(-1, 0) is ambiguous
    if xd.ndim >= 2 and wd.ndim == 2 and not empty:  # rows over the worker threads (no spinning BLAS pool)
        y = dense.linear_forward(xd.reshape(-1, xd.shape[-1]), wd).reshape(xd.shape[:-1] + (wd.shape[0],))
    else:
        y = np.matmul(xd, wd.T)
    if b is not None:
        y += as_array(b)

    def backward(g: np.ndarray) -> tuple[Any, Any, Any]:
        g2 = g.reshape(math.prod(g.shape[:-1]), g.shape[-1]) if g.ndim else g.reshape(1, 1)
        x2 = xd.reshape(math.prod(xd.shape[:-1]), xd.shape[-1]) if xd.ndim else xd.reshape(1, 1)
        gx = None
        if _wants_grad(x):
            gx = (dense.linear_grad_input(g2, _conj(wd)).reshape(g.shape[:-1] + (wd.shape[1],))
                  if g.ndim >= 2 and wd.ndim == 2 and not empty else np.matmul(g, _conj(wd)))
        gw = None
        if _wants_grad(w):
            gw = dense.linear_grad_weight(g2, _conj(x2)) if not empty else np.matmul(g2.T, _conj(x2))
        gb = g2.sum(axis=0).reshape(as_array(b).shape) if _wants_grad(b) else None
        return gx, gw, gb

    return make_result(y, (x, w, b), backward, "AddmmBackward0" if b is not None else "MmBackward0")
