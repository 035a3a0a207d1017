"""Shape, view and indexing ops with their gradients (``npconv.cat`` is used by ``Tensor`` too).

View ops (``reshape``/``view``, ``permute``, ``transpose``, ``squeeze``, ``unsqueeze``, ``expand``,
``narrow``, basic indexing, ``split``/``chunk``, ``unfold``) return NumPy views where NumPy can, and
then share the input's version counter, so an in-place op on either is seen by the other's saved
tensors. Every ``dim`` argument goes through :func:`canonical_dim`: out of range is torch's
``IndexError`` ("Dimension out of range ...").
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import autograd, tracing
from ..autograd import as_array, is_tensor, make_result
from ..checks import refuses_oversize

__all__ = [
    "canonical_dim",
    "canonical_dims",
    "reshape",
    "view",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "permute",
    "transpose",
    "swapaxes",
    "t",
    "movedim",
    "expand",
    "expand_as",
    "broadcast_to",
    "repeat",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "split",
    "chunk",
    "unbind",
    "flip",
    "roll",
    "narrow",
    "unfold",
    "gather",
    "scatter",
    "scatter_add",
    "index_select",
    "take_along_dim",
    "getitem",
    "index_put",
    "tile",
    "contiguous",
    "view_as",
    "reshape_as",
    "broadcast_shape",
    "clone",
    "numel",
    "tril",
    "triu",
    "diag",
    "nonzero",
    "argwhere",
    "masked_select",
    "repeat_interleave",
    "vstack",
    "hstack",
    "meshgrid",
]


def canonical_dim(dim: Any, ndim: int, what: str = "dim") -> int:
    """``dim`` in ``[0, ndim)`` (negative counts from the end); torch's IndexError when out of range.

    A 0-d tensor accepts ``dim`` in ``[-1, 0]``, as in torch.
    """
    if isinstance(dim, builtins.bool) or not isinstance(dim, (builtins.int, np.integer)):
        raise TypeError(f"{what} must be an int, but got {type(dim).__name__}")
    bound = builtins.max(ndim, 1)
    if not -bound <= dim < bound:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-bound}, {bound - 1}], but got {dim})"
        )
    return builtins.int(dim) % bound


def canonical_dims(dim: Any, ndim: int) -> tuple[int, ...] | None:
    """A dim or sequence of dims as sorted-free unique non-negative ints; None means all dims."""
    if dim is None:
        return None
    if isinstance(dim, (builtins.int, np.integer)) and not isinstance(dim, builtins.bool):
        dims: Sequence[Any] = (dim,)
    else:
        dims = tuple(dim)
    result = tuple(canonical_dim(d, ndim) for d in dims)
    if len(set(result)) != len(result):
        raise RuntimeError(f"dim {dims} appears multiple times in the list of dims")
    if ndim == 0:
        return ()
    return result


def _shape_argument(shape: Sequence[Any]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        return tuple(operator.index(n) for n in shape)
    except TypeError as error:
        raise TypeError(f"shape must be a sequence of ints, but got {shape!r}") from error


def _views(result: np.ndarray, source: np.ndarray) -> bool:
    return result.base is not None and np.may_share_memory(result, source)


def _view_result(input: Any, out: np.ndarray, backward: Any, name: str) -> Any:
    data = as_array(input)
    view_of = input if is_tensor(input) and _views(out, data) else None
    return make_result(out, (input,), backward, name, saved=(), view_of=view_of)


@tracing.recorded
def reshape(input: Any, *shape: Any) -> Any:
    """``input`` with a new shape (one entry may be -1); a view when the layout allows."""
    data = as_array(input)
    target = _shape_argument(shape)
    if builtins.sum(1 for n in target if n == -1) > 1:
        raise RuntimeError("only one dimension can be inferred")
    if any(n < -1 for n in target):
        raise RuntimeError(f"invalid shape dimension {builtins.min(target)}")
    known = math.prod(n for n in target if n != -1)
    if -1 in target:
        if known == 0 or data.size % known:
            raise RuntimeError(f"shape '{list(target)}' is invalid for input of size {data.size}")
    elif known != data.size:
        raise RuntimeError(f"shape '{list(target)}' is invalid for input of size {data.size}")
    return _reshaped(input, data, target)


def _reshaped(input: Any, data: np.ndarray, target: tuple[int, ...]) -> Any:
    """``input`` (array ``data``) as the valid shape ``target``: a view where the layout allows."""
    original = data.shape
    return _view_result(input, data.reshape(target), lambda g: (g.reshape(original),), "ViewBackward0")


view = reshape


def view_as(input: Any, other: Any) -> Any:
    return reshape(input, as_array(other).shape)


reshape_as = view_as


@tracing.recorded
def contiguous(input: Any, memory_format: Any = None) -> Any:
    """``input`` itself where its array is C-contiguous, else a C-contiguous copy (torch's: a copy is
    not a view, so writing into it leaves ``input`` unchanged)."""
    data = as_array(input)
    if data.flags.c_contiguous:
        return input
    return make_result(np.ascontiguousarray(data), (input,), lambda g: (g,), "CloneBackward0", saved=())


@tracing.recorded
def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    data = as_array(input)
    start = canonical_dim(start_dim, data.ndim)
    end = canonical_dim(end_dim, data.ndim)
    if data.ndim == 0:  # (dims in [-1, 0], as torch's)
        return reshape(input, 1)
    if start > end:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = data.shape[:start] + (math.prod(data.shape[start : end + 1]),) + data.shape[end + 1 :]
    return _reshaped(input, data, shape)  # the same elements: no shape checks


def unflatten(input: Any, dim: int, sizes: Sequence[int]) -> Any:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    return reshape(input, data.shape[:d] + tuple(sizes) + data.shape[d + 1 :])


@tracing.recorded
def squeeze(input: Any, dim: Any = None) -> Any:
    """Drop size-1 dims (all, or those in ``dim``: an int or a tuple)."""
    data = as_array(input)
    dims = canonical_dims(dim, data.ndim)
    if dims is None:
        dims = tuple(i for i, n in enumerate(data.shape) if n == 1)
    shape = tuple(n for i, n in enumerate(data.shape) if not (i in dims and n == 1))
    return reshape(input, shape)


@tracing.recorded
def unsqueeze(input: Any, dim: int) -> Any:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim + 1)
    return reshape(input, data.shape[:d] + (1,) + data.shape[d:])


@tracing.recorded
def permute(input: Any, *dims: Any) -> Any:
    data = as_array(input)
    order = tuple(canonical_dim(d, data.ndim) for d in _shape_argument(dims))
    if sorted(order) != list(range(data.ndim)):
        raise RuntimeError(
            f"permute(): dims {list(dims)} must be a permutation of the input's {data.ndim} dimensions"
        )
    inverse = tuple(np.argsort(order))
    return _view_result(input, data.transpose(order), lambda g: (g.transpose(inverse),), "PermuteBackward0")


@tracing.recorded
def transpose(input: Any, dim0: int, dim1: int) -> Any:
    data = as_array(input)
    a, b = canonical_dim(dim0, data.ndim), canonical_dim(dim1, data.ndim)
    order = list(range(data.ndim))
    order[a], order[b] = order[b], order[a]
    return _view_result(input, data.transpose(order), lambda g: (g.transpose(order),), "TransposeBackward0")


swapaxes = transpose


def t(input: Any) -> Any:
    """Transpose a tensor of at most 2 dims."""
    data = as_array(input)
    if data.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {data.ndim}D")
    return transpose(input, 0, -1) if data.ndim == 2 else view_as(input, input)


def movedim(input: Any, source: Any, destination: Any) -> Any:
    data = as_array(input)
    src = canonical_dims(source, data.ndim) or ()
    dst = canonical_dims(destination, data.ndim) or ()
    if len(src) != len(dst):
        raise RuntimeError("movedim: Invalid source or destination dims")
    order = [d for d in range(data.ndim) if d not in src]
    for s, d in sorted(zip(dst, src, strict=True)):
        order.insert(s, d)
    return permute(input, order)


def expand(input: Any, *sizes: Any) -> Any:
    """A broadcast view (read-only) of ``input``; -1 keeps a size."""
    data = as_array(input)
    target = _shape_argument(sizes)
    if len(target) < data.ndim:
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(target)}) must be greater or equal "
            f"to the number of dimensions in the tensor ({data.ndim})"
        )
    lead = len(target) - data.ndim
    shape = tuple(data.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(target))
    if any(n < 0 for n in shape):
        raise RuntimeError(
            f"expand: the expanded size {list(target)} is invalid for a tensor of shape {list(data.shape)}"
        )
    try:
        out = np.broadcast_to(data, shape)
    except ValueError as error:
        raise RuntimeError(
            f"The expanded size of the tensor ({list(target)}) must match the existing size "
            f"({list(data.shape)}) at non-singleton dimensions"
        ) from error
    original = data.shape
    return _view_result(input, out, lambda g: (autograd.sum_to_shape(g, original),), "ExpandBackward0")


def expand_as(input: Any, other: Any) -> Any:
    return expand(input, as_array(other).shape)


def broadcast_to(input: Any, size: Sequence[int]) -> Any:
    return expand(input, tuple(size))


@refuses_oversize("repeat")
def repeat(input: Any, *sizes: Any) -> Any:
    """Tile ``input`` ``sizes[i]`` times along dim ``i`` (``sizes`` may add leading dims)."""
    data = as_array(input)
    reps = _shape_argument(sizes)
    if len(reps) < data.ndim:
        raise RuntimeError(
            "Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor"
        )
    if any(r < 0 for r in reps):
        raise RuntimeError(f"repeat: sizes must be non-negative, but got {list(reps)}")
    lead = len(reps) - data.ndim
    base = data.reshape((1,) * lead + data.shape)
    out = np.tile(base, reps)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        split = []
        for r, n in zip(reps, base.shape, strict=True):
            split += [r, n]
        summed = g.reshape(split).sum(axis=tuple(range(0, 2 * len(reps), 2)))
        return (summed.reshape(data.shape),)

    return make_result(out, (input,), backward, "RepeatBackward0", saved=())


tile = repeat


@tracing.recorded
def cat(tensors: Sequence[Any], dim: int = 0) -> Any:
    """Concatenate along ``dim`` (1-D empty tensors are skipped, as torch does)."""
    if is_tensor(tensors) or isinstance(tensors, np.ndarray):
        raise TypeError("cat tensors must be a sequence of tensors, but got a single tensor")
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat tensors must be a non-empty sequence")
    from .elementwise import result_type

    dtype = result_type(*tensors)
    arrays = [np.asarray(as_array(x), dtype=dtype) for x in tensors]
    kept = [i for i, a in enumerate(arrays) if not (a.ndim == 1 and a.shape[0] == 0)] or [0]
    ndim = arrays[kept[0]].ndim
    if ndim == 0:
        raise RuntimeError("zero-dimensional tensor cannot be concatenated")
    d = canonical_dim(dim, ndim)
    for i in kept:
        a = arrays[i]
        if (
            a.ndim != ndim
            or a.shape[:d] + a.shape[d + 1 :] != arrays[kept[0]].shape[:d] + arrays[kept[0]].shape[d + 1 :]
        ):
            raise RuntimeError(
                f"Sizes of tensors must match except in dimension {d}: got {list(arrays[kept[0]].shape)} "
                f"and {list(a.shape)} (tensor {i})"
            )
    out = np.concatenate([arrays[i] for i in kept], axis=d)
    bounds = np.cumsum([0] + [arrays[i].shape[d] for i in kept])

    def backward(g: np.ndarray) -> list[np.ndarray | None]:
        grads: list[np.ndarray | None] = [None] * len(tensors)
        for j, i in enumerate(kept):
            index = [slice(None)] * g.ndim
            index[d] = slice(bounds[j], bounds[j + 1])
            grads[i] = g[tuple(index)].astype(as_array(tensors[i]).dtype, copy=False)
        return grads

    return make_result(out, tensors, backward, "CatBackward0", saved=())


concat = concatenate = cat


def stack(tensors: Sequence[Any], dim: int = 0) -> Any:
    """Join same-shaped tensors along a new dim."""
    if is_tensor(tensors) or isinstance(tensors, np.ndarray):
        raise TypeError("stack tensors must be a sequence of tensors, but got a single tensor")
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack tensors must be a non-empty sequence")
    shapes = {as_array(x).shape for x in tensors}
    if len(shapes) > 1:
        raise RuntimeError(f"stack expects each tensor to be equal size, but got {sorted(shapes)}")
    ndim = as_array(tensors[0]).ndim
    d = canonical_dim(dim, ndim + 1)
    return cat([unsqueeze(x, d) for x in tensors], d)


def narrow(input: Any, dim: int, start: int, length: int) -> Any:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    size = data.shape[d]
    if not -size <= start <= size:
        raise IndexError(
            f"start out of range (expected to be in range of [{-size}, {size}], but got {start})"
        )
    start = start % size if start < 0 else start
    if length < 0 or start + length > size:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({size}).")
    index = [slice(None)] * data.ndim
    index[d] = slice(start, start + length)
    return getitem(input, tuple(index))


def split(input: Any, split_size_or_sections: Any, dim: int = 0) -> tuple[Any, ...]:
    """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the listed sizes."""
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    size = data.shape[d]
    if isinstance(split_size_or_sections, (builtins.int, np.integer)):
        step = builtins.int(split_size_or_sections)
        if step < 0 or (step == 0 and size):
            raise RuntimeError(
                f"split_size can only be 0 if dimension size is 0, but got dimension size of {size}"
            )
        sizes = [builtins.min(step, size - s) for s in range(0, size, step)] if step else [0]
    else:
        sizes = [builtins.int(n) for n in split_size_or_sections]
        if builtins.sum(sizes) != size or any(n < 0 for n in sizes):
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {size} (input tensor's "
                f"size at dimension {d}), but got split_sizes={sizes}"
            )
    pieces = []
    start = 0
    for n in sizes:
        pieces.append(narrow(input, d, start, n))
        start += n
    return tuple(pieces)


def chunk(input: Any, chunks: int, dim: int = 0) -> tuple[Any, ...]:
    """``chunks`` pieces of ``ceil(size / chunks)`` along ``dim`` (fewer if the size runs out)."""
    if not isinstance(chunks, (builtins.int, np.integer)) or chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    data = as_array(input)
    size = data.shape[canonical_dim(dim, data.ndim)]
    step = -(-size // chunks) if size else 0
    if step == 0:
        return tuple(narrow(input, dim, 0, 0) for _ in range(builtins.min(chunks, 1) if size else chunks))
    return split(input, step, dim)


def unbind(input: Any, dim: int = 0) -> tuple[Any, ...]:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    return tuple(getitem(input, (slice(None),) * d + (i,)) for i in range(data.shape[d]))


def flip(input: Any, dims: Any) -> Any:
    data = as_array(input)
    axes = canonical_dims(dims, data.ndim) or ()
    out = np.flip(data, axis=axes).copy() if axes else data.copy()
    return make_result(
        out, (input,), lambda g: (np.flip(g, axis=axes) if axes else g,), "FlipBackward0", saved=()
    )


def roll(input: Any, shifts: Any, dims: Any = None) -> Any:
    data = as_array(input)
    if dims is None:
        if not isinstance(shifts, (builtins.int, np.integer)):
            shifts = tuple(shifts)
            if len(shifts) != 1:
                raise RuntimeError("roll: shifts must be a single int when dims is not given")
            shifts = shifts[0]
        out = np.roll(data.reshape(-1), shifts).reshape(data.shape)
        return make_result(
            out,
            (input,),
            lambda g: (np.roll(g.reshape(-1), -shifts).reshape(data.shape),),
            "RollBackward0",
            saved=(),
        )
    shift_list = (shifts,) if isinstance(shifts, (builtins.int, np.integer)) else tuple(shifts)
    dim_list = (dims,) if isinstance(dims, (builtins.int, np.integer)) else tuple(dims)
    if len(shift_list) != len(dim_list):
        raise RuntimeError(
            f"shifts and dimensions must align. shifts: {len(shift_list)}, dims:{len(dim_list)}"
        )
    axes = tuple(canonical_dim(d, data.ndim) for d in dim_list)
    out = np.roll(data, shift_list, axis=axes)
    back = tuple(-s for s in shift_list)
    return make_result(out, (input,), lambda g: (np.roll(g, back, axis=axes),), "RollBackward0", saved=())


def unfold(input: Any, dimension: int, size: int, step: int) -> Any:
    """``Tensor.unfold``: all windows of ``size`` with ``step`` along ``dimension``, as a new last dim."""
    data = as_array(input)
    d = canonical_dim(dimension, data.ndim)
    length = data.shape[d] if data.ndim else 1
    if size < 0 or size > length:
        raise RuntimeError(f"maximum size for tensor at dimension {d} is {length} but size is {size}")
    if step <= 0:
        raise RuntimeError(f"step is {step} but must be > 0")
    source = data.reshape(1) if data.ndim == 0 else data
    windows = np.lib.stride_tricks.sliding_window_view(source, size, axis=d)
    index = [slice(None)] * windows.ndim
    index[d] = slice(None, None, step)
    out = windows[tuple(index)]
    if data.ndim == 0:
        out = out.reshape(size)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(source.shape, g.dtype)
        count = out.shape[d] if data.ndim else 1
        for w in range(count):
            target = [slice(None)] * source.ndim
            target[d] = slice(w * step, w * step + size)
            piece = np.take(g, w, axis=d) if data.ndim else g
            full[tuple(target)] += np.moveaxis(piece, -1, d)
        return (full.reshape(data.shape),)

    return _view_result(input, out, backward, "UnfoldBackward0")


# -- indexing ------------------------------------------------------------------------------------------
def _index_argument(index: Any) -> Any:
    if is_tensor(index):
        return as_array(index)
    if isinstance(index, tuple):
        return tuple(as_array(i) if is_tensor(i) else i for i in index)
    if isinstance(index, list) and any(is_tensor(i) for i in index):
        return [as_array(i) if is_tensor(i) else i for i in index]
    return index


def _check_steps(index: Any) -> None:
    for item in index if isinstance(index, tuple) else (index,):
        if isinstance(item, slice) and item.step is not None and item.step <= 0:
            raise ValueError(
                f"step must be greater than zero (npconv, like torch, has no negative-step "
                f"slicing; use flip()), but got slice step {item.step}"
            )


@tracing.recorded
def getitem(input: Any, index: Any) -> Any:
    """``input[index]``: basic indexing is a view; integer/bool array indexing copies."""
    index = _index_argument(index)
    _check_steps(index)
    data = as_array(input)
    try:
        out = data[index]
    except IndexError as error:
        raise IndexError(str(error)) from None
    shape, dtype = data.shape, data.dtype

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(shape, dtype=g.dtype if g.dtype.kind == "c" else dtype)
        np.add.at(full, index, g)  # arbitrary (possibly repeated) fancy indices
        return (full,)

    return _view_result(input, out, backward, "IndexBackward0" if not _views(out, data) else "SliceBackward0")


def index_put(input: Any, index: Any, values: Any, accumulate: bool = False) -> Any:
    """A copy of ``input`` with ``input[index] = values`` (``+=`` with ``accumulate``)."""
    index = _index_argument(index)
    _check_steps(index)
    data = as_array(input)
    out = data.copy()
    v = np.asarray(as_array(values))
    if accumulate:
        np.add.at(out, index, v.astype(data.dtype, copy=False))
    else:
        out[index] = v
    value_shape = v.shape

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grad_input = g.copy()
        if not accumulate:
            grad_input[index] = 0
        grad_values = autograd.sum_to_shape(
            np.broadcast_to(g[index], np.broadcast_shapes(g[index].shape, value_shape)), value_shape
        )
        return grad_input, grad_values.astype(v.dtype, copy=False) if v.dtype.kind in "fc" else None

    return make_result(out, (input, values), backward, "IndexPutBackward0", saved=())


def _index_array(index: Any, what: str) -> np.ndarray:
    array = np.asarray(as_array(index))
    if array.dtype.kind not in "iu":
        raise TypeError(f"{what} index must be an integer tensor, but got {array.dtype}")
    return array


def gather(input: Any, dim: int, index: Any) -> Any:
    """``out[i][j] = input[index[i][j]][j]`` along ``dim`` (``index`` may be smaller than input)."""
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    idx = _index_array(index, "gather")
    if idx.ndim != data.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as input tensor")
    for axis in range(data.ndim):
        if axis != d and idx.shape[axis] > data.shape[axis]:
            raise RuntimeError(
                f"Size does not match at dimension {axis} expected index {list(idx.shape)} to be "
                f"smaller than self {list(data.shape)} apart from dimension {d}"
            )
    if idx.size and (idx.min() < -data.shape[d] or idx.max() >= data.shape[d]):
        raise IndexError(f"index out of range in gather along dimension {d} of size {data.shape[d]}")
    region = data[tuple(slice(0, n) if a != d else slice(None) for a, n in enumerate(idx.shape))]
    out = np.take_along_axis(region, idx, axis=d)

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(data.shape, dtype=g.dtype)
        grid = list(np.indices(idx.shape, sparse=True))
        grid[d] = idx
        np.add.at(full, tuple(grid), g)
        return (full,)

    return make_result(out, (input,), backward, "GatherBackward0", saved=())


take_along_dim = gather


def _scatter(input: Any, dim: int, index: Any, src: Any, add: bool, name: str) -> Any:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    idx = _index_array(index, "scatter")
    source = as_array(src)
    if source.ndim == 0:
        source = np.broadcast_to(source, idx.shape)
    if idx.size and (idx.min() < -data.shape[d] or idx.max() >= data.shape[d]):
        raise IndexError(f"index out of range in scatter along dimension {d} of size {data.shape[d]}")
    grid = list(np.indices(idx.shape, sparse=True))
    grid[d] = idx
    target = tuple(grid)
    values = source[tuple(slice(0, n) for n in idx.shape)]
    out = data.copy()
    if add:
        np.add.at(out, target, values.astype(data.dtype, copy=False))
    else:
        out[target] = values

    def backward(g: np.ndarray) -> tuple[Any, Any]:
        grad_input = g.copy()
        if not add:
            grad_input[target] = 0
        grad_src = None
        if is_tensor(src) and as_array(src).ndim:
            grad_src = np.zeros(as_array(src).shape, g.dtype)
            grad_src[tuple(slice(0, n) for n in idx.shape)] = g[target]
        return grad_input, grad_src

    return make_result(out, (input, src), backward, name, saved=())


def scatter(
    input: Any, dim: int, index: Any, src: Any = None, *, value: Any = None, reduce: Any = None
) -> Any:
    """A copy of ``input`` with ``out[index[i][j]][j] = src[i][j]`` along ``dim`` (``src`` or ``value``)."""
    if reduce is not None:
        raise ValueError(
            f"scatter reduce must be None (npconv has no scatter reductions), but got {reduce!r}"
        )
    if (src is None) == (value is None):
        raise TypeError("scatter needs exactly one of src or value")
    return _scatter(input, dim, index, src if src is not None else value, False, "ScatterBackward0")


def scatter_add(input: Any, dim: int, index: Any, src: Any) -> Any:
    return _scatter(input, dim, index, src, True, "ScatterAddBackward0")


def index_select(input: Any, dim: int, index: Any) -> Any:
    data = as_array(input)
    d = canonical_dim(dim, data.ndim)
    idx = _index_array(index, "index_select")
    if idx.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    idx = idx.reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= (data.shape[d] if data.ndim else 1)):
        raise IndexError(
            f"index out of range in self: index_select along dimension {d} of size "
            f"{data.shape[d] if data.ndim else 1}"
        )
    if data.ndim == 0:
        return getitem(input, ...)
    return getitem(input, (slice(None),) * d + (idx,))


# -- copies, triangles, diagonals, selections ------------------------------------------------------------
def _tensor_argument(value: Any, function: str, argument: str = "input", position: int = 1) -> None:
    """torch's TypeError for a non-Tensor where a function takes only Tensors."""
    if not is_tensor(value):
        raise TypeError(
            f"{function}(): argument '{argument}' (position {position}) must be Tensor, "
            f"not {type(value).__name__}"
        )


def _int_argument(value: Any, function: str, argument: str) -> int:
    if isinstance(value, builtins.bool) or not isinstance(value, (builtins.int, np.integer)):
        raise TypeError(f"{function}(): argument '{argument}' must be int, not {type(value).__name__}")
    return builtins.int(value)


@tracing.recorded
def clone(input: Any, *, memory_format: Any = None) -> Any:
    """A copy of ``input`` with its own memory; the gradient passes through unchanged."""
    _tensor_argument(input, "clone")
    return make_result(as_array(input).copy(), (input,), lambda g: (g,), "CloneBackward0", saved=())


def numel(input: Any) -> builtins.int:
    """The number of elements of ``input`` (a Python int)."""
    _tensor_argument(input, "numel")
    return builtins.int(as_array(input).size)


def _triangle(input: Any, diagonal: Any, name: str, lower: builtins.bool) -> Any:
    _tensor_argument(input, name)
    k = _int_argument(diagonal, name, "diagonal")
    data = as_array(input)
    if data.ndim < 2:
        raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions")
    rows, columns = data.shape[-2:]
    keep = np.tri(rows, columns, k, dtype=bool) if lower else ~np.tri(rows, columns, k - 1, dtype=bool)
    out = np.where(keep, data, np.zeros((), data.dtype))
    backward_name = "TrilBackward0" if lower else "TriuBackward0"
    return make_result(
        out, (input,), lambda g: (np.where(keep, g, np.zeros((), g.dtype)),), backward_name, saved=()
    )


def tril(input: Any, diagonal: builtins.int = 0) -> Any:
    """The lower triangle of the last two dims (on and below diagonal ``diagonal``), zeros elsewhere."""
    return _triangle(input, diagonal, "tril", True)


def triu(input: Any, diagonal: builtins.int = 0) -> Any:
    """The upper triangle of the last two dims (on and above diagonal ``diagonal``), zeros elsewhere."""
    return _triangle(input, diagonal, "triu", False)


def diag(input: Any, diagonal: builtins.int = 0) -> Any:
    """A 1-d ``input``: the square matrix with it on diagonal ``diagonal``; a 2-d one: that diagonal."""
    _tensor_argument(input, "diag")
    k = _int_argument(diagonal, "diag", "diagonal")
    data = as_array(input)
    if data.ndim == 1:
        n = data.shape[0]
        size = n + builtins.abs(k)
        rows = np.arange(n) + builtins.max(-k, 0)
        columns = np.arange(n) + builtins.max(k, 0)
        out = np.zeros((size, size), data.dtype)
        out[rows, columns] = data
        return make_result(out, (input,), lambda g: (g[rows, columns],), "DiagEmbedBackward0", saved=())
    if data.ndim == 2:
        out = np.diagonal(data, k).copy()
        shape = data.shape
        rows = np.arange(out.shape[0]) + builtins.max(-k, 0)
        columns = np.arange(out.shape[0]) + builtins.max(k, 0)

        def backward(g: np.ndarray) -> tuple[np.ndarray]:
            full = np.zeros(shape, g.dtype)
            full[rows, columns] = g
            return (full,)

        return make_result(out, (input,), backward, "DiagonalBackward0", saved=())
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {data.ndim}D")


def nonzero(input: Any, *, as_tuple: builtins.bool = False) -> Any:
    """The positions of the nonzero elements: an int64 ``(n, ndim)`` tensor, or with ``as_tuple`` one
    1-d tensor per dim (a 0-d input counts as 1-d there, as in torch)."""
    _tensor_argument(input, "nonzero")
    data = as_array(input)
    if as_tuple:
        source = data.reshape(1) if data.ndim == 0 else data
        return tuple(autograd.tensor_class(p.astype(np.int64)) for p in np.nonzero(source))
    if data.ndim == 0:
        return autograd.tensor_class(np.zeros((builtins.int(data.item() != 0), 0), np.int64))
    return autograd.tensor_class(np.argwhere(data).astype(np.int64, copy=False))


def argwhere(input: Any) -> Any:
    """``nonzero(input)``: the ``(n, ndim)`` positions of the nonzero elements."""
    _tensor_argument(input, "argwhere")
    return nonzero(input)


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast shape, or torch's RuntimeError naming the first mismatching dimension."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        ndim = builtins.max(len(s) for s in shapes)
        padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
        for axis in range(ndim - 1, -1, -1):
            big = list(dict.fromkeys(s[axis] for s in padded if s[axis] != 1))
            if len(big) > 1:
                raise RuntimeError(
                    f"The size of tensor a ({big[0]}) must match the size of tensor b ({big[1]}) at "
                    f"non-singleton dimension {axis}"
                ) from None
        raise


def masked_select(input: Any, mask: Any) -> Any:
    """The elements of ``input`` where the bool ``mask`` is True (both broadcast), as a 1-d tensor."""
    data = as_array(input)
    m = np.asarray(as_array(mask))
    if m.dtype != np.bool_:
        raise RuntimeError(f"masked_select: expected BoolTensor for mask, but got {m.dtype}")
    shape = broadcast_shape(data.shape, m.shape)
    full_mask = np.broadcast_to(m, shape)
    out = np.broadcast_to(data, shape)[full_mask]
    source_shape = data.shape

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(shape, g.dtype)
        full[full_mask] = g
        return (autograd.sum_to_shape(full, source_shape),)

    return make_result(out, (input,), backward, "MaskedSelectBackward0", saved=())


def _repeat_counts(repeats: Any) -> np.ndarray:
    """``repeats`` (an int or an integer tensor of at most 1 dim) as a checked 1-d int64 array."""
    if is_tensor(repeats) or isinstance(repeats, np.ndarray):
        counts = np.asarray(as_array(repeats))
        if counts.dtype.kind not in "iu":
            raise NotImplementedError(
                f"repeat_interleave: repeats must be an int32 or int64 tensor, but got {counts.dtype}"
            )
        if counts.ndim > 1:
            raise RuntimeError("repeat_interleave: repeats must be 0-dim or 1-dim tensor")
        if counts.size and counts.min() < 0:
            raise RuntimeError("repeat_interleave: repeats can not be negative")
        return counts.reshape(-1).astype(np.int64)
    if isinstance(repeats, builtins.bool) or not isinstance(repeats, (builtins.int, np.integer)):
        raise TypeError(
            f"repeat_interleave(): argument 'repeats' must be an int or a Tensor, "
            f"not {type(repeats).__name__}"
        )
    if repeats < 0:
        raise RuntimeError(f"repeat_interleave: Repeats must be non-negative, but got repeats={repeats}")
    return np.array([repeats], np.int64)


def repeat_interleave(
    input: Any, repeats: Any = None, dim: builtins.int | None = None, *, output_size: Any = None
) -> Any:
    """Repeat each element (slice along ``dim``; the flattened input without ``dim``) ``repeats`` times
    (an int, or one count per element). ``repeat_interleave(counts)`` repeats the indices
    ``0..len(counts)-1``."""
    if repeats is None:
        counts = np.asarray(as_array(input))
        if counts.ndim != 1:
            raise RuntimeError(
                f"repeat_interleave: repeats must be a 1-d tensor (repeat_interleave only accept 1D vector "
                f"as repeat), but got {counts.ndim} dimensions"
            )
        checked = _repeat_counts(input)
        out = np.repeat(np.arange(counts.shape[0], dtype=counts.dtype), checked)
        if output_size is not None and output_size != out.shape[0]:
            raise RuntimeError("repeat_interleave: allocated size (output_size) does not match required size")
        return autograd.tensor_class(out)
    counts = _repeat_counts(repeats)
    data = as_array(input)
    if dim is None:
        source, d = data.reshape(-1), 0
    else:
        d = canonical_dim(dim, data.ndim)
        if data.ndim == 0:  # torch unsqueezes at dim + 1
            canonical_dim(d + 1, 1)
        source = data
    size = source.shape[d]
    if counts.shape[0] == 1:
        counts = np.broadcast_to(counts, (size,))
    elif counts.shape[0] != size:
        raise RuntimeError(
            f"repeats must have the same size as input along dim, but got repeats.size(0) = "
            f"{counts.shape[0]} and input.size({d}) = {size}"
        )
    positions = np.repeat(np.arange(size), counts)
    if output_size is not None and output_size != positions.shape[0]:
        raise RuntimeError(
            f"repeat_interleave: allocated size (output_size={output_size}) does not match required size "
            f"{positions.shape[0]}"
        )
    out = np.take(source, positions, axis=d)
    shape = data.shape

    def backward(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros(source.shape, g.dtype)
        np.add.at(np.moveaxis(full, d, 0), positions, np.moveaxis(g, d, 0))
        return (full.reshape(shape),)

    return make_result(out, (input,), backward, "RepeatInterleaveBackward0", saved=())


def _tensor_list(tensors: Any, name: str) -> list[Any]:
    if is_tensor(tensors) or isinstance(tensors, np.ndarray) or not isinstance(tensors, (list, tuple)):
        raise TypeError(
            f"{name}(): argument 'tensors' (position 1) must be tuple of Tensors, "
            f"not {type(tensors).__name__}"
        )
    if not tensors:
        raise RuntimeError(f"{name} expects a non-empty TensorList")
    return list(tensors)


def vstack(tensors: Sequence[Any]) -> Any:
    """Stack rows: each tensor made at least 2-d (a 1-d one is one row), concatenated along dim 0."""
    items = _tensor_list(tensors, "vstack")
    rows = [reshape(t, 1, -1) if as_array(t).ndim < 2 else t for t in items]
    return cat(rows, 0)


def hstack(tensors: Sequence[Any]) -> Any:
    """Stack columns: concatenation along dim 1, or along dim 0 for 1-d tensors (0-d count as 1-d)."""
    items = _tensor_list(tensors, "hstack")
    pieces = [reshape(t, 1) if as_array(t).ndim == 0 else t for t in items]
    return cat(pieces, 0 if as_array(pieces[0]).ndim == 1 else 1)


def meshgrid(*tensors: Any, indexing: str | None = None) -> tuple[Any, ...]:
    """Coordinate grids of 0-d or 1-d tensors: output ``i`` varies along dim ``i`` (``indexing='ij'``,
    the default) or with the first two dims swapped (``'xy'``); broadcast views, as torch's."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if not tensors:
        raise RuntimeError("meshgrid expects a non-empty TensorList")
    if indexing is None:
        import warnings

        warnings.warn(
            "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument.",
            UserWarning,
            stacklevel=2,
        )
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f'torch.meshgrid: indexing must be one of "xy" or "ij", but received: {indexing}')
    arrays = [as_array(t) for t in tensors]
    for i, a in enumerate(arrays):
        if a.ndim > 1:
            raise RuntimeError(
                f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got a {a.ndim}-d tensor "
                f"(tensor {i})"
            )
    if len({a.dtype for a in arrays}) > 1:
        raise RuntimeError("meshgrid expects all tensors to have the same dtype")
    order = list(range(len(tensors)))
    swap = indexing == "xy" and len(tensors) >= 2
    if swap:
        order[0], order[1] = 1, 0
    shape = tuple(arrays[i].size for i in order)
    grids = []
    for position, i in enumerate(order):
        view_shape = [1] * len(order)
        view_shape[position] = -1
        grids.append(expand(reshape(tensors[i], view_shape), shape))
    if swap:  # the ij grids of (second, first, ...): the first two swapped back are the xy grids
        grids[0], grids[1] = grids[1], grids[0]
    return tuple(grids)
