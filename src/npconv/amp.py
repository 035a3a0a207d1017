"""``npconv.amp`` (``torch.amp``): mixed precision switched off.

npconv computes in the dtypes it is given (no bfloat16, no autocasting), so a program's AMP lines run
where they are disabled - ``torch.autocast(device_type, enabled=use_amp)`` and
``GradScaler(enabled=use_amp)`` with ``use_amp`` False, as on a machine without a GPU - and an enabled
autocast or scaler is refused with a ValueError naming ``enabled`` (never a silent float32 run of code
written for another precision).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["autocast", "GradScaler"]


def _check_disabled(what: str, enabled: Any) -> None:
    if not isinstance(enabled, bool):
        raise TypeError(f"{what} enabled must be a bool, but got {enabled!r}")
    if enabled:
        raise ValueError(f"{what} enabled must be False: npconv has no mixed precision (it computes in the "
                         "tensors' own dtypes), but got enabled=True")


class autocast:  # noqa: N801 - torch's name
    """``torch.autocast(device_type, dtype=None, enabled=True, cache_enabled=None)``: a context manager
    and decorator that changes nothing; only ``enabled=False`` is accepted."""

    def __init__(self, device_type: str = "cpu", dtype: Any = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        if not isinstance(device_type, str):
            raise TypeError(f"autocast device_type must be a string, but got {device_type!r}")
        _check_disabled("autocast", enabled)
        self.device = device_type
        self.fast_dtype = dtype
        self._enabled = False

    def __enter__(self) -> autocast:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        return None

    def __call__(self, fn: Any) -> Any:
        return fn


class GradScaler:
    """``torch.amp.GradScaler(device='cuda', init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5,
    growth_interval=2000, enabled=True)`` disabled, as torch's is when ``enabled=False``: ``scale`` returns
    its argument, ``step`` calls ``optimizer.step()``, ``update`` and ``unscale_`` do nothing."""

    def __init__(self, device: str = "cuda", init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True) -> None:
        _check_disabled("GradScaler", enabled)
        self._device = device

    def is_enabled(self) -> bool:
        return False

    def scale(self, outputs: Any) -> Any:
        return outputs

    def unscale_(self, optimizer: Any) -> None:
        return None

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: Any = None) -> None:
        return None

    def get_scale(self) -> float:
        return 1.0

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            raise ValueError("GradScaler state_dict must be empty for a disabled scaler, but got keys "
                             f"{sorted(state_dict)}")
