"""Winograd convolution ``F(m x m, 3 x 3)`` for 2-D, 3x3, stride-1, dilation-1 convolutions.

A 3x3 correlation of an ``a x a`` input tile ``d`` (``a = m + 2``) gives an ``m x m`` output tile

    ``Y = A^T [ (G g G^T)  (.)  (B^T d B) ] A``

(``(.)`` elementwise), so over a batch of tiles the convolution becomes one GEMM per frequency
point ``(i, j)`` of the ``a x a`` transformed tile: ``M[ij] (O, T) = U[ij] (O, C) @ V[ij] (C, T)``
with ``U = G w G^T`` (weights, float64 then cast) and ``V = B^T d B`` (input tiles).

* ``m = 4`` (36 GEMMs, 2.25 multiplies per output instead of 9) uses the interpolation points
  ``0, 1, -1, 1/2, -2, inf``; with float32 it sums each frequency's GEMM over channel blocks of
  :data:`CHANNEL_BLOCK` (partial GEMMs added), which keeps its error at 1.0-1.5e-6 norm-relative
  on ResNet layers up to 512 channels (points ``0, +-1, +-2`` with one float32 sum: 1.6-3e-6).
* ``m = 2`` (points ``0, 1, -1, inf``, 16 GEMMs) is used when tiles of 4 would waste work.

Tile gather, the two transforms (each a small GEMM with ``K = a``) and the frequency GEMMs run on
a few images at a time (cache-sized) in worker threads, each with single-threaded BLAS.
``grad_input`` of a stride-1 convolution is the full correlation of ``gy`` with the flipped,
channel-transposed kernel and reuses the same core. Every size comes from
:class:`~npconv.geometry.ConvGeometry`; padding is the explicit zero padding ``geom.pads()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import workspace
from .common import add_to_channels, grad_input_as_forward
from .numerics import Operands, within

__all__ = ["NAME", "LOCAL", "SPREAD_LIMIT", "supports", "recommended", "admits", "forward", "grad_input",
           "transform_matrices", "CHANNEL_BLOCK"]

NAME = "winograd"
#: Not local: the tile transforms mix the values of a tile (see admits).
LOCAL = False
#: Largest spread (:func:`~npconv.kernels.numerics.value_range`) of the data operand: the error of
#: an output next to a spike in its tile grows up to about 0.8 eps x spread (docs/algorithms.md).
SPREAD_LIMIT = 2.0**6
#: float32 frequency GEMMs accumulate over blocks of this many input channels (accuracy, see above).
CHANNEL_BLOCK = 128
_POINTS = {4: (0, 1, -1, Fraction(1, 2), -2), 2: (0, 1, -1)}
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Run the work items on get_num_threads() Python threads with single-threaded BLAS; off: on the
#: caller thread with multithreaded BLAS and larger items, which measured faster.
WORKER_THREADS = False
PASSES = ("forward", "grad_input")
#: Passes that take ``bias=`` and add it to each block of images while it is in cache.
BIAS_PASSES = ("forward", "grad_input")
#: Runs on the calling thread with multithreaded BLAS (unless WORKER_THREADS).
BLAS_THREADS = not WORKER_THREADS
_TARGET_TILES = 400  # tiles per work item (multithreaded BLAS): columns of the frequency GEMMs
_TARGET_TILES_WORKERS = 160  # per work item on worker threads


def transform_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact float64 ``(A^T (m, a), G (a, 3), B^T (a, a))`` of ``F(m, 3)`` (Toom-Cook, point at infinity).

    They satisfy ``sum_k A^T[i, k] G[k, j] B^T[k, l] = [l == i + j]``, i.e. ``A^T((G g) * (B^T d))`` is
    the valid correlation of ``d`` (length ``a = m + 2``) with ``g`` (length 3).
    """
    points = _POINTS[m]
    a = m + 2
    at = [[Fraction(0)] * a for _ in range(m)]
    g = [[Fraction(0)] * 3 for _ in range(a)]
    bt = [[Fraction(0)] * a for _ in range(a)]
    for k, p in enumerate(points):
        others = [q for q in points if q != p]
        denominator = math.prod((Fraction(p) - q for q in others), start=Fraction(1))
        for i in range(m):
            at[i][k] = Fraction(p) ** i
        for j in range(3):
            g[k][j] = Fraction(p) ** j / denominator
        # B^T row k: coefficients of prod_{q != p} (x - q), highest power last (transposed Toom-Cook)
        poly = [Fraction(1)]
        for q in others:
            poly = [Fraction(0)] + poly  # multiply by x
            for t in range(len(poly) - 1):
                poly[t] -= q * poly[t + 1]
        bt[k][: len(poly)] = poly
    at[m - 1][a - 1] = Fraction(1)
    g[a - 1][2] = Fraction(1)
    full = [Fraction(1)]
    for q in points:
        full = [Fraction(0)] + full
        for t in range(len(full) - 1):
            full[t] -= q * full[t + 1]
    bt[a - 1] = full + [Fraction(0)] * (a - len(full))
    return (np.array(at, dtype=np.float64), np.array(g, dtype=np.float64), np.array(bt, dtype=np.float64))


_MATRICES = {m: transform_matrices(m) for m in _POINTS}
_KRON_G = {m: np.kron(g, g) for m, (_, g, _) in _MATRICES.items()}
#: Bound of ``|transformed value| / (channels * peak(x) * peak(w))`` over the tile sizes: each
#: two-sided transform multiplies the peak by at most its matrix's squared infinity norm.
_GROWTH = max(float(np.abs(at).sum(1).max() * np.abs(g).sum(1).max() * np.abs(bt).sum(1).max()) ** 2
              for at, g, bt in _MATRICES.values())


def admits(pass_name: str, operands: Operands, geom: ConvGeometry) -> bool:
    """Finite operands, data spread within :data:`SPREAD_LIMIT`, and no overflow in the transforms
    (``channels * growth * peak(x) * peak(w)`` below the dtype's largest value)."""
    channels = operands[0].shape[1] // geom.groups
    return within(operands, (0,), SPREAD_LIMIT, channels * _GROWTH)


# -- applicability ------------------------------------------------------------------------------
def supports(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
    """True for forward/grad_input of 2-D 3x3 stride-1 dilation-1 float32/float64 convolutions."""
    if pass_name not in PASSES or np.dtype(dtype) not in _DTYPES:
        return False
    if geom.kernel_size != (3, 3) or geom.stride != (1, 1) or geom.dilation != (1, 1):
        return False
    if not geom.fits(x_shape, w_shape):
        return False
    m = _tile_size(geom.output_size(tuple(x_shape[2:])))
    return transform_fits(x_shape, w_shape, geom, dtype, (m + 2) ** 2, workspace.SCRATCH_BYTES // 2)


def transform_fits(x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry, dtype: np.dtype,
                   points: int, scratch: int) -> bool:
    """Whether a forward or grad_input pass's transformed weight ``U`` (``points`` x O x C/G: 4x the
    weight for 4x4 tiles), a copy of the weight (a plan's kept values, grad_input's flipped kernel),
    its result (the larger of x and y) and ``scratch`` bytes fit in the memory bound."""
    item = np.dtype(dtype).itemsize
    o, cg = w_shape[:2]
    w_bytes, x_bytes = math.prod(w_shape) * item, math.prod(x_shape) * item
    y_bytes = x_shape[0] * o * math.prod(geom.output_size(tuple(x_shape[2:]))) * item
    need = (points * o * cg * item + w_bytes + max(x_bytes, y_bytes) + scratch)
    return need <= workspace.memory_bound(x_bytes, w_bytes, y_bytes)


def recommended(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                dtype: np.dtype) -> bool:
    """Measured rule: ungrouped float32 layers with >= 8x8 outputs and >= 32 input and output
    channels, on one thread only: on several threads Winograd's multithreaded BLAS leaves
    OpenBLAS's pool spinning into the next layer's workers, which cost more than it saved in a
    ResNet-like stack. Force it for isolated layers."""
    if not supports(pass_name, x_shape, w_shape, geom, dtype) or geom.groups != 1:
        return False
    if np.dtype(dtype) != np.float32 or get_num_threads() != 1:
        return False
    channels_in, channels_out = x_shape[1], w_shape[0]
    return min(channels_in, channels_out) >= 32 and min(geom.output_size(x_shape[2:])) >= 8


def _tile_size(out_size: Sequence[int]) -> int:
    """``m``: 4 unless tiles of 2 cover the output with noticeably less waste."""
    waste4 = math.prod(-(-o // 4) * 4 for o in out_size) * 36 / 16
    waste2 = math.prod(-(-o // 2) * 2 for o in out_size) * 16 / 4
    return 4 if waste4 <= waste2 * 0.95 else 2


# -- the core -----------------------------------------------------------------------------------
def _weight_transform(w: np.ndarray, groups: int, m: int, dtype: np.dtype) -> np.ndarray:
    """``U = G w G^T`` as ``(a*a, groups, O/groups, C/groups)``: one GEMM ``kron(G, G) (a*a, 9) @ w^T``."""
    a = m + 2
    o, cg = w.shape[:2]
    u = _KRON_G[m].astype(dtype) @ w.reshape(o * cg, 9).T.astype(dtype, copy=False)
    return u.reshape(a * a, groups, o // groups, cg)


def _correlate(x: np.ndarray, u: np.ndarray, low: tuple[int, int], out_size: tuple[int, int], m: int,
               dtype: np.dtype, bias: np.ndarray | None = None) -> np.ndarray:
    """``y[n, o, i, j] = sum_{c, p, q} x_ext[n, c, i + p - low_0, j + q - low_1] w[o, c, p, q]``.

    ``x_ext`` is ``x`` extended by zeros on all sides (``low`` may be negative: cropping).
    ``u`` is the transformed weight from :func:`_weight_transform`.
    """
    at, _, bt = (mat.astype(dtype) for mat in _MATRICES[m])
    a = m + 2
    n, c, h, w_in = x.shape
    _, groups, og, cg = u.shape
    o = groups * og
    th, tw = (-(-s // m) for s in out_size)
    wb = tw * m + 2
    y = np.empty((n, o) + tuple(out_size), dtype)
    exact = out_size == (th * m, tw * m)
    # caller thread + multithreaded BLAS (default) or Python workers with single-threaded BLAS
    threads = max(1, get_num_threads()) if WORKER_THREADS else 1
    per_image = th * tw
    # 1 thread: the smaller items measured faster
    target = _TARGET_TILES_WORKERS if WORKER_THREADS or get_num_threads() == 1 else _TARGET_TILES
    # scratch per tile: input tiles and their two transforms, products, output transforms
    tile_bytes = np.dtype(dtype).itemsize * (a * a * (3 * c + 2 * o) + m * a * o + 2 * m * m * o)
    target = max(1, min(target, workspace.SCRATCH_BYTES // 2 // max(1, threads) // tile_bytes))
    block = CHANNEL_BLOCK if dtype == np.float32 and cg > CHANNEL_BLOCK else cg
    if per_image <= target:  # whole images per work item
        chunk = max(1, min(-(-n // threads), -(-target // per_image)))
        items = [(i, min(n, i + chunk), 0, th) for i in range(0, n, chunk)]
    else:  # bands of tile rows of one image: the transforms' scratch stays bounded on big images
        rows = max(1, -(-target // tw))
        items = [(i, i + 1, r, min(th, r + rows)) for i in range(n) for r in range(0, th, rows)]

    def work(item: tuple[int, int, int, int]) -> None:
        start, stop, r0, r1 = item
        k, tr = stop - start, r1 - r0
        tiles_n = k * tr * tw
        band = r0 * m  # first row of the band in the extended input's output grid
        buf = workspace.buffer("wg-input", (k, c, tr * m + 2, wb), dtype)
        buf.fill(0)
        # source window of x that lands inside this band of the tile buffer
        src = [(max(0, band - low[0]), min(h, band + tr * m + 2 - low[0])),
               (max(0, -low[1]), min(w_in, wb - low[1]))]
        dst = [(src[0][0] + low[0] - band, src[0][1] + low[0] - band),
               (src[1][0] + low[1], src[1][1] + low[1])]
        if all(d1 > d0 for d0, d1 in dst):
            buf[:, :, dst[0][0]:dst[0][1], dst[1][0]:dst[1][1]] = \
                x[start:stop, :, src[0][0]:src[0][1], src[1][0]:src[1][1]]
        s = buf.strides
        tiles = as_strided(buf, (k, c, tr, tw, a, a), (s[0], s[1], s[2] * m, s[3] * m, s[2], s[3]))
        d = workspace.buffer("wg-tiles", (a, a, c, k, tr, tw), dtype)
        np.copyto(d, tiles.transpose(4, 5, 1, 0, 2, 3))
        t1 = workspace.buffer("wg-rows", (a, a * c * tiles_n), dtype)
        np.matmul(bt, d.reshape(a, -1), out=t1)
        v = workspace.buffer("wg-v", (a, a, c * tiles_n), dtype)
        np.matmul(bt, t1.reshape(a, a, -1), out=v)
        v = v.reshape(a * a, groups, cg, tiles_n)
        mm = workspace.buffer("wg-m", (a * a, groups, og, tiles_n), dtype)
        np.matmul(u[..., :block], v[:, :, :block], out=mm)
        if block < cg:
            partial = workspace.buffer("wg-partial", mm.shape, dtype)
            for c0 in range(block, cg, block):
                np.matmul(u[..., c0:c0 + block], v[:, :, c0:c0 + block], out=partial)
                mm += partial
        z1 = workspace.buffer("wg-z1", (m, a * o * tiles_n), dtype)
        np.matmul(at, mm.reshape(a, -1), out=z1)
        z2 = workspace.buffer("wg-z2", (m, m, o * tiles_n), dtype)
        np.matmul(at, z1.reshape(m, a, -1), out=z2)
        z2 = z2.reshape(m, m, o, k, tr, tw).transpose(3, 2, 4, 0, 5, 1)  # (k, o, tr, m, tw, m)
        rows = slice(band, min(out_size[0], r1 * m))
        if exact:
            y[start:stop].reshape(k, o, th, m, tw, m)[:, :, r0:r1] = z2
        else:
            full = workspace.buffer("wg-out", (k, o, tr, m, tw, m), dtype)
            np.copyto(full, z2)
            band_out = full.reshape(k, o, tr * m, tw * m)
            y[start:stop, :, rows] = band_out[:, :, : rows.stop - band, : out_size[1]]
        for image in range(start, stop):
            add_to_channels(y[image, :, rows], bias)

    workspace.run(items, lambda _, item: work(item), threads, blas=1 if WORKER_THREADS else get_num_threads())
    return y


def _check_same_dtype(*arrays: np.ndarray) -> np.dtype:
    dtype = np.result_type(*arrays)
    if dtype not in _DTYPES:
        raise TypeError(f"winograd convolution needs float32 or float64 arrays, got {dtype}")
    return dtype


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None) -> np.ndarray:
    """``y (N, O, *out) = conv(x (N, C, H, W), w (O, C/groups, 3, 3)) (+ bias[o])`` with zero padding
    ``geom.pads()``."""
    dtype = _check_same_dtype(x, w)
    out_size = geom.output_size(x.shape[2:])
    m = _tile_size(out_size)
    u = _weight_transform(w, geom.groups, m, dtype)
    low = tuple(lo for lo, _ in geom.pads(x.shape[2:]))
    return _correlate(x.astype(dtype, copy=False), u, low, out_size, m, dtype, bias)


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
               bias: np.ndarray | None = None) -> np.ndarray:
    """``gx (N, C, *input_size) (+ bias[c])``: the forward pass of ``gy`` with the flipped, transposed
    kernel (``bias``: a transposed convolution's)."""
    _check_same_dtype(gy, w)
    return grad_input_as_forward(forward, gy, w, geom, input_size, bias)
