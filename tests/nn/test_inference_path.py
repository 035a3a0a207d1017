"""The inference path of a convolution call: the fused activation epilogue (``F.convolution``'s
``activation``, ``ConvActivation``, the planner's ``Epilogue`` handed to kernels that fuse it), the
checks skipped for repeated calls (a rejected call still raises and changes nothing) and in-place
activations that record nothing."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn.functional as F
from npconv import nn
from npconv.kernels import algorithm as registry
from npconv.kernels import gemm, plan, pointwise
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation

ACTIVATIONS = [(Activation("relu"), nn.ReLU), (Activation("hardtanh", 0.0, 6.0), nn.ReLU6),
               (Activation("hardtanh", -0.5, 0.25), lambda: nn.Hardtanh(-0.5, 0.25)),
               (Activation("silu"), nn.SiLU)]


def _reference(x: np.ndarray, activation: Activation) -> np.ndarray:
    """NumPy reference of each activation (float64 arithmetic on float64 data)."""
    if activation.kind == "relu":
        return np.maximum(x, 0)
    if activation.kind == "hardtanh":
        return np.clip(x, activation.lo, activation.hi)
    return x / (1 + np.exp(-x))


def _conv(dtype=np.float64, bias=True, **kwargs) -> nn.Conv2d:
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=bias, **kwargs).to(dtype)
    rng = np.random.default_rng(3)
    conv.weight.numpy()[...] = rng.standard_normal(conv.weight.shape)
    if bias:
        conv.bias.numpy()[...] = rng.standard_normal(6)
    return conv


@pytest.mark.parametrize("activation, module", ACTIVATIONS)
@pytest.mark.parametrize("batched", [True, False])
def test_functional_activation_equals_conv_then_activation(activation, module, batched):
    conv = _conv()
    shape = (2, 4, 7, 5) if batched else (4, 7, 5)
    x = npconv.tensor(np.random.default_rng(0).standard_normal(shape) * 3)
    with npconv.no_grad():
        plain = conv(x).numpy()
        for _ in range(2):  # the second call takes the accepted-call path
            fused = F.convolution(x, conv.weight, conv.bias, conv.geometry, "zeros", "conv2d",
                                  activation=activation)
            assert fused.shape == plain.shape and not fused.requires_grad
            np.testing.assert_allclose(fused.numpy(), _reference(plain, activation), rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(fused.numpy(), module()(npconv.tensor(plain)).numpy())


@pytest.mark.parametrize("activation, module", ACTIVATIONS)
def test_functional_activation_under_autograd_has_the_unfused_gradients(activation, module):
    conv = _conv()
    x = npconv.tensor(np.random.default_rng(1).standard_normal((2, 4, 6, 6)) * 3, requires_grad=True)
    fused = F.convolution(x, conv.weight, conv.bias, conv.geometry, activation=activation)
    assert fused.requires_grad
    fused.sum().backward()
    grads = [t.grad.numpy().copy() for t in (x, conv.weight, conv.bias)]
    for t in (x, conv.weight, conv.bias):
        t.grad = None
    module()(conv(x)).sum().backward()
    for got, t in zip(grads, (x, conv.weight, conv.bias), strict=True):
        np.testing.assert_array_equal(got, t.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation, module", ACTIVATIONS)
def test_conv_activation_matches_torch(torch, dtype, activation, module):
    conv = _conv(dtype)
    fused = nn.ConvActivation(conv, module())
    torch_activation = (torch.nn.Hardtanh(activation.lo, activation.hi) if activation.kind == "hardtanh"
                        else {"relu": torch.nn.ReLU(), "silu": torch.nn.SiLU()}[activation.kind])
    torch_conv = torch.nn.Conv2d(4, 6, 3, padding=1).to(getattr(torch, np.dtype(dtype).name))
    reference = torch.nn.Sequential(torch_conv, torch_activation)
    with torch.no_grad():
        reference[0].weight.copy_(torch.from_numpy(conv.weight.numpy()))
        reference[0].bias.copy_(torch.from_numpy(conv.bias.numpy()))
    x = np.random.default_rng(2).standard_normal((3, 4, 9, 8)).astype(dtype) * 2
    with npconv.no_grad():
        got = fused(npconv.tensor(x)).numpy()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    tolerance = 1e-12 if dtype == np.float64 else 2e-6
    assert got.dtype == dtype
    assert np.linalg.norm(got - expected) <= tolerance * np.linalg.norm(expected)


def test_conv_activation_fuses_through_the_planner(monkeypatch):
    """Without autograd a plain convolution hands its activation to plan.forward; with hooks, or
    recording, it does not (the hooks run; autograd records the activation op)."""
    seen = []
    forward = plan.forward
    monkeypatch.setattr(plan, "forward", lambda *a, **k: seen.append(k.get("activation")) or forward(*a, **k))
    fused = nn.ConvActivation(_conv(), nn.ReLU6())
    x = npconv.tensor(np.random.default_rng(0).standard_normal((1, 4, 5, 5)))
    with npconv.no_grad():
        fused(x)
    assert seen == [Activation("hardtanh", 0.0, 6.0)]
    seen.clear()
    calls = []
    fused.conv.register_forward_hook(lambda *args: calls.append(1))
    with npconv.no_grad():
        y = fused(x)
    assert seen == [None] and calls == [1]
    np.testing.assert_array_equal(y.numpy(), np.clip(fused.conv(x).detach().numpy(), 0, 6))


def _algorithm(name, bias_passes=(), epilogue_passes=()):
    """GEMM under another name, recording the keyword arguments of its forward calls."""

    class Recording(registry.Algorithm):
        def __init__(self):
            self.name, self.calls = name, []
            self.bias_passes, self.epilogue_passes = bias_passes, epilogue_passes

        def supports(self, *args):
            return True

        def recommended(self, *args):
            return True

        def forward(self, x, w, geom, bias=None, epilogue=None):
            self.calls.append({"bias": bias is not None, "epilogue": epilogue})
            y = gemm.forward(x, w, geom)
            if epilogue is not None:
                for n in range(y.shape[0]):
                    epilogue.apply_(y[n])
            elif bias is not None:
                y += bias.reshape(-1, 1, 1)
            return y

    return Recording()


@pytest.mark.parametrize("bias_passes, epilogue_passes", [((), ()), (("forward",), ()),
                                                         (("forward",), ("forward",)), ((), ("forward",))])
@pytest.mark.parametrize("with_bias", [True, False])
def test_planner_epilogue_contract(bias_passes, epilogue_passes, with_bias):
    """The planner hands an Epilogue to the passes in ``epilogue_passes``, the bias alone to those in
    ``bias_passes``, and applies the rest itself: the same result every way."""
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    geom = npconv.geometry.ConvGeometry.create(3, 1, 1, 1, 1, ndim=2)
    geom = geom.with_padding(geom.pads())
    bias = b if with_bias else None
    activation = Activation("hardtanh", -0.3, 0.4)
    expected = np.clip(gemm.forward(x, w, geom) + (b.reshape(-1, 1, 1) if with_bias else 0), -0.3, 0.4)
    fake = _algorithm("fused", bias_passes, epilogue_passes)
    with registry.registered({"fused": [fake], "gemm": [gemm]}):
        got = plan.forward(x, w, geom, bias=bias, activation=activation)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    (call,) = fake.calls
    if "forward" in epilogue_passes:
        assert call == {"bias": False, "epilogue": Epilogue(bias, activation)}
    else:
        assert call == {"bias": with_bias and "forward" in bias_passes, "epilogue": None}


@pytest.mark.parametrize("activation", [None, Activation("relu"), Activation("silu")])
def test_pointwise_epilogue_in_one_pass(activation):
    rng = np.random.default_rng(5)
    y = rng.standard_normal((3, 5, 40, 40)).astype(np.float32)  # over PARALLEL_MIN_SIZE: worker threads
    b = rng.standard_normal(5).astype(np.float32)
    expected = y + b.reshape(-1, 1, 1)
    if activation is not None:
        expected = _reference(expected.astype(np.float64), activation).astype(np.float32)
    got = pointwise.epilogue_(y, b, activation)
    assert got is y
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6)
    with pytest.raises(ValueError, match="activation kind must be one of"):
        pointwise.epilogue_(y, None, Activation("tanh"))


# -- repeated calls skip re-checking; a rejected call still raises the same error ------------------
def _error(call) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return f"{type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize("change", ["channels", "dtype", "rank", "bias", "kernel"])
def test_a_rejected_call_after_accepted_ones_raises_the_same_error(change):
    conv = _conv()
    good = npconv.tensor(np.ones((2, 4, 6, 6)))
    bad = {"channels": np.ones((2, 3, 6, 6)), "dtype": np.ones((2, 4, 6, 6), np.float32),
           "rank": np.ones((2, 2, 4, 6, 6)), "bias": np.ones((2, 4, 6, 6)),
           "kernel": np.ones((2, 4, 0, 6))}[change]
    fresh = _conv()
    if change == "bias":
        fresh.bias = nn.Parameter(np.ones(5))
    expected = _error(lambda: fresh(npconv.tensor(bad)))  # no accepted call with this module yet
    with npconv.no_grad():
        for _ in range(3):
            conv(good)
    if change == "bias":
        conv.bias = nn.Parameter(np.ones(5))
    before = conv.weight.numpy().copy()
    assert _error(lambda: conv(npconv.tensor(bad))) == expected
    np.testing.assert_array_equal(conv.weight.numpy(), before)


def test_accepted_calls_follow_the_module_attributes():
    """A changed attribute (a new geometry) or parameter shape is checked again."""
    conv = _conv()
    x = npconv.tensor(np.random.default_rng(6).standard_normal((1, 4, 8, 8)))
    with npconv.no_grad():
        assert conv(x).shape == (1, 6, 8, 8)
        conv.padding = (0, 0)
        assert conv(x).shape == (1, 6, 6, 6)
        conv.stride = (2, 2)
        assert conv(x).shape == (1, 6, 3, 3)
        conv.weight = nn.Parameter(np.ones((6, 4, 9, 9)))
        with pytest.raises(ValueError, match="kernel_size"):
            conv(x)


# -- in-place activations without a graph -------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda t: F.relu(t, inplace=True), lambda t: F.relu6(t, inplace=True),
                                  lambda t: F.hardtanh(t, -0.5, 0.5, inplace=True), lambda t: t.relu_(),
                                  lambda t: nn.ReLU(inplace=True)(t), lambda t: nn.ReLU6(inplace=True)(t)])
def test_inplace_activation_writes_into_the_input(make):
    data = np.random.default_rng(7).standard_normal((2, 3, 50, 50))  # large: worker threads
    data[0, 0, 0, :3] = [np.nan, -0.0, np.inf]
    out_of_place = make(npconv.tensor(data.copy()) * 1)  # the recorded-path values (a non-leaf)
    t = npconv.tensor(data.copy())
    version = t._version.value
    pointer = t.numpy().ctypes.data
    with npconv.no_grad():
        result = make(t)
    assert result is t and t.numpy().ctypes.data == pointer and t._version.value == version + 1
    np.testing.assert_array_equal(t.numpy(), out_of_place.numpy())
    assert np.signbit(t.numpy()[0, 0, 0, 1]) == np.signbit(out_of_place.numpy()[0, 0, 0, 1])


def test_inplace_activation_keeps_the_inplace_rules(torch):
    leaf = npconv.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        F.relu(leaf, inplace=True)
    with npconv.no_grad():  # as torch: allowed without grad mode
        F.relu(leaf, inplace=True)
    frozen = npconv.tensor(np.ones(4)).expand(2, 4)
    with pytest.raises(RuntimeError, match="read-only"):
        F.relu(frozen, inplace=True)
    with npconv.inference_mode():
        inference = npconv.ones(3)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
        F.relu6(inference, inplace=True)
    # with a graph: values and gradients as torch's
    data = np.random.default_rng(8).standard_normal((4, 5))
    x = npconv.tensor(data, requires_grad=True)
    y = F.relu6(x * 3, inplace=True)
    y.sum().backward()
    tx = torch.tensor(data, requires_grad=True)
    torch.nn.functional.relu6(tx * 3, inplace=True).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


def test_blas_threads_restores_what_it_changed():
    from npconv.backends import _blas_controllers, blas_threads

    libs = _blas_controllers()
    before = [lib.get_num_threads() for lib in libs]
    with blas_threads(1):
        assert all(lib.get_num_threads() == 1 for lib in libs)
    assert [lib.get_num_threads() for lib in libs] == before


# -- planned calls: a module's repeated inference call runs its plan (F.convolution's owner) --------

def _planned_modules(dtype):
    """A dense conv (gemm), a depthwise conv (the depthwise kernel) and a fused Conv-ReLU6, seeded."""
    rng = np.random.default_rng(5)
    dense = nn.Conv2d(4, 16, 3, padding=1).to(dtype)
    depthwise = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4).to(dtype)
    fused = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.ReLU6()).to(dtype)
    for module in (dense, depthwise, fused):
        for p in module.parameters():
            p.numpy()[...] = rng.standard_normal(p.shape)
    return dense, depthwise, npconv.optimize_for_inference(fused.eval())


def _expected(module, x: np.ndarray) -> np.ndarray:
    """The NumPy reference (float64) of the three modules of :func:`_planned_modules`."""
    import reference

    if isinstance(module, nn.Sequential):
        conv = module[0].conv
        return np.clip(reference.conv(x, conv.weight.numpy().astype(np.float64)), 0, 6)
    bias = module.bias.numpy().astype(np.float64)
    return reference.conv(x, module.weight.numpy().astype(np.float64), bias, stride=module.stride,
                          padding=module.padding, groups=module.groups)


_COMPILED = pytest.mark.skipif(not npconv.backends.core.available,
                               reason="plans are made by the compiled algorithms (prepare_forward)")


@_COMPILED
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_repeated_inference_calls_run_the_plan(monkeypatch, dtype):
    """The second equal call goes straight to the planned kernel (no planner call), with the
    reference's result, for a gemm, a depthwise and a fused convolution; contiguous or not."""
    calls = []
    real = plan.forward
    monkeypatch.setattr(plan, "forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    tol = 1e-12 if dtype == np.float64 else 2e-5
    rng = np.random.default_rng(0)
    for module in _planned_modules(dtype):
        x = rng.standard_normal((2, 4, 9, 18)).astype(dtype)[..., ::2]  # non-contiguous
        with npconv.no_grad():
            first = module(npconv.tensor(x)).numpy().copy()
            count = len(calls)
            again = module(npconv.tensor(x)).numpy()
        assert len(calls) == count  # the plan ran
        np.testing.assert_allclose(first, _expected(module, x.astype(np.float64)), rtol=tol, atol=tol)
        np.testing.assert_array_equal(again, first)


@_COMPILED
def test_a_plan_follows_weights_settings_and_autograd(monkeypatch):
    """Weights changed in place or replaced, another thread count, a forced algorithm or changed kernel
    settings, another input shape, and autograd: each call still computes what the reference does
    (a plan is kept only while what it was made from holds)."""
    from npconv.kernels import compiled_gemm

    dense, depthwise, fused = _planned_modules(np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 8, 8))

    def check(module, inputs=x):
        with npconv.no_grad():
            y = module(npconv.tensor(inputs)).numpy()
        np.testing.assert_allclose(y, _expected(module, inputs), rtol=1e-12, atol=1e-12)

    for module in (dense, depthwise, fused):
        check(module)
        check(module)
        conv = module[0].conv if isinstance(module, nn.Sequential) else module
        conv.weight.numpy()[...] *= -2  # in place: the plan reads the weight where it is
        check(module)
        conv.weight = nn.Parameter(npconv.tensor(rng.standard_normal(conv.weight.shape)))
        check(module)
        check(module, rng.standard_normal((2, 4, 6, 10)))
    check(dense)
    dense.padding_mode = "reflect"  # the same geometry, another padding
    with npconv.no_grad():
        y = dense(npconv.tensor(x)).numpy()
    import reference

    np.testing.assert_allclose(y, reference.conv(x, dense.weight.numpy(), dense.bias.numpy(), padding=1,
                                                 padding_mode="reflect"), rtol=1e-12, atol=1e-12)
    dense.padding_mode = "zeros"
    previous = npconv.get_num_threads()
    try:
        for threads in (1, 2, 1):
            npconv.set_num_threads(threads)
            check(dense)
    finally:
        npconv.set_num_threads(previous)
    chosen = []
    real = registry.get("gemm").forward
    monkeypatch.setattr(registry.get("gemm"), "forward", lambda *a, **k: (chosen.append(1), real(*a, **k))[1])
    check(depthwise)
    with npconv.backends.conv.force("gemm"):
        check(depthwise)
    assert chosen  # the forced algorithm ran, not the depthwise plan
    monkeypatch.setattr(compiled_gemm, "CHUNK_BYTES", compiled_gemm.CHUNK_BYTES // 2)
    check(dense)
    check(depthwise)  # planned for x's shape: a call that records autograd must not take the plan
    xt = npconv.tensor(x, requires_grad=True)
    y = depthwise(xt)
    assert y.requires_grad
    y.sum().backward()
    assert xt.grad is not None and np.abs(xt.grad.numpy()).sum() > 0


def test_planned_modules_still_copy_and_pickle():
    """The plans are kept outside the modules: a module that ran one deep-copies and pickles."""
    import copy
    import pickle

    for module in _planned_modules(np.float32):
        with npconv.no_grad():
            module(npconv.tensor(np.ones((1, 4, 6, 6), np.float32)))
            module(npconv.tensor(np.ones((1, 4, 6, 6), np.float32)))
        clone = pickle.loads(pickle.dumps(copy.deepcopy(module)))
        with npconv.no_grad():
            np.testing.assert_array_equal(clone(npconv.tensor(np.ones((1, 4, 6, 6), np.float32))).numpy(),
                                          module(npconv.tensor(np.ones((1, 4, 6, 6), np.float32))).numpy())


@_COMPILED
def test_a_call_without_a_plan_is_not_planned_again(monkeypatch):
    """A call whose algorithm has no plan (a non-local one, here the forced FFT) runs the checked
    path each time, with the reference's result, and is planned once per change of its inputs."""
    dense = _planned_modules(np.float64)[0]
    tries = []
    real = plan.prepare_forward
    monkeypatch.setattr(plan, "prepare_forward", lambda *a, **k: (tries.append(1), real(*a, **k))[1])
    x = np.random.default_rng(2).standard_normal((1, 4, 8, 8))
    with npconv.backends.conv.force("fft"), npconv.no_grad():
        for _ in range(3):
            y = dense(npconv.tensor(x)).numpy()
            np.testing.assert_allclose(y, _expected(dense, x), rtol=1e-10, atol=1e-10)
    assert len(tries) == 1


# -- functional calls: equal arguments take one geometry, its accepted checks and a plan per weight ----

@_COMPILED
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_repeated_functional_calls_run_the_plan_of_their_weight(monkeypatch, dtype):
    """``F.conv2d``/``F.conv`` called again with equal arguments and the same weight Tensor run the plan
    (no planner call), with the reference's result; the weight changed in place, another weight,
    another input shape, padding given as a string and autograd each compute what the reference does."""
    import reference

    calls = []
    real = plan.forward
    monkeypatch.setattr(plan, "forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    rng = np.random.default_rng(6)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    w = npconv.tensor(rng.standard_normal((6, 2, 3, 3)).astype(dtype))
    b = npconv.tensor(rng.standard_normal(6).astype(dtype))
    x = rng.standard_normal((2, 4, 9, 7)).astype(dtype)

    def check(conv, inputs=x, weight=w, **kwargs):
        with npconv.no_grad():
            y = conv(npconv.tensor(inputs), weight, b, **kwargs).numpy()
        expected = reference.conv(inputs.astype(np.float64), weight.numpy().astype(np.float64),
                                  b.numpy().astype(np.float64), stride=kwargs.get("stride", 1),
                                  padding=kwargs.get("padding", 0), groups=2)
        np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)
        return y

    for conv in (F.conv2d, F.conv):
        first = check(conv, stride=(2, 1), padding=1, groups=2)
        count = len(calls)
        np.testing.assert_array_equal(check(conv, stride=(2, 1), padding=1, groups=2), first)
        assert len(calls) == count  # the plan ran
        w.numpy()[...] *= -0.5
        check(conv, stride=(2, 1), padding=1, groups=2)
        other = npconv.tensor(rng.standard_normal((6, 2, 3, 3)).astype(dtype))
        check(conv, weight=other, stride=(2, 1), padding=1, groups=2)
        check(conv, rng.standard_normal((1, 4, 5, 11)).astype(dtype), stride=(2, 1), padding=1, groups=2)
        check(conv, padding="same", groups=2)
        check(conv, padding="same", groups=2)
    xt = npconv.tensor(x, requires_grad=True)
    y = F.conv2d(xt, w, b, (2, 1), 1, 1, 2)
    assert y.requires_grad
    y.sum().backward()
    assert np.abs(xt.grad.numpy()).sum() > 0


def test_functional_arguments_are_checked_as_on_the_first_call():
    """An equal call after an accepted one shares its geometry, but arguments of another type (a bool
    for an int, a list for a tuple), other values and bad tensors get the errors of a first call."""
    rng = np.random.default_rng(7)
    x, w = npconv.tensor(rng.standard_normal((1, 4, 6, 6))), npconv.tensor(rng.standard_normal((4, 2, 3, 3)))
    with npconv.no_grad():
        y = F.conv2d(x, w, None, 1, 1, 1, 2)
        np.testing.assert_array_equal(F.conv2d(x, w, None, [1, 1], 1, 1, 2).numpy(), y.numpy())
        for kwargs, error, text in (({"stride": True}, TypeError, "stride"),
                                    ({"stride": (True, 1)}, TypeError, "stride"),
                                    ({"groups": 2.0}, TypeError, "groups"),
                                    ({"stride": 0}, ValueError, "stride"),
                                    ({"padding": "full"}, ValueError, "padding"),
                                    ({"groups": 3}, ValueError, "groups")):
            arguments = {"stride": 1, "padding": 1, "dilation": 1, "groups": 2, **kwargs}
            with pytest.raises(error, match=text):
                F.conv2d(x, w, None, **arguments)
        with pytest.raises(ValueError, match="input"):
            F.conv2d(npconv.tensor(rng.standard_normal((1, 3, 6, 6))), w, None, 1, 1, 1, 2)
        with pytest.raises(TypeError, match="weight"):
            F.conv2d(x, npconv.tensor(np.ones((4, 2, 3, 3), np.int64)), None, 1, 1, 1, 2)
        with pytest.raises(ValueError, match="weight"):
            F.conv2d(x, npconv.tensor(rng.standard_normal((4, 2, 3))), None, 1, 1, 1, 2)
        np.testing.assert_array_equal(F.conv2d(x, w, None, 1, 1, 1, 2).numpy(), y.numpy())


@_COMPILED
def test_a_functional_plan_goes_with_its_weight():
    """The plan kept for a weight Tensor (held weakly, by id) is dropped when the weight is."""
    import gc

    rng = np.random.default_rng(8)
    x = npconv.tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    w = npconv.tensor(rng.standard_normal((5, 3, 3, 3)).astype(np.float32))
    with npconv.no_grad():
        F.conv2d(x, w)
    key = id(w)
    assert F._planned[key][0]() is w
    del w
    gc.collect()
    assert key not in F._planned


def test_a_module_with_an_earlier_geometry_cache_still_runs():
    """A convolution unpickled from an earlier npconv holds ``(key, geometry)`` as its geometry cache:
    the call rebuilds it (with the op name) and computes the same, as after an attribute change."""
    conv = _conv()
    x = npconv.tensor(np.random.default_rng(9).standard_normal((1, 4, 5, 5)))
    with npconv.no_grad():
        expected = conv(x).numpy().copy()
        conv.__dict__["_geometry_cache"] = conv.__dict__["_geometry_cache"][:2]
        np.testing.assert_array_equal(conv(x).numpy(), expected)
        assert len(conv.__dict__["_geometry_cache"]) == 3
        conv.stride = (2, 2)
        assert conv(x).shape == (1, 6, 3, 3)
        conv.kernel_size = (3, 3, 3)
        with pytest.raises(ValueError, match="3-d convolution"):
            conv(x)
