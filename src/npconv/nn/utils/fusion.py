"""Fold an eval-mode BatchNorm into the preceding convolution or linear layer, as
``torch.nn.utils.fusion``: ``w' = w * gamma / sqrt(var + eps)`` (per output channel),
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ...tensor import Tensor, as_array
from ..parameter import Parameter

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights"]


def _array(value: Any) -> np.ndarray | None:
    return None if value is None else as_array(value)


def fuse_conv_bn_weights(conv_w: Any, conv_b: Any, bn_rm: Any, bn_rv: Any, bn_eps: float, bn_w: Any,
                         bn_b: Any, transpose: bool = False) -> tuple[Parameter, Parameter]:
    """Fused ``(weight, bias)`` Parameters of a conv followed by a BatchNorm with these statistics."""
    w, rm, rv = as_array(conv_w), as_array(bn_rm), as_array(bn_rv)
    b = _array(conv_b)
    weight_dtype = w.dtype
    bias_dtype = b.dtype if b is not None else weight_dtype
    b = np.zeros_like(rm) if b is None else b
    gamma = np.ones_like(rm) if bn_w is None else as_array(bn_w)
    beta = np.zeros_like(rm) if bn_b is None else as_array(bn_b)
    inv_std = 1 / np.sqrt(rv + rv.dtype.type(bn_eps))
    shape = [1, -1] + [1] * (w.ndim - 2) if transpose else [-1, 1] + [1] * (w.ndim - 2)
    fused_w = (w * (gamma * inv_std).reshape(shape)).astype(weight_dtype)
    fused_b = ((b - rm) * inv_std * gamma + beta).astype(bias_dtype)
    requires_w = conv_w.requires_grad if isinstance(conv_w, Tensor) else True
    requires_b = conv_b.requires_grad if isinstance(conv_b, Tensor) else requires_w
    return Parameter(fused_w, requires_w), Parameter(fused_b, requires_b)


def _check_eval(a: Any, b: Any) -> None:
    if a.training or b.training:
        raise ValueError("Fusion only for eval! Call .eval() on both modules first")
    if b.running_mean is None or b.running_var is None:
        raise ValueError("fusion needs the BatchNorm's running statistics (track_running_stats=True)")


def fuse_conv_bn_eval(conv: Any, bn: Any, transpose: bool = False) -> Any:
    """A copy of ``conv`` whose output equals ``bn(conv(x))`` in eval mode."""
    _check_eval(conv, bn)
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(fused.weight, fused.bias, bn.running_mean, bn.running_var,
                                                    bn.eps, bn.weight, bn.bias, transpose)
    return fused


def fuse_linear_bn_weights(linear_w: Any, linear_b: Any, bn_rm: Any, bn_rv: Any, bn_eps: float, bn_w: Any,
                           bn_b: Any) -> tuple[Parameter, Parameter]:
    """Fused ``(weight, bias)`` of a Linear followed by a BatchNorm1d with these statistics."""
    return fuse_conv_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b)


def fuse_linear_bn_eval(linear: Any, bn: Any) -> Any:
    """A copy of ``linear`` whose output equals ``bn(linear(x))`` in eval mode."""
    _check_eval(linear, bn)
    if linear.out_features != bn.num_features:
        raise ValueError("To fuse, linear.out_features must equal bn.num_features")
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(fused.weight, fused.bias, bn.running_mean,
                                                      bn.running_var, bn.eps, bn.weight, bn.bias)
    return fused
