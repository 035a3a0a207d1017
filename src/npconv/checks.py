"""The argument checks of the functional API: one place, one message template.

Every functional module (:mod:`npconv.nn.functional` and the modules it re-exports) and
:mod:`npconv.geometry` import their checks from here. npconv's own messages read
``"<op> <argument> must <requirement>, but got <actual>"`` (:func:`must`); where torch's exact
wording is part of the parity tests (shape and channel mismatches, ``Expected 3D (unbatched) or
4D (batched) input``), the torch text is kept. One rule, one exception type: a value of the wrong
kind (not an int, not an array, a non-floating dtype, dtypes that differ) is a TypeError; a value
of the right kind outside its range (rank, shape, sign, size) is a ValueError.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from . import autograd
from .autograd import as_array, is_tensor

Tensor = Any  # npconv.Tensor; not imported: checks sit below tensor.py (geometry imports them)

__all__ = [
    "INT64_MAX", "must", "shape_text", "is_int", "check_int", "check_flag", "check_choice", "as_floating",
    "as_tensor", "optional_tensor", "check_same_dtype", "check_batched_rank", "batched",
    "memory_limit", "check_allocatable", "refuses_oversize", "check_weight_rank", "check_conv_arguments",
    "reduction", "REDUCTIONS",
]

INT64_MAX = 2**63 - 1  # torch's sizes, strides and paddings are int64
REDUCTIONS = ("none", "mean", "sum")


def must(argument: str, requirement: str, actual: Any, op: str | None = None) -> str:
    """The message ``"<op> <argument> must <requirement>, but got <actual>"`` (``op`` optional)."""
    subject = f"{op} {argument}" if op else argument
    return f"{subject} must {requirement}, but got {actual}"


def shape_text(shape: Sequence[int]) -> str:
    """A shape as torch prints sizes: ``[1, 2, 3]``."""
    return "[" + ", ".join(str(int(v)) for v in shape) + "]"


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: int | None = None, op: str | None = None) -> int:
    """``value`` as an int in ``[minimum, INT64_MAX]``: TypeError if not an int, else ValueError."""
    if not is_int(value):
        raise TypeError(must(name, "be an int", repr(value), op))
    value = int(value)
    if minimum is not None and value < minimum:
        kind = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
        raise ValueError(must(name, f"be {kind}", value, op))
    if value > INT64_MAX:
        raise ValueError(must(name, f"be at most {INT64_MAX} (2**63 - 1)", value, op))
    return value


def check_flag(value: Any, name: str, op: str | None = None) -> bool:
    """``value`` as a bool (Python or NumPy bool), else TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(must(name, "be a bool", repr(value), op))
    return bool(value)


def check_choice(value: Any, choices: Sequence[Any], name: str, op: str | None = None) -> Any:
    """``value`` if it is one of ``choices``, else ValueError."""
    if not isinstance(value, (str, numbers.Number)) or value not in choices:
        options = "{" + ", ".join(repr(c) for c in choices) + "}"
        raise ValueError(must(name, f"be one of {options}", f"{name}={value!r}", op))
    return value


def as_floating(value: Any, name: str) -> Any:
    """``value`` as a Tensor or ndarray of floating/complex dtype (lists are converted), or TypeError."""
    if not (is_tensor(value) or isinstance(value, np.ndarray)):
        if not isinstance(value, (list, tuple, int, float, complex)) or isinstance(value, bool):
            raise TypeError(must(name, "be a Tensor or ndarray", type(value).__name__))
        value = np.asarray(value)
    dtype = as_array(value).dtype
    if dtype.kind not in "fc":
        raise TypeError(must(name, "have a floating point or complex dtype", dtype))
    return value


def as_tensor(value: Any, name: str, floating: bool = True) -> Tensor:
    """``value`` as a Tensor (ndarrays and nested lists are wrapped, not copied); with ``floating``
    its dtype must be real floating, else TypeError."""
    if not is_tensor(value):
        if not isinstance(value, (np.ndarray, list, tuple, numbers.Number)):
            raise TypeError(must(name, "be a Tensor or ndarray", type(value).__name__))
        value = autograd.tensor_class(np.asarray(value))
    if floating and autograd.as_array(value).dtype.kind != "f":  # the array's: Tensor.dtype converts
        raise TypeError(must(name, "have a real floating point dtype", value.dtype))
    return value


def optional_tensor(value: Any, name: str) -> Tensor | None:
    """None, or :func:`as_tensor` of ``value``."""
    return None if value is None else as_tensor(value, name)


def check_same_dtype(input_dtype: Any, other_dtype: Any, name: str, op: str | None = None) -> None:
    """TypeError unless ``other_dtype`` (of argument ``name``) is the input's dtype (torch: no promotion)."""
    if np.dtype(input_dtype) != np.dtype(other_dtype):
        prefix = f"{op}: " if op else ""
        raise TypeError(f"{prefix}input type ({np.dtype(input_dtype)}) and {name} type "
                        f"({np.dtype(other_dtype)}) should be the same")


def check_batched_rank(shape: Sequence[int], nd: int, op: str) -> bool:
    """Whether an input of ``shape`` to an ``nd``-spatial-dimension op is batched; ValueError
    (torch's words) unless its rank is ``nd + 1`` (unbatched) or ``nd + 2`` (batched)."""
    if len(shape) not in (nd + 1, nd + 2):
        raise ValueError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {op}, "
                         f"but got input of size: {shape_text(shape)}")
    return len(shape) == nd + 2


def batched(input: Any, nd: int, op: str) -> tuple[Any, bool]:
    """``(input with a batch axis, whether it had one)`` after :func:`check_batched_rank`."""
    x = as_array(input)
    if check_batched_rank(x.shape, nd, op):
        return input, True
    return (input.unsqueeze(0) if is_tensor(input) else x[None]), False


def memory_limit() -> int:
    """Bytes no single array may exceed: this machine's physical memory (``2**63 - 1`` where the
    platform does not say). A larger request is refused up front rather than left to swap or the
    OOM killer."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return INT64_MAX
    return min(INT64_MAX, total) if total > 0 else INT64_MAX


def _memory_requirement() -> str:
    limit = memory_limit()
    return f"fit in memory (at most {limit} bytes{' on this machine' if limit < INT64_MAX else ''})"


def check_allocatable(shape: Sequence[int], itemsize: int, what: str, op: str | None = None) -> None:
    """ValueError if an array of ``shape`` could not exist here (more bytes than :func:`memory_limit`)."""
    if math.prod(int(v) for v in shape) * itemsize > memory_limit():
        raise ValueError(must(what, _memory_requirement(), f"size {shape_text(shape)}", op))


F = TypeVar("F", bound=Callable[..., Any])


def refuses_oversize(op: str | None, what: str = "result") -> Callable[[F], F]:
    """Decorator: a NumPy allocation failure inside ``op`` (a result or parameter larger than the
    memory there is) becomes npconv's ValueError naming the size, raised before any state changed.
    ``op=None`` names the op by the type of the first argument (a method's ``self``)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except MemoryError as error:
                shape, dtype = getattr(error, "shape", None), getattr(error, "dtype", None)
                actual = (f"an array of size {shape_text(shape)} ({dtype})" if shape is not None
                          else "a larger request")
                name = op if op is not None else (type(args[0]).__name__ if args else None)
                raise ValueError(must(what, _memory_requirement(), actual, name)) from None

        return guarded  # type: ignore[return-value]

    return decorate


def check_weight_rank(shape: Sequence[int], ndim: int, op: str) -> None:
    """ValueError unless a convolution weight of ``shape`` has ``ndim + 2`` dimensions."""
    if len(shape) != ndim + 2:
        raise ValueError(must("weight", f"be {ndim + 2}-dimensional (out_channels, in_channels/groups, "
                              "*kernel_size)", f"weight of size {shape_text(shape)}", op))


def check_conv_arguments(input: Any, weight: Any, bias: Any, ndim: int, groups: int,
                         transposed: bool, op: str) -> tuple[Any, Any, Any, bool]:
    """Validate the tensors of a convolution call as torch does; return them batched.

    Returns ``(input, weight, bias, batched)`` where an unbatched input got a leading batch axis.
    ``weight`` is ``(O, C/groups, *k)`` (``(C, O/groups, *k)`` if ``transposed``), ``bias (O,)``.
    """
    input = as_floating(input, "input")
    weight = as_floating(weight, "weight")
    x, w = as_array(input), as_array(weight)
    check_weight_rank(w.shape, ndim, op)
    is_batched = check_batched_rank(x.shape, ndim, op)
    check_same_dtype(x.dtype, w.dtype, "weight", op)
    groups = check_int(groups, "groups", 1, op)
    if any(k < 1 for k in w.shape[2:]):
        raise ValueError(must("weight", "have a positive kernel size",
                              f"weight of size {shape_text(w.shape)}", op))
    channels = x.shape[1] if is_batched else x.shape[0]
    batched_shape = x.shape if is_batched else (1,) + x.shape
    if w.shape[0] < groups:
        raise ValueError(f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
                         f"but got weight of size {shape_text(w.shape)} instead")
    if w.shape[0] % groups != 0:
        raise ValueError(f"Given groups={groups}, expected weight to be divisible by {groups} at "
                         f"dimension 0, but got weight of size {shape_text(w.shape)} instead")
    if transposed:
        if w.size == 0:  # torch: "non-empty weight tensor expected"
            raise ValueError(must("weight", "be non-empty", f"weight of size {shape_text(w.shape)}", op))
        if channels != w.shape[0]:
            raise ValueError(f"Given transposed=1, weight of size {shape_text(w.shape)}, expected input"
                             f"{shape_text(batched_shape)} to have {w.shape[0]} channels, "
                             f"but got {channels} channels instead")
        out_channels = w.shape[1] * groups
    else:
        if channels != w.shape[1] * groups:
            raise ValueError(f"Given groups={groups}, weight of size {shape_text(w.shape)}, expected input"
                             f"{shape_text(batched_shape)} to have {w.shape[1] * groups} channels, "
                             f"but got {channels} channels instead")
        out_channels = w.shape[0]
    if bias is not None:
        bias = as_floating(bias, "bias")
        b = as_array(bias)
        if b.shape != (out_channels,):
            raise ValueError(f"Given weight of size {shape_text(w.shape)}, expected bias to be "
                             f"1-dimensional with {out_channels} elements, but got bias of size "
                             f"{shape_text(b.shape)} instead")
        check_same_dtype(x.dtype, b.dtype, "bias", op)
    if not is_batched:
        input = input.unsqueeze(0) if is_tensor(input) else x[None]
    return input, weight, bias, is_batched


def reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    """torch's ``_Reduction``: the legacy ``size_average``/``reduce`` flags override ``reduction``."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        return ("mean" if size_average else "sum") if reduce else "none"
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction (expected one of {REDUCTIONS})")
    return reduction
