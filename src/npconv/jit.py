"""``npconv.jit.trace``: a module's forward recorded once and replayed without its Python, as
``torch.jit.trace``.

Tracing runs ``mod(*example_inputs)`` once and records what it computes as a list of steps: each call
of a *layer* (a module of a fixed set of npconv layer types: convolutions, linear, pooling,
activations, flatten, identity, in eval mode dropout and batch norm, and a ``ChunkedSequential`` that
runs the batch in chunks), each tensor addition (``a + b``, ``a += b``) and each call of a recorded
tensor op (:func:`npconv.tracing.recorded`: the activations, ``max_pool``/``avg_pool``/
``adaptive_avg_pool`` behind ``F.max_pool2d`` and friends, ``reshape``/``view``, ``flatten``,
``permute``, ``transpose``, ``squeeze``, ``unsqueeze``, ``contiguous``, ``cat``, ``mean``, indexing,
the products, differences, quotients and negations, however
called: ``F.relu(x)``, ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``). Containers and custom
modules are not steps: their ``forward`` runs while tracing and its layer calls, additions and ops are
recorded. The traced module replays the steps: no module calls, container loops or hook checks, and a
planned convolution runs its kept plan directly; calls that record no autograd run a bound program
(:class:`_Program`).

It is sound by refusal: :class:`TracerError` is raised, instead of a wrong replay, where the forward
does anything a step list cannot reproduce -- a layer, addition or op input that no recorded step or
input produced (another operation made it, e.g. ``x.exp()``), a tensor modified in place outside a
step (its version counter), a value read into Python (``bool()``, ``item()``, ``numpy()``, a NumPy
conversion, ``.data``: control flow on values), a module with hooks, a layer in training mode whose
forward is random or updates buffers, or an output that is not a tensor the steps produce.

What the replay keeps of ``mod``, as ``torch.jit.trace`` does: its structure and every layer's
settings as they were (snapshots of the layer modules, sharing their parameters and buffers), so later
changes to ``mod``'s submodules, attributes, hooks or training flag do not reach it; the parameters'
and buffers' values are shared (an optimizer step or ``load_state_dict`` is seen). Inputs must have the
traced shapes and dtypes. Calls that record autograd replay each layer through its ``forward``, so
gradients are those of the eager module.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import backends, tracing
from .autograd import is_grad_enabled, no_grad
from .kernels import pointwise as _pointwise
from .nn import functional as F
from .nn.modules import activation, batchnorm, conv, dropout, flatten, linear, pooling
from .nn.modules.fused import ChunkedSequential, ConvActivation, activation_of
from .nn.modules.module import HOOK_STORES, Module, has_call_hooks
from .ops import activation as _act
from .ops import elementwise as _ew
from .ops.conv import records
from .tensor import Tensor

__all__ = ["trace", "TracedModule", "TracerError", "is_tracing", "is_scripting", "ignore", "unused"]


class TracerError(ValueError):
    """The traced forward did something its recorded steps cannot reproduce (see :mod:`npconv.jit`)."""


#: Layer types recorded as one step (exact types: a subclass may override ``forward``).
_LAYERS = frozenset({
    conv.Conv1d, conv.Conv2d, conv.Conv3d, conv.ConvTranspose1d, conv.ConvTranspose2d, conv.ConvTranspose3d,
    ConvActivation, linear.Linear, linear.Identity, flatten.Flatten,
    activation.ReLU, activation.ReLU6, activation.Hardtanh, activation.SiLU, activation.LeakyReLU,
    activation.GELU, activation.Sigmoid, activation.Tanh, activation.Hardswish, activation.Hardsigmoid,
    activation.Mish, activation.ELU, activation.Softplus, activation.Softmax, activation.LogSoftmax,
    activation.PReLU,
    pooling.MaxPool1d, pooling.MaxPool2d, pooling.MaxPool3d, pooling.AvgPool1d, pooling.AvgPool2d,
    pooling.AvgPool3d, pooling.AdaptiveAvgPool1d, pooling.AdaptiveAvgPool2d, pooling.AdaptiveAvgPool3d,
    pooling.AdaptiveMaxPool1d, pooling.AdaptiveMaxPool2d, pooling.AdaptiveMaxPool3d,
})
#: Layers recorded only in eval mode (in training mode dropout is random and batch norm updates its
#: running statistics).
_EVAL_LAYERS = frozenset({dropout.Dropout, dropout.Dropout1d, dropout.Dropout2d, dropout.Dropout3d,
                          batchnorm.BatchNorm1d, batchnorm.BatchNorm2d, batchnorm.BatchNorm3d})
_PLANNED = (conv.Conv1d, conv.Conv2d, conv.Conv3d, ConvActivation)


def _snapshot(module: Module) -> Module:
    """A copy of ``module`` with its own attribute, child and hook stores (children snapshot too) and
    the same Parameter and buffer objects."""
    twin = object.__new__(type(module))
    state = twin.__dict__
    state.update(module.__dict__)
    state["_parameters"] = OrderedDict(module._parameters)
    state["_buffers"] = OrderedDict(module._buffers)
    state["_modules"] = OrderedDict((k, None if v is None else _snapshot(v))
                                    for k, v in module._modules.items())
    for store in HOOK_STORES:
        state[store] = OrderedDict()
    return twin


class _PlannedStep:
    """A planned convolution layer's step: its kept plan run directly while the plan holds for the
    call (the input's shape and dtype, the weight and bias arrays, the planner's state), else the
    layer's ``forward`` (which plans again)."""

    __slots__ = ("layer", "weight", "bias", "plan")

    def __init__(self, layer: Module) -> None:
        convolution = layer._modules["conv"] if isinstance(layer, ConvActivation) else layer
        self.layer = layer
        self.weight = convolution._parameters["weight"]
        self.bias = convolution._parameters.get("bias")
        self.plan: tuple | None = None

    def __call__(self, x: Tensor) -> Tensor:
        plan, weight, bias = self.plan, self.weight, self.bias
        if plan is not None and not records(x, weight, bias):
            shape, dtype, w, b, prepared = plan
            array = x._array
            if (array.shape == shape and array.dtype == dtype and weight._array is w
                    and (b is None if bias is None else bias._array is b) and prepared.valid()):
                return Tensor(prepared.run(array))
        y = self.layer.forward(x)
        self.plan = F._kept_plan(self.layer)
        return y


class _Recorder:
    """The steps of one traced forward: ``slots`` maps each tensor a step or input produced (by id,
    the tensors kept alive) to its slot; ``versions`` holds each slot tensor's version counter value
    when it was last produced or written by a step."""

    def __init__(self, module: Module, inputs: Sequence[Tensor]) -> None:
        self.thread = threading.get_ident()
        self.slots: dict[int, int] = {}
        self.tensors: list[Tensor] = []
        self.versions: list[int] = []
        self.steps: list[_Step] = []
        self.state = [*module.parameters(), *module.buffers()]
        self.constants = {id(t) for t in self.state}
        self.state_versions = [t._version.value for t in self.state]
        for tensor in inputs:
            self._new_slot(tensor)

    def _new_slot(self, tensor: Tensor) -> int:
        self.slots[id(tensor)] = len(self.tensors)
        self.tensors.append(tensor)
        self.versions.append(tensor._version.value)
        return len(self.tensors) - 1

    def _slot(self, tensor: Any, what: str) -> int:
        index = self.slots.get(id(tensor)) if isinstance(tensor, Tensor) else None
        if index is None:
            raise TracerError(f"npconv.jit.trace: the input of {what} was not made by a recorded layer call, "
                              f"addition or op (another operation made it: layer modules, tensor additions "
                              f"and the ops of npconv.tracing.recorded are recorded), got "
                              f"{type(tensor).__name__}")
        if tensor._version.value != self.versions[index]:
            raise TracerError(f"npconv.jit.trace: the input of {what} was modified in place by an operation "
                              f"the tracer does not record")
        return index

    def _written(self, index: int) -> None:
        self.versions[index] = self.tensors[index]._version.value

    # -- the hooks (Module.__call__, Tensor's additions and value reads) ----------------------------
    def call(self, module: Module, args: tuple, kwargs: dict) -> Any:
        if threading.get_ident() != self.thread:  # another thread's call: as Module.__call__ makes it
            return module._call_with_hooks(args, kwargs)
        name = type(module).__name__
        if has_call_hooks(module):
            raise TracerError(f"npconv.jit.trace: {name} has hooks; a traced module does not run hooks "
                              f"(remove them, or call the module eagerly)")
        kind = type(module)
        if kind in _EVAL_LAYERS and module.training:
            raise TracerError(f"npconv.jit.trace: {name} is in training mode (random or updating its "
                              f"statistics); call .eval() before tracing")
        # a ChunkedSequential that would run this batch in chunks of images is one step (it copies the
        # chunks' results into one output), else a container like the others
        chunked = kind is ChunkedSequential and len(args) == 1 and module._chunk(args[0]) is not None
        if ((kind not in _LAYERS and kind not in _EVAL_LAYERS and not chunked)
                or "forward" in module.__dict__):
            return module.forward(*args, **kwargs)  # a container or custom module: trace through it
        if len(args) != 1 or kwargs:
            raise TracerError(f"npconv.jit.trace: a traced layer takes one tensor argument; {name} got "
                              f"{len(args)} positional and {len(kwargs)} keyword arguments")
        index = self._slot(args[0], name)
        layer = _snapshot(module)
        tracing.active = None  # the layer's own calls are its step's
        try:
            y = module(args[0])
        finally:
            tracing.active = self
        if not isinstance(y, Tensor):
            raise TracerError(f"npconv.jit.trace: {name} returned {type(y).__name__}, not a tensor")
        planned = _PlannedStep(layer) if isinstance(layer, _PLANNED) else None
        out = self.slots.get(id(y))
        if out is None:
            out = self._new_slot(y)
        self._written(out)  # an in-place layer (ReLU(inplace=True)) returns its input, written
        self.steps.append(_LayerStep(planned or layer.forward, index, out, planned))
        return y

    def add(self, a: Any, b: Any, inplace: bool) -> Tensor:
        if threading.get_ident() != self.thread:
            return _add(a, b, inplace)
        operands = [self._operand(v) for v in (a, b)]
        if inplace and not operands[0][0]:
            raise TracerError("npconv.jit.trace: the forward adds into a parameter or buffer in place (the "
                              "replay would not); a trace records computations, not state changes")
        tracing.active = None
        try:
            y = _add(a, b, inplace)
        finally:
            tracing.active = self
        out = operands[0][1] if inplace else self._new_slot(y)
        self._written(out)
        self.steps.append(_AddStep(operands[0], operands[1], out, inplace))
        return y

    def function(self, function: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if threading.get_ident() != self.thread:
            return function(*args, **kwargs)
        name = function.__name__
        template = (self._argument(args, name), self._argument(kwargs, name))
        tracing.active = None
        try:
            y = function(*args, **kwargs)
        finally:
            tracing.active = self
        first = y
        if isinstance(y, tuple) and y and all(v is None for v in y[1:]):  # (values, None): max_pool's
            first = y[0]
        if not isinstance(first, Tensor):
            raise TracerError(f"npconv.jit.trace: {name} returned {type(y).__name__}, not a tensor (a trace "
                              f"records ops with one tensor result)")
        out = self.slots.get(id(first))
        if out is None:
            out = self._new_slot(first)
        elif first._version.value == self.versions[out]:
            return y  # an argument returned unchanged (a contiguous tensor's contiguous()): no step
        self._written(out)
        self.steps.append(_FunctionStep(function, template, out, first is not y))
        return y

    def _argument(self, value: Any, name: str) -> Any:
        """A function step's argument template: ``_Slot(i)`` for a tensor a step made, the same
        structure for tuples, lists and dicts, the value itself otherwise (a number, a geometry, a
        parameter or buffer of the traced module, read when the step runs)."""
        if isinstance(value, Tensor):
            return value if id(value) in self.constants else _Slot(self._slot(value, name))
        if isinstance(value, (tuple, list)):
            return type(value)(self._argument(v, name) for v in value)
        if isinstance(value, dict):
            return {k: self._argument(v, name) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            raise TracerError(f"npconv.jit.trace: {name} got a NumPy array; a trace records tensor arguments")
        return value

    def _operand(self, value: Any) -> tuple[bool, Any]:
        if isinstance(value, Tensor) and id(value) in self.constants:
            return False, value  # a parameter or buffer of the traced module: its current values
        if isinstance(value, Tensor):
            return True, self._slot(value, "an addition")
        if isinstance(value, (bool, int, float, complex, np.number)):
            return False, value
        raise TracerError(f"npconv.jit.trace: an addition's operand must be a tensor or a number, got "
                          f"{type(value).__name__}")

    def read(self, tensor: Tensor, how: str) -> None:
        if threading.get_ident() != self.thread:
            return
        raise TracerError(f"npconv.jit.trace: the forward reads a tensor's values into Python ({how}); a "
                          f"trace cannot follow control flow on values (call the module eagerly)")


def _add(a: Any, b: Any, inplace: bool) -> Tensor:
    """``a += b`` or ``a + b`` as the tensor operators compute them."""
    return a.add_(b) if inplace else _ew.add(a, b)


class _LayerStep:
    """``slots[out] = run(slots[index])``: a layer's call (``planned``: its :class:`_PlannedStep`, or None
    for a layer without kept plans)."""

    __slots__ = ("run", "index", "out", "planned")

    def __init__(self, run: Callable[[Tensor], Tensor], index: int, out: int,
                 planned: _PlannedStep | None) -> None:
        self.run, self.index, self.out, self.planned = run, index, out, planned

    def __call__(self, slots: list) -> None:
        slots[self.out] = self.run(slots[self.index])

    @property
    def reads(self) -> tuple[int, ...]:
        return (self.index,)


class _AddStep:
    """``slots[out] = a + b`` (or ``a += b``), then ``activation`` (a ReLU/Hardtanh layer that alone
    read the sum, or None); an operand ``(True, slot)`` or ``(False, value)`` (a number, or a parameter
    or buffer read when the step runs)."""

    __slots__ = ("a", "b", "out", "inplace", "activation")

    def __init__(self, a: tuple[bool, Any], b: tuple[bool, Any], out: int, inplace: bool,
                 activation: Module | None = None) -> None:
        self.a, self.b, self.out, self.inplace, self.activation = a, b, out, inplace, activation

    def __call__(self, slots: list) -> None:
        (a_slot, a_value), (b_slot, b_value) = self.a, self.b
        y = _add(slots[a_value] if a_slot else a_value, slots[b_value] if b_slot else b_value, self.inplace)
        slots[self.out] = y if self.activation is None else self.activation.forward(y)

    @property
    def reads(self) -> tuple[int, ...]:
        return tuple(value for is_slot, value in (self.a, self.b) if is_slot)


class _Slot(int):
    """A function step's argument that is the tensor in slot ``int(self)``."""


def _filled(template: Any, slots: list) -> Any:
    """``template`` with each :class:`_Slot` replaced by its slot's tensor."""
    if isinstance(template, _Slot):
        return slots[template]
    if isinstance(template, (tuple, list)):
        return type(template)(_filled(v, slots) for v in template)
    if isinstance(template, dict):
        return {k: _filled(v, slots) for k, v in template.items()}
    return template


def _slots_in(template: Any) -> tuple[int, ...]:
    if isinstance(template, _Slot):
        return (int(template),)
    if isinstance(template, (tuple, list)):
        return tuple(i for v in template for i in _slots_in(v))
    if isinstance(template, dict):
        return tuple(i for v in template.values() for i in _slots_in(v))
    return ()


class _FunctionStep:
    """``slots[out] = function(*args, **kwargs)`` of a recorded tensor op (:func:`npconv.tracing.recorded`),
    ``template`` its ``(args, kwargs)`` with slot references; ``first``: the op returns ``(tensor, None)``."""

    __slots__ = ("function", "template", "out", "first", "reads")

    def __init__(self, function: Callable[..., Any], template: tuple, out: int, first: bool) -> None:
        self.function, self.template, self.out, self.first = function, template, out, first
        self.reads = tuple(dict.fromkeys(_slots_in(template)))

    def __call__(self, slots: list) -> None:
        args, kwargs = _filled(self.template, slots)
        y = self.function(*args, **kwargs)
        slots[self.out] = y[0] if self.first else y


_Step = _LayerStep | _AddStep | _FunctionStep


class _Program:
    """The steps bound to buffers planned once, for calls that record no autograd: each slot a bound
    step reads or writes gets a fixed array (a buffer reused once the slot is dead, as an inference
    runtime's arena), and each planned convolution whose plan can bind runs its kernel calls prepared
    ahead (:attr:`~npconv.kernels.common.PreparedForward.bind`) with scratch of its own; additions of
    two slots with buffers add into their output buffer; the other steps run as in the step replay,
    their result copied into a buffer where a bound step reads it, else into a new array where it is a
    view of a buffer (a flatten: the buffer may be reused before the view is read). :meth:`run`
    returns None, having done nothing, where a bound plan no longer holds (the planner's state, the ISA
    variant, a weight or bias array replaced): the caller replays the steps, which plan again, and
    builds a new program.

    Built from ``values``, the slot tensors of one replay of ``steps`` with the same input shapes."""

    def __init__(self, steps: Sequence[_Step], values: list[Tensor], inputs: int, outputs: Any) -> None:
        arrays = [None if v is None else v._array for v in values]  # None: a slot fused away
        plans = [_bindable(step, arrays) for step in steps]
        fixed = {i for step, plan in zip(steps, plans, strict=True) if plan is not None
                 for i in (*step.reads, step.out)}
        adds = []  # an addition of two slots with buffers (no copy made for it) adds into a buffer
        for step in steps:
            add = (isinstance(step, _AddStep) and len(step.reads) == 2
                   and all(i in fixed and (arrays[i].shape, arrays[i].dtype)
                           == (arrays[step.out].shape, arrays[step.out].dtype) for i in step.reads))
            adds.append(add)
            if add:
                fixed.add(step.out)
        bound = [plan is not None or add for plan, add in zip(plans, adds, strict=True)]
        end = len(steps)
        last = {}  # fixed slot -> the last step that reads or writes it (end: live to the end)
        for k, step in enumerate(steps):
            for i in (*step.reads, step.out):
                if i in fixed:
                    last[i] = k
        for i in (outputs,) if isinstance(outputs, int) else outputs:
            if i in fixed:
                last[i] = end
        buffers = self._arena(steps, arrays, fixed, last, inputs)
        self.isa = backends.core.isa
        self.inputs = [buffers.get(i) for i in range(inputs)]
        self.outputs = outputs
        self.count = len(values)
        self.buffers = buffers
        self.owners = {id(_owner(b)) for b in buffers.values()}
        pairs, params, self.ops = {}, [], []
        sizes: dict[str, int] = {}
        scratch: dict[str, np.ndarray] = {}

        def measure(name: str, elements: int, dtype: np.dtype) -> np.ndarray:
            sizes[name] = max(sizes.get(name, 0), elements * dtype.itemsize)
            return np.empty(elements, dtype)

        def own(name: str, elements: int, dtype: np.dtype) -> np.ndarray:
            return scratch[name][:elements * dtype.itemsize].view(dtype)

        for source in (measure, own):  # the scratch sizes first, then the jobs on the program's scratch
            if source is own:
                scratch.update((name, _aligned(size)) for name, size in sizes.items())
            runs = [None if plan is None else plan[4].bind(buffers[step.index], buffers[step.out], source)
                    for step, plan in zip(steps, plans, strict=True)]
        for step, plan, add, run in zip(steps, plans, adds, runs, strict=True):
            if plan is not None:
                shape, dtype, w, b, prepared = plan
                pairs.update(zip(prepared.tokens, prepared.planned, strict=True))
                params.append((step.planned.weight, w))
                if step.planned.bias is not None:
                    params.append((step.planned.bias, b))
                self.ops.append((0, run))
            elif add:
                act = None if step.activation is None else activation_of(step.activation)
                self.ops.append((1, (buffers[step.a[1]], buffers[step.b[1]], buffers[step.out], act)))
            else:
                self.ops.append((2, (step, buffers.get(step.out))))
        self.reads = {i for step, b in zip(steps, bound, strict=True) if not b
                      for i in step.reads if i in fixed}
        self.tokens = tuple(pairs.items())
        self.params = tuple(params)

    @staticmethod
    def _arena(steps: Sequence[_Step], arrays: list[np.ndarray], fixed: set[int], last: dict[int, int],
               inputs: int) -> dict[int, np.ndarray]:
        """An array per fixed slot: a slot takes a free buffer once the slots before it in that buffer
        are dead (the smallest that fits, else the largest free one grown, else a new one)."""
        sizes: list[int] = []
        owner: dict[int, int] = {}
        live: set[int] = set()
        free: list[int] = []
        born = [(-1, i) for i in range(inputs) if i in fixed]
        born += [(k, step.out) for k, step in enumerate(steps) if step.out in fixed]
        for k, i in born:
            if i in owner:
                continue  # an in-place step's output: its input's buffer
            for j in [j for j in live if last[j] < k]:
                live.discard(j)
                free.append(owner[j])
            need = arrays[i].nbytes
            fits = [f for f in free if sizes[f] >= need]
            if fits or free:
                chosen = min(fits, key=sizes.__getitem__) if fits else max(free, key=sizes.__getitem__)
                free.remove(chosen)
                sizes[chosen] = max(sizes[chosen], need)
            else:
                chosen = len(sizes)
                sizes.append(need)
            owner[i] = chosen
            live.add(i)
        raws = [_aligned(size) for size in sizes]
        return {i: raws[b][:arrays[i].nbytes].view(arrays[i].dtype).reshape(arrays[i].shape)
                for i, b in owner.items()}

    def valid(self) -> bool:
        if backends.core.isa != self.isa:
            return False
        for token, planned in self.tokens:
            if token() != planned:
                return False
        for param, array in self.params:
            if param._array is not array:
                return False
        return True

    def run(self, inputs: Sequence[Tensor]) -> Any:
        """The outputs of a call on ``inputs`` (new tensors), or None where the program no longer holds."""
        if not self.valid():
            return None
        buffers = self.buffers
        values: list[Any] = [*inputs, *([None] * (self.count - len(inputs)))]
        for buffer, value in zip(self.inputs, inputs, strict=True):
            if buffer is not None:
                np.copyto(buffer, value._array)
        for i in self.reads:
            values[i] = Tensor(buffers[i])
        for kind, op in self.ops:
            if kind == 0:
                op()
            elif kind == 1:
                a, b, out, act = op
                if _pointwise.add(a, b, out) is None:
                    np.add(a, b, out=out)
                if act is not None:
                    _pointwise.activate_(out, act.kind, act.lo, act.hi)
            else:
                step, buffer = op
                step(values)
                result = values[step.out]._array
                if buffer is not None:
                    if result is not buffer:
                        np.copyto(buffer, result)
                        values[step.out] = Tensor(buffer)
                elif id(_owner(result)) in self.owners:  # a view of a buffer (flatten), which may be reused
                    values[step.out] = Tensor(result.copy())
        outputs = self.outputs
        if isinstance(outputs, int):
            return self._output(outputs, values)
        return type(outputs)(self._output(i, values) for i in outputs)

    def _output(self, i: int, values: list[Any]) -> Tensor:
        buffer = self.buffers.get(i)  # the next call writes it; a slot without one never views one
        return values[i] if buffer is None else Tensor(buffer.copy())


def _bindable(step: _Step, arrays: list[np.ndarray]) -> tuple | None:
    """The kept plan of a planned layer step if it holds for this replay's arrays and can bind."""
    planned = step.planned if isinstance(step, _LayerStep) else None
    plan = None if planned is None else planned.plan
    if plan is None or plan[4].bind is None:
        return None
    shape, dtype, w, b, prepared = plan
    x = arrays[step.index]
    if (x.shape != shape or x.dtype != dtype or planned.weight._array is not w
            or (b is None) != (planned.bias is None) or (b is not None and planned.bias._array is not b)
            or arrays[step.out].dtype != dtype or not prepared.valid()):
        return None
    return plan


def _program(steps: Sequence[_Step], values: list[Tensor], inputs: int, outputs: Any) -> _Program | None:
    """A :class:`_Program` of the steps, or None where no planned convolution can bind (nothing to gain)
    or a step writes into an input (the caller's tensor, which a program's copy would leave as it was)."""
    arrays = [None if v is None else v._array for v in values]  # None: a slot fused away
    if any(step.out < inputs for step in steps) or all(_bindable(step, arrays) is None for step in steps):
        return None
    return _Program(steps, values, inputs, outputs)


def _owner(array: np.ndarray) -> np.ndarray:
    """The array that owns ``array``'s memory (the end of its ``base`` chain)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _aligned(nbytes: int) -> np.ndarray:
    """``nbytes`` bytes starting at a multiple of 64 (a cache line: no kernel vector straddles two)."""
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes]


#: Programs built for one traced module after its last one stopped holding (beyond them it replays
#: the steps: something changes the plans call after call).
_REBUILDS = 8


class _Replay:
    """A traced module's :class:`_Program` (None: none yet or dropped), the lock a call holds while it
    runs it (a call that finds it held replays the steps), the process it belongs to, and how many
    programs were dropped."""

    __slots__ = ("program", "lock", "pid", "dropped")

    def __init__(self) -> None:
        self.program: _Program | None = None
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.dropped = 0

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()


class TracedModule(Module):
    """The module :func:`trace` returns: ``forward`` replays the recorded steps. Its parameters, buffers
    and children are the traced module's (``state_dict`` keys unchanged)."""

    def __init__(self, original: Module, steps: list[Callable[[list], None]], count: int,
                 signature: tuple[tuple[tuple[int, ...], np.dtype], ...], outputs: Any) -> None:
        super().__init__()
        object.__setattr__(self, "_parameters", original._parameters)
        object.__setattr__(self, "_buffers", original._buffers)
        object.__setattr__(self, "_modules", original._modules)
        object.__setattr__(self, "training", original.training)
        object.__setattr__(self, "_steps", tuple(steps))
        object.__setattr__(self, "_count", count)
        object.__setattr__(self, "_signature", signature)
        object.__setattr__(self, "_outputs", outputs)
        object.__setattr__(self, "_name", type(original).__name__)
        object.__setattr__(self, "_original", original)
        object.__setattr__(self, "_weights", tuple(original.parameters()))
        object.__setattr__(self, "_replay", _Replay())

    def forward(self, *inputs: Any) -> Any:
        signature = self._signature
        if len(inputs) != len(signature):
            raise TypeError(f"{self._name} (traced) takes {len(signature)} tensor inputs, got {len(inputs)}")
        for i, (value, (shape, dtype)) in enumerate(zip(inputs, signature, strict=True)):
            if not isinstance(value, Tensor):
                raise TypeError(f"{self._name} (traced): input {i} must be a Tensor, got "
                                f"{type(value).__name__}")
            if value._array.shape != shape or value._array.dtype != dtype:
                raise ValueError(f"{self._name} (traced): input {i} must have the traced shape {shape} and "
                                 f"dtype {dtype}, got {tuple(value._array.shape)} {value._array.dtype} "
                                 f"(trace again for it)")
        replay = self._replay
        if (tracing.active is not None
                or (is_grad_enabled() and any(t.requires_grad for t in (*inputs, *self._weights)))):
            return self._run_steps(inputs, None)  # the layers' forwards record autograd (or a trace)
        if replay.pid != os.getpid():  # a forked child: the parent's lock may have been held at the fork
            replay.reset()
        if not replay.lock.acquire(blocking=False):  # another thread runs the program: replay the steps
            return self._run_steps(inputs, None)
        try:
            program = replay.program
            if program is not None:
                result = program.run(inputs)
                if result is not None:
                    return result
                replay.program = None
                replay.dropped += 1
            return self._run_steps(inputs, replay if replay.dropped <= _REBUILDS else None)
        finally:
            replay.lock.release()

    def _run_steps(self, inputs: tuple[Tensor, ...], replay: _Replay | None) -> Any:
        """The steps replayed on ``inputs``; ``replay``: a :class:`_Program` is built from this call's
        values for the next calls."""
        slots = [*inputs, *([None] * (self._count - len(inputs)))]
        for step in self._steps:
            step(slots)
        outputs = self._outputs
        if replay is not None:
            replay.program = _program(self._steps, slots, len(inputs), outputs)
            replay.dropped += replay.program is None  # nothing binds: tried again a few times
        if isinstance(outputs, int):
            return slots[outputs]
        return type(outputs)(slots[i] for i in outputs)

    def extra_repr(self) -> str:
        return f"traced {self._name}, {len(self._steps)} steps"

    def __deepcopy__(self, memo: dict) -> TracedModule:
        """The traced module's deep copy traced again (its steps' layers must share the copy's
        parameters, not these): the same steps, as a trace reads no values."""
        original = copy.deepcopy(self._original, memo)
        inputs = tuple(Tensor(np.zeros(shape, dtype)) for shape, dtype in self._signature)
        return trace(original, inputs, check_trace=False)


def trace(mod: Module, example_inputs: Any, *, check_trace: bool = True,
          check_inputs: Sequence[Any] | None = None, check_tolerance: float = 1e-5) -> TracedModule:
    """``mod``'s forward on ``example_inputs`` (a Tensor or a tuple of Tensors) recorded as steps and
    replayed by the returned :class:`TracedModule` (see :mod:`npconv.jit` for what is recorded and
    refused). ``check_trace``: the replay is compared with ``mod`` on ``example_inputs`` and each of
    ``check_inputs`` (relative tolerance ``check_tolerance``); a difference raises :class:`TracerError`.
    """
    if not isinstance(mod, Module):
        raise TypeError(f"npconv.jit.trace: mod must be an npconv.nn.Module, got {type(mod).__name__}")
    inputs = _tensors(example_inputs, "example_inputs")
    if tracing.active is not None:
        raise TracerError("npconv.jit.trace: a trace is already being recorded")
    recorder = _Recorder(mod, inputs)
    tracing.active = recorder
    try:
        with no_grad():
            result = mod(*inputs)
    finally:
        tracing.active = None
    if any(t._version.value != v for t, v in zip(recorder.state, recorder.state_versions, strict=True)):
        raise TracerError("npconv.jit.trace: the forward modified a parameter or buffer in place (the replay "
                          "would not); a trace records computations, not state changes")
    if isinstance(result, Tensor):
        outputs: Any = recorder._slot(result, "the output")
    elif isinstance(result, (tuple, list)) and result and all(isinstance(r, Tensor) for r in result):
        outputs = type(result)(recorder._slot(r, "an output") for r in result)
    else:
        raise TracerError(f"npconv.jit.trace: the forward must return a tensor or a tuple or list of "
                          f"tensors, got {type(result).__name__}")
    signature = tuple((tuple(t._array.shape), t._array.dtype) for t in inputs)
    steps = _fused(recorder.steps, outputs)
    traced = TracedModule(mod, steps, len(recorder.tensors), signature, outputs)
    if check_trace:
        for case in [example_inputs, *(check_inputs or [])]:
            _check(mod, traced, _tensors(case, "check_inputs"), check_tolerance)
    return traced


#: Layers that return their input as it is (a step of one of them is dropped).
_PASS_THROUGH = (linear.Identity, dropout.Dropout, dropout.Dropout1d, dropout.Dropout2d, dropout.Dropout3d)
#: Activation layers a convolution step takes into its output pass (:class:`ConvActivation`'s).
_FUSED_ACTIVATIONS = frozenset({activation.ReLU, activation.ReLU6, activation.Hardtanh, activation.SiLU})
_PLAIN_CONVS = frozenset({conv.Conv1d, conv.Conv2d, conv.Conv3d})
#: Activation layers an addition step takes (the bound program applies them with ``activate_``, whose
#: values are theirs; SiLU's are not bit for bit).
_ADD_ACTIVATIONS = frozenset({activation.ReLU, activation.ReLU6, activation.Hardtanh})


def _fused(steps: list[_Step], outputs: Any) -> list[_Step]:
    """The recorded steps with the data flow simplified, as the eager module computes: steps of
    pass-through layers that returned their input dropped (an eval-mode batch norm folded into the
    convolution leaves an ``Identity``), and a convolution whose output only an activation layer reads
    (ReLU, ReLU6, Hardtanh, SiLU; ``conv -> bn -> relu`` after folding) replaced by one
    :class:`ConvActivation` step of the two snapshots: the activation applied in the convolution's
    output pass where it runs planned, its ``forward`` (the two layers) otherwise; a ReLU or Hardtanh
    that alone reads an addition's sum taken into the addition step (ResNet's ``relu(out + identity)``)."""
    steps = [step for step in steps if not (isinstance(step, _LayerStep) and step.index == step.out
                                             and type(_layer(step)) in _PASS_THROUGH)]
    returned = {outputs} if isinstance(outputs, int) else set(outputs)

    def alone(p: int, k: int, i: int) -> bool:
        """Whether step ``k`` is the only reader of slot ``i``'s value step ``p`` wrote (an in-place
        step ``k``'s output replaces it; another one's result is a new slot)."""
        later = steps[k].out != i
        between = all(s is None or (i not in s.reads and s.out != i) for s in steps[p + 1:k])
        read_later = i in returned or any(s is not None and i in s.reads for s in steps[k + 1:])
        return between and not (later and read_later)

    producer: dict[int, int] = {}  # slot -> the index in steps of the step that last wrote it
    for k, step in enumerate(steps):
        found = _activation_layer(step)
        if found is not None:
            layer, i = found
            p = producer.get(i)
            first = None if p is None else steps[p]
            if (isinstance(first, _AddStep) and first.activation is None and type(layer) in _ADD_ACTIVATIONS
                    and alone(p, k, i)):
                steps[p] = _AddStep(first.a, first.b, step.out, first.inplace, layer)
                steps[k] = None
                producer[step.out] = p
                continue
            if (isinstance(first, _LayerStep) and type(_layer(first)) in _PLAIN_CONVS
                    and "forward" not in _layer(first).__dict__ and alone(p, k, i)):
                planned = _PlannedStep(ConvActivation(_layer(first), layer))
                steps[p] = _LayerStep(planned, first.index, step.out, planned)
                steps[k] = None
                producer[step.out] = p
                continue
        producer[step.out] = k
    return [step for step in steps if step is not None]


def _activation_layer(step: _Step) -> tuple[Module, int] | None:
    """``(activation layer, input slot)`` of a step that applies ReLU, ReLU6, Hardtanh or SiLU to one
    slot: such a layer's step, or a recorded ``relu``/``hardtanh``/``silu`` op call (a new layer of
    its settings); None for any other step."""
    if isinstance(step, _LayerStep):
        layer = _layer(step)
        if type(layer) in _FUSED_ACTIVATIONS and "forward" not in layer.__dict__:
            return layer, step.index
        return None
    if not isinstance(step, _FunctionStep) or len(step.reads) != 1:
        return None
    args, kwargs = step.template
    if not args or not isinstance(args[0], _Slot) or any(isinstance(a, _Slot) for a in args[1:]):
        return None
    make = _ACTIVATION_OPS.get(step.function)
    try:
        return None if make is None else (make(*args[1:], **kwargs), step.reads[0])
    except TypeError:  # arguments the op takes that its layer does not
        return None


#: The recorded activation ops (the functions :func:`npconv.tracing.recorded` wraps) and the layer
#: each call makes.
_ACTIVATION_OPS = {
    _act.relu.__wrapped__: lambda inplace=False: activation.ReLU(inplace=inplace),
    _act.hardtanh.__wrapped__: lambda min_val, max_val: activation.Hardtanh(min_val, max_val),
    _act.hardtanh_.__wrapped__: lambda min_val, max_val: activation.Hardtanh(min_val, max_val, inplace=True),
    _act.silu.__wrapped__: lambda: activation.SiLU(),
}


def _layer(step: _LayerStep) -> Module:
    """The layer snapshot a layer step runs."""
    return step.planned.layer if step.planned is not None else step.run.__self__


def _tensors(value: Any, argument: str) -> tuple[Tensor, ...]:
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(isinstance(v, Tensor) for v in values):
        raise TypeError(f"npconv.jit.trace: {argument} must be a Tensor or a tuple of Tensors, got "
                        f"{type(value).__name__}")
    return tuple(values)


def _check(mod: Module, traced: TracedModule, inputs: tuple[Tensor, ...], tolerance: float) -> None:
    with no_grad():
        expected = mod(*(t.clone() for t in inputs))
        got = traced(*(t.clone() for t in inputs))
    pairs = zip(expected, got, strict=True) if isinstance(expected, (tuple, list)) else [(expected, got)]
    for e, g in pairs:
        e, g = e._array, g._array
        atol = tolerance * float(np.abs(e).max(initial=0))
        if e.shape != g.shape or not np.allclose(g, e, rtol=tolerance, atol=atol, equal_nan=True):
            raise TracerError("npconv.jit.trace: the traced module's output differs from the module's on the "
                              "check inputs (the forward depends on something the trace froze)")


def is_tracing() -> bool:
    """Whether this thread is recording a :func:`trace` (torch's ``torch.jit.is_tracing``)."""
    recorder = tracing.active
    return recorder is not None and recorder.thread == threading.get_ident()


def is_scripting() -> bool:
    """False: npconv compiles no TorchScript (``torch.jit.is_scripting``, which models test to take
    their eager branch)."""
    return False


def ignore(fn: Any = None, *, drop: bool = False) -> Any:
    """``torch.jit.ignore``: marks a function TorchScript leaves in Python; npconv runs everything in
    Python, so ``fn`` is returned as it is (also as ``@ignore(drop=...)``)."""
    return fn if fn is not None else (lambda f: f)


def unused(fn: Any) -> Any:
    """``torch.jit.unused``: ``fn`` as it is (npconv compiles nothing)."""
    return fn
