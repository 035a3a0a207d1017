"""SciPy's BLAS ``sgemm``/``dgemm`` for the compiled core.

Compiled kernels that multiply matrices (Winograd's batched products, the GEMM path's tiles) call
the Fortran gemm of the OpenBLAS SciPy ships, with the GIL released, through the function pointers
``scipy.linalg.cython_blas`` exports: no BLAS of npconv's own and nothing linked at build time. The
kernels take :func:`gemm_routines` as an argument (no global state in the core); callers hold BLAS
to one thread around them (:func:`npconv.kernels.workspace.run` does).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Any

__all__ = ["gemm_routines"]

_lock = threading.Lock()
_routines: tuple[Any, Any] | None = None


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


def gemm_routines() -> tuple[Any, Any]:
    """``(sgemm, dgemm)`` as the PyCapsules ``scipy.linalg.cython_blas.__pyx_capi__`` holds."""
    global _routines
    if _routines is None:
        with _lock:
            if _routines is None:
                capi = _cython_blas().__pyx_capi__
                _routines = (capi["sgemm"], capi["dgemm"])
    return _routines
