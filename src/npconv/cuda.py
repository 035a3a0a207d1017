"""``npconv.cuda``: there is no GPU; answers what torch programs ask before choosing a device."""

from __future__ import annotations

__all__ = ["is_available", "device_count", "manual_seed", "manual_seed_all"]


def is_available() -> bool:
    """Always False: npconv computes on the CPU with NumPy."""
    return False


def device_count() -> int:
    return 0


def manual_seed(seed: int) -> None:
    """Accepted and ignored (there is no CUDA generator), as torch does without a GPU."""


def manual_seed_all(seed: int) -> None:
    """Accepted and ignored (there is no CUDA generator), as torch does without a GPU."""
