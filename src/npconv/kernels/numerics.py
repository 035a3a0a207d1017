"""The data check that keeps non-local algorithms (FFT, Winograd) to what a direct convolution gives.

A direct convolution is *local*: a NaN or inf reaches only the outputs whose window holds it, and
each output's rounding error is relative to its own window. FFT and Winograd mix values beyond the
window (the whole signal's spectrum; a Winograd tile), so their error at an output is relative to
the largest values they mix, and one non-finite value poisons everything it is mixed with. The
planner therefore asks a non-local algorithm's ``admits`` for every call, which uses this module:

* :func:`value_range` of an array: whether it is finite, its peak ``max |v|``, and its *spread*,
  the peak over the array's bulk scale (a high quantile of a sample of magnitudes, which a few
  spikes do not move);
* :func:`within` a non-local algorithm admits a call when every operand is finite, every data
  operand's spread is at most the algorithm's limit (its error grows linearly with the spread:
  measured in docs/algorithms.md), and ``growth * prod(peaks)`` stays below the dtype's largest
  value (no overflow in transforms where a direct convolution would not overflow).

Cost: a maximum and a minimum per operand (no temporaries for contiguous arrays) and a partition of
at most :data:`SAMPLE` values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import backends

__all__ = ["ValueRange", "value_range", "Operands", "within"]


_CORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Values sampled (evenly spaced) to estimate an array's bulk scale.
SAMPLE = 4096
#: The bulk scale is this quantile of the sampled magnitudes: spikes rarer than 1 - QUANTILE of the
#: values do not raise it, and data with up to QUANTILE zeros (ReLU outputs) keeps a positive scale.
QUANTILE = 0.9


@dataclass(frozen=True)
class ValueRange:
    """``finite``: no NaN/inf; ``peak``: ``max |v|``; ``spread``: ``peak`` over the bulk scale (the
    :data:`QUANTILE` of the magnitudes of :data:`SAMPLE` evenly spaced values): 1 for an empty or
    all-zero array, inf when the bulk scale is 0 but the peak is not."""

    finite: bool
    peak: float
    spread: float


def value_range(a: np.ndarray) -> ValueRange:
    """The :class:`ValueRange` of ``a`` (real floating point)."""
    flat = np.asarray(a).reshape(-1)
    if flat.size == 0:
        return ValueRange(True, 0.0, 1.0)
    bulk = None
    if backends.core.available and flat.dtype in _CORE_DTYPES and flat.flags.c_contiguous:
        # one pass in C (NumPy's max and min are two), the same sample and quantile
        core = backends.core
        high, low, nan, bulk = core.module.value_range(core.isa_index, flat, SAMPLE, QUANTILE)
    else:
        high, low, nan = float(flat.max()), float(flat.min()), False  # a NaN makes both NaN
    if nan or not (math.isfinite(high) and math.isfinite(low)):
        return ValueRange(False, math.inf, math.inf)
    peak = max(high, -low)
    if peak == 0.0:
        return ValueRange(True, 0.0, 1.0)
    if bulk is None:
        step = max(1, flat.size // SAMPLE)
        sample = np.abs(flat[::step][:SAMPLE], dtype=np.float64)
        k = int(QUANTILE * (sample.size - 1))
        bulk = float(np.partition(sample, k)[k])
    return ValueRange(True, peak, peak / bulk if bulk > 0.0 else math.inf)


class Operands(Sequence[np.ndarray]):
    """The array arguments of one pass call, in signature order, with their value ranges computed
    on first use and kept for the call."""

    def __init__(self, arrays: Iterable[np.ndarray]) -> None:
        self._arrays = tuple(arrays)
        self._ranges: dict[int, ValueRange] = {}

    def __getitem__(self, index):  # type: ignore[override]
        return self._arrays[index]

    def __len__(self) -> int:
        return len(self._arrays)

    def range(self, index: int) -> ValueRange:
        if index not in self._ranges:
            self._ranges[index] = value_range(self._arrays[index])
        return self._ranges[index]


def within(operands: Operands, data: Sequence[int], spread_limit: float, growth: float) -> bool:
    """Every operand finite, the spread of each ``data`` operand at most ``spread_limit``, and
    ``growth * prod(peaks)`` below the largest value of the operands' result dtype."""
    ranges = [operands.range(i) for i in range(len(operands))]
    if not all(r.finite for r in ranges):
        return False
    if any(ranges[i].spread > spread_limit for i in data):
        return False
    largest = float(np.finfo(np.result_type(*operands)).max)
    bound = growth
    for r in ranges:
        bound *= r.peak
    return bound < largest
