"""``npconv.jit.trace``: a module's forward recorded once and replayed without its Python, as
``torch.jit.trace``.

Tracing runs ``mod(*example_inputs)`` once and records what it computes as a list of steps: each call
of a *layer* (a module of a fixed set of npconv layer types: convolutions, linear, pooling,
activations, flatten, identity, resampling, padding and group/layer norm, in eval mode dropout, batch and
instance norm), each tensor addition
(``a + b``, ``a += b``) and each call of a recorded
tensor op (:func:`npconv.tracing.recorded`: the activations, ``max_pool``/``avg_pool``/
``adaptive_avg_pool`` behind ``F.max_pool2d`` and friends, ``F.interpolate``, ``F.pad``, ``reshape``/``view``,
``flatten``,
``permute``, ``transpose``, ``squeeze``, ``unsqueeze``, ``contiguous``, ``cat``, ``mean``, indexing,
the products, differences, quotients and negations, however
called: ``F.relu(x)``, ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``). Containers and custom
modules are not steps: their ``forward`` runs while tracing and its layer calls, additions and ops are
recorded. The traced module replays the steps: no module calls, container loops or hook checks, and a
planned convolution runs its kept plan directly; calls that record no autograd run a bound program
(:class:`npconv._replay._Program`).

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

from . import tracing
from ._replay import (
    _REBUILDS,
    _add,
    _AddStep,
    _FunctionStep,
    _LayerStep,
    _PlannedStep,
    _program,
    _Replay,
    _Slot,
    _Step,
)
from .autograd import is_grad_enabled, no_grad
from .nn.modules import (
    activation,
    batchnorm,
    conv,
    dropout,
    flatten,
    instancenorm,
    linear,
    normalization,
    padding,
    pixelshuffle,
    pooling,
    upsampling,
)
from .nn.modules.container import Sequential
from .nn.modules.fused import ChunkedSequential, ConvActivation, fusable_activation
from .nn.modules.module import HOOK_STORES, Module, has_call_hooks
from .ops import activation as _act
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
    upsampling.Upsample, upsampling.UpsamplingNearest2d, upsampling.UpsamplingBilinear2d,
    pixelshuffle.PixelShuffle, pixelshuffle.PixelUnshuffle,
    normalization.GroupNorm, normalization.LayerNorm, normalization.LocalResponseNorm,
    *(getattr(padding, f"{kind}Pad{d}d")
      for kind in ("Constant", "Zero", "Reflection", "Replication", "Circular") for d in (1, 2, 3)),
})
#: Layers recorded only in eval mode (in training mode dropout is random and batch norm updates its
#: running statistics).
_EVAL_LAYERS = frozenset({dropout.Dropout, dropout.Dropout1d, dropout.Dropout2d, dropout.Dropout3d,
                          batchnorm.BatchNorm1d, batchnorm.BatchNorm2d, batchnorm.BatchNorm3d,
                          instancenorm.InstanceNorm1d, instancenorm.InstanceNorm2d,
                          instancenorm.InstanceNorm3d})
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
        if kind is ChunkedSequential and "forward" not in module.__dict__:
            return Sequential.forward(module, *args, **kwargs)  # the program chunks what it runs itself
        if (kind not in _LAYERS and kind not in _EVAL_LAYERS) or "forward" in module.__dict__:
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


class TracedModule(Module):
    """The module :func:`trace` returns: ``forward`` replays the recorded steps. Its parameters, buffers
    and children are the traced module's (``state_dict`` keys unchanged). A call that records no
    autograd runs the bound program built from the previous such call (:mod:`npconv._replay`), which
    keeps its activation buffers and worker scratch while the traced module lives (MobileNetV2 at
    batch 1: 8.4 MB); outputs are new tensors either way."""

    def __init__(self, original: Module, steps: list[_Step], count: int,
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
        """The steps replayed on ``inputs``; ``replay``: a :class:`~npconv._replay._Program` is built
        from this call's values for the next calls."""
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
        if fusable_activation(layer):
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
