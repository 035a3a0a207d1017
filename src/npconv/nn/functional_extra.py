"""More of ``torch.nn.functional`` (re-exported by :mod:`npconv.nn.functional`): the activations
``relu6``, ``hardtanh``, ``hardswish``, ``hardsigmoid``, ``elu``, ``softplus``, ``mish``, ``glu``,
``prelu``; ``dropout1d/2d/3d``; ``pixel_shuffle``/``pixel_unshuffle``; the losses
``binary_cross_entropy``, ``smooth_l1_loss``, ``huber_loss``, ``kl_div``; ``interpolate`` (and the
deprecated ``upsample*``); ``layer_norm``, ``instance_norm``, ``local_response_norm``;
``adaptive_max_pool1d/2d/3d``; ``embedding``, ``one_hot``, ``normalize``, ``cosine_similarity``;
``unfold``/``fold``; ``grid_sample``/``affine_grid``. Arguments are checked with :mod:`npconv.checks`.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import tracing
from ..checks import as_tensor, check_flag, refuses_oversize, shape_text
from ..checks import reduction as reduction_mode
from ..geometry import ConvGeometry
from ..ops import activation as _act_ops
from ..ops import embedding as _embedding_ops
from ..ops import fold as _fold_ops
from ..ops import grid_sample as _grid_ops
from ..ops import interpolate as _interp_ops
from ..ops import loss as _loss_ops
from ..ops import norm as _norm_ops
from ..ops import pool as _pool_ops
from ..ops import shuffle as _shuffle_ops
from ..ops.pad import pad as _pad_op
from ..random import default_generator as _default_generator
from ..tensor import Tensor, as_array
from .functional_layers import _check_probability, _reduce_elements, apply_maybe_inplace
from .functional_layers import avg_pool2d as _avg_pool2d
from .functional_layers import avg_pool3d as _avg_pool3d
from .functional_layers import batch_norm as _batch_norm

__all__ = [
    "relu6", "hardtanh", "hardswish", "hardsigmoid", "elu", "softplus", "mish", "glu", "prelu", "dropout1d",
    "dropout2d", "dropout3d", "pixel_shuffle", "pixel_unshuffle", "binary_cross_entropy", "smooth_l1_loss",
    "huber_loss", "kl_div", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
    "layer_norm", "instance_norm", "local_response_norm", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "embedding", "one_hot", "normalize", "cosine_similarity", "unfold", "fold",
    "grid_sample", "affine_grid",
]


def _real(value: Any, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def hardtanh(input: Any, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """``min(max(input, min_val), max_val)``; gradient 1 strictly between the bounds."""
    lo, hi = _real(min_val, "min_val"), _real(max_val, "max_val")
    if lo > hi:
        raise ValueError(f"hardtanh: min_val cannot be greater than max_val, got min_val={min_val}, "
                         f"max_val={max_val}")
    return _hardtanh(as_tensor(input, "input"), lo, hi, inplace)


def _hardtanh(x: Tensor, lo: float, hi: float, inplace: bool) -> Tensor:
    """hardtanh; with ``inplace`` written into ``x``'s memory without a temporary."""
    if check_flag(inplace, "inplace"):
        return _act_ops.hardtanh_(x, lo, hi)
    return _act_ops.hardtanh(x, lo, hi)


def relu6(input: Any, inplace: bool = False) -> Tensor:
    """``min(max(input, 0), 6)`` (``hardtanh(input, 0, 6)``)."""
    return _hardtanh(as_tensor(input, "input"), 0.0, 6.0, inplace)


def hardswish(input: Any, inplace: bool = False) -> Tensor:
    """``x * relu6(x + 3) / 6``."""
    return apply_maybe_inplace(as_tensor(input, "input"), inplace, _act_ops.hardswish)


def hardsigmoid(input: Any, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6``."""
    return apply_maybe_inplace(as_tensor(input, "input"), inplace, _act_ops.hardsigmoid)


def elu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` where positive, else ``alpha * (exp(x) - 1)``."""
    if check_flag(inplace, "inplace"):
        return _act_ops.elu_(as_tensor(input, "input"), _real(alpha, "alpha"))
    return _act_ops.elu(as_tensor(input, "input"), _real(alpha, "alpha"))


def softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold``."""
    return _act_ops.softplus(as_tensor(input, "input"), _real(beta, "beta"), _real(threshold, "threshold"))


def mish(input: Any, inplace: bool = False) -> Tensor:
    """``x * tanh(softplus(x))``."""
    return apply_maybe_inplace(as_tensor(input, "input"), inplace, _act_ops.mish)


def _dim_index(dim: Any, ndim: int, name: str = "dim") -> int:
    """``dim`` wrapped into ``[0, ndim)``; IndexError out of range (torch's type, for parity)."""
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{name} must be an int, got {dim!r}")
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], "
                         f"but got {dim})")
    return int(dim) % rank


def glu(input: Any, dim: int = -1) -> Tensor:
    """Gated linear unit ``a * sigmoid(b)`` of the two halves ``a, b`` of ``input`` along ``dim``."""
    x = as_tensor(input, "input")
    if x.ndim == 0:
        raise ValueError("glu does not support scalars because halving size must be even")
    axis = _dim_index(dim, x.ndim)
    if x.shape[axis] % 2:
        raise ValueError(f"Halving dimension must be even, but dimension {axis} is size {x.shape[axis]}")
    return _act_ops.glu(x, axis)


def prelu(input: Any, weight: Any) -> Tensor:
    """``x`` where positive, else ``weight * x``; ``weight`` is one value or one per channel (axis 1)."""
    x = as_tensor(input, "input")
    w = as_tensor(weight, "weight")
    if w.ndim > 1:
        raise ValueError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = {w.ndim}")
    if w.numel() != 1:
        if x.ndim == 0:
            raise ValueError("prelu: weight must hold one value for a zero-dim input, got "
                             f"{w.numel()} values (Not allow zero-dim input tensor.)")
        channels = x.shape[1] if x.ndim >= 2 else 1
        if w.numel() != channels:
            raise ValueError(f"Mismatch of parameter numbers and input channel size. Found parameter "
                             f"numbers = {w.numel()} and channel size = {channels}.")
    if w.dtype != x.dtype:
        raise TypeError(f"prelu: input type ({x.dtype}) and weight type ({w.dtype}) should be the same")
    return _act_ops.prelu(x, w)


# -- channel dropout ------------------------------------------------------------------------------
def _feature_dropout(x: Tensor, p: float, training: bool, inplace: Any, unbatched: bool = False) -> Tensor:
    """Zero whole channels ``x[n, c]`` of ``x (N, C, *)`` (``(C, *)`` if ``unbatched``) with probability
    ``p``; the rest scaled by ``1 / (1 - p)``."""
    check_flag(inplace, "inplace")
    if not training or p == 0:
        return x
    data = as_array(x)
    channel_axes = 1 if unbatched else 2
    if p >= 1:
        scale = np.zeros((), dtype=data.dtype)
    else:
        keep = _default_generator().random(data.shape[:channel_axes] + (1,) * (data.ndim - channel_axes)) >= p
        scale = keep.astype(data.dtype) * data.dtype.type(1 / (1 - p))
    return x.mul_(Tensor(scale)) if inplace else x * Tensor(scale)


def dropout1d(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, L)`` or ``(C, L)`` with probability ``p``; scale the rest."""
    p = _check_probability(p)
    x = as_tensor(input, "input")
    if x.ndim not in (2, 3):
        raise ValueError(f"dropout1d: Expected 2D or 3D input, but received a {x.ndim}D input. Note that "
                         "dropout1d exists to provide channel-wise dropout on inputs with 1 spatial "
                         "dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
                         "inputs).")
    return _feature_dropout(x, p, training, inplace, unbatched=x.ndim == 2)


def _check_feature_rank(x: Tensor) -> None:
    if x.ndim < 2:
        raise ValueError(f"Feature dropout requires at least 2 dimensions in the input, got input of size "
                         f"{shape_text(x.shape)}")


def dropout2d(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, H, W)`` with probability ``p``.

    As torch, a 3-D input is read as ``(N, C, L)`` (1-D channel dropout, with a warning).
    """
    p = _check_probability(p)
    x = as_tensor(input, "input")
    if x.ndim not in (3, 4):
        warnings.warn(f"dropout2d: Received a {x.ndim}-D input to dropout2d, which is deprecated and will "
                      "result in an error in a future release. To retain the behavior and silence this "
                      "warning, please use dropout instead. Note that dropout2d exists to provide "
                      "channel-wise dropout on inputs with 2 spatial dimensions, a channel dimension, and an "
                      "optional batch dimension (i.e. 3D or 4D inputs).", UserWarning, stacklevel=2)
    if x.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                      "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel "
                      "dim. This behavior will change in a future release to interpret the input as one "
                      "without a batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise "
                      "dropout behavior, please switch to using dropout1d instead.", UserWarning,
                      stacklevel=2)
    _check_feature_rank(x)
    return _feature_dropout(x, p, training, inplace)


def dropout3d(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` with probability ``p``."""
    p = _check_probability(p)
    x = as_tensor(input, "input")
    if x.ndim not in (4, 5):
        warnings.warn(f"dropout3d: Received a {x.ndim}-D input to dropout3d, which is deprecated and will "
                      "result in an error in a future release. To retain the behavior and silence this "
                      "warning, please use dropout instead. Note that dropout3d exists to provide "
                      "channel-wise dropout on inputs with 3 spatial dimensions, a channel dimension, and an "
                      "optional batch dimension (i.e. 4D or 5D inputs).", UserWarning, stacklevel=2)
    if x.ndim == 4:
        return _feature_dropout(x, p, training, inplace, unbatched=True)
    _check_feature_rank(x)
    return _feature_dropout(x, p, training, inplace)


# -- pixel shuffle --------------------------------------------------------------------------------
def _shuffle_factor(value: Any, name: str, op: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{op} expects a positive {name}, but got {value}")
    return int(value)


def _shuffle_input(input: Any, op: str) -> Tensor:
    x = as_tensor(input, "input", floating=False)
    if x.ndim < 3:
        raise ValueError(f"{op} expects input to have at least 3 dimensions, but got input with "
                         f"{x.ndim} dimension(s)")
    return x


def pixel_shuffle(input: Any, upscale_factor: int) -> Tensor:
    """``(*, C r^2, H, W) -> (*, C, H r, W r)``: channel blocks become ``r x r`` pixel blocks."""
    r = _shuffle_factor(upscale_factor, "upscale_factor", "pixel_shuffle")
    x = _shuffle_input(input, "pixel_shuffle")
    if x.shape[-3] % (r * r):
        raise ValueError(f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the "
                         f"square of upscale_factor, but input.size(-3)={x.shape[-3]} is not divisible by "
                         f"{r * r}")
    return _shuffle_ops.pixel_shuffle(x, r)


def pixel_unshuffle(input: Any, downscale_factor: int) -> Tensor:
    """``(*, C, H r, W r) -> (*, C r^2, H, W)``, the inverse of :func:`pixel_shuffle`."""
    r = _shuffle_factor(downscale_factor, "downscale_factor", "pixel_unshuffle")
    x = _shuffle_input(input, "pixel_unshuffle")
    for axis, name in ((-2, "height"), (-1, "width")):
        if x.shape[axis] % r:
            raise ValueError(f"pixel_unshuffle expects {name} to be divisible by downscale_factor, but "
                             f"input.size({axis})={x.shape[axis]} is not divisible by {r}")
    return _shuffle_ops.pixel_unshuffle(x, r)


# -- losses ---------------------------------------------------------------------------------------
def _size_warning(x: Tensor, t: Tensor) -> None:
    if t.shape != x.shape:
        warnings.warn(f"Using a target size ({shape_text(t.shape)}) that is different to the input size "
                      f"({shape_text(x.shape)}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", UserWarning, stacklevel=3)
        try:
            np.broadcast_shapes(x.shape, t.shape)
        except ValueError as error:
            raise ValueError(f"input of size {shape_text(x.shape)} and target of size "
                             f"{shape_text(t.shape)} cannot be broadcast together") from error


def _same_dtype(x: Tensor, other: Tensor, name: str, op: str) -> None:
    if other.dtype != x.dtype:
        raise TypeError(f"{op}: expected {name} dtype {x.dtype} (the input's), got {other.dtype}")


def binary_cross_entropy(input: Any, target: Any, weight: Any = None, size_average: Any = None,
                         reduce: Any = None, reduction: str = "mean") -> Tensor:
    """``-w * (t log x + (1 - t) log(1 - x))`` of probabilities ``input`` in [0, 1], each log
    clamped at -100; ``weight`` broadcasts to the input."""
    reduction = reduction_mode(size_average, reduce, reduction)
    x = as_tensor(input, "input")
    t = as_tensor(target, "target")
    if t.shape != x.shape:
        raise ValueError(f"Using a target size ({shape_text(t.shape)}) that is different to the input size "
                         f"({shape_text(x.shape)}) is deprecated. Please ensure they have the same size.")
    _same_dtype(x, t, "target", "binary_cross_entropy")
    w = None
    if weight is not None:
        w = as_tensor(weight, "weight")
        _same_dtype(x, w, "weight", "binary_cross_entropy")
        try:
            shape = np.broadcast_shapes(t.shape, w.shape)
        except ValueError as error:
            raise ValueError(f"binary_cross_entropy: weight of size {shape_text(w.shape)} "
                             f"does not broadcast to the target's size {shape_text(t.shape)}") from error
        if shape != x.shape:
            raise ValueError(f"binary_cross_entropy: weight of size {shape_text(w.shape)} "
                             f"does not broadcast to the input's size {shape_text(x.shape)}")
        w = np.broadcast_to(as_array(w), shape)
    data = as_array(x)
    if ((data < 0) | (data > 1)).any():
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1")
    return _reduce_elements(_loss_ops.binary_cross_entropy(x, t, w), None, reduction)


def smooth_l1_loss(input: Any, target: Any, size_average: Any = None, reduce: Any = None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``)."""
    x, t = as_tensor(input, "input"), as_tensor(target, "target")
    _size_warning(x, t)
    reduction = reduction_mode(size_average, reduce, reduction)
    beta = _real(beta, "beta")
    if beta < 0:
        raise ValueError(f"smooth_l1_loss does not support negative values for beta, got beta={beta}")
    return _reduce_elements(_loss_ops.smooth_l1(x, t, beta), None, reduction)


def huber_loss(input: Any, target: Any, reduction: str = "mean", delta: float = 1.0,
               weight: Any = None) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``; ``weight`` (the input's
    shape) multiplies each element before the reduction (``'mean'`` is the plain mean)."""
    x, t = as_tensor(input, "input"), as_tensor(target, "target")
    _size_warning(x, t)
    reduction = reduction_mode(None, None, reduction)
    delta = _real(delta, "delta")
    if delta <= 0:
        raise ValueError(f"huber_loss does not support non-positive values for delta, got delta={delta}")
    elements = _loss_ops.huber(x, t, delta)
    if weight is not None:
        w = as_tensor(weight, "weight")
        if w.shape != x.shape:
            raise ValueError(f"Weights and input must have the same size, got {shape_text(w.shape)} and "
                             f"{shape_text(x.shape)}.")
        elements = elements * w
    return _reduce_elements(elements, None, reduction)


def kl_div(input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """Pointwise KL divergence ``t * (log t - input)`` of log-probabilities ``input``
    (``exp(t) * (t - input)`` if ``log_target``). ``'batchmean'`` divides the sum by ``input.size(0)``."""
    if size_average is not None or reduce is not None:
        reduction = reduction_mode(size_average, reduce, "mean")
    else:
        if reduction == "mean":
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support "
                          "size.'batchmean' divides only by the batch size, and aligns with the KL div math "
                          "definition.'mean' will be changed to behave the same as 'batchmean' in the next "
                          "major release.", UserWarning, stacklevel=2)
        if reduction != "batchmean":
            reduction = reduction_mode(None, None, reduction)
    x, t = as_tensor(input, "input"), as_tensor(target, "target")
    try:
        np.broadcast_shapes(x.shape, t.shape)
    except ValueError as error:
        raise ValueError(f"kl_div: input of size {shape_text(x.shape)} and target of size "
                         f"{shape_text(t.shape)} cannot be broadcast together") from error
    elements = _loss_ops.kl_div(x, t, check_flag(log_target, "log_target"))
    if reduction == "batchmean":
        total = elements.sum()
        return total / x.shape[0] if x.ndim else total
    return _reduce_elements(elements, None, reduction)


# -- resampling -----------------------------------------------------------------------------------


_INTERPOLATE_MODES = ("nearest", "linear", "bilinear", "bicubic", "trilinear", "area", "nearest-exact")
_MODE_RANK = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@refuses_oversize("interpolate")
@tracing.recorded
def interpolate(input: Any, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resample ``input (N, C, *in)`` (1-3 spatial dims) to ``size`` or ``floor(in * scale_factor)``.

    Modes: ``'nearest'``, ``'nearest-exact'``, ``'linear'`` (3-D), ``'bilinear'``/``'bicubic'``
    (4-D), ``'trilinear'`` (5-D) with ``align_corners`` (corner pixels' centres aligned; default
    False), ``'area'`` (adaptive average pooling). A given ``scale_factor`` also sets the source
    coordinates (``src = (dst + 0.5) / scale - 0.5``) unless ``recompute_scale_factor`` is True,
    then ``in / out`` is used. See :mod:`npconv.ops.interpolate` for each kernel's formula.
    """
    x = as_tensor(input, "input")
    if not isinstance(mode, str) or mode not in _INTERPOLATE_MODES + ("lanczos",):
        raise ValueError(f"interpolate: mode must be one of {_INTERPOLATE_MODES}, got mode={mode!r}")
    if mode in ("nearest", "area", "nearest-exact"):
        if align_corners is not None:
            raise ValueError("align_corners option can only be set with the interpolating modes: "
                             "linear | bilinear | bicubic | trilinear")
    elif align_corners is None:
        align_corners = False
    else:
        align_corners = check_flag(align_corners, "align_corners")
    if antialias:
        raise ValueError("interpolate: antialias=True is not supported by npconv (torch's anti-aliased "
                         "bilinear/bicubic/lanczos kernels); use antialias=False")
    if mode == "lanczos":
        raise ValueError("interpolate: mode='lanczos' requires antialias=True, which npconv does not support")
    dim = x.ndim - 2
    if dim not in (1, 2, 3):
        raise ValueError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {x.ndim}D) for the "
                         f"modes: nearest | linear | bilinear | bicubic | trilinear | area | nearest-exact "
                         f"(got {mode})")
    needed = _MODE_RANK.get(mode)
    if needed is not None and needed != dim:
        raise ValueError(f"Got {x.ndim}D input, but {mode} mode needs {needed + 2}D input")
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    spatial = list(x.shape[2:])
    scales: list[float | None] = [None] * dim
    if size is not None:
        if isinstance(size, (list, tuple)):
            if len(size) != dim:
                raise ValueError(f"Input and output must have the same number of spatial dimensions, but "
                                 f"got input with spatial dimensions of {spatial} and output size of {size}. "
                                 "Please provide input tensor in (N, C, d1, d2, ...,dK) format and output "
                                 "size in (o1, o2, ...,oK) format.")
            if not all(_integer(v) for v in size):
                raise TypeError(f"expected size to be one of int or Tuple[int] or Tuple[int, int] or "
                                f"Tuple[int, int, int], but got size with types {[type(v) for v in size]}")
            output = [int(v) for v in size]
        elif _integer(size):
            output = [int(size)] * dim
        else:
            raise TypeError(f"interpolate: size must be an int or a tuple of ints, got {size!r}")
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
    elif scale_factor is not None:
        factors = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor] * dim
        if len(factors) != dim:
            raise ValueError(f"Input and scale_factor must have the same number of spatial dimensions, but "
                             f"got input with spatial dimensions of {spatial} and scale_factor of shape "
                             f"{scale_factor}. Please provide input tensor in (N, C, d1, d2, ...,dK) format "
                             "and scale_factor in (s1, s2, ...,sK) format.")
        if not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and np.isfinite(f)
                   for f in factors):
            raise TypeError(f"interpolate: scale_factor must be a finite number or a tuple of them, "
                            f"got {scale_factor!r}")
        factors = [float(f) for f in factors]
        output = [int(n * f) for n, f in zip(spatial, factors, strict=True)]
        if not (recompute_scale_factor or mode == "area"):
            scales = list(factors)
    else:
        raise ValueError("either size or scale_factor should be defined")
    if any(n <= 0 for n in spatial) or any(m <= 0 for m in output):
        raise ValueError(f"interpolate: input and output sizes should be greater than 0, but got input "
                         f"{spatial} and output {output}")
    if mode == "area":
        return _pool_ops.adaptive_avg_pool(x, output)
    kernel = {"bilinear": "linear", "trilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    return _interp_ops.interpolate(x, output, kernel, bool(align_corners), scales)


def upsample(input: Any, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
             align_corners: bool | None = None) -> Tensor:
    """Deprecated alias of :func:`interpolate` (warns, as torch)."""
    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` instead.",
                  UserWarning, stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Any, size: Any = None, scale_factor: Any = None) -> Tensor:
    """Deprecated: ``interpolate(input, size, scale_factor, mode='nearest')``."""
    warnings.warn("`nn.functional.upsample_nearest` is deprecated. Use `nn.functional.interpolate` instead.",
                  UserWarning, stacklevel=2)
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input: Any, size: Any = None, scale_factor: Any = None) -> Tensor:
    """Deprecated: ``interpolate(input, size, scale_factor, mode='bilinear', align_corners=True)``."""
    warnings.warn("`nn.functional.upsample_bilinear` is deprecated. Use `nn.functional.interpolate` instead.",
                  UserWarning, stacklevel=2)
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# -- normalisation, adaptive max pooling, embeddings, vector similarity --------------------------


def _shape_list(shape: Any) -> list[int]:
    return [int(v) for v in shape]


def layer_norm(input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` axes (mean and biased variance per leading
    index), then ``* weight + bias`` (each of ``normalized_shape``)."""
    x = as_tensor(input, "input")
    shape = (normalized_shape,) if _integer(normalized_shape) else tuple(normalized_shape)
    if not all(_integer(v) for v in shape):
        raise TypeError(f"layer_norm: normalized_shape must be an int or a sequence of ints, got "
                        f"{normalized_shape!r}")
    shape = tuple(int(v) for v in shape)
    count = len(shape)
    if count == 0 or x.ndim < count or tuple(x.shape[x.ndim - count:]) != shape:
        raise ValueError(f"Given normalized_shape={_shape_list(shape)}, expected input with shape "
                         f"[*, {', '.join(str(v) for v in shape)}], but got input of "
                         f"size{shape_text(x.shape)}")
    params = []
    for name, value in (("weight", weight), ("bias", bias)):
        if value is None:
            params.append(None)
            continue
        p = as_tensor(value, name)
        if tuple(p.shape) != shape:
            raise ValueError(f"Expected {name} to be of same shape as normalized_shape, but got {name} of "
                             f"shape {shape_text(p.shape)} and normalized_shape = {shape_text(shape)}")
        _same_dtype(x, p, name, "layer_norm")
        params.append(p)
    return _norm_ops.layer_norm(x, count, params[0], params[1], float(eps))


def instance_norm(input: Any, running_mean: Any = None, running_var: Any = None, weight: Any = None,
                  bias: Any = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> Tensor:
    """Normalise each ``(n, c)`` plane of ``(N, C, *)`` by its own mean and biased variance, then a
    per-channel affine map. With ``use_input_stats`` the running statistics (if given) move by
    ``momentum`` towards the batch average of the per-plane mean and unbiased variance; without it
    they normalise instead (batch norm in eval mode)."""
    x = as_tensor(input, "input")
    if x.ndim < 2:
        raise ValueError(f"instance_norm: expected an input with at least 2 dimensions (N, C, *), got input "
                         f"of size {shape_text(x.shape)}")
    if not use_input_stats:
        return _batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    n, channels = x.shape[:2]
    spatial = int(np.prod(x.shape[2:]))
    if spatial <= 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"{shape_text(x.shape)}")
    stats = []
    for name, value in (("running_mean", running_mean), ("running_var", running_var)):
        if value is not None:
            value = as_tensor(value, name)
            if value.shape != (channels,):
                raise ValueError(f"{name} should contain {n * channels} elements not {value.numel() * n}")
        stats.append(value)
    w, b = (None if v is None else as_tensor(v, name) for v, name in ((weight, "weight"), (bias, "bias")))
    for name, value in (("weight", w), ("bias", b)):
        if value is not None and value.shape != (channels,):
            raise ValueError(f"{name} should contain {channels} elements not {value.numel()}")
    planes = x.reshape((1, n * channels) + x.shape[2:])
    y = _norm_ops.batch_norm(planes, None, None, None, None, True, 0.0, float(eps)).reshape(x.shape)
    if stats[0] is not None or stats[1] is not None:
        data = as_array(x).reshape(n, channels, -1)
        acc = np.promote_types(data.dtype, np.float32)
        mean = data.mean(axis=2, dtype=acc)
        var = data.var(axis=2, dtype=acc, ddof=1)
        for buffer, stat in zip(stats, (mean, var), strict=True):
            if buffer is not None:
                buffer.numpy()[...] = (1 - momentum) * buffer.numpy() + momentum * stat.mean(axis=0)
    channel_shape = (1, channels) + (1,) * (x.ndim - 2)
    if w is not None:
        y = y * w.reshape(channel_shape)
    if b is not None:
        y = y + b.reshape(channel_shape)
    return y


def local_response_norm(input: Any, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> Tensor:
    """``x / (k + alpha * mean_{size channels around c} x^2) ^ beta`` over ``(N, C, *)``
    (torch's composition of pad and average pooling, so its gradient too)."""
    x = as_tensor(input, "input")
    if x.ndim < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {x.ndim} dimensions)")
    if not _integer(size) or size < 1:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size!r}")
    if x.numel() == 0:
        return x
    div = x * x
    if x.ndim == 3:
        div = _pad_op(div.unsqueeze(1), ((size // 2, (size - 1) // 2), (0, 0)))
        div = _avg_pool2d(div, (size, 1), stride=1).squeeze(1)
    else:
        sizes = x.shape
        div = div.reshape(sizes[0], 1, sizes[1], sizes[2], -1)
        div = _pad_op(div, ((size // 2, (size - 1) // 2), (0, 0), (0, 0)))
        div = _avg_pool3d(div, (size, 1, 1), stride=1).squeeze(1).reshape(sizes)
    return x / (div * float(alpha) + float(k)) ** float(beta)


def _adaptive_max_pool(nd: int, input: Any, output_size: Any, return_indices: bool) -> Any:
    name = f"adaptive_max_pool{nd}d"
    x = as_tensor(input, "input")
    if x.ndim not in (nd + 1, nd + 2) or (x.ndim == nd + 2 and x.shape[1] == 0) or 0 in x.shape[-nd:]:
        raise ValueError(f"{name}(): Expected a non-empty {nd + 1}D or {nd + 2}D tensor, but got: "
                         f"{shape_text(x.shape)}")
    sizes = (output_size,) * nd if _integer(output_size) or output_size is None else tuple(output_size)
    if len(sizes) != nd:
        raise ValueError(f"{name}() argument 'output_size' should contain {nd} ints (got {len(sizes)})")
    target = []
    for size, n in zip(sizes, x.shape[-nd:], strict=True):
        if size is not None and (not _integer(size) or size < 0):
            raise ValueError(f"{name}: output_size must hold non-negative ints or None, got {output_size!r}")
        target.append(n if size is None else int(size))
    batched = x.ndim == nd + 2
    xb = x if batched else x.unsqueeze(0)
    if 0 in target:
        empty = xb.shape[:2] + tuple(target)
        y, index = Tensor(np.zeros(empty, x.dtype)), np.zeros(empty, np.int64)
    else:
        y, index = _pool_ops.adaptive_max_pool(xb, target)
    if not batched:
        y, index = y.squeeze(0), index[0]
    return (y, Tensor(index)) if check_flag(return_indices, "return_indices") else y


def adaptive_max_pool1d(input: Any, output_size: Any, return_indices: bool = False) -> Any:
    """Max over windows ``[floor(i L / out), ceil((i + 1) L / out))`` of ``(N, C, L)``; with
    ``return_indices`` also the flat input position of each maximum."""
    return _adaptive_max_pool(1, input, output_size, return_indices)


def adaptive_max_pool2d(input: Any, output_size: Any, return_indices: bool = False) -> Any:
    """Adaptive max pooling of ``(N, C, H, W)`` to ``output_size`` (int or pair; None keeps a size)."""
    return _adaptive_max_pool(2, input, output_size, return_indices)


def adaptive_max_pool3d(input: Any, output_size: Any, return_indices: bool = False) -> Any:
    """Adaptive max pooling of ``(N, C, D, H, W)`` to ``output_size``."""
    return _adaptive_max_pool(3, input, output_size, return_indices)


def _index_tensor(value: Any, name: str, op: str) -> np.ndarray:
    data = as_array(value) if isinstance(value, Tensor) else np.asarray(value)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must hold integer indices (int64 or int32), got dtype {data.dtype}")
    return data


def embedding(input: Any, weight: Any, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight (V, D)`` at integer ``input (*)``: ``(*, D)``. ``padding_idx`` gets no gradient;
    ``max_norm`` first rescales (in place) the looked-up rows whose norm exceeds it."""
    indices = _index_tensor(input, "input", "embedding")
    w = as_tensor(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got "
                         f"{shape_text(w.shape)}")
    rows = w.shape[0]
    if padding_idx is not None:
        if not _integer(padding_idx) or not -rows <= padding_idx < rows:
            raise ValueError(f"embedding: padding_idx must be within num_embeddings ({rows}), "
                             f"got {padding_idx!r}")
        padding_idx = int(padding_idx) % rows
    if sparse:
        raise ValueError("embedding: sparse=True (sparse gradients) is not supported by npconv; "
                         "use sparse=False")
    if indices.size and (indices.min() < 0 or indices.max() >= rows):
        bad = indices[(indices < 0) | (indices >= rows)].flat[0]
        raise IndexError(f"index out of range in self: embedding index {int(bad)} is not in [0, {rows})")
    indices = indices.astype(np.int64, copy=False)
    if max_norm is not None:
        _embedding_ops.embedding_renorm_(w.numpy(), indices, _real(max_norm, "max_norm"),
                                         _real(norm_type, "norm_type"))
    return _embedding_ops.embedding(indices, w, padding_idx,
                                    check_flag(scale_grad_by_freq, "scale_grad_by_freq"))


@refuses_oversize("one_hot")
def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """``(*,)`` class indices to ``(*, num_classes)`` int64 with a 1 at each index
    (``num_classes=-1``: one more than the largest index)."""
    indices = as_array(tensor) if isinstance(tensor, Tensor) else np.asarray(tensor)
    if indices.dtype != np.int64:
        raise TypeError(f"one_hot is only applicable to index tensor of type LongTensor (int64), got dtype "
                        f"{indices.dtype}")
    if not _integer(num_classes) or num_classes < -1:
        raise ValueError(f"one_hot: num_classes must be -1 or a non-negative int, got {num_classes!r}")
    if num_classes == -1:
        if indices.size == 0:
            raise ValueError("Can not infer total number of classes from empty tensor.")
        num_classes = int(indices.max()) + 1
    if indices.size and indices.min() < 0:
        raise ValueError("Class values must be non-negative.")
    if indices.size and indices.max() >= num_classes:
        raise ValueError(f"Class values must be smaller than num_classes ({num_classes}), "
                         f"got {int(indices.max())}.")
    return Tensor(_embedding_ops.one_hot_array(indices, int(num_classes)))


def normalize(input: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``."""
    x = as_tensor(input, "input")
    if out is not None:
        raise ValueError("normalize: out= is not supported by npconv; use the returned Tensor")
    axis = _dim_index(dim, x.ndim)
    if x.ndim == 0:
        x = x.reshape(1)
        return _norm_ops.normalize(x, _real(p, "p"), 0, _real(eps, "eps")).reshape(())
    return _norm_ops.normalize(x, _real(p, "p"), axis, _real(eps, "eps"))


def cosine_similarity(x1: Any, x2: Any, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``sum(x1 * x2) / (max(||x1||, eps) * max(||x2||, eps))`` along ``dim`` of the broadcast inputs."""
    a, b = as_tensor(x1, "x1"), as_tensor(x2, "x2")
    _same_dtype(a, b, "x2", "cosine_similarity")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError as error:
        raise ValueError(f"cosine_similarity: x1 of size {shape_text(a.shape)} and x2 of size "
                         f"{shape_text(b.shape)} cannot be broadcast together") from error
    axis = _dim_index(dim, len(shape))
    if not shape:
        return _norm_ops.cosine_similarity(a.reshape(1), b.reshape(1), 0, _real(eps, "eps"))
    return _norm_ops.cosine_similarity(a, b, axis, _real(eps, "eps"))


# -- sliding blocks -------------------------------------------------------------------------------


def _block_geometry(op: str, kernel_size: Any, dilation: Any, padding: Any, stride: Any) -> ConvGeometry:
    if isinstance(padding, str):
        raise TypeError(f"{op}: padding must be an int or a pair of ints, got {padding!r}")
    for name, value in (("kernel_size", kernel_size), ("dilation", dilation), ("stride", stride)):
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(_integer(v) and v <= 0 for v in values):
            raise ValueError(f"{op}: {name} should be greater than zero, but got {name}={value!r}")
    return ConvGeometry.create(kernel_size, stride, padding, dilation, ndim=2)


def _blocks(op: str, size: Sequence[int], geom: ConvGeometry) -> tuple[int, ...]:
    pads = geom.pads(size)
    blocks = geom.window_counts(size)
    if any(b < 1 for b in blocks):
        raise ValueError(f"{op}: given input with spatial size {tuple(size)}, "
                         f"kernel_size={geom.kernel_size}, dilation={geom.dilation}, "
                         f"padding={tuple(lo for lo, _ in pads)}, calculated shape of the array of sliding "
                         f"blocks as {blocks}, but its components must be at least one.")
    return blocks


def unfold(input: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Tensor:
    """Sliding blocks of ``(N, C, H, W)`` (or ``(C, H, W)``) as columns ``(N, C * kh * kw, L)``
    (im2col; ``L`` blocks in row-major order)."""
    x = as_tensor(input, "input")
    if x.ndim not in (3, 4):
        raise ValueError(f"Input Error: Only 3D or 4D input Tensors are supported (got {x.ndim}D)")
    geom = _block_geometry("unfold", kernel_size, dilation, padding, stride)
    batched = x.ndim == 4
    xb = x if batched else x.unsqueeze(0)
    if xb.shape[1] == 0 and batched:
        raise ValueError(f"unfold: expected a non-empty channel dimension, got input of size "
                         f"{shape_text(x.shape)}")
    _blocks("unfold", xb.shape[2:], geom)
    y = _fold_ops.unfold(xb, geom)
    return y if batched else y.squeeze(0)


def fold(input: Any, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0,
         stride: Any = 1) -> Tensor:
    """Sum columns ``(N, C * kh * kw, L)`` (or ``(C * kh * kw, L)``) back into ``(N, C, *output_size)``
    (col2im, the adjoint of :func:`unfold`; overlapping entries add)."""
    x = as_tensor(input, "input")
    if x.ndim not in (2, 3):
        raise ValueError(f"Input Error: Only unbatched (2D) or batched (3D) input Tensors are supported "
                         f"(got {x.ndim}D)")
    geom = _block_geometry("fold", kernel_size, dilation, padding, stride)
    size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(size) != 2 or not all(_integer(v) for v in size):
        raise TypeError(f"fold: output_size must be an int or a pair of ints, got {output_size!r}")
    if any(v < 1 for v in size):
        raise ValueError(f"fold: output_size must be positive, got {output_size!r}")
    batched = x.ndim == 3
    xb = x if batched else x.unsqueeze(0)
    k = int(np.prod(geom.kernel_size))
    if xb.shape[1] % k:
        raise ValueError(f"Expected size of input's dimension 1 to be divisible by the product of "
                         f"kernel_size, but got input.size(1)={xb.shape[1]} and "
                         f"kernel_size={geom.kernel_size}")
    blocks = _blocks("fold", size, geom)
    if xb.shape[2] != blocks[0] * blocks[1]:
        raise ValueError(f"Given output_size={size}, kernel_size={geom.kernel_size}, "
                         f"dilation={geom.dilation}, padding={tuple(lo for lo, _ in geom.pads())}, "
                         f"stride={geom.stride}, expected size of input's dimension 2 to match the "
                         f"calculated number of sliding blocks {blocks[0]} * {blocks[1]} = "
                         f"{blocks[0] * blocks[1]}, but got input.size(2)={xb.shape[2]}.")
    y = _fold_ops.fold(xb, geom, size)
    return y if batched else y.squeeze(0)


# -- spatial transformers -------------------------------------------------------------------------


_ALIGN_CORNERS_WARNING = ("Default grid_sample and affine_grid behavior has changed to align_corners=False "
                          "since 1.3.0. Please specify align_corners=True if the old behavior is desired. "
                          "See the documentation of grid_sample for details.")


def grid_sample(input: Any, grid: Any, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool | None = None) -> Tensor:
    """Sample ``input (N, C, H, W)`` at ``grid (N, H_out, W_out, 2)`` (or 3-D: ``(N, C, D, H, W)`` at
    ``(N, D_out, H_out, W_out, 3)``) holding normalised ``(x, y[, z])`` in ``[-1, 1]``.

    ``mode``: ``'bilinear'`` (trilinear for 5-D), ``'nearest'`` or ``'bicubic'`` (4-D);
    ``padding_mode``: ``'zeros'``, ``'border'`` or ``'reflection'``; ``align_corners``: -1 and 1 are
    the corner pixels' centres (True) or edges (False, the default). Differentiable in ``input``
    and ``grid``.
    """
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise ValueError("nn.functional.grid_sample(): expected mode to be 'bilinear', 'nearest' or "
                         f"'bicubic', but got: '{mode}'")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"nn.functional.grid_sample(): expected padding_mode to be 'zeros', 'border', or "
                         f"'reflection', but got: '{padding_mode}'")
    if align_corners is None:
        warnings.warn(_ALIGN_CORNERS_WARNING, UserWarning, stacklevel=2)
        align_corners = False
    x, g = as_tensor(input, "input"), as_tensor(grid, "grid")
    if x.ndim not in (4, 5) or g.ndim != x.ndim:
        raise ValueError("grid_sampler(): expected 4D or 5D input and grid with same number of dimensions, "
                         f"but got input with sizes {shape_text(x.shape)} and grid with sizes "
                         f"{shape_text(g.shape)}")
    if g.shape[0] != x.shape[0]:
        raise ValueError("grid_sampler(): expected grid and input to have same batch size, but got input "
                         f"with sizes {shape_text(x.shape)} and grid with sizes {shape_text(g.shape)}")
    if g.shape[-1] != x.ndim - 2:
        raise ValueError(f"grid_sampler(): expected grid to have size {x.ndim - 2} in last dimension, but "
                         f"got grid with sizes {shape_text(g.shape)}")
    for axis in range(2, x.ndim):
        if x.shape[axis] == 0:
            raise ValueError("grid_sampler(): expected input to have non-empty spatial dimensions, but "
                             f"input has sizes {shape_text(x.shape)} with dimension {axis} being empty")
    _same_dtype(x, g, "grid", "grid_sample")
    if mode == "bicubic":
        if x.ndim != 4:
            raise ValueError("grid_sampler(): bicubic interpolation only supports 4D input")
        return _grid_ops.grid_sample_bicubic(x, g, padding_mode, check_flag(align_corners, "align_corners"))
    return _grid_ops.grid_sample(x, g, mode, padding_mode, check_flag(align_corners, "align_corners"))


def _base_coordinates(steps: int, align_corners: bool, dtype: np.dtype) -> np.ndarray:
    """torch's ``linspace_from_neg_one``: ``steps`` points over [-1, 1] (pixel centres unless aligned)."""
    if steps <= 1:
        return np.zeros(1, dtype=dtype)
    points = np.linspace(-1, 1, steps, dtype=dtype)
    return points if align_corners else points * dtype.type((steps - 1) / steps)


def affine_grid(theta: Any, size: Any, align_corners: bool | None = None) -> Tensor:
    """Sampling grid ``(N, H, W, 2)`` (or ``(N, D, H, W, 3)``) of the affine maps ``theta (N, 2, 3)``
    (or ``(N, 3, 4)``) for an output of ``size = (N, C, H, W)`` (or 5-D):
    ``grid = [x, y(, z), 1] @ theta^T``."""
    if align_corners is None:
        warnings.warn(_ALIGN_CORNERS_WARNING, UserWarning, stacklevel=2)
        align_corners = False
    align_corners = check_flag(align_corners, "align_corners")
    t = as_tensor(theta, "theta")
    size = [int(v) for v in size] if all(_integer(v) for v in size) else None
    if size is None:
        raise TypeError("affine_grid: size must be a sequence of ints")
    if len(size) == 4:
        expected = (2, 3)
    elif len(size) == 5:
        expected = (3, 4)
    else:
        raise ValueError(f"affine_grid only supports 4D and 5D sizes, for 2D and 3D affine transforms, "
                         f"respectively. Got size {size}.")
    if t.ndim != 3 or tuple(t.shape[1:]) != expected:
        raise ValueError(f"Expected a batch of {len(size) - 2}D affine matrices of shape Nx{expected[0]}x"
                         f"{expected[1]} for size {size}. Got {shape_text(t.shape)}.")
    if min(size) <= 0:
        raise ValueError(f"Expected non-zero, positive output size. Got {size}")
    if t.shape[0] != size[0]:
        raise ValueError(f"affine_grid: theta holds {t.shape[0]} matrices but size asks for a batch of "
                         f"{size[0]}")
    spatial = size[2:]
    if align_corners and min(spatial) == 1:
        warnings.warn("Since version 1.3.0, affine_grid behavior has changed for unit-size grids when "
                      "align_corners=True. This is not an intended use case of affine_grid. See the "
                      "documentation of affine_grid for details.", UserWarning, stacklevel=2)
    axes = [_base_coordinates(n, align_corners, t.dtype) for n in reversed(spatial)]  # x (width) first
    mesh = np.meshgrid(*reversed(axes), indexing="ij")  # each of shape spatial
    base = np.stack([m for m in reversed(mesh)] + [np.ones(spatial, dtype=t.dtype)], axis=-1)
    grid = Tensor(base.reshape(1, -1, len(spatial) + 1)) @ t.transpose(1, 2)
    return grid.reshape([size[0]] + spatial + [len(spatial)])
