"""The compiled 3-d depthwise forward (npconv._core ``depthwise3d_forward`` via kernels/compiled_depthwise)
against the float64 NumPy reference and torch, on every ISA variant this CPU runs: random geometries (any
stride, dilation and per-side padding in each axis, channel multipliers, odd sizes), grad_input where it
is a forward (stride 1, one output channel per input channel), the fused bias and activation, one and two
worker threads, non-contiguous inputs, the planner's choice and autograd end to end, the extension's
guards, and the NumPy fallback.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npconv
import reference
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import fft, plan
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation

compiled_depthwise = pytest.importorskip("npconv.kernels.compiled_depthwise",
                                         reason=f"compiled core not in use: {backends.core.reason}")

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6}


def _max_relative(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max()))) if ref.size else 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_geometries_match_the_reference(isa, parallel, dtype, data):
    c, m = data.draw(st.integers(1, 4), label="c"), data.draw(st.sampled_from([1, 1, 2, 3]), label="m")
    kernel = tuple(data.draw(st.integers(1, 4)) for _ in range(3))
    stride = tuple(data.draw(st.sampled_from([1, 1, 2, 3])) for _ in range(3))
    dilation = tuple(data.draw(st.sampled_from([1, 1, 2])) for _ in range(3))
    padding = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in range(3))
    size = tuple(data.draw(st.integers(max(1, (k - 1) * d + 1 - lo - hi), 12 if i else 7))
                 for i, (k, d, (lo, hi)) in enumerate(zip(kernel, dilation, padding, strict=True)))
    n = data.draw(st.integers(1, 3), label="n")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    contiguous, bias = data.draw(st.booleans(), label="contiguous"), data.draw(st.booleans(), label="bias")
    rng = np.random.default_rng(seed)
    geom = ConvGeometry.create(kernel, stride, padding, dilation, c, ndim=3)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    if not contiguous:
        x = np.asfortranarray(x)
    w = rng.standard_normal((c * m, 1) + kernel).astype(dtype)
    b = rng.standard_normal(c * m).astype(dtype) if bias else None
    assert compiled_depthwise.supports("forward", x.shape, w.shape, geom, np.dtype(dtype))
    y = compiled_depthwise.forward(x, w, geom, bias=b)
    gy = rng.standard_normal(y.shape).astype(dtype)
    padded = geom.with_padding(geom.pads(size))
    wide = (a.astype(np.float64) for a in (x, w, gy))
    y_ref, gx_ref, _ = reference.conv_passes(*wide, padded)
    if bias:
        y_ref = y_ref + b.reshape(-1, 1, 1, 1)
    what = f"{n=} {c=} {m=} {kernel=} {stride=} {dilation=} {padding=} {size=} {dtype=}"
    assert y.shape == y_ref.shape and y.dtype == dtype, what
    assert _max_relative(y, y_ref) <= TOL[np.dtype(dtype)], (what, _max_relative(y, y_ref))
    gx = compiled_depthwise.grad_input(gy, w, geom, size)  # the C forward where it is one, else NumPy
    assert _max_relative(gx, gx_ref) <= TOL[np.dtype(dtype)], (what, "grad_input")


def test_grad_input_runs_on_the_c_forward_only_where_it_is_one():
    x = (2, 4, 5, 9, 9)
    ok = ConvGeometry.create((3, 3, 3), 1, 1, 1, 4, ndim=3)
    assert compiled_depthwise._in_c3("grad_input", x, (4, 1, 3, 3, 3), ok)
    assert not compiled_depthwise._in_c3("grad_input", x, (8, 1, 3, 3, 3), ok)  # a channel multiplier
    strided = ConvGeometry.create((3, 3, 3), (1, 2, 1), 1, 1, 4, ndim=3)
    assert not compiled_depthwise._in_c3("grad_input", x, (4, 1, 3, 3, 3), strided)
    assert compiled_depthwise._in_c3("forward", x, (8, 1, 3, 3, 3), strided)
    assert not compiled_depthwise._in_c3("grad_weight", x, (4, 1, 3, 3, 3), ok)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_epilogue_is_fused_after_the_bias(isa, dtype):
    rng = np.random.default_rng(4)
    geom = ConvGeometry.create((3, 3, 3), (1, 2, 1), ((1, 1), (2, 0), (0, 1)), 1, 3, ndim=3)
    x = rng.standard_normal((2, 3, 4, 9, 6)).astype(dtype)
    w = rng.standard_normal((6, 1, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    ref = reference.conv_passes(x.astype(np.float64), w.astype(np.float64),
                                np.zeros((2, 6) + geom.output_size((4, 9, 6))),
                                geom.with_padding(geom.pads((4, 9, 6))))[0] + b.reshape(-1, 1, 1, 1)
    for activation, expect in ((Activation("relu"), np.maximum(ref, 0)),
                               (Activation("hardtanh", -0.5, 0.75), np.clip(ref, -0.5, 0.75))):
        y = compiled_depthwise.forward(x, w, geom, epilogue=Epilogue(b, activation))
        assert np.abs(y - expect).max() <= TOL[np.dtype(dtype)] * np.abs(ref).max()


def test_matches_torch_through_the_planner_and_autograd(torch, isa):
    """``npconv.nn.functional.conv3d`` with ``groups = C``: the planner runs forward and grad_input on the
    compiled depthwise (the NumPy grad_weight), torch's output and every gradient."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 6, 14, 15)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    geom = ConvGeometry.create((3, 3, 3), 1, 1, 1, 8, ndim=3)
    for pass_name in ("forward", "grad_input"):
        assert plan.choose(pass_name, x.shape, w.shape, geom, np.float32) == "depthwise", pass_name
        assert compiled_depthwise.recommended(pass_name, x.shape, w.shape, geom, np.float32)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv3d(tx, tw, tb, padding=1, groups=8)
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(gy))
    nx, nw, nb = (npconv.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ny = npconv.nn.functional.conv3d(nx, nw, nb, padding=1, groups=8)
    ny.backward(npconv.from_numpy(gy))
    for got, want in ((ny, ty), (nx.grad, tx.grad), (nw.grad, tw.grad), (nb.grad, tb.grad)):
        assert _max_relative(got.numpy(), want.detach().numpy()) <= 5e-6


def test_the_rule_takes_kernels_up_to_7x7x7_from_the_fft():
    """fft.direct_kernel_wins (the FFT's and the depthwise kernel's one rule): 3-d depthwise forward and
    grad_input (where it is a forward) up to DEPTHWISE3D_MAX_TAPS taps on the compiled kernel."""
    x = (1, 4, 9, 16, 16)
    geom = ConvGeometry.create((5, 5, 5), 1, 2, 1, 4, ndim=3)
    for pass_name in ("forward", "grad_input"):
        assert fft.direct_kernel_wins(pass_name, (4, 1, 5, 5, 5), geom)
        assert plan.choose(pass_name, x, (4, 1, 5, 5, 5), geom, np.float32) == "depthwise"
    assert not fft.direct_kernel_wins("grad_weight", (4, 1, 5, 5, 5), geom)
    assert not fft.direct_kernel_wins("grad_input", (8, 1, 5, 5, 5), geom)  # a channel multiplier
    geom7 = ConvGeometry.create((7, 7, 7), 1, 3, 1, 4, ndim=3)
    assert compiled_depthwise.recommended("forward", x, (4, 1, 7, 7, 7), geom7, np.float32)
    big = ConvGeometry.create((9, 9, 9), 1, 4, 1, 4, ndim=3)
    assert not compiled_depthwise.recommended("forward", x, (4, 1, 9, 9, 9), big, np.float32)
    assert plan.choose("forward", x, (4, 1, 9, 9, 9), big, np.float32) == "fft"


def test_beyond_the_kernels_limits_the_numpy_implementation_runs_it(monkeypatch):
    def declines(geometry, depth):
        raise ValueError("depth: the slices' scratch or the taps too large for the compiled kernel")

    monkeypatch.setattr(backends.core.module, "depthwise3d_scratch", declines)
    rng = np.random.default_rng(9)
    geom = ConvGeometry.create((3, 3, 3), 1, 1, 1, 3, ndim=3)
    x, w = rng.standard_normal((1, 3, 4, 6, 5)), rng.standard_normal((3, 1, 3, 3, 3))
    b = rng.standard_normal(3)
    assert not compiled_depthwise._in_c3("forward", x.shape, w.shape, geom)
    y = compiled_depthwise.forward(x, w, geom, epilogue=Epilogue(b, Activation("relu")))
    ref = reference.conv_passes(x, w, np.zeros_like(y), geom.with_padding(geom.pads((4, 6, 5))))[0]
    np.testing.assert_allclose(y, np.maximum(ref + b.reshape(-1, 1, 1, 1), 0), rtol=0, atol=1e-12)


def test_the_extension_checks_its_arguments():
    core = backends.core.module
    geometry = (1, 2, 1, 5, 6, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1)
    depth = (4, 4, 3, 1, 1, 1)
    size = core.depthwise3d_scratch(geometry, depth)
    f = np.float64
    y = np.full((1, 2, 4, 5, 6), 7.0)
    args = [backends.core.isa_index, np.ones((1, 2, 4, 5, 6), f), np.ones((2, 1, 3, 3, 3), f), None, y,
            np.empty(size, f), geometry, depth, 0, 2]
    core.depthwise3d_forward(*args)
    assert (y[:, :, 1:3, 1:4, 1:5] == 27.0).all()
    y[...] = 7.0
    bad = [
        (ValueError, 1, np.ones((1, 2, 3, 5, 6), f)),
        (ValueError, 2, np.ones((2, 1, 3, 3, 2), f)),
        (ValueError, 4, np.zeros((1, 2, 3, 5, 6), f)),
        (ValueError, 5, np.empty(size - 1, f)),
        (ValueError, 7, (4, 4, 3, 0, 1, 1)),
        (ValueError, 7, (4, 4, 3, 1, 1, -1)),
        (TypeError, 7, (4, 4, 3)),
        (ValueError, 9, 3),
        (TypeError, 2, np.ones((2, 1, 3, 3, 3), np.float32)),
    ]
    for error, index, value in bad:
        changed = list(args)
        changed[index] = value
        with pytest.raises(error):
            core.depthwise3d_forward(*changed)
        assert (y == 7.0).all()
