"""Differentiable elementwise activations, softmax and dropout (torch's formulas and gradients).

Each function here is also the Tensor method (``Tensor.relu is npconv.relu``) and what
``nn.functional`` calls after checking arguments, so each formula exists once.

* ``relu``: ``max(x, 0)`` (NaN stays NaN), gradient ``g`` where the output is not ``<= 0``
  (torch's ``threshold_backward``: a NaN input passes its gradient); ``inplace=True`` writes into
  ``x`` under torch's in-place rules; ``leaky_relu``: slope ``a`` for ``x <= 0``.
* ``gelu``: ``x * Phi(x)`` with ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``, or the tanh approximation
  ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``.
* ``silu``: ``x / (1 + exp(-x))``, gradient ``s * (1 + x * (1 - s))`` (``s = sigmoid(x)``).
* ``softmax``: ``e^(x - max) / sum``, gradient ``y * (g - sum(g * y))``;
  ``log_softmax``: ``x - max - log sum e^(x - max)``, gradient ``g - e^y * sum(g)``.
* ``dropout``: ``x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import dtypes, tracing
from ..autograd import apply_inplace, as_array, make_result, write_inplace
from ..kernels import pointwise
from .shape import canonical_dim

__all__ = ["relu", "relu_", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax",
           "dropout"]
Tensor = Any  # the type of results (npconv.Tensor); not imported: tensor.py imports this module

_SQRT1_2 = math.sqrt(0.5)
_GELU_PDF = 2 / math.sqrt(math.pi) * _SQRT1_2 * 0.5  # 1 / sqrt(2 pi)
_GELU_BETA = math.sqrt(2.0) * 2 / math.sqrt(math.pi) * 0.5  # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


@tracing.recorded
def relu(input: Any, inplace: bool = False) -> Tensor:
    """``max(input, 0)``; with ``inplace`` the result is written into ``input``, which is returned
    (its backward then reads ``input``'s memory, saved at the new version, as torch's)."""
    if inplace:
        if as_array(input).dtype.kind == "f":
            return write_inplace(input, _relu_in_place, (), lambda g, out: (_relu_grad(g, out),),
                                 "ReluBackward0", keeps="result")
        return apply_inplace(input, relu, (), reads_target=False)
    data = as_array(input)
    if data.dtype.kind == "b":
        raise TypeError("relu: bool tensors are not supported (as torch)")
    if data.dtype.kind == "c":
        raise TypeError("relu: complex tensors are not supported (as torch)")
    if data.size >= pointwise.PARALLEL_MIN_SIZE:
        out = pointwise.relu(data)
    else:  # small arrays: the same rule without the thread pool's per-call overhead
        out = pointwise.maximum_zero(data, np.empty_like(data)) if data.dtype.kind == "f" else np.maximum(
            data, data.dtype.type(0))
    return make_result(out, (input,), lambda g: (_relu_grad(g, out),), "ReluBackward0", saved=("output",))


def _relu_grad(g: np.ndarray, out: np.ndarray) -> np.ndarray:
    """torch's ``threshold_backward(g, out, 0)``: ``g`` where ``out > 0`` (or NaN), else 0."""
    if out.size >= pointwise.PARALLEL_MIN_SIZE:
        return pointwise.relu_grad(g, out)
    return np.where(out <= 0, g.dtype.type(0), g)


def _relu_in_place(data: np.ndarray) -> None:
    pointwise.activate_(data, "relu")


def relu_(input: Any) -> Tensor:
    return relu(input, inplace=True)


@tracing.recorded
def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    data = as_array(x)
    slope = data.dtype.type(negative_slope)
    positive = data > 0
    out = np.where(positive, data, data * slope)
    return make_result(out, (x,), lambda g: (np.where(positive, g, g * slope),), "LeakyReluBackward0")


def _negative_slope_backward(op: str) -> None:
    """torch's error for the backward of an in-place op whose result does not tell the input's sign."""
    raise RuntimeError(
        f"In-place {op} backward calculation is triggered with a negative slope which is not "
        "supported. This is caused by calling in-place forward function with a negative slope, "
        "please call out-of-place version instead."
    )


def leaky_relu_(x: Any, negative_slope: float = 0.01) -> Tensor:
    """:func:`leaky_relu` written into a float tensor's memory. The backward reads the result, as
    torch's: its sign is the input's only for ``negative_slope >= 0``, so, as torch, the backward of
    a negative slope raises (the forward alone, e.g. under ``no_grad``, is fine)."""
    data = as_array(x)
    if data.dtype.kind != "f":
        return apply_inplace(x, leaky_relu, (negative_slope,))
    slope = data.dtype.type(negative_slope)

    def backward(g: np.ndarray, out: np.ndarray) -> tuple[np.ndarray]:
        if negative_slope < 0:
            _negative_slope_backward("leakyReLu")
        return (np.where(out > 0, g, g * slope),)

    return write_inplace(x, lambda a: np.multiply(a, slope, out=a, where=~(a > 0)), (), backward,
                         "LeakyReluBackward1", keeps="result")


@tracing.recorded
def gelu(x: Any, approximate: str = "none") -> Tensor:
    data = as_array(x)
    t = data.dtype.type
    if approximate == "tanh":
        inner = t(_GELU_BETA) * (data + t(_GELU_KAPPA) * data * data * data)
        tanh_inner = np.tanh(inner)
        out = t(0.5) * data * (1 + tanh_inner)

        def backward(g: np.ndarray) -> tuple[np.ndarray]:
            left = t(0.5) * data
            right = 1 + tanh_inner
            inner_derivative = t(_GELU_BETA) * (1 + t(3 * _GELU_KAPPA) * data * data)
            return (g * (t(0.5) * right + left * (1 - tanh_inner * tanh_inner) * inner_derivative),)
    else:
        from scipy import special  # imported on first use: scipy.special adds ~0.3 s to `import npconv`
        cdf = t(0.5) * (1 + special.erf(data * t(_SQRT1_2)))
        out = data * cdf

        def backward(g: np.ndarray) -> tuple[np.ndarray]:
            pdf = np.exp(t(-0.5) * data * data) * t(_GELU_PDF)
            return (g * (cdf + data * pdf),)

    return make_result(out.astype(data.dtype, copy=False), (x,), backward, "GeluBackward0")


def _floating(data: np.ndarray) -> np.ndarray:
    """Integer and bool inputs compute in the default float dtype, as torch's unary float ops do."""
    return data.astype(dtypes.get_default_dtype().dtype) if data.dtype.kind in "biu" else data




@tracing.recorded
def sigmoid(input: Any) -> Tensor:
    """``1 / (1 + exp(-x))``; gradient ``g * (1 - y) * y`` (conjugated for complex)."""
    out = pointwise.sigmoid(_floating(as_array(input)))
    return make_result(out, (input,), lambda g: (g * np.conj((1 - out) * out),), "SigmoidBackward0",
                       saved=("output",))


@tracing.recorded
def tanh(input: Any) -> Tensor:
    """Hyperbolic tangent; gradient ``g * (1 - y^2)`` (conjugated for complex)."""
    out = np.tanh(_floating(as_array(input)))
    return make_result(out, (input,), lambda g: (g * np.conj(1 - out * out),), "TanhBackward0",
                       saved=("output",))


def sigmoid_(input: Any) -> Tensor:
    """``sigmoid`` written into a float tensor's memory; the backward reads the result, as torch's."""
    if as_array(input).dtype.kind != "f":
        return apply_inplace(input, sigmoid, (), reads_target=False)
    from scipy import special
    return write_inplace(input, lambda a: special.expit(a, out=a), (),
                         lambda g, out: (g * np.conj((1 - out) * out),), "SigmoidBackward0", keeps="result")


def tanh_(input: Any) -> Tensor:
    """``tanh`` written into a float or complex tensor's memory; the backward reads the result."""
    if as_array(input).dtype.kind not in "fc":
        return apply_inplace(input, tanh, (), reads_target=False)
    return write_inplace(input, lambda a: np.tanh(a, out=a), (), lambda g, out: (g * np.conj(1 - out * out),),
                         "TanhBackward0", keeps="result")


@tracing.recorded
def silu(x: Any) -> Tensor:
    """``x / (1 + exp(-x))`` (torch's formula); gradient ``g * s * (1 + x * (1 - s))`` with ``s =
    sigmoid(x)`` recomputed from the input, as torch's ``silu_backward`` (one compiled pass each for
    float32/float64)."""
    data = as_array(x)
    if data.dtype.kind != "f":
        s = pointwise.sigmoid(data)
        return make_result(data * s, (x,), lambda g: (g * s * (1 + data * (1 - s)),), "SiluBackward0")
    return make_result(pointwise.silu(data), (x,), lambda g: (pointwise.silu_grad(g, data),), "SiluBackward0")


def log_softmax_array(data: np.ndarray, dim: int) -> np.ndarray:
    """``x - max - log(sum(exp(x - max)))`` along ``dim`` (a pure array function)."""
    shifted = data - _max_along(data, dim)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def _max_along(data: np.ndarray, dim: int) -> np.ndarray:
    """The max along ``dim`` (kept), ``-inf`` over an empty ``dim`` (whose softmax is empty, as torch's)."""
    if data.shape[dim] == 0:
        return data.max(axis=dim, keepdims=True, initial=-np.inf)
    return data.max(axis=dim, keepdims=True)


def _softmax_operand(input: Any, dim: int, dtype: Any) -> tuple[np.ndarray, int]:
    data = as_array(input)
    if dtype is not None:
        data = data.astype(dtypes.to_numpy_dtype(dtype))
    if data.dtype.kind not in "fc":
        raise TypeError(f"softmax input must be floating point, but got {dtypes.as_dtype(data.dtype)}")
    axis = canonical_dim(dim, data.ndim)
    return (data.reshape(1) if data.ndim == 0 else data), axis


@tracing.recorded
def softmax(input: Any, dim: int, dtype: Any = None) -> Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``; gradient ``y * (g - sum(g * y))``."""
    data, dim = _softmax_operand(input, dim, dtype)
    shape, source = as_array(input).shape, as_array(input).dtype
    e = np.exp(data - _max_along(data, dim))
    out = e / e.sum(axis=dim, keepdims=True)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        gy = g.reshape(out.shape) * out
        return ((gy - out * gy.sum(axis=dim, keepdims=True)).reshape(shape).astype(source, copy=False),)

    return make_result(out.reshape(shape), (input,), backward, "SoftmaxBackward0", saved=("output",))


@tracing.recorded
def log_softmax(input: Any, dim: int, dtype: Any = None) -> Tensor:
    """``x - max - log(sum(exp(x - max)))`` along ``dim``; gradient ``g - exp(y) * sum(g)``."""
    data, dim = _softmax_operand(input, dim, dtype)
    shape, source = as_array(input).shape, as_array(input).dtype
    out = log_softmax_array(data, dim)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        g = g.reshape(out.shape)
        return ((g - np.exp(out) * g.sum(axis=dim, keepdims=True)).reshape(shape).astype(source, copy=False),)

    return make_result(out.reshape(shape), (input,), backward, "LogSoftmaxBackward0", saved=("output",))


def dropout(x: Any, p: float, generator: np.random.Generator) -> Tensor:
    """Zero each element with probability ``p`` (drawn from ``generator``), scale the rest by ``1/(1-p)``."""
    data = as_array(x)
    if p >= 1:
        scale = np.zeros((), dtype=data.dtype)
    else:
        keep = generator.random(data.shape) >= p
        scale = keep.astype(data.dtype) * data.dtype.type(1 / (1 - p))
    return make_result(data * scale, (x,), lambda g: (g * scale,), "MulBackward0")


# -- piecewise-linear and smooth activations (torch's CPU kernels' formulas and masks) ------------
@tracing.recorded
def hardtanh(x: Any, min_val: float, max_val: float) -> Tensor:
    """``min(max(x, min_val), max_val)``; gradient 1 strictly inside ``(min_val, max_val)``, else 0.

    NaN passes through the forward (torch's ``a <= lo ? lo : a >= hi ? hi : a``); its gradient is 0.
    """
    data = as_array(x)
    t = data.dtype.type
    lo, hi = t(min_val), t(max_val)
    if data.dtype.kind == "f":  # one clip pass, 10x faster than nested wheres; keeps -0.0 as torch
        out = np.clip(data, lo, hi)
    else:
        out = np.where(data <= lo, lo, np.where(data >= hi, hi, data)).astype(data.dtype, copy=False)
    return make_result(out, (x,), lambda g: (np.where((data > lo) & (data < hi), g, t(0)),),
                       "HardtanhBackward0")


@tracing.recorded
def hardtanh_(x: Any, min_val: float, max_val: float) -> Tensor:
    """:func:`hardtanh` written into a float tensor's memory; the backward reads a copy of the input
    taken first (torch's ``hardtanh_`` saves the original input, so changing the result is allowed)."""
    data = as_array(x)
    if data.dtype.kind != "f":
        return apply_inplace(x, hardtanh, (min_val, max_val))
    t = data.dtype.type
    lo, hi = t(min_val), t(max_val)
    return write_inplace(x, lambda a: pointwise.activate_(a, "hardtanh", min_val, max_val), (),
                         lambda g, original: (np.where((original > lo) & (original < hi), g, t(0)),),
                         "HardtanhBackward0", keeps="original")


@tracing.recorded
def hardswish(x: Any) -> Tensor:
    """``x * min(max(x + 3, 0), 6) / 6``; gradient 0 up to -3, ``x / 3 + 1/2`` strictly inside
    ``(-3, 3)``, then 1 (torch's CPU kernel's masks)."""
    data = as_array(x)
    t = data.dtype.type
    with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, as in torch
        out = (data * np.minimum(np.maximum(data + t(3), t(0)), t(6)) / t(6)).astype(data.dtype, copy=False)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        middle = g * (data / t(3) + t(0.5))
        return (np.where(data <= t(-3), t(0), np.where(data < t(3), middle, g)),)

    return make_result(out, (x,), backward, "HardswishBackward0")


_ONE_SIXTH_F32 = np.float32(1 / 6)  # torch's kernel scales the gradient by 1.0f / 6.0f in every dtype


@tracing.recorded
def hardsigmoid(x: Any) -> Tensor:
    """``min(max(x + 3, 0), 6) / 6``; gradient 1/6 strictly inside ``(-3, 3)``, else 0."""
    data = as_array(x)
    t = data.dtype.type
    out = (np.minimum(np.maximum(data + t(3), t(0)), t(6)) / t(6)).astype(data.dtype, copy=False)
    inside = (data > t(-3)) & (data < t(3))
    return make_result(out, (x,), lambda g: (np.where(inside, g * t(_ONE_SIXTH_F32), t(0)),),
                       "HardsigmoidBackward0")


@tracing.recorded
def elu(x: Any, alpha: float) -> Tensor:
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``; gradient ``alpha * exp(x)`` where ``x <= 0``."""
    data = as_array(x)
    t = data.dtype.type
    a = t(alpha)
    negative = data <= 0
    with np.errstate(over="ignore"):
        exp = np.exp(np.where(negative, data, t(0)))
    out = np.where(negative, a * (exp - t(1)), data).astype(data.dtype, copy=False)
    return make_result(out, (x,), lambda g: (np.where(negative, g * a * exp, g),), "EluBackward0")


def elu_(x: Any, alpha: float) -> Tensor:
    """:func:`elu` written into a float tensor's memory. The backward reads the result, as torch's
    (gradient ``g * (y + alpha)`` where ``y <= 0``), so, as torch, a negative ``alpha`` has no backward."""
    data = as_array(x)
    if data.dtype.kind != "f":
        return apply_inplace(x, elu, (alpha,))
    t = data.dtype.type
    a = t(alpha)

    def write(values: np.ndarray) -> None:
        negative = values <= 0
        with np.errstate(over="ignore"):
            values[negative] = a * (np.exp(values[negative]) - t(1))

    def backward(g: np.ndarray, out: np.ndarray) -> tuple[np.ndarray]:
        if alpha < 0:
            _negative_slope_backward("elu")
        return (np.where(out <= 0, g * (out + a), g),)

    return write_inplace(x, write, (), backward, "EluBackward1", keeps="result")


def softplus(x: Any, beta: float, threshold: float) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``, or ``x`` where ``beta * x > threshold``;
    gradient ``sigmoid(beta * x)`` (1 above the threshold)."""
    data = as_array(x)
    t = data.dtype.type
    b = t(beta)
    scaled = data * b
    linear = scaled > t(threshold)
    with np.errstate(over="ignore"):
        z = np.exp(np.where(linear, t(0), scaled))
    out = np.where(linear, data, np.log1p(z) / b).astype(data.dtype, copy=False)
    return make_result(out, (x,), lambda g: (np.where(linear, g, g * z / (z + t(1))),), "SoftplusBackward0")


@tracing.recorded
def mish(x: Any) -> Tensor:
    """``x * tanh(softplus(x))``; gradient ``tanh(sp) + x * sigmoid(x) * (1 - tanh(sp)^2)``."""
    data = as_array(x)
    with np.errstate(over="ignore", invalid="ignore"):  # exp overflow -> tanh 1; -inf * 0 is NaN as torch
        tanh_sp = np.tanh(np.log1p(np.exp(data)))
        out = (data * tanh_sp).astype(data.dtype, copy=False)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in torch
            return (g * (tanh_sp + data * pointwise.sigmoid(data) * (1 - tanh_sp * tanh_sp)),)

    return make_result(out, (x,), backward, "MishBackward0")


def glu(x: Any, dim: int) -> Tensor:
    """``a * sigmoid(b)`` where ``a, b`` are the halves of ``x`` along ``dim`` (an even size)."""
    data = as_array(x)
    a, b = np.split(data, 2, axis=dim)
    s = pointwise.sigmoid(b)
    out = a * s

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        ga = g * s
        return (np.concatenate([ga, ga * a * (1 - s)], axis=dim),)

    return make_result(out, (x,), backward, "GluBackward0")


def prelu(x: Any, weight: Any) -> Tensor:
    """``x`` where ``x > 0``, else ``w * x`` with ``w`` one value or one per channel (axis 1);
    gradients ``w`` / ``x * g`` where ``x <= 0`` (summed over all but the channel axis for ``w``)."""
    data = as_array(x)
    w = as_array(weight)
    shape = (1, w.size) + (1,) * (data.ndim - 2) if w.size > 1 else ()
    wb = w.reshape(shape)
    positive = data > 0
    out = np.where(positive, data, wb * data).astype(data.dtype, copy=False)

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gx = np.where(positive, g, wb * g)
        gw = np.where(positive, 0, data * g)
        gw = gw.sum() if w.size == 1 else gw.sum(axis=(0,) + tuple(range(2, data.ndim)))
        return gx, np.asarray(gw, dtype=w.dtype).reshape(w.shape)

    return make_result(out, (x, weight), backward, "PreluKernelBackward0")


__all__ += ["hardtanh", "hardswish", "hardsigmoid", "elu", "softplus", "mish", "glu", "prelu"]
