"""Bias: the fused ``bias=`` of every algorithm's forward and grad_input against torch + bias, on each
code path (row shift, strided columns, col2im, 1x1 batched and tiled, grouped, 1-d/3-d, depthwise
flat/strided/multiplier, Winograd exact/partial tiles), and the planner's fallback and bias gradient."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import reference
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import common as bias_kernels
from npconv.kernels import depthwise, gemm, plan, winograd
from torch_oracle import assert_close, conv_geom

# name: (algorithm, x_shape, out_channels, kernel, stride, padding, groups)
CASES = {
    "gemm 3x3 row shift": (gemm, (2, 4, 7, 6), 5, 3, 1, 1, 1),
    "gemm strided / col2im": (gemm, (2, 4, 9, 8), 6, 3, 2, 1, 1),
    "gemm 1x1 direct": (gemm, (3, 6, 5, 7), 4, 1, 1, 0, 1),
    "gemm grouped": (gemm, (2, 6, 6, 5), 9, 3, 1, 1, 3),
    "gemm 1-d": (gemm, (2, 3, 11), 4, 3, 1, 1, 1),
    "gemm 3-d": (gemm, (2, 2, 4, 5, 4), 3, 3, 1, 1, 1),
    "depthwise stride 1": (depthwise, (2, 4, 7, 6), 4, 3, 1, 1, 4),
    "depthwise multiplier 2": (depthwise, (2, 3, 6, 7), 6, 3, 1, 1, 3),
    "depthwise strided": (depthwise, (2, 4, 9, 8), 4, 3, 2, 1, 4),
    "depthwise strided multiplier 2": (depthwise, (2, 3, 9, 8), 6, 3, 2, 1, 3),
    "winograd exact tiles": (winograd, (2, 4, 8, 8), 5, 3, 1, 1, 1),
    "winograd partial tiles": (winograd, (2, 4, 7, 9), 5, 3, 1, 1, 1),
    "winograd grouped": (winograd, (2, 4, 6, 6), 4, 3, 1, 1, 2),
}


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    previous = npconv.get_num_threads()
    npconv.set_num_threads(request.param)
    yield request.param
    npconv.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CASES))
def test_fused_bias_matches_the_reference(name, dtype, threads):
    module, x_shape, out_channels, kernel, stride, padding, groups = CASES[name]
    assert set(module.BIAS_PASSES) == {"forward", "grad_input"}
    rng = np.random.default_rng(len(name))
    geom = conv_geom(kernel, stride, padding, 1, groups, x_shape[2:])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((out_channels, x_shape[1] // groups) + geom.kernel_size).astype(dtype)
    gy = rng.standard_normal((x_shape[0], out_channels) + geom.output_size(x_shape[2:])).astype(dtype)
    for pass_name in ("forward", "grad_input"):
        assert module.supports(pass_name, x.shape, w.shape, geom, x.dtype), pass_name
    b_out = rng.standard_normal(out_channels).astype(dtype)
    b_in = rng.standard_normal(x_shape[1]).astype(dtype)
    y_ref, gx_ref, _ = reference.conv_passes(x, w, gy, geom)
    spread = (1,) * geom.ndim
    y = module.forward(x, w, geom, bias=b_out)
    gx = module.grad_input(gy, w, geom, x_shape[2:], bias=b_in)
    assert_close(y, y_ref + b_out.reshape((-1,) + spread), what="forward + bias")
    assert_close(gx, gx_ref + b_in.reshape((-1,) + spread), what="grad_input + bias")


def test_gemm_bias_without_input_channels():
    """No input channels: the output is the bias alone."""
    geom = ConvGeometry.create((3,), 1, 1).with_padding(1)
    b = np.array([1.0, -2.0, 3.0])
    y = gemm.forward(np.zeros((2, 0, 5)), np.zeros((3, 0, 3)), geom, bias=b)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None], (2, 3, 5)))


def test_planner_adds_bias_for_algorithms_without_bias_passes(monkeypatch):
    """An algorithm without ``BIAS_PASSES`` gets no ``bias=``; the planner adds it afterwards."""
    calls = []

    def forward_without_bias(x, w, geom):
        calls.append("called")
        return np.zeros((x.shape[0], w.shape[0], 4))

    active = registry.available()["gemm"].module  # the compiled variant where the core is in use
    monkeypatch.setattr(active, "BIAS_PASSES", ())
    monkeypatch.setattr(active, "forward", forward_without_bias)
    geom = ConvGeometry.create((3,), 1, 1).with_padding(1)
    with npconv.backends.conv.force("gemm"):
        y = plan.forward(np.ones((2, 1, 4)), np.ones((3, 1, 3)), geom, bias=np.array([1.0, 2.0, 3.0]))
    assert calls == ["called"]
    np.testing.assert_array_equal(y, np.broadcast_to(np.array([1.0, 2.0, 3.0])[None, :, None], (2, 3, 4)))


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (1, 2, 7), (0, 3, 4), (5, 3)])
def test_bias_grad_and_add_bias(shape, threads):
    rng = np.random.default_rng(0)
    g = rng.standard_normal(shape)
    np.testing.assert_allclose(bias_kernels.bias_grad(g), g.sum(axis=(0,) + tuple(range(2, g.ndim))),
                               rtol=1e-12, atol=1e-12)
    b = rng.standard_normal(shape[1])
    y = g.copy()
    assert bias_kernels.add_bias(y, b) is y
    np.testing.assert_array_equal(y, g + b.reshape((1, -1) + (1,) * (g.ndim - 2)))
