"""Parametrizations, as ``torch.nn.utils.parametrize`` (the parts conv-net programs use).

``register_parametrization(module, "weight", P)`` moves the tensor to
``module.parametrizations.weight.original`` (or ``original0, original1, ...`` when ``P.right_inverse``
returns several tensors) and turns ``module.weight`` into a property computing ``P(original)``
(then each further registered parametrization in turn). The module's class becomes a subclass
``Parametrized<Class>`` holding that property, so state-dict keys and ``repr`` match torch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ...tensor import Tensor, as_array, no_grad
from ..modules.container import ModuleDict, ModuleList
from ..modules.module import Module
from ..parameter import Parameter

__all__ = ["register_parametrization", "remove_parametrizations", "is_parametrized", "ParametrizationList",
           "type_before_parametrizations", "cached"]


def _store(module: Module, name: str, value: Any, like: Tensor) -> None:
    """Register ``value`` on ``module`` as a Parameter if ``like`` is one, else as a buffer."""
    if isinstance(like, Parameter):
        module.register_parameter(name, Parameter(as_array(value), like.requires_grad))
    else:
        module.register_buffer(name, Tensor(as_array(value)))


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor, in order, and the original tensor(s) they act on."""

    def __init__(self, modules: Sequence[Module], original: Tensor, unsafe: bool = False) -> None:
        if not modules:
            raise ValueError("ParametrizationList requires one or more modules.")
        super().__init__(modules)
        object.__setattr__(self, "unsafe", unsafe)
        value: Any = original
        with no_grad():
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    value = module.right_inverse(value)
        if isinstance(value, Tensor) or isinstance(value, np.ndarray):
            data = as_array(value)
            if data.dtype != original.dtype:
                raise ValueError(f"When `right_inverse` outputs one tensor, it may not change the dtype.\n"
                                 f"original.dtype: {original.dtype}\nright_inverse(original).dtype: "
                                 f"{data.dtype}")
            original.data = np.array(data, copy=True) if data is not original.numpy() else data
            if isinstance(original, Parameter):
                self.register_parameter("original", original)
            else:
                self.register_buffer("original", original)
            object.__setattr__(self, "is_tensor", True)
            object.__setattr__(self, "ntensors", 1)
        else:
            if not isinstance(value, Sequence):
                raise ValueError("'right_inverse' must return a Tensor or a Sequence of tensors (list, "
                                 f"tuple...). Got {type(value).__name__}")
            for i, part in enumerate(value):
                _store(self, f"original{i}", part, original)
            object.__setattr__(self, "is_tensor", False)
            object.__setattr__(self, "ntensors", len(value))
        if not unsafe:
            check = self()
            if not isinstance(check, Tensor):
                raise ValueError(f"A parametrization must return a tensor. Got {type(check).__name__}.")
            if check.shape != original.shape or check.dtype != original.dtype:
                raise ValueError("Registering a parametrization may not change the shape or dtype of the "
                                 f"tensor (unless unsafe=True): got {check.shape} {check.dtype}, expected "
                                 f"{original.shape} {original.dtype}")

    def originals(self) -> list[Tensor]:
        if self.is_tensor:
            return [self.original]
        return [getattr(self, f"original{i}") for i in range(self.ntensors)]

    def right_inverse(self, value: Any) -> None:
        """Set the original tensor(s) so that the parametrized tensor becomes ``value``."""
        with no_grad():
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    value = module.right_inverse(value)
            if self.is_tensor:
                self.original.numpy()[...] = as_array(value)
            else:
                if not isinstance(value, Sequence) or len(value) != self.ntensors:
                    raise ValueError(f"'right_inverse' must return a sequence of {self.ntensors} tensors")
                for original, part in zip(self.originals(), value, strict=True):
                    original.numpy()[...] = as_array(part)

    def forward(self) -> Tensor:
        first, *rest = list(self)
        x = first(self.original) if self.is_tensor else first(*self.originals())
        for module in rest:
            x = module(x)
        return x

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # ModuleList refuses calls; this one computes
        return self.forward(*args, **kwargs)


_cache: dict[tuple[int, str], Tensor] | None = None


@contextlib.contextmanager
def cached() -> Iterator[None]:
    """Inside this context each parametrized tensor is computed once and reused (like torch's)."""
    global _cache
    outer = _cache
    _cache = {} if outer is None else outer
    try:
        yield
    finally:
        _cache = outer


def _inject_class(module: Module) -> None:
    cls = module.__class__
    module.__class__ = type(f"Parametrized{cls.__name__}", (cls,), {"_original_class": cls})


def _inject_property(module: Module, name: str) -> None:
    def get_parametrized(self: Module) -> Tensor:
        if _cache is not None:
            key = (id(self), name)
            if key not in _cache:
                _cache[key] = self.parametrizations[name]()
            return _cache[key]
        return self.parametrizations[name]()

    def set_original(self: Module, value: Any) -> None:
        self.parametrizations[name].right_inverse(value)

    setattr(module.__class__, name, property(get_parametrized, set_original))


def is_parametrized(module: Module, tensor_name: str | None = None) -> bool:
    """Whether ``module`` (or its ``tensor_name``) has a registered parametrization."""
    parametrizations = module.__dict__.get("_modules", {}).get("parametrizations")
    if not isinstance(parametrizations, ModuleDict):
        return False
    return len(parametrizations) > 0 if tensor_name is None else tensor_name in parametrizations


def type_before_parametrizations(module: Module) -> type:
    """The module's class before any parametrization was registered."""
    return module.__class__._original_class if is_parametrized(module) else type(module)


def register_parametrization(module: Module, tensor_name: str, parametrization: Module, *,
                             unsafe: bool = False) -> Module:
    """Make ``module.<tensor_name>`` the output of ``parametrization`` applied to the stored original."""
    if not isinstance(parametrization, Module):
        raise TypeError(f"parametrization must be an npconv.nn.Module, got {type(parametrization).__name__}")
    if is_parametrized(module, tensor_name):
        plist = module.parametrizations[tensor_name]
        if not unsafe:
            current = getattr(module, tensor_name)
            y = parametrization(current)
            if not isinstance(y, Tensor) or y.shape != current.shape or y.dtype != current.dtype:
                raise ValueError("Registering a parametrization may not change the shape or dtype of the "
                                 "tensor")
        plist.append(parametrization)
        object.__setattr__(plist, "unsafe", plist.unsafe or unsafe)
        return module
    original = module._parameters.get(tensor_name)
    if original is None:
        original = module._buffers.get(tensor_name)
    if not isinstance(original, Tensor):
        raise ValueError(f"Module '{module}' does not have a parameter, a buffer, or a parametrized element "
                         f"with name '{tensor_name}'")
    plist = ParametrizationList([parametrization], original, unsafe=unsafe)
    module._parameters.pop(tensor_name, None)
    module._buffers.pop(tensor_name, None)
    if not is_parametrized(module):
        _inject_class(module)
        module.parametrizations = ModuleDict()
    module.parametrizations[tensor_name] = plist
    _inject_property(module, tensor_name)
    return module


def remove_parametrizations(module: Module, tensor_name: str, leave_parametrized: bool = True) -> Module:
    """Undo :func:`register_parametrization` for ``tensor_name``: the tensor becomes a plain parameter
    (or buffer) holding its current parametrized value (``leave_parametrized``) or the original."""
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"Module {module} does not have a parametrization on {tensor_name}")
    plist = module.parametrizations[tensor_name]
    if plist.is_tensor:
        original = plist.original
        if leave_parametrized:
            with no_grad():
                value = getattr(module, tensor_name)
            original.data = np.array(as_array(value), copy=True)
    else:
        if not leave_parametrized:
            raise ValueError("Cannot leave unparametrized (`leave_parametrized=False`) a tensor that is "
                             "parametrized in terms of a sequence of tensors.")
        with no_grad():
            value = getattr(module, tensor_name)
        first = plist.original0
        original = Parameter(as_array(value).copy(), first.requires_grad) if isinstance(first, Parameter) \
            else Tensor(as_array(value).copy())
    delattr(module.__class__, tensor_name)
    del module.parametrizations[tensor_name]
    if isinstance(original, Parameter):
        module.register_parameter(tensor_name, original)
    else:
        module.register_buffer(tensor_name, original)
    if not is_parametrized(module):
        delattr(module, "parametrizations")
        module.__class__ = module.__class__._original_class
    return module
