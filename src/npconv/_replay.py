"""The replay of a :func:`npconv.jit.trace`: its steps (a layer call, an addition, a recorded op)
and, for calls that record no autograd, the bound program that runs them on buffers planned once
(:class:`_Program`). Private to :mod:`npconv.jit`, which records the steps and owns the public API."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import backends
from .kernels import pointwise as _pointwise
from .nn import functional as F
from .nn.modules.fused import ConvActivation, activation_of
from .nn.modules.module import Module
from .ops import elementwise as _ew
from .ops.conv import records
from .tensor import Tensor


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
        plan = None if records(x, self.weight, self.bias) else self.holding(x._array)
        if plan is not None:
            return Tensor(plan[4].run(x._array))
        y = self.layer.forward(x)
        self.plan = F._kept_plan(self.layer)
        return y

    def holding(self, x: np.ndarray) -> tuple | None:
        """The kept plan ``(shape, dtype, weight array, bias array, PreparedForward)`` if it holds for an
        input ``x``: its shape and dtype, the same weight and bias arrays, the planner's state."""
        plan, bias = self.plan, self.bias
        if plan is None:
            return None
        shape, dtype, w, b, prepared = plan
        if (x.shape == shape and x.dtype == dtype and self.weight._array is w
                and (b is None if bias is None else bias._array is b) and prepared.valid()):
            return plan
        return None


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

    Built from ``arrays``, the slot arrays of one replay of ``steps`` with the same input shapes (None for
    a slot fused away), and ``plans``, each step's kept plan where it binds (:func:`_bindable`)."""

    def __init__(self, steps: Sequence[_Step], arrays: list[np.ndarray | None], plans: list[tuple | None],
                 inputs: int, outputs: Any) -> None:
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
        self.count = len(arrays)
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
    plan = step.planned.holding(arrays[step.index]) if isinstance(step, _LayerStep) and step.planned else None
    if plan is None or plan[4].bind is None or arrays[step.out].dtype != plan[1]:
        return None
    return plan


def _program(steps: Sequence[_Step], values: list[Tensor], inputs: int, outputs: Any) -> _Program | None:
    """A :class:`_Program` of the steps, or None where no planned convolution can bind (nothing to gain)
    or a step writes into an input (the caller's tensor, which a program's copy would leave as it was)."""
    if any(step.out < inputs for step in steps):
        return None
    arrays = [None if v is None else v._array for v in values]  # None: a slot fused away
    plans = [_bindable(step, arrays) for step in steps]
    if all(plan is None for plan in plans):
        return None
    return _Program(steps, arrays, plans, inputs, outputs)


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
