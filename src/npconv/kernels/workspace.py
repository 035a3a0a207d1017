"""Per-thread scratch buffers and the worker pool that every kernel shares.

* :func:`buffer` hands out a cached per-thread array (contents undefined) that is reused across
  calls: fresh large allocations cost page faults on every call (performance findings, pitfall 2).
  A thread's buffers are owned by that thread (``threading.local``) and freed when it ends;
  :func:`clear` frees those of every live thread.
* :func:`run` spreads work items over Python threads with single-threaded BLAS (or runs them on the
  calling thread, with as many BLAS threads as asked for: one unless a kernel chose BLAS threads).

Fork safety: a child process starts with no pool (its threads do not exist after ``fork``), fresh
locks and only the forking thread's buffers; the pool is re-created on the child's first
multithreaded call (``os.register_at_fork``).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..backends import blas_threads, memory

__all__ = ["buffer", "clear", "run", "cached_bytes", "SCRATCH_BYTES", "memory_bound"]

#: The constant term of the memory bound: scratch any pass may use beyond its operands.
SCRATCH_BYTES = 64 * 2**20


def memory_bound(*arrays_bytes: int) -> int:
    """Peak extra bytes a convolution pass may allocate (its result included): twice its operands
    and result, ``2 * (a + b + result)``, plus :data:`SCRATCH_BYTES` (docs/performance.md)."""
    return 2 * sum(arrays_bytes) + SCRATCH_BYTES


class _Cache:
    """One thread's named scratch arrays (weak-referenceable, so :func:`clear` can reach it)."""

    __slots__ = ("arrays", "__weakref__")

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}


_local = threading.local()
#: The caches of the live threads; an entry disappears when its thread ends (its local is freed).
_caches: weakref.WeakSet[_Cache] = weakref.WeakSet()
_caches_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_workers = 0
_executor_lock = threading.Lock()


def _thread_cache() -> _Cache:
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = _Cache()
        with _caches_lock:
            _caches.add(cache)
    return cache


def buffer(name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A cached per-thread scratch array of ``shape`` and ``dtype`` (contents undefined).

    The same ``name`` on the same thread returns (a view of) the same memory, so a kernel must not
    hold two live buffers of one name, nor return a buffer to its caller.
    """
    dtype = np.dtype(dtype)
    arrays = _thread_cache().arrays
    nbytes = math.prod(shape) * dtype.itemsize
    raw = arrays.get(name)
    if raw is None or raw.nbytes < nbytes:
        arrays.pop(name, None)  # free the old one before allocating the larger one
        raw = np.empty(-(-nbytes // 64) * 8, np.float64)  # 64-byte multiple, 16-byte aligned
        arrays[name] = raw
    return raw.view(np.uint8)[:nbytes].view(dtype).reshape(shape)


def clear() -> None:
    """Free the cached scratch buffers of every thread."""
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.arrays.clear()


def cached_bytes() -> int:
    """Bytes of scratch currently cached by all live threads."""
    with _caches_lock:
        caches = list(_caches)
    return sum(raw.nbytes for cache in caches for raw in list(cache.arrays.values()))


def _worker_start() -> None:
    """A worker thread allocates through npconv's cache of freed array memory (its context starts
    without it: NumPy keeps the allocator per context)."""
    if memory.available:
        memory.module.enter()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_workers
    with _executor_lock:
        if _executor is None or _executor_workers < workers:
            if _executor is not None:
                _executor.shutdown(wait=True)
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="npconv",
                                           initializer=_worker_start)
            _executor_workers = workers
        return _executor


def _after_fork_in_child() -> None:
    """The child has only the forking thread: forget the parent's pool (its threads are gone) and
    replace the locks (another thread may have held them at the fork)."""
    global _executor, _executor_workers, _executor_lock, _caches_lock, _caches
    _executor, _executor_workers = None, 0
    _executor_lock = threading.Lock()
    _caches_lock = threading.Lock()
    own = getattr(_local, "cache", None)
    _caches = weakref.WeakSet([own] if own is not None else [])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(items: list[Any], work: Callable[[int, Any], None], threads: int, blas: int = 1) -> None:
    """Call ``work(worker_id, item)`` for every item on ``threads`` workers (worker 0 is the caller).

    Worker ``k`` takes items ``k, k + threads, ...`` in order: a fixed assignment, so per-worker
    accumulations (``grad_weight``) sum the same terms in the same order on every run. Every worker
    runs single-threaded BLAS; with one worker, BLAS gets ``blas`` threads (default 1: OpenBLAS's
    pool keeps spinning for ~2**28 cycles after a multithreaded call and takes a core from the
    worker threads of the next call, which cost a CIFAR-style network 1.35-1.6x; see
    ``docs/performance.md``). ``blas=0``: the work calls no BLAS, whose thread count is left alone
    (setting and restoring it costs ~5 us per run).
    """
    threads = max(1, min(threads, len(items)))
    context = contextlib.nullcontext() if blas == 0 else blas_threads(blas if threads == 1 else 1)

    def worker(worker_id: int) -> None:
        for item in items[worker_id::threads]:
            work(worker_id, item)

    with context:
        if threads == 1:
            worker(0)
            return
        futures = [_pool(threads - 1).submit(worker, k) for k in range(1, threads)]
        try:
            worker(0)
        finally:
            for future in futures:
                future.result()
