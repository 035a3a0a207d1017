"""npconv: PyTorch's convolution layers, exact and differentiable, on NumPy."""

import importlib
from typing import Any

# -- the torch namespace: Tensor, autograd, dtypes/devices, factories and functional ops ------------
# (the module npconv.tensor first: the function npconv.tensor imported below replaces it as attribute)
from .tensor import Tensor  # isort: skip
from . import amp, autograd, backends, compiler, cuda, nn
from .amp import autocast
from .autograd import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    is_inference_mode_enabled,
    is_tensor,
    no_grad,
    set_grad_enabled,
)
from .backends import (
    are_deterministic_algorithms_enabled,
    get_num_threads,
    is_deterministic_algorithms_warn_only_enabled,
    set_num_threads,
    use_deterministic_algorithms,
)
from .compiler import compile
from .dtypes import (
    Size,
    bool,
    cdouble,
    cfloat,
    complex64,
    complex128,
    device,
    double,
    dtype,
    float,
    float16,
    float32,
    float64,
    get_default_dtype,
    half,
    int,
    int8,
    int16,
    int32,
    int64,
    long,
    set_default_dtype,
    short,
    uint8,
    uint16,
    uint32,
    uint64,
)
from .nn.utils.fusion import optimize_for_inference
from .ops.activation import log_softmax, relu, relu_, sigmoid, softmax, tanh
from .ops.creation import (
    arange,
    as_tensor,
    bernoulli,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    logspace,
    multinomial,
    normal,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .ops.elementwise import (
    abs,
    add,
    addcdiv,
    addcmul,
    allclose,
    ceil,
    clamp,
    clamp_max,
    clamp_min,
    clip,
    cos,
    div,
    divide,
    eq,
    equal,
    erf,
    exp,
    expm1,
    floor,
    floor_divide,
    fmod,
    ge,
    gt,
    is_floating_point,
    isclose,
    isfinite,
    isinf,
    isnan,
    le,
    lerp,
    log,
    log1p,
    log2,
    log10,
    logical_and,
    logical_not,
    logical_or,
    lt,
    masked_fill,
    maximum,
    minimum,
    mul,
    multiply,
    nan_to_num,
    ne,
    neg,
    negative,
    pow,
    reciprocal,
    remainder,
    result_type,
    round,
    rsqrt,
    sign,
    sin,
    sqrt,
    square,
    sub,
    subtract,
    true_divide,
    trunc,
    where,
)
from .ops.linalg import bmm, dot, einsum, matmul, mm
from .ops.reduction import (
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    argsort,
    count_nonzero,
    cumprod,
    cumsum,
    logsumexp,
    max,
    mean,
    median,
    min,
    norm,
    prod,
    sort,
    std,
    std_mean,
    sum,
    topk,
    unique,
    var,
    var_mean,
)
from .ops.shape import (
    argwhere,
    broadcast_to,
    cat,
    chunk,
    clone,
    concat,
    concatenate,
    diag,
    flatten,
    flip,
    gather,
    hstack,
    index_select,
    masked_select,
    meshgrid,
    movedim,
    narrow,
    nonzero,
    numel,
    permute,
    repeat_interleave,
    reshape,
    roll,
    scatter,
    scatter_add,
    split,
    squeeze,
    stack,
    swapaxes,
    t,
    take_along_dim,
    tile,
    transpose,
    tril,
    triu,
    unbind,
    unflatten,
    unsqueeze,
    vstack,
)
from .random import Generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .tensor import (  # torch's legacy typed constructors
    BoolTensor,
    ByteTensor,
    CharTensor,
    DoubleTensor,
    FloatTensor,
    HalfTensor,
    IntTensor,
    LongTensor,
    ShortTensor,
    set_printoptions,
)

__all__ = [
    "Tensor", "autograd", "no_grad", "enable_grad", "inference_mode", "is_grad_enabled",
    "is_inference_mode_enabled", "set_grad_enabled", "is_tensor", "Size", "dtype", "device",
    "get_default_dtype", "set_default_dtype", "float16", "half", "float32", "float", "float64",
    "double", "complex64", "cfloat", "complex128", "cdouble", "int8", "int16", "short", "int32", "int",
    "int64", "long", "uint8", "uint16", "uint32", "uint64", "bool", "Generator", "manual_seed", "seed",
    "initial_seed", "get_rng_state", "set_rng_state", "cuda", "tensor", "as_tensor", "from_numpy",
    "zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like", "rand",
    "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal", "bernoulli",
    "multinomial", "arange", "linspace", "logspace", "eye", "abs", "add", "allclose", "ceil", "clamp",
    "clamp_max", "clamp_min", "clip", "cos", "div", "divide", "eq", "equal", "exp", "expm1", "floor",
    "floor_divide", "fmod", "ge", "gt", "isclose", "isfinite", "isinf", "isnan", "le", "lerp", "log",
    "log1p", "log2", "log10", "logical_and", "logical_not", "logical_or", "lt", "masked_fill",
    "maximum", "minimum", "mul", "multiply", "ne", "neg", "negative", "pow", "reciprocal", "remainder",
    "result_type", "round", "rsqrt", "sign", "sin", "sqrt", "square", "sub", "subtract", "true_divide",
    "trunc", "where", "relu", "relu_", "sigmoid", "tanh", "softmax", "log_softmax", "bmm", "dot",
    "einsum", "matmul", "mm", "all", "amax", "amin", "any", "argmax", "argmin", "argsort",
    "count_nonzero", "cumprod", "cumsum", "logsumexp", "max", "mean", "min", "norm", "prod", "sort",
    "std", "std_mean", "sum", "topk", "var", "var_mean", "broadcast_to", "cat", "chunk", "concat",
    "concatenate", "flatten", "flip", "gather", "index_select", "movedim", "narrow", "permute",
    "reshape", "roll", "scatter", "scatter_add", "split", "squeeze", "stack", "swapaxes", "t",
    "take_along_dim", "tile", "transpose", "unbind", "unflatten", "unsqueeze",
]

__version__ = "0.1.0"

__all__ += [
    "nn", "__version__", "backends", "set_num_threads", "get_num_threads", "io", "jit", "optim", "save",
    "load", "load_torch", "optimize_for_inference", "compile", "compiler", "amp", "autocast",
    "use_deterministic_algorithms",
    "are_deterministic_algorithms_enabled", "is_deterministic_algorithms_warn_only_enabled", "FloatTensor",
    "DoubleTensor", "HalfTensor", "LongTensor", "IntTensor", "ShortTensor", "CharTensor", "ByteTensor",
    "BoolTensor",
]

__all__ += [
    "clone", "numel", "is_floating_point", "tril", "triu", "diag", "nonzero", "argwhere", "unique",
    "meshgrid", "median", "erf", "masked_select", "repeat_interleave", "vstack", "hstack", "nan_to_num",
    "set_printoptions", "addcmul", "addcdiv",
]

# Submodules imported on first use, as attributes like torch.distributed: npconv.distributed and
# npconv.dask keep `import npconv` free of mpi4py and dask; io, jit and optim keep a fresh process's
# first convolution from compiling their modules (about a tenth of its cold start: docs/performance.md).
_LAZY_SUBMODULES = ("distributed", "dask", "io", "jit", "optim")
_LAZY_FUNCTIONS = {"save": "io", "load": "io", "load_torch": "io"}  # name -> submodule holding it


def __getattr__(name: str) -> Any:  # PEP 562 module attribute hook
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES) | set(_LAZY_FUNCTIONS))
