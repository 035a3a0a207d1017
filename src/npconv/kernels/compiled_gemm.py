"""GEMM (im2col) convolution on the compiled core: the compiled implementation of the ``"gemm"``
algorithm (preferred by the registry; ``NPCONV_PURE=1`` skips it, leaving :mod:`npconv.kernels.gemm`).
1-d, 2-d and 3-d, any groups, stride, dilation and zero padding, float32/float64; other dtypes and
sizes beyond the C kernel's limits run on the NumPy implementation.

The C tile pipeline (``src/npconv/csrc/im2col.h``) takes one work item at a time (a band of output
positions of one image, a chunk of small whole images, or, for grad_input, some input channels of
one image) and, per group:

* forward: packs the item's im2col columns straight from ``x`` (padding, stride and dilation
  resolved while packing: no padded copy) into a cache-sized per-thread scratch, multiplies with
  SciPy's sgemm/dgemm (``csrc/blas.h``) straight into ``y`` and applies the epilogue (bias, and
  ReLU/ReLU6/Hardtanh of an ``epilogue=``) while the tile is in cache;
* grad_weight: the same packing, ``gw[g] += gy_tile @ cols^T`` into a per-worker accumulator
  (fixed assignment of items to workers: the same sums in the same order on every run);
* grad_input: ``cols = W[g]^T @ gy_tile`` and a compiled col2im adding the columns into ``gx``
  (items own disjoint channels of one image); for stride 1 (unless the layer widens the channels,
  as in :mod:`npconv.kernels.gemm`) it is the forward pass of ``gy`` with the adjoint kernel.

Threads, BLAS threads and the small-call rule are the NumPy implementation's (:mod:`npconv.kernels.gemm`:
``WORKER_MIN_MACS``, ``WORKER_THREADS``, :func:`on_blas_threads`). Scratch is at most one item's columns
per thread (:data:`TILE_BYTES`, never more than ``gemm.WORKSPACE_BYTES`` per call), so the memory bound
holds for every geometry (padding and stride cost no memory).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import blas as _blas
from . import gemm, pointwise, workspace
from .blas import gemm_routines
from .common import (
    Epilogue,
    PreparedForward,
    ScratchSource,
    bound_run,
    compiled_epilogue,
    fused_residual_codes,
    grad_input_as_forward,
)
from .pointwise import Activation, epilogue_

__all__ = ["NAME", "COMPILED", "BIAS_PASSES", "EPILOGUE_PASSES", "supports", "recommended", "on_blas_threads",
           "forward", "grad_input", "grad_weight", "TILE_BYTES", "CHUNK_BYTES", "CHUNK_MIN_TAPS",
           "MIN_BAND", "ROW_SHIFT", "SHIFT_TILE_BYTES", "SHIFT_HALO_RATIO", "IMPLICIT", "IMPLICIT_SLAB_BYTES",
           "IMPLICIT_MAX_GRID", "IMPLICIT_GW_MIN_POSITIONS", "IMPLICIT_LANES", "IMPLICIT_MIN_POSITIONS",
           "IMPLICIT_MIN_POSITIONS_BATCH", "GI_IMAGE_COLUMNS", "GI_CHANNEL_SPLIT",
           "implicit_runs"]

if not backends.core.available:  # the registry records the reason; npconv.backends warned at import
    raise ModuleNotFoundError(f"npconv._core, the compiled core, is not in use ({backends.core.reason})",
                              name=__name__)

NAME = "gemm"
COMPILED = True
#: Passes that take ``bias=`` (or ``epilogue=``: bias and activation) and apply it in the kernel's
#: epilogue (see plan).
BIAS_PASSES = EPILOGUE_PASSES = ("forward", "grad_input")
#: Ungrouped calls with at least this many multiply-adds run on the worker threads (also when
#: ``gemm.WORKER_MIN_MACS``, the NumPy engine's threshold, is lower). The workers take a call as a
#: prepared job without the GIL (6-8 us, against 25-35 us for a Python job), so smaller calls than
#: the NumPy engine's pay. Two threads, us, MobileNetV2's 1x1 layers alone, 6 * 2**20 vs 3 * 2**20:
#: 64->384 on 14x14 (4.8 M) 86 vs 68, 144->32 on 28x28 (3.6 M) 65 vs 57; 192->64 on 14x14 (2.4 M)
#: 45 on one thread, 51 on two (docs/performance.md).
WORKER_MIN_MACS = 3 * 2**20
#: Target bytes of one work item's columns (one thread's scratch): about the L2 size. One thread,
#: ms at 256 KiB / 1 / 2 / 16 MiB: stem 16.4 / 15.1 / 15.1 / 19.3, strided 8.0 / 6.8 / 6.4 / 6.7,
#: audio 17.1 / 14.8 / 14.0 / 15.5 (loaded machine, docs/performance.md).
TILE_BYTES = 2 << 20
#: Fewest output positions per gemm (narrower products run far below the BLAS's speed), unless the
#: per-call workspace (``gemm.WORKSPACE_BYTES``) does not hold that many columns.
MIN_BAND = 1024
#: Forward and grad_weight with >= 2 spatial axes and stride 1 along the first pack the columns of
#: the trailing axes once per slab of input rows; kernel row ``j`` is then a column block of it
#: (``kernel_size[0]`` gemms over a ``kernel_size[0]``-times smaller packing).
ROW_SHIFT = True
#: A row-shift band holds at least this many times the kernel's halo rows (``(k0 - 1) * dilation``),
#: so that repacking the halo costs at most 1 / ratio of the packing (3x3x3 on 32^3: one-row bands,
#: 3x repacking, 44 ms forward; whole-image bands 39 ms, one thread, loaded machine).
SHIFT_HALO_RATIO = 4
#: Target bytes of a row-shift slab: larger than :data:`TILE_BYTES` (the slab is read by ``k0``
#: gemms; bands of whole 56x56 images measured up to 1.15x faster than 1 MiB slabs, loaded machine).
SHIFT_TILE_BYTES = 8 << 20
#: The row shift rearranges the weight (or grad_weight) into ``(k0, O, Cg*K_rest)`` on every call: a
#: strided copy of ``O * Cg * K`` values. It runs only where the packing it saves, ``N * positions *
#: (k0 - 1) / k0`` columns of ``Cg * K`` values, is at least this many times the weight's ``Og`` rows
#: (CPU ms, one thread, float32, shift vs none: 512x7x7 batch 1 4.80 vs 1.89, batch 8 16.9 vs 14.9;
#: 256x14x14 float64 batch 1 4.23 vs 3.63, batch 8 26.0 vs 27.8; 13x13 on 4x64x32x32 36.5 vs 56.6).
SHIFT_MIN_SAVING = 1.0
#: Images whose columns and products together take at most this many bytes per chunk share one gemm
#: (chunks as many as a multiple of the threads). Two threads, batch 8, ms, 1 vs 4 MiB: 256->512
#: 14x14/2 4.18 vs 3.61, 128->256 1x1/2 0.38 vs 0.30, ConvTranspose 4x4/2 2.60 vs 2.30; with the
#: 7x7 images chunked (IMPLICIT_MIN_POSITIONS) 512x7x7 6.29 vs 5.99 (one thread 13.1 vs 11.8).
CHUNK_BYTES = 4 << 20
#: Only images under a kernel of at least this many taps are chunked: a 1x1 image is its own column
#: matrix, which a chunk copied. Two threads, AVX-512, us, per image vs chunked, forward /
#: grad_weight: 1x1 384->64 14x14 batch 8 214 vs 405 / 328 vs 513, 960->160 7x7 279 vs 389 / 349 vs
#: 448, 256->1024 14x14 2279 vs 2553 / 2493 vs 2869; 3x3 layers of small images gain from the chunks
#: (256x7x7 batch 8 1801 vs 1338 / 1909 vs 1390; docs/performance.md).
CHUNK_MIN_TAPS = 2
#: Stride-1 float32 forward and grad_weight passes on the vector builds run as an implicit GEMM (no
#: im2col: the columns are runs of a zero-padded input slab, read by npconv's gemm where they are).
IMPLICIT = True
#: The implicit forward puts the output channels on the vector lanes (geometry ``implicit`` 2; the C
#: kernel takes it where a group has at most 384 output channels at 64-byte vectors, in passes of up
#: to 48, 256 at 32-byte in passes of up to 16, and at least 128 column rows, else it packs as
#: before): it broadcasts the input where it lies instead of packing every column row for only M / 8
#: register tiles. Two threads, ms, packed vs lanes: 3-d 32->32 3x3x3 32^3 batch 2 10.4-11.0 vs
#: 8.9-9.6, 32->32 3x3 dilated 56x56 batch 8 1.37-1.48 vs 1.22-1.26, 16->16 5x5 1.08 vs 0.94; one
#: thread, 64-256 output channels 3-12% (docs/performance.md).
IMPLICIT_LANES = True
#: Target bytes of an implicit-GEMM item's padded input slab.
IMPLICIT_SLAB_BYTES = 1 << 20
#: The implicit GEMM's slab holds the padded grid, at most this many positions per output (it
#: computes outputs only; wider grids mean short runs to pack and a larger slab). CPU ms, one
#: thread, implicit vs im2col: 13x13 on 4x64x32x32 (1.375) forward 27.7 vs 29.6, grad_weight 29.4
#: vs 39.3; 7x7 images, 3x3 (1.29) 11.7 vs 12.2; 12x12, 7x7 (1.5) 9.5 vs 9.9 (docs/performance.md).
IMPLICIT_MAX_GRID = 1.6
#: Fewest output positions per image for an implicit forward (an item is one image's lines: 4x4
#: images made 16-column products, 4.41 vs 4.05 ms on im2col's chunks of images; 2x2: 1.32 vs 0.45;
#: 7x7, 64 columns computed for 49: 8x512x7x7 6.29 vs 5.99 ms on two threads, 13.1 vs 11.8 on one).
IMPLICIT_MIN_POSITIONS = 64
#: The same for a batch of several images (a single one splits its output channels across the workers
#: below CHANNEL_SPLIT_MAX_POSITIONS instead). Two threads, ms, implicit / chunks of im2col images
#: (Xeon family 6 model 207, alternated): 8x256x7x7 3x3 3.43 / 3.73, 8x128x7x7 1.07 / 1.30, 4x256x7x7
#: 1.74 / 1.93, 2x512x7x7 3.03 / 3.34, 8x64x6x6 0.36 / 0.43; 4x4 images lost (8x512x4x4 5.54 / 4.92).
IMPLICIT_MIN_POSITIONS_BATCH = 32
#: Fewest input positions (images x positions per image) for a stride-1 grad_input as the adjoint's
#: forward: below, the flipped copy of the weight it needs costs more than col2im saves (one thread,
#: 3x3: 8x512x4x4 7.3 vs 5.9 ms, 1x512x7x7 4.9 vs 2.0, 1x256x14x14 1.7 vs 1.6; 8x128x14x14 3.0 vs 3.6).
ADJOINT_MIN_POSITIONS = 1024
#: A grad_input on GEMM + col2im over images of fewer output positions than this takes chunks of whole
#: images per product (their ``gy`` side by side): one image's product would be this thin (4x4 images:
#: 16 columns of the 48-wide register tile).
GI_IMAGE_COLUMNS = 192
#: An ungrouped grad_input of a batch whose weight has at least this many columns (Cg*K) per column of
#: the batch (N * output positions) splits the input channels across the workers, every worker taking
#: all the images' ``gy`` side by side (each copies all of it), instead of the images (each reading all
#: of the weight). Two threads, batch 8, us, by images vs by channels (Cg*K per batch column): 512x4x4
#: 3x3 5169-5362 vs 4214-4639 (36), 256->512 7x7/2 1842-2078 vs 1506-1825 (18), 256x7x7 3041-3807 vs
#: 2435-3605 (5.9), 128->256 14x14/2 1347-1632 vs 1270-1554 (2.9), 256->512 1x1/2 230-253 vs 225-226
#: (2.0); 64x8x8 3x3 344-438 vs 353-505 (1.1), 128->256 1x1/2 at 14 208-229 vs 223-277 (0.33).
GI_CHANNEL_SPLIT = 2.0
#: An ungrouped grad_weight with at least this many output channels per output position of the batch
#: splits the output channels across the workers (each packs all columns) instead of the images (each
#: with a whole (O, CK) accumulator to zero and sum). Two threads, batch 8, ms, by images vs by
#: channels (channels / positions): 512x4x4 3x3 3.56 vs 2.86 (4.0), 256->512 7x7/2 1.29 vs 1.29
#: (4.0), 512x7x7 6.65 vs 6.81 (1.3), 256x7x7 1.62 vs 1.93 (0.65).
GW_CHANNEL_SPLIT = 2.0
#: Fewest output positions per image for an implicit grad_weight (its register tiles run over an
#: item's positions and are added transposed into gw; CPU ms vs im2col + BLAS, one thread: 3-d 3x3x3
#: 18.7 vs 43.2, 64x56 9.9 vs 12.7, 128x28 9.9 vs 11.2, 256x14 (196 positions) 12.2 vs 10.1).
IMPLICIT_GW_MIN_POSITIONS = 512
#: A single image's forward on several workers splits its output channels (rows of the weight, whole
#: register tiles) instead of its positions where it has at most this many positions: each worker
#: reads its part of the weight instead of all of it and takes every column of its rows (7x7: 49 = 48
#: in tiles + 1 dot product; halves of 25 and 24 columns took two vectors each). Two threads, us, by
#: positions vs by channels: 512x7x7 3x3 1008 vs 871, 256->512 14x14/2 3x3 542 vs 440, 960->160 1x1
#: 7x7 76 vs 51, 320->1280 184 vs 140; at 196 positions 96->576 1x1 81 vs 73 but 128->256 28x28/2 3x3
#: 433 vs 467 (each worker packs all the columns).
CHANNEL_SPLIT_MAX_POSITIONS = 100
#: Those channel parts of a stride-1 float32 forward (the vector builds) pack their columns as the
#: implicit GEMM does (per depth block, runs of a zero-padded copy of the image) instead of im2col's
#: whole column matrix per worker: the same products (bit for bit), a quarter of the packing time.
#: Two threads, us, 1x512x7x7 3x3 with 16 weights in turn (cold, as in a network): 1384-1427 vs
#: 1239-1259. At 196 positions (1x256x14x14) channel parts packing all columns lost to the row split
#: (1210 vs 1190), which stays (docs/performance.md).
IMPLICIT_CHANNEL_PARTS = True

#: Strided float32 forwards of 1-d and 2-d convolutions (the vector builds; stride 1 or 2 along the last
#: axis) with at least :data:`DIRECT_MIN_DEPTH` column rows (Cg*K) run the direct lanes forward (geometry
#: ``implicit`` 3, ``csrc/im2col.h`` ``direct_forward``): the output channels on the vector lanes, each
#: (channel, tap)'s inputs broadcast from a zero-padded copy of the rows an item reads, so nothing is
#: packed and no stride is gathered (:func:`_direct_layout`; docs/performance.md, "Zen 4 again").
DIRECT_LANES = True
#: The ISA variants whose rule takes it ...
DIRECT_ISAS = ("avx2", "avx512")
#: ... and at most this many output channels per group on a variant (absent: any). The AVX2 variant's
#: blocks of 16 channels (2 vectors x 6 positions) each read the rows again: direct / packed, AVX2, median
#: of 8 alternated rounds, one and two threads: 16->32 5x5/2 224x224 batch 1 0.67 / 0.61, 32->64 3x3/2
#: 112x112 batch 8 0.86 / 0.78, 1-d 64->64 k7/2 0.88 / 0.83, 64->128 3x3/2 56x56 batch 8 0.99 / 0.96,
#: batch 1 1.00 / 0.90, 128->128 28x28 batch 8 0.94 / 0.96; wider lost: 128->256 batch 8 1.08, 256->512
#: 14x14 batch 8 1.28 (1.15 in an earlier session), 128->256 batch 1 1.03 / 1.01.
DIRECT_MAX_GROUP_CHANNELS = {"avx2": 128}
DIRECT_MIN_DEPTH = 128
#: On several workers the output channels split into one part per worker where the weight has at least
#: this many times the input's values (two threads, split channels / images or rows: 64->128 3x3/2 at
#: batch 1 0.920 / 0.836, at batch 8 0.933 / 0.887; 128->256 at batch 1 0.848 / 0.866).
DIRECT_PARTS_MIN_RATIO = 1.0
#: Fewest output positions of a call (all its images) that take the direct forward ...
DIRECT_MIN_POSITIONS = 128
#: ... and at most this many weight values per output position of the call: the weight's transposition
#: (from memory in a network) is that share of the work. Two threads, direct / packed, weights cold:
#: 256->512 3x3/2 at batch 1, 7x7 out (24 K per position) 1.165, at batch 8, 4x4 out (9.2 K) 1.072, at
#: batch 8, 7x7 out (3.0 K) 0.988; 128->256 at batch 1, 14x14 out (1.5 K) 0.935 in ResNet-18.
DIRECT_MAX_WEIGHT_PER_POSITION = 4096

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_PASS_CODES = {"forward": 0, "grad_input": 1, "grad_weight": 2}

supports = gemm.supports
recommended = gemm.recommended
on_blas_threads = gemm.on_blas_threads


def _geometry(n: int, c: int, o: int, in_size: Sequence[int], geom: ConvGeometry, band: int = 1,
              images: int = 1, chunk: int = 1, shift: int = 0, implicit: int = 0) -> tuple[int, ...] | None:
    """The extension's geometry tuple (spatial triples with leading 1s), or None when the geometry
    is outside what the C kernel takes (negative low padding, more than 3 spatial axes)."""
    nd = geom.ndim
    if nd > 3:
        return None
    lows = tuple(lo for lo, _ in geom.pads(in_size))
    if min(lows, default=0) < 0:
        return None
    lead = (1,) * (3 - nd)
    out = geom.output_size(in_size)
    spatial = (*lead, *in_size, *lead, *out, *lead, *geom.kernel_size, *lead, *geom.stride, *lead,
               *geom.dilation)
    return (n, c, o, geom.groups, *spatial, *(0,) * (3 - nd), *lows, band, images, chunk, shift, implicit)


def _plan(pass_code: int, geometry: tuple[int, ...] | None) -> tuple[int, int] | None:
    """``(scratch elements, work items)`` from the C kernel, or None where it declines the sizes."""
    if geometry is None:
        return None
    try:
        return backends.core.module.gemm_conv_plan(pass_code, geometry)
    except (ValueError, OverflowError):
        return None


def _threads(macs: int, groups: int) -> tuple[int, int]:
    """``(worker threads, BLAS threads)`` of a call: :mod:`npconv.kernels.gemm`'s rule, with the
    smaller of its ``WORKER_MIN_MACS`` and :data:`WORKER_MIN_MACS`."""
    blas_mode = gemm._on_blas_threads()
    workers = groups > 1 or (not blas_mode and macs >= min(gemm.WORKER_MIN_MACS, WORKER_MIN_MACS))
    threads = get_num_threads() if workers else 1
    return threads, (get_num_threads() if threads == 1 and blas_mode else 1)


def _share(threads: int) -> int:
    """A worker's share of ``gemm.WORKSPACE_BYTES`` (bytes): what one work item's scratch may take."""
    return gemm.WORKSPACE_BYTES // max(1, threads)


def _band(rows: int, length: int, itemsize: int, threads: int) -> int:
    """Output positions per gemm: columns of about :data:`TILE_BYTES` (``rows`` column rows), at
    least :data:`MIN_BAND` positions unless the per-thread workspace share forbids."""
    per = max(1, rows * itemsize)
    band = max(TILE_BYTES // per, MIN_BAND)
    band = min(band, max(1, _share(threads) // per))
    return max(1, min(length, band))


def _tiling(geometry: tuple[int, ...], n: int, ck: int, og: int, out_size: tuple[int, ...],
            geom: ConvGeometry, itemsize: int, threads: int) -> tuple[tuple[int, ...], bool]:
    """The work items of a forward or grad_weight call: ``geometry`` with ``(band, images, chunk,
    shift)`` set, and whether the row shift is on (then the weight is ``(k0, O, Cg*K_rest)``).

    Small images under a kernel of :data:`CHUNK_MIN_TAPS` or more taps: chunks of whole images
    (:data:`CHUNK_BYTES`; halved until the C plan's scratch of a chunk fits the thread's share of
    ``gemm.WORKSPACE_BYTES``). Else, with >= 2 spatial axes, stride 1 and >= 2 taps along the first
    (:data:`ROW_SHIFT`): bands of whole output rows of that axis, each packed once over the trailing
    axes; otherwise bands of output positions."""
    length = math.prod(out_size)
    per_image = (ck + og) * length * itemsize
    chunked = math.prod(geom.kernel_size) >= CHUNK_MIN_TAPS
    images = min(CHUNK_BYTES // max(1, per_image), -(-n // threads)) if chunked else 1
    if images >= 2:
        chunks = threads * -(-n // (threads * images))  # a multiple of the threads: no worker idles
        images = -(-n // chunks)                        # (8 images, 2 threads, 3 per chunk: 4 of 2)
    if images >= 2:  # the size above is a speed rule; the C plan's scratch must fit the share
        fitted = _halved(0, lambda m: geometry[:-5] + (length, m, 1, 0, 0), images, itemsize, _share(threads))
        if fitted is not None and fitted[1] and fitted[0][-4] >= 2:
            return fitted[0], False
    k0, nd = geom.kernel_size[0], geom.ndim
    if (ROW_SHIFT and nd >= 2 and geom.stride[0] == 1 and k0 > 1
            and n * length * (k0 - 1) >= SHIFT_MIN_SAVING * k0 * og):
        rows_total, row = out_size[0], math.prod(out_size[1:])
        halo = (k0 - 1) * geom.dilation[0]
        per_row = max(1, ck // k0 * row * itemsize)
        # at least SHIFT_HALO_RATIO * halo rows: the slab repacks its halo rows for every band
        rows = max(SHIFT_TILE_BYTES // per_row - halo, SHIFT_HALO_RATIO * halo, -(-MIN_BAND // row), 1)
        rows = min(rows, rows_total, max(1, _share(threads) // per_row - halo))
        if n * -(-rows_total // rows) < threads:  # split single images for the threads
            rows = -(-rows_total // -(-threads // n))
        shifted = _within_share(geometry, rows, (1, 1, 4 - nd, 0), itemsize, threads)
        if shifted is not None:
            return shifted, True
    band = _band(ck, length, itemsize, threads)
    if n * -(-length // band) < threads:  # split single images for the threads
        band = -(-length // -(-threads // n))
    banded = _within_share(geometry, band, (1, 1, 0, 0), itemsize, threads)
    return banded or geometry[:-5] + (band, 1, 1, 0, 0), False


def _within_share(geometry: tuple[int, ...], units: int, rest: tuple[int, ...], itemsize: int,
                  threads: int) -> tuple[int, ...] | None:
    """``geometry`` with work items of ``units`` (rows or positions) and ``rest`` (images, chunk,
    shift, implicit), halved until one item's scratch (the C plan's, slab and packing included) fits
    the thread's share of ``gemm.WORKSPACE_BYTES``; None where the kernel declines the geometry."""
    fitted = _halved(0, lambda u: geometry[:-5] + (u,) + rest, units, itemsize, _share(threads))
    return None if fitted is None else fitted[0]


def _halved(pass_code: int, tiling: Callable[[int], tuple[int, ...]], units: int, itemsize: int,
            budget: int) -> tuple[tuple[int, ...], bool] | None:
    """``(tiling(units), fits)`` with ``units`` halved until the C plan's scratch of one item fits
    ``budget`` bytes (``fits`` False: not even at one unit); None where the kernel declines it."""
    while True:
        tiled = tiling(units)
        plan = _plan(pass_code, tiled)
        if plan is None:
            return None
        if plan[0] * itemsize <= budget or units == 1:
            return tiled, plan[0] * itemsize <= budget
        units = max(1, units // 2)


def implicit_runs(dtype: np.dtype) -> bool:
    """Whether stride-1 forward and grad_weight passes of ``dtype`` run as the implicit GEMM
    (:data:`IMPLICIT`, float32, npconv's gemm on, a vector build)."""
    return IMPLICIT and _blas.own_products(np.dtype(dtype))


def _implicit_tiling(pass_code: int, geometry: tuple[int, ...], n: int, cg: int, itemsize: int,
                     threads: int) -> tuple[int, ...] | None:
    """The work items of an implicit-GEMM forward or grad_weight (``csrc/im2col.h``: stride 1,
    float32, the vector builds): ``geometry`` with bands of output lines (whole planes in 3-d) whose
    zero-padded input slab takes about :data:`IMPLICIT_SLAB_BYTES`, split further when images are
    fewer than threads. None where the padded grid has more than :data:`IMPLICIT_MAX_GRID` times the
    outputs' positions, where even one line's slab exceeds the thread's share of
    ``gemm.WORKSPACE_BYTES``, or where the kernel declines the geometry. Cached per call shape (the
    settings are part of the key)."""
    return _implicit_items(pass_code, geometry, n, cg, itemsize, threads, IMPLICIT_SLAB_BYTES,
                           IMPLICIT_MAX_GRID, SHIFT_HALO_RATIO, _share(threads))


@functools.lru_cache(maxsize=512)
def _implicit_items(pass_code: int, geometry: tuple[int, ...], n: int, cg: int, itemsize: int, threads: int,
                    slab_bytes: int, max_grid: float, halo_ratio: int, budget: int) -> tuple[int, ...] | None:
    out, k, d = geometry[7:10], geometry[10:13], geometry[16:19]
    ext = [o + (kk - 1) * dd for o, kk, dd in zip(out, k, d, strict=True)]
    if ext[2] * (ext[1] if out[0] > 1 else out[1]) > max_grid * out[2] * out[1]:
        return None
    row_bytes = max(1, cg * ext[2] * itemsize)
    if ext[0] > 1:  # 3-d (one output plane too): units of whole output planes, each ext[1] padded rows
        unit, unit_rows, halo, units_total = out[1], ext[1], (k[0] - 1) * d[0] * ext[1], out[0]
    else:
        unit, unit_rows, halo, units_total = 1, 1, (k[1] - 1) * d[1], out[1]
    units = max(slab_bytes // row_bytes - halo, halo_ratio * halo, 1) // unit_rows
    units = max(1, min(units, units_total))
    if n * -(-units_total // units) < threads:  # split single images for the threads
        units = -(-units_total // -(-threads // n))
    fitted = _halved(pass_code, lambda u: geometry[:-5] + (u * unit, 1, 1, 0, 1), units, itemsize, budget)
    return fitted[0] if fitted is not None and fitted[1] else None


def _run(pass_code: int, geometry: tuple[int, ...], dtype: np.dtype, threads: int, blas: int, a: np.ndarray,
         b: np.ndarray, bias: np.ndarray | None, out: np.ndarray | list[np.ndarray], act: int = 0,
         lo: float = 0.0, hi: float = 0.0, macs: int = 0) -> int:
    """Run every work item on ``threads`` workers (contiguous item ranges: worker ``k`` always gets
    range ``k``); ``out`` is one array, or one accumulator per worker (grad_weight); ``blas``: BLAS
    threads of a single worker, 0 when the pass calls no BLAS (left alone). ``macs`` (grad_input's
    multiply-adds): the workers share the range (:func:`_run_calls`). Returns the number of workers
    used."""
    size, spans = _spans(pass_code, geometry, threads)
    _run_calls(pass_code, dtype, blas, [(geometry, size, start, stop, a, b, bias,
                                         out[k] if isinstance(out, list) else out)
                                        for k, (start, stop) in enumerate(spans)], act, lo, hi, macs)
    return len(spans)


def _run_calls(pass_code: int, dtype: np.dtype, blas: int, calls: list[tuple], act: int = 0, lo: float = 0.0,
               hi: float = 0.0, macs: int = 0) -> None:
    """Worker ``k`` runs ``calls[k]``: ``(geometry, scratch elements, start, stop, a, b, bias, out)``,
    one ``gemm_conv`` call over items ``[start, stop)`` with its scratch ``compiled-gemm-<k>`` (the same
    worker and buffer on every run); a worker's BLAS runs on one thread. A single call that calls no
    BLAS runs on the calling thread, without a job (:func:`npconv.kernels.workspace.run_calls`).
    ``macs`` (the call's multiply-adds; calls equal but for contiguous item ranges, of the forward or
    grad_input, whose items write disjoint outputs): the workers share the whole range where
    ``workspace.shared_chunk`` says so; 0: fixed ranges. A grad_weight call writes its range's sum into
    ``out`` (the kernel's ``fresh``: no zeroed accumulator; its old values are never read)."""
    routines = gemm_routines()
    chunk, ranges = _worker_ranges([call[2:4] for call in calls], macs)
    fresh = (None, True) if pass_code == 2 else ()
    per_worker = [((pass_code, routines, a, b, bias, out), size, (geometry, *span, act, lo, hi, *fresh))
                  for (geometry, size, _, _, a, b, bias, out), span in zip(calls, ranges, strict=True)]
    workspace.run_calls(backends.core.module.gemm_conv, per_worker, "compiled-gemm", dtype, blas, chunk)


def _worker_ranges(spans: list[tuple[int, int]], macs: int) -> tuple[int, list[tuple[int, int]]]:
    """``(chunk, item range per worker)`` of calls over contiguous ``spans`` (:func:`_run_calls`'s
    ``macs``): where ``workspace.shared_chunk`` gives a chunk every worker's range is the whole one."""
    chunk = workspace.shared_chunk(spans[-1][1] - spans[0][0], len(spans), macs) if macs and spans else 0
    return chunk, [(spans[0][0], spans[-1][1])] * len(spans) if chunk else list(spans)


@functools.lru_cache(maxsize=1024)
def _spans(pass_code: int, geometry: tuple[int, ...],
           threads: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """``(scratch elements, item range per worker)`` of a call (the C plan, then near-equal ranges)."""
    size, items = backends.core.module.gemm_conv_plan(pass_code, geometry)
    return size, tuple(workspace.ranges(items, threads))


def _dtype(*arrays: np.ndarray) -> np.dtype | None:
    dtype = np.result_type(*arrays)
    return dtype if dtype in _DTYPES else None


def _epilogue(bias: np.ndarray | None,
              epilogue: Epilogue | None) -> tuple[np.ndarray | None, int, float, float, Activation | None]:
    """``(bias, act code, lo, hi, activation left for afterwards)`` of a pass's ``bias=``/``epilogue=``
    (:func:`npconv.kernels.common.compiled_epilogue` as the C kernel's arguments)."""
    bias, now, later = compiled_epilogue(bias, epilogue)
    if now is None:
        return bias, 0, 0.0, 0.0, later
    return bias, now.code, float(now.lo), float(now.hi), later


def _finish(out: np.ndarray, act: int, lo: float, hi: float, later: Activation | None) -> np.ndarray:
    """The activation of a result whose kernel did not apply it (the NumPy GEMM ran with the bias, or
    the activation is one the C epilogue lacks)."""
    if act:
        later = Activation.of_code(act, lo, hi)
    return out if later is None else epilogue_(out, None, later)


def _settings() -> tuple:
    """Everything besides the call's shapes that decides a forward's work items (in its cache key)."""
    return (TILE_BYTES, MIN_BAND, CHUNK_BYTES, CHUNK_MIN_TAPS, ROW_SHIFT, SHIFT_TILE_BYTES,
            SHIFT_HALO_RATIO, SHIFT_MIN_SAVING, IMPLICIT, IMPLICIT_LANES, IMPLICIT_SLAB_BYTES,
            IMPLICIT_MAX_GRID, IMPLICIT_MIN_POSITIONS, IMPLICIT_MIN_POSITIONS_BATCH,
            CHANNEL_SPLIT_MAX_POSITIONS, _blas.OWN_GEMM,
            backends.core.isa, gemm.WORKSPACE_BYTES, gemm.WORKER_MIN_MACS, WORKER_MIN_MACS,
            gemm._on_blas_threads(),
            get_num_threads(), IMPLICIT_CHANNEL_PARTS, DIRECT_LANES, DIRECT_ISAS,
            tuple(sorted(DIRECT_MAX_GROUP_CHANNELS.items())), DIRECT_MIN_DEPTH,
            DIRECT_PARTS_MIN_RATIO, DIRECT_MIN_POSITIONS,
            DIRECT_MAX_WEIGHT_PER_POSITION)


@functools.lru_cache(maxsize=1024)
def _forward_layout(x_shape: tuple[int, ...], w_shape: tuple[int, ...], geom: ConvGeometry, dtype: np.dtype,
                    settings: tuple) -> tuple | None:
    """``(geometry with its work items, row shift on, out_size, threads, BLAS threads, channel parts)``
    of a forward, or None where the C kernel declines it; a pure function of its arguments
    (:func:`_settings`). Channel parts (:data:`CHANNEL_SPLIT_MAX_POSITIONS`): ``(first, stop, geometry)``
    of each worker's output channels, one item each; empty when the items split positions."""
    n, c = x_shape[:2]
    o = w_shape[0]
    in_size = x_shape[2:]
    geometry = None if min(x_shape + w_shape) == 0 else _geometry(n, c, o, in_size, geom)
    if _plan(0, geometry) is None:
        return None
    out_size = geom.output_size(in_size)
    length = math.prod(out_size)
    cg, og = c // geom.groups, o // geom.groups
    ck = cg * math.prod(geom.kernel_size)
    threads, blas = _threads(n * o * ck * length, geom.groups)
    implicit = None
    direct = _direct_layout(n, c, o, in_size, out_size, geom, dtype, ck, threads)
    if direct is not None:
        return direct, False, out_size, threads, 0, ()
    if (implicit_runs(dtype) and all(s == 1 for s in geom.stride) and math.prod(geom.kernel_size) > 1
            and length >= (IMPLICIT_MIN_POSITIONS if n == 1 else IMPLICIT_MIN_POSITIONS_BATCH)):
        implicit = _implicit_tiling(0, geometry, n, cg, dtype.itemsize, threads)
        if implicit is not None and IMPLICIT_LANES:
            implicit = implicit[:-1] + (2,)
    if _blas.own_products(dtype):
        blas = 0
    if implicit is not None:
        return implicit, False, out_size, threads, blas, ()
    if (threads > 1 and n == 1 and geom.groups == 1 and length <= CHANNEL_SPLIT_MAX_POSITIONS
            and o >= 32 * threads):
        ranges = _channel_ranges(o, threads)
        if (IMPLICIT_CHANNEL_PARTS and implicit_runs(dtype) and all(s == 1 for s in geom.stride)
                and math.prod(geom.kernel_size) > 1):  # every output line of the image, packed implicitly
            lines, budget = math.prod(geometry[7:9]), _share(threads)
            fitted = []  # (first, stop, (geometry, fits)) per part: its lines as items within the share
            for o0, o1 in ranges:
                base = geometry[:2] + (o1 - o0,) + geometry[3:-5]
                tiling = lambda u, b=base: b + (u, 1, 1, 0, 1)  # noqa: E731
                fitted.append((o0, o1, _halved(0, tiling, lines, dtype.itemsize, budget)))
            if all(f is not None and f[1] for _, _, f in fitted):
                return geometry, False, out_size, threads, blas, tuple((o0, o1, f[0]) for o0, o1, f in fitted)
        parts = tuple((o0, o1, geometry[:2] + (o1 - o0,) + geometry[3:-5] + (length, 1, 1, 0, 0))
                      for o0, o1 in ranges)
        if all(_plan(0, part[2]) is not None for part in parts):
            return geometry, False, out_size, threads, blas, parts
    geometry, shifted = _tiling(geometry, n, ck, og, out_size, geom, dtype.itemsize, threads)
    return geometry, shifted, out_size, threads, blas, ()


def _direct_layout(n: int, c: int, o: int, in_size: tuple[int, ...], out_size: tuple[int, ...],
                   geom: ConvGeometry, dtype: np.dtype, ck: int, threads: int) -> tuple[int, ...] | None:
    """The geometry of a direct lanes forward (:data:`DIRECT_LANES`), or None where the rule or the kernel
    declines it. On several workers, where the weight has at least :data:`DIRECT_PARTS_MIN_RATIO` times
    the input's values, each group's output channels split into one part per worker (each transposes
    only its part of the weight, once per call, and reads every image); else the images split (their
    output rows where images are fewer than threads), each worker transposing the whole weight once."""
    if not (DIRECT_LANES and backends.core.isa in DIRECT_ISAS and implicit_runs(dtype) and geom.ndim <= 2
            and max(geom.stride) > 1 and geom.stride[-1] <= 2 and math.prod(geom.kernel_size) > 1
            and ck >= DIRECT_MIN_DEPTH
            and o // geom.groups <= DIRECT_MAX_GROUP_CHANNELS.get(backends.core.isa, o)):
        return None
    positions = n * math.prod(out_size)
    if positions < DIRECT_MIN_POSITIONS or o * ck > DIRECT_MAX_WEIGHT_PER_POSITION * positions:
        return None
    lines = out_size[0] if geom.ndim == 2 else 1
    split = o * ck >= DIRECT_PARTS_MIN_RATIO * n * c * math.prod(in_size)  # the weight against the input
    parts = threads if threads > 1 and split and o // geom.groups >= 32 * threads else 1
    rows = lines if n * parts >= threads else -(-lines // -(-threads // n))
    fitted = _halved(0, lambda r: _geometry(n, c, o, in_size, geom, r, 1, parts, implicit=3), rows,
                     dtype.itemsize, _share(threads))
    return None if fitted is None or not fitted[1] else fitted[0]


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None,
            epilogue: Epilogue | None = None) -> np.ndarray:
    """``y (N, O, *out) = conv(x, w) (+ bias[o])``; ``epilogue=`` (instead of ``bias``): its bias and
    activation, applied to each tile in cache (ReLU, ReLU6/Hardtanh or SiLU, in C)."""
    return prepare_forward(x.shape, x.dtype, w, geom, bias, epilogue).run(x)


def prepare_forward(x_shape: tuple[int, ...], x_dtype: np.dtype, w: np.ndarray, geom: ConvGeometry,
                    bias: np.ndarray | None = None, epilogue: Epilogue | None = None) -> PreparedForward:
    """:func:`forward` of inputs of ``x_shape`` and ``x_dtype`` planned once (the work items; the
    weight's layout is made per call); valid while :func:`_settings` are unchanged."""
    bias, act, lo, hi, later = _epilogue(bias, epilogue)
    dtype = np.result_type(x_dtype, w.dtype)
    dtype = dtype if dtype in _DTYPES else None
    settings = _settings()
    layout = None if dtype is None else _forward_layout(tuple(x_shape), w.shape, geom, dtype, settings)
    if layout is None:
        return PreparedForward(lambda x: _finish(gemm.forward(x, w, geom, bias), act, lo, hi, later),
                               (_settings,), (settings,))
    geometry, shifted, out_size, threads, blas, parts = layout
    y_shape = tuple(x_shape[:1]) + w.shape[:1] + out_size
    # worker k's gemm_conv call: (geometry, scratch elements, items [start, stop), its output channels)
    calls = []
    for first, stop, part in parts:  # output channels [first, stop) of the one image, all its positions
        size, ((start, end),) = _spans(0, part, 1)
        calls.append((part, size, start, end, slice(first, stop)))
    macs = 0  # channel parts differ in their arguments: fixed ranges
    if not parts:
        size, spans = _spans(0, geometry, threads)
        calls = [(geometry, size, start, stop, None) for start, stop in spans]
        macs = 0 if geometry[-1] == 3 else geom.multiply_adds(x_shape, w.shape)  # direct: fixed part ranges
    # _run_calls's work, but for the arrays, done once: (rows, scratch elements, the call's tail) per worker
    chunk, ranges = _worker_ranges([call[2:4] for call in calls], macs)
    routines = gemm_routines()
    per_worker = [(rows, size, (g, *span)) for (g, size, _, _, rows), span in zip(calls, ranges, strict=True)]
    kernel = backends.core.module.gemm_conv

    def run(x: np.ndarray) -> np.ndarray:
        wm = np.ascontiguousarray(w, dtype)
        if shifted:  # (O, Cg, k0, K_rest) -> (k0, O, Cg * K_rest): one weight matrix per kernel row
            o, k0 = w.shape[0], geom.kernel_size[0]
            wm = np.ascontiguousarray(wm.reshape(o, w.shape[1], k0, -1).transpose(2, 0, 1, 3))
        b = None if bias is None else np.ascontiguousarray(bias, dtype)
        y = np.empty(y_shape, dtype)
        x = np.ascontiguousarray(x, dtype)
        workspace.run_calls(kernel, [((0, routines, x, wm, b, y) if rows is None else
                                      (0, routines, x, wm[rows], None if b is None else b[rows], y[:, rows]),
                                      size, (*tail, act, lo, hi)) for rows, size, tail in per_worker],
                            "compiled-gemm", dtype, blas, chunk)
        return _finish(y, 0, 0.0, 0.0, later)

    def bind_residual(x: np.ndarray, y: np.ndarray, scratch: ScratchSource, residual: np.ndarray | None,
                      activation: Activation | None) -> Callable[[], None]:
        layout = None
        if shifted:
            o, k0 = w.shape[0], geom.kernel_size[0]
            layout = lambda a: a.reshape(o, w.shape[1], k0, -1).transpose(2, 0, 1, 3)  # noqa: E731
        codes = fused_residual_codes((act, lo, hi), later, residual, activation)

        def jobs_of(wm: np.ndarray, b: np.ndarray | None) -> Callable[[], None]:
            res = () if residual is None else (residual,)
            calls = [((0, routines, x, wm, b, y) if rows is None else
                      (0, routines, x, wm[rows], None if b is None else b[rows], y[:, rows]),
                      size, (*tail, *codes, *(r if rows is None else r[:, rows] for r in res)))
                     for rows, size, tail in per_worker]
            return workspace.bind_calls(kernel, calls, "compiled-gemm", dtype, scratch, blas, chunk)

        return bound_run(x, tuple(x_shape), y, y_shape, dtype, w, bias, jobs_of, later, layout, residual)

    def bind(x: np.ndarray, y: np.ndarray, scratch: ScratchSource) -> Callable[[], None]:
        return bind_residual(x, y, scratch, None, None)

    return PreparedForward(run, (_settings,), (settings,), bind, bind_residual if not act and later is None
                           else None)



def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
               bias: np.ndarray | None = None, epilogue: Epilogue | None = None) -> np.ndarray:
    """``gx (N, C, *input_size) = conv^T(gy, w) (+ bias[c])`` (the adjoint of :func:`forward` in
    ``x``; ``bias``: a transposed convolution's); ``epilogue=`` as in :func:`forward`."""
    bias, act, lo, hi, later = _epilogue(bias, epilogue)
    input_size = tuple(int(v) for v in input_size)
    dtype = _dtype(gy, w)
    n, o = gy.shape[:2]
    c = w.shape[1] * geom.groups
    geometry = None if dtype is None or min(gy.shape + w.shape) == 0 else _geometry(n, c, o, input_size, geom)
    plan = _plan(1, geometry)
    if plan is None:
        return _finish(gemm.grad_input(gy, w, geom, input_size, bias), act, lo, hi, later)
    cg, og = c // geom.groups, o // geom.groups
    taps = math.prod(geom.kernel_size)
    unit_stride = all(s == 1 for s in geom.stride)
    direct = taps == 1 and unit_stride and not any(a or b for a, b in geom.pads(input_size))
    widening = cg * gemm.COL2IM_CHANNEL_RATIO <= og
    if unit_stride and not direct and not widening and n * math.prod(input_size) >= ADJOINT_MIN_POSITIONS:
        adjoint, crop = geom.stride1_adjoint(input_size, gy.shape[2:])
        if _plan(0, _geometry(n, o, c, tuple(gy[(0, 0) + crop].shape), adjoint)) is not None:
            def adjoint_forward(x_: np.ndarray, w_: np.ndarray, geom_: ConvGeometry,
                                bias: np.ndarray | None = None) -> np.ndarray:
                return forward(x_, w_, geom_, epilogue=Epilogue(bias, epilogue and epilogue.activation))

            return grad_input_as_forward(adjoint_forward, gy, w, geom, input_size, bias, compiled=True)
    length = math.prod(gy.shape[2:])
    threads, blas = _threads(n * o * cg * taps * length, geom.groups)
    if _blas.own_products(dtype):  # its products (A transposed) on npconv's gemm: BLAS's threads left alone
        blas = 0
    images, chunk = _grad_input_split(n, cg, og, taps, length, geom.groups, dtype.itemsize, threads)
    band = _band(chunk * taps, length, dtype.itemsize, threads)
    geometry = geometry[:-5] + ((length, images, chunk, 0, 0) if images > 1 else (band, 1, chunk, 0, 0))
    gx = np.empty((n, c) + input_size, dtype)
    b = None if bias is None else np.ascontiguousarray(bias, dtype)
    gy, w = np.ascontiguousarray(gy, dtype), np.ascontiguousarray(w, dtype)
    _run(1, geometry, dtype, threads, blas, gy, w, b, gx, act, lo, hi, n * o * cg * taps * length)
    return _finish(gx, 0, 0.0, 0.0, later)


def _grad_input_split(n: int, cg: int, og: int, taps: int, length: int, groups: int, itemsize: int,
                      threads: int) -> tuple[int, int]:
    """``(images, chunk)`` of a GEMM + col2im grad_input's items: images side by side per product and
    input channels per item. The channels split across the workers where images x groups are fewer than
    the threads, or where the weight outweighs the batch's columns (:data:`GI_CHANNEL_SPLIT`: all images
    in one product per worker); small images come in chunks (:data:`GI_IMAGE_COLUMNS`). A product's
    columns and ``gy`` stay within the thread's share of the workspace, as a band's."""
    share = _share(threads)

    def per_image(chunk: int) -> int:  # an image's columns and gy in bytes
        return (chunk * taps + og) * length * itemsize

    chunk = -(-cg // threads)
    if (threads > 1 and n > 1 and groups == 1 and cg >= threads and cg * taps >= GI_CHANNEL_SPLIT * n * length
            and n * per_image(chunk) <= share):
        return n, chunk
    chunk = -(-cg // -(-threads // (n * groups)))  # split channels when images x groups are too few
    images = min(-(-GI_IMAGE_COLUMNS // length), -(-n // threads)) if length < GI_IMAGE_COLUMNS else 1
    images = min(images, share // per_image(chunk))
    if images > 1:  # small images: a chunk of them per product (a multiple of the threads: no worker idles)
        images = -(-n // (threads * -(-n // (threads * images))))
    return images, chunk


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (O, Cg, *k) = sum_n gy[n, g] @ col(x)[n, g]^T``."""
    dtype = _dtype(x, gy)
    n, c = x.shape[:2]
    o = gy.shape[1]
    in_size = tuple(int(v) for v in x.shape[2:])
    geometry = None if dtype is None or min(x.shape + gy.shape) == 0 else _geometry(n, c, o, in_size, geom)
    plan = _plan(2, geometry)
    if plan is None:
        return gemm.grad_weight(x, gy, geom)
    length = math.prod(gy.shape[2:])
    cg, og = c // geom.groups, o // geom.groups
    ck = cg * math.prod(geom.kernel_size)
    threads, blas = _threads(n * o * ck * length, geom.groups)
    if _blas.own_products(dtype):  # its products (B transposed) on npconv's gemm: BLAS's threads left alone
        blas = 0
    implicit = None
    if (implicit_runs(dtype) and all(s == 1 for s in geom.stride) and math.prod(geom.kernel_size) > 1
            and length >= IMPLICIT_GW_MIN_POSITIONS):
        implicit = _implicit_tiling(2, geometry, n, cg, dtype.itemsize, threads)
    if implicit is not None:
        geometry, shifted = implicit, False
    else:
        geometry, shifted = _tiling(geometry, n, ck, og, tuple(gy.shape[2:]), geom, dtype.itemsize, threads)
    _, items = backends.core.module.gemm_conv_plan(2, geometry)
    if (threads > 1 and geom.groups == 1 and not shifted and implicit is None
            and o >= GW_CHANNEL_SPLIT * n * length and o >= 8 * threads):
        return _grad_weight_by_channels(x, gy, geometry, dtype, threads, blas, ck).reshape(
            (o, cg) + tuple(geom.kernel_size))
    workers = max(1, min(threads, items))
    sums = [np.empty(o * ck, dtype) for _ in range(workers)]  # each worker's sum written, not added
    _run(2, geometry, dtype, workers, blas, np.ascontiguousarray(x, dtype), np.ascontiguousarray(gy, dtype),
         None, sums)
    for partial in sums[1:]:  # on the workers where that pays (the same IEEE additions)
        if pointwise.add(sums[0], partial, sums[0]) is None:
            sums[0] += partial
    if shifted:  # (k0, O, Cg, K_rest) -> (O, Cg, k0, K_rest)
        k0 = geom.kernel_size[0]
        gw = np.ascontiguousarray(sums[0].reshape(k0, o, cg, -1).transpose(1, 2, 0, 3))
        return gw.reshape((o, cg) + tuple(geom.kernel_size))
    return sums[0].reshape((o, cg) + tuple(geom.kernel_size))


def _grad_weight_by_channels(x: np.ndarray, gy: np.ndarray, geometry: tuple[int, ...], dtype: np.dtype,
                             threads: int, blas: int, ck: int) -> np.ndarray:
    """``gw (O, CK)`` with worker ``k`` computing rows ``[o0, o1)`` over every image (its own slice of
    ``gy``), instead of every row over its images: no per-worker ``(O, CK)`` accumulators to zero
    and sum, at the price of each worker packing all of the columns (:data:`GW_CHANNEL_SPLIT`)."""
    o = gy.shape[1]
    x = np.ascontiguousarray(x, dtype)
    gw = np.empty(o * ck, dtype)  # every row written by its worker's sum
    _run_parts(2, dtype, blas, [(geometry[:2] + (o1 - o0,) + geometry[3:], x,
                                 np.ascontiguousarray(gy[:, o0:o1], dtype), None, gw[o0 * ck:o1 * ck])
                                for o0, o1 in _channel_ranges(o, threads)])
    return gw


def _channel_ranges(o: int, threads: int) -> list[tuple[int, int]]:
    """``o`` output channels in one range per thread, whole register tiles of 8 rows but the last."""
    bounds = [o * k // threads // 8 * 8 for k in range(threads)] + [o]
    return list(itertools.pairwise(bounds))


def _run_parts(pass_code: int, dtype: np.dtype, blas: int, parts: list[tuple], act: int = 0, lo: float = 0.0,
               hi: float = 0.0) -> None:
    """Worker ``k`` runs every item of part ``k``: ``(geometry, a, b, bias, out)``, the arguments of a
    ``gemm_conv`` call over one range of output channels."""
    calls = []
    for geometry, a, b, bias, out in parts:
        size, ((start, stop),) = _spans(pass_code, geometry, 1)
        calls.append((geometry, size, start, stop, a, b, bias, out))
    _run_calls(pass_code, dtype, blas, calls, act, lo, hi)
