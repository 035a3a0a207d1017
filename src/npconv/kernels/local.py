"""Locally connected convolution (a separate filter at every output position) and plane shuffles.

Locally connected passes, for ``N`` images, ``C`` input and ``O`` output channels, ``L =
prod(output_size)`` output positions and ``CK = C * prod(kernel_size)``:

* weight ``w (*out, O, C, *k)`` (Lua Torch's layout), viewed as ``wm (L, O, CK)``;
* columns ``col (L, N, CK)``: the kernel window of every image at every output position,
  copied from a channels-last ``(*in, N, C)`` copy of the input (strided block copies);
* forward      ``y[n, o, l]   = sum_j wm[l, o, j] * col[l, n, j]``   (``L`` batched GEMMs)
* grad_input   ``gcol[l, n, j] = sum_o gy[n, o, l] * wm[l, o, j]``  then col2im into a
  channels-last buffer: a loop over kernel offsets adding strided slices (never ``np.add.at``);
* grad_weight  ``gw[l, o, j]  = sum_n gy[n, o, l] * col[l, n, j]``.

``geom`` is a :class:`~npconv.geometry.ConvGeometry` with explicit zero padding (other padding
modes are a separate pad op). Work is chunked over the batch so the column buffer stays within
:data:`npconv.kernels.gemm.WORKSPACE_BYTES` unless the caller passes precomputed columns (the op
keeps them from forward for grad_weight when they fit :data:`RETAINED_COLUMNS_BYTES`).

Plane shuffles (for connection-table convolutions), on axis 1 of ``(N, P, *spatial)`` arrays:
:func:`sum_planes` (a sorted segment sum) is the adjoint of the gather ``a[:, index]``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..geometry import ConvGeometry
from .gemm import WORKSPACE_BYTES
from .padding import pad_array

__all__ = ["columns", "forward", "grad_input", "grad_weight", "sum_planes", "RETAINED_COLUMNS_BYTES"]

#: Largest column array (bytes) an op keeps from forward for grad_weight; larger ones are rebuilt
#: chunk by chunk in the backward pass.
RETAINED_COLUMNS_BYTES = 4 * WORKSPACE_BYTES


def _padded(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    pads = geom.pads()
    return pad_array(x, pads) if any(lo or hi for lo, hi in pads) else x


def _chunk(per_image_bytes: int, n: int) -> int:
    return max(1, min(n, WORKSPACE_BYTES // max(per_image_bytes, 1)))


def _sizes(w: np.ndarray, nd: int) -> tuple[tuple[int, ...], int, int]:
    """``(output_size, out_channels, C * prod(kernel_size))`` of a local weight."""
    out_size = tuple(w.shape[:nd])
    return out_size, w.shape[nd], math.prod(w.shape[nd + 1:])


def _channels_last(x: np.ndarray) -> np.ndarray:
    """``x (N, C, *s)`` as a contiguous ``(*s, N, C)`` array."""
    nd = x.ndim - 2
    return np.ascontiguousarray(np.moveaxis(x, (0, 1), (nd, nd + 1)))


def _region(offset: tuple[int, ...], geom: ConvGeometry, out_size: tuple[int, ...]) -> tuple[slice, ...]:
    """The input positions that kernel tap ``offset`` reads for every output position."""
    return geom.tap_region(offset, out_size)


def _columns_padded(xp: np.ndarray, geom: ConvGeometry, out_size: tuple[int, ...]) -> np.ndarray:
    """``(L, n, C*K)`` columns of the padded ``xp (n, C, *padded)``, built from a channels-last copy.

    With 8 or more channels one strided block copy per kernel tap (each moves contiguous
    ``(n, C)`` rows); with fewer, one copy of the :func:`sliding_window_view` of the windows.
    """
    n, c = xp.shape[:2]
    nd = geom.ndim
    source = _channels_last(xp)  # (*padded, n, C)
    if c >= 8:
        cols = np.empty(out_size + (n, c) + geom.kernel_size, dtype=xp.dtype)
        for offset in itertools.product(*(range(k) for k in geom.kernel_size)):
            cols[(slice(None),) * (nd + 2) + offset] = source[_region(offset, geom, out_size)]
    else:
        view = sliding_window_view(source, geom.extent, axis=tuple(range(nd)))  # (*out_all, n, C, *extent)
        index = (geom.strided_positions(out_size)
                 + (slice(None), slice(None)) + tuple(slice(None, None, d) for d in geom.dilation))
        cols = np.ascontiguousarray(view[index])
    return cols.reshape(math.prod(out_size), n, c * math.prod(geom.kernel_size))


def columns(x: np.ndarray, geom: ConvGeometry, out_size: tuple[int, ...]) -> np.ndarray:
    """The windows of the zero-padded ``x (N, C, *in)`` as a contiguous ``(L, N, C * K)`` array."""
    return _columns_padded(_padded(x, geom), geom, tuple(out_size))


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, cols: np.ndarray | None = None) -> np.ndarray:
    """Locally connected cross-correlation ``x (N, C, *in)``, ``w (*out, O, C, *k)`` -> ``(N, O, *out)``.

    ``cols`` are precomputed :func:`columns` of ``x`` (else built chunk by chunk); no bias.
    """
    n = x.shape[0]
    out_size, o, ck = _sizes(w, geom.ndim)
    length = math.prod(out_size)
    wm = w.reshape(length, o, ck)
    y = np.empty((n, o, length), dtype=np.result_type(x, w))
    if cols is not None:
        y[...] = np.matmul(cols, wm.transpose(0, 2, 1)).transpose(1, 2, 0)
        return y.reshape((n, o) + out_size)
    xp = _padded(x, geom)
    chunk = _chunk(length * ck * x.itemsize, n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = np.matmul(_columns_padded(xp[start:stop], geom, out_size), wm.transpose(0, 2, 1))  # (L, n, O)
        y[start:stop] = part.transpose(1, 2, 0)
    return y.reshape((n, o) + out_size)


def _gy_positions(gy: np.ndarray) -> np.ndarray:
    """``gy (n, O, *out)`` as a contiguous ``(L, n, O)`` array."""
    n, o = gy.shape[:2]
    return np.ascontiguousarray(gy.reshape(n, o, -1).transpose(2, 0, 1))


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: tuple[int, ...]) -> np.ndarray:
    """Adjoint of :func:`forward` in ``x``: ``gy (N, O, *out)`` -> ``gx (N, C, *input_size)``."""
    n = gy.shape[0]
    nd = geom.ndim
    out_size, o, ck = _sizes(w, nd)
    c = w.shape[nd + 1]
    length = math.prod(out_size)
    wm = w.reshape(length, o, ck)
    padded = geom.padded_size(input_size)
    dtype = np.result_type(gy, w)
    gxp = np.zeros(padded + (n, c), dtype=dtype)  # channels last: every tap adds (n, C) rows
    chunk = _chunk(length * ck * dtype.itemsize, n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        gcols = np.matmul(_gy_positions(gy[start:stop]), wm)  # (L, n, CK)
        gcols = gcols.reshape(out_size + (stop - start, c) + geom.kernel_size)
        target = gxp[(slice(None),) * nd + (slice(start, stop),)]
        for offset in itertools.product(*(range(k) for k in geom.kernel_size)):
            target[_region(offset, geom, out_size)] += gcols[(slice(None),) * (nd + 2) + offset]
    crop = geom.interior(input_size)
    return np.ascontiguousarray(np.moveaxis(gxp[crop], (nd, nd + 1), (0, 1)))


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry,
                cols: np.ndarray | None = None) -> np.ndarray:
    """Gradient in ``w``: ``gw[l] = gy[:, :, l]^T @ col[l]``, shape ``(*out, O, C, *k)``."""
    n, c = x.shape[:2]
    o = gy.shape[1]
    out_size = tuple(gy.shape[2:])
    length = math.prod(out_size)
    ck = c * math.prod(geom.kernel_size)
    shape = out_size + (o, c) + geom.kernel_size
    if cols is not None:
        return np.matmul(_gy_positions(gy).transpose(0, 2, 1), cols).reshape(shape)
    gw = np.zeros((length, o, ck), dtype=np.result_type(x, gy))
    xp = _padded(x, geom)
    chunk = _chunk(length * ck * x.itemsize, n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cols_part = _columns_padded(xp[start:stop], geom, out_size)
        gw += np.matmul(_gy_positions(gy[start:stop]).transpose(0, 2, 1), cols_part)
    return gw.reshape(shape)


def sum_planes(a: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """``out[:, p] = sum of a[:, k] over k with index[k] == p``; ``a (N, K, *s)`` -> ``(N, size, *s)``.

    The adjoint of the gather ``out[:, index]``. A sorted segment sum: rows are ordered by
    ``index`` (no copy when already sorted); runs of equal length are summed by one reshaped
    ``sum``, otherwise each run by one ``np.add.reduce`` into its output plane (``np.add.reduceat``
    along axis 1 is an order of magnitude slower). Planes no row maps to are zero.
    """
    index = np.asarray(index)
    order = np.argsort(index, kind="stable")
    if np.any(order != np.arange(len(index))):
        a = a[:, order]
        index = index[order]
    present, starts = np.unique(index, return_index=True)
    n, k = a.shape[:2]
    spatial = a.shape[2:]
    if len(present) == k:  # every row has its own plane
        summed = a
    elif k % len(present) == 0 and np.all(np.diff(starts) == k // len(present)):
        summed = a.reshape((n, len(present), k // len(present)) + spatial).sum(axis=2)
    else:
        summed = np.empty((n, len(present)) + spatial, dtype=a.dtype)
        ends = np.append(starts[1:], k)
        for plane, (start, stop) in enumerate(zip(starts, ends, strict=True)):
            np.add.reduce(a[:, start:stop], axis=1, out=summed[:, plane])
    if len(present) == size:
        return np.ascontiguousarray(summed)
    out = np.zeros((n, size) + spatial, dtype=a.dtype)
    out[:, present] = summed
    return out
