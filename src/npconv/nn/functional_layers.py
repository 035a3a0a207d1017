"""Functional forms of the layers around the convolutions, with torch's signatures and checks.

Activations (``relu``, ``leaky_relu``, ``gelu``, ``silu``, ``sigmoid``, ``tanh``, ``softmax``,
``log_softmax``, ``dropout``), ``linear``, ``flatten``, pooling (``max_pool1d/2d/3d``,
``avg_pool1d/2d/3d``, ``adaptive_avg_pool1d/2d/3d``), normalisation (``batch_norm``,
``group_norm``) and losses (``cross_entropy``, ``nll_loss``, ``mse_loss``, ``l1_loss``,
``binary_cross_entropy_with_logits``). Re-exported by :mod:`npconv.nn.functional`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from ..autograd import apply_inplace
from ..checks import (
    as_tensor,
    check_batched_rank,
    check_flag,
    check_int,
    check_same_dtype,
    must,
    optional_tensor,
    shape_text,
)
from ..checks import reduction as reduction_mode
from ..geometry import ConvGeometry
from ..ops import activation as _act
from ..ops import linear as _linear
from ..ops import loss as _loss
from ..ops import norm as _norm
from ..ops import pool as _pool
from ..random import default_generator
from ..tensor import Tensor, as_array

__all__ = [
    "relu", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout", "linear",
    "flatten", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "batch_norm", "group_norm",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy_with_logits",
]


# -- activations ------------------------------------------------------------------------------
def apply_maybe_inplace(x: Tensor, inplace: Any, op: Any, *args: Any, reads_input: bool = True) -> Tensor:
    """``op(x, *args)``; with ``inplace`` written into ``x`` and ``x`` returned (torch's in-place rules:
    refused for a leaf requiring grad; the backward sees a copy of the input when it reads it)."""
    if check_flag(inplace, "inplace"):
        return apply_inplace(x, op, args, reads_target=reads_input)
    return op(x, *args)


def relu(input: Any, inplace: bool = False) -> Tensor:
    """``max(input, 0)``; with ``inplace`` written into ``input`` (torch's in-place rules). Integer
    tensors too, as torch's (bool and complex refused)."""
    return _act.relu(as_tensor(input, "input", floating=False), inplace=check_flag(inplace, "inplace"))


def leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``input`` where positive, else ``negative_slope * input``."""
    if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
        raise TypeError(f"negative_slope must be a real number, got {negative_slope!r}")
    if check_flag(inplace, "inplace"):
        return _act.leaky_relu_(as_tensor(input, "input"), float(negative_slope))
    return _act.leaky_relu(as_tensor(input, "input"), float(negative_slope))


def gelu(input: Any, approximate: str = "none") -> Tensor:
    """``x * Phi(x)`` (``approximate='none'``) or its tanh approximation (``'tanh'``)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    return _act.gelu(as_tensor(input, "input"), approximate)


def silu(input: Any, inplace: bool = False) -> Tensor:
    """``x * sigmoid(x)``."""
    return apply_maybe_inplace(as_tensor(input, "input"), inplace, _act.silu)


def sigmoid(input: Any) -> Tensor:
    """``1 / (1 + exp(-x))``."""
    return _act.sigmoid(as_tensor(input, "input"))


def tanh(input: Any) -> Tensor:
    """Hyperbolic tangent."""
    return _act.tanh(as_tensor(input, "input"))


def _softmax_dim(dim: Any, ndim: int, name: str) -> int:
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                      "Change the call to include dim=X as an argument.", UserWarning, stacklevel=3)
        dim = 0 if ndim in (0, 1, 3) else 1
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {dim!r}")
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise ValueError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], "
                         f"but got {dim})")
    return int(dim) % rank


def _softmax_input(input: Any, dtype: Any) -> Tensor:
    x = as_tensor(input, "input")
    if dtype is not None:
        x = x.astype(dtype)
    return x


def softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim`` (computed from ``x - max``)."""
    x = _softmax_input(input, dtype)
    axis = _softmax_dim(dim, x.ndim, "softmax")
    if x.ndim == 0:
        return _act.softmax(x.reshape(1), 0).reshape(())
    return _act.softmax(x, axis)


def log_softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """``x - log(sum(exp(x)))`` along ``dim``."""
    x = _softmax_input(input, dtype)
    axis = _softmax_dim(dim, x.ndim, "log_softmax")
    if x.ndim == 0:
        return _act.log_softmax(x.reshape(1), 0).reshape(())
    return _act.log_softmax(x, axis)


def _check_probability(p: Any) -> float:
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return float(p)


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero elements with probability ``p`` (npconv's global generator) and scale by ``1 / (1 - p)``.

    Identity when not ``training`` or ``p == 0``.
    """
    p = _check_probability(p)
    x = as_tensor(input, "input")
    if not training or p == 0:
        return x
    return apply_maybe_inplace(x, inplace, _act.dropout, p, default_generator(), reads_input=False)


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """``input @ weight.T + bias``: ``input (*, in)``, ``weight (out, in)``, ``bias (out,)``."""
    x = as_tensor(input, "input")
    w = as_tensor(weight, "weight")
    b = optional_tensor(bias, "bias")
    xa, wa = x._array, w._array  # shapes and dtypes of the arrays: the Tensor properties convert
    if wa.ndim != 2:
        raise ValueError(must("weight", "be 2-dimensional (out_features, in_features)",
                              f"weight of size {shape_text(wa.shape)}", "linear"))
    if xa.ndim == 0 or xa.shape[-1] != wa.shape[1]:
        rows = math.prod(xa.shape[:-1]) if xa.ndim > 1 else 1
        cols = xa.shape[-1] if xa.ndim else 0
        raise ValueError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{cols} and "
                         f"{wa.shape[1]}x{wa.shape[0]}): input's last dimension must equal "
                         f"in_features={wa.shape[1]}")
    check_same_dtype(xa.dtype, wa.dtype, "weight", "linear")
    if b is not None:
        if b._array.shape not in ((wa.shape[0],), ()):
            raise ValueError(must("bias", f"have {wa.shape[0]} elements",
                                  f"bias of size {shape_text(b._array.shape)}", "linear"))
        check_same_dtype(xa.dtype, b._array.dtype, "bias", "linear")
    return _linear.linear(x, w, b)


def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes ``start_dim..end_dim`` into one, as ``torch.flatten``."""
    x = as_tensor(input, "input", floating=False)
    rank = max(x.ndim, 1)
    for name, dim in (("start_dim", start_dim), ("end_dim", end_dim)):
        if not isinstance(dim, numbers.Integral) or not -rank <= dim < rank:
            raise ValueError(f"{name} out of range: expected an int in [{-rank}, {rank - 1}], got {dim!r}")
    if start_dim % rank > end_dim % rank:
        raise ValueError("flatten() has invalid args: start_dim cannot come after end_dim")
    return x.flatten(start_dim, end_dim)


# -- pooling ----------------------------------------------------------------------------------
def _pool_input(input: Any, nd: int, name: str) -> tuple[Tensor, bool]:
    x = as_tensor(input, "input")
    batched = check_batched_rank(x.shape, nd, name)
    if 0 in x.shape[-nd:] or (batched and x.shape[1] == 0):
        raise ValueError(must("input", "have non-empty channel and spatial dimensions",
                              f"input of size {shape_text(x.shape)}", name))
    return (x if batched else x.unsqueeze(0)), batched


def _max_pool(nd: int, input: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool) -> Any:
    name = f"max_pool{nd}d"
    geom = ConvGeometry.for_pooling(kernel_size, stride, padding, dilation, nd)
    x, batched = _pool_input(input, nd, name)
    return_indices = check_flag(return_indices, "return_indices")
    y, indices = _pool.max_pool(x, geom, check_flag(ceil_mode, "ceil_mode"), return_indices)
    if not return_indices:
        return y if batched else y.squeeze(0)
    return (y, Tensor(indices)) if batched else (y.squeeze(0), Tensor(indices[0]))


def max_pool1d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """1-d max pooling of ``(N, C, L)`` or ``(C, L)``; ``(out, indices)`` if ``return_indices``."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """2-d max pooling of ``(N, C, H, W)`` or ``(C, H, W)``; ``(out, indices)`` if ``return_indices``."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """3-d max pooling of ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _avg_pool(nd: int, input: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, divisor_override: Any) -> Tensor:
    geom = ConvGeometry.for_pooling(kernel_size, stride, padding, 1, nd)
    if divisor_override is not None:
        divisor_override = check_int(divisor_override, "divisor_override", op=f"avg_pool{nd}d")
        if divisor_override == 0:
            raise ValueError(must("divisor_override", "be non-zero", 0, f"avg_pool{nd}d"))
    x, batched = _pool_input(input, nd, f"avg_pool{nd}d")
    y = _pool.avg_pool(x, geom, check_flag(ceil_mode, "ceil_mode"),
                       check_flag(count_include_pad, "count_include_pad"),
                       divisor_override)
    return y if batched else y.squeeze(0)


def avg_pool1d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """1-d average pooling of ``(N, C, L)`` or ``(C, L)``."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """2-d average pooling of ``(N, C, H, W)`` or ``(C, H, W)``."""
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool3d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """3-d average pooling of ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _adaptive_avg_pool(nd: int, input: Any, output_size: Any) -> Tensor:
    name = f"adaptive_avg_pool{nd}d"
    x, batched = _pool_input(input, nd, name)
    sizes = (output_size,) * nd if isinstance(output_size, numbers.Integral) or output_size is None \
        else tuple(output_size)
    if len(sizes) != nd:
        raise ValueError(f"{name}: output_size must be {nd} ints (or None), got {output_size!r}")
    spatial = x.shape[2:]
    target = []
    for size, n in zip(sizes, spatial, strict=True):
        if size is None:
            target.append(n)
        elif isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 0:
            target.append(int(size))  # (0: an empty result, as torch's)
        else:
            raise ValueError(f"{name}: output_size must hold non-negative ints or None, got {output_size!r}")
    y = _pool.adaptive_avg_pool(x, target)
    return y if batched else y.squeeze(0)


def adaptive_avg_pool1d(input: Any, output_size: Any) -> Tensor:
    """Average pooling of ``(N, C, L)`` to length ``output_size`` with windows
    ``[floor(i * L / out), ceil((i + 1) * L / out))``."""
    return _adaptive_avg_pool(1, input, output_size)


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Tensor:
    """Adaptive average pooling of ``(N, C, H, W)`` to ``output_size`` (int, or pair; None keeps)."""
    return _adaptive_avg_pool(2, input, output_size)


def adaptive_avg_pool3d(input: Any, output_size: Any) -> Tensor:
    """Adaptive average pooling of ``(N, C, D, H, W)`` to ``output_size``."""
    return _adaptive_avg_pool(3, input, output_size)


# -- normalisation ----------------------------------------------------------------------------
def _channel_vector(value: Any, name: str, channels: int, dtype: np.dtype, op: str) -> Tensor | None:
    """None, or ``value`` as a Tensor of ``channels`` elements of the input's ``dtype``."""
    if value is None:
        return None
    t = as_tensor(value, name)
    if t.shape != (channels,):
        raise ValueError(f"{name} should contain {channels} elements not {t.numel()}")
    check_same_dtype(dtype, t.dtype, name, op)
    return t


def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalisation of ``(N, C, *)`` per channel.

    ``training``: normalise with the batch statistics and update ``running_mean``/``running_var``
    in place (if given) with ``momentum``; otherwise normalise with the running statistics.
    """
    x, rm, rv, w, b = batch_norm_arguments(input, running_mean, running_var, weight, bias, training)
    if momentum is None:
        momentum = 0.0
    return _norm.batch_norm(x, rm, rv, w, b, bool(training), float(momentum), float(eps))


def batch_norm_arguments(input: Any, running_mean: Any, running_var: Any, weight: Any, bias: Any,
                         training: bool) -> tuple[Tensor, ...]:
    """Validated ``(input, running_mean, running_var, weight, bias)`` of a batch norm call."""
    x = as_tensor(input, "input")
    if x.ndim < 2:
        raise ValueError(must("input", "have at least 2 dimensions (N, C, *)",
                              f"input of size {shape_text(x.shape)}", "batch_norm"))
    channels = x.shape[1]
    rm, rv, w, b = (_channel_vector(value, name, channels, x.dtype, "batch_norm") for value, name in (
        (running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")))
    if not training and (rm is None or rv is None):
        raise ValueError(must("running_mean and running_var", "be given when training=False", "None",
                              "batch_norm"))
    if training and x.shape[0] * math.prod(x.shape[2:]) == 1:  # one value per channel (none: as torch)
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{shape_text(x.shape)}")
    return x, rm, rv, w, b


def group_norm(input: Any, num_groups: int, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    """Group normalisation of ``(N, C, *)``: per sample over ``C / num_groups`` channels at a time."""
    x = as_tensor(input, "input")
    if x.ndim < 2:
        raise ValueError(must("input", "have at least 2 dimensions (N, C, *)",
                              f"input of size {shape_text(x.shape)}", "group_norm"))
    num_groups = check_int(num_groups, "num_groups", 1, "group_norm")
    channels = x.shape[1]
    if channels % num_groups != 0:
        raise ValueError(f"Expected number of channels in input to be divisible by num_groups, but got input "
                         f"of shape {shape_text(x.shape)} and num_groups={num_groups}")
    if x.shape[0] * (channels // num_groups) * math.prod(x.shape[2:]) == 1:  # torch's _verify_batch_size
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{shape_text(x.shape)}")
    w = _channel_vector(weight, "weight", channels, x.dtype, "group_norm")
    b = _channel_vector(bias, "bias", channels, x.dtype, "group_norm")
    return _norm.group_norm(x, int(num_groups), w, b, float(eps))


# -- losses -----------------------------------------------------------------------------------


def _class_input(input: Any, target: Any, name: str) -> tuple[Tensor, Any, bool]:
    """Input with a batch axis ``(N, C, *d)`` and the target with matching batch axis."""
    x = as_tensor(input, "input")
    if x.ndim == 0:
        raise ValueError(f"{name}: input must have at least 1 dimension (C) or (N, C, *d), got a scalar")
    if not isinstance(target, (Tensor, np.ndarray)):
        target = as_tensor(target, "target", floating=False)
    batched = x.ndim >= 2
    if not batched:
        x = x.unsqueeze(0)
        target = target.unsqueeze(0) if isinstance(target, Tensor) else np.asarray(target)[None]
    return x, target, batched


def _class_indices(target: Any, x: Tensor, name: str) -> np.ndarray:
    t = as_array(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected target dtype to be an integer type (class indices), got {t.dtype}")
    expected = (x.shape[0],) + x.shape[2:]
    if t.shape != expected:
        if t.ndim >= 1 and t.shape[0] != x.shape[0]:
            raise ValueError(f"Expected input batch_size ({x.shape[0]}) to match target batch_size "
                             f"({t.shape[0]}).")
        raise ValueError(f"{name}: expected target of size {shape_text(expected)}, got "
                         f"{shape_text(t.shape)}")
    return t.astype(np.int64, copy=False)


def _class_weight(weight: Any, x: Tensor, op: str) -> np.ndarray | None:
    """None, or the per-class ``weight`` (C,) of the input's dtype as an array."""
    if weight is None:
        return None
    channels = x.shape[1]
    w = as_array(as_tensor(weight, "weight"))
    check_same_dtype(x.dtype, w.dtype, "weight", op)
    if w.shape != (channels,):
        raise ValueError(f"weight tensor should be defined either for all {channels} classes or no classes "
                         f"but got weight tensor of shape: {shape_text(w.shape)}")
    return w


def _unbatch_loss(loss: Tensor, batched: bool, reduction: str) -> Tensor:
    return loss.squeeze(0) if reduction == "none" and not batched else loss


def nll_loss(input: Any, target: Any, weight: Any = None, size_average: Any = None, ignore_index: int = -100,
             reduce: Any = None, reduction: str = "mean") -> Tensor:
    """Negative log likelihood of log-probabilities ``input (N, C, *d)`` at class indices ``(N, *d)``."""
    reduction = reduction_mode(size_average, reduce, reduction)
    x, target, batched = _class_input(input, target, "nll_loss")
    t = _class_indices(target, x, "nll_loss")
    loss = _loss.nll_loss(x, t, _class_weight(weight, x, "nll_loss"), int(ignore_index), reduction)
    return _unbatch_loss(loss, batched, reduction)


def cross_entropy(input: Any, target: Any, weight: Any = None, size_average: Any = None,
                  ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross entropy between logits ``input (N, C, *d)`` (or ``(C,)``) and ``target``.

    ``target`` holds class indices ``(N, *d)`` (integer dtype; ``ignore_index`` and ``weight`` apply,
    ``'mean'`` divides by the summed weight of the kept targets) or class probabilities of the
    input's shape (floating dtype; ``'mean'`` divides by ``N * prod(d)``). ``label_smoothing``
    mixes the target with the uniform distribution.
    """
    reduction = reduction_mode(size_average, reduce, reduction)
    if not isinstance(label_smoothing, numbers.Real) or not label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    label_smoothing = max(float(label_smoothing), 0.0)  # torch smooths only above 0 (a negative one: none)
    x, target, batched = _class_input(input, target, "cross_entropy")
    w = _class_weight(weight, x, "cross_entropy")
    if as_array(target).dtype.kind in "iu":
        target = _class_indices(target, x, "cross_entropy")
    else:
        target = as_tensor(target, "target")
        if target.shape != x.shape:
            raise ValueError(f"cross_entropy: class-probability targets must have the input's shape "
                             f"{shape_text(x.shape)}, got {shape_text(target.shape)}")
        if target.dtype != x.dtype:
            raise TypeError(f"cross_entropy: expected target dtype {x.dtype} (the input's), "
                            f"got {target.dtype}")
    loss = _loss.cross_entropy(x, target, w, int(ignore_index), reduction, float(label_smoothing))
    return _unbatch_loss(loss, batched, reduction)


def _reduce_elements(elements: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    if weight is not None:
        elements = elements * weight
    if reduction == "none":
        return elements
    if reduction == "sum":
        return elements.sum()
    return elements.sum() / weight.sum() if weight is not None else elements.mean()


def _pointwise_loss(name: str, op: Any, input: Any, target: Any, size_average: Any, reduce: Any,
                    reduction: str, weight: Any) -> Tensor:
    x = as_tensor(input, "input")
    t = as_tensor(target, "target")
    if t.shape != x.shape:
        warnings.warn(f"Using a target size ({shape_text(t.shape)}) that is different to the input size "
                      f"({shape_text(x.shape)}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", UserWarning, stacklevel=3)
        try:
            np.broadcast_shapes(x.shape, t.shape)
        except ValueError as error:
            raise ValueError(f"{name}: input of size {shape_text(x.shape)} and target of size "
                             f"{shape_text(t.shape)} cannot be broadcast together") from error
    reduction = reduction_mode(size_average, reduce, reduction)
    w = optional_tensor(weight, "weight")
    if w is not None and w.shape != x.shape:
        raise ValueError(f"Weights and input must have the same size, got {shape_text(w.shape)} and "
                         f"{shape_text(x.shape)}.")
    return _reduce_elements(op(x, t), w, reduction)


def mse_loss(input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean",
             weight: Any = None) -> Tensor:
    """Squared error ``(input - target)^2``, reduced; weighted ``'mean'`` is ``sum(w * e) / sum(w)``."""
    return _pointwise_loss("mse_loss", _loss.squared_error, input, target, size_average, reduce, reduction,
                           weight)


def l1_loss(input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean",
            weight: Any = None) -> Tensor:
    """Absolute error ``|input - target|``, reduced; weighted ``'mean'`` is ``sum(w * e) / sum(w)``."""
    return _pointwise_loss("l1_loss", _loss.absolute_error, input, target, size_average, reduce, reduction,
                           weight)


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any = None, size_average: Any = None,
                                     reduce: Any = None, reduction: str = "mean",
                                     pos_weight: Any = None) -> Tensor:
    """Sigmoid + binary cross entropy in one stable step:
    ``w * ((1 - t) * x + (1 + (pos_weight - 1) * t) * log(1 + exp(-x)))``.

    ``weight`` broadcasts to the input; ``pos_weight`` broadcasts along the last (class) axis.
    """
    reduction = reduction_mode(size_average, reduce, reduction)
    x = as_tensor(input, "input")
    t = as_tensor(target, "target")
    if t.shape != x.shape:
        raise ValueError(f"Target size ({shape_text(t.shape)}) must be the same as input size "
                         f"({shape_text(x.shape)})")
    w = optional_tensor(weight, "weight")
    pw = optional_tensor(pos_weight, "pos_weight")
    for name, value in (("weight", w), ("pos_weight", pw)):
        if value is not None:
            try:
                if np.broadcast_shapes(value.shape, x.shape) != x.shape:
                    raise ValueError
            except ValueError as error:
                raise ValueError(f"binary_cross_entropy_with_logits: {name} of size "
                                 f"{shape_text(value.shape)} "
                                 f"does not broadcast to the input's size {shape_text(x.shape)}") from error
    elements = _loss.binary_cross_entropy_with_logits(x, t, w, pw)
    return _reduce_elements(elements, None, reduction)

