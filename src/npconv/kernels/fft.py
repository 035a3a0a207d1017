"""FFT convolution (``scipy.fft`` real transforms) for large kernels and long signals; N-d, any groups.

With the padded input size ``P`` per dimension, the dilated kernel ``wd`` (extent ``e``, zeros
between taps) and a transform length ``L = next_fast_len(P) >= P``, circular correlation of length
``L`` equals linear correlation on every needed position. The input is transformed unpadded
(zero-extended to ``L``, transforming only lines that hold data: :func:`_spectrum`), the inverse
computes only the positions a pass keeps (:func:`_signal`); the low padding ``lo`` becomes an index
shift by ``-lo`` modulo ``L`` (folded into the kernel's position for the forward pass).

* forward:      ``Y[n, g, o] = sum_c X[n, g, c] * conj(W[g, o, c])``, ``y = irfft(Y)[o * s]``
  (stride by subsampling the stride-1 result, positions ``0 .. (out - 1) * s``);
* grad_input:   ``GX[n, g, c] = sum_o GY[n, g, o] * W[g, o, c]`` with ``gy`` zero-upsampled by the
  stride, ``gx = irfft(GX)[lo : lo + in]`` (the padding cropped);
* grad_weight:  ``GW[g, o, c] = sum_n conj(GY[n, g, o]) * X[n, g, c]``, ``gw = irfft(GW)[k * d - lo]``.

Capital letters are ``rfftn`` spectra over the spatial axes. Depthwise (one channel per group) is
an elementwise product; other groupings a batched matrix product per frequency. float32 stays
float32 (complex64 spectra; error ~1e-7 norm-relative on the benchmark cases). Work is chunked
over the batch so spectra stay within :data:`WORKSPACE_BYTES`; the transforms run split over npconv's
worker threads (:func:`_transform`), never on scipy's own thread pool.
"""

from __future__ import annotations

import collections
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import workspace
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
#: The spectra of one block (images x groups x channels) are kept below this size (one image and
#: one channel pair may exceed it).
WORKSPACE_BYTES = 64 * 2**20
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))



def _scipy_fft():  # noqa: ANN202
    """scipy.fft, imported on the first FFT call: ~0.2 s a first convolution of another kind need not pay."""
    import scipy.fft

    return scipy.fft


#: Transforms of at least this many elements run split over npconv's worker threads (smaller ones on
#: the calling thread).
PARALLEL_TRANSFORM_SIZE = 1 << 16
#: Pieces per worker of a split transform: a piece's result is copied into the whole one (scipy has no
#: ``out=``), so the pieces alive at once add at most 1 / PIECES_PER_WORKER of it to the peak memory.
PIECES_PER_WORKER = 4


def _transform(name: str, a: np.ndarray, axes: tuple[int, ...], **kwargs: Any) -> np.ndarray:
    """``scipy.fft.<name>`` of ``a`` over ``axes`` (ascending, non-negative; ``axis=`` for the 1-d
    transforms) through :func:`_split`: the same values as one call."""
    func = getattr(_scipy_fft(), name)
    where = {"axis": axes[0]} if name in ("fft", "rfft") else {"axes": axes}
    # a complex-to-complex transform that may overwrite its input goes into it, as one call does
    in_place = kwargs.get("overwrite_x", False) and name in ("fft", "ifft") and a.dtype.kind == "c"
    return _split(lambda piece: func(piece, workers=1, **where, **kwargs), a, axes[0], in_place)


def _split(run, a: np.ndarray, before: int, in_place: bool = False) -> np.ndarray:
    """``run(a)`` (single-threaded, mapping each index of ``a``'s axes before ``before`` to the same
    index of its result), run on pieces of ``a`` split along the first of those axes that has room
    (views, never a copy of ``a``) over npconv's worker threads; ``in_place``: the result is ``a``.
    scipy's own thread pool (``workers > 1``) is never started: its fork handler joins its threads and
    can wait forever on one that missed the shutdown's wake-up (a pytest run hung so in a forking test);
    npconv's threads are fork-safe."""
    threads = get_num_threads()
    split = next((j for j in range(before) if a.shape[j] >= 2), None)
    if threads < 2 or split is None or a.size < PARALLEL_TRANSFORM_SIZE:
        return run(a)
    count = a.shape[split]
    threads = min(threads, count)
    pieces = _ranges(count, max(1, -(-count // (threads * PIECES_PER_WORKER))))
    ahead = (slice(None),) * split
    out: list[np.ndarray] = [a] if in_place else []
    lock = threading.Lock()

    def piece(_: int, span: tuple[int, int]) -> None:
        at = ahead + (slice(*span),)
        result = run(a[at])
        with lock:
            if not out:
                shape = result.shape[:split] + (count,) + result.shape[split + 1:]
                out.append(np.empty(shape, result.dtype))
        if not np.may_share_memory(result, out[0][at]):
            out[0][at] = result

    workspace.run(pieces, piece, threads, blas=0)
    return out[0]


def _spectrum(a: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """``rfftn(a, s=lengths)`` over ``a``'s last ``len(lengths)`` axes, transforming only lines that
    hold data: a real transform along the last axis (``n=L``), then complex ones along the others from
    the last to the first, each over the lines within the extent of the axes not yet transformed
    (a 56 x 56 image at L = 90: 56 of 90 rows; the zero lines' transforms are zero)."""
    sf, first = _scipy_fft(), a.ndim - len(lengths)

    def run(part: np.ndarray) -> np.ndarray:
        spectrum = sf.rfft(part, n=lengths[-1], axis=-1, workers=1)
        for axis in range(a.ndim - 2, first - 1, -1):
            spectrum = sf.fft(spectrum, n=lengths[axis - first], axis=axis, workers=1, overwrite_x=True)
        return spectrum

    return _split(run, a, first)


def _signal(spectrum: np.ndarray, lengths: Sequence[int], keep: Sequence[Any], overwrite: bool = False
            ) -> np.ndarray:
    """``irfftn(spectrum, s=lengths)[..., keep]`` over the last ``len(lengths)`` axes, ``keep`` one index
    per axis (a slice or an integer array): the complex inverse transforms along the axes but the last,
    from the first, each followed by taking its kept positions, so that the next axis and the last
    axis's real transform run only over kept lines. ``overwrite``: ``spectrum`` may be destroyed."""
    sf, first = _scipy_fft(), spectrum.ndim - len(lengths)

    def run(part: np.ndarray) -> np.ndarray:
        for axis in range(first, spectrum.ndim - 1):
            part = sf.ifft(part, axis=axis, workers=1, overwrite_x=overwrite or axis > first)
            part = part[(slice(None),) * axis + (keep[axis - first],)]
        return sf.irfft(part, n=lengths[-1], axis=-1, workers=1)[..., keep[-1]]

    return _split(run, spectrum, first)


def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """True for float32/float64 N-d convolutions (all strides, dilations, groups, paddings) whose
    smallest block (one image, one channel pair) keeps the pass within the memory bound."""
    if pass_name not in PASSES or np.dtype(dtype) not in _DTYPES:
        return False
    return geom.fits(x_shape, w_shape) and _smallest_block_fits(pass_name, x_shape, w_shape, geom, dtype)


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """Measured rules, stride 1 and more than 49 kernel taps (beyond 7x7; the direct depthwise kernel
    wins up to there: see ``depthwise.recommended``): at most 4 input channels per group, except what
    the compiled depthwise and grouped kernels run faster (:func:`direct_kernel_wins`); or, with
    the compiled core mixing the channels, the forward and grad_input of a wider convolution whose
    whole kernel spectrum fits one block (kept for the next call) and whose fresh transform costs
    less than the direct products (:func:`_dense_pays`)."""
    if not supports(pass_name, x_shape, w_shape, geom, dtype):
        return False
    taps = math.prod(geom.kernel_size)
    if not all(s == 1 for s in geom.stride) or taps <= 49:
        return False
    if w_shape[1] <= 4:
        return not direct_kernel_wins(pass_name, w_shape, geom)
    return (pass_name != "grad_weight" and backends.core.available
            and _dense_pays(x_shape, w_shape, geom, dtype))


#: Kernel taps up to which a stride-1 convolution of 2-4 input channels per group runs on the
#: compiled grouped kernel rather than the FFT, per pass (two threads, float32, the Zen 5 machine;
#: docs/performance.md). Grouped / FFT time, batch 8, 64 channels at 56 px and 128 at 28 px, 2 and 4
#: channels per group, forward and grad_input: 9x9 0.39-0.76, 13x13 0.84-1.28 (the FFT with its kept
#: spectrum), 17x17 1.50-1.79; grad_weight 0.16-0.41 up to 13x13, 0.47-0.60 at 17x17, 0.61-0.81 at 21x21.
GROUPED_MAX_TAPS = {"forward": 169, "grad_input": 169, "grad_weight": 441}
#: The same for depthwise convolutions (one channel per group) on the compiled depthwise kernel.
#: Depthwise / FFT time, 2-d, 96 ch at 56 px, 192 at 28, 384 at 14 (batch 8) and 96 at 56 (batch 1):
#: 15x15 forward 0.47-0.69, grad_input 0.63-0.83; 17x17 0.62-0.87 / 0.71-1.03; grad_weight 11x11
#: 0.53-0.69, 13x13 0.70-0.89, 15x15 0.90-1.07. 1-d, 32 ch x 16384 (batch 2) and 64 x 4096 (batch 8):
#: k = 127 0.53-0.62 / 0.53-0.66 / 0.71-1.00, k = 255 0.83-1.07 / 1.00-1.14 / 1.65-1.73.
DEPTHWISE_MAX_TAPS = {"forward": 225, "grad_input": 225, "grad_weight": 121}


#: The most taps of a 3-d depthwise kernel whose forward (and grad_input where it is a forward: stride 1,
#: one output channel per input channel) the compiled depthwise kernel runs rather than the FFT (7x7x7).
#: Two threads, Zen 4, ms, compiled / FFT (torch): 5x5x5 32 channels 16x32x32 batch 4 14.5 / 42.7 (13.3),
#: 64 channels 16x28x28 3.5 / 16.0 (4.0), 48 channels 8x56x56 7.2 / 17.2 (6.8); 7x7x7 32 channels 16x24x24
#: batch 2 9.0 / 16.0 (7.7).
DEPTHWISE3D_MAX_TAPS = 343


def direct_kernel_wins(pass_name: str, w_shape: Sequence[int], geom: ConvGeometry) -> bool:
    """Whether a stride-1, 1-d or 2-d grouped pass with 1-4 input channels per group and at most
    :data:`DEPTHWISE_MAX_TAPS` (one channel) or :data:`GROUPED_MAX_TAPS` (2-4) taps, or a 3-d depthwise
    forward (grad_input: stride 1, one output channel per input channel) of at most
    :data:`DEPTHWISE3D_MAX_TAPS`, belongs to the compiled depthwise or grouped kernel (in use with the
    compiled core) rather than the FFT; one rule for the three algorithms' ``recommended``."""
    if (backends.core.available and geom.ndim == 3 and geom.groups > 1 and w_shape[1] == 1
            and pass_name in ("forward", "grad_input")):
        if pass_name == "grad_input" and (any(s != 1 for s in geom.stride) or w_shape[0] != geom.groups):
            return False
        return math.prod(geom.kernel_size) <= DEPTHWISE3D_MAX_TAPS
    if (not backends.core.available or geom.groups == 1 or geom.ndim > 2
            or any(s != 1 for s in geom.stride)):
        return False
    limits = DEPTHWISE_MAX_TAPS if w_shape[1] == 1 else GROUPED_MAX_TAPS if w_shape[1] <= 4 else None
    return limits is not None and math.prod(geom.kernel_size) <= limits[pass_name]


#: The dense rule's cost model in units of one mixed complex product (forward and grad_input, two
#: threads, float32, the Zen 5 machine; docs/performance.md): one value of a fresh kernel spectrum
#: costs DENSE_SPECTRUM_COST of them, a direct multiply-add 1 / DENSE_DIRECT_RATIO. 64 -> 64 channels
#: at 32x32, batch 4, ms GEMM / FFT fresh / FFT kept: 13x13 14.0 / 13.5 / 4.3, 11x11 11.1 / 12.4 / 4.2,
#: 9x9 7.5 / 10.3 / 3.7; 32 channels at 64x64 9x9 batch 8 15.1 / 13.1 / 8.2; 64 at 56x56 7x7 batch 8
#: 25.4 / 37.6.
DENSE_SPECTRUM_COST = 8
DENSE_DIRECT_RATIO = 50
#: The same with the compiled grouped kernel as the direct alternative, up to GROUPED_DIRECT_CHANNELS
#: channels per group (1.6-2x the GEMM's speed there; at 16 per group 1.1-1.5x: the GEMM's ratio).
#: Forward ms, batch 8, FFT with a kept spectrum / grouped: 8 per group, 128 ch at 28 px, 9x9 4.8 / 2.9,
#: 13x13 5.7 / 6.5; 64 ch at 56 px 9x9 8.1 / 5.0, 13x13 11.1 / 10.6, 17x17 11.6 / 18.9; 16 per group,
#: 128 ch at 28 px 9x9 4.3 / 5.4, 13x13 6.0 / 12.5; 64 ch at 56 px 9x9 10.4 / 9.6, 13x13 11.1 / 20.9.
GROUPED_DIRECT_RATIO = 90
GROUPED_DIRECT_CHANNELS = 8
#: Channels per group up to which the compiled grouped kernel is the planner's direct convolution
#: (``compiled_grouped.RECOMMENDED_MAX_CHANNELS``).
GROUPED_KERNEL_MAX_CHANNELS = 16


def _dense_pays(x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry, dtype: np.dtype) -> bool:
    """Whether a wide convolution's FFT pays even with a fresh kernel spectrum: ``F (S + N) <= N P K / R``
    (``F`` spectrum values per channel pair, ``N`` images, ``P`` output positions, ``K`` taps; ``R`` the
    GEMM's or, for narrow groups, the grouped kernel's ratio), and its
    kernel spectrum fits one block (so that it is kept while the weight is unchanged)."""
    n, c = x_shape[0], x_shape[1]
    o, groups = w_shape[0], geom.groups
    lengths = _lengths(geom.padded_size(x_shape[2:]))
    freq = math.prod(lengths[:-1]) * (lengths[-1] // 2 + 1)
    positions = math.prod(geom.output_size(x_shape[2:]))
    narrow = 1 < groups and w_shape[1] <= GROUPED_DIRECT_CHANNELS
    ratio = GROUPED_DIRECT_RATIO if narrow else DENSE_DIRECT_RATIO
    if freq * (DENSE_SPECTRUM_COST + n) * ratio > n * positions * math.prod(geom.kernel_size):
        return False
    blocks = _blocking(n, groups, c // groups, o // groups, _plane_bytes(lengths, dtype), _forward_cost)
    return blocks[1:] == (groups, c // groups, o // groups)


def admits(pass_name: str, operands: Operands, geom: ConvGeometry) -> bool:
    """Finite operands, data spread within :data:`SPREAD_LIMIT` (the bulk's and the quiet regions':
    the spectra mix every value of a plane), and no overflow in the spectra:
    ``|spectrum| <= N * C * K * P**2 * prod(peaks)`` (``P``: padded size bound, ``K`` taps)."""
    first = operands[0]
    if pass_name == "grad_input":  # operands (gy, w): the padded input spans the spread outputs
        padded = math.prod(m + e for m, e in zip(geom.spread_size(first.shape[2:]), geom.extent, strict=True))
    else:
        padded = math.prod(geom.padded_size(first.shape[2:]))
    growth = float(first.shape[0]) * first.shape[1] * math.prod(geom.kernel_size) * float(padded) ** 2
    data = (0, 1) if pass_name == "grad_weight" else (0,)
    return within(operands, data, SPREAD_LIMIT, growth, regional=True)


# -- helpers ------------------------------------------------------------------------------------
def _check(*arrays: np.ndarray) -> np.dtype:
    dtype = np.result_type(*arrays)
    if dtype not in _DTYPES:
        raise TypeError(f"fft convolution needs float32 or float64 arrays, got {dtype}")
    return dtype


def _lengths(padded: Sequence[int]) -> tuple[int, ...]:
    return tuple(_scipy_fft().next_fast_len(int(p), real=True) for p in padded)


def _kernel_spectrum(w: np.ndarray, geom: ConvGeometry, lengths: tuple[int, ...], dtype: np.dtype,
                     shift: Sequence[int] | None = None) -> np.ndarray:
    """``rfftn`` of the dilated kernel ``(O, Cg, *extent)`` zero-extended to ``lengths``.

    With ``shift``, tap ``j`` sits at ``(j - shift) mod L``: correlating the unpadded input with it
    gives the padded input's correlation at position ``i`` directly at index ``i``.

    Separable, as ``rfftn`` is (a real transform along the last axis, then complex ones along the
    others), but each axis transforms only the lines that hold taps: the taps' lines are placed at
    their (shifted, dilated) positions in zeros of length ``L`` just before their axis's transform
    (the same values as the whole zero-padded array's ``rfftn``; 13x13 kernels at L = 45: 4x less
    time, no rolled copy).
    """
    shift = shift if shift is not None else (0,) * geom.ndim
    places = [(np.arange(k) * d - s) % size
              for k, d, s, size in zip(geom.kernel_size, geom.dilation, shift, lengths, strict=True)]
    lines = np.zeros(w.shape[:-1] + (lengths[-1],), dtype)
    lines[..., places[-1]] = w
    spectrum = _transform("rfft", lines, (lines.ndim - 1,))
    del lines
    for axis in range(geom.ndim - 2, -1, -1):  # the axes before the last, the last of them first
        at = 2 + axis
        shape = spectrum.shape[:at] + (lengths[axis],) + spectrum.shape[at + 1:]
        full = np.zeros(shape, spectrum.dtype)
        full[(slice(None),) * at + (places[axis],)] = spectrum
        spectrum = _transform("fft", full, (at,), overwrite_x=True)
        del full
    return spectrum


def _mix(a: np.ndarray, b: np.ndarray, groups: int, conj_b: bool, transpose_b: bool) -> np.ndarray:
    """Per-frequency channel mixing of spectra ``a (n, G*Ca, *F)`` with ``b (G*Ob, Cb, *F)``.

    Returns ``r (n, G*Cr, *F)`` with ``r[n, g, i] = sum_j B[g, i, j] a[n, g, j]`` where
    ``B[g] = b[g]`` (``(Ob, Cb)``, contracting ``Cb``) or ``b[g]^T`` (contracting ``Ob``) if
    ``transpose_b``; ``conj_b`` conjugates ``b`` first.
    """
    n = a.shape[0]
    freq = a.shape[2:]
    ob, cb = b.shape[0] // groups, b.shape[1]
    contracted = cb if not transpose_b else ob
    if (contracted > 1 and backends.core.available and a.dtype == b.dtype and a.dtype in _COMPLEX_CORE
            and a.flags.c_contiguous and b.flags.c_contiguous):
        return _compiled_mix(a, b, groups, conj_b, transpose_b)
    bc = np.conj(b) if conj_b else b
    if contracted == 1:  # one channel in: broadcast product
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


#: Spectra the compiled core's ``spectral_mix`` takes (as float views of their interleaved values).
_COMPLEX_CORE = (np.dtype(np.complex64), np.dtype(np.complex128))
#: Complex multiply-adds per worker thread below which the mixing runs on the calling thread alone.
MIX_THREAD_MACS = 1 << 20
#: Frequency ranges of the worker threads start at multiples of this (the widest vector's complex
#: values: a value is computed by the same lanes whatever the thread count).
_MIX_ALIGN = 8


def _compiled_mix(a: np.ndarray, b: np.ndarray, groups: int, conj_b: bool, transpose_b: bool) -> np.ndarray:
    """:func:`_mix` on the compiled core (``spectral_mix``): the spectra in the layout ``rfftn`` made,
    no transposed copies; the frequencies split across the worker threads."""
    n, freq = a.shape[0], a.shape[2:]
    f = math.prod(freq)
    ob, cb = b.shape[0] // groups, b.shape[1]
    # a's channels i, the result's j; b's row (g, j, i) at g*I*J + j*sj + i*si
    ni, nj, sj, si = (ob, cb, 1, cb) if transpose_b else (cb, ob, cb, 1)
    geometry = (n, groups, ni, nj, f, sj, si, int(conj_b))
    out = np.empty((n, groups * nj) + freq, a.dtype)
    real = np.dtype(np.float32) if a.dtype == np.complex64 else np.dtype(np.float64)
    size = backends.core.module.spectral_mix_scratch(geometry, real.itemsize)
    blocks = -(-f // _MIX_ALIGN)
    threads = max(1, min(get_num_threads(), n * groups * ni * nj * f // MIX_THREAD_MACS, blocks))
    spans = [(min(f, lo * _MIX_ALIGN), min(f, hi * _MIX_ALIGN))
             for lo, hi in workspace.ranges(blocks, threads)]
    views = (a.reshape(-1).view(real), b.reshape(-1).view(real), out.reshape(-1).view(real))
    calls = [(views, size, (geometry, lo, hi)) for lo, hi in spans]
    workspace.run_calls(backends.core.module.spectral_mix, calls, "fft-mix", real)
    return out


# -- blocking -----------------------------------------------------------------------------------
def _plane_bytes(lengths: Sequence[int], dtype: np.dtype) -> int:
    """Bytes of one spectrum plane (``rfftn`` of one channel), about those of its real transform."""
    freq = math.prod(lengths[:-1]) * (lengths[-1] // 2 + 1)
    return freq * np.result_type(dtype, np.complex64).itemsize


def _forward_cost(nb: int, gb: int, a: int, b: int) -> int:
    """Planes alive in forward/grad_input: kernel spectra ``gb*b*a`` and their transform's working
    lines (1.3x them, measured; 2x on the NumPy mixing, which conjugates and transposes a copy),
    input spectra ``nb*gb*a`` (and the zero-extended copy), mixed and accumulated result spectra and
    the real inverse transform ``nb*gb*b``."""
    kernel = gb * a * b
    kernel += (kernel + 1) // 2 if backends.core.available else kernel
    return kernel + 2 * nb * gb * a + 4 * nb * gb * b


def _weight_cost(nb: int, gb: int, a: int, b: int) -> int:
    """Planes alive in grad_weight: the accumulator, its product and inverse transform ``gb*a*b``,
    the spectra of ``nb`` images (``a`` input and ``b`` gradient channels per group)."""
    return 3 * gb * a * b + 2 * nb * gb * (a + b)


def _blocking(n: int, groups: int, a: int, b: int, plane: int, cost) -> tuple[int, int, int, int]:
    """``(images, groups, a-channels, b-channels)`` per block with ``cost(...) * plane`` within
    :data:`WORKSPACE_BYTES` (at least one of each). Groups are split first (independent), then the
    channel sides (each split recomputes the other side's spectra), then the images."""
    budget = max(1, WORKSPACE_BYTES // max(plane, 1))
    gb, ab, bb = groups, a, b
    while gb > 1 and cost(1, gb, ab, bb) > budget:
        gb = -(-gb // 2)
    while (ab > 1 or bb > 1) and cost(1, gb, ab, bb) > budget:
        if bb >= ab:
            bb = -(-bb // 2)
        else:
            ab = -(-ab // 2)
    nb = 1
    while nb < n and cost(nb + 1, gb, ab, bb) <= budget:
        nb = min(n, max(nb + 1, nb * 2) if cost(min(n, nb * 2), gb, ab, bb) <= budget else nb + 1)
    return nb, gb, ab, bb


def _smallest_block_fits(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                         dtype: np.dtype) -> bool:
    """Whether one block of one image and one channel pair stays within the memory bound
    (:func:`npconv.kernels.workspace.memory_bound`): false only when the transform is far larger
    than the operands (e.g. a huge dilation with as much padding around a tiny input)."""
    itemsize = np.dtype(dtype).itemsize
    out_size = geom.output_size(x_shape[2:])
    x_bytes = math.prod(x_shape) * itemsize
    w_bytes = math.prod(w_shape) * itemsize
    y_bytes = x_shape[0] * w_shape[0] * math.prod(out_size) * itemsize
    cost = _weight_cost if pass_name == "grad_weight" else _forward_cost
    operands = {"forward": (x_bytes, w_bytes, y_bytes), "grad_input": (y_bytes, w_bytes, x_bytes),
                "grad_weight": (x_bytes, y_bytes, w_bytes)}[pass_name]
    padded = geom.padded_size(x_shape[2:])
    # Powers of two bound next_fast_len from above: the exact lengths (and scipy.fft's ~0.3 s import,
    # which a first convolution of another kind should not pay) are needed only near the bound.
    for lengths in (tuple(1 << (int(p) - 1).bit_length() for p in padded), None):
        plane = _plane_bytes(lengths or _lengths(padded), dtype)
        if cost(1, 1, 1, 1) * plane + operands[2] <= workspace.memory_bound(*operands):
            return True
    return False


def _kernel_block(wg: np.ndarray, geom: ConvGeometry, lengths: tuple[int, ...], dtype: np.dtype,
                  shift: Sequence[int] | None = None, keep: bool = False) -> np.ndarray:
    """:func:`_kernel_spectrum` of a block ``wg (groups, outputs, inputs, *k)`` of grouped weights;
    ``keep``: reused from (and kept in) :data:`SPECTRUM_CACHE_BYTES`'s cache while the block's values
    are bitwise those it was made from."""
    gc, oc, cc = wg.shape[:3]
    if keep:
        key = _spectrum_key(wg, geom, lengths, dtype, shift)
        if key is not None:
            with _spectra_lock:
                entry = _spectra.get(key)
                if entry is not None:
                    _spectra.move_to_end(key)
            if entry is not None and np.array_equal(entry[0], _bits(wg)):
                return entry[1]
    spectrum = _kernel_spectrum(wg.reshape((gc * oc, cc) + geom.kernel_size), geom, lengths, dtype, shift)
    if keep and key is not None:
        _keep(key, np.array(_bits(wg)), spectrum)
    return spectrum


#: Kernel spectra of whole channel ranges kept for reuse while their weights are unchanged (each use
#: compares the weights bitwise with a kept copy, ~0.1 ms per MB): repeated forwards of one weight
#: (inference) and a training step's forward and grad_input skip the kernel transform (64x64 13x13
#: kernels at 45x45: ~9 ms). At most this many bytes of spectra and copies, least recently used dropped
#: first; 0 keeps none.
SPECTRUM_CACHE_BYTES = 128 << 20
_spectra: collections.OrderedDict = collections.OrderedDict()
_spectra_lock = threading.Lock()


def _bits(a: np.ndarray) -> np.ndarray:
    """``a``'s values as unsigned integers of their size (a bitwise comparison: NaN and -0.0 count)."""
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _spectrum_key(wg: np.ndarray, geom: ConvGeometry, lengths: tuple[int, ...], dtype: np.dtype,
                  shift: Sequence[int] | None) -> tuple | None:
    """Where the block lives and what its spectrum depends on (None: not kept, e.g. a float16 weight or
    a layout whose values cannot be viewed as integers)."""
    if wg.dtype not in _DTYPES or not wg.flags.c_contiguous and wg.strides[-1] != wg.itemsize:
        return None
    return (wg.__array_interface__["data"][0], wg.shape, wg.strides, wg.dtype.str, geom.kernel_size,
            geom.dilation, tuple(lengths), None if shift is None else tuple(shift), np.dtype(dtype).str)


def _keep(key: tuple, bits: np.ndarray, spectrum: np.ndarray) -> None:
    size = bits.nbytes + spectrum.nbytes
    if size > SPECTRUM_CACHE_BYTES:
        return
    spectrum.flags.writeable = False
    with _spectra_lock:
        _spectra[key] = (bits, spectrum)
        total = sum(b.nbytes + s.nbytes for b, s in _spectra.values())
        while total > SPECTRUM_CACHE_BYTES:
            _, (b, s) = _spectra.popitem(last=False)
            total -= b.nbytes + s.nbytes


def clear_spectra() -> None:
    """Drop every kept kernel spectrum."""
    with _spectra_lock:
        _spectra.clear()


def _after_fork_in_child() -> None:
    global _spectra_lock
    _spectra_lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _ranges(size: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(size, i + step)) for i in range(0, size, step)]


# -- passes -------------------------------------------------------------------------------------
def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y (N, O, *out)`` of ``x (N, C, *in)``, ``w (O, C/groups, *k)`` with zero padding ``geom.pads()``.

    Blocked over images, groups and channels (:func:`_blocking`) so that the spectra stay within
    :data:`WORKSPACE_BYTES`; the kernel spectra of an output block are reused across images."""
    dtype = _check(x, w)
    n, c = x.shape[:2]
    o, groups = w.shape[0], geom.groups
    cg, og = c // groups, o // groups
    in_size = x.shape[2:]
    pads = geom.pads(in_size)
    out_size = geom.output_size(in_size)
    lengths = _lengths(geom.padded_size(in_size))
    shift = [lo for lo, _ in pads]
    take = geom.strided_positions(out_size)
    y = np.empty((n, o) + out_size, dtype)
    xg = x.reshape((n, groups, cg) + in_size)
    wg = w.reshape((groups, og, cg) + geom.kernel_size)
    yg = y.reshape((n, groups, og) + out_size)
    nb, gb, cb, ob = _blocking(n, groups, cg, og, _plane_bytes(lengths, dtype), _forward_cost)
    for g0, g1 in _ranges(groups, gb):
        gc = g1 - g0
        for o0, o1 in _ranges(og, ob):
            whole = gb == groups and ob >= og  # the whole weight in one block: its spectrum may be kept
            cached = _kernel_block(wg[g0:g1, o0:o1], geom, lengths, dtype, shift, whole) if cb >= cg else None
            for n0, n1 in _ranges(n, nb):
                acc = None
                for c0, c1 in _ranges(cg, cb):
                    block = xg[n0:n1, g0:g1, c0:c1].reshape((n1 - n0, gc * (c1 - c0)) + in_size)
                    xs = _spectrum(block.astype(dtype, copy=False), lengths)
                    if cached is None:
                        ws = _kernel_block(wg[g0:g1, o0:o1, c0:c1], geom, lengths, dtype, shift)
                    part = _mix(xs, ws if cached is None else cached, gc, conj_b=True, transpose_b=False)
                    del xs
                    if acc is None:
                        acc = part
                    else:
                        acc += part
                    del part
                full = _signal(acc, lengths, take, overwrite=True)
                del acc
                yg[n0:n1, g0:g1, o0:o1] = full.reshape((n1 - n0, gc, o1 - o0) + out_size)
                del full
    return y


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int]) -> np.ndarray:
    """``gx (N, C, *input_size)``: adjoint of :func:`forward` in ``x`` (blocked like it)."""
    dtype = _check(gy, w)
    n, o = gy.shape[:2]
    groups = geom.groups
    cg = w.shape[1]
    c, og = cg * groups, o // groups
    in_size = tuple(int(v) for v in input_size)
    out_size = tuple(gy.shape[2:])
    lengths = _lengths(geom.padded_size(in_size))
    strided = any(s > 1 for s in geom.stride)
    spread = (slice(None), slice(None)) + geom.strided_positions(out_size)
    crop = geom.interior(in_size)
    gx = np.empty((n, c) + in_size, dtype)
    gyg = gy.reshape((n, groups, og) + out_size)
    wg = w.reshape((groups, og, cg) + geom.kernel_size)
    gxg = gx.reshape((n, groups, cg) + in_size)
    nb, gb, ob, cb = _blocking(n, groups, og, cg, _plane_bytes(lengths, dtype), _forward_cost)
    for g0, g1 in _ranges(groups, gb):
        gc = g1 - g0
        for c0, c1 in _ranges(cg, cb):
            whole = gb == groups and cb >= cg  # the whole weight in one block: its spectrum may be kept
            cached = _kernel_block(wg[g0:g1, :, c0:c1], geom, lengths, dtype, keep=whole) if ob >= og \
                else None
            for n0, n1 in _ranges(n, nb):
                acc = None
                for o0, o1 in _ranges(og, ob):
                    g = gyg[n0:n1, g0:g1, o0:o1].reshape((n1 - n0, gc * (o1 - o0)) + out_size)
                    g = g.astype(dtype, copy=False)
                    if strided:
                        up = np.zeros(g.shape[:2] + geom.spread_size(out_size), dtype)
                        up[spread] = g
                        g = up
                    gs = _spectrum(g, lengths)
                    del g
                    if cached is None:
                        ws = _kernel_block(wg[g0:g1, o0:o1, c0:c1], geom, lengths, dtype)
                    part = _mix(gs, ws if cached is None else cached, gc, conj_b=False, transpose_b=True)
                    del gs
                    if acc is None:
                        acc = part
                    else:
                        acc += part
                    del part
                full = _signal(acc, lengths, crop, overwrite=True)
                del acc
                gxg[n0:n1, g0:g1, c0:c1] = full.reshape((n1 - n0, gc, c1 - c0) + in_size)
                del full
    return gx


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (O, C/groups, *k)``: ``sum_n`` correlation of the padded input with ``gy`` (upsampled),
    accumulated in the frequency domain per block of groups and channels over chunks of images."""
    dtype = _check(x, gy)
    n, c = x.shape[:2]
    o, groups = gy.shape[1], geom.groups
    cg, og = c // groups, o // groups
    in_size = x.shape[2:]
    pads = geom.pads(in_size)
    out_size = tuple(gy.shape[2:])
    lengths = _lengths(geom.padded_size(in_size))
    spread = (slice(None), slice(None)) + geom.strided_positions(out_size)
    strided = any(s > 1 for s in geom.stride)
    freq = lengths[:-1] + (lengths[-1] // 2 + 1,)
    cdtype = np.result_type(dtype, np.complex64)
    positions = [range(0, (kk - 1) * d + 1, d) for kk, d in zip(geom.kernel_size, geom.dilation, strict=True)]
    # padded position p of a tap is (p - lo) mod L in a circular result of the unpadded input
    taps = [np.asarray([(p - lo) % size for p in pos], dtype=np.intp)
            for pos, (lo, _), size in zip(positions, pads, lengths, strict=True)]
    gw = np.empty((groups, og, cg) + geom.kernel_size, dtype)
    xg = x.reshape((n, groups, cg) + in_size)
    gyg = gy.reshape((n, groups, og) + out_size)
    nb, gb, cb, ob = _blocking(n, groups, cg, og, _plane_bytes(lengths, dtype), _weight_cost)
    for g0, g1 in _ranges(groups, gb):
        gc = g1 - g0
        for o0, o1 in _ranges(og, ob):
            for c0, c1 in _ranges(cg, cb):
                oc, cc = o1 - o0, c1 - c0
                total = np.zeros((gc, oc, cc) + freq, cdtype)
                for n0, n1 in _ranges(n, nb):
                    k = n1 - n0
                    block = xg[n0:n1, g0:g1, c0:c1].reshape((k, gc * cc) + in_size)
                    xs = _spectrum(block.astype(dtype, copy=False), lengths)
                    xs = xs.reshape((k, gc, cc) + freq)
                    g = gyg[n0:n1, g0:g1, o0:o1].reshape((k, gc * oc) + out_size).astype(dtype, copy=False)
                    if strided:
                        up = np.zeros((k, gc * oc) + geom.spread_size(out_size), dtype)
                        up[spread] = g
                        g = up
                    gs = _spectrum(g, lengths)
                    del g
                    gs = np.conj(gs, out=gs).reshape((k, gc, oc) + freq)
                    if cc == 1 and oc == 1:  # depthwise: the product in place of gs (no third array)
                        total += np.multiply(gs, xs, out=gs).reshape((k, gc, 1, 1) + freq).sum(axis=0)
                    elif cc == 1 or oc == 1:
                        product = gs.reshape((k, gc, oc, 1) + freq) * xs.reshape((k, gc, 1, cc) + freq)
                        total += product.sum(axis=0)
                    else:
                        f = math.prod(freq)
                        # (G, F, Og, k) @ (G, F, k, Cg)
                        gm = np.ascontiguousarray(gs.reshape(k, gc, oc, f).transpose(1, 3, 2, 0))
                        xm = np.ascontiguousarray(xs.reshape(k, gc, cc, f).transpose(1, 3, 0, 2))
                        del gs, xs
                        total += np.matmul(gm, xm).transpose(0, 2, 3, 1).reshape((gc, oc, cc) + freq)
                    gs = xs = product = None
                full = _signal(total, lengths, taps, overwrite=True)
                del total
                gw[g0:g1, o0:o1, c0:c1] = full
                del full
    return gw.reshape((o, cg) + geom.kernel_size)
