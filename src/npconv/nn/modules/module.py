"""``Module``: the base class of layers, with torch's registration, state-dict and repr rules."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ... import tracing
from ...backends import memory as _memory
from ...checks import refuses_oversize
from ...tensor import Tensor, as_array, to_dtype
from ...utils.hooks import BackwardHook, RemovableHandle
from ..parameter import Buffer, Parameter, UninitializedParameter

__all__ = ["Module", "StateDictError"]


class StateDictError(RuntimeError, ValueError):
    """A state dict that does not fit the module (torch raises RuntimeError; this is also a ValueError)."""


class _IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self.missing_keys}, unexpected_keys={self.unexpected_keys})"


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    first = lines.pop(0)
    return first + "\n" + "\n".join(" " * spaces + line for line in lines)


def _no_cache() -> None:
    return None


#: ``enter()`` of the cache: the handler it replaced, None when it is in force already (or off)
_enter_memory_cache = _memory.module.enter if _memory.available else _no_cache


def has_call_hooks(module: Module) -> bool:
    """Whether calling ``module`` runs forward, forward-pre or backward hooks (else it is exactly its
    ``forward``)."""
    d = module.__dict__
    return bool(d.get("_forward_pre_hooks") or d.get("_forward_hooks") or d.get("_backward_hooks"))


def registered(module: Module, store: str, name: str) -> Any:
    """``getattr(module, name)`` for a name registered in ``store`` (``_modules``, ``_parameters``):
    the dict lookup first (a layer's call reads several), ``Module.__getattr__`` otherwise (a name a
    parametrization or a subclass serves)."""
    registered_names = module.__dict__[store]
    return registered_names[name] if name in registered_names else getattr(module, name)


class Module:
    """Base class for all layers. Assigning a Parameter, Module or Buffer attribute registers it."""

    training: bool
    _version = 1
    #: Parameter/buffer names a state dict may lack (the module keeps its own value, as torch's
    #: ``_load_from_state_dict`` upgrades of older formats do).
    _optional_state_keys: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # npconv's own layers: a parameter larger than the machine's memory is a ValueError, not MemoryError
        if cls.__module__.startswith("npconv.") and "__init__" in cls.__dict__:
            cls.__init__ = refuses_oversize(None, "parameter")(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        for store in HOOK_STORES:
            object.__setattr__(self, store, OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # the outermost module call puts npconv's cache of freed array memory in force (a layer's
        # fresh output then reuses memory an earlier, freed one had: no page faults; see backends)
        previous = _enter_memory_cache()
        try:
            if tracing.active is not None:
                return tracing.active.call(self, args, kwargs)
            if not has_call_hooks(self):
                return self.forward(*args, **kwargs)
            return self._call_with_hooks(args, kwargs)
        finally:
            if previous is not None:
                _memory.module.restore(previous)

    def _call_with_hooks(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """torch's ``_call_impl``: pre-hooks, backward-hook wiring, forward, forward hooks."""
        args, kwargs = self._run_pre_hooks(args, kwargs)
        backward_hook = None
        if self._backward_hooks:
            backward_hook = BackwardHook(self, list(self._backward_hooks.values()))
            args = backward_hook.setup_input_hook(args)
        try:
            result = self.forward(*args, **kwargs)
        except BaseException:
            self._run_forward_hooks(args, kwargs, None, only_always_called=True)
            raise
        result = self._run_forward_hooks(args, kwargs, result)
        if backward_hook is not None:
            result = backward_hook.setup_output_hook(result)
        return result

    def _run_pre_hooks(self, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        for hook_id, hook in list(self._forward_pre_hooks.items()):
            if hook_id not in self._forward_pre_hooks_with_kwargs:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
                continue
            result = hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError("forward pre-hook must return None or a tuple of "
                                       f"(new_args, new_kwargs), but got {result}.")
                args, kwargs = result
        return args, kwargs

    def _run_forward_hooks(self, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any,
                           only_always_called: bool = False) -> Any:
        """Each hook may replace ``result``; after a failed forward only ``always_call`` hooks run
        (with None), and their own errors are dropped: the forward's error is the one to report."""
        for hook_id, hook in list(self._forward_hooks.items()):
            if only_always_called and hook_id not in self._forward_hooks_always_called:
                continue
            with_kwargs = hook_id in self._forward_hooks_with_kwargs
            try:
                hook_result = hook(self, args, kwargs, result) if with_kwargs else hook(self, args, result)
            except Exception:
                if only_always_called:
                    continue
                raise
            if hook_result is not None and not only_always_called:
                result = hook_result
        return result

    # -- hooks ------------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook: Callable[..., Any], *, prepend: bool = False,
                                  with_kwargs: bool = False) -> RemovableHandle:
        """``hook(module, args)`` (or ``hook(module, args, kwargs)``) before each forward; a non-None
        result replaces ``args`` (or ``(args, kwargs)``)."""
        handle = RemovableHandle(self._hooks("_forward_pre_hooks"),
                                 self._hooks("_forward_pre_hooks_with_kwargs"))
        _insert(self._forward_pre_hooks, handle.id, hook, prepend)
        if with_kwargs:
            self._forward_pre_hooks_with_kwargs[handle.id] = True
        return handle

    def register_forward_hook(self, hook: Callable[..., Any], *, prepend: bool = False,
                              with_kwargs: bool = False, always_call: bool = False) -> RemovableHandle:
        """``hook(module, args, output)`` (or ``hook(module, args, kwargs, output)``) after each forward;
        a non-None result replaces the output. ``always_call`` also runs it when forward raises."""
        handle = RemovableHandle(self._hooks("_forward_hooks"), self._hooks("_forward_hooks_with_kwargs"),
                                 self._hooks("_forward_hooks_always_called"))
        _insert(self._forward_hooks, handle.id, hook, prepend)
        if with_kwargs:
            self._forward_hooks_with_kwargs[handle.id] = True
        if always_call:
            self._forward_hooks_always_called[handle.id] = True
        return handle

    def register_full_backward_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_input, grad_output)`` once the gradients of the module's inputs are known
        (tuples with None where there is none); a non-None result replaces ``grad_input``."""
        handle = RemovableHandle(self._hooks("_backward_hooks"))
        _insert(self._backward_hooks, handle.id, hook, prepend)
        return handle

    def register_backward_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """torch's deprecated hook reports the gradients of the module's *last operation*, which npconv
        does not reproduce: use :meth:`register_full_backward_hook`."""
        raise NotImplementedError("register_backward_hook (deprecated in torch) is not supported: its "
                                  "gradients are those of the module's last autograd node; use "
                                  "register_full_backward_hook")

    def _hooks(self, store: str) -> OrderedDict[int, Any]:
        """The hook dict ``store``, created on first use (modules pickled before hooks existed lack it)."""
        if store not in self.__dict__:
            object.__setattr__(self, store, OrderedDict())
        return self.__dict__[store]

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        if name in HOOK_STORES:
            return self._hooks(name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    # -- registration -----------------------------------------------------------------------
    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f'parameter name must be a non-empty string without ".", got {name!r}')
        if name not in self._parameters and hasattr(self, name):  # torch's: no silent shadowing
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(npconv.nn.Parameter or None required)"
            )
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f'buffer name must be a non-empty string without ".", got {name!r}')
        if name not in self._buffers and hasattr(self, name):
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, (Tensor, np.ndarray)):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            "(npconv Tensor, ndarray or None required)")
        self.__dict__.pop(name, None)
        self._buffers[name] = None if tensor is None else (
            tensor if isinstance(tensor, Tensor) and not isinstance(tensor, Buffer)
            else Tensor(as_array(tensor))
        )
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if not isinstance(name, str) or "." in name or not name:
            raise KeyError(f'module name must be a non-empty string without ".", got {name!r}')
        if name not in self._modules and hasattr(self, name):
            raise KeyError(f"attribute '{name}' already exists")
        self.__dict__.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            self.__dict__.pop(name, None)
            self.register_parameter(name, value)
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(npconv.nn.Parameter or None expected)"
                )
            params[name] = None
            return
        if isinstance(value, Module):
            if "_modules" not in self.__dict__:
                raise AttributeError("cannot assign module before Module.__init__() call")
            params.pop(name, None)
            self._buffers.pop(name, None)
            self.__dict__.pop(name, None)
            self.add_module(name, value)
            return
        modules = self.__dict__.get("_modules")
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}'")
            modules[name] = None
            return
        if isinstance(value, Buffer):
            if params is not None:
                params.pop(name, None)
                self._modules.pop(name, None)
            self.__dict__.pop(name, None)
            self.register_buffer(name, Tensor(value.numpy()), value.persistent)
            return
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, (Tensor, np.ndarray)):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(npconv Tensor, ndarray or None expected)")
            buffers[name] = None if value is None else (
                value if isinstance(value, Tensor) else Tensor(as_array(value))
            )
            return
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # -- traversal --------------------------------------------------------------------------
    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            yield from module.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, store: str, prefix: str, recurse: bool,
                       remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse
                   else [(prefix, self)])
        for module_prefix, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs; a shared Parameter once unless ``remove_duplicate=False``."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)  # type: ignore[misc]

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target: str) -> Module:
        module: Module = self
        for item in target.split(".") if target else []:
            if item not in module._modules:
                raise AttributeError(f"{module._get_name()} has no attribute `{item}`")
            module = module._modules[item]
        return module

    def get_parameter(self, target: str) -> Parameter:
        """The Parameter at dotted path ``target`` (AttributeError naming what is missing, like torch)."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if not hasattr(module, name):
            raise AttributeError(f"{module._get_name()} has no attribute `{name}`")
        param = getattr(module, name)
        if not isinstance(param, Parameter):
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return param

    def get_buffer(self, target: str) -> Tensor:
        """The buffer at dotted path ``target`` (AttributeError naming what is missing, like torch)."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if not hasattr(module, name):
            raise AttributeError(f"{module._get_name()} has no attribute `{name}`")
        if name not in module._buffers:
            raise AttributeError(f"`{name}` is not a buffer")
        return module._buffers[name]

    def set_submodule(self, target: str, module: Module, strict: bool = False) -> None:
        """Replace (or, unless ``strict``, add) the submodule at dotted path ``target``."""
        if not target:
            raise ValueError("Cannot set the submodule without a target name!")
        if not isinstance(module, Module):
            raise ValueError(f"`module` is not an nn.Module, found {type(module)}")
        parent_path, _, name = target.rpartition(".")
        parent = self.get_submodule(parent_path)
        if strict and not hasattr(parent, name):
            raise AttributeError(f"{parent._get_name()} has no attribute `{name}`")
        if hasattr(parent, name) and not isinstance(getattr(parent, name), Module):
            raise AttributeError(f"`{name}` is not an nn.Module")
        setattr(parent, name, module)

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ----------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.numpy()[...] = 0

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(tensor)`` or keywords
        (``non_blocking``/``memory_format`` accepted, no effect): cast floating point and complex
        parameters and buffers in place (the Parameter objects stay the same). CPU only."""
        device, dtype = _to_arguments(args, kwargs)
        if device is not None:
            _check_cpu(device)
        if dtype is None:
            return self
        target = to_dtype(dtype)
        if target.kind not in "fc":
            raise TypeError("nn.Module.to only accepts floating point or complex dtypes, "
                            f"but got desired dtype={target}")
        return self._cast(target, "fc")

    def _cast(self, target: np.dtype, kinds: str) -> Module:
        """Every parameter and buffer of a dtype kind in ``kinds`` (and its gradient) cast to ``target``."""
        for tensor in list(self.parameters()) + list(self.buffers()):
            if tensor.numpy().dtype.kind in kinds:
                tensor.data = tensor.numpy().astype(target)
                if tensor.grad is not None:
                    tensor.grad = Tensor(tensor.grad.numpy().astype(target))
        return self

    def float(self) -> Module:
        """Floating point parameters and buffers as float32 (complex ones stay complex, as torch's)."""
        return self._cast(np.dtype(np.float32), "f")

    def double(self) -> Module:
        """Floating point parameters and buffers as float64 (complex ones stay complex, as torch's)."""
        return self._cast(np.dtype(np.float64), "f")

    def half(self) -> Module:
        """Floating point parameters and buffers as float16 (complex ones stay complex, as torch's)."""
        return self._cast(np.dtype(np.float16), "f")

    def bfloat16(self) -> Module:
        raise TypeError("npconv has no bfloat16 (NumPy lacks it): use float32 or float16")

    def type(self, dst_type: Any) -> Module:
        return self.to(dst_type)

    def cpu(self) -> Module:
        return self

    def cuda(self, device: Any = None) -> Module:
        _check_cpu("cuda" if device is None else f"cuda:{device}")
        return self

    def share_memory(self) -> Module:
        """No effect: worker processes share the arrays by fork (kept for torch programs)."""
        return self

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """No effect (torch's graph compiler has no npconv counterpart); the module runs as it is."""

    # -- state dict -------------------------------------------------------------------------
    def state_dict(self, *, destination: dict[str, Any] | None = None, prefix: str = "",
                   keep_vars: bool = False) -> dict[str, Any]:
        """Parameters and persistent buffers by dotted name, as Tensors sharing memory with them
        (torch's detached tensors); the Parameters and buffers themselves if ``keep_vars``."""
        destination = OrderedDict() if destination is None else destination
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else Tensor(param.numpy())
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else Tensor(buf.numpy())
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        return destination

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> _IncompatibleKeys:
        """Copy arrays (Tensors, ndarrays or torch tensors) into the parameters and buffers.

        Values are cast to the dtype of their parameter (``assign=True`` keeps the checkpoint's).
        Mismatches are reported in the result, or, if ``strict``, refused with a
        :class:`StateDictError` (a RuntimeError like torch's, and a ValueError) listing all of them.
        Everything is validated before anything is assigned: a call that raises changes nothing.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        targets = self._state_dict_targets()
        missing = [key for key, (module, name, _) in targets.items()
                   if key not in state_dict and name not in module._optional_state_keys]
        unexpected = [key for key in state_dict if key not in targets]
        values, errors = {}, []
        for key, (module, name, target) in targets.items():
            if key in state_dict:
                value, error = _checked_value(key, state_dict[key], module, name, target, assign)
                if error is None:
                    values[key] = value
                else:
                    errors.append(error)
        if strict:
            errors = _key_errors(missing, unexpected) + errors
        if errors:
            raise StateDictError(
                f"Error(s) in loading state_dict for {self._get_name()}:\n\t" + "\n\t".join(errors)
            )
        for key, value in values.items():
            _assign(targets[key][2], value)
        for module in self.modules():
            finish = getattr(module, "_finish_load_state_dict", None)
            if finish is not None:
                finish()
        return _IncompatibleKeys(missing, unexpected)

    def _state_dict_targets(self) -> dict[str, tuple[Module, str, Tensor]]:
        """Every parameter and persistent buffer by dotted name, with its module and local name: a module
        used at several places under each of its names, as :meth:`state_dict` writes them (torch's)."""
        targets: dict[str, tuple[Module, str, Tensor]] = {}
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            base = module_prefix + ("." if module_prefix else "")
            for name, param in module._parameters.items():
                if param is not None:
                    targets[base + name] = (module, name, param)
            for name, buf in module._buffers.items():
                if buf is not None and name not in module._non_persistent_buffers_set:
                    targets[base + name] = (module, name, buf)
        return targets

    # -- repr and pickling ------------------------------------------------------------------
    def _get_name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra_lines = []
        extra = self.extra_repr()
        if extra:
            extra_lines = extra.split("\n")
        child_lines = []
        for key, module in self._modules.items():
            mod_str = _addindent(repr(module), 2)
            child_lines.append("(" + key + "): " + mod_str)
        lines = extra_lines + child_lines
        main = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                main += extra_lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_non_persistent_buffers_set", set())


def _key_errors(missing: list[str], unexpected: list[str]) -> list[str]:
    errors = []
    if missing:
        errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
    if unexpected:
        errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
    return errors


def _numeric_array(value: Any) -> np.ndarray | None:
    """A checkpoint value (Tensor, ndarray, torch tensor, number) as an ndarray; None if not numeric."""
    if isinstance(value, Tensor):
        array = value.numpy()
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        array = value.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            return None
    return array if array.dtype.kind in "biufc" else None


def _checked_value(key: str, value: Any, module: Module, name: str, target: Tensor,
                   assign: bool) -> tuple[np.ndarray | None, str | None]:
    """``(array to assign, None)`` or ``(None, why the value cannot be loaded into target)``."""
    array = _numeric_array(value)
    if array is None:
        got = type(value).__name__ + (f" of dtype {value.dtype}" if hasattr(value, "dtype") else "")
        return None, f"cannot load {key}: expected a numeric Tensor or array, got {got}"
    if isinstance(target, UninitializedParameter):
        check = getattr(module, "_check_loaded_shape", None)
        reason = None if check is None else check(name, array.shape)
        if reason is not None:
            return None, f"cannot materialize {key} from a checkpoint value of shape {array.shape}: {reason}"
    elif array.shape != target.numpy().shape:
        return None, (f"size mismatch for {key}: copying a param with shape {array.shape} from checkpoint, "
                      f"the shape in current model is {target.numpy().shape}.")
    dtype = array.dtype if assign else target.numpy().dtype
    if array.dtype.kind == "c" and dtype.kind != "c":
        return None, f"cannot load {key}: a complex value into a {dtype} tensor"
    return array.astype(dtype, copy=True), None


def _assign(target: Tensor, value: np.ndarray) -> None:
    """Materialise a lazy parameter if needed and take the validated array (never fails)."""
    if isinstance(target, UninitializedParameter):
        target.materialize(value.shape)
    target.data = value


HOOK_STORES = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks")
_DEVICE_TYPES = {"cpu", "cuda", "mps", "xpu", "meta", "hip", "mtia", "ipu", "xla", "hpu", "privateuseone"}


def _insert(hooks: OrderedDict[int, Any], key: int, hook: Callable[..., Any], prepend: bool) -> None:
    if not callable(hook):
        raise TypeError(f"hook must be callable, got {type(hook).__name__}")
    hooks[key] = hook
    if prepend:
        hooks.move_to_end(key, last=False)


def _is_device(value: Any) -> bool:
    if isinstance(value, str):
        return value.split(":")[0] in _DEVICE_TYPES
    return getattr(value, "type", None) in _DEVICE_TYPES and not isinstance(value, (np.dtype, type))


def _to_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``(device, dtype)`` from torch's ``Module.to`` call forms."""
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "memory_format"}
    if unknown:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(unknown)}")
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    for arg in args:
        if isinstance(arg, bool) or arg is None:
            continue  # non_blocking, or an explicit None
        if isinstance(arg, Tensor):
            dtype = arg.numpy().dtype
        elif _is_device(arg):
            device = arg
        else:
            dtype = arg
    return device, dtype


def _check_cpu(device: Any) -> None:
    text = device if isinstance(device, str) else str(device)
    kind, _, index = text.partition(":")
    if kind != "cpu" or index not in ("", "0"):
        raise ValueError(f"npconv runs on the CPU only: device must be None or 'cpu', got {device!r}")
