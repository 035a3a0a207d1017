"""Differentiable ``grid_sample`` (bilinear/trilinear and nearest, padding zeros/border/reflection)
of ``x (N, C, *in)`` at normalised locations ``grid (N, *out, d)`` (last axis ``x, y[, z]`` = the
input's last, second-last[, third-last] axis), as torch's CPU kernels.

Per axis of size ``n``, a normalised ``g`` maps to ``s = (g + 1) / 2 * (n - 1)`` with
``align_corners`` and ``((g + 1) * n - 1) / 2`` without; ``border`` clips ``s`` to ``[0, n - 1]``,
``reflection`` reflects it about ``0`` and ``n - 1`` (or ``-0.5`` and ``n - 0.5``) and then clips.
``ds/dg`` (the unnormalisation factor times the clip/reflection slopes, 0 where clipped) scales the
grid gradient. Bilinear reads the ``2^d`` corners ``floor(s)`` and ``floor(s) + 1`` with weights
``prod(1 - |s - corner|)``; a corner outside the input reads 0. Nearest reads ``rint(s)``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..tensor import Tensor, as_array, make_result

__all__ = ["grid_sample", "source_coordinates"]


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
