"""The reverse-mode autograd engine: graph nodes, ``backward``, grad modes, hooks, version counters.

Every differentiable op builds its result with :func:`make_result`, passing a ``backward`` closure
next to its forward (``grad_output -> one gradient per parent``); the result's ``grad_fn`` is a
:class:`Node` holding that closure and the nodes of its inputs (``next_functions``). ``backward()``
is a topological sort of the nodes reachable from the roots and one loop over them; gradients reach
a leaf (a tensor with ``requires_grad`` and no ``grad_fn``) through :func:`_accumulate`, which adds
into ``leaf.grad`` under a lock, so backward passes running in several threads into shared
parameters add up exactly (the first gradient is adopted without a copy when nothing else holds it).

In-place ops follow torch's rules (:func:`write_inplace`, :func:`apply_inplace`): they write into the
target's memory; every tensor has a version counter shared with its views and bumped by each
in-place op; a node records the versions of the tensors its closure reads (``saved``, which may be
an in-place op's own result) and ``backward`` refuses to run it if one has changed, so an in-place
modification is an error, never a silently wrong gradient.

Complex tensors follow torch's convention: the gradient of a real loss ``L`` with respect to ``z``
is ``dL/d(conj z)``, so every linear op's backward applies the *conjugate* transpose (:func:`conj`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Node",
    "Function",
    "FunctionCtx",
    "backward",
    "grad",
    "no_grad",
    "enable_grad",
    "set_grad_enabled",
    "is_grad_enabled",
    "inference_mode",
    "is_inference_mode_enabled",
    "queue_callback",
    "make_result",
    "apply_inplace",
    "write_inplace",
    "as_array",
    "is_tensor",
    "conj",
    "sum_to_shape",
]

#: The Tensor class, installed by :mod:`npconv.tensor` when it is defined. Results are built through
#: it so that this engine (and the op modules that Tensor's methods are) need not import tensor.py.
tensor_class: Any = None

_state = threading.local()
#: Guards every ``leaf.grad`` update: backward passes in different threads share parameters.
_accumulate_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child has only the forking thread: a lock another thread held at the fork would
    never be released, so the child gets a new one."""
    global _accumulate_lock
    _accumulate_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- grad modes (thread-local, like torch's) ----------------------------------------------------
def is_grad_enabled() -> bool:
    """Whether operations record the graph (False inside ``no_grad`` and ``inference_mode``)."""
    return getattr(_state, "grad_enabled", True)


def is_inference_mode_enabled() -> bool:
    return getattr(_state, "inference", False)


class _GradMode(contextlib.ContextDecorator):
    """Base of the grad-mode context managers: sets the mode on enter, restores it on exit."""

    _enabled = True
    _inference: bool | None = None

    def __enter__(self) -> None:
        saved = getattr(self, "_saved", None)
        if saved is None:
            saved = self._saved = threading.local()
        saved.__dict__.setdefault("stack", []).append((is_grad_enabled(), is_inference_mode_enabled()))
        _state.grad_enabled = self._enabled
        if self._inference is not None:
            _state.inference = self._inference

    def __exit__(self, *exc: object) -> None:
        _state.grad_enabled, _state.inference = self._saved.stack.pop()


class _BareDecoratable(_GradMode):
    """Also usable as a bare decorator (``@no_grad`` as well as ``@no_grad()``), like torch's."""

    def __new__(cls, func: Any = None) -> Any:
        if func is not None:
            if not callable(func):
                raise TypeError(f"{cls.__name__} takes no arguments, but got {func!r}")
            return cls()(func)
        return super().__new__(cls)

    def __init__(self, func: Any = None) -> None:
        pass


class no_grad(_BareDecoratable):  # noqa: N801 - torch's name
    """Context manager / decorator that disables graph recording, like ``torch.no_grad``."""

    _enabled = False


class enable_grad(_BareDecoratable):  # noqa: N801
    """Context manager / decorator that enables graph recording inside ``no_grad``."""

    _enabled = True


class inference_mode(_GradMode):  # noqa: N801
    """``torch.inference_mode(mode=True)``: like ``no_grad`` (usable as ``@inference_mode()``).

    Tensors made inside are inference tensors (``is_inference()``): like torch, they cannot be saved for
    a backward nor updated in place outside inference mode (a RuntimeError).
    """

    def __new__(cls, mode: Any = True) -> Any:
        if callable(mode):  # bare @inference_mode
            return cls()(mode)
        return super().__new__(cls)

    def __init__(self, mode: bool = True) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"inference_mode mode must be a bool, but got {mode!r}")
        self._inference = mode
        self._mode = mode

    def __enter__(self) -> None:
        self._enabled = is_grad_enabled() and not self._mode
        super().__enter__()


class set_grad_enabled(_GradMode):  # noqa: N801
    """``set_grad_enabled(mode)``: sets the mode at once; as a context manager restores it on exit."""

    def __init__(self, mode: bool) -> None:
        self._previous = is_grad_enabled()
        self._enabled = bool(mode)
        _state.grad_enabled = bool(mode)

    def __enter__(self) -> None:
        super().__enter__()
        self._saved.stack[-1] = (self._previous, is_inference_mode_enabled())


# -- helpers for ops ---------------------------------------------------------------------------
def is_tensor(obj: Any) -> bool:
    """Whether ``obj`` is an npconv Tensor (``torch.is_tensor``)."""
    return isinstance(obj, tensor_class)


def as_array(value: Any) -> np.ndarray:
    """The ndarray behind a Tensor, or ``np.asarray(value)``."""
    if isinstance(value, tensor_class):
        return value._array
    return np.asarray(value)


def conj(a: np.ndarray) -> np.ndarray:
    return np.conj(a) if np.iscomplexobj(a) else a


def sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
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


class VersionCounter:
    """How many in-place ops have modified a tensor's storage (shared by a tensor and its views)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


# -- graph nodes ---------------------------------------------------------------------------------
class AccumulateGrad:
    """The ``next_functions`` entry of a leaf: ``variable`` is the leaf its gradient goes to."""

    __slots__ = ("variable",)

    def __init__(self, variable: Any) -> None:
        self.variable = variable

    def name(self) -> str:
        return "torch::autograd::AccumulateGrad"

    @property
    def next_functions(self) -> tuple:
        return ()

    def __repr__(self) -> str:
        return f"<AccumulateGrad object at {id(self):#x}>"


class Node:
    """A recorded op (a tensor's ``grad_fn``): its backward closure and where its inputs came from.

    ``_next[i]`` is ``(node, output_nr)`` for an input made by an op, ``(leaf, 0)`` for a leaf that
    requires grad, ``None`` for an input without gradient. ``_saved`` lists ``(counter, version,
    describe)`` of every tensor the closure reads, checked before the closure runs.
    """

    __slots__ = (
        "_backward",
        "_next",
        "_saved",
        "_name",
        "_outputs",
        "_tensor_hooks",
        "_retained",
        "_hooks",
        "__weakref__",
    )

    def __init__(
        self,
        backward: Callable,
        next_edges: tuple,
        saved: tuple,
        name: str,
        outputs: tuple[tuple[tuple[int, ...], np.dtype], ...],
    ) -> None:
        self._backward = backward
        self._next = next_edges
        self._saved = saved
        self._name = name or "Backward"
        self._outputs = outputs
        self._tensor_hooks: dict[int, list[Callable]] | None = None
        self._retained: dict[int, weakref.ref] | None = None
        self._hooks: list[Callable] | None = None

    def name(self) -> str:
        return self._name

    @property
    def next_functions(self) -> tuple[tuple[Any, int], ...]:
        result = []
        for edge in self._next:
            if edge is None:
                result.append((None, 0))
            elif isinstance(edge[0], Node):
                result.append(edge)
            else:
                result.append((AccumulateGrad(edge[0]), 0))
        return tuple(result)

    def register_hook(self, hook: Callable) -> Any:
        """``hook(grad_inputs, grad_outputs)`` runs after this node's backward (may not modify them)."""
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return _RemovableHandle(self._hooks, hook)

    def __repr__(self) -> str:
        return f"<{self._name} object at {id(self):#x}>"

    def _add_tensor_hook(self, output_nr: int, hook: Callable) -> Any:
        if self._tensor_hooks is None:
            self._tensor_hooks = {}
        hooks = self._tensor_hooks.setdefault(output_nr, [])
        hooks.append(hook)
        return _RemovableHandle(hooks, hook)


class _RemovableHandle:
    """What ``register_hook`` returns: ``handle.remove()`` unregisters the hook."""

    def __init__(self, hooks: list, hook: Callable) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            self._hooks.remove(self._hook)


def _freed_graph(*grads: Any) -> Any:
    raise RuntimeError(
        "Trying to backward through the graph a second time; specify retain_graph=True "
        "if you need to backward a second time"
    )


def _edge(tensor: Any) -> tuple[Any, int] | None:
    if not isinstance(tensor, tensor_class) or not tensor._requires_grad:
        return None
    if tensor._node is None:
        return (tensor, 0)
    if tensor._version.value != tensor._graph_version:
        raise RuntimeError(
            "a view (or the base) of this tensor was modified in place after it was computed; npconv "
            "does not rebuild the graph of views, so use the tensor that was modified or clone() first"
        )
    return (tensor._node, tensor._output_nr)


def check_inplace_allowed(tensor: Any) -> None:
    """torch's rule for inference tensors: no in-place update outside ``inference_mode``."""
    if tensor._inference and not is_inference_mode_enabled():
        raise RuntimeError(
            "Inplace update to inference tensor outside InferenceMode is not allowed. You can make a clone "
            "to get a normal tensor before doing inplace update."
        )


def _saved_entry(tensor: Any) -> tuple[VersionCounter, int, tuple]:
    if tensor._inference:
        raise RuntimeError(
            "Inference tensors cannot be saved for backward. Please do not use Tensors created in inference "
            "mode in computation tracked by autograd. To work around you can make a clone to get a normal "
            "tensor and use it in autograd."
        )
    producer = tensor._node.name() if tensor._node is not None else None
    return (
        tensor._version,
        tensor._version.value,
        (tuple(tensor._array.shape), tensor._array.dtype, producer),
    )


def make_result(
    data: np.ndarray,
    parents: Sequence[Any],
    backward: Callable[[np.ndarray], Sequence[np.ndarray | None]],
    name: str = "",
    saved: Sequence[Any] | None = None,
    view_of: Any = None,
) -> Any:
    """Wrap ``data`` as the output of a differentiable op.

    ``backward(grad_output)`` returns one gradient (or None) per entry of ``parents``, each of that
    parent's shape; non-Tensor parents are constants. ``saved`` lists the tensors whose arrays the
    closure reads (default: every Tensor parent); if one is modified in place before the backward
    runs, the backward raises. An op whose closure reads its own output passes the output array
    itself in ``saved`` only if the array is shared with a tensor users can modify (it is not: the
    output tensor wraps it, so ``saved`` may contain the string ``"output"``). ``view_of``: the
    result is a view of that tensor and shares its version counter.
    """
    out = tensor_class(data)
    if view_of is not None and isinstance(view_of, tensor_class):
        out._version = view_of._version
        out._base = view_of if view_of._base is None else view_of._base
    if not is_grad_enabled():
        return out
    edges = tuple(_edge(p) for p in parents)
    if not any(edges):
        return out
    if saved is None:
        saved = [p for p in parents if isinstance(p, tensor_class)]
    entries = []
    for item in saved:
        if isinstance(item, str):  # "output"
            entries.append(
                (out._version, out._version.value, (tuple(out._array.shape), out._array.dtype, name))
            )
        elif isinstance(item, tensor_class):
            entries.append(_saved_entry(item))
    out._node = Node(backward, edges, tuple(entries), name, ((out._array.shape, out._array.dtype),))
    out._requires_grad = True
    out._graph_version = out._version.value
    return out


def _inplace_records(target: Any, others: Sequence[Any]) -> bool:
    """Whether an in-place op on ``target`` with operands ``others`` records the graph; raises
    (RuntimeError, nothing changed) where torch's rules refuse it (an inference tensor outside
    ``inference_mode``, a leaf that requires grad) and for a recording op on a view, whose base's
    graph npconv does not rebuild."""
    check_inplace_allowed(target)
    recording = is_grad_enabled() and (
        target._requires_grad or any(isinstance(a, tensor_class) and a._requires_grad for a in others)
    )
    if recording:
        if target._node is None and target._requires_grad:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        if target._base is not None:  # the base would silently miss the gradient (torch rebuilds its graph)
            raise RuntimeError(
                "npconv does not support in-place operations on a view of a tensor that requires grad "
                "or that record a gradient into a view (torch rewrites the base's graph); apply the op "
                "out of place or to the base tensor"
            )
    return recording


def _read_only() -> RuntimeError:
    return RuntimeError("in-place operation on a read-only tensor (e.g. an expanded tensor)")


def write_inplace(
    target: Any,
    write: Callable[[np.ndarray], Any],
    others: Sequence[Any],
    backward: Callable[[np.ndarray, np.ndarray | None], Sequence[np.ndarray | None]],
    name: str,
    keeps: str = "",
    saved: Sequence[Any] = (),
) -> Any:
    """An op that keeps ``target``'s shape and dtype, run truly in place: ``write(target's array)``.

    The in-place rules of :func:`apply_inplace`, without a temporary result or a copy: the version
    is bumped and, when the graph is recorded, ``target`` takes a node whose inputs are the old
    ``target`` and ``others`` and whose ``backward(grad, kept)`` returns one gradient per
    (``target``, ``*others``). ``kept`` is what the backward reads of ``target``: with
    ``keeps="result"`` its array after the write, saved at the new version (torch's saved result:
    a later in-place change makes the backward raise); with ``keeps="original"`` a copy taken
    before the write (torch's ``original_self``); otherwise None. ``saved``: tensors of ``others``
    the backward reads, recorded at their versions before the write (one sharing ``target``'s
    counter, as in ``h.mul_(h)``, makes the backward raise, as in torch).
    """
    recording = _inplace_records(target, others)
    array = target._array
    if not array.flags.writeable:
        raise _read_only()
    if not recording:
        write(array)
        target._version.value += 1
        return target
    edges = (_edge(target), *(_edge(o) for o in others))
    entries = [_saved_entry(t) for t in saved]
    kept = array.copy() if keeps == "original" else None
    write(array)
    target._version.value += 1
    if keeps == "result":
        kept = array
        entries.append((target._version, target._version.value, (tuple(array.shape), array.dtype, name)))
    node = Node(lambda g: backward(g, kept), edges, tuple(entries), name, ((array.shape, array.dtype),))
    target._node, target._output_nr, target._requires_grad = node, 0, True
    target._graph_version = target._version.value
    return target


def apply_inplace(
    target: Any,
    op: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any] | None = None,
    reads_target: bool = True,
) -> Any:
    """Run ``op(target, *args)`` and make ``target`` hold its result, with torch's in-place rules.

    Refused (RuntimeError, ``target`` unchanged) for a leaf that requires grad while grad mode is on,
    and for a view when the op records a gradient. Otherwise the values are written into ``target``'s array,
    its version is bumped (so a backward that saved it raises) and, when the graph is recorded,
    ``target`` takes the op's ``grad_fn`` with the old ``target`` as its input (copied first if the
    op's backward reads it: ``reads_target``). The general path: the op runs out of place and its
    result is copied into ``target``; ops that keep the shape and dtype use :func:`write_inplace`.
    """
    kwargs = kwargs or {}
    recording = _inplace_records(target, args)
    if recording:
        previous = tensor_class(target._array.copy() if reads_target else target._array)
        previous._node, previous._requires_grad = target._node, target._requires_grad
        previous._output_nr = target._output_nr
        if target._node is not None and target._version.value != target._graph_version:
            previous._version = target._version  # let _edge report the stale view
        else:
            previous._graph_version = previous._version.value
        result = op(previous, *args, **kwargs)
    else:
        with no_grad():
            result = op(target, *args, **kwargs)
    values = as_array(result)
    if values.shape != target._array.shape:
        raise RuntimeError(
            f"output with shape {list(target._array.shape)} doesn't match the broadcast shape "
            f"{list(values.shape)}"
        )
    if not np.can_cast(values.dtype, target._array.dtype, casting="same_kind"):
        raise RuntimeError(
            f"result type {values.dtype} can't be cast to the desired output type {target._array.dtype}"
        )
    if not target._array.flags.writeable:
        raise _read_only()
    np.copyto(target._array, values, casting="unsafe")
    target._version.value += 1
    if recording:
        target._node = result._node
        target._output_nr = result._output_nr
        target._requires_grad = True
        target._graph_version = target._version.value
    return target


# -- the engine ----------------------------------------------------------------------------------
def _topological_order(roots: Sequence[Node]) -> list[Node]:
    """Nodes reachable from ``roots``, each before every node it feeds into (iterative DFS)."""
    order: list[Node] = []
    visited: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for edge in node._next:
            if edge is not None and isinstance(edge[0], Node) and id(edge[0]) not in visited:
                stack.append((edge[0], False))
    order.reverse()
    return order


def _check_saved(node: Node) -> None:
    for counter, version, (shape, dtype, producer) in node._saved:
        if counter.value != version:
            origin = f", which is output 0 of {producer}," if producer else ""
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: [{dtype} tensor {list(shape)}]{origin} is at version {counter.value}; expected "
                f"version {version} instead (used by {node._name})"
            )


def _wrap(array: np.ndarray) -> Any:
    return tensor_class(array)


def _run_hooks(hooks: Sequence[Callable], grad: np.ndarray) -> np.ndarray:
    for hook in list(hooks):
        replaced = hook(_wrap(grad))
        if replaced is not None:
            grad = as_array(replaced)
    return grad


def _accumulate(leaf: Any, pending: list) -> None:
    """``leaf.grad += grad`` (``leaf.grad = grad`` the first time), exact under concurrent passes.

    ``pending`` is ``[grad]``, taken out here: if then nothing else references ``grad``, the first
    accumulation makes the array itself ``leaf.grad`` when :func:`_adoptable` (torch's
    ``AccumulateGrad`` steals an unshared gradient); otherwise ``leaf.grad`` is a copy, so no two
    leaves ever share a gradient buffer.
    """
    grad = pending.pop()
    if leaf._hooks:
        grad = _run_hooks(leaf._hooks, grad)
    dtype = leaf._array.dtype
    with _accumulate_lock:
        current = leaf.grad
        if current is None:
            control = object()  # referenced by one local name, as ``grad`` is if it is nowhere else
            if sys.getrefcount(grad) == sys.getrefcount(control) and _adoptable(grad, leaf._array):
                leaf.grad = _wrap(grad)
            else:  # a fresh writable array: closures may return views, broadcasts or shared arrays
                leaf.grad = _wrap(np.array(grad, dtype=dtype, copy=True))
        else:
            target = current._array
            if target.flags.writeable and target.shape == np.shape(grad):
                np.add(target, grad, out=target, casting="unsafe")
            else:
                leaf.grad = _wrap((target + grad).astype(dtype, copy=False))
    if leaf._post_hooks:
        for hook in list(leaf._post_hooks):
            hook(leaf)


def _adoptable(grad: Any, like: np.ndarray) -> bool:
    """Whether ``grad`` is a writable dense array of ``like``'s shape and dtype whose memory nothing
    else can reach: it owns it, or it is a view of all of an array that only it references (e.g. a
    reshaped product), so it is what ``np.array(grad, copy=True)`` would give, without the copy."""
    if not (
        type(grad) is np.ndarray
        and grad.flags.writeable
        and (grad.flags.c_contiguous or grad.flags.f_contiguous)
        and grad.dtype == like.dtype
        and grad.shape == like.shape
    ):
        return False
    if grad.flags.owndata:
        return True
    base = grad.base
    control = object()
    holder = [control]  # ``control``: one local name and one container, as ``base`` if only ``grad`` holds it
    unshared_refs = sys.getrefcount(control)
    del holder
    return (
        type(base) is np.ndarray
        and sys.getrefcount(base) == unshared_refs
        and base.flags.owndata
        and (base.flags.c_contiguous or base.flags.f_contiguous)
        and base.nbytes == grad.nbytes
    )


def _add(buffer: list, index: int, grad: np.ndarray) -> None:
    buffer[index] = grad if buffer[index] is None else buffer[index] + grad


def _no_scope() -> None:
    return None


#: ``enter() -> token`` / ``leave(token)`` around each backward pass (a token of None needs no
#: leave): set by :mod:`npconv.backends` to put its cache of freed array memory in force, as
#: module calls do (this module imports nothing from npconv).
allocation_scope: tuple[Callable[[], Any], Callable[[Any], Any]] = (_no_scope, _no_scope)


def _execute(
    roots: Sequence[Any],
    seeds: Sequence[np.ndarray],
    retain_graph: bool,
    capture: Sequence[Any] | None = None,
    only_inputs: Sequence[Any] | None = None,
) -> list:
    """Propagate ``seeds`` from ``roots`` to the leaves (inside :data:`allocation_scope`).

    Without ``capture``: accumulate into ``leaf.grad`` (only for ``only_inputs`` if given). With
    ``capture`` (tensors): return their gradients instead, accumulating nothing.
    """
    enter, leave = allocation_scope
    token = enter()
    try:
        return _execute_in_scope(roots, seeds, retain_graph, capture, only_inputs)
    finally:
        if token is not None:
            leave(token)


def _execute_in_scope(
    roots: Sequence[Any],
    seeds: Sequence[np.ndarray],
    retain_graph: bool,
    capture: Sequence[Any] | None,
    only_inputs: Sequence[Any] | None,
) -> list:
    buffers: dict[int, list] = {}
    leaf_grads: dict[int, list] = {}  # id -> [leaf, grad]
    root_nodes: list[Node] = []

    def send(edge: tuple[Any, int], grad: np.ndarray) -> None:
        target, index = edge
        if isinstance(target, Node):
            buffer = buffers.get(id(target))
            if buffer is None:
                buffer = buffers[id(target)] = [None] * len(target._outputs)
            _add(buffer, index, grad)
        else:
            entry = leaf_grads.get(id(target))
            if entry is None:
                leaf_grads[id(target)] = [target, grad]
            else:
                entry[1] = entry[1] + grad

    for root, seed in zip(roots, seeds, strict=True):
        edge = (root._node, root._output_nr) if root._node is not None else (root, 0)
        send(edge, seed)
        if root._node is not None:
            root_nodes.append(root._node)
    captured_nodes: dict[tuple[int, int], int] = {}
    captured: list[Any] = [None] * len(capture or ())
    for i, tensor in enumerate(capture or ()):
        if tensor._node is not None:
            captured_nodes[(id(tensor._node), tensor._output_nr)] = i

    queues = _state.__dict__.setdefault("callback_queues", [])
    queue: list[Callable[[], Any]] = []
    queues.append(queue)
    try:
        with no_grad():
            buffer = grads = parent_grad = None
            for node in _topological_order(root_nodes):
                buffer = buffers.pop(id(node), None)
                if buffer is None:
                    continue
                for nr, (shape, dtype) in enumerate(node._outputs):
                    if node._tensor_hooks and buffer[nr] is not None and node._tensor_hooks.get(nr):
                        buffer[nr] = _run_hooks(node._tensor_hooks[nr], buffer[nr])
                    if node._retained and nr in node._retained and buffer[nr] is not None:
                        kept = node._retained[nr]()
                        if kept is not None:
                            kept.grad = _wrap(np.array(buffer[nr], copy=True))
                    if (id(node), nr) in captured_nodes:
                        captured[captured_nodes[(id(node), nr)]] = buffer[nr]
                    if buffer[nr] is None:
                        buffer[nr] = np.zeros(shape, dtype)
                _check_saved(node)
                grads = node._backward(*buffer)
                if node._hooks:
                    for hook in list(node._hooks):
                        hook(tuple(None if g is None else _wrap(g) for g in grads), tuple(map(_wrap, buffer)))
                for edge, parent_grad in zip(node._next, grads, strict=True):
                    if edge is not None and parent_grad is not None:
                        send(edge, np.asarray(parent_grad))
                if not retain_graph:
                    node._backward = _freed_graph  # releases the closure and the arrays it holds
                    node._saved = ()
            if capture is not None:
                for i, tensor in enumerate(capture):
                    if tensor._node is None and id(tensor) in leaf_grads:
                        grad = leaf_grads[id(tensor)][1]
                        captured[i] = _run_hooks(tensor._hooks, grad) if tensor._hooks else grad
                return captured
            del grads, parent_grad, buffer  # the last node's gradients: they may become leaf.grad
            allowed = None if only_inputs is None else {id(t) for t in only_inputs}
            for key in list(leaf_grads):
                leaf, *pending = leaf_grads.pop(key)
                if allowed is None or id(leaf) in allowed:
                    _accumulate(leaf, pending)
        index = 0  # callbacks may queue further callbacks
        while index < len(queue):
            queue[index]()
            index += 1
    finally:
        queues.pop()
    return captured


def _seeds(tensors: Sequence[Any], grad_tensors: Sequence[Any] | None, what: str) -> list[np.ndarray]:
    grad_tensors = grad_tensors if grad_tensors is not None else [None] * len(tensors)
    if len(grad_tensors) != len(tensors):
        raise ValueError(
            f"{what} grad_tensors must have one entry per tensor ({len(tensors)}), "
            f"but got {len(grad_tensors)}"
        )
    seeds = []
    for i, (tensor, gradient) in enumerate(zip(tensors, grad_tensors, strict=True)):
        if not isinstance(tensor, tensor_class):
            raise TypeError(f"{what} tensors must be Tensors, but got {type(tensor).__name__}")
        if not tensor._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if tensor._array.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            seeds.append(np.ones_like(tensor._array))
            continue
        seed = np.asarray(as_array(gradient), dtype=tensor._array.dtype)
        if seed.shape != tensor._array.shape:
            raise ValueError(
                f"{what} gradient must have the tensor's shape {tuple(tensor._array.shape)}, "
                f"but got {seed.shape}"
            )
        seeds.append(seed)
    return seeds


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, tensor_class) else list(value)


def _check_create_graph(create_graph: bool) -> None:
    if create_graph:
        raise NotImplementedError(
            "npconv does not support create_graph=True (higher-order gradients): backward closures "
            "compute on NumPy arrays"
        )


def backward(
    tensors: Any,
    grad_tensors: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Any = None,
) -> None:
    """Accumulate the gradients of ``tensors`` (weighted by ``grad_tensors``) into the leaves' ``.grad``.

    Like ``torch.autograd.backward``; ``inputs`` restricts accumulation to those leaves. Callbacks
    queued with :func:`queue_callback` during the pass run once it has finished.
    """
    _check_create_graph(create_graph)
    roots = _as_list(tensors)
    grads = (
        None
        if grad_tensors is None
        else ([grad_tensors] if isinstance(grad_tensors, (tensor_class, np.ndarray)) else list(grad_tensors))
    )
    seeds = _seeds(roots, grads, "backward")
    only = None if inputs is None else _as_list(inputs)
    _execute(roots, seeds, bool(retain_graph), only_inputs=only)


def grad(
    outputs: Any,
    inputs: Any,
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
    materialize_grads: bool = False,
) -> tuple[Any, ...]:
    """The gradients of ``outputs`` with respect to ``inputs``, returned (``.grad`` is left untouched).

    Like ``torch.autograd.grad``; an input that ``outputs`` do not depend on is an error unless
    ``allow_unused`` (then its gradient is None, or zeros with ``materialize_grads``).
    """
    _check_create_graph(create_graph)
    roots = _as_list(outputs)
    targets = _as_list(inputs)
    for tensor in targets:
        if not isinstance(tensor, tensor_class) or not tensor._requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    grads = (
        None
        if grad_outputs is None
        else ([grad_outputs] if isinstance(grad_outputs, (tensor_class, np.ndarray)) else list(grad_outputs))
    )
    seeds = _seeds(roots, grads, "grad")
    captured = _execute(roots, seeds, bool(retain_graph), capture=targets)
    result = []
    for tensor, value in zip(targets, captured, strict=True):
        if value is None:
            if not (allow_unused or materialize_grads):
                raise RuntimeError(
                    "One of the differentiated Tensors appears to not have been used in the graph. "
                    "Set allow_unused=True if this is the desired behavior."
                )
            result.append(_wrap(np.zeros_like(tensor._array)) if materialize_grads else None)
        else:
            result.append(_wrap(np.array(value, dtype=tensor._array.dtype, copy=True)))
    return tuple(result)


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


# -- custom functions ------------------------------------------------------------------------------
class FunctionCtx:
    """The ``ctx`` of a :class:`Function`: ``save_for_backward``, ``needs_input_grad``, attributes."""

    def __init__(self) -> None:
        self.needs_input_grad: tuple[bool, ...] = ()
        self._saved: tuple = ()
        self._saved_versions: tuple = ()
        self.materialize_grads = True
        self._non_differentiable: set[int] = set()
        self._dirty: set[int] = set()

    def save_for_backward(self, *tensors: Any) -> None:
        for tensor in tensors:
            if tensor is not None and not isinstance(tensor, tensor_class):
                raise TypeError(
                    f"save_for_backward can only save Tensors or None, but got {type(tensor).__name__}"
                )
        self._saved = tensors

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        return self._saved

    def mark_non_differentiable(self, *tensors: Any) -> None:
        self._non_differentiable.update(id(t) for t in tensors)

    def mark_dirty(self, *tensors: Any) -> None:
        self._dirty.update(id(t) for t in tensors)

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = bool(value)


class Function:
    """A user-defined op, like ``torch.autograd.Function``: static ``forward(ctx, *args)`` and
    ``backward(ctx, *grad_outputs)`` (one gradient per forward argument), called as ``Cls.apply(...)``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Function subclass must implement forward(ctx, *args)")

    @staticmethod
    def backward(ctx: FunctionCtx, *grad_outputs: Any) -> Any:
        raise NotImplementedError("a Function subclass must implement backward(ctx, *grad_outputs)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        ctx = FunctionCtx()
        ctx.needs_input_grad = tuple(isinstance(a, tensor_class) and a._requires_grad for a in args)
        with no_grad():
            output = cls.forward(ctx, *args, **kwargs)
        single = not isinstance(output, tuple)
        outputs = (output,) if single else output
        if not (is_grad_enabled() and any(ctx.needs_input_grad)):
            return output
        edges = tuple(_edge(a) for a in args)
        saved = tuple(
            _saved_entry(t) for t in ctx._saved if t is not None and not any(t is o for o in outputs)
        )
        differentiable = [
            isinstance(o, tensor_class)
            and id(o) not in ctx._non_differentiable
            and o._array.dtype.kind in "fc"
            for o in outputs
        ]
        metas = tuple(
            (o._array.shape, o._array.dtype) if isinstance(o, tensor_class) else ((), np.float32)
            for o in outputs
        )
        n_args = len(args)

        def run_backward(*grads: np.ndarray) -> tuple:
            wrapped = tuple(_wrap(g) for g in grads)
            result = cls.backward(ctx, *wrapped)
            result = result if isinstance(result, tuple) else (result,)
            if len(result) < n_args:
                raise RuntimeError(
                    f"function {cls.__name__}.backward returned {len(result)} gradients, expected {n_args}"
                )
            return tuple(None if r is None else as_array(r) for r in result[:n_args])

        node = Node(run_backward, edges, saved, f"{cls.__name__}Backward", metas)
        results = []
        for nr, (value, is_diff) in enumerate(zip(outputs, differentiable, strict=True)):
            if not is_diff:
                results.append(value)
                continue
            if any(value is a for a in args) and id(value) not in ctx._dirty:
                alias = tensor_class(value._array)  # torch returns a new tensor for an input returned as is
                alias._version = value._version
                value = alias
            value._node, value._output_nr, value._requires_grad = node, nr, True
            value._graph_version = value._version.value
            results.append(value)
        return results[0] if single else tuple(results)
