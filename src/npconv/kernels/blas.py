"""SciPy's BLAS ``sgemm``/``dgemm`` for the compiled core.

Compiled kernels that multiply matrices (Winograd's batched products, the GEMM path's tiles) call
the Fortran gemm of the OpenBLAS SciPy ships, with the GIL released, through the function pointers
``scipy.linalg.cython_blas`` exports: no BLAS of npconv's own and nothing linked at build time. The
kernels take :func:`gemm_routines` as an argument (no global state in the core); callers hold BLAS
to one thread around them (:func:`npconv.kernels.workspace.run` does).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["gemm_routines"]


@functools.cache
def gemm_routines() -> tuple[Any, Any]:
    """``(sgemm, dgemm)`` as the PyCapsules ``scipy.linalg.cython_blas.__pyx_capi__`` holds."""
    from scipy.linalg import cython_blas

    capi = cython_blas.__pyx_capi__
    return capi["sgemm"], capi["dgemm"]
