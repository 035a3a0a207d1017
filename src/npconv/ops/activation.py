"""Differentiable elementwise activations, softmax and dropout (torch's formulas and gradients).

* ``relu``: ``max(x, 0)``, gradient ``[x > 0]``; ``leaky_relu``: slope ``a`` for ``x <= 0``.
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

from ..kernels import pointwise
from ..tensor import Tensor, as_array, make_result

__all__ = ["relu", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout"]

_SQRT1_2 = math.sqrt(0.5)
_GELU_PDF = 2 / math.sqrt(math.pi) * _SQRT1_2 * 0.5  # 1 / sqrt(2 pi)
_GELU_BETA = math.sqrt(2.0) * 2 / math.sqrt(math.pi) * 0.5  # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


def relu(x: Any) -> Tensor:
    out = pointwise.relu(as_array(x))
    return make_result(out, (x,), lambda g: (pointwise.relu_grad(g, out),), "ReluBackward0")


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


def _sigmoid(data: np.ndarray) -> np.ndarray:
    return special.expit(data).astype(data.dtype, copy=False)


def sigmoid(x: Any) -> Tensor:
    out = _sigmoid(as_array(x))
    return make_result(out, (x,), lambda g: (g * (1 - out) * out,), "SigmoidBackward0")


def tanh(x: Any) -> Tensor:
    out = np.tanh(as_array(x))
    return make_result(out, (x,), lambda g: (g * (1 - out * out),), "TanhBackward0")


def silu(x: Any) -> Tensor:
    data = as_array(x)
    s = _sigmoid(data)
    return make_result(data * s, (x,), lambda g: (g * s * (1 + data * (1 - s)),), "SiluBackward0")


def log_softmax_array(data: np.ndarray, dim: int) -> np.ndarray:
    """``x - max - log(sum(exp(x - max)))`` along ``dim`` (a pure array function)."""
    shifted = data - data.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def softmax(x: Any, dim: int) -> Tensor:
    data = as_array(x)
    e = np.exp(data - data.max(axis=dim, keepdims=True))
    out = e / e.sum(axis=dim, keepdims=True)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        gy = g * out
        return (gy - out * gy.sum(axis=dim, keepdims=True),)

    return make_result(out, (x,), backward, "SoftmaxBackward0")


def log_softmax(x: Any, dim: int) -> Tensor:
    out = log_softmax_array(as_array(x), dim)
    return make_result(out, (x,), lambda g: (g - np.exp(out) * g.sum(axis=dim, keepdims=True),),
                       "LogSoftmaxBackward0")


def dropout(x: Any, p: float, generator: np.random.Generator) -> Tensor:
    """Zero each element with probability ``p`` (drawn from ``generator``), scale the rest by ``1/(1-p)``."""
    data = as_array(x)
    if p >= 1:
        scale = np.zeros((), dtype=data.dtype)
    else:
        keep = generator.random(data.shape) >= p
        scale = keep.astype(data.dtype) * data.dtype.type(1 / (1 - p))
    return make_result(data * scale, (x,), lambda g: (g * scale,), "MulBackward0")
