"""The replay of a :func:`npconv.jit.trace`: its steps (a layer call, an addition, a recorded op)
and, for calls that record no autograd, the bound program that runs them on buffers planned once
(:class:`_Program`). Private to :mod:`npconv.jit`, which records the steps and owns the public API."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import backends
from .geometry import ConvGeometry
from .kernels import compiled_block as _block
from .kernels import dense as _dense
from .kernels import pointwise as _pointwise
from .kernels import pool as _pool_kernels
from .nn import functional as F
from .nn.modules.conv import Conv2d
from .nn.modules.flatten import Flatten
from .nn.modules.fused import ConvActivation, activation_of
from .nn.modules.linear import Linear
from .nn.modules.module import Module
from .nn.modules.pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, MaxPool1d, MaxPool2d
from .ops import elementwise as _ew
from .ops.conv import records
from .tensor import Tensor

#: A run of bound per-image steps (convolutions, additions) in which a slot exceeds this many bytes
#: runs chunk by chunk of images (:func:`_chunked`), chunks whose largest slot takes at most
#: :data:`CHUNK_BYTES`. MobileNetV2 batch 8, two threads, Zen 4, against no chunks (best of 8-14
#: alternated rounds, ms): 8 / 8 MB 31.4-31.6 / 33.0-33.1, 16 / 8 MB 31.7-31.8; chunks of 12 or 16 MB
#: 33.3 / 35.4 (docs/performance.md).
CHUNK_ABOVE_BYTES = 8 << 20
CHUNK_BYTES = 8 << 20
#: Programs run inverted residual blocks (1x1 expansion, depthwise 3x3, 1x1 projection) as one fused
#: kernel call where the compiled kernel takes them (:func:`_blocks_fused`).
FUSE_BLOCKS = True
#: A block without an expansion whose depthwise reads a network's stem (a 3x3 convolution of stride 2
#: and padding 1 of a few input channels, MobileNetV2's) takes the stem in as its first stage: the
#: stem's output, the network's largest tensor, never goes to memory (:func:`_blocks_fused`).
FUSE_STEMS = True


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
        steps, plans = _residual_fused(steps, plans, arrays, inputs, outputs)
        self.steps, plans = steps, plans = _blocks_fused(steps, plans, arrays, inputs, outputs)
        layers = [(None, step.params) if isinstance(step, _BlockStep)
                  else _layer_binding(step, arrays) if plan is None else None
                  for step, plan in zip(steps, plans, strict=True)]
        fixed = {i for step, plan, layer in zip(steps, plans, layers, strict=True)
                 if plan is not None or layer is not None for i in (*step.reads, step.out)}
        adds = []  # an addition of two slots with buffers (no copy made for it) adds into a buffer
        for step in steps:
            add = (isinstance(step, _AddStep) and len(step.reads) == 2
                   and all(i in fixed and (arrays[i].shape, arrays[i].dtype)
                           == (arrays[step.out].shape, arrays[step.out].dtype) for i in step.reads))
            adds.append(add)
            if add:
                fixed.add(step.out)
        bound = [plan is not None or add or layer is not None
                 for plan, add, layer in zip(plans, adds, layers, strict=True)]
        end = len(steps)
        last = {}  # fixed slot -> the last step that reads or writes it (end: live to the end)
        for k, step in enumerate(steps):
            for i in (*step.reads, step.out):
                if i in fixed:
                    last[i] = k
        outs = (outputs,) if isinstance(outputs, int) else tuple(outputs)
        for i in outs:
            if i in fixed:
                last[i] = end
        self.chunked = chunked = _chunked(steps, plans, adds, arrays, inputs, outs)
        sized = list(arrays)  # the arena's arrays: a chunked run's own slots hold one chunk
        for start, chunking in chunked.items():
            for k in range(start, chunking.stop):  # every chunk runs the whole run: its slots live through it
                for i in (*steps[k].reads, steps[k].out):
                    last[i] = max(last[i], chunking.stop - 1)
            for i in chunking.internal:
                sized[i] = np.empty((chunking.images, *arrays[i].shape[1:]), arrays[i].dtype)
        buffers = self._arena(steps, sized, fixed, last, inputs)
        self.isa = backends.core.isa
        self.inputs = [buffers.get(i) for i in range(inputs)]
        self.outputs = outputs
        self.count = len(arrays)
        self.buffers = buffers
        self.owners = {id(_owner(b)) for b in buffers.values()}
        pairs: dict = {}
        params: list = []
        sizes: dict[str, int] = {}
        scratch: dict[str, np.ndarray] = {}

        def measure(name: str, elements: int, dtype: np.dtype) -> np.ndarray:
            sizes[name] = max(sizes.get(name, 0), elements * dtype.itemsize)
            return np.empty(elements, dtype)

        def own(name: str, elements: int, dtype: np.dtype) -> np.ndarray:
            return scratch[name][:elements * dtype.itemsize].view(dtype)

        def op(k: int, plan: tuple | None, view: Callable[[int], np.ndarray],
               source: Callable[[str, int, np.dtype], np.ndarray]) -> tuple[int, Any]:
            step = steps[k]
            if isinstance(step, _BlockStep):
                return 0, step.bind(view(step.index), view(step.out),
                                    None if step.other is None else view(step.other), source)
            if plan is not None and isinstance(step, _ResidualStep):
                act = None if step.activation is None else activation_of(step.activation)
                return 0, plan[4].bind_residual(view(step.index), view(step.out), source, view(step.other),
                                                act)
            if plan is not None:
                return 0, plan[4].bind(view(step.index), view(step.out), source)
            if layers[k] is not None:
                return 0, layers[k][0](view(step.index), view(step.out))
            if adds[k]:
                act = None if step.activation is None else activation_of(step.activation)
                return 1, (view(step.a[1]), view(step.b[1]), view(step.out), act)
            return 2, (step, buffers.get(step.out))

        def bind_ops(source: Callable[[str, int, np.dtype], np.ndarray]) -> list[tuple[int, Any]]:
            ops, k = [], 0
            while k < end:
                chunking = chunked.get(k)
                if chunking is None:
                    ops.append(op(k, plans[k], buffers.__getitem__, source))
                    k += 1
                    continue
                n = arrays[steps[k].out].shape[0]
                for first in range(0, n, chunking.images):
                    m = min(chunking.images, n - first)

                    def view(i: int, first: int = first, m: int = m, own: frozenset = chunking.internal
                             ) -> np.ndarray:
                        return buffers[i][:m] if i in own else buffers[i][first:first + m]

                    ops.extend(op(j, chunking.plans[j][m] if plans[j] else None, view, source)
                               for j in range(k, chunking.stop))
                k = chunking.stop
            return ops

        for source in (measure, own):  # the scratch sizes first, then the jobs on the program's scratch
            if source is own:
                scratch.update((name, _aligned(size)) for name, size in sizes.items())
            self.ops = bind_ops(source)
        kept = [(step, plan) for step, plan in zip(steps, plans, strict=True) if plan is not None]
        kept += [(steps[j], plan) for chunking in chunked.values() for j, by_size in chunking.plans.items()
                 for plan in by_size.values()]
        for step, (_, _, w, b, prepared) in kept:
            pairs.update(zip(prepared.tokens, prepared.planned, strict=True))
            params.append((step.planned.weight, w))
            if step.planned.bias is not None:
                params.append((step.planned.bias, b))
        for layer in layers:  # their work split by the thread count: every plan's planner state holds it
            if layer is not None:
                params.extend(layer[1])
        for step in steps:  # a fused block: its layers' plans hold while it does (the thread count with them)
            if isinstance(step, _BlockStep):
                for _, _, _, _, prepared in step.plans:
                    pairs.update(zip(prepared.tokens, prepared.planned, strict=True))
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


class _Chunking(NamedTuple):
    """A run of steps ``[start, stop)`` the program runs ``images`` images at a time (:func:`_chunked`):
    ``plans[k][m]``, step ``k``'s plan for ``m`` images; ``internal``, the slots only the run touches
    (their buffers hold one chunk)."""

    stop: int
    images: int
    plans: dict[int, dict[int, tuple]]
    internal: frozenset[int]


def _images(step: _Step, plan: tuple | None, add: bool, arrays: list[np.ndarray]) -> int | None:
    """The batch size of a bound step whose slots all hold that many images (a convolution, or an
    addition of equal shapes), else None."""
    if plan is None and not add:
        return None
    sizes = {arrays[i].shape[0] for i in (*step.reads, step.out)}
    return sizes.pop() if len(sizes) == 1 else None


def _uses(steps: Sequence[_Step]) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Per slot, the steps that read or write it and the steps that write it, in order."""
    users: dict[int, list[int]] = {}
    writers: dict[int, list[int]] = {}
    for k, step in enumerate(steps):
        for i in (*step.reads, step.out):
            users.setdefault(i, []).append(k)
        writers.setdefault(step.out, []).append(k)
    return users, writers


def _chunked(steps: Sequence[_Step], plans: list[tuple | None], adds: list[bool], arrays: list[np.ndarray],
             inputs: int, outputs: tuple[int, ...]) -> dict[int, _Chunking]:
    """Runs of consecutive bound steps over the same batch that the program runs chunk by chunk (each
    image's result as in the whole batch, to the rounding of the kernel a smaller batch may take): from
    the first to the last step touching a slot above :data:`CHUNK_ABOVE_BYTES`, in chunks of images
    whose largest slot in the run takes at most :data:`CHUNK_BYTES`, where a slot lives only in the run
    (its chunks stay in cache) and every convolution in it has a plan that binds for those chunks.
    Keyed by the run's first step."""
    users, _ = _uses(steps)
    found, k = {}, 0
    while k < len(steps):
        n = _images(steps[k], plans[k], adds[k], arrays)
        stop = k + 1
        while n is not None and stop < len(steps) and _images(steps[stop], plans[stop], adds[stop],
                                                              arrays) == n:
            stop += 1
        touched = [(*steps[j].reads, steps[j].out) for j in range(k, stop)] if n is not None and n > 1 else []
        large = [k + j for j, slots in enumerate(touched)
                 if max(arrays[i].nbytes for i in slots) > CHUNK_ABOVE_BYTES]
        if large:
            first, last = large[0], large[-1] + 1
            peak = max(arrays[i].nbytes for slots in touched[first - k:last - k] for i in slots) // n
            images = max(1, CHUNK_BYTES // peak)
            sizes = {min(images, n - start) for start in range(0, n, images)}
            by_step = {j: {m: _chunk_plan(steps[j], plans[j], m) for m in sizes}
                       for j in range(first, last) if plans[j] is not None}
            internal = frozenset(
                steps[j].out for j in range(first, last)
                if steps[j].out >= inputs and steps[j].out not in outputs
                and all(first <= u < last for u in users[steps[j].out]))
            if (images < n and internal
                    and all(p is not None for by_size in by_step.values() for p in by_size.values())):
                found[first] = _Chunking(last, images, by_step, internal)
        k = stop
    return found


def _chunk_plan(step: _Step, plan: tuple, images: int) -> tuple | None:
    """A bound step's kept plan made for ``images`` images, where it binds (with a residual for a
    :class:`_ResidualStep`)."""
    chunk = F._kept_plan_for_batch(step.planned.layer, plan, images)
    if chunk is None:
        return None
    return chunk if (chunk[4].bind_residual if isinstance(step, _ResidualStep) else chunk[4].bind) else None


class _ResidualStep:
    """The program's step for a planned convolution whose output only an addition reads (a residual
    block's ``out + identity``): ``slots[out] = activation(conv(slots[index]) + slots[other])`` in the
    convolution's kernel calls (``PreparedForward.bind_residual``), the addition's activation after it."""

    __slots__ = ("index", "other", "out", "planned", "activation")

    def __init__(self, index: int, other: int, out: int, planned: _PlannedStep,
                 activation: Module | None) -> None:
        self.index, self.other, self.out = index, other, out
        self.planned, self.activation = planned, activation

    @property
    def reads(self) -> tuple[int, ...]:
        return (self.index, self.other)


def _residual_fused(steps: Sequence[_Step], plans: list[tuple | None], arrays: list[np.ndarray],
                    inputs: int, outputs: Any) -> tuple[list, list]:
    """``steps`` and ``plans`` with each addition of a planned convolution's output (read by nothing
    else, not an output; after the addition only where it adds into it) and another slot (unchanged from
    the convolution to the addition) taken into the convolution as a :class:`_ResidualStep` at its place,
    where its plan binds a residual and the addition's activation is one its kernel applies."""
    outs = {outputs} if isinstance(outputs, int) else set(outputs)
    users, writer = _uses(steps)
    fused: dict[int, _ResidualStep] = {}
    dropped: set[int] = set()
    for k, step in enumerate(steps):
        if not (isinstance(step, _AddStep) and step.a[0] and step.b[0]):
            continue
        kind = None if step.activation is None else activation_of(step.activation).kind
        if kind not in (None, "relu", "hardtanh"):
            continue
        for conv_slot, other in ((step.a[1], step.b[1]), (step.b[1], step.a[1])):
            c = writer.get(conv_slot, [None])[0]
            if (c is None or c >= k or c in fused or plans[c] is None or plans[c][4].bind_residual is None
                    or conv_slot == other or conv_slot < inputs or conv_slot in outs or step.out == other
                    or any(c < j < k or (j > k and step.out != conv_slot) for j in users[conv_slot])
                    or any(c <= j < k for j in writer.get(other, ()))
                    or len({(arrays[i].shape, arrays[i].dtype) for i in (conv_slot, other, step.out)}) != 1):
                continue
            fused[c] = _ResidualStep(steps[c].index, other, step.out, steps[c].planned, step.activation)
            dropped.add(k)
            break
    if not fused:
        return list(steps), plans
    kept = [k for k in range(len(steps)) if k not in dropped]
    return [fused.get(k, steps[k]) for k in kept], [plans[k] for k in kept]


class _BlockStep:
    """The program's step for an inverted residual block (:func:`_blocks_fused`): ``slots[out] =
    project(depthwise(expand(slots[index]))) (+ slots[other])`` in one fused kernel call
    (:func:`npconv.kernels.compiled_block.bind_block`); ``plans``, its layers' kept plans, and ``params``,
    their ``(parameter, array)`` pairs, hold the program to the layers it was built from."""

    __slots__ = ("index", "other", "out", "stages", "stride", "plans", "params")

    def __init__(self, index: int, other: int | None, out: int, stages: tuple, stride: int, plans: list,
                 params: tuple) -> None:
        self.index, self.other, self.out, self.stages, self.stride = index, other, out, stages, stride
        self.plans, self.params = plans, params

    @property
    def reads(self) -> tuple[int, ...]:
        return (self.index,) if self.other is None else (self.index, self.other)

    def bind(self, x: np.ndarray, y: np.ndarray, residual: np.ndarray | None,
             source: Callable[[str, int, np.dtype], np.ndarray]) -> Callable[[], None]:
        expand, depthwise, project = self.stages
        run = _block.bind_block(x, y, residual, expand, depthwise, project, self.stride, source)
        if run is None:  # _blocks_fused checked the same arrays' shapes and dtypes
            raise RuntimeError("the fused block's kernel refused arrays it took when the program was built")
        return run


def _block_stage(step: _Step, plan: tuple | None, depthwise: bool,
                 stem: bool = False) -> tuple[_block.Stage, int] | None:
    """``(stage, stride)`` of a planned plain ``Conv2d`` step (or one with its activation) that can be a
    block's 1x1 convolution (``depthwise`` False: stride 1, no padding, ungrouped; a residual step's
    activation after its addition), with ``stem`` also a stem in its expansion's place (3x3, stride 2,
    padding 1, ungrouped, at most ``IR_STEM_MAX_PAIRS`` / 9 input channels), or its depthwise 3x3
    (padding 1, stride 1 or 2); else None."""
    if plan is None or not isinstance(step, (_LayerStep, _ResidualStep)) or step.planned is None:
        return None
    layer = step.planned.layer
    conv, act = (layer._modules["conv"], layer._modules["activation"]) if isinstance(layer, ConvActivation) \
        else (layer, None)
    if not (type(conv) is Conv2d and "forward" not in conv.__dict__ and conv.padding_mode == "zeros"
            and tuple(conv.dilation) == (1, 1) and plan[1] == np.float32):
        return None
    if isinstance(step, _ResidualStep):
        if act is not None or depthwise:
            return None
        act = step.activation
    activation = None if act is None else activation_of(act)
    w = plan[2]
    stride = tuple(conv.stride)
    if depthwise:
        if not (tuple(conv.kernel_size) == (3, 3) and tuple(conv.padding) == (1, 1)
                and stride in ((1, 1), (2, 2)) and conv.groups == w.shape[0] == conv.in_channels
                and w.shape[1] == 1):
            return None
    else:
        pointwise = tuple(conv.kernel_size) == (1, 1) and tuple(conv.padding) == (0, 0) and stride == (1, 1)
        strided_stem = (stem and not isinstance(step, _ResidualStep) and tuple(conv.kernel_size) == (3, 3)
                        and tuple(conv.padding) == (1, 1) and stride == (2, 2)
                        and w.shape[1] * 9 <= _block.STEM_MAX_PAIRS)
        if conv.groups != 1 or not (pointwise or strided_stem):
            return None
    return _block.Stage(w, plan[3], activation), stride[0]


def _blocks_fused(steps: Sequence[_Step], plans: list[tuple | None], arrays: list[np.ndarray],
                  inputs: int, outputs: Any) -> tuple[list, list]:
    """``steps`` and ``plans`` with each inverted residual block taken into one :class:`_BlockStep` at its
    place: a depthwise 3x3 step whose output only the next step, a 1x1 convolution, reads (a residual
    step: ``+ other`` with its activation), and the step before it, where it is a 1x1 convolution (or, with
    :data:`FUSE_STEMS`, a stem: :func:`_block_stage`) whose output only the depthwise reads, as the block's
    expansion; where the compiled kernel takes them (:func:`npconv.kernels.compiled_block.takes`; else the
    block without that step). The fused steps' slots are not written any more."""
    if not FUSE_BLOCKS:
        return list(steps), plans
    outs = {outputs} if isinstance(outputs, int) else set(outputs)
    users, _ = _uses(steps)
    fused: dict[int, _BlockStep] = {}
    dropped: set[int] = set()
    for k in range(len(steps) - 1):
        step, nxt = steps[k], steps[k + 1]
        dw = _block_stage(step, plans[k], True)
        project = _block_stage(nxt, plans[k + 1], False) if dw is not None else None
        if (project is None or k in dropped or nxt.index != step.out or step.out in outs
                or users[step.out] != [k, k + 1]):
            continue
        candidates = [(k, step.index, None)]  # (first step, input slot, expansion): with one first
        prev = steps[k - 1] if k > 0 and k - 1 not in dropped and k - 1 not in fused else None
        pointwise = _block_stage(prev, plans[k - 1], False, FUSE_STEMS) if prev is not None else None
        if (pointwise is not None and not isinstance(prev, _ResidualStep) and prev.out == step.index
                and prev.out >= inputs and prev.out not in outs and users[prev.out] == [k - 1, k]):
            candidates.insert(0, (k - 1, prev.index, pointwise[0]))
        other = nxt.other if isinstance(nxt, _ResidualStep) else None
        residual = None if other is None else arrays[other]
        y = arrays[nxt.out]
        taken = next((c for c in candidates
                      if _block.takes(arrays[c[1]], y, residual, c[2], dw[0], project[0], dw[1])), None)
        if taken is None:
            continue
        first, index, expand = taken
        stages = (expand, dw[0], project[0])
        inner = range(first, k + 2)
        params = tuple((p, a) for j in inner for p, a in ((steps[j].planned.weight, plans[j][2]),
                                                          (steps[j].planned.bias, plans[j][3]))
                       if p is not None)
        fused[first] = _BlockStep(index, other, nxt.out, stages, dw[1], [plans[j] for j in inner], params)
        dropped.update(j for j in inner if j != first)
    if not fused:
        return list(steps), plans
    kept = [k for k in range(len(steps)) if k not in dropped]
    return [fused.get(k, steps[k]) for k in kept], [None if k in fused else plans[k] for k in kept]


def _layer_binding(step: _Step, arrays: list[np.ndarray]) -> tuple[Callable[..., Any], tuple] | None:
    """``(bind(x, y) -> run, parameters)`` of a layer step the program runs as prepared kernel calls
    instead of its ``forward``: global average pooling, max pooling (values only), a linear layer of a few
    rows, each exactly as its forward computes them on the compiled core, and a flatten (a copy);
    ``parameters``: ``(tensor, array)`` pairs whose arrays the calls read. None for other steps or where
    the kernel would not run the recorded arrays."""
    layer = getattr(step.run, "__self__", None) if isinstance(step, _LayerStep) else None
    if layer is None or "forward" in layer.__dict__ or step.out == step.index:
        return None
    x, y = arrays[step.index], arrays[step.out]
    kind, params = type(layer), ()
    if kind in _MAX_POOLS and not layer.return_indices and x.ndim == _MAX_POOLS[kind] + 2:
        nd = _MAX_POOLS[kind]
        geom = ConvGeometry.for_pooling(layer.kernel_size, layer.stride, layer.padding, layer.dilation, nd)
        ceil_mode = bool(layer.ceil_mode)

        def bind(xb: np.ndarray, yb: np.ndarray) -> Any:
            return _pool_kernels.bind_max_pool(xb, yb, geom, ceil_mode)
    elif kind in _ADAPTIVE_AVG_POOLS and x.ndim == _ADAPTIVE_AVG_POOLS[kind] + 2 and set(y.shape[2:]) == {1}:
        bind = _pool_kernels.bind_global_means
    elif kind is Flatten and x.size == y.size:
        def bind(xb: np.ndarray, yb: np.ndarray) -> Any:
            if not (xb.flags.c_contiguous and yb.flags.c_contiguous and xb.dtype == yb.dtype):
                return None
            view = xb.reshape(yb.shape)  # the flattened buffer, copied: the next call reuses it
            return lambda: np.copyto(yb, view)
    elif kind is Linear:
        weight, bias = layer._parameters["weight"], layer._parameters.get("bias")
        w, b = weight._array, None if bias is None else bias._array
        params = ((weight, w),) if bias is None else ((weight, w), (bias, b))

        def bind(xb: np.ndarray, yb: np.ndarray) -> Any:
            return _dense.bind_linear(xb, w, b, yb)
    else:
        return None
    return None if bind(x, y) is None else (bind, params)


_MAX_POOLS = {MaxPool1d: 1, MaxPool2d: 2}
_ADAPTIVE_AVG_POOLS = {AdaptiveAvgPool1d: 1, AdaptiveAvgPool2d: 2, AdaptiveAvgPool3d: 3}


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
