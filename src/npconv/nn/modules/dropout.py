"""``Dropout``: random zeroing in training mode, identity in eval mode."""

from __future__ import annotations

import numbers
from typing import Any

from ...tensor import Tensor
from .. import functional as F
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` (npconv's global generator) and scale the rest by
    ``1 / (1 - p)`` while training; the identity in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input: Any) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class _DropoutNd(Dropout):
    pass


class Dropout1d(_DropoutNd):
    """Zero whole channels of ``(N, C, L)`` or ``(C, L)`` with probability ``p`` while training."""

    def forward(self, input: Any) -> Tensor:
        return F.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(_DropoutNd):
    """Zero whole channels of ``(N, C, H, W)`` with probability ``p`` while training."""

    def forward(self, input: Any) -> Tensor:
        return F.dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(_DropoutNd):
    """Zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` with probability ``p``."""

    def forward(self, input: Any) -> Tensor:
        return F.dropout3d(input, self.p, self.training, self.inplace)


__all__ += ["Dropout1d", "Dropout2d", "Dropout3d"]


class AlphaDropout(_DropoutNd):
    """Alpha dropout for SELU networks while training (keeps zero mean and unit variance); the identity
    in eval mode. As torch's, the layer ignores ``inplace`` (it is stored and shown only)."""

    def forward(self, input: Any) -> Tensor:
        return F.alpha_dropout(input, self.p, self.training)


__all__ += ["AlphaDropout"]
