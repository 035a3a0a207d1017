"""``Embedding``: a lookup table of ``num_embeddings`` vectors, as torch's."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ...tensor import Tensor, as_array
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .conv import factory_dtype
from .module import Module

__all__ = ["Embedding"]


class Embedding(Module):
    """``weight (num_embeddings, embedding_dim)`` drawn from N(0, 1) (row ``padding_idx`` zero);
    ``forward(indices)`` returns the rows at ``indices`` (see ``F.embedding``)."""

    __constants__ = ["num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                     "scale_grad_by_freq", "sparse"]

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Any = None, _freeze: bool = False, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Padding_idx must be within num_embeddings ({self.num_embeddings}), "
                                 f"got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _weight is None:
            self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim),
                                             dtype=factory_dtype(device, dtype)), requires_grad=not _freeze)
            self.reset_parameters()
        else:
            data = as_array(_weight)
            if data.shape != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Shape of weight does not match num_embeddings and embedding_dim: expected "
                                 f"{(self.num_embeddings, self.embedding_dim)}, got {data.shape}")
            self.weight = Parameter(data, requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.numpy()[self.padding_idx] = 0

    def forward(self, input: Any) -> Tensor:
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse is not False:
            s += ", sparse=True"
        return s

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True, padding_idx: int | None = None,
                        max_norm: float | None = None, norm_type: float = 2.0,
                        scale_grad_by_freq: bool = False, sparse: bool = False) -> Embedding:
        """An Embedding whose weight is (a copy of) the 2-D ``embeddings``; frozen unless ``freeze=False``."""
        data = np.array(as_array(embeddings), copy=True)
        if data.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape {data.shape}")
        rows, cols = data.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse, _weight=data,
                   _freeze=freeze)
