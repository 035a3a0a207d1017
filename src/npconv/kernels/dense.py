"""Matrix products of a linear layer on the worker threads (single-threaded BLAS each).

Every other kernel runs on npconv's worker threads; a multithreaded BLAS call in between leaves
OpenBLAS's pool spinning, taking a core from the next kernel's workers, so the rows of a product
are split over the workers instead (measured: docs/performance.md).

* :func:`matmul_rows` ``a (R, K) @ b (K, M)``, rows of ``a`` split over the workers;
* :func:`matmul_t_rows` ``a (R, P)^T @ b (R, Q)``, the sum over rows split, per-worker partials
  (a fixed assignment: the same result on every run with the same thread count).

The linear layer's three products (:func:`linear_forward`, :func:`linear_grad_input`,
:func:`linear_grad_weight`) take them, except that a few rows times a large float32 weight run as a
1x1 convolution with the rows as positions (``y^T = W x^T``) through the planner's three passes,
on the compiled GEMM: NumPy's OpenBLAS takes 2-4x longer there (:data:`ROWS_AS_POSITIONS_MAX`); and
one row (or a few float32 rows) times a large weight (a classifier at batch 1 to 8) runs on the compiled
core's ``linear_rows`` with the weight's rows split over the workers (:data:`FEW_ROWS_MIN_WEIGHT`,
:data:`FEW_ROWS_MAX`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import algorithm as registry
from . import plan, workspace

__all__ = ["matmul_rows", "matmul_t_rows", "linear_forward", "linear_grad_input", "linear_grad_weight",
           "PARALLEL_MIN_MACS", "BLAS_ONE_THREAD_MACS", "ROWS_AS_POSITIONS_MAX",
           "ROWS_AS_POSITIONS_MIN_WEIGHT", "FORWARD_AS_POSITIONS_MIN_WEIGHT", "FORWARD_AS_POSITIONS_ROWS",
           "FEW_ROWS_MIN_WEIGHT", "FEW_ROWS_MAX", "bind_linear"]

#: Products with fewer multiply-adds run in one call on the calling thread (single-threaded BLAS).
PARALLEL_MIN_MACS = 1 << 22


def _runs(rows: int, macs: int) -> tuple[list[slice], int]:
    threads = get_num_threads() if macs >= PARALLEL_MIN_MACS else 1
    threads = max(1, min(threads, rows))
    step = -(-rows // threads) if rows else 1
    return [slice(i, i + step) for i in range(0, rows, step)] or [slice(0, 0)], threads


#: Products OpenBLAS runs on one thread by itself (its ``interface/gemv.c`` and ``gemm.c`` with the
#: default ``GEMM_MULTITHREAD_THRESHOLD`` of 4): a matrix-vector product (NumPy's for one row or one
#: column) of fewer multiply-adds than the first, a matrix product of at most the second. Those skip
#: :func:`~npconv.backends.blas_threads` (four threadpoolctl calls: ~8 us, 4x a tiny layer's product).
BLAS_ONE_THREAD_MACS = (9216, 262144)


def _blas_one_thread(rows: int, inner: int, cols: int) -> bool:
    macs = rows * inner * cols
    return macs < BLAS_ONE_THREAD_MACS[0] if min(rows, cols) == 1 else macs <= BLAS_ONE_THREAD_MACS[1]


def matmul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a (R, K) @ b (K, M)`` as a new ``(R, M)`` array."""
    if _blas_one_thread(a.shape[0], a.shape[1], b.shape[1]):
        return np.matmul(a, b)
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


#: Row counts ``(forward and grad_weight, grad_input)`` from which, up to :data:`ROWS_AS_POSITIONS_MAX`,
#: a linear product with a float32 weight of at least :data:`ROWS_AS_POSITIONS_MIN_WEIGHT` elements
#: runs as a 1x1 convolution on the compiled GEMM. Two threads, AVX-512, us, 1000x1280 weight,
#: NumPy's OpenBLAS -> convolution: 8 rows forward 636 -> 164, grad_input 263 -> 195, grad_weight
#: 839 -> 221; 2 rows grad_input 228 -> 361 (hence 8); 128 rows forward 1218 -> 1038 (docs/performance.md).
ROWS_AS_POSITIONS_MIN = (2, 8)
ROWS_AS_POSITIONS_MAX = 64
ROWS_AS_POSITIONS_MIN_WEIGHT = 1 << 19
#: The forward also from this many weight elements, per ISA of the compiled core (none: the general
#: rule only), for :data:`FORWARD_AS_POSITIONS_ROWS` rows. Convolution / NumPy's OpenBLAS over the
#: rows, AVX-512 (OpenBLAS's SkylakeX kernels), two threads, 8 / 16 rows: 256x256 weight 0.62-0.75 /
#: 0.58, 512x512 0.61 / 0.32, 512x1000 (ResNet-18's classifier, under the general threshold)
#: 0.29-0.30 / 0.30, 4096x100 0.49-0.58 / 0.54, 100x4096 0.53 / 0.39; one thread 0.48-0.79; 128x256
#: 8 rows 1.28 (hence 64 K elements); 32 rows 0.41-0.84 but 4096x100 1.08 on one thread. With AVX2
#: and OpenBLAS's Haswell kernels the products over the rows are faster: 1.04-1.24 but 512x512 16
#: rows 0.63, so not there. grad_input and grad_weight keep the general rule (256x512: grad_input
#: 1.24-1.34 slower as a convolution).
FORWARD_AS_POSITIONS_MIN_WEIGHT = {"avx512": 1 << 16}
FORWARD_AS_POSITIONS_ROWS = (8, 16)
_POINTWISE = ConvGeometry.create(1, 1, 0, ndim=1)


def _as_positions(pass_name: str, rows: int, weight_size: int, *operands: np.ndarray) -> bool:
    """Whether ``pass_name``'s linear product of ``rows`` rows with a weight of ``weight_size`` elements
    runs as a 1x1 convolution (float32 ``operands``, the compiled GEMM in use)."""
    general = (ROWS_AS_POSITIONS_MIN[pass_name == "grad_input"] <= rows <= ROWS_AS_POSITIONS_MAX
               and weight_size >= ROWS_AS_POSITIONS_MIN_WEIGHT)
    smallest = FORWARD_AS_POSITIONS_MIN_WEIGHT.get(backends.core.isa) if pass_name == "forward" else None
    smaller = (smallest is not None and FORWARD_AS_POSITIONS_ROWS[0] <= rows <= FORWARD_AS_POSITIONS_ROWS[1]
               and weight_size >= smallest)
    if not ((general or smaller) and all(a.dtype == np.float32 for a in operands)):
        return False
    gemm = registry.available().get("gemm")
    return gemm is not None and gemm.compiled


def _positions(a: np.ndarray) -> np.ndarray:
    """Rows ``(R, K)`` as a one-image signal ``(1, K, R)``."""
    return np.ascontiguousarray(a.T)[None]


#: A one-row product (a classifier at batch 1) with a float32/float64 weight of at least this many
#: elements runs on the compiled core's ``linear_rows``, the weight's rows split over the worker
#: threads: the product is the weight's read (MobileNetV2's 1000x1280, 5 MB, cold in the network).
FEW_ROWS_MIN_WEIGHT = 1 << 18
#: So do float32 products of up to this many rows (four rows of x share each vector of the weight).
#: Two threads, AVX-512, us, 1000x1280 weight, medians with the weight evicted / in cache, against the
#: 1x1 convolution: 2 rows 283-353 vs 449-501, 4 rows 286-322 vs 372-418, 8 rows 338-394 vs 457-534 /
#: 153-174 vs 277-379; 16 rows 440-483 vs 425-450 (docs/performance.md).
FEW_ROWS_MAX = 8


def _few_rows_runs(x: np.ndarray, w: np.ndarray) -> bool:
    """Whether ``x (R, K) @ w (M, K)^T`` runs on the compiled core's ``linear_rows``."""
    rows = x.shape[0]
    return (1 <= rows <= (FEW_ROWS_MAX if x.dtype == np.float32 else 1) and w.size >= FEW_ROWS_MIN_WEIGHT
            and x.dtype == w.dtype and x.dtype in (np.float32, np.float64) and w.flags.c_contiguous
            and backends.core.available)


def _few_rows_call(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> tuple[tuple, list[tuple[int, int]]]:
    m, k = w.shape
    return (x, w, y, x.shape[0], k, m), workspace.ranges(m, get_num_threads())


def _few_rows(x: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """``x (R, K) @ w (M, K)^T`` on the compiled core's threads, or None where it does not run it."""
    if not _few_rows_runs(x, w):
        return None
    y = np.empty((x.shape[0], w.shape[0]), x.dtype)
    workspace.run_spans(backends.core.module.linear_rows, *_few_rows_call(np.ascontiguousarray(x), w, y))
    return y


def bind_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                y: np.ndarray) -> Callable[[], None] | None:
    """``ops.linear``'s forward of a few rows (``y = x @ w^T``, then ``y += b``) written into ``y``, its
    kernel calls prepared once on the arrays (x, y C-contiguous): ``run()`` computes it again; None
    where :func:`linear_forward` would not run it on the compiled core's ``linear_rows``."""
    if not (x.ndim == 2 and w.ndim == 2 and _few_rows_runs(x, w) and x.flags.c_contiguous
            and y.shape == (x.shape[0], w.shape[0]) and y.dtype == x.dtype and y.flags.c_contiguous
            and (b is None or (b.dtype == y.dtype and b.shape == (w.shape[0],)))):
        return None
    product = workspace.bind_spans(backends.core.module.linear_rows, *_few_rows_call(x, w, y))
    if b is None:
        return product

    def run() -> None:
        product()
        np.add(y, b, out=y)  # ops.linear's y += b

    return run


def linear_forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x (R, K) @ w (M, K)^T`` as a new ``(R, M)`` array."""
    y = _few_rows(x, w)
    if y is not None:
        return y
    if _as_positions("forward", x.shape[0], w.size, x, w):
        return np.ascontiguousarray(plan.forward(_positions(x), w[:, :, None], _POINTWISE)[0].T)
    return matmul_rows(x, w.T)


def linear_grad_input(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``g (R, M) @ w (M, K)`` as a new ``(R, K)`` array."""
    if _as_positions("grad_input", g.shape[0], w.size, g, w):
        rows = (g.shape[0],)
        return np.ascontiguousarray(plan.grad_input(_positions(g), w[:, :, None], _POINTWISE, rows)[0].T)
    return matmul_rows(g, w)


def linear_grad_weight(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``g (R, M)^T @ x (R, K)`` as a new ``(M, K)`` array."""
    if _as_positions("grad_weight", g.shape[0], g.shape[1] * x.shape[1], g, x):
        return plan.grad_weight(_positions(x), _positions(g), _POINTWISE)[:, :, 0]
    return matmul_t_rows(g, x)
