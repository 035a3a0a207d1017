"""Differentiable locally connected and connection-table (map) convolutions.

Locally connected (weight ``(*out, O, C, *k)``, bias ``(O, *out)``):
    ``y = LF(x, w) + b``;  ``gx = LGI(gy, conj w)``;  ``gw = LGW(conj x, gy)``;  ``gb = sum_n gy``
with the passes of :mod:`npconv.kernels.local`; a padding mode other than zeros is a separate
:func:`~npconv.ops.pad.pad` first, as for :func:`npconv.ops.conv.convolution`.

Connection-table convolutions (table rows ``(input_plane, output_plane)``, weight ``(K, *k)``):
    ``y[:, o] = b[o] + sum_{k: table[k, 1] = o} conv(x[:, table[k, 0]], weight[k])``
and the transposed form with ``conv_transpose``. Two exact evaluations:

* ``'dense'``: scatter the K kernels into a zero dense weight and run the core convolution
  (:mod:`npconv.ops.conv`); best when the table covers a good part of all ``C * O`` pairs;
* ``'sparse'``: gather the K input planes, one depthwise (``groups = K``) core convolution, then
  a sorted segment sum of the K result planes into the output planes (:func:`sum_planes`).

``'auto'`` picks dense when the table's density ``K / (C * O)`` reaches :func:`dense_fraction`.
Gradients reach only the K kernels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from ..geometry import PADDING_MODES, ConvGeometry
from ..kernels import algorithm as registry
from ..kernels import local as local_kernels
from ..kernels import plan
from ..tensor import Tensor, _conj, as_array, is_grad_enabled, make_result
from . import conv as conv_ops
from .pad import pad

__all__ = [
    "local_convolution", "map_convolution", "map_conv_transpose", "gather_planes", "sum_planes",
    "DENSE_FRACTION", "DENSE_MAC_COST", "SPARSE_PLANE_COST", "MAP_METHODS", "dense_fraction",
]

#: The density from which ``'auto'`` runs the dense method where the sparse method's depthwise
#: convolution runs on the NumPy engine: the measured crossover of 3-6% for 3x3 and 5x5 kernels.
DENSE_FRACTION = 0.05
#: Where it runs on the compiled depthwise kernel (3-10x faster), the sparse method costs per
#: connection ``taps + SPARSE_PLANE_COST`` depthwise multiply-adds per position (the gather and the
#: segment sum of its plane count as SPARSE_PLANE_COST taps) and the dense one ``DENSE_MAC_COST *
#: taps`` per channel pair: dense from a density of ``DENSE_MAC_COST * taps / (taps +
#: SPARSE_PLANE_COST)``. Fitted to the crossovers measured with two threads, AVX-512, float32, forward
#: and forward+backward: 1x1 below 1.6%, 3x3 6-12%, 5x5 12-25%, 7x7 12-25% (formula: 1.2%, 9%, 18%,
#: 25%; docs/local-and-map.md).
DENSE_MAC_COST = 0.41
SPARSE_PLANE_COST = 32
MAP_METHODS = ("auto", "dense", "sparse")


def _wants_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def _local_core(x: Any, w: Any, b: Any, geom: ConvGeometry) -> Tensor:
    xd, wd = as_array(x), as_array(w)
    nd = geom.ndim
    out_size = tuple(wd.shape[:nd])
    column_bytes = math.prod(out_size) * xd.shape[0] * math.prod(wd.shape[nd + 1:]) * xd.itemsize
    keep_columns = (is_grad_enabled() and _wants_grad(w)
                    and column_bytes <= local_kernels.RETAINED_COLUMNS_BYTES)
    cols = local_kernels.columns(xd, geom, out_size) if keep_columns else None
    y = local_kernels.forward(xd, wd, geom, cols)
    if b is not None:
        y += as_array(b)[None]

    def backward(g: np.ndarray) -> tuple[Any, Any, Any]:
        gx = local_kernels.grad_input(g, _conj(wd), geom, xd.shape[2:]) if _wants_grad(x) else None
        gw = None
        if _wants_grad(w):
            gw = local_kernels.grad_weight(xd, g, geom, _conj(cols) if cols is not None else None)
        gb = g.sum(axis=0) if _wants_grad(b) else None
        return gx, gw, gb

    return make_result(y, (x, w, b), backward, "LocalConvolutionBackward")


def local_convolution(x: Any, w: Any, b: Any, geom: ConvGeometry, padding_mode: str = "zeros") -> Tensor:
    """Locally connected cross-correlation of ``x (N, C, *in)`` with ``w (*out, O, C, *k)``.

    ``y[n, o, p] = b[o, p] + sum_{c, q} w[p, o, c, q] * x_padded[n, c, p * stride + q * dilation]``;
    ``b (O, *out)`` or None. ``out`` must be ``geom.output_size(in)``.
    """
    pads = geom.pads(as_array(x).shape[2:])
    if padding_mode == "zeros":
        return _local_core(x, w, b, geom.with_padding(pads))
    return _local_core(pad(x, pads, PADDING_MODES[padding_mode]), w, b, geom.with_padding(0))


# -- plane gathers and scatters --------------------------------------------------------------
def gather_planes(x: Any, index: np.ndarray) -> Tensor:
    """``x[:, index]`` for ``x (N, P, *s)``; backward sums repeated planes (:func:`sum_planes`)."""
    xd = as_array(x)
    size = xd.shape[1]
    if len(index) == size and np.array_equal(index, np.arange(size)):
        return x if isinstance(x, Tensor) else Tensor(xd)  # the identity gather (a one-to-one table)
    return make_result(np.take(xd, index, axis=1), (x,),
                       lambda g: (local_kernels.sum_planes(g, index, size),), "GatherPlanesBackward")


def sum_planes(a: Any, index: np.ndarray, size: int) -> Tensor:
    """``out[:, p] = sum_{k: index[k] = p} a[:, k]``, ``(N, K, *s) -> (N, size, *s)``; backward gathers."""
    return make_result(local_kernels.sum_planes(as_array(a), index, size), (a,),
                       lambda g: (np.take(g, index, axis=1),), "SumPlanesBackward")


def _take_rows(w: Any, order: np.ndarray) -> Tensor:
    """``w[order]`` for a permutation ``order``; backward applies the inverse permutation."""
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return make_result(as_array(w)[order], (w,), lambda g: (g[inverse],), "PermuteRowsBackward")


def _dense_weight(w: Any, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> Tensor:
    """Zero ``(*shape, *k)`` weight with ``dense[rows[k], cols[k]] = w[k]`` (pairs are distinct)."""
    wd = as_array(w)
    dense = np.zeros(shape + wd.shape[1:], dtype=wd.dtype)
    dense[rows, cols] = wd
    return make_result(dense, (w,), lambda g: (g[rows, cols],), "MapToDenseBackward")


def _add_plane_bias(y: Tensor, b: Any) -> Tensor:
    if b is None:
        return y
    spatial = (1,) * (y.ndim - 2)
    if isinstance(b, Tensor):
        return y + b.reshape((-1,) + spatial)
    return y + as_array(b).reshape((-1,) + spatial)


def dense_fraction(x_shape: tuple[int, ...], kernel_size: tuple[int, ...], connections: int,
                   geom: ConvGeometry, dtype: Any) -> float:
    """The table density from which ``'auto'`` runs the dense method: :data:`DENSE_FRACTION`, or
    the compiled depthwise kernel's (:data:`DENSE_MAC_COST`, :data:`SPARSE_PLANE_COST`) where the
    planner runs the sparse method's depthwise convolution (``connections`` planes of ``x_shape``)
    on it."""
    return _dense_fraction(tuple(x_shape), tuple(kernel_size), connections, geom, np.dtype(dtype),
                           plan.state())


@functools.lru_cache(maxsize=256)
def _dense_fraction(x_shape: tuple[int, ...], kernel_size: tuple[int, ...], connections: int,
                    geom: ConvGeometry, dtype: np.dtype, planner_state: tuple) -> float:
    del planner_state  # part of the cache key only
    depthwise = _depthwise(geom, connections)
    depthwise = depthwise.with_padding(depthwise.pads(x_shape[2:]))
    shape = (x_shape[0], connections) + tuple(x_shape[2:])
    try:
        name = plan.choose("forward", shape, (connections, 1) + tuple(kernel_size), depthwise, dtype)
    except ValueError:  # e.g. a padding wider than the input: the convolution itself will say
        return DENSE_FRACTION
    # the crossover was measured on 1-d/2-d planes; 3-d's compiled forward (two threads, 32 channels
    # 12x28x28 batch 2, 3x3x3) ran the dense method faster from 6-9% already: DENSE_FRACTION there
    if name != "depthwise" or not registry.get(name).compiled or geom.ndim > 2:
        return DENSE_FRACTION
    taps = math.prod(kernel_size)
    return DENSE_MAC_COST * taps / (taps + SPARSE_PLANE_COST)


def _use_dense(method: str, x: Any, w: Any, k: int, c: int, o: int, geom: ConvGeometry) -> bool:
    """Whether to run the dense method: asked for, or chosen by ``'auto'``; never for a non-finite
    ``x`` with a table short of all ``C * O`` pairs (the dense weight's zeros would carry a NaN or an
    inf to outputs the table does not connect to it)."""
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {MAP_METHODS}, got {method!r}")
    xd, wd = as_array(x), as_array(w)
    dtype = np.result_type(xd, wd)
    dense = method == "dense" or (method == "auto"
                                  and k >= dense_fraction(xd.shape, wd.shape[1:], k, geom, dtype) * c * o)
    # a non-finite x sums to NaN or inf (a sum overflowing to inf only costs the dense method)
    return dense and (k == c * o or bool(np.isfinite(xd.sum())))


def _depthwise(geom: ConvGeometry, k: int) -> ConvGeometry:
    return dataclasses.replace(geom, groups=k)


def _sorted_by_output(table: np.ndarray, w: Any) -> tuple[np.ndarray, Any]:
    """Table rows and kernels ordered by output plane (so the final segment sum needs no copy)."""
    order = np.argsort(table[:, 1], kind="stable")
    if np.all(order == np.arange(len(order))):
        return table, w
    return table[order], _take_rows(w, order)


def map_convolution(x: Any, w: Any, b: Any, table: np.ndarray, out_channels: int, geom: ConvGeometry,
                    padding_mode: str = "zeros", method: str = "auto") -> Tensor:
    """Connection-table cross-correlation of ``x (N, C, *in)`` with kernels ``w (K, *k)``.

    ``table (K, 2)`` holds distinct valid ``(input_plane, output_plane)`` rows; ``b (out_channels,)``.
    """
    c = as_array(x).shape[1]
    k = len(table)
    if _use_dense(method, x, w, k, c, out_channels, geom):
        dense = _dense_weight(w, table[:, 1], table[:, 0], (out_channels, c))
        return conv_ops.convolution(x, dense, b, geom, padding_mode)
    table, w = _sorted_by_output(table, w)
    kernels = w.reshape((k, 1) + tuple(as_array(w).shape[1:]))
    y = conv_ops.convolution(gather_planes(x, table[:, 0]), kernels, None, _depthwise(geom, k), padding_mode)
    return _add_plane_bias(sum_planes(y, table[:, 1], out_channels), b)


def map_conv_transpose(x: Any, w: Any, b: Any, table: np.ndarray, out_channels: int, geom: ConvGeometry,
                       output_padding: tuple[int, ...] | None = None, padding_mode: str = "zeros",
                       method: str = "auto") -> Tensor:
    """Connection-table transposed convolution: per row ``conv_transpose(x[:, i], w[k])`` summed into ``o``.

    The adjoint (in ``x``) of :func:`map_convolution` with the table's columns swapped, for every
    padding mode; output size per :meth:`ConvGeometry.transposed_output_size`.
    """
    c = as_array(x).shape[1]
    k = len(table)
    if _use_dense(method, x, w, k, c, out_channels, geom):
        dense = _dense_weight(w, table[:, 0], table[:, 1], (c, out_channels))
        return conv_ops.conv_transpose(x, dense, b, geom, output_padding, padding_mode)
    table, w = _sorted_by_output(table, w)
    kernels = w.reshape((k, 1) + tuple(as_array(w).shape[1:]))
    y = conv_ops.conv_transpose(gather_planes(x, table[:, 0]), kernels, None, _depthwise(geom, k),
                                output_padding, padding_mode)
    return _add_plane_bias(sum_planes(y, table[:, 1], out_channels), b)
