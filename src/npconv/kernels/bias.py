"""Bias of a convolution as pure-ndarray passes.

* :func:`add_to_channels`: ``block[o, ...] += b[o]`` for one output block, for algorithms that add
  the bias while the block is still in cache (their passes take ``bias=``; see ``BIAS_PASSES``).
* :func:`add_bias`: ``y[n, o, ...] += b[o]`` in place over the worker threads (the planner's fallback).
* :func:`bias_grad`: ``gb[o] = sum_{n, ...} gy[n, o, ...]`` as per-worker partial sums over images
  (a fixed assignment: the same result on every run with the same thread count).
"""

from __future__ import annotations

import numpy as np

from ..backends import get_num_threads
from . import workspace

__all__ = ["add_to_channels", "add_bias", "bias_grad"]


def add_to_channels(block: np.ndarray, bias: np.ndarray | None) -> None:
    """``block (O_block, *rest) += bias (O_block,)`` in place; nothing when ``bias`` is None."""
    if bias is not None:
        block += bias.reshape((-1,) + (1,) * (block.ndim - 1))


def add_bias(y: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``y (N, O, *out) += bias (O,)`` in place, images spread over the worker threads; returns ``y``."""
    if bias is None or y.size == 0:
        return y
    workspace.run(list(range(y.shape[0])), lambda _, i: add_to_channels(y[i], bias), get_num_threads())
    return y


def bias_grad(gy: np.ndarray) -> np.ndarray:
    """``gb (O,) = gy (N, O, *out)`` summed over images and positions."""
    n, o = gy.shape[:2]
    threads = max(1, min(get_num_threads(), n))
    acc = np.promote_types(gy.dtype, np.float32)  # float16 sums overflow
    partial = np.zeros((threads, o), acc)

    def work(worker: int, i: int) -> None:
        partial[worker] += gy[i].reshape(o, -1).sum(axis=1, dtype=acc)

    workspace.run(list(range(n)), work, threads)
    return partial.sum(axis=0).astype(gy.dtype, copy=False)
