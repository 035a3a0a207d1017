"""``npconv.cuda``: there is no GPU; answers what torch programs ask before choosing a device."""

from __future__ import annotations

from types import SimpleNamespace

from . import amp as _amp

__all__ = ["is_available", "device_count", "manual_seed", "manual_seed_all", "amp"]

#: ``torch.cuda.amp``'s autocast and GradScaler (mixed precision switched off: :mod:`npconv.amp`)
amp = SimpleNamespace(autocast=_amp.autocast, GradScaler=_amp.GradScaler)


def is_available() -> bool:
    """Always False: npconv computes on the CPU with NumPy."""
    return False


def device_count() -> int:
    return 0


def manual_seed(seed: int) -> None:
    """Accepted and ignored (there is no CUDA generator), as torch does without a GPU."""


def manual_seed_all(seed: int) -> None:
    """Accepted and ignored (there is no CUDA generator), as torch does without a GPU."""
