"""Functional forms of the layers around the convolutions, with torch's signatures and checks.

Activations (``relu``, ``leaky_relu``, ``gelu``, ``silu``, ``sigmoid``, ``tanh``, ``softmax``,
``log_softmax``, ``dropout``), ``linear``, ``flatten``, pooling (``max_pool1d/2d/3d``,
``avg_pool1d/2d/3d``, ``adaptive_avg_pool1d/2d/3d``), normalisation (``batch_norm``,
``group_norm``) and losses (``cross_entropy``, ``nll_loss``, ``mse_loss``, ``l1_loss``,
``binary_cross_entropy_with_logits``). Re-exported by :mod:`npconv.nn.functional`.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

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


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in shape) + "]"


def _tensor(value: Any, name: str, floating: bool = True) -> Tensor:
    """``value`` as a Tensor (ndarrays and nested lists are wrapped, not copied)."""
    if not isinstance(value, Tensor):
        if isinstance(value, (np.ndarray, list, tuple, numbers.Number)):
            value = Tensor(np.asarray(value))
        else:
            raise TypeError(f"{name} must be a Tensor or ndarray, got {type(value).__name__}")
    if floating and value.dtype.kind not in "f":
        raise TypeError(f"{name} must have a real floating point dtype, got {value.dtype}")
    return value


def _optional(value: Any, name: str) -> Tensor | None:
    return None if value is None else _tensor(value, name)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


# -- activations ------------------------------------------------------------------------------
def relu(input: Any, inplace: bool = False) -> Tensor:
    """``max(input, 0)``; with ``inplace`` written into ``input`` (torch's in-place rules)."""
    return _act.relu(_tensor(input, "input"), inplace=_flag(inplace, "inplace"))


def leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``input`` where positive, else ``negative_slope * input``."""
    if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
        raise TypeError(f"negative_slope must be a real number, got {negative_slope!r}")
    return _act.leaky_relu(_tensor(input, "input"), float(negative_slope))


def gelu(input: Any, approximate: str = "none") -> Tensor:
    """``x * Phi(x)`` (``approximate='none'``) or its tanh approximation (``'tanh'``)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    return _act.gelu(_tensor(input, "input"), approximate)


def silu(input: Any, inplace: bool = False) -> Tensor:
    """``x * sigmoid(x)``."""
    return _act.silu(_tensor(input, "input"))


def sigmoid(input: Any) -> Tensor:
    """``1 / (1 + exp(-x))``."""
    return _act.sigmoid(_tensor(input, "input"))


def tanh(input: Any) -> Tensor:
    """Hyperbolic tangent."""
    return _act.tanh(_tensor(input, "input"))


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
    x = _tensor(input, "input")
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
    x = _tensor(input, "input")
    if not training or p == 0:
        return x
    return _act.dropout(x, p, default_generator())


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """``input @ weight.T + bias``: ``input (*, in)``, ``weight (out, in)``, ``bias (out,)``."""
    x = _tensor(input, "input")
    w = _tensor(weight, "weight")
    b = _optional(bias, "bias")
    if w.ndim != 2:
        raise ValueError(f"linear: weight must be 2-dimensional (out_features, in_features), "
                         f"got weight of size {_shape_text(w.shape)}")
    if x.ndim == 0 or x.shape[-1] != w.shape[1]:
        rows = int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1
        cols = x.shape[-1] if x.ndim else 0
        raise ValueError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{cols} and "
                         f"{w.shape[1]}x{w.shape[0]}): input's last dimension must equal "
                         f"in_features={w.shape[1]}")
    if x.dtype != w.dtype:
        raise TypeError(f"linear: input type ({x.dtype}) and weight type ({w.dtype}) should be the same")
    if b is not None and b.shape not in ((w.shape[0],), ()):
        raise ValueError(f"linear: bias must have {w.shape[0]} elements, got bias of size "
                         f"{_shape_text(b.shape)}")
    return _linear.linear(x, w, b)


def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes ``start_dim..end_dim`` into one, as ``torch.flatten``."""
    x = _tensor(input, "input", floating=False)
    rank = max(x.ndim, 1)
    for name, dim in (("start_dim", start_dim), ("end_dim", end_dim)):
        if not isinstance(dim, numbers.Integral) or not -rank <= dim < rank:
            raise ValueError(f"{name} out of range: expected an int in [{-rank}, {rank - 1}], got {dim!r}")
    if start_dim % rank > end_dim % rank:
        raise ValueError("flatten() has invalid args: start_dim cannot come after end_dim")
    return x.flatten(start_dim, end_dim)


# -- pooling ----------------------------------------------------------------------------------
def _pool_input(input: Any, nd: int, name: str) -> tuple[Tensor, bool]:
    x = _tensor(input, "input")
    if x.ndim not in (nd + 1, nd + 2) or 0 in x.shape[-nd:] or (x.ndim == nd + 2 and x.shape[1] == 0):
        raise ValueError(f"{name}: expected a non-empty {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
                         f"got input of size {_shape_text(x.shape)}")
    batched = x.ndim == nd + 2
    return (x if batched else x.unsqueeze(0)), batched


def _pool_geometry(kernel_size: Any, stride: Any, padding: Any, dilation: Any, nd: int) -> ConvGeometry:
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = kernel_size
    if isinstance(padding, str):
        raise TypeError(f"padding must be an int or a tuple of {nd} ints for pooling, got {padding!r}")
    return ConvGeometry.create(kernel_size, stride, padding, dilation, ndim=nd)


def _max_pool(nd: int, input: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool) -> Any:
    name = f"max_pool{nd}d"
    geom = _pool_geometry(kernel_size, stride, padding, dilation, nd)
    x, batched = _pool_input(input, nd, name)
    return_indices = _flag(return_indices, "return_indices")
    y, indices = _pool.max_pool(x, geom, _flag(ceil_mode, "ceil_mode"), return_indices)
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
    geom = _pool_geometry(kernel_size, stride, padding, 1, nd)
    if divisor_override is not None and (not isinstance(divisor_override, numbers.Integral)
                                         or isinstance(divisor_override, bool) or divisor_override == 0):
        raise ValueError(f"divisor_override must be a non-zero int or None, got {divisor_override!r}")
    x, batched = _pool_input(input, nd, f"avg_pool{nd}d")
    y = _pool.avg_pool(x, geom, _flag(ceil_mode, "ceil_mode"), _flag(count_include_pad, "count_include_pad"),
                       None if divisor_override is None else int(divisor_override))
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
        elif isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 1:
            target.append(int(size))
        else:
            raise ValueError(f"{name}: output_size must hold positive ints or None, got {output_size!r}")
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
def _channel_vector(value: Any, name: str, channels: int) -> Tensor | None:
    if value is None:
        return None
    t = _tensor(value, name)
    if t.shape != (channels,):
        raise ValueError(f"{name} should contain {channels} elements not {t.numel()}")
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
    x = _tensor(input, "input")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input with at least 2 dimensions (N, C, *), "
                         f"got input of size {_shape_text(x.shape)}")
    channels = x.shape[1]
    rm = _channel_vector(running_mean, "running_mean", channels)
    rv = _channel_vector(running_var, "running_var", channels)
    w = _channel_vector(weight, "weight", channels)
    b = _channel_vector(bias, "bias", channels)
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm: running_mean and running_var must be given when training=False")
    if training and x.numel() // max(channels, 1) <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{_shape_text(x.shape)}")
    return x, rm, rv, w, b


def group_norm(input: Any, num_groups: int, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    """Group normalisation of ``(N, C, *)``: per sample over ``C / num_groups`` channels at a time."""
    x = _tensor(input, "input")
    if x.ndim < 2:
        raise ValueError(f"group_norm: expected an input with at least 2 dimensions (N, C, *), "
                         f"got input of size {_shape_text(x.shape)}")
    if not isinstance(num_groups, numbers.Integral) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
    channels = x.shape[1]
    if channels % num_groups != 0:
        raise ValueError(f"Expected number of channels in input to be divisible by num_groups, but got input "
                         f"of shape {_shape_text(x.shape)} and num_groups={num_groups}")
    w = _channel_vector(weight, "weight", channels)
    b = _channel_vector(bias, "bias", channels)
    return _norm.group_norm(x, int(num_groups), w, b, float(eps))


# -- losses -----------------------------------------------------------------------------------
_REDUCTIONS = ("none", "mean", "sum")


def _reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    """torch's ``_Reduction``: the legacy ``size_average``/``reduce`` flags override ``reduction``."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        return ("mean" if size_average else "sum") if reduce else "none"
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction (expected one of {_REDUCTIONS})")
    return reduction


def _class_input(input: Any, target: Any, name: str) -> tuple[Tensor, Any, bool]:
    """Input with a batch axis ``(N, C, *d)`` and the target with matching batch axis."""
    x = _tensor(input, "input")
    if x.ndim == 0:
        raise ValueError(f"{name}: input must have at least 1 dimension (C) or (N, C, *d), got a scalar")
    if not isinstance(target, (Tensor, np.ndarray)):
        target = _tensor(target, "target", floating=False)
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
        raise ValueError(f"{name}: expected target of size {_shape_text(expected)}, got "
                         f"{_shape_text(t.shape)}")
    return t.astype(np.int64, copy=False)


def _class_weight(weight: Any, channels: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = as_array(_tensor(weight, "weight"))
    if w.shape != (channels,):
        raise ValueError(f"weight tensor should be defined either for all {channels} classes or no classes "
                         f"but got weight tensor of shape: {_shape_text(w.shape)}")
    return w


def _unbatch_loss(loss: Tensor, batched: bool, reduction: str) -> Tensor:
    return loss.squeeze(0) if reduction == "none" and not batched else loss


def nll_loss(input: Any, target: Any, weight: Any = None, size_average: Any = None, ignore_index: int = -100,
             reduce: Any = None, reduction: str = "mean") -> Tensor:
    """Negative log likelihood of log-probabilities ``input (N, C, *d)`` at class indices ``(N, *d)``."""
    reduction = _reduction(size_average, reduce, reduction)
    x, target, batched = _class_input(input, target, "nll_loss")
    t = _class_indices(target, x, "nll_loss")
    loss = _loss.nll_loss(x, t, _class_weight(weight, x.shape[1]), int(ignore_index), reduction)
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
    reduction = _reduction(size_average, reduce, reduction)
    if not isinstance(label_smoothing, numbers.Real) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    x, target, batched = _class_input(input, target, "cross_entropy")
    w = _class_weight(weight, x.shape[1])
    if as_array(target).dtype.kind in "iu":
        target = _class_indices(target, x, "cross_entropy")
    else:
        target = _tensor(target, "target")
        if target.shape != x.shape:
            raise ValueError(f"cross_entropy: class-probability targets must have the input's shape "
                             f"{_shape_text(x.shape)}, got {_shape_text(target.shape)}")
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
    x = _tensor(input, "input")
    t = _tensor(target, "target")
    if t.shape != x.shape:
        warnings.warn(f"Using a target size ({_shape_text(t.shape)}) that is different to the input size "
                      f"({_shape_text(x.shape)}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", UserWarning, stacklevel=3)
        try:
            np.broadcast_shapes(x.shape, t.shape)
        except ValueError as error:
            raise ValueError(f"{name}: input of size {_shape_text(x.shape)} and target of size "
                             f"{_shape_text(t.shape)} cannot be broadcast together") from error
    reduction = _reduction(size_average, reduce, reduction)
    w = _optional(weight, "weight")
    if w is not None and w.shape != x.shape:
        raise ValueError(f"Weights and input must have the same size, got {_shape_text(w.shape)} and "
                         f"{_shape_text(x.shape)}.")
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
    reduction = _reduction(size_average, reduce, reduction)
    x = _tensor(input, "input")
    t = _tensor(target, "target")
    if t.shape != x.shape:
        raise ValueError(f"Target size ({_shape_text(t.shape)}) must be the same as input size "
                         f"({_shape_text(x.shape)})")
    w = _optional(weight, "weight")
    pw = _optional(pos_weight, "pos_weight")
    for name, value in (("weight", w), ("pos_weight", pw)):
        if value is not None:
            try:
                if np.broadcast_shapes(value.shape, x.shape) != x.shape:
                    raise ValueError
            except ValueError as error:
                raise ValueError(f"binary_cross_entropy_with_logits: {name} of size "
                                 f"{_shape_text(value.shape)} "
                                 f"does not broadcast to the input's size {_shape_text(x.shape)}") from error
    elements = _loss.binary_cross_entropy_with_logits(x, t, w, pw)
    return _reduce_elements(elements, None, reduction)
