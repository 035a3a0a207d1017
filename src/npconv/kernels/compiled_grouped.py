"""Direct grouped convolution with few channels per group on the compiled core (``npconv._core``):
the ``"grouped"`` algorithm, 1-d and 2-d, float32/64.

``y[n, g*Og + j, o] = bias[g*Og + j] + sum_{ci, k} w[g*Og + j, ci, k] * xp[n, g*Cg + ci, o*s + k*d]``
(``xp`` zero padded; ``Cg = C / groups`` input and ``Og = O / groups`` output channels per group)
for any kernel size, stride, dilation and zero padding (other padding modes arrive pre-padded).
1-d runs as 2-d with a unit height.

The C kernels (``src/npconv/csrc/grouped.h``) copy the Cg input planes of one (image, group) into
their zero-padded polyphase form, so every (channel, tap) pair is one constant shift of a flat run
of output positions; the forward is an implicit GEMM over those pairs (a register block of output
channels x position vectors, one load per pair shared by the block's channels), the epilogue (bias,
and the ReLU/ReLU6/Hardtanh/SiLU of an ``epilogue=``) applied to each plane as it is written.

* forward: items (image, group) split across the worker threads of
  :func:`npconv.kernels.workspace.run`, the GIL released, each with its own scratch buffer (a single
  ungrouped image: its output rows, :data:`ROW_PARTS`);
* grad_input at stride 1: the adjoint as a forward of ``gy`` with the flipped, per-group transposed
  weight and padding ``(K-1)*d - pad`` (larger strides, or padding beyond the kernel's extent, run
  on the GEMM algorithm; ``supports`` declines them so the planner never picks this one there);
* grad_weight: groups split across the threads (no cross-thread sums), vector accumulators per
  (output channel, tap) block, summed per image into float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import fft, gemm, workspace
from .common import Epilogue, PreparedForward, ScratchSource, bound_run, compiled_epilogue
from .pointwise import Activation, epilogue_

__all__ = ["NAME", "COMPILED", "BIAS_PASSES", "EPILOGUE_PASSES", "supports", "recommended", "forward",
           "prepare_forward", "grad_input", "grad_weight"]

if not backends.core.available:  # the registry records the reason; npconv.backends warned at import
    raise ModuleNotFoundError(f"npconv._core, the compiled core, is not in use ({backends.core.reason})",
                              name=__name__)

NAME = "grouped"
COMPILED = True
#: Passes that take ``bias=`` (or ``epilogue=``: bias and activation) and apply it in the kernel's
#: epilogue (see plan).
BIAS_PASSES = EPILOGUE_PASSES = ("forward", "grad_input")
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Channels per group up to which the planner's rule picks this algorithm (measured, see
#: docs/performance.md: the GEMM path wins once a group's GEMM is large); the FFT's rule reads it too.
RECOMMENDED_MAX_CHANNELS = fft.GROUPED_KERNEL_MAX_CHANNELS
#: A strided ungrouped forward with at most this many input channels and at least
#: :data:`DENSE_FORWARD_MIN_TAPS` kernel taps runs here (the stem of an image network: 3 channels,
#: 3x3/2 to 7x7/2, where im2col's packing costs as much as the product), its grad_weight from
#: :data:`DENSE_MIN_TAPS` taps; more channels and stride 1 (the implicit GEMM) run on the GEMM.
#: MobileNetV2's 3x3/2 stem, grouped / GEMM, in the traced network alternated in one process: batch 1
#: 0.985 / 0.982 and 0.994 / 0.996 (median / best), batch 8 1.000 / 0.993 and 0.994 / 0.999; per step
#: at batch 1 236 against 276 us (before the single image's rows were split: 6% slower at batch 8).
DENSE_MAX_CHANNELS = 8
#: A 3x3 (or smaller) grouped forward runs here up to this many channels per group where no algorithm
#: asked before it (Winograd: batches of many tiles) takes it; grad_input and grad_weight up to
#: RECOMMENDED_MAX_CHANNELS. Two threads, 32 per group, grouped / GEMM forward: 512x14 batch 1 0.38 /
#: 0.48 ms, 256x28 batch 1 0.63 / 0.70; grad_input 0.61 / 0.50 and 0.75 / 0.80 (docs/performance.md).
FORWARD_MAX_CHANNELS = 32
#: Stride-1 grouped convolutions (at most RECOMMENDED_MAX_CHANNELS per group) run here up to this many
#: kernel taps (17x17) when the FFT's rule does not take them; the GEMM beyond. Grouped / GEMM time,
#: two threads, batch 8, 8 and 16 channels per group, 128 channels at 28 px and 64 at 56 px, 9x9 to
#: 17x17: forward and grad_input 0.49-0.76, grad_weight 0.44-0.56 at 8 per group, 0.90-1.08 at 16
#: (docs/performance.md).
LARGE_KERNEL_MAX_TAPS = 289
DENSE_MIN_TAPS = 25
DENSE_FORWARD_MIN_TAPS = 9
#: A single ungrouped image (a network's stem at batch 1) splits its output rows across the worker
#: threads, each filling only the input rows its band reads; with fewer output rows than threads (1-d)
#: its output channels, in multiples of :data:`CHANNEL_BLOCK` (the kernel's register block: 8
#: channels on AVX-512, 4 below), each worker filling the whole image. MobileNetV2's 3->32 3x3/2 stem
#: alone, two threads: 181-188 -> 175-182 us; ResNet-18's 7x7/2 stem in its batch-1 program 1293 -> 1243 us
#: (docs/performance.md).
ROW_PARTS = True
CHANNEL_BLOCK = 8


def _geometry(n: int, groups: int, cg: int, og: int, in_size: Sequence[int], geom: ConvGeometry,
              lows: Sequence[int] | None = None, out: Sequence[int] | None = None) -> tuple[int, ...]:
    """The extension's geometry tuple ``(N, G, Cg, Og, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW)``;
    1-d as 2-d with height 1."""
    out = tuple(out) if out is not None else geom.output_size(in_size)
    lows = tuple(lows) if lows is not None else tuple(lo for lo, _ in geom.pads(in_size))
    if geom.ndim == 1:
        return (n, groups, cg, og, 1, in_size[0], 1, out[0], 1, geom.kernel_size[0], 1, geom.stride[0], 1,
                geom.dilation[0], 0, lows[0])
    return (n, groups, cg, og, *in_size, *out, *geom.kernel_size, *geom.stride, *geom.dilation, *lows)


def _adjoint_lows(geom: ConvGeometry, input_size: Sequence[int]) -> tuple[int, ...]:
    """Low padding of ``gy`` in grad_input as a stride-1 forward: ``(K-1)*d - pad`` per axis."""
    pads = geom.pads(input_size)
    taps = zip(geom.kernel_size, geom.dilation, pads, strict=True)
    return tuple((k - 1) * d - lo for k, d, (lo, _) in taps)


def _fits(geometry: tuple[int, ...], pass_code: int, in_size: Sequence[int], padded: Sequence[int],
          out: Sequence[int], dtype: np.dtype) -> bool:
    """Whether the C kernel takes this geometry (its own limits) with a cost proportional to the data
    (padding far beyond the input and output is left to the GEMM path's cropping) and a per-thread
    scratch within the memory bound's constant term (split across the threads)."""
    if math.prod(padded) > 4 * (math.prod(in_size) + math.prod(out)) + (1 << 16):
        return False
    try:
        size = backends.core.module.grouped2d_scratch(pass_code, geometry)
    except (ValueError, OverflowError):
        return False
    return size * dtype.itemsize * max(1, get_num_threads()) <= workspace.SCRATCH_BYTES // 2


def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """1-d/2-d float32/float64 convolutions with ``groups > 1``; grad_input at stride 1 with padding
    within the kernel's extent (the adjoint is then a forward)."""
    dtype = np.dtype(dtype)
    if geom.ndim > 2 or dtype not in _DTYPES or pass_name not in ("forward", "grad_input", "grad_weight"):
        return False
    if geom.groups < 2 and pass_name == "grad_input":  # dense: forward and grad_weight (few input channels)
        return False
    if not geom.fits(x_shape, w_shape) or min(x_shape) < 1 or min(w_shape) < 1:
        return False
    n, c, in_size = x_shape[0], x_shape[1], tuple(x_shape[2:])
    groups, o = geom.groups, w_shape[0]
    cg, og = c // groups, o // groups
    out = geom.output_size(in_size)
    if min(out) < 1:
        return False
    if pass_name == "grad_input":
        lows = _adjoint_lows(geom, in_size)
        if any(s != 1 for s in geom.stride) or min(lows) < 0:
            return False
        adjoint = ConvGeometry.create(geom.kernel_size, 1, 0, geom.dilation, groups, ndim=geom.ndim)
        axes = zip(in_size, geom.kernel_size, geom.dilation, strict=True)
        padded = tuple(i + (k - 1) * d for i, k, d in axes)
        geometry = _geometry(n, groups, og, cg, out, adjoint, lows, in_size)
        return _fits(geometry, 0, out, padded, in_size, dtype)
    code = 2 if pass_name == "grad_weight" else 0
    return _fits(_geometry(n, groups, cg, og, in_size, geom), code, in_size, geom.padded_size(in_size), out,
                 dtype)


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """At most :data:`RECOMMENDED_MAX_CHANNELS` input channels per group and kernels up to 49
    taps; grouped with larger kernels: strided at any size (the GEMM took 2.7-10x as long at 9x9/2
    to 15x15/2), at stride 1 up to :data:`LARGE_KERNEL_MAX_TAPS` (what the FFT's rule, asked first,
    does not take; 2-4 channels per group: :func:`npconv.kernels.fft.direct_kernel_wins`);
    ungrouped: a strided pass of at most
    :data:`DENSE_MAX_CHANNELS` input channels and at least :data:`DENSE_FORWARD_MIN_TAPS` (forward) or
    :data:`DENSE_MIN_TAPS` taps (a network's stem; measurements in docs/performance.md); a grouped
    forward of up to 9 taps up to :data:`FORWARD_MAX_CHANNELS` channels per group."""
    taps = math.prod(geom.kernel_size)
    least = DENSE_FORWARD_MIN_TAPS if pass_name == "forward" else DENSE_MIN_TAPS
    stem = w_shape[1] <= DENSE_MAX_CHANNELS and taps >= least and max(geom.stride) > 1
    if geom.groups == 1 and not stem:
        return False
    strided = any(s > 1 for s in geom.stride)
    large = geom.groups > 1 and (strided or taps <= LARGE_KERNEL_MAX_TAPS
                                 or fft.direct_kernel_wins(pass_name, w_shape, geom))
    few = w_shape[1] <= RECOMMENDED_MAX_CHANNELS or (
        pass_name == "forward" and geom.groups > 1 and w_shape[1] <= FORWARD_MAX_CHANNELS and taps <= 9)
    return few and (taps <= 49 or large) and supports(pass_name, x_shape, w_shape, geom, dtype)


def _run(kernel, pass_code: int, count: int, dtype: np.dtype, geometry: tuple[int, ...], *args,
         epilogue: tuple = (), macs: int = 0) -> None:
    """``kernel(isa, *args, scratch, geometry, start, stop, *epilogue)`` over ``count`` items split
    across the worker threads (:func:`_spans`; ``macs`` the call's multiply-adds where its items write
    disjoint outputs, 0 for fixed ranges), each with its own scratch buffer."""
    size = backends.core.module.grouped2d_scratch(pass_code, geometry)
    chunk, spans = _spans(count, macs)
    calls, name = workspace.span_calls((*args, workspace.SCRATCH, geometry), spans, epilogue,
                                       ("compiled-grouped", size, dtype))
    workspace.run_calls(kernel, calls, name, dtype, 0, chunk)


def _spans(count: int, macs: int) -> tuple[int, list[tuple[int, int]]]:
    """``(chunk, item range per worker)`` of a call of ``macs`` multiply-adds over ``count`` items: the
    forward's items (images x groups: disjoint outputs, each computed whole by whoever claims it) shared
    by the workers in claims of ``chunk`` (``workspace.shared_chunk``; 0: fixed near-equal ranges). Two
    threads, batch 8, shared / fixed, alternated per block: 32 groups of 8 at 28 px 0.89-1.01, 8 groups
    of 8 at 56 px 0.86-1.01, the 7x7/2 stem 0.98, MobileNetV2's 3x3/2 stem 0.97 (a single image's rows
    are fixed bands: :func:`_parts`; docs/performance.md)."""
    threads = get_num_threads()
    chunk = workspace.shared_chunk(count, min(threads, count), macs)
    return chunk, [(0, count)] * threads if chunk else workspace.ranges(count, threads)


def _check(*arrays: np.ndarray) -> np.dtype:
    dtype = np.result_type(*arrays)
    if dtype not in _DTYPES:
        raise TypeError(f"compiled grouped convolution needs float32 or float64 arrays, got {dtype}")
    return dtype


def _prepare(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _codes(activation: Activation | None) -> tuple:
    """The C kernel's ``(act, lo, hi)`` of an activation it applies (none: no arguments)."""
    if activation is None:
        return ()
    return (activation.code, float(activation.lo), float(activation.hi))


def _activated(out: np.ndarray, activation: Activation | None) -> np.ndarray:
    """``activation(out)`` in place for an activation the kernel did not apply."""
    return out if activation is None else epilogue_(out, None, activation)


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None,
            epilogue: Epilogue | None = None) -> np.ndarray:
    """``y (N, O, *out) (+ bias)`` of ``x (N, C, *in)`` and ``w (O, C/groups, *k)``, zero padding
    ``geom.pads()``; ``epilogue=`` (instead of ``bias``): ``activation(y + bias)``, ReLU and
    ReLU6/Hardtanh or SiLU in the kernel."""
    return prepare_forward(x.shape, x.dtype, w, geom, bias, epilogue).run(x)


def _parts(n: int, groups: int, o: int, out_rows: int, threads: int) -> tuple[str, list[tuple[int, int]]]:
    """How a call is split: ``("items", [])`` (images x groups, split as :func:`_run` splits them), or
    for a single ungrouped image ``("rows", ranges)`` of its output rows, one fixed range per worker
    thread (claims of shared bands: 0.96x slower with ResNet-18's stem and the max pooling after it,
    which splits the rows the same way, :func:`npconv.kernels.pool._forward_spans`, so that each
    worker reads the rows it wrote), or ``("channels", ranges)`` of its output channels in multiples of
    :data:`CHANNEL_BLOCK`."""
    if n > 1 or groups > 1 or threads < 2:
        return "items", []
    if ROW_PARTS and out_rows >= threads:
        return "rows", workspace.ranges(out_rows, threads)
    ranges = workspace.ranges(-(-o // CHANNEL_BLOCK), threads)
    return "channels", [(min(o, a * CHANNEL_BLOCK), min(o, b * CHANNEL_BLOCK)) for a, b in ranges]


def _threads_state() -> tuple[int, bool, int]:
    """What a prepared forward's work split depends on besides the call (its token)."""
    return get_num_threads(), ROW_PARTS, CHANNEL_BLOCK


def prepare_forward(x_shape: tuple[int, ...], x_dtype: np.dtype, w: np.ndarray, geom: ConvGeometry,
                    bias: np.ndarray | None = None, epilogue: Epilogue | None = None) -> PreparedForward:
    """:func:`forward` of inputs of ``x_shape`` and ``x_dtype`` planned once (the kernel's geometry and
    the work split: images x groups over the threads, or a single ungrouped image's output rows);
    valid while the thread count holds."""
    bias, act, later = compiled_epilogue(bias, epilogue)
    dtype = _check(np.dtype(x_dtype), w)
    n, c = x_shape[:2]
    groups, o = geom.groups, w.shape[0]
    in_size = tuple(x_shape[2:])
    y_shape = (n, o) + geom.output_size(in_size)
    geometry = _geometry(n, groups, c // groups, o // groups, in_size, geom)
    macs = geom.multiply_adds(x_shape, w.shape)
    split, ranges = _parts(n, groups, o, geometry[6], get_num_threads())
    codes = _codes(act)

    def _bound(x: np.ndarray, y: np.ndarray, source: ScratchSource,
               calls_of: Callable[[np.ndarray, np.ndarray, np.ndarray | None], list],
               chunk: int = 0) -> Callable[[], None]:
        """A bound run of the kernel calls ``calls_of(x, weight, bias)`` (see ``PreparedForward.bind``)."""
        def jobs_of(wc: np.ndarray, b: np.ndarray | None) -> Callable[[], None]:
            return workspace.bind_calls(backends.core.module.grouped2d_forward, calls_of(x, wc, b),
                                        "compiled-grouped", dtype, source, 0, chunk)

        return bound_run(x, tuple(x_shape), y, y_shape, dtype, w, bias, jobs_of, later)

    if split == "items":
        def run(x: np.ndarray) -> np.ndarray:
            y = np.empty(y_shape, dtype)
            b = None if bias is None else _prepare(bias, dtype)
            _run(backends.core.module.grouped2d_forward, 0, n * groups, dtype, geometry, _prepare(x, dtype),
                 _prepare(w, dtype), b, y, epilogue=codes, macs=macs)
            return _activated(y, later)

        def bind(x: np.ndarray, y: np.ndarray, source: ScratchSource) -> Callable[[], None]:
            size = backends.core.module.grouped2d_scratch(0, geometry)
            chunk, spans = _spans(n * groups, macs)
            scratch = ("compiled-grouped", size, dtype)
            return _bound(x, y, source, lambda xc, wc, b: workspace.span_calls(
                (xc, wc, b, y, workspace.SCRATCH, geometry), spans, codes, scratch)[0], chunk)

        return PreparedForward(run, (_threads_state,), (_threads_state(),), bind)
    if split == "rows":
        size = backends.core.module.grouped2d_scratch(0, geometry)
        full = codes or (0, 0.0, 0.0)  # the row range follows the activation's arguments

        def calls_of(x: np.ndarray, wc: np.ndarray, b: np.ndarray | None, y: np.ndarray) -> list:
            """One call per worker: the image's output rows [r0, r1)."""
            return [((x, wc, b, y), size, (geometry, 0, 1, *full, r0, r1)) for r0, r1 in ranges]
    else:  # one call per worker: the image's output channels [first, stop) (y[:, first:stop] contiguous)
        parts = [(first, stop, _geometry(n, 1, c, stop - first, in_size, geom)) for first, stop in ranges]
        sizes = [backends.core.module.grouped2d_scratch(0, part) for _, _, part in parts]

        def calls_of(x: np.ndarray, wc: np.ndarray, b: np.ndarray | None, y: np.ndarray) -> list:
            return [((x, wc[first:stop], None if b is None else b[first:stop], y[:, first:stop]), size,
                     (part, 0, 1, *codes)) for (first, stop, part), size in zip(parts, sizes, strict=True)]

    def run_parts(x: np.ndarray) -> np.ndarray:
        y = np.empty(y_shape, dtype)
        b = None if bias is None else _prepare(bias, dtype)
        calls = calls_of(_prepare(x, dtype), _prepare(w, dtype), b, y)
        workspace.run_calls(backends.core.module.grouped2d_forward, calls, "compiled-grouped", dtype)
        return _activated(y, later)

    def bind_parts(x: np.ndarray, y: np.ndarray, source: ScratchSource) -> Callable[[], None]:
        return _bound(x, y, source, lambda xc, wc, b: calls_of(xc, wc, b, y))

    return PreparedForward(run_parts, (_threads_state,), (_threads_state(),), bind_parts)


def _adjoint_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """``w (G*Og, Cg, *k)`` -> ``(G*Cg, Og, *k)``, per group transposed and every axis of k flipped."""
    o, cg, *k = w.shape
    og = o // groups
    per_group = w.reshape((groups, og, cg) + tuple(k)).swapaxes(1, 2)
    flipped = per_group[(Ellipsis,) + (slice(None, None, -1),) * len(k)]
    return np.ascontiguousarray(flipped).reshape((groups * cg, og) + tuple(k))


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
               bias: np.ndarray | None = None, epilogue: Epilogue | None = None) -> np.ndarray:
    """``gx (N, C, *input_size) (+ bias[c])``: adjoint of :func:`forward` in ``x`` (``bias``: a
    transposed convolution's; ``epilogue=`` as in :func:`forward`); stride 1 runs as a forward, the
    rest on the GEMM algorithm."""
    bias, act, later = compiled_epilogue(bias, epilogue)
    input_size = tuple(int(v) for v in input_size)
    groups = geom.groups
    lows = _adjoint_lows(geom, input_size)
    if any(s != 1 for s in geom.stride) or min(lows) < 0:
        return _activated(gemm.grad_input(gy, w, geom, input_size, bias=bias), later or act)
    dtype = _check(gy, w)
    n, o = gy.shape[:2]
    cg, og = w.shape[1], o // groups
    adjoint = ConvGeometry.create(geom.kernel_size, 1, 0, geom.dilation, groups, ndim=geom.ndim)
    geometry = _geometry(n, groups, og, cg, gy.shape[2:], adjoint, lows, input_size)
    gx = np.empty((n, groups * cg) + input_size, dtype)
    b = None if bias is None else _prepare(bias, dtype)
    _run(backends.core.module.grouped2d_forward, 0, n * groups, dtype, geometry, _prepare(gy, dtype),
         _adjoint_weight(_prepare(w, dtype), groups), b, gx, epilogue=_codes(act),
         macs=geom.multiply_adds((n, groups * cg) + input_size, w.shape))
    return _activated(gx, later)


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (O, C/groups, *k)``: ``sum_{n, o} gy[n, g*Og + j, o] * xp[n, g*Cg + ci, o*s + k*d]``."""
    dtype = _check(x, gy)
    n, c = x.shape[:2]
    groups = geom.groups
    o = gy.shape[1]
    x, gy = _prepare(x, dtype), _prepare(gy, dtype)
    gw_shape = (o, c // groups) + geom.kernel_size
    parts = _image_parts(n, groups, get_num_threads(), x.nbytes + gy.nbytes,
                         math.prod(gw_shape) * dtype.itemsize)
    if len(parts) == 1:
        gw = np.empty(gw_shape, dtype)
        geometry = _geometry(n, groups, c // groups, o // groups, x.shape[2:], geom)
        _run(backends.core.module.grouped2d_grad_weight, 2, groups, dtype, geometry, x, gy, gw)
        return gw
    # one group: each worker sums its images into its own gw, the partial sums added in float64
    partials = [np.empty(gw_shape, dtype) for _ in parts]
    calls = []
    for (first, stop), gw in zip(parts, partials, strict=True):
        geometry = _geometry(stop - first, 1, c, o, x.shape[2:], geom)
        size = backends.core.module.grouped2d_scratch(2, geometry)
        calls.append(((x[first:stop], gy[first:stop], gw), size, (geometry, 0, 1)))
    workspace.run_calls(backends.core.module.grouped2d_grad_weight, calls, "compiled-grouped", dtype)
    total = partials[0].astype(np.float64)
    for partial in partials[1:]:
        total += partial
    return total.astype(dtype)


def _image_parts(n: int, groups: int, threads: int, data_bytes: int, gw_bytes: int) -> list[tuple[int, int]]:
    """Image ranges of an ungrouped grad_weight, one per worker thread (``[(0, n)]``: the groups are
    the work items, split as they are), where its partial sums (one gw per worker, their float64 sum
    and the result) fit the memory bound beside x and gy (``data_bytes``) and half its scratch term."""
    if groups > 1 or threads < 2 or n < 2:
        return [(0, n)]
    if (threads + 3) * gw_bytes > workspace.memory_bound(data_bytes, gw_bytes) - workspace.SCRATCH_BYTES // 2:
        return [(0, n)]
    return workspace.ranges(n, threads)
