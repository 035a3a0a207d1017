"""Functional interface (``npconv.nn.functional``, imported as ``F``), with torch's signatures.

Convolutions: ``conv1d/2d/3d`` and ``conv_transpose1d/2d/3d`` exactly as torch, plus the N-d
forms ``conv`` and ``conv_transpose`` whose spatial rank is ``weight.ndim - 2``; these also take
``padding_mode`` and every padding form of :class:`~npconv.geometry.ConvGeometry`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geometry import ConvGeometry
from ..kernels.padding import PAD_MODES
from ..ops import conv as _conv_ops
from ..ops.pad import pad as _pad_op
from ..tensor import Tensor, as_array

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv", "conv_transpose", "pad", "PADDING_MODES",
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in shape) + "]"


def _floating(value: Any, name: str) -> Any:
    """``value`` as a Tensor or ndarray of floating/complex dtype, or a TypeError naming it."""
    if not isinstance(value, (Tensor, np.ndarray)):
        if isinstance(value, (list, tuple, int, float, complex)):
            value = np.asarray(value)
        else:
            raise TypeError(f"{name} must be a Tensor or ndarray, got {type(value).__name__}")
    dtype = as_array(value).dtype
    if dtype.kind not in "fc":
        raise TypeError(f"{name} must have a floating point or complex dtype, got {dtype}")
    return value


def check_conv_arguments(input: Any, weight: Any, bias: Any, ndim: int, groups: int,
                         transposed: bool, op_name: str) -> tuple[Any, Any, Any, bool]:
    """Validate the tensors of a convolution call the way torch does; return them batched.

    Returns ``(input, weight, bias, batched)`` where an unbatched input got a leading batch axis.
    """
    input = _floating(input, "input")
    weight = _floating(weight, "weight")
    x, w = as_array(input), as_array(weight)
    if w.ndim != ndim + 2:
        raise ValueError(
            f"{op_name}: weight must be {ndim + 2}-dimensional (out_channels, in_channels/groups, "
            f"*kernel_size), got weight of size {_shape_text(w.shape)}"
        )
    if x.ndim not in (ndim + 1, ndim + 2):
        raise ValueError(
            f"Expected {ndim + 1}D (unbatched) or {ndim + 2}D (batched) input to {op_name}, "
            f"but got input of size: {_shape_text(x.shape)}"
        )
    if x.dtype != w.dtype:
        raise TypeError(
            f"{op_name}: input type ({x.dtype}) and weight type ({w.dtype}) should be the same"
        )
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op_name}: groups must be a positive integer, got {groups!r}")
    if any(k < 1 for k in w.shape[2:]):
        raise ValueError(f"{op_name}: every kernel size must be positive, got weight of size "
                         f"{_shape_text(w.shape)}")
    batched = x.ndim == ndim + 2
    channels = x.shape[1] if batched else x.shape[0]
    batched_shape = x.shape if batched else (1,) + x.shape
    if transposed:
        if channels != w.shape[0]:
            raise ValueError(
                f"Given transposed=1, weight of size {_shape_text(w.shape)}, expected input"
                f"{_shape_text(batched_shape)} to have {w.shape[0]} channels, "
                f"but got {channels} channels instead"
            )
        if w.shape[0] % groups != 0:
            raise ValueError(
                f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                f"but got weight of size {_shape_text(w.shape)} instead"
            )
        out_channels = w.shape[1] * groups
    else:
        if w.shape[0] % groups != 0:
            raise ValueError(
                f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                f"but got weight of size {_shape_text(w.shape)} instead"
            )
        if channels != w.shape[1] * groups:
            raise ValueError(
                f"Given groups={groups}, weight of size {_shape_text(w.shape)}, expected input"
                f"{_shape_text(batched_shape)} to have {w.shape[1] * groups} channels, "
                f"but got {channels} channels instead"
            )
        out_channels = w.shape[0]
    if bias is not None:
        bias = _floating(bias, "bias")
        b = as_array(bias)
        if b.shape != (out_channels,):
            raise ValueError(
                f"Given weight of size {_shape_text(w.shape)}, expected bias to be 1-dimensional with "
                f"{out_channels} elements, but got bias of size {_shape_text(b.shape)} instead"
            )
        if b.dtype != x.dtype:
            raise TypeError(f"{op_name}: input type ({x.dtype}) and bias type ({b.dtype}) should be the same")
    if not batched:
        input = input.unsqueeze(0) if isinstance(input, Tensor) else x[None]
    return input, weight, bias, batched


def _unbatch(y: Tensor, batched: bool) -> Tensor:
    return y if batched else y.squeeze(0)


def check_padding_mode(padding_mode: str) -> None:
    """ValueError unless ``padding_mode`` is one of :data:`PADDING_MODES`."""
    if padding_mode not in PADDING_MODES:
        modes = "{" + ", ".join(repr(m) for m in PADDING_MODES) + "}"
        raise ValueError(f"padding_mode must be one of {modes}, but got padding_mode='{padding_mode}'")


def convolution(input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str = "zeros",
                op_name: str = "conv") -> Tensor:
    """Validated convolution with a prebuilt geometry (the modules' entry point)."""
    input, weight, bias, batched = check_conv_arguments(
        input, weight, bias, geometry.ndim, geometry.groups, False, op_name)
    if tuple(as_array(weight).shape[2:]) != geometry.kernel_size:
        raise ValueError(f"{op_name}: weight's kernel size {as_array(weight).shape[2:]} differs from "
                         f"kernel_size={geometry.kernel_size}")
    if padding_mode != "zeros":
        shape = as_array(input).shape
        for i, ((lo, hi), size) in enumerate(zip(geometry.pads(shape[2:]), shape[2:], strict=True)):
            check_pad_widths(lo, hi, size, i + 2, shape, padding_mode)
    return _unbatch(_conv_ops.convolution(input, weight, bias, geometry, padding_mode), batched)


def transposed_convolution(input: Any, weight: Any, bias: Any, geometry: ConvGeometry,
                           output_padding: Sequence[int] | None = None, padding_mode: str = "zeros",
                           op_name: str = "conv_transpose") -> Tensor:
    """Validated transposed convolution with a prebuilt geometry."""
    input, weight, bias, batched = check_conv_arguments(
        input, weight, bias, geometry.ndim, geometry.groups, True, op_name)
    if output_padding is not None:
        output_padding = tuple(output_padding)
        for i, (op, s, d) in enumerate(zip(output_padding, geometry.stride, geometry.dilation, strict=True)):
            if op < 0 or (op >= s and op >= d):
                raise ValueError(
                    f"output padding must be smaller than either stride or dilation, got "
                    f"output_padding={output_padding}, stride={geometry.stride}, "
                    f"dilation={geometry.dilation} (dimension {i})"
                )
    if padding_mode != "zeros":
        # the transposed conv is the adjoint of the padded conv of an input of the output's size
        shape = as_array(input).shape
        out_size = geometry.transposed_output_size(shape[2:], output_padding)
        out_shape = (shape[0], as_array(weight).shape[1] * geometry.groups) + out_size
        for i, ((lo, hi), size) in enumerate(zip(geometry.pads(), out_size, strict=True)):
            check_pad_widths(lo, hi, size, i + 2, out_shape, padding_mode, "output")
    return _unbatch(
        _conv_ops.conv_transpose(input, weight, bias, geometry, output_padding, padding_mode), batched)


def _weight_ndim(weight: Any, name: str) -> int:
    w = as_array(_floating(weight, "weight"))
    if w.ndim < 3:
        raise ValueError(f"{name}: weight must have at least 3 dimensions (out, in/groups, *kernel), "
                         f"got weight of size {_shape_text(w.shape)}")
    return w.ndim - 2


def conv(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
         groups: int = 1, *, padding_mode: str = "zeros") -> Tensor:
    """N-d cross-correlation; the spatial rank is ``weight.ndim - 2``.

    ``input (N, C, *in)`` or unbatched ``(C, *in)``; ``weight (O, C/groups, *k)``; ``bias (O,)``.
    ``padding``: int, tuple, per-side pairs, ``'valid'``, ``'same'`` (any stride, SAME_UPPER) or
    ``'same_lower'``. ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``.
    """
    check_padding_mode(padding_mode)
    nd = _weight_ndim(weight, "conv")
    geom = ConvGeometry.create(as_array(weight).shape[2:], stride, padding, dilation, groups, ndim=nd)
    return convolution(input, weight, bias, geom, padding_mode, f"conv{nd}d" if nd <= 3 else "conv")


def conv_transpose(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                   padding_mode: str = "zeros") -> Tensor:
    """N-d transposed convolution (the adjoint of :func:`conv`); rank is ``weight.ndim - 2``.

    ``input (N, C_in, *in)``; ``weight (C_in, C_out/groups, *k)``;
    ``out = (in - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1``.
    With ``padding_mode`` other than zeros it is the adjoint of the padded convolution.
    """
    check_padding_mode(padding_mode)
    nd = _weight_ndim(weight, "conv_transpose")
    geom = ConvGeometry.create(as_array(weight).shape[2:], stride, padding, dilation, groups,
                               output_padding, ndim=nd, transposed=True)
    return transposed_convolution(input, weight, bias, geom, None, padding_mode,
                                  f"conv_transpose{nd}d" if nd <= 3 else "conv_transpose")


def _fixed_rank(nd: int, weight: Any, name: str) -> None:
    w = as_array(_floating(weight, "weight"))
    if w.ndim != nd + 2:
        raise ValueError(f"{name}: weight must be {nd + 2}-dimensional, "
                         f"got weight of size {_shape_text(w.shape)}")


def conv1d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """1-d cross-correlation, as ``torch.nn.functional.conv1d``."""
    _fixed_rank(1, weight, "conv1d")
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """2-d cross-correlation, as ``torch.nn.functional.conv2d``."""
    _fixed_rank(2, weight, "conv2d")
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv3d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """3-d cross-correlation, as ``torch.nn.functional.conv3d``."""
    _fixed_rank(3, weight, "conv3d")
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """1-d transposed convolution, as ``torch.nn.functional.conv_transpose1d``."""
    _fixed_rank(1, weight, "conv_transpose1d")
    return conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """2-d transposed convolution, as ``torch.nn.functional.conv_transpose2d``."""
    _fixed_rank(2, weight, "conv_transpose2d")
    return conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """3-d transposed convolution, as ``torch.nn.functional.conv_transpose3d``."""
    _fixed_rank(3, weight, "conv_transpose3d")
    return conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)


_TORCH_PAD_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "replicate",
                   "circular": "circular", "symmetric": "symmetric", "zeros": "constant"}


def check_pad_widths(lo: int, hi: int, size: int, dim: int, shape: Sequence[int], mode: str,
                     tensor_name: str = "input") -> None:
    """ValueError unless padding dimension ``dim`` (of ``size``) by ``(lo, hi)`` in ``mode`` is valid.

    Negative pads crop (constant/circular crop first, the other modes pad first, as torch).
    ``reflect`` needs ``lo, hi < size`` (torch's rule); circular and symmetric may be wider than
    the input (wrapping/mirroring more than once).
    """
    where = f"at dimension {dim} of {tensor_name} {_shape_text(shape)}"
    if mode == "reflect" and ((lo > 0 and lo >= size) or (hi > 0 and hi >= size)):
        raise ValueError(f"Padding size should be less than the corresponding input dimension, but got: "
                         f"padding ({lo}, {hi}) {where}")
    cropped = size - max(-lo, 0) - max(-hi, 0)
    if mode in ("constant", "circular") and cropped < 0:
        raise ValueError(f"negative padding ({lo}, {hi}) crops more than the size {size} {where}")
    if mode != "constant" and (lo > 0 or hi > 0) and (cropped if mode == "circular" else size) <= 0:
        raise ValueError(f"{mode} padding ({lo}, {hi}) of an empty dimension {where}")
    if size + lo + hi < 0:
        raise ValueError(f"The input size {size}, plus negative padding {lo} and {hi} resulted in a "
                         f"negative output size, which is invalid. Check dimension {dim} of your input.")


def pad(input: Any, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad the last ``len(pad) // 2`` axes, as ``torch.nn.functional.pad``.

    ``pad = (left_last, right_last, left_second_last, right_second_last, ...)``. Modes:
    constant (negative pads crop), reflect, replicate, circular (any width), symmetric.
    """
    input = _floating(input, "input") if not isinstance(input, Tensor) else input
    if not isinstance(mode, str) or mode not in _TORCH_PAD_MODE:
        raise ValueError(f"Unsupported padding mode: {mode!r}; expected one of {list(PAD_MODES)}")
    mode = _TORCH_PAD_MODE[mode]
    if (not isinstance(pad, Sequence) or isinstance(pad, str)
            or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pad)):
        raise TypeError(f"pad must be a sequence of ints, got {pad!r}")
    if value is not None and (not isinstance(value, numbers.Number) or isinstance(value, bool)):
        raise TypeError(f"value must be a number (or None), got {value!r}")
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

from ._functional_local import (  # noqa: E402
    conv1d_local,
    conv1d_map,
    conv2d_local,
    conv2d_map,
    conv3d_local,
    conv3d_map,
    conv_transpose1d_map,
    conv_transpose2d_map,
    conv_transpose3d_map,
)

__all__ += ["conv1d_local", "conv2d_local", "conv3d_local", "conv1d_map", "conv2d_map", "conv3d_map",
            "conv_transpose1d_map", "conv_transpose2d_map", "conv_transpose3d_map"]
from ._functional_layers import *  # noqa: E402,F401,F403
from ._functional_layers import __all__ as _layers_all  # noqa: E402

__all__ += _layers_all
