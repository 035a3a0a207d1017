"""Per-thread scratch buffers and the worker pool that every kernel shares.

* :func:`buffer` hands out a cached per-thread array (contents undefined) that is reused across
  calls: fresh large allocations cost page faults on every call (performance findings, pitfall 2).
* :func:`run` spreads work items over Python threads with single-threaded BLAS (or runs them on the
  calling thread, with as many BLAS threads as asked for: one unless a kernel chose BLAS threads).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..backends import blas_threads

__all__ = ["buffer", "clear", "run"]

_buffers: dict[int, dict[str, np.ndarray]] = {}
_buffers_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_workers = 0
_executor_lock = threading.Lock()


def buffer(name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A cached per-thread scratch array of ``shape`` and ``dtype`` (contents undefined).

    The same ``name`` on the same thread returns (a view of) the same memory, so a kernel must not
    hold two live buffers of one name, nor return a buffer to its caller.
    """
    dtype = np.dtype(dtype)
    key = threading.get_ident()
    cache = _buffers.get(key)
    if cache is None:
        with _buffers_lock:
            cache = _buffers.setdefault(key, {})
    nbytes = math.prod(shape) * dtype.itemsize
    raw = cache.get(name)
    if raw is None or raw.nbytes < nbytes:
        cache.pop(name, None)
        raw = np.empty(-(-nbytes // 64) * 8, np.float64)  # 64-byte multiple, 16-byte aligned
        cache[name] = raw
    return raw.view(np.uint8)[:nbytes].view(dtype).reshape(shape)


def clear() -> None:
    """Free the cached scratch buffers of every thread."""
    with _buffers_lock:
        _buffers.clear()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_workers
    with _executor_lock:
        if _executor is None or _executor_workers < workers:
            if _executor is not None:
                _executor.shutdown(wait=True)
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="npconv")
            _executor_workers = workers
        return _executor


def run(items: list[Any], work: Callable[[int, Any], None], threads: int, blas: int = 1) -> None:
    """Call ``work(worker_id, item)`` for every item on ``threads`` workers (worker 0 is the caller).

    Worker ``k`` takes items ``k, k + threads, ...`` in order: a fixed assignment, so per-worker
    accumulations (``grad_weight``) sum the same terms in the same order on every run. Every worker
    runs single-threaded BLAS; with one worker, BLAS gets ``blas`` threads (default 1: OpenBLAS's
    pool keeps spinning for ~2**28 cycles after a multithreaded call and takes a core from the
    worker threads of the next call, which cost a CIFAR-style network 1.35-1.6x; see
    ``docs/performance.md``).
    """
    threads = max(1, min(threads, len(items)))
    if threads == 1:
        with blas_threads(blas):
            for item in items:
                work(0, item)
        return

    def worker(worker_id: int) -> None:
        for item in items[worker_id::threads]:
            work(worker_id, item)

    with blas_threads(1):
        futures = [_pool(threads - 1).submit(worker, k) for k in range(1, threads)]
        try:
            worker(0)
        finally:
            for future in futures:
                future.result()
