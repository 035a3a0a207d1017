"""Weight averaging (``torch.optim.swa_utils``): ``AveragedModel`` for SWA and EMA, ``update_bn``, ``SWALR``.

``AveragedModel(model)`` keeps a deep copy whose parameters (and, with ``use_buffers``, buffers)
are averaged with ``update_parameters(model)``: the running mean by default (SWA), or an
exponential moving average with ``multi_avg_fn=get_ema_multi_avg_fn(decay)``. The first update
copies. Without ``use_buffers`` the copy's buffers (e.g. BatchNorm statistics) are copied from the
model at every update; ``update_bn(loader, model)`` recomputes them with one pass over the data.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from typing import Any

import numpy as np

from .. import nn
from ..nn import Module
from ..tensor import Tensor, no_grad
from ._functional import lerp_
from .lr_scheduler import LRScheduler, _per_group
from .optimizer import Optimizer

__all__ = ["AveragedModel", "update_bn", "SWALR", "get_ema_multi_avg_fn", "get_swa_multi_avg_fn",
           "get_ema_avg_fn", "get_swa_avg_fn"]


def _check_decay(decay: Any) -> float:
    if not isinstance(decay, numbers.Real) or isinstance(decay, bool) or not 0.0 <= decay <= 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")
    return float(decay)


def get_ema_multi_avg_fn(decay: float = 0.999) -> Callable[[Sequence[Tensor], Sequence[Tensor], Any], None]:
    """In place: ``ema = lerp(ema, current, 1 - decay)`` for every pair (torch's ``_foreach_lerp_``)."""
    decay = _check_decay(decay)

    def ema_update(ema_params: Sequence[Tensor], current_params: Sequence[Tensor], _: Any) -> None:
        for ema, current in zip(ema_params, current_params, strict=True):
            if ema.numpy().dtype.kind in "fc":
                lerp_(ema.numpy(), np.asarray(current.numpy(), dtype=ema.numpy().dtype), 1 - decay)
            else:
                ema.numpy()[...] = ema.numpy() * decay + current.numpy() * (1 - decay)

    return ema_update


def get_swa_multi_avg_fn() -> Callable[[Sequence[Tensor], Sequence[Tensor], Any], None]:
    """In place: the running mean ``avg = lerp(avg, current, 1 / (n + 1))``."""

    def swa_update(averaged_params: Sequence[Tensor], current_params: Sequence[Tensor],
                   num_averaged: Any) -> None:
        weight = 1.0 / (float(getattr(num_averaged, "data", num_averaged)) + 1)
        for averaged, current in zip(averaged_params, current_params, strict=True):
            if averaged.numpy().dtype.kind in "fc":
                lerp_(averaged.numpy(), np.asarray(current.numpy(), dtype=averaged.numpy().dtype), weight)
            else:
                averaged.numpy()[...] = averaged.numpy() + (current.numpy() - averaged.numpy()) * weight

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> Callable[[Tensor, Tensor, Any], Tensor]:
    """``decay * ema + (1 - decay) * current`` (a new Tensor)."""
    decay = _check_decay(decay)

    def ema_update(ema_param: Tensor, current_param: Tensor, num_averaged: Any) -> Tensor:
        with no_grad():
            return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn() -> Callable[[Tensor, Tensor, Any], Tensor]:
    """``averaged + (current - averaged) / (n + 1)`` (a new Tensor)."""

    def swa_update(averaged_param: Tensor, current_param: Tensor, num_averaged: Any) -> Tensor:
        with no_grad():
            count = float(getattr(num_averaged, "data", num_averaged))
            return averaged_param + (current_param - averaged_param) / (count + 1)

    return swa_update


class AveragedModel(Module):
    """A copy of ``model`` whose parameters are averaged by :meth:`update_parameters`."""

    def __init__(self, model: Module, device: Any = None,
                 avg_fn: Callable[[Tensor, Tensor, Any], Tensor] | None = None,
                 multi_avg_fn: Callable[[Sequence[Tensor], Sequence[Tensor], Any], None] | None = None,
                 use_buffers: bool = False) -> None:
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"model must be an npconv.nn.Module, got {type(model).__name__}")
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", Tensor(np.array(0, dtype=np.int64)))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def _averaged(self, module: Module) -> list[Tensor]:
        if self.use_buffers:
            return list(itertools.chain(module.parameters(), module.buffers()))
        return list(module.parameters())

    def update_parameters(self, model: Module) -> None:
        """Average ``model``'s current values into the copy (the first call copies them)."""
        mine, theirs = self._averaged(self.module), self._averaged(model)
        if len(mine) != len(theirs) or any(a.numpy().shape != b.numpy().shape
                                           for a, b in zip(mine, theirs, strict=True)):
            raise ValueError("update_parameters: the model's parameters do not match the averaged copy's "
                             f"({len(theirs)} vs {len(mine)} tensors, or different shapes)")
        buffers = [] if self.use_buffers else list(zip(self.module.buffers(), model.buffers(), strict=False))
        if any(a.numpy().shape != b.numpy().shape for a, b in buffers):
            raise ValueError("update_parameters: the model's buffers do not match the averaged copy's")
        n_averaged = int(self.n_averaged.numpy())
        with no_grad():
            if n_averaged == 0:
                for averaged, current in zip(mine, theirs, strict=True):
                    averaged.numpy()[...] = current.numpy()
            elif self.avg_fn is not None:
                for averaged, current in zip(mine, theirs, strict=True):
                    result = self.avg_fn(averaged, current, self.n_averaged)
                    averaged.numpy()[...] = np.asarray(getattr(result, "data", result))
            else:
                (self.multi_avg_fn or get_swa_multi_avg_fn())(mine, theirs, self.n_averaged)
            for averaged, current in buffers:
                averaged.numpy()[...] = current.numpy()
        self.n_averaged.numpy()[...] = n_averaged + 1


def _batch_norm_classes() -> tuple[type, ...]:
    """The layers whose running statistics ``update_bn`` recomputes (torch's ``_BatchNorm`` family)."""
    names = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d",
             "LazyBatchNorm2d", "LazyBatchNorm3d")
    return tuple(getattr(nn, name) for name in names if hasattr(nn, name))


def update_bn(loader: Iterable[Any], model: Module, device: Any = None) -> None:
    """Recompute every BatchNorm's running statistics as the cumulative average over one pass of
    ``loader`` (batches, or tuples whose first item is the input), in training mode."""
    momenta = {}
    for module in model.modules():
        if isinstance(module, _batch_norm_classes()):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    try:
        with no_grad():
            for batch in loader:
                if isinstance(batch, (list, tuple)):
                    batch = batch[0]
                if device is not None:
                    batch = batch.to(device)
                model(batch)
    finally:
        for module, momentum in momenta.items():
            module.momentum = momentum
        model.train(was_training)


class SWALR(LRScheduler):
    """Anneal each group's lr to ``swa_lr`` over ``anneal_epochs`` epochs (cosine or linear), then hold it."""

    def __init__(self, optimizer: Optimizer, swa_lr: float | list[float], anneal_epochs: int = 10,
                 anneal_strategy: str = "cos", last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        if not isinstance(anneal_epochs, int) or isinstance(anneal_epochs, bool) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        swa_lrs = _per_group("swa_lr", optimizer, swa_lr)
        for value, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = value
        self._anneal_strategy = anneal_strategy
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    def anneal_func(self, t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2 if self._anneal_strategy == "cos" else t

    @staticmethod
    def _get_initial_lr(lr: float, swa_lr: float, alpha: float) -> float:
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self) -> list[float]:
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, please use "
                          "`get_last_lr()`.", UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_alpha = self.anneal_func(max(0, min(1, (step - 1) / max(1, self.anneal_epochs))))
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha)
                    for group in self.optimizer.param_groups]
        alpha = self.anneal_func(max(0, min(1, step / max(1, self.anneal_epochs))))
        return [group["swa_lr"] * alpha + lr * (1 - alpha)
                for group, lr in zip(self.optimizer.param_groups, prev_lrs, strict=True)]
