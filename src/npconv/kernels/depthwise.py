"""Direct depthwise convolution (``groups == C``, channel multiplier ``M = O / C >= 1``), any N-d.

``y[n, c*M + j, o] = sum_k w[c*M + j, 0, k] * xp[n, c, o*s + k*d]`` (``xp`` zero padded), computed
as one multiply-add of a shifted slice per kernel offset ``k``, vectorised over a block of
channels of one image (a cache-sized task); worker threads take the tasks.

For stride 1 the padded image is used as flat rows ("wide" layout): with ``P`` the padded size
and row-major flat strides ``f``, every output position ``o`` is the flat position
``sum o_i f_i`` and every kernel offset a constant shift ``sum k_i d_i f_i``, so each offset is a
single contiguous 1-D slice; the few junk columns (``o_i >= out_i`` for ``i > 0``) are dropped at
the end. The forward pass copies the ``K`` shifted rows of a channel block into a ``(K, wide)``
stack (one strided-view copy) and multiplies it by the ``(M, K)`` weights (a batched matmul: NumPy
runs ``K`` broadcast multiply-adds slowly). Larger strides copy all
``K`` windows ``xp[c, o*s + k*d]`` of a channel block into ``(cb, K, prod(out))`` (one strided-view
copy) and run one batched matmul with the ``(cb, M, K)`` weights (forward) or ``gy`` (grad_weight).

* ``grad_input``: ``gxp[n, c, o*s + k*d] += sum_j w[c*M + j, 0, k] * gy[n, c*M + j, o]`` (the same
  slices, scattered), then the padding is cropped; for stride 1 and ``M == 1`` it is the forward
  pass of ``gy`` with the flipped kernel and padding ``e - 1 - lo`` instead. For stride ``s > 1``
  the padded grid is split into its ``prod(s)`` stride phases (``xp[m*s + r] = phase_r[m]``): each
  tap adds into one phase as a contiguous shifted 1-D slice (see :class:`_Phases`).
* ``grad_weight``: ``gw[c*M + j, 0, k] = sum_{n, o} gy[n, c*M + j, o] * xp[n, c, o*s + k*d]``, a
  batched matrix product (junk columns of ``gy`` set to zero), summed over tasks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import workspace
from .algorithm import PASSES
from .common import add_to_channels, grad_input_as_forward, windows

__all__ = ["NAME", "supports", "recommended", "forward", "grad_input", "grad_weight"]

NAME = "depthwise"
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_TASK_BYTES = 256 * 1024  # padded input per task: about a core's L2 share
_STACK_BYTES = 4 * 1024 * 1024  # forward's stack and products per task (measured 2.5-5 MiB best)
#: Passes that take ``bias=`` and add it to each channel block while it is in cache (see plan).
BIAS_PASSES = ("forward", "grad_input")
_STRIDED_BYTES = 2 * 1024 * 1024  # padded input per task, stride > 1 (measured 1.5-3x faster than 256 KiB)


def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """True for float32/float64 convolutions with ``groups == C`` (one input channel per group)."""
    if pass_name not in PASSES or np.dtype(dtype) not in _DTYPES:
        return False
    c = x_shape[1] if len(x_shape) > 1 else 0
    if not (geom.fits(x_shape, w_shape) and geom.groups == c and w_shape[1] == 1):
        return False
    return _smallest_tasks_fit(pass_name, x_shape, w_shape, geom, np.dtype(dtype))


def _smallest_tasks_fit(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                        dtype: np.dtype) -> bool:
    """Whether single-channel tasks on every thread keep the pass within the memory bound
    (:func:`npconv.kernels.workspace.memory_bound`). A task holds one whole padded plane and its
    shifted copies, so this is false only for a few huge planes (e.g. one 1280x1280 channel with a
    7x7 kernel); GEMM, which tiles rows, runs those."""
    n, c = x_shape[:2]
    mult = w_shape[0] // c
    out_size = geom.output_size(x_shape[2:])
    x_bytes = math.prod(x_shape) * dtype.itemsize
    w_bytes = math.prod(w_shape) * dtype.itemsize
    y_bytes = n * w_shape[0] * math.prod(out_size) * dtype.itemsize
    shape, task_geom = tuple(x_shape), geom
    if pass_name == "grad_input" and mult == 1 and all(st == 1 for st in geom.stride):
        task_geom, crop = geom.stride1_adjoint(x_shape[2:], out_size)  # runs as a forward pass of gy
        shape = (n, c) + tuple(len(range(*sl.indices(m))) for sl, m in zip(crop, out_size, strict=True))
    lay = _Layout(shape, mult, task_geom, dtype, stacked=True)
    plane = math.prod(lay.padded) + lay.slack
    if lay.flat:
        extra = math.prod(lay.rest_kernel) * lay.stack_len + (lay.row_taps + 2) * mult * lay.wide_len
    else:
        extra = (len(lay.offsets) + 2) * mult * max(math.prod(lay.out_size), math.prod(lay.padded))
    task = (plane + extra) * dtype.itemsize * max(1, min(lay.threads, len(lay.tasks)))
    operands = {"forward": (x_bytes, w_bytes, y_bytes), "grad_input": (y_bytes, w_bytes, x_bytes),
                "grad_weight": (x_bytes, y_bytes, w_bytes)}[pass_name]
    return task + operands[2] <= workspace.memory_bound(*operands)


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """Measured rule: kernels up to 49 taps, strided, or stride 1 on outputs of at least 2500
    positions (the per-image grouped GEMM wins below; FFT above 49 taps); forward and grad_input
    only without a channel multiplier, grad_weight also with one when ``C > 1``. A single-channel
    first layer (``groups == C == 1``, multiplier ``O``) stays on GEMM."""
    if not supports(pass_name, x_shape, w_shape, geom, dtype):
        return False
    taps = math.prod(geom.kernel_size)
    channels = x_shape[1]
    multiplier = w_shape[0] // max(channels, 1)
    strided = any(st > 1 for st in geom.stride)
    if taps > 49 or (not strided and math.prod(geom.output_size(x_shape[2:])) < 2500):
        return False
    if pass_name == "grad_weight":
        return multiplier == 1 or channels > 1
    return multiplier == 1


def _budget(task_bytes: int) -> int:
    """A task budget, shrunk with a smaller scratch term of the memory bound (16 tasks' worth)."""
    return min(task_bytes, workspace.SCRATCH_BYTES // 16)


class _Layout:
    """Sizes, offsets and tasks of one depthwise call (``x (N, C, *in)``, multiplier ``M``)."""

    def __init__(self, x_shape: Sequence[int], multiplier: int, geom: ConvGeometry, dtype: np.dtype,
                 stacked: bool = False):
        self.n, self.c = x_shape[0], x_shape[1]
        self.in_size = tuple(x_shape[2:])
        self.multiplier = multiplier
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.pads = geom.pads(self.in_size)
        self.padded = geom.padded_size(self.in_size)
        self.out_size = geom.output_size(self.in_size)
        self.offsets = list(itertools.product(*(range(k) for k in geom.kernel_size)))
        self.flat = all(s == 1 for s in geom.stride)
        strides = [math.prod(self.padded[i + 1:]) for i in range(geom.ndim)]
        self.flat_strides = tuple(strides)
        self.shifts = [sum(k * d * f for k, d, f in zip(off, geom.dilation, strides, strict=True))
                       for off in self.offsets]
        # wide output: the first out_0 "rows" of the padded grid; slack keeps every shift in bounds
        self.wide_rows = (self.out_size[0],) + self.padded[1:]
        self.wide_len = math.prod(self.wide_rows)
        self.slack = sum((e - 1) * f for e, f in zip(geom.extent[1:], strides[1:], strict=True))
        # forward stack: the taps of the trailing axes are copied once over all padded rows; the
        # first axis' taps are row shifts (``row_step``) of that stack (1-d: all taps copied)
        rows = geom.ndim >= 2
        self.row_taps = geom.kernel_size[0] if rows else 1
        self.row_step = geom.dilation[0] * strides[0] if rows else 0
        self.rest_kernel = tuple(geom.kernel_size[1:] if rows else geom.kernel_size)
        self.rest_steps = tuple(d * f for d, f in zip(geom.dilation, strides, strict=True))[1 if rows else 0:]
        self.stack_len = self.wide_len + (self.row_taps - 1) * self.row_step
        plane = math.prod(self.padded) * self.dtype.itemsize * max(1, multiplier)
        budget = _budget(_TASK_BYTES)
        if stacked and self.flat:  # the forward's stack of shifted rows and its per-row products
            rest = math.prod(self.rest_kernel)
            plane = self.dtype.itemsize * (rest * self.stack_len + self.row_taps * multiplier * self.wide_len)
            budget = _budget(_STACK_BYTES)
        self.threads = max(1, get_num_threads())
        self.block = max(1, min(self.c, budget // max(plane, 1)))
        if not self.flat:  # larger blocks (fewer, longer NumPy calls), but a task for every thread
            self.block = max(1, min(self.c, _budget(_STRIDED_BYTES) // max(plane, 1),
                                    -(-self.c // -(-self.threads // self.n))))
        self.tasks = [(i, c0) for i in range(self.n) for c0 in range(0, self.c, self.block)]

    def interior(self) -> tuple[slice, ...]:
        """Where the unpadded input sits inside the padded grid."""
        return self.geom.interior(self.in_size)

    def padded_block(self, x: np.ndarray, image: int, c0: int, c1: int) -> np.ndarray:
        """Zero-padded input block ``(c1 - c0, prod(padded) + slack)`` (flat rows) in a thread buffer."""
        size = math.prod(self.padded)
        buf = workspace.buffer("dw-input", (c1 - c0, size + self.slack), self.dtype)
        buf[:, size:] = 0
        grid = buf[:, :size].reshape((c1 - c0,) + self.padded)
        for axis, (lo, hi) in enumerate(self.pads, start=1):  # zero only the padding
            before = (slice(None),) * axis
            if lo:
                grid[before + (slice(0, lo),)] = 0
            if hi:
                grid[before + (slice(grid.shape[axis] - hi, None),)] = 0
        grid[(slice(None),) + self.interior()] = x[image, c0:c1]
        return buf

    def grid(self, buf: np.ndarray) -> np.ndarray:
        return buf[:, : math.prod(self.padded)].reshape((buf.shape[0],) + self.padded)

    def widen(self, block: np.ndarray) -> np.ndarray:
        """``block (cb, M, *out)`` in the wide layout ``(cb, M, wide_len)``, junk columns zero
        (a thread buffer)."""
        wide = workspace.buffer("dw-gy", block.shape[:2] + (self.wide_len,), self.dtype)
        grid = wide.reshape(block.shape[:2] + self.wide_rows)
        for axis in range(1, self.geom.ndim):  # zero only the junk columns
            grid[(slice(None),) * (axis + 2) + (slice(self.out_size[axis], None),)] = 0
        self.valid(wide)[...] = block
        return wide

    def valid(self, wide: np.ndarray) -> np.ndarray:
        """The real outputs ``(..., *out)`` of a wide ``(..., wide_len)`` array."""
        lead = wide.shape[:-1]
        view = wide.reshape(lead + self.wide_rows)
        return view[(Ellipsis,) + tuple(slice(0, o) for o in self.out_size)]


def _weights(w: np.ndarray, c: int, dtype: np.dtype) -> np.ndarray:
    """``(C, M, K)`` weights: ``w[c*M + j, 0, k]``."""
    return w.reshape(c, w.shape[0] // c, -1).astype(dtype, copy=False)


def _check(x: np.ndarray, w: np.ndarray) -> np.dtype:
    dtype = np.result_type(x, w)
    if dtype not in _DTYPES:
        raise TypeError(f"depthwise convolution needs float32 or float64 arrays, got {dtype}")
    return dtype


def _block_bias(bias: np.ndarray | None, channels: int, ndim: int) -> np.ndarray | None:
    """``bias (C*M,)`` as ``(C, M, 1, ...)`` (``M`` may be 1), broadcasting over ``(cb, M, *size)``."""
    return None if bias is None else np.asarray(bias).reshape((channels, -1) + (1,) * ndim)


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None) -> np.ndarray:
    """``y (N, C*M, *out) (+ bias)`` of ``x (N, C, *in)`` and ``w (C*M, 1, *k)``, zero padding
    ``geom.pads()``."""
    dtype = _check(x, w)
    n, c = x.shape[:2]
    mult = w.shape[0] // c
    block_bias = _block_bias(bias, c, geom.ndim)
    lay = _Layout(x.shape, mult, geom, dtype, stacked=True)
    wk = _weights(w, c, dtype)
    # (C, row taps, M, other taps): the weights of each kernel row for the stacked matmul
    wk_rows = np.ascontiguousarray(
        wk.reshape(c, mult, lay.row_taps, -1).transpose(0, 2, 1, 3)) if lay.flat else wk
    y = np.empty((n, c, mult) + lay.out_size, dtype)

    def work(task: tuple[int, int]) -> None:
        image, c0 = task
        c1 = min(c, c0 + lay.block)
        buf = lay.padded_block(x, image, c0, c1)
        cb = c1 - c0
        if lay.flat:
            _flat_forward(lay, buf, wk_rows[c0:c1], y[image, c0:c1])
        else:
            cols = _strided_windows(lay, buf)  # (cb, K, prod(out))
            np.matmul(wk[c0:c1], cols, out=y[image, c0:c1].reshape(cb, mult, -1))
        if block_bias is not None:
            add_to_channels(y[image, c0:c1], block_bias[c0:c1])

    workspace.run(lay.tasks, lambda _, task: work(task), lay.threads)
    return y.reshape((n, c * mult) + lay.out_size)


def _stacked_rows(lay: _Layout, buf: np.ndarray) -> np.ndarray:
    """``(cb, R, Kr, wide)`` view of every tap's shifted row of ``buf (cb, flat padded)``: the ``Kr``
    taps of the trailing axes copied once into a ``(cb, Kr, L)`` stack, the ``R`` first-axis taps as
    row shifts of it (each ``(Kr, wide)`` slice is a BLAS-ready matrix)."""
    cb = buf.shape[0]
    step = buf.strides[1]
    taps = as_strided(buf, (cb,) + lay.rest_kernel + (lay.stack_len,),
                      (buf.strides[0],) + tuple(s * step for s in lay.rest_steps) + (step,), writeable=False)
    rest = math.prod(lay.rest_kernel)
    stack = workspace.buffer("dw-stack", (cb,) + lay.rest_kernel + (lay.stack_len,), buf.dtype)
    np.copyto(stack, taps)
    stack = stack.reshape(cb, rest, lay.stack_len)
    return as_strided(stack, (cb, lay.row_taps, rest, lay.wide_len),
                      (stack.strides[0], lay.row_step * step, stack.strides[1], step), writeable=False)


def _strided_windows(lay: _Layout, buf: np.ndarray) -> np.ndarray:
    """Stride > 1: every tap's window of ``buf (cb, flat padded)`` copied once into a thread buffer
    ``(cb, K, prod(out))`` (``[c, k, o] = xp[c, o*s + k*d]``; one strided-view copy), the BLAS-ready
    right operand of the per-channel batched matmul."""
    grid = lay.grid(buf)
    nd = lay.geom.ndim
    view = windows(grid, lay.geom, lay.out_size, lead=1)  # (cb, *out, *k) -> (cb, *k, *out)
    view = view.transpose((0,) + tuple(range(1 + nd, 1 + 2 * nd)) + tuple(range(1, 1 + nd)))
    cols = workspace.buffer("dw-cols", view.shape, buf.dtype)
    np.copyto(cols, view)
    return cols.reshape(grid.shape[0], len(lay.offsets), -1)


def _flat_forward(lay: _Layout, buf: np.ndarray, w_rows: np.ndarray, out: np.ndarray) -> None:
    """Stride-1 forward of one channel block: ``buf (cb, flat padded)``, ``w_rows (cb, R, M, Kr)``
    (``R`` taps of the first axis, ``Kr`` of the others), ``out (cb, M, *out)``.

    The ``Kr`` shifted copies of the padded rows form ``stack (cb, Kr, L)``; first-axis tap ``r``
    reads ``stack[..., r*row_step : r*row_step + wide]``, a BLAS-ready ``(Kr, wide)`` view, so one
    batched matmul gives the per-row products ``(cb, R, M, wide)``, then summed over ``R``. This
    copies ``Kr`` rows instead of all ``R*Kr`` taps (3x3: 3 instead of 9).
    """
    rows = _stacked_rows(lay, buf)
    cb, mult = buf.shape[0], w_rows.shape[2]
    part = workspace.buffer("dw-acc", (cb, lay.row_taps, mult, lay.wide_len), buf.dtype)
    np.matmul(w_rows, rows, out=part)
    if lay.row_taps == 1:
        out[...] = lay.valid(part[:, 0])
        return
    acc = part[:, 0]
    for r in range(1, lay.row_taps - 1):
        acc += part[:, r]
    np.add(lay.valid(acc), lay.valid(part[:, -1]), out=out)


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
               bias: np.ndarray | None = None) -> np.ndarray:
    """``gx (N, C, *input_size) (+ bias[c])``: adjoint of :func:`forward` in ``x`` (``bias``: a
    transposed convolution's)."""
    dtype = _check(gy, w)
    n = gy.shape[0]
    c = geom.groups
    mult = w.shape[0] // c
    if mult == 1 and all(s == 1 for s in geom.stride):
        return grad_input_as_forward(forward, gy, w, geom, input_size, bias)
    block_bias = None if bias is None else np.asarray(bias).reshape((c,) + (1,) * geom.ndim)
    lay = _Layout((n, c) + tuple(input_size), mult, geom, dtype)
    wk = _weights(w, c, dtype)
    wk_t = np.ascontiguousarray(wk.swapaxes(1, 2))  # (C, K, M)
    phases = None if lay.flat else _Phases(lay)
    gyr = gy.reshape((n, c, mult) + lay.out_size)
    gx = np.empty((n, c) + lay.in_size, dtype)
    size = math.prod(lay.padded) + lay.slack

    def work(task: tuple[int, int]) -> None:
        image, c0 = task
        c1 = min(c, c0 + lay.block)
        cb = c1 - c0
        if phases is not None:
            _polyphase_grad_input(lay, phases, wk_t[c0:c1], gyr[image, c0:c1], gx[image, c0:c1])
            if block_bias is not None:
                add_to_channels(gx[image, c0:c1], block_bias[c0:c1])
            return
        acc = workspace.buffer("dw-gxp", (cb, size), dtype)
        acc.fill(0)
        grid = lay.grid(acc)
        wide = workspace.buffer("dw-gy", (cb, mult, lay.wide_len), dtype)
        wide.fill(0)
        lay.valid(wide)[...] = gyr[image, c0:c1]
        tmp = workspace.buffer("dw-tmp", (cb, lay.wide_len), dtype)
        for j in range(mult):
            for t, shift in enumerate(lay.shifts):
                np.multiply(wide[:, j], wk[c0:c1, j, t, None], out=tmp)
                acc[:, shift: shift + lay.wide_len] += tmp
        gx[image, c0:c1] = grid[(slice(None),) + lay.interior()]
        if block_bias is not None:
            add_to_channels(gx[image, c0:c1], block_bias[c0:c1])

    workspace.run(lay.tasks, lambda _, task: work(task), lay.threads)
    return gx


class _Phases:
    """Polyphase split of the padded grid for stride ``s > 1``: ``xp[m*s + r] = phase_r[m]``
    for the residues ``r = k*d mod s`` that taps reach (at most ``k`` of the ``s`` per axis, so a
    huge stride costs nothing more; ``S`` phases of size ``Q``). Tap ``k`` (``k*d = q*s + r``) reads
    ``phase_r[o + q]``, a stride-1 window; in the wide flat layout of ``Q`` (junk columns
    ``o_i >= out_i`` for ``i > 0``) it is the constant shift ``sum q_i F_i`` of phase ``r``."""

    def __init__(self, lay: _Layout):
        g = lay.geom
        qmax = [(k - 1) * d // s for k, d, s in zip(g.kernel_size, g.dilation, g.stride, strict=True)]
        self.q_size = tuple(max(-(-p // s), o + q)
                            for p, s, o, q in zip(lay.padded, g.stride, lay.out_size, qmax, strict=True))
        f = [math.prod(self.q_size[i + 1:]) for i in range(g.ndim)]
        self.residues = [sorted({t * d % s for t in range(k)})
                         for k, d, s in zip(g.kernel_size, g.dilation, g.stride, strict=True)]
        counts = tuple(map(len, self.residues))
        slot = [{r: i for i, r in enumerate(rs)} for rs in self.residues]
        self.count = math.prod(counts)
        self.size = math.prod(self.q_size)
        self.slack = sum(q * fi for q, fi in zip(qmax[1:], f[1:], strict=True))
        self.wide_rows = (lay.out_size[0],) + self.q_size[1:]
        self.wide_len = math.prod(self.wide_rows)
        self.taps = []  # (phase index, flat shift) per kernel offset
        for offset in lay.offsets:
            qr = [divmod(k * d, s) for k, d, s in zip(offset, g.dilation, g.stride, strict=True)]
            index = tuple(sl[r] for (_, r), sl in zip(qr, slot, strict=True))
            phase = int(np.ravel_multi_index(index, counts))
            self.taps.append((phase, sum(q * fi for (q, _), fi in zip(qr, f, strict=True))))
        self.lay = lay

    def valid(self, wide: np.ndarray) -> np.ndarray:
        view = wide.reshape(wide.shape[:-1] + self.wide_rows)
        return view[(Ellipsis,) + tuple(slice(0, o) for o in self.lay.out_size)]

    def scatter(self, flat: np.ndarray, gx: np.ndarray) -> None:
        """``gx (cb, *in)[i] = phase_r[m]`` for ``i + lo = m*s + r`` (the padding dropped), from
        ``flat (cb, S, size + slack)``: one strided copy per phase (inputs of unreached residues
        get zeros)."""
        lay, cb = self.lay, flat.shape[0]
        ph = flat[:, :, : self.size].reshape((cb, self.count) + self.q_size)
        if self.count < math.prod(lay.geom.stride):
            gx.fill(0)
        for index, rs in enumerate(itertools.product(*self.residues)):
            dst, src = [slice(None)], [slice(None), index]
            for r, s, (lo, _), size in zip(rs, lay.geom.stride, lay.pads, lay.in_size, strict=True):
                m0 = max(0, -(-(lo - r) // s))  # first phase row inside the input
                i0 = m0 * s + r - lo
                count = len(range(i0, size, s))
                dst.append(slice(i0, size, s))
                src.append(slice(m0, m0 + count))
            np.copyto(gx[tuple(dst)], ph[tuple(src)])

def _polyphase_grad_input(lay: _Layout, phases: _Phases, wk_t: np.ndarray, gy: np.ndarray,
                          gx: np.ndarray) -> None:
    """Stride > 1 ``gx`` of one channel block into ``gx (cb, *in)``: ``wk_t (cb, K, M)``,
    ``gy (cb, M, *out)``. One batched matmul gives every tap's contribution in the wide layout of
    the phases (``(cb, K, wide)``, junk columns zero); each is added to its phase as one contiguous
    shifted 1-D slice; the phases are then interleaved into ``gx``. ``M == 1``: a broadcast product
    instead of the matmul (an inner dimension of 1 is slow in BLAS: measured 4x)."""
    cb, mult = gy.shape[:2]
    dtype = gx.dtype
    wide = workspace.buffer("dw-gy", (cb, mult, phases.wide_len), dtype)
    grid_w = wide.reshape((cb, mult) + phases.wide_rows)
    for axis in range(1, lay.geom.ndim):
        grid_w[(slice(None),) * (axis + 2) + (slice(lay.out_size[axis], None),)] = 0
    phases.valid(wide)[...] = gy
    cols = workspace.buffer("dw-cols", (cb, len(phases.taps), phases.wide_len), dtype)
    if mult == 1:
        np.multiply(wk_t, wide, out=cols)
    else:
        np.matmul(wk_t, wide, out=cols)
    flat = workspace.buffer("dw-phases", (cb, phases.count, phases.size + phases.slack), dtype)
    flat.fill(0)
    for t, (phase, shift) in enumerate(phases.taps):
        flat[:, phase, shift: shift + phases.wide_len] += cols[:, t]
    phases.scatter(flat, gx)


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (C*M, 1, *k)``: ``sum_{n, o} gy[n, c*M + j, o] * xp[n, c, o*s + k*d]``."""
    dtype = _check(x, gy)
    n, c = x.shape[:2]
    mult = gy.shape[1] // c
    lay = _Layout(x.shape, mult, geom, dtype, stacked=True)
    gyr = gy.reshape((n, c, mult) + lay.out_size)
    partial = np.zeros((len(lay.tasks), lay.block, mult, len(lay.offsets)), dtype)

    def work(index: int) -> None:
        image, c0 = lay.tasks[index]
        c1 = min(c, c0 + lay.block)
        cb = c1 - c0
        buf = lay.padded_block(x, image, c0, c1)
        out = partial[index, :cb]
        if lay.flat:
            wide = lay.widen(gyr[image, c0:c1])
            rows = _stacked_rows(lay, buf)  # (cb, R, Kr, wide)
            prod = workspace.buffer("dw-gw", (cb, lay.row_taps, mult, rows.shape[2]), dtype)
            np.matmul(wide[:, None], rows.swapaxes(-1, -2), out=prod)
            out.reshape(cb, mult, lay.row_taps, -1)[...] = prod.transpose(0, 2, 1, 3)
        else:
            cols = _strided_windows(lay, buf)  # (cb, K, prod(out))
            np.matmul(gyr[image, c0:c1].reshape(cb, mult, -1), cols.swapaxes(-1, -2), out=out)

    workspace.run(list(range(len(lay.tasks))), lambda _, task: work(task), lay.threads)
    gw = np.zeros((c, mult, len(lay.offsets)), dtype)
    for index, (_, c0) in enumerate(lay.tasks):
        c1 = min(c, c0 + lay.block)
        gw[c0:c1] += partial[index, : c1 - c0]
    return gw.reshape((c * mult, 1) + geom.kernel_size)
