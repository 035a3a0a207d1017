"""Torch-free checks shared by the kernel tests: adjointness of the three passes, relative error."""

from __future__ import annotations

from types import ModuleType

import numpy as np


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """Norm-relative error ``|actual - reference| / |reference|``."""
    return float(np.linalg.norm(actual - reference) / np.linalg.norm(reference))


def assert_passes_are_adjoint(kernel: ModuleType, x: np.ndarray, w: np.ndarray, geom, rng,
                              weight_pass: bool = True) -> None:
    """``<forward(x, w), gy> == <x, grad_input(gy, w)> (== <w, grad_weight(x, gy)>)`` to rounding."""
    y = kernel.forward(x, w, geom)
    gy = rng.standard_normal(y.shape)
    lhs = np.vdot(y, gy)
    assert np.isclose(lhs, np.vdot(x, kernel.grad_input(gy, w, geom, x.shape[2:])), rtol=1e-12)
    if weight_pass:
        assert np.isclose(lhs, np.vdot(w, kernel.grad_weight(x, gy, geom)), rtol=1e-12)
