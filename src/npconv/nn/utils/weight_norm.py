"""The hook-based ``weight_norm`` / ``remove_weight_norm`` (``torch.nn.utils.weight_norm``, deprecated
in torch in favour of :func:`npconv.nn.utils.parametrizations.weight_norm`, and still widely used).

``module.<name>`` becomes ``<name>_g * <name>_v / ||<name>_v||`` (norm over every axis but ``dim``, all
axes for ``dim=None``), with the parameters ``<name>_g`` and ``<name>_v`` (torch's state_dict keys), and
is recomputed by a forward pre-hook before every call; the maths is the parametrization's.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

from ...tensor import Tensor
from ..modules.module import Module
from ..parameter import Parameter, UninitializedParameter
from .parametrizations import _norm_except_dim, _WeightNorm, remove_forward_pre_hook

__all__ = ["WeightNorm", "weight_norm", "remove_weight_norm"]

T_module = TypeVar("T_module", bound=Module)


class WeightNorm:
    """The forward pre-hook: sets ``module.<name>`` from ``<name>_g`` and ``<name>_v``."""

    def __init__(self, name: str, dim: int | None) -> None:
        self.name = name
        self.dim = -1 if dim is None else dim

    def compute_weight(self, module: Module) -> Tensor:
        return _WeightNorm(self.dim)(getattr(module, self.name + "_g"), getattr(module, self.name + "_v"))

    @staticmethod
    def apply(module: Module, name: str, dim: int | None) -> WeightNorm:
        warnings.warn("`torch.nn.utils.weight_norm` is deprecated in favor of "
                      "`torch.nn.utils.parametrizations.weight_norm`.", FutureWarning, stacklevel=3)
        if not isinstance(module, Module):
            raise TypeError(f"weight_norm: module must be an nn.Module, got {type(module).__name__}")
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
        weight = module._parameters.get(name) if isinstance(name, str) else None
        if isinstance(weight, UninitializedParameter):
            raise ValueError("The module passed to `WeightNorm` can't have uninitialized parameters. "
                             "Make sure to run the dummy forward before applying weight normalization")
        if weight is None:
            raise ValueError(f"weight_norm: name={name!r} is not a parameter of {type(module).__name__}")
        fn = WeightNorm(name, dim)
        if not -max(weight.ndim, 1) <= fn.dim < max(weight.ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of [{-max(weight.ndim, 1)}, "
                             f"{max(weight.ndim, 1) - 1}], but got {fn.dim})")
        del module._parameters[name]
        g = _norm_except_dim(weight.detach(), fn.dim)
        module.register_parameter(name + "_g", Parameter(Tensor(g.numpy().copy())))
        module.register_parameter(name + "_v", Parameter(weight.detach()))
        setattr(module, name, fn.compute_weight(module))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module: Module) -> None:
        weight = self.compute_weight(module)
        delattr(module, self.name)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        setattr(module, self.name, Parameter(weight.detach()))

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self.name, self.compute_weight(module))


def weight_norm(module: T_module, name: str = "weight", dim: int | None = 0) -> T_module:
    """Replace ``module.<name>`` by ``g * v / ||v||`` (parameters ``<name>_g``, ``<name>_v``), recomputed
    before each forward. ``dim``: the axis kept by the norm (``None``: one norm of the whole tensor)."""
    WeightNorm.apply(module, name, dim)
    return module


def remove_weight_norm(module: T_module, name: str = "weight") -> T_module:
    """Undo :func:`weight_norm`: ``module.<name>`` becomes a Parameter holding the current weight."""
    return remove_forward_pre_hook(module, WeightNorm, name, "weight_norm")
