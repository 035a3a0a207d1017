"""torch's dtype, device and Size objects, mapped onto NumPy.

* :class:`dtype`: ``npconv.float32`` etc.; compares equal to the NumPy dtype it stands for (so
  ``tensor.dtype == np.float32`` and ``== npconv.float32`` both hold) and prints ``torch.float32``
  like torch (programs and doctests written for torch print and compare it).
  NumPy accepts it wherever it takes a dtype (it has a ``.dtype`` attribute).
* :class:`device`: only ``"cpu"`` holds tensors; other device types can be named (as
  ``torch.device("cuda")`` can without a GPU) but moving a tensor there is a ``ValueError``.
* :class:`Size`: the ``tuple`` subclass ``Tensor.shape`` and ``Tensor.size()`` return.
* :func:`get_default_dtype` / :func:`set_default_dtype`: the dtype of Python floats in
  ``npconv.tensor`` and of the float factories (``zeros``, ``randn``, ...), float32 by default.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

__all__ = [
    "dtype",
    "device",
    "Size",
    "get_default_dtype",
    "set_default_dtype",
    "to_numpy_dtype",
    "as_dtype",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "half",
    "float",
    "double",
    "cfloat",
    "cdouble",
    "short",
    "int",
    "long",
    "device_of",
]


class dtype:  # noqa: N801 - torch's name
    """A tensor element type (``npconv.float32``), standing for one NumPy dtype."""

    __slots__ = ("dtype", "_name")

    def __init__(self, name: str, numpy_dtype: Any) -> None:
        self.dtype = np.dtype(numpy_dtype)
        self._name = name

    def __repr__(self) -> str:
        return f"torch.{self._name}"  # as torch prints it: code and doctests written for torch compare it

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dtype):
            return self.dtype == other.dtype
        try:
            return self.dtype == np.dtype(other)  # type: ignore[arg-type]
        except TypeError:
            return NotImplemented

    def __hash__(self) -> int:
        return hash(self.dtype)

    def __reduce__(self) -> Any:
        return (as_dtype, (self.dtype.str,))

    @property
    def is_floating_point(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def is_complex(self) -> bool:
        return self.dtype.kind == "c"

    @property
    def is_signed(self) -> bool:
        return self.dtype.kind in "fci"

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    # NumPy dtype attributes, so code written for ndarray dtypes keeps working
    @property
    def kind(self) -> str:
        return self.dtype.kind

    @property
    def type(self) -> type:
        return self.dtype.type

    @property
    def char(self) -> str:
        return self.dtype.char

    @property
    def str(self) -> str:  # noqa: A003
        return self.dtype.str

    @property
    def name(self) -> str:
        return self.dtype.name

    def to_real(self) -> dtype:
        return as_dtype(np.empty(0, self.dtype).real.dtype)

    def to_complex(self) -> dtype:
        return as_dtype(np.promote_types(self.dtype, np.complex64))


float16 = half = dtype("float16", np.float16)
float32 = float = dtype("float32", np.float32)  # noqa: A001 - torch's alias
float64 = double = dtype("float64", np.float64)
complex64 = cfloat = dtype("complex64", np.complex64)
complex128 = cdouble = dtype("complex128", np.complex128)
int8 = dtype("int8", np.int8)
int16 = short = dtype("int16", np.int16)
int32 = int = dtype("int32", np.int32)  # noqa: A001
int64 = long = dtype("int64", np.int64)
uint8 = dtype("uint8", np.uint8)
uint16 = dtype("uint16", np.uint16)
uint32 = dtype("uint32", np.uint32)
uint64 = dtype("uint64", np.uint64)
bool = dtype("bool", np.bool_)  # noqa: A001

_BY_NUMPY = {
    d.dtype: d
    for d in (
        float16,
        float32,
        float64,
        complex64,
        complex128,
        int8,
        int16,
        int32,
        int64,
        uint8,
        uint16,
        uint32,
        uint64,
        bool,
    )
}
_default_dtype = float32


def to_numpy_dtype(value: Any, argument: str = "dtype") -> np.dtype:
    """The NumPy dtype for an npconv dtype, a NumPy dtype or type, or a name ('float32', 'torch.float64')."""
    if isinstance(value, dtype):
        return value.dtype
    if isinstance(value, str) and value.startswith(("torch.", "npconv.")):
        value = value.split(".", 1)[1]
        named = globals().get(value)
        if isinstance(named, dtype):
            return named.dtype
    try:
        result = np.dtype(value)
    except TypeError as error:
        # (wording kept: "... or its name, got" is what callers match; npconv dtypes are accepted too)
        raise TypeError(f"{argument} must be a NumPy dtype or its name, got {value!r}") from error
    return result


def as_dtype(value: Any, argument: str = "dtype") -> dtype:
    """The npconv dtype object for anything :func:`to_numpy_dtype` accepts that is numeric or bool."""
    if isinstance(value, dtype):
        return value
    result = to_numpy_dtype(value, argument)
    if result not in _BY_NUMPY:
        raise TypeError(f"{argument} must be a numeric or bool dtype, but got {result}")
    return _BY_NUMPY[result]


def get_default_dtype() -> dtype:
    """The dtype Python floats and the float factories produce (``npconv.float32`` unless set)."""
    return _default_dtype


def set_default_dtype(d: Any) -> None:
    """Set the default floating dtype (float16, float32 or float64), like ``torch.set_default_dtype``."""
    global _default_dtype
    chosen = as_dtype(d)
    if chosen.kind != "f":
        raise TypeError(f"set_default_dtype d must be a floating point dtype, but got {chosen}")
    _default_dtype = chosen


class device:  # noqa: N801 - torch's name
    """``npconv.device("cpu")``; ``device("cuda")`` can be named, but no tensor can be moved there."""

    __slots__ = ("type", "index")
    _TYPES = ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "mtia", "privateuseone")

    def __init__(self, type: Any, index: Any = None) -> None:  # noqa: A002 - torch's name
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        if not isinstance(type, str):
            raise TypeError(f"device type must be a str or device, but got {type!r}")
        name = type
        if ":" in name:
            name, _, number = name.partition(":")
            if index is not None or not number.isdigit():
                raise ValueError(f"device string must be 'type' or 'type:index', but got {type!r}")
            index = builtins.int(number)
        if name not in self._TYPES:
            raise ValueError(f"device type must be one of {', '.join(self._TYPES)}, but got {name!r}")
        if index is not None and (not isinstance(index, builtins.int) or index < 0):
            raise ValueError(f"device index must be a non-negative int, but got {index!r}")
        self.type = name
        self.index = index

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __reduce__(self) -> Any:
        return (device, (self.type, self.index))


CPU = device("cpu")


def device_of(value: Any, argument: str = "device") -> device:
    """``value`` (a device, its name or an index) as a device that can hold tensors: the CPU."""
    if value is None:
        return CPU
    chosen = device(value) if not isinstance(value, builtins.int) else device("cuda", value)
    if chosen.type != "cpu":
        raise ValueError(
            f"{argument} must be the CPU (npconv runs on NumPy and has no {chosen.type} support), "
            f"but got {str(chosen)!r}"
        )
    return chosen


class Size(tuple):
    """A tensor's shape: a tuple of ints printing as ``torch.Size([2, 3])`` (as torch prints it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"torch.Size({list(self)})"

    def __getitem__(self, index: Any) -> Any:
        result = tuple.__getitem__(self, index)
        return Size(result) if isinstance(index, slice) else result

    def __add__(self, other: Any) -> Size:
        return Size(tuple.__add__(self, tuple(other)))

    def numel(self) -> builtins.int:
        count = 1
        for n in self:
            count *= n
        return count

    def __reduce__(self) -> Any:
        return (Size, (tuple(self),))
