"""GEMM (im2col) convolution: the general algorithm for all three passes, any N, any groups.

Shapes (``G`` groups, ``Cg = C / G``, ``Og = O / G``, ``K = prod(kernel_size)``,
``L = prod(output_size)``, ``T`` = the output positions of one tile):

* forward       ``x (N, C, *in)``, ``w (O, Cg, *k)``  ->  ``y (N, O, *out)``
  ``y[n, g, :, tile] = w[g] (Og, Cg*K) @ col[n, g, :, tile] (Cg*K, T)``
* grad_input    ``gy (N, O, *out)``, ``w``  ->  ``gx (N, C, *in)``:  ``col = w[g]^T @ gy[n, g]``
  then col2im, a loop over kernel offsets adding strided slices (never ``np.add.at``);
  for stride 1 it is instead the forward convolution of the zero-padded ``gy`` with the
  flipped, channel-swapped kernel (an im2col copy is cheaper than ``K`` strided adds).
* grad_weight   ``x``, ``gy``  ->  ``gw (O, Cg, *k)``:  ``gw[g] += gy[n, g, :, tile] @ col[n, g, :, tile]^T``
  accumulated per worker thread.

How it runs (the measurements behind each choice: ``docs/performance.md``):

* NCHW, one image at a time: ``x[n]`` viewed as ``(C, L)`` is already a GEMM operand and the
  GEMM writes straight into ``y[n]``; a 1x1 stride-1 unpadded convolution needs no copy at all.
* "Exact" im2col: the columns of one tile of output rows are copied from a strided window view
  of a zero-padded slab of input rows into a cached per-thread buffer of at most
  ``WORKSPACE_BYTES / threads`` bytes; large images are processed in row tiles, so a
  ``1x3x2048x2048`` image with a ``7x7`` kernel needs a few tens of MiB of scratch.
* Row shift: with stride 1 along the first spatial axis, im2col covers only the other axes of
  a slab of input rows, ``(Cg*K_rest, S*R)``; kernel row ``j`` of a tile of output rows is then
  a contiguous column block at offset ``j*d*R`` and the forward pass is ``k0`` GEMMs summed
  (grad_weight: ``k0`` GEMMs into per-row accumulators). The copy is ``k0`` times smaller.
* Strided convolutions use polyphase im2col: the slab is split into ``prod(stride)`` phases once,
  then every kernel offset is a unit-stride block copy.
* Threads: ``get_num_threads()`` Python worker threads share the work items (image, row tile or
  chunk of images), each with single-threaded BLAS and its own workspace; calls under
  :data:`WORKER_MIN_MACS` run on the calling thread, also on one BLAS thread (a multithreaded
  BLAS call leaves OpenBLAS's pool spinning into the next kernel). :data:`WORKER_THREADS` off or
  :func:`on_blas_threads` put ungrouped calls on the calling thread with multithreaded BLAS.
* Small images: :data:`BATCH_CHUNK_BYTES` chunks of whole images share one im2col and one GEMM.
* A stride-1 ``grad_input`` is the forward pass of ``gy`` with the flipped kernel, unless the
  layer widens the channels (:data:`COL2IM_CHANNEL_RATIO`): then GEMM + col2im.
* ``bias=`` (forward, grad_input) is added to each output tile while it is in cache.

``geom`` is a :class:`~npconv.geometry.ConvGeometry` with explicit zero padding. The passes are
exact adjoints: a transposed convolution is ``grad_input`` applied to its input.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backends import blas_threads, get_num_threads
from ..geometry import ConvGeometry
from . import workspace
from .algorithm import PASSES
from .common import add_to_channels, grad_input_as_forward, windows

__all__ = ["NAME", "supports", "recommended", "forward", "grad_input", "grad_weight", "on_blas_threads",
           "WORKSPACE_BYTES", "clear_workspace"]

NAME = "gemm"

#: Upper bound of the scratch (column) buffers of one call, shared by its worker threads.
WORKSPACE_BYTES = 64 * 2**20

#: Forward convolutions with stride 1 along the first spatial axis build im2col over the other
#: axes only and shift along the first (``kernel_size[0]`` GEMMs over a ``k0``-times smaller copy).
ROW_SHIFT = True
#: Run work items on ``get_num_threads()`` Python threads with single-threaded BLAS (True), or on
#: the calling thread with multithreaded BLAS (False): the workers also run the copies in parallel.
WORKER_THREADS = True
#: 1x1 stride-1 unpadded convolutions run as one batched matmul (multithreaded BLAS when the
#: call runs on BLAS threads; per-image matmuls on the worker threads otherwise).
DIRECT_BATCHED = True
#: Passes that take ``bias=`` and add it to each output tile while it is in cache (see plan).
BIAS_PASSES = ("forward", "grad_input")
#: Layers whose columns, padded input and output for two or more images fit in this many bytes
#: run one im2col and one GEMM per chunk of images (per-image calls cost more than they compute on
#: small images; a cache-sized chunk beat workspace-sized ones). 0 disables the chunked path.
BATCH_CHUNK_BYTES = 4 * 2**20
#: A stride-1 ``grad_input`` is the forward convolution of ``gy`` with the flipped kernel (an im2col
#: of ``gy``, ``O`` channels) unless the layer widens the channels by at least this factor
#: (``Cg * ratio <= Og``): then a GEMM into ``Cg*K`` columns and a col2im copies far less.
COL2IM_CHANNEL_RATIO = 4
#: 1-d convolutions keep the full im2col (the shifted version measured equal or slower).
ROW_SHIFT_MIN_NDIM = 2


def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """GEMM runs every pass of every convolution."""
    return pass_name in PASSES


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """GEMM is the planner's default."""
    return supports(pass_name, x_shape, w_shape, geom, dtype)


# -- workspaces and threads ----------------------------------------------------------------------
clear_workspace = workspace.clear


class _Mode(threading.local):
    blas = False  # a class default: reading a missing thread-local attribute costs an exception


_mode = _Mode()


@contextlib.contextmanager
def on_blas_threads() -> Iterator[None]:
    """Run this thread's ungrouped GEMM calls on the calling thread with multithreaded BLAS, whatever
    :data:`WORKER_THREADS` says. The planner uses it for a ``grad_weight`` whose sibling passes run
    on BLAS threads (Winograd): switching modes within one layer charges the worker threads for
    OpenBLAS's still-spinning pool."""
    previous = _mode.blas
    _mode.blas = True
    try:
        yield
    finally:
        _mode.blas = previous


#: Ungrouped calls with fewer multiply-adds than this run on the calling thread (BLAS threads):
#: their work items are too small to pay for the hand-off to the workers.
WORKER_MIN_MACS = 2**24


def _on_blas_threads() -> bool:
    return not WORKER_THREADS or _mode.blas


def _workers(lay: _Layout) -> int:
    """Python worker threads per call: ``get_num_threads()`` for grouped convolutions (many small
    GEMMs per item, where multithreaded BLAS only adds synchronisation) and, unless the call runs
    on BLAS threads (:data:`WORKER_THREADS` off or inside :func:`on_blas_threads`), for calls of at
    least :data:`WORKER_MIN_MACS`; else 1."""
    macs = lay.n * lay.o * lay.ck * lay.length
    workers = lay.g > 1 or (not _on_blas_threads() and macs >= WORKER_MIN_MACS)
    return get_num_threads() if workers else 1


def _blas(threads: int) -> int:
    """BLAS threads of a call on ``threads`` workers: all of ``get_num_threads()`` only when one
    worker runs a call meant for BLAS threads; small calls stay single-threaded (no spinning pool)."""
    return get_num_threads() if threads == 1 and _on_blas_threads() else 1


# -- geometry helpers ----------------------------------------------------------------------------
class _Layout:
    """Sizes of one convolution shared by the passes."""

    def __init__(self, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                 out_size: Sequence[int], dtype: np.dtype) -> None:
        self.geom = geom
        self.n, self.c = int(x_shape[0]), int(x_shape[1])
        self.in_size = tuple(int(v) for v in x_shape[2:])
        self.out_size = tuple(int(v) for v in out_size)
        self.o = int(w_shape[0])
        self.g = geom.groups
        self.cg, self.og = self.c // self.g, self.o // self.g
        self.k = math.prod(geom.kernel_size)
        self.ck = self.cg * self.k
        self.length = math.prod(self.out_size)
        self.row = math.prod(self.out_size[1:])  # output positions per row of the first axis
        self.pads = geom.pads(self.in_size)
        self.dtype = dtype
        self.padded = any(lo or hi for lo, hi in self.pads)
        self.strided = any(s > 1 and k > 1 for s, k in zip(geom.stride, geom.kernel_size, strict=True))
        padded_volume = math.prod(geom.padded_size(self.in_size))
        #: im2col straight from the unpadded input, tap by tap (no padded copy): when the padding
        #: would more than double the input (a padded slab grows with the padding, the reads don't)
        self.implicit_padding = self.padded and padded_volume > 2 * math.prod(self.in_size)
        self.k_rest = math.prod(geom.kernel_size[1:])
        # the row-shift columns hold extent[0] - 1 halo rows beyond a tile: only when they are small
        halo = (geom.extent[0] - 1) * self.c * self.k_rest * math.prod(self.out_size[1:]) * dtype.itemsize
        self.row_shift = (ROW_SHIFT and geom.ndim >= ROW_SHIFT_MIN_NDIM and geom.stride[0] == 1
                          and geom.kernel_size[0] > 1 and not self.strided and not self.implicit_padding
                          and halo <= WORKSPACE_BYTES // 4)
        self.direct = (all(k == 1 for k in geom.kernel_size) and all(s == 1 for s in geom.stride)
                       and not self.padded)

    def tiles(self, threads: int, bytes_per_row: int) -> list[tuple[int, int, int]]:
        """Work items ``(image, first row, end row)`` within the per-thread workspace share."""
        rows_total = self.out_size[0]
        # columns take 3/4 of the workspace: slabs, phases and partial products share the rest
        cap = max(1, WORKSPACE_BYTES * 3 // 4 // max(1, min(threads, self.n * rows_total)))
        rows = max(1, min(rows_total, cap // max(1, bytes_per_row)))
        if self.n * -(-rows_total // rows) < threads:  # split single images for the threads
            rows = max(1, -(-rows_total // -(-threads // self.n)))
        return [(i, r, min(rows_total, r + rows)) for i in range(self.n) for r in range(0, rows_total, rows)]

    def image_chunks(self, threads: int) -> list[tuple[int, int]] | None:
        """Chunks ``(first, end)`` of whole images for the batched small-image path (columns, padded
        copies and GEMM output of a chunk within :data:`BATCH_CHUNK_BYTES` and the per-thread
        workspace share), or None when the convolution needs no columns (1x1) or a chunk would
        hold fewer than two images."""
        if self.direct or self.n < 2:
            return None
        padded = math.prod(self.geom.padded_size(self.in_size))
        per_image = self.dtype.itemsize * (self.c * self.k * self.length + self.o * self.length
                                           + self.c * padded)
        per = min(WORKSPACE_BYTES // max(1, threads), BATCH_CHUNK_BYTES) // max(1, per_image)
        per = min(per, -(-self.n // threads))  # a chunk for every thread
        if per < 2:
            return None
        return [(i, min(self.n, i + per)) for i in range(0, self.n, per)]

    def batch_columns(self, x: np.ndarray, first: int, end: int) -> np.ndarray:
        """im2col of images ``[first, end)`` of ``x (N, C, *in)``: ``(G, Cg*K, B*T)``, column
        ``b*T + t`` for image ``first + b`` and output position ``t`` (a thread buffer)."""
        geom, b = self.geom, end - first
        if self.padded:
            xp = workspace.buffer("batch-slab", (b, self.c) + geom.padded_size(self.in_size), self.dtype)
            xp.fill(0)
            xp[(slice(None), slice(None)) + geom.interior(self.in_size)] = x[first:end]
        else:
            xp = x[first:end]
        view = windows(xp, geom, self.out_size)  # (B, C, *out, *k)
        nd = geom.ndim
        cols = workspace.buffer("batch-cols", (self.c,) + geom.kernel_size + (b,) + self.out_size, self.dtype)
        np.copyto(cols, view.transpose((1,) + tuple(range(2 + nd, 2 + 2 * nd)) + (0,)
                                       + tuple(range(2, 2 + nd))))
        return cols.reshape(self.g, self.ck, b * self.length)

    def columns(self, x_n: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """im2col of output rows ``[r0, r1)`` of image ``x_n (C, *in)``: ``(G, Cg*K, T)``."""
        if self.direct:
            return x_n.reshape(self.g, self.cg, self.length)[:, :, r0 * self.row:r1 * self.row]
        geom = self.geom
        s0, e0 = geom.stride[0], geom.extent[0]
        start, stop = r0 * s0, (r1 - 1) * s0 + e0  # padded input rows the tile reads
        slab = None if self.implicit_padding else self._padded_slab(x_n, start, stop)
        out = (r1 - r0,) + self.out_size[1:]
        nd = geom.ndim
        cols = workspace.buffer("cols", (self.c,) + geom.kernel_size + out, self.dtype)
        if self.implicit_padding:
            self._tap_columns(x_n, r0, out, cols)
        elif self.strided:
            self._strided_columns(slab, out, cols)
        else:
            view = windows(slab, geom, out, lead=1)  # (C, *out, *k)
            np.copyto(cols, view.transpose((0,) + tuple(range(1 + nd, 1 + 2 * nd)) + tuple(range(1, 1 + nd))))
        return cols.reshape(self.g, self.ck, -1)

    def row_columns(self, x_n: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """im2col over the trailing axes only, for padded input rows ``[r0, r1 - 1 + extent[0])``:
        ``(G, Cg*K_rest, S*R)``; kernel row ``j`` of output rows ``[r0, r1)`` reads the contiguous
        column block ``[j*d*R, (j*d + r1 - r0)*R)`` (``R`` output positions per row)."""
        geom = self.geom
        stop = r1 - 1 + geom.extent[0]
        slab = self._padded_slab(x_n, r0, stop)
        out_rest = self.out_size[1:]
        k_rest = geom.kernel_size[1:]
        st = slab.strides
        view = as_strided(slab, (self.c, slab.shape[1]) + out_rest + k_rest,
                          st[:2] + tuple(a * s for a, s in zip(st[2:], geom.stride[1:], strict=True))
                          + tuple(a * d for a, d in zip(st[2:], geom.dilation[1:], strict=True)),
                          writeable=False)
        nd = geom.ndim
        cols = workspace.buffer("cols", (self.c,) + k_rest + (slab.shape[1],) + out_rest, self.dtype)
        np.copyto(cols, view.transpose((0,) + tuple(range(1 + nd, 2 * nd)) + tuple(range(1, 1 + nd))))
        return cols.reshape(self.g, self.cg * self.k_rest, -1)

    def _tap_columns(self, x_n: np.ndarray, r0: int, out: tuple[int, ...], cols: np.ndarray) -> None:
        """im2col of output rows from ``r0`` (``out`` positions) without padding ``x_n``: per kernel
        offset, the outputs whose read lies inside the input copy a strided slice of it
        (:meth:`ConvGeometry.tap_reads`), the rest are zeros. Cost and memory follow the columns,
        not the padding or the stride."""
        geom = self.geom
        cols.fill(0)
        first = (r0,) + (0,) * (geom.ndim - 1)
        for k in itertools.product(*(range(k) for k in geom.kernel_size)):
            reads = geom.tap_reads(k, self.in_size, out, first)
            if reads is not None:
                outputs, inputs = reads
                cols[(slice(None),) + k + outputs] = x_n[(slice(None),) + inputs]

    def _strided_columns(self, slab: np.ndarray, out: tuple[int, ...], cols: np.ndarray) -> None:
        """Polyphase im2col: split ``slab`` into the stride phases that kernel taps read (at most
        ``kernel_size`` of the ``stride`` per axis, so a huge stride costs nothing more), then every
        kernel offset is a contiguous (unit-stride) block copy.

        ``phases[c, *i, *q] = slab[c, *(q * s + r_i)]`` for the ``i``-th reached residue ``r_i``;
        offset ``k`` (dilation ``d``) of output ``o`` reads ``o * s + k * d``, i.e. residue
        ``(k * d) % s`` at ``q = o + (k * d) // s``.
        """
        geom = self.geom
        stride = geom.stride
        residues = [sorted({k * d % s for k in range(kk)})
                    for kk, d, s in zip(geom.kernel_size, geom.dilation, stride, strict=True)]
        slot = [{r: i for i, r in enumerate(rs)} for rs in residues]
        sizes = tuple(-(-p // s) for p, s in zip(slab.shape[1:], stride, strict=True))
        phases = workspace.buffer("phases", (self.c,) + tuple(map(len, residues)) + sizes, self.dtype)
        for index in itertools.product(*(range(len(rs)) for rs in residues)):
            r = [rs[i] for rs, i in zip(residues, index, strict=True)]
            source = slab[(slice(None),) + tuple(slice(ri, None, s) for ri, s in zip(r, stride, strict=True))]
            phases[(slice(None),) + index + tuple(slice(0, n) for n in source.shape[1:])] = source
        for k in itertools.product(*(range(k) for k in geom.kernel_size)):
            shifts = [ki * d for ki, d in zip(k, geom.dilation, strict=True)]
            index = ((slice(None),) + tuple(sl[t % s] for t, s, sl in zip(shifts, stride, slot, strict=True))
                     + tuple(slice(t // s, t // s + o) for t, s, o in zip(shifts, stride, out, strict=True)))
            cols[(slice(None),) + k] = phases[index]

    def _padded_slab(self, x_n: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of the zero-padded image, a view when no padding is needed."""
        lo0, _ = self.pads[0]
        n0 = self.in_size[0]
        a = max(0, start - lo0)
        b = max(a, min(n0, stop - lo0))  # input rows [a, b) inside the slab (empty: all padding)
        if not self.padded:
            return x_n[:, a:b]
        shape = (self.c, stop - start) + self.geom.padded_size(self.in_size)[1:]
        slab = workspace.buffer("slab", shape, self.dtype)
        inner = [(a + lo0 - start, b + lo0 - start)] + [(lo, lo + n) for n, (lo, _) in
                                                         zip(self.in_size[1:], self.pads[1:], strict=True)]
        for axis, (p, q) in enumerate(inner, start=1):
            before = (slice(None),) * axis
            if p > 0:
                slab[before + (slice(0, p),)] = 0
            if q < slab.shape[axis]:
                slab[before + (slice(q, None),)] = 0
        if b > a:
            slab[(slice(None),) + tuple(slice(p, q) for p, q in inner)] = x_n[:, a:b]
        return slab


def _prepare(*arrays: np.ndarray) -> tuple[np.dtype, list[np.ndarray]]:
    dtype = np.result_type(*arrays)
    return dtype, [np.asarray(a, dtype=dtype) for a in arrays]


# -- the three passes ----------------------------------------------------------------------------
def _channel_bias(bias: np.ndarray | None, groups: int) -> np.ndarray | None:
    """``bias (G*P,)`` as ``(G, P, 1)``, broadcasting over a ``(G, P, T)`` tile."""
    return None if bias is None else np.asarray(bias).reshape(groups, -1, 1)


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None) -> np.ndarray:
    """Cross-correlation ``y = conv(x, w) (+ bias[o])`` with zero padding from ``geom``."""
    dtype, (x, w) = _prepare(x, w)
    lay = _Layout(x.shape, w.shape, geom, geom.output_size(x.shape[2:]), dtype)
    y = np.empty((lay.n, lay.o) + lay.out_size, dtype=dtype)
    if y.size == 0:
        return y
    bias3 = _channel_bias(bias, lay.g)
    if lay.ck == 0:
        y.fill(0)
        add_to_channels(y.reshape(lay.n, lay.g, lay.og, -1), bias3)
        return y
    wm = np.ascontiguousarray(w.reshape(lay.g, lay.og, lay.ck))
    threads = _workers(lay)
    if lay.direct and DIRECT_BATCHED and threads == 1:  # one batched GEMM, nothing to copy
        with blas_threads(_blas(threads)):
            np.matmul(wm, x.reshape(lay.n, lay.g, lay.cg, lay.length),
                      out=y.reshape(lay.n, lay.g, lay.og, lay.length))
        add_to_channels(y.reshape(lay.n, lay.g, lay.og, lay.length), bias3)
        return y
    chunks = lay.image_chunks(threads)
    if chunks is not None:  # small images: one GEMM per chunk of images
        def batch(_: int, chunk: tuple[int, int]) -> None:
            first, end = chunk
            b = end - first
            product = workspace.buffer("batch-out", (lay.g, lay.og, b * lay.length), dtype)
            np.matmul(wm, lay.batch_columns(x, first, end), out=product)
            out = y[first:end].reshape(b, lay.g, lay.og, lay.length)
            np.copyto(out, product.reshape(lay.g, lay.og, b, lay.length).transpose(2, 0, 1, 3))
            add_to_channels(out, bias3)

        workspace.run(chunks, batch, threads, _blas(threads))
        return y
    per_row = 0 if lay.direct else lay.c * lay.k * lay.row * dtype.itemsize

    if lay.row_shift:  # per kernel row j: (G, Og, Cg*K_rest)
        k0, d0 = geom.kernel_size[0], geom.dilation[0]
        w_rows = np.ascontiguousarray(
            w.reshape(lay.g, lay.og, lay.cg, k0, lay.k_rest).transpose(3, 0, 1, 2, 4)
        ).reshape(k0, lay.g, lay.og, lay.cg * lay.k_rest)
        per_row = lay.c * lay.k_rest * lay.row * dtype.itemsize * 2

    def work(_: int, item: tuple[int, int, int]) -> None:
        i, r0, r1 = item
        out = y[i].reshape(lay.g, lay.og, lay.length)[:, :, r0 * lay.row:r1 * lay.row]
        if not lay.row_shift:
            np.matmul(wm, lay.columns(x[i], r0, r1), out=out)
            add_to_channels(out, bias3)
            return
        cols = lay.row_columns(x[i], r0, r1)
        t = (r1 - r0) * lay.row
        partial = workspace.buffer("partial", (lay.g, lay.og, t), dtype)
        for j in range(k0):
            block = cols[:, :, j * d0 * lay.row:j * d0 * lay.row + t]
            if j == 0:
                np.matmul(w_rows[j], block, out=out)
            else:
                np.matmul(w_rows[j], block, out=partial)
                out += partial
        add_to_channels(out, bias3)

    workspace.run(lay.tiles(threads, per_row), work, threads, _blas(threads))
    return y


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: tuple[int, ...],
               bias: np.ndarray | None = None) -> np.ndarray:
    """Adjoint of :func:`forward` in ``x``: ``gx = conv^T(gy, w) (+ bias[c])`` of spatial size
    ``input_size`` (``bias``: a transposed convolution's, one per channel of ``gx``)."""
    dtype, (gy, w) = _prepare(gy, w)
    input_size = tuple(int(v) for v in input_size)
    n = gy.shape[0]
    c = w.shape[1] * geom.groups
    lay = _Layout((n, c) + input_size, w.shape, geom, gy.shape[2:], dtype)
    if n == 0 or lay.c == 0:
        return np.zeros((n, c) + input_size, dtype)
    widening = lay.cg * COL2IM_CHANNEL_RATIO <= lay.og
    if all(s == 1 for s in geom.stride) and not lay.direct and not widening:
        return grad_input_as_forward(forward, gy, w, geom, input_size, bias)
    gx = np.empty((n, c) + input_size, dtype=dtype)
    bias3 = _channel_bias(bias, lay.g)
    wt = np.ascontiguousarray(w.reshape(lay.g, lay.og, lay.ck).transpose(0, 2, 1))  # (G, Cg*K, Og)
    threads = _workers(lay)
    if lay.direct and DIRECT_BATCHED and threads == 1:
        with blas_threads(_blas(threads)):
            np.matmul(wt, gy.reshape(n, lay.g, lay.og, lay.length), out=gx.reshape(n, lay.g, lay.cg, -1))
        add_to_channels(gx.reshape(n, lay.g, lay.cg, -1), bias3)
        return gx
    if lay.direct:
        def direct(_: int, item: tuple[int, int, int]) -> None:
            i, r0, r1 = item
            gy_i = gy[i].reshape(lay.g, lay.og, lay.length)[:, :, r0 * lay.row:r1 * lay.row]
            out = gx[i].reshape(lay.g, lay.cg, lay.length)[:, :, r0 * lay.row:r1 * lay.row]
            np.matmul(wt, gy_i, out=out)
            add_to_channels(out, bias3)

        workspace.run(lay.tiles(threads, 0), direct, threads, _blas(threads))
        return gx
    per_row = lay.c * lay.k * lay.row * dtype.itemsize
    rows = lay.tiles(1, per_row)  # tiles of one image; images are the parallel work items
    row_tiles = [(r0, r1) for i, r0, r1 in rows if i == 0]
    offsets = list(itertools.product(*(range(k) for k in geom.kernel_size)))

    def work(_: int, i: int) -> None:
        target = gx[i]
        target.fill(0)
        gy_i = gy[i].reshape(lay.g, lay.og, lay.length)
        for r0, r1 in row_tiles:
            cols = workspace.buffer("cols", (lay.g, lay.ck, (r1 - r0) * lay.row), dtype)
            np.matmul(wt, gy_i[:, :, r0 * lay.row:r1 * lay.row], out=cols)
            cols = cols.reshape((c,) + geom.kernel_size + (r1 - r0,) + lay.out_size[1:])
            tile_out = (r1 - r0,) + lay.out_size[1:]
            first = (r0,) + (0,) * (geom.ndim - 1)
            for offset in offsets:  # col2im onto the input only: reads of the padding are dropped
                reads = geom.tap_reads(offset, input_size, tile_out, first)
                if reads is not None:
                    outputs, inputs = reads
                    target[(slice(None),) + inputs] += cols[(slice(None),) + offset + outputs]
        add_to_channels(gx[i].reshape(lay.g, lay.cg, -1), bias3)

    workspace.run(list(range(n)), work, threads, _blas(threads))
    return gx


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Gradient in ``w``: ``gw[g] = sum_n gy[n, g] @ col(x)[n, g]^T``, shape ``(O, Cg, *k)``."""
    dtype, (x, gy) = _prepare(x, gy)
    lay = _Layout(x.shape, (gy.shape[1], x.shape[1] // geom.groups) + geom.kernel_size, geom,
                  gy.shape[2:], dtype)
    if lay.n == 0 or lay.ck == 0 or lay.length == 0:
        return np.zeros((lay.o, lay.cg) + geom.kernel_size, dtype)
    # each worker's accumulator and product temporary (a gw each) within the memory bound's share of the
    # operands (its scratch term left to the columns)
    gw_bytes = lay.o * lay.ck * dtype.itemsize
    share = workspace.memory_bound(x.nbytes, gy.nbytes, gw_bytes) - workspace.SCRATCH_BYTES - gw_bytes
    copies = share // (2 * gw_bytes)
    threads = max(1, min(_workers(lay), lay.n * lay.out_size[0], copies))
    per_row = 0 if lay.direct else lay.c * lay.k * lay.row * dtype.itemsize
    items = lay.tiles(threads, per_row)
    threads = min(threads, len(items))
    if lay.direct and DIRECT_BATCHED and threads == 1:  # sum_n gy[n] @ x[n]^T, batched GEMMs
        with blas_threads(_blas(threads)):
            gw = np.matmul(gy.reshape(lay.n, lay.g, lay.og, lay.length),
                           x.reshape(lay.n, lay.g, lay.cg, lay.length).transpose(0, 1, 3, 2)).sum(axis=0)
        return gw.reshape((lay.o, lay.cg) + geom.kernel_size)
    chunks = lay.image_chunks(threads)
    if chunks is not None:  # small images: one GEMM per chunk of images
        threads = min(threads, len(chunks))
        sums = [np.zeros((lay.g, lay.og, lay.ck), dtype) for _ in range(threads)]

        def batch(worker: int, chunk: tuple[int, int]) -> None:
            first, end = chunk
            b = end - first
            gy_c = workspace.buffer("batch-gy", (lay.g, lay.og, b, lay.length), dtype)
            np.copyto(gy_c, gy[first:end].reshape(b, lay.g, lay.og, lay.length).transpose(1, 2, 0, 3))
            cols = lay.batch_columns(x, first, end)
            sums[worker] += np.matmul(gy_c.reshape(lay.g, lay.og, -1), cols.transpose(0, 2, 1))

        workspace.run(chunks, batch, threads, _blas(threads))
        for partial in sums[1:]:
            sums[0] += partial
        return sums[0].reshape((lay.o, lay.cg) + geom.kernel_size)
    k0, d0 = geom.kernel_size[0], geom.dilation[0]
    if lay.row_shift:  # one accumulator per kernel row j: (k0, G, Og, Cg*K_rest)
        items = lay.tiles(threads, per_row // lay.k * lay.k_rest * 2)
        threads = min(threads, len(items))
        accumulators = [np.zeros((k0, lay.g, lay.og, lay.cg * lay.k_rest), dtype) for _ in range(threads)]
    else:
        accumulators = [np.zeros((lay.g, lay.og, lay.ck), dtype) for _ in range(threads)]
    def work(worker: int, item: tuple[int, int, int]) -> None:
        i, r0, r1 = item
        gy_t = gy[i].reshape(lay.g, lay.og, lay.length)[:, :, r0 * lay.row:r1 * lay.row]
        acc = accumulators[worker]
        if lay.row_shift:
            cols = lay.row_columns(x[i], r0, r1)
            t = (r1 - r0) * lay.row
            for j in range(k0):
                block = cols[:, :, j * d0 * lay.row:j * d0 * lay.row + t]
                acc[j] += np.matmul(gy_t, block.transpose(0, 2, 1))
            return
        cols = lay.columns(x[i], r0, r1)  # (G, Cg*K, T)
        # a GEMM into a small temporary plus an add measured faster than SciPy's ?gemm(beta=1)
        acc += np.matmul(gy_t, cols.transpose(0, 2, 1))

    workspace.run(items, work, threads, _blas(threads))
    total = accumulators[0]
    for acc in accumulators[1:]:
        total += acc
    if lay.row_shift:  # (k0, G, Og, Cg, K_rest) -> (G, Og, Cg, k0, K_rest)
        total = total.reshape(k0, lay.g, lay.og, lay.cg, lay.k_rest).transpose(1, 2, 3, 0, 4)
        total = np.ascontiguousarray(total)
    return total.reshape((lay.o, lay.cg) + geom.kernel_size)
