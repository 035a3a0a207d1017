"""Layers (``npconv.nn.*``)."""

from .activation import (
    ELU,
    GELU,
    GLU,
    SELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmax2d,
    Softplus,
    Tanh,
)
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .container import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
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
from .distance import CosineSimilarity, PairwiseDistance
from .dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d, Dropout3d
from .flatten import Flatten, Unflatten
from .fold import Fold, Unfold
from .fused import ChunkedSequential, ConvActivation
from .instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .lazy import LazyModuleMixin
from .linear import Identity, LazyLinear, Linear
from .local import (
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
from .loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
    TripletMarginLoss,
)
from .module import Module, StateDictError
from .normalization import GroupNorm, LayerNorm, LocalResponseNorm
from .padding import *  # noqa: F403
from .padding import __all__ as _padding_all
from .pixelshuffle import PixelShuffle, PixelUnshuffle
from .pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    MaxUnpool1d,
    MaxUnpool2d,
    MaxUnpool3d,
)
from .sparse import Embedding
from .upsampling import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d

__all__ = [
    "Module", "StateDictError", "LazyModuleMixin",
    "Conv1d", "Conv2d", "Conv3d", "ConvNd", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "ConvTransposeNd", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d",
    "LazyConvTranspose2d", "LazyConvTranspose3d",
]

__all__ += ["Conv1dLocal", "Conv2dLocal", "Conv3dLocal", "Conv1dMap", "Conv2dMap", "Conv3dMap",
            "ConvTranspose1dMap", "ConvTranspose2dMap", "ConvTranspose3dMap"]

__all__ += [
    "Linear", "Identity", "Flatten", "Unflatten", "Sequential", "ModuleList", "ModuleDict", "ReLU",
    "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout", "MaxPool1d",
    "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "CrossEntropyLoss",
    "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss",
]

__all__ += [
    "ReLU6", "Hardtanh", "Hardswish", "Hardsigmoid", "ELU", "PReLU", "Softplus", "Mish", "GLU",
    "Dropout1d", "Dropout2d", "Dropout3d", "BCELoss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
    "PixelShuffle", "PixelUnshuffle", *_padding_all,
]

__all__ += ["Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"]

__all__ += ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "LocalResponseNorm",
            "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "Embedding"]

__all__ += ["Unfold", "Fold", "ConvActivation", "ChunkedSequential"]

__all__ += ["ParameterList", "ParameterDict"]

__all__ += ["SELU", "LogSigmoid", "Softmax2d", "AlphaDropout", "CosineSimilarity", "PairwiseDistance",
            "TripletMarginLoss", "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d", "LazyLinear"]
