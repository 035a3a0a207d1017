"""Differentiable pooling ops over batched ``x (N, C, *in)``; passes in :mod:`npconv.kernels.pool`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import tracing
from ..autograd import is_grad_enabled
from ..checks import refuses_oversize
from ..geometry import ConvGeometry
from ..kernels import pool as _pool
from ..tensor import Tensor, as_array, make_result

__all__ = ["max_pool", "avg_pool", "adaptive_avg_pool"]


@tracing.recorded
def max_pool(x: Any, geom: ConvGeometry, ceil_mode: bool = False, return_indices: bool = False
             ) -> tuple[Tensor, np.ndarray | None]:
    """Max pooling; ``(y, indices)`` with torch's flat per-plane ``indices`` (int64) if asked, else None."""
    data = as_array(x)
    input_size = data.shape[2:]
    graph = is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad
    y, arg = _pool.max_pool_forward(data, geom, ceil_mode, argmax=graph or return_indices)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return (_pool.max_pool_backward(g, arg, geom, input_size, ceil_mode),)

    out = make_result(y, (x,), backward, f"MaxPool{geom.ndim}DWithIndicesBackward0")
    return out, _pool.max_pool_indices(arg, geom, input_size, ceil_mode) if return_indices else None


@tracing.recorded
def avg_pool(x: Any, geom: ConvGeometry, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None) -> Tensor:
    """Average pooling with torch's divisor rules."""
    data = as_array(x)
    input_size = data.shape[2:]
    y = _pool.avg_pool_forward(data, geom, ceil_mode, count_include_pad, divisor_override)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return (_pool.avg_pool_backward(g, geom, input_size, ceil_mode, count_include_pad, divisor_override),)

    return make_result(y, (x,), backward, f"AvgPool{geom.ndim}DBackward0")


@refuses_oversize("adaptive_avg_pool")
@tracing.recorded
def adaptive_avg_pool(x: Any, output_size: Sequence[int]) -> Tensor:
    """Adaptive average pooling to spatial ``output_size``."""
    data = as_array(x)
    input_size = data.shape[2:]
    y = _pool.adaptive_avg_pool_forward(data, tuple(output_size))
    return make_result(y, (x,), lambda g: (_pool.adaptive_avg_pool_backward(g, input_size),),
                       f"AdaptiveAvgPool{len(input_size)}DBackward0")


def _adaptive_windows(n: int, m: int) -> np.ndarray:
    """Input positions ``(m, K)`` of each adaptive window ``[floor(o n / m), ceil((o + 1) n / m))``,
    padded to the widest window by repeating its last position (a repeat never wins a max)."""
    o = np.arange(m)
    start = (o * n) // m
    end = -((-(o + 1) * n) // m)
    width = int((end - start).max())
    return np.minimum(start[:, None] + np.arange(width), (end - 1)[:, None])


def adaptive_max_pool_array(x: np.ndarray, output_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive max pooling of ``x (N, C, *in)``: ``(y, flat_index)`` with torch's rule per window in
    row-major order (a strictly greater value wins, so the first maximum; every NaN wins, so the
    last NaN). Max is separable with that rule, so it runs axis by axis (last first), each a gather
    of the ``K`` window taps and a loop over ``K`` on whole arrays."""
    input_size = x.shape[2:]
    values = x
    positions: list[np.ndarray] = []  # per processed axis, the chosen input position (broadcast shape)
    for axis in reversed(range(len(input_size))):
        a = axis + 2
        taps = _adaptive_windows(input_size[axis], output_size[axis])
        gathered = np.take(values, taps, axis=a)  # (..., m, K, ...)
        carried = [np.take(p, taps, axis=a) for p in positions]
        best = np.take(gathered, 0, axis=a + 1).copy()
        arg = np.zeros(best.shape, dtype=np.int64)
        for k in range(1, taps.shape[1]):
            v = np.take(gathered, k, axis=a + 1)
            better = (v > best) | np.isnan(v)
            best[better] = v[better]
            arg[better] = k
        pick = np.expand_dims(arg, a + 1)
        positions = [np.take_along_axis(c, pick, axis=a + 1).squeeze(a + 1) for c in carried]
        shape = [1] * x.ndim
        shape[a] = taps.shape[0]
        positions.append(taps[np.arange(taps.shape[0]).reshape(shape), arg])
        values = best
    flat = np.ravel_multi_index(tuple(np.broadcast_arrays(*reversed(positions))), input_size)
    return values, np.ascontiguousarray(flat, dtype=np.int64)


@refuses_oversize("adaptive_max_pool")
def adaptive_max_pool(x: Any, output_size: Sequence[int]) -> tuple[Tensor, np.ndarray]:
    """Adaptive max pooling of batched ``x (N, C, *in)``: the output and torch's flat per-plane indices."""
    data = as_array(x)
    input_size = data.shape[2:]
    y, index = adaptive_max_pool_array(data, tuple(output_size))

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        planes = data.shape[0] * data.shape[1]
        size = int(np.prod(input_size))
        target = (np.arange(planes).reshape(data.shape[:2] + (1,) * len(input_size)) * size + index).ravel()
        gx = np.bincount(target, weights=g.ravel(), minlength=planes * size)  # windows may overlap
        return (gx.astype(data.dtype, copy=False).reshape(data.shape),)

    return make_result(y, (x,), backward, f"AdaptiveMaxPool{len(input_size)}DBackward0"), index


__all__ += ["adaptive_max_pool", "adaptive_max_pool_array"]
