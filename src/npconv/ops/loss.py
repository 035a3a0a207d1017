"""Differentiable losses with fused gradients.

All inputs are batched with the class axis at 1: ``input (N, C, *d)``.

* ``nll``: ``l_i = -w[y_i] * x[i, y_i]`` (0 where ``y_i == ignore_index``); mean divides by
  ``sum_i w[y_i]`` over the kept targets.
* ``cross_entropy`` from logits, written as ``l_i = -sum_c a_ic * logp_ic`` with coefficients
  ``a`` (class indices: ``(1 - eps) * w[y_i] * [c == y_i] + eps / C * w_c``; probabilities:
  ``w_c * (t_ic * (1 - eps) + eps / C)``), so ``dl_i/dx_ic = softmax_ic * sum_c a_ic - a_ic``.
* ``binary_cross_entropy_with_logits``: ``l = w * ((1 - t) x + (1 + (pw - 1) t) * softplus(-x))``.
* elementwise ``squared_error`` ``(x - t)^2`` and ``absolute_error`` ``|x - t|``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels import pointwise
from ..tensor import Tensor, _sum_to_shape, as_array, make_result
from .activation import log_softmax_array

__all__ = ["nll_loss", "cross_entropy", "binary_cross_entropy_with_logits", "squared_error", "absolute_error",
           "binary_cross_entropy", "smooth_l1", "huber", "kl_div"]


def _wants_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def _reduce(elements: np.ndarray, reduction: str, denominator: Any) -> tuple[np.ndarray, Any]:
    """Reduced loss and the factor by which the output gradient reaches each element."""
    if reduction == "none":
        return elements, None
    total = elements.sum()
    if reduction == "sum":
        return np.asarray(total), 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / denominator), 1 / denominator if denominator else np.nan


def _spread(g: np.ndarray, factor: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Output gradient as one value per loss element (broadcastable to ``shape``)."""
    return g if factor is None else np.broadcast_to(g * factor, shape)


def _class_targets(target: np.ndarray, channels: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    keep = target != ignore_index
    safe = np.where(keep, target, 0)
    bad = keep & ((target < 0) | (target >= channels))
    if bad.any():
        raise ValueError(f"Target {int(target[bad].flat[0])} is out of bounds (expected a class index in "
                         f"[0, {channels}) or ignore_index={ignore_index}).")
    return safe, keep


def nll_loss(x: Any, target: np.ndarray, weight: np.ndarray | None, ignore_index: int,
             reduction: str) -> Tensor:
    """Negative log likelihood of log-probabilities ``x (N, C, *d)`` at class indices ``target (N, *d)``."""
    data = as_array(x)
    safe, keep = _class_targets(target, data.shape[1], ignore_index)
    index = safe[:, None]
    picked = np.take_along_axis(data, index, axis=1)[:, 0]
    w = (weight[safe] if weight is not None else np.ones(safe.shape, dtype=data.dtype)) * keep
    w = w.astype(data.dtype, copy=False)
    out, factor = _reduce(-picked * w, reduction, w.sum())

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        grad = np.zeros_like(data)
        # ignored targets get no gradient even when all are ignored (a mean's factor 1/0 is nan), as in torch
        spread = np.where(keep, _spread(g, factor, w.shape), 0)
        np.put_along_axis(grad, index, (-w * spread)[:, None], axis=1)
        return (grad,)

    return make_result(out.astype(data.dtype, copy=False), (x,), backward, "NllLossBackward0")


def cross_entropy(x: Any, target: Any, weight: np.ndarray | None, ignore_index: int, reduction: str,
                  label_smoothing: float) -> Tensor:
    """Cross entropy of logits ``x (N, C, *d)`` with class indices ``(N, *d)`` (integer ``target``)
    or class probabilities ``(N, C, *d)`` (floating ``target``, differentiable)."""
    data = as_array(x)
    t = as_array(target)
    channels = data.shape[1]
    dtype = data.dtype
    shape = (1, channels) + (1,) * (data.ndim - 2)
    w = None if weight is None else weight.astype(dtype, copy=False).reshape(shape)
    logp = log_softmax_array(data, 1)
    eps = dtype.type(label_smoothing)
    if t.dtype.kind in "iu":
        safe, keep = _class_targets(t, channels, ignore_index)
        picked_weight = weight[safe].astype(dtype) if weight is not None else np.ones(safe.shape, dtype)
        picked_weight = picked_weight * keep
        coefficients = np.zeros_like(data)
        np.put_along_axis(coefficients, safe[:, None], ((1 - eps) * picked_weight)[:, None], axis=1)
        if label_smoothing:
            smooth = (eps / channels) * (w if w is not None else np.ones(shape, dtype))
            coefficients += smooth * keep[:, None]
        denominator = picked_weight.sum()
        probabilities = False
        kept = keep
    else:
        smoothed = t * (1 - eps) + eps / channels if label_smoothing else t
        coefficients = smoothed * w if w is not None else smoothed
        denominator = data.size // channels if data.size else 0
        probabilities = True
        kept = None
    elements = -(coefficients * logp).sum(axis=1)
    out, factor = _reduce(elements, reduction, denominator)

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        scale = _spread(g, factor, elements.shape)
        if kept is not None:  # ignored targets get no gradient, even when all are ignored (as in torch)
            scale = np.where(kept, scale, 0)
        scale = scale[:, None]
        gx = None
        if _wants_grad(x):
            gx = (np.exp(logp) * coefficients.sum(axis=1, keepdims=True) - coefficients) * scale
        gt = None
        if probabilities and _wants_grad(target):
            gt = -logp * scale * (1 - eps)
            if w is not None:
                gt = gt * w
        return gx, gt

    return make_result(out.astype(dtype, copy=False), (x, target), backward, "NllLossBackward0")


def binary_cross_entropy_with_logits(x: Any, target: Any, weight: Any, pos_weight: Any) -> Tensor:
    """Elementwise ``w * ((1 - t) * x + (1 + (pw - 1) * t) * softplus(-x))`` (broadcast to ``x``)."""
    data = as_array(x)
    t = as_array(target).astype(data.dtype, copy=False)
    softplus = np.logaddexp(data.dtype.type(0), -data)
    pw = None if pos_weight is None else as_array(pos_weight).astype(data.dtype, copy=False)
    log_weight = 1 + (pw - 1) * t if pw is not None else None
    loss = (1 - t) * data + (log_weight * softplus if log_weight is not None else softplus)
    wd = None if weight is None else as_array(weight).astype(data.dtype, copy=False)
    if wd is not None:
        loss = loss * wd

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        gw = g if wd is None else g * wd
        gx = gt = None
        if _wants_grad(x):  # torch's formula and order: (sigmoid(x) - t) g w (pw: (pw t + 1 - t) s - pw t)
            s = pointwise.sigmoid(data)
            inner = s - t if pw is None else (pw * t + 1 - t) * s - pw * t
            gx = inner * g if wd is None else inner * g * wd
            gx = _sum_to_shape(gx, data.shape)
        if _wants_grad(target):
            inner = -data if pw is None else -data + (pw - 1) * softplus
            gt = _sum_to_shape(gw * inner, as_array(target).shape)
        return gx, gt

    return make_result(np.asarray(loss, dtype=data.dtype), (x, target), backward,
                       "BinaryCrossEntropyWithLogitsBackward0")


def squared_error(x: Any, target: Any) -> Tensor:
    """Elementwise ``(x - t)^2`` with broadcasting; gradient ``2 (x - t)`` (and its negative for ``t``)."""
    diff = as_array(x) - as_array(target)

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        gd = 2 * g * diff
        return _sum_to_shape(gd, as_array(x).shape), _sum_to_shape(-gd, as_array(target).shape)

    return make_result(diff * diff, (x, target), backward, "MseLossBackward0")


def absolute_error(x: Any, target: Any) -> Tensor:
    """Elementwise ``|x - t|`` with broadcasting; gradient ``sign(x - t)``."""
    diff = as_array(x) - as_array(target)

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        gd = g * np.sign(diff)
        return _sum_to_shape(gd, as_array(x).shape), _sum_to_shape(-gd, as_array(target).shape)

    return make_result(np.abs(diff), (x, target), backward, "L1LossBackward0")


# -- elementwise losses of issue 13 (reduced by the caller) ---------------------------------------
_BCE_LOG_FLOOR = -100.0  # torch clamps each log at -100 so a 0/1 prediction costs 100, not inf
_BCE_EPSILON = float(np.float32(1e-12))  # torch's floor of x * (1 - x) in the input gradient (a C float)


def binary_cross_entropy(x: Any, target: Any, weight: Any) -> Tensor:
    """Elementwise ``-w * (t * max(log x, -100) + (1 - t) * max(log(1 - x), -100))``.

    Gradients: input ``w * (x - t) / max(x * (1 - x), 1e-12)``; target ``w * (log(1 - x) - log x)``.
    ``weight`` is broadcast to the input's shape (or None).
    """
    data = as_array(x)
    t = as_array(target)
    dtype = data.dtype.type
    w = None if weight is None else as_array(weight)
    with np.errstate(divide="ignore"):
        log_x = np.log(data)
        log_1mx = np.log1p(-data)
    floor = dtype(_BCE_LOG_FLOOR)
    loss = -(t * np.maximum(log_x, floor) + (1 - t) * np.maximum(log_1mx, floor))
    if w is not None:
        loss = loss * w

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        gw = g if w is None else g * w
        gx = gt = None
        if _wants_grad(x):
            gx = gw * (data - t) / np.maximum((1 - data) * data, dtype(_BCE_EPSILON))
        if _wants_grad(target):
            gt = gw * (log_1mx - log_x)
        return gx, gt

    return make_result(np.asarray(loss, dtype=data.dtype), (x, target), backward,
                       "BinaryCrossEntropyBackward0")


def smooth_l1(x: Any, target: Any, beta: float) -> Tensor:
    """Elementwise ``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = x - t``;
    ``beta == 0`` is ``|d|``); gradient ``clip(d / beta, -1, 1)``."""
    d = as_array(x) - as_array(target)
    t = d.dtype.type
    b = t(beta)
    a = np.abs(d)
    inside = a < b
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.where(inside, t(0.5) * d * d / b, a - t(0.5) * b)

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        if beta == 0:  # torch computes an l1 loss then: gradient sign(d), 0 at d == 0
            slope = np.sign(d)
        else:
            slope = np.where(d < -b, t(-1), np.where(d > b, t(1), d / b))
        gd = g * slope
        return _sum_to_shape(gd, as_array(x).shape), _sum_to_shape(-gd, as_array(target).shape)

    return make_result(loss.astype(d.dtype, copy=False), (x, target), backward, "SmoothL1LossBackward0")


def huber(x: Any, target: Any, delta: float) -> Tensor:
    """Elementwise ``0.5 d^2`` where ``|d| < delta``, else ``delta * (|d| - 0.5 delta)``;
    gradient ``clip(d, -delta, delta)``."""
    d = as_array(x) - as_array(target)
    t = d.dtype.type
    c = t(delta)
    a = np.abs(d)
    loss = np.where(a < c, t(0.5) * d * d, c * (a - t(0.5) * c))

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        gd = g * np.where(d < -c, -c, np.where(d > c, c, d))
        return _sum_to_shape(gd, as_array(x).shape), _sum_to_shape(-gd, as_array(target).shape)

    return make_result(loss.astype(d.dtype, copy=False), (x, target), backward, "HuberLossBackward0")


def kl_div(x: Any, target: Any, log_target: bool) -> Tensor:
    """Elementwise KL term: ``xlogy(t, t) - t * x``, or ``exp(t) * (t - x)`` for log-space targets.

    Gradients as torch's composite: input ``-t`` (``-exp(t)``); target
    ``xlogy(t != 0, t) + t / t - x`` (NaN at ``t == 0``, as torch) or ``exp(t) * (t - x + 1)``.
    """
    from scipy import special  # imported on first use: scipy.special adds ~0.3 s to `import npconv`

    data = as_array(x)
    t = as_array(target)
    if log_target:
        e = np.exp(t)
        loss = e * (t - data)
    else:
        loss = special.xlogy(t, t) - t * data

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        gx = gt = None
        if _wants_grad(x):
            gx = _sum_to_shape(-g * (e if log_target else t), data.shape)
        if _wants_grad(target):
            if log_target:
                gt = g * e * (t - data + 1)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    gt = g * (special.xlogy((t != 0).astype(t.dtype), t) + t / t - data)
            gt = _sum_to_shape(gt, t.shape)
        return gx, gt

    return make_result(np.asarray(loss, dtype=np.result_type(data, t)), (x, target), backward, "SubBackward0")
