"""Locally connected and connection-table convolution layers (Lua Torch's SpatialConvolutionLocal,
SpatialConvolutionMap and SpatialFullConvolutionMap, in 1, 2 and 3 spatial dimensions).

Thin shells over :mod:`npconv.nn.functional_local`; arguments are stored as the conv modules
store them (tuples; padding as a tuple, per-side pairs or a string) and turned into one
:class:`~npconv.geometry.ConvGeometry`.

* ``Conv{1,2,3}dLocal``: a separate filter at every output position; ``weight
  (*output_size, out_channels, in_channels, *kernel_size)``, ``bias (out_channels, *output_size)``,
  both ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``fan_in = in_channels * prod(kernel_size)``.
* ``Conv{1,2,3}dMap`` / ``ConvTranspose{1,2,3}dMap``: one kernel per row ``(input_plane,
  output_plane)`` of a connection table (:mod:`npconv.nn.tables`); ``weight (K, *kernel_size)``,
  ``bias (out_channels,)``; output plane ``o``'s kernels and bias ~ U(-b, b),
  ``b = 1/sqrt(prod(kernel_size) * fan_in(o))`` with ``fan_in(o)`` the rows feeding ``o``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...checks import check_int
from ...geometry import ConvGeometry, check_padding_mode, normalize_tuple
from ...tensor import Tensor, as_array, no_grad
from .. import functional_local as FL
from .. import init, tables
from ..parameter import Parameter
from .conv import _ConvNd, factory_dtype
from .module import Module

__all__ = [
    "Conv1dLocal", "Conv2dLocal", "Conv3dLocal", "Conv1dMap", "Conv2dMap", "Conv3dMap",
    "ConvTranspose1dMap", "ConvTranspose2dMap", "ConvTranspose3dMap",
]


class _GeometryMixin:
    """The cached :class:`ConvGeometry` of the stored attributes, rebuilt when one changes."""

    _num_spatial_dims: int
    transposed: bool = False

    def _geometry_key(self) -> tuple[Any, ...]:
        return (self.kernel_size, self.stride, self.padding, self.dilation,  # type: ignore[attr-defined]
                getattr(self, "output_padding", ()))

    @property
    def geometry(self) -> ConvGeometry:
        key = self._geometry_key()
        cached_key, geometry = self.__dict__.get("_geometry_cache", (None, None))
        if cached_key != key:
            geometry = ConvGeometry.create(self.kernel_size, self.stride, self.padding,  # type: ignore
                                           self.dilation, 1, getattr(self, "output_padding", 0),  # type: ignore
                                           ndim=self._num_spatial_dims, transposed=self.transposed)
            self.__dict__["_geometry_cache"] = (key, geometry)
        return geometry

    def _padding_repr(self) -> str:
        s = ""
        padding = self.padding  # type: ignore[attr-defined]
        if isinstance(padding, str) or padding != (0,) * len(padding):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):  # type: ignore[attr-defined]
            s += ", dilation={dilation}"
        if getattr(self, "output_padding", ()) not in ((), (0,) * self._num_spatial_dims):
            s += ", output_padding={output_padding}"
        if self.bias is None:  # type: ignore[attr-defined]
            s += ", bias=False"
        if self.padding_mode != "zeros":  # type: ignore[attr-defined]
            s += ", padding_mode={padding_mode}"
        return s


# -- locally connected -----------------------------------------------------------------------
class _ConvLocalNd(_GeometryMixin, Module):
    __constants__ = ["in_channels", "out_channels", "input_size", "output_size", "kernel_size", "stride",
                     "padding", "dilation", "padding_mode"]

    def __init__(self, in_channels: int, out_channels: int, input_size: Any, kernel_size: Any,
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        nd = self._num_spatial_dims
        in_channels = check_int(in_channels, "in_channels", 1)
        out_channels = check_int(out_channels, "out_channels", 1)
        check_padding_mode(padding_mode)
        param_dtype = factory_dtype(device, dtype)
        geometry = ConvGeometry.create(kernel_size, stride, padding, dilation, ndim=nd)
        input_size = normalize_tuple(input_size, nd, "input_size", minimum=1)
        geometry.check_mode_padding((1, in_channels) + input_size, padding_mode)
        output_size = geometry.output_size(input_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_size = input_size
        self.output_size = output_size
        self.kernel_size = geometry.kernel_size
        self.stride = geometry.stride
        self.padding = _ConvNd._stored_padding(geometry)
        self.dilation = geometry.dilation
        self.padding_mode = padding_mode
        self.weight = Parameter(np.empty(output_size + (out_channels, in_channels) + geometry.kernel_size,
                                         dtype=param_dtype))
        if bias:
            self.bias = Parameter(np.empty((out_channels,) + output_size, dtype=param_dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``fan_in = in_channels * prod(k)``."""
        bound = 1 / math.sqrt(self.in_channels * math.prod(self.kernel_size))
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Any) -> Tensor:
        nd = self._num_spatial_dims
        x = as_array(input)
        spatial = tuple(x.shape[-nd:]) if x.ndim >= nd else tuple(x.shape)
        if x.ndim in (nd + 1, nd + 2) and spatial != self.input_size:
            raise ValueError(f"{type(self).__name__} was built for input_size={self.input_size}, but got "
                             f"input of size {list(x.shape)} (spatial size {spatial})")
        return FL.local_convolution(input, self.weight, self.bias, self.geometry, self.padding_mode,
                                    f"conv{nd}d_local")

    def extra_repr(self) -> str:
        s = ("{in_channels}, {out_channels}, input_size={input_size}, kernel_size={kernel_size}"
             ", stride={stride}") + self._padding_repr()
        return s.format(**self.__dict__)


class Conv1dLocal(_ConvLocalNd):
    """1-d locally connected layer over ``(N, C_in, L)``.

    ``weight (L_out, C_out, C_in, k)``, ``bias (C_out, L_out)``.
    """

    _num_spatial_dims = 1


class Conv2dLocal(_ConvLocalNd):
    """2-d locally connected layer (Lua Torch's SpatialConvolutionLocal) over ``(N, C_in, H, W)``.

    ``weight (H_out, W_out, C_out, C_in, kH, kW)``, ``bias (C_out, H_out, W_out)``;
    ``out[n, o, y, x] = bias[o, y, x] + sum_{i, p, q} weight[y, x, o, i, p, q] *
    in_padded[n, i, y * sH + p * dH, x * sW + q * dW]``.
    """

    _num_spatial_dims = 2


class Conv3dLocal(_ConvLocalNd):
    """3-d locally connected layer over ``(N, C_in, D, H, W)``: ``weight (*out, C_out, C_in, *k)``."""

    _num_spatial_dims = 3


# -- connection tables -----------------------------------------------------------------------
class _ConvMapNd(_GeometryMixin, Module):
    __constants__ = ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "padding_mode", "output_padding"]

    def __init__(self, connection_table: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                 output_padding: Any, bias: bool, padding_mode: str, in_channels: int | None,
                 out_channels: int | None, device: Any, dtype: Any, method: str) -> None:
        super().__init__()
        table, in_channels, out_channels = tables.check(connection_table, in_channels, out_channels)
        check_padding_mode(padding_mode)
        FL.check_map_method(method)
        param_dtype = factory_dtype(device, dtype)
        geometry = ConvGeometry.create(kernel_size, stride, padding, dilation, 1, output_padding,
                                       ndim=self._num_spatial_dims, transposed=self.transposed)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = geometry.kernel_size
        self.stride = geometry.stride
        self.padding = _ConvNd._stored_padding(geometry)
        self.dilation = geometry.dilation
        if self.transposed:
            self.output_padding = geometry.output_padding
        self.padding_mode = padding_mode
        self.method = method
        self.register_buffer("connection_table", Tensor(table))
        self.weight = Parameter(np.empty((len(table),) + geometry.kernel_size, dtype=param_dtype))
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=param_dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Per output plane ``o``: its kernels and bias ~ U(-b, b), ``b = 1/sqrt(prod(k) * fan_in(o))``.

        ``fan_in(o)`` counts the table rows feeding ``o``; a plane no row feeds gets bias 0.
        """
        outputs = as_array(self.connection_table)[:, 1]
        fan_in = np.bincount(outputs, minlength=self.out_channels) * math.prod(self.kernel_size)
        bounds = np.divide(1.0, np.sqrt(fan_in), out=np.zeros(len(fan_in)), where=fan_in > 0)
        init.uniform_(self.weight, -1.0, 1.0)
        with no_grad():
            self.weight.numpy()[...] *= bounds[outputs].reshape((-1,) + (1,) * len(self.kernel_size)).astype(
                self.weight.numpy().real.dtype)
            if self.bias is not None:
                init.uniform_(self.bias, -1.0, 1.0)
                self.bias.numpy()[...] *= bounds.astype(self.bias.numpy().real.dtype)

    def _op_name(self) -> str:
        base = "conv_transpose" if self.transposed else "conv"
        return f"{base}{self._num_spatial_dims}d_map"

    def _check_input(self, input: Any) -> None:
        x = as_array(input)
        nd = self._num_spatial_dims
        if x.ndim in (nd + 1, nd + 2):
            channels = x.shape[1] if x.ndim == nd + 2 else x.shape[0]
            if channels != self.in_channels:
                raise ValueError(f"{type(self).__name__} expects input with in_channels={self.in_channels} "
                                 f"channels, but got input of size {list(x.shape)} ({channels} channels)")

    def extra_repr(self) -> str:
        s = ("connections={connections}, in_channels={in_channels}, out_channels={out_channels}, "
             "kernel_size={kernel_size}, stride={stride}") + self._padding_repr()
        if self.method != "auto":
            s += ", method={method}"
        return s.format(**self.__dict__, connections=len(as_array(self.connection_table)))


class _ConvMap(_ConvMapNd):
    def __init__(self, connection_table: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, bias: bool = True, padding_mode: str = "zeros",
                 in_channels: int | None = None, out_channels: int | None = None, device: Any = None,
                 dtype: Any = None, method: str = "auto") -> None:
        super().__init__(connection_table, kernel_size, stride, padding, dilation, 0, bias, padding_mode,
                         in_channels, out_channels, device, dtype, method)

    def forward(self, input: Any) -> Tensor:
        self._check_input(input)
        return FL.map_convolution(input, self.weight, self.connection_table, self.bias, self.geometry,
                                  self.out_channels, self.padding_mode, self.method, self._op_name())


class _ConvTransposeMap(_ConvMapNd):
    transposed = True

    def __init__(self, connection_table: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, dilation: Any = 1, bias: bool = True, padding_mode: str = "zeros",
                 in_channels: int | None = None, out_channels: int | None = None, device: Any = None,
                 dtype: Any = None, method: str = "auto") -> None:
        super().__init__(connection_table, kernel_size, stride, padding, dilation, output_padding, bias,
                         padding_mode, in_channels, out_channels, device, dtype, method)

    def forward(self, input: Any, output_size: Sequence[int] | None = None) -> Tensor:
        """Transposed convolution; ``output_size`` (spatial, or full) picks the output_padding."""
        self._check_input(input)
        geometry = self.geometry
        x = as_array(input)
        spatial = x.shape[-geometry.ndim:] if x.ndim >= geometry.ndim else x.shape
        output_padding = geometry.output_padding_for(spatial, output_size, x.ndim)
        return FL.map_transposed_convolution(input, self.weight, self.connection_table, self.bias, geometry,
                                             output_padding, self.out_channels, self.padding_mode,
                                             self.method, self._op_name())


class Conv1dMap(_ConvMap):
    """1-d connection-table convolution: ``weight[k]`` links plane ``table[k, 0]`` to ``table[k, 1]``."""

    _num_spatial_dims = 1


class Conv2dMap(_ConvMap):
    """2-d connection-table convolution (Lua Torch's SpatialConvolutionMap).

    ``out[:, o] = bias[o] + sum_{k: table[k, 1] = o} xcorr(in[:, table[k, 0]], weight[k])``;
    ``weight (K, kH, kW)``, ``bias (out_channels,)``; channel counts default to the table's
    largest plane + 1 per column.
    """

    _num_spatial_dims = 2


class Conv3dMap(_ConvMap):
    """3-d connection-table convolution: ``weight (K, kD, kH, kW)``."""

    _num_spatial_dims = 3


class ConvTranspose1dMap(_ConvTransposeMap):
    """1-d connection-table transposed convolution: ``weight (K, k)``."""

    _num_spatial_dims = 1


class ConvTranspose2dMap(_ConvTransposeMap):
    """2-d connection-table transposed convolution (Lua Torch's SpatialFullConvolutionMap).

    ``out[:, o] = bias[o] + sum_{k: table[k, 1] = o} conv_transpose(in[:, table[k, 0]], weight[k])``,
    output size as ``ConvTranspose2d``; ``padding_mode`` other than zeros gives the adjoint of the
    padded :class:`Conv2dMap` with the table's columns swapped.
    """

    _num_spatial_dims = 2


class ConvTranspose3dMap(_ConvTransposeMap):
    """3-d connection-table transposed convolution: ``weight (K, kD, kH, kW)``."""

    _num_spatial_dims = 3
