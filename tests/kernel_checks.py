"""torch-free checks shared by the tests: adjointness of the three kernel passes, finite-difference
gradients, relative error, a hypothesis draw of an N-d convolution geometry, the compiled gemm's
tilings, and a check run in a child forked while a lock is held."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from hypothesis import strategies as st

import npconv


def draw_geometry(data, nd: int, max_kernel: int, max_dilation: int, extra: int):
    """``(kernel, stride, dilation, padding, size)`` of an N-d convolution drawn from ``data``:
    kernel taps ``1..max_kernel``, stride ``1..3``, dilation ``1..max_dilation``, per-side padding
    ``0..3``, and an input at least one output long and at most ``extra`` beyond the extent."""
    kernel = tuple(data.draw(st.lists(st.integers(1, max_kernel), min_size=nd, max_size=nd)))
    stride = tuple(data.draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    dilation = tuple(data.draw(st.lists(st.integers(1, max_dilation), min_size=nd, max_size=nd)))
    padding = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in range(nd))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = tuple(data.draw(st.integers(max(1, e - lo - hi), e + extra))
                 for e, (lo, hi) in zip(extent, padding, strict=True))
    return kernel, stride, dilation, padding, size


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """Norm-relative error ``|actual - reference| / |reference|``."""
    return float(np.linalg.norm(actual - reference) / np.linalg.norm(reference))


def assert_passes_are_adjoint(kernel: ModuleType, x: np.ndarray, w: np.ndarray, geom, rng,
                              weight_pass: bool = True) -> None:
    """``<forward(x, w), gy> == <x, grad_input(gy, w)> (== <w, grad_weight(x, gy)>)`` to rounding."""
    y = kernel.forward(x, w, geom)
    gy = rng.standard_normal(y.shape)
    lhs = np.vdot(y, gy)
    assert np.isclose(lhs, np.vdot(x, kernel.grad_input(gy, w, geom, x.shape[2:])), rtol=1e-12)
    if weight_pass:
        assert np.isclose(lhs, np.vdot(w, kernel.grad_weight(x, gy, geom)), rtol=1e-12)


def direct_conv(x: np.ndarray, w: np.ndarray, stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
    """NumPy reference cross-correlation ``y[n, o, i] = sum_{c, k} w[o, c, k] xp[n, g*Cg + c, i*s + k*d]``
    (``x (N, C, *in)``, ``w (O, C/groups, *k)``, symmetric int or per-dimension zero padding)."""
    nd = x.ndim - 2

    def per_dim(v):
        return (v,) * nd if np.isscalar(v) else tuple(v)

    stride, padding, dilation = per_dim(stride), per_dim(padding), per_dim(dilation)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    extent = [d * (k - 1) + 1 for k, d in zip(w.shape[2:], dilation, strict=True)]
    view = np.lib.stride_tricks.sliding_window_view(xp, extent, axis=tuple(range(2, 2 + nd)))
    view = view[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
                + tuple(slice(None, None, d) for d in dilation)]  # (N, C, *out, *k)
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    og = o // groups
    out = view.shape[2:2 + nd]
    windows = view.reshape((n, groups, cg) + out + (-1,))
    weights = w.reshape(groups, og, cg, -1)
    y = np.einsum("ngc...k,gock->ngo...", windows, weights)
    return y.reshape((n, o) + out)


def npconv_grads(fn, arrays: dict, gy: np.ndarray | None = None, seed: int = 0):
    """Output of ``fn(**tensors)``, the upstream gradient ``gy`` (random from ``seed`` unless given)
    and the gradients of ``<y, gy>`` with respect to every array."""
    tensors = {k: npconv.tensor(v, requires_grad=True) for k, v in arrays.items()}
    y = fn(**tensors)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    y.backward(gy)
    return y, gy, {k: t.grad.numpy() for k, t in tensors.items()}


def check_finite_differences(fn, arrays: dict, seed: int = 0, eps: float = 1e-6) -> None:
    """Analytic directional derivatives of ``<fn(**arrays), r>`` equal central differences (float64)."""
    rng = np.random.default_rng(seed)
    _, gy, grads = npconv_grads(fn, arrays, seed=seed)
    for name, value in arrays.items():
        direction = rng.standard_normal(value.shape)

        def loss(delta, name=name, direction=direction):
            return float(np.sum(fn(**dict(arrays, **{name: arrays[name] + delta * direction})).numpy() * gy))

        numeric = (loss(eps) - loss(-eps)) / (2 * eps)
        analytic = float(np.sum(grads[name] * direction))
        assert np.isclose(analytic, numeric, rtol=1e-7, atol=1e-7 * max(1.0, np.abs(gy).sum())), (
            f"d/d{name}: analytic {analytic} vs finite differences {numeric}")


#: module settings per tiling: the default (float32 stride-1 forwards on the vector builds run as the
#: implicit GEMM, grad_weight too on images of >= 512 positions), im2col with one output position (or
#: row) per item, chunks of whole images, bands of positions without the row shift, and the implicit
#: GEMM on any padded grid and for grad_weight of any size, with whole images or one output line
#: (3-d: plane) per item
_IM2COL_TINY = {"IMPLICIT": False, "TILE_BYTES": 1, "MIN_BAND": 1, "CHUNK_BYTES": 0, "ROW_SHIFT": True,
                "SHIFT_MIN_SAVING": 0, "SHIFT_TILE_BYTES": 1, "SHIFT_HALO_RATIO": 0}
#: (the default and "chunks" keep the rule for stride-1 grad_input: col2im on these small inputs;
#: "image-chunks" runs every grad_input as GEMM + col2im over chunks of whole images, "channel-split"
#: over all images with the input channels split across every worker, "tiny" and "positions" one image
#: at a time; the others run it as the adjoint's forward wherever it may)
GEMM_TILINGS = {
    "default": {},
    "tiny": {**_IM2COL_TINY, "ADJOINT_MIN_POSITIONS": 0, "GI_IMAGE_COLUMNS": 0},
    "chunks": {**_IM2COL_TINY, "CHUNK_BYTES": 1 << 30},
    "positions": {**_IM2COL_TINY, "TILE_BYTES": 64, "MIN_BAND": 3, "ROW_SHIFT": False,
                  "ADJOINT_MIN_POSITIONS": 0, "GI_IMAGE_COLUMNS": 0},
    "image-chunks": {**_IM2COL_TINY, "ADJOINT_MIN_POSITIONS": 1 << 62, "GI_IMAGE_COLUMNS": 1 << 62},
    "channel-split": {**_IM2COL_TINY, "ADJOINT_MIN_POSITIONS": 1 << 62, "GI_CHANNEL_SPLIT": 0,
                      "WORKER_MIN_MACS": 0},
    "implicit": {"IMPLICIT_GW_MIN_POSITIONS": 0, "IMPLICIT_MIN_POSITIONS": 0,
                 "IMPLICIT_MIN_POSITIONS_BATCH": 0, "IMPLICIT_MAX_GRID": 1e9, "ADJOINT_MIN_POSITIONS": 0},
    "implicit-lines": {"IMPLICIT_SLAB_BYTES": 1, "SHIFT_HALO_RATIO": 0, "IMPLICIT_GW_MIN_POSITIONS": 0,
                       "IMPLICIT_MIN_POSITIONS": 0, "IMPLICIT_MIN_POSITIONS_BATCH": 0,
                       "IMPLICIT_MAX_GRID": 1e9, "ADJOINT_MIN_POSITIONS": 0},
    # the direct lanes forward of strided float32 1-d/2-d layers (its images or output rows split) and
    # with the output channels in one part per worker
    "direct": {"DIRECT_ISAS": ("avx2", "avx512"), "DIRECT_MAX_GROUP_CHANNELS": {},
               "DIRECT_MIN_DEPTH": 0, "DIRECT_MIN_POSITIONS": 0, "DIRECT_MAX_WEIGHT_PER_POSITION": 1e30,
               "DIRECT_PARTS_MIN_RATIO": 1e30},
    "direct-parts": {"DIRECT_ISAS": ("avx2", "avx512"), "DIRECT_MAX_GROUP_CHANNELS": {},
                     "DIRECT_MIN_DEPTH": 0,
                     "DIRECT_MIN_POSITIONS": 0, "DIRECT_MAX_WEIGHT_PER_POSITION": 1e30,
                     "DIRECT_PARTS_MIN_RATIO": 0, "WORKER_MIN_MACS": 0},
}


def gemm_tiling(monkeypatch, name: str) -> None:
    """The compiled gemm's settings of tiling ``name`` of :data:`GEMM_TILINGS`, for the test."""
    from npconv.kernels import compiled_gemm  # the compiled core's: only where it is in use

    for attr, value in GEMM_TILINGS[name].items():
        monkeypatch.setattr(compiled_gemm, attr, value)


def record_blas_threads(monkeypatch) -> list[int]:
    """The thread counts ``workspace.blas_threads`` is entered with from now on (it then does nothing):
    whether a kernel call sets the BLAS libraries' thread counts."""
    import contextlib

    from npconv.kernels import workspace

    entered: list[int] = []

    @contextlib.contextmanager
    def recording(n):
        entered.append(n)
        yield

    monkeypatch.setattr(workspace, "blas_threads", recording)
    return entered


def forked_check(lock: Any, check: Callable[[], bool]) -> bool:
    """Whether ``check()`` is true in a child forked while ``lock`` is held (as if another thread of the
    parent held it at the fork); the child leaves at once."""
    read, write = os.pipe()
    with lock:
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                ok = bool(check())
            finally:
                os.write(write, b"1" if ok else b"0")
                os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    result = os.read(read, 1) == b"1"
    os.close(read)
    return result
