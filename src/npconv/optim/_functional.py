"""Array helpers shared by the optimizers' update rules (torch's in-place tensor idioms on ndarrays)."""

from __future__ import annotations

import numpy as np

__all__ = ["as_real", "lerp_", "add_weight_decay"]


def as_real(array: np.ndarray) -> np.ndarray:
    """A complex array as interleaved real/imaginary parts (torch's ``view_as_real``)."""
    return array.view(array.real.dtype) if array.dtype.kind == "c" else array


def lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start.lerp_(end, weight)`` with torch's two-sided formula (exact at weight 0 and 1)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


def add_weight_decay(grad: np.ndarray, theta: np.ndarray, group: dict) -> np.ndarray:
    """``-g`` if ``maximize``, then L2 weight decay ``g + weight_decay * theta`` (new array if changed)."""
    if group["maximize"]:
        grad = -grad
    weight_decay = float(group["weight_decay"])
    if weight_decay != 0:
        grad = grad + weight_decay * theta
    return grad
