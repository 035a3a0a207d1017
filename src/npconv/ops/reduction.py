"""Reductions, scans and sorting with torch's gradients (``npconv.sum`` is ``Tensor.sum``).

* ``sum``/``mean``: gradient broadcast back (divided by the count for ``mean``).
* ``max``/``min`` over everything: the gradient is split evenly between tied maxima (torch's
  ``evenly_distribute_backward``); with ``dim``: a ``(values, indices)`` pair, the gradient goes to
  the returned index.
* ``var``/``std``: ``sum((x - mean)^2) / (n - correction)``; gradient ``2 (x - mean) / (n - c)``
  (``g / (2 std)`` times that for ``std``).
* ``norm``: p-norms over all or some dims (``'fro'`` = 2), gradient ``x |x|^(p-2) / norm^(p-1)``.
* ``cumsum``: gradient is the reversed cumulative sum; ``topk``/``sort``: the gradient goes back to
  the selected positions.
"""

from __future__ import annotations

import builtins
import math
from typing import Any, NamedTuple

import numpy as np

from .. import autograd, dtypes, tracing
from ..autograd import as_array, make_result
from .elementwise import maximum, minimum
from .shape import canonical_dim, canonical_dims

__all__ = [
    "sum",
    "mean",
    "prod",
    "max",
    "min",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "var",
    "std",
    "var_mean",
    "std_mean",
    "norm",
    "all",
    "any",
    "cumsum",
    "cumprod",
    "topk",
    "sort",
    "argsort",
    "logsumexp",
    "count_nonzero",
    "median",
    "unique",
]


class values_indices(NamedTuple):  # noqa: N801 - torch's return_types are lower case
    """``(values, indices)``, as ``torch.return_types.max`` and friends."""

    values: Any
    indices: Any


def _expand_back(g: np.ndarray, axes: tuple[int, ...] | None, keepdim: builtins.bool) -> np.ndarray:
    if not keepdim and axes:
        g = np.expand_dims(g, axes)
    return g


def _float_result_dtype(data: np.ndarray, dtype: Any) -> np.dtype:
    if dtype is not None:
        return dtypes.to_numpy_dtype(dtype)
    return data.dtype


def sum(input: Any, dim: Any = None, keepdim: builtins.bool = False, *, dtype: Any = None) -> Any:  # noqa: A001
    """Sum over ``dim`` (an int, a tuple, or None for all); integers and bools sum to int64."""
    data = as_array(input)
    axes = canonical_dims(dim, data.ndim)
    out_dtype = (
        dtypes.to_numpy_dtype(dtype)
        if dtype is not None
        else (np.dtype(np.int64) if data.dtype.kind in "biu" else data.dtype)
    )
    out = np.asarray(data.sum(axis=axes, keepdims=keepdim, dtype=out_dtype))
    shape = data.shape

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return (np.broadcast_to(_expand_back(g, axes, keepdim), shape).astype(data.dtype, copy=False),)

    return make_result(
        out, (input,), backward, "SumBackward1" if axes is not None else "SumBackward0", saved=()
    )


@tracing.recorded
def mean(input: Any, dim: Any = None, keepdim: builtins.bool = False, *, dtype: Any = None) -> Any:
    data = as_array(input)
    if dtype is None and data.dtype.kind not in "fc":
        raise RuntimeError(
            f"mean(): could not infer output dtype. Input dtype must be either a floating point or "
            f"complex dtype. Got: {dtypes.as_dtype(data.dtype)}"
        )
    axes = canonical_dims(dim, data.ndim)
    out_dtype = _float_result_dtype(data, dtype)
    count = data.size if axes is None else math.prod(data.shape[a] for a in axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.asarray(data.mean(axis=axes, keepdims=keepdim, dtype=out_dtype)).astype(
            out_dtype, copy=False
        )
    shape = data.shape

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        grad = np.broadcast_to(_expand_back(g, axes, keepdim), shape) / g.dtype.type(
            count if count else np.nan
        )
        return (grad.astype(data.dtype, copy=False),)

    return make_result(
        out, (input,), backward, "MeanBackward1" if axes is not None else "MeanBackward0", saved=()
    )


def prod(input: Any, dim: Any = None, keepdim: builtins.bool = False, *, dtype: Any = None) -> Any:
    """Product; the gradient is ``prod / x`` computed without dividing (exact with zeros)."""
    data = as_array(input)
    axis = None if dim is None else canonical_dim(dim, data.ndim)
    out_dtype = (
        dtypes.to_numpy_dtype(dtype)
        if dtype is not None
        else (np.dtype(np.int64) if data.dtype.kind in "biu" else data.dtype)
    )
    out = np.asarray(np.prod(data, axis=axis, keepdims=keepdim, dtype=out_dtype))

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        flat = data.reshape(-1) if axis is None else np.moveaxis(data, axis, -1)
        ones = np.ones(flat.shape[:-1] + (1,), flat.dtype)
        left = np.cumprod(np.concatenate([ones, flat[..., :-1]], -1), -1)
        right = np.flip(np.cumprod(np.concatenate([ones, np.flip(flat, -1)[..., :-1]], -1), -1), -1)
        others = left * right
        gg = g if axis is None else (g if keepdim else np.expand_dims(g, axis))
        if axis is None:
            return ((gg * others).reshape(data.shape),)
        return (np.moveaxis(np.moveaxis(gg, axis, -1) * others, -1, axis),)

    return make_result(out, (input,), backward, "ProdBackward0")


def _extreme_all(input: Any, pick: Any, name: str, backward_name: str | None = None) -> Any:
    """``pick(data)``, the gradient split evenly between the elements equal to it (NaN equal to NaN)."""
    data = as_array(input)
    if data.size == 0:
        raise RuntimeError(
            f"{name.lower()}(): Expected reduction dim to be specified for input.numel() == 0. "
            "Specify the reduction dim with the 'dim' argument."
        )
    value = pick(data)
    out = np.asarray(value)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        hits = (data == value) | (np.isnan(data) & np.isnan(value))
        return ((hits * (g / hits.sum())).astype(data.dtype, copy=False),)

    return make_result(out, (input,), backward, backward_name or f"{name}Backward1")


def _extreme_dim(
    input: Any, dim: int, keepdim: builtins.bool, arg: Any, name: str, backward_name: str | None = None
) -> values_indices:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    if data.ndim and data.shape[d] == 0:
        raise IndexError(f"{name.lower()}(): Expected reduction dim {d} to have non-zero size.")
    source = data.reshape(1) if data.ndim == 0 else data
    index = np.expand_dims(arg(source, axis=d), d)
    values = np.take_along_axis(source, index, axis=d)
    shape = source.shape

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(shape, dtype=g.dtype)
        np.put_along_axis(full, index, g if keepdim or data.ndim == 0 else np.expand_dims(g, d), axis=d)
        return (full.reshape(data.shape),)

    positions = index
    if not keepdim or data.ndim == 0:
        values, positions = np.squeeze(values, d), np.squeeze(index, d)
    return values_indices(
        make_result(values, (input,), backward, backward_name or f"{name}Backward0", saved=()),
        autograd.tensor_class(positions.astype(np.int64)),
    )


def _nan_first(function: Any) -> Any:
    """``argmax``/``argmin`` that, like torch, pick the first NaN when there is one."""

    def pick(a: np.ndarray, axis: Any = None) -> np.ndarray:
        found = function(a, axis=axis)
        if a.dtype.kind in "fc":
            nan = np.isnan(a)
            if nan.any():
                return np.where(nan.any(axis=axis), np.argmax(nan, axis=axis), found)
        return found

    return pick


_argmax = _nan_first(np.argmax)
_argmin = _nan_first(np.argmin)


def max(input: Any, dim: Any = None, keepdim: builtins.bool = False) -> Any:  # noqa: A001
    """The largest element; with ``dim`` ``(values, indices)``; with a tensor ``dim`` the elementwise max."""
    if dim is None:
        return _extreme_all(input, lambda a: np.max(a), "Max")
    if autograd.is_tensor(dim) or isinstance(dim, np.ndarray):
        return maximum(input, dim)
    return _extreme_dim(input, dim, keepdim, _argmax, "Max")


def min(input: Any, dim: Any = None, keepdim: builtins.bool = False) -> Any:  # noqa: A001
    """The smallest element; with ``dim`` ``(values, indices)``; with a tensor ``dim`` the elementwise min."""
    if dim is None:
        return _extreme_all(input, lambda a: np.min(a), "Min")
    if autograd.is_tensor(dim) or isinstance(dim, np.ndarray):
        return minimum(input, dim)
    return _extreme_dim(input, dim, keepdim, _argmin, "Min")


def _amax_amin(input: Any, dim: Any, keepdim: builtins.bool, pick: Any, name: str) -> Any:
    data = as_array(input)
    axes = canonical_dims(() if dim is None else dim, data.ndim) or None
    out = np.asarray(pick(data, axis=axes, keepdims=True))

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        hits = (data == out) | (np.isnan(data) & np.isnan(out))
        gg = g if keepdim or axes is None and g.ndim == data.ndim else _expand_back(g, axes, keepdim)
        if axes is None:
            gg = np.reshape(g, (1,) * data.ndim) if data.ndim else g
        return ((hits * gg / hits.sum(axis=axes, keepdims=True)).astype(data.dtype, copy=False),)

    result = (
        out if keepdim else np.asarray(np.squeeze(out, axis=axes) if axes is not None else out.reshape(()))
    )
    return make_result(result, (input,), backward, name)


def amax(input: Any, dim: Any = (), keepdim: builtins.bool = False) -> Any:
    return _amax_amin(input, dim, keepdim, np.max, "AmaxBackward0")


def amin(input: Any, dim: Any = (), keepdim: builtins.bool = False) -> Any:
    return _amax_amin(input, dim, keepdim, np.min, "AminBackward0")


def argmax(input: Any, dim: Any = None, keepdim: builtins.bool = False) -> Any:
    data = as_array(input)
    if dim is None:
        return autograd.tensor_class(np.asarray(_argmax(data.reshape(-1)), dtype=np.int64))
    return _extreme_dim(input, dim, keepdim, _argmax, "Max").indices


def argmin(input: Any, dim: Any = None, keepdim: builtins.bool = False) -> Any:
    data = as_array(input)
    if dim is None:
        return autograd.tensor_class(np.asarray(_argmin(data.reshape(-1)), dtype=np.int64))
    return _extreme_dim(input, dim, keepdim, _argmin, "Min").indices


def _correction(unbiased: Any, correction: Any) -> float:
    if correction is not None:
        if unbiased is not None and not isinstance(unbiased, builtins.bool):
            raise TypeError("var/std: pass either unbiased or correction, not both")
        return float(correction)
    if unbiased is None or isinstance(unbiased, builtins.bool):
        return 0.0 if unbiased is False else 1.0
    raise TypeError(f"var/std unbiased must be a bool, but got {unbiased!r}")


def var(
    input: Any,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: builtins.bool = False,
    *,
    correction: Any = None,
) -> Any:
    """``sum(|x - mean|^2) / max(n - correction, 0)`` (``unbiased=True`` means correction 1)."""
    if isinstance(dim, builtins.bool):  # var(x, False): torch's var(input, unbiased)
        dim, unbiased = None, dim
    data = as_array(input)
    if data.dtype.kind not in "fc":
        raise RuntimeError(f"std and var only support floating point and complex dtypes, got {data.dtype}")
    c = _correction(unbiased, correction)
    axes = canonical_dims(dim, data.ndim)
    count = data.size if axes is None else math.prod(data.shape[a] for a in axes)
    denominator = builtins.max(count - c, 0)
    centred = data - data.mean(axis=axes, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(
            (np.abs(centred) ** 2).sum(axis=axes, keepdims=keepdim) / data.real.dtype.type(denominator)
        )
    out = out.astype(data.real.dtype, copy=False)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = _expand_back(g, axes, keepdim) * (2 / data.real.dtype.type(denominator))
        return ((scale * centred).astype(data.dtype, copy=False),)

    return make_result(out, (input,), backward, "VarBackward0")


def std(
    input: Any,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: builtins.bool = False,
    *,
    correction: Any = None,
) -> Any:
    """``sqrt(var)``; gradient ``g * (x - mean) / ((n - correction) * std)``."""
    from .elementwise import sqrt

    return sqrt(var(input, dim, unbiased, keepdim, correction=correction))


def var_mean(
    input: Any,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: builtins.bool = False,
    *,
    correction: Any = None,
) -> tuple[Any, Any]:
    return var(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def std_mean(
    input: Any,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: builtins.bool = False,
    *,
    correction: Any = None,
) -> tuple[Any, Any]:
    return std(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def norm(
    input: Any, p: Any = "fro", dim: Any = None, keepdim: builtins.bool = False, dtype: Any = None
) -> Any:
    """The p-norm over ``dim`` (all elements by default): ``(sum |x|^p)^(1/p)``; inf/-inf: max/min ``|x|``."""
    data = as_array(input)
    if dtype is not None:
        data = data.astype(dtypes.to_numpy_dtype(dtype))
    if data.dtype.kind not in "fc":
        raise RuntimeError(
            f"norm(): input dtype should be either floating point or complex. Got "
            f"{dtypes.as_dtype(data.dtype)} instead."
        )
    if p in ("fro", None):
        p = 2.0
    if p == "nuc" or isinstance(p, str):
        raise ValueError(f"norm p must be a number or 'fro', but got {p!r} (npconv has no nuclear norm)")
    p = float(p)
    axes = canonical_dims(dim, data.ndim)
    magnitude = np.abs(data)
    real = magnitude.dtype
    if p == math.inf or p == -math.inf:
        out = np.asarray((np.max if p > 0 else np.min)(magnitude, axis=axes, keepdims=True))
    elif p == 0:
        out = np.asarray((magnitude != 0).sum(axis=axes, keepdims=True), dtype=real)
    else:
        out = np.asarray(np.power(np.power(magnitude, p).sum(axis=axes, keepdims=True), 1 / p), dtype=real)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        gg = _expand_back(g, axes, keepdim) if axes is not None else np.reshape(g, (1,) * data.ndim)
        with np.errstate(divide="ignore", invalid="ignore"):
            if p == 0:
                return (np.zeros_like(data),)
            if p == math.inf or p == -math.inf:
                hits = magnitude == out
                slope = (
                    np.sign(data) if data.dtype.kind == "f" else data / np.where(magnitude == 0, 1, magnitude)
                )
                return ((gg * slope * hits / hits.sum(axis=axes, keepdims=True)).astype(data.dtype),)
            if p == 1:
                slope = (
                    np.sign(data) if data.dtype.kind == "f" else np.where(magnitude == 0, 0, data / magnitude)
                )
                return ((gg * slope).astype(data.dtype, copy=False),)
            scaled = data * np.power(magnitude, p - 2) / np.power(out, p - 1)
            scaled = np.where((magnitude == 0) & (p < 2) | (out == 0), 0, scaled)
            return ((gg * scaled).astype(data.dtype, copy=False),)

    result = out if keepdim else (np.squeeze(out, axis=axes) if axes is not None else out.reshape(()))
    return make_result(np.asarray(result), (input,), backward, "NormBackward1")


def all(input: Any, dim: Any = None, keepdim: builtins.bool = False) -> Any:  # noqa: A001
    data = as_array(input)
    axes = canonical_dims(dim, data.ndim)
    return autograd.tensor_class(np.asarray(np.all(data, axis=axes, keepdims=keepdim)))


def any(input: Any, dim: Any = None, keepdim: builtins.bool = False) -> Any:  # noqa: A001
    data = as_array(input)
    axes = canonical_dims(dim, data.ndim)
    return autograd.tensor_class(np.asarray(np.any(data, axis=axes, keepdims=keepdim)))


def count_nonzero(input: Any, dim: Any = None) -> Any:
    data = as_array(input)
    axes = canonical_dims(dim, data.ndim)
    return autograd.tensor_class(np.asarray(np.count_nonzero(data, axis=axes), dtype=np.int64))


def cumsum(input: Any, dim: int, *, dtype: Any = None) -> Any:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    out_dtype = (
        dtypes.to_numpy_dtype(dtype)
        if dtype is not None
        else (np.dtype(np.int64) if data.dtype.kind in "biu" else data.dtype)
    )
    if data.ndim == 0:
        return make_result(data.astype(out_dtype), (input,), lambda g: (g,), "CumsumBackward0", saved=())
    out = np.cumsum(data, axis=d, dtype=out_dtype)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return (np.flip(np.cumsum(np.flip(g, d), axis=d), d).astype(data.dtype, copy=False),)

    return make_result(out, (input,), backward, "CumsumBackward0", saved=())


def cumprod(input: Any, dim: int, *, dtype: Any = None) -> Any:
    """Cumulative product; gradient via the reversed sum of ``g * out`` divided by ``x`` (x != 0)."""
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    out = np.cumprod(data, axis=d, dtype=dtypes.to_numpy_dtype(dtype) if dtype is not None else None)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        if np.any(data == 0):
            raise RuntimeError("npconv's cumprod backward does not support zeros in the input")
        reverse = np.flip(np.cumsum(np.flip(g * out, d), axis=d), d)
        return ((reverse / data).astype(data.dtype, copy=False),)

    return make_result(out, (input,), backward, "CumprodBackward0")


def logsumexp(input: Any, dim: Any, keepdim: builtins.bool = False) -> Any:
    """``log(sum(exp(x)))`` over ``dim``, shifted by the max for range; gradient ``softmax(x) * g``."""
    data = as_array(input)
    axes = canonical_dims(dim, data.ndim)
    peak = np.max(data, axis=axes, keepdims=True) if data.size else np.zeros((1,) * data.ndim, data.dtype)
    peak = np.where(np.isfinite(peak), peak, 0)
    with np.errstate(divide="ignore"):
        kept = np.log(np.exp(data - peak).sum(axis=axes, keepdims=True)) + peak

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        return ((_expand_back(g, axes, keepdim) * np.exp(data - kept)).astype(data.dtype, copy=False),)

    out = kept if keepdim else np.squeeze(kept, axis=axes)
    return make_result(np.asarray(out), (input,), backward, "LogsumexpBackward0")


def _select_along(input: Any, order: np.ndarray, d: int, name: str) -> Any:
    data = as_array(input)
    source = data.reshape(1) if data.ndim == 0 else data
    values = np.take_along_axis(source, order, axis=d)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(source.shape, dtype=g.dtype)
        np.put_along_axis(full, order, g.reshape(values.shape), axis=d)
        return (full.reshape(data.shape),)

    values = values.reshape(()) if data.ndim == 0 else values
    return make_result(values, (input,), backward, name, saved=())


def _sort_order(data: np.ndarray, d: int, descending: builtins.bool) -> np.ndarray:
    """A stable order along ``d`` with NaN treated as the largest value, as torch does."""
    key = data
    if data.dtype.kind == "b":
        key = data.astype(np.int8)
    if descending:
        if key.dtype.kind == "f":
            key = np.where(np.isnan(key), -np.inf, -key)  # NaN first; ties of -inf keep order
            order = np.argsort(key, axis=d, kind="stable")
            nan_first = np.isnan(np.take_along_axis(data, order, axis=d))
            # -inf in key came from NaN or +inf data: NaN must precede +inf
            return np.take_along_axis(order, np.argsort(~nan_first, axis=d, kind="stable"), axis=d)
        return np.argsort(-key.astype(np.int64) if key.dtype.kind in "ui" else -key, axis=d, kind="stable")
    return np.argsort(key, axis=d, kind="stable")


def sort(
    input: Any, dim: int = -1, descending: builtins.bool = False, stable: builtins.bool = False
) -> values_indices:
    """Sorted values along ``dim`` and their original positions (NaN sorts as the largest)."""
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    source = data.reshape(1) if data.ndim == 0 else data
    order = _sort_order(source, d, descending)
    values = _select_along(input, order, d, "SortBackward0")
    indices = order.reshape(()) if data.ndim == 0 else order
    return values_indices(values, autograd.tensor_class(indices.astype(np.int64)))


def argsort(
    input: Any, dim: int = -1, descending: builtins.bool = False, stable: builtins.bool = False
) -> Any:
    return sort(input, dim, descending, stable).indices


def topk(
    input: Any, k: int, dim: int = -1, largest: builtins.bool = True, sorted: builtins.bool = True
) -> values_indices:  # noqa: A002
    """The ``k`` largest (``largest=False``: smallest) elements along ``dim`` and their positions."""
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    size = data.shape[d] if data.ndim else 1
    if not isinstance(k, (builtins.int, np.integer)) or not 0 <= k <= size:
        raise RuntimeError(f"selected index k out of range: k must be in [0, {size}], but got {k}")
    source = data.reshape(1) if data.ndim == 0 else data
    order = _sort_order(source, d, largest)
    index = [slice(None)] * source.ndim
    index[d] = slice(0, k)
    order = order[tuple(index)]
    values = _select_along(input, order, d, "TopkBackward0")
    indices = order.reshape(()) if data.ndim == 0 else order
    return values_indices(values, autograd.tensor_class(indices.astype(np.int64)))


def _median_position(a: np.ndarray, axis: int) -> np.ndarray:
    """The position of the lower median along ``axis`` (of the first NaN in a slice holding one)."""
    order = _sort_order(a, axis, False)
    middle = np.take(order, [(a.shape[axis] - 1) // 2], axis=axis).squeeze(axis)
    if a.dtype.kind in "fc":
        nan = np.isnan(a)
        if nan.any():
            return np.where(nan.any(axis=axis), np.argmax(nan, axis=axis), middle)
    return middle


def median(input: Any, dim: Any = None, keepdim: builtins.bool = False) -> Any:
    """The lower median (the ``(n - 1) // 2``-th smallest; NaN if there is one). Without ``dim`` a 0-d
    tensor whose gradient is split between the elements equal to it; with ``dim`` ``(values, indices)``,
    the gradient going to the returned index (among equal values npconv returns the stable sort's,
    which may differ from torch's)."""
    data = as_array(input)
    if data.dtype.kind == "b":
        raise NotImplementedError("median: \"median_cpu\" not implemented for 'Bool' (input's dtype)")
    if dim is None:
        if keepdim:
            raise TypeError('median() missing 1 required positional arguments: "dim"')
        if data.size == 0:
            empty = np.nan if data.dtype.kind in "fc" else np.iinfo(data.dtype).min
            return make_result(np.asarray(empty, data.dtype), (input,),
                               lambda g: (np.zeros(data.shape, g.dtype),), "MedianBackward0", saved=())
        flat = data.reshape(-1)
        return _extreme_all(input, lambda a: flat[_median_position(flat, 0)], "Median", "MedianBackward0")
    return _extreme_dim(input, dim, keepdim, _median_position, "Median", "MedianBackward1")


def _no_derivative(name: str) -> Any:
    def backward(g: np.ndarray) -> tuple:
        raise NotImplementedError(f"the derivative for '{name}' is not implemented.")

    return backward


def unique(
    input: Any,
    sorted: builtins.bool = True,  # noqa: A002 - torch's name
    return_inverse: builtins.bool = False,
    return_counts: builtins.bool = False,
    dim: Any = None,
) -> Any:
    """The distinct elements (``dim=None``; of the flattened input) or distinct slices along ``dim``,
    in ascending order (also with ``sorted=False``, as torch on the CPU); NaNs are all distinct. With
    ``return_inverse`` the int64 position of each element (slice) in the result; with ``return_counts``
    how often each occurs. Like torch's, the result of a tensor requiring grad has no derivative."""
    data = as_array(input)
    if dim is None:
        values, inverse, counts = np.unique(
            data.reshape(-1), return_inverse=True, return_counts=True, equal_nan=False
        )
        inverse = inverse.reshape(data.shape)
        backward_name, op_name = "Unique2Backward0", "_unique2"
    else:
        if data.ndim == 0:
            raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
        d = canonical_dim(dim, data.ndim)
        if data.shape[d] == 0:
            values = data.copy()
            inverse, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        else:
            values, inverse, counts = np.unique(data, return_inverse=True, return_counts=True, axis=d)
        inverse = inverse.reshape(-1)
        backward_name, op_name = "UniqueDimBackward0", "unique_dim"
    out = make_result(np.asarray(values), (input,), _no_derivative(op_name), backward_name, saved=())
    if not (return_inverse or return_counts):
        return out
    result = [out]
    if return_inverse:
        result.append(autograd.tensor_class(inverse.astype(np.int64)))
    if return_counts:
        result.append(autograd.tensor_class(counts.astype(np.int64)))
    return tuple(result)
