"""Connection tables for the ``Conv*Map`` layers (Lua Torch's ``nn.tables``), 0-based.

A connection table is an integer array of shape ``(K, 2)``; row ``k`` is
``(input_plane, output_plane)`` and connection ``k`` owns kernel ``weight[k]``.

* :func:`full` - every pair, output-major, so ``weight.reshape(n_out, n_in, *k)`` is the dense
  convolution weight;
* :func:`one_to_one` - rows ``(i, i)``: a depthwise convolution;
* :func:`random` - each output plane reads ``n_to`` distinct input planes, dealt in chunks of a
  random permutation of the inputs (a fresh permutation when the chunks run out), so the inputs
  are used evenly;
* :func:`check` - validate a table and resolve the channel counts.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..random import default_generator
from ..tensor import as_array

__all__ = ["full", "one_to_one", "random", "check"]


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def full(n_in: int, n_out: int) -> np.ndarray:
    """All ``n_in * n_out`` pairs, row ``o * n_in + i`` = ``(i, o)``."""
    n_in, n_out = _count(n_in, "n_in"), _count(n_out, "n_out")
    inputs, outputs = np.meshgrid(np.arange(n_in), np.arange(n_out))
    return np.stack([inputs.ravel(), outputs.ravel()], axis=1).astype(np.int64)


def one_to_one(n: int) -> np.ndarray:
    """Rows ``(i, i)`` for ``i < n``: each plane to its own output (depthwise)."""
    planes = np.arange(_count(n, "n"), dtype=np.int64)
    return np.stack([planes, planes], axis=1)


def random(n_in: int, n_out: int, n_to: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """``n_out * n_to`` rows: output ``o`` reads ``n_to`` distinct inputs (rows ``o * n_to ...``).

    Lua Torch's rule: deal consecutive chunks of ``n_to`` from a random permutation of the
    ``n_in`` inputs (``n_in // n_to`` chunks), drawing a new permutation when they run out.
    ``seed`` (an int or a Generator) makes the table reproducible; by default npconv's global
    generator (:func:`npconv.manual_seed`) is used.
    """
    n_in, n_out, n_to = _count(n_in, "n_in"), _count(n_out, "n_out"), _count(n_to, "n_to")
    if n_to > n_in:
        raise ValueError(f"n_to must be <= n_in (each output reads distinct inputs), got n_to={n_to}, "
                         f"n_in={n_in}")
    rng = seed if isinstance(seed, np.random.Generator) else (
        default_generator() if seed is None else np.random.default_rng(seed))
    chunks = n_in // n_to
    inputs = np.empty((n_out, n_to), dtype=np.int64)
    for o in range(n_out):
        if o % chunks == 0:
            permutation = rng.permutation(n_in)
        start = (o % chunks) * n_to
        inputs[o] = permutation[start:start + n_to]
    outputs = np.repeat(np.arange(n_out, dtype=np.int64), n_to)
    return np.stack([inputs.ravel(), outputs], axis=1)


def _has_duplicate_keys(keys: np.ndarray) -> bool:
    ordered = np.sort(keys)
    return bool(np.any(ordered[1:] == ordered[:-1]))


def check(table: Any, in_channels: int | None = None, out_channels: int | None = None,
          name: str = "connection_table") -> tuple[np.ndarray, int, int]:
    """Validate ``table`` and return ``(table as int64 (K, 2), in_channels, out_channels)``.

    Channel counts default to the largest plane index + 1 of each column; explicit ones must be
    large enough. Raises TypeError for a non-integer table, ValueError for a wrong shape, an empty
    table, negative or out-of-range planes and duplicate rows.
    """
    try:
        array = np.asarray(as_array(table))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be an integer array of shape (K, 2), got {table!r}") from error
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array of shape (K, 2), got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (K, 2) with K >= 1 rows (input_plane, output_plane), "
                         f"got shape {array.shape}")
    array = array.astype(np.int64)
    if array.min() < 0:
        row = int(np.argwhere(array < 0)[0, 0])
        raise ValueError(f"{name} planes must be non-negative, got row {row}: {tuple(array[row].tolist())}")
    needed = (int(array[:, 0].max()) + 1, int(array[:, 1].max()) + 1)
    # a row's key in * needed[1] + out, sorted, finds duplicates ~20x faster than a unique over rows
    # (which the layers' calls paid each time: 226 us for 512 rows); planes below 2**31 keep keys exact
    if max(needed) > 2**31 or _has_duplicate_keys(array[:, 0] * needed[1] + array[:, 1]):
        unique, counts = np.unique(array, axis=0, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"{name} has duplicate rows, e.g. {tuple(unique[counts > 1][0].tolist())} "
                             f"appears {int(counts.max())} times")
    resolved = []
    requested = ((in_channels, needed[0], "in_channels"), (out_channels, needed[1], "out_channels"))
    for value, need, label in requested:
        if value is None:
            resolved.append(need)
            continue
        value = _count(value, label)
        if value < need:
            column = "input" if label == "in_channels" else "output"
            raise ValueError(f"{label}={value} is too small for {name}: it uses {column} plane {need - 1}, "
                             f"so {label} must be >= {need}")
        resolved.append(value)
    return array, resolved[0], resolved[1]
