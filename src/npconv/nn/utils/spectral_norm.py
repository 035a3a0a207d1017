"""The hook-based ``spectral_norm`` / ``remove_spectral_norm`` (``torch.nn.utils.spectral_norm``).

``module.<name>`` becomes ``<name>_orig / sigma`` with ``sigma = u . (W v)`` for the matrix view ``W`` of
``<name>_orig`` (axis ``dim`` first); ``u`` and ``v`` are the buffers ``<name>_u`` and ``<name>_v``
(torch's state_dict keys: ``<name>_orig``, ``<name>_u``, ``<name>_v``). A forward pre-hook recomputes
the weight before every call; in training mode it first runs ``n_power_iterations`` steps of
``v <- normalize(W^T u)``, ``u <- normalize(W v)`` in place on the buffers, outside the graph (torch's
order, which differs from the parametrization's). The maths is the parametrization's.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeVar

import numpy as np

from ...random import default_generator
from ...tensor import Tensor
from ..modules.conv import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from ..modules.module import Module
from ..parameter import Parameter, UninitializedParameter
from .parametrizations import _normalize, dim_first, divide_by_sigma, power_iteration, remove_forward_pre_hook

__all__ = ["SpectralNorm", "spectral_norm", "remove_spectral_norm"]

T_module = TypeVar("T_module", bound=Module)


class SpectralNorm:
    """The forward pre-hook: sets ``module.<name>`` to ``<name>_orig / sigma``."""

    _version: int = 1

    def __init__(self, name: str = "weight", n_power_iterations: int = 1, dim: int = 0,
                 eps: float = 1e-12) -> None:
        if not isinstance(n_power_iterations, numbers.Integral) or isinstance(n_power_iterations, bool):
            raise TypeError(f"n_power_iterations must be an int, got {n_power_iterations!r}")
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but "
                             f"got n_power_iterations={n_power_iterations}")
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
            raise TypeError(f"eps must be a real number, got {eps!r}")
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
            raise TypeError(f"dim must be an int, got {dim!r}")
        self.name = name
        self.dim = int(dim)
        self.n_power_iterations = int(n_power_iterations)
        self.eps = float(eps)

    def reshape_weight_to_matrix(self, weight: Any) -> Any:
        """``weight`` (Tensor or array) as a matrix, axis ``dim`` first."""
        return weight.permute(*dim_first(weight.ndim, self.dim)).reshape(weight.shape[self.dim], -1) \
            if isinstance(weight, Tensor) else \
            weight.transpose(dim_first(weight.ndim, self.dim)).reshape(weight.shape[self.dim], -1)

    def compute_weight(self, module: Module, do_power_iteration: bool) -> Tensor:
        weight = getattr(module, self.name + "_orig")
        u = getattr(module, self.name + "_u").numpy()
        v = getattr(module, self.name + "_v").numpy()
        if do_power_iteration:
            matrix = self.reshape_weight_to_matrix(weight.numpy())
            power_iteration(matrix, u, v, self.n_power_iterations, self.eps, v_first=True)
        return divide_by_sigma(weight, self.dim, u, v)

    def remove(self, module: Module) -> None:
        weight = self.compute_weight(module, do_power_iteration=False)
        delattr(module, self.name)
        delattr(module, self.name + "_u")
        delattr(module, self.name + "_v")
        delattr(module, self.name + "_orig")
        module.register_parameter(self.name, Parameter(weight.detach()))

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self.name, self.compute_weight(module, do_power_iteration=module.training))

    @staticmethod
    def apply(module: Module, name: str, n_power_iterations: int, dim: int, eps: float) -> SpectralNorm:
        if not isinstance(module, Module):
            raise TypeError(f"spectral_norm: module must be an nn.Module, got {type(module).__name__}")
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
        fn = SpectralNorm(name, n_power_iterations, dim, eps)
        if not isinstance(name, str) or name not in module._parameters:
            raise ValueError(f"spectral_norm: name={name!r} is not a parameter of {type(module).__name__}")
        weight = module._parameters[name]
        if weight is None:
            raise ValueError(f"`SpectralNorm` cannot be applied as parameter `{name}` is None")
        if isinstance(weight, UninitializedParameter):
            raise ValueError("The module passed to `SpectralNorm` can't have uninitialized parameters. "
                             "Make sure to run the dummy forward before applying spectral normalization")
        ndim = weight.ndim
        if not -ndim <= fn.dim < ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
                             f"but got {fn.dim})")
        fn.dim %= ndim
        h, w = fn.reshape_weight_to_matrix(weight.numpy()).shape
        dtype = weight.numpy().dtype
        rng = default_generator()
        u = _normalize(rng.standard_normal(h).astype(dtype), fn.eps)
        v = _normalize(rng.standard_normal(w).astype(dtype), fn.eps)
        delattr(module, fn.name)
        module.register_parameter(fn.name + "_orig", weight)
        # the plain attribute <name> holds the weight until the first forward, as torch's weight.data
        object.__setattr__(module, fn.name, weight.detach())
        module.register_buffer(fn.name + "_u", Tensor(np.ascontiguousarray(u)))
        module.register_buffer(fn.name + "_v", Tensor(np.ascontiguousarray(v)))
        module.register_forward_pre_hook(fn)
        return fn


def spectral_norm(module: T_module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> T_module:
    """Replace ``module.<name>`` by ``<name>_orig / sigma(<name>_orig)`` (the largest singular value,
    estimated by power iteration on the buffers ``<name>_u``, ``<name>_v``), recomputed before each
    forward. ``dim`` defaults to 1 for transposed convolutions, else 0."""
    if dim is None:
        dim = 1 if isinstance(module, (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)) else 0
    SpectralNorm.apply(module, name, n_power_iterations, dim, eps)
    return module


def remove_spectral_norm(module: T_module, name: str = "weight") -> T_module:
    """Undo :func:`spectral_norm`: ``module.<name>`` becomes a Parameter holding ``<name>_orig / sigma``."""
    return remove_forward_pre_hook(module, SpectralNorm, name, "spectral_norm")
