"""Datasets: map-style (``__getitem__``/``__len__``) and iterable, with torch's helpers."""

from __future__ import annotations

import bisect
import math
import numbers
import warnings
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Any, Generic, TypeVar

from ...tensor import Tensor
from .sampler import numpy_rng

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "StackDataset", "ConcatDataset", "Subset",
           "random_split"]

T_co = TypeVar("T_co", covariant=True)


class Dataset(Generic[T_co]):
    """A map-style dataset: subclasses define ``__getitem__(index)`` and usually ``__len__``.

    ``a + b`` concatenates two datasets. A dataset may also define ``__getitems__(indices)``
    returning a list of samples; the DataLoader then fetches each batch with one call.
    """

    def __getitem__(self, index: Any) -> T_co:
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other: Dataset[T_co]) -> ConcatDataset[T_co]:
        return ConcatDataset([self, other])


class IterableDataset(Dataset[T_co]):
    """A stream of samples: subclasses define ``__iter__``. With worker processes each worker
    iterates its own copy; use :func:`get_worker_info` inside ``__iter__`` to split the work."""

    def __iter__(self) -> Iterator[T_co]:
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other: Dataset[T_co]) -> Any:
        raise TypeError("IterableDataset does not support +: use itertools.chain over the datasets")


class TensorDataset(Dataset[tuple[Tensor, ...]]):
    """Sample ``i`` is ``tuple(t[i] for t in tensors)``; all tensors share their first dimension."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        for index, tensor in enumerate(tensors):
            if not isinstance(tensor, Tensor):
                raise TypeError(
                    f"TensorDataset tensors[{index}] must be a Tensor, got {type(tensor).__name__}")
            if tensor.ndim == 0:
                raise ValueError(
                    f"TensorDataset tensors[{index}] must have a first dimension, got a 0-d tensor")
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) != 1:
            raise ValueError(f"Size mismatch between tensors: first dimensions {sizes}")
        self.tensors = tensors

    def __getitem__(self, index: Any) -> tuple[Tensor, ...]:
        return tuple(tensor[index] for tensor in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class StackDataset(Dataset[Any]):
    """Zips datasets of equal length: sample ``i`` is a tuple (positional) or dict (keywords)."""

    def __init__(self, *args: Dataset[Any], **kwargs: Dataset[Any]) -> None:
        if args and kwargs:
            raise ValueError("Supported either ``tuple``- (via ``args``) or``dict``- (via ``kwargs``) like "
                             "input/output, but both types are given.")
        datasets = list(args) or list(kwargs.values())
        if not datasets:
            raise ValueError("At least one dataset should be passed")
        lengths = [len(d) for d in datasets]  # type: ignore[arg-type]
        if len(set(lengths)) != 1:
            raise ValueError(f"Size mismatch between datasets: {lengths}")
        self._length = lengths[0]
        self.datasets: tuple[Any, ...] | dict[str, Any] = tuple(args) if args else dict(kwargs)

    def __getitem__(self, index: int) -> Any:
        if isinstance(self.datasets, dict):
            return {key: dataset[index] for key, dataset in self.datasets.items()}
        return tuple(dataset[index] for dataset in self.datasets)

    def __len__(self) -> int:
        return self._length


class ConcatDataset(Dataset[T_co]):
    """The datasets one after the other; negative indices count from the end."""

    def __init__(self, datasets: Iterable[Dataset[T_co]]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("datasets should not be an empty iterable")
        for dataset in self.datasets:
            if isinstance(dataset, IterableDataset):
                raise TypeError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(accumulate(len(d) for d in self.datasets))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index: int) -> T_co:
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"ConcatDataset index must be an int, got {type(index).__name__}")
        if index < 0:
            if -index > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            index = len(self) + index
        if index >= len(self):
            raise IndexError(f"index {index} is out of range for a ConcatDataset of length {len(self)}")
        dataset_index = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[dataset_index - 1] if dataset_index > 0 else 0
        return self.datasets[dataset_index][index - start]


class Subset(Dataset[T_co]):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset[T_co], indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]  # type: ignore[index]
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices: list[int]) -> list[T_co]:
        getitems = getattr(self.dataset, "__getitems__", None)
        if callable(getitems):
            return getitems([self.indices[i] for i in indices])
        return [self.dataset[self.indices[i]] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)


def _split_lengths(total: int, lengths: Sequence[float]) -> list[int]:
    """``lengths`` as counts: ints as given, or fractions summing to 1 (remainder spread round-robin)."""
    if not isinstance(lengths, Sequence) or isinstance(lengths, (str, bytes)) or not lengths:
        raise TypeError(f"lengths must be a non-empty sequence of ints or fractions, got {lengths!r}")
    for index, length in enumerate(lengths):
        if not isinstance(length, numbers.Real) or isinstance(length, bool):
            raise TypeError(f"lengths[{index}] must be an int or a fraction, got {length!r}")
    if all(isinstance(length, numbers.Integral) for length in lengths):
        counts = [int(length) for length in lengths]
        if any(count < 0 for count in counts):
            raise ValueError(f"lengths must be >= 0, got {counts}")
    elif math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for index, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"Fraction at index {index} is not between 0 and 1")
        counts = [int(math.floor(total * fraction)) for fraction in lengths]
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
        for index, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"Length of split at index {index} is 0. "
                              "This might result in an empty dataset.", UserWarning, stacklevel=3)
    else:
        raise ValueError(f"lengths must be ints summing to the dataset's length ({total}) or fractions "
                         f"summing to 1, got {list(lengths)}")
    if sum(counts) != total:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset! "
                         f"({sum(counts)} != {total})")
    return counts


def random_split(dataset: Dataset[T_co], lengths: Sequence[float],
                 generator: Any = None) -> list[Subset[T_co]]:
    """Split ``dataset`` into non-overlapping random :class:`Subset`\\ s of the given lengths
    (ints, or fractions summing to 1) using ``generator`` (npconv's global one by default)."""
    counts = _split_lengths(len(dataset), lengths)  # type: ignore[arg-type]
    permutation = numpy_rng(generator).permutation(sum(counts)).tolist()
    return [Subset(dataset, permutation[end - count:end]) for end, count in zip(accumulate(counts), counts,
                                                                                  strict=True)]
