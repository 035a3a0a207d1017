"""Functional interface (``npconv.nn.functional``, imported as ``F``), with torch's signatures.

Convolutions: ``conv1d/2d/3d`` and ``conv_transpose1d/2d/3d`` exactly as torch, plus the N-d
forms ``conv`` and ``conv_transpose`` whose spatial rank is ``weight.ndim - 2``; these also take
``padding_mode`` and every padding form of :class:`~npconv.geometry.ConvGeometry`.
"""

from __future__ import annotations

import functools
import numbers
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import tracing
from ..checks import (
    INT64_MAX,
    as_floating,
    check_allocatable,
    check_conv_arguments,
    check_weight_rank,
    is_int,
    must,
    refuses_oversize,
    shape_text,
)
from ..geometry import PADDING_MODES, ConvGeometry, check_pad_widths, check_padding_mode, pad_mode
from ..kernels import plan as _plan
from ..kernels.pointwise import Activation
from ..ops import conv as _conv_ops
from ..ops.pad import pad as _pad_op
from ..tensor import Tensor, as_array
from .functional_extra import *  # noqa: F403
from .functional_extra import __all__ as _extra_all
from .functional_layers import *  # noqa: F403
from .functional_layers import __all__ as _layers_all
from .functional_local import *  # noqa: F403
from .functional_local import __all__ as _local_all
from .functional_more import *  # noqa: F403
from .functional_more import __all__ as _more_all

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv", "conv_transpose", "convolution", "transposed_convolution", "pad", "PADDING_MODES",
    *_local_all, *_layers_all, *_extra_all, *_more_all,
]


def _unbatch(y: Tensor, batched: bool) -> Tensor:
    return y if batched else y.squeeze(0)


def _spatial_rank(weight: Any, op: str) -> int:
    """``weight.ndim - 2``, the spatial rank of an N-d call, at least 1."""
    rank = as_array(weight).ndim
    if rank < 3:
        raise ValueError(must("weight", "have at least 3 dimensions (out, in/groups, *kernel)",
                              f"weight of size {shape_text(as_array(weight).shape)}", op))
    return rank - 2


def _check_convolution(input: Any, weight: Any, geometry: ConvGeometry, padding_mode: str, op: str) -> None:
    """The checks of a convolution that need the geometry (after :func:`check_conv_arguments`)."""
    w = as_array(weight)
    if tuple(w.shape[2:]) != geometry.kernel_size:
        raise ValueError(must("weight", f"have kernel_size={geometry.kernel_size}",
                              f"weight of size {shape_text(w.shape)}", op))
    shape = as_array(input).shape
    geometry.check_mode_padding(shape, padding_mode)
    out_shape = (shape[0], w.shape[0]) + geometry.output_size(shape[2:])
    check_allocatable(out_shape, w.itemsize, "output", op)


def _convolve(input: Any, weight: Any, bias: Any, batched: bool, geometry: ConvGeometry, padding_mode: str,
              op: str) -> Tensor:
    """The convolution of checked, batched tensors."""
    _check_convolution(input, weight, geometry, padding_mode, op)
    return _unbatch(_conv_ops.convolution(input, weight, bias, geometry, padding_mode), batched)


def _convolve_transposed(input: Any, weight: Any, bias: Any, batched: bool, geometry: ConvGeometry,
                         output_padding: Sequence[int] | None, padding_mode: str, op: str) -> Tensor:
    """The transposed convolution of checked, batched tensors."""
    w = as_array(weight)
    if tuple(w.shape[2:]) != geometry.kernel_size:
        raise ValueError(must("weight", f"have kernel_size={geometry.kernel_size}",
                              f"weight of size {shape_text(w.shape)}", op))
    if output_padding is not None:
        output_padding = geometry.check_output_padding(output_padding)
    shape = as_array(input).shape
    out_shape = (shape[0], w.shape[1] * geometry.groups) + geometry.transposed_output_size(shape[2:],
                                                                                            output_padding)
    check_allocatable(out_shape, w.itemsize, "output", op)
    # the transposed conv is the adjoint of the padded conv of an input of the output's size
    geometry.check_mode_padding(out_shape, padding_mode, "output")
    return _unbatch(_conv_ops.conv_transpose(input, weight, bias, geometry, output_padding, padding_mode),
                    batched)


#: Calls :func:`convolution` accepted: (id of the geometry, padding mode, op name, x/w/b shapes and
#: dtypes) -> (geometry, explicit zero-padded geometry or None, batched). Every check of a call is a
#: function of exactly these, so an equal call passes them again; a rejected call is never stored.
_accepted: dict[tuple, tuple[ConvGeometry, ConvGeometry | None, bool]] = {}
_ACCEPTED_SIZE = 1024
#: The activation modules' functional ops, for a fused activation in a call that records autograd.
_ACTIVATION_OPS = {"relu": lambda y, a: relu(y), "hardtanh": lambda y, a: hardtanh(y, a.lo, a.hi),  # noqa: F405
                   "silu": lambda y, a: silu(y)}  # noqa: F405


def _accepted_key(input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str,
                  op_name: str) -> tuple | None:
    """The key of :data:`_accepted` for Tensor operands (None for others: they take every check)."""
    if not (isinstance(input, Tensor) and isinstance(weight, Tensor)
            and (bias is None or isinstance(bias, Tensor))):
        return None
    x, w = input._array, weight._array
    b = None if bias is None else bias._array
    return (id(geometry), padding_mode, op_name, x.shape, x.dtype, w.shape, w.dtype,
            None if b is None else (b.shape, b.dtype))


def convolution(input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str = "zeros",
                op_name: str = "conv", activation: Activation | None = None, owner: Any = None) -> Tensor:
    """Checked convolution with a prebuilt geometry (the modules' entry point).

    ``activation`` (a :class:`~npconv.kernels.pointwise.Activation`): ``activation(conv(...))``, fused
    into the convolution's output pass when the call does not record autograd, else the activation
    op applied to the result (gradients as unfused). Repeated calls with equal shapes, dtypes and
    arguments skip re-checking (see :data:`_accepted`). ``owner`` (a module calling with its own
    parameters): its last call that did not record autograd is planned once
    (:func:`npconv.kernels.plan.prepare_forward`) and an equal call (the same input shape and dtype,
    weight and bias arrays, geometry, zero padding, activation) runs the plan directly while it holds.
    """
    if owner is None:
        return _convolution(input, weight, bias, geometry, padding_mode, op_name, activation)
    if not _conv_ops.records(input, weight, bias):
        y = _run_planned(owner, input, weight, bias, geometry, padding_mode, op_name, activation)
        if y is not None:
            return y
    y = _convolution(input, weight, bias, geometry, padding_mode, op_name, activation)
    _plan_for(owner, input, weight, bias, geometry, padding_mode, activation)
    return y


def _run_planned(owner: Any, input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str,
                 op_name: str, activation: Activation | None) -> Tensor | None:
    """:func:`convolution`'s result from ``owner``'s kept plan, for a call that does not record
    autograd (the caller checked), or None where the plan does not hold for this call."""
    planned = _planned.get(id(owner))
    if planned is None or planned[0]() is not owner or not isinstance(input, Tensor):
        return None
    x, (_, shape, dtype, w, b, planned_geometry, planned_activation, prepared) = input._array, planned
    if (x.shape == shape and x.dtype == dtype and getattr(weight, "_array", None) is w
            and (b is None if bias is None else getattr(bias, "_array", None) is b)
            and geometry is planned_geometry and padding_mode == "zeros"
            and activation == planned_activation):
        if prepared is None:  # the same call found no plan before
            return _convolution(input, weight, bias, geometry, padding_mode, op_name, activation)
        if prepared.valid():
            return Tensor(prepared.run(x))
    return None


def _kept_plan(owner: Any) -> tuple | None:
    """``(input shape, dtype, weight array, bias array, PreparedForward)`` of ``owner``'s kept plan (see
    :data:`_planned`), or None where it has none."""
    planned = _planned.get(id(owner))
    if planned is None or planned[0]() is not owner or planned[-1] is None:
        return None
    _, shape, dtype, w, b, _, _, prepared = planned
    return shape, dtype, w, b, prepared


def _kept_plan_for_batch(owner: Any, plan: tuple, n: int) -> tuple | None:
    """``owner``'s kept plan ``plan`` (:func:`_kept_plan`, still its kept one) made for a batch of ``n``
    images of the same size (the same weight, bias, geometry and activation), as :func:`_kept_plan`
    gives it, or None where it is not kept any more or that batch has no plan."""
    planned = _planned.get(id(owner))
    if planned is None or planned[0]() is not owner or planned[-1] is not plan[4]:
        return None
    _, shape, dtype, w, b, geometry, activation, _ = planned
    shape = (n, *shape[1:])
    prepared = _prepared(shape, dtype, w, b, geometry, activation)
    return None if prepared is None else (shape, dtype, w, b, prepared)


#: Per owner's id: ``(weak reference to the owner, input shape, dtype, weight array, bias array, geometry,
#: activation, PreparedForward or None)`` of its last call that did not record autograd
#: (:func:`convolution`'s ``owner``: a module, or a functional call's weight Tensor, whose ``==`` is
#: elementwise, hence ids and not a WeakKeyDictionary); None: that call has no plan (its algorithm does
#: not plan ahead or is non-local). The entry goes when its owner does.
_planned: dict[int, tuple] = {}
_PLANNED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _plan_for(owner: Any, input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str,
              activation: Activation | None) -> None:
    """Keep the plan of a convolution that just ran (checked) for ``owner``'s next call: batched
    Tensor operands of one float dtype, zero padding, no autograd."""
    old = _planned.pop(id(owner), None)
    if not (isinstance(input, Tensor) and isinstance(weight, Tensor)
            and (bias is None or isinstance(bias, Tensor)) and padding_mode == "zeros"
            and not _conv_ops.records(input, weight, bias)):
        return
    x, w = input._array, weight._array
    b = None if bias is None else bias._array
    if (x.ndim != geometry.ndim + 2 or x.dtype != w.dtype or x.dtype not in _PLANNED_DTYPES
            or (b is not None and b.dtype != w.dtype)):
        return
    prepared = _prepared(x.shape, x.dtype, w, b, geometry, activation)
    if old is None or old[0]() is not owner:
        old = (weakref.ref(owner, functools.partial(_forget_plan, id(owner))),)
    _planned[id(owner)] = (old[0], x.shape, x.dtype, w, b, geometry, activation, prepared)


def _prepared(shape: tuple[int, ...], dtype: np.dtype, w: np.ndarray, b: np.ndarray | None,
              geometry: ConvGeometry, activation: Activation | None) -> Any:
    """The planner's :class:`~npconv.kernels.common.PreparedForward` (or None) of inputs of ``shape``."""
    explicit = geometry.with_padding(geometry.pads(shape[2:]))
    return _plan.prepare_forward(shape, dtype, w, explicit, b, activation)


def _forget_plan(key: int, _: weakref.ref) -> None:
    """The owner of ``_planned[key]`` is gone (called before its id can be reused)."""
    _planned.pop(key, None)


def _convolution(input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str,
                 op_name: str, activation: Activation | None) -> Tensor:
    key = _accepted_key(input, weight, bias, geometry, padding_mode, op_name)
    hit = None if key is None else _accepted.get(key)
    if hit is None or hit[0] is not geometry:
        check_padding_mode(padding_mode)
        input, weight, bias, batched = check_conv_arguments(input, weight, bias, geometry.ndim,
                                                            geometry.groups, False, op_name)
        _check_convolution(input, weight, geometry, padding_mode, op_name)
        explicit = None
        if padding_mode == "zeros":
            explicit = geometry.with_padding(geometry.pads(as_array(input).shape[2:]))
        if key is not None:
            if len(_accepted) >= _ACCEPTED_SIZE:
                _accepted.clear()
            _accepted[key] = (geometry, explicit, batched)
    else:
        _, explicit, batched = hit
        if not batched:
            input = input.unsqueeze(0)
    if explicit is None:
        y = _conv_ops.convolution(input, weight, bias, geometry, padding_mode)
    elif activation is not None and not _conv_ops.records(input, weight, bias):
        return _unbatch(_conv_ops.convolution_explicit(input, weight, bias, explicit, activation), batched)
    else:
        y = _conv_ops.convolution_explicit(input, weight, bias, explicit)
    if activation is not None:
        y = _ACTIVATION_OPS[activation.kind](y, activation)
    return _unbatch(y, batched)


def transposed_convolution(input: Any, weight: Any, bias: Any, geometry: ConvGeometry,
                           output_padding: Sequence[int] | None = None, padding_mode: str = "zeros",
                           op_name: str = "conv_transpose") -> Tensor:
    """Checked transposed convolution with a prebuilt geometry; ``output_padding`` overrides the
    geometry's (the modules' ``output_size``)."""
    check_padding_mode(padding_mode)
    input, weight, bias, batched = check_conv_arguments(input, weight, bias, geometry.ndim, geometry.groups,
                                                        True, op_name)
    return _convolve_transposed(input, weight, bias, batched, geometry, output_padding, padding_mode, op_name)


#: Geometries of functional convolutions by their arguments (:func:`_geometry_key`): an equal call
#: takes the same geometry object, so :func:`convolution` finds its checks accepted and its plan kept.
_geometries: dict[tuple, ConvGeometry] = {}
_GEOMETRIES_SIZE = 1024


def _plain(value: Any) -> Any:
    """``value`` if it is an int, a str or a tuple of ints (types exact: ``True`` is not ``1``), else a
    marker that no key equals."""
    kind = type(value)
    if kind is int or kind is str or (kind is tuple and all(type(v) is int for v in value)):
        return value
    return _plain


def _geometry_key(nd: int, weight: Any, stride: Any, padding: Any, dilation: Any,
                  groups: Any) -> tuple | None:
    """The key of :data:`_geometries` of a call with a floating Tensor weight of rank ``nd + 2`` and
    plain arguments (:func:`_plain`); None for any other call (it takes every check)."""
    if not isinstance(weight, Tensor):
        return None
    shape = weight._array.shape
    if len(shape) != nd + 2 or weight._array.dtype.kind != "f":
        return None
    key = (nd, shape[2:], _plain(stride), _plain(padding), _plain(dilation), _plain(groups))
    return None if _plain in key else key


def _conv_op(nd: int) -> str:
    """The op name of an ``nd``-d convolution in messages (torch's ``conv2d``; ``conv`` past 3-d)."""
    return f"conv{nd}d" if nd <= 3 else "conv"


def _conv(nd: int | None, input: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
          groups: Any, padding_mode: str) -> Tensor:
    if nd is None and isinstance(weight, Tensor):
        nd = weight._array.ndim - 2 if weight._array.ndim >= 3 else None
    key = None if nd is None else _geometry_key(nd, weight, stride, padding, dilation, groups)
    geometry = None if key is None else _geometries.get(key)
    if geometry is not None:  # every argument check passed for this key: the modules' path
        return convolution(input, weight, bias, geometry, padding_mode, _conv_op(nd), owner=weight)
    check_padding_mode(padding_mode)
    weight = as_floating(weight, "weight")
    if nd is None:
        nd = _spatial_rank(weight, "conv")
    op = _conv_op(nd)
    check_weight_rank(as_array(weight).shape, nd, op)  # the arguments first, then the tensors (torch's order)
    geometry = ConvGeometry.create(as_array(weight).shape[2:], stride, padding, dilation, groups, ndim=nd)
    if key is not None:
        if len(_geometries) >= _GEOMETRIES_SIZE:
            _geometries.clear()
        _geometries[key] = geometry
        return convolution(input, weight, bias, geometry, padding_mode, op, owner=weight)
    input, weight, bias, batched = check_conv_arguments(input, weight, bias, nd, groups, False, op)
    return _convolve(input, weight, bias, batched, geometry, padding_mode, op)


def _conv_transpose(nd: int | None, input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                    output_padding: Any, groups: Any, dilation: Any, padding_mode: str) -> Tensor:
    check_padding_mode(padding_mode)
    weight = as_floating(weight, "weight")
    if nd is None:
        nd = _spatial_rank(weight, "conv_transpose")
    op = f"conv_transpose{nd}d" if nd <= 3 else "conv_transpose"
    check_weight_rank(as_array(weight).shape, nd, op)
    geometry = ConvGeometry.create(as_array(weight).shape[2:], stride, padding, dilation, groups,
                                   output_padding, ndim=nd, transposed=True)
    input, weight, bias, batched = check_conv_arguments(input, weight, bias, nd, groups, True, op)
    return _convolve_transposed(input, weight, bias, batched, geometry, None, padding_mode, op)


def conv(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
         groups: int = 1, *, padding_mode: str = "zeros") -> Tensor:
    """N-d cross-correlation; the spatial rank is ``weight.ndim - 2``.

    ``input (N, C, *in)`` or unbatched ``(C, *in)``; ``weight (O, C/groups, *k)``; ``bias (O,)``.
    ``padding``: int, tuple, per-side pairs, ``'valid'``, ``'same'`` (any stride, SAME_UPPER) or
    ``'same_lower'``. ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``.
    """
    return _conv(None, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv_transpose(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                   padding_mode: str = "zeros") -> Tensor:
    """N-d transposed convolution (the adjoint of :func:`conv`); rank is ``weight.ndim - 2``.

    ``input (N, C_in, *in)``; ``weight (C_in, C_out/groups, *k)``;
    ``out = (in - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1``.
    With ``padding_mode`` other than zeros it is the adjoint of the padded convolution.
    """
    return _conv_transpose(None, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           padding_mode)


def conv1d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """1-d cross-correlation, as ``torch.nn.functional.conv1d``."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, "zeros")


def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """2-d cross-correlation, as ``torch.nn.functional.conv2d``."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, "zeros")


def conv3d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """3-d cross-correlation, as ``torch.nn.functional.conv3d``."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, "zeros")


def conv_transpose1d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """1-d transposed convolution, as ``torch.nn.functional.conv_transpose1d``."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation, "zeros")


def conv_transpose2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """2-d transposed convolution, as ``torch.nn.functional.conv_transpose2d``."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation, "zeros")


def conv_transpose3d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """3-d transposed convolution, as ``torch.nn.functional.conv_transpose3d``."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation, "zeros")


@tracing.recorded
@refuses_oversize("pad")
def pad(input: Any, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad the last ``len(pad) // 2`` axes, as ``torch.nn.functional.pad``.

    ``pad = (left_last, right_last, left_second_last, right_second_last, ...)``. Modes:
    constant (negative pads crop), reflect, replicate, circular (any width), symmetric.
    """
    input = as_floating(input, "input") if not isinstance(input, Tensor) else input
    mode = pad_mode(mode)
    if (not isinstance(pad, Sequence) or isinstance(pad, str)
            or not all(is_int(p) for p in pad)):
        raise TypeError(must("pad", "be a sequence of ints", repr(pad)))
    if any(abs(p) > INT64_MAX for p in pad):
        raise ValueError(must("pad", "hold values of at most 2**63 - 1", repr(pad)))
    if value is not None and (not isinstance(value, numbers.Number) or isinstance(value, bool)):
        raise TypeError(must("value", "be a number (or None)", repr(value)))
    pad = [int(p) for p in pad]
    x = as_array(input)
    if len(pad) % 2 != 0:
        raise ValueError(f"Padding length must be divisible by 2, got pad={tuple(pad)}")
    if len(pad) // 2 > x.ndim:
        raise ValueError(f"Padding length should be less than or equal to two times the input dimension "
                         f"but got padding length {len(pad)} and input of dimension {x.ndim}")
    if value is not None and mode != "constant":
        raise ValueError(f'Padding mode "{mode}" doesn\'t take in value argument')
    n = len(pad) // 2
    pairs = [(pad[2 * (n - 1 - i)], pad[2 * (n - 1 - i) + 1]) for i in range(n)]
    sizes = x.shape[x.ndim - n:]
    for axis, ((lo, hi), size) in enumerate(zip(pairs, sizes, strict=True)):
        check_pad_widths(lo, hi, size, x.ndim - n + axis, x.shape, mode)
    return _pad_op(input, pairs, mode, 0.0 if value is None else value)
