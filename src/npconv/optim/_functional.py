"""Array helpers shared by the optimizers' update rules (torch's in-place tensor idioms on ndarrays)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..backends import get_num_threads
from ..kernels import workspace

__all__ = ["as_real", "lerp_", "add_weight_decay", "in_runs", "RUN"]


def as_real(array: np.ndarray) -> np.ndarray:
    """A complex array as interleaved real/imaginary parts (torch's ``view_as_real``)."""
    return array.view(array.real.dtype) if array.dtype.kind == "c" else array


def lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start.lerp_(end, weight)`` with torch's two-sided formula (exact at weight 0 and 1)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


def add_weight_decay(grad: np.ndarray, theta: np.ndarray, group: dict) -> np.ndarray:
    """``-g`` if ``maximize``, then L2 weight decay ``g + weight_decay * theta`` (new array if changed)."""
    if group["maximize"]:
        grad = -grad
    weight_decay = float(group["weight_decay"])
    if weight_decay != 0:
        grad = grad + weight_decay * theta
    return grad


#: Parameters of at least twice this many elements are updated in runs of this many elements.
RUN = 1 << 16


def in_runs(update: Callable[..., None], *arrays: np.ndarray | None) -> None:
    """``update(*runs)`` on runs of the flat elements of same-shaped C-contiguous ``arrays`` (None
    entries stay None) over the worker threads, else ``update(*arrays)`` once. Each element's
    arithmetic is the whole-array update's; the temporaries are run-sized instead of parameter-sized
    (fresh large allocations page-fault) and each run is read from memory once for all its steps."""
    present = [a for a in arrays if a is not None]
    shape = present[0].shape
    if present[0].size < 2 * RUN or not all(a.flags.c_contiguous and a.shape == shape for a in present):
        update(*arrays)
        return
    flat = [None if a is None else a.reshape(-1) for a in arrays]
    runs = [slice(i, i + RUN) for i in range(0, present[0].size, RUN)]
    workspace.run(runs, lambda _, s: update(*(None if f is None else f[s] for f in flat)), get_num_threads())
