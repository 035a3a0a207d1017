"""More of ``torch.nn.functional`` (re-exported by :mod:`npconv.nn.functional`): ``relu_``,
``leaky_relu_``, ``selu``, ``logsigmoid``, ``alpha_dropout``, ``pairwise_distance``,
``triplet_margin_loss`` and ``max_unpool1d/2d/3d``, with torch's signatures, checks and gradients.

Where an op is a composition of existing differentiable ops it is written as one (``selu`` is
``scale * elu(x, alpha)``, ``pairwise_distance`` is ``norm(x1 - x2 + eps)``, ``max_unpool`` scatters
into zeros); ``logsigmoid`` has its own stable forward and torch's backward:

* ``logsigmoid(x) = min(x, 0) - log1p(exp(-|x|))``, gradient ``g * (1[x < 0] - sign * z / (1 + z))``
  with ``z = exp(-|x|)``, ``sign = +1`` for ``x < 0`` else ``-1`` (torch's ``log_sigmoid_backward``).
* ``alpha_dropout``: ``x * mask * a + b`` with ``mask ~ Bernoulli(1 - p)``,
  ``a = 1 / sqrt((alpha'^2 p + 1)(1 - p))``, ``b = (mask - 1) * alpha' * a + alpha' * a * p`` and
  ``alpha' = 1.7580993408473766`` (SELU's ``scale * alpha``): zero mean and unit variance are kept.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import make_result
from ..checks import as_tensor, check_flag, shape_text
from ..checks import reduction as reduction_mode
from ..ops import activation as _act_ops
from ..random import default_generator
from ..tensor import Tensor, as_array
from .functional_extra import _real
from .functional_layers import _check_probability, _reduce_elements, apply_maybe_inplace
from .functional_layers import leaky_relu as _leaky_relu
from .functional_layers import relu as _relu

__all__ = [
    "relu_", "leaky_relu_", "selu", "logsigmoid", "alpha_dropout", "pairwise_distance", "triplet_margin_loss",
    "max_unpool1d", "max_unpool2d", "max_unpool3d",
]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_ALPHA_DROPOUT_ALPHA = 1.7580993408473766


# -- activations ------------------------------------------------------------------------------
def relu_(input: Any) -> Tensor:
    """In-place :func:`relu` (``F.relu(input, inplace=True)``)."""
    return _relu(input, inplace=True)


def leaky_relu_(input: Any, negative_slope: float = 0.01) -> Tensor:
    """In-place :func:`leaky_relu` (``F.leaky_relu(input, negative_slope, inplace=True)``)."""
    return _leaky_relu(input, negative_slope, inplace=True)


def _selu(x: Tensor) -> Tensor:
    return _act_ops.elu(x, _SELU_ALPHA) * _SELU_SCALE


def selu(input: Any, inplace: bool = False) -> Tensor:
    """``scale * elu(x, alpha)`` with SELU's fixed ``alpha`` and ``scale``."""
    return apply_maybe_inplace(as_tensor(input, "input"), inplace, _selu)


def _logsigmoid(x: Any) -> Tensor:
    data = as_array(x)
    t = data.dtype.type
    z = np.exp(-np.abs(data))
    out = np.minimum(data, t(0)) - np.log1p(z)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        negative = data < 0
        sign = np.where(negative, t(1), t(-1))
        return (g * (negative.astype(data.dtype) - sign * (z / (1 + z))),)

    return make_result(out, (x,), backward, "LogSigmoidBackward0")


def logsigmoid(input: Any) -> Tensor:
    """``log(1 / (1 + exp(-x)))``, computed stably."""
    return _logsigmoid(as_tensor(input, "input"))


def alpha_dropout(input: Any, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:
    """Dropout for SELU networks: dropped elements are set to SELU's negative saturation value and the
    result is affinely rescaled so that zero mean and unit variance are kept (torch's formula; the mask
    is drawn from npconv's generator). Identity when not ``training`` or ``p == 0``."""
    p = _check_probability(p)
    inplace = check_flag(inplace, "inplace")
    x = as_tensor(input, "input")
    if not training or p == 0 or x.numel() == 0:
        return x
    data = as_array(x)
    if p == 1:
        zero = Tensor(np.zeros((), dtype=data.dtype))
        return x.mul_(zero) if inplace else x * zero
    keep = (default_generator().random(data.shape) >= p).astype(data.dtype)
    alpha = _ALPHA_DROPOUT_ALPHA
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    scale = Tensor(keep * data.dtype.type(a))
    t = data.dtype.type
    shift = Tensor(((keep - 1) * t(alpha * a) + t(alpha * a * p)).astype(data.dtype))
    return x.mul_(scale).add_(shift) if inplace else x * scale + shift


# -- distances --------------------------------------------------------------------------------
def pairwise_distance(x1: Any, x2: Any, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """``||x1 - x2 + eps||_p`` over the last axis of the broadcast inputs."""
    a, b = as_tensor(x1, "x1"), as_tensor(x2, "x2")
    if a.dtype != b.dtype:
        raise TypeError(f"pairwise_distance: x2 must have x1's dtype {a.dtype}, got {b.dtype}")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError as error:
        raise ValueError(f"pairwise_distance: x1 of size {shape_text(a.shape)} and x2 of size "
                         f"{shape_text(b.shape)} cannot be broadcast together") from error
    p, eps = _real(p, "p"), _real(eps, "eps")
    if p < 0:
        raise ValueError(f"pairwise_distance: p must be non-negative, got {p}")
    keepdim = check_flag(keepdim, "keepdim")
    difference = a - b + eps
    if not shape:  # torch: the norm of the single element
        return difference.reshape(1).norm(p, 0)
    return difference.norm(p, -1, keepdim=keepdim)


def triplet_margin_loss(anchor: Any, positive: Any, negative: Any, margin: float = 1.0, p: float = 2,
                        eps: float = 1e-6, swap: bool = False, size_average: Any = None, reduce: Any = None,
                        reduction: str = "mean") -> Tensor:
    """``max(d(a, p) - d(a, n) + margin, 0)`` with ``d`` = :func:`pairwise_distance`; ``swap`` uses
    ``min(d(a, n), d(p, n))`` as the negative distance."""
    mode = reduction_mode(size_average, reduce, reduction)
    margin = _real(margin, "margin")
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    a, pos = as_tensor(anchor, "anchor"), as_tensor(positive, "positive")
    neg = as_tensor(negative, "negative")
    if not a.ndim == pos.ndim == neg.ndim:
        raise ValueError("The anchor, positive, and negative tensors are expected to have the same number of "
                         f"dimensions, but got: anchor {a.ndim}D, positive {pos.ndim}D, and negative "
                         f"{neg.ndim}D inputs")
    distance_positive = pairwise_distance(a, pos, p, eps)
    distance_negative = pairwise_distance(a, neg, p, eps)
    if check_flag(swap, "swap"):
        distance_negative = distance_negative.minimum(pairwise_distance(pos, neg, p, eps))
    loss = (distance_positive - distance_negative + margin).clamp_min(0)
    return _reduce_elements(loss, None, mode)


# -- max unpooling ----------------------------------------------------------------------------
def _tuple(value: Any, nd: int, name: str, op: str) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd
    if len(values) != nd or any(not isinstance(v, numbers.Integral) or isinstance(v, bool) for v in values):
        raise TypeError(f"{op}: {name} must be an int or a sequence of {nd} ints, got {value!r}")
    return tuple(int(v) for v in values)


def _unpool_output_size(in_size: Sequence[int], kernel: tuple[int, ...], stride: tuple[int, ...],
                        padding: tuple[int, ...], output_size: Any, op: str) -> tuple[int, ...]:
    """torch's ``_unpool_output_size``: ``(in - 1) * stride + kernel - 2 * padding`` or ``output_size``
    (its last ``nd`` entries if it also names N and C), which must lie within one stride of that."""
    nd = len(kernel)
    default = tuple((in_size[d] - 1) * stride[d] + kernel[d] - 2 * padding[d] for d in range(nd))
    if output_size is None:
        size = default
    else:
        size = tuple(output_size)
        if len(size) == nd + 2:
            size = size[2:]
        if len(size) != nd:
            raise ValueError(f"output_size should be a sequence containing {nd} or {nd + 2} elements, but it "
                             f"has a length of '{len(size)}'")
        for d in range(nd):
            low, high = default[d] - stride[d], default[d] + stride[d]
            if not low < size[d] < high:
                raise ValueError(f'invalid output_size "{list(output_size)}" (dim {d} must be between {low} '
                                 f"and {high})")
    if any(s <= 0 for s in size):
        raise ValueError(f"{op}: output_size must be positive, got {size}")
    return tuple(int(s) for s in size)


def _max_unpool(nd: int, input: Any, indices: Any, kernel_size: Any, stride: Any, padding: Any,
                output_size: Any) -> Tensor:
    op = f"max_unpool{nd}d"
    x = as_tensor(input, "input")
    if not isinstance(indices, (Tensor, np.ndarray)):
        raise TypeError(f"{op}: indices must be a Tensor, got {type(indices).__name__}")
    index = as_array(indices)
    if index.dtype != np.int64:
        raise TypeError(f"{op}: elements in indices should be type int64 but got: {index.dtype}")
    if x.ndim not in (nd + 1, nd + 2) or 0 in x.shape[-nd - 1:]:
        raise ValueError(f"{op}: expected a non-empty {nd + 1}D or {nd + 2}D input, got input of size "
                         f"{shape_text(x.shape)}")
    if tuple(index.shape) != tuple(x.shape):
        raise ValueError(f"{op}: expected indices of the input's shape {shape_text(x.shape)}, got indices of "
                         f"size {shape_text(index.shape)}")
    kernel = _tuple(kernel_size, nd, "kernel_size", op)
    steps = kernel if stride is None else _tuple(stride, nd, "stride", op)
    pads = _tuple(padding, nd, "padding", op)
    size = _unpool_output_size(x.shape[-nd:], kernel, steps, pads, output_size, op)
    plane = math.prod(size)
    if index.size and (index.min() < 0 or index.max() >= plane):
        bad = int(index.min() if index.min() < 0 else index.max())
        raise ValueError(f"{op}: indices hold an invalid max index {bad}: the output planes "
                         f"{'x'.join(map(str, size))} have {plane} elements")
    lead = tuple(x.shape[:-nd])
    flat = x.reshape(*lead, -1)
    out = flat.new_zeros(lead + (plane,)).scatter(-1, Tensor(index.reshape(*lead, -1)), flat)
    return out.reshape(*lead, *size)


def max_unpool1d(input: Any, indices: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """Partial inverse of :func:`max_pool1d`: each value goes to its index, every other element is 0."""
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(input: Any, indices: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """Partial inverse of :func:`max_pool2d` (indices flat within each ``(H, W)`` output plane)."""
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(input: Any, indices: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """Partial inverse of :func:`max_pool3d` (indices flat within each ``(D, H, W)`` output plane)."""
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size)
