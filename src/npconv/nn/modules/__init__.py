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

from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh  # noqa: E402
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d  # noqa: E402
from .container import ModuleDict, ModuleList, Sequential  # noqa: E402
from .dropout import Dropout  # noqa: E402
from .flatten import Flatten, Unflatten  # noqa: E402
from .linear import Identity, Linear  # noqa: E402
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss  # noqa: E402
from .normalization import GroupNorm  # noqa: E402
from .pooling import (  # noqa: E402
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)

__all__ += [
    "Linear", "Identity", "Flatten", "Unflatten", "Sequential", "ModuleList", "ModuleDict", "ReLU",
    "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout", "MaxPool1d",
    "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "CrossEntropyLoss",
    "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss",
]

# issue 13's layers
from .activation import ELU, GLU, Hardsigmoid, Hardswish, Hardtanh, Mish, PReLU, ReLU6, Softplus  # noqa: E402
from .dropout import Dropout1d, Dropout2d, Dropout3d  # noqa: E402
from .loss import BCELoss, HuberLoss, KLDivLoss, SmoothL1Loss  # noqa: E402
from .padding import *  # noqa: E402,F403
from .padding import __all__ as _padding_all  # noqa: E402
from .pixelshuffle import PixelShuffle, PixelUnshuffle  # noqa: E402

__all__ += [
    "ReLU6", "Hardtanh", "Hardswish", "Hardsigmoid", "ELU", "PReLU", "Softplus", "Mish", "GLU",
    "Dropout1d", "Dropout2d", "Dropout3d", "BCELoss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
    "PixelShuffle", "PixelUnshuffle", *_padding_all,
]
from .upsampling import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d  # noqa: E402

__all__ += ["Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"]
from .instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d  # noqa: E402
from .normalization import LayerNorm, LocalResponseNorm  # noqa: E402
from .pooling import AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d  # noqa: E402
from .sparse import Embedding  # noqa: E402

__all__ += ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "LocalResponseNorm",
            "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "Embedding"]
from .fold import Fold, Unfold  # noqa: E402

__all__ += ["Unfold", "Fold"]
from .container import ParameterDict, ParameterList  # noqa: E402

__all__ += ["ParameterList", "ParameterDict"]
