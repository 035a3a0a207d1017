"""Direct depthwise convolution on the compiled core (``npconv._core``): the compiled implementation of
the ``"depthwise"`` algorithm (preferred by the registry; ``NPCONV_PURE=1`` skips it), 1-d and 2-d
in C; 3-d: the forward in C (and grad_input where it is a forward: stride 1, one output channel per
input channel), the rest handed to the NumPy implementation (:mod:`npconv.kernels.depthwise`); float32/64.

``y[n, c*M + j, o] = bias[c*M + j] + sum_k w[c*M + j, 0, k] * xp[n, c, o*s + k*d]`` (``xp`` zero
padded; channel multiplier ``M = O / C``), for any kernel size, stride, dilation and zero padding
(other padding modes arrive pre-padded). 1-d runs as 2-d with a unit height.

The C kernels (``src/npconv/csrc/depthwise.h``) work on whole planes, single-threaded over a range
of planes; the worker threads (:func:`npconv.kernels.workspace.run_jobs`: prepared jobs) split the
planes (forward, grad_input) or the input channels (grad_weight: per-channel accumulators, no
cross-thread sums), the GIL released, each with its own scratch buffer; calls too small to pay for
a thread hand-off (:data:`MIN_THREAD_MACS`) run on the calling thread. The epilogue (bias, and the
ReLU/ReLU6/Hardtanh/SiLU of an ``epilogue=``) is applied in the kernels' stores.

* forward: per plane, the input rows copied once into zero-padded rows split into ``stride``
  column phases, so every tap is a contiguous shifted run of the output row (a stencil);
* grad_input: a polyphase gather (input column ``i`` takes the taps with ``k*d = i + pad (mod s)``);
* grad_weight: per channel, vector accumulators per tap, summed per plane into float64;
* 3-d forward (``depthwise3d_forward``): per (image, channel), each input depth slice in the 2-d
  forward's padded phase form once, then each output slice one stencil of ``KD * KH * KW`` taps over the
  slices it reads (:func:`_forward3d`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import depthwise, fft, workspace
from .common import Epilogue, PreparedForward, ScratchSource, adjoint_kernel, bound_run, compiled_epilogue
from .pointwise import Activation, epilogue_

__all__ = ["NAME", "COMPILED", "BIAS_PASSES", "EPILOGUE_PASSES", "MIN_THREAD_MACS", "supports", "recommended",
           "forward", "grad_input", "grad_weight"]

if not backends.core.available:  # the registry records the reason; npconv.backends warned at import
    raise ModuleNotFoundError(f"npconv._core, the compiled core, is not in use ({backends.core.reason})",
                              name=__name__)

NAME = "depthwise"
COMPILED = True
#: Passes that take ``bias=`` (or ``epilogue=``: bias and activation) and apply it in the kernel's
#: stores (see plan).
BIAS_PASSES = EPILOGUE_PASSES = ("forward", "grad_input")
#: Multiply-adds per worker thread below which a call runs on the calling thread alone. A worker
#: takes a prepared job in 6-8 us (a Python job cost 30-40 us); MobileNetV2's 3x3 layers, us, one
#: thread vs two: 960x7x7 37 vs 29 (0.42 M), 576x14x14 stride 2 37 vs 28 (0.25 M) (docs/performance.md).
MIN_THREAD_MACS = 1 << 17
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_PASS_CODES = {"forward": 0, "grad_input": 1, "grad_weight": 2}


@functools.lru_cache(maxsize=1024)
def _scratch(pass_code: int, geometry: tuple[int, ...]) -> int | None:
    """Scratch elements per thread for this pass, or None if the C kernel refuses the geometry."""
    try:
        return backends.core.module.depthwise2d_scratch(pass_code, geometry)
    except (ValueError, OverflowError):
        return None


def _in_c(geom: ConvGeometry, x_shape: Sequence[int] | None = None, out_channels: int = 1) -> bool:
    """1-d and 2-d run in C, 3-d on the NumPy implementation (see :func:`_c_geometry`)."""
    if geom.ndim > 2:
        return False
    if x_shape is None:
        return True
    n, c, in_size = x_shape[0], x_shape[1], tuple(int(v) for v in x_shape[2:])
    return _c_geometry(geom, n, c, max(out_channels // c, 1), in_size) is not None


@functools.lru_cache(maxsize=1024)
def _c_geometry(geom: ConvGeometry, n: int, c: int, m: int,
                in_size: tuple[int, ...]) -> tuple[int, ...] | None:
    """The extension's geometry tuple of a call the C kernels run (cached: a call's size arithmetic
    cost as much as a small layer's kernel), or None for one left to the NumPy implementation: 3-d,
    and geometries whose C cost would not be proportional to the data: the C kernels' own check
    (``parse_geom`` in core.c: the polyphase split makes ``stride`` phases per axis of at least one
    element each) refuses huge strides and planes, and padding far beyond the input and output is
    left to the NumPy variant's cropping."""
    if geom.ndim > 2 or not _padding_in_proportion(geom, in_size):
        return None
    geometry = _geometry(n, c, m, in_size, geom)
    return geometry if _scratch(0, geometry) is not None else None


def _padding_in_proportion(geom: ConvGeometry, in_size: tuple[int, ...]) -> bool:
    """Whether the padded input stays within a few times the input and output (beyond: the NumPy
    variant's cropping, whose cost is proportional to the data)."""
    out = geom.output_size(in_size)
    return math.prod(geom.padded_size(in_size)) <= 4 * (math.prod(in_size) + math.prod(out)) + (1 << 16)


def _out_size(geometry: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """The output's spatial size in a geometry tuple (1-d: its width)."""
    return geometry[5:7] if ndim == 2 else geometry[6:7]


def _c3_geometry(geom: ConvGeometry, n: int, c: int, m: int,
                 in_size: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """A 3-d forward's ``(slice geometry, depth)`` for ``depthwise3d_forward``: the 2-d geometry tuple of
    one depth slice (:func:`_geometry`) and ``(D, OD, KD, SD, DD, PD)``; None where the C kernel refuses
    them or the padding far exceeds the input and output (as :func:`_c_geometry`)."""
    out = geom.output_size(in_size)
    pads = geom.pads(in_size)
    if min(out) < 1 or not _padding_in_proportion(geom, in_size):
        return None
    plane = ConvGeometry(geom.kernel_size[1:], geom.stride[1:], tuple(pads[1:]), geom.dilation[1:], c)
    geometry = _geometry(n, c, m, in_size[1:], plane)
    depth = (in_size[0], out[0], geom.kernel_size[0], geom.stride[0], geom.dilation[0], pads[0][0])
    try:
        backends.core.module.depthwise3d_scratch(geometry, depth)
    except (ValueError, OverflowError):
        return None
    return geometry, depth


def _in_c3(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry) -> bool:
    """A 3-d pass the C kernel runs: the forward, and grad_input where it is the forward of ``gy`` with the
    flipped kernel (stride 1, one output channel per input channel)."""
    if geom.ndim != 3 or len(x_shape) != 5 or min(x_shape) < 1 or len(w_shape) != 5:
        return False
    n, c = x_shape[:2]
    if geom.groups != c or w_shape[1] != 1 or w_shape[0] % c or pass_name not in ("forward", "grad_input"):
        return False
    if pass_name == "grad_input":
        if w_shape[0] != c or geom.stride != (1, 1, 1):
            return False
        out = geom.output_size(tuple(x_shape[2:]))
        adjoint, _ = geom.stride1_adjoint(tuple(x_shape[2:]), out)
        return _c3_geometry(adjoint, n, c, 1, out) is not None
    return _c3_geometry(geom, n, c, w_shape[0] // c, tuple(int(v) for v in x_shape[2:])) is not None


def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """True for float32/float64 convolutions with ``groups == C`` (one input channel per group)."""
    if geom.ndim == 3 and _in_c3(pass_name, x_shape, w_shape, geom):
        return np.dtype(dtype) in _DTYPES and geom.fits(x_shape, w_shape)
    if not _in_c(geom, x_shape if len(x_shape) == geom.ndim + 2 and min(x_shape) > 0 else None, w_shape[0]):
        return depthwise.supports(pass_name, x_shape, w_shape, geom, dtype)
    if pass_name not in _PASS_CODES or np.dtype(dtype) not in _DTYPES:
        return False
    c = x_shape[1] if len(x_shape) > 1 else 0
    return geom.fits(x_shape, w_shape) and geom.groups == c and w_shape[1] == 1


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """1-d/2-d: every supported call up to 49 kernel taps, any stride and channel multiplier; larger
    kernels strided (the FFT is stride 1; the GEMM took 10x as long at 11x11/2 and 15x15/2) or up to
    :data:`npconv.kernels.fft.DEPTHWISE_MAX_TAPS` (:func:`npconv.kernels.fft.direct_kernel_wins`; the
    FFT beyond); measurements in docs/performance.md. 3-d: the C forward (and grad_input where it is
    one) up to :data:`npconv.kernels.fft.DEPTHWISE3D_MAX_TAPS` taps, else the NumPy rule."""
    if geom.ndim == 3:
        if fft.direct_kernel_wins(pass_name, w_shape, geom) and _in_c3(pass_name, x_shape, w_shape, geom):
            return supports(pass_name, x_shape, w_shape, geom, dtype)
        return depthwise.recommended(pass_name, x_shape, w_shape, geom, dtype)
    if not _in_c(geom, x_shape if len(x_shape) == geom.ndim + 2 and min(x_shape) > 0 else None, w_shape[0]):
        return depthwise.recommended(pass_name, x_shape, w_shape, geom, dtype)
    if not supports(pass_name, x_shape, w_shape, geom, dtype):
        return False
    return (math.prod(geom.kernel_size) <= 49 or any(s > 1 for s in geom.stride)
            or fft.direct_kernel_wins(pass_name, w_shape, geom))


def _geometry(n: int, c: int, m: int, in_size: Sequence[int], geom: ConvGeometry) -> tuple[int, ...]:
    """The extension's geometry tuple ``(N, C, M, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW)``;
    1-d as 2-d with height 1."""
    out = geom.output_size(in_size)
    lows = tuple(lo for lo, _ in geom.pads(in_size))
    if geom.ndim == 1:
        return (n, c, m, 1, in_size[0], 1, out[0], 1, geom.kernel_size[0], 1, geom.stride[0], 1,
                geom.dilation[0], 0, lows[0])
    return (n, c, m, *in_size, *out, *geom.kernel_size, *geom.stride, *geom.dilation, *lows)


def _spans(count: int, geometry: tuple[int, ...],
           depth: tuple[int, ...] = (1, 1, 1)) -> list[tuple[int, int]]:
    """``count`` planes/channels in one range per worker thread (as many as have
    :data:`MIN_THREAD_MACS` each); ``depth`` a 3-d call's ``(D, OD, KD, ...)``."""
    n, c, m, h, w, oh, ow, kh, kw = geometry[:9]
    d, od, kd = depth[:3]
    macs = n * c * m * kh * kw * kd * max(h * w * d, oh * ow * od)
    return workspace.ranges(count, max(1, min(get_num_threads(), macs // MIN_THREAD_MACS)))


def _threads_state() -> tuple[int, int]:
    """What :func:`_spans` depends on besides the call (a prepared forward's token)."""
    return get_num_threads(), MIN_THREAD_MACS


def _run(kernel, pass_name: str, count: int, dtype: np.dtype, geometry: tuple[int, ...], *args,
         epilogue: tuple = (), spans: list[tuple[int, int]] | None = None,
         scratch: int | None = None) -> None:
    """``kernel(isa, *args, scratch, geometry, start, stop, *epilogue)`` over ``count``
    planes/channels split across the worker threads (``spans``, default :func:`_spans`), each with
    its own scratch buffer (``scratch`` elements, default the kernel's own count)."""
    if scratch is None:
        scratch = _scratch(_PASS_CODES[pass_name], geometry)
    workspace.run_spans(kernel, (*args, workspace.SCRATCH, geometry), spans or _spans(count, geometry),
                        epilogue, ("compiled-dw", scratch, dtype))


def _prepare(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _check(*arrays: np.ndarray | np.dtype) -> np.dtype:
    dtype = np.result_type(*arrays)
    if dtype not in _DTYPES:
        raise TypeError(f"compiled depthwise convolution needs float32 or float64 arrays, got {dtype}")
    return dtype


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None,
            epilogue: Epilogue | None = None) -> np.ndarray:
    """``y (N, C*M, *out) (+ bias)`` of ``x (N, C, *in)`` and ``w (C*M, 1, *k)``, zero padding
    ``geom.pads()``; ``epilogue=`` (instead of ``bias``): ``activation(y + bias)``, ReLU and
    ReLU6/Hardtanh or SiLU in the kernel's stores."""
    return prepare_forward(x.shape, x.dtype, w, geom, bias, epilogue).run(x)


def prepare_forward(x_shape: tuple[int, ...], x_dtype: np.dtype, w: np.ndarray, geom: ConvGeometry,
                    bias: np.ndarray | None = None, epilogue: Epilogue | None = None) -> PreparedForward:
    """:func:`forward` of inputs of ``x_shape`` and ``x_dtype`` planned once (the kernel's geometry,
    its scratch and the planes of each worker thread: valid while the thread count holds)."""
    bias, act, later = compiled_epilogue(bias, epilogue)
    n, c = x_shape[:2]
    m = max(w.shape[0] // c, 1)
    if geom.ndim == 3:
        return PreparedForward(lambda x: _forward3d(x, w, geom, bias, act, later))
    geometry = _c_geometry(geom, n, c, m, tuple(x_shape[2:]))
    if geometry is None:
        return PreparedForward(lambda x: _activated(depthwise.forward(x, w, geom, bias), later or act))
    dtype = _check(x_dtype, w.dtype)
    y_shape = (n, c * m) + _out_size(geometry, geom.ndim)
    codes = _codes(act)
    spans, scratch = _spans(n * c, geometry), _scratch(_PASS_CODES["forward"], geometry)

    def run(x: np.ndarray) -> np.ndarray:
        y = np.empty(y_shape, dtype)
        b = None if bias is None else _prepare(bias, dtype)
        _run(backends.core.module.depthwise2d_forward, "forward", n * c, dtype, geometry, _prepare(x, dtype),
             _prepare(w, dtype), b, y, epilogue=codes, spans=spans, scratch=scratch)
        return _activated(y, later)

    def bind(x: np.ndarray, y: np.ndarray, source: ScratchSource) -> Callable[[], None]:
        def jobs_of(wc: np.ndarray, b: np.ndarray | None) -> Callable[[], None]:
            calls, name = workspace.span_calls((x, wc, b, y, workspace.SCRATCH, geometry), spans, codes,
                                               ("compiled-dw", scratch, dtype))
            return workspace.bind_calls(backends.core.module.depthwise2d_forward, calls, name, dtype, source)

        return bound_run(x, tuple(x_shape), y, y_shape, dtype, w, bias, jobs_of, later)

    return PreparedForward(run, (_threads_state,), (_threads_state(),), bind)


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
               bias: np.ndarray | None = None, epilogue: Epilogue | None = None) -> np.ndarray:
    """``gx (N, C, *input_size) (+ bias[c])``: adjoint of :func:`forward` in ``x`` (``bias``: a
    transposed convolution's; ``epilogue=`` as in :func:`forward`)."""
    bias, act, later = compiled_epilogue(bias, epilogue)
    input_size = tuple(int(v) for v in input_size)
    n, c = gy.shape[0], geom.groups
    if geom.ndim == 3 and _in_c3("grad_input", (n, c) + input_size, w.shape, geom):
        adjoint, crop = geom.stride1_adjoint(input_size, gy.shape[2:])
        flipped = adjoint_kernel(w, c, compiled=True)
        return _forward3d(gy[(slice(None), slice(None)) + crop], flipped, adjoint, bias, act, later)
    m = max(w.shape[0] // c, 1)
    geometry = _c_geometry(geom, n, c, m, input_size)
    if geometry is None:
        return _activated(depthwise.grad_input(gy, w, geom, input_size, bias), later or act)
    dtype = _check(gy, w)
    gx = np.empty((n, c) + input_size, dtype)
    b = None if bias is None else _prepare(bias, dtype)
    _run(backends.core.module.depthwise2d_grad_input, "grad_input", n * c, dtype, geometry,
         _prepare(gy, dtype), _prepare(w, dtype), b, gx, epilogue=_codes(act))
    return _activated(gx, later)


def _forward3d(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None,
               act: Activation | None, later: Activation | None) -> np.ndarray:
    """The 3-d forward (``depthwise3d_forward``; the NumPy implementation where the C kernel refuses the
    call): ``act`` applied in the kernel's stores, ``later`` afterwards."""
    n, c = x.shape[:2]
    m = max(w.shape[0] // c, 1)
    in_size = tuple(int(v) for v in x.shape[2:])
    split = _c3_geometry(geom, n, c, m, in_size)
    if split is None:
        return _activated(depthwise.forward(x, w, geom, bias), later or act)
    geometry, depth = split
    dtype = _check(x, w)
    y = np.empty((n, c * m) + geom.output_size(in_size), dtype)
    b = None if bias is None else _prepare(bias, dtype)
    core = backends.core.module
    args = (_prepare(x, dtype), _prepare(w, dtype), b, y, workspace.SCRATCH, geometry, depth)
    scratch = ("compiled-dw", core.depthwise3d_scratch(geometry, depth), dtype)
    workspace.run_spans(core.depthwise3d_forward, args, _spans(n * c, geometry, depth), _codes(act), scratch)
    return _activated(y, later)


def _activated(out: np.ndarray, activation: Activation | None) -> np.ndarray:
    """``activation(out)`` in place for an activation the kernel did not apply."""
    return out if activation is None else epilogue_(out, None, activation)


def _codes(activation: Activation | None) -> tuple:
    """The C kernels' ``(act, lo, hi)`` of an activation they apply (none: no arguments)."""
    if activation is None:
        return ()
    return (activation.code, float(activation.lo), float(activation.hi))


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (C*M, 1, *k)``: ``sum_{n, o} gy[n, c*M + j, o] * xp[n, c, o*s + k*d]``."""
    n, c = x.shape[:2]
    m = max(gy.shape[1] // c, 1)
    geometry = _c_geometry(geom, n, c, m, x.shape[2:])
    if geometry is None:
        return depthwise.grad_weight(x, gy, geom)
    dtype = _check(x, gy)
    gw = np.empty((c * m, 1) + geom.kernel_size, dtype)
    _run(backends.core.module.depthwise2d_grad_weight, "grad_weight", c, dtype, geometry,
         _prepare(x, dtype), _prepare(gy, dtype), gw)
    return gw
