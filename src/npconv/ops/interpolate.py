"""Differentiable resampling of ``x (N, C, *in)`` to ``(N, C, *out)``: torch's ``upsample_*`` kernels.

Every mode except ``'area'`` is separable: along each spatial axis output ``o`` reads a few input
taps ``idx[o, j]`` with weights ``w[o, j]`` (:func:`axis_taps`, with torch's source-index rules,
computed in torch's precision), so the op is a chain of one sparse ``(out, in)`` matrix per axis,
applied last axis first (torch's order of products); the backward pass applies the transposes.
Nearest modes gather instead (``np.take``; the adjoint sums runs of equal, non-decreasing indices
with ``np.add.reduceat``). Fast paths give the same numbers: same size (skipped), nearest at exactly
twice the size (a broadcast, its adjoint a reshape-sum) and linear at exactly twice the size without
``align_corners`` (weights 1/4 and 3/4 on shifted slices).

Source index of output ``o`` (``scale`` is ``1 / scale_factor`` when a scale factor is given and
not recomputed, else ``in / out``; with ``align_corners`` ``(in - 1) / (out - 1)``):

* ``nearest``        ``min(floor(o * scale), in - 1)`` in float32 (``o >> 1`` at twice the size)
* ``nearest-exact``  ``min(floor((o + 0.5) * scale), in - 1)``
* ``linear``         ``s = scale * (o + 0.5) - 0.5`` clamped at 0 (``scale * o`` with align_corners);
  taps ``floor(s)`` and the next (clamped) with weights ``1 - l, l``, ``l = s - floor(s)``
* ``cubic``          the same ``s`` unclamped, taps ``floor(s) - 1 .. floor(s) + 2`` clamped to the
  input, Keys' kernel with ``A = -0.75``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tensor import Tensor, as_array, make_result

__all__ = ["interpolate", "axis_taps", "resample_forward", "resample_backward"]

_CUBIC_A = -0.75


def _opmath(dtype: np.dtype) -> np.dtype:
    """torch's accumulation type: float32 for float16/float32, float64 for float64."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _scale_value(n: int, m: int, scale: float | None, t: type) -> Any:
    """torch's ``compute_scales_value``: ``1 / scale_factor`` if given (> 0), else ``in / out``."""
    if scale is not None and scale > 0:
        return t(1.0 / scale)
    return t(n) / t(m)


def _linear_scale(n: int, m: int, align_corners: bool, scale: float | None, t: type) -> Any:
    if align_corners:
        return t(n - 1) / t(m - 1) if m > 1 else t(0)
    return _scale_value(n, m, scale, t)


def _source(scale: Any, m: int, align_corners: bool, cubic: bool, t: type) -> np.ndarray:
    o = np.arange(m, dtype=t)
    if align_corners:
        return scale * o
    s = scale * (o + t(0.5)) - t(0.5)
    return s if cubic else np.maximum(s, t(0))


def _cubic_weights(x: np.ndarray, t: type) -> list[np.ndarray]:
    a = t(_CUBIC_A)

    def near(v: np.ndarray) -> np.ndarray:  # |v| <= 1
        return ((a + t(2)) * v - (a + t(3))) * v * v + t(1)

    def far(v: np.ndarray) -> np.ndarray:  # 1 < |v| < 2
        return ((a * v - t(5) * a) * v + t(8) * a) * v - t(4) * a

    rest = t(1) - x
    return [far(x + t(1)), near(x), near(rest), far(rest + t(1))]


def axis_taps(n: int, m: int, mode: str, align_corners: bool, scale: float | None, dtype: np.dtype
              ) -> tuple[np.ndarray, np.ndarray]:
    """Input indices ``(m, k)`` and weights ``(m, k)`` of resampling one axis from ``n`` to ``m``."""
    t = _opmath(dtype).type
    if mode in ("nearest", "nearest-exact"):
        if mode == "nearest" and m == 2 * n:
            idx = np.arange(m) >> 1
        elif mode == "nearest" and m == n:
            idx = np.arange(m)
        else:
            s = _scale_value(n, m, scale, np.float32)
            o = np.arange(m, dtype=np.float32)
            # torch: floorf(o * scale) in float, and for nearest-exact floorf of the double (o + 0.5) * scale
            # rounded to float first (1.5 / 0.3 rounds to 5.0f: source 5, not 4)
            exact = ((o.astype(np.float64) + 0.5) * np.float64(s)).astype(np.float32)
            real = o * s if mode == "nearest" else exact
            idx = np.minimum(np.floor(real).astype(np.int64), n - 1)
        return idx[:, None], np.ones((m, 1), dtype=t)
    if mode == "linear":
        if m == n:
            idx = np.arange(m)
            return np.stack([idx, idx], 1), np.stack([np.ones(m, t), np.zeros(m, t)], 1)
        real = _source(_linear_scale(n, m, align_corners, scale, t), m, align_corners, False, t)
        i0 = np.minimum(np.floor(real).astype(np.int64), n - 1)
        lam = np.minimum(np.maximum(real - i0.astype(t), t(0)), t(1)).astype(t)
        i1 = i0 + (i0 < n - 1)
        return np.stack([i0, i1], 1), np.stack([t(1) - lam, lam], 1)
    if mode == "cubic":
        real = _source(_linear_scale(n, m, align_corners, scale, t), m, align_corners, True, t)
        base = np.floor(real)
        weights = _cubic_weights((real - base).astype(t), t)
        base = base.astype(np.int64)
        idx = np.stack([np.clip(base + j, 0, n - 1) for j in (-1, 0, 1, 2)], 1)
        return idx, np.stack(weights, 1).astype(t)
    raise ValueError(f"axis_taps: unknown mode {mode!r}")


def _matrix(n: int, m: int, mode: str, align_corners: bool, scale: float | None, dtype: np.dtype
            ) -> Any:
    from scipy import sparse  # imported on first use: scipy.sparse adds ~0.1 s to `import npconv`

    idx, w = axis_taps(n, m, mode, align_corners, scale, dtype)
    rows = np.repeat(np.arange(m), idx.shape[1])
    # explicit zero weights stay in the matrix: 0 * inf is NaN in torch's kernels too
    return sparse.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(m, n))


def _along(x: np.ndarray, matrix: Any, axis: int) -> np.ndarray:
    """``matrix (m, n)`` applied to the vectors along ``axis`` of ``x``."""
    moved = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    flat = moved.reshape(moved.shape[0], -1)
    out = np.asarray(matrix @ flat)
    return np.moveaxis(out.reshape((matrix.shape[0],) + moved.shape[1:]), 0, axis)


def _twice_nearest(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Nearest upsampling by exactly 2 along ``axes``: one broadcast copy."""
    index: list[Any] = []
    shape: list[int] = []
    for a, n in enumerate(x.shape):
        index.append(slice(None))
        if a in axes:
            index.append(None)
            shape += [n, 2]
        else:
            shape.append(n)
    wide = np.broadcast_to(x[tuple(index)], shape)
    return wide.reshape([n * 2 if a in axes else n for a, n in enumerate(x.shape)])


def _twice_nearest_adjoint(g: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    shape: list[int] = []
    summed = []
    for a, n in enumerate(g.shape):
        if a in axes:
            shape += [n // 2, 2]
            summed.append(len(shape) - 1)
        else:
            shape.append(n)
    return g.reshape(shape).sum(axis=tuple(summed))


def _twice_linear(x: np.ndarray, axis: int, t: type) -> np.ndarray:
    """Linear upsampling by exactly 2 without align_corners along ``axis``: the kernel's taps
    ``out[2k] = x[k-1]/4 + 3 x[k]/4`` (``out[0] = x[0] + 0 x[1]``) and
    ``out[2k+1] = 3 x[k]/4 + x[k+1]/4`` (the last reads ``x[n-1]`` twice), on shifted slices."""
    lead = (slice(None),) * axis
    n = x.shape[axis]
    quarter, three = t(0.25), t(0.75)
    out = np.empty(x.shape[:axis] + (n, 2) + x.shape[axis + 1:], dtype=x.dtype)
    head, tail = x[lead + (slice(0, n - 1),)], x[lead + (slice(1, n),)]
    first, last = x[lead + (0,)], x[lead + (-1,)]
    out[lead + (slice(1, n), 0)] = quarter * head + three * tail
    with np.errstate(invalid="ignore"):  # 0 * inf is NaN, as in torch's kernel
        out[lead + (0, 0)] = first + t(0) * x[lead + (min(1, n - 1),)]
    out[lead + (slice(0, n - 1), 1)] = three * head + quarter * tail
    out[lead + (n - 1, 1)] = three * last + quarter * last
    return out.reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1:])


def _twice_linear_adjoint(g: np.ndarray, axis: int, t: type) -> np.ndarray:
    """Adjoint of :func:`_twice_linear`."""
    lead = (slice(None),) * axis
    n = g.shape[axis] // 2
    pairs = g.reshape(g.shape[:axis] + (n, 2) + g.shape[axis + 1:])
    even, odd = pairs[lead + (slice(None), 0)], pairs[lead + (slice(None), 1)]
    quarter, three = t(0.25), t(0.75)
    gx = three * even
    gx += three * odd
    gx[lead + (slice(0, n - 1),)] += quarter * even[lead + (slice(1, n),)]
    gx[lead + (slice(1, n),)] += quarter * odd[lead + (slice(0, n - 1),)]
    gx[lead + (0,)] += quarter * even[lead + (0,)]  # out[0] weighs x[0] by 1, not 3/4
    with np.errstate(invalid="ignore"):
        gx[lead + (min(1, n - 1),)] += t(0) * even[lead + (0,)]
    gx[lead + (n - 1,)] += quarter * odd[lead + (n - 1,)]  # out[-1] reads x[n-1] by 3/4 + 1/4
    return gx


def _gather_adjoint(g: np.ndarray, idx: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Adjoint of ``np.take(x, idx, axis)`` for non-decreasing ``idx``: runs of equal indices summed
    (``np.add.reduceat``) into their input positions, zero elsewhere."""
    first = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    sums = np.add.reduceat(g, first, axis=axis)
    out = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:], dtype=g.dtype)
    out[(slice(None),) * axis + (idx[first],)] = sums
    return out


class _Plan:
    """How each spatial axis is resampled: skipped (same size), nearest at twice the size (one
    broadcast for all such axes), ``'twice_linear'``, ``'gather'`` (other nearest sizes: a take of
    the non-decreasing source indices) or ``'matrix'`` (linear and cubic taps)."""

    def __init__(self, input_size: Sequence[int], output_size: Sequence[int], mode: str, align_corners: bool,
                 scales: Sequence[float | None], dtype: np.dtype) -> None:
        self.steps: list[tuple[int, str, Any]] = []
        self.nearest_twice: list[int] = []
        for axis, (n, m, s) in enumerate(zip(input_size, output_size, scales, strict=True)):
            a = axis + 2
            if mode == "nearest" and m == 2 * n:
                self.nearest_twice.append(a)
            elif m == n and mode in ("nearest", "linear") or (m == n and mode == "nearest-exact" and
                                                               (s is None or s == 1.0)):
                continue
            elif mode == "linear" and not align_corners and m == 2 * n and (s is None or s == 2.0) and n > 1:
                self.steps.append((a, "twice_linear", None))
            elif mode in ("nearest", "nearest-exact"):
                idx, _ = axis_taps(n, m, mode, align_corners, s, dtype)
                self.steps.append((a, "gather", (idx[:, 0], n)))
            else:
                self.steps.append((a, "matrix", _matrix(n, m, mode, align_corners, s, dtype)))
        self.t = _opmath(dtype).type


def resample_forward(x: np.ndarray, plan: _Plan) -> np.ndarray:
    work = x if x.dtype == _opmath(x.dtype) else x.astype(_opmath(x.dtype))
    for axis, kind, payload in reversed(plan.steps):  # last axis first, as torch's products
        if kind == "twice_linear":
            work = _twice_linear(work, axis, plan.t)
        elif kind == "gather":
            work = np.take(work, payload[0], axis=axis)
        else:
            work = _along(work, payload, axis)
    if plan.nearest_twice:
        work = _twice_nearest(work, plan.nearest_twice)
    return np.array(work, dtype=x.dtype, order="C", copy=True) if work is x or work.dtype != x.dtype \
        else np.ascontiguousarray(work)


def resample_backward(g: np.ndarray, plan: _Plan, dtype: np.dtype) -> np.ndarray:
    work = g if g.dtype == _opmath(dtype) else g.astype(_opmath(dtype))
    if plan.nearest_twice:
        work = _twice_nearest_adjoint(work, plan.nearest_twice)
    for axis, kind, payload in plan.steps:
        if kind == "twice_linear":
            work = _twice_linear_adjoint(work, axis, plan.t)
        elif kind == "gather":
            work = _gather_adjoint(work, payload[0], payload[1], axis)
        else:
            work = _along(work, payload.T.tocsr(), axis)
    return np.ascontiguousarray(work, dtype=dtype)


def interpolate(x: Any, output_size: Sequence[int], mode: str, align_corners: bool,
                scales: Sequence[float | None]) -> Tensor:
    """Resample batched ``x (N, C, *in)`` to ``(N, C, *output_size)``; ``mode`` is ``'nearest'``,
    ``'nearest-exact'``, ``'linear'`` (any rank) or ``'cubic'``; ``scales[i]`` is the scale factor
    torch's kernel sees for axis ``i`` (None to use ``in / out``)."""
    data = as_array(x)
    plan = _Plan(data.shape[2:], output_size, mode, align_corners, scales, data.dtype)
    y = resample_forward(data, plan)
    return make_result(y, (x,), lambda g: (resample_backward(g, plan, data.dtype),),
                       _backward_name(mode, data.ndim - 2))


def _backward_name(mode: str, rank: int) -> str:
    if mode == "linear":
        return ("UpsampleLinear1D", "UpsampleBilinear2D", "UpsampleTrilinear3D")[rank - 1] + "Backward0"
    if mode == "cubic":
        return "UpsampleBicubic2DBackward0"
    return ("UpsampleNearest" if mode == "nearest" else "UpsampleNearestExact") + f"{rank}DBackward0"
