"""Differentiable padding and its adjoint; each is the other's backward.

``pads`` is one ``(lo, hi)`` pair per trailing axis (see :mod:`npconv.kernels.padding`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..kernels.padding import fold_padding, pad_array
from ..tensor import Tensor, as_array, make_result

__all__ = ["pad", "pad_adjoint"]


def pad(x: Any, pads: Sequence[tuple[int, int]], mode: str = "constant", value: float = 0.0) -> Tensor:
    """``x`` padded on its last ``len(pads)`` axes; backward folds the border back."""
    pads = tuple(pads)
    data = pad_array(as_array(x), pads, mode, value)
    return make_result(data, (x,), lambda g: (fold_padding(g, pads, mode),), "PadBackward")


def pad_adjoint(y: Any, pads: Sequence[tuple[int, int]], mode: str = "constant") -> Tensor:
    """Fold the padded border of ``y`` back onto the interior (the adjoint of :func:`pad`)."""
    pads = tuple(pads)
    data = fold_padding(as_array(y), pads, mode)
    return make_result(data, (y,), lambda g: (pad_array(g, pads, mode),), "PadAdjointBackward")
