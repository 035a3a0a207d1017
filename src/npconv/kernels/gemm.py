"""GEMM (im2col) convolution: the reference algorithm for all three passes, any N, any groups.

Shapes (``G`` groups, ``Cg = C / G``, ``Og = O / G``, ``K = prod(kernel_size)``,
``L = prod(output_size)``):

* forward       ``x (N, C, *in)``, ``w (O, Cg, *k)``  ->  ``y (N, O, *out)``
  ``y[n, g, :, l] = w[g] (Og, Cg*K) @ col[n, g] (Cg*K, L)``
* grad_input    ``gy (N, O, *out)``, ``w``  ->  ``gx (N, C, *in)``:  ``col = w[g]^T @ gy[n, g]``
  then col2im, a loop over kernel offsets adding strided slices (never ``np.add.at``).
* grad_weight   ``x``, ``gy``  ->  ``gw (O, Cg, *k)``:  ``gw[g] = sum_n gy[n, g] @ col[n, g]^T``.

``geom`` is a :class:`~npconv.geometry.ConvGeometry` with explicit zero padding. The passes are
exact adjoints: grad_input is the transpose of forward, so a transposed convolution is
``grad_input`` applied to its input. Work is chunked over the batch so the column buffer stays
within :data:`WORKSPACE_BYTES`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..geometry import ConvGeometry
from .padding import pad_array

__all__ = ["forward", "grad_input", "grad_weight", "windows", "WORKSPACE_BYTES"]

WORKSPACE_BYTES = 64 * 2**20


def windows(xp: np.ndarray, geom: ConvGeometry, out_size: tuple[int, ...]) -> np.ndarray:
    """Strided view ``(N, C, *out, *k)`` of every kernel window of the padded input ``xp``."""
    nd = geom.ndim
    view = sliding_window_view(xp, geom.extent, axis=tuple(range(2, 2 + nd)))
    index = (
        (slice(None), slice(None))
        + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_size, geom.stride, strict=True))
        + tuple(slice(None, None, d) for d in geom.dilation)
    )
    return view[index]


def _columns(xp: np.ndarray, geom: ConvGeometry, out_size: tuple[int, ...]) -> np.ndarray:
    """im2col: ``(N, G, Cg*K, L)`` contiguous copy of the windows."""
    n, c = xp.shape[:2]
    nd, g = geom.ndim, geom.groups
    view = windows(xp, geom, out_size)  # (N, C, *out, *k)
    view = view.reshape((n, g, c // g) + view.shape[2:])
    order = (0, 1, 2) + tuple(range(3 + nd, 3 + 2 * nd)) + tuple(range(3, 3 + nd))
    cols = np.ascontiguousarray(view.transpose(order))
    return cols.reshape(n, g, (c // g) * math.prod(geom.kernel_size), math.prod(out_size))


def _batch_chunk(per_image_bytes: int, n: int) -> int:
    return max(1, min(n, WORKSPACE_BYTES // max(per_image_bytes, 1)))


def _padded(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    pads = geom.pads()
    return pad_array(x, pads) if any(lo or hi for lo, hi in pads) else x


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Cross-correlation ``y = conv(x, w)`` with zero padding from ``geom``; no bias."""
    n, c = x.shape[:2]
    o, g = w.shape[0], geom.groups
    out_size = geom.output_size(x.shape[2:])
    length = math.prod(out_size)
    wm = w.reshape(g, o // g, -1)
    dtype = np.result_type(x, w)
    y = np.empty((n, g, o // g, length), dtype=dtype)
    xp = _padded(x, geom)
    chunk = _batch_chunk(c * math.prod(geom.kernel_size) * length * x.itemsize, n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        np.matmul(wm, _columns(xp[start:stop], geom, out_size), out=y[start:stop])
    return y.reshape((n, o) + out_size)


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: tuple[int, ...]) -> np.ndarray:
    """Adjoint of :func:`forward` in ``x``: ``gx = conv^T(gy, w)`` of spatial size ``input_size``."""
    n, o = gy.shape[:2]
    g, cg = geom.groups, w.shape[1]
    c = cg * g
    out_size = tuple(gy.shape[2:])
    pads = geom.pads()
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(input_size, pads, strict=True))
    dtype = np.result_type(gy, w)
    gxp = np.zeros((n, c) + padded, dtype=dtype)
    wt = w.reshape(g, o // g, -1).transpose(0, 2, 1)  # (G, Cg*K, Og)
    length = math.prod(out_size)
    chunk = _batch_chunk(c * math.prod(geom.kernel_size) * length * gy.itemsize, n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cols = np.matmul(wt, gy[start:stop].reshape(stop - start, g, o // g, length))
        cols = cols.reshape((stop - start, c) + geom.kernel_size + out_size)
        target = gxp[start:stop]
        for offset in itertools.product(*(range(k) for k in geom.kernel_size)):
            region = tuple(
                slice(i * d, i * d + (m - 1) * s + 1, s)
                for i, d, m, s in zip(offset, geom.dilation, out_size, geom.stride, strict=True)
            )
            target[(slice(None), slice(None)) + region] += cols[(slice(None), slice(None)) + offset]
    crop = tuple(slice(lo, lo + s) for s, (lo, _) in zip(input_size, pads, strict=True))
    if any(lo or hi for lo, hi in pads):
        return np.ascontiguousarray(gxp[(slice(None), slice(None)) + crop])
    return gxp


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Gradient in ``w``: ``gw[g] = sum_n gy[n, g] @ col(x)[n, g]^T``, shape ``(O, Cg, *k)``."""
    n, c = x.shape[:2]
    o = gy.shape[1]
    g = geom.groups
    out_size = tuple(gy.shape[2:])
    length = math.prod(out_size)
    kk = (c // g) * math.prod(geom.kernel_size)
    dtype = np.result_type(x, gy)
    gw = np.zeros((g, o // g, kk), dtype=dtype)
    xp = _padded(x, geom)
    chunk = _batch_chunk(kk * g * length * x.itemsize, n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cols = _columns(xp[start:stop], geom, out_size)  # (n, G, Cg*K, L)
        gyr = gy[start:stop].reshape(stop - start, g, o // g, length)
        gw += np.matmul(gyr, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return gw.reshape((o, c // g) + geom.kernel_size)
