"""Gradient clipping, as ``torch.nn.utils.clip_grad``: by the total norm of all gradients or by value.

Total norm of order ``p``: ``||(||g_1||_p, ..., ||g_k||_p)||_p`` (max for inf); clipping multiplies
every gradient in place by ``min(max_norm / (total + 1e-6), 1)``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ...tensor import Tensor, no_grad

__all__ = ["clip_grad_norm_", "clip_grad_norm", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]


def _tensors(values: Any, name: str) -> list[Tensor]:
    if isinstance(values, Tensor):
        return [values]
    if not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a Tensor or an iterable of Tensors, got {type(values).__name__}")
    out = list(values)
    for value in out:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must hold Tensors, got {type(value).__name__}")
    return out


def _order(norm_type: Any) -> float:
    if isinstance(norm_type, str) and norm_type in ("inf", "-inf"):
        return float(norm_type)
    if not isinstance(norm_type, numbers.Real) or isinstance(norm_type, bool):
        raise TypeError(f"norm_type must be a number (or 'inf'), got {norm_type!r}")
    return float(norm_type)


def _norm(a: np.ndarray, p: float) -> Any:
    a = np.abs(a.ravel())
    if p == np.inf:
        return a.max() if a.size else a.dtype.type(0)
    if p == -np.inf:
        return a.min() if a.size else a.dtype.type(np.inf)
    if p == 0:
        return a.dtype.type(np.count_nonzero(a))
    if p == 2:
        return np.sqrt(np.dot(a, a))
    if p == 1:
        return a.sum()
    return (a ** a.dtype.type(p)).sum() ** a.dtype.type(1 / p)


def get_total_norm(tensors: Any, norm_type: Any = 2.0, error_if_nonfinite: bool = False,
                   foreach: bool | None = None) -> Tensor:
    """The ``norm_type`` norm of the norms of ``tensors`` (as if concatenated into one vector)."""
    arrays = [t.numpy() for t in _tensors(tensors, "tensors")]
    p = _order(norm_type)
    if not arrays:
        return Tensor(np.array(0.0, dtype=np.float32))
    norms = np.array([_norm(a, p) for a in arrays], dtype=np.result_type(*arrays))
    total = _norm(norms, p)
    if error_if_nonfinite and not np.isfinite(total):
        raise ValueError(f"The total norm of order {p} for gradients from `parameters` is non-finite, so it "
                         "cannot "
                         "be clipped. To disable this error and scale the gradients by the non-finite norm "
                         "anyway, set `error_if_nonfinite=False`")
    return Tensor(np.asarray(total))


def clip_grads_with_norm_(parameters: Any, max_norm: float, total_norm: Any,
                          foreach: bool | None = None) -> None:
    """Scale the gradients in place by ``min(max_norm / (total_norm + 1e-6), 1)``."""
    params = _tensors(parameters, "parameters")
    total = np.asarray(total_norm.numpy() if isinstance(total_norm, Tensor) else total_norm)
    coef = min(float(max_norm) / (float(total) + 1e-6), 1.0)
    with no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.numpy()[...] *= p.grad.numpy().dtype.type(coef)


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: Any = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> Tensor:
    """Clip the gradients of ``parameters`` in place so their total ``norm_type`` norm is at most
    ``max_norm``; returns the total norm before clipping."""
    if not isinstance(max_norm, numbers.Real) or isinstance(max_norm, bool):
        raise TypeError(f"max_norm must be a number, got {max_norm!r}")
    params = _tensors(parameters, "parameters")
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    if grads:
        clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_norm(parameters: Any, max_norm: float, norm_type: Any = 2.0, error_if_nonfinite: bool = False,
                   foreach: bool | None = None) -> Tensor:
    """Deprecated alias of :func:`clip_grad_norm_` (warns, as torch)."""
    warnings.warn("`torch.nn.utils.clip_grad_norm` is now deprecated in favor of "
                  "`torch.nn.utils.clip_grad_norm_`.",
                  FutureWarning, stacklevel=2)
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters: Any, clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every gradient of ``parameters`` in place to ``[-clip_value, clip_value]``."""
    if not isinstance(clip_value, numbers.Real) or isinstance(clip_value, bool):
        raise TypeError(f"clip_value must be a number, got {clip_value!r}")
    value = float(clip_value)
    for p in _tensors(parameters, "parameters"):
        if p.grad is not None:
            g = p.grad.numpy()
            np.clip(g, g.dtype.type(-value), g.dtype.type(value), out=g)

