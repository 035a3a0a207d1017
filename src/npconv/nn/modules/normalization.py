"""``GroupNorm``, as torch's."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...checks import check_int
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .conv import factory_dtype
from .module import Module

__all__ = ["GroupNorm"]


class GroupNorm(Module):
    """Normalise ``(N, C, *)`` per sample over groups of ``num_channels / num_groups`` channels,
    then a per-channel affine map (``weight`` ones, ``bias`` zeros) if ``affine``."""

    __constants__ = ["num_groups", "num_channels", "eps", "affine"]

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: Any = None, dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__()
        num_groups = check_int(num_groups, "num_groups", 1)
        num_channels = check_int(num_channels, "num_channels", 1)
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        param_dtype = factory_dtype(device, dtype)
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = Parameter(np.empty(self.num_channels, dtype=param_dtype))
            if bias:
                self.bias = Parameter(np.empty(self.num_channels, dtype=param_dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input: Any) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")
