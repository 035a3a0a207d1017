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

from ..checks import as_floating, batched, check_choice, check_same_dtype, must, shape_text
from ..geometry import ConvGeometry, check_padding_mode
from ..ops import local as _local_ops
from ..tensor import Tensor, as_array
from . import tables as _tables

__all__ = [
    "conv1d_local", "conv2d_local", "conv3d_local", "local_convolution",
    "conv1d_map", "conv2d_map", "conv3d_map", "conv_transpose1d_map", "conv_transpose2d_map",
    "conv_transpose3d_map", "map_convolution", "map_transposed_convolution", "check_map_method",
]


def _unbatch(y: Tensor, batched: bool) -> Tensor:
    return y if batched else y.squeeze(0)


def _local_weight_rank(w: np.ndarray, nd: int, op: str) -> None:
    if w.ndim != 2 * nd + 2:
        raise ValueError(must("weight", f"be {2 * nd + 2}-dimensional (*output_size, out_channels, "
                              "in_channels, *kernel_size)", f"weight of size {shape_text(w.shape)}", op))


# -- locally connected -----------------------------------------------------------------------
def local_convolution(input: Any, weight: Any, bias: Any, geometry: ConvGeometry, padding_mode: str = "zeros",
                      op_name: str = "conv_local") -> Tensor:
    """Validated locally connected convolution with a prebuilt geometry (the modules' entry point)."""
    check_padding_mode(padding_mode)
    input, weight = as_floating(input, "input"), as_floating(weight, "weight")
    x, w = as_array(input), as_array(weight)
    nd = geometry.ndim
    _local_weight_rank(w, nd, op_name)
    check_same_dtype(x.dtype, w.dtype, "weight", op_name)
    input, is_batched = batched(input, nd, op_name)
    x = as_array(input)
    out_size, (o, c), kernel = w.shape[:nd], w.shape[nd:nd + 2], w.shape[nd + 2:]
    if tuple(kernel) != geometry.kernel_size:
        raise ValueError(must("weight", f"have kernel_size={geometry.kernel_size}",
                              f"weight of size {shape_text(w.shape)}", op_name))
    if x.shape[1] != c:
        raise ValueError(must("input", f"have {c} channels (weight of size {shape_text(w.shape)})",
                              f"input of size {shape_text(x.shape)}", op_name))
    geometry.check_mode_padding(x.shape, padding_mode)
    expected = geometry.output_size(x.shape[2:])
    if tuple(out_size) != expected:
        raise ValueError(must("weight", f"be for the output size {expected} of the input of size "
                              f"{shape_text(x.shape)}", f"weight of size {shape_text(w.shape)}", op_name))
    if bias is not None:
        bias = as_floating(bias, "bias")
        b = as_array(bias)
        if b.shape != (o,) + expected:
            raise ValueError(must("bias", f"have shape (out_channels, *output_size) = {(o,) + expected}",
                                  f"bias of size {shape_text(b.shape)}", op_name))
        check_same_dtype(x.dtype, b.dtype, "bias", op_name)
    return _unbatch(_local_ops.local_convolution(input, weight, bias, geometry, padding_mode), is_batched)


def _local(nd: int, input: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
           padding_mode: str) -> Tensor:
    name = f"conv{nd}d_local"
    weight = as_floating(weight, "weight")
    w = as_array(weight)
    _local_weight_rank(w, nd, name)
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
def check_map_method(method: str) -> str:
    """``method`` if it is one of ``ops.local.MAP_METHODS``, else ValueError."""
    return check_choice(method, _local_ops.MAP_METHODS, "method")


def _map_arguments(input: Any, weight: Any, bias: Any, table: Any, out_channels: int | None, nd: int,
                   kernel_size: Sequence[int] | None,
                   op_name: str) -> tuple[Any, Any, Any, np.ndarray, int, bool]:
    input, weight = as_floating(input, "input"), as_floating(weight, "weight")
    x, w = as_array(input), as_array(weight)
    _map_weight_rank(w, nd, op_name)
    if kernel_size is not None and tuple(w.shape[1:]) != tuple(kernel_size):
        raise ValueError(must("weight", f"have kernel_size={tuple(kernel_size)}",
                              f"weight of size {shape_text(w.shape)}", op_name))
    check_same_dtype(x.dtype, w.dtype, "weight", op_name)
    input, is_batched = batched(input, nd, op_name)
    channels = as_array(input).shape[1]
    if bias is not None:
        bias = as_floating(bias, "bias")
        b = as_array(bias)
        if b.ndim != 1:
            raise ValueError(must("bias", "be 1-dimensional (out_channels,)",
                                  f"bias of size {shape_text(b.shape)}", op_name))
        check_same_dtype(x.dtype, b.dtype, "bias", op_name)
        if out_channels is None:
            out_channels = b.shape[0]
    table, in_needed, out_channels = _tables.check(table, None, out_channels)
    if in_needed > channels:
        raise ValueError(must("input", f"have at least {in_needed} channels (connection_table uses "
                              f"input plane {in_needed - 1})",
                              f"input of size {shape_text(as_array(input).shape)}", op_name))
    if w.shape[0] != len(table):
        raise ValueError(must("weight", f"hold one kernel per connection ({len(table)} connections)",
                              f"weight of size {shape_text(w.shape)}", op_name))
    if bias is not None and as_array(bias).shape != (out_channels,):
        raise ValueError(must("bias", f"have shape ({out_channels},)",
                              f"bias of size {shape_text(as_array(bias).shape)}", op_name))
    return input, weight, bias, table, out_channels, is_batched


def map_convolution(input: Any, weight: Any, connection_table: Any, bias: Any, geometry: ConvGeometry,
                    out_channels: int | None = None, padding_mode: str = "zeros", method: str = "auto",
                    op_name: str = "conv_map") -> Tensor:
    """Validated connection-table convolution with a prebuilt geometry (the modules' entry point)."""
    check_padding_mode(padding_mode)
    check_map_method(method)
    input, weight, bias, table, out_channels, is_batched = _map_arguments(
        input, weight, bias, connection_table, out_channels, geometry.ndim, geometry.kernel_size, op_name)
    geometry.check_mode_padding(as_array(input).shape, padding_mode)
    geometry.output_size(as_array(input).shape[2:])
    return _unbatch(_local_ops.map_convolution(input, weight, bias, table, out_channels, geometry,
                                               padding_mode, method), is_batched)


def map_transposed_convolution(input: Any, weight: Any, connection_table: Any, bias: Any,
                               geometry: ConvGeometry, output_padding: Sequence[int] | None = None,
                               out_channels: int | None = None, padding_mode: str = "zeros",
                               method: str = "auto", op_name: str = "conv_transpose_map") -> Tensor:
    """Validated connection-table transposed convolution with a prebuilt (transposed) geometry."""
    check_padding_mode(padding_mode)
    check_map_method(method)
    input, weight, bias, table, out_channels, is_batched = _map_arguments(
        input, weight, bias, connection_table, out_channels, geometry.ndim, geometry.kernel_size, op_name)
    if output_padding is not None:
        output_padding = geometry.check_output_padding(output_padding)
    shape = as_array(input).shape
    out_shape = (shape[0], out_channels) + geometry.transposed_output_size(shape[2:], output_padding)
    # the adjoint of the padded conv of an input of the output's size
    geometry.check_mode_padding(out_shape, padding_mode, "output")
    return _unbatch(_local_ops.map_conv_transpose(input, weight, bias, table, out_channels, geometry,
                                                  output_padding, padding_mode, method), is_batched)


def _map_weight_rank(w: np.ndarray, nd: int, op: str) -> None:
    if w.ndim != nd + 1:
        raise ValueError(must("weight", f"be {nd + 1}-dimensional (connections, *kernel_size)",
                              f"weight of size {shape_text(w.shape)}", op))


def _kernel_of(weight: Any, nd: int, op_name: str) -> tuple[int, ...]:
    w = as_array(as_floating(weight, "weight"))
    _map_weight_rank(w, nd, op_name)
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
