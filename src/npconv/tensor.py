"""A small reverse-mode autograd engine over NumPy arrays.

A :class:`Tensor` wraps an ``ndarray`` (``.data``) and, when it was made by a differentiable
operation from tensors that require gradients, remembers that operation: its parents and a
``backward`` closure mapping the output gradient to one gradient per parent. ``backward()``
walks that graph in reverse topological order and accumulates into ``.grad`` of every leaf
with ``requires_grad=True`` - exactly like ``torch.Tensor.backward``.

Complex tensors follow torch's convention: the gradient of a real loss ``L`` with respect to
``z`` is ``dL/d(conj z)`` scaled as torch does, so every linear op's backward applies the
*conjugate* transpose (``_conj`` below).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Tensor",
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
]

_FLOAT_KINDS = "fc"
_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations record the graph (False inside ``no_grad``)."""
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    previous = is_grad_enabled()
    _state.grad_enabled = bool(mode)
    try:
        yield
    finally:
        _state.grad_enabled = previous


class no_grad(contextlib.ContextDecorator):
    """Context manager / decorator that disables graph recording, like ``torch.no_grad``."""

    def __enter__(self) -> None:
        self._previous = is_grad_enabled()
        _state.grad_enabled = False

    def __exit__(self, *exc: object) -> None:
        _state.grad_enabled = self._previous


class enable_grad(contextlib.ContextDecorator):
    def __enter__(self) -> None:
        self._previous = is_grad_enabled()
        _state.grad_enabled = True

    def __exit__(self, *exc: object) -> None:
        _state.grad_enabled = self._previous


def to_dtype(dtype: Any, argument: str = "dtype") -> np.dtype:
    """Normalise a dtype given as a NumPy dtype, a type or a name ('float32', 'torch.float64')."""
    if isinstance(dtype, str) and dtype.startswith("torch."):
        dtype = dtype[len("torch."):]
    try:
        result = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{argument} must be a NumPy dtype or its name, got {dtype!r}") from error
    return result


def as_array(value: Any) -> np.ndarray:
    """The ndarray behind a Tensor, or ``np.asarray(value)``."""
    if isinstance(value, Tensor):
        return value.data
    return np.asarray(value)


def _conj(a: np.ndarray) -> np.ndarray:
    return np.conj(a) if np.iscomplexobj(a) else a


def result_dtype(*arrays: np.ndarray) -> np.dtype:
    return np.result_type(*arrays)


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of broadcasting: sum ``grad`` down to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Tensor:
    """An ndarray with an optional gradient and a record of the op that produced it.

    ``Tensor(data, requires_grad=False)`` wraps ``data`` without copying when it is already an
    ndarray. Gradients are only tracked for floating point or complex data.
    """

    __array_priority__ = 1000
    __slots__ = ("data", "grad", "_requires_grad", "_parents", "_backward", "_name", "__weakref__")

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.data
        self.data = np.asarray(data)
        self.grad: Tensor | None = None
        self._parents: tuple[Tensor | None, ...] = ()
        self._backward: Callable[[np.ndarray], Sequence[np.ndarray | None]] | None = None
        self._name = ""
        self._requires_grad = False
        self.requires_grad = requires_grad

    # -- basic properties -------------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self.data.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(
                "only Tensors of floating point or complex dtype can require gradients, "
                f"got dtype {self.data.dtype}"
            )
        if not value and self._backward is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables; use detach() instead"
            )
        self._requires_grad = bool(value)

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    @property
    def grad_fn(self) -> str | None:
        return self._name or None if self._backward is not None else None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    @property
    def device(self) -> str:
        return "cpu"

    def size(self, dim: int | None = None) -> Any:
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            return self.data.astype(dtype)
        if copy:
            return self.data.copy()
        return self.data

    def item(self) -> Any:
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def detach(self) -> Tensor:
        return Tensor(self.data)

    def clone(self) -> Tensor:
        return make_result(self.data.copy(), (self,), lambda g: (g,), "CloneBackward")

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extras = []
        if self.data.dtype != np.float32 and self.data.dtype != np.int64:
            extras.append(f"dtype={self.data.dtype}")
        if self._backward is not None and self._name:
            extras.append(f"grad_fn=<{self._name}>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __reduce_ex__(self, protocol: Any) -> Any:
        # the graph (closures) is not picklable and not wanted: pickle the value only
        return (Tensor, (self.data, self._requires_grad and self._backward is None))

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.data)

    def __int__(self) -> int:
        return int(self.data)

    def astype(self, dtype: Any) -> Tensor:
        dtype = to_dtype(dtype)
        source = self.data.dtype
        return make_result(
            self.data.astype(dtype),
            (self,),
            lambda g: (g.astype(source) if source.kind == "c" else np.real(g).astype(source),),
            "ToCopyBackward",
        )

    def float(self) -> Tensor:
        return self.astype(np.float32)

    def double(self) -> Tensor:
        return self.astype(np.float64)

    # -- autograd ---------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    def zero_(self) -> Tensor:
        self.data[...] = 0
        return self

    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf requiring gradients.

        Callbacks queued with :func:`queue_callback` during the pass run once it has finished.
        """
        if not self._requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            seed = np.ones_like(self.data)
        else:
            seed = np.asarray(as_array(gradient), dtype=self.data.dtype)
            if seed.shape != self.data.shape:
                raise ValueError(
                    f"gradient must have the tensor's shape {self.data.shape}, got {seed.shape}"
                )
        queues = _state.__dict__.setdefault("callback_queues", [])
        queue: list[Callable[[], Any]] = []
        queues.append(queue)
        try:
            order = _topological_order(self)
            grads: dict[int, np.ndarray] = {id(self): seed}
            for node in order:
                grad = grads.pop(id(node), None)
                if grad is None:
                    continue
                if node._backward is None:
                    if node._requires_grad:
                        if node.grad is None:
                            # a fresh writable array: backward closures may return views,
                            # broadcasts or one array shared by several parents
                            node.grad = Tensor(np.array(grad, dtype=node.data.dtype, copy=True))
                        else:
                            node.grad = Tensor(node.grad.data + np.asarray(grad, dtype=node.data.dtype))
                    continue
                parent_grads = node._backward(grad)
                for parent, parent_grad in zip(node._parents, parent_grads, strict=True):
                    if parent is None or parent_grad is None or not parent._requires_grad:
                        continue
                    key = id(parent)
                    if key in grads:
                        grads[key] = grads[key] + parent_grad
                    else:
                        grads[key] = parent_grad
                if not retain_graph:
                    node._backward = _freed_graph
                    node._parents = ()
            index = 0  # callbacks may queue further callbacks
            while index < len(queue):
                queue[index]()
                index += 1
        finally:
            queues.pop()

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return div(other, self)

    def __neg__(self) -> Tensor:
        return make_result(-self.data, (self,), lambda g: (-g,), "NegBackward0")

    def __pos__(self) -> Tensor:
        return self

    def __pow__(self, exponent: Any) -> Tensor:
        return power(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return power(base, self)

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(other, self)

    def __iadd__(self, other: Any) -> Tensor:
        self._check_inplace()
        self.data += as_array(other)
        return self

    def __isub__(self, other: Any) -> Tensor:
        self._check_inplace()
        self.data -= as_array(other)
        return self

    def __imul__(self, other: Any) -> Tensor:
        self._check_inplace()
        self.data *= as_array(other)
        return self

    def _check_inplace(self) -> None:
        if is_grad_enabled() and self._requires_grad:
            raise RuntimeError(
                "a leaf Variable that requires grad is being used in an in-place operation"
            )

    # comparisons return plain boolean tensors (no gradient)
    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data == as_array(other))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data != as_array(other))

    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.data < as_array(other))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.data <= as_array(other))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.data > as_array(other))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.data >= as_array(other))

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        shape, dtype = self.data.shape, self.data.dtype

        def backward(g: np.ndarray) -> tuple[np.ndarray]:
            full = np.zeros(shape, dtype=dtype)
            np.add.at(full, index, g)  # arbitrary (possibly repeated) fancy indices
            return (full,)

        return make_result(self.data[index], (self,), backward, "IndexBackward0")

    # -- reductions and shape ops -------------------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        shape = self.data.shape
        axis = _axes(dim, self.ndim)
        out = self.data.sum(axis=axis, keepdims=keepdim)

        def backward(g: np.ndarray) -> tuple[np.ndarray]:
            if not keepdim and axis is not None:
                g = np.expand_dims(g, axis)
            return (np.broadcast_to(g, shape),)

        return make_result(np.asarray(out), (self,), backward, "SumBackward0")

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        axis = _axes(dim, self.ndim)
        count = self.data.size if axis is None else int(np.prod([self.data.shape[a] for a in axis]))
        return self.sum(dim, keepdim) / count

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """The largest element, or with ``dim`` a ``(values, indices)`` named tuple, like torch."""
        if dim is None:
            flat = self.reshape(-1)
            return flat[int(np.argmax(flat.data))]
        index = np.expand_dims(np.argmax(self.data, axis=dim), dim)
        out = take_along_dim(self, index, dim)
        if not keepdim:
            out, index = out.squeeze(dim), np.squeeze(index, dim)
        return MaxResult(out, Tensor(index))

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        original = self.data.shape
        return make_result(
            self.data.reshape(shape), (self,), lambda g: (g.reshape(original),), "ViewBackward0"
        )

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        start = start_dim % self.ndim
        end = end_dim % self.ndim
        shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
        if 0 in self.shape:
            shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1])),) + self.shape[end + 1:]
        return self.reshape(shape)

    def squeeze(self, dim: int | None = None) -> Tensor:
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        if self.shape[dim] != 1:
            return self
        shape = list(self.shape)
        del shape[dim]
        return self.reshape(tuple(shape))

    def unsqueeze(self, dim: int) -> Tensor:
        dim = dim if dim >= 0 else dim + self.ndim + 1
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def permute(self, *dims: Any) -> Tensor:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        dims = tuple(d % self.ndim for d in dims)
        inverse = tuple(np.argsort(dims))
        return make_result(
            self.data.transpose(dims), (self,), lambda g: (g.transpose(inverse),), "PermuteBackward0"
        )

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    def contiguous(self) -> Tensor:
        return self

    def exp(self) -> Tensor:
        out = np.exp(self.data)
        return make_result(out, (self,), lambda g: (g * _conj(out),), "ExpBackward0")

    def log(self) -> Tensor:
        x = self.data
        return make_result(np.log(x), (self,), lambda g: (g / _conj(x),), "LogBackward0")

    def sqrt(self) -> Tensor:
        return self**0.5

    def abs(self) -> Tensor:
        x = self.data
        return make_result(np.abs(x), (self,), lambda g: (g * np.sign(x),), "AbsBackward0")

    def tanh(self) -> Tensor:
        out = np.tanh(self.data)
        return make_result(out, (self,), lambda g: (g * (1 - out * out),), "TanhBackward0")

    def sigmoid(self) -> Tensor:
        x = self.data
        out = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
        out = out.astype(x.dtype, copy=False)
        return make_result(out, (self,), lambda g: (g * out * (1 - out),), "SigmoidBackward0")

    def relu(self) -> Tensor:
        x = self.data
        mask = x > 0
        return make_result(np.where(mask, x, 0).astype(x.dtype, copy=False), (self,),
                           lambda g: (g * mask,), "ReluBackward0")

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        if dim is None:
            return Tensor(np.asarray(np.argmax(self.data)))
        return Tensor(np.argmax(self.data, axis=dim, keepdims=keepdim))


def queue_callback(callback: Callable[[], Any]) -> None:
    """Run ``callback()`` once the current ``backward()`` pass has accumulated every ``.grad``.

    Like torch's ``Variable._execution_engine.queue_callback``: call it from an op's backward
    function (e.g. to all-reduce gradients after the whole pass). A callable already queued in
    this pass is not queued again. Callbacks are dropped if the pass raises.
    """
    queues = getattr(_state, "callback_queues", None)
    if not queues:
        raise RuntimeError("queue_callback can only be called while backward() is running")
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if callback not in queues[-1]:
        queues[-1].append(callback)


class MaxResult(NamedTuple):
    """``Tensor.max(dim)``'s result: the maxima and their positions along ``dim``."""

    values: Tensor
    indices: Tensor


def _freed_graph(grad: np.ndarray) -> Sequence[np.ndarray | None]:
    raise RuntimeError(
        "Trying to backward through the graph a second time; specify retain_graph=True "
        "if you need to backward a second time"
    )


def _axes(dim: Any, ndim: int) -> tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, int):
        dim = (dim,)
    return tuple(d % ndim if ndim else d for d in dim)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Nodes reachable from ``root`` that require grad, each after all nodes that use it."""
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if parent is not None and parent._requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def make_result(
    data: np.ndarray,
    parents: Sequence[Any],
    backward: Callable[[np.ndarray], Sequence[np.ndarray | None]],
    name: str = "",
) -> Tensor:
    """Wrap ``data`` as the output of a differentiable op.

    ``backward(grad_output)`` must return one gradient (or None) per entry of ``parents``,
    each of that parent's shape. Non-Tensor parents are treated as constants.
    """
    out = Tensor(data)
    if is_grad_enabled():
        tensor_parents = tuple(p if isinstance(p, Tensor) else None for p in parents)
        if any(p is not None and p._requires_grad for p in tensor_parents):
            out._parents = tensor_parents
            out._backward = backward
            out._name = name
            out._requires_grad = True
    return out


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Build a Tensor that owns a copy of ``data``, like ``torch.tensor``.

    Python floats default to float32 (torch's default dtype), Python ints to int64; an ndarray
    keeps its dtype unless ``dtype`` is given.
    """
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        array = np.array(data, dtype=to_dtype(dtype))
    elif isinstance(data, np.ndarray) or np.isscalar(data) and isinstance(data, np.generic):
        array = np.array(data)
    else:
        array = np.array(data)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.complex128:
            array = array.astype(np.complex64)
    return Tensor(array, requires_grad=requires_grad)


# -- elementwise binary ops with broadcasting -------------------------------------------------
def _scalar_dtype(array_dtype: np.dtype, scalar_dtype: np.dtype) -> np.dtype:
    """The dtype a Python scalar takes next to an array, as in torch (a scalar never widens it).

    A float scalar next to an integer/bool array is float32 and a complex one complex64 (torch's
    defaults); a complex scalar makes a real floating array complex of the same precision; an
    int scalar next to a bool array is int64; otherwise the scalar adopts the array's dtype.
    """
    if scalar_dtype.kind == "c" and array_dtype.kind != "c":
        if array_dtype.kind == "f":
            return np.promote_types(array_dtype, np.complex64)
        return np.dtype(np.complex64)
    if scalar_dtype.kind == "f" and array_dtype.kind in "biu":
        return np.dtype(np.float32)
    if scalar_dtype.kind in "iu" and array_dtype.kind == "b":
        return np.dtype(np.int64)
    return array_dtype


def _binary_operands(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_array(a), as_array(b)
    # a Python scalar must not promote a float32 tensor to float64 (torch semantics)
    if not isinstance(a, (Tensor, np.ndarray)) and isinstance(b, (Tensor, np.ndarray)):
        x = np.asarray(x, dtype=_scalar_dtype(y.dtype, x.dtype))
        if y.dtype.kind in "biu":  # an integer array takes the scalar's float/complex dtype
            y = y.astype(np.promote_types(y.dtype, x.dtype) if x.dtype.kind in "biu" else x.dtype)
    elif not isinstance(b, (Tensor, np.ndarray)) and isinstance(a, (Tensor, np.ndarray)):
        y = np.asarray(y, dtype=_scalar_dtype(x.dtype, y.dtype))
        if x.dtype.kind in "biu":
            x = x.astype(np.promote_types(x.dtype, y.dtype) if y.dtype.kind in "biu" else y.dtype)
    return x, y


def add(a: Any, b: Any) -> Tensor:
    x, y = _binary_operands(a, b)
    return make_result(
        x + y, (a, b), lambda g: (_sum_to_shape(g, x.shape), _sum_to_shape(g, y.shape)), "AddBackward0"
    )


def sub(a: Any, b: Any) -> Tensor:
    x, y = _binary_operands(a, b)
    return make_result(
        x - y, (a, b), lambda g: (_sum_to_shape(g, x.shape), _sum_to_shape(-g, y.shape)), "SubBackward0"
    )


def mul(a: Any, b: Any) -> Tensor:
    x, y = _binary_operands(a, b)
    return make_result(
        x * y,
        (a, b),
        lambda g: (_sum_to_shape(g * _conj(y), x.shape), _sum_to_shape(g * _conj(x), y.shape)),
        "MulBackward0",
    )


def div(a: Any, b: Any) -> Tensor:
    x, y = _binary_operands(a, b)
    out = x / y

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gx = g / _conj(y)
        return _sum_to_shape(gx, x.shape), _sum_to_shape(-gx * _conj(out), y.shape)

    return make_result(out, (a, b), backward, "DivBackward0")


def power(a: Any, b: Any) -> Tensor:
    x, y = _binary_operands(a, b)
    out = np.power(x, y)

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(y == 0, 0, y * np.power(x, y - 1))  # d(x**0)/dx = 0, also at x = 0
        gx = g * _conj(slope)
        gy = None
        if isinstance(b, Tensor) and b.requires_grad:
            with np.errstate(divide="ignore", invalid="ignore"):
                gy = _sum_to_shape(g * _conj(out * np.log(x)), y.shape)
        return _sum_to_shape(gx, x.shape), gy

    return make_result(out, (a, b), backward, "PowBackward0")


def matmul(a: Any, b: Any) -> Tensor:
    x, y = as_array(a), as_array(b)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("matmul: both arguments must be at least 1-dimensional")
    out = np.matmul(x, y)

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # treat 1-d operands as (1, k) and (k, 1) matrices; restore the axes g lacks
        xx = x[None, :] if x.ndim == 1 else x
        yy = y[:, None] if y.ndim == 1 else y
        gg = np.asarray(g)
        if y.ndim == 1:
            gg = np.expand_dims(gg, -1)
        if x.ndim == 1:
            gg = np.expand_dims(gg, -2)
        gx = np.matmul(gg, _conj(np.swapaxes(yy, -1, -2)))
        gy = np.matmul(_conj(np.swapaxes(xx, -1, -2)), gg)
        if x.ndim == 1:
            gx = gx[..., 0, :]
        if y.ndim == 1:
            gy = gy[..., 0]
        return _sum_to_shape(gx, x.shape), _sum_to_shape(gy, y.shape)

    return make_result(out, (a, b), backward, "MmBackward0")


def take_along_dim(a: Tensor, index: np.ndarray, dim: int) -> Tensor:
    shape, dtype = a.data.shape, a.data.dtype
    out = np.take_along_axis(a.data, index, axis=dim)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(shape, dtype=dtype)
        np.put_along_axis(full, index, g, axis=dim)
        return (full,)

    return make_result(out, (a,), backward, "GatherBackward0")
