"""An inverted residual block (MobileNetV2's) fused on the compiled core (``src/npconv/csrc/block.h``):

``y = act_p(w_p @ act_d(dw3x3_s(act_e(w_e @ x + b_e)) + b_d) + b_p (+ residual))``

(the 1x1 expansion ``w_e`` optional, the 3x3 depthwise of padding 1 and stride 1 or 2, the 1x1
projection ``w_p``; each activation none, ReLU, a clamp or SiLU). In the expansion's place the block can
take a network's stem, ``act_e(conv3x3(x, w_e, stride=2, padding=1) + b_e)`` with a ``(Cexp, Cin, 3, 3)``
weight (:data:`STEM_ISAS`, :data:`STEM_MAX_PAIRS`). A worker computes a band of output rows
in tiles: the tile's input rows expanded into its own scratch, the depthwise rows from them, the
tile's projection into ``y``; the expanded tensor, the largest of the block's, never goes to
memory. Each stage is the unfused kernels' own arithmetic (results equal to theirs up to the
rounding of a few columns' dot products). float32 on the compiled core's vector variants, where the
depthwise output rows hold :data:`MIN_COLUMNS` (at least a vector, or at 16 lanes one vector per row);
:func:`bind_block` returns None elsewhere and the
caller runs the layers one by one. Used by :mod:`npconv.jit`'s bound programs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import backends
from ..backends import get_num_threads
from . import workspace
from .common import COMPILED_ACTIVATIONS, ScratchSource
from .pointwise import Activation

__all__ = ["Stage", "TILE_BYTES", "MIN_COLUMNS", "STEM_MAX_PAIRS", "STEM_ISAS", "block_geometry", "takes",
           "bind_block"]

#: A tile's expanded rows (padded, with its padded input rows) take at most about this many bytes of a
#: worker's scratch. MobileNetV2 traced, two threads, Zen 4, alternated in one process (median / best
#: against 512 KB): 256 KB 1.006 / 1.013 (batch 1) and 1.047 / 1.045 (batch 8), 1 MB 0.967 / 0.986 and
#: 0.993 / 0.995; 2 and 4 MB level with 1 MB (the per-tile work, not the cache, decides).
TILE_BYTES = 1 << 20


#: The fewest depthwise output columns a block needs to fuse, per ISA variant (its kernel takes rows of
#: at least a vector, and at 16 lanes 4-15 columns as one vector per row). MobileNetV2 traced, two
#: threads, Zen 4, against AVX-512's 13 (median / best): 7 (its 7x7 blocks too) 1.092 / 1.103 at batch
#: 1, 1.004 / 1.034 at batch 8; 16 (none of its 14x14 blocks) 1.001 / 0.979 and 0.999 / 1.018 in a
#: calm phase, 13 against 16 in a memory-contended one 0.843-0.858 and 0.877-0.880; its strided
#: 28x28 -> 14x14 block among them 0.997 / 0.965 and 0.966 / 0.976 (the block 128 against 250 us). AVX2
#: fused its 14x14 blocks slower (~170 against ~150 us each at batch 1): 16 against 8 there 0.977 /
#: 0.964 (batch 1), 0.974 / 0.975 (batch 8).
MIN_COLUMNS = {"avx512": 13, "avx2": 16}
#: A stem in the expansion's place (``csrc/shared.h`` ``IR_STEM_MAX_PAIRS``): at most this many (input
#: channel, tap) pairs, the register block's weights per position.
STEM_MAX_PAIRS = 64
#: The ISA variants that take a stem into a block. MobileNetV2 traced, fused stem / stem apart, alternated
#: in one process (Zen 4): AVX-512 two threads 0.965-0.970 (batch 1), 0.982-0.989 (batch 8), one thread
#: 0.982 / 0.980; AVX2 (4-channel register blocks) 1.026-1.029 (batch 1), 0.997-1.004 (batch 8).
STEM_ISAS = ("avx512",)
#: From this many items (images, or bands of an image's rows) per worker, the workers claim them one at a
#: time instead of taking a fixed share (0: always a fixed share): a worker whose CPU another process
#: takes runs fewer. MobileNetV2 traced, batch 8, two threads, Zen 4, 8 rounds alternated: with a
#: neighbour process busy half of one core in 2 ms bursts 50.1 / 55.9 and 50.1 / 60.1 ms (claimed /
#: fixed), alone 34.9 / 34.3, 35.6 / 35.3, 34.1 / 33.8 (the same items: bitwise the same outputs). More
#: bands per image to share at batch 1 cost more than they saved (each band expands its halo rows
#: again): 2 per worker 5.3 / 5.0 ms alone, 8.2 / 8.5 with the neighbour.
MIN_SHARED_ITEMS = 2


class Stage(NamedTuple):
    """One convolution of the block: its weight array (``(O, C, 1, 1)``; ``(C, 1, 3, 3)`` for the
    depthwise; ``(O, C, 3, 3)`` for a stem in the expansion's place, stride 2 and padding 1), bias array
    or None, and the activation after it (or None)."""

    weight: np.ndarray
    bias: np.ndarray | None
    activation: Activation | None


def _codes(activation: Activation | None) -> tuple[int, float, float] | None:
    """The kernel's ``(act, lo, hi)`` of a stage's activation; None for one the compiled stores lack."""
    if activation is None:
        return 0, 0.0, 0.0
    if activation.kind not in COMPILED_ACTIVATIONS:
        return None
    return activation.code, float(activation.lo), float(activation.hi)


def _tile(cin: int, cexp: int, w: int, ow: int, stride: int, rows: int, stem: bool = False) -> int:
    """Output rows per tile: the most whose expanded rows (and their input rows, padded; a stem's two
    rows of its input's phases per row) fit :data:`TILE_BYTES`, then fewer
    where that makes the tile's positions a whole number of 16-lane vectors (the projection's ragged
    columns run as dot products), at most ``rows``."""
    per_row = (cexp + (2 if stem else 1) * cin) * (w + 2) * 4
    tile = max(1, min(rows, (TILE_BYTES // per_row - 3) // stride + 1))
    for t in range(tile, max(1, tile // 2) - 1, -1):
        if t * ow % 16 == 0:
            return t
    return tile


def block_geometry(x_shape: tuple[int, ...], expand: Stage | None, depthwise: Stage, project: Stage,
                   stride: int, residual: bool, threads: int) -> tuple[tuple, tuple] | None:
    """The kernel's ``(geometry, bounds)`` for a block on inputs of ``x_shape`` (see ``ir_geom`` in
    ``csrc/shared.h``), or None where the stages are not a block the kernel takes (shapes, activations)."""
    if len(x_shape) != 4 or stride not in (1, 2):
        return None
    n, cin, xh, xw = x_shape
    cexp = depthwise.weight.shape[0]
    stem = expand is not None and expand.weight.shape == (cexp, cin, 3, 3)
    if stem and backends.core.isa not in STEM_ISAS:
        return None
    if expand is not None and not stem and expand.weight.shape != (cexp, cin, 1, 1):
        return None
    h, w = ((xh - 1) // 2 + 1, (xw - 1) // 2 + 1) if stem else (xh, xw)
    if (expand is None and cexp != cin) or depthwise.weight.shape != (cexp, 1, 3, 3):
        return None
    cout = project.weight.shape[0]
    if project.weight.shape != (cout, cexp, 1, 1):
        return None
    codes = [_codes(s.activation) if s is not None else (0, 0.0, 0.0) for s in (expand, depthwise, project)]
    if None in codes or min(x_shape) < 1:
        return None
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    if ow < MIN_COLUMNS.get(backends.core.isa, 16):
        return None
    bands = 1 if n % threads == 0 else min(threads, oh)
    tile = _tile(cin, cexp, w, ow, stride, -(-oh // bands), stem)
    geometry = (n, cin, cexp, cout, h, w, oh, ow, stride, bands, tile, 2 if stem else int(expand is not None),
                int(residual), *(c[0] for c in codes), xh, xw)
    return geometry, tuple(v for c in codes for v in c[1:])


def _array(a: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """A float32 C-contiguous array as a view of ``shape`` (the kernel reads the array itself, so an
    in-place change of a parameter is seen), else None."""
    if a is None or a.dtype != np.float32 or not a.flags.c_contiguous or a.size != math.prod(shape):
        return None
    return a.reshape(shape)


def _checked(x: np.ndarray, y: np.ndarray, residual: np.ndarray | None, expand: Stage | None,
             depthwise: Stage, project: Stage, stride: int) -> tuple[tuple, tuple, tuple] | None:
    """``(geometry, bounds, arrays)`` of a block the kernel takes on these arrays (``arrays``: the
    kernel's buffers in its order, views of the given arrays), else None."""
    core = backends.core
    if not core.available:
        return None
    spec = block_geometry(x.shape, expand, depthwise, project, stride, residual is not None,
                          get_num_threads())
    if spec is None:
        return None
    geometry, bounds = spec
    n, cin, cexp, cout, h, w, oh, ow = geometry[:8]
    out = (n, cout, oh, ow)
    bias = [None if stage is None else stage.bias for stage in (expand, depthwise, project)]
    taps = 9 if geometry[11] == 2 else 1
    sources = [(x, x.shape), (None if expand is None else expand.weight, (cexp, cin * taps)),
               (bias[0], (cexp,)), (depthwise.weight, (cexp, 9)), (bias[1], (cexp,)),
               (project.weight, (cout, cexp)), (bias[2], (cout,)), (residual, out)]
    views = [None if a is None else _array(a, shape) for a, shape in sources]
    missing = any(a is not None and v is None for (a, _), v in zip(sources, views, strict=True))
    if (y.shape != out or _array(y, out) is None or missing
            or not core.module.ir_supported(core.isa_index, geometry, bounds)):
        return None
    return geometry, bounds, (*views, y)


def takes(x: np.ndarray, y: np.ndarray, residual: np.ndarray | None, expand: Stage | None, depthwise: Stage,
          project: Stage, stride: int) -> bool:
    """Whether :func:`bind_block` binds the block on arrays of these shapes and dtypes."""
    return _checked(x, y, residual, expand, depthwise, project, stride) is not None


def bind_block(x: np.ndarray, y: np.ndarray, residual: np.ndarray | None, expand: Stage | None,
               depthwise: Stage, project: Stage, stride: int,
               source: ScratchSource) -> Callable[[], None] | None:
    """``run()`` computing the block of ``x (N, Cin, H, W)`` into ``y (N, Cout, OH, OW)`` (``+ residual``,
    laid out as ``y``, before the projection's activation) on the worker threads, each with scratch
    from ``source``, the items (images, or one image's bands of rows) in fixed shares or claimed one at
    a time (:data:`MIN_SHARED_ITEMS`); None where the kernel does not take the block (then run the
    layers)."""
    checked = _checked(x, y, residual, expand, depthwise, project, stride)
    if checked is None:
        return None
    geometry, bounds, head = checked
    core = backends.core.module
    size = core.ir_scratch(geometry, bounds)
    threads, total = get_num_threads(), geometry[0] * geometry[9]
    if MIN_SHARED_ITEMS and threads > 1 and total >= MIN_SHARED_ITEMS * threads:
        calls = [(head, size, (geometry, bounds, 0, total))] * threads
        return workspace.bind_calls(core.ir_forward, calls, "compiled-block", np.float32, source, chunk=1)
    spans = workspace.ranges(total, threads)
    calls = [(head, size, (geometry, bounds, start, stop)) for start, stop in spans if stop > start]
    return workspace.bind_calls(core.ir_forward, calls, "compiled-block", np.float32, source)
