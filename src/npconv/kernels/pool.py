"""Pooling passes as pure ndarray functions, on the convolution core's window machinery.

Inputs are batched ``x (N, C, *in)``; ``geom`` is a :class:`~npconv.geometry.ConvGeometry` with
symmetric explicit padding ``p`` (its sizes come from :meth:`ConvGeometry.pool_output_size`).
The padded input is extended on the high side so the ``ceil_mode`` windows fit, and every pass
is a loop over the ``K = prod(kernel_size)`` kernel offsets on strided views of the windows
(:func:`npconv.kernels.gemm.windows`); backward passes add into strided slices (no ``np.add.at``).

* max pool   ``y[n, c, o] = max_k xp[n, c, o*s + k*d]`` (padding is ``-inf``; ties keep the first
  offset, a NaN wins and the last NaN is kept, as torch's CPU kernel); the backward pass routes
  ``gy`` to the argmax offset of each window.
* avg pool   ``y = sum_k xp[o*s + k] / divisor(o)`` with torch's divisor (``count_include_pad``,
  ``divisor_override``); backward adds ``gy / divisor`` to every offset's slice.
* 1-d and 2-d max pooling of float32/float64 run on the compiled core (``npconv._core``, planes
  split over the worker threads) when it is in use, with the same rules; ``compiled=False`` runs the
  NumPy passes (the reference the compiled ones are tested against).
* adaptive avg pool  window ``[floor(o*n/m), ceil((o+1)*n/m))`` per dimension; separable, so it is
  one ``(m, n)`` averaging matrix per dimension applied along its axis (its transpose backward).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import workspace
from .common import windows
from .padding import pad_array

__all__ = [
    "max_pool_forward", "max_pool_backward", "max_pool_indices",
    "avg_pool_forward", "avg_pool_backward", "adaptive_pool_matrices", "adaptive_avg_pool_forward",
    "adaptive_avg_pool_backward", "bind_max_pool", "bind_global_means",
]


def _offsets(kernel_size: Sequence[int]) -> itertools.product:
    return itertools.product(*(range(k) for k in kernel_size))


def _region(offset: Sequence[int], geom: ConvGeometry, out_size: Sequence[int]) -> tuple[slice, ...]:
    """Slice of the padded input read by kernel ``offset`` for every output position."""
    return (slice(None), slice(None)) + geom.tap_region(offset, out_size)


def _crop(gxp: np.ndarray, padded: ConvGeometry, input_size: Sequence[int]) -> np.ndarray:
    """The input part of ``gxp (N, C, *padded)``; ``padded`` has the pooling's explicit padding."""
    if not any(lo or hi for lo, hi in padded.pads()):
        return gxp
    return np.ascontiguousarray(gxp[(slice(None), slice(None)) + padded.interior(input_size)])


_COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


#: The compiled kernel's limits (core.c): every geometry value, and the elements of one plane.
_CORE_MAX_VALUE = 2**24
_CORE_MAX_PLANE = 2**28


def _compiled(values: np.ndarray, geom: ConvGeometry, geometry: tuple[int, ...]) -> bool:
    """Whether the compiled core runs this max pooling (1-d/2-d, float32/float64, within its limits;
    degenerate sizes such as a huge stride go to the NumPy passes)."""
    _, h, w, oh, ow, kh, kw = geometry[:7]
    return (backends.core.available and geom.ndim <= 2 and values.dtype in _COMPILED_DTYPES
            and max(geometry) <= _CORE_MAX_VALUE and h * w <= _CORE_MAX_PLANE
            and oh * ow <= _CORE_MAX_PLANE and kh * kw < 2**30)


def _core_geometry(planes: int, input_size: Sequence[int], out_size: Sequence[int], geom: ConvGeometry,
                   pads: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """The extension's ``(P, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW)``; 1-d as a unit height."""
    def two(values: Sequence[int], fill: int) -> tuple[int, ...]:
        return (fill,) * (2 - len(values)) + tuple(int(v) for v in values)

    return (planes, *two(input_size, 1), *two(out_size, 1), *two(geom.kernel_size, 1), *two(geom.stride, 1),
            *two(geom.dilation, 1), *two([lo for lo, _ in pads], 0))


def _plane_spans(planes: int) -> list[tuple[int, int]]:
    """The planes split across the worker threads."""
    threads = max(1, min(get_num_threads(), planes))
    bounds = [planes * i // threads for i in range(threads + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(threads)]


def _over_planes(kernel, planes: int, *args) -> None:
    """``kernel(isa, *args, start, stop)`` over the planes split across the worker threads."""
    workspace.run_spans(kernel, args, _plane_spans(planes))


def _forward_spans(images: int, planes: int, out_rows: int) -> list[tuple[int, ...]]:
    """The max pooling forward's work per worker thread: ``(start, stop)`` planes, or with fewer images
    than threads ``(0, planes, row0, row1)``: every plane's output rows ``[row0, row1)``, so that a
    worker reads the input rows that the convolution before it wrote on the same thread (its workers
    split a single image's rows: ResNet-18's stem at batch 1)."""
    threads = get_num_threads()
    if images >= threads or out_rows < threads:
        return _plane_spans(planes)
    return [(0, planes, out_rows * k // threads, out_rows * (k + 1) // threads) for k in range(threads)]


def bind_max_pool(x: np.ndarray, y: np.ndarray, geom: ConvGeometry,
                  ceil_mode: bool) -> Callable[[], None] | None:
    """:func:`max_pool_forward`'s values (``argmax=False``) of ``x`` written into ``y``, its kernel calls
    prepared once on the two arrays (C-contiguous, one dtype): ``run()`` computes them again; None where
    that function would not run the compiled core."""
    out_size, pads = geom.pool_padding(x.shape[2:], ceil_mode)
    planes = x.shape[0] * x.shape[1]
    geometry = _core_geometry(planes, x.shape[2:], out_size, geom, pads)
    if not (_compiled(x, geom, geometry) and _bindable(x, y, x.shape[:2] + out_size)):
        return None
    return workspace.bind_spans(backends.core.module.max_pool2d_forward, (x, y, None, geometry),
                                _forward_spans(x.shape[0], planes, geometry[3]))


def _bindable(x: np.ndarray, y: np.ndarray, y_shape: tuple[int, ...]) -> bool:
    return (y.shape == y_shape and y.dtype == x.dtype and x.flags.c_contiguous and y.flags.c_contiguous
            and x.size > 0)


def max_pool_forward(x: np.ndarray, geom: ConvGeometry, ceil_mode: bool = False, compiled: bool = True,
                     argmax: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Max pooling: ``(y, arg)`` where ``arg (N, C, *out)`` is the flat kernel offset of each maximum
    (int32 below 2**31 offsets), None with ``argmax=False`` (no backward pass or indices will need
    it: the values alone are computed); ``compiled=False``: the NumPy passes even when the core is
    in use."""
    input_size = x.shape[2:]
    out_size, pads = geom.pool_padding(input_size, ceil_mode)
    planes = x.shape[0] * x.shape[1]
    geometry = _core_geometry(planes, input_size, out_size, geom, pads)
    if compiled and _compiled(x, geom, geometry):
        y = np.empty(x.shape[:2] + out_size, x.dtype)
        arg = np.empty(y.shape, np.int32) if argmax else None
        args = (np.ascontiguousarray(x), y, arg, geometry)
        workspace.run_spans(backends.core.module.max_pool2d_forward, args,
                            _forward_spans(x.shape[0], planes, geometry[3]))
        return y, arg
    xp = pad_array(x, pads, value=-np.inf) if any(lo or hi for lo, hi in pads) else x
    view = windows(xp, geom.with_padding(pads), out_size)  # (N, C, *out, *k)
    shape = x.shape[:2] + out_size
    if not argmax:  # np.maximum keeps a NaN wherever one is in the window, as the argmax rule does
        offsets = _offsets(geom.kernel_size)
        best = np.array(view[(Ellipsis,) + next(offsets)], dtype=x.dtype)
        for offset in offsets:
            np.maximum(best, view[(Ellipsis,) + offset], out=best)
        return best, None
    check_nan = bool(np.isnan(x).any())
    offsets = list(_offsets(geom.kernel_size))
    index_dtype = np.int32 if len(offsets) < 2**31 else np.int64
    if all(lo == 0 for lo, _ in pads):
        # offset 0 of every window is inside the input: it is torch's starting candidate
        best = np.array(view[(Ellipsis,) + offsets[0]], dtype=x.dtype)
        arg = np.zeros(shape, dtype=index_dtype)
        first = 1
    else:
        best = np.full(shape, -np.inf, dtype=x.dtype)
        arg = np.full(shape, -1, dtype=index_dtype)
        first = 0
    better = np.empty(shape, dtype=bool)
    for j in range(first, len(offsets)):
        values = view[(Ellipsis,) + offsets[j]]
        np.greater(values, best, out=better)
        if check_nan:
            better |= np.isnan(values)
        np.putmask(arg, better, j)
        np.maximum(best, values, out=best)  # = where(better, values, best); NaN wins either way
    unset = arg < 0
    if unset.any():  # every value of the window is -inf: torch keeps its first in-bounds position
        arg[unset] = np.broadcast_to(_first_inside(geom, pads, out_size), shape)[unset]
    return best, arg


def _first_inside(geom: ConvGeometry, pads: Sequence[tuple[int, int]], out_size: Sequence[int]) -> np.ndarray:
    """Flat kernel offset of the first window element inside the input, per output position."""
    firsts = []
    for axis, (m, s, d, (lo, _)) in enumerate(zip(out_size, geom.stride, geom.dilation, pads, strict=True)):
        start = np.arange(m) * s - lo
        first = np.maximum(0, -(start // d))  # smallest k with start + k*d >= 0
        shape = [1] * len(out_size)
        shape[axis] = m
        firsts.append(first.reshape(shape))
    return np.ravel_multi_index(tuple(firsts), geom.kernel_size)


def max_pool_backward(gy: np.ndarray, arg: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
                      ceil_mode: bool = False, compiled: bool = True) -> np.ndarray:
    """Adjoint of max pooling: ``gy`` added to the argmax position of every window (``compiled``
    as in :func:`max_pool_forward`)."""
    out_size, pads = geom.pool_padding(input_size, ceil_mode)
    planes = gy.shape[0] * gy.shape[1]
    geometry = _core_geometry(planes, input_size, out_size, geom, pads)
    if compiled and arg.dtype == np.int32 and _compiled(gy, geom, geometry):
        gx = np.empty(gy.shape[:2] + tuple(input_size), gy.dtype)
        _over_planes(backends.core.module.max_pool2d_backward, planes, np.ascontiguousarray(gy),
                     np.ascontiguousarray(arg), gx, geometry)
        return gx
    padded = geom.with_padding(pads).padded_size(input_size)
    gxp = np.zeros(gy.shape[:2] + padded, dtype=gy.dtype)
    chosen = np.empty(arg.shape, dtype=bool)
    routed = np.empty(gy.shape, dtype=gy.dtype)
    finite = bool(np.isfinite(gy).all())
    for j, offset in enumerate(_offsets(geom.kernel_size)):
        np.equal(arg, j, out=chosen)
        if finite:
            np.multiply(gy, chosen, out=routed)
        else:  # inf * 0 would leak NaN into the positions that were not chosen
            routed = np.where(chosen, gy, 0)
        gxp[_region(offset, geom, out_size)] += routed
    return _crop(gxp, geom.with_padding(pads), input_size)


def max_pool_indices(arg: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
                     ceil_mode: bool = False) -> np.ndarray:
    """torch's ``return_indices``: the flat position of each maximum within its input plane (int64).

    A dilated window can miss the input entirely (all of it padding): its output is ``-inf``, it
    passes no gradient and its index is -1 (torch's CPU kernel reads out of bounds there).
    """
    out_size, pads = geom.pool_padding(input_size, ceil_mode)
    kernel_index = np.unravel_index(arg, geom.kernel_size)
    flat = np.zeros(arg.shape, dtype=np.int64)
    inside = np.ones(arg.shape, dtype=bool)
    for axis, (k, m, s, d, (lo, _), n) in enumerate(
            zip(kernel_index, out_size, geom.stride, geom.dilation, pads, input_size, strict=True)):
        shape = [1] * (2 + len(out_size))
        shape[2 + axis] = m
        position = (np.arange(m) * s - lo).reshape(shape) + k.astype(np.int64) * d
        inside &= (position >= 0) & (position < n)
        flat = flat * n + position
    flat[~inside] = -1
    return flat


def _avg_divisor(geom: ConvGeometry, input_size: Sequence[int], out_size: Sequence[int],
                 count_include_pad: bool, divisor_override: int | None,
                 dtype: np.dtype) -> np.ndarray | float:
    """Per output position divisor, broadcastable to ``(N, C, *out)`` (torch's formula)."""
    if divisor_override is not None:
        return float(divisor_override)
    divisor = np.ones((1, 1) + (1,) * len(out_size), dtype=np.int64)
    for axis, (n, m, s, k, (p, _)) in enumerate(zip(input_size, out_size, geom.stride, geom.kernel_size,
                                                    geom.pads(input_size), strict=True)):
        start = np.arange(m) * s - p
        end = np.minimum(start + k, n + p)
        count = end - start if count_include_pad else np.minimum(end, n) - np.maximum(start, 0)
        shape = [1] * (2 + len(out_size))
        shape[2 + axis] = m
        divisor = divisor * count.reshape(shape)
    return divisor.astype(dtype)


def _accumulator(dtype: np.dtype) -> np.dtype:
    """Window sums of float16 in float32 (in float16, 2048 + 1 == 2048; torch accumulates wider too)."""
    return np.promote_types(dtype, np.float32) if dtype == np.float16 else np.dtype(dtype)


def avg_pool_forward(x: np.ndarray, geom: ConvGeometry, ceil_mode: bool = False,
                     count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    """Average pooling of ``x (N, C, *in)`` (zero padding), ``(N, C, *out)``."""
    input_size = x.shape[2:]
    out_size, pads = geom.pool_padding(input_size, ceil_mode)
    xp = pad_array(x, pads) if any(lo or hi for lo, hi in pads) else x
    view = windows(xp, geom.with_padding(pads), out_size)
    acc = _accumulator(x.dtype)
    total = np.zeros(x.shape[:2] + out_size, dtype=acc)
    for offset in _offsets(geom.kernel_size):
        total += view[(Ellipsis,) + offset]
    total /= _avg_divisor(geom, input_size, out_size, count_include_pad, divisor_override, acc)
    return total.astype(x.dtype, copy=False)


def avg_pool_backward(gy: np.ndarray, geom: ConvGeometry, input_size: Sequence[int], ceil_mode: bool = False,
                      count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    """Adjoint of :func:`avg_pool_forward`: ``gy / divisor`` added to every window position."""
    out_size, pads = geom.pool_padding(input_size, ceil_mode)
    acc = _accumulator(gy.dtype)
    scaled = gy / _avg_divisor(geom, input_size, out_size, count_include_pad, divisor_override, acc)
    padded = geom.with_padding(pads).padded_size(input_size)
    gxp = np.zeros(gy.shape[:2] + padded, dtype=acc)
    for offset in _offsets(geom.kernel_size):
        gxp[_region(offset, geom, out_size)] += scaled
    return _crop(gxp, geom.with_padding(pads), input_size).astype(gy.dtype, copy=False)


def adaptive_pool_matrices(input_size: Sequence[int], output_size: Sequence[int], dtype: np.dtype
                           ) -> list[np.ndarray | None]:
    """Per dimension the ``(m, n)`` averaging matrix of adaptive pooling (None when ``m == n``)."""
    matrices: list[np.ndarray | None] = []
    for n, m in zip(input_size, output_size, strict=True):
        if n == m:
            matrices.append(None)
            continue
        rows = np.arange(m)
        start = (rows * n) // m
        end = -((-(rows + 1) * n) // m)
        columns = np.arange(n)
        inside = (columns >= start[:, None]) & (columns < end[:, None])
        matrices.append((inside / (end - start)[:, None]).astype(dtype))
    return matrices


def _along(x: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` applied to the vectors along ``axis`` of ``x``."""
    moved = np.moveaxis(x, axis, -1)
    return np.moveaxis(np.matmul(moved, matrix.T), -1, axis)


_CORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Global average pooling of at least this many elements splits its rows over the compiled core's
#: workers (fewer: the calling thread). After the 320->1280 1x1 layer that wrote its input, two
#: threads, us: batch 8 (500 K) 54 split, 85 on one thread, 85 NumPy's product; batch 1 (63 K) 15 / 16
#: / 17; 512x7x7 (25 K) 12 / 10 / 9.
GLOBAL_MEANS_PARALLEL_MIN = 1 << 16


def _global_means_args(x: np.ndarray, y: np.ndarray) -> tuple:
    return (x, y, x.shape[0] * x.shape[1], math.prod(x.shape[2:]))


def _global_means_spans(x: np.ndarray) -> list[tuple[int, int]]:
    threads = get_num_threads() if x.size >= GLOBAL_MEANS_PARALLEL_MIN else 1
    return workspace.ranges(x.shape[0] * x.shape[1], threads)


def bind_global_means(x: np.ndarray, y: np.ndarray) -> Callable[[], None] | None:
    """:func:`adaptive_avg_pool_forward` of ``x`` to size 1 written into ``y``, its kernel calls prepared
    once on the two arrays (C-contiguous, one dtype): ``run()`` computes it again; None where that
    function would not run the compiled core."""
    if not (backends.core.available and x.dtype in _CORE_DTYPES
            and _bindable(x, y, x.shape[:2] + (1,) * (x.ndim - 2))):
        return None
    return workspace.bind_spans(backends.core.module.row_means, _global_means_args(x, y),
                                _global_means_spans(x))


def adaptive_avg_pool_forward(x: np.ndarray, output_size: Sequence[int], compiled: bool = True) -> np.ndarray:
    """Adaptive average pooling of ``x (N, C, *in)`` to ``(N, C, *output_size)``; global pooling of
    float32/float64 on the compiled core's ``row_means`` unless ``compiled`` is False (the NumPy pass)."""
    count = math.prod(x.shape[2:])
    global_pool = x.size and all(m == 1 for m in output_size)
    if global_pool and compiled and backends.core.available and x.dtype in _CORE_DTYPES:
        y = np.empty(x.shape[:2] + (1,) * len(output_size), x.dtype)
        workspace.run_spans(backends.core.module.row_means, _global_means_args(np.ascontiguousarray(x), y),
                            _global_means_spans(x))
        return y
    if global_pool:
        # global pooling: one matrix-vector product of the (N*C, count) rows with 1/count weights
        # (the same products as the per-axis matrices; a NumPy mean over rows of 49 cost 32 us for
        # ResNet's 512x7x7, this ~3 us)
        acc = _accumulator(x.dtype)
        rows = np.ascontiguousarray(x, dtype=acc).reshape(-1, count)
        mean = rows @ np.full(count, 1 / count, dtype=acc)
        return mean.astype(x.dtype, copy=False).reshape(x.shape[:2] + (1,) * len(output_size))
    y = x
    local = not np.isfinite(x).all()  # a product's 0 * NaN would reach every window: window by window
    for axis, matrix in enumerate(adaptive_pool_matrices(x.shape[2:], output_size, x.dtype)):
        if matrix is not None:
            y = _windows_along(y, matrix, 2 + axis, False) if local else _along(y, matrix, 2 + axis)
    return np.ascontiguousarray(y) if y is not x else y.copy()


def adaptive_avg_pool_backward(gy: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Adjoint of :func:`adaptive_avg_pool_forward`."""
    g = gy
    local = not np.isfinite(gy).all()
    for axis, matrix in enumerate(adaptive_pool_matrices(input_size, gy.shape[2:], gy.dtype)):
        if matrix is not None:
            g = _windows_along(g, matrix, 2 + axis, True) if local else _along(g, matrix.T, 2 + axis)
    return np.ascontiguousarray(g)


def _windows_along(x: np.ndarray, matrix: np.ndarray, axis: int, adjoint: bool) -> np.ndarray:
    """:func:`_along` with ``matrix`` (``(m, n)``, each row one window's weights) or, with ``adjoint``,
    its transpose, summing each window's own values only: a NaN or inf reaches only the outputs whose
    window holds it, as in torch's direct pooling."""
    moved = np.moveaxis(x, axis, -1)
    m, n = matrix.shape
    out = np.zeros(moved.shape[:-1] + ((n,) if adjoint else (m,)), dtype=np.result_type(x, matrix))
    for o in range(m):
        taps = np.flatnonzero(matrix[o])
        if adjoint:
            out[..., taps] += moved[..., o : o + 1] * matrix[o, taps]
        else:
            out[..., o] = moved[..., taps] @ matrix[o, taps]
    return np.moveaxis(out, -1, axis)
