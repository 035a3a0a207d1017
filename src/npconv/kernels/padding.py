"""Padding as a pure array function and its adjoint (folding the border back).

``pads`` holds one ``(lo, hi)`` pair per trailing dimension of ``x`` (the last ``len(pads)``
axes). Modes: ``constant`` (``value``; negative pads crop), ``reflect`` (mirror without the edge,
torch/NumPy 'reflect'), ``replicate`` (repeat the edge), ``circular`` (periodic wrap, any width)
and ``symmetric`` (mirror including the edge).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PAD_MODES", "pad_array", "fold_padding", "source_index"]

PAD_MODES = ("constant", "reflect", "replicate", "circular", "symmetric")
_NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "symmetric": "symmetric"}


def source_index(size: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """For every position of the padded axis, the input index it copies (-1: a constant)."""
    if mode == "constant":
        return np.concatenate([np.full(lo, -1), np.arange(size), np.full(hi, -1)])
    return np.pad(np.arange(size), (lo, hi), mode=_NUMPY_MODE[mode])


def _split_negative(pads: Sequence[tuple[int, int]]) -> tuple[list[slice], list[tuple[int, int]]]:
    crops = [slice(max(-lo, 0), (hi if hi < 0 else None)) for lo, hi in pads]
    positive = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    return crops, positive


def pad_array(x: np.ndarray, pads: Sequence[tuple[int, int]], mode: str = "constant",
              value: float = 0.0) -> np.ndarray:
    """``x`` padded on its last ``len(pads)`` axes. Negative constant pads crop."""
    lead = x.ndim - len(pads)
    crops, positive = _split_negative(pads)
    if any(c.start or c.stop is not None for c in crops):
        x = x[(slice(None),) * lead + tuple(crops)]
    width = [(0, 0)] * lead + positive
    if not any(lo or hi for lo, hi in positive):
        return x.copy()
    if mode == "constant":
        out = np.empty(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, width, strict=True)), x.dtype)
        if value == 0:
            out.fill(0)
        else:
            out.fill(value)
        out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, width, strict=True))] = x
        return out
    return np.pad(x, width, mode=_NUMPY_MODE[mode])


def fold_padding(g: np.ndarray, pads: Sequence[tuple[int, int]], mode: str = "constant") -> np.ndarray:
    """Adjoint of :func:`pad_array`: sum every padded position's gradient onto its source.

    ``g`` has the padded shape; the result has the unpadded shape.
    """
    lead = g.ndim - len(pads)
    crops, positive = _split_negative(pads)
    out = g
    for axis_offset, (lo, hi) in enumerate(positive):
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
    if any(c.start or c.stop is not None for c in crops):
        widths = [(0, 0)] * lead + [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]
        out = np.pad(out, widths)
    return np.ascontiguousarray(out)
