"""torch-free checks shared by the tests: adjointness of the three kernel passes, finite-difference
gradients, relative error, and a hypothesis draw of an N-d convolution geometry."""

from __future__ import annotations

from types import ModuleType

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
