"""``ConvActivation``: a convolution with its activation fused into the output pass (what
:func:`npconv.optimize_for_inference` puts in place of a Conv[-BatchNorm]-activation run).

Without autograd (``no_grad``, or neither the input nor the parameters require grad) the
activation is applied in place on the convolution's freshly allocated output, images spread over
the worker threads, instead of allocating a second tensor; with autograd it is the two modules
composed, so gradients are the unfused ones.
"""

from __future__ import annotations

from typing import Any

from ...kernels import pointwise
from ...tensor import Tensor, as_array
from .activation import Hardtanh, ReLU, SiLU
from .conv import _ConvNd
from .module import Module

__all__ = ["ConvActivation", "FUSABLE_ACTIVATIONS"]

#: Activation modules a :class:`ConvActivation` fuses (ReLU6 is a Hardtanh).
FUSABLE_ACTIVATIONS = (ReLU, Hardtanh, SiLU)


def _epilogue(activation: Module) -> tuple[str, float, float]:
    """``(kind, lo, hi)`` of :func:`npconv.kernels.pointwise.activate_` for ``activation``."""
    if isinstance(activation, ReLU):
        return "relu", 0.0, 0.0
    if isinstance(activation, Hardtanh):
        return "hardtanh", float(activation.min_val), float(activation.max_val)
    return "silu", 0.0, 0.0


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
        y = self.conv(input, *args, **kwargs)
        if y.requires_grad:  # autograd records: the activation op, so its gradient is the unfused one
            return self.activation(y)
        pointwise.activate_(as_array(y), *_epilogue(self.activation))
        return y
