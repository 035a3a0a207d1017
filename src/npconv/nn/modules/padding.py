"""Padding layers (``ZeroPad``, ``ConstantPad``, ``ReflectionPad``, ``ReplicationPad``, ``CircularPad``
in 1-3 d), thin shells over ``F.pad`` with torch's argument forms, ``repr`` and rank rules.

``padding`` is an int (the same on every side) or torch's flat tuple
``(left, right[, top, bottom[, front, back]])``, last dimension first.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from ...tensor import Tensor, as_array
from .. import functional as F
from .module import Module

__all__ = [
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d",
    "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d",
]


def _padding_tuple(padding: Any, nd: int, layer: str) -> tuple[int, ...]:
    """torch's ``_ntuple(2 * nd)``: an int repeated on every side, an iterable taken as given."""
    if isinstance(padding, Iterable) and not isinstance(padding, str):
        values = tuple(padding)
    else:
        values = (padding,) * (2 * nd)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{layer}: padding must be an int or a tuple of ints, got {padding!r}")
    return tuple(int(v) for v in values)


class _PadNd(Module):
    """Pads the trailing dimensions with ``F.pad(input, padding, mode)``."""

    mode = "constant"
    nd = 1

    def __init__(self, padding: Any) -> None:
        super().__init__()
        self.padding = _padding_tuple(padding, self.nd, type(self).__name__)

    def _check_rank(self, input: Any) -> None:
        ndim = as_array(input).ndim
        if ndim not in (self.nd + 1, self.nd + 2):
            raise ValueError(f"{type(self).__name__}: expected {self.nd + 1}D or {self.nd + 2}D input "
                             f"(got {ndim}D input)")

    def forward(self, input: Any) -> Tensor:
        self._check_rank(input)
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding: Any, value: float) -> None:
        super().__init__(padding)
        self.value = value

    def forward(self, input: Any) -> Tensor:
        return F.pad(input, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    """Pad the last dimension with ``value``."""

    nd = 1


class ConstantPad2d(_ConstantPadNd):
    """Pad the last two dimensions with ``value``."""

    nd = 2


class ConstantPad3d(_ConstantPadNd):
    """Pad the last three dimensions with ``value``."""

    nd = 3


class ZeroPad1d(ConstantPad1d):
    """Pad the last dimension with zeros."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad2d(ConstantPad2d):
    """Pad the last two dimensions with zeros."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad3d(ConstantPad3d):
    """Pad the last three dimensions with zeros."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ReflectionPad1d(_PadNd):
    """Mirror the last dimension without repeating its edge (each pad < the size)."""

    mode, nd = "reflect", 1


class ReflectionPad2d(_PadNd):
    """Mirror the last two dimensions without repeating their edges."""

    mode, nd = "reflect", 2


class ReflectionPad3d(_PadNd):
    """Mirror the last three dimensions without repeating their edges."""

    mode, nd = "reflect", 3


class ReplicationPad1d(_PadNd):
    """Repeat the edge values of the last dimension."""

    mode, nd = "replicate", 1


class ReplicationPad2d(_PadNd):
    """Repeat the edge values of the last two dimensions."""

    mode, nd = "replicate", 2


class ReplicationPad3d(_PadNd):
    """Repeat the edge values of the last three dimensions."""

    mode, nd = "replicate", 3


class CircularPad1d(_PadNd):
    """Wrap the last dimension around (periodic padding)."""

    mode, nd = "circular", 1


class CircularPad2d(_PadNd):
    """Wrap the last two dimensions around."""

    mode, nd = "circular", 2


class CircularPad3d(_PadNd):
    """Wrap the last three dimensions around."""

    mode, nd = "circular", 3
