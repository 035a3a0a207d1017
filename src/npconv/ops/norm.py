"""Differentiable batch and group normalisation with fused backward passes.

Both normalise ``x`` over a set of axes with a two-pass (centred) variance, then apply a
per-channel affine map (the mean corrected by a second pass over ``x - mean``):
``xhat = (x - mean) * invstd``, ``invstd = 1 / sqrt(var + eps)``,
``y = xhat * weight + bias``.  With batch statistics the fused input gradient over the ``M``
reduced elements is ``gx = invstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))`` with
``gxhat = g * weight``; with fixed (running) statistics it is ``g * weight * invstd``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels import pointwise
from ..tensor import Tensor, as_array, make_result

__all__ = ["batch_norm", "group_norm"]


def _wants_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def _channel_shape(ndim: int, channels: int) -> tuple[int, ...]:
    return (1, channels) + (1,) * (ndim - 2)


def batch_norm(x: Any, running_mean: Tensor | None, running_var: Tensor | None, weight: Any, bias: Any,
               training: bool, momentum: float, eps: float) -> Tensor:
    """Batch norm of ``x (N, C, *)`` per channel over ``(N, *)``.

    In training the batch statistics are used and the running buffers (if given) are updated in
    place: ``r = (1 - momentum) * r + momentum * stat`` with the unbiased variance
    ``var * M / (M - 1)``. Otherwise the running statistics normalise. Computed image by image on
    the worker threads (:mod:`npconv.kernels.pointwise`) as ``y = (x - mean) * a + bias`` with
    ``a = weight * invstd``; ``xhat`` is not stored, the backward pass recomputes ``x - mean``.
    """
    data = as_array(x)
    channels = data.shape[1]
    count = data.size // channels if channels else 0
    acc = pointwise.accumulator(data.dtype)  # statistics in at least float32
    t = acc.type
    if training:
        mean = pointwise.channel_sums(data) / t(count)
        first, second = pointwise.centred_moments(data, mean)
        correction = first / t(count)  # the first pass's rounding error (corrected two-pass)
        mean = mean + correction
        var = np.maximum(second / t(count) - correction * correction, t(0))
        for buffer, stat in ((running_mean, mean), (running_var, var * (count / max(count - 1, 1)))):
            if buffer is not None:
                buffer.data[...] = (1 - momentum) * buffer.data + momentum * stat
    else:
        mean = as_array(running_mean).astype(acc, copy=False)
        var = as_array(running_var).astype(acc, copy=False)
    invstd = (1 / np.sqrt(var + t(eps))).astype(acc, copy=False)
    w = None if weight is None else as_array(weight)
    scale = invstd if w is None else (invstd * w).astype(acc, copy=False)
    shift = np.zeros_like(scale) if bias is None else as_array(bias).astype(acc, copy=False)
    y = pointwise.centred_scale(data, mean, scale, shift)

    def backward(g: np.ndarray) -> tuple[Any, ...]:
        total, dot = pointwise.centred_dot(g, data, mean)  # sum g, sum g * (x - mean)
        gw = (dot * invstd).astype(as_array(weight).dtype, copy=False) if _wants_grad(weight) else None
        gb = total.astype(as_array(bias).dtype, copy=False) if _wants_grad(bias) else None
        gx = None
        if _wants_grad(x):
            if training:  # scale * (g - mean(g) - xhat * mean(g * xhat))
                gx = pointwise.centred_affine(g, data, mean, scale, -scale * invstd * invstd * dot / t(count),
                                              -scale * total / t(count))
            else:
                gx = pointwise.affine(g, scale, np.zeros_like(scale))
        return gx, gw, gb

    return make_result(y, (x, weight, bias), backward, "NativeBatchNormBackward0")


def group_norm(x: Any, num_groups: int, weight: Any, bias: Any, eps: float) -> Tensor:
    """Group norm of ``x (N, C, *)``: statistics per sample over each group of ``C / G`` channels."""
    data = as_array(x)
    n, channels = data.shape[:2]
    grouped = data.reshape(n, num_groups, -1)
    t = data.dtype.type
    mean = grouped.mean(axis=2, keepdims=True)
    centred = grouped - mean
    var = np.mean(centred * centred, axis=2, keepdims=True)
    invstd = (1 / np.sqrt(var + t(eps))).astype(data.dtype, copy=False)
    xhat = (centred * invstd).reshape(data.shape)
    shape = _channel_shape(data.ndim, channels)
    w = None if weight is None else as_array(weight)
    y = xhat * w.reshape(shape) if w is not None else xhat.copy()
    if bias is not None:
        y += as_array(bias).reshape(shape)
    axes = (0,) + tuple(range(2, data.ndim))

    def backward(g: np.ndarray) -> tuple[Any, ...]:
        gw = (g * xhat).sum(axis=axes) if _wants_grad(weight) else None
        gb = g.sum(axis=axes) if _wants_grad(bias) else None
        gx = None
        if _wants_grad(x):
            gxhat = (g if w is None else g * w.reshape(shape)).reshape(n, num_groups, -1)
            xh = xhat.reshape(n, num_groups, -1)
            gx = (gxhat - gxhat.mean(axis=2, keepdims=True)
                  - xh * (gxhat * xh).mean(axis=2, keepdims=True)) * invstd
            gx = gx.reshape(data.shape)
        return gx, gw, gb

    return make_result(y, (x, weight, bias), backward, "NativeGroupNormBackward0")
