"""Batch normalisation layers with running statistics, as torch's ``BatchNorm1d/2d/3d``."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ...checks import check_int
from ...tensor import Tensor, as_array
from .. import functional as F
from .. import init
from ..functional_layers import batch_norm_arguments
from ..parameter import Parameter
from .conv import factory_dtype
from .module import Module

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class _BatchNorm(Module):
    """Normalise each channel of ``(N, C, *)`` with batch statistics while training (updating
    ``running_mean``/``running_var``; ``momentum=None`` gives their cumulative average) and
    with the running statistics in eval mode (batch statistics if not tracked)."""

    #: a state dict without it (older torch versions' checkpoints) loads, the counter kept (torch's)
    _optional_state_keys = frozenset({"num_batches_tracked"})

    _version = 2
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine"]
    _ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None,
                 dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__()
        num_features = check_int(num_features, "num_features", 0)
        if momentum is not None and not isinstance(momentum, numbers.Real):
            raise TypeError(f"momentum must be a float or None, got {momentum!r}")
        param_dtype = factory_dtype(device, dtype)
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.empty(self.num_features, dtype=param_dtype))
            if bias:
                self.bias = Parameter(np.empty(self.num_features, dtype=param_dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(self.num_features, dtype=param_dtype)))
            self.register_buffer("running_var", Tensor(np.ones(self.num_features, dtype=param_dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.numpy()[...] = 0
            self.running_var.numpy()[...] = 1
            self.num_batches_tracked.numpy()[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, input: Any) -> None:
        rank = as_array(input).ndim
        if rank not in self._ranks:
            expected = " or ".join(f"{r}D" for r in self._ranks)
            raise ValueError(f"expected {expected} input (got {rank}D input)")

    def forward(self, input: Any) -> Tensor:
        self._check_input_dim(input)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        running_mean = self.running_mean if track else None
        running_var = self.running_var if track else None
        # validate before counting the batch: a rejected call changes nothing
        batch_norm_arguments(input, running_mean, running_var, self.weight, self.bias, use_batch_stats)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.numpy()[...] += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.numpy())
        return F.batch_norm(input, running_mean, running_var, self.weight, self.bias, use_batch_stats, factor,
                            self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over ``(N, C)`` or ``(N, C, L)``."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over ``(N, C, H, W)``."""

    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch norm over ``(N, C, D, H, W)``."""

    _ranks = (5,)
