"""The global random generator used by initialisers and dropout (``npconv.manual_seed``)."""

from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "default_generator", "seed"]

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed npconv's global generator (like ``torch.manual_seed``) and return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def seed() -> int:
    """Reseed from fresh entropy; return the seed used."""
    value = int(np.random.SeedSequence().generate_state(1)[0])
    manual_seed(value)
    return value


def default_generator() -> np.random.Generator:
    return _generator
