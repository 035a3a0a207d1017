"""Winograd ``F(4x4, 3x3)`` on the compiled core (``npconv._core``): the compiled implementation of the
``"winograd"`` algorithm (preferred by the registry; ``NPCONV_PURE=1`` keeps the NumPy one,
:mod:`npconv.kernels.winograd`), 2-D 3x3 stride-1 convolutions, any zero padding, groups and
dilation (dilation ``d``: ``d x d`` undilated convolutions of the phase sub-images of the input,
one per phase of the output), float32/float64, forward, grad_input and grad_weight (the forward's
adjoint in ``U``: :func:`grad_weight`).

``y (N, O, OH, OW) = A^T [ U[., o, c] (.) (B^T d B) ] A`` summed over ``c`` per 4x4 output tile, with
``U = G w G^T`` computed once per call (in C, split across the workers; a planned run, again only
where the weight's values changed since its last run: :data:`KEEP_TRANSFORM`) and the transform matrices
of :func:`npconv.kernels.winograd.transform_matrices`. The C kernel (``src/npconv/csrc/winograd.h``)
takes a range of the flat tile grid (image, tile row, tile column), so the tiles of several small
images share one GEMM: input transform fused per run of up to 64 tiles across tile rows and images
(zero padding handled in place), 36 GEMMs per group through the core's matrix product (npconv's gemm
for float32 on the vector builds, else SciPy's sgemm/dgemm: :func:`npconv.kernels.blas.gemm_routines`), output
transform with the bias (and an optional clamp) written straight into ``y``; a grouped call runs these
steps group by group while its transformed tiles are in cache, the products of groups of up to 16
input channels in the kernel's own register blocks. The ranges run on
the worker threads of :func:`npconv.kernels.workspace.run` (GIL released, BLAS on one thread),
each with its own scratch buffer. ``grad_input`` is the forward pass of ``gy`` with the flipped,
channel-transposed kernel. Not local: the same ``admits`` check as the NumPy Winograd.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import gemm, winograd, workspace
from .blas import gemm_routines, own_products
from .common import (
    Epilogue,
    PreparedForward,
    ScratchSource,
    adjoint_kernel,
    bound_run,
    compiled_epilogue,
    fused_residual_codes,
)
from .numerics import Operands, within
from .pointwise import Activation, epilogue_

__all__ = ["NAME", "COMPILED", "LOCAL", "PASSES", "BIAS_PASSES", "EPILOGUE_PASSES", "SPREAD_LIMIT",
           "supports", "recommended", "admits", "forward", "prepare_forward", "grad_input", "grad_weight"]

if not backends.core.available:  # the registry records the reason; npconv.backends warned at import
    raise ModuleNotFoundError(f"npconv._core, the compiled core, is not in use ({backends.core.reason})",
                              name=__name__)

NAME = "winograd"
COMPILED = True
LOCAL = False
PASSES = ("forward", "grad_input", "grad_weight")
#: Passes that take ``bias=`` (or ``epilogue=``: bias and activation) and apply it in the output
#: transform (ReLU, hardtanh and SiLU in C).
BIAS_PASSES = EPILOGUE_PASSES = ("forward", "grad_input")
SPREAD_LIMIT = winograd.SPREAD_LIMIT
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Tiles per work item (columns of the 36 GEMMs), before the scratch cap.
_TARGET_TILES = 128
#: A bound run (:func:`prepare_forward`'s ``bind``: traced programs) keeps its transformed weight ``U``
#: and transforms a range of the weight again only where its values changed, as a plan's own ``run``
#: does (a module's kept plan in inference) within :data:`KEPT_TRANSFORM_BYTES`; False: every run
#: transforms it (the switch measures what keeping it saves).
KEEP_TRANSFORM = True
#: Fewest 4x4 output tiles per call (per phase of a dilated call) for which the rule recommends Winograd,
#: on one thread, for one image split by output channels, with shared tiles and for grouped calls alike
#: (the lanes rule and TILE_CHANNEL_RATIO decide the rest; these were 32, 49, 64 and 32 until session 41,
#: measured before the output transform's shuffles). Planned 3x3 layers at batch 1, Winograd / implicit
#: GEMM: two threads 16 tiles 0.66-0.73 (96-256 channels at 14x14), 49 tiles 0.72, 4 tiles 1.7-2.6; one
#: thread 16 tiles 0.56-0.61, 49 tiles 0.53 (docs/performance.md, "Zen 4, session 41").
MIN_TILES = 16
#: Channel parts of one call's tiles (one work item) share the input transform: each worker transforms a
#: share of the input channels into one V, then (after all have) runs its output channels' products from it,
#: instead of every worker transforming every channel (a third of its time at 128x28 batch 1); grad_weight's
#: workers splitting the output channels of one item do the same.
SHARED_INPUT_TRANSFORM = True
#: Fewest multiply-adds per call for which the rule recommends Winograd, per ISA (default 0): its
#: weight transform and data check (an unplanned call) cost ~0.1 ms. Two threads, AVX-512, batch 1,
#: ms, Winograd / the implicit GEMM planned once per module (`docs/performance.md`, "Winograd runs
#: across tile rows"): 64x56 (116 M) 0.54 / 0.62; 48x56 (65 M) 0.35 / 0.35; 32x56 (29 M) 0.22 / 0.18.
#: Session 41 (the output transform's shuffles since), Winograd / GEMM at batch 1: 29 M (32x56, 64x28,
#: 128x14) planned 0.67-0.72, unplanned 0.76-1.00; 16 M (24x56, 48x28, 96x14) planned 0.65-0.77,
#: unplanned 1.04-1.11.
MIN_MACS = {"avx512": 20_000_000}
#: The transforms run a vector of tiles at once (16 lanes on AVX-512, 8 on AVX2; a run takes up to
#: WG_RUN = 64 tiles of an item across tile rows and images) and cost per channel what the 36
#: products save per channel pair: Winograd is recommended where ``min(Cg, Og) * lane share / grid``
#: reaches this (lane share: a run's tiles per lanes used; grid: outputs computed per output).
MIN_CHANNEL_LANES = 26
#: A grouped call (group by group: a group's transforms and products while in cache) against the grouped
#: kernel and the GEMM: :data:`MIN_CHANNEL_LANES` is this with ``Cg`` for the channels. Two threads, batch
#: 8, ms, Winograd / grouped / GEMM: 32 per group 512x14 2.07 / 2.86 / 3.25, 1024x7 (32 tiles) 1.82 / 2.63
#: / 2.67, 256x28 3.02 / 4.82 / 5.37; 24 per group 384x14 1.48 / 1.75 / 2.53; 16 per group 256x28 2.72-3.32
#: / 2.65-2.75 (lanes 16: not taken); batch 1 512x14 (16 tiles) 1.05 / 0.38 / 0.48 (docs/performance.md).
MIN_GROUP_CHANNEL_LANES = 18
#: Every worker reads all of ``U`` (36 x the weight, written per call) for its tiles, so a worker's
#: tiles must reach ``channels / TILE_CHANNEL_RATIO``. Two threads, AVX-512, Winograd / implicit
#: GEMM time (tiles per worker / channels): 256ch 14x14 batch 8 0.86 (0.25), batch 6 0.97 (0.19),
#: batch 4 1.19 (0.125); 128ch 14x14 batch 8 0.88 (0.5), batch 4 1.07 (0.25); 128ch 28x28 batch 2 0.66
#: (0.38), batch 1 1.33 (0.19); 512ch 7x7 batch 8 1.43 (0.03) (docs/performance.md).
TILE_CHANNEL_RATIO = 4
#: A single ungrouped image whose tiles are too few to share (:data:`TILE_CHANNEL_RATIO`) has its
#: output channels split across the workers instead, each transforming its own part of the weight,
#: with at least this many channels per worker.
CHANNEL_PART_MIN = 16
#: grad_weight splits output channels across the workers (each transforming every input tile) where a
#: call's tiles are fewer than this many per 64 channel pairs: splitting tiles, each worker writes the
#: whole ``36 x O x C`` products for its few tiles. Two threads, batch 8, ms, tiles / channels:
#: measured in docs/performance.md.
GW_CHANNEL_SPLIT = 4.0
#: grad_weight's last step (``G^T M G`` in float64, the compiled ``winograd2d_grad_weight_finish``) splits
#: its channel pairs across the workers from this many pairs up.
GW_FINISH_PAIRS = 16384
#: Fewest 4x4 output tiles per call for which the rule recommends Winograd's grad_weight.
GW_MIN_TILES = 128
#: A grouped grad_weight (its products per group and point over every channel's transformed tiles) needs
#: more than 16 channels per group and at least this many tiles x channels per group. Two threads, batch
#: 8, ms, Winograd / GEMM: 32 per group 128x56 9.4 / 10.9, 64 per group 256x28 8.2 / 11.4; 64 per group
#: 512x14 6.1 / 5.5, 32 per group 256x28 6.6 / 5.8, 512x14 5.0 / 3.2, 24 per group 384x14 4.0 / 2.1.
GW_GROUP_MIN_TILE_CHANNELS = 16384
#: Tiles per transform run (csrc/shared.h's WG_RUN).
RUN_TILES = 64
_LANES = {"generic": 4, "avx2": 8, "avx512": 16}


def admits(pass_name: str, operands: Operands, geom: ConvGeometry) -> bool:
    """The NumPy Winograd's check (finite, spread within :data:`SPREAD_LIMIT`, no overflow); for
    grad_weight both operands are data, and the products are summed over every tile of the batch
    (``tiles * growth * peak(x) * peak(gy)`` below the dtype's largest value)."""
    if pass_name != "grad_weight" and geom.ndim == 3:  # each output sums KD * C transformed products
        summed = operands[0].shape[1] * geom.kernel_size[0]
        return within(operands, (0,), SPREAD_LIMIT, summed * winograd._GROWTH)
    if pass_name != "grad_weight":
        return winograd.admits(pass_name, operands, geom)
    x, gy = operands[0], operands[1]
    # each gradient value sums every tile of the batch (3-d: of every output slice)
    images = x.shape[0] * (gy.shape[2] if geom.ndim == 3 else 1)
    tiles = _tiles(images, gy.shape[-2:])
    return within(operands, (0, 1), SPREAD_LIMIT, tiles * winograd._GROWTH)


def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """True for the three passes of 2-D 3x3 stride-1 float32/float64 convolutions, any dilation
    (dilation ``d`` runs as ``d x d`` undilated convolutions of the phase sub-images), forward and
    grad_input where the transformed weight fits the memory bound (:func:`_transform_fits`)."""
    if pass_name not in PASSES or np.dtype(dtype) not in _DTYPES:
        return False
    if geom.ndim == 3:
        return geom.stride == (1, 1, 1) and _supports3d(*_forward_call(pass_name, x_shape, w_shape, geom),
                                                        np.dtype(dtype), pass_name == "grad_weight")
    if geom.ndim != 2 or geom.kernel_size != (3, 3) or geom.stride != (1, 1):
        return False
    if not geom.fits(x_shape, w_shape):
        return False
    return pass_name == "grad_weight" or _transform_fits(x_shape, w_shape, geom, dtype)


def _transform_fits(x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                    dtype: np.dtype) -> bool:
    """:func:`npconv.kernels.winograd.transform_fits` with the workers' scratch of the C call."""
    n, c, in_size, o = x_shape[0], x_shape[1], tuple(x_shape[2:]), w_shape[0]
    out_size = geom.output_size(in_size)
    threads = max(1, get_num_threads())
    layout = _layout(n, c, in_size, o, out_size, geom.pads(in_size), geom.groups, np.dtype(dtype), threads,
                     None)
    scratch = 0 if layout is None else layout[1] * np.dtype(dtype).itemsize * threads
    return winograd.transform_fits(x_shape, w_shape, geom, dtype, 36, scratch)


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """Measured rule (docs/performance.md): float32, at least 16 input and output channels per group, at least
    :data:`MIN_TILES` 4x4 output tiles per C call (a dilation ``d`` makes one call per output phase: with
    fewer, reading the transformed weight, 4x the weight, costs more than the 2.25 multiplies per output
    save) and :data:`MIN_MACS` multiply-adds (its per-call weight transform and data check against a planned
    GEMM), with several workers sharing the tiles at least ``channels / TILE_CHANNEL_RATIO`` or
    :data:`MIN_TILES` tiles per worker and call,
    enough channels for the vectors of tiles (:data:`MIN_CHANNEL_LANES`; a grouped call:
    :data:`MIN_GROUP_CHANNEL_LANES`). Any dilation: the phases read and write their strided elements where
    they are (two threads, batch 8, ms, Winograd / implicit GEMM: 64x56 dilation 2 3.6-4.5 / 4.8-4.9,
    dilation 3 4.9-5.5 / 5.5-5.6; 128x28 dilation 2 3.1-4.1 / 4.5-4.7; planned, batch 1: 64x56 dilation 2,
    49 tiles per phase, 0.94 / 1.23; dilation 3, 25 per phase, 1.46 / 1.27, on one thread 1.99 / 2.40)."""
    if not supports(pass_name, x_shape, w_shape, geom, dtype) or np.dtype(dtype) != np.float32:
        return False
    if geom.ndim == 3:  # the 2-d rule of the depth slices' products, each at least MIN_SLICE_TILES wide
        x_shape, w_shape, geom = _forward_call(pass_name, x_shape, w_shape, geom)
        tiles = _tiles(1, geom.output_size(tuple(x_shape[2:]))[1:])
        if tiles < MIN_SLICE_TILES:
            return False
        if pass_name == "grad_weight":  # products of KD * C x O pairs over a slice's tiles
            return math.prod(w_shape[:3]) <= GW3_PAIRS_PER_TILE * tiles
        return recommended("forward", *_plane_call(x_shape, w_shape, geom), dtype)
    channels = min(x_shape[1], w_shape[0]) // geom.groups
    out = geom.output_size(x_shape[2:])
    if pass_name == "grad_weight":
        return _recommended_grad_weight(x_shape, w_shape, geom, out, channels)
    dh, dw = geom.dilation
    phase_h, phase_w = -(-out[0] // dh), -(-out[1] // dw)  # one phase sub-image's outputs
    th, tw = -(-phase_h // 4), -(-phase_w // 4)
    tiles = x_shape[0] * th * tw  # per call (per phase)
    threads = max(1, get_num_threads())
    # every worker runs all the tiles: one thread, or output channels split across the workers
    parts = threads > 1 and geom.dilation == (1, 1) and bool(
        _channel_parts(x_shape[0], geom.groups, w_shape[0], tiles, x_shape[1], threads))
    whole = threads == 1 or parts
    lanes = _LANES.get(backends.core.isa, 16)
    run = max(1, min(RUN_TILES, tiles // (1 if whole else threads)))
    lane_share = run / (-(-run // lanes) * lanes)
    grid = 16 * th * tw / max(1, phase_h * phase_w)
    per_worker = whole or _tiles_shared(tiles, channels, threads) or tiles >= MIN_TILES * threads
    enough = geom.multiply_adds(x_shape, w_shape) >= MIN_MACS.get(backends.core.isa, 0)
    lanes_needed = MIN_GROUP_CHANNEL_LANES if geom.groups > 1 else MIN_CHANNEL_LANES
    return (channels >= 16 and tiles >= MIN_TILES and enough and per_worker
            and channels * lane_share / grid >= lanes_needed)


def _recommended_grad_weight(x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                             out: Sequence[int], channels: int) -> bool:
    """grad_weight's rule: at least 16 channels per group, :data:`GW_MIN_TILES` output tiles per call
    (its products are ``36 x O x C/G`` per work item whatever the tiles: two threads, ms, Winograd /
    GEMM, 256x14 batch 8 (128 tiles) 6.8 / 9.2, batch 4 5.0 / 4.4, batch 1 3.6 / 1.4; 128x28 batch 2
    (98 tiles) 1.8 / 1.8; 64x56 batch 1 (196 tiles) 0.71 / 0.77), accumulators that fit its share
    of the scratch (:func:`_gw_split`), no dilation (its phases' calls read strided elements: 64x56
    dilation 2 batch 8 5.3 / 5.2, 128x28 5.7 / 5.2); grouped: :data:`GW_GROUP_MIN_TILE_CHANNELS`."""
    tiles = _tiles(x_shape[0], out)
    threads = max(1, get_num_threads())
    by_channels, accumulators = _gw_split(tiles, w_shape[0], w_shape[1], geom.groups, threads)
    fits = accumulators * 36 * w_shape[0] * w_shape[1] * 8 <= workspace.SCRATCH_BYTES // 2
    grouped_pays = geom.groups == 1 or (channels > 16 and tiles * channels >= GW_GROUP_MIN_TILE_CHANNELS)
    return channels >= 16 and tiles >= GW_MIN_TILES and fits and geom.dilation == (1, 1) and grouped_pays


def _gw_split(tiles: int, o: int, cg: int, groups: int, threads: int) -> tuple[bool, int]:
    """``(split by output channels, accumulators)`` of a grad_weight call (:data:`GW_CHANNEL_SPLIT`)."""
    by_channels = (threads > 1 and groups == 1 and o >= 16 * threads
                   and tiles < GW_CHANNEL_SPLIT * o * cg / 64)
    return by_channels, 1 if by_channels else threads


def _cap(c: int, o: int, dtype: np.dtype, threads: int) -> int:
    """Tiles per work item: :data:`_TARGET_TILES`, fewer where ``36 (C + O)`` values per tile would
    exceed a thread's share of half the scratch budget."""
    tile_bytes = 36 * (c + o) * dtype.itemsize
    return max(1, min(_TARGET_TILES, workspace.SCRATCH_BYTES // 2 // threads // tile_bytes))


def _tiles(n: int, out_size: Sequence[int]) -> int:
    """4x4 output tiles of ``n`` images of ``out_size``."""
    return n * -(-out_size[0] // 4) * -(-out_size[1] // 4)


def _phase(r: int, d: int, low: int, size: int, out: int) -> tuple[int, slice, tuple[int, int], int]:
    """Output phase ``r`` of dilation ``d`` along one axis: ``(input phase, crop of the input phase
    sub-image, its (low, high) zero padding, output count)`` of the undilated convolution giving
    outputs ``r, r + d, ...``: output ``r + d i`` reads input ``r + d (i + p) - low`` (taps ``p``)."""
    count = -(-(out - r) // d)
    phase = (r - low) % d
    shift = (r - low - phase) // d  # sub-image row of tap 0 of output 0
    rows = len(range(phase, size, d))
    start, stop = max(0, shift), min(rows, shift + count + 2)
    return phase, slice(start, max(start, stop)), (max(0, -shift), max(0, shift + count + 2 - rows)), count


def _phases(in_size: tuple[int, ...], out: tuple[int, ...],
            geom: ConvGeometry) -> Iterator[tuple[int, int, tuple | None]]:
    """The output phases ``(rh, rw, call)`` of a dilated call; ``call`` is ``(input size, output size,
    (low, high) zero padding, phase)`` of the phase's undilated C call (``phase`` as
    :func:`_geometry` takes it), None for a phase that reads padding only (:func:`_phase`)."""
    lows = [lo for lo, _ in geom.pads(in_size)]
    dh, dw = geom.dilation
    for rh in range(min(dh, out[0])):
        ph, crop_h, pad_h, count_h = _phase(rh, dh, lows[0], in_size[0], out[0])
        for rw in range(min(dw, out[1])):
            pw, crop_w, pad_w, count_w = _phase(rw, dw, lows[1], in_size[1], out[1])
            rows, cols = crop_h.stop - crop_h.start, crop_w.stop - crop_w.start
            if rows <= 0 or cols <= 0:
                yield rh, rw, None
                continue
            phase = ((dh, dw), in_size, (ph + dh * crop_h.start, pw + dw * crop_w.start), out, (rh, rw))
            yield rh, rw, ((rows, cols), (count_h, count_w), (pad_h, pad_w), phase)


def _dilated(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None,
             epilogue: Epilogue | None) -> np.ndarray:
    """A dilated stride-1 3x3 convolution as ``d_h x d_w`` undilated ones, one per output phase, each
    a C call on the phase's strided elements of ``x`` and ``y`` (no copies)."""
    in_size = tuple(x.shape[2:])
    out = geom.output_size(in_size)
    dtype = _check(x, w)
    y = np.empty(x.shape[:1] + w.shape[:1] + out, dtype)
    if y.size == 0:
        return y
    bias, now, activation = compiled_epilogue(bias, epilogue)
    act, lo, hi = (0, 0.0, 0.0) if now is None else (now.code, float(now.lo), float(now.hi))
    dh, dw = geom.dilation
    x = np.ascontiguousarray(x, dtype=dtype)
    u = None
    for rh, rw, call in _phases(in_size, out, geom):
        if call is None:  # the whole phase reads padding: the epilogue of zeros
            target = y[:, :, rh::dh, rw::dw]
            target[...] = 0
            if bias is not None or now is not None:
                target[...] = epilogue_(np.ascontiguousarray(target), bias, now)
            continue
        sub_in, sub_out, pads, phase = call
        u = _call(x, w, bias, y, sub_in, sub_out, pads, geom.groups, act, lo, hi, phase, u)
    return y if activation is None else epilogue_(y, None, activation)


def _forward_call(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int],
                  geom: ConvGeometry) -> tuple[tuple[int, ...], tuple[int, ...], ConvGeometry]:
    """``(x shape, w shape, geometry)`` of the forward call that runs a stride-1 forward or grad_input pass
    (grad_input: ``gy``, cropped, with the flipped channel-transposed kernel: :func:`grad_input`)."""
    if pass_name != "grad_input":
        return tuple(x_shape), tuple(w_shape), geom
    in_size = tuple(x_shape[2:])
    out = geom.output_size(in_size)
    adjoint, crop = geom.stride1_adjoint(in_size, out)
    cropped = tuple(len(range(*part.indices(m))) for part, m in zip(crop, out, strict=True))
    return (x_shape[0], w_shape[0], *cropped), (w_shape[1], w_shape[0], *w_shape[2:]), adjoint


def _plane_call(x_shape: Sequence[int], w_shape: Sequence[int],
                geom: ConvGeometry) -> tuple[tuple[int, ...], tuple[int, ...], ConvGeometry]:
    """A 3-d forward as a 2-d call for the planner's rule (:func:`recommended`): ``(x shape, w shape,
    geometry)`` with the output depth slices as its images and ``KD * C`` input channels (each output
    slice's products; :func:`_forward3d` transforms each input slice once)."""
    in_size = tuple(x_shape[2:])
    out = geom.output_size(in_size)
    kd = geom.kernel_size[0]
    plane = ConvGeometry((3, 3), (1, 1), tuple(geom.pads(in_size)[1:]), (1, 1), 1)
    return (x_shape[0] * out[0], kd * x_shape[1], *in_size[1:]), (w_shape[0], kd * x_shape[1], 3, 3), plane


class _DepthItems(NamedTuple):
    """A 3-d call's work split (:func:`_depth_items`): ``slices`` output depth slices and ``tiles`` tiles of
    a slice per item, ``geometry`` the C call's (its C the V rows: ``(slices + KD - 1) * C``), ``scratch``
    its elements, ``items`` ``(image, z0, z1, t0, t1)``."""

    slices: int
    tiles: int
    geometry: tuple[int, ...]
    scratch: int
    items: list[tuple[int, int, int, int, int]]


#: The fewest tiles of a depth slice (the columns of its products) for the planner's 3-d rule. Two threads,
#: Zen 4, 3x3x3 ms, Winograd / planned GEMM: 7x7 slices (4 tiles) 256 channels 19.0 / 9.3, 64 channels
#: 1.6 / 1.2; 12x12 (9 tiles) 64 channels batch 4 2.6 / 2.5; 14x14 (16 tiles) 128 channels 4.9 / 6.7, 64
#: channels batch 2 2.0 / 3.2.
MIN_SLICE_TILES = 16
#: The 3-d grad_weight's rule: at most this many weight values ``O * C * KD`` per tile of a slice (each
#: slice's products sum over its tiles: few for many pairs is a product of little depth per accumulator).
#: Two threads, Zen 4, ms, Winograd / planned GEMM, 3x3x3: 128 channels 14x14 (16 tiles, 49152 values)
#: 8.7-8.9 / 7.9-8.0; 64 channels 14x14 batch 2 (12288) 3.2-3.8 / 3.9-4.3; 128 channels 28x28 batch 2 (49
#: tiles, 49152) 17.1-19.2 / 27.5-28.5; 32 channels 16x16 batch 8 (3072) 3.3 / 5.0-5.8; the benchmark's
#: 32 channels 32^3 (64 tiles) 10.8-12.1 / 19.3-19.9.
GW3_PAIRS_PER_TILE = 1024
#: A 3-d call's work item keeps its input slices' transforms (``V``: 36 x C x tiles per slice) in about
#: this many bytes of its worker's scratch, each input slice transformed once per item (an item of S
#: output slices transforms ``S + KD - 1``).
DEPTH_ITEM_BYTES = 4 << 20
#: Output slices are split into at least this many items per worker where a call has that many slices.
ITEMS_PER_WORKER = 2


def _depth_items(n: int, c: int, in_size: Sequence[int], o: int, out: Sequence[int], kd: int,
                 pads: Sequence[tuple[int, int]], dtype: np.dtype, threads: int) -> _DepthItems | None:
    """Items of at most :data:`_TARGET_TILES` tiles of a slice and as many output slices as
    :data:`DEPTH_ITEM_BYTES` holds, at least two per worker where the call has them (None: beyond the C
    kernel's limits)."""
    od, oh, ow = out
    tiles = -(-oh // 4) * -(-ow // 4)
    parts = -(-tiles // _TARGET_TILES)
    length = -(-tiles // parts)
    per_slice = 36 * c * (length + 32) * dtype.itemsize
    slices = max(1, min(od, DEPTH_ITEM_BYTES // per_slice - (kd - 1)))
    chunks = max(-(-od // slices), min(od, -(-ITEMS_PER_WORKER * threads // (n * parts))))
    slices = -(-od // chunks)
    geometry = _geometry(1, (slices + kd - 1) * c, in_size[1:], o, (oh, ow), pads[1:], 1, length, dtype)
    try:
        scratch = backends.core.module.winograd2d_scratch(geometry)
    except (ValueError, OverflowError):
        return None
    items = [(i, z0, min(z0 + slices, od), t0, min(t0 + length, tiles))
             for i in range(n) for z0 in range(0, od, slices) for t0 in range(0, tiles, length)]
    return _DepthItems(slices, length, geometry, scratch, items)


def _supports3d(x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry, dtype: np.dtype,
                weight: bool = False) -> bool:
    """A 3-d forward or grad_input :func:`_forward3d` (``weight``: grad_weight, :func:`_grad_weight3d`) runs:
    a ``(KD, 3, 3)`` kernel, stride and dilation 1, one group, within the C kernel's limits and the memory
    bound (the transformed weight or the workers' float64 accumulators, a copy of the weight, the result
    and the workers' scratch)."""
    if (geom.kernel_size[1:] != (3, 3) or geom.stride != (1, 1, 1) or geom.dilation != (1, 1, 1)
            or geom.groups != 1 or not geom.fits(x_shape, w_shape)):
        return False
    n, c, o, kd = x_shape[0], x_shape[1], w_shape[0], geom.kernel_size[0]
    in_size = tuple(x_shape[2:])
    out = geom.output_size(in_size)
    if min(out) < 1 or n == 0:
        return False
    threads = max(1, get_num_threads())
    split = _depth_items(n, c, in_size, o, out, kd, geom.pads(in_size), dtype, threads)
    if split is None:
        return False
    item, workers = dtype.itemsize, min(threads, len(split.items))
    y_bytes = n * o * math.prod(out) * item
    w_bytes = math.prod(w_shape) * item
    if weight:
        scratch = _gw3_scratch(split, o, kd * c, threads)
        if scratch is None:
            return False
        need = workers * 36 * o * kd * c * 8 + 2 * w_bytes + scratch * item * workers
        return need <= workspace.memory_bound(math.prod(x_shape) * item, y_bytes, w_bytes)
    need = y_bytes + 36 * o * kd * c * item + w_bytes + split.scratch * item * workers
    return need <= workspace.memory_bound(math.prod(x_shape) * item, w_bytes, y_bytes)


def _gw3_scratch(split: _DepthItems, o: int, columns: int, threads: int) -> int | None:
    """A 3-d grad_weight's scratch elements per worker, or None where its workers' float64 accumulators
    (``36 x O x KD * C`` each) exceed half the scratch budget (as the 2-d grad_weight's) or the C kernel
    refuses the geometry."""
    if min(threads, len(split.items)) * 36 * o * columns * 8 > workspace.SCRATCH_BYTES // 2:
        return None
    try:
        return backends.core.module.winograd2d_grad_weight_scratch(split.geometry)
    except (ValueError, OverflowError):
        return None


def _forward3d(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None,
               epilogue: Epilogue | None) -> np.ndarray:
    """A 3-d ``(KD, 3, 3)`` stride-1 convolution as Winograd in each depth slice, direct along the depth
    (``csrc/winograd.h`` ``winograd3d_forward``): output slice ``z`` is one product per point of ``U``
    (``w`` as ``(O, KD * C, 3, 3)``, ``w[o, c, j]`` at ``j * C + c``) with the transforms of input slices
    ``z - PD .. z - PD + KD - 1``, zeros in the depth padding. Work items (:func:`_depth_items`): output
    slices x tiles of one image, each transforming its input slices once; the NumPy GEMM beyond the C
    kernel's limits."""
    bias, now, activation = compiled_epilogue(bias, epilogue)
    act, lo, hi = (0, 0.0, 0.0) if now is None else (now.code, float(now.lo), float(now.hi))
    dtype = _check(x, w)
    n, c = x.shape[:2]
    o, kd = w.shape[0], w.shape[2]
    in_size = tuple(x.shape[2:])
    out = geom.output_size(in_size)
    y = np.empty((n, o) + out, dtype)
    if y.size == 0:
        return y
    threads = max(1, get_num_threads())
    pads = geom.pads(in_size)
    split = _depth_items(n, c, in_size, o, out, kd, pads, dtype, threads)
    if split is None:
        result = gemm.forward(x, w, geom, bias)
        after = now if now is not None else activation
        return result if after is None else epilogue_(result, None, after)
    core, isa, routines = backends.core.module, backends.core.isa_index, gemm_routines()
    x = np.ascontiguousarray(x, dtype=dtype)
    planes = np.ascontiguousarray(w.swapaxes(1, 2), dtype=dtype).reshape(o * kd * c, 3, 3)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    u = np.empty((36, o, kd * c), dtype)
    spans = workspace.ranges(planes.shape[0], threads)
    workspace.run_jobs([core.winograd2d_weight_job(isa, planes, u, *span) for span in spans])
    workers = min(threads, len(split.items))
    depth = (in_size[0], out[0], kd, pads[0][0], c)
    scratch = [workspace.buffer(f"compiled-wg-{k}", (split.scratch,), dtype) for k in range(workers)]
    prepare, geometry = core.winograd3d_forward_job, split.geometry
    jobs = [core.job_chain([prepare(isa, routines, x[i], u, b, y[i], scratch[k], geometry, depth, z0, z1, t0,
                                    t1, act, lo, hi)
                            for i, z0, z1, t0, t1 in split.items[k::workers]]) for k in range(workers)]
    workspace.run_jobs(jobs, 0 if own_products(dtype) else 1)
    return y if activation is None else epilogue_(y, None, activation)


def _grad_weight3d(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (O, C, KD, 3, 3)`` of a 3-d ``(KD, 3, 3)`` stride-1 convolution, :func:`_forward3d`'s adjoint in
    ``U`` (``csrc/winograd.h`` ``winograd3d_grad_weight``): per work item (:func:`_depth_items`) and output
    slice, ``GY (36 x O x tiles) @ V^T`` over the ``KD * C`` rows of its input slices, summed in the dtype
    per slice and added into the worker's float64 accumulator; ``G^T M G`` of their sum at the end (the 2-d
    finish). The implicit GEMM beyond the C kernel's limits or the accumulators' share of the scratch."""
    dtype = _check(x, gy)
    n, c = x.shape[:2]
    o, kd = gy.shape[1], geom.kernel_size[0]
    in_size, out = tuple(x.shape[2:]), tuple(gy.shape[2:])
    if min(x.shape + gy.shape) == 0:
        return np.zeros((o, c, kd, 3, 3), dtype)
    threads = max(1, get_num_threads())
    pads = geom.pads(in_size)
    split = _depth_items(n, c, in_size, o, out, kd, pads, dtype, threads)
    size = None if split is None else _gw3_scratch(split, o, kd * c, threads)
    if size is None:
        return gemm.grad_weight(x, gy, geom)
    workers, core = min(threads, len(split.items)), backends.core.module
    isa, routines = backends.core.isa_index, gemm_routines()
    x = np.ascontiguousarray(x, dtype=dtype)
    gy = np.ascontiguousarray(gy, dtype=dtype)
    sums = workspace.buffer("compiled-wg-gw", (workers, 36, o, kd * c), np.float64)
    scratch = [workspace.buffer(f"compiled-wg-{k}", (size,), dtype) for k in range(workers)]
    depth, geometry = (in_size[0], out[0], kd, pads[0][0], c), split.geometry
    prepare = core.winograd3d_grad_weight_job
    jobs = [core.job_chain([prepare(isa, routines, x[i], gy[i], sums[k], scratch[k], geometry, depth, z0, z1,
                                    t0, t1, j == 0)
                            for j, (i, z0, z1, t0, t1) in enumerate(split.items[k::workers])])
            for k in range(workers)]
    workspace.run_jobs(jobs, blas=0 if own_products(dtype) else 1)
    pairs = o * kd * c
    gw = np.empty((pairs, 3, 3), dtype)
    spans = workspace.ranges(pairs, threads if pairs >= GW_FINISH_PAIRS else 1)
    finish = core.winograd2d_grad_weight_finish
    workspace.run_calls(finish, [((sums, gw, workers), None, span) for span in spans])
    return np.ascontiguousarray(gw.reshape(o, kd, c, 3, 3).swapaxes(1, 2))


def _geometry(n: int, c: int, in_size: Sequence[int], o: int, out_size: Sequence[int],
              pads: Sequence[tuple[int, int]], groups: int, cap: int, dtype: np.dtype,
              phase: tuple | None = None) -> tuple[int, ...]:
    """The extension's geometry tuple ``(N, C, H, W, O, OH, OW, PH, PW, G, CAP, CBLOCK, DH, DW, XH, XW,
    X0H, X0W, YH, YW, Y0H, Y0W)``; ``phase`` ``(dilation, full input size, first input element, full
    output size, first output element)`` of a dilated call's phase, None for the whole arrays."""
    block = winograd.CHANNEL_BLOCK if dtype == np.float32 else 0
    if phase is None:
        phase = ((1, 1), in_size, (0, 0), out_size, (0, 0))
    dilation, full_in, first_in, full_out, first_out = phase
    low = (lo for lo, _ in pads)  # the high side is implied by the output size
    return (n, c, *in_size, o, *out_size, *low, groups, cap, block, *dilation, *full_in, *first_in, *full_out,
            *first_out)


def _items(total: int, cap: int, threads: int) -> list[tuple[int, int]]:
    """``total`` tiles in contiguous ranges of one length (the last shorter) of at most ``cap``, about
    a multiple of ``threads`` of them when there are enough tiles (each worker gets the same share).
    One length: a shared range claimed in runs of it gives the same items (a tile's result depends
    on its item: the products' leftover columns are summed in another order)."""
    parts = -(-total // cap)
    parts = min(total, -(-parts // threads) * threads)
    length = -(-total // parts)
    return [(start, min(start + length, total)) for start in range(0, total, length)]


def _check(*arrays: np.ndarray) -> np.dtype:
    dtype = np.result_type(*arrays)
    if dtype not in _DTYPES:
        raise TypeError(f"winograd convolution needs float32 or float64 arrays, got {dtype}")
    return dtype


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None,
            epilogue: Epilogue | None = None) -> np.ndarray:
    """``y (N, O, *out) = conv(x (N, C, H, W), w (O, C/groups, 3, 3)) (+ bias[o])`` with zero padding
    ``geom.pads()``; ``epilogue=`` (instead of ``bias``): its bias and activation, applied in the
    output transform (ReLU, ReLU6/hardtanh, SiLU). 3-d (``w (O, C, KD, 3, 3)``, stride and dilation 1,
    one group): :func:`_forward3d`."""
    if geom.ndim == 3:
        return _forward3d(x, w, geom, bias, epilogue)
    if geom.dilation != (1, 1):
        return _dilated(x, w, geom, bias, epilogue)
    bias, now, activation = compiled_epilogue(bias, epilogue)
    act, lo, hi = (0, 0.0, 0.0) if now is None else (now.code, float(now.lo), float(now.hi))
    dtype = _check(x, w)
    out_size = geom.output_size(tuple(x.shape[2:]))
    y = np.empty(x.shape[:1] + w.shape[:1] + tuple(out_size), dtype)
    if y.size:
        _call(np.ascontiguousarray(x, dtype=dtype), w, bias, y, tuple(x.shape[2:]), out_size,
              geom.pads(tuple(x.shape[2:])), geom.groups, act, lo, hi)
    return y if activation is None else epilogue_(y, None, activation)


def _settings() -> tuple:
    """What a forward's work split depends on besides the call (a prepared forward's token)."""
    return (get_num_threads(), backends.core.isa, _TARGET_TILES, TILE_CHANNEL_RATIO, CHANNEL_PART_MIN,
            workspace.SCRATCH_BYTES, workspace.SHARED_RANGES, workspace.SHARED_MIN_MACS,
            workspace.CLAIMS_PER_WORKER, winograd.CHANNEL_BLOCK, SHARED_INPUT_TRANSFORM)


def prepare_forward(x_shape: tuple[int, ...], x_dtype: np.dtype, w: np.ndarray, geom: ConvGeometry,
                    bias: np.ndarray | None = None,
                    epilogue: Epilogue | None = None) -> PreparedForward | None:
    """:func:`forward` of inputs of ``x_shape`` and ``x_dtype`` planned once (the C call's work split,
    valid while :func:`_settings` hold), with a ``bind``; None for dilated calls and beyond the C
    kernel's size limits. A bound run, and ``run`` within :data:`KEPT_TRANSFORM_BYTES`, transforms
    the weight again only where its values changed (in place, or refilled from a converted copy)
    since the last run; ``run`` from a second thread while one runs transforms it itself (a forked
    child keeps a transform of its own)."""
    dtype = np.result_type(x_dtype, w.dtype)
    if geom.ndim != 2 or geom.dilation != (1, 1) or dtype not in _DTYPES:
        return None
    n, c = x_shape[:2]
    o, in_size = w.shape[0], tuple(x_shape[2:])
    out_size = geom.output_size(in_size)
    if n * o * math.prod(out_size) == 0:
        return None
    settings = _settings()
    layout = _layout(n, c, in_size, o, out_size, geom.pads(in_size), geom.groups, dtype,
                     max(1, get_num_threads()), None)
    if layout is None:
        return None
    y_shape = (n, o) + out_size
    bias_, now, later = compiled_epilogue(bias, epilogue)
    codes = (0, 0.0, 0.0) if now is None else (now.code, float(now.lo), float(now.hi))

    def bind_residual(x: np.ndarray, y: np.ndarray, source: ScratchSource, residual: np.ndarray | None,
                      activation: Activation | None) -> Callable[[], None]:
        act, lo, hi = fused_residual_codes(codes, later, residual, activation)

        def jobs_of(wc: np.ndarray, b: np.ndarray | None) -> Callable[[], None]:
            transform = not layout[3]
            kept = _kept(wc, layout) if KEEP_TRANSFORM else None
            u = np.empty((36,) + w.shape[:2], dtype) if transform and kept is None else None

            def scratch(k: int) -> np.ndarray:
                return source(f"compiled-wg-{k}", layout[1], dtype)

            made = _jobs(x, wc, b, y, u, layout, transform, act, lo, hi, scratch, kept, residual)
            runs = [workspace.prepared_run(jobs, blas, chunk) for jobs, blas, chunk in made]

            def run_all() -> None:
                for run in runs:
                    run()

            return run_all

        return bound_run(x, tuple(x_shape), y, y_shape, dtype, w, bias_, jobs_of, later, residual=residual)

    def bind(x: np.ndarray, y: np.ndarray, source: ScratchSource) -> Callable[[], None]:
        return bind_residual(x, y, source, None, None)

    eager = _EagerTransform()

    def run(x: np.ndarray) -> np.ndarray:
        if not KEEP_TRANSFORM or not eager.acquire():  # another thread runs it
            return forward(x, w, geom, bias, epilogue)
        try:
            wc = np.ascontiguousarray(w, dtype=dtype)
            kept = eager.kept if eager.kept is not None else eager.keep(wc, layout)
            if kept is None:  # beyond KEPT_TRANSFORM_BYTES
                return forward(x, w, geom, bias, epilogue)
            y = np.empty(y_shape, dtype)
            _run_layout(np.ascontiguousarray(x, dtype=dtype), wc, bias_, y, None, layout, True, *codes, kept)
        finally:
            eager.lock.release()
        return y if later is None else epilogue_(y, None, later)

    return PreparedForward(run, (_settings,), (settings,), bind,
                           bind_residual if not codes[0] and later is None else None)


class _Kept(NamedTuple):
    """A weight's transform kept across runs (:func:`_kept`): ``units``, ``U`` per output channel part
    of the layout (one without parts), made from ``seen``, the weight's values then."""

    seen: np.ndarray
    units: list[np.ndarray]


def _kept(w: np.ndarray, layout: tuple) -> _Kept:
    """Room for ``U`` of ``w`` (C-contiguous) per output channel part of ``layout``, not made yet:
    ``seen`` starts as the bitwise complement of ``w``, so that the first run's weight jobs find every
    range changed and transform it (split across the workers, as an unkept call's)."""
    o, c = w.shape[:2]
    bits = np.dtype(f"u{w.dtype.itemsize}")
    seen = np.invert(w.view(bits)).view(w.dtype)
    return _Kept(seen, [np.empty((36, stop - first, c), w.dtype) for first, stop in layout[3] or [(0, o)]])


#: Plans kept by modules in inference (``PreparedForward.run``, not a bound run) keep their weight's
#: transform ``U`` (4x the weight) and a copy of the weight (:data:`KEEP_TRANSFORM`) while this many
#: bytes of them in all allow it (first come, kept until the plan goes; beyond it a run transforms the
#: weight itself): ResNet-18's 3x3 layers hold 45 MiB at batch 1, 180 MiB at batch 8 (512 channels at
#: 7x7 on Winograd too). 0 keeps none.
KEPT_TRANSFORM_BYTES = 256 << 20
_kept_bytes = 0
_kept_lock = threading.RLock()  # reentrant: a finalizer may release while the same thread reserves


class _EagerTransform:
    """A prepared forward's kept transform (:data:`KEPT_TRANSFORM_BYTES`), run by one thread at a time
    (``lock``; another thread's run at the same time transforms the weight itself)."""

    __slots__ = ("lock", "kept", "reserved", "pid", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: _Kept | None = None
        self.reserved = 0
        self.pid = os.getpid()

    def acquire(self) -> bool:
        """Whether this thread may run on the kept transform (then it holds ``lock``). In a forked child
        the parent's lock may have been held at the fork, its ``U`` half made: both start again."""
        if self.pid != os.getpid():
            with _kept_lock:
                if self.pid != os.getpid():
                    self.lock, self.kept, self.pid = threading.Lock(), None, os.getpid()
        return self.lock.acquire(blocking=False)

    def keep(self, w: np.ndarray, layout: tuple) -> _Kept | None:
        """:func:`_kept` of ``w``, counted until this object goes, or None beyond the budget."""
        global _kept_bytes
        size = 5 * w.nbytes  # the copy and 36 / 9 of it
        if not self.reserved:
            with _kept_lock:
                if _kept_bytes + size > KEPT_TRANSFORM_BYTES:
                    return None
                _kept_bytes += size
            self.reserved = size
            weakref.finalize(self, _release_kept, size)
        self.kept = _kept(w, layout)
        return self.kept


def _release_kept(size: int) -> None:
    global _kept_bytes
    with _kept_lock:
        _kept_bytes -= size


def _after_fork_in_child() -> None:
    global _kept_lock
    _kept_lock = threading.RLock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _call(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, y: np.ndarray, in_size: tuple[int, ...],
          out_size: tuple[int, ...], pads: Sequence[tuple[int, int]], groups: int, act: int, lo: float,
          hi: float,
          phase: tuple | None = None, u: np.ndarray | None = None) -> np.ndarray | None:
    """``y`` (or its ``phase``, see :func:`_geometry`) from ``x`` (C-contiguous, y's dtype) by the C
    kernel, or by the NumPy Winograd beyond the kernel's size limits. Returns the transformed weight
    ``U`` it used (``u``, or made here) for the next phase of the same call."""
    dtype = y.dtype
    n, c = x.shape[:2]
    o = w.shape[0]
    threads = max(1, get_num_threads())
    layout = _layout(n, c, in_size, o, out_size, pads, groups, dtype, threads, phase)
    if layout is None:  # beyond the C kernel's size limits: the NumPy variant
        _numpy_call(x, w, bias, y, in_size, pads, groups, act, lo, hi, phase)
        return u
    w = np.ascontiguousarray(w, dtype=dtype)
    made = u is None and not layout[3]
    if made:
        u = np.empty((36,) + w.shape[:2], dtype)
    _run_layout(x, w, bias, y, u, layout, made, act, lo, hi)
    return None if layout[3] else u


def _run_layout(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, y: np.ndarray, u: np.ndarray | None,
                layout: tuple, transform: bool, act: int, lo: float, hi: float,
                kept: _Kept | None = None) -> None:
    """:func:`_jobs` of a C call (``x`` and ``w`` C-contiguous, y's dtype) run now on the workers, each with
    its thread's scratch buffer."""
    dtype = y.dtype
    b = None if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    runs = _jobs(x, w, b, y, u, layout, transform, act, lo, hi,
                 lambda k: workspace.buffer(f"compiled-wg-{k}", (layout[1],), dtype), kept)
    for jobs, blas, chunk in runs:
        workspace.run_jobs(jobs, blas, chunk)


def _layout(n: int, c: int, in_size: tuple[int, ...], o: int, out_size: tuple[int, ...],
            pads: Sequence[tuple[int, int]], groups: int, dtype: np.dtype, threads: int,
            phase: tuple | None) -> tuple | None:
    """``(geometry, scratch elements, threads, output channel parts)`` of a C call (None: beyond its
    size limits); the parts (:func:`_channel_parts`) only for a whole (undilated) call."""
    parts = _channel_parts(n, groups, o, _tiles(n, out_size), c, threads) if phase is None else []
    try:
        cap = _cap(c, o, dtype, threads)
        geometry = _geometry(n, c, in_size, o, out_size, pads, groups, cap, dtype, phase)
        # the scratch for the longest item, not the cap, where that gives the same items (_jobs')
        total, workers = _tiles(geometry[0], geometry[5:7]), 1 if parts else threads
        items = _items(total, cap, workers)
        longest = max(stop - start for start, stop in items)
        if longest < cap and _items(total, longest, workers) == items:
            geometry = _geometry(n, c, in_size, o, out_size, pads, groups, longest, dtype, phase)
        size = backends.core.module.winograd2d_scratch(geometry)
    except (ValueError, OverflowError):
        return None
    return geometry, size, threads, parts


def _jobs(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, y: np.ndarray, u: np.ndarray | None,
          layout: tuple, transform: bool, act: int, lo: float, hi: float,
          scratch: Callable[[int], np.ndarray],
          kept: _Kept | None = None, residual: np.ndarray | None = None) -> list[tuple[list, int, int]]:
    """The prepared jobs of a C call, ``(jobs, blas, chunk)`` per run of :func:`workspace.run_jobs`, in
    order; worker ``k``'s scratch ``scratch(k)``. ``x``, ``w`` (C-contiguous), ``b`` and ``y`` of one
    dtype. Channel parts: worker ``k`` transforms the weights of its output channels into its own ``U``
    and runs every tile for them (one image: ``y[:, first:stop]`` is contiguous). Else ``U = G w G^T``
    into ``u`` first where ``transform`` (the kernels split across the workers), then the tiles, shared
    by the workers claiming item by item (the items of one length: the same items) or worker ``k``
    running items ``k, k + workers, ...`` in order. ``kept`` (:func:`_kept` of this layout: the jobs
    transform into its ``U`` s, not ``u``): each transform job skips its range of ``w`` where that
    equals ``kept.seen`` (else transforms it and copies it there): an unchanged weight is not
    transformed again.
    ``residual`` (None, or laid out as ``y``): ``y = act(y + residual)``, each output run's values added
    while in cache."""
    core, dtype = backends.core.module, y.dtype
    geometry, _, threads, parts = layout
    routines, isa = gemm_routines(), backends.core.isa_index
    blas = 0 if own_products(dtype) else 1  # products on the BLAS: held to one thread per worker
    prepare = core.winograd2d_forward_job
    if parts:
        c = w.shape[1]
        items = _items(_tiles(geometry[0], geometry[5:7]), geometry[10], 1)
        # one item (the tiles fit one call): the workers transform a share of the input channels each into
        # worker 0's V, then run their output channels' products from it (SHARED_INPUT_TRANSFORM)
        staged = SHARED_INPUT_TRANSFORM and len(items) == 1
        shares, owns = workspace.ranges(c, len(parts)), [scratch(k) for k in range(len(parts))]
        jobs, products = [], []
        for k, (first, stop) in enumerate(parts):
            uk = np.empty((36, stop - first, c), dtype) if kept is None else kept.units[k]
            part = geometry[:4] + (stop - first,) + geometry[5:]
            bk, yk, own = None if b is None else b[first:stop], y[:, first:stop], owns[k]
            rk = None if residual is None else residual[:, first:stop]
            sk = None if kept is None else kept.seen[first:stop]
            head = (isa, routines, x, uk, bk, yk, own, part)
            weight = core.winograd2d_weight_job(isa, w[first:stop], uk, 0, (stop - first) * c, sk)
            if staged:
                stage = prepare(*head, *items[0], act, lo, hi, 1, owns[0], *shares[k])
                jobs.append(core.job_chain([weight, stage]))
                products.append(prepare(*head, *items[0], act, lo, hi, 2, owns[0], 0, 0, *_residual_arg(rk)))
            else:
                whole = _unstaged(rk)
                jobs.append(core.job_chain([weight] + [prepare(*head, *span, act, lo, hi, *whole)
                                                       for span in items]))
        return [(jobs, blas, 0), (products, blas, 0)] if staged else [(jobs, blas, 0)]
    runs = []
    seen = None
    if kept is not None:
        u, seen, transform = kept.units[0], kept.seen, True
    if transform:
        kernels = w.shape[0] * w.shape[1]
        spans = workspace.ranges(kernels, threads) if kernels else [(0, 0)]
        runs.append(([core.winograd2d_weight_job(isa, w, u, *span, seen) for span in spans], 0, 0))
    total = _tiles(geometry[0], geometry[5:7])
    items = _items(total, geometry[10], threads)
    workers = min(threads, len(items))
    own = [scratch(k) for k in range(workers)]
    n, c, o, oh, ow, groups = (geometry[i] for i in (0, 1, 4, 5, 6, 9))
    whole = _unstaged(residual)
    if workspace.shared_chunk(total, workers, n * o * c // groups * 9 * oh * ow):
        runs.append(([prepare(isa, routines, x, u, b, y, own[k], geometry, 0, total, act, lo, hi, *whole)
                      for k in range(workers)], blas, items[0][1] - items[0][0]))
    else:
        runs.append(([core.job_chain([prepare(isa, routines, x, u, b, y, own[k], geometry, *span, act, lo, hi,
                                              *whole)
                                      for span in items[k::workers]]) for k in range(workers)], blas, 0))
    return runs


def _residual_arg(residual: np.ndarray | None) -> tuple:
    """The C call's trailing residual argument (none without one)."""
    return () if residual is None else (residual,)


def _unstaged(residual: np.ndarray | None) -> tuple:
    """An unstaged C call's optional arguments after ``act, lo, hi``: the stage's defaults and the residual
    (none without one)."""
    return () if residual is None else (0, None, 0, 0, *_residual_arg(residual))


def _channel_parts(n: int, groups: int, o: int, tiles: int, c: int, threads: int) -> list[tuple[int, int]]:
    """Output channel ranges, one per worker, of a call whose tiles are too few to share
    (:data:`TILE_CHANNEL_RATIO`): one ungrouped image, several threads, at least
    :data:`CHANNEL_PART_MIN` channels per worker; [] to share the tiles."""
    if n != 1 or groups != 1 or threads < 2 or o < CHANNEL_PART_MIN * threads:
        return []
    if _tiles_shared(tiles, min(c, o), threads):
        return []
    return workspace.ranges(o, threads)


def _tiles_shared(tiles: int, channels: int, threads: int) -> bool:
    """Whether a call's tiles are enough for ``threads`` workers to share (:data:`TILE_CHANNEL_RATIO`)."""
    return TILE_CHANNEL_RATIO * tiles >= channels * threads


def _numpy_call(x, w, bias, y, in_size, pads, groups, act, lo, hi, phase) -> None:
    """:func:`_call`'s work by the NumPy Winograd (activation afterwards)."""
    if phase is None:
        sub, target = x, y
    else:
        (dh, dw), _, (ih, iw), _, (rh, rw) = phase
        sub = x[:, :, ih::dh, iw::dw][:, :, :in_size[0], :in_size[1]]
        target = y[:, :, rh::dh, rw::dw]
    part = ConvGeometry((3, 3), (1, 1), tuple(pads), (1, 1), groups)
    result = winograd.forward(sub, w, part, bias)
    if act:
        activation = Activation.of_code(act, lo, hi)
        result = epilogue_(np.ascontiguousarray(result), None, activation)
    target[...] = result


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
               bias: np.ndarray | None = None, epilogue: Epilogue | None = None) -> np.ndarray:
    """``gx (N, C, *input_size) (+ bias[c])``: the forward pass of ``gy`` with the flipped, transposed
    kernel (``bias``: a transposed convolution's; ``epilogue=`` as in :func:`forward`)."""
    _check(gy, w)
    adjoint, crop = geom.stride1_adjoint(tuple(input_size), gy.shape[2:])
    flipped = adjoint_kernel(w, geom.groups, compiled=True)
    return forward(gy[(slice(None), slice(None)) + crop], flipped, adjoint, bias, epilogue=epilogue)


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``gw (O, C/groups, 3, 3) = sum_n corr(x, gy)`` as the forward's adjoint in ``U``: ``G^T M G``
    with ``M[k] (O, C/G) = sum over the 4x4 output tiles of (A gy A^T)[k] (B^T d B)[k]`` (the C
    kernel; a dilation ``d``: the ``d x d`` output phases' undilated calls, as :func:`forward`'s, into
    one accumulator): each work item's products summed in the dtype (at most ``_TARGET_TILES`` tiles
    deep), into float64 accumulators. Workers take ranges of tiles (each its own accumulator, added
    in a fixed order) or, for an ungrouped call with few tiles for its channel pairs
    (:data:`GW_CHANNEL_SPLIT`), ranges of output channels of one accumulator (each transforming all
    of the input tiles). Accumulators beyond half of ``workspace.SCRATCH_BYTES`` (the memory bound):
    the direct products (:mod:`npconv.kernels.gemm`)."""
    if geom.ndim == 3:
        return _grad_weight3d(x, gy, geom)
    dtype = _check(x, gy)
    n, c = x.shape[:2]
    o = gy.shape[1]
    groups = geom.groups
    cg = c // groups
    in_size, out_size = tuple(x.shape[2:]), tuple(gy.shape[2:])
    if min(x.shape + gy.shape) == 0:
        return np.zeros((o, cg, 3, 3), dtype)
    threads = max(1, get_num_threads())
    cap = _cap(c, o, dtype, threads)
    calls = _gw_calls(n, c, o, in_size, out_size, geom, cap, dtype)
    if not calls:  # every output phase reads padding only
        return np.zeros((o, cg, 3, 3), dtype)
    total = sum(tiles for _, tiles in calls)
    by_channels, _ = _gw_split(total, o, cg, groups, threads)
    items = [(geometry, _items(tiles, cap, 1 if by_channels else threads)) for geometry, tiles in calls]
    workers = threads if by_channels else max(1, min(threads, max(len(spans) for _, spans in items)))
    accumulators = 1 if by_channels else workers
    core = backends.core.module
    try:
        if accumulators * 36 * o * cg * 8 > workspace.SCRATCH_BYTES // 2:
            raise ValueError("accumulators beyond the scratch share")
        size = max(core.winograd2d_grad_weight_scratch(geometry) for geometry, _ in calls)
    except (ValueError, OverflowError):  # beyond the C kernel's size limits or the memory bound
        return gemm.grad_weight(x, gy, geom)
    x = np.ascontiguousarray(x, dtype=dtype)
    gy = np.ascontiguousarray(gy, dtype=dtype)
    if by_channels:  # worker k: every item, output channels [o0, o1) (whole register tiles of 8 rows)
        bounds = [o * k // workers // 8 * 8 for k in range(workers)] + [o]
        work = [[(geometry, span, bounds[k], bounds[k + 1], 0) for geometry, spans in items for span in spans]
                for k in range(workers)]
    else:
        work = [[(geometry, span, 0, o, k) for geometry, spans in items for span in spans[k::workers]]
                for k in range(workers)]
    # cached buffers (no fresh pages to fault in: 18.9 MB at 256x256); each worker's first item stores
    # its products instead of adding them (no zeroing pass), in the dtype where it is the only one (the
    # float64 values would be the same; half the memory traffic)
    single = all(len(items_k) <= 1 for items_k in work)
    sums = workspace.buffer("compiled-wg-gw", (accumulators, 36, o, cg), dtype if single else np.float64)
    scratch = [workspace.buffer(f"compiled-wg-{k}", (size,), dtype) for k in range(workers)]
    routines, isa = gemm_routines(), backends.core.isa_index
    prepare = core.winograd2d_grad_weight_job
    store = 2 if single else 1
    if by_channels and single and SHARED_INPUT_TRANSFORM:  # one item: the input transform shared (stages)
        shares = workspace.ranges(c, workers)  # fewer than the workers where channels are fewer
        calls = [(k,) + work[k][0][:4] for k in range(workers)]  # (worker, geometry, span, o0, o1)
        workspace.run_jobs([prepare(isa, routines, x, gy, sums[0], scratch[k], geometry, *span, o0, o1, store,
                                    1, scratch[0], *share)
                            for share, (k, geometry, span, o0, o1) in zip(shares, calls, strict=False)])
        jobs = [prepare(isa, routines, x, gy, sums[0], scratch[k], geometry, *span, o0, o1, store, 2,
                        scratch[0], 0, 0) for k, geometry, span, o0, o1 in calls]
    else:
        jobs = [core.job_chain([prepare(isa, routines, x, gy, sums[acc], scratch[k], geometry, *span, o0, o1,
                                        store if i == 0 else 0)
                                for i, (geometry, span, o0, o1, acc) in enumerate(work[k])])
                for k in range(workers)]  # every worker has items: workers <= the most spans of a call
    workspace.run_jobs(jobs, blas=0 if own_products(dtype) else 1)
    gw = np.empty((o * cg, 3, 3), dtype)
    pairs = o * cg
    spans = workspace.ranges(pairs, threads if pairs >= GW_FINISH_PAIRS else 1)
    finish = core.winograd2d_grad_weight_finish
    workspace.run_calls(finish, [((sums, gw, accumulators), None, span) for span in spans])
    return gw.reshape(o, cg, 3, 3)


def _gw_calls(n: int, c: int, o: int, in_size: tuple[int, ...], out_size: tuple[int, ...], geom: ConvGeometry,
              cap: int, dtype: np.dtype) -> list[tuple[tuple[int, ...], int]]:
    """grad_weight's C calls ``(geometry, tiles)``: the whole arrays, or each output phase of a
    dilated call that reads input (:func:`_phase`; a phase reading only padding adds nothing)."""
    if geom.dilation == (1, 1):
        geometry = _geometry(n, c, in_size, o, out_size, geom.pads(in_size), geom.groups, cap, dtype)
        return [(geometry, _tiles(n, out_size))]
    calls = []
    for _, _, call in _phases(in_size, out_size, geom):
        if call is not None:  # a phase reading only padding adds nothing
            sub_in, sub_out, pads, phase = call
            calls.append((_geometry(n, c, sub_in, o, sub_out, pads, geom.groups, cap, dtype, phase),
                          _tiles(n, sub_out)))
    return calls
