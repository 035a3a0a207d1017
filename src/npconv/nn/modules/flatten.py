"""``Flatten`` and ``Unflatten``, as torch's."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from ...tensor import Tensor
from .. import functional as F
from .module import Module

__all__ = ["Flatten", "Unflatten"]


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` (default: all but the batch axis)."""

    __constants__ = ["start_dim", "end_dim"]

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Any) -> Tensor:
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split axis ``dim`` into ``unflattened_size`` (one entry may be -1)."""

    __constants__ = ["dim", "unflattened_size"]

    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
            raise TypeError(f"dim must be an int, got {dim!r}")
        if not isinstance(unflattened_size, (tuple, list)) or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in unflattened_size):
            raise TypeError(f"unflattened_size must be a tuple of ints, but found type "
                            f"{type(unflattened_size).__name__}: {unflattened_size!r}")
        self.dim = dim
        self.unflattened_size = unflattened_size

    def forward(self, input: Any) -> Tensor:
        x = input if isinstance(input, Tensor) else Tensor(input)
        rank = x.ndim
        if not -rank <= self.dim < rank:
            raise ValueError(f"Unflatten: dim {self.dim} out of range for an input of {rank} dimensions")
        dim = self.dim % rank
        sizes = [int(v) for v in self.unflattened_size]
        known = math.prod(v for v in sizes if v != -1)
        if sizes.count(-1) > 1 or (-1 not in sizes and known != x.shape[dim]) or (
                -1 in sizes and (known == 0 or x.shape[dim] % known != 0)):
            raise ValueError(f"unflatten: Provided sizes {tuple(sizes)} don't multiply up to the size of dim "
                             f"{self.dim} ({x.shape[dim]}) in the input tensor")
        if -1 in sizes:
            sizes[sizes.index(-1)] = x.shape[dim] // known
        return x.reshape(x.shape[:dim] + tuple(sizes) + x.shape[dim + 1:])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
