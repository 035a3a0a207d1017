"""``ConvActivation``: a convolution with its activation fused into the output pass (what
:func:`npconv.optimize_for_inference` puts in place of a Conv[-BatchNorm]-activation run).

Without autograd (``no_grad``, or neither the input nor the parameters require grad) the
activation is the convolution's output epilogue: a plain convolution module (``Conv1d/2d/3d``,
``ConvNd``, no hooks) hands it to the planner (:func:`npconv.nn.functional.convolution`'s
``activation``), which gives it to kernels that fuse it or applies it with the bias in one pass;
other convolutions apply it in place on their fresh output. With autograd it is the two modules
composed, so gradients are the unfused ones.

``ChunkedSequential``: a ``Sequential`` of per-image layers that runs a large batch in chunks of
images (what :func:`npconv.optimize_for_inference` makes of such a ``Sequential``), so a layer's
output is read by the next layer from the cache instead of memory.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ... import autograd
from ...kernels import pointwise
from ...kernels.pointwise import Activation
from ...ops.conv import records
from ...tensor import Tensor, as_array
from .. import functional as F
from .activation import Hardtanh, ReLU, ReLU6, SiLU
from .container import Sequential
from .conv import _Conv, _ConvNd
from .linear import Identity
from .module import Module, has_call_hooks, registered

__all__ = ["ConvActivation", "ChunkedSequential", "FUSABLE_ACTIVATIONS", "fusable_activation",
           "activation_of", "CHUNK_ABOVE_BYTES",
           "CHUNK_BYTES"]

#: Activation modules a :class:`ConvActivation` fuses (ReLU6 is a Hardtanh).
FUSABLE_ACTIVATIONS = (ReLU, Hardtanh, SiLU)
_FUSABLE_TYPES = frozenset({ReLU, ReLU6, Hardtanh, SiLU})


def fusable_activation(module: Module) -> bool:
    """Whether ``module`` computes exactly what a convolution's stores can apply: a ``ReLU``, ``ReLU6``,
    ``Hardtanh`` or ``SiLU`` itself (a subclass may compute something else in its ``forward``, as
    ``jit.trace``'s layer types are exact too), without a ``forward`` of the instance's own."""
    return type(module) in _FUSABLE_TYPES and "forward" not in module.__dict__


_RELU, _SILU = Activation("relu"), Activation("silu")


def activation_of(activation: Module) -> Activation:
    """The :class:`~npconv.kernels.pointwise.Activation` that ``activation`` computes."""
    if isinstance(activation, ReLU):
        return _RELU
    if isinstance(activation, Hardtanh):
        return _hardtanh(float(activation.min_val), float(activation.max_val))
    return _SILU


@functools.lru_cache(maxsize=64)
def _hardtanh(lo: float, hi: float) -> Activation:
    return Activation("hardtanh", lo, hi)


class ConvActivation(Module):
    """``activation(conv(x))`` with the activation written into the convolution's output.

    ``conv`` is any convolution module (``Conv1d/2d/3d``, ``ConvNd``, their transposed forms);
    ``activation`` a ``ReLU``, ``Hardtanh`` (``ReLU6``) or ``SiLU`` module. Shapes are ``conv``'s.
    """

    def __init__(self, conv: Module, activation: Module) -> None:
        super().__init__()
        if not isinstance(conv, _ConvNd):
            raise TypeError(f"ConvActivation: conv must be a convolution module, got {type(conv).__name__}")
        if not fusable_activation(activation):
            names = ", ".join(a.__name__ for a in FUSABLE_ACTIVATIONS)
            raise TypeError(f"ConvActivation: activation must be one of {names} (or ReLU6) itself, not a "
                            f"subclass or an instance with its own forward, got {type(activation).__name__}")
        self.conv = conv
        self.activation = activation

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Tensor:
        conv, activation = registered(self, "_modules", "conv"), registered(self, "_modules", "activation")
        weight, bias = registered(conv, "_parameters", "weight"), registered(conv, "_parameters", "bias")
        if (not args and not kwargs and _plain_conv(conv) and not has_call_hooks(conv)
                and not has_call_hooks(activation) and not records(input, weight, bias)):
            geometry, op = conv._call_geometry()
            fused = activation_of(activation)
            y = F._run_planned(self, input, weight, bias, geometry, conv.padding_mode, op, fused)
            if y is not None:
                return y
            return F.convolution(input, weight, bias, geometry, conv.padding_mode, op, activation=fused,
                                 owner=self)
        y = conv(input, *args, **kwargs)
        if y.requires_grad:  # autograd records: the activation op, so its gradient is the unfused one
            return activation(y)
        activation_ = activation_of(activation)
        pointwise.activate_(as_array(y), activation_.kind, activation_.lo, activation_.hi)
        return y


#: A batch whose largest layer result in a :class:`ChunkedSequential` exceeds this many bytes
#: runs in chunks of images whose largest intermediate takes at most :data:`CHUNK_BYTES` (at least one
#: image). MobileNetV2's second block at batch 8 (a 38.5 MB expansion to 96 channels at 112x112, two
#: threads, AVX-512): 5.1-7.3 ms in the network for the whole batch, 3.5-3.7 ms image by image, 3.7-4.0
#: two at a time (docs/performance.md).
CHUNK_ABOVE_BYTES = 16 << 20
CHUNK_BYTES = 8 << 20


class ChunkedSequential(Sequential):
    """A ``Sequential`` of per-image layers (convolutions, :class:`ConvActivation`, ReLU/Hardtanh/SiLU,
    ``Identity``, and ``Sequential`` containers of those) that runs a batch whose largest intermediate
    result exceeds :data:`CHUNK_ABOVE_BYTES` in chunks of images (each image's result as in the whole
    batch, to the rounding of the kernel a smaller batch may take). It runs the batch whole when
    autograd records, when a layer has hooks (they see the batch as ``Sequential`` shows it) or when a
    layer's output size is not known in advance. Shapes as ``Sequential``."""

    @staticmethod
    def runs_per_image(module: Module) -> bool:
        """Whether ``module`` is a layer this container can run image by image (see the class), for
        :func:`npconv.optimize_for_inference`; a container must hold a convolution."""
        if type(module) is ConvActivation:
            return _plain_conv(module.conv)
        if _plain_container(module):
            children = list(module.children())
            return (all(ChunkedSequential.runs_per_image(m) or _elementwise(m) for m in children)
                    and any(not _elementwise(m) for m in children))
        return _plain_conv(module)

    def forward(self, input: Any) -> Any:
        chunk = self._chunk(input)
        if chunk is None:
            return super().forward(input)
        n = input.shape[0]
        out = None
        for start in range(0, n, chunk):
            y = as_array(super().forward(input[start:start + chunk]))
            if out is None:
                out = np.empty((n,) + y.shape[1:], y.dtype)
            out[start:start + chunk] = y
        return Tensor(out)

    def _chunk(self, input: Any) -> int | None:
        """Images per chunk, or None to run the batch whole."""
        if not isinstance(input, Tensor) or input._array.ndim < 3 or input._array.shape[0] < 2:
            return None
        if autograd.is_grad_enabled() and (input.requires_grad
                                           or any(p.requires_grad for p in self.parameters())):
            return None
        shape = _image_shapes(self, input.shape[1], tuple(input.shape[2:]))
        if shape is None:
            return None
        peak = shape[2] * as_array(input).itemsize
        if peak * input.shape[0] <= CHUNK_ABOVE_BYTES:
            return None
        return max(1, CHUNK_BYTES // peak)


def _elementwise(module: Module) -> bool:
    """A layer that maps each value alone: a fusable activation or an ``Identity`` (exact types)."""
    return fusable_activation(module) or (type(module) is Identity and "forward" not in module.__dict__)


def _plain_conv(module: Module) -> bool:
    """A convolution module whose call is ``_Conv.forward`` (not a subclass's or an instance's own)."""
    return (isinstance(module, _Conv) and type(module).forward is _Conv.forward
            and "forward" not in module.__dict__)


def _plain_container(module: Module) -> bool:
    return isinstance(module, Sequential) and type(module).forward in (Sequential.forward,
                                                                       ChunkedSequential.forward)


def _image_shapes(module: Module, channels: int,
                  size: tuple[int, ...]) -> tuple[int, tuple[int, ...], int] | None:
    """``(channels, size, largest element count of a result)`` of one image after ``module``; None
    where a layer is not a per-image layer of known output size, or has hooks."""
    if has_call_hooks(module):
        return None
    if _elementwise(module):
        return channels, size, channels * math.prod(size)
    if _plain_container(module):
        peak = 0
        for child in module._modules.values():  # what Sequential.forward runs, repeats included
            if child is None:
                continue
            shape = _image_shapes(child, channels, size)
            if shape is None:
                return None
            channels, size, peak = shape[0], shape[1], max(peak, shape[2])
        return channels, size, peak
    conv = module
    if type(module) is ConvActivation:
        conv = module.conv
        if has_call_hooks(conv) or has_call_hooks(module.activation):
            return None
    if not _plain_conv(conv):
        return None
    geometry = conv.geometry
    if len(size) != geometry.ndim or channels != conv.in_channels:
        return None  # the layer's own call reports the mismatch
    try:
        size = geometry.output_size(size)
    except ValueError:
        return None
    if min(size, default=1) < 1:
        return None
    return conv.out_channels, size, conv.out_channels * math.prod(size)
