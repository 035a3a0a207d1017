"""Elementwise maths with torch's type promotion and gradients (``npconv.add`` is ``Tensor.add``).

Binary ops broadcast; their backward sums each gradient back to its operand's shape
(:func:`~npconv.autograd.sum_to_shape`) and casts it to the operand's dtype. Type promotion is
torch's (:func:`result_type`): a Python scalar or a 0-d tensor never widens a tensor of the same
category (``float32 tensor * 2.0`` stays float32) and an integer tensor with a float operand takes
the float operand's dtype (``int64 + float32 -> float32``, where NumPy would give float64).
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from .. import autograd, dtypes, tracing
from ..autograd import as_array, conj, is_tensor, make_result, sum_to_shape
from ..kernels import pointwise
from .shape import broadcast_shape

__all__ = [
    "result_type",
    "add",
    "sub",
    "subtract",
    "mul",
    "multiply",
    "div",
    "divide",
    "true_divide",
    "pow",
    "neg",
    "negative",
    "abs",
    "exp",
    "log",
    "log1p",
    "log2",
    "log10",
    "expm1",
    "sqrt",
    "rsqrt",
    "square",
    "reciprocal",
    "sin",
    "cos",
    "sign",
    "floor",
    "ceil",
    "round",
    "trunc",
    "clamp",
    "clip",
    "clamp_min",
    "clamp_max",
    "where",
    "maximum",
    "minimum",
    "masked_fill",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "isnan",
    "isfinite",
    "isinf",
    "logical_not",
    "logical_and",
    "logical_or",
    "allclose",
    "isclose",
    "equal",
    "floor_divide",
    "remainder",
    "fmod",
    "lerp",
    "lerp_",
    "erf",
    "erf_",
    "nan_to_num",
    "nan_to_num_",
    "addcmul",
    "addcdiv",
    "addcmul_",
    "addcdiv_",
    "is_floating_point",
]

_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _promote(a: np.dtype | None, b: np.dtype | None) -> np.dtype | None:
    """torch's promoteTypes: like NumPy's, but an integer with a float gives the float."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    ca, cb = _CATEGORY[a.kind], _CATEGORY[b.kind]
    if ca >= 2 > cb:
        return a
    if cb >= 2 > ca:
        return b
    return np.promote_types(a, b)


def _combine(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    """torch's combine_categories: ``lower`` only counts if its category is higher."""
    if higher is None:
        return lower
    if lower is None:
        return higher
    if higher.kind == "c":
        return higher
    if lower.kind == "c":
        return np.promote_types(higher, np.complex64) if higher.kind == "f" else lower
    if higher.kind == "f":
        return higher
    if higher.kind == "b" or lower.kind == "f":
        return _promote(higher, lower)
    return higher


def _scalar_dtype(value: Any) -> np.dtype:
    if isinstance(value, builtins.bool):
        return np.dtype(np.bool_)
    if isinstance(value, builtins.int):
        return np.dtype(np.int64)
    if isinstance(value, builtins.complex):
        return np.promote_types(dtypes.get_default_dtype().dtype, np.complex64)
    return dtypes.get_default_dtype().dtype


def result_type(*operands: Any) -> np.dtype:
    """The dtype torch gives an op on ``operands`` (tensors, arrays, Python scalars)."""
    dim_result = zero_result = wrapped_result = None
    for value in operands:
        if is_tensor(value) or isinstance(value, np.ndarray):
            array = as_array(value)
            if array.ndim:
                dim_result = _promote(dim_result, array.dtype)
            else:
                zero_result = _promote(zero_result, array.dtype)
        elif isinstance(value, np.generic):  # torch treats NumPy scalars as Python numbers
            wrapped_result = _promote(wrapped_result, _scalar_dtype(value.item()))
        elif isinstance(value, (builtins.bool, builtins.int, builtins.float, builtins.complex)):
            wrapped_result = _promote(wrapped_result, _scalar_dtype(value))
        else:
            array = np.asarray(value)
            if array.dtype.kind not in _CATEGORY:
                raise TypeError(
                    f"operand must be a Tensor, an array or a number, but got {type(value).__name__}"
                )
            if array.dtype == np.float64 and array.ndim:  # a Python list of floats: the default dtype
                array = array.astype(dtypes.get_default_dtype().dtype)
            dim_result = (
                _promote(dim_result, array.dtype) if array.ndim else _promote(zero_result, array.dtype)
            )
    result = _combine(dim_result, _combine(zero_result, wrapped_result))
    return np.dtype(np.float32) if result is None else result


def _operands(*values: Any, floating: bool = False) -> tuple[np.dtype, list[np.ndarray]]:
    """Each operand as an array of the promoted dtype (a float dtype if ``floating``)."""
    dtype = result_type(*values)
    if floating and dtype.kind in "biu":
        dtype = dtypes.get_default_dtype().dtype
    return dtype, [np.asarray(as_array(v), dtype=dtype) for v in values]


def _grad_to(grad: np.ndarray, like: np.ndarray) -> np.ndarray:
    grad = sum_to_shape(grad, like.shape)
    if like.dtype.kind == "c" or grad.dtype.kind != "c":
        return grad.astype(like.dtype, copy=False)
    return np.real(grad).astype(like.dtype, copy=False)


def _original(value: Any) -> np.ndarray:
    return as_array(value) if is_tensor(value) or isinstance(value, np.ndarray) else np.asarray(value)


def _inplace_operand(input: Any, other: Any) -> np.ndarray | None:
    """``other`` as an array of the promoted dtype when ``input op= other`` can be written straight into
    ``input``'s array (the promoted dtype casts to it, broadcasting keeps its shape); None when the
    general in-place path must run (it also raises the errors)."""
    target = as_array(input)
    dtype = result_type(input, other)
    if not np.can_cast(dtype, target.dtype, casting="same_kind"):
        return None
    values = np.asarray(as_array(other), dtype=dtype)
    if values.ndim > target.ndim or np.broadcast_shapes(target.shape, values.shape) != target.shape:
        return None
    return values


# -- arithmetic ---------------------------------------------------------------------------------------
def add(input: Any, other: Any, *, alpha: Any = 1) -> Any:
    """``input + alpha * other``."""
    _, (x, y) = _operands(input, other)
    xs, ys = _original(input), _original(other)
    if alpha != 1:
        y = y * np.asarray(alpha, dtype=y.dtype)
        return make_result(
            x + y,
            (input, other),
            lambda g: (_grad_to(g, xs), _grad_to(g * conj(np.asarray(alpha, g.dtype)), ys)),
            "AddBackward0",
            saved=(),
        )
    return make_result(
        _sum(x, y), (input, other), lambda g: (_grad_to(g, xs), _grad_to(g, ys)), "AddBackward0", saved=()
    )


def _sum(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x + y`` of two arrays of the promoted dtype (large equal-shaped ones on the compiled core)."""
    out = pointwise.add(x, y)
    return x + y if out is None else out


def _add_into(a: np.ndarray, y: np.ndarray) -> None:
    """``a += y`` (``y`` of the promoted dtype, cast into ``a``'s as NumPy's unsafe casting does)."""
    if pointwise.add(a, y, a) is None:
        np.add(a, y, out=a, casting="unsafe")


def add_(input: Any, other: Any, *, alpha: Any = 1) -> Any:
    """``input += alpha * other`` in ``input``'s memory (the values of :func:`add`)."""
    y = _inplace_operand(input, other)
    if y is None:
        return autograd.apply_inplace(input, add, (other,), {"alpha": alpha}, reads_target=False)
    ys = _original(other)
    if alpha != 1:
        y = y * np.asarray(alpha, dtype=y.dtype)
        return autograd.write_inplace(
            input, lambda a: np.add(a, y, out=a, casting="unsafe"), (other,),
            lambda g, _: (g, _grad_to(g * conj(np.asarray(alpha, g.dtype)), ys)), "AddBackward0")
    return autograd.write_inplace(
        input, lambda a: _add_into(a, y), (other,), lambda g, _: (g, _grad_to(g, ys)), "AddBackward0")


@tracing.recorded
def sub(input: Any, other: Any, *, alpha: Any = 1) -> Any:
    """``input - alpha * other``."""
    _, (x, y) = _operands(input, other)
    if x.dtype.kind == "b":
        raise TypeError("sub with two bool tensors is not supported; use logical_xor (as torch)")
    xs, ys = _original(input), _original(other)
    scale = np.asarray(alpha, dtype=y.dtype)
    return make_result(
        x - y * scale if alpha != 1 else x - y,
        (input, other),
        lambda g: (_grad_to(g, xs), _grad_to(-g * conj(scale), ys)),
        "SubBackward0",
        saved=(),
    )


subtract = sub


def sub_(input: Any, other: Any, *, alpha: Any = 1) -> Any:
    """``input -= alpha * other`` in ``input``'s memory (the values of :func:`sub`)."""
    y = None if as_array(input).dtype.kind == "b" else _inplace_operand(input, other)
    if y is None:
        return autograd.apply_inplace(input, sub, (other,), {"alpha": alpha}, reads_target=False)
    ys = _original(other)
    scale = np.asarray(alpha, dtype=y.dtype)
    if alpha != 1:
        y = y * scale
    return autograd.write_inplace(
        input, lambda a: np.subtract(a, y, out=a, casting="unsafe"), (other,),
        lambda g, _: (g, _grad_to(-g * conj(scale), ys)), "SubBackward0")


@tracing.recorded
def mul(input: Any, other: Any) -> Any:
    _, (x, y) = _operands(input, other)
    xs, ys = _original(input), _original(other)
    saved = [
        v for v, w in ((other, input), (input, other)) if is_tensor(v) and is_tensor(w) and w.requires_grad
    ]
    return make_result(
        x * y,
        (input, other),
        lambda g: (_grad_to(g * conj(y), xs), _grad_to(g * conj(x), ys)),
        "MulBackward0",
        saved=saved,
    )


multiply = mul


def _like(input: Any) -> np.ndarray:
    """An array of ``input``'s shape and dtype without memory (what :func:`_grad_to` reads)."""
    array = as_array(input)
    return np.broadcast_to(np.zeros((), array.dtype), array.shape)


def _saved_operand(input: Any, other: Any) -> list[Any]:
    """The tensor an in-place product or quotient saves: ``other`` when ``input``'s gradient needs it.
    Its memory is read at backward as it is then (torch's too: ``h.mul_(h.data)`` reads the product)."""
    return [other] if is_tensor(other) and input.requires_grad else []


def mul_(input: Any, other: Any) -> Any:
    """``input *= other`` in ``input``'s memory (the values of :func:`mul`); the backward keeps
    ``other`` and, when ``other`` requires grad, a copy of the original ``input`` (as torch)."""
    y = _inplace_operand(input, other)
    if y is None:
        reads = is_tensor(other) and other.requires_grad
        return autograd.apply_inplace(input, mul, (other,), reads_target=reads)
    saved = _saved_operand(input, other)
    xs, ys = _like(input), _original(other)
    other_grad = is_tensor(other) and other.requires_grad and autograd.is_grad_enabled()
    return autograd.write_inplace(
        input,
        lambda a: np.multiply(a, y, out=a, casting="unsafe"),
        (other,),
        lambda g, x: (_grad_to(g * conj(y), xs), None if x is None else _grad_to(g * conj(x), ys)),
        "MulBackward0",
        keeps="original" if other_grad else "",
        saved=saved,
    )


@tracing.recorded
def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> Any:
    """``input / other`` (true division; ``rounding_mode`` 'trunc' or 'floor' rounds, without gradient)."""
    if rounding_mode not in (None, "trunc", "floor"):
        raise ValueError(f"div rounding_mode must be None, 'trunc' or 'floor', but got {rounding_mode!r}")
    if rounding_mode is not None:
        dtype, (x, y) = _operands(input, other)
        with np.errstate(divide="ignore", invalid="ignore"):
            if dtype.kind in "biu":
                if np.any(y == 0):
                    raise ZeroDivisionError("div: integer division by zero")
                out = np.floor_divide(x, y) if rounding_mode == "floor" else np.trunc(x / y).astype(dtype)
            else:
                out = np.floor(x / y) if rounding_mode == "floor" else np.trunc(x / y)
        return make_result(
            out.astype(dtype, copy=False),
            (input, other),
            lambda g: (np.zeros_like(_original(input)), np.zeros_like(_original(other))),
            "DivBackward1",
            saved=(),
        )
    _, (x, y) = _operands(input, other, floating=True)
    xs, ys = _original(input), _original(other)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x / y

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            gx = g / conj(y)
            return _grad_to(gx, xs), _grad_to(-gx * conj(out), ys)

    saved = [other] if is_tensor(other) else []
    return make_result(out, (input, other), backward, "DivBackward0", saved=saved)


divide = true_divide = div


def div_(input: Any, other: Any, *, rounding_mode: str | None = None) -> Any:
    """``input /= other`` in ``input``'s memory (the values of :func:`div`; rounding modes and integer
    tensors take the general path); the backward keeps ``other`` and, when ``other`` requires grad,
    a copy of the original ``input`` (as torch)."""
    y = _inplace_operand(input, other) if rounding_mode is None else None
    if y is None:
        return autograd.apply_inplace(
            input, div, (other,), {"rounding_mode": rounding_mode}, reads_target=False
        )
    saved = _saved_operand(input, other)
    xs, ys = _like(input), _original(other)
    other_grad = is_tensor(other) and other.requires_grad and autograd.is_grad_enabled()

    def write(a: np.ndarray) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            np.true_divide(a, y, out=a, casting="unsafe")

    def backward(g: np.ndarray, x: np.ndarray | None) -> tuple:
        with np.errstate(divide="ignore", invalid="ignore"):
            gx = g / conj(y)
            return _grad_to(gx, xs), None if x is None else _grad_to(-gx * conj(x / y), ys)

    return autograd.write_inplace(input, write, (other,), backward, "DivBackward0",
                                  keeps="original" if other_grad else "", saved=saved)


def floor_divide(input: Any, other: Any) -> Any:
    return div(input, other, rounding_mode="floor")


def remainder(input: Any, other: Any) -> Any:
    """Python's ``%`` (the sign of ``other``); gradient 1 for ``input``, ``-floor(x / y)`` for ``other``."""
    _, (x, y) = _operands(input, other)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.mod(x, y)
    xs, ys = _original(input), _original(other)
    return make_result(
        out,
        (input, other),
        lambda g: (_grad_to(g, xs), _grad_to(-g * np.floor_divide(x, y), ys)),
        "RemainderBackward0",
    )


def fmod(input: Any, other: Any) -> Any:
    """C's ``fmod`` (the sign of ``input``)."""
    _, (x, y) = _operands(input, other)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.fmod(x, y)
    xs, ys = _original(input), _original(other)
    return make_result(
        out, (input, other), lambda g: (_grad_to(g, xs), _grad_to(-g * np.trunc(x / y), ys)), "FmodBackward0"
    )


def pow(input: Any, exponent: Any) -> Any:  # noqa: A001 - torch's name
    """``input ** exponent``; d/dx = ``y x^(y-1)`` (0 where ``y == 0``), d/dy = ``x^y log x``."""
    _, (x, y) = _operands(input, exponent)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.power(x, y)
    xs, ys = _original(input), _original(exponent)

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slope = np.where(y == 0, 0, y * np.power(x, y - 1))  # d(x**0)/dx = 0, also at x = 0
            gx = _grad_to(g * conj(slope), xs)
            gy = None
            if is_tensor(exponent) and exponent.requires_grad:
                gy = _grad_to(
                    g * conj(np.where((x == 0) & (y >= 0), 0, out * np.log(x.astype(out.dtype)))), ys
                )
        return gx, gy

    return make_result(out, (input, exponent), backward, "PowBackward0")


@tracing.recorded
def neg(input: Any) -> Any:
    x = as_array(input)
    if x.dtype.kind == "b":
        raise TypeError("negation of a bool tensor is not supported; use logical_not (as torch)")
    return make_result(-x, (input,), lambda g: (-g,), "NegBackward0", saved=())


negative = neg


def _unary(input: Any, forward: Any, derivative: Any, name: str, uses_output: bool = False) -> Any:
    """``forward(x)`` on a float array (integers promoted), gradient ``g * conj(derivative(x, out))``."""
    x = as_array(input)
    if x.dtype.kind in "biu":
        x = x.astype(dtypes.get_default_dtype().dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.asarray(forward(x)).astype(x.dtype, copy=False)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return (g * conj(derivative(x, out)),)

    return make_result(out, (input,), backward, name, saved=("output",) if uses_output else None)


def _unary_(input: Any, ufunc: Any, grad: Any, name: str, fallback: Any, keeps: str = "result") -> Any:
    """``input = ufunc(input)`` in the memory of a float or complex tensor, the backward
    ``grad(g, out)`` reading the new values (saved at the new version, as torch's) unless ``keeps``
    is ""; other dtypes take the general in-place path through ``fallback`` (the out-of-place op)."""
    if as_array(input).dtype.kind not in "fc":
        return autograd.apply_inplace(input, fallback, (), reads_target=False)

    def write(a: np.ndarray) -> None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ufunc(a, out=a)

    def backward(g: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return (grad(g, out),)

    return autograd.write_inplace(input, write, (), backward, name, keeps=keeps)


def neg_(input: Any) -> Any:
    """``input = -input`` in its memory (saves nothing)."""
    return _unary_(input, np.negative, lambda g, out: -g, "NegBackward0", neg, keeps="")


def exp_(input: Any) -> Any:
    """``input = exp(input)`` in its memory; the backward reads the result, as torch's."""
    return _unary_(input, np.exp, lambda g, out: g * conj(out), "ExpBackward0", exp)


def sqrt_(input: Any) -> Any:
    """``input = sqrt(input)`` in its memory; the backward reads the result, as torch's."""
    return _unary_(input, np.sqrt, lambda g, out: g * conj(1 / (2 * out)), "SqrtBackward0", sqrt)


def abs(input: Any) -> Any:  # noqa: A001
    x = as_array(input)
    if x.dtype.kind in "biu":
        return make_result(np.abs(x), (input,), lambda g: (g,), "AbsBackward0")
    if x.dtype.kind == "c":  # d|z| = z/|z| (0 at 0), torch's sgn
        out = np.abs(x)
        return make_result(out, (input,), lambda g: ((g * _sgn(x)).astype(x.dtype),), "AbsBackward0")
    return make_result(np.abs(x), (input,), lambda g: (g * np.sign(x),), "AbsBackward0")


def _sgn(x: np.ndarray) -> np.ndarray:
    magnitude = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(magnitude == 0, 0, x / np.where(magnitude == 0, 1, magnitude))


def exp(input: Any) -> Any:
    return _unary(input, np.exp, lambda x, out: out, "ExpBackward0", uses_output=True)


def expm1(input: Any) -> Any:
    return _unary(input, np.expm1, lambda x, out: out + 1, "Expm1Backward0", uses_output=True)


def log(input: Any) -> Any:
    return _unary(input, np.log, lambda x, out: 1 / x, "LogBackward0")


def log1p(input: Any) -> Any:
    return _unary(input, np.log1p, lambda x, out: 1 / (x + 1), "Log1PBackward0")


def log2(input: Any) -> Any:
    return _unary(input, np.log2, lambda x, out: 1 / (x * x.dtype.type(np.log(2))), "Log2Backward0")


def log10(input: Any) -> Any:
    return _unary(input, np.log10, lambda x, out: 1 / (x * x.dtype.type(np.log(10))), "Log10Backward0")


def sqrt(input: Any) -> Any:
    return _unary(input, np.sqrt, lambda x, out: 1 / (2 * out), "SqrtBackward0", uses_output=True)


def rsqrt(input: Any) -> Any:
    return _unary(
        input,
        lambda x: 1 / np.sqrt(x),
        lambda x, out: -0.5 * out * out * out,
        "RsqrtBackward0",
        uses_output=True,
    )


def square(input: Any) -> Any:
    return pow(input, 2)


def reciprocal(input: Any) -> Any:
    return _unary(input, lambda x: 1 / x, lambda x, out: -out * out, "ReciprocalBackward0", uses_output=True)


def sin(input: Any) -> Any:
    return _unary(input, np.sin, lambda x, out: np.cos(x), "SinBackward0")


def cos(input: Any) -> Any:
    return _unary(input, np.cos, lambda x, out: -np.sin(x), "CosBackward0")


def _zero_gradient(input: Any, forward: Any, name: str) -> Any:
    x = as_array(input)
    return make_result(forward(x), (input,), lambda g: (np.zeros_like(g),), name, saved=())


def sign(input: Any) -> Any:
    x = as_array(input)
    if x.dtype.kind == "b":
        return make_result(x.copy(), (input,), lambda g: (None,), "SignBackward0", saved=())
    return _zero_gradient(input, np.sign, "SignBackward0")


def floor(input: Any) -> Any:
    return _zero_gradient(
        input, lambda x: np.floor(x) if x.dtype.kind in "fc" else x.copy(), "FloorBackward0"
    )


def ceil(input: Any) -> Any:
    return _zero_gradient(input, lambda x: np.ceil(x) if x.dtype.kind in "fc" else x.copy(), "CeilBackward0")


def trunc(input: Any) -> Any:
    return _zero_gradient(
        input, lambda x: np.trunc(x) if x.dtype.kind in "fc" else x.copy(), "TruncBackward0"
    )


def round(input: Any, *, decimals: int = 0) -> Any:  # noqa: A001
    """Round half to even, like torch."""
    return _zero_gradient(
        input, lambda x: np.round(x, decimals) if x.dtype.kind in "fc" else x.copy(), "RoundBackward0"
    )


# -- clamp, where, min/max of two tensors ---------------------------------------------------------------
def clamp(input: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002 - torch's names
    """``min(max(x, min), max)`` (NaN stays NaN); the gradient passes to ``input`` where
    ``min <= x <= max`` (not at NaN, as torch), to ``min`` where ``x < min``, to ``max`` where ``x > max``."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    bounds = [b for b in (min, max) if b is not None]
    dtype = result_type(input, *bounds)
    x = np.asarray(as_array(input), dtype=dtype)
    lo = None if min is None else np.asarray(as_array(min), dtype=dtype)
    hi = None if max is None else np.asarray(as_array(max), dtype=dtype)
    below = np.zeros(x.shape, bool) if lo is None else x < lo
    above = np.zeros(x.shape, bool) if hi is None else x > hi
    out = x
    if lo is not None:
        out = np.where(below, lo, out)
    if hi is not None:
        out = np.where(np.greater(out, hi), hi, out)  # also min > max: torch gives max
    out = np.asarray(out, dtype=dtype)

    def backward(g: np.ndarray) -> tuple:
        zero = np.zeros((), g.dtype)
        inside = np.ones(x.shape, bool) if lo is None else x >= lo  # False at NaN: torch's zero gradient
        if hi is not None:
            inside &= x <= hi
        grads: list[Any] = [_grad_to(np.where(inside, g, zero), _original(input))]
        if lo is not None:
            grads.append(_grad_to(np.where(below & ~above, g, zero), _original(min)))
        if hi is not None:
            grads.append(_grad_to(np.where(above, g, zero), _original(max)))
        return tuple(grads)

    return make_result(out, [input, *bounds], backward, "ClampBackward1")  # the backward reads x and bounds


clip = clamp


def clamp_min(input: Any, min: Any) -> Any:  # noqa: A002
    return clamp(input, min, None)


def clamp_max(input: Any, max: Any) -> Any:  # noqa: A002
    return clamp(input, None, max)


def where(condition: Any, input: Any = None, other: Any = None) -> Any:
    """``input`` where ``condition`` holds, else ``other`` (broadcast); ``where(condition)`` = nonzero."""
    mask = np.asarray(as_array(condition))
    if input is None and other is None:
        return tuple(autograd.tensor_class(i) for i in np.nonzero(mask))
    if mask.dtype != np.bool_:
        raise TypeError(f"where condition must be a bool tensor, but got {mask.dtype}")
    _, (x, y) = _operands(input, other)
    out = np.where(mask, x, y)
    xs, ys = _original(input), _original(other)
    zero = np.zeros((), out.dtype)
    return make_result(
        out,
        (input, other),
        lambda g: (_grad_to(np.where(mask, g, zero), xs), _grad_to(np.where(mask, zero, g), ys)),
        "WhereBackward0",
        saved=(),
    )


def _binary_extremum(input: Any, other: Any, pick: Any, name: str) -> Any:
    _, (x, y) = _operands(input, other)
    out = pick(x, y)
    xs, ys = _original(input), _original(other)

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # ties split the gradient in half, as torch's max/min backward does
        x_wins = np.where(x == y, 0.5, (out == x) | np.isnan(x)).astype(g.dtype)
        return _grad_to(g * x_wins, xs), _grad_to(g * (1 - x_wins), ys)

    return make_result(out, (input, other), backward, name)


def maximum(input: Any, other: Any) -> Any:
    return _binary_extremum(input, other, np.maximum, "MaximumBackward0")


def minimum(input: Any, other: Any) -> Any:
    return _binary_extremum(input, other, np.minimum, "MinimumBackward0")


def masked_fill(input: Any, mask: Any, value: Any) -> Any:
    """``value`` where ``mask`` (broadcast to ``input``'s shape), else ``input``."""
    x = as_array(input)
    m = np.asarray(as_array(mask))
    if m.dtype != np.bool_:
        raise TypeError(f"masked_fill mask must be a bool tensor, but got {m.dtype}")
    v = as_array(value)
    if v.ndim:
        raise ValueError(f"masked_fill value must be a number or a 0-d tensor, but got {v.ndim} dimensions")
    try:
        m_full = np.broadcast_to(m, x.shape)
    except ValueError as error:
        raise ValueError(
            f"masked_fill mask of shape {m.shape} does not broadcast to the input's shape {x.shape}"
        ) from error
    out = np.where(m_full, v.astype(x.dtype), x)
    return make_result(
        out,
        (input, value),
        lambda g: (np.where(m_full, 0, g).astype(g.dtype), np.asarray(g[m_full].sum())),
        "MaskedFillBackward0",
        saved=(),
    )


def lerp(input: Any, end: Any, weight: Any) -> Any:
    """``input + weight * (end - input)``."""
    return add(input, mul(weight, sub(end, input)))


def lerp_(input: Any, end: Any, weight: Any) -> Any:
    """``input += weight * (end - input)`` in place; ``end`` and a tensor ``weight`` must have
    ``input``'s dtype (torch's rule)."""
    dtype = as_array(input).dtype
    if dtype.kind not in "fc":
        raise NotImplementedError(f"lerp_: \"lerp_kernel\" not implemented for input's dtype {dtype}")
    for name, operand in (("end", end), ("weight", weight)):
        if (is_tensor(operand) or isinstance(operand, np.ndarray)) and as_array(operand).dtype != dtype:
            raise RuntimeError(
                f"expected dtype {dtypes.as_dtype(dtype)} for `{name}` but got dtype "
                f"{dtypes.as_dtype(as_array(operand).dtype)}"
            )
    return autograd.apply_inplace(input, lerp, (end, weight), reads_target=False)


def _number(value: Any, function: str, argument: str) -> Any:
    """``value`` checked to be a Python or NumPy number (or a one-element tensor: its value)."""
    if (is_tensor(value) or isinstance(value, np.ndarray)) and as_array(value).size == 1:
        return as_array(value).item()
    if not isinstance(value, (builtins.int, builtins.float, builtins.complex, np.number, np.bool_)):
        raise TypeError(f"{function}(): argument '{argument}' must be Number, not {type(value).__name__}")
    return value


def _tensor_operand(value: Any, function: str, argument: str, position: int) -> None:
    if not (is_tensor(value) or isinstance(value, np.ndarray)):
        raise TypeError(
            f"{function}(): argument '{argument}' (position {position}) must be Tensor, "
            f"not {type(value).__name__}"
        )


def addcmul(input: Any, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Any:
    """``input + value * tensor1 * tensor2`` (broadcast, torch's type promotion)."""
    _tensor_operand(tensor1, "addcmul", "tensor1", 2)
    _tensor_operand(tensor2, "addcmul", "tensor2", 3)
    broadcast_shape(_original(input).shape, as_array(tensor1).shape, as_array(tensor2).shape)
    return add(input, mul(tensor1, tensor2), alpha=_number(value, "addcmul", "value"))


def addcdiv(input: Any, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Any:
    """``input + value * tensor1 / tensor2`` (true division; two integer operands are refused, as torch)."""
    _tensor_operand(tensor1, "addcdiv", "tensor1", 2)
    _tensor_operand(tensor2, "addcdiv", "tensor2", 3)
    broadcast_shape(_original(input).shape, as_array(tensor1).shape, as_array(tensor2).shape)
    if as_array(tensor1).dtype.kind in "biu" and as_array(tensor2).dtype.kind in "biu":
        raise RuntimeError(
            "Integer division with addcdiv is no longer supported: tensor1 and tensor2 are both integer "
            "tensors. Use (input + value * torch.trunc(tensor1 / tensor2)).to(input.dtype) for the historic "
            "behaviour, or (input + value * tensor1 / tensor2) for true division."
        )
    return add(input, div(tensor1, tensor2), alpha=_number(value, "addcdiv", "value"))


def addcmul_(input: Any, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Any:
    """``input += value * tensor1 * tensor2`` in place (the values and gradients of :func:`addcmul`)."""
    return autograd.apply_inplace(input, addcmul, (tensor1, tensor2), {"value": value}, reads_target=False)


def addcdiv_(input: Any, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Any:
    """``input += value * tensor1 / tensor2`` in place (the values and gradients of :func:`addcdiv`)."""
    return autograd.apply_inplace(input, addcdiv, (tensor1, tensor2), {"value": value}, reads_target=False)


_TWO_OVER_SQRT_PI = 2.0 / np.sqrt(np.pi)


def _erf_slope(x: np.ndarray) -> np.ndarray:
    return x.dtype.type(_TWO_OVER_SQRT_PI) * np.exp(-x * x)


def _erf_ufunc(input: Any) -> Any:
    dtype = as_array(input).dtype
    if dtype.kind == "c":
        raise NotImplementedError(f"erf: not implemented for complex tensors (input's dtype {dtype})")
    from scipy import special  # imported on first use: scipy.special adds ~0.3 s to `import npconv`

    return special.erf


def erf(input: Any) -> Any:
    """The error function (integers and bools in the default float dtype); gradient
    ``2 / sqrt(pi) * exp(-x^2)``."""
    function = _erf_ufunc(input)
    return _unary(input, function, lambda x, out: _erf_slope(x), "ErfBackward0")


def erf_(input: Any) -> Any:
    """``input = erf(input)`` in its memory; the backward reads a copy of the original ``input``."""
    function = _erf_ufunc(input)
    return _unary_(input, function, lambda g, x: g * _erf_slope(x), "ErfBackward0", erf, keeps="original")


def nan_to_num(input: Any, nan: Any = 0.0, posinf: Any = None, neginf: Any = None) -> Any:
    """NaN, +inf and -inf replaced by ``nan``, ``posinf`` and ``neginf`` (by default 0 and the dtype's
    largest and lowest finite values; real and imaginary parts apart); gradient ``g`` where ``input``
    is finite, 0 elsewhere. Integer and bool tensors are copied."""
    for name, number in (("nan", nan), ("posinf", posinf), ("neginf", neginf)):
        if number is not None and (
            isinstance(number, builtins.bool)
            or not isinstance(number, (builtins.int, builtins.float, np.integer, np.floating))
        ):
            raise TypeError(f"nan_to_num(): argument '{name}' must be float, not {type(number).__name__}")
    x = as_array(input)
    if x.dtype.kind not in "fc":
        return make_result(x.copy(), (input,), lambda g: (None,), "NanToNumBackward0", saved=())
    out = np.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return (np.where(np.isfinite(x), g, np.zeros((), g.dtype)),)

    return make_result(out, (input,), backward, "NanToNumBackward0")


def nan_to_num_(input: Any, nan: Any = 0.0, posinf: Any = None, neginf: Any = None) -> Any:
    """:func:`nan_to_num` written into ``input``."""
    return autograd.apply_inplace(input, nan_to_num, (nan, posinf, neginf), reads_target=True)


def is_floating_point(input: Any) -> builtins.bool:
    """Whether ``input``'s dtype is a floating point type (float16/32/64)."""
    if not is_tensor(input):
        raise TypeError(
            f"is_floating_point(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}"
        )
    return as_array(input).dtype.kind == "f"


# -- comparisons and tests (no gradient) ------------------------------------------------------------------
def _compare(input: Any, other: Any, op: Any) -> Any:
    _, (x, y) = _operands(input, other)
    return autograd.tensor_class(op(x, y))


def eq(input: Any, other: Any) -> Any:
    return _compare(input, other, np.equal)


def ne(input: Any, other: Any) -> Any:
    return _compare(input, other, np.not_equal)


def lt(input: Any, other: Any) -> Any:
    return _compare(input, other, np.less)


def le(input: Any, other: Any) -> Any:
    return _compare(input, other, np.less_equal)


def gt(input: Any, other: Any) -> Any:
    return _compare(input, other, np.greater)


def ge(input: Any, other: Any) -> Any:
    return _compare(input, other, np.greater_equal)


def isnan(input: Any) -> Any:
    return autograd.tensor_class(np.isnan(as_array(input)))


def isfinite(input: Any) -> Any:
    return autograd.tensor_class(np.isfinite(as_array(input)))


def isinf(input: Any) -> Any:
    return autograd.tensor_class(np.isinf(as_array(input)))


def logical_not(input: Any) -> Any:
    return autograd.tensor_class(np.logical_not(as_array(input)))


def logical_and(input: Any, other: Any) -> Any:
    return autograd.tensor_class(np.logical_and(as_array(input), as_array(other)))


def logical_or(input: Any, other: Any) -> Any:
    return autograd.tensor_class(np.logical_or(as_array(input), as_array(other)))


def isclose(input: Any, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:
    _, (x, y) = _operands(input, other)
    return autograd.tensor_class(np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan))


def allclose(
    input: Any, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False
) -> bool:
    """``|input - other| <= atol + rtol * |other|`` everywhere (broadcast), like ``torch.allclose``."""
    _, (x, y) = _operands(input, other)
    return builtins.bool(np.all(np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan)))


def equal(input: Any, other: Any) -> bool:
    """Same shape and same values (``torch.equal``)."""
    x, y = as_array(input), as_array(other)
    return x.shape == y.shape and builtins.bool(np.all(x == y))
