"""Differentiable ``grid_sample`` (bilinear/trilinear, nearest, bicubic; padding zeros/border/reflection)
of ``x (N, C, *in)`` at normalised locations ``grid (N, *out, d)`` (last axis ``x, y[, z]`` = the
input's last, second-last[, third-last] axis), as torch's CPU kernels.

Per axis of size ``n``, a normalised ``g`` maps to ``s = (g + 1) / 2 * (n - 1)`` with
``align_corners`` and ``((g + 1) * n - 1) / 2`` without; ``border`` clips ``s`` to ``[0, n - 1]``,
``reflection`` reflects it about ``0`` and ``n - 1`` (or ``-0.5`` and ``n - 0.5``) and then clips.
``ds/dg`` (the unnormalisation factor times the clip/reflection slopes, 0 where clipped) scales the
grid gradient. Bilinear reads the ``2^d`` corners ``floor(s)`` and ``floor(s) + 1`` with weights
``prod(1 - |s - corner|)``; a corner outside the input reads 0. Nearest reads ``rint(s)``.
Bicubic (2-D) unnormalises without clipping and reads the 4 x 4 taps ``floor(s) - 1 .. + 2``, each
mapped by the padding mode, with Keys' weights (``A = -0.75``).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..tensor import Tensor, as_array, make_result

__all__ = ["grid_sample", "grid_sample_bicubic", "source_coordinates"]


def _reflect(s: np.ndarray, twice_low: int, twice_high: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's ``reflect_coordinates_set_grad``: the reflected coordinate and its slope (+-1)."""
    t = s.dtype.type
    if twice_low == twice_high:
        return np.zeros_like(s), np.zeros_like(s)
    low = t(twice_low / 2)
    span = t((twice_high - twice_low) / 2)
    shifted = s - low
    sign = np.where(shifted < 0, t(-1), t(1))
    shifted = np.abs(shifted)
    extra = np.fmod(shifted, span)
    flips = np.floor(shifted / span)
    even = np.fmod(flips, 2) == 0
    return np.where(even, extra + low, span - extra + low), np.where(even, sign, -sign)


def _clip(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's ``clip_coordinates_set_grad``: clip to ``[0, n - 1]``; slope 0 at or beyond the borders."""
    t = s.dtype.type
    high = t(n - 1)
    slope = np.where((s <= 0) | (s >= high), t(0), t(1))
    return np.clip(s, t(0), high), slope


def source_coordinates(g: np.ndarray, n: int, padding_mode: str, align_corners: bool
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Input coordinate ``s`` of normalised ``g`` along an axis of size ``n`` and ``ds/dg``."""
    t = g.dtype.type
    if align_corners:
        s, slope = (g + t(1)) / t(2) * t(n - 1), t((n - 1) / 2)
    else:
        s, slope = ((g + t(1)) * t(n) - t(1)) / t(2), t(n / 2)
    slope = np.full_like(s, slope)
    if padding_mode == "border":
        s, d = _clip(s, n)
        slope = slope * d
    elif padding_mode == "reflection":
        s, d1 = _reflect(s, 0, 2 * (n - 1)) if align_corners else _reflect(s, -1, 2 * n - 1)
        s, d2 = _clip(s, n)
        slope = slope * d1 * d2
    return s, slope


def grid_sample(x: Any, grid: Any, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    """Sample batched ``x (N, C, *in)`` at ``grid (N, *out, d)``, ``d = len(in)`` (2 or 3)."""
    data = as_array(x)
    g = as_array(grid)
    n, c = data.shape[:2]
    in_size = data.shape[2:]
    out_size = g.shape[1:-1]
    d = len(in_size)
    q = int(np.prod(out_size))
    p = int(np.prod(in_size))
    coords, slopes = [], []
    for axis in range(d):  # grid component axis reads input axis d - 1 - axis
        s, slope = source_coordinates(g[..., axis].reshape(n, q), in_size[d - 1 - axis], padding_mode,
                                      align_corners)
        coords.append(s)
        slopes.append(slope)
    planes = data.reshape(n, c, p)
    t = data.dtype.type

    def gather(index: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values ``(N, C, Q)`` at integer corner ``index`` (per grid component), the in-bounds mask
        and the flat position."""
        inside = np.ones((n, q), dtype=bool)
        for axis, i in enumerate(index):
            inside &= (i >= 0) & (i < in_size[d - 1 - axis])
        flat = np.zeros((n, q), dtype=np.int64)
        for axis in reversed(range(d)):  # input axis order: last grid component first
            size = in_size[d - 1 - axis]
            flat = flat * size + np.where(inside, index[axis], 0)
        values = np.take_along_axis(planes, flat[:, None, :], axis=2)
        return np.where(inside[:, None, :], values, t(0)), inside, flat

    if mode == "nearest":
        index = [np.rint(s).astype(np.int64) for s in coords]
        values, inside, flat = gather(index)
        corners = [(values, inside, flat, np.ones((n, q), dtype=data.dtype), None)]
    else:
        base = [np.floor(s) for s in coords]
        frac = [s - b for s, b in zip(coords, base, strict=True)]
        corners = []
        for bits in itertools.product((0, 1), repeat=d):
            index = [b.astype(np.int64) + bit for b, bit in zip(base, bits, strict=True)]
            factors = [f if bit else (b + t(1)) - s
                       for f, b, s, bit in zip(frac, base, coords, bits, strict=True)]
            weight = factors[0]
            for f in factors[1:]:
                weight = weight * f
            values, inside, flat = gather(index)
            corners.append((values, inside, flat, weight, (bits, factors)))
    out = np.zeros((n, c, q), dtype=data.dtype)
    for values, _, _, weight, _ in corners:
        out += values * weight[:, None, :]

    def backward(gy: np.ndarray) -> tuple[Any, Any]:
        gflat = gy.reshape(n, c, q)
        gx = ggrid = None
        if isinstance(x, Tensor) and x.requires_grad:
            target_base = (np.arange(n * c) * p).reshape(n, c, 1)
            total = np.zeros(n * c * p, dtype=np.float64)
            for _, inside, flat, weight, _ in corners:
                contrib = np.where(inside[:, None, :], gflat * weight[:, None, :], t(0))
                total += np.bincount((target_base + flat[:, None, :]).ravel(), weights=contrib.ravel(),
                                     minlength=n * c * p)
            gx = total.astype(data.dtype).reshape(data.shape)
        if isinstance(grid, Tensor) and grid.requires_grad:
            ggrid = np.zeros(g.shape, dtype=g.dtype)
            if mode != "nearest":
                for axis in range(d):
                    acc = np.zeros((n, q), dtype=data.dtype)
                    for values, _, _, _, (bits, factors) in corners:
                        other = np.ones((n, q), dtype=data.dtype)
                        for k, f in enumerate(factors):
                            if k != axis:
                                other = other * f
                        sign = t(1) if bits[axis] else t(-1)
                        acc += sign * other * (values * gflat).sum(axis=1)
                    ggrid[..., axis] = (acc * slopes[axis]).reshape(g.shape[:-1])
        return gx, ggrid

    name = "GridSampler2DBackward0" if d == 2 else "GridSampler3DBackward0"
    return make_result(out.reshape((n, c) + out_size), (x, grid), backward, name)


_CUBIC_A = -0.75


def _cubic_coefficients(t: np.ndarray) -> list[np.ndarray]:
    """Keys' weights (``A = -0.75``) of the taps at offsets -1, 0, 1, 2 for fraction ``t``."""
    tp = t.dtype.type
    a = tp(_CUBIC_A)

    def near(v: np.ndarray) -> np.ndarray:
        return ((a + tp(2)) * v - (a + tp(3))) * v * v + tp(1)

    def far(v: np.ndarray) -> np.ndarray:
        return ((a * v - tp(5) * a) * v + tp(8) * a) * v - tp(4) * a

    return [far(t + tp(1)), near(t), near(tp(1) - t), far(tp(2) - t)]


def _cubic_coefficient_slopes(t: np.ndarray) -> list[np.ndarray]:
    """torch's ``get_cubic_coefficients_grad``: each weight's derivative in its own distance variable."""
    tp = t.dtype.type
    a = tp(_CUBIC_A)
    x0, x1, x2, x3 = tp(-1) - t, -t, tp(1) - t, tp(2) - t
    return [(tp(-3) * a * x0 - tp(10) * a) * x0 - tp(8) * a,
            (tp(-3) * (a + tp(2)) * x1 - tp(2) * (a + tp(3))) * x1,
            (tp(3) * (a + tp(2)) * x2 - tp(2) * (a + tp(3))) * x2,
            (tp(3) * a * x3 - tp(10) * a) * x3 + tp(8) * a]


def _bounded_index(i: np.ndarray, n: int, padding_mode: str, align_corners: bool) -> np.ndarray:
    """torch's ``get_value_bounded`` index mapping: the tap position after the padding mode (then
    in-bounds or not)."""
    s = i.astype(np.float64)
    if padding_mode == "border":
        s = np.clip(s, 0, n - 1)
    elif padding_mode == "reflection":
        s, _ = _reflect(s, 0, 2 * (n - 1)) if align_corners else _reflect(s, -1, 2 * n - 1)
        s = np.clip(s, 0, n - 1)
    return s.astype(np.int64)


def grid_sample_bicubic(x: Any, grid: Any, padding_mode: str, align_corners: bool) -> Tensor:
    """Bicubic ``grid_sample`` of ``x (N, C, H, W)`` at ``grid (N, H_out, W_out, 2)``: the 4 x 4 taps
    around the unnormalised point (each mapped by the padding mode, zero outside), Keys' weights."""
    data = as_array(x)
    g = as_array(grid)
    n, c, h, w = data.shape
    out_size = g.shape[1:3]
    q = out_size[0] * out_size[1]
    t = data.dtype.type
    gx, gy = g[..., 0].reshape(n, q), g[..., 1].reshape(n, q)
    if align_corners:
        ix, iy = (gx + t(1)) / t(2) * t(w - 1), (gy + t(1)) / t(2) * t(h - 1)
        mult_x, mult_y = t((w - 1) / 2), t((h - 1) / 2)
    else:
        ix, iy = ((gx + t(1)) * t(w) - t(1)) / t(2), ((gy + t(1)) * t(h) - t(1)) / t(2)
        mult_x, mult_y = t(w / 2), t(h / 2)
    x0, y0 = np.floor(ix), np.floor(iy)
    tx, ty = (ix - x0).astype(data.dtype), (iy - y0).astype(data.dtype)
    cx, cy = _cubic_coefficients(tx), _cubic_coefficients(ty)
    planes = data.reshape(n, c, h * w)
    taps = []  # (values (N, C, Q), inside (N, Q), flat (N, Q), i, j)
    for j in range(4):
        row = _bounded_index(y0.astype(np.int64) - 1 + j, h, padding_mode, align_corners)
        for i in range(4):
            col = _bounded_index(x0.astype(np.int64) - 1 + i, w, padding_mode, align_corners)
            inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
            flat = np.where(inside, row * w + col, 0)
            values = np.take_along_axis(planes, flat[:, None, :], axis=2)
            taps.append((np.where(inside[:, None, :], values, t(0)), inside, flat, i, j))
    out = np.zeros((n, c, q), dtype=data.dtype)
    for values, _, _, i, j in taps:
        out += values * (cx[i] * cy[j])[:, None, :]

    def backward(gout: np.ndarray) -> tuple[Any, Any]:
        gflat = gout.reshape(n, c, q)
        gxin = ggrid = None
        if isinstance(x, Tensor) and x.requires_grad:
            base = (np.arange(n * c) * (h * w)).reshape(n, c, 1)
            total = np.zeros(n * c * h * w)
            for _, inside, flat, i, j in taps:
                contrib = np.where(inside[:, None, :], gflat * (cx[i] * cy[j])[:, None, :], t(0))
                total += np.bincount((base + flat[:, None, :]).ravel(), weights=contrib.ravel(),
                                     minlength=n * c * h * w)
            gxin = total.astype(data.dtype).reshape(data.shape)
        if isinstance(grid, Tensor) and grid.requires_grad:
            sx, sy = _cubic_coefficient_slopes(tx), _cubic_coefficient_slopes(ty)
            dix = np.zeros((n, q), dtype=data.dtype)
            diy = np.zeros((n, q), dtype=data.dtype)
            for values, _, _, i, j in taps:
                weighted = (values * gflat).sum(axis=1)
                dix -= weighted * sx[i] * cy[j]
                diy -= weighted * sy[j] * cx[i]
            ggrid = np.stack([(dix * mult_x).reshape(g.shape[:-1]), (diy * mult_y).reshape(g.shape[:-1])], -1)
        return gxin, ggrid

    return make_result(out.reshape((n, c) + out_size), (x, grid), backward, "GridSampler2DBackward0")
