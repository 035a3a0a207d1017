"""``Parameter``: a leaf Tensor that a Module registers as trainable."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor, to_dtype

__all__ = ["Parameter", "UninitializedParameter", "Buffer"]


class Parameter(Tensor):
    """A Tensor that requires grad by default and is registered when assigned to a Module."""

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.empty(0, dtype=np.float32)
        elif not isinstance(data, (Tensor, np.ndarray)):  # values as NumPy reads them (torch wants a Tensor)
            data = np.asarray(data)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (self.__class__, (self.numpy(), self.requires_grad))


class UninitializedParameter(Parameter):
    """A Parameter of unknown shape, materialised by a lazy module's first forward."""

    __slots__ = ()

    def __init__(self, requires_grad: bool = True, device: Any = None, dtype: Any = None) -> None:
        dtype = to_dtype(dtype) if dtype is not None else np.float32
        super().__init__(np.empty(0, dtype=dtype), requires_grad)

    def materialize(self, shape: tuple[int, ...]) -> None:
        dtype = self.numpy().dtype
        self.__class__ = Parameter
        self.data = np.empty(shape, dtype=dtype)

    def __repr__(self) -> str:
        return "<UninitializedParameter>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (self.__class__, (self.requires_grad, None, self.numpy().dtype))


class Buffer(Tensor):
    """Marks a Tensor to be registered as a buffer when assigned to a Module."""

    __slots__ = ("persistent",)

    def __init__(self, data: Any, persistent: bool = True) -> None:
        super().__init__(data if isinstance(data, (Tensor, np.ndarray)) else np.asarray(data))
        self.persistent = persistent
