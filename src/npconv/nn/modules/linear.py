"""``Linear`` and ``Identity``, as torch's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...checks import check_allocatable, check_int
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .conv import factory_dtype
from .module import Module

__all__ = ["Linear", "Identity"]


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
