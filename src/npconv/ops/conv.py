"""Differentiable N-d convolution and transposed convolution, wired from the planner's passes.

Convolution (``geom`` with explicit zero padding):
    ``y = F(x, w) + b``;  ``gx = GI(gy, conj w)``;  ``gw = GW(conj x, gy)``;  ``gb = sum gy``.
Transposed convolution is the adjoint of convolution (``y = GI(x, w)``), so its backward uses
the other two passes with roles swapped:
    ``gx = F(gy, conj w)``;  ``gw = GW(gy, conj x)``.
Non-zero padding modes are a separate :func:`~npconv.ops.pad.pad` before the convolution, and
for the transposed convolution its adjoint, :func:`~npconv.ops.pad.pad_adjoint`, after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import is_grad_enabled
from ..geometry import PADDING_MODES, ConvGeometry
from ..kernels import plan
from ..kernels.common import add_bias, bias_grad
from ..kernels.numerics import Ranges
from ..kernels.padding import pad_array
from ..kernels.pointwise import Activation
from ..tensor import Tensor, _conj, as_array, make_result
from .pad import pad, pad_adjoint

__all__ = ["convolution", "convolution_explicit", "conv_transpose", "records"]

def _wants_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def records(x: Any, w: Any, b: Any) -> bool:
    """Whether a convolution of these operands records autograd's graph."""
    return is_grad_enabled() and (_wants_grad(x) or _wants_grad(w) or _wants_grad(b))


def convolution_explicit(x: Any, w: Any, b: Any, geom: ConvGeometry,
                         activation: Activation | None = None) -> Tensor:
    """:func:`convolution` with ``geom``'s padding explicit zeros; ``activation`` (only when the call
    does not record autograd, see :func:`records`) is applied in the output pass by the planner."""
    if activation is not None:
        if records(x, w, b):
            raise ValueError("convolution_explicit: a fused activation is for calls that do not record "
                             "autograd (apply the activation op to the result instead)")
        bd = None if b is None else as_array(b)
        return Tensor(plan.forward(as_array(x), as_array(w), geom, bias=bd, activation=activation))
    return _conv_core(x, w, b, geom)


def _conv_core(x: Any, w: Any, b: Any, geom: ConvGeometry) -> Tensor:
    xd, wd = as_array(x), as_array(w)
    bd = None if b is None else as_array(b)
    ranges = Ranges()  # x's and w's for the backward too (each array scanned once per step)
    y = plan.forward(xd, wd, geom, bias=bd, ranges=ranges)

    def backward(g: np.ndarray) -> tuple[Any, Any, Any]:
        step = ranges.copy()  # and g's, for both passes
        gx = plan.grad_input(g, _conj(wd), geom, xd.shape[2:], ranges=step) if _wants_grad(x) else None
        gw = plan.grad_weight(_conj(xd), g, geom, ranges=step) if _wants_grad(w) else None
        gb = bias_grad(g) if _wants_grad(b) else None
        return gx, gw, gb

    return make_result(y, (x, w, b), backward, "ConvolutionBackward0")


def _conv_transpose_core(x: Any, w: Any, b: Any, geom: ConvGeometry, out_size: tuple[int, ...]) -> Tensor:
    xd, wd = as_array(x), as_array(w)
    bd = None if b is None else as_array(b)
    in_size = xd.shape[2:]
    extra = geom.transposed_input_padding(in_size, out_size)
    xe = pad_array(xd, extra) if any(hi for _, hi in extra) else xd
    ranges = Ranges()  # as in _conv_core
    y = plan.grad_input(xe, wd, geom, out_size, bias=bd, ranges=ranges)
    crop = (slice(None), slice(None)) + tuple(slice(0, n) for n in in_size)

    def backward(g: np.ndarray) -> tuple[Any, Any, Any]:
        step = ranges.copy()
        gx = plan.forward(g, _conj(wd), geom, ranges=step)[crop] if _wants_grad(x) else None
        gw = plan.grad_weight(g, _conj(xe), geom, ranges=step) if _wants_grad(w) else None
        gb = bias_grad(g) if _wants_grad(b) else None
        return gx, gw, gb

    return make_result(y, (x, w, b), backward, "ConvolutionBackward0")


def convolution(x: Any, w: Any, b: Any, geom: ConvGeometry, padding_mode: str = "zeros") -> Tensor:
    """N-d cross-correlation of batched ``x (N, C, *in)`` with ``w (O, C/groups, *k)``."""
    pads = geom.pads(as_array(x).shape[2:])
    if padding_mode == "zeros":
        return _conv_core(x, w, b, geom.with_padding(pads))
    return _conv_core(pad(x, pads, PADDING_MODES[padding_mode]), w, b, geom.with_padding(0))


def conv_transpose(
    x: Any, w: Any, b: Any, geom: ConvGeometry, output_padding: tuple[int, ...] | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """N-d transposed convolution of ``x (N, C_in, *in)`` with ``w (C_in, C_out/groups, *k)``.

    Exactly the gradient with respect to the input of :func:`convolution` with the same
    geometry and padding mode, evaluated at ``x``; output size per
    :meth:`ConvGeometry.transposed_output_size`.
    """
    in_size = as_array(x).shape[2:]
    out_size = geom.transposed_output_size(in_size, output_padding)
    pads = geom.pads()
    if padding_mode == "zeros":
        return _conv_transpose_core(x, w, b, geom.with_padding(pads), out_size)
    full = geom.padded_size(out_size)
    y = _conv_transpose_core(x, w, None, geom.with_padding(0), full)
    y = pad_adjoint(y, pads, PADDING_MODES[padding_mode])
    return y if b is None else _add_channel_bias(y, b)


def _add_channel_bias(y: Tensor, b: Any) -> Tensor:
    """``y (N, O, *out) + b[o]``, differentiable, with the kernels' bias epilogue and gradient."""
    yd, bd = as_array(y), as_array(b)
    out = add_bias(np.array(yd, dtype=np.result_type(yd, bd), copy=True), bd)
    return make_result(out, (y, b), lambda g: (g, bias_grad(g) if _wants_grad(b) else None), "AddBackward0")
