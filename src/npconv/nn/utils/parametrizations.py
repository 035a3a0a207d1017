"""``weight_norm`` and ``spectral_norm`` as parametrizations, as ``torch.nn.utils.parametrizations``.

* weight norm: ``w = g * v / ||v||`` with the norm over every axis but ``dim`` (all axes for
  ``dim=None``); stored as ``parametrizations.<name>.original0`` (``g``) and ``original1`` (``v``).
* spectral norm: ``w / sigma`` with ``sigma = u . (W v)`` for the weight as a matrix ``W`` (axis ``dim``
  first); in training each call runs ``n_power_iterations`` of ``u <- normalize(W v)``,
  ``v <- normalize(W^T u)`` on the buffers ``_u``, ``_v`` (outside the graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...random import default_generator
from ...tensor import Tensor, as_array
from .. import functional as F
from ..modules.conv import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from ..modules.module import Module
from . import parametrize

__all__ = ["weight_norm", "spectral_norm"]


def _norm_except_dim(v: Any, dim: int) -> Any:
    """``||v||_2`` over every axis but ``dim`` (kept, size 1), or over all axes for ``dim == -1``."""
    squares = v * v
    if dim == -1:
        return squares.sum() ** 0.5
    axis = dim % v.ndim
    axes = tuple(a for a in range(v.ndim) if a != axis)
    return squares.sum(axes, keepdim=True) ** 0.5 if axes else squares ** 0.5


class _WeightNorm(Module):
    def __init__(self, dim: int | None = 0) -> None:
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g: Tensor, weight_v: Tensor) -> Tensor:
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight: Any) -> tuple[Tensor, Tensor]:
        w = weight if isinstance(weight, Tensor) else Tensor(as_array(weight))
        return Tensor(np.asarray(as_array(_norm_except_dim(w.detach(), self.dim)))), w.detach()


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> Module:
    """Reparametrize ``module.<name>`` as ``g * v / ||v||`` (torch's key names: ``original0`` = g,
    ``original1`` = v)."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


def _normalize(x: np.ndarray, eps: float) -> np.ndarray:
    return x / max(float(np.sqrt(np.dot(np.conj(x), x).real)), eps)


def dim_first(ndim: int, dim: int) -> tuple[int, ...]:
    """The axis order that moves ``dim`` to the front (the spectral norm's matrix view)."""
    return (dim,) + tuple(d for d in range(ndim) if d != dim)


def power_iteration(matrix: np.ndarray, u: np.ndarray, v: np.ndarray, iterations: int, eps: float,
                    v_first: bool = False) -> None:
    """``iterations`` steps of ``u <- normalize(W v)``, ``v <- normalize(W^H u)``, in place on ``u``
    and ``v`` (``v_first``: the ``v`` update first, as the hook-based ``nn.utils.spectral_norm``)."""
    for _ in range(iterations):
        if v_first:
            v[...] = _normalize(np.conj(matrix.T) @ u, eps)
        u[...] = _normalize(matrix @ v, eps)
        if not v_first:
            v[...] = _normalize(np.conj(matrix.T) @ u, eps)


def divide_by_sigma(weight: Tensor, dim: int, u: np.ndarray, v: np.ndarray) -> Tensor:
    """``weight / sigma`` with ``sigma = u^H (W v)`` for the matrix view ``W`` of ``weight`` (axis
    ``dim`` first); ``u`` and ``v`` are copied (constants of the graph), so later in-place power
    iterations cannot change what this result's backward reads."""
    matrix = weight.permute(*dim_first(weight.ndim, dim)).reshape(weight.shape[dim], -1)
    sigma = (matrix @ v.copy() * np.conj(u)).sum()
    return weight / sigma


class _SpectralNorm(Module):
    def __init__(self, weight: Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}] but "
                             f"got {dim})")
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            matrix = self._matrix_array(as_array(weight))
            h, w = matrix.shape
            rng = default_generator()
            self.register_buffer("_u", Tensor(_normalize(rng.standard_normal(h).astype(matrix.dtype), eps)))
            self.register_buffer("_v", Tensor(_normalize(rng.standard_normal(w).astype(matrix.dtype), eps)))
            self._power_method(matrix, 15)

    def _matrix_array(self, weight: np.ndarray) -> np.ndarray:
        return weight.transpose(dim_first(weight.ndim, self.dim)).reshape(weight.shape[self.dim], -1)

    def _power_method(self, matrix: np.ndarray, iterations: int) -> None:
        power_iteration(matrix, self._u.numpy(), self._v.numpy(), iterations, self.eps)

    def forward(self, weight: Tensor) -> Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        if self.training:
            self._power_method(self._matrix_array(weight.numpy()), self.n_power_iterations)
        return divide_by_sigma(weight, self.dim, self._u.numpy(), self._v.numpy())

    def right_inverse(self, value: Any) -> Any:
        return value


def spectral_norm(module: Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> Module:
    """Reparametrize ``module.<name>`` as ``W / sigma(W)`` (largest singular value, by power iteration;
    ``dim`` defaults to 1 for transposed convolutions, else 0)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if isinstance(module, (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


def remove_forward_pre_hook(module: Any, kind: type, name: str, what: str) -> Any:
    """Remove the forward pre-hook of type ``kind`` acting on ``module.<name>`` (its ``remove`` restores
    the plain parameter), for the hook-based ``remove_spectral_norm`` / ``remove_weight_norm``;
    ValueError naming ``what`` where there is none."""
    hooks = module._forward_pre_hooks
    for key, hook in list(hooks.items()):
        if isinstance(hook, kind) and hook.name == name:
            hook.remove(module)
            del hooks[key]
            return module
    raise ValueError(f"{what} of '{name}' not found in {module}")
