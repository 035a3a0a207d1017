"""Layers (``npconv.nn.*``)."""

from .conv import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvNd,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    ConvTransposeNd,
    LazyConv1d,
    LazyConv2d,
    LazyConv3d,
    LazyConvTranspose1d,
    LazyConvTranspose2d,
    LazyConvTranspose3d,
)
from .lazy import LazyModuleMixin
from .module import Module, StateDictError

__all__ = [
    "Module", "StateDictError", "LazyModuleMixin",
    "Conv1d", "Conv2d", "Conv3d", "ConvNd", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "ConvTransposeNd", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d",
    "LazyConvTranspose2d", "LazyConvTranspose3d",
]

from .local import (  # noqa: E402
    Conv1dLocal,
    Conv1dMap,
    Conv2dLocal,
    Conv2dMap,
    Conv3dLocal,
    Conv3dMap,
    ConvTranspose1dMap,
    ConvTranspose2dMap,
    ConvTranspose3dMap,
)

__all__ += ["Conv1dLocal", "Conv2dLocal", "Conv3dLocal", "Conv1dMap", "Conv2dMap", "Conv3dMap",
            "ConvTranspose1dMap", "ConvTranspose2dMap", "ConvTranspose3dMap"]
