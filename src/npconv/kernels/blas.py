"""The matrix product of the compiled core: npconv's own gemm or SciPy's BLAS ``sgemm``/``dgemm``.

Compiled kernels that multiply matrices (Winograd's batched products, the GEMM path's tiles) call,
with the GIL released, either npconv's packed gemm (``csrc/gemm.h``: the AVX2 and AVX-512 builds;
register tiles sized for the channel counts of convolutions, bias and activation in its store) or
the Fortran gemm of the OpenBLAS SciPy ships, through the function pointers
``scipy.linalg.cython_blas`` exports (the generic build, and :data:`OWN_GEMM` false): nothing
linked at build time. The kernels take :func:`gemm_routines` as an argument (no global state in the
core); callers hold BLAS to one thread around them (:func:`npconv.kernels.workspace.run` does).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Any

import numpy as np

from .. import backends

__all__ = ["gemm_routines", "own_products", "OWN_GEMM"]

#: The vector builds multiply with npconv's gemm (False: SciPy's BLAS everywhere, for comparison).
OWN_GEMM = True

_lock = threading.Lock()
_routines: tuple[Any, Any] | None = None


def own_products(dtype: np.dtype) -> bool:
    """Whether a kernel's matrix products in ``dtype`` all run on npconv's gemm (float32 on the vector
    builds, :data:`OWN_GEMM`; its gemm takes one transposed operand, which every pass has at most): then
    its calls leave the BLAS libraries' thread counts alone (setting them costs a call's worth of
    microseconds, each way)."""
    return dtype == np.float32 and OWN_GEMM and backends.core.isa in ("avx2", "avx512")


def _cython_blas() -> ModuleType:
    """``scipy.linalg.cython_blas``, loaded without ``scipy.linalg``'s package (whose array-API layer
    costs ~0.3 s at a first convolution) and registered under its name, so a later ``import
    scipy.linalg`` reuses it (a Cython module cannot be initialised twice)."""
    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return sys.modules[name]
    import scipy

    for root in scipy.__path__:
        finder = importlib.machinery.FileFinder(
            os.path.join(root, "linalg"),
            (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
        spec = finder.find_spec(name)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            return module
    from scipy.linalg import cython_blas  # an installation laid out otherwise: the package import

    return cython_blas


def gemm_routines() -> tuple[Any, Any, bool]:
    """``(sgemm, dgemm, own)``: the PyCapsules ``scipy.linalg.cython_blas.__pyx_capi__`` holds and
    :data:`OWN_GEMM`."""
    global _routines
    if _routines is None:
        with _lock:
            if _routines is None:
                capi = _cython_blas().__pyx_capi__
                _routines = (capi["sgemm"], capi["dgemm"])
    return (*_routines, OWN_GEMM)
