"""``ConvActivation``: a convolution with its activation fused into the output pass (what
:func:`npconv.optimize_for_inference` puts in place of a Conv[-BatchNorm]-activation run).

Without autograd (``no_grad``, or neither the input nor the parameters require grad) the
activation is the convolution's output epilogue: a plain convolution module (``Conv1d/2d/3d``,
``ConvNd``, no hooks) hands it to the planner (:func:`npconv.nn.functional.convolution`'s
``activation``), which gives it to kernels that fuse it or applies it with the bias in one pass;
other convolutions apply it in place on their fresh output. With autograd it is the two modules
composed, so gradients are the unfused ones.
"""

from __future__ import annotations

import functools
from typing import Any

from ...kernels import pointwise
from ...kernels.pointwise import Activation
from ...ops.conv import records
from ...tensor import Tensor, as_array
from .. import functional as F
from .activation import Hardtanh, ReLU, SiLU
from .conv import _Conv, _ConvNd
from .module import Module, has_call_hooks

__all__ = ["ConvActivation", "FUSABLE_ACTIVATIONS"]

#: Activation modules a :class:`ConvActivation` fuses (ReLU6 is a Hardtanh).
FUSABLE_ACTIVATIONS = (ReLU, Hardtanh, SiLU)


_RELU, _SILU = Activation("relu"), Activation("silu")


def _activation(activation: Module) -> Activation:
    """The :class:`~npconv.kernels.pointwise.Activation` that ``activation`` computes."""
    if isinstance(activation, ReLU):
        return _RELU
    if isinstance(activation, Hardtanh):
        return _hardtanh(float(activation.min_val), float(activation.max_val))
    return _SILU


@functools.lru_cache(maxsize=64)
def _hardtanh(lo: float, hi: float) -> Activation:
    return Activation("hardtanh", lo, hi)


def _attribute(module: Module, store: str, name: str) -> Any:
    """``getattr(module, name)`` for a name registered in ``store`` (``_modules``, ``_parameters``):
    the dict lookup first (a module call reads four of them), ``Module.__getattr__`` otherwise."""
    registered = module.__dict__[store]
    return registered[name] if name in registered else getattr(module, name)


class ConvActivation(Module):
    """``activation(conv(x))`` with the activation written into the convolution's output.

    ``conv`` is any convolution module (``Conv1d/2d/3d``, ``ConvNd``, their transposed forms);
    ``activation`` a ``ReLU``, ``Hardtanh`` (``ReLU6``) or ``SiLU`` module. Shapes are ``conv``'s.
    """

    def __init__(self, conv: Module, activation: Module) -> None:
        super().__init__()
        if not isinstance(conv, _ConvNd):
            raise TypeError(f"ConvActivation: conv must be a convolution module, got {type(conv).__name__}")
        if not isinstance(activation, FUSABLE_ACTIVATIONS):
            names = ", ".join(a.__name__ for a in FUSABLE_ACTIVATIONS)
            raise TypeError(f"ConvActivation: activation must be one of {names} (or ReLU6), got "
                            f"{type(activation).__name__}")
        self.conv = conv
        self.activation = activation

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Tensor:
        conv, activation = _attribute(self, "_modules", "conv"), _attribute(self, "_modules", "activation")
        weight, bias = _attribute(conv, "_parameters", "weight"), _attribute(conv, "_parameters", "bias")
        if (not args and not kwargs and type(conv).forward is _Conv.forward and not has_call_hooks(conv)
                and not has_call_hooks(activation) and not records(input, weight, bias)):
            return F.convolution(input, weight, bias, conv.geometry, conv.padding_mode, conv._op_name(),
                                 activation=_activation(activation), owner=self)
        y = conv(input, *args, **kwargs)
        if y.requires_grad:  # autograd records: the activation op, so its gradient is the unfused one
            return activation(y)
        activation_ = _activation(activation)
        pointwise.activate_(as_array(y), activation_.kind, activation_.lo, activation_.hi)
        return y
