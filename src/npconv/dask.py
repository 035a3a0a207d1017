"""Batch inference over Dask (optional extra ``dask``: ``dask[array]`` + ``distributed``).

:func:`predict` maps a module over a ``dask.array`` chunked along the batch (first) axis, one
forward pass per chunk, in eval mode without recording a graph. It builds a lazy graph only;
compute it with any scheduler - threads, processes or a ``distributed`` cluster::

    from dask.distributed import Client, LocalCluster
    import dask.array as da
    import npconv.dask

    client = Client(LocalCluster(n_workers=4, threads_per_worker=1))
    images = da.from_zarr("images.zarr")                      # (N, C, H, W)
    logits = npconv.dask.predict(model, images, batch_size=256)
    labels = logits.argmax(axis=1).compute()

The module appears once in the graph, as a single task that all chunk tasks depend on, so a
distributed cluster ships it to each worker once (and keeps it there), not once per chunk.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .nn.modules.module import Module
from .tensor import Tensor, no_grad

__all__ = ["predict"]

_MISSING_DASK = "npconv.dask needs dask; install it with pip install 'npconv[dask]'"


def _dask() -> tuple[Any, Any]:
    try:
        import dask
        import dask.array as da
    except ImportError as error:
        raise ImportError(_MISSING_DASK) from error
    return dask, da


def _forward(module: Module, batch: np.ndarray) -> np.ndarray:
    """``module(batch)`` as an ndarray (no graph)."""
    with no_grad():
        output = module(Tensor(batch))
    if not isinstance(output, Tensor):
        raise TypeError(f"predict needs a module returning one Tensor, got {type(output).__name__}")
    return np.asarray(output.numpy())


def _forward_chunk(chunk: np.ndarray, module: Module) -> np.ndarray:
    return _forward(module, np.ascontiguousarray(chunk))


def predict(module: Module, x: Any, batch_size: int | None = None) -> Any:
    """Lazily apply ``module`` (in eval mode, under ``no_grad``) to every batch of ``x``.

    Args:
        module: an npconv module mapping a batch ``(B, *in_shape)`` to ``(B, *out_shape)``. A copy
            is put in eval mode; ``module`` itself is left untouched.
        x: a ``dask.array.Array`` (or an array-like, wrapped as one chunk per ``batch_size``) of
            shape ``(N, *in_shape)``.
        batch_size: rechunk the first axis into chunks of this many samples (the last chunk may
            be smaller). ``None`` keeps ``x``'s chunking of the first axis.

    Returns:
        A ``dask.array.Array`` of shape ``(N, *out_shape)`` with the module's output dtype, chunked
        like ``x`` along the first axis. Output shape and dtype are found by running the module
        once on a zero sample of ``x``'s dtype (``x`` itself is not computed).
    """
    dask, da = _dask()
    if not isinstance(module, Module):
        raise TypeError(f"module must be an npconv.nn.Module, got {type(module).__name__}")
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not isinstance(x, da.Array):
        array = np.asarray(x)
        x = da.from_array(array, chunks=(batch_size or max(array.shape[0], 1),) + array.shape[1:]) \
            if array.ndim else da.from_array(array)
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis (ndim >= 1), got a {x.ndim}-d array")
    if any(np.isnan(n) for n in x.shape):
        raise ValueError(f"x must have known chunk sizes along every axis, got shape {x.shape}; "
                         "call x.compute_chunk_sizes() first")
    # one chunk spans all non-batch axes, so every task sees whole samples
    x = x.rechunk({0: int(batch_size) if batch_size is not None else x.chunks[0],
                   **{axis: -1 for axis in range(1, x.ndim)}})

    replica = copy.deepcopy(module).eval()
    probe = _forward(replica, np.zeros((1,) + x.shape[1:], dtype=x.dtype))
    if probe.ndim < 1 or probe.shape[0] != 1:
        raise ValueError(
            f"module must keep the batch axis: a batch of 1 gave an output of shape {probe.shape}"
        )
    out_shape = probe.shape[1:]
    chunks = (x.chunks[0],) + tuple((n,) for n in out_shape)
    # one task holding the module; every chunk task depends on it (shipped once per worker)
    shipped = dask.delayed(replica, pure=True, traverse=False)
    return da.map_blocks(
        _forward_chunk, x, shipped,
        chunks=chunks,
        drop_axis=list(range(1, x.ndim)),
        new_axis=list(range(1, 1 + len(out_shape))),
        dtype=probe.dtype,
        meta=np.empty((0,) * len(chunks), dtype=probe.dtype),
        token="npconv-predict",
    )
