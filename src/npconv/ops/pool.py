"""Differentiable pooling ops over batched ``x (N, C, *in)``; passes in :mod:`npconv.kernels.pool`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geometry import ConvGeometry
from ..kernels import pool as _pool
from ..tensor import Tensor, as_array, make_result

__all__ = ["max_pool", "avg_pool", "adaptive_avg_pool"]


def max_pool(x: Any, geom: ConvGeometry, ceil_mode: bool = False, return_indices: bool = False
             ) -> tuple[Tensor, np.ndarray | None]:
    """Max pooling; ``(y, indices)`` with torch's flat per-plane ``indices`` (int64) if asked, else None."""
    data = as_array(x)
    input_size = data.shape[2:]
    y, arg = _pool.max_pool_forward(data, geom, ceil_mode)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return (_pool.max_pool_backward(g, arg, geom, input_size, ceil_mode),)

    out = make_result(y, (x,), backward, f"MaxPool{geom.ndim}DWithIndicesBackward0")
    return out, _pool.max_pool_indices(arg, geom, input_size, ceil_mode) if return_indices else None


def avg_pool(x: Any, geom: ConvGeometry, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None) -> Tensor:
    """Average pooling with torch's divisor rules."""
    data = as_array(x)
    input_size = data.shape[2:]
    y = _pool.avg_pool_forward(data, geom, ceil_mode, count_include_pad, divisor_override)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return (_pool.avg_pool_backward(g, geom, input_size, ceil_mode, count_include_pad, divisor_override),)

    return make_result(y, (x,), backward, f"AvgPool{geom.ndim}DBackward0")


def adaptive_avg_pool(x: Any, output_size: Sequence[int]) -> Tensor:
    """Adaptive average pooling to spatial ``output_size``."""
    data = as_array(x)
    input_size = data.shape[2:]
    y = _pool.adaptive_avg_pool_forward(data, tuple(output_size))
    return make_result(y, (x,), lambda g: (_pool.adaptive_avg_pool_backward(g, input_size),),
                       f"AdaptiveAvgPool{len(input_size)}DBackward0")
