"""``npconv.compile`` and ``npconv.compiler``: torch's compiler entry points, so a program's
``model = torch.compile(model)`` runs unchanged.

npconv has no graph compiler: ``compile`` checks torch's arguments and returns the module or function
itself (torch's contract is the same results, possibly faster; for a fixed input shape in inference,
:func:`npconv.jit.trace` is npconv's faster path). Unlike torch's ``OptimizedModule``, the returned
module is the original one, so its ``state_dict`` keys carry no ``_orig_mod.`` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["compile", "disable", "is_compiling", "reset"]

_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile(model: Callable | None = None, *, fullgraph: bool = False, dynamic: bool | None = None,
            backend: str | Callable = "inductor", mode: str | None = None, options: dict | None = None,
            disable: bool = False) -> Any:
    """``model`` itself (a module or function), or, without one, a decorator returning its argument."""
    for name, value in (("fullgraph", fullgraph), ("disable", disable)):
        if not isinstance(value, bool):
            raise TypeError(f"compile {name} must be a bool, but got {value!r}")
    if dynamic is not None and not isinstance(dynamic, bool):
        raise TypeError(f"compile dynamic must be a bool or None, but got {dynamic!r}")
    if not (isinstance(backend, str) or callable(backend)):
        raise TypeError(f"compile backend must be a name or a callable, but got {backend!r}")
    if mode not in _MODES:
        raise RuntimeError(f"Unrecognized mode={mode!r}, should be one of: {', '.join(map(str, _MODES[1:]))}")
    if mode is not None and options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same "
                           "time.")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"compile options must be a dict or None, but got {options!r}")
    if model is None:
        return lambda fn: compile(fn, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode,
                                  options=options, disable=disable)
    if not callable(model):
        raise RuntimeError(f"compile expects a callable (a module or function), but got "
                           f"{type(model).__name__}")
    return model


def disable(fn: Callable | None = None, recursive: bool = True) -> Any:
    """``torch.compiler.disable``: ``fn`` itself (nothing is compiled), or a decorator."""
    return fn if fn is not None else (lambda f: f)


def is_compiling() -> bool:
    """False: npconv never runs code under a compiler."""
    return False


def reset() -> None:
    """``torch.compiler.reset``: nothing to clear."""
