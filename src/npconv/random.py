"""Random generators: npconv's global one (``npconv.manual_seed``) and ``npconv.Generator``.

Both wrap a NumPy ``Generator`` (PCG64), so a seed reproduces npconv's draws, not torch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "Generator",
    "manual_seed",
    "default_generator",
    "seed",
    "initial_seed",
    "numpy_generator",
    "get_rng_state",
    "set_rng_state",
]


class Generator:
    """``npconv.Generator()``: an independent random stream for ``randn(..., generator=g)`` and friends."""

    def __init__(self, device: Any = "cpu") -> None:
        from .dtypes import device_of

        self.device = device_of(device)
        self._seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.rng = np.random.default_rng(self._seed)

    def manual_seed(self, seed: int) -> Generator:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"manual_seed seed must be an int, but got {type(seed).__name__}")
        self._seed = int(seed) % 2**64
        self.rng = np.random.default_rng(self._seed)
        return self

    def seed(self) -> int:
        value = int(np.random.SeedSequence().generate_state(1)[0])
        self.manual_seed(value)
        return value

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict[str, Any]:
        """The stream's state (a dict of NumPy's bit generator state, not a torch ByteTensor)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> Generator:
        if not isinstance(state, dict):
            raise TypeError(
                f"set_state state must be a dict from get_state(), but got {type(state).__name__}"
            )
        self.rng.bit_generator.state = state
        return self


_global = Generator()


def manual_seed(seed: int) -> Generator:
    """Reseed npconv's global generator (like ``torch.manual_seed``) and return it."""
    return _global.manual_seed(seed)


def seed() -> int:
    """Reseed from fresh entropy; return the seed used."""
    return _global.seed()


def initial_seed() -> int:
    return _global.initial_seed()


def get_rng_state() -> dict[str, Any]:
    return _global.get_state()


def set_rng_state(state: dict[str, Any]) -> None:
    _global.set_state(state)


def default_generator() -> np.random.Generator:
    """The NumPy generator behind npconv's global generator."""
    return _global.rng


def numpy_generator(generator: Any = None, argument: str = "generator") -> np.random.Generator:
    """The NumPy generator to draw from: the global one for None, or that of a Generator."""
    if generator is None:
        return _global.rng
    if isinstance(generator, Generator):
        return generator.rng
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(
        f"{argument} must be an npconv.Generator, a numpy.random.Generator or None, "
        f"but got {type(generator).__name__}"
    )
