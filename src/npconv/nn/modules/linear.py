"""``Linear``, ``LazyLinear`` and ``Identity``, as torch's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...checks import check_allocatable, check_int
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..parameter import Parameter, UninitializedParameter
from .conv import factory_dtype
from .lazy import LazyModuleMixin
from .module import Module

__all__ = ["Linear", "LazyLinear", "Identity"]


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Any) -> Any:
        return input


class Linear(Module):
    """``y = x @ weight.T + bias`` over the last axis: ``(*, in_features) -> (*, out_features)``.

    ``weight (out_features, in_features)`` ~ kaiming_uniform(a=sqrt(5)), ``bias`` ~ U(+-1/sqrt(in)).
    """

    __constants__ = ["in_features", "out_features"]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", 0)
        self.out_features = check_int(out_features, "out_features", 0)
        param_dtype = factory_dtype(device, dtype)
        check_allocatable((self.out_features, self.in_features), param_dtype.itemsize, "weight", "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=param_dtype))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=param_dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Any) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LazyLinear(LazyModuleMixin, Linear):
    """A :class:`Linear` whose ``in_features`` is inferred from the first input's last axis; it then
    becomes a :class:`Linear` (torch's LazyLinear)."""

    cls_to_become = Linear

    def __init__(self, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__(0, 0, False, device, dtype)
        self.weight = UninitializedParameter(dtype=factory_dtype(device, dtype))
        self.out_features = check_int(out_features, "out_features", 0)
        if bias:
            self.bias = UninitializedParameter(dtype=factory_dtype(device, dtype))

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input: Any, *args: Any, **kwargs: Any) -> None:
        if not self.has_uninitialized_params():
            return
        shape = np.shape(input.numpy() if isinstance(input, Tensor) else input)
        if not shape:
            raise ValueError("LazyLinear: the first input must have at least 1 dimension (its last axis "
                             "gives in_features), got a 0-dimensional input")
        self.in_features = int(shape[-1])
        self.weight.materialize((self.out_features, self.in_features))
        if self.bias is not None:
            self.bias.materialize((self.out_features,))
        self.reset_parameters()

    def _check_loaded_shape(self, name: str, shape: tuple[int, ...]) -> str | None:
        if name == "bias":
            return None if tuple(shape) == (self.out_features,) else f"expected ({self.out_features},)"
        if len(shape) != 2 or shape[0] != self.out_features:
            return f"expected ({self.out_features}, in_features)"
        return None

    def _finish_load_state_dict(self) -> None:
        if not self.has_uninitialized_params():
            self.in_features = int(self.weight.shape[1])
            self.__class__ = Linear
