"""Functional locally connected and connection-table convolutions (re-exported by ``nn.functional``).

Locally connected, ``conv{1,2,3}d_local(input, weight, bias=None, stride=1, padding=0, dilation=1)``:
``input (N, C, *in)`` or unbatched ``(C, *in)``, ``weight (*out, O, C, *k)`` (Lua Torch's layout),
``bias (O, *out)``; ``out`` must be the convolution output size of ``in``:
``y[n, o, p] = bias[o, p] + sum_{c, q} weight[p, o, c, q] * in_padded[n, c, p * stride + q * dilation]``.

Connection tables, ``conv{1,2,3}d_map`` / ``conv_transpose{1,2,3}d_map``: ``weight (K, *k)``,
``connection_table (K, 2)`` of ``(input_plane, output_plane)`` rows (see :mod:`npconv.nn.tables`),
``bias (out_channels,)``:
``y[:, o] = bias[o] + sum_{k: table[k, 1] = o} conv(x[:, table[k, 0]], weight[k])``
(``conv_transpose`` per connection for the transposed form).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geometry import ConvGeometry
from ..ops import local as _local_ops
from ..tensor import Tensor, as_array
from . import tables as _tables
from .functional import _floating, _shape_text, check_padding_mode

__all__ = [
    "conv1d_local", "conv2d_local", "conv3d_local", "local_convolution",
    "conv1d_map", "conv2d_map", "conv3d_map", "conv_transpose1d_map", "conv_transpose2d_map",
    "conv_transpose3d_map", "map_convolution", "map_transposed_convolution",
]


def _batched(input: Any, x: np.ndarray, nd: int, op_name: str) -> tuple[Any, bool]:
    if x.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {op_name}, "
                         f"but got input of size: {_shape_text(x.shape)}")
    if x.ndim == nd + 2:
        return input, True
    return (input.unsqueeze(0) if isinstance(input, Tensor) else x[None]), False


def _unbatch(y: Tensor, batched: bool) -> Tensor:
    return y if batched else y.squeeze(0)


def _same_dtype(x: np.ndarray, other: np.ndarray, name: str, op_name: str) -> None:
    if x.dtype != other.dtype:
        raise TypeError(f"{op_name}: input type ({x.dtype}) and {name} type ({other.dtype}) "
                        "should be the same")


# -- locally connected -----------------------------------------------------------------------
def local_convolution(input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str = "zeros",
                      op_name: str = "conv_local") -> Tensor:
    """Validated locally connected convolution with a prebuilt geometry (the modules' entry point)."""
    check_padding_mode(padding_mode)
    input, weight = _floating(input, "input"), _floating(weight, "weight")
    x, w = as_array(input), as_array(weight)
    nd = geometry.ndim
    if w.ndim != 2 * nd + 2:
        raise ValueError(f"{op_name}: weight must be {2 * nd + 2}-dimensional (*output_size, out_channels, "
                         f"in_channels, *kernel_size), got weight of size {_shape_text(w.shape)}")
    _same_dtype(x, w, "weight", op_name)
    input, batched = _batched(input, x, nd, op_name)
    x = as_array(input)
    out_size, (o, c), kernel = w.shape[:nd], w.shape[nd:nd + 2], w.shape[nd + 2:]
    if tuple(kernel) != geometry.kernel_size:
        raise ValueError(f"{op_name}: weight's kernel size {tuple(kernel)} differs from "
                         f"kernel_size={geometry.kernel_size}")
    if x.shape[1] != c:
        raise ValueError(f"{op_name}: weight of size {_shape_text(w.shape)} expects input with {c} channels, "
                         f"but got input of size {_shape_text(x.shape)}")
    expected = geometry.output_size(x.shape[2:])
    if tuple(out_size) != expected:
        raise ValueError(f"{op_name}: weight of size {_shape_text(w.shape)} is for output size "
                         f"{tuple(out_size)}, but input of size {_shape_text(x.shape)} gives output size "
                         f"{expected}")
    if bias is not None:
        bias = _floating(bias, "bias")
        b = as_array(bias)
        if b.shape != (o,) + expected:
            raise ValueError(f"{op_name}: bias must have shape (out_channels, *output_size) = "
                             f"{(o,) + expected}, got bias of size {_shape_text(b.shape)}")
        _same_dtype(x, b, "bias", op_name)
    return _unbatch(_local_ops.local_convolution(input, weight, bias, geometry, padding_mode), batched)


def _local(nd: int, input: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
           padding_mode: str) -> Tensor:
    name = f"conv{nd}d_local"
    w = as_array(_floating(weight, "weight"))
    if w.ndim != 2 * nd + 2:
        raise ValueError(f"{name}: weight must be {2 * nd + 2}-dimensional (*output_size, out_channels, "
                         f"in_channels, *kernel_size), got weight of size {_shape_text(w.shape)}")
    geometry = ConvGeometry.create(w.shape[nd + 2:], stride, padding, dilation, ndim=nd)
    return local_convolution(input, weight, bias, geometry, padding_mode, name)


def conv1d_local(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, *, padding_mode: str = "zeros") -> Tensor:
    """1-d locally connected convolution: ``weight (L_out, O, C, k)``, ``bias (O, L_out)``."""
    return _local(1, input, weight, bias, stride, padding, dilation, padding_mode)


def conv2d_local(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, *, padding_mode: str = "zeros") -> Tensor:
    """2-d locally connected convolution: ``weight (H_out, W_out, O, C, kH, kW)``, ``bias (O, H_out, W_out)``.
    """
    return _local(2, input, weight, bias, stride, padding, dilation, padding_mode)


def conv3d_local(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, *, padding_mode: str = "zeros") -> Tensor:
    """3-d locally connected convolution: ``weight (D_out, H_out, W_out, O, C, *k)``, ``bias (O, *out)``."""
    return _local(3, input, weight, bias, stride, padding, dilation, padding_mode)


# -- connection tables -----------------------------------------------------------------------
def _check_method(method: str) -> None:
    if method not in _local_ops.MAP_METHODS:
        raise ValueError(f"method must be one of {_local_ops.MAP_METHODS}, got method={method!r}")


def _map_arguments(input: Any, weight: Any, bias: Any, table: Any, out_channels: int | None, nd: int,
                   kernel_size: Sequence[int] | None,
                   op_name: str) -> tuple[Any, Any, Any, np.ndarray, int, bool]:
    input, weight = _floating(input, "input"), _floating(weight, "weight")
    x, w = as_array(input), as_array(weight)
    if w.ndim != nd + 1:
        raise ValueError(f"{op_name}: weight must be {nd + 1}-dimensional (connections, *kernel_size), "
                         f"got weight of size {_shape_text(w.shape)}")
    if kernel_size is not None and tuple(w.shape[1:]) != tuple(kernel_size):
        raise ValueError(f"{op_name}: weight's kernel size {tuple(w.shape[1:])} differs from "
                         f"kernel_size={tuple(kernel_size)}")
    _same_dtype(x, w, "weight", op_name)
    input, batched = _batched(input, x, nd, op_name)
    channels = as_array(input).shape[1]
    if bias is not None:
        bias = _floating(bias, "bias")
        b = as_array(bias)
        if b.ndim != 1:
            raise ValueError(f"{op_name}: bias must be 1-dimensional (out_channels,), got bias of size "
                             f"{_shape_text(b.shape)}")
        _same_dtype(x, b, "bias", op_name)
        if out_channels is None:
            out_channels = b.shape[0]
    table, in_needed, out_channels = _tables.check(table, None, out_channels)
    if in_needed > channels:
        raise ValueError(f"{op_name}: connection_table uses input plane {in_needed - 1}, but the input of "
                         f"size {_shape_text(as_array(input).shape)} has {channels} channels")
    if w.shape[0] != len(table):
        raise ValueError(f"{op_name}: weight must hold one kernel per connection: {len(table)} connections, "
                         f"got weight of size {_shape_text(w.shape)}")
    if bias is not None and as_array(bias).shape != (out_channels,):
        raise ValueError(f"{op_name}: bias must have shape ({out_channels},), got bias of size "
                         f"{_shape_text(as_array(bias).shape)}")
    return input, weight, bias, table, out_channels, batched


def map_convolution(input: Any, weight: Any, connection_table: Any, bias: Any, geometry: ConvGeometry,
                    out_channels: int | None = None, padding_mode: str = "zeros", method: str = "auto",
                    op_name: str = "conv_map") -> Tensor:
    """Validated connection-table convolution with a prebuilt geometry (the modules' entry point)."""
    check_padding_mode(padding_mode)
    _check_method(method)
    input, weight, bias, table, out_channels, batched = _map_arguments(
        input, weight, bias, connection_table, out_channels, geometry.ndim, geometry.kernel_size, op_name)
    return _unbatch(_local_ops.map_convolution(input, weight, bias, table, out_channels, geometry,
                                               padding_mode, method), batched)


def map_transposed_convolution(input: Any, weight: Any, connection_table: Any, bias: Any,
                               geometry: ConvGeometry, output_padding: Sequence[int] | None = None,
                               out_channels: int | None = None, padding_mode: str = "zeros",
                               method: str = "auto", op_name: str = "conv_transpose_map") -> Tensor:
    """Validated connection-table transposed convolution with a prebuilt (transposed) geometry."""
    check_padding_mode(padding_mode)
    _check_method(method)
    input, weight, bias, table, out_channels, batched = _map_arguments(
        input, weight, bias, connection_table, out_channels, geometry.ndim, geometry.kernel_size, op_name)
    if output_padding is not None:
        output_padding = tuple(output_padding)
    return _unbatch(_local_ops.map_conv_transpose(input, weight, bias, table, out_channels, geometry,
                                                  output_padding, padding_mode, method), batched)


def _kernel_of(weight: Any, nd: int, op_name: str) -> tuple[int, ...]:
    w = as_array(_floating(weight, "weight"))
    if w.ndim != nd + 1:
        raise ValueError(f"{op_name}: weight must be {nd + 1}-dimensional (connections, *kernel_size), "
                         f"got weight of size {_shape_text(w.shape)}")
    return tuple(w.shape[1:])


def _map(nd: int, input: Any, weight: Any, connection_table: Any, bias: Any, stride: Any, padding: Any,
         dilation: Any, out_channels: int | None, padding_mode: str, method: str) -> Tensor:
    name = f"conv{nd}d_map"
    geometry = ConvGeometry.create(_kernel_of(weight, nd, name), stride, padding, dilation, ndim=nd)
    return map_convolution(input, weight, connection_table, bias, geometry, out_channels, padding_mode,
                           method, name)


def _map_transpose(nd: int, input: Any, weight: Any, connection_table: Any, bias: Any, stride: Any,
                   padding: Any, output_padding: Any, dilation: Any, out_channels: int | None,
                   padding_mode: str, method: str) -> Tensor:
    name = f"conv_transpose{nd}d_map"
    geometry = ConvGeometry.create(_kernel_of(weight, nd, name), stride, padding, dilation, 1, output_padding,
                                   ndim=nd, transposed=True)
    return map_transposed_convolution(input, weight, connection_table, bias, geometry, None, out_channels,
                                      padding_mode, method, name)


def conv1d_map(input: Any, weight: Any, connection_table: Any, bias: Any = None, stride: Any = 1,
               padding: Any = 0, dilation: Any = 1, *, out_channels: int | None = None,
               padding_mode: str = "zeros", method: str = "auto") -> Tensor:
    """1-d connection-table convolution: ``weight (K, k)``, ``connection_table (K, 2)``."""
    return _map(1, input, weight, connection_table, bias, stride, padding, dilation, out_channels,
                padding_mode, method)


def conv2d_map(input: Any, weight: Any, connection_table: Any, bias: Any = None, stride: Any = 1,
               padding: Any = 0, dilation: Any = 1, *, out_channels: int | None = None,
               padding_mode: str = "zeros", method: str = "auto") -> Tensor:
    """2-d connection-table convolution: ``weight (K, kH, kW)``, ``connection_table (K, 2)``.

    ``out_channels`` defaults to ``len(bias)``, else the largest output plane + 1. ``method``:
    ``'auto'``, ``'dense'`` (masked dense weight) or ``'sparse'`` (gather, depthwise, segment sum).
    """
    return _map(2, input, weight, connection_table, bias, stride, padding, dilation, out_channels,
                padding_mode, method)


def conv3d_map(input: Any, weight: Any, connection_table: Any, bias: Any = None, stride: Any = 1,
               padding: Any = 0, dilation: Any = 1, *, out_channels: int | None = None,
               padding_mode: str = "zeros", method: str = "auto") -> Tensor:
    """3-d connection-table convolution: ``weight (K, kD, kH, kW)``, ``connection_table (K, 2)``."""
    return _map(3, input, weight, connection_table, bias, stride, padding, dilation, out_channels,
                padding_mode, method)


def conv_transpose1d_map(input: Any, weight: Any, connection_table: Any, bias: Any = None, stride: Any = 1,
                         padding: Any = 0, output_padding: Any = 0, dilation: Any = 1, *,
                         out_channels: int | None = None, padding_mode: str = "zeros",
                         method: str = "auto") -> Tensor:
    """1-d connection-table transposed convolution: ``weight (K, k)``."""
    return _map_transpose(1, input, weight, connection_table, bias, stride, padding, output_padding, dilation,
                          out_channels, padding_mode, method)


def conv_transpose2d_map(input: Any, weight: Any, connection_table: Any, bias: Any = None, stride: Any = 1,
                         padding: Any = 0, output_padding: Any = 0, dilation: Any = 1, *,
                         out_channels: int | None = None, padding_mode: str = "zeros",
                         method: str = "auto") -> Tensor:
    """2-d connection-table transposed convolution: ``weight (K, kH, kW)``.

    Output size as ``conv_transpose2d``; with ``padding_mode`` other than zeros, the adjoint of
    the padded :func:`conv2d_map` with the table's columns swapped.
    """
    return _map_transpose(2, input, weight, connection_table, bias, stride, padding, output_padding, dilation,
                          out_channels, padding_mode, method)


def conv_transpose3d_map(input: Any, weight: Any, connection_table: Any, bias: Any = None, stride: Any = 1,
                         padding: Any = 0, output_padding: Any = 0, dilation: Any = 1, *,
                         out_channels: int | None = None, padding_mode: str = "zeros",
                         method: str = "auto") -> Tensor:
    """3-d connection-table transposed convolution: ``weight (K, kD, kH, kW)``."""
    return _map_transpose(3, input, weight, connection_table, bias, stride, padding, output_padding, dilation,
                          out_channels, padding_mode, method)
