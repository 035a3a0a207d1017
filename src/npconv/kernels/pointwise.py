"""Per-channel and elementwise passes over activations, spread over the worker threads.

Batch norm and ReLU follow every convolution of most networks; done as whole-tensor NumPy
expressions they are single-threaded and allocate a temporary per operation, which measured
slower than the convolutions around them (docs/performance.md). Here runs of whole images
(about :data:`CHUNK_BYTES`) are the work items, whose passes run while they are in cache; small
arrays are one run on the calling thread.

* :func:`channel_sums` ``s[c] = sum_{n, ...} x[n, c, ...]``; :func:`centred_moments` the sums of
  ``x - m[c]`` and of its square; :func:`centred_dot` the sums of ``g`` and ``g * (x - m[c])``;
* :func:`affine` ``y = x * a[c] + b[c]``; :func:`centred_scale` ``y = (x - m[c]) * a[c] + b[c]``;
  :func:`centred_affine` ``y = g * a[c] + (x - m[c]) * b[c] + k[c]``;
* :func:`batch_norm_forward` / :func:`batch_norm_backward`: batch norm's passes, on the compiled core
  (``npconv._core``, channel ranges over the worker threads) for float32/float64, else from the
  NumPy passes above;
* :func:`relu` ``max(x, 0)``; :func:`relu_grad` ``g`` where ``y > 0`` or NaN, else 0 (torch's rule);
  one compiled pass over flat element ranges on the worker threads for C-contiguous float32/float64
  (also :func:`activate_`'s ReLU), else NumPy over runs of images;
* :func:`activate_` ReLU, hardtanh (ReLU6) or SiLU written into ``y`` (a convolution's fresh
  output: the fused activation epilogue of inference), with the same values as the
  activation ops; :class:`Activation` describes one (kind, bounds, the compiled kernels' code);
  :func:`epilogue_` ``y = activation(y + bias[c])`` in one pass over each run of images.

Partial sums are kept per worker with a fixed assignment of images (deterministic for a given
thread count). Inputs are ``(N, C, ...)`` arrays (``relu``: any shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .. import backends
from ..backends import get_num_threads
from . import workspace

__all__ = ["accumulator", "channel_sums", "centred_moments", "centred_dot", "affine", "centred_scale",
           "centred_affine", "batch_norm_forward", "batch_norm_backward",
           "maximum_zero", "relu", "relu_grad", "add", "ACTIVATIONS", "Activation", "activate_",
           "epilogue_"]

#: Arrays smaller than this many elements are processed in one call on the calling thread.
PARALLEL_MIN_SIZE = 1 << 16
#: The compiled kernels (batch norm, ReLU) split arrays of at least this many elements across the
#: worker threads (prepared jobs; ReLU in place, 2 threads vs 1, us: 100 K elements 16.8 vs 14.3,
#: 200 K 19.8 vs 21.6, 800 K 26 vs 40).
PARALLEL_CORE_MIN_SIZE = 1 << 18
#: Work items are runs of whole images of about this many bytes (at least one image).
CHUNK_BYTES = 1 << 21


def _plan(x: np.ndarray) -> tuple[list[Any], int]:
    """Runs of images ``x[s]`` and the worker threads for them: one run on the calling thread for
    small arrays, else cache-sized runs over :func:`~npconv.backends.get_num_threads` workers."""
    if x.ndim < 2 or x.size < PARALLEL_MIN_SIZE or x.shape[0] < 2:
        return [Ellipsis], 1  # x[...]: the whole array, also 0-d
    per_image = max(1, x[0].nbytes)
    step = max(1, min(CHUNK_BYTES // per_image, -(-x.shape[0] // get_num_threads())))
    runs = [slice(i, i + step) for i in range(0, x.shape[0], step)]
    return runs, max(1, min(get_num_threads(), len(runs)))


#: Elements per row of :func:`maximum_zero`'s zero row (4 KiB of float32: stays in L1).
ZERO_ROW = 1024
_zero_rows: dict[np.dtype, np.ndarray] = {}


def _zero_row(dtype: np.dtype) -> np.ndarray:
    row = _zero_rows.get(dtype)
    if row is None:
        row = np.zeros(ZERO_ROW, dtype)
        row.flags.writeable = False
        _zero_rows[dtype] = row
    return row


def maximum_zero(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = np.maximum(x, 0)`` (NaN stays NaN; ``out`` may be ``x``), the same values as with a
    scalar zero, but contiguous data is taken as rows against a zero row: NumPy runs its SIMD loop
    for two contiguous operands, while a scalar operand takes a loop ~3.5x slower (float32,
    docs/performance.md)."""
    zero = x.dtype.type(0)
    n = x.size // ZERO_ROW * ZERO_ROW
    if n == 0 or not (x.flags.c_contiguous and out.flags.c_contiguous) or x.shape != out.shape:
        return np.maximum(x, zero, out=out)
    flat, target = x.reshape(-1), out.reshape(-1)
    np.maximum(flat[:n].reshape(-1, ZERO_ROW), _zero_row(x.dtype), out=target[:n].reshape(-1, ZERO_ROW))
    if n < x.size:
        np.maximum(flat[n:], zero, out=target[n:])
    return out


def _rows(a: np.ndarray) -> np.ndarray:
    """``a (B, C, ...)`` as ``(B, C, S)`` (a view when possible)."""
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))  # not -1: C may be 0


def _column(v: np.ndarray, ndim: int) -> np.ndarray:
    """Per-channel ``v (C,)`` broadcasting over ``(B, C, ...)`` of ``ndim`` axes."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def accumulator(dtype: np.dtype) -> np.dtype:
    """The dtype sums are taken in: at least float32 (float16 sums overflow and lose precision)."""
    return np.promote_types(dtype, np.float32)


def _reduce(x: np.ndarray, parts: int, per_run: Callable[[Any], np.ndarray]) -> np.ndarray:
    """Sum over runs of images of ``per_run(s) -> (parts, C)``, per-worker partials."""
    runs, threads = _plan(x)
    partial = np.zeros((threads, parts, x.shape[1]), accumulator(x.dtype))

    def work(worker: int, run: Any) -> None:
        partial[worker] += per_run(run)

    workspace.run(runs, work, threads, blas=0)  # NumPy reductions and ufuncs: no BLAS
    return partial.sum(axis=0)


def _each(x: np.ndarray, per_run: Callable[[Any], None]) -> None:
    runs, threads = _plan(x)
    workspace.run(runs, lambda _, run: per_run(run), threads, blas=0)  # elementwise ufuncs: no BLAS


def channel_sums(x: np.ndarray) -> np.ndarray:
    """``(C,)`` sums of ``x (N, C, ...)`` over every axis but the channel axis."""
    acc = accumulator(x.dtype)
    return _reduce(x, 1, lambda s: _rows(x[s]).sum(axis=(0, 2), dtype=acc)[None])[0]


def centred_moments(x: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sum(x - mean[c])`` and ``sum((x - mean[c])**2)`` per channel."""
    m = mean.astype(accumulator(x.dtype), copy=False)[None, :, None]

    def moments(s: Any) -> np.ndarray:
        d = _rows(x[s]) - m
        return np.stack([d.sum(axis=(0, 2)), np.einsum("bcs,bcs->c", d, d)])

    first, second = _reduce(x, 2, moments)
    return first, second


def centred_dot(g: np.ndarray, x: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sum(g)`` and ``sum(g * (x - mean[c]))`` per channel."""
    acc = accumulator(g.dtype)
    m = mean.astype(accumulator(x.dtype), copy=False)[None, :, None]

    def sums(s: Any) -> np.ndarray:
        gs = _rows(g[s])
        return np.stack([gs.sum(axis=(0, 2), dtype=acc), np.einsum("bcs,bcs->c", gs, _rows(x[s]) - m)])

    total, dot = _reduce(g, 2, sums)
    return total, dot


def affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``y = x * scale[c] + shift[c]`` for ``x (N, C, ...)``, a new array of ``x``'s dtype."""
    y = np.empty(x.shape, x.dtype)
    a, b = _column(scale, x.ndim), _column(shift, x.ndim)

    def work(s: Any) -> None:
        np.multiply(x[s], a, out=y[s])
        y[s] += b

    _each(x, work)
    return y


def centred_scale(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``y = (x - mean[c]) * scale[c] + shift[c]``, a new array (centred first: no cancellation
    when ``|mean|`` dwarfs the spread, e.g. batch norm of ``1e8 + N(0, 1)``), of ``x``'s dtype."""
    y = np.empty(x.shape, x.dtype)
    m, a, b = (_column(v, x.ndim) for v in (mean, scale, shift))

    def work(s: Any) -> None:
        np.subtract(x[s], m, out=y[s])
        y[s] *= a
        y[s] += b

    _each(x, work)
    return y


def centred_affine(g: np.ndarray, x: np.ndarray, mean: np.ndarray, g_scale: np.ndarray,
                   x_scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``g * g_scale[c] + (x - mean[c]) * x_scale[c] + shift[c]``, a new array of ``g``'s dtype."""
    out = np.empty(g.shape, g.dtype)
    m, a, b, k = (_column(v, g.ndim) for v in (mean, g_scale, x_scale, shift))

    def work(s: Any) -> None:
        d = x[s] - m
        d *= b
        np.multiply(g[s], a, out=out[s])
        out[s] += d
        out[s] += k

    _each(g, work)
    return out


_CORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _core_takes(x: np.ndarray) -> bool:
    """Whether the compiled core runs batch norm on ``x`` (float32/float64; else the NumPy passes)."""
    return backends.core.available and x.dtype in _CORE_DTYPES


def _over_channels(kernel: Callable[..., None], x: np.ndarray, *args: Any) -> None:
    """``kernel(isa, *args, start, stop)`` over channel ranges of ``x (N, C, ...)`` on the worker threads
    (one range on the calling thread for small arrays)."""
    channels = x.shape[1]
    threads = 1 if x.size < PARALLEL_CORE_MIN_SIZE else max(1, min(get_num_threads(), channels))
    bounds = [channels * i // threads for i in range(threads + 1)]
    workspace.run_spans(kernel, args, [(bounds[i], bounds[i + 1]) for i in range(threads)])


def _core_geometry(x: np.ndarray) -> tuple[int, int, int]:
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _per_channel(x: np.ndarray) -> int:
    """Elements per channel of ``x (N, C, *)`` (also without channels)."""
    return x.shape[0] * math.prod(x.shape[2:])


def _vector(v: np.ndarray | None, dtype: np.dtype) -> np.ndarray | None:
    return None if v is None else np.ascontiguousarray(v, dtype=dtype)


def batch_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
                       fixed: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Batch norm of ``x (N, C, *)``: ``(y, mean, var, invstd)`` with ``y = (x - mean) * invstd *
    weight + bias`` (``weight``/``bias`` ``(C,)`` or None) in ``x``'s dtype, ``invstd = 1 / sqrt(var +
    eps)``. ``fixed`` None: the batch statistics over ``(N, *)`` (biased ``var``); else ``fixed = (mean,
    invstd)`` normalise (``var`` None). Statistics are ``(C,)`` of :func:`accumulator` dtype, taken in
    float64 by the compiled core, else by the corrected two-pass NumPy passes."""
    acc = accumulator(x.dtype)
    if _core_takes(x):
        x = np.ascontiguousarray(x)
        stats = np.empty((3, x.shape[1]), x.dtype)
        if fixed is not None:
            stats[0], stats[2] = fixed
        y = np.empty(x.shape, x.dtype)
        _over_channels(backends.core.module.batch_norm_forward, x, x, y, _vector(weight, x.dtype),
                       _vector(bias, x.dtype), stats, _core_geometry(x), fixed is None, float(eps))
        return y, stats[0], (stats[1] if fixed is None else None), stats[2]
    t = acc.type
    if fixed is None:
        count = _per_channel(x)
        mean = channel_sums(x) / t(count)
        first, second = centred_moments(x, mean)
        correction = first / t(count)  # the first pass's rounding error (corrected two-pass)
        with np.errstate(invalid="ignore"):
            mean = np.where(np.isfinite(mean), mean + correction, mean)  # an inf's mean stays inf (torch's)
        var = np.maximum(second / t(count) - correction * correction, t(0))
        invstd = (1 / np.sqrt(var + t(eps))).astype(acc, copy=False)
    else:
        (mean, invstd), var = fixed, None
    scale = invstd if weight is None else (invstd * weight).astype(acc, copy=False)
    shift = np.zeros_like(scale) if bias is None else bias.astype(acc, copy=False)
    return centred_scale(x, mean, scale, shift), mean, var, invstd


def batch_norm_backward(g: np.ndarray, x: np.ndarray, mean: np.ndarray, invstd: np.ndarray,
                        weight: np.ndarray | None, training: bool, input_grad: bool, param_grads: bool
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(grad_input, grad_weight, grad_bias)`` of :func:`batch_norm_forward` (``x`` its input,
    ``mean``/``invstd`` its statistics; ``training``: they were the batch's, so the input gradient
    has their terms): ``gx = a * (g - mean(g) - xhat * mean(g * xhat))`` (training) or ``a * g``,
    ``a = weight * invstd``; ``grad_weight = sum(g * xhat)``, ``grad_bias = sum(g)`` per channel, in
    :func:`accumulator` dtype (None unless ``param_grads``; ``gx`` None unless ``input_grad``)."""
    acc = accumulator(g.dtype)
    if _core_takes(x) and g.dtype == x.dtype:
        g, x = np.ascontiguousarray(g), np.ascontiguousarray(x)
        gx = np.empty(x.shape, x.dtype) if input_grad else None
        sums = np.empty((2, x.shape[1]), x.dtype) if param_grads else None
        stats = np.zeros((3, x.shape[1]), x.dtype)
        stats[0], stats[2] = mean, invstd
        _over_channels(backends.core.module.batch_norm_backward, x, g, x, gx, _vector(weight, x.dtype), stats,
                       sums, _core_geometry(x), bool(training))
        return gx, (None if sums is None else sums[1]), (None if sums is None else sums[0])
    t = acc.type
    count = _per_channel(x)
    scale = invstd if weight is None else (invstd * weight).astype(acc, copy=False)
    total = dot = None
    if param_grads or (training and input_grad):
        total, dot = centred_dot(g, x, mean)  # sum g, sum g * (x - mean)
    gx = None
    if input_grad:
        if training:  # scale * (g - mean(g) - xhat * mean(g * xhat))
            gx = centred_affine(g, x, mean, scale, -scale * invstd * invstd * dot / t(count),
                                -scale * total / t(count))
        else:
            gx = affine(g, scale, np.zeros_like(scale))
    if not param_grads:
        return gx, None, None
    return gx, (dot * invstd).astype(acc, copy=False), total


#: Flat element ranges of the compiled elementwise kernels start at multiples of this (cache lines).
ELEMENT_ALIGN = 64


def _over_elements(kernel: Callable[..., None], size: int, *args: Any, tail: tuple = ()) -> None:
    """``kernel(isa, *args, start, stop, *tail)`` over flat element ranges of ``size`` elements split
    across the worker threads (one range on the calling thread for small arrays)."""
    threads = 1 if size < PARALLEL_CORE_MIN_SIZE else max(1, min(get_num_threads(), size // ELEMENT_ALIGN))
    bounds = [size * i // threads // ELEMENT_ALIGN * ELEMENT_ALIGN for i in range(threads)] + [size]
    workspace.run_spans(kernel, args, [(bounds[i], bounds[i + 1]) for i in range(threads)], tail)


def _flat_core(*arrays: np.ndarray) -> bool:
    """Whether the compiled elementwise kernels take ``arrays``: one float32/float64 dtype and shape,
    all C-contiguous."""
    first = arrays[0]
    return (_core_takes(first) and all(a.dtype == first.dtype and a.shape == first.shape
                                       and a.flags.c_contiguous for a in arrays))


def _updatable(theta: np.ndarray, grad: np.ndarray, *state: np.ndarray | None) -> bool:
    """Whether an optimizer step kernel takes a parameter, its gradient and its state arrays (None
    entries absent): one float32/float64 dtype and shape, C-contiguous, the parameter and state
    writable, no two sharing memory."""
    arrays = (theta, grad) + tuple(a for a in state if a is not None)
    return (_flat_core(*arrays) and all(a.flags.writeable for i, a in enumerate(arrays) if i != 1)
            and not any(np.may_share_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]))


#: sgd_step's flags (csrc/elementwise.h).
_SGD_FIRST, _SGD_NESTEROV, _SGD_KEEP = 1, 2, 4


def sgd_step(theta: np.ndarray, grad: np.ndarray, buffer: np.ndarray | None, lr: float, momentum: float,
             keep: float, nesterov: bool, first: bool) -> bool:
    """One ``torch.optim.SGD`` step in place on the compiled core's workers (``optim.sgd``'s update: ``b
    = momentum * b + keep * g`` unless ``first``, ``theta -= lr * (g + momentum * b if nesterov else b)``,
    ``b`` None without momentum), one pass over the arrays with NumPy's values bit for bit. False:
    nothing was done (not one float32/float64 dtype and shape, C-contiguous, ``theta`` and ``buffer``
    writable and sharing no memory with the others), the caller runs NumPy."""
    if not _updatable(theta, grad, buffer):
        return False
    flags = ((_SGD_FIRST if first else 0) | (_SGD_NESTEROV if nesterov else 0)
             | (_SGD_KEEP if keep != 1 else 0))
    flat = [None if a is None else a.reshape(-1) for a in (theta, grad, buffer)]
    _over_elements(backends.core.module.sgd_step, theta.size, *flat,
                   tail=(float(lr), float(momentum), float(keep), flags))
    return True


#: adam_step's flags (csrc/elementwise.h).
_ADAM_MAXIMIZE, _ADAM_DECOUPLED, _ADAM_L2, _ADAM_LERP_LOW = 1, 2, 4, 8


def adam_step(theta: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
              max_exp_avg_sq: np.ndarray | None, lr: float, betas: tuple[float, float], eps: float,
              weight_decay: float, decoupled: bool, maximize: bool, step: float) -> bool:
    """One ``torch.optim.Adam`` / ``AdamW`` step (``optim.adam``'s update; ``step`` already counted)
    in place on the compiled core's workers, one pass over the arrays with NumPy's values bit for bit
    (each constant cast to the arrays' dtype as NumPy casts a Python float). False: nothing was done
    (not one float32/float64 dtype and shape, C-contiguous, the state writable, no two arrays sharing
    memory), the caller runs NumPy."""
    if not _updatable(theta, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        return False
    beta1, beta2 = betas
    w = 1 - beta1
    flags = ((_ADAM_MAXIMIZE if maximize else 0) | (_ADAM_LERP_LOW if abs(w) < 0.5 else 0)
             | ((_ADAM_DECOUPLED if decoupled else _ADAM_L2) if weight_decay != 0 else 0))
    params = (weight_decay, 1 - lr * weight_decay, w, 1 - w, beta2, 1 - beta2, (1 - beta2**step) ** 0.5, eps,
              -(lr / (1 - beta1**step)))
    flat = [None if a is None else a.reshape(-1) for a in (theta, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)]
    _over_elements(backends.core.module.adam_step, theta.size, *flat,
                   tail=(tuple(float(v) for v in params), flags))
    return True


def add(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
    """``a + b`` into ``out`` (a new C-ordered array when None) on the compiled core's workers, with
    NumPy's values (one IEEE addition per element), where that pays: ``a`` and ``b`` of one
    float32/float64 dtype and shape, C-contiguous, at least :data:`PARALLEL_CORE_MIN_SIZE` elements,
    more than one thread; ``out`` likewise and either one of them or sharing no memory with them (a
    partial overlap needs NumPy's buffering). None: nothing was done, the caller runs NumPy. (The
    residual adds of a network, MobileNetV2's at batch 8 on 2.4 MB operands, ran on one thread.)"""
    if a.size < PARALLEL_CORE_MIN_SIZE or get_num_threads() < 2 or not _flat_core(a, b):
        return None
    if out is None:
        out = np.empty_like(a, order="C")
    elif not (_flat_core(a, out) and all(out is v or not np.may_share_memory(out, v) for v in (a, b))):
        return None
    _over_elements(backends.core.module.add_arrays, a.size, a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, a new array (NaN stays NaN, as in torch)."""
    y = np.empty_like(x)
    if _flat_core(x, y):
        _over_elements(backends.core.module.relu_forward, x.size, x.reshape(-1), y.reshape(-1))
        return y
    _each(x, lambda s: maximum_zero(x[s], y[s]))
    return y


def _core_pass(kernel: Callable[..., None], *inputs: np.ndarray) -> np.ndarray:
    """``kernel(isa, *inputs, out, start, stop)`` of the compiled core over flat ranges on the workers, into
    a new array shaped as the last input (the inputs made C-contiguous)."""
    inputs = tuple(np.asarray(a, order="C") for a in inputs)  # (ascontiguousarray makes a 0-d array 1-d)
    out = np.empty_like(inputs[-1])
    _over_elements(kernel, out.size, *(a.reshape(-1) for a in inputs), out.reshape(-1))
    return out


def _core_floats(*arrays: np.ndarray) -> bool:
    """Whether the compiled logistic passes take ``arrays``: float32/float64 of one dtype and shape."""
    first = arrays[0]
    return (first.dtype in _CORE_DTYPES and backends.core.available
            and all(a.dtype == first.dtype and a.shape == first.shape for a in arrays))


def silu(x: np.ndarray) -> np.ndarray:
    """``x / (1 + exp(-x))`` (torch's SiLU: -inf gives NaN), a new array: float32/float64 on the compiled
    core's workers (NumPy's operations on the NumPy engine), float16 as ``x * expit(x)``."""
    if _core_floats(x):
        return _core_pass(backends.core.module.silu_forward, x)
    if x.dtype not in _CORE_DTYPES:
        return x * _expit(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return x / (1 + np.exp(-x))


def silu_grad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """torch's ``silu_backward``: ``g * (s * (1 + x * (1 - s)))``, ``s = sigmoid(x)`` (as :func:`sigmoid`),
    a new array: one pass on the compiled core's workers for float32/float64 operands of one dtype and
    shape, else NumPy's operations on the same formula."""
    if _core_floats(g, x):
        return _core_pass(backends.core.module.silu_backward, g, x)
    s = sigmoid(x)
    return g * (s * (1 + x * (1 - s)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in ``x``'s dtype, a new array; float32/float64 on the compiled core's workers,
    else SciPy's ``expit``."""
    if _core_floats(x):
        return _core_pass(backends.core.module.sigmoid_forward, x)
    return _expit(x)


def _expit(x: np.ndarray) -> np.ndarray:
    from scipy import special  # imported on first use: scipy.special adds ~0.3 s to `import npconv`
    return special.expit(x).astype(x.dtype, copy=False)


def _relu_grad_block(g: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    np.multiply(g, np.logical_not(y <= 0), out=out)  # 7x faster than np.where
    if not np.isfinite(out).all():  # inf * 0 would be NaN where torch gives 0
        out[...] = np.where(y <= 0, g.dtype.type(0), g)


def relu_grad(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``0 where y <= 0, else g`` (``y`` the ReLU's output; as torch's ``threshold_backward``, so a
    NaN input passes its gradient through), a new array of ``g``'s dtype."""
    out = np.empty(np.broadcast_shapes(g.shape, y.shape), g.dtype)
    if _flat_core(g, y, out):
        _over_elements(backends.core.module.relu_backward, out.size, g.reshape(-1), y.reshape(-1),
                       out.reshape(-1))
        return out
    if g.shape != y.shape:
        _relu_grad_block(g, y, out)
        return out
    _each(out, lambda s: _relu_grad_block(g[s], y[s], out[s]))
    return out


#: The activations :func:`activate_` applies: ``relu``, ``hardtanh`` (``lo``, ``hi``; ReLU6 is
#: ``hardtanh(0, 6)``) and ``silu``.
ACTIVATIONS = ("relu", "hardtanh", "silu")


class Activation(NamedTuple):
    """An activation a convolution's epilogue applies: ``kind`` one of :data:`ACTIVATIONS`, ``lo``/``hi``
    hardtanh's bounds (ReLU6: ``Activation("hardtanh", 0, 6)``)."""

    kind: str
    lo: float = 0.0
    hi: float = 0.0

    @property
    def code(self) -> int:
        """The compiled kernels' activation code: 1 relu, 2 hardtanh (``lo``, ``hi``), 3 silu (0: none)."""
        return ACTIVATIONS.index(self.kind) + 1

    @classmethod
    def of_code(cls, code: int, lo: float = 0.0, hi: float = 0.0) -> Activation:
        """The activation of a compiled kernel's code (1-3, see :attr:`code`)."""
        kind = ACTIVATIONS[code - 1]
        return cls(kind, lo, hi) if kind == "hardtanh" else cls(kind)

    def apply_(self, block: np.ndarray) -> None:
        """``block = activation(block)`` in place on the calling thread (a kernel's output block)."""
        _activate_block(block, self.kind, self.lo, self.hi)


def _activate_block(y: np.ndarray, kind: str, lo: float, hi: float) -> None:
    t = y.dtype.type
    if kind == "relu":
        maximum_zero(y, y)  # as relu: NaN stays NaN
    elif kind == "hardtanh":  # as the hardtanh op and torch: NaN and -0.0 pass
        np.clip(y, t(lo), t(hi), out=y)
    elif _core_takes(y) and y.flags.c_contiguous:  # silu as the silu op computes it (silu below)
        flat = y.reshape(-1)
        backends.core.module.silu_forward(backends.core.isa_index, flat, flat, 0, flat.size)
    else:
        y[...] = silu(y)


def activate_(y: np.ndarray, kind: str, lo: float = 0.0, hi: float = 6.0) -> np.ndarray:
    """``y = activation(y)`` in place for ``y (N, C, ...)``, runs of images over the worker threads;
    ``kind`` one of :data:`ACTIVATIONS` (``lo``/``hi``: hardtanh's bounds). Returns ``y``."""
    if kind not in ACTIVATIONS:
        raise ValueError(f"activate_: kind must be one of {ACTIVATIONS}, got {kind!r}")
    if kind in ("relu", "silu") and _flat_core(y):
        flat = y.reshape(-1)
        kernel = backends.core.module.relu_forward if kind == "relu" else backends.core.module.silu_forward
        _over_elements(kernel, y.size, flat, flat)
        return y
    if y.size < PARALLEL_MIN_SIZE:  # one block on the calling thread (what _each would run)
        _activate_block(y, kind, lo, hi)
        return y
    _each(y, lambda s: _activate_block(y[s], kind, lo, hi))
    return y


def epilogue_(y: np.ndarray, bias: np.ndarray | None, activation: Activation | None) -> np.ndarray:
    """``y = activation(y + bias[c])`` in place for ``y (N, C, ...)`` (either may be None), both in
    one pass over each run of images (while it is in cache), runs over the worker threads; returns
    ``y``. The epilogue of a convolution whose kernel does not fuse it."""
    if activation is not None and activation.kind not in ACTIVATIONS:
        raise ValueError(f"epilogue_: activation kind must be one of {ACTIVATIONS}, got {activation.kind!r}")
    column = None if bias is None else _column(np.asarray(bias), y.ndim)

    def work(s: Any) -> None:
        block = y[s]
        if column is not None:
            block += column
        if activation is not None:
            activation.apply_(block)

    if y.size:
        _each(y, work)
    return y
