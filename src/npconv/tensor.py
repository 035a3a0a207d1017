"""``npconv.Tensor``: an ndarray with autograd state, and torch's Tensor methods.

A Tensor wraps an ``ndarray`` (``.numpy()``; no copy when given one) plus what the engine in
:mod:`npconv.autograd` needs: ``requires_grad``, ``grad``, ``grad_fn`` (the :class:`~npconv.autograd.Node`
that made it), a version counter shared with its views, and hooks. The maths lives in ``npconv.ops``:
each method below *is* the functional op (``Tensor.relu is npconv.relu``), bound as a class attribute,
so there is one implementation of each formula. What is here: NumPy interop, dtype/device
conversion, Python protocols (operators, indexing, ``repr``, pickling) and the in-place methods:
the ops' in-place forms (``add_ = ops.elementwise.add_``, written into the tensor's memory through
:func:`~npconv.autograd.write_inplace`) or the same ops written back through
:func:`~npconv.autograd.apply_inplace`.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import autograd, dtypes, tracing
from .autograd import (
    VersionCounter,
    apply_inplace,
    as_array,
    conj,
    enable_grad,
    is_grad_enabled,
    make_result,
    no_grad,
    queue_callback,
    set_grad_enabled,
)
from .autograd import sum_to_shape as _sum_to_shape
from .ops import activation as _activation
from .ops import creation as _creation
from .ops import elementwise as _ew
from .ops import linalg as _linalg
from .ops import reduction as _reduction
from .ops import shape as _shape
from .ops.creation import tensor
from .random import numpy_generator

__all__ = [
    "Tensor",
    "FloatTensor",
    "DoubleTensor",
    "HalfTensor",
    "LongTensor",
    "IntTensor",
    "ShortTensor",
    "CharTensor",
    "ByteTensor",
    "BoolTensor",
    "tensor",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "set_grad_enabled",
    "as_array",
    "make_result",
    "queue_callback",
    "result_dtype",
    "to_dtype",
    "set_printoptions",
]

_conj = conj  # the names ops modules of other packages import from here
_FLOAT_KINDS = "fc"


def to_dtype(dtype: Any, argument: str = "dtype") -> np.dtype:
    """Normalise a dtype given as an npconv or NumPy dtype, a type or a name ('float32', 'torch.float64')."""
    return dtypes.to_numpy_dtype(dtype, argument)


def result_dtype(*arrays: Any) -> np.dtype:
    """The dtype torch gives an op on these operands."""
    return _ew.result_type(*arrays)


_TYPE_NAMES = {
    "float32": "FloatTensor",
    "float64": "DoubleTensor",
    "float16": "HalfTensor",
    "int64": "LongTensor",
    "int32": "IntTensor",
    "int16": "ShortTensor",
    "int8": "CharTensor",
    "uint8": "ByteTensor",
    "bool": "BoolTensor",
    "complex64": "ComplexFloatTensor",
    "complex128": "ComplexDoubleTensor",
}


def legacy_array(args: tuple, dtype: np.dtype, name: str) -> np.ndarray:
    """The array of torch's legacy constructors (``torch.Tensor(...)``, ``torch.FloatTensor(...)``):
    no argument an empty 1-d array; ints (or one ``Size``) an uninitialised array of that shape; one
    sequence (or ndarray) its values converted to ``dtype``."""
    if not args:
        return np.empty(0, dtype)
    if len(args) == 1 and isinstance(args[0], dtypes.Size):
        args = tuple(args[0])
    if all(isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in args):
        if any(a < 0 for a in args):
            raise RuntimeError(f"{name}(): negative dimension {builtins.min(args)} in the size {list(args)}")
        return np.empty(tuple(int(a) for a in args), dtype)
    if len(args) == 1 and isinstance(args[0], (list, tuple, np.ndarray, Tensor)):
        values = args[0]._array if isinstance(args[0], Tensor) else args[0]
        try:
            array = np.array(values, dtype=dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}(): data must be a sequence of numbers, but got {values!r}") from error
        return array
    kinds = ", ".join(type(a).__name__ for a in args)
    raise TypeError(f"{name}(): expected sizes as ints, one Size, or one sequence of data, but got ({kinds})")


class _LegacyTensorType(type):
    """``torch.FloatTensor`` and its siblings: calling one is the legacy constructor of its dtype, and
    ``isinstance(t, npconv.FloatTensor)`` asks for a Tensor of that dtype."""

    dtype: np.dtype

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, Tensor) and obj._array.dtype == cls.dtype

    def __call__(cls, *args: Any) -> Tensor:
        return Tensor(legacy_array(args, cls.dtype, cls.__name__))


def _legacy_type(name: str, dtype: str) -> type:
    return _LegacyTensorType(name, (), {"dtype": np.dtype(dtype), "__module__": __name__,
                                        "__doc__": f"torch's legacy ``{name}``: ``{name}(2, 3)``, "
                                                   f"``{name}([1, 2])``."})


_LEGACY_TYPES = {v: _legacy_type(v, k) for k, v in _TYPE_NAMES.items()}
FloatTensor = _LEGACY_TYPES["FloatTensor"]
DoubleTensor = _LEGACY_TYPES["DoubleTensor"]
HalfTensor = _LEGACY_TYPES["HalfTensor"]
LongTensor = _LEGACY_TYPES["LongTensor"]
IntTensor = _LEGACY_TYPES["IntTensor"]
ShortTensor = _LEGACY_TYPES["ShortTensor"]
CharTensor = _LEGACY_TYPES["CharTensor"]
ByteTensor = _LEGACY_TYPES["ByteTensor"]
BoolTensor = _LEGACY_TYPES["BoolTensor"]


class Tensor:
    """An ndarray with an optional gradient and a record of the op that produced it.

    ``Tensor(data, requires_grad=False)`` wraps ``data`` without copying when it is already an
    ndarray (``npconv.tensor`` copies). Only floating point and complex tensors can require grad.
    """

    __array_priority__ = 1000
    __slots__ = (
        "_array",
        "grad",
        "_requires_grad",
        "_node",
        "_output_nr",
        "_version",
        "_graph_version",
        "_base",
        "_hooks",
        "_post_hooks",
        "_inference",
        "__weakref__",
    )

    def __init__(self, *data: Any, requires_grad: bool = False) -> None:
        """``Tensor(array)`` wraps an ndarray as it is (npconv's ops make their results this way) and
        ``Tensor(tensor)`` shares that tensor's array; otherwise torch's legacy constructor
        (:func:`legacy_array`): ``Tensor(2, 3)`` or ``Tensor(size)`` an uninitialised tensor of the
        default dtype, ``Tensor([1, 2])`` the values in it, ``Tensor()`` an empty one."""
        if len(data) == 1 and type(data[0]) is np.ndarray:
            data = data[0]
        elif len(data) == 1 and isinstance(data[0], (Tensor, np.generic)):  # (np.generic: 0-d op results)
            data = np.asarray(data[0]._array if isinstance(data[0], Tensor) else data[0])
        else:
            data = legacy_array(data, dtypes.get_default_dtype().dtype, "Tensor")
        self._array = data
        self.grad: Tensor | None = None
        self._node: autograd.Node | None = None
        self._output_nr = 0
        self._version = VersionCounter()
        self._graph_version = 0
        self._base: Tensor | None = None
        self._hooks: list[Callable] | None = None
        self._post_hooks: list[Callable] | None = None
        self._requires_grad = False
        self._inference = autograd.is_inference_mode_enabled()  # torch's "inference tensor"
        if requires_grad:
            self.requires_grad = requires_grad

    # -- the array -------------------------------------------------------------------------------
    @property
    def data(self) -> Tensor:
        """A tensor sharing these values, outside the graph and with its own version counter (torch's
        ``.data``): in-place changes through it (``p.data.normal_()``, ``.copy_``, ``.clamp_``) modify
        this tensor without autograd noticing. ``.numpy()`` gives the ndarray itself."""
        if tracing.active is not None:
            tracing.active.read(self, ".data")
        out = Tensor(self._array)
        out._inference = self._inference
        return out

    @data.setter
    def data(self, value: Any) -> None:
        """Make this tensor hold ``value``'s values (a Tensor or an array; shape and dtype may change)."""
        if tracing.active is not None:
            tracing.active.read(self, ".data =")
        self._array = np.asarray(as_array(value))

    def numpy(self, *, force: bool = False) -> np.ndarray:
        if tracing.active is not None:
            tracing.active.read(self, "numpy()")
        return self._array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if tracing.active is not None:
            tracing.active.read(self, "a NumPy conversion")
        if dtype is not None and np.dtype(dtype) != self._array.dtype:
            return self._array.astype(dtype)
        if copy:
            return self._array.copy()
        return self._array

    def item(self) -> Any:
        if tracing.active is not None:
            tracing.active.read(self, "item()")
        if self._array.size != 1:
            raise RuntimeError(f"a Tensor with {self._array.size} elements cannot be converted to Scalar")
        return self._array.item()

    def tolist(self) -> Any:
        if tracing.active is not None:
            tracing.active.read(self, "tolist()")
        return self._array.tolist()

    # -- autograd state ---------------------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self._array.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(
                "only Tensors of floating point or complex dtype can require gradients, "
                f"but got dtype {dtypes.as_dtype(self._array.dtype)}"
            )
        if not value and self._node is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a computed "
                "variable in a subgraph that doesn't require differentiation use var_no_grad = var.detach()."
            )
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    def is_inference(self) -> bool:
        """Whether this tensor was made inside ``inference_mode`` (it cannot then be saved for backward
        nor modified in place outside inference mode, as in torch)."""
        return self._inference

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> autograd.Node | None:
        return self._node

    @property
    def _version_value(self) -> int:
        return self._version.value

    def backward(
        self,
        gradient: Any = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Any = None,
    ) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` of every leaf requiring grad (autograd.backward)."""
        autograd.backward(self, None if gradient is None else [gradient], retain_graph, create_graph, inputs)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> Any:
        """``hook(grad)`` runs when this tensor's gradient is computed; it may return a replacement."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._node is not None:
            return self._node._add_tensor_hook(self._output_nr, hook)
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return autograd._RemovableHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> Any:
        """``hook(tensor)`` runs after the gradient has been accumulated into this leaf's ``.grad``."""
        if self._node is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if self._post_hooks is None:
            self._post_hooks = []
        self._post_hooks.append(hook)
        return autograd._RemovableHandle(self._post_hooks, hook)

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` during backward."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._node is None:
            return
        import weakref

        if self._node._retained is None:
            self._node._retained = {}
        self._node._retained[self._output_nr] = weakref.ref(self)

    @property
    def retains_grad(self) -> bool:
        node = self._node
        return bool(node is not None and node._retained and self._output_nr in node._retained)

    def detach(self) -> Tensor:
        """A tensor sharing the values (and version counter) but outside the graph."""
        out = Tensor(self._array)
        out._version = self._version
        out._inference = self._inference
        return out

    def detach_(self) -> Tensor:
        if self._base is not None and self._node is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self._node, self._requires_grad = None, False
        return self

    clone = _shape.clone

    # -- shape, dtype, device ---------------------------------------------------------------------
    @property
    def shape(self) -> dtypes.Size:
        return dtypes.Size(self._array.shape)

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return dtypes.Size(self._array.shape)
        return self._array.shape[_shape.canonical_dim(dim, self._array.ndim)] if self._array.ndim else 1

    @property
    def dtype(self) -> dtypes.dtype:
        return dtypes.as_dtype(self._array.dtype)

    @property
    def ndim(self) -> int:
        return self._array.ndim

    def dim(self) -> int:
        return self._array.ndim

    ndimension = dim

    numel = nelement = _shape.numel

    def element_size(self) -> int:
        return self._array.itemsize

    @property
    def itemsize(self) -> int:
        return self._array.itemsize

    @property
    def nbytes(self) -> int:
        return self._array.nbytes

    @property
    def T(self) -> Tensor:  # noqa: N802 - torch's name
        return _shape.permute(self, tuple(reversed(range(self._array.ndim))))

    @property
    def mT(self) -> Tensor:  # noqa: N802
        return _shape.transpose(self, -2, -1)

    @property
    def device(self) -> dtypes.device:
        return dtypes.CPU

    @property
    def is_cuda(self) -> bool:
        return False

    @property
    def layout(self) -> str:
        return "strided"

    def stride(self, dim: int | None = None) -> Any:
        strides = tuple(s // self._array.itemsize for s in self._array.strides)
        return strides if dim is None else strides[_shape.canonical_dim(dim, self._array.ndim)]

    def is_contiguous(self, memory_format: Any = None) -> bool:
        return bool(self._array.flags.c_contiguous)

    def data_ptr(self) -> int:
        return int(self._array.__array_interface__["data"][0])

    def get_device(self) -> int:
        return -1

    is_floating_point = _ew.is_floating_point

    def is_complex(self) -> bool:
        return self._array.dtype.kind == "c"

    def __len__(self) -> int:
        if self._array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._array)

    def astype(self, dtype: Any) -> Tensor:
        """A copy converted to ``dtype``; the gradient converts back (the real part for a real source)."""
        target = to_dtype(dtype)
        source = self._array.dtype
        if source.kind == "c" and target.kind != "c":
            values = np.real(self._array).astype(target)
        else:
            values = self._array.astype(target)

        def backward(g: np.ndarray) -> tuple[np.ndarray]:
            return (g.astype(source) if source.kind == "c" else np.real(g).astype(source),)

        return make_result(values, (self,), backward, "ToCopyBackward0", saved=())

    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``; self if nothing changes."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        copy = kwargs.pop("copy", False)
        kwargs.pop("non_blocking", None)
        kwargs.pop("memory_format", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
        for arg in args:
            if isinstance(arg, Tensor):
                dtype = arg.dtype
            elif isinstance(arg, (dtypes.dtype, np.dtype, type)) and not isinstance(arg, str):
                dtype = arg
            elif isinstance(arg, (str, dtypes.device, int)) and not isinstance(arg, bool):
                if isinstance(arg, str) and not _looks_like_device(arg):
                    dtype = arg
                else:
                    device = arg
            elif isinstance(arg, bool):
                continue  # non_blocking
            else:
                raise TypeError(
                    f"to() argument must be a dtype, device or tensor, but got {type(arg).__name__}"
                )
        dtypes.device_of(device)
        if dtype is None or to_dtype(dtype) == self._array.dtype:
            return self.clone() if copy else self
        return self.astype(dtype)

    def cpu(self, memory_format: Any = None) -> Tensor:
        return self

    def cuda(self, device: Any = None, non_blocking: bool = False) -> Tensor:
        dtypes.device_of("cuda" if device is None else device)
        return self

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def half(self) -> Tensor:
        return self.to(np.float16)

    def long(self) -> Tensor:
        return self.to(np.int64)

    def int(self) -> Tensor:
        return self.to(np.int32)

    def short(self) -> Tensor:
        return self.to(np.int16)

    def char(self) -> Tensor:
        return self.to(np.int8)

    def byte(self) -> Tensor:
        return self.to(np.uint8)

    def bool(self) -> Tensor:
        return self.to(np.bool_)

    def cfloat(self) -> Tensor:
        return self.to(np.complex64)

    def cdouble(self) -> Tensor:
        return self.to(np.complex128)

    def type(self, dtype: Any = None, non_blocking: bool = False) -> Any:
        """Without ``dtype``: torch's type name (``'torch.FloatTensor'``); with one: ``to(dtype)``."""
        if dtype is None:
            return "torch." + _TYPE_NAMES.get(self._array.dtype.name, "Tensor")
        if isinstance(dtype, str) and dtype.replace("torch.", "") in _TYPE_NAMES.values():
            name = dtype.replace("torch.", "")
            dtype = next(k for k, v in _TYPE_NAMES.items() if v == name)
        return self.to(dtype)

    def type_as(self, other: Any) -> Tensor:
        return self.to(as_array(other).dtype)

    # -- Python protocols ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        options = _array2string_options(self._array)
        body = np.array2string(self._array, separator=", ", prefix="tensor(", **options)
        body = body.replace(", ..., ", ",  ..., ")  # torch's summarised row: "2,  ..., 1997"
        extras = []
        if self._array.dtype not in (np.float32, np.int64, np.bool_) or (
            self._array.size == 0 and self._array.dtype != np.float32
        ):
            extras.append(f"dtype={self.dtype}")
        if self._node is not None:
            extras.append(f"grad_fn=<{self._node.name()}>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __format__(self, spec: str) -> str:
        if self._array.ndim == 0:
            return format(self._array.item(), spec)
        return format(repr(self), spec)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # the graph (closures) is not picklable and not wanted: pickle the value only
        return (_unpickle, (self._array, self._requires_grad and self._node is None))

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        if tracing.active is not None:
            tracing.active.read(self, "bool()")
        if self._array.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return builtins.bool(self._array)

    def __float__(self) -> float:
        return builtins.float(self.item())

    def __int__(self) -> int:
        return builtins.int(self.item())

    def __index__(self) -> int:
        if tracing.active is not None:
            tracing.active.read(self, "an index conversion")
        if self._array.dtype.kind not in "iub" or self._array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return builtins.int(self._array.item())

    def __complex__(self) -> complex:
        return builtins.complex(self.item())

    def __iter__(self) -> Any:
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    def __contains__(self, element: Any) -> bool:
        return builtins.bool(np.any(self._array == as_array(element)))

    def __getitem__(self, index: Any) -> Tensor:
        return _shape.getitem(self, index)

    def __setitem__(self, index: Any, value: Any) -> None:
        apply_inplace(self, _shape.index_put, (index, value), reads_target=False)

    # -- arithmetic operators (each the functional op) --------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        if tracing.active is not None:
            return tracing.active.add(self, other, False)
        return _ew.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        if tracing.active is not None:
            return tracing.active.add(other, self, False)
        return _ew.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ew.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ew.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ew.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ew.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ew.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ew.div(other, self)

    def __floordiv__(self, other: Any) -> Tensor:
        return _ew.floor_divide(self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return _ew.floor_divide(other, self)

    def __mod__(self, other: Any) -> Tensor:
        return _ew.remainder(self, other)

    def __neg__(self) -> Tensor:
        return _ew.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _ew.abs(self)

    def __invert__(self) -> Tensor:
        if self._array.dtype.kind == "f":
            raise TypeError("~ (bitwise not) is only supported for integer and bool tensors")
        return Tensor(np.invert(self._array))

    def __and__(self, other: Any) -> Tensor:
        return Tensor(np.bitwise_and(self._array, as_array(other)))

    def __or__(self, other: Any) -> Tensor:
        return Tensor(np.bitwise_or(self._array, as_array(other)))

    def __xor__(self, other: Any) -> Tensor:
        return Tensor(np.bitwise_xor(self._array, as_array(other)))

    def __pow__(self, exponent: Any) -> Tensor:
        return _ew.pow(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return _ew.pow(base, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _linalg.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _linalg.matmul(other, self)

    # comparisons return bool tensors (no gradient)
    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ew.eq(self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ew.ne(self, other)

    def __lt__(self, other: Any) -> Tensor:
        return _ew.lt(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _ew.le(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _ew.gt(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _ew.ge(self, other)

    # -- in-place methods: the same ops, written back with torch's rules -----------------------------
    add_ = _ew.add_
    sub_ = _ew.sub_
    mul_ = _ew.mul_
    div_ = _ew.div_

    def pow_(self, exponent: Any) -> Tensor:
        return apply_inplace(self, _ew.pow, (exponent,))

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        return apply_inplace(self, _ew.clamp, (min, max))  # the backward reads the original input

    clip_ = clamp_

    def clamp_min_(self, min: Any) -> Tensor:  # noqa: A002
        return self.clamp_(min, None)

    def clamp_max_(self, max: Any) -> Tensor:  # noqa: A002
        return self.clamp_(None, max)

    neg_ = _ew.neg_

    def abs_(self) -> Tensor:
        return apply_inplace(self, _ew.abs, ())

    exp_ = _ew.exp_

    def log_(self) -> Tensor:
        return apply_inplace(self, _ew.log, ())

    erf_ = _ew.erf_
    nan_to_num_ = _ew.nan_to_num_
    lerp_ = _ew.lerp_
    addcmul_ = _ew.addcmul_
    addcdiv_ = _ew.addcdiv_

    def tril_(self, diagonal: int = 0) -> Tensor:
        return apply_inplace(self, _shape.tril, (diagonal,), reads_target=False)

    def triu_(self, diagonal: int = 0) -> Tensor:
        return apply_inplace(self, _shape.triu, (diagonal,), reads_target=False)

    sqrt_ = _ew.sqrt_

    sigmoid_ = _activation.sigmoid_

    tanh_ = _activation.tanh_

    def relu_(self) -> Tensor:
        return _activation.relu(self, inplace=True)

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        return apply_inplace(self, _ew.masked_fill, (mask, value), reads_target=False)

    def scatter_(
        self, dim: int, index: Any, src: Any = None, *, value: Any = None, reduce: Any = None
    ) -> Tensor:
        return apply_inplace(
            self, _shape.scatter, (dim, index, src), {"value": value, "reduce": reduce}, reads_target=False
        )

    def scatter_add_(self, dim: int, index: Any, src: Any) -> Tensor:
        return apply_inplace(self, _shape.scatter_add, (dim, index, src), reads_target=False)

    def index_put_(self, indices: Any, values: Any, accumulate: bool = False) -> Tensor:
        return apply_inplace(self, _shape.index_put, (tuple(indices), values, accumulate), reads_target=False)

    def __iadd__(self, other: Any) -> Tensor:
        if tracing.active is not None:
            return tracing.active.add(self, other, True)
        return self.add_(other)

    def __isub__(self, other: Any) -> Tensor:
        return self.sub_(other)

    def __imul__(self, other: Any) -> Tensor:
        return self.mul_(other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self.div_(other)

    def copy_(self, src: Any, non_blocking: bool = False) -> Tensor:
        """Copy ``src`` (broadcast, converted to this dtype) into this tensor; gradient to ``src``."""
        source = as_array(src)
        try:
            np.broadcast_to(source, self._array.shape)
        except ValueError as error:
            raise RuntimeError(
                f"copy_: the source of shape {list(source.shape)} does not broadcast to "
                f"{list(self._array.shape)}"
            ) from error
        if not (is_grad_enabled() and (self._requires_grad or _requires_grad(src))):
            autograd.check_inplace_allowed(self)
            if not self._array.flags.writeable:
                raise RuntimeError("copy_: the destination is read-only (an expanded tensor)")
            np.copyto(self._array, source, casting="unsafe")
            self._version.value += 1
            return self
        return apply_inplace(self, _copy_from, (src,), reads_target=False)

    def fill_(self, value: Any) -> Tensor:
        """Set every element to ``value`` (a number or a 0-d tensor; its gradient is the sum)."""
        if as_array(value).ndim:
            raise RuntimeError(
                f"fill_ only supports 0-dimension value tensor but got tensor with "
                f"{as_array(value).ndim} dimensions."
            )
        return self.copy_(value if isinstance(value, Tensor) else np.asarray(value))

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def _fill_random(self, values: np.ndarray) -> Tensor:
        if is_grad_enabled() and self._requires_grad and self._node is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        with no_grad():
            return self.copy_(values)

    def normal_(self, mean: float = 0.0, std: float = 1.0, *, generator: Any = None) -> Tensor:
        if std < 0:
            raise RuntimeError(f"normal_ expects std >= 0.0, but found std {std}")
        rng = numpy_generator(generator)
        return self._fill_random(mean + std * rng.standard_normal(self._array.shape))

    def uniform_(self, from_: float = 0.0, to: float = 1.0, *, generator: Any = None) -> Tensor:
        if from_ > to:
            raise RuntimeError(
                f"uniform_ expects to return a [from, to) range, but found from={from_} > to={to}"
            )
        rng = numpy_generator(generator)
        return self._fill_random(rng.uniform(from_, to, self._array.shape))

    def bernoulli_(self, p: float = 0.5, *, generator: Any = None) -> Tensor:
        return self._fill_random(numpy_generator(generator).random(self._array.shape) < p)

    def random_(self, from_: int = 0, to: int | None = None, *, generator: Any = None) -> Tensor:
        if to is None:
            from_, to = 0, from_ if from_ else 2**24
        return self._fill_random(numpy_generator(generator).integers(from_, to, self._array.shape))

    def exponential_(self, lambd: float = 1.0, *, generator: Any = None) -> Tensor:
        return self._fill_random(numpy_generator(generator).exponential(1 / lambd, self._array.shape))

    # -- new tensors like this one ----------------------------------------------------------------------
    def new_zeros(
        self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
    ) -> Tensor:
        return _creation.zeros(
            *size, dtype=dtype or self._array.dtype, device=device, requires_grad=requires_grad
        )

    def new_ones(
        self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
    ) -> Tensor:
        return _creation.ones(
            *size, dtype=dtype or self._array.dtype, device=device, requires_grad=requires_grad
        )

    def new_empty(
        self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
    ) -> Tensor:
        return self.new_zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_full(
        self,
        size: Any,
        fill_value: Any,
        *,
        dtype: Any = None,
        device: Any = None,
        requires_grad: bool = False,
    ) -> Tensor:
        return _creation.full(
            size, fill_value, dtype=dtype or self._array.dtype, device=device, requires_grad=requires_grad
        )

    def new_tensor(
        self, data: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
    ) -> Tensor:
        return tensor(data, dtype=dtype or self._array.dtype, device=device, requires_grad=requires_grad)

    # -- the functional ops, as methods (the same function objects) ----------------------------------------
    add = _ew.add
    sub = subtract = _ew.sub
    mul = multiply = _ew.mul
    div = divide = true_divide = _ew.div
    floor_divide = _ew.floor_divide
    remainder = _ew.remainder
    fmod = _ew.fmod
    pow = _ew.pow
    neg = negative = _ew.neg
    abs = _ew.abs
    exp = _ew.exp
    expm1 = _ew.expm1
    log = _ew.log
    log1p = _ew.log1p
    log2 = _ew.log2
    log10 = _ew.log10
    sqrt = _ew.sqrt
    rsqrt = _ew.rsqrt
    square = _ew.square
    reciprocal = _ew.reciprocal
    sin = _ew.sin
    cos = _ew.cos
    sign = _ew.sign
    floor = _ew.floor
    ceil = _ew.ceil
    trunc = _ew.trunc
    round = _ew.round
    clamp = clip = _ew.clamp
    clamp_min = _ew.clamp_min
    clamp_max = _ew.clamp_max
    maximum = _ew.maximum
    minimum = _ew.minimum
    masked_fill = _ew.masked_fill
    lerp = _ew.lerp
    eq = _ew.eq
    ne = _ew.ne
    lt = _ew.lt
    le = _ew.le
    gt = _ew.gt
    ge = _ew.ge
    isnan = _ew.isnan
    isfinite = _ew.isfinite
    isinf = _ew.isinf
    logical_not = _ew.logical_not
    logical_and = _ew.logical_and
    logical_or = _ew.logical_or
    allclose = _ew.allclose
    isclose = _ew.isclose
    equal = _ew.equal

    relu = _activation.relu
    sigmoid = _activation.sigmoid
    tanh = _activation.tanh
    softmax = _activation.softmax
    log_softmax = _activation.log_softmax

    sum = _reduction.sum
    mean = _reduction.mean
    prod = _reduction.prod
    max = _reduction.max
    min = _reduction.min
    amax = _reduction.amax
    amin = _reduction.amin
    argmax = _reduction.argmax
    argmin = _reduction.argmin
    var = _reduction.var
    std = _reduction.std
    norm = _reduction.norm
    all = _reduction.all
    any = _reduction.any
    count_nonzero = _reduction.count_nonzero
    cumsum = _reduction.cumsum
    cumprod = _reduction.cumprod
    logsumexp = _reduction.logsumexp
    topk = _reduction.topk
    sort = _reduction.sort
    argsort = _reduction.argsort

    reshape = _shape.reshape
    view = _shape.view
    view_as = _shape.view_as
    reshape_as = _shape.reshape_as
    contiguous = _shape.contiguous
    flatten = _shape.flatten
    unflatten = _shape.unflatten
    squeeze = _shape.squeeze
    unsqueeze = _shape.unsqueeze
    permute = _shape.permute
    transpose = swapaxes = _shape.transpose
    t = _shape.t
    movedim = _shape.movedim
    expand = _shape.expand
    expand_as = _shape.expand_as
    broadcast_to = _shape.broadcast_to
    repeat = _shape.repeat
    tile = _shape.tile
    split = _shape.split
    chunk = _shape.chunk
    unbind = _shape.unbind
    flip = _shape.flip
    roll = _shape.roll
    narrow = _shape.narrow
    unfold = _shape.unfold
    gather = _shape.gather
    scatter = _shape.scatter
    scatter_add = _shape.scatter_add
    index_select = _shape.index_select
    take_along_dim = _shape.take_along_dim

    matmul = _linalg.matmul
    mm = _linalg.mm
    bmm = _linalg.bmm
    dot = _linalg.dot

    def where(self, condition: Any, other: Any) -> Tensor:
        """``self`` where ``condition``, else ``other`` (``npconv.where(condition, self, other)``)."""
        return _ew.where(condition, self, other)

    masked_select = _shape.masked_select
    nonzero = _shape.nonzero
    argwhere = _shape.argwhere
    tril = _shape.tril
    triu = _shape.triu
    diag = _shape.diag
    repeat_interleave = _shape.repeat_interleave
    unique = _reduction.unique
    median = _reduction.median
    erf = _ew.erf
    nan_to_num = _ew.nan_to_num
    addcmul = _ew.addcmul
    addcdiv = _ew.addcdiv


# -- printing ------------------------------------------------------------------------------------------------
_PRINT_OPTIONS: dict[str, Any] = {}  # what set_printoptions set; empty: npconv's default printing
_TORCH_PRINT_DEFAULTS = {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80}
_PROFILES = {
    "default": {},
    "short": {"precision": 2, "edgeitems": 2},
    "full": {"threshold": builtins.float("inf")},
}


def set_printoptions(
    precision: int | None = None,
    threshold: float | None = None,
    edgeitems: int | None = None,
    linewidth: int | None = None,
    profile: str | None = None,
    sci_mode: bool | None = None,
) -> None:
    """How tensors print (torch's ``set_printoptions``): ``precision`` digits after the point (fixed,
    as torch, unless every value is an integer), ``threshold`` elements above which a tensor is
    summarised with ``edgeitems`` items at each end of each dim, ``linewidth`` characters per line,
    ``sci_mode`` True/False to force or forbid scientific notation (None: automatic). Once an option is
    set, those not set take torch's defaults (4, 1000, 3, 80). ``profile`` ``'short'`` or ``'full'``
    sets torch's presets first; ``'default'`` returns to npconv's default printing (NumPy's, with up
    to 8 digits, which npconv's repr is built on). Options left None keep their value; ``sci_mode``
    returns to None, as in torch."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(
                f"set_printoptions profile must be 'default', 'short' or 'full', but got {profile!r}"
            )
        _PRINT_OPTIONS.clear()
        _PRINT_OPTIONS.update(_PROFILES[profile])
    for name, value in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                        ("linewidth", linewidth)):
        if value is None:
            continue
        if isinstance(value, builtins.bool) or not isinstance(value, (int, builtins.float, np.number)):
            raise TypeError(f"set_printoptions {name} must be a number, but got {type(value).__name__}")
        if name != "threshold" and (value != int(value) or value < 0):
            raise ValueError(f"set_printoptions {name} must be a non-negative int, but got {value!r}")
        _PRINT_OPTIONS[name] = value
    if sci_mode is not None or "sci_mode" in _PRINT_OPTIONS:
        _PRINT_OPTIONS["sci_mode"] = sci_mode


def _array2string_options(array: np.ndarray) -> dict[str, Any]:
    """The np.array2string arguments that carry out set_printoptions for ``array``."""
    if not _PRINT_OPTIONS:
        return {}
    settings = {**_TORCH_PRINT_DEFAULTS, **_PRINT_OPTIONS}
    threshold = settings["threshold"]
    digits = int(settings["precision"])
    options: dict[str, Any] = {
        "threshold": sys.maxsize if threshold >= sys.maxsize else int(threshold),
        "edgeitems": int(settings["edgeitems"]),
        "max_line_width": int(settings["linewidth"]),
        "precision": digits,
    }
    if array.dtype.kind in "fc":  # torch: every digit of `precision`, unless all values are integers
        finite = array[np.isfinite(array)]
        integral = finite.size == 0 or builtins.bool(np.all(finite == np.round(finite)))
        options["floatmode"] = "maxprec" if integral else "fixed"
    sci_mode = settings.get("sci_mode")
    if sci_mode is False:
        options["suppress_small"] = True
    elif sci_mode is True and array.dtype.kind == "f":
        sign = " " if builtins.bool(np.any(np.signbit(array))) else ""  # torch aligns on the widest
        options["formatter"] = {"float_kind": lambda v: f"{v:{sign}.{digits}e}"}
    return options


def _unpickle(array: np.ndarray, requires_grad: bool) -> Tensor:
    """A pickled Tensor: its array and whether it is a leaf requiring grad."""
    return Tensor(array, requires_grad=requires_grad)


def _requires_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value._requires_grad


def _copy_from(target: Tensor, src: Any) -> Tensor:
    """The out-of-place form of ``target.copy_(src)``: ``src`` broadcast to ``target``, in its dtype."""
    source = as_array(src)
    shape, dtype = target._array.shape, target._array.dtype
    values = np.broadcast_to(source, shape).astype(dtype)
    source_dtype = source.dtype

    def backward(g: np.ndarray) -> tuple[None, np.ndarray]:
        grad = _sum_to_shape(g, source.shape)
        grad = grad if source_dtype.kind == "c" else np.real(grad)
        return None, grad.astype(source_dtype, copy=False)

    return make_result(values, (target, src), backward, "CopyBackwards", saved=())


def _looks_like_device(name: str) -> bool:
    return name.split(":")[0] in dtypes.device._TYPES


autograd.tensor_class = Tensor
