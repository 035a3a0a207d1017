"""``default_collate`` and ``default_convert``: how a DataLoader turns samples into a batch.

torch's rules, with npconv Tensors in place of torch tensors: Tensors and numeric ndarrays are
stacked along a new first dimension (in one dtype by torch's promotion); a batch whose first sample is a
Python float becomes a float64 Tensor, one of other Python numbers ``torch.tensor(batch)`` (all ints:
int64, any float: the default float dtype, all bools: bool), NumPy scalars a Tensor of their dtype;
strings and bytes stay a list; mappings, named tuples and sequences are collated field by field (tuples
and lists become lists).
"""

from __future__ import annotations

import collections.abc
import numbers
from typing import Any

import numpy as np

from ...tensor import Tensor, result_dtype

__all__ = ["default_collate", "default_convert"]

_MESSAGE = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}")


def _numeric_array(value: np.ndarray | np.generic) -> bool:
    return np.asarray(value).dtype.kind in "biufc"


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    """``torch.stack`` of the samples: one dtype by torch's promotion (int64 with float32 is float32)."""
    return np.stack([a.astype(result_dtype(*arrays), copy=False) for a in arrays])


def _infer(batch: list[Any]) -> Tensor:
    """``torch.tensor(batch)`` of Python numbers: bools, int64, the default float or complex dtype."""
    from ...ops.creation import tensor  # (the factories import the data utilities' neighbours)

    return tensor(batch)


def default_collate(batch: list[Any]) -> Any:
    """Stack a list of samples into a batch (see the module docstring for the rules)."""
    if not isinstance(batch, collections.abc.Sequence) or isinstance(batch, (str, bytes)) or not batch:
        raise TypeError(f"default_collate expects a non-empty list of samples, got {batch!r:.80}")
    elem = batch[0]
    if isinstance(elem, Tensor):
        shapes = {tuple(t.shape) for t in batch if isinstance(t, Tensor)}
        if len(shapes) != 1 or not all(isinstance(t, Tensor) for t in batch):
            raise RuntimeError(f"stack expects each tensor to be equal size, but got shapes {sorted(shapes)}")
        return Tensor(_stacked([t.numpy() for t in batch]))
    if isinstance(elem, (np.ndarray, np.generic)) and not isinstance(elem, (np.str_, np.bytes_)):
        if not _numeric_array(elem):
            raise TypeError(_MESSAGE.format(np.asarray(elem).dtype))
        shapes = {np.shape(a) for a in batch}
        if len(shapes) != 1:
            raise RuntimeError(f"stack expects each array to be equal size, but got shapes {sorted(shapes)}")
        return Tensor(_stacked([np.asarray(a) for a in batch]))
    if isinstance(elem, float):  # torch: a float first sample makes a float64 batch
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, numbers.Number):  # torch.tensor(batch): the dtype inferred from every sample
        return _infer(batch)
    if isinstance(elem, (str, bytes)):
        return batch  # as given: a list, or a tuple when it is a field of tuple samples (torch's rule)
    if isinstance(elem, collections.abc.Mapping):
        collated = {key: default_collate([sample[key] for sample in batch]) for key in elem}
        try:
            return type(elem)(collated)
        except TypeError:
            return collated
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(samples) for samples in zip(*batch, strict=True)))
    if isinstance(elem, collections.abc.Sequence):
        if len({len(sample) for sample in batch}) != 1:
            raise RuntimeError("each element in list of batch should be of equal size")
        transposed = [default_collate(samples) for samples in zip(*batch, strict=True)]
        if isinstance(elem, tuple):
            return transposed
        try:
            return type(elem)(transposed)
        except TypeError:
            return transposed
    raise TypeError(_MESSAGE.format(type(elem)))


def default_convert(data: Any) -> Any:
    """Without batching (``batch_size=None``): numeric ndarrays become Tensors, containers are
    converted element by element, everything else is returned unchanged."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return Tensor(data) if _numeric_array(data) else data
    if isinstance(data, np.generic) and _numeric_array(data):
        return Tensor(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        converted = {key: default_convert(value) for key, value in data.items()}
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            return type(data)([default_convert(d) for d in data])  # type: ignore[call-arg]
        except TypeError:
            return [default_convert(d) for d in data]
    return data
