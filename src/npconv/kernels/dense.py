"""Matrix products of a linear layer on the worker threads (single-threaded BLAS each).

Every other kernel runs on npconv's worker threads; a multithreaded BLAS call in between leaves
OpenBLAS's pool spinning, taking a core from the next kernel's workers, so the rows of a product
are split over the workers instead (measured: docs/performance.md).

* :func:`matmul_rows` ``a (R, K) @ b (K, M)``, rows of ``a`` split over the workers;
* :func:`matmul_t_rows` ``a (R, P)^T @ b (R, Q)``, the sum over rows split, per-worker partials
  (a fixed assignment: the same result on every run with the same thread count).
"""

from __future__ import annotations

import numpy as np

from ..backends import get_num_threads
from . import workspace

__all__ = ["matmul_rows", "matmul_t_rows", "PARALLEL_MIN_MACS"]

#: Products with fewer multiply-adds run in one call on the calling thread (single-threaded BLAS).
PARALLEL_MIN_MACS = 1 << 22


def _runs(rows: int, macs: int) -> tuple[list[slice], int]:
    threads = get_num_threads() if macs >= PARALLEL_MIN_MACS else 1
    threads = max(1, min(threads, rows))
    step = -(-rows // threads) if rows else 1
    return [slice(i, i + step) for i in range(0, rows, step)] or [slice(0, 0)], threads


def matmul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a (R, K) @ b (K, M)`` as a new ``(R, M)`` array."""
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    runs, threads = _runs(a.shape[0], a.shape[0] * a.shape[1] * b.shape[1])
    workspace.run(runs, lambda _, s: np.matmul(a[s], b, out=out[s]), threads)
    return out


def matmul_t_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a (R, P)^T @ b (R, Q)`` as a new ``(P, Q)`` array."""
    runs, threads = _runs(a.shape[0], a.shape[0] * a.shape[1] * b.shape[1])
    partial = np.zeros((threads, a.shape[1], b.shape[1]), np.result_type(a, b))

    def work(worker: int, s: slice) -> None:
        partial[worker] += np.matmul(a[s].T, b[s])

    workspace.run(runs, work, threads)
    return partial.sum(axis=0)
