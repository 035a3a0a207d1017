"""The algorithm contract and registry: one-call registration, variants (compiled preferred,
NPCONV_PURE=1 forcing NumPy), unavailable implementations, and the planner reading the registry.
Torch-free: results are checked against the GEMM algorithm's and a direct NumPy sum."""

from __future__ import annotations

import types

import numpy as np
import pytest

import npconv
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import gemm, plan


class Tagged(registry.Algorithm):
    """Runs every pass with GEMM and records its calls."""

    def __init__(self, name, compiled=False, recommend=True):
        self.name, self.compiled, self.recommend, self.calls = name, compiled, recommend, []

    def supports(self, pass_name, x_shape, w_shape, geom, dtype):
        return True

    def recommended(self, *args):
        return self.recommend

    def forward(self, x, w, geom, bias=None):
        self.calls.append("forward")
        return gemm.forward(x, w, geom)


@pytest.fixture
def geom():
    return ConvGeometry.create(3, ndim=1).with_padding(1)


@pytest.fixture(autouse=True)
def default_settings(monkeypatch):
    monkeypatch.delenv("NPCONV_PURE", raising=False)
    saved = backends.conv.algorithm
    backends.conv.algorithm = None
    yield
    backends.conv.algorithm = saved
    registry.refresh()


def _direct(x, w):
    """``y[n, o, t] = sum_{c, k} w[o, c, k] xp[n, c, t + k]`` with one zero of padding per side."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    length = x.shape[2]
    return sum(np.einsum("nct,oc->not", xp[..., k:k + length], w[..., k]) for k in range(w.shape[2]))


def test_register_is_one_call_and_enters_before_gemm(geom):
    mine = Tagged("mine")
    with registry.registered({"fft": ["npconv.kernels.fft"], "gemm": [gemm]}):
        registry.register(mine)
        assert registry.names() == ("fft", "mine", "gemm")
        assert "mine" in backends.algorithms()
        x, w = np.ones((2, 2, 5)), np.arange(12.0).reshape(2, 2, 3)
        y = plan.forward(x, w, geom)
        assert mine.calls == ["forward"]
        np.testing.assert_allclose(y, _direct(x, w), rtol=1e-12)
        backends.conv.algorithm = "mine"  # the setting validates against the registry
        registry.unregister("mine")
        assert "mine" not in registry.names()
    with pytest.raises(ValueError, match="algorithm"):
        backends.conv.algorithm = "mine"


def test_compiled_variant_is_preferred_and_npconv_pure_forces_numpy(geom, monkeypatch):
    numpy_impl, compiled_impl = Tagged("dw"), Tagged("dw", compiled=True)
    with registry.registered({"dw": [numpy_impl], "gemm": [gemm]}):
        registry.register(compiled_impl)
        assert registry.get("dw") is compiled_impl
        assert [a.compiled for a in registry.implementations("dw")["dw"]] == [True, False]
        assert backends.conv.implementations()["dw"] == "compiled"
        plan.forward(np.ones((1, 1, 4)), np.ones((1, 1, 3)), geom)
        assert compiled_impl.calls == ["forward"] and numpy_impl.calls == []
        monkeypatch.setenv("NPCONV_PURE", "1")
        assert registry.get("dw") is numpy_impl
        assert backends.conv.implementations()["dw"] == "numpy"
        plan.forward(np.ones((1, 1, 4)), np.ones((1, 1, 3)), geom)
        assert numpy_impl.calls == ["forward"]
        registry.unregister("dw", numpy_impl)  # only the compiled one is left: excluded when pure
        with pytest.raises(ValueError, match="NPCONV_PURE=1 excludes"):
            registry.get("dw")
        assert backends.conv.implementations()["dw"].startswith("unavailable")


def test_module_form_and_broken_implementations(geom):
    module = types.ModuleType("fake_algorithm")
    module.NAME, module.PASSES, module.LOCAL = "modular", ("forward",), False
    module.supports = lambda *a: True
    module.forward = lambda x, w, g, bias=None: gemm.forward(x, w, g)
    algorithm = registry.ModuleAlgorithm(module)
    assert (algorithm.name, algorithm.passes, algorithm.local, algorithm.bias_passes) == (
        "modular", ("forward",), False, ())
    assert not algorithm.recommended("forward", (1, 1, 4), (1, 1, 3), geom, np.float64)
    assert algorithm.runs("forward", (1, 1, 4), (1, 1, 3), geom, np.float64)
    assert not algorithm.runs("grad_input", (1, 1, 4), (1, 1, 3), geom, np.float64)
    module.PASSES = ("forward", "grad_weight")
    with pytest.raises(TypeError, match="grad_weight"):
        registry.ModuleAlgorithm(module)
    with pytest.raises(TypeError, match="name="):
        registry.register("npconv.kernels.fft")
    with pytest.raises(TypeError, match="Algorithm"):
        registry.register(object())
    with registry.registered({"gemm": [gemm]}):
        registry.register("npconv.kernels.does_not_exist", name="ghost")
        assert "ghost" not in registry.available() and "ghost" in registry.names()
        assert registry.reasons("ghost") == ["ghost (npconv.kernels.does_not_exist): not installed"]
        with pytest.raises(ValueError, match="'ghost' is not available"):
            registry.get("ghost")
        with pytest.raises(ValueError, match="unknown convolution algorithm"):
            registry.get("nothing")


def test_planner_lists_come_from_the_registry():
    assert backends.PASSES == registry.PASSES
    builtin_names = tuple(dict.fromkeys(n for n, _ in registry.BUILTIN))  # a name listed twice has variants
    assert tuple(backends.ALGORITHMS) == registry.names() == builtin_names
    geom = ConvGeometry.create(3, ndim=2).with_padding(1)
    shapes = ((1, 2, 5, 5), (3, 2, 3, 3), geom, np.float32)
    grouped = ["grouped"] if "grouped" in registry.available() else []  # compiled only (few channels)
    compiled_winograd = ["winograd"] if registry.available()["winograd"].compiled else []  # its grad_weight
    assert plan.candidates("grad_weight", *shapes) == ["fft", *compiled_winograd, *grouped, "gemm"]
    assert plan.candidates("grad_input", *shapes) == ["fft", "winograd", "gemm"]
    expected = dict.fromkeys(registry.names(), "numpy")
    report = npconv.backends.conv.implementations()
    if npconv.backends.core.available and not registry.pure():  # the compiled kernels
        expected["depthwise"] = expected["gemm"] = expected["winograd"] = expected["grouped"] = "compiled"
    else:  # the grouped kernel has no NumPy implementation (GEMM runs those calls)
        assert report.pop("grouped").startswith("unavailable: ")
        del expected["grouped"]
    assert report == expected
