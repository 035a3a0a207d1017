"""Parameter initialisers with torch's formulas (``torch.nn.init``), drawing from npconv's generator.

Each function fills its Tensor in place (under no_grad) and returns it. ``generator`` is an
optional ``numpy.random.Generator``; by default :func:`npconv.random.default_generator`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..random import default_generator
from ..tensor import Tensor

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_",
    "orthogonal_", "_calculate_fan_in_and_fan_out", "_calculate_correct_fan",
]


def _draw_shape(tensor: Tensor) -> tuple[int, ...]:
    """Shape of the real draws for ``tensor``: a complex tensor is filled through its real view
    ``(*shape, 2)``, so its real and imaginary parts are independent draws (as in torch)."""
    return tuple(tensor.shape) + ((2,) if tensor.numpy().dtype.kind == "c" else ())


def _fill(tensor: Tensor, values: np.ndarray) -> Tensor:
    """Write ``values`` (of :func:`_draw_shape`) into ``tensor`` in place."""
    target = tensor.numpy()
    if target.dtype.kind == "c":
        target[...] = values[..., 0] + 1j * values[..., 1]
    else:
        target[...] = values.astype(target.dtype, copy=False)
    return tensor


def _rng(generator: np.random.Generator | None) -> np.random.Generator:
    return default_generator() if generator is None else generator


def calculate_gain(nonlinearity: str, param: Any = None) -> float:
    """Recommended gain for a nonlinearity (torch's table)."""
    linear = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d"]
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float)):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Any) -> tuple[int, int]:
    shape = np.shape(tensor.numpy() if isinstance(tensor, Tensor) else tensor)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _calculate_correct_fan(tensor: Any, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0,
             generator: np.random.Generator | None = None) -> Tensor:
    return _fill(tensor, _rng(generator).uniform(a, b, size=_draw_shape(tensor)))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0,
            generator: np.random.Generator | None = None) -> Tensor:
    if tensor.numpy().dtype.kind == "c":
        std = std / math.sqrt(2)  # torch: each part has variance std**2 / 2
    return _fill(tensor, _rng(generator).normal(mean, std, size=_draw_shape(tensor)))


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator: np.random.Generator | None = None) -> Tensor:
    from scipy.stats import truncnorm

    values = truncnorm.rvs((a - mean) / std, (b - mean) / std, loc=mean, scale=std, size=_draw_shape(tensor),
                           random_state=_rng(generator))
    return _fill(tensor, np.asarray(values))


def constant_(tensor: Tensor, val: float) -> Tensor:
    tensor.numpy()[...] = val
    return tensor


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def eye_(tensor: Tensor) -> Tensor:
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    tensor.numpy()[...] = np.eye(*tensor.shape)
    return tensor


def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    shape = tensor.shape
    if len(shape) not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if shape[0] % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")
    out_per_group = shape[0] // groups
    tensor.numpy()[...] = 0
    centre = tuple(k // 2 for k in shape[2:])
    for g in range(groups):
        for d in range(min(out_per_group, shape[1])):
            tensor.numpy()[(g * out_per_group + d, d) + centre] = 1
    return tensor


def xavier_uniform_(tensor: Tensor, gain: float = 1.0,
                    generator: np.random.Generator | None = None) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: np.random.Generator | None = None) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: np.random.Generator | None = None) -> Tensor:
    """U(-bound, bound), ``bound = gain(a) * sqrt(3 / fan)``."""
    if 0 in tensor.shape:
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: np.random.Generator | None = None) -> Tensor:
    if 0 in tensor.shape:
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), generator)


def orthogonal_(tensor: Tensor, gain: float = 1, generator: np.random.Generator | None = None) -> Tensor:
    """A (semi-)orthogonal matrix times ``gain``, viewed as ``(rows, numel / rows)``: the Q of the QR
    decomposition of a standard normal matrix (of its transpose when rows < cols), its columns' signs
    set by ``sign(diag(R))`` (torch's algorithm), so that it is Haar-distributed. Rows are orthonormal
    (``W W^T = gain^2 I``) when rows <= cols, columns otherwise."""
    if tensor.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if not isinstance(gain, numbers.Real) or isinstance(gain, bool):
        raise TypeError(f"gain must be a real number, got {gain!r}")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    target = tensor.numpy()
    rng = _rng(generator)
    flattened = rng.standard_normal((rows, cols))
    if target.dtype.kind == "c":  # as normal_: real and imaginary parts each of variance 1/2
        flattened = (flattened + 1j * rng.standard_normal((rows, cols))) / math.sqrt(2)
    if rows < cols:
        flattened = flattened.T
    q, r = np.linalg.qr(flattened)
    d = np.diagonal(r)
    q = q * np.where(d == 0, 0, d / np.where(d == 0, 1, np.abs(d)))  # torch's d.sign() (sgn for complex)
    if rows < cols:
        q = q.T
    target[...] = (q * gain).reshape(target.shape).astype(target.dtype, copy=False)
    return tensor
