"""Samplers: the order in which a DataLoader visits a map-style dataset (torch's classes).

Random samplers draw from ``generator`` (an ``npconv.Generator``, a ``numpy.random.Generator``
or None). With None, each pass draws a fresh seed from npconv's global generator, so
``npconv.manual_seed(s)`` makes shuffling reproducible, as ``torch.manual_seed`` does in torch.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any, Generic, TypeVar

import numpy as np

from ... import random as _random

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler",
           "BatchSampler"]

T_co = TypeVar("T_co", covariant=True)


def numpy_rng(generator: Any, argument: str = "generator") -> np.random.Generator:
    """The NumPy generator behind ``generator`` (npconv.Generator, numpy Generator, or None: global)."""
    return _random.numpy_generator(generator, argument)


def epoch_rng(generator: Any) -> np.random.Generator:
    """The stream for one pass: the given generator itself, or a fresh one seeded from the global one."""
    if generator is not None:
        return numpy_rng(generator)
    return np.random.default_rng(int(numpy_rng(None).integers(2**63)))


def _check_positive_int(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} should be a positive integer value, but got {name}={value}")
    return int(value)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} should be a boolean value, but got {name}={value}")
    return bool(value)


class Sampler(Generic[T_co]):
    """Base class: ``__iter__`` yields indices (or batches of them); ``__len__`` is optional."""

    def __init__(self, data_source: Sized | None = None) -> None:
        pass

    def __iter__(self) -> Iterator[T_co]:
        raise NotImplementedError


class SequentialSampler(Sampler[int]):
    """``0, 1, ..., len(data_source) - 1``."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler[int]):
    """A random permutation of the indices (repeated to ``num_samples``), or ``num_samples`` draws
    with replacement."""

    def __init__(self, data_source: Sized, replacement: bool = False, num_samples: int | None = None,
                 generator: Any = None) -> None:
        self.data_source = data_source
        self.replacement = _check_bool(replacement, "replacement")
        self._num_samples = None if num_samples is None else _check_positive_int(num_samples, "num_samples")
        numpy_rng(generator)  # refuse a wrong type now, not at the first pass
        self.generator = generator

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        rng = epoch_rng(self.generator)
        if self.replacement:
            yield from rng.integers(0, n, size=self.num_samples).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from rng.permutation(n).tolist()
        yield from rng.permutation(n)[: self.num_samples % n].tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler[int]):
    """The given indices in a random order."""

    def __init__(self, indices: Sequence[int], generator: Any = None) -> None:
        self.indices = indices
        numpy_rng(generator)
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        for i in epoch_rng(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler[int]):
    """``num_samples`` indices drawn with probabilities proportional to ``weights``."""

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool = True,
                 generator: Any = None) -> None:
        self.num_samples = _check_positive_int(num_samples, "num_samples")
        self.replacement = _check_bool(replacement, "replacement")
        weights_array = np.asarray(getattr(weights, "data", weights), dtype=np.float64)
        if weights_array.ndim != 1:
            raise ValueError("weights should be a 1d sequence but given weights have shape "
                             f"{tuple(weights_array.shape)}")
        if not (np.isfinite(weights_array).all() and (weights_array >= 0).all() and weights_array.sum() > 0):
            raise ValueError("weights must be finite and >= 0 with a positive sum")
        if not self.replacement and self.num_samples > np.count_nonzero(weights_array):
            raise ValueError(f"cannot draw num_samples={self.num_samples} without replacement from "
                             f"{np.count_nonzero(weights_array)} non-zero weights")
        numpy_rng(generator)
        self.weights = weights_array
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        rng = epoch_rng(self.generator)
        p = self.weights / self.weights.sum()
        yield from rng.choice(len(p), size=self.num_samples, replace=self.replacement, p=p).tolist()

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler[list[int]]):
    """Groups the indices of ``sampler`` into lists of ``batch_size`` (the last one shorter unless
    ``drop_last``)."""

    def __init__(self, sampler: Sampler[int] | Iterable[int], batch_size: int, drop_last: bool) -> None:
        self.sampler = sampler
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.drop_last = _check_bool(drop_last, "drop_last")

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else (n + self.batch_size - 1) // self.batch_size
