"""Kernel pieces shared by the algorithms: window views, the adjoint (flipped) kernel, the stride-1
grad_input as a forward pass, and the bias epilogue.

* :func:`windows` ``(N, C, *out, *k)`` strided view of every kernel window of a padded input;
* :func:`adjoint_kernel` ``w (O, Cg, *k)`` -> ``(C, Og, *k)``, flipped: the kernel of ``conv^T``;
* :func:`grad_input_as_forward` stride-1 ``gx = forward(gy[crop], adjoint_kernel(w), adjoint geometry)``
  (:meth:`~npconv.geometry.ConvGeometry.stride1_adjoint`);
* :func:`add_to_channels` ``block[o, ...] += b[o]``, the bias epilogue an algorithm applies to an
  output block while it is in cache (for the passes in its ``bias_passes``);
* :class:`Epilogue` ``block = activation(block + bias[o])``: what the planner hands an algorithm for
  the passes in its ``epilogue_passes`` (bias and activation applied to each output block in cache);
* :func:`compiled_epilogue` splits an ``epilogue=`` into the bias and the activation a compiled
  kernel applies in its stores and the activation left for afterwards;
* :func:`add_bias` ``y[n, o, ...] += b[o]`` over the worker threads (the planner's epilogue for
  algorithms that do not fuse it); :func:`bias_grad` ``gb[o] = sum_{n, ...} gy[n, o, ...]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import backends
from ..backends import get_num_threads
from ..geometry import ConvGeometry
from . import workspace
from .pointwise import Activation, epilogue_

__all__ = ["windows", "adjoint_kernel", "grad_input_as_forward", "add_to_channels", "Epilogue",
           "PreparedForward", "ScratchSource", "fixed_operand", "check_bound", "bound_run",
           "COMPILED_ACTIVATIONS", "compiled_epilogue", "fused_residual_codes", "add_bias", "bias_grad"]


def windows(xp: np.ndarray, geom: ConvGeometry, out_size: Sequence[int], lead: int = 2) -> np.ndarray:
    """Read-only strided view ``(*lead axes, *out, *k)`` of the kernel windows of the padded ``xp``
    (``lead`` non-spatial axes first, e.g. ``(N, C)``): ``view[..., o, k] = xp[..., o*s + k*d]``."""
    spatial = xp.shape[lead:]
    for m, s, e, n in zip(out_size, geom.stride, geom.extent, spatial, strict=True):
        if m > 0 and (m - 1) * s + e > n:
            raise ValueError(f"windows: {tuple(out_size)} outputs of extent {geom.extent} and stride "
                             f"{geom.stride} do not fit a padded input of {tuple(spatial)}")
    inner = xp.strides[lead:]
    shape = xp.shape[:lead] + tuple(out_size) + geom.kernel_size
    strides = (xp.strides[:lead] + tuple(st * s for st, s in zip(inner, geom.stride, strict=True))
               + tuple(st * d for st, d in zip(inner, geom.dilation, strict=True)))
    return as_strided(xp, shape, strides, writeable=False)


def adjoint_kernel(w: np.ndarray, groups: int, compiled: bool = False) -> np.ndarray:
    """``w (O, Cg, *k)`` -> contiguous ``(C, Og, *k)`` with every kernel flipped: ``w'[g, c, o] =
    flip(w[g, o, c])``, the kernel whose forward correlation is the adjoint of ``w``'s. ``compiled``
    (the compiled algorithms): the core's tiled copy for float32/float64 (NumPy's strided copy of
    a 512x512x3x3 weight took 1.75 ms)."""
    o, cg = w.shape[:2]
    k = w.shape[2:]
    if compiled and w.size and w.dtype in (np.float32, np.float64) and backends.core.available:
        out = np.empty((groups * cg, o // groups) + k, w.dtype)
        backends.core.module.adjoint_kernel(np.ascontiguousarray(w), out, groups, o // groups, cg,
                                            math.prod(k))
        return out
    wg = w.reshape((groups, o // groups, cg) + k).swapaxes(1, 2)
    flipped = wg[(Ellipsis,) + (slice(None, None, -1),) * len(k)]
    return np.ascontiguousarray(flipped).reshape((groups * cg, o // groups) + k)


def grad_input_as_forward(forward: Callable[..., np.ndarray], gy: np.ndarray, w: np.ndarray,
                          geom: ConvGeometry, input_size: Sequence[int],
                          bias: np.ndarray | None = None, compiled: bool = False) -> np.ndarray:
    """Stride-1 ``gx (N, C, *input_size) (+ bias[c])`` as ``forward`` of ``gy`` with the adjoint
    kernel (``compiled`` as in :func:`adjoint_kernel`) and geometry (the full correlation;
    ``forward(x, w, geom, bias=None)``)."""
    adjoint, crop = geom.stride1_adjoint(tuple(input_size), gy.shape[2:])
    return forward(gy[(slice(None), slice(None)) + crop], adjoint_kernel(w, geom.groups, compiled), adjoint,
                   bias)


def add_to_channels(block: np.ndarray, bias: np.ndarray | None) -> None:
    """``block (O_block, *rest) += bias (O_block,)`` in place (``bias`` broadcast over the trailing
    axes; it may also be pre-shaped to broadcast); nothing when ``bias`` is None."""
    if bias is not None:
        bias = np.asarray(bias)
        if bias.ndim == 1:
            bias = bias.reshape((-1,) + (1,) * (block.ndim - 1))
        block += bias


#: Where a bound run (:attr:`PreparedForward.bind`) gets worker scratch: ``source(name, elements, dtype)``
#: returns an array of ``elements`` values the caller owns (not a thread cache's buffer: any thread may
#: run the bound call).
ScratchSource = Callable[[str, int, np.dtype], np.ndarray]


class PreparedForward(NamedTuple):
    """An algorithm's forward planned for one input shape and dtype, its weight and epilogue fixed
    (``prepare_forward`` of the algorithm contract): ``run(x) -> y`` does only the call's work. It
    reads the weight and bias arrays it was given when it runs (changes made to them in place count;
    a weight layout the kernel needs is made per call). ``tokens``: functions whose results must still
    equal ``planned`` (one value each) for the plan to hold (the settings it was made with).

    ``bind(x, y, scratch) -> run()`` (None where the algorithm has none): the forward of the fixed
    arrays ``x`` (C-contiguous, the planned shape and dtype) into ``y`` (C-contiguous, the output's
    shape and dtype) prepared once, its kernel calls made ahead with worker scratch from ``scratch``
    (a :data:`ScratchSource`); each ``run()`` computes what ``run(x)`` returns, into ``y``, while the
    plan holds and the weight and bias arrays are the same objects.

    ``bind_residual(x, y, scratch, residual, activation) -> run()`` (None where the algorithm has none;
    only for a plan without an activation of its own): as ``bind``, then ``y = activation(y +
    residual)`` (``residual`` C-contiguous, laid out as ``y``, sharing no memory with it;
    ``activation`` None or one its kernel applies), each part of ``y`` while it is in cache: the values
    of the addition and activation run after ``run()``, bit for bit.
    """

    run: Callable[[np.ndarray], np.ndarray]
    tokens: tuple[Callable[[], tuple], ...] = ()
    planned: tuple = ()
    bind: Callable[[np.ndarray, np.ndarray, ScratchSource], Callable[[], None]] | None = None
    bind_residual: Callable[..., Callable[[], None]] | None = None

    def valid(self) -> bool:
        for token, planned in zip(self.tokens, self.planned, strict=True):
            if token() != planned:
                return False
        return True


def fixed_operand(array: np.ndarray, dtype: np.dtype,
                  layout: Callable[[np.ndarray], np.ndarray] | None = None
                  ) -> tuple[np.ndarray, Callable[[], None] | None]:
    """``(operand, refill)`` of an array a bound run reads (:attr:`PreparedForward.bind`): ``array``
    itself where it is C-contiguous in ``dtype`` and needs no ``layout`` (a view function), else a copy
    and the ``refill()`` that copies ``array``'s current values into it before each run."""
    view = (lambda: array) if layout is None else (lambda: layout(array))
    if layout is None and array.dtype == dtype and array.flags.c_contiguous:
        return array, None
    operand = np.empty(view().shape, dtype)

    def refill() -> None:
        np.copyto(operand, view(), casting="unsafe")

    refill()
    return operand, refill


def check_bound(x: np.ndarray, x_shape: tuple[int, ...], y: np.ndarray, y_shape: tuple[int, ...],
                dtype: np.dtype, residual: np.ndarray | None = None) -> None:
    """A bound run's arrays (:attr:`~npconv.kernels.common.PreparedForward.bind`) as its plan needs them."""
    arrays = [("x", x, x_shape), ("y", y, y_shape)]
    if residual is not None:
        arrays.append(("residual", residual, y_shape))
    for name, array, shape in arrays:
        if array.shape != shape or array.dtype != dtype or not array.flags.c_contiguous:
            layout = "" if array.flags.c_contiguous else " (not contiguous)"
            raise ValueError(f"bind: {name} must be a C-contiguous {dtype} array of shape {shape}, got "
                             f"{array.dtype} {array.shape}{layout}")
    if residual is not None and np.may_share_memory(residual, y):
        raise ValueError("bind: the residual must not share memory with y")


def bound_run(x: np.ndarray, x_shape: tuple[int, ...], y: np.ndarray, y_shape: tuple[int, ...],
              dtype: np.dtype, w: np.ndarray, bias: np.ndarray | None,
              jobs_of: Callable[[np.ndarray, np.ndarray | None], Callable[[], None]],
              later: Activation | None = None,
              layout: Callable[[np.ndarray], np.ndarray] | None = None,
              residual: np.ndarray | None = None) -> Callable[[], None]:
    """The ``run()`` a :attr:`PreparedForward.bind` (or ``bind_residual``) returns: ``x``, ``y`` and
    ``residual`` checked (:func:`check_bound`), the weight (in ``layout``) and bias as
    :func:`fixed_operand` s, the kernel jobs ``jobs_of(weight, bias)`` makes on them run, then ``later``
    (an activation the kernel does not apply) in place on ``y``."""
    check_bound(x, x_shape, y, y_shape, dtype, residual)
    wc, refill_w = fixed_operand(w, dtype, layout)
    b, refill_b = (None, None) if bias is None else fixed_operand(bias, dtype)
    jobs = jobs_of(wc, b)
    refills = [r for r in (refill_w, refill_b) if r is not None]

    def run() -> None:
        for refill in refills:
            refill()
        jobs()
        if later is not None:
            epilogue_(y, None, later)

    return run


class Epilogue(NamedTuple):
    """The output epilogue of a convolution pass: ``out = activation(out + bias[o])``.

    ``bias`` ``(O,)`` or None; ``activation`` a :class:`~npconv.kernels.pointwise.Activation` or None
    (its ``code``, ``lo`` and ``hi`` are what a compiled kernel takes). An algorithm that lists a pass
    in ``epilogue_passes`` receives ``epilogue=`` for it and calls :meth:`apply_` on each output block
    while that is in cache (or does the same in its compiled loop).
    """

    bias: np.ndarray | None = None
    activation: Activation | None = None

    def apply_(self, block: np.ndarray) -> None:
        """``block (O_block, *rest) = activation(block + bias)`` in place (``bias`` as in
        :func:`add_to_channels`: ``(O_block,)`` or pre-shaped to broadcast)."""
        add_to_channels(block, self.bias)
        if self.activation is not None:
            self.activation.apply_(block)


#: Activations the compiled kernels apply in their stores (by ``Activation.code``: 1 ReLU, 2 Hardtanh
#: with ``lo``/``hi``, 3 SiLU with the silu op's arithmetic); the NumPy kernels apply theirs after.
COMPILED_ACTIVATIONS = ("relu", "hardtanh", "silu")


def compiled_epilogue(bias: np.ndarray | None, epilogue: Epilogue | None
                      ) -> tuple[np.ndarray | None, Activation | None, Activation | None]:
    """``(bias, activation for the kernel's stores, activation for afterwards)`` of a pass's ``bias=``
    or ``epilogue=`` (at most one of the two activations is set)."""
    if epilogue is None:
        return bias, None, None
    activation = epilogue.activation
    if activation is None or activation.kind in COMPILED_ACTIVATIONS:
        return epilogue.bias, activation, None
    return epilogue.bias, None, activation


def fused_residual_codes(codes: tuple[int, float, float], later: Activation | None,
                         residual: np.ndarray | None,
                         activation: Activation | None) -> tuple[int, float, float]:
    """The C kernel's ``(act, lo, hi)`` for a ``bind_residual``: the plan's own ``codes`` without a
    residual; with one, the addition's ``activation`` (applied after the addition), which must be one
    the kernel applies (:data:`COMPILED_ACTIVATIONS`) or None, for a plan without an activation of its
    own (``codes``' and ``later``: the kernel would apply it before the addition)."""
    if residual is None:
        if activation is not None:
            raise ValueError("bind_residual: an activation needs a residual")
        return codes
    _, now, after = compiled_epilogue(None, Epilogue(None, activation))
    if codes[0] or later is not None or after is not None:
        raise ValueError("bind_residual: a plan without an activation of its own and an activation "
                         f"the kernel applies ({', '.join(COMPILED_ACTIVATIONS)}) or None")
    return (0, 0.0, 0.0) if now is None else (now.code, float(now.lo), float(now.hi))


def add_bias(y: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``y (N, O, *out) += bias (O,)`` in place, images spread over the worker threads; returns ``y``."""
    if bias is None or y.size == 0:
        return y
    workspace.run(list(range(y.shape[0])), lambda _, i: add_to_channels(y[i], bias), get_num_threads())
    return y


def bias_grad(gy: np.ndarray) -> np.ndarray:
    """``gb (O,) = gy (N, O, *out)`` summed over images and positions (per-worker partial sums over a
    fixed assignment of images: the same result on every run with the same thread count)."""
    n, o = gy.shape[:2]
    threads = max(1, min(get_num_threads(), n))
    acc = np.promote_types(gy.dtype, np.float32)  # float16 sums overflow
    partial = np.zeros((threads, o), acc)

    def work(worker: int, i: int) -> None:
        partial[worker] += gy[i].reshape(o, -1).sum(axis=1, dtype=acc)

    workspace.run(list(range(n)), work, threads)
    return partial.sum(axis=0).astype(gy.dtype, copy=False)
