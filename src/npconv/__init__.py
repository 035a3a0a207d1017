"""npconv: PyTorch's convolution layers, exact and differentiable, on NumPy."""

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
