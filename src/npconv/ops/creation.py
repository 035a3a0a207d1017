"""Tensor factories with torch's signatures: ``zeros``, ``ones``, ``full``, ``arange``, ``randn``, ...

Float factories default to :func:`npconv.get_default_dtype` (float32); ``arange`` of ints, ``randint``
and ``randperm`` give int64. ``device`` must be the CPU; ``requires_grad`` makes the result a leaf
that requires grad. Random factories draw from ``generator`` (an :class:`npconv.Generator`) or the
global generator (:func:`npconv.manual_seed`).
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import autograd, dtypes
from ..autograd import as_array
from ..checks import refuses_oversize
from ..random import numpy_generator

__all__ = [
    "zeros",
    "ones",
    "empty",
    "full",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "rand",
    "randn",
    "randint",
    "randperm",
    "rand_like",
    "randn_like",
    "randint_like",
    "arange",
    "linspace",
    "logspace",
    "eye",
    "from_numpy",
    "as_tensor",
    "tensor",
    "normal",
    "bernoulli",
    "multinomial",
]


def _size(size: Sequence[Any], what: str) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    try:
        shape = tuple(operator.index(n) for n in size)
    except TypeError as error:
        raise TypeError(f"{what} size must be ints, but got {size!r}") from error
    if any(n < 0 for n in shape):
        raise RuntimeError(
            f"Trying to create tensor with negative dimension {builtins.min(shape)}: {list(shape)}"
        )
    return shape


def _float_dtype(dtype: Any, what: str) -> np.dtype:
    if dtype is None:
        return dtypes.get_default_dtype().dtype
    chosen = dtypes.to_numpy_dtype(dtype)
    if chosen.kind not in "fc":
        raise TypeError(
            f"{what} dtype must be a floating point or complex dtype, but got {dtypes.as_dtype(chosen)}"
        )
    return chosen


def _finish(array: np.ndarray, device: Any, requires_grad: builtins.bool) -> Any:
    dtypes.device_of(device)
    return autograd.tensor_class(array, requires_grad=requires_grad)


@refuses_oversize("zeros")
def zeros(
    *size: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else dtypes.get_default_dtype().dtype
    return _finish(np.zeros(_size(size, "zeros"), chosen), device, requires_grad)


@refuses_oversize("ones")
def ones(
    *size: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else dtypes.get_default_dtype().dtype
    return _finish(np.ones(_size(size, "ones"), chosen), device, requires_grad)


@refuses_oversize("empty")
def empty(
    *size: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    memory_format: Any = None,
    out: Any = None,
) -> Any:
    """Like torch, the values are unspecified (npconv fills zeros, so nothing uninitialised leaks)."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def _fill_dtype(fill_value: Any) -> np.dtype:
    if isinstance(fill_value, builtins.bool):
        return np.dtype(np.bool_)
    if isinstance(fill_value, builtins.int):
        return np.dtype(np.int64)
    if isinstance(fill_value, builtins.complex):
        return np.promote_types(dtypes.get_default_dtype().dtype, np.complex64)
    if isinstance(fill_value, builtins.float):
        return dtypes.get_default_dtype().dtype
    return as_array(fill_value).dtype


@refuses_oversize("full")
def full(
    size: Sequence[int],
    fill_value: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    """A tensor of ``fill_value`` (its dtype: bool, int64, or the default float dtype, as torch infers)."""
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else _fill_dtype(fill_value)
    return _finish(np.full(_size((size,), "full"), as_array(fill_value), dtype=chosen), device, requires_grad)


def _like(input: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
    data = as_array(input)
    return data.shape, dtypes.to_numpy_dtype(dtype) if dtype is not None else data.dtype


@refuses_oversize("zeros_like")
def zeros_like(
    input: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    memory_format: Any = None,
) -> Any:
    shape, chosen = _like(input, dtype)
    return _finish(np.zeros(shape, chosen), device, requires_grad)


@refuses_oversize("ones_like")
def ones_like(
    input: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    memory_format: Any = None,
) -> Any:
    shape, chosen = _like(input, dtype)
    return _finish(np.ones(shape, chosen), device, requires_grad)


empty_like = zeros_like


@refuses_oversize("full_like")
def full_like(
    input: Any,
    fill_value: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    memory_format: Any = None,
) -> Any:
    shape, chosen = _like(input, dtype)
    return _finish(np.full(shape, as_array(fill_value), dtype=chosen), device, requires_grad)


@refuses_oversize("rand")
def rand(
    *size: Any,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    """Uniform on ``[0, 1)``."""
    chosen = _float_dtype(dtype, "rand")
    rng = numpy_generator(generator)
    shape = _size(size, "rand")
    if chosen.kind == "c":
        real = np.empty(0, chosen).real.dtype
        array = (rng.random(shape, dtype=np.float64) + 1j * rng.random(shape, dtype=np.float64)).astype(
            chosen
        )
        del real
    else:
        array = rng.random(shape, dtype=np.float64).astype(chosen)
    return _finish(array, device, requires_grad)


@refuses_oversize("randn")
def randn(
    *size: Any,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    """Standard normal (complex: real and imaginary parts each of variance 1/2, as torch)."""
    chosen = _float_dtype(dtype, "randn")
    rng = numpy_generator(generator)
    shape = _size(size, "randn")
    if chosen.kind == "c":
        array = ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * math.sqrt(0.5)).astype(
            chosen
        )
    else:
        array = rng.standard_normal(shape).astype(chosen)
    return _finish(array, device, requires_grad)


@refuses_oversize("randint")
def randint(
    low: int = 0,
    high: Any = None,
    size: Any = None,
    *,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    """Integers uniform on ``[low, high)``: ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None:
        if high is None or not isinstance(high, (tuple, list)):
            raise TypeError("randint needs a size: randint(high, size) or randint(low, high, size)")
        low, high, size = 0, low, high
    if not builtins.all(
        isinstance(v, (builtins.int, np.integer)) and not isinstance(v, builtins.bool) for v in (low, high)
    ):
        raise TypeError(f"randint low and high must be ints, but got {low!r} and {high!r}")
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else np.dtype(np.int64)
    array = numpy_generator(generator).integers(low, high, size=_size((size,), "randint")).astype(chosen)
    return _finish(array, device, requires_grad)


@refuses_oversize("randperm")
def randperm(
    n: int,
    *,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    if isinstance(n, builtins.bool) or not isinstance(n, (builtins.int, np.integer)) or n < 0:
        raise RuntimeError(f"randperm n must be a non-negative int, but got {n!r}")
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else np.dtype(np.int64)
    return _finish(numpy_generator(generator).permutation(n).astype(chosen), device, requires_grad)


@refuses_oversize("rand_like")
def rand_like(
    input: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    generator: Any = None,
    layout: Any = None,
    memory_format: Any = None,
) -> Any:
    shape, chosen = _like(input, dtype)
    return rand(shape, generator=generator, dtype=chosen, device=device, requires_grad=requires_grad)


@refuses_oversize("randn_like")
def randn_like(
    input: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    generator: Any = None,
    layout: Any = None,
    memory_format: Any = None,
) -> Any:
    shape, chosen = _like(input, dtype)
    return randn(shape, generator=generator, dtype=chosen, device=device, requires_grad=requires_grad)


@refuses_oversize("randint_like")
def randint_like(
    input: Any,
    low: int = 0,
    high: Any = None,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    generator: Any = None,
) -> Any:
    shape, chosen = _like(input, dtype)
    if high is None:
        low, high = 0, low
    return randint(
        low, high, shape, generator=generator, dtype=chosen, device=device, requires_grad=requires_grad
    )


@refuses_oversize("normal")
def normal(
    mean: Any = 0.0,
    std: Any = 1.0,
    size: Any = None,
    *,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    out: Any = None,
) -> Any:
    """Normal samples of ``mean`` and ``std`` (numbers with ``size``, or tensors broadcast together)."""
    rng = numpy_generator(generator)
    m, s = as_array(mean), as_array(std)
    if np.any(s < 0):
        raise RuntimeError("normal expects all elements of std >= 0.0")
    if size is not None:
        shape = _size((size,), "normal")
    else:
        shape = np.broadcast_shapes(m.shape, s.shape)
    chosen = (
        _float_dtype(dtype, "normal")
        if dtype is not None or not (m.ndim or s.ndim)
        else np.result_type(*(a.dtype for a in (m, s) if a.ndim))
    )
    array = (m + s * rng.standard_normal(shape)).astype(chosen)
    return _finish(array, device, requires_grad)


@refuses_oversize("bernoulli")
def bernoulli(input: Any, p: Any = None, *, generator: Any = None) -> Any:
    """1 with probability ``input`` (or ``p``), else 0, in ``input``'s dtype."""
    data = as_array(input)
    probability = data if p is None else np.broadcast_to(as_array(p), data.shape)
    if np.any((probability < 0) | (probability > 1)):
        raise RuntimeError("bernoulli expects all probabilities in [0, 1]")
    return autograd.tensor_class(
        (numpy_generator(generator).random(data.shape) < probability).astype(data.dtype)
    )


@refuses_oversize("multinomial")
def multinomial(
    input: Any, num_samples: int, replacement: builtins.bool = False, *, generator: Any = None
) -> Any:
    """Indices drawn with probabilities proportional to each row of ``input`` (1-D or 2-D)."""
    weights = np.asarray(as_array(input), dtype=np.float64)
    if weights.ndim not in (1, 2):
        raise RuntimeError(f"prob_dist must be 1 or 2 dim, but got {weights.ndim}")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    rows = weights.reshape(-1, weights.shape[-1])
    if not replacement and num_samples > rows.shape[1]:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    rng = numpy_generator(generator)
    picks = []
    for row in rows:
        total = row.sum()
        if total <= 0:
            raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
        picks.append(rng.choice(row.size, size=num_samples, replace=replacement, p=row / total))
    out = np.asarray(picks, dtype=np.int64).reshape(weights.shape[:-1] + (num_samples,))
    return autograd.tensor_class(out)


def _is_integer(value: Any) -> builtins.bool:
    data = as_array(value) if autograd.is_tensor(value) else np.asarray(value)
    return data.dtype.kind in "iub"


@refuses_oversize("arange")
def arange(
    start: Any = 0,
    end: Any = None,
    step: Any = 1,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    """``[start, end)`` by ``step``: int64 when all three are ints, else the default float dtype."""
    if end is None:
        start, end = 0, start
    values = [as_array(v).item() if autograd.is_tensor(v) else v for v in (start, end, step)]
    start, end, step = values
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(
            f"arange: upper bound and larger bound inconsistent with step sign (start={start}, "
            f"end={end}, step={step})"
        )
    if dtype is not None:
        chosen = dtypes.to_numpy_dtype(dtype)
    elif builtins.all(_is_integer(v) for v in values):
        chosen = np.dtype(np.int64)
    else:
        chosen = dtypes.get_default_dtype().dtype
    count = builtins.max(0, math.ceil((end - start) / step))
    # start + i * step in double, as torch computes it, then cast
    array = (
        start
        + np.arange(
            count,
            dtype=np.float64
            if chosen.kind in "fc" or not builtins.all(_is_integer(v) for v in values)
            else np.int64,
        )
        * step
    ).astype(chosen)
    return _finish(array, device, requires_grad)


@refuses_oversize("linspace")
def linspace(
    start: Any,
    end: Any,
    steps: int,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    if isinstance(steps, builtins.bool) or not isinstance(steps, (builtins.int, np.integer)) or steps < 0:
        raise RuntimeError(f"linspace: number of steps must be a non-negative int, but got {steps!r}")
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else dtypes.get_default_dtype().dtype
    start, end = (as_array(v).item() if autograd.is_tensor(v) else v for v in (start, end))
    array = np.linspace(start, end, steps, dtype=np.float64)
    if chosen.kind in "iu":
        array = np.trunc(array)
    return _finish(array.astype(chosen), device, requires_grad)


@refuses_oversize("logspace")
def logspace(
    start: Any,
    end: Any,
    steps: int,
    base: float = 10.0,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
) -> Any:
    exponents = linspace(start, end, steps, dtype=np.float64)
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else dtypes.get_default_dtype().dtype
    return _finish(np.power(base, as_array(exponents)).astype(chosen), device, requires_grad)


@refuses_oversize("eye")
def eye(
    n: int,
    m: Any = None,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    layout: Any = None,
    out: Any = None,
) -> Any:
    for name, value in (("n", n), ("m", m)):
        if value is not None and (
            isinstance(value, builtins.bool) or not isinstance(value, (builtins.int, np.integer)) or value < 0
        ):
            raise RuntimeError(f"eye {name} must be a non-negative int, but got {value!r}")
    chosen = dtypes.to_numpy_dtype(dtype) if dtype is not None else dtypes.get_default_dtype().dtype
    return _finish(np.eye(n, n if m is None else m, dtype=chosen), device, requires_grad)


def from_numpy(array: np.ndarray) -> Any:
    """A tensor sharing ``array``'s memory (writes to either show in the other)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expected np.ndarray, but got {type(array).__name__}")
    dtypes.as_dtype(array.dtype, "from_numpy array dtype")
    return autograd.tensor_class(array)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Any:
    """``data`` as a tensor, sharing memory with an ndarray or tensor of the right dtype."""
    dtypes.device_of(device)
    if autograd.is_tensor(data):
        if dtype is None or dtypes.to_numpy_dtype(dtype) == as_array(data).dtype:
            return data
        return data.to(dtype)
    if isinstance(data, np.ndarray) and (dtype is None or dtypes.to_numpy_dtype(dtype) == data.dtype):
        return from_numpy(data)
    return tensor(data, dtype=dtype)


def tensor(
    data: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: builtins.bool = False,
    pin_memory: builtins.bool = False,
) -> Any:
    """A tensor owning a copy of ``data``, like ``torch.tensor``.

    Python floats take the default dtype (float32), complex numbers its complex type, ints int64,
    bools bool; an ndarray or tensor keeps its dtype unless ``dtype`` is given.
    """
    dtypes.device_of(device)
    if autograd.is_tensor(data):
        data = as_array(data)
    if dtype is not None:
        array = np.array(data, dtype=dtypes.to_numpy_dtype(dtype))
    elif isinstance(data, (np.ndarray, np.generic)):
        array = np.array(data)
    else:
        array = np.array(data)
        if array.dtype == np.float64:
            array = array.astype(dtypes.get_default_dtype().dtype)
        elif array.dtype == np.complex128:
            array = array.astype(np.promote_types(dtypes.get_default_dtype().dtype, np.complex64))
        elif array.dtype.kind not in "biufc":
            raise TypeError(
                f"tensor data must be numbers (possibly nested in lists), but got {array.dtype} data"
            )
    dtypes.as_dtype(array.dtype, "tensor data dtype")
    return autograd.tensor_class(array, requires_grad=requires_grad)
