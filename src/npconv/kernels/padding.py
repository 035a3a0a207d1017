"""Padding as a pure array function and its adjoint (folding the border back).

``pads`` holds one ``(lo, hi)`` pair per trailing dimension of ``x`` (the last ``len(pads)``
axes). Modes: ``constant`` (``value``; negative pads crop), ``reflect`` (mirror without the edge,
torch/NumPy 'reflect'), ``replicate`` (repeat the edge), ``circular`` (periodic wrap, any width)
and ``symmetric`` (mirror including the edge).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pad_array", "fold_padding", "source_index"]

_NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "symmetric": "symmetric"}


def source_index(size: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """For every position of the padded axis, the input index it copies (-1: a constant)."""
    if mode == "constant":
        return np.concatenate([np.full(lo, -1), np.arange(size), np.full(hi, -1)])
    return np.pad(np.arange(size), (lo, hi), mode=_NUMPY_MODE[mode])


def _positive(pads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(lo, 0), max(hi, 0)) for lo, hi in pads]


def _negative(pads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]


def _crops_first(mode: str) -> bool:
    """torch's order for negative pads: constant/circular crop then pad; the others pad then crop."""
    return mode in ("constant", "circular")


def _crop(x: np.ndarray, cuts: Sequence[tuple[int, int]]) -> np.ndarray:
    if not any(lo or hi for lo, hi in cuts):
        return x
    lead = x.ndim - len(cuts)
    index = tuple(slice(lo, n - hi) for n, (lo, hi) in zip(x.shape[lead:], cuts, strict=True))
    return x[(slice(None),) * lead + index]


def _extend(widths: Sequence[tuple[int, int]], x: np.ndarray, mode: str, value: float) -> np.ndarray:
    """``x`` padded by the non-negative ``widths`` on its last axes."""
    lead = x.ndim - len(widths)
    width = [(0, 0)] * lead + list(widths)
    if not any(lo or hi for lo, hi in widths):
        return x.copy()
    if mode == "constant":
        out = np.empty(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, width, strict=True)), x.dtype)
        out.fill(value)
        out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, width, strict=True))] = x
        return out
    return np.pad(x, width, mode=_NUMPY_MODE[mode])


def _fold(g: np.ndarray, widths: Sequence[tuple[int, int]], mode: str) -> np.ndarray:
    """Adjoint of :func:`_extend`: each border position's gradient added onto its source."""
    lead = g.ndim - len(widths)
    out = g
    for axis_offset, (lo, hi) in enumerate(widths):
        if not (lo or hi):
            continue
        axis = lead + axis_offset
        size = out.shape[axis] - lo - hi
        moved = np.moveaxis(out, axis, 0)
        folded = moved[lo:lo + size].copy()
        if mode != "constant":
            src = source_index(size, lo, hi, mode)
            for j in list(range(lo)) + list(range(lo + size, lo + size + hi)):
                folded[src[j]] += moved[j]
        out = np.moveaxis(folded, 0, axis)
    return out


def pad_array(x: np.ndarray, pads: Sequence[tuple[int, int]], mode: str = "constant",
              value: float = 0.0) -> np.ndarray:
    """``x`` padded on its last ``len(pads)`` axes; a negative pad crops.

    As torch: with negative pads, ``constant`` and ``circular`` crop first and pad the cropped
    array (the period is the cropped size); the other modes pad first and then crop.
    """
    if _crops_first(mode):
        return _extend(_positive(pads), _crop(x, _negative(pads)), mode, value)
    return _contiguous(_crop(_extend(_positive(pads), x, mode, value), _negative(pads)))


def fold_padding(g: np.ndarray, pads: Sequence[tuple[int, int]], mode: str = "constant") -> np.ndarray:
    """Adjoint of :func:`pad_array`: sum every padded position's gradient onto its source.

    ``g`` has the padded shape; the result has the unpadded shape (cropped parts get zeros).
    """
    lead = g.ndim - len(pads)
    uncrop = [(0, 0)] * lead + _negative(pads)
    if _crops_first(mode):
        out = _fold(g, _positive(pads), mode)
        if any(lo or hi for lo, hi in uncrop):
            out = np.pad(out, uncrop)
    else:
        out = _fold(np.pad(g, uncrop) if any(lo or hi for lo, hi in uncrop) else g, _positive(pads), mode)
    return _contiguous(out)


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array of the same shape (``np.ascontiguousarray`` makes 0-d arrays 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")
