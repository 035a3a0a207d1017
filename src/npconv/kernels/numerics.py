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

Cost: one pass per operand for its largest magnitude (no temporaries for contiguous arrays) and a
partition of at most :data:`SAMPLE` values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import backends
from . import workspace

__all__ = ["ValueRange", "value_range", "regional_spread", "Ranges", "Operands", "within"]


_CORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Values sampled (evenly spaced) to estimate an array's bulk scale.
SAMPLE = 4096
#: Arrays of at least this many elements are scanned in parts on the worker threads (ResNet-18's
#: Winograd layers at batch 8: 40 MB of inputs and 10 MB of weights checked per forward, 3.2 ms on
#: one thread; docs/performance.md).
PARALLEL_MIN_SIZE = 1 << 18
#: The bulk scale is this quantile of the sampled magnitudes: spikes rarer than 1 - QUANTILE of the
#: values do not raise it, and data with up to QUANTILE zeros (ReLU outputs) keeps a positive scale.
QUANTILE = 0.9
#: The quiet scale of :func:`regional_spread`: this quantile of the mean magnitudes of QUIET_RUNS runs of
#: QUIET_RUN consecutive values (a window's scale is a mean of magnitudes; Gaussian data: ~0.6 sigma).
QUIET_QUANTILE = 0.1
QUIET_RUNS = 256
QUIET_RUN = 16


@dataclass(frozen=True)
class ValueRange:
    """``finite``: no NaN/inf; ``peak``: ``max |v|``; ``spread``: ``peak`` over the bulk scale (the
    :data:`QUANTILE` of the magnitudes of :data:`SAMPLE` evenly spaced values): 1 for an empty or
    all-zero array, inf when the bulk scale is 0 but the peak is not."""

    finite: bool
    peak: float
    spread: float


def value_range(a: np.ndarray, spread: bool = True) -> ValueRange:
    """The :class:`ValueRange` of ``a`` (real floating point); ``spread=False`` skips the bulk scale's
    sample (a weight's spread is never checked: ~10 us of a 37 K-value weight's 14), the spread then
    given as inf, which no limit admits."""
    flat = np.asarray(a).reshape(-1)
    if flat.size == 0:
        return ValueRange(True, 0.0, 1.0)
    bulk = None
    threads = backends.get_num_threads()
    core = backends.core
    if core.available and flat.dtype in _CORE_DTYPES and flat.flags.c_contiguous:
        if threads > 1 and flat.size >= PARALLEL_MIN_SIZE:
            peak, nan = _range_in_parts(flat, threads)  # the bulk scale below, where it is wanted
        else:  # one pass in C (max |v| on the bits; NumPy's max and min are two), the same sample
            peak, nan, bulk = core.module.value_range(core.isa_index, flat, SAMPLE if spread else 1, QUANTILE)
    else:
        peak, nan = max(float(flat.max()), -float(flat.min())), False  # a NaN makes both NaN
    if nan or not math.isfinite(peak):
        return ValueRange(False, math.inf, math.inf)
    if peak == 0.0:
        return ValueRange(True, 0.0, 1.0)
    if not spread:
        return ValueRange(True, peak, math.inf)
    if bulk is None:
        step = max(1, flat.size // SAMPLE)
        if core.available and flat.dtype in _CORE_DTYPES:  # the C call's sample, its quantile selection
            sample = np.ascontiguousarray(flat[::step][:SAMPLE])
            bulk = core.module.value_range(core.isa_index, sample, SAMPLE, QUANTILE)[2]
        else:
            sample = np.abs(flat[::step][:SAMPLE], dtype=np.float64)
            k = int(QUANTILE * (sample.size - 1))
            bulk = float(np.partition(sample, k)[k])
    return ValueRange(True, peak, peak / bulk if bulk > 0.0 else math.inf)


def regional_spread(a: np.ndarray, peak: float) -> float:
    """``peak`` over the quiet scale of ``a``: the :data:`QUIET_QUANTILE` of the mean magnitudes of
    :data:`QUIET_RUNS` evenly spaced runs of :data:`QUIET_RUN` consecutive values (runs of zeros left
    out), so a global algorithm (FFT), whose error at every output is relative to the loudest values,
    sees the windows of a quiet region covering a tenth of the array or more (the bulk spread sees
    only loud values where they cover more than a tenth). 1 where every run is zero."""
    flat = np.asarray(a).reshape(-1)
    run = min(QUIET_RUN, flat.size)
    runs = max(1, min(QUIET_RUNS, flat.size // run))
    starts = np.arange(runs) * ((flat.size - run) // max(1, runs - 1)) if runs > 1 else np.zeros(1, np.int64)
    means = np.abs(flat[starts[:, None] + np.arange(run)], dtype=np.float64).mean(axis=1)
    means = means[means > 0.0]
    if means.size == 0 or peak == 0.0:
        return 1.0
    k = int(QUIET_QUANTILE * (means.size - 1))
    return peak / float(np.partition(means, k)[k])


def _range_in_parts(flat: np.ndarray, threads: int) -> tuple[float, bool]:
    """``(max |v|, any NaN)`` of a contiguous float32/float64 ``flat`` (at least
    :data:`PARALLEL_MIN_SIZE` elements), its parts on ``threads`` worker threads (the core's
    ``value_range_part``): the values of the single pass."""
    parts = np.empty((threads, 2), flat.dtype)
    bounds = [flat.size * i // threads for i in range(threads + 1)]
    workspace.run_calls(backends.core.module.value_range_part,
                        [((flat, parts[k]), None, (bounds[k], bounds[k + 1])) for k in range(threads)])
    return float(parts[:, 0].max()), bool(parts[:, 1].any())


class Ranges:
    """:func:`value_range` results by array identity, for the passes of one convolution step: the
    forward's ``x`` and ``w`` are the backward's operands too, and ``gy`` is both backward passes'
    (:mod:`npconv.ops.conv` keeps one per call, :meth:`copy` per backward), so each array is scanned
    once. Valid while those arrays are unchanged: autograd raises when a tensor its backward reads
    was modified in place. Each entry keeps its array alive, so its id is not another array's."""

    def __init__(self, known: dict | None = None) -> None:
        self._known: dict[int, tuple[np.ndarray, ValueRange, bool]] = dict(known or {})

    def of(self, array: np.ndarray, spread: bool = True) -> ValueRange:
        """``array``'s :func:`value_range` (its spread estimated where ``spread``), computed once."""
        found = self._known.get(id(array))
        if found is None or (spread and not found[2]):
            found = self._known[id(array)] = (array, value_range(array, spread), spread)
        return found[1]

    def regional(self, array: np.ndarray) -> float:
        """``array``'s :func:`regional_spread`, computed once (its peak from :meth:`of`)."""
        key = ("regional", id(array))
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = (array, regional_spread(array, self.of(array).peak), True)
        return found[1]

    def copy(self) -> Ranges:
        """A new record starting with this one's ranges (what it adds is not added here)."""
        return Ranges(self._known)


class Operands(Sequence[np.ndarray]):
    """The array arguments of one pass call, in signature order, with their value ranges computed
    on first use and kept in ``ranges`` (a fresh :class:`Ranges` unless given)."""

    def __init__(self, arrays: Iterable[np.ndarray], ranges: Ranges | None = None) -> None:
        self._arrays = tuple(arrays)
        self._ranges = Ranges() if ranges is None else ranges

    def __getitem__(self, index):  # type: ignore[override]
        return self._arrays[index]

    def __len__(self) -> int:
        return len(self._arrays)

    def range(self, index: int, spread: bool = True) -> ValueRange:
        """Operand ``index``'s :func:`value_range` (its spread estimated where ``spread``)."""
        return self._ranges.of(self._arrays[index], spread)

    def regional(self, index: int) -> float:
        """Operand ``index``'s :func:`regional_spread`."""
        return self._ranges.regional(self._arrays[index])


def within(operands: Operands, data: Sequence[int], spread_limit: float, growth: float,
           regional: bool = False) -> bool:
    """Every operand finite, the spread of each ``data`` operand at most ``spread_limit`` (with
    ``regional``, its :func:`regional_spread` too: for an algorithm that mixes the whole array), and
    ``growth * prod(peaks)`` below the largest value of the operands' result dtype."""
    ranges = [operands.range(i, spread=i in data) for i in range(len(operands))]
    if not all(r.finite for r in ranges):
        return False
    if any(ranges[i].spread > spread_limit for i in data):
        return False
    if regional and any(operands.regional(i) > spread_limit for i in data):
        return False
    largest = float(np.finfo(np.result_type(*operands)).max)
    bound = growth
    for r in ranges:
        bound *= r.peak
    return bound < largest
