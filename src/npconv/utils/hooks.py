"""Hook handles and the module backward hook (torch's ``torch.utils.hooks``).

:class:`BackwardHook` implements ``Module.register_full_backward_hook``: the module's Tensor
inputs that require grad pass through one joint identity node, its Tensor outputs through
identity nodes that record their gradients. When the backward pass reaches the joint node it
holds the gradients of every input at once, so the hooks see ``(module, grad_input,
grad_output)`` together and may replace ``grad_input`` before it flows on, as in torch.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..tensor import Tensor, is_grad_enabled, make_result, queue_callback

__all__ = ["RemovableHandle", "BackwardHook"]


class RemovableHandle:
    """Returned by ``register_*_hook``: ``handle.remove()`` (or leaving a ``with`` block) removes the hook."""

    _ids = itertools.count()

    def __init__(self, hooks_dict: OrderedDict[int, Any], *extra_dicts: dict[int, Any]) -> None:
        self.id = next(RemovableHandle._ids)
        self._dicts = (hooks_dict, *extra_dicts)

    def remove(self) -> None:
        for hooks in self._dicts:
            hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class BackwardHook:
    """One forward call's bookkeeping for the module's full backward hooks."""

    def __init__(self, module: Any, hooks: Sequence[Callable[..., Any]]) -> None:
        self.module = module
        self.hooks = list(hooks)
        self.n_inputs = 0
        self.grad_outputs: list[np.ndarray | None] = []
        self.input_hooked = False
        self.called = False

    def setup_input_hook(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Route the Tensor arguments that require grad through one joint node."""
        self.n_inputs = len(args)
        # as torch: when any input requires grad, every floating one is routed (and gets a grad_input)
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.numpy().dtype.kind in "fc"]
        if not any(args[i].requires_grad for i in positions) or not is_grad_enabled():
            return args
        self.input_hooked = True
        inputs = [args[i] for i in positions]

        def joint_backward(grads: np.ndarray) -> tuple[np.ndarray | None, ...]:
            grad_input: list[Any] = [None] * self.n_inputs
            for slot, position in enumerate(positions):
                grad_input[position] = None if isinstance(grads[slot], int) else grads[slot]
            replaced = self._call_hooks(tuple(grad_input))
            if replaced is not None:
                grad_input = list(replaced)
            return tuple(grad_input[position] for position in positions)

        # the joint node's "value" is a slot per input; each gradient lands in its slot (0 = none yet)
        joint = make_result(np.zeros(len(inputs), dtype=object), inputs, joint_backward,
                            "BackwardHookFunctionBackward")
        wrapped = list(args)
        for slot, (position, tensor) in enumerate(zip(positions, inputs, strict=True)):
            wrapped[position] = make_result(tensor.numpy(), (joint,), _slot_backward(slot, len(inputs)),
                                            "BackwardHookFunctionBackward")
        return tuple(wrapped)

    def setup_output_hook(self, result: Any) -> Any:
        """Record the gradient of each Tensor output (a Tensor, or a tuple/list of them)."""
        outputs = result if isinstance(result, (tuple, list)) else (result,)
        if not is_grad_enabled() or not any(isinstance(o, Tensor) and o.requires_grad for o in outputs):
            return result
        self.grad_outputs = [None] * len(outputs)
        wrapped = list(outputs)
        for index, output in enumerate(outputs):
            if isinstance(output, Tensor) and output.requires_grad:
                wrapped[index] = make_result(output.numpy(), (output,), self._record(index),
                                             "BackwardHookFunctionBackward")
        if not isinstance(result, (tuple, list)):
            return wrapped[0]
        return type(result)(wrapped) if isinstance(result, list) else tuple(wrapped)

    def _record(self, index: int) -> Callable[[np.ndarray], tuple[np.ndarray]]:
        def backward(grad: np.ndarray) -> tuple[np.ndarray]:
            self.grad_outputs[index] = grad
            if not self.input_hooked and not self.called:  # no input needs a gradient: call once, at the end
                self.called = True
                queue_callback(lambda: self._call_hooks((None,) * max(self.n_inputs, 1)))
            return (grad,)

        return backward

    def _call_hooks(self, grad_input: tuple[Any, ...]) -> tuple[Any, ...] | None:
        grad_output = tuple(None if g is None else Tensor(g) for g in self.grad_outputs)
        current = tuple(None if g is None else Tensor(g) for g in grad_input)
        replaced = False
        for hook in self.hooks:
            result = hook(self.module, current, grad_output)
            if result is None:
                continue
            result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            if len(result) != len(current):
                raise RuntimeError("Backward hook returned an invalid number of grad_input, "
                                   f"got {len(result)}, but expected {len(current)}")
            current, replaced = result, True
        if not replaced:
            return None
        return tuple(None if g is None else np.asarray(getattr(g, "data", g)) for g in current)


def _slot_backward(slot: int, count: int) -> Callable[[np.ndarray], tuple[np.ndarray]]:
    def backward(grad: np.ndarray) -> tuple[np.ndarray]:
        slots = np.zeros(count, dtype=object)
        slots[slot] = grad
        return (slots,)

    return backward
