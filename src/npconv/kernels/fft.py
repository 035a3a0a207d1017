"""FFT convolution (``scipy.fft`` real transforms) for large kernels and long signals; N-d, any groups.

With the padded input size ``P`` per dimension, the dilated kernel ``wd`` (extent ``e``, zeros
between taps) and a transform length ``L = next_fast_len(P) >= P``, circular correlation of length
``L`` equals linear correlation on every needed position. The input is transformed unpadded
(``rfftn`` zero-extends it to ``L``); the low padding ``lo`` becomes an index shift by ``-lo``
modulo ``L`` (folded into the kernel's position for the forward pass).

* forward:      ``Y[n, g, o] = sum_c X[n, g, c] * conj(W[g, o, c])``, ``y = irfft(Y)[o * s]``
  (stride by subsampling the stride-1 result, positions ``0 .. (out - 1) * s``);
* grad_input:   ``GX[n, g, c] = sum_o GY[n, g, o] * W[g, o, c]`` with ``gy`` zero-upsampled by the
  stride, ``gx = irfft(GX)[lo : lo + in]`` (the padding cropped);
* grad_weight:  ``GW[g, o, c] = sum_n conj(GY[n, g, o]) * X[n, g, c]``, ``gw = irfft(GW)[k * d - lo]``.

Capital letters are ``rfftn`` spectra over the spatial axes. Depthwise (one channel per group) is
an elementwise product; other groupings a batched matrix product per frequency. float32 stays
float32 (complex64 spectra; error ~1e-7 norm-relative on the benchmark cases). Work is chunked
over the batch so spectra stay within :data:`WORKSPACE_BYTES`; ``scipy.fft`` ``workers`` give the
threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft

from ..backends import get_num_threads
from ..geometry import ConvGeometry
from .algorithm import PASSES
from .numerics import Operands, within

__all__ = ["NAME", "LOCAL", "SPREAD_LIMIT", "supports", "recommended", "admits", "forward", "grad_input",
           "grad_weight", "WORKSPACE_BYTES"]

NAME = "fft"
#: Not local: every output mixes the whole signal's spectrum (see admits).
LOCAL = False
#: Largest spread (:func:`~npconv.kernels.numerics.value_range`) of a data operand: the error at an
#: output, relative to its window, grows up to about 0.2 eps x spread (docs/algorithms.md).
SPREAD_LIMIT = 2.0**8
#: Spectra of one batch chunk are kept below this size (a single image may exceed it).
WORKSPACE_BYTES = 64 * 2**20
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """True for any float32/float64 N-d convolution (all strides, dilations, groups, paddings)."""
    if pass_name not in PASSES or np.dtype(dtype) not in _DTYPES:
        return False
    return geom.fits(x_shape, w_shape)


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """Measured rule: stride 1, <= 4 input channels per group and more than 49 kernel taps (beyond
    7x7; the direct depthwise kernel wins up to there: see ``depthwise.recommended``)."""
    if not supports(pass_name, x_shape, w_shape, geom, dtype):
        return False
    return all(s == 1 for s in geom.stride) and w_shape[1] <= 4 and math.prod(geom.kernel_size) > 49


def admits(pass_name: str, operands: Operands, geom: ConvGeometry) -> bool:
    """Finite operands, data spread within :data:`SPREAD_LIMIT`, and no overflow in the spectra:
    ``|spectrum| <= N * C * K * P**2 * prod(peaks)`` (``P``: padded size bound, ``K`` taps)."""
    first = operands[0]
    if pass_name == "grad_input":  # operands (gy, w): the padded input spans the spread outputs
        padded = math.prod(m + e for m, e in zip(geom.spread_size(first.shape[2:]), geom.extent, strict=True))
    else:
        padded = math.prod(geom.padded_size(first.shape[2:]))
    growth = float(first.shape[0]) * first.shape[1] * math.prod(geom.kernel_size) * float(padded) ** 2
    return within(operands, (0, 1) if pass_name == "grad_weight" else (0,), SPREAD_LIMIT, growth)


# -- helpers ------------------------------------------------------------------------------------
def _check(*arrays: np.ndarray) -> np.dtype:
    dtype = np.result_type(*arrays)
    if dtype not in _DTYPES:
        raise TypeError(f"fft convolution needs float32 or float64 arrays, got {dtype}")
    return dtype


def _axes(nd: int) -> tuple[int, ...]:
    return tuple(range(2, 2 + nd))


def _lengths(padded: Sequence[int]) -> tuple[int, ...]:
    return tuple(sfft.next_fast_len(int(p), real=True) for p in padded)


def _kernel_spectrum(w: np.ndarray, geom: ConvGeometry, lengths: tuple[int, ...], dtype: np.dtype,
                     shift: Sequence[int] | None = None) -> np.ndarray:
    """``rfftn`` of the dilated kernel ``(O, Cg, *extent)`` zero-extended to ``lengths``.

    With ``shift``, tap ``j`` sits at ``(j - shift) mod L``: correlating the unpadded input with it
    gives the padded input's correlation at position ``i`` directly at index ``i``.
    """
    if all(d == 1 for d in geom.dilation) and shift is None:
        wd = w.astype(dtype, copy=False)
    else:
        wd = np.zeros(w.shape[:2] + (tuple(lengths) if shift is not None else geom.extent), dtype)
        wd[(slice(None), slice(None)) + tuple(slice(0, e, d) for e, d in zip(geom.extent, geom.dilation,
                                                                             strict=True))] = w
        if shift is not None:
            wd = np.roll(wd, tuple(-v for v in shift), axis=_axes(geom.ndim))
    return sfft.rfftn(wd, s=lengths, axes=_axes(geom.ndim), workers=get_num_threads())


def _wrapped(positions, pads: Sequence[tuple[int, int]], lengths: Sequence[int]) -> tuple:
    """Index of padded-grid ``positions`` (one sequence per dimension) in a circular result of the
    unpadded input: padded position ``p`` is ``(p - lo) mod L`` (no aliasing since ``L >= padded``)."""
    index = [np.asarray([(p - lo) % size for p in pos], dtype=np.intp)
             for pos, (lo, _), size in zip(positions, pads, lengths, strict=True)]
    return (slice(None), slice(None)) + np.ix_(*index)


def _chunk(n: int, per_image: int) -> int:
    return max(1, min(n, WORKSPACE_BYTES // max(per_image, 1)))


def _mix(a: np.ndarray, b: np.ndarray, groups: int, conj_b: bool, transpose_b: bool) -> np.ndarray:
    """Per-frequency channel mixing of spectra ``a (n, G*Ca, *F)`` with ``b (G*Ob, Cb, *F)``.

    Returns ``r (n, G*Cr, *F)`` with ``r[n, g, i] = sum_j B[g, i, j] a[n, g, j]`` where
    ``B[g] = b[g]`` (``(Ob, Cb)``, contracting ``Cb``) or ``b[g]^T`` (contracting ``Ob``) if
    ``transpose_b``; ``conj_b`` conjugates ``b`` first.
    """
    n = a.shape[0]
    freq = a.shape[2:]
    ob, cb = b.shape[0] // groups, b.shape[1]
    bc = np.conj(b) if conj_b else b
    if (cb if not transpose_b else ob) == 1:  # one channel in: broadcast product
        if not transpose_b:  # r[n, g, o] = b[g, o, 0] * a[n, g]
            return (a.reshape((n, groups, 1) + freq) * bc.reshape((1, groups, ob) + freq)).reshape(
                (n, groups * ob) + freq)
        return (a.reshape((n, groups, 1) + freq) * bc.reshape((1, groups, cb) + freq)).reshape(
            (n, groups * cb) + freq)
    f = math.prod(freq)
    ca = a.shape[1] // groups
    af = np.ascontiguousarray(a.reshape(n, groups, ca, f).transpose(1, 3, 2, 0))  # (G, F, Ca, n)
    bm = bc.reshape(groups, ob, cb, f).transpose(0, 3, 1, 2)  # (G, F, Ob, Cb)
    if transpose_b:
        bm = bm.transpose(0, 1, 3, 2)  # (G, F, Cb, Ob)
    r = np.matmul(np.ascontiguousarray(bm), af)  # (G, F, Cr, n)
    cr = r.shape[2]
    return np.ascontiguousarray(r.transpose(3, 0, 2, 1)).reshape((n, groups * cr) + freq)


# -- passes -------------------------------------------------------------------------------------
def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y (N, O, *out)`` of ``x (N, C, *in)``, ``w (O, C/groups, *k)`` with zero padding ``geom.pads()``."""
    dtype = _check(x, w)
    n, c = x.shape[:2]
    o, nd = w.shape[0], geom.ndim
    in_size = x.shape[2:]
    pads = geom.pads(in_size)
    out_size = geom.output_size(in_size)
    padded = geom.padded_size(in_size)
    lengths = _lengths(padded)
    axes, workers = _axes(nd), get_num_threads()
    ws = _kernel_spectrum(w, geom, lengths, dtype, shift=[lo for lo, _ in pads])
    take = (slice(None), slice(None)) + geom.strided_positions(out_size)
    y = np.empty((n, o) + out_size, dtype)
    spec_bytes = math.prod(ws.shape[2:]) * ws.itemsize
    chunk = _chunk(n, spec_bytes * (c + o) + math.prod(lengths) * x.itemsize * (c + o))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        xs = sfft.rfftn(x[start:stop].astype(dtype, copy=False), s=lengths, axes=axes, workers=workers)
        spectrum = _mix(xs, ws, geom.groups, conj_b=True, transpose_b=False)
        y[start:stop] = sfft.irfftn(spectrum, s=lengths, axes=axes, workers=workers)[take]
    return y


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int]) -> np.ndarray:
    """``gx (N, C, *input_size)``: adjoint of :func:`forward` in ``x``."""
    dtype = _check(gy, w)
    n, o = gy.shape[:2]
    nd, groups = geom.ndim, geom.groups
    c = w.shape[1] * groups
    in_size = tuple(int(v) for v in input_size)
    out_size = tuple(gy.shape[2:])
    padded = geom.padded_size(in_size)
    lengths = _lengths(padded)
    axes, workers = _axes(nd), get_num_threads()
    ws = _kernel_spectrum(w, geom, lengths, dtype)
    strided = any(s > 1 for s in geom.stride)
    spread = (slice(None), slice(None)) + geom.strided_positions(out_size)
    crop = (slice(None), slice(None)) + geom.interior(in_size)
    gx = np.empty((n, c) + in_size, dtype)
    spec_bytes = math.prod(ws.shape[2:]) * ws.itemsize
    chunk = _chunk(n, spec_bytes * (c + o) + math.prod(lengths) * gy.itemsize * (c + o))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        g = gy[start:stop].astype(dtype, copy=False)
        if strided:
            up = np.zeros((stop - start, o) + geom.spread_size(out_size), dtype)
            up[spread] = g
            g = up
        spectrum = _mix(sfft.rfftn(g, s=lengths, axes=axes, workers=workers), ws, groups,
                        conj_b=False, transpose_b=True)
        gx[start:stop] = sfft.irfftn(spectrum, s=lengths, axes=axes, workers=workers)[crop]
    return gx


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (O, C/groups, *k)``: ``sum_n`` correlation of the padded input with ``gy`` (upsampled)."""
    dtype = _check(x, gy)
    n, c = x.shape[:2]
    o, nd, groups = gy.shape[1], geom.ndim, geom.groups
    cg, og = c // groups, o // groups
    in_size = x.shape[2:]
    pads = geom.pads(in_size)
    out_size = tuple(gy.shape[2:])
    padded = geom.padded_size(in_size)
    lengths = _lengths(padded)
    axes, workers = _axes(nd), get_num_threads()
    spread = (slice(None), slice(None)) + geom.strided_positions(out_size)
    strided = any(s > 1 for s in geom.stride)
    freq = lengths[:-1] + (lengths[-1] // 2 + 1,)
    cdtype = np.result_type(dtype, np.complex64)
    total = np.zeros((groups, og, cg) + freq, cdtype)
    per_image = math.prod(freq) * cdtype.itemsize * (c + o) + math.prod(lengths) * x.itemsize * (c + o)
    chunk = _chunk(n, per_image)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        k = stop - start
        xs = sfft.rfftn(x[start:stop].astype(dtype, copy=False), s=lengths, axes=axes, workers=workers)
        xs = xs.reshape((k, groups, cg) + freq)
        g = gy[start:stop].astype(dtype, copy=False)
        if strided:
            up = np.zeros((k, o) + geom.spread_size(out_size), dtype)
            up[spread] = g
            g = up
        gs = np.conj(sfft.rfftn(g, s=lengths, axes=axes, workers=workers)).reshape((k, groups, og) + freq)
        if cg == 1 or og == 1:
            product = gs.reshape((k, groups, og, 1) + freq) * xs.reshape((k, groups, 1, cg) + freq)
            total += product.sum(axis=0)
        else:
            f = math.prod(freq)
            gm = np.ascontiguousarray(gs.reshape(k, groups, og, f).transpose(1, 3, 2, 0))  # (G, F, Og, k)
            xm = np.ascontiguousarray(xs.reshape(k, groups, cg, f).transpose(1, 3, 0, 2))  # (G, F, k, Cg)
            total += np.matmul(gm, xm).transpose(0, 2, 3, 1).reshape((groups, og, cg) + freq)
    full = sfft.irfftn(total, s=lengths, axes=tuple(range(3, 3 + nd)), workers=workers)
    positions = [range(0, (kk - 1) * d + 1, d) for kk, d in zip(geom.kernel_size, geom.dilation, strict=True)]
    taps = _wrapped(positions, pads, lengths)
    return np.ascontiguousarray(full[(slice(None),) + taps], dtype=dtype).reshape((o, cg) + geom.kernel_size)
