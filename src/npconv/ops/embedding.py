"""Embedding lookup (differentiable in the table) and one-hot encoding.

``embedding``: ``y[..., :] = weight[idx[...], :]``; the gradient of row ``r`` is the sum of the
output gradients at the positions holding ``r`` (divided by ``r``'s count with
``scale_grad_by_freq``), zero for ``padding_idx``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor, as_array, make_result

__all__ = ["embedding", "embedding_renorm_", "one_hot_array"]


def embedding(indices: np.ndarray, weight: Any, padding_idx: int | None, scale_grad_by_freq: bool) -> Tensor:
    """Rows of ``weight (V, D)`` at integer ``indices (*)``: ``(*, D)``."""
    table = as_array(weight)
    flat = indices.reshape(-1)
    out = table[flat].reshape(indices.shape + table.shape[1:])

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        rows = g.reshape(flat.size, -1)
        if scale_grad_by_freq:
            counts = np.bincount(flat, minlength=table.shape[0])
            rows = rows / counts[flat][:, None].astype(rows.dtype)
        grad = np.zeros(table.shape, dtype=table.dtype)
        np.add.at(grad, flat, rows)  # repeated indices accumulate
        if padding_idx is not None:
            grad[padding_idx] = 0
        return (grad,)

    return make_result(out, (weight,), backward, "EmbeddingBackward0")


def embedding_renorm_(table: np.ndarray, indices: np.ndarray, max_norm: float, norm_type: float) -> None:
    """Scale in place each referenced row whose ``norm_type``-norm exceeds ``max_norm`` down to
    ``max_norm`` (torch's ``embedding_renorm_``: factor ``max_norm / (norm + 1e-7)``)."""
    rows = np.unique(indices)
    selected = table[rows]
    t = table.dtype.type
    if norm_type == np.inf:
        norms = np.abs(selected).max(axis=1)
    else:
        norms = (np.abs(selected) ** t(norm_type)).sum(axis=1) ** t(1 / norm_type)
    over = norms > t(max_norm)
    scale = t(max_norm) / (norms[over] + t(1e-7))
    table[rows[over]] = selected[over] * scale[:, None]


def one_hot_array(indices: np.ndarray, num_classes: int) -> np.ndarray:
    """``(*,) -> (*, num_classes)`` int64 with a 1 at each index."""
    out = np.zeros(indices.shape + (num_classes,), dtype=np.int64)
    np.put_along_axis(out, indices[..., None].astype(np.int64), 1, axis=-1)
    return out
