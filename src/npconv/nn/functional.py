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

# -- issue 13: the rest of torch.nn.functional a conv-net program touches --------------------------
import warnings  # noqa: E402

from ..ops import activation as _act_ops  # noqa: E402
from ..ops import loss as _loss_ops  # noqa: E402
from ..ops import shuffle as _shuffle_ops  # noqa: E402
from ..random import default_generator as _default_generator  # noqa: E402
from ._functional_layers import (  # noqa: E402
    _check_probability,
    _flag,
    _reduce_elements,
    _reduction,
    _tensor,
)

__all__ += [
    "relu6", "hardtanh", "hardswish", "hardsigmoid", "elu", "softplus", "mish", "glu", "prelu",
    "dropout1d", "dropout2d", "dropout3d", "pixel_shuffle", "pixel_unshuffle",
    "binary_cross_entropy", "smooth_l1_loss", "huber_loss", "kl_div",
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
    return _act_ops.hardtanh(_tensor(input, "input"), lo, hi)


def relu6(input: Any, inplace: bool = False) -> Tensor:
    """``min(max(input, 0), 6)`` (``hardtanh(input, 0, 6)``)."""
    return _act_ops.hardtanh(_tensor(input, "input"), 0.0, 6.0)


def hardswish(input: Any, inplace: bool = False) -> Tensor:
    """``x * relu6(x + 3) / 6``."""
    return _act_ops.hardswish(_tensor(input, "input"))


def hardsigmoid(input: Any, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6``."""
    return _act_ops.hardsigmoid(_tensor(input, "input"))


def elu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` where positive, else ``alpha * (exp(x) - 1)``."""
    return _act_ops.elu(_tensor(input, "input"), _real(alpha, "alpha"))


def softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold``."""
    return _act_ops.softplus(_tensor(input, "input"), _real(beta, "beta"), _real(threshold, "threshold"))


def mish(input: Any, inplace: bool = False) -> Tensor:
    """``x * tanh(softplus(x))``."""
    return _act_ops.mish(_tensor(input, "input"))


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
    x = _tensor(input, "input")
    if x.ndim == 0:
        raise ValueError("glu does not support scalars because halving size must be even")
    axis = _dim_index(dim, x.ndim)
    if x.shape[axis] % 2:
        raise ValueError(f"Halving dimension must be even, but dimension {axis} is size {x.shape[axis]}")
    return _act_ops.glu(x, axis)


def prelu(input: Any, weight: Any) -> Tensor:
    """``x`` where positive, else ``weight * x``; ``weight`` is one value or one per channel (axis 1)."""
    x = _tensor(input, "input")
    w = _tensor(weight, "weight")
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
def _feature_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero whole channels ``x[n, c]`` of batched ``x (N, C, *)`` with probability ``p``."""
    if not training or p == 0:
        return x
    data = as_array(x)
    if p >= 1:
        scale = np.zeros((), dtype=data.dtype)
    else:
        keep = _default_generator().random(data.shape[:2] + (1,) * (data.ndim - 2)) >= p
        scale = keep.astype(data.dtype) * data.dtype.type(1 / (1 - p))
    return x * Tensor(scale)


def dropout1d(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, L)`` or ``(C, L)`` with probability ``p``; scale the rest."""
    p = _check_probability(p)
    x = _tensor(input, "input")
    if x.ndim not in (2, 3):
        raise ValueError(f"dropout1d: Expected 2D or 3D input, but received a {x.ndim}D input. Note that "
                         "dropout1d exists to provide channel-wise dropout on inputs with 1 spatial "
                         "dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
                         "inputs).")
    if x.ndim == 2:
        return _feature_dropout(x.unsqueeze(0), p, training).squeeze(0)
    return _feature_dropout(x, p, training)


def _check_feature_rank(x: Tensor) -> None:
    if x.ndim < 2:
        raise ValueError(f"Feature dropout requires at least 2 dimensions in the input, got input of size "
                         f"{_shape_text(x.shape)}")


def dropout2d(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, H, W)`` with probability ``p``.

    As torch, a 3-D input is read as ``(N, C, L)`` (1-D channel dropout, with a warning).
    """
    p = _check_probability(p)
    x = _tensor(input, "input")
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
    return _feature_dropout(x, p, training)


def dropout3d(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` with probability ``p``."""
    p = _check_probability(p)
    x = _tensor(input, "input")
    if x.ndim not in (4, 5):
        warnings.warn(f"dropout3d: Received a {x.ndim}-D input to dropout3d, which is deprecated and will "
                      "result in an error in a future release. To retain the behavior and silence this "
                      "warning, please use dropout instead. Note that dropout3d exists to provide "
                      "channel-wise dropout on inputs with 3 spatial dimensions, a channel dimension, and an "
                      "optional batch dimension (i.e. 4D or 5D inputs).", UserWarning, stacklevel=2)
    if x.ndim == 4:
        return _feature_dropout(x.unsqueeze(0), p, training).squeeze(0)
    _check_feature_rank(x)
    return _feature_dropout(x, p, training)


# -- pixel shuffle --------------------------------------------------------------------------------
def _shuffle_factor(value: Any, name: str, op: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{op} expects a positive {name}, but got {value}")
    return int(value)


def _shuffle_input(input: Any, op: str) -> Tensor:
    x = _tensor(input, "input", floating=False)
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
        warnings.warn(f"Using a target size ({_shape_text(t.shape)}) that is different to the input size "
                      f"({_shape_text(x.shape)}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", UserWarning, stacklevel=3)
        try:
            np.broadcast_shapes(x.shape, t.shape)
        except ValueError as error:
            raise ValueError(f"input of size {_shape_text(x.shape)} and target of size "
                             f"{_shape_text(t.shape)} cannot be broadcast together") from error


def _same_dtype(x: Tensor, other: Tensor, name: str, op: str) -> None:
    if other.dtype != x.dtype:
        raise TypeError(f"{op}: expected {name} dtype {x.dtype} (the input's), got {other.dtype}")


def binary_cross_entropy(input: Any, target: Any, weight: Any = None, size_average: Any = None,
                         reduce: Any = None, reduction: str = "mean") -> Tensor:
    """``-w * (t log x + (1 - t) log(1 - x))`` of probabilities ``input`` in [0, 1], each log
    clamped at -100; ``weight`` broadcasts to the input."""
    reduction = _reduction(size_average, reduce, reduction)
    x = _tensor(input, "input")
    t = _tensor(target, "target")
    if t.shape != x.shape:
        raise ValueError(f"Using a target size ({_shape_text(t.shape)}) that is different to the input size "
                         f"({_shape_text(x.shape)}) is deprecated. Please ensure they have the same size.")
    _same_dtype(x, t, "target", "binary_cross_entropy")
    w = None
    if weight is not None:
        w = _tensor(weight, "weight")
        _same_dtype(x, w, "weight", "binary_cross_entropy")
        try:
            shape = np.broadcast_shapes(t.shape, w.shape)
        except ValueError as error:
            raise ValueError(f"binary_cross_entropy: weight of size {_shape_text(w.shape)} "
                             f"does not broadcast to the target's size {_shape_text(t.shape)}") from error
        if shape != x.shape:
            raise ValueError(f"binary_cross_entropy: weight of size {_shape_text(w.shape)} "
                             f"does not broadcast to the input's size {_shape_text(x.shape)}")
        w = np.broadcast_to(as_array(w), shape)
    data = as_array(x)
    if ((data < 0) | (data > 1)).any():
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1")
    return _reduce_elements(_loss_ops.binary_cross_entropy(x, t, w), None, reduction)


def smooth_l1_loss(input: Any, target: Any, size_average: Any = None, reduce: Any = None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``)."""
    x, t = _tensor(input, "input"), _tensor(target, "target")
    _size_warning(x, t)
    reduction = _reduction(size_average, reduce, reduction)
    beta = _real(beta, "beta")
    if beta < 0:
        raise ValueError(f"smooth_l1_loss does not support negative values for beta, got beta={beta}")
    return _reduce_elements(_loss_ops.smooth_l1(x, t, beta), None, reduction)


def huber_loss(input: Any, target: Any, reduction: str = "mean", delta: float = 1.0,
               weight: Any = None) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``; ``weight`` (the input's
    shape) multiplies each element before the reduction (``'mean'`` is the plain mean)."""
    x, t = _tensor(input, "input"), _tensor(target, "target")
    _size_warning(x, t)
    reduction = _reduction(None, None, reduction)
    delta = _real(delta, "delta")
    if delta <= 0:
        raise ValueError(f"huber_loss does not support non-positive values for delta, got delta={delta}")
    elements = _loss_ops.huber(x, t, delta)
    if weight is not None:
        w = _tensor(weight, "weight")
        if w.shape != x.shape:
            raise ValueError(f"Weights and input must have the same size, got {_shape_text(w.shape)} and "
                             f"{_shape_text(x.shape)}.")
        elements = elements * w
    return _reduce_elements(elements, None, reduction)


def kl_div(input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """Pointwise KL divergence ``t * (log t - input)`` of log-probabilities ``input``
    (``exp(t) * (t - input)`` if ``log_target``). ``'batchmean'`` divides the sum by ``input.size(0)``."""
    if size_average is not None or reduce is not None:
        reduction = _reduction(size_average, reduce, "mean")
    else:
        if reduction == "mean":
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support "
                          "size.'batchmean' divides only by the batch size, and aligns with the KL div math "
                          "definition.'mean' will be changed to behave the same as 'batchmean' in the next "
                          "major release.", UserWarning, stacklevel=2)
        if reduction != "batchmean":
            reduction = _reduction(None, None, reduction)
    x, t = _tensor(input, "input"), _tensor(target, "target")
    try:
        np.broadcast_shapes(x.shape, t.shape)
    except ValueError as error:
        raise ValueError(f"kl_div: input of size {_shape_text(x.shape)} and target of size "
                         f"{_shape_text(t.shape)} cannot be broadcast together") from error
    elements = _loss_ops.kl_div(x, t, _flag(log_target, "log_target"))
    if reduction == "batchmean":
        total = elements.sum()
        return total / x.shape[0] if x.ndim else total
    return _reduce_elements(elements, None, reduction)
