"""The planner: picks the algorithm for each convolution pass.

Every pass has one entry point here; the differentiable ops in :mod:`npconv.ops.conv` call
only these. Signatures (``geom`` has explicit zero padding):

* ``forward(x, w, geom) -> y``
* ``grad_input(gy, w, geom, input_size) -> gx``
* ``grad_weight(x, gy, geom) -> gw``
"""

from __future__ import annotations

import numpy as np

from ..geometry import ConvGeometry
from . import gemm

__all__ = ["forward", "grad_input", "grad_weight"]


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    return gemm.forward(x, w, geom)


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: tuple[int, ...]) -> np.ndarray:
    return gemm.grad_input(gy, w, geom, tuple(input_size))


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    return gemm.grad_weight(x, gy, geom)
