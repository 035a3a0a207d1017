"""npconv: PyTorch's convolution layers, exact and differentiable, on NumPy."""

import importlib
from types import ModuleType

from . import backends, io, nn, optim
from .backends import get_num_threads, set_num_threads
from .io import load, load_torch, save
from .random import manual_seed
from .tensor import Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled, tensor

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled", "manual_seed", "nn",
    "__version__", "backends", "set_num_threads", "get_num_threads", "io", "optim", "save", "load",
    "load_torch",
]

# npconv.distributed and npconv.dask are attributes like torch.distributed, imported on first use so
# that `import npconv` stays free of mpi4py and dask.
_LAZY_SUBMODULES = ("distributed", "dask")


def __getattr__(name: str) -> ModuleType:  # PEP 562 module attribute hook
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
