"""The tracer in force (:func:`npconv.jit.trace`): None outside a trace. ``Module.__call__``, the
tensor additions and the tensor value reads consult it; it lives apart from ``npconv.jit`` so that
``tensor`` and ``nn.modules.module`` need not import ``jit`` (which imports them)."""

from __future__ import annotations

from typing import Any

#: The recording tracer (its ``thread`` is the thread tracing), or None.
active: Any = None
