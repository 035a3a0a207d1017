"""Differentiable batch and group normalisation with fused backward passes.

Both normalise ``x`` over a set of axes with a two-pass (centred) variance, then apply a
per-channel affine map (the mean corrected by a second pass over ``x - mean``):
``xhat = (x - mean) * invstd``, ``invstd = 1 / sqrt(var + eps)``,
``y = xhat * weight + bias``.  With batch statistics the fused input gradient over the ``M``
reduced elements is ``gx = invstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))`` with
``gxhat = g * weight``; with fixed (running) statistics it is ``g * weight * invstd``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..kernels import pointwise
from ..tensor import Tensor, _sum_to_shape, as_array, make_result

__all__ = ["batch_norm", "group_norm", "layer_norm", "normalize", "cosine_similarity", "vector_norm_array",
           "vector_norm_grad"]


def _wants_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def _channel_shape(ndim: int, channels: int) -> tuple[int, ...]:
    return (1, channels) + (1,) * (ndim - 2)


def batch_norm(x: Any, running_mean: Tensor | None, running_var: Tensor | None, weight: Any, bias: Any,
               training: bool, momentum: float, eps: float) -> Tensor:
    """Batch norm of ``x (N, C, *)`` per channel over ``(N, *)``.

    In training the batch statistics are used and the running buffers (if given) are updated in
    place: ``r = (1 - momentum) * r + momentum * stat`` with the unbiased variance
    ``var * M / (M - 1)``. Otherwise the running statistics normalise. The passes are
    :func:`npconv.kernels.pointwise.batch_norm_forward` / ``batch_norm_backward`` (compiled per
    channel, or NumPy over runs of images); ``xhat`` is not stored, the backward pass recomputes
    ``x - mean``.
    """
    data = as_array(x)
    acc = pointwise.accumulator(data.dtype)  # statistics in at least float32
    w = None if weight is None else as_array(weight)
    b = None if bias is None else as_array(bias)
    count = data.shape[0] * math.prod(data.shape[2:])
    if training and count == 0:  # as torch: an empty batch leaves the running statistics alone
        zeros = np.zeros(data.shape[1], acc)
        y, mean, _, invstd = pointwise.batch_norm_forward(data, w, b, eps, fixed=(zeros, zeros + 1))
    elif training:
        y, mean, var, invstd = pointwise.batch_norm_forward(data, w, b, eps)
        for buffer, stat in ((running_mean, mean), (running_var, var * (count / max(count - 1, 1)))):
            if buffer is not None:
                buffer.numpy()[...] = (1 - momentum) * buffer.numpy() + momentum * stat
    else:
        mean = as_array(running_mean).astype(acc, copy=False)
        var = as_array(running_var).astype(acc, copy=False)
        invstd = (1 / np.sqrt(var + acc.type(eps))).astype(acc, copy=False)
        y, mean, _, invstd = pointwise.batch_norm_forward(data, w, b, eps, fixed=(mean, invstd))

    def backward(g: np.ndarray) -> tuple[Any, ...]:
        param_grads = _wants_grad(weight) or _wants_grad(bias)
        gx, gw, gb = pointwise.batch_norm_backward(g, data, mean, invstd, w, training, _wants_grad(x),
                                                   param_grads)
        gw = gw.astype(w.dtype, copy=False) if _wants_grad(weight) else None
        gb = gb.astype(b.dtype, copy=False) if _wants_grad(bias) else None
        return gx, gw, gb

    return make_result(y, (x, weight, bias), backward, "NativeBatchNormBackward0")


def group_norm(x: Any, num_groups: int, weight: Any, bias: Any, eps: float) -> Tensor:
    """Group norm of ``x (N, C, *)``: statistics per sample over each group of ``C / G`` channels."""
    data = as_array(x)
    n, channels = data.shape[:2]
    group_size = data.size // n // num_groups if n else channels // num_groups * math.prod(data.shape[2:])
    grouped = data.reshape(n, num_groups, group_size)
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
            gxhat = (g if w is None else g * w.reshape(shape)).reshape(n, num_groups, group_size)
            xh = xhat.reshape(n, num_groups, group_size)
            gx = (gxhat - gxhat.mean(axis=2, keepdims=True)
                  - xh * (gxhat * xh).mean(axis=2, keepdims=True)) * invstd
            gx = gx.reshape(data.shape)
        return gx, gw, gb

    return make_result(y, (x, weight, bias), backward, "NativeGroupNormBackward0")


def layer_norm(x: Any, count: int, weight: Any, bias: Any, eps: float) -> Tensor:
    """Layer norm over the last ``count`` axes: ``xhat = (x - mean) / sqrt(var + eps)`` (biased
    variance), ``y = xhat * weight + bias`` with ``weight``/``bias`` of those axes' shape."""
    data = as_array(x)
    axes = tuple(range(data.ndim - count, data.ndim))
    acc = pointwise.accumulator(data.dtype)
    t = acc.type
    work = data.astype(acc, copy=False)
    mean = work.mean(axis=axes, keepdims=True)
    centred = work - mean
    var = np.mean(centred * centred, axis=axes, keepdims=True)
    invstd = 1 / np.sqrt(var + t(eps))
    xhat = centred * invstd
    w = None if weight is None else as_array(weight)
    y = xhat * w if w is not None else xhat
    if bias is not None:
        y = y + as_array(bias)
    lead = tuple(range(data.ndim - count))

    def backward(g: np.ndarray) -> tuple[Any, ...]:
        g = g.astype(acc, copy=False)
        gw = (g * xhat).sum(axis=lead).astype(w.dtype) if _wants_grad(weight) else None
        gb = g.sum(axis=lead).astype(as_array(bias).dtype) if _wants_grad(bias) else None
        gx = None
        if _wants_grad(x):
            gxhat = g if w is None else g * w
            gx = (gxhat - gxhat.mean(axis=axes, keepdims=True)
                  - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)) * invstd
            gx = gx.astype(data.dtype, copy=False)
        return gx, gw, gb

    return make_result(np.asarray(y, dtype=data.dtype), (x, weight, bias), backward,
                       "NativeLayerNormBackward0")


def vector_norm_array(x: np.ndarray, p: float, axis: int) -> np.ndarray:
    """``||x||_p`` along ``axis`` (kept): count of non-zeros for 0, max/min ``|x|`` for +-inf."""
    a = np.abs(x)
    if p == 0:
        return (a != 0).sum(axis=axis, keepdims=True).astype(x.dtype)
    if p == np.inf:
        return a.max(axis=axis, keepdims=True)
    if p == -np.inf:
        return a.min(axis=axis, keepdims=True)
    if p == 2:
        return np.sqrt((x * x).sum(axis=axis, keepdims=True))
    if p == 1:
        return a.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        return (a ** x.dtype.type(p)).sum(axis=axis, keepdims=True) ** x.dtype.type(1 / p)


def vector_norm_grad(x: np.ndarray, norm: np.ndarray, g: np.ndarray, p: float, axis: int) -> np.ndarray:
    """torch's ``linalg_vector_norm_backward``: d||x||_p / dx times ``g`` (both broadcast along ``axis``)."""
    t = x.dtype.type
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if p == 0:
            return np.zeros_like(x)
        if p == 1:
            return np.sign(x) * g
        if p in (np.inf, -np.inf):
            mask = (np.abs(x) == norm).astype(x.dtype)
            return np.sign(x) * mask * g / mask.sum(axis=axis, keepdims=True)
        if p == 2:
            return x * np.where(norm == 0, t(0), g / norm)
        if p < 1:
            scaled = np.sign(x) * np.where(x == 0, t(0), np.abs(x) ** t(p - 1))
            return scaled * g * norm ** t(1 - p)
        scale = np.where(norm == 0, t(0), g / norm ** t(p - 1))
        scaled = np.sign(x) * np.abs(x) ** t(p - 1) if p < 2 else x * np.abs(x) ** t(p - 2)
        return scaled * scale


def normalize(x: Any, p: float, axis: int, eps: float) -> Tensor:
    """``x / max(||x||_p, eps)`` along ``axis``; the clamp passes the gradient where ``||x||_p >= eps``."""
    data = as_array(x)
    t = data.dtype.type
    norm = vector_norm_array(data, p, axis)
    denominator = np.maximum(norm, t(eps))
    out = data / denominator

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        g_denominator = -(g * data).sum(axis=axis, keepdims=True) / (denominator * denominator)
        g_norm = np.where(norm >= t(eps), g_denominator, t(0))
        return (g / denominator + vector_norm_grad(data, norm, g_norm, p, axis),)

    return make_result(out, (x,), backward, "DivBackward0")


def cosine_similarity(x1: Any, x2: Any, axis: int, eps: float) -> Tensor:
    """``sum((x1 / max(||x1||, eps)) * (x2 / max(||x2||, eps)))`` along ``axis`` of the broadcast
    inputs; as torch, the clamp is outside the graph (the norm's gradient is the unclamped one)."""
    a0, b0 = as_array(x1), as_array(x2)
    a, b = np.broadcast_arrays(a0, b0)
    t = a.dtype.type
    na, nb = vector_norm_array(a, 2, axis), vector_norm_array(b, 2, axis)
    ca, cb = np.maximum(na, t(eps)), np.maximum(nb, t(eps))
    ua, ub = a / ca, b / cb
    out = (ua * ub).sum(axis=axis)

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        g = np.expand_dims(g, axis)
        grads = []
        for v, c, n, other, shape in ((a, ca, na, ub, a0.shape), (b, cb, nb, ua, b0.shape)):
            gu = g * other
            g_norm = -(gu * v).sum(axis=axis, keepdims=True) / (c * c)
            grads.append(_sum_to_shape(gu / c + vector_norm_grad(v, n, g_norm, 2, axis), shape))
        return tuple(grads)

    return make_result(out, (x1, x2), backward, "SumBackward1")
