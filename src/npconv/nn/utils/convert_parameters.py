"""Flatten parameters into one vector and back, as ``torch.nn.utils.convert_parameters``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ...tensor import Tensor, make_result

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def _check(values: Any, name: str) -> list[Tensor]:
    if isinstance(values, Tensor) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be an iterable of Tensors, got {type(values).__name__}")
    out = list(values)
    for value in out:
        if not isinstance(value, Tensor):
            raise TypeError(f"expected torch.Tensor, but got: {type(value).__name__}")
    return out


def parameters_to_vector(parameters: Iterable[Any]) -> Tensor:
    """The concatenation of every parameter flattened (differentiable, like ``torch.cat``)."""
    params = _check(parameters, "parameters")
    if not params:
        raise ValueError("parameters_to_vector: expected a non-empty list of Tensors")
    shapes = [p.shape for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    vector = np.concatenate([p.numpy().reshape(-1) for p in params])

    def backward(g: np.ndarray) -> tuple[np.ndarray, ...]:
        pieces = np.split(g, np.cumsum(sizes)[:-1])
        return tuple(piece.reshape(shape) for piece, shape in zip(pieces, shapes, strict=True))

    return make_result(vector, params, backward, "CatBackward0")


def vector_to_parameters(vec: Any, parameters: Iterable[Any]) -> None:
    """Copy consecutive slices of the 1-D ``vec`` into the parameters' data (no gradient)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    params = _check(parameters, "parameters")
    data = vec.numpy().reshape(-1)
    total = sum(p.numel() for p in params)
    if data.size != total:
        raise ValueError(f"vector_to_parameters: vec has {data.size} elements but the parameters hold "
                         f"{total}")
    pointer = 0
    for p in params:
        n = p.numel()
        p.data = data[pointer:pointer + n].reshape(p.shape).astype(p.dtype, copy=True)
        pointer += n
