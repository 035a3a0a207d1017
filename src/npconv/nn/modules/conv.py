"""Convolution modules: thin shells over :mod:`npconv.nn.functional`, with torch's attributes.

``_ConvNd`` holds the arguments as torch does (tuples, ``padding`` as a tuple or string) and
builds one :class:`~npconv.geometry.ConvGeometry` from them; the per-dimension classes only fix
the spatial rank. Beyond torch: ``ConvNd``/``ConvTransposeNd`` of any rank, ``padding='same'``
with strides (and ``'same_lower'``), per-side padding pairs, the ``'symmetric'`` padding mode
and padding modes on transposed convolutions (the adjoint of the padded convolution).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...checks import check_allocatable, check_batched_rank, check_conv_arguments, check_int, must
from ...geometry import ConvGeometry, check_padding_mode
from ...tensor import Tensor, as_array, to_dtype
from .. import functional as F
from .. import init
from ..parameter import Parameter, UninitializedParameter
from .lazy import LazyModuleMixin
from .module import Module, registered

__all__ = [
    "Conv1d", "Conv2d", "Conv3d", "ConvNd", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "ConvTransposeNd", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d",
    "LazyConvTranspose2d", "LazyConvTranspose3d",
]


def factory_dtype(device: Any, dtype: Any) -> np.dtype:
    """Validate torch's ``device``/``dtype`` factory arguments; return the parameter dtype."""
    if device is not None and str(device) != "cpu":
        raise ValueError(f"npconv runs on the CPU only: device must be None or 'cpu', got {device!r}")
    result = np.dtype(np.float32) if dtype is None else to_dtype(dtype)
    if result.kind not in "fc":
        raise TypeError(must("dtype", "be a floating point or complex dtype", result))
    return result


class _ConvNd(Module):
    __constants__ = ["stride", "padding", "dilation", "groups", "padding_mode", "output_padding",
                     "in_channels", "out_channels", "kernel_size"]
    _num_spatial_dims: int | None = None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any, padding: Any,
                 dilation: Any, transposed: bool, output_padding: Any, groups: int, bias: bool,
                 padding_mode: str, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", 0)
        out_channels = check_int(out_channels, "out_channels", 0)
        groups = check_int(groups, "groups", 1)
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups, got in_channels={in_channels}, "
                             f"groups={groups}")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups, got out_channels={out_channels}, "
                             f"groups={groups}")
        check_padding_mode(padding_mode)
        param_dtype = factory_dtype(device, dtype)
        ndim = self._num_spatial_dims
        if ndim is None:
            if isinstance(kernel_size, numbers.Integral):
                raise ValueError("kernel_size must be a tuple for ConvNd: its length sets the number of "
                                 f"spatial dimensions, got {kernel_size!r}")
            ndim = len(kernel_size)
        geometry = ConvGeometry.create(kernel_size, stride, padding, dilation, groups, output_padding,
                                       ndim=ndim, transposed=transposed)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = geometry.kernel_size
        self.stride = geometry.stride
        self.padding = self._stored_padding(geometry)
        self.dilation = geometry.dilation
        self.transposed = transposed
        self.output_padding = geometry.output_padding
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self._geometry_cache = (self._geometry_key(), geometry, self._op_name())
        shape = ((in_channels, out_channels // groups) if transposed
                 else (out_channels, in_channels // groups)) + geometry.kernel_size
        check_allocatable(shape, param_dtype.itemsize, "weight", type(self).__name__)
        self.weight = Parameter(np.empty(shape, dtype=param_dtype))
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=param_dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @staticmethod
    def _stored_padding(geometry: ConvGeometry) -> Any:
        if isinstance(geometry.padding, str):
            return geometry.padding
        symmetric = geometry.symmetric_padding()
        return symmetric if symmetric is not None else geometry.padding

    def _geometry_key(self) -> tuple[Any, ...]:
        return (self.kernel_size, self.stride, self.padding, self.dilation, self.groups, self.output_padding)

    @property
    def geometry(self) -> ConvGeometry:
        """The validated geometry of the current attributes (rebuilt if an attribute changed)."""
        return self._call_geometry()[0]

    def _call_geometry(self) -> tuple[ConvGeometry, str]:
        """``(geometry, op name)`` of a call, kept while the attributes they come from are unchanged."""
        key = self._geometry_key()
        cached = self.__dict__.get("_geometry_cache")
        if cached is not None and len(cached) == 3 and cached[0] == key:  # (a module pickled earlier: 2)
            return cached[1], cached[2]
        geometry = ConvGeometry.create(self.kernel_size, self.stride, self.padding, self.dilation,
                                       self.groups, self.output_padding, ndim=len(self.kernel_size),
                                       transposed=self.transposed)
        op = self._op_name()
        self._geometry_cache = (key, geometry, op)
        return geometry, op

    def reset_parameters(self) -> None:
        """kaiming_uniform_(weight, a=sqrt(5)); bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        padding = self.padding
        if isinstance(padding, str) or padding != (0,) * len(padding):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        return s.format(**self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if not hasattr(self, "padding_mode"):
            self.padding_mode = "zeros"

    def _op_name(self) -> str:
        nd = len(self.kernel_size)
        base = "conv_transpose" if self.transposed else "conv"
        return f"{base}{nd}d" if self._num_spatial_dims is not None else base


class _Conv(_ConvNd):
    def forward(self, input: Any) -> Tensor:
        geometry, op = self._call_geometry()
        return F.convolution(input, registered(self, "_parameters", "weight"),
                             registered(self, "_parameters", "bias"), geometry, self.padding_mode, op,
                             owner=self)


class Conv1d(_Conv):
    """1-d convolution over ``(N, C_in, L)`` (or ``(C_in, L)``), as ``torch.nn.Conv1d``."""

    _num_spatial_dims = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0,
                         groups, bias, padding_mode, device, dtype)


class Conv2d(_Conv):
    """2-d convolution over ``(N, C_in, H, W)`` (or ``(C_in, H, W)``), as ``torch.nn.Conv2d``."""

    _num_spatial_dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0,
                         groups, bias, padding_mode, device, dtype)


class Conv3d(_Conv):
    """3-d convolution over ``(N, C_in, D, H, W)``, as ``torch.nn.Conv3d``."""

    _num_spatial_dims = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0,
                         groups, bias, padding_mode, device, dtype)


class ConvNd(_Conv):
    """Convolution of any spatial rank, given by ``len(kernel_size)`` (a tuple)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int], stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0,
                         groups, bias, padding_mode, device, dtype)


class _ConvTransposeNd(_ConvNd):
    def forward(self, input: Any, output_size: Sequence[int] | None = None) -> Tensor:
        geometry = self.geometry
        if output_size is not None:  # reject a bad input before interpreting output_size
            check_conv_arguments(input, self.weight, self.bias, geometry.ndim, geometry.groups, True,
                                 self._op_name())
        x = as_array(input)
        spatial = x.shape[-geometry.ndim:] if x.ndim >= geometry.ndim else x.shape
        output_padding = geometry.output_padding_for(spatial, output_size, x.ndim)
        return F.transposed_convolution(input, self.weight, self.bias, geometry, output_padding,
                                        self.padding_mode, self._op_name())


class ConvTranspose1d(_ConvTransposeNd):
    """1-d transposed convolution, as ``torch.nn.ConvTranspose1d``."""

    _num_spatial_dims = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, True,
                         output_padding, groups, bias, padding_mode, device, dtype)


class ConvTranspose2d(_ConvTransposeNd):
    """2-d transposed convolution, as ``torch.nn.ConvTranspose2d``."""

    _num_spatial_dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, True,
                         output_padding, groups, bias, padding_mode, device, dtype)


class ConvTranspose3d(_ConvTransposeNd):
    """3-d transposed convolution, as ``torch.nn.ConvTranspose3d``."""

    _num_spatial_dims = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, True,
                         output_padding, groups, bias, padding_mode, device, dtype)


class ConvTransposeNd(_ConvTransposeNd):
    """Transposed convolution of any spatial rank, given by ``len(kernel_size)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int], stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, True,
                         output_padding, groups, bias, padding_mode, device, dtype)


class _LazyConvXdMixin(LazyModuleMixin):
    """Infers ``in_channels`` from the first input, then materialises weight and bias."""

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_channels != 0:  # type: ignore[attr-defined]
            super().reset_parameters()  # type: ignore[misc]

    def _make_lazy(self, out_channels: int, bias: bool, device: Any, dtype: Any) -> None:
        self.weight = UninitializedParameter(dtype=factory_dtype(device, dtype))
        self.out_channels = check_int(out_channels, "out_channels", 0)
        if out_channels % self.groups != 0:  # type: ignore[attr-defined]
            raise ValueError("out_channels must be divisible by groups")
        if bias:
            self.bias = UninitializedParameter(dtype=factory_dtype(device, dtype))

    def initialize_parameters(self, input: Any, *args: Any, **kwargs: Any) -> None:
        if not self.has_uninitialized_params():
            return
        x = as_array(input)
        nd = self._num_spatial_dims  # type: ignore[attr-defined]
        in_channels = x.shape[1] if check_batched_rank(x.shape, nd, self._op_name()) else x.shape[0]
        if in_channels % self.groups != 0:  # type: ignore[attr-defined]
            raise ValueError(f"in_channels must be divisible by groups, got in_channels={in_channels}, "
                             f"groups={self.groups}")  # type: ignore[attr-defined]
        g, k = self.groups, self.kernel_size  # type: ignore[attr-defined]
        shape = ((in_channels, self.out_channels // g) if self.transposed  # type: ignore[attr-defined]
                 else (self.out_channels, in_channels // g)) + k  # type: ignore[attr-defined]
        output_size = args[0] if args else kwargs.get("output_size")
        self._check_first_input(input, shape, output_size)
        self.in_channels = in_channels
        self.weight.materialize(shape)
        if self.bias is not None:  # type: ignore[attr-defined]
            self.bias.materialize((self.out_channels,))  # type: ignore[attr-defined]
        self.reset_parameters()

    def _check_first_input(self, input: Any, weight_shape: tuple[int, ...], output_size: Any) -> None:
        """Every check of the forward, on zero-cost placeholder parameters, so that a rejected
        first call leaves the module uninitialised."""
        dtype = self.weight.numpy().dtype  # type: ignore[attr-defined]
        weight = np.broadcast_to(np.zeros((), dtype), weight_shape)
        bias = None if self.bias is None else np.broadcast_to(np.zeros((), dtype),  # type: ignore[attr-defined]
                                                              (self.out_channels,))  # type: ignore[attr-defined]
        geometry = self.geometry  # type: ignore[attr-defined]
        rank = as_array(input).ndim
        input, _, _, _ = check_conv_arguments(input, weight, bias, geometry.ndim, geometry.groups,
                                              self.transposed, self._op_name())  # type: ignore[attr-defined]
        shape = as_array(input).shape
        if self.transposed:  # type: ignore[attr-defined]
            output_padding = geometry.output_padding_for(shape[2:], output_size, rank)
            out_shape = (shape[0], self.out_channels) + geometry.transposed_output_size(  # type: ignore
                shape[2:], output_padding)
            geometry.check_mode_padding(out_shape, self.padding_mode, "output")  # type: ignore[attr-defined]
            return
        geometry.output_size(shape[2:])
        geometry.check_mode_padding(shape, self.padding_mode)  # type: ignore[attr-defined]

    def _check_loaded_shape(self, name: str, shape: tuple[int, ...]) -> str | None:
        out_channels, groups, kernel = self.out_channels, self.groups, self.kernel_size  # type: ignore[attr-defined]
        if name == "bias":
            return None if shape == (out_channels,) else f"expected ({out_channels},)"
        if len(shape) != len(kernel) + 2 or tuple(shape[2:]) != tuple(kernel):
            return f"expected {len(kernel) + 2} dimensions ending with the kernel size {tuple(kernel)}"
        if self.transposed:  # type: ignore[attr-defined]
            if shape[0] < 1 or shape[0] % groups or shape[1] * groups != out_channels:
                return (f"expected (in_channels, {out_channels // groups}, *kernel) with in_channels a "
                        f"positive multiple of groups={groups}")
        elif shape[0] != out_channels or shape[1] < 1:
            return f"expected ({out_channels}, in_channels // groups >= 1, *kernel)"
        return None

    def _infer_in_channels_from_weight(self) -> int:
        w = self.weight.numpy()  # type: ignore[attr-defined]
        return w.shape[0] if self.transposed else w.shape[1] * self.groups  # type: ignore[attr-defined]


def _lazy_conv(base: type, nd: int) -> type:
    def __init__(self: Any, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None) -> None:
        base.__init__(self, 0, 0, kernel_size, stride, padding, dilation, groups, False, padding_mode,
                      device, dtype)
        self._make_lazy(out_channels, bias, device, dtype)

    name = f"LazyConv{nd}d"
    return type(name, (_LazyConvXdMixin, base), {
        "__init__": __init__, "cls_to_become": base, "__module__": __name__,
        "__doc__": f"``{base.__name__}`` whose ``in_channels`` is inferred from the first input.",
        "__qualname__": name})


def _lazy_conv_transpose(base: type, nd: int) -> type:
    def __init__(self: Any, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        base.__init__(self, 0, 0, kernel_size, stride, padding, output_padding, groups, False, dilation,
                      padding_mode, device, dtype)
        self._make_lazy(out_channels, bias, device, dtype)

    name = f"LazyConvTranspose{nd}d"
    return type(name, (_LazyConvXdMixin, base), {
        "__init__": __init__, "cls_to_become": base, "__module__": __name__,
        "__doc__": f"``{base.__name__}`` whose ``in_channels`` is inferred from the first input.",
        "__qualname__": name})


LazyConv1d = _lazy_conv(Conv1d, 1)
LazyConv2d = _lazy_conv(Conv2d, 2)
LazyConv3d = _lazy_conv(Conv3d, 3)
LazyConvTranspose1d = _lazy_conv_transpose(ConvTranspose1d, 1)
LazyConvTranspose2d = _lazy_conv_transpose(ConvTranspose2d, 2)
LazyConvTranspose3d = _lazy_conv_transpose(ConvTranspose3d, 3)
