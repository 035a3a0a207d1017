"""Differentiable elementwise activations, softmax and dropout (torch's formulas and gradients).

Each function here is also the Tensor method (``Tensor.relu is npconv.relu``) and what
``nn.functional`` calls after checking arguments, so each formula exists once.

* ``relu``: ``max(x, 0)`` (NaN stays NaN), gradient ``g`` where the output is not ``<= 0``
  (torch's ``threshold_backward``: a NaN input passes its gradient); ``inplace=True`` writes into
  ``x`` under torch's in-place rules; ``leaky_relu``: slope ``a`` for ``x <= 0``.
* ``gelu``: ``x * Phi(x)`` with ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``, or the tanh approximation
  ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``.
* ``silu``: ``x * sigmoid(x)``, gradient ``s * (1 + x * (1 - s))``.
* ``softmax``: ``e^(x - max) / sum``, gradient ``y * (g - sum(g * y))``;
  ``log_softmax``: ``x - max - log sum e^(x - max)``, gradient ``g - e^y * sum(g)``.
* ``dropout``: ``x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from .. import dtypes
from ..autograd import apply_inplace, as_array, make_result
from ..kernels import pointwise
from .shape import canonical_dim

__all__ = ["relu", "relu_", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax",
           "dropout"]
Tensor = Any  # the type of results (npconv.Tensor); not imported: tensor.py imports this module

_SQRT1_2 = math.sqrt(0.5)
_GELU_PDF = 2 / math.sqrt(math.pi) * _SQRT1_2 * 0.5  # 1 / sqrt(2 pi)
_GELU_BETA = math.sqrt(2.0) * 2 / math.sqrt(math.pi) * 0.5  # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


def relu(input: Any, inplace: bool = False) -> Tensor:
    """``max(input, 0)``; with ``inplace`` the result is written into ``input``, which is returned."""
    if inplace:
        return apply_inplace(input, relu, (), reads_target=False)
    data = as_array(input)
    if data.dtype.kind == "b":
        raise TypeError("relu: bool tensors are not supported (as torch)")
    if data.dtype.kind == "c":
        raise TypeError("relu: complex tensors are not supported (as torch)")
    out = pointwise.relu(data)
    return make_result(out, (input,), lambda g: (pointwise.relu_grad(g, out),), "ReluBackward0",
                       saved=("output",))


def relu_(input: Any) -> Tensor:
    return relu(input, inplace=True)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    data = as_array(x)
    slope = data.dtype.type(negative_slope)
    positive = data > 0
    out = np.where(positive, data, data * slope)
    return make_result(out, (x,), lambda g: (np.where(positive, g, g * slope),), "LeakyReluBackward0")


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
        cdf = t(0.5) * (1 + special.erf(data * t(_SQRT1_2)))
        out = data * cdf

        def backward(g: np.ndarray) -> tuple[np.ndarray]:
            pdf = np.exp(t(-0.5) * data * data) * t(_GELU_PDF)
            return (g * (cdf + data * pdf),)

    return make_result(out.astype(data.dtype, copy=False), (x,), backward, "GeluBackward0")


def _floating(data: np.ndarray) -> np.ndarray:
    """Integer and bool inputs compute in the default float dtype, as torch's unary float ops do."""
    return data.astype(dtypes.get_default_dtype().dtype) if data.dtype.kind in "biu" else data


def _sigmoid(data: np.ndarray) -> np.ndarray:
    return special.expit(data).astype(data.dtype, copy=False)


def sigmoid(input: Any) -> Tensor:
    """``1 / (1 + exp(-x))``; gradient ``g * (1 - y) * y`` (conjugated for complex)."""
    out = _sigmoid(_floating(as_array(input)))
    return make_result(out, (input,), lambda g: (g * np.conj((1 - out) * out),), "SigmoidBackward0",
                       saved=("output",))


def tanh(input: Any) -> Tensor:
    """Hyperbolic tangent; gradient ``g * (1 - y^2)`` (conjugated for complex)."""
    out = np.tanh(_floating(as_array(input)))
    return make_result(out, (input,), lambda g: (g * np.conj(1 - out * out),), "TanhBackward0",
                       saved=("output",))


def silu(x: Any) -> Tensor:
    data = as_array(x)
    s = _sigmoid(data)
    return make_result(data * s, (x,), lambda g: (g * s * (1 + data * (1 - s)),), "SiluBackward0")


def log_softmax_array(data: np.ndarray, dim: int) -> np.ndarray:
    """``x - max - log(sum(exp(x - max)))`` along ``dim`` (a pure array function)."""
    shifted = data - data.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def _softmax_operand(input: Any, dim: int, dtype: Any) -> tuple[np.ndarray, int]:
    data = as_array(input)
    if dtype is not None:
        data = data.astype(dtypes.to_numpy_dtype(dtype))
    if data.dtype.kind not in "fc":
        raise TypeError(f"softmax input must be floating point, but got {dtypes.as_dtype(data.dtype)}")
    axis = canonical_dim(dim, data.ndim)
    return (data.reshape(1) if data.ndim == 0 else data), axis


def softmax(input: Any, dim: int, dtype: Any = None) -> Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``; gradient ``y * (g - sum(g * y))``."""
    data, dim = _softmax_operand(input, dim, dtype)
    shape, source = as_array(input).shape, as_array(input).dtype
    e = np.exp(data - data.max(axis=dim, keepdims=True))
    out = e / e.sum(axis=dim, keepdims=True)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        gy = g.reshape(out.shape) * out
        return ((gy - out * gy.sum(axis=dim, keepdims=True)).reshape(shape).astype(source, copy=False),)

    return make_result(out.reshape(shape), (input,), backward, "SoftmaxBackward0", saved=("output",))


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
