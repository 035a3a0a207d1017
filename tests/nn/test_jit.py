"""npconv.jit.trace: the recorded layer calls and additions replayed, against torch's model (float64
and float32), with its gradients; what a trace refuses; what it shares with the traced module."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from kernel_checks import forked_check
from npconv import _replay, jit, nn
from npconv.kernels import compiled_block

torch = pytest.importorskip("torch")
#: The NumPy engine's algorithms keep no plans (``NPCONV_PURE=1``): every replayed layer runs its forward.
needs_plans = pytest.mark.skipif(not npconv.backends.core.available,
                                 reason=f"compiled core not in use: {npconv.backends.core.reason}")


def _network(ns):  # noqa: ANN001, ANN202 (npconv.nn or torch.nn)
    """A MobileNetV2-like stack and a ResNet-like block: residual ``x + f(x)``, ``out += identity`` with
    an in-place ReLU, a Python condition on an attribute, a 1x1/2 downsample, pooling, a classifier."""

    class Inverted(ns.Module):
        def __init__(self, c: int, residual: bool) -> None:
            super().__init__()
            self.residual = residual
            self.conv = ns.Sequential(ns.Conv2d(c, 2 * c, 1, bias=False), ns.BatchNorm2d(2 * c), ns.ReLU6(),
                                      ns.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False),
                                      ns.BatchNorm2d(2 * c), ns.ReLU6(), ns.Conv2d(2 * c, c, 1, bias=False),
                                      ns.BatchNorm2d(c))

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class Basic(ns.Module):
        def __init__(self, c_in: int, c_out: int) -> None:
            super().__init__()
            self.conv1 = ns.Conv2d(c_in, c_out, 3, 2, 1, bias=False)
            self.bn1 = ns.BatchNorm2d(c_out)
            self.relu = ns.ReLU(inplace=True)
            self.conv2 = ns.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = ns.BatchNorm2d(c_out)
            self.downsample = ns.Sequential(ns.Conv2d(c_in, c_out, 1, 2, bias=False), ns.BatchNorm2d(c_out))

        def forward(self, x):
            identity = self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class Net(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = ns.Sequential(ns.Conv2d(3, 8, 3, 2, 1, bias=False), ns.BatchNorm2d(8), ns.ReLU6())
            self.blocks = ns.Sequential(Inverted(8, False), Inverted(8, True), Basic(8, 16))
            self.pool = ns.AdaptiveAvgPool2d(1)
            self.flatten = ns.Flatten(1)
            self.head = ns.Sequential(ns.Dropout(0.2), ns.Linear(16, 5))

        def forward(self, x):
            return self.head(self.flatten(self.pool(self.blocks(self.stem(x)))))

    return Net()


def _randomize_batchnorm(reference, seed: int) -> None:  # noqa: ANN001 (a torch module)
    """Random running statistics and affine parameters for each of ``reference``'s BatchNorm2d."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.3)


def _pair(dtype: type = np.float64, seed: int = 0):  # noqa: ANN202
    """The network in torch (eval, random BatchNorm statistics) and in npconv with the same state."""
    torch.manual_seed(seed)
    reference = _network(torch.nn)
    _randomize_batchnorm(reference, seed + 1)
    reference = reference.to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    ours = _network(nn)
    if dtype == np.float64:
        ours = ours.double()
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    return reference, ours.eval()


def _torch(model, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _run(model, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    with npconv.no_grad():
        return model(npconv.tensor(x)).numpy()


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 2e-5)])
@pytest.mark.parametrize("optimized", [False, True])
def test_trace_replays_the_network_as_torch(dtype: type, tolerance: float, optimized: bool) -> None:
    reference, ours = _pair(dtype)
    model = npconv.optimize_for_inference(ours) if optimized else ours
    rng = np.random.default_rng(3)
    example = rng.standard_normal((2, 3, 16, 16)).astype(dtype)
    traced = npconv.jit.trace(model, npconv.tensor(example))
    assert isinstance(traced, npconv.jit.TracedModule) and isinstance(traced, nn.Module)
    for _ in range(3):  # the first replay plans each convolution, the next ones run the kept plans
        x = rng.standard_normal(example.shape).astype(dtype)
        expected = _torch(reference, x)
        got = _run(traced, x)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())


def test_trace_gradients_are_torch_s() -> None:
    reference, ours = _pair(np.float64)
    x = np.random.default_rng(4).standard_normal((2, 3, 16, 16))
    traced = npconv.jit.trace(ours, npconv.tensor(x))
    xt = torch.from_numpy(x.copy()).requires_grad_()
    reference(xt).square().sum().backward()
    xn = npconv.tensor(x.copy(), requires_grad=True)
    traced(xn).square().sum().backward()
    np.testing.assert_allclose(xn.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    grads = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        np.testing.assert_allclose(parameter.grad.numpy(), grads[name].grad.numpy(), rtol=1e-9, atol=1e-12)


def test_trace_shares_parameters_and_snapshots_structure() -> None:
    reference, ours = _pair(np.float64)
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16))
    traced = npconv.jit.trace(ours, npconv.tensor(x))
    assert traced.state_dict().keys() == ours.state_dict().keys()
    _run(traced, x)  # plans kept
    # in-place updates of the shared parameters reach the replay (the plans read them in place)
    with torch.no_grad():
        reference.stem[0].weight.mul_(-2)
        reference.head[1].bias.add_(1)
    with npconv.no_grad():
        ours.stem[0].weight.mul_(-2)
        ours.head[1].bias.add_(1)
    np.testing.assert_allclose(_run(traced, x), _torch(reference, x), rtol=1e-10, atol=1e-12)
    # a parameter given a new array (``.data =``): the kept plan no longer holds, the layer plans again
    new = np.random.default_rng(6).standard_normal(tuple(ours.stem[0].weight.shape))
    with torch.no_grad():
        reference.stem[0].weight.copy_(torch.from_numpy(new))
    ours.stem[0].weight.data = new.copy()
    np.testing.assert_allclose(_run(traced, x), _torch(reference, x), rtol=1e-10, atol=1e-12)
    # structure and settings are a snapshot (as torch.jit.trace's graph): a later change does not reach it
    before = _run(traced, x)
    ours.blocks[1].residual = False
    ours.stem[0].stride = (1, 1)
    np.testing.assert_array_equal(_run(traced, x), before)


def test_trace_refuses_what_it_cannot_replay() -> None:
    _, ours = _pair(np.float32)
    x = npconv.tensor(np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32))

    class ValueBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            return y if y.sum() > 0 else -y  # control flow on values

    class Unrecorded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x.exp())  # an exponential: not a recorded step

    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            y.mul_(2)  # in place, outside a step
            return self.conv(y)

    class TouchesState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            with npconv.no_grad():
                self.conv.bias.mul_(1.0)
            return self.conv(x)

    class AddsIntoParameter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            self.conv.bias += 0.0
            return self.conv(x)

    class ReturnsNumber(nn.Module):
        def forward(self, x):
            return 3

    for module, message in [(ValueBranch(), "reads a tensor's values"),
                            (Unrecorded(), "not made by a recorded"), (InPlace(), "modified in place"),
                            (TouchesState(), "parameter or buffer"),
                            (AddsIntoParameter(), "adds into a parameter"),
                            (ReturnsNumber(), "must return a tensor")]:
        with pytest.raises(npconv.jit.TracerError, match=message):
            npconv.jit.trace(module.eval(), x)
    hooked = _network(nn).eval()
    hooked.stem[1].register_forward_hook(lambda *args: None)
    with pytest.raises(npconv.jit.TracerError, match="has hooks"):
        npconv.jit.trace(hooked, x)
    with pytest.raises(npconv.jit.TracerError, match="training mode"):
        npconv.jit.trace(_network(nn), x)  # Dropout and BatchNorm in training mode
    with pytest.raises(TypeError, match="must be an npconv.nn.Module"):
        npconv.jit.trace(lambda t: t, x)
    with pytest.raises(TypeError, match="example_inputs must be a Tensor"):
        npconv.jit.trace(ours, x.numpy())
    traced = npconv.jit.trace(ours, x)
    with pytest.raises(ValueError, match=r"traced shape \(1, 3, 16, 16\)"):
        traced(npconv.zeros(2, 3, 16, 16))
    with pytest.raises(TypeError, match="takes 1 tensor inputs, got 2"):
        traced(x, x)
    # outside a trace the hooks are inert: the eager module still runs, value reads work
    assert float(ours(x).sum()) == float(ours(x).sum())


def test_trace_check_catches_a_frozen_difference() -> None:
    class Counter(nn.Module):  # state outside tensors: the trace freezes the first call's branch
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            y = self.conv(x)
            return y + y if self.calls == 1 else y

    x = npconv.tensor(np.random.default_rng(8).standard_normal((1, 3, 4, 4)).astype(np.float32))
    with pytest.raises(npconv.jit.TracerError, match="differs from the module's"):
        npconv.jit.trace(Counter(), x)
    npconv.jit.trace(Counter(), x, check_trace=False)  # unchecked: the caller's responsibility


@needs_plans
def test_replay_runs_the_kept_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first replay each convolution runs its kept plan, not its layer's forward; a weight
    given a new array sends that one layer through its forward once (it plans again)."""
    from npconv.nn.modules import conv, fused

    _, ours = _pair(np.float32)
    x = npconv.tensor(np.random.default_rng(9).standard_normal((1, 3, 16, 16)).astype(np.float32))
    for model in (ours, npconv.optimize_for_inference(ours)):
        traced = npconv.jit.trace(model, x)
        calls: list = []
        for owner in (conv._Conv, fused.ConvActivation):
            original = owner.forward
            monkeypatch.setattr(owner, "forward", lambda self, *a, _f=original, _calls=calls, **k:
                                _calls.append(self) or _f(self, *a, **k))
        with npconv.no_grad():
            traced(x)
            calls.clear()
            traced(x)
            assert calls == []
            first = model.stem[0]
            weight = first.conv.weight if isinstance(first, fused.ConvActivation) else first.weight
            weight.data = weight.numpy().copy()
            traced(x)
            assert len(calls) == 1
            calls.clear()
            traced(x)
            assert calls == []
        monkeypatch.undo()


@needs_plans
def test_replay_plans_again_when_the_planner_or_a_shape_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from npconv.nn.modules import conv, fused

    reference, ours = _pair(np.float32)
    model = npconv.optimize_for_inference(ours)
    x = np.random.default_rng(10).standard_normal((1, 3, 16, 16)).astype(np.float32)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _run(traced, x)
    calls = []
    original = fused.ConvActivation.forward
    monkeypatch.setattr(fused.ConvActivation, "forward",
                        lambda self, *a, **k: calls.append(self) or original(self, *a, **k))
    monkeypatch.setattr(conv._Conv, "forward", lambda self, *a, _f=conv._Conv.forward, **k: calls.append(self)
                        or _f(self, *a, **k))
    threads = npconv.get_num_threads()
    try:  # the planner's state changed: every kept plan is stale, every layer plans again
        npconv.set_num_threads(1 if threads > 1 else 2)
        got = _run(traced, x)
        assert len(calls) == sum(isinstance(m, (fused.ConvActivation, conv._Conv)) for m in model.modules()
                                 if not any(isinstance(p, fused.ConvActivation) and p.conv is m
                                            for p in model.modules()))
    finally:
        npconv.set_num_threads(threads)
    np.testing.assert_allclose(got, _torch(reference, x), rtol=2e-5, atol=2e-5 * np.abs(got).max())
    _run(traced, x)  # plans kept again
    calls.clear()
    _run(traced, x)
    assert calls == []
    # a parameter of another shape upstream: the next layer's input no longer fits its plan, and the
    # layer's own forward reports it (as the eager module does) instead of running the plan on it
    stem = model.stem[0].conv
    stem.weight.data = np.zeros((10, 3, 3, 3), np.float32)
    stem.bias.data = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match=r"expected input\[1, 10, 8, 8\] to have 8 channels"):
        _run(traced, x)


@needs_plans
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_a_program_runs_large_runs_of_layers_in_chunks_of_images(monkeypatch: pytest.MonkeyPatch, dtype: type,
                                                                   tolerance: float) -> None:
    """The program runs a run of convolutions and additions touching a large slot chunk by chunk of
    images (a ChunkedSequential traced through like a Sequential): the run's own slots hold one chunk,
    the last chunk may be smaller; results are torch's."""
    from npconv.nn.modules import fused

    monkeypatch.setattr(_replay, "FUSE_BLOCKS", False)  # its 8-column inverted blocks fuse on AVX2
    monkeypatch.setattr(fused, "CHUNK_ABOVE_BYTES", 1 << 12)
    monkeypatch.setattr(fused, "CHUNK_BYTES", 1 << 11)
    reference, ours = _pair(dtype)
    x = np.random.default_rng(11).standard_normal((5, 3, 16, 16)).astype(dtype)
    image = 8 * 8 * 16 * np.dtype(dtype).itemsize  # the largest slot per image: 16 channels at 8x8
    monkeypatch.setattr(_replay, "CHUNK_ABOVE_BYTES", 4 * image)
    monkeypatch.setattr(_replay, "CHUNK_BYTES", 2 * image)
    for model in (ours, npconv.optimize_for_inference(ours)):
        traced = npconv.jit.trace(model, npconv.tensor(x))
        _run(traced, x)
        program = traced._replay.program
        runs = list(program.chunked.values())
        if model is ours:  # batch norms between the convolutions: a run would be one layer, nothing to keep
            assert not runs
        else:  # the inverted blocks (the addition taken into a convolution), in chunks of 2, 2 and 1 images
            assert [run.images for run in runs] == [2] and len(runs[0].internal) >= 3
            assert all(program.buffers[i].shape[0] == 2 for i in runs[0].internal)
            assert len(program.ops) == len(program.steps) + 2 * (runs[0].stop - next(iter(program.chunked)))
        for seed in (12, 13):
            x = np.random.default_rng(seed).standard_normal(x.shape).astype(dtype)
            expected = _torch(reference, x)
            got = _run(traced, x)
            np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
        assert traced._replay.program is program


def test_jit_helpers_models_call() -> None:
    seen = []

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        @npconv.jit.ignore
        def helper(self, x):
            return x

        @npconv.jit.unused
        def unused_helper(self, x):
            return x

        def forward(self, x):
            seen.append((npconv.jit.is_tracing(), npconv.jit.is_scripting()))
            return self.conv(self.helper(self.unused_helper(x)))

    model = Branchy().eval()
    x = npconv.tensor(np.random.default_rng(14).standard_normal((1, 3, 4, 4)).astype(np.float32))
    model(x)
    npconv.jit.trace(model, x, check_trace=False)
    assert seen == [(False, False), (True, False)]
    assert npconv.jit.ignore(drop=True)(len) is len and npconv.jit.is_tracing() is False


def test_a_deep_copy_replays_its_own_parameters() -> None:
    import copy

    reference, ours = _pair(np.float64)
    x = np.random.default_rng(15).standard_normal((1, 3, 16, 16))
    traced = npconv.jit.trace(ours, npconv.tensor(x))
    before = _run(traced, x)
    twin = copy.deepcopy(traced)
    with npconv.no_grad():
        for parameter in twin.parameters():
            parameter.mul_(0.5)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.mul_(0.5)
    np.testing.assert_allclose(_run(twin, x), _torch(reference, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(_run(traced, x), before)


def test_other_threads_run_eagerly_while_one_traces() -> None:
    """Module calls, additions and value reads of another thread during a trace are that thread's own:
    not recorded, not refused."""
    import threading

    other = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()).eval()
    side = npconv.tensor(np.random.default_rng(16).standard_normal((1, 3, 4, 4)).astype(np.float32))
    with npconv.no_grad():
        expected = float((other(side) + side).sum())
    seen = []

    class SpawnsWork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            worker = threading.Thread(target=lambda: seen.append(float((other(side) + side).sum())))
            worker.start()
            worker.join()
            return self.conv(x)

    model = SpawnsWork().eval()
    x = npconv.tensor(np.random.default_rng(17).standard_normal((1, 3, 4, 4)).astype(np.float32))
    traced = npconv.jit.trace(model, x, check_trace=False)
    assert seen == [expected]
    assert traced.extra_repr().endswith("1 steps")


@needs_plans
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_calls_without_autograd_run_a_bound_program(dtype: type, tolerance: float,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """From the second call that records no autograd a traced module runs a program: the planned
    convolutions' kernel calls prepared once on buffers planned once (reused after a slot's last read),
    the additions into their buffers. Its results are torch's on new inputs; a returned tensor stays the
    caller's (the next call does not overwrite it); in-place changes of a weight are seen. (Its inverted
    blocks are not fused here, as on AVX2 they would be: test_a_program_fuses_inverted_residual_blocks.)"""
    monkeypatch.setattr(_replay, "FUSE_BLOCKS", False)
    reference, ours = _pair(dtype)
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 3, 16, 16)).astype(dtype)
    for model in (npconv.optimize_for_inference(ours), ours):
        traced = npconv.jit.trace(model, npconv.tensor(x))
        _run(traced, x)
        program = traced._replay.program
        kinds = [kind for kind, _ in program.ops]
        # the additions: into buffers where both operands have one (the unoptimized model's are batch
        # norms'), the optimized model's two taken into the convolutions whose output they add
        fused = sum(isinstance(step, _replay._ResidualStep) for step in program.steps)
        assert kinds.count(0) >= 5 and kinds.count(1) == 0 and fused == (0 if model is ours else 2)
        assert len({id(_replay._owner(b)) for b in program.buffers.values()}) < len(program.buffers)
        kept = []
        for seed in (21, 22, 23):
            x = np.random.default_rng(seed).standard_normal(x.shape).astype(dtype)
            kept.append((_run(traced, x), _torch(reference, x)))
            assert traced._replay.program is program
        for got, expected in kept:
            np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
    with npconv.no_grad(), torch.no_grad():  # the unoptimized model's convolution weights are its own
        ours.stem[0].weight.mul_(0.5)
        reference.stem[0].weight.mul_(0.5)
    expected = _torch(reference, x)
    got = _run(traced, x)
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
    assert traced._replay.program is program


def _views_of_convolutions(ns):  # noqa: ANN001, ANN202 (npconv.nn or torch.nn)
    """``flatten(conv1(x))`` read after ``conv2`` ran (a view of a buffer ``conv2``'s output must not
    take), and returned as it is (a view of a buffer the next call writes)."""

    class Views(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = ns.Conv2d(3, 4, 3, padding=1), ns.Conv2d(3, 4, 3, padding=1)
            self.conv3, self.linear = ns.Conv2d(4, 4, 1), ns.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            flat = self.conv1(x).flatten(1)  # an op step: its result is a view (a Flatten layer's is copied)
            return self.linear(flat), self.conv3(self.conv2(x)), flat

    return Views()


@needs_plans
def test_a_bound_program_keeps_views_of_its_buffers_valid() -> None:
    reference = _views_of_convolutions(torch.nn)
    model = _views_of_convolutions(nn).double()
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.double().state_dict().items()})
    x = np.random.default_rng(24).standard_normal((2, 3, 6, 6))
    traced = npconv.jit.trace(model, npconv.tensor(x))
    kept = []
    for seed in (25, 26, 27):
        x = np.random.default_rng(seed).standard_normal(x.shape)
        with npconv.no_grad():
            got = traced(npconv.tensor(x))
        with torch.no_grad():
            expected = reference(torch.from_numpy(x))
        kept.append((got, expected))
    assert sum(kind == 0 for kind, _ in traced._replay.program.ops) == 3
    for got, expected in kept:
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)


def _output_pairs(traced, reference, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:  # noqa: ANN001
    """``(npconv's, torch's)`` for each output of the traced module and its torch reference on ``x``."""
    with npconv.no_grad():
        got = traced(npconv.tensor(x))
    with torch.no_grad():
        expected = reference(torch.from_numpy(x))
    got, expected = (got, expected) if isinstance(got, tuple) else ((got,), (expected,))
    return [(g.numpy(), e.numpy()) for g, e in zip(got, expected, strict=True)]


def _outputs_match_torch(traced, reference, shape: tuple, seeds: tuple, atol: float) -> None:  # noqa: ANN001
    """The traced module's output(s) on new float64 inputs of ``shape``: torch's (rtol 1e-10)."""
    for seed in seeds:
        for g, e in _output_pairs(traced, reference, np.random.default_rng(seed).standard_normal(shape)):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=atol)


def _residual_flows(ns, variant: str):  # noqa: ANN001, ANN202 (npconv.nn or torch.nn)
    """A residual addition of a convolution's output and another tensor, and ways it must not fuse."""

    class Flows(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.conv = ns.Conv2d(3, 6, 3, padding=1), ns.Conv2d(6, 6, 1)
            self.relu = ns.ReLU()

        def forward(self, x):
            t = self.relu(self.stem(x))
            y = self.conv(t)
            if variant == "fuses":
                return self.relu(y + t)
            if variant == "in place":
                y += t
                return self.relu(y)
            if variant == "output too":  # y is returned as well: it must stay the convolution's
                return y + t, y
            if variant == "read between":  # y read before the addition
                s = self.relu(y)
                return y + t, s
            if variant == "read after":  # y read after a non-in-place addition
                z = y + t
                return z, y * 2.0
            t += 1.0  # "other changed": the residual operand changes between the two
            return y + t

    return Flows()


@needs_plans
@pytest.mark.parametrize("variant, fused", [("fuses", 1), ("in place", 1), ("output too", 0),
                                            ("read between", 0), ("read after", 0), ("other changed", 0)])
def test_a_residual_addition_is_taken_into_the_convolution_only_where_it_may_be(variant: str,
                                                                                fused: int) -> None:
    torch.manual_seed(60)
    reference = _residual_flows(torch.nn, variant).double().eval()
    model = _residual_flows(nn, variant).double()
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    model.eval()
    x = np.random.default_rng(61).standard_normal((2, 3, 9, 7))
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _outputs_match_torch(traced, reference, x.shape, (62, 63), atol=1e-10)
    program = traced._replay.program
    assert sum(isinstance(step, _replay._ResidualStep) for step in program.steps) == fused


def _winograd_block(ns):  # noqa: ANN001, ANN202 (npconv.nn or torch.nn)
    """A ResNet basic block of 3x3 convolutions (Winograd's layers) with BatchNorm and an identity."""

    class Block(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = ns.Conv2d(16, 16, 3, padding=1, bias=False), ns.BatchNorm2d(16)
            self.conv2, self.bn2 = ns.Conv2d(16, 16, 3, padding=1, bias=False), ns.BatchNorm2d(16)
            self.relu = ns.ReLU()

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += x
            return self.relu(out)

    return Block()


@needs_plans
@pytest.mark.parametrize("batch", [1, 2])
def test_a_winograd_convolution_takes_the_residual_addition(batch: int) -> None:
    """The block's second convolution runs on Winograd with the identity added (and ReLU applied) in its
    output transform: one residual step, torch's values; a NaN in the input reroutes both convolutions
    to the local algorithm, the NaN where torch puts it."""
    torch.manual_seed(64)
    reference = _winograd_block(torch.nn).double().eval()
    for bn in (reference.bn1, reference.bn2):
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    model = _winograd_block(nn).double()
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    model = npconv.optimize_for_inference(model.eval())
    x = np.random.default_rng(65).standard_normal((batch, 16, 12, 12))
    with npconv.backends.conv.force("winograd"):
        traced = npconv.jit.trace(model, npconv.tensor(x))
        _outputs_match_torch(traced, reference, x.shape, (66, 67), atol=1e-10)
        program = traced._replay.program
        assert sum(isinstance(step, _replay._ResidualStep) for step in program.steps) == 1
        x[0, 3, 5, 6] = np.nan
        got = traced(npconv.tensor(x)).numpy()
        expected = reference(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-10, atol=1e-10)


def _pooled_head(ns):  # noqa: ANN001, ANN202 (npconv.nn or torch.nn)
    """A stem, max pooling, a 1-d branch's global pooling, global pooling of the main branch and a
    classifier."""

    class Head(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = ns.Conv2d(3, 8, 3, 2, 1)
            self.pool = ns.MaxPool2d(3, 2, 1)
            self.pool1d = ns.MaxPool1d(2, ceil_mode=True)
            self.mean1d = ns.AdaptiveAvgPool1d(1)
            self.mean = ns.AdaptiveAvgPool2d((1, 1))
            self.flatten = ns.Flatten(1)
            self.fc = ns.Linear(8, 7)

        def forward(self, x):
            y = self.pool(self.conv(x))
            side = self.mean1d(self.pool1d(y.flatten(2)))
            return self.fc(self.flatten(self.mean(y))) + self.flatten(side).mean(1, keepdim=True), side

    return Head()


@needs_plans
@pytest.mark.parametrize("dtype, tolerance, batch", [(np.float64, 1e-10, 1), (np.float32, 2e-5, 1),
                                                     (np.float32, 2e-5, 3)])
def test_a_program_runs_pooling_and_a_few_rows_linear_layer_as_prepared_kernel_calls(
        monkeypatch: pytest.MonkeyPatch, dtype: type, tolerance: float, batch: int) -> None:
    """Max pooling, global average pooling, a linear layer of a few rows (float64: one) and a flatten (a
    copy) run as kernel calls prepared on the program's buffers (no module call), with the layers'
    results: torch's; an in-place change of the linear weight is seen, a new weight array or another
    thread count builds a new program."""
    from npconv.kernels import dense, pool

    monkeypatch.setattr(dense, "FEW_ROWS_MIN_WEIGHT", 0)  # the tiny classifier takes the few-rows kernel
    monkeypatch.setattr(pool, "GLOBAL_MEANS_PARALLEL_MIN", 0)
    torch.manual_seed(50)
    reference = _pooled_head(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    model = _pooled_head(nn)
    model = model.double() if dtype == np.float64 else model
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    model.eval()
    rng = np.random.default_rng(51)
    x = rng.standard_normal((batch, 3, 20, 18)).astype(dtype)
    traced = npconv.jit.trace(model, npconv.tensor(x))

    def check() -> None:
        x = rng.standard_normal((batch, 3, 20, 18)).astype(dtype)
        with npconv.no_grad():
            got = [g.numpy() for g in traced(npconv.tensor(x))]
        with torch.no_grad():
            expected = [e.numpy() for e in reference(torch.from_numpy(x))]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=tolerance, atol=tolerance * np.abs(e).max())

    check()
    program = traced._replay.program
    generic = [type(op[0].run.__self__).__name__ for kind, op in program.ops
               if kind == 2 and hasattr(op[0], "run")]
    assert sum(kind == 0 for kind, _ in program.ops) == 8  # conv, 4 pools, 2 flattens, linear
    assert not {"MaxPool2d", "MaxPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool1d", "Flatten", "Linear"} & {
        *generic}
    check()
    with npconv.no_grad(), torch.no_grad():
        model.fc.weight.mul_(-2.0)
        reference.fc.weight.mul_(-2.0)
    check()
    assert traced._replay.program is program
    model.fc.weight.data = model.fc.weight.numpy() * 0.5
    reference.fc.weight.data = reference.fc.weight.data * 0.5
    check()
    assert traced._replay.program is not program
    program = traced._replay.program
    threads = npconv.get_num_threads()
    try:
        npconv.set_num_threads(1 if threads > 1 else 2)
        check()
        assert traced._replay.program is not program
    finally:
        npconv.set_num_threads(threads)


@needs_plans
def test_a_bound_program_is_dropped_when_its_plans_change_and_serves_one_thread_at_a_time() -> None:
    import threading

    reference, ours = _pair(np.float32)
    model = npconv.optimize_for_inference(ours)
    inputs = [np.random.default_rng(s).standard_normal((1, 3, 16, 16)).astype(np.float32)
              for s in range(30, 36)]
    expected = [_torch(reference, x) for x in inputs]
    traced = npconv.jit.trace(model, npconv.tensor(inputs[0]))
    _run(traced, inputs[0])
    program = traced._replay.program
    threads = npconv.get_num_threads()
    try:  # the planner's state changed: the program is dropped, the steps plan again, a new one is built
        npconv.set_num_threads(1 if threads > 1 else 2)
        np.testing.assert_allclose(_run(traced, inputs[1]), expected[1], rtol=2e-5,
                                   atol=2e-5 * np.abs(expected[1]).max())
        assert traced._replay.program is not program and traced._replay.program is not None
    finally:
        npconv.set_num_threads(threads)
    errors = []

    def work(k: int) -> None:
        for _ in range(15):
            for i in range(k, len(inputs), 2):
                got = _run(traced, inputs[i])
                if not np.allclose(got, expected[i], rtol=2e-5, atol=2e-5 * np.abs(expected[i]).max()):
                    errors.append(i)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []


def _activation_flows(ns):  # noqa: ANN001, ANN202 (npconv.nn or torch.nn)
    """Convolution outputs and sums an activation reads alone (fused), read by others too, returned."""

    class Flows(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = ns.Conv2d(3, 4, 3, padding=1), ns.Conv2d(4, 4, 3, padding=1)
            self.conv3, self.conv4 = ns.Conv2d(4, 4, 1), ns.Conv2d(4, 4, 3, padding=1, bias=False)
            self.conv5, self.bn = ns.Conv2d(4, 4, 1), ns.BatchNorm2d(4)
            self.relu, self.relu6, self.in_place = ns.ReLU(), ns.ReLU6(), ns.ReLU(inplace=True)

        def forward(self, x):
            y = self.relu6(self.conv1(x))  # fused
            z = self.conv2(y)
            a = self.relu(z)  # not fused: z is read again below
            b = self.conv3(a) + z
            h = self.relu(b)  # not fused: b is read below
            c = self.conv4(b)
            self.in_place(c)  # fused: the reads after an in-place activation see its values
            e = self.conv5(c)
            f = self.conv3(e)
            self.in_place(e)  # not fused: conv3 read e before
            k = self.relu6(f + e)  # taken by the addition
            d = self.conv3(self.bn(c) + c + k)
            return self.relu(d), d, h  # not fused: d is returned

    return Flows()


def test_trace_fuses_an_activation_that_alone_reads_a_convolution_or_a_sum() -> None:
    torch.manual_seed(28)
    reference = _activation_flows(torch.nn).double().eval()
    model = _activation_flows(nn).double().eval()
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(29).standard_normal((2, 3, 7, 6))
    traced = npconv.jit.trace(model, npconv.tensor(x))
    from npconv.nn.modules.fused import ConvActivation

    fused = [s for s in traced._steps
             if isinstance(s, jit._LayerStep) and isinstance(jit._layer(s), ConvActivation)]
    assert len(fused) == 2 and len(traced._steps) == 16
    adds = [s for s in traced._steps if isinstance(s, jit._AddStep)]
    assert [s.activation is not None for s in adds] == [False, True, False, False]
    _outputs_match_torch(traced, reference, x.shape, (30, 31), atol=1e-12)


def test_a_step_writing_into_the_input_writes_into_the_callers_tensor() -> None:
    """``ReLU(inplace=True)`` on the input, then a convolution: every call changes the caller's tensor,
    as the eager module does (no program copies the input for it)."""
    torch.manual_seed(32)
    reference = torch.nn.Sequential(torch.nn.ReLU(inplace=True), torch.nn.Conv2d(3, 4, 3)).double()
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3)).double()
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    example = np.random.default_rng(33).standard_normal((1, 3, 6, 6))
    traced = npconv.jit.trace(model, npconv.tensor(example))
    for seed in (34, 35, 36):
        x = np.random.default_rng(seed).standard_normal((1, 3, 6, 6))
        ours, theirs = npconv.tensor(x.copy()), torch.from_numpy(x.copy())
        with npconv.no_grad(), torch.no_grad():
            got, expected = traced(ours).numpy(), reference(theirs).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@needs_plans
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_program_even_if_its_lock_was_held_at_the_fork() -> None:
    reference, ours = _pair(np.float32)
    model = npconv.optimize_for_inference(ours)
    x = np.random.default_rng(37).standard_normal((1, 3, 16, 16)).astype(np.float32)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _run(traced, x)
    expected = _torch(reference, x)

    def child() -> bool:
        ran = []
        real = _replay._Program.run
        _replay._Program.run = lambda self, inputs: (ran.append(1), real(self, inputs))[1]
        got = _run(traced, x)
        return ran == [1] and np.allclose(got, expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())

    assert forked_check(traced._replay.lock, child)  # as if another thread of the parent ran the program


def test_a_program_reports_a_changed_parameter_of_a_layer_it_runs_as_a_step() -> None:
    """A Linear weight of another shape or dtype after the program was built: the call reports it as
    the eager module does."""
    _, ours = _pair(np.float32)
    model = npconv.optimize_for_inference(ours)
    x = np.random.default_rng(38).standard_normal((2, 3, 16, 16)).astype(np.float32)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _run(traced, x)
    linear = model.head[1]
    for weight, error, message in [(np.zeros((5, 17), np.float32), ValueError, "mat1 and mat2 shapes cannot"),
                                   (np.zeros((5, 16)), TypeError, r"input type \(float32\) and weight type")]:
        kept = linear.weight.data
        linear.weight.data = weight
        with pytest.raises(error, match=message):
            _run(traced, x)
        with pytest.raises(error, match=message):
            _run(model, x)
        linear.weight.data = kept


def _functional_style(lib):  # noqa: ANN001, ANN202 (npconv or torch)
    """A forward written with functional ops and tensor methods between its layers."""
    F = lib.nn.functional

    class Functional(lib.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = lib.nn.Conv2d(3, 6, 3, padding=1), lib.nn.Conv2d(6, 8, 3)
            self.conv3 = lib.nn.Conv2d(16, 8, 1, bias=False)
            self.fc1, self.fc2 = lib.nn.Linear(8 * 3 * 3, 10), lib.nn.Linear(8, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))  # taken into conv1
            x = F.max_pool2d(x, 2)
            y = self.conv2(x)
            z = lib.cat([lib.sigmoid(y), F.relu6(y)], 1)  # y read twice: not taken
            z = self.conv3(z)
            z = F.hardtanh(z, -0.5, 0.5)  # taken into conv3
            flat = z.reshape(z.size(0), -1)
            head = F.log_softmax(self.fc1(flat), dim=1)
            pooled = lib.flatten(F.adaptive_avg_pool2d(z, 1), 1) * 0.5 - z.mean((2, 3)) / 3
            pooled = pooled + -flat[:, :8]
            return head, self.fc2(lib.tanh(pooled)).permute(1, 0).contiguous()

    return Functional()


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_trace_records_functional_ops_between_layers(dtype: type, tolerance: float) -> None:
    """``F.relu``, ``F.max_pool2d``, ``torch.cat``, ``torch.sigmoid``, ``F.relu6``, ``F.hardtanh``,
    ``reshape``/``size``, ``F.log_softmax``, ``torch.flatten``, ``F.adaptive_avg_pool2d``, ``mean``,
    ``tanh``, ``permute``, ``contiguous``, products, differences, quotients, negation, indexing:
    recorded as steps and replayed as torch computes them; an
    activation op that alone reads a convolution's output runs in its output pass."""
    torch.manual_seed(39)
    reference = _functional_style(torch).to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    model = _functional_style(npconv).eval()
    if dtype == np.float64:
        model = model.double()
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(40).standard_normal((2, 3, 10, 10)).astype(dtype)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    from npconv.nn.modules.fused import ConvActivation

    fused = [s for s in traced._steps
             if isinstance(s, jit._LayerStep) and isinstance(jit._layer(s), ConvActivation)]
    assert len(fused) == 2
    for seed in (41, 42, 43):
        x = np.random.default_rng(seed).standard_normal(x.shape).astype(dtype)
        with npconv.no_grad():
            got = traced(npconv.tensor(x))
        with torch.no_grad():
            expected = reference(torch.from_numpy(x))
        for g, e in zip(got, expected, strict=True):
            e = e.numpy()
            np.testing.assert_allclose(g.numpy(), e, rtol=tolerance, atol=tolerance * np.abs(e).max())
    assert npconv.backends.core.module is None or traced._replay.program is not None
    xt = torch.from_numpy(x.copy()).requires_grad_()  # gradients through the recorded ops
    sum(o.square().sum() for o in reference(xt)).backward()
    xn = npconv.tensor(x.copy(), requires_grad=True)
    sum(o.square().sum() for o in traced(xn)).backward()
    np.testing.assert_allclose(xn.grad.numpy(), xt.grad.numpy(), rtol=tolerance * 10,
                               atol=tolerance * 10 * np.abs(xt.grad.numpy()).max())


def test_trace_still_refuses_ops_it_does_not_record() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return npconv.nn.functional.relu(self.conv(x).exp())  # the exponential is not recorded

    with pytest.raises(npconv.jit.TracerError, match="relu was not made by a recorded"):
        npconv.jit.trace(Scaled().eval(), npconv.tensor(np.ones((1, 3, 4, 4), np.float32)))


def _random_graph(lib, spec: list[tuple], channels: int):  # noqa: ANN001, ANN202 (npconv or torch)
    """A forward interpreting ``spec``: each entry ``(op, i, j)`` appends a tensor made from earlier
    ones (``i``, ``j`` index the tensors so far, the input first); the last entry lists the outputs."""
    F = lib.nn.functional

    class Graph(lib.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = lib.nn.ModuleList(
                [lib.nn.Conv2d(2 * channels if op == "cat" else channels, channels, 3 if op == "conv3" else 1,
                               padding=1 if op == "conv3" else 0) for op, _, _ in spec[:-1]])
            self.relu, self.relu_ = lib.nn.ReLU(), lib.nn.ReLU(inplace=True)

        def forward(self, x):
            values = [x]
            for k, (op, i, j) in enumerate(spec[:-1]):
                a, b = values[i % len(values)], values[j % len(values)]
                if op in ("conv1", "conv3"):
                    y = self.convs[k](a)
                elif op == "cat":
                    y = self.convs[k](lib.cat([a, b], 1))
                elif op == "relu":
                    y = self.relu(a)
                elif op == "frelu":
                    y = F.relu(a)
                elif op == "relu_" and i % len(values):  # not the input: it is the caller's
                    y = self.relu_(a)
                elif op == "add":
                    y = a + b
                elif op == "add_" and i % len(values):
                    a += b
                    y = a
                elif op == "pool":
                    y = F.max_pool2d(a, 3, 1, 1)
                else:
                    y = a * 0.5 - b
                values.append(y)
            return tuple(values[i % len(values)] for i in spec[-1])

    return Graph()


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_graphs_replay_as_torch(data) -> None:  # noqa: ANN001
    """Random data flows of convolutions, activations (layers, ops, in place), additions (in place
    too), concatenations, pooling and arithmetic, several outputs: the bound program's results are
    torch's on three new inputs (the arena's buffer reuse, views, fusions and in-place steps; runs
    of convolutions and additions in chunks of one or two images of three, or none)."""
    ops = ["conv1", "conv3", "cat", "relu", "frelu", "relu_", "add", "add_", "pool", "mix"]
    size = data.draw(st.integers(2, 9))
    spec = [(data.draw(st.sampled_from(ops)), data.draw(st.integers(0, 20)), data.draw(st.integers(0, 20)))
            for _ in range(size)]
    spec.append(tuple(data.draw(st.lists(st.integers(1, 20), min_size=1, max_size=3))))
    torch.manual_seed(44)
    reference = _random_graph(torch, spec, 3).double()
    model = _random_graph(npconv, spec, 3).double()
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    example = np.random.default_rng(45).standard_normal((3, 3, 6, 5))
    chunk = data.draw(st.sampled_from([None, 720, 1440, 2160]))  # bytes: an image of 3 channels is 720
    kept = _replay.CHUNK_ABOVE_BYTES, _replay.CHUNK_BYTES
    try:
        if chunk is not None:
            _replay.CHUNK_ABOVE_BYTES, _replay.CHUNK_BYTES = 0, chunk
        traced = npconv.jit.trace(model, npconv.tensor(example.copy()))
    finally:
        _replay.CHUNK_ABOVE_BYTES, _replay.CHUNK_BYTES = kept
    for seed in (46, 47, 48):
        x = np.random.default_rng(seed).standard_normal(example.shape)
        with npconv.no_grad():
            got = [g.numpy().copy() for g in traced(npconv.tensor(x.copy()))]
        with torch.no_grad():
            expected = [e.numpy() for e in reference(torch.from_numpy(x.copy()))]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(e).max()),
                                       err_msg=str(spec))


def _inverted_residuals(ns, variant: str = "fuses", stem_stride: int = 1, act: str = "ReLU6"):  # noqa: ANN001, ANN202
    """MobileNetV2's inverted residual blocks (npconv.nn or torch.nn): one without an expansion, a strided
    one, one with a residual, after a 3x3 stem of ``stem_stride`` (2: MobileNetV2's, which the first block
    can take in); ``variant`` returns the last block's depthwise or expansion output too (``"depthwise
    read"``, ``"expansion read"``: those must keep the block's layers apart); ``act`` the activation
    layer (``"SiLU"``: EfficientNet's MBConv without its squeeze-excitation)."""
    relu6 = getattr(ns, act)

    class Block(ns.Module):
        def __init__(self, cin: int, cout: int, stride: int, ratio: int, read: str = "") -> None:
            super().__init__()
            hidden = cin * ratio
            self.expand = None
            if ratio > 1:
                self.expand = ns.Sequential(ns.Conv2d(cin, hidden, 1, bias=False), ns.BatchNorm2d(hidden),
                                            relu6())
            self.depthwise = ns.Sequential(ns.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                           ns.BatchNorm2d(hidden), relu6())
            self.project = ns.Sequential(ns.Conv2d(hidden, cout, 1, bias=False), ns.BatchNorm2d(cout))
            self.residual, self.read = stride == 1 and cin == cout, read

        def forward(self, x):
            t = x if self.expand is None else self.expand(x)
            d = self.depthwise(t)
            y = x + self.project(d) if self.residual else self.project(d)
            if self.read == "depthwise read":
                return y, d * 2.0
            return (y, t * 2.0) if self.read == "expansion read" else y

    class Net(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = ns.Sequential(ns.Conv2d(3, 8, 3, stem_stride, 1, bias=False), ns.BatchNorm2d(8),
                                      relu6())
            mid = 8 if stem_stride == 1 else 6  # after a strided stem no residual: the stem's output its own
            self.first, self.strided = Block(8, mid, 1, 1), Block(mid, 12, 2, 4)
            self.last = Block(12, 12, 1, 3, "" if variant == "fuses" else variant)
            self.head = ns.Conv2d(12, 6, 1)

        def forward(self, x):
            y = self.last(self.strided(self.first(self.stem(x))))
            return self.head(y) if variant == "fuses" else (self.head(y[0]), y[1])

    return Net()


def _block_pair(variant: str = "fuses", stem_stride: int = 1, act: str = "ReLU6"):  # noqa: ANN202
    """The blocks in torch (float32, eval, random BatchNorm statistics) and in npconv optimized."""
    torch.manual_seed(70)
    reference = _inverted_residuals(torch.nn, variant, stem_stride, act)
    _randomize_batchnorm(reference, 71)
    reference.eval()
    ours = _inverted_residuals(nn, variant, stem_stride, act)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    return reference, npconv.optimize_for_inference(ours.eval())


def _fused_blocks(traced) -> list:  # noqa: ANN001
    return [step for step in traced._replay.program.steps if isinstance(step, _replay._BlockStep)]


def _vector_rows(width: int, stride: int) -> bool:
    """Whether the ISA variant in use fuses a block whose depthwise output rows are ``width`` wide."""
    isa = npconv.backends.core.isa
    lanes = {"avx512": 16, "avx2": 8}.get(isa, 0)
    if lanes == 0 or width < compiled_block.MIN_COLUMNS.get(isa, 16):
        return False
    if width >= lanes:
        return stride == 1 or lanes >= 16 or width >= 2 * lanes
    return lanes >= 16 and width >= 4


def _close_to_torch(traced, reference, shape: tuple, seeds: tuple) -> None:  # noqa: ANN001
    """The traced module's output(s) on new float32 inputs: within 2e-6 of torch's, norm-relative."""
    for seed in seeds:
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        for g, e in _output_pairs(traced, reference, x):
            assert np.linalg.norm(g - e) <= 2e-6 * np.linalg.norm(e)


@needs_plans
@pytest.mark.parametrize("batch, act", [(1, "ReLU6"), (2, "ReLU6"), (3, "ReLU6"), (1, "SiLU"), (3, "SiLU")])
def test_a_program_fuses_inverted_residual_blocks(batch: int, act: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reference, model = _block_pair(act=act)
    shape = (batch, 3, 20, 34)
    x = np.random.default_rng(72).standard_normal(shape).astype(np.float32)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _close_to_torch(traced, reference, shape, (73, 74))
    blocks = _fused_blocks(traced)
    expected = [(None, 1, True)] * _vector_rows(34, 1) + [(True, 2, False)] * _vector_rows(17, 2) \
        + [(True, 1, True)] * _vector_rows(17, 1)
    assert [(block.stages[0] and True, block.stride, block.other is not None) for block in blocks] == expected
    monkeypatch.setattr(_replay, "FUSE_BLOCKS", False)
    unfused = npconv.jit.trace(model, npconv.tensor(x))
    _close_to_torch(unfused, reference, shape, (73,))
    assert _fused_blocks(unfused) == []
    monkeypatch.setattr(_replay, "FUSE_BLOCKS", True)
    if not blocks:
        return
    # the fused kernel reads the parameters' arrays: an in-place change is seen, a new array rebuilds
    project = model.last.project[0]  # the folded convolution
    with torch.no_grad():  # BatchNorm's output halved: the folded weight and bias halve
        reference.last.project[1].weight.mul_(0.5)
        reference.last.project[1].bias.mul_(0.5)
    project.weight.data.numpy()[...] *= 0.5
    project.bias.data.numpy()[...] *= 0.5
    program = traced._replay.program
    _close_to_torch(traced, reference, shape, (75,))
    assert traced._replay.program is program
    project.weight.data = project.weight.data.numpy() * 1.0
    _close_to_torch(traced, reference, shape, (76,))
    assert traced._replay.program is not program


@needs_plans
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_a_program_fuses_a_strided_stem_into_the_first_block(batch: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """MobileNetV2's stem (3x3, stride 2) becomes the first block's expansion on the variants that take it
    (``compiled_block.STEM_ISAS``); elsewhere, and with ``FUSE_STEMS`` off, the block fuses without it.
    Either way within float32 of torch, and an in-place change of the stem's weight is seen."""
    reference, model = _block_pair(stem_stride=2)
    shape = (batch, 3, 40, 67)  # the stem's output: 20 x 34
    x = np.random.default_rng(80).standard_normal(shape).astype(np.float32)
    stems = npconv.backends.core.isa in compiled_block.STEM_ISAS and _vector_rows(34, 1)
    for fuse in (True, False):
        monkeypatch.setattr(_replay, "FUSE_STEMS", fuse)
        traced = npconv.jit.trace(model, npconv.tensor(x))
        _close_to_torch(traced, reference, shape, (81, 82))
        first = [b for b in _fused_blocks(traced) if b.stride == 1][:1]  # the one without an expansion
        assert len(first) == _vector_rows(34, 1)
        if first:
            expand = first[0].stages[0]
            assert (expand is not None and expand.weight.shape == (8, 3, 3, 3)) == (fuse and stems)
            assert expand is None or fuse
    monkeypatch.setattr(_replay, "FUSE_STEMS", True)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    program = traced._replay.program
    with torch.no_grad():  # the stem's BatchNorm output halved: its folded weight and bias halve
        reference.stem[1].weight.mul_(0.5)
        reference.stem[1].bias.mul_(0.5)
    stem = model.stem[0].conv  # the folded convolution
    stem.weight.data.numpy()[...] *= 0.5
    stem.bias.data.numpy()[...] *= 0.5
    _close_to_torch(traced, reference, shape, (83,))
    assert traced._replay.program is program


@needs_plans
@pytest.mark.parametrize("variant, expansions", [("depthwise read", [False, True]),
                                                 ("expansion read", [False, True, False])])
def test_a_block_is_fused_only_where_its_inner_tensors_are_its_own(variant: str, expansions: list) -> None:
    reference, model = _block_pair(variant)
    shape = (1, 3, 34, 34)
    x = np.random.default_rng(77).standard_normal(shape).astype(np.float32)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _close_to_torch(traced, reference, shape, (78, 79))
    if npconv.backends.core.isa not in ("avx512", "avx2"):
        assert _fused_blocks(traced) == []
        return
    # the last block: not fused where its depthwise output is read; without its expansion where that is
    assert [block.stages[0] is not None for block in _fused_blocks(traced)] == expansions


@needs_plans
def test_a_fused_program_follows_the_thread_count_and_the_isa() -> None:
    reference, model = _block_pair()
    shape = (1, 3, 20, 34)
    x = np.random.default_rng(80).standard_normal(shape).astype(np.float32)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _close_to_torch(traced, reference, shape, (81,))
    threads, isa = npconv.get_num_threads(), npconv.backends.core.isa
    try:
        for count in (1, 2, 3):
            npconv.set_num_threads(count)
            _close_to_torch(traced, reference, shape, (82, 83))
        for variant in npconv.backends.core.isas:
            npconv.backends.core.isa = variant
            _close_to_torch(traced, reference, shape, (84,))
            fusable = _vector_rows(34, 1) + _vector_rows(17, 2) + _vector_rows(17, 1)
            assert len(_fused_blocks(traced)) == fusable
    finally:
        npconv.set_num_threads(threads)
        npconv.backends.core.isa = isa


@needs_plans
def test_a_program_fuses_blocks_of_narrow_rows() -> None:
    """Rows of 14 columns (the strided block's and the last one's) fuse on AVX-512 as one vector per
    row; AVX2 fuses rows from 16 columns (compiled_block.MIN_COLUMNS)."""
    reference, model = _block_pair()
    shape = (2, 3, 12, 28)
    x = np.random.default_rng(85).standard_normal(shape).astype(np.float32)
    traced = npconv.jit.trace(model, npconv.tensor(x))
    _close_to_torch(traced, reference, shape, (86, 87))
    fused = [(block.stride, block.other is not None) for block in _fused_blocks(traced)]
    expected = [(1, True)] * _vector_rows(28, 1) + [(2, False)] * _vector_rows(14, 2) \
        + [(1, True)] * _vector_rows(14, 1)
    assert fused == expected


def _resampling_net(ns):  # noqa: ANN001, ANN202 (npconv.nn or torch.nn)
    """A small U-Net-like model: padding layers, GroupNorm/InstanceNorm/LayerNorm, max pooling,
    Upsample, PixelShuffle/Unshuffle, a concatenation, F.interpolate and F.pad."""
    functional = ns.functional
    cat = npconv.cat if ns is nn else torch.cat

    class Net(ns.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pad = ns.ReflectionPad2d(1)
            self.enc = ns.Sequential(ns.Conv2d(3, 8, 3), ns.GroupNorm(2, 8), ns.ReLU())
            self.down = ns.Sequential(ns.MaxPool2d(2), ns.Conv2d(8, 16, 3, padding=1),
                                      ns.InstanceNorm2d(16, affine=True), ns.SiLU())
            self.up = ns.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.squeeze = ns.Sequential(ns.PixelUnshuffle(2), ns.PixelShuffle(2), ns.ZeroPad2d((1, 0, 0, 1)),
                                         ns.ReplicationPad2d((0, 1, 1, 0)))
            self.dec = ns.Conv2d(24, 4, 3, padding=1)
            self.norm = ns.LayerNorm([4, 16, 16])

        def forward(self, x):  # noqa: ANN001, ANN202
            e = self.enc(self.pad(x))
            u = cat([self.up(self.down(e)), self.squeeze(e)[..., 1:-1, 1:-1]], 1)
            y = self.dec(u)
            padded = functional.pad(y, (1, 1, 1, 1), mode="reflect")
            y = functional.interpolate(padded, size=(16, 16), mode="nearest") + y
            return self.norm(y)

    return Net()


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_trace_replays_resampling_normalisation_and_padding_layers_as_torch(dtype: type,
                                                                            tolerance: float) -> None:
    torch.manual_seed(5)
    reference = _resampling_net(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    ours = _resampling_net(nn)
    ours = (ours.double() if dtype == np.float64 else ours).eval()
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})
    rng = np.random.default_rng(6)
    example = rng.standard_normal((2, 3, 16, 16)).astype(dtype)
    traced = npconv.jit.trace(ours, npconv.tensor(example))
    for _ in range(3):  # the recording call's steps, then the bound program
        x = rng.standard_normal(example.shape).astype(dtype)
        expected = _torch(reference, x)
        np.testing.assert_allclose(_run(traced, x), expected, rtol=tolerance,
                                   atol=tolerance * np.abs(expected).max())
    x = rng.standard_normal(example.shape)
    if dtype == np.float64:  # with autograd: each layer through its forward, torch's gradients
        xt = torch.from_numpy(x.copy()).requires_grad_()
        reference(xt).square().sum().backward()
        xn = npconv.tensor(x.copy(), requires_grad=True)
        traced(xn).square().sum().backward()
        np.testing.assert_allclose(xn.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    ours.train()
    with pytest.raises(jit.TracerError, match="InstanceNorm2d is in training mode"):
        npconv.jit.trace(ours, npconv.tensor(example))
