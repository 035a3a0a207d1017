"""The tracer in force (:func:`npconv.jit.trace`): None outside a trace. ``Module.__call__``, the
tensor additions, the tensor value reads and the tensor ops marked :func:`recorded` consult it; it lives
apart from ``npconv.jit`` so that ``tensor``, ``ops`` and ``nn.modules.module`` need not import ``jit``
(which imports them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

#: The recording tracer (its ``thread`` is the thread tracing), or None.
active: Any = None


def recorded(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a tensor op whose result depends only on its arguments: no randomness, no state)
    recorded as a step of the trace in force (:meth:`npconv.jit._Recorder.function`), called as it is
    outside a trace (one global read more per call)."""
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        recorder = active
        if recorder is None:
            return function(*args, **kwargs)
        return recorder.function(function, args, kwargs)

    return call
