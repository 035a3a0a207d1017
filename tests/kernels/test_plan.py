"""The planner and its controls: forcing, benchmark-and-cache mode, heuristics, thread settings."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn.functional as F
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import gemm, plan
from torch_oracle import assert_close, to_torch, torch_module


@pytest.fixture(autouse=True)
def clean_settings():
    """Every test starts and ends with the default planner settings."""
    conv = backends.conv
    saved = (conv.algorithm, conv.benchmark, dict(conv.benchmark_cache))
    conv.algorithm, conv.benchmark = None, False
    conv.clear_cache()
    yield
    conv.algorithm, conv.benchmark = saved[0], saved[1]
    conv.benchmark_cache.clear()
    conv.benchmark_cache.update(saved[2])


def _fake(
    name, passes=("forward", "grad_input", "grad_weight"), recommend=False, delay_calls=None, ndim=None
):
    """An algorithm computing with gemm, supporting ``passes`` (and only ``ndim`` if given)."""

    class Fake(registry.Algorithm):
        def __init__(self):
            self.name, self.passes, self.calls = name, passes, []

        def supports(self, pass_name, x_shape, w_shape, geom, dtype):
            return pass_name in passes and (ndim is None or geom.ndim == ndim)

        def recommended(self, *args):
            return recommend and self.supports(*args)

        def _run(self, fn_name, *args):
            self.calls.append(fn_name)
            if delay_calls is not None:
                delay_calls()
            return getattr(gemm, fn_name)(*args)

        def forward(self, *args):
            return self._run("forward", *args)

        def grad_input(self, *args):
            return self._run("grad_input", *args)

        def grad_weight(self, *args):
            return self._run("grad_weight", *args)

    return Fake()


@pytest.fixture
def fake_modules():
    """Replace the registry by gemm and the given fakes (in the given order, gemm last)."""
    stack = []

    def install(**algorithms):
        context = registry.registered({**{k: [v] for k, v in algorithms.items()}, "gemm": [gemm]})
        context.__enter__()
        stack.append(context)
        return algorithms

    yield install
    for context in reversed(stack):
        context.__exit__(None, None, None)


def _conv_case(rng, dtype=np.float64):
    x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    return x, w, b, dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)


def _check_against_torch(x, w, b, kwargs):
    torch = torch_module()
    ours = [npconv.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [to_torch(a, requires_grad=True) for a in (x, w, b)]
    y = F.conv2d(*ours, **kwargs)
    yt = torch.nn.functional.conv2d(*theirs, **kwargs)
    assert_close(y, yt, x.dtype, "output")
    gy = np.random.default_rng(3).standard_normal(y.shape).astype(x.dtype)
    y.backward(gy)
    yt.backward(to_torch(gy))
    for name, a, t in zip(("input", "weight", "bias"), ours, theirs, strict=True):
        assert_close(a.grad, t.grad, x.dtype, f"grad {name}")


def test_default_is_gemm_without_recommendations(fake_modules):
    fake_modules(fft=_fake("fft", recommend=False))
    geom = ConvGeometry.create(3, ndim=2).with_padding(1)
    assert plan.choose("forward", (1, 2, 5, 5), (3, 2, 3, 3), geom, np.float32) == "gemm"


def test_heuristic_takes_first_recommending_algorithm_in_priority_order(fake_modules):
    fft = _fake("fft", passes=("forward",), recommend=True, ndim=1)
    depthwise = _fake("depthwise", recommend=True)
    fake_modules(fft=fft, depthwise=depthwise)
    g1 = ConvGeometry.create(3, ndim=1).with_padding(1)
    g2 = ConvGeometry.create(3, ndim=2).with_padding(1)
    assert plan.choose("forward", (1, 2, 5), (3, 2, 3), g1, np.float32) == "fft"
    assert plan.choose("grad_input", (1, 2, 5), (3, 2, 3), g1, np.float32) == "depthwise"  # fft lacks it
    assert plan.choose("forward", (1, 2, 5, 5), (3, 2, 3, 3), g2, np.float32) == "depthwise"


def test_force_algorithm_and_context_manager(rng, fake_modules):
    fft = _fake("fft")
    fake_modules(fft=fft)
    x, w, b, kwargs = _conv_case(rng)
    with backends.conv.force("fft"):
        assert backends.conv.algorithm == "fft"
        _check_against_torch(x, w, b, kwargs)
    assert backends.conv.algorithm is None
    assert sorted(fft.calls) == ["forward", "grad_input", "grad_weight"]
    backends.conv.algorithm = {"grad_weight": "fft"}
    fft.calls.clear()
    _check_against_torch(x, w, b, kwargs)
    assert fft.calls == ["grad_weight"]


def test_forcing_gemm_matches_torch_float32(rng):
    x, w, b, kwargs = _conv_case(rng, np.float32)
    npconv.backends.conv.algorithm = "gemm"
    _check_against_torch(x, w, b, kwargs)


def test_forced_algorithm_without_support_raises_clear_error(rng, fake_modules):
    fake_modules(winograd=_fake("winograd", passes=("forward",), ndim=1))
    x, w, b, kwargs = _conv_case(rng)
    xt = npconv.tensor(x)
    with (
        backends.conv.force("winograd"),
        pytest.raises(ValueError, match="'winograd' does not support the forward pass"),
    ):
        F.conv2d(xt, w, b, **kwargs)
    wt = npconv.tensor(w, requires_grad=True)
    with backends.conv.force({"grad_weight": "winograd"}):
        y = F.conv2d(xt, wt, b, **kwargs)  # forward is not forced
        with pytest.raises(ValueError, match="grad_weight pass"):
            y.backward(np.ones(y.shape))
    assert wt.grad is None  # the failed backward changed nothing


def test_forced_unavailable_algorithm_raises(rng, fake_modules):
    fake_modules(fft="npconv.kernels.no_such_fft_module")  # registered, fails to import
    x, w, b, kwargs = _conv_case(rng)
    with backends.conv.force("fft"), pytest.raises(ValueError, match="'fft' is not available"):
        F.conv2d(npconv.tensor(x), w, b, **kwargs)


@pytest.mark.parametrize(
    "value, error",
    [
        ("cudnn", ValueError),
        (3, TypeError),
        ({"backward": "gemm"}, ValueError),
        ({"forward": "nope"}, ValueError),
    ],
)
def test_invalid_algorithm_setting_is_rejected(value, error):
    with pytest.raises(error, match="algorithm"):
        backends.conv.algorithm = value
    assert backends.conv.algorithm is None
    with pytest.raises(error):
        with backends.conv.force(value):
            pass
    assert backends.conv.algorithm is None


def test_benchmark_mode_times_once_and_caches_fastest(rng, fake_modules):
    import time

    slow = _fake("fft", delay_calls=lambda: time.sleep(0.05))
    fast = _fake("depthwise")
    fake_modules(fft=slow, depthwise=fast)
    backends.conv.benchmark = True
    x, w, b, kwargs = _conv_case(rng)
    _check_against_torch(x, w, b, kwargs)  # first call: every supporting algorithm runs once per pass
    assert sorted(slow.calls) == ["forward", "grad_input", "grad_weight"]
    cache = backends.conv.benchmark_cache
    assert len(cache) == 3 and "fft" not in cache.values()
    forward_key = next(k for k in cache if k[0] == "forward")
    assert forward_key[1] == x.shape and forward_key[2] == w.shape and forward_key[4] == np.float64
    slow.calls.clear()
    before = dict(cache)
    _check_against_torch(x, w, b, kwargs)  # cached: the slow algorithm is not run again
    assert slow.calls == [] and cache == before
    assert plan.choose(*forward_key) == cache[forward_key]
    backends.conv.clear_cache()
    assert not backends.conv.benchmark_cache


def test_benchmark_mode_respects_forcing(rng, fake_modules):
    fft = _fake("fft")
    fake_modules(fft=fft)
    backends.conv.benchmark = True
    x, w, b, kwargs = _conv_case(rng)
    with backends.conv.force("gemm"):
        F.conv2d(npconv.tensor(x), w, b, **kwargs)
    assert fft.calls == [] and not backends.conv.benchmark_cache


def test_registered_algorithms_follow_the_contract():
    """Every built-in algorithm loads and declares the contract the planner relies on."""
    registry.refresh()
    active = registry.available()
    compiled = backends.core.available and not registry.pure()
    assert list(registry.names()) == list(dict.fromkeys(name for name, _ in registry.BUILTIN))
    # every name but the compiled-only grouped kernel has a NumPy implementation
    assert list(active) == [name for name in registry.names() if compiled or name != "grouped"]
    expected = "npconv.kernels.compiled_gemm" if compiled else "npconv.kernels.gemm"
    assert active["gemm"].module.__name__ == expected
    assert registry.names()[-1] == registry.FALLBACK
    for name, algorithm in active.items():
        assert algorithm.name == name
        assert set(algorithm.passes) <= set(registry.PASSES)
        assert set(algorithm.bias_passes) <= set(algorithm.passes)
        for pass_name in algorithm.passes:
            assert callable(getattr(algorithm.module, pass_name))
    assert not active["fft"].local and not active["winograd"].local
    assert active["gemm"].local and active["depthwise"].local
    assert npconv.backends.algorithms() == registry.names()


def test_candidates_include_gemm_for_every_pass():
    geom = ConvGeometry.create(3, ndim=2).with_padding(1)
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert "gemm" in plan.candidates(pass_name, (1, 2, 5, 5), (3, 2, 3, 3), geom, np.float32)


def test_num_threads_setting():
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(1)
        assert npconv.get_num_threads() == 1
        with pytest.raises(ValueError, match="positive"):
            npconv.set_num_threads(0)
        with pytest.raises(TypeError, match="int"):
            npconv.set_num_threads(2.0)
        assert npconv.get_num_threads() == 1
    finally:
        npconv.set_num_threads(previous)
    assert npconv.get_num_threads() == previous


def _grad_weight_mode(monkeypatch, x_shape, w_shape, geom) -> list[bool]:
    """Run plan.grad_weight and record whether GEMM (the variant in use) ran inside
    ``gemm.on_blas_threads()``."""
    seen: list[bool] = []
    active = registry.available()["gemm"].module
    original = active.grad_weight

    def recording(x, gy, g):
        seen.append(getattr(gemm._mode, "blas", False))
        return original(x, gy, g)

    monkeypatch.setattr(active, "grad_weight", recording)
    x = np.ones(x_shape, np.float32)
    gy = np.ones((x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:]), np.float32)
    plan.grad_weight(x, gy, geom)
    return seen


def test_gemm_grad_weight_runs_on_blas_threads_beside_winograd(monkeypatch):
    """The GEMM grad_weight of a layer whose forward or grad_input runs the NumPy Winograd
    (multithreaded BLAS) also runs on BLAS threads; an all-GEMM layer, and one beside the compiled
    Winograd (worker threads), keep the worker threads."""
    previous = npconv.get_num_threads()
    npconv.set_num_threads(2)
    try:
        geom = ConvGeometry.create((3, 3), 1, 1).with_padding(1)
        wide = ((2, 128, 8, 8), (128, 128, 3, 3))
        if registry.available()["winograd"].compiled:
            many_tiles = ((2, 128, 24, 24), (128, 128, 3, 3))
            assert plan.choose("forward", *many_tiles, geom, np.float32) == "winograd"
            assert _grad_weight_mode(monkeypatch, *many_tiles, geom) == [False]
        monkeypatch.setenv("NPCONV_PURE", "1")  # the NumPy Winograd
        assert plan.choose("forward", *wide, geom, np.float32) == "gemm"  # NumPy Winograd: 1 thread only
        assert _grad_weight_mode(monkeypatch, *wide, geom) == [False]
        with backends.conv.force({"forward": "winograd"}):
            assert _grad_weight_mode(monkeypatch, *wide, geom) == [True]
        with backends.conv.force({"grad_input": "winograd"}):
            assert _grad_weight_mode(monkeypatch, *wide, geom) == [True]
    finally:
        npconv.set_num_threads(previous)
