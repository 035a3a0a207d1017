"""npconv.optimize_for_inference: BatchNorm folded into convolutions, activations fused; outputs
against the unfused model (NumPy only) and against torch's eval-mode model."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import npconv
from npconv import nn
from npconv.kernels import pointwise


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics (fresh ones make BN nearly an identity)."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            n = module.num_features
            if module.running_mean is not None:
                module.running_mean.numpy()[...] = rng.standard_normal(n) * 0.5
                module.running_var.numpy()[...] = rng.random(n) + 0.5
            if module.weight is not None:
                module.weight.numpy()[...] = rng.random(n) + 0.5
                module.bias.numpy()[...] = rng.standard_normal(n) * 0.3
    return model


def _outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with npconv.no_grad():
        return model(npconv.tensor(x)).numpy()


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock naming: conv1/bn1, conv2/bn2, a shared relu, a downsample."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


def small_network(nn=nn) -> object:  # noqa: ANN001 (npconv.nn or torch.nn)
    block = BasicBlock if nn is npconv.nn else None
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
              nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
              nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6), nn.SiLU(),
              nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
              nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)]
    if block is not None:
        layers.append(block(6, 10, 2))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_the_unfused_model(dtype):
    model = _randomize(small_network()).to(dtype).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 11, 9)).astype(dtype)
    expected = _outputs(model, x)
    optimized = npconv.optimize_for_inference(model)
    got = _outputs(optimized, x)
    assert got.dtype == dtype
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    assert np.linalg.norm(got - expected) <= tolerance * np.linalg.norm(expected)


def test_what_is_fused_and_what_is_left():
    model = _randomize(small_network()).train()
    optimized = npconv.optimize_for_inference(model)
    kinds = [type(m).__name__ for m in optimized]
    assert kinds == ["ConvActivation", "Identity", "Identity"] * 3 + [
        "ConvActivation", "Identity", "Conv2d", "Identity", "BasicBlock"]
    assert [type(optimized[i].activation).__name__ for i in (0, 3, 6, 9)] == ["ReLU", "ReLU6", "SiLU", "ReLU"]
    block = optimized[13]
    # named pairs folded; the shared relu stays (it also runs after the residual add)
    assert isinstance(block.bn1, nn.Identity) and isinstance(block.bn2, nn.Identity)
    assert isinstance(block.conv1, nn.Conv2d) and block.conv1.bias is not None
    assert isinstance(block.relu, nn.ReLU)
    assert isinstance(block.downsample[0], nn.Conv2d) and isinstance(block.downsample[1], nn.Identity)
    assert not optimized.training and not any(p.requires_grad for p in optimized.parameters())
    # the argument is untouched
    assert model.training and isinstance(model[1], nn.BatchNorm2d) and model[0].weight.requires_grad


def test_leaves_what_it_cannot_fuse():
    class Custom(nn.Sequential):  # its own forward: the dataflow is not the Sequential's
        def forward(self, x):
            return self[1](self[0](x) * 2)

    untracked = nn.BatchNorm2d(4, track_running_stats=False)  # normalises with batch statistics
    hooked = nn.Conv2d(4, 4, 1)
    hooked.register_forward_hook(lambda *args: None)
    model = nn.Sequential(
        Custom(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),
        nn.Conv2d(4, 4, 1), untracked, nn.ReLU(),
        hooked, nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(5 - 1), nn.Tanh(),
        nn.ConvTranspose2d(4, 4, 3, groups=2), nn.BatchNorm2d(4),  # grouped transposed: BN kept
    )
    model = _randomize(model).eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 5))
    model = model.double()
    optimized = npconv.optimize_for_inference(model)
    assert isinstance(optimized[0][1], nn.BatchNorm2d)
    assert type(optimized[1]).__name__ == "Conv2d" and optimized[2] is not None
    assert isinstance(optimized[2], nn.BatchNorm2d) and isinstance(optimized[3], nn.ReLU)
    assert isinstance(optimized[5], nn.BatchNorm2d)  # its conv has a hook
    assert isinstance(optimized[7], nn.Identity) and isinstance(optimized[8], nn.Tanh)  # Tanh not fusable
    assert isinstance(optimized[10], nn.BatchNorm2d)
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(model, x), rtol=1e-12, atol=1e-12)


def test_named_pairs_need_matching_suffixes():
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_a = nn.Conv2d(2, 3, 1)
            self.norm = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.norm(self.conv_a(x))

    optimized = npconv.optimize_for_inference(Named())
    assert isinstance(optimized.norm, nn.BatchNorm2d)


class PreActivationBlock(nn.Module):
    """A pre-activation ResNet block: torchvision's names, but bn1 normalises the block's input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(nn.functional.relu(self.bn1(x)))
        return x + self.conv2(nn.functional.relu(self.bn2(out)))


class StatementBlock(nn.Module):
    """torchvision's own statement style, its forward delegating to a method (as ResNet does)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self._forward_impl(x)

    def _forward_impl(self, x):
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        if out.shape[0] > 0:
            y = self.conv2(out)  # conv2 runs twice, once without bn2: bn2 is not folded
            h = self.conv3(out)
            g = self.bn3(h)  # another name: conv3's own output is used too, bn3 is not folded
            return self.bn2(self.conv2(out)) + y + g + h


def test_named_pairs_follow_the_forward_not_the_names():
    """A pair is folded only where forward provably applies bn<S> to conv<S>'s output alone: a
    pre-activation block (bn before conv), a conv output also used unnormalised, and a forward
    whose source cannot be read keep their BatchNorms; the outputs stay the model's."""
    x = np.random.default_rng(6).standard_normal((2, 4, 6, 6))
    pre = _randomize(PreActivationBlock(4)).double().eval()
    optimized = npconv.optimize_for_inference(pre)
    assert isinstance(optimized.bn1, nn.BatchNorm2d) and isinstance(optimized.bn2, nn.BatchNorm2d)
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(pre, x), rtol=1e-12, atol=1e-12)
    statements = _randomize(StatementBlock(4)).double().eval()
    optimized = npconv.optimize_for_inference(statements)
    # relu runs on bn1's output alone: fused into conv1 too
    assert isinstance(optimized.bn1, nn.Identity) and isinstance(optimized.relu, nn.Identity)
    assert isinstance(optimized.conv1, nn.ConvActivation) and optimized.conv1.conv.bias is not None
    assert isinstance(optimized.bn2, nn.BatchNorm2d) and isinstance(optimized.bn3, nn.BatchNorm2d)
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(statements, x), rtol=1e-12, atol=1e-12)
    namespace: dict = {"nn": nn}
    exec("class Unreadable(nn.Module):\n"  # no source file: nothing to read the dataflow from
         "    def __init__(self):\n"
         "        super().__init__()\n"
         "        self.conv1, self.bn1 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)\n"
         "    def forward(self, x):\n"
         "        return self.bn1(self.conv1(x))\n", namespace)
    assert isinstance(npconv.optimize_for_inference(namespace["Unreadable"]()).bn1, nn.BatchNorm2d)


class Stem(nn.Module):
    """ResNet's stem: its relu applied to bn1's output and used nowhere else."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, 2, 1, bias=False), nn.BatchNorm2d(6)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.conv2, self.bn2 = nn.Conv2d(6, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.act = nn.ReLU6()

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.bn2(self.conv2(x))


class StemReluTwice(Stem):
    def forward(self, x):  # the relu has another use: it stays a module of its own
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.relu(self.bn2(self.conv2(x)) - 1.0)


class StemOffset(Stem):
    def forward(self, x):  # act applies to something other than bn2's output
        x = self.maxpool(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(x)) + 1.0)


def test_an_activation_of_a_folded_pair_alone_is_fused():
    """``act(bn<S>(conv<S>(...)))`` with act used nowhere else: the activation is fused into the
    folded convolution too; an activation with another use, of another value or with hooks stays."""
    x = np.random.default_rng(8).standard_normal((2, 3, 9, 10))
    stem = _randomize(Stem()).double().eval()
    optimized = npconv.optimize_for_inference(stem)
    assert isinstance(optimized.conv1, nn.ConvActivation) and isinstance(optimized.conv1.activation, nn.ReLU)
    assert isinstance(optimized.relu, nn.Identity) and isinstance(optimized.bn1, nn.Identity)
    assert isinstance(optimized.conv2, nn.Conv2d) and isinstance(optimized.bn2, nn.Identity)
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(stem, x), rtol=1e-12, atol=1e-12)
    for cls, kept in ((StemReluTwice, "relu"), (StemOffset, "act")):
        model = _randomize(cls()).double().eval()
        optimized = npconv.optimize_for_inference(model)
        assert type(getattr(optimized, kept)) is type(getattr(model, kept))
        assert isinstance(optimized.conv1, nn.Conv2d) and isinstance(optimized.conv2, nn.Conv2d)
        assert isinstance(optimized.bn1, nn.Identity) and isinstance(optimized.bn2, nn.Identity)
        np.testing.assert_allclose(_outputs(optimized, x), _outputs(model, x), rtol=1e-12, atol=1e-12)
    hooked = _randomize(Stem()).double().eval()
    hooked.relu.register_forward_hook(lambda module, args, out: None)
    optimized = npconv.optimize_for_inference(hooked)
    assert isinstance(optimized.relu, nn.ReLU) and isinstance(optimized.conv1, nn.Conv2d)


def _unnormalised(block, x):
    return block.conv1(x)  # conv1 without bn1, out of forward's sight


class EscapingBlock(nn.Module):
    """forward composes bn1(conv1(x)) once; the subclasses' extra reaches conv1 without bn1."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn1(self.conv1(x)) + self.extra(x)


class ThroughAFunction(EscapingBlock):
    def extra(self, x):
        return _unnormalised(self, x)


class ThroughTwoMethods(EscapingBlock):
    def extra(self, x):
        return self._inner(x)

    def _inner(self, x):
        return self.conv1(x)


class ThroughAProperty(EscapingBlock):
    def extra(self, x):
        return self.raw

    @property
    def raw(self):
        return self.conv1(self.last)


class ThroughChildren(EscapingBlock):
    def extra(self, x):
        return sum(m(x) for m in self.children() if isinstance(m, nn.Conv2d))


class ThroughTheRegistry(EscapingBlock):
    def extra(self, x):
        return self._modules["conv1"](x)


class ThroughNamedModules(EscapingBlock):
    def extra(self, x):
        return dict(self.named_modules())["conv1"](x)


@pytest.mark.parametrize("kind", [ThroughAFunction, ThroughTwoMethods, ThroughAProperty, ThroughChildren,
                                  ThroughTheRegistry, ThroughNamedModules])
def test_named_pairs_stay_where_self_leaves_the_forward(kind):
    """A function given self, a method reached through another method, a property, Module's own
    methods (children(), named_modules()) and the registry each use conv1 without bn1: the pair is not
    folded and the outputs stay the model's."""
    x = np.random.default_rng(7).standard_normal((2, 4, 5, 5))
    block = _randomize(kind(4)).double().eval()
    block.last = npconv.tensor(x)
    optimized = npconv.optimize_for_inference(block)
    assert isinstance(optimized.bn1, nn.BatchNorm2d)
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(block, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv, bn, shape", [
    (lambda: nn.Conv1d(3, 4, 3, padding=1), lambda: nn.BatchNorm1d(4), (2, 3, 7)),
    (lambda: nn.Conv3d(3, 4, 3, padding=1), lambda: nn.BatchNorm3d(4), (1, 3, 4, 5, 3)),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), lambda: nn.BatchNorm2d(4), (2, 3, 4, 5)),
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), lambda: nn.BatchNorm2d(4, affine=False),
     (2, 3, 5, 6)),
])
def test_other_convolutions_and_batchnorms(conv, bn, shape):
    model = _randomize(nn.Sequential(conv(), bn(), nn.ReLU())).double().eval()
    x = np.random.default_rng(3).standard_normal(shape)
    optimized = npconv.optimize_for_inference(model)
    assert isinstance(optimized[0], nn.ConvActivation)
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(model, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-0.5, 0.25), nn.SiLU()])
def test_epilogue_equals_the_activation_op_bit_for_bit(activation):
    x = np.random.default_rng(4).standard_normal((3, 4, 5, 6)).astype(np.float32) * 4
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    x[0, 1, 0, :2] = [-0.0, 0.0]  # the sign of zero too
    conv = nn.Conv2d(4, 4, 1)
    conv.weight.numpy()[...] = np.eye(4, dtype=np.float32)[:, :, None, None]
    conv.bias.numpy()[...] = 0
    fused = nn.ConvActivation(conv, activation)
    with npconv.no_grad(), np.errstate(invalid="ignore"):  # inf * 0 -> NaN, in both
        expected = activation(conv(npconv.tensor(x))).numpy()
        got = fused(npconv.tensor(x)).numpy()
    np.testing.assert_array_equal(got, expected)  # NaN where the unfused gives NaN, same values
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("kind, lo, hi, op", [
    ("relu", 0.0, 0.0, lambda t: nn.functional.relu(t)),
    ("hardtanh", 0.0, 6.0, lambda t: nn.functional.relu6(t)),
    ("hardtanh", -1.0, 0.0, lambda t: nn.functional.hardtanh(t, -1.0, 0.0)),
    ("hardtanh", -0.5, 2.0, lambda t: nn.functional.hardtanh(t, -0.5, 2.0)),
    ("silu", 0.0, 0.0, lambda t: nn.functional.silu(t)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activate_equals_the_ops_with_signed_zeros_and_specials(kind, lo, hi, op, dtype):
    values = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 3.0, 7.0, -2.0, -0.75, 1e-30], dtype)
    y = np.tile(values, (2, 3, 1)).copy()
    with np.errstate(invalid="ignore"):
        expected = op(npconv.tensor(y.copy())).numpy()
        got = pointwise.activate_(y, kind, lo, hi)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


def test_activate_equals_torch_with_signed_zeros_and_specials():
    torch = pytest.importorskip("torch")
    values = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 3.0, 7.0, -2.0, -0.75, 1e-30], np.float32)
    y = np.tile(values, (2, 3, 1))
    tf = torch.nn.functional
    for kind, lo, hi, op in [("relu", 0.0, 0.0, tf.relu), ("hardtanh", 0.0, 6.0, tf.relu6),
                             ("hardtanh", -1.0, 0.0, lambda t: tf.hardtanh(t, -1.0, 0.0)),
                             ("silu", 0.0, 0.0, tf.silu)]:
        expected = op(torch.from_numpy(y.copy())).numpy()
        with np.errstate(invalid="ignore"):
            got = pointwise.activate_(y.copy(), kind, lo, hi)
        np.testing.assert_allclose(got, expected, rtol=3e-7, atol=0)  # silu: torch's sigmoid rounds apart
        if kind != "relu":  # npconv's relu op (which the epilogue follows) gives +0.0 for -0.0, torch -0.0
            numbers = ~np.isnan(expected)  # a NaN's sign bit is not part of the contract
            np.testing.assert_array_equal(np.signbit(got)[numbers], np.signbit(expected)[numbers])
        if kind == "hardtanh":  # the op itself (one clip pass) keeps -0.0 as torch does
            ours = nn.functional.hardtanh(npconv.tensor(y.copy()), lo, hi).numpy()
            np.testing.assert_array_equal(np.signbit(ours)[numbers], np.signbit(expected)[numbers])


def test_epilogue_under_autograd_has_the_unfused_gradients():
    rng = np.random.default_rng(5)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    fused = nn.ConvActivation(conv, nn.SiLU())
    x = npconv.tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
    fused(x).sum().backward()
    gx, gw = x.grad.numpy().copy(), conv.weight.grad.numpy().copy()
    x.grad, conv.weight.grad = None, None
    nn.SiLU()(conv(x)).sum().backward()
    np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(gw, conv.weight.grad.numpy(), rtol=1e-13)


def test_a_convolution_with_its_own_forward_is_called():
    """A ConvActivation calls a convolution whose instance (or class) replaces ``forward``, as a module
    call would, and applies the activation to what that returns."""
    rng = np.random.default_rng(6)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    fused = nn.ConvActivation(conv, nn.ReLU())
    x = npconv.tensor(rng.standard_normal((1, 2, 5, 5)))
    plain = conv.forward
    conv.forward = lambda t: plain(t) - 100.0  # every output negative: ReLU gives zeros
    with npconv.no_grad():
        assert not np.any(fused(x).numpy())
        del conv.forward
        np.testing.assert_array_equal(fused(x).numpy(), np.maximum(conv(x).numpy(), 0))


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be an npconv.nn.Module, got list"):
        npconv.optimize_for_inference([nn.Conv2d(1, 1, 1)])
    with pytest.raises(TypeError, match="conv must be a convolution module, got Linear"):
        nn.ConvActivation(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(TypeError, match="activation must be one of .*got Tanh"):
        nn.ConvActivation(nn.Conv2d(1, 1, 1), nn.Tanh())
    with pytest.raises(ValueError, match="kind must be one of"):
        pointwise.activate_(np.zeros((1, 1)), "gelu")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_torch_eval(dtype):
    torch = pytest.importorskip("torch")

    class TorchBlock(torch.nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(c_out)
            self.relu = torch.nn.ReLU(inplace=True)
            self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = torch.nn.BatchNorm2d(c_out)
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                                  torch.nn.BatchNorm2d(c_out))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.downsample(x))

    ours = _randomize(small_network(), seed=7)
    theirs = torch.nn.Sequential(*list(small_network(torch.nn)), TorchBlock(6, 10, 2))
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    np_dtype = np.dtype(dtype)
    ours, theirs = ours.to(np_dtype).eval(), theirs.to(getattr(torch, dtype)).eval()
    x = np.random.default_rng(8).standard_normal((2, 3, 12, 10)).astype(np_dtype)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    got = _outputs(npconv.optimize_for_inference(ours), x)
    tolerance = 1e-12 if dtype == "float64" else 2e-5
    assert np.linalg.norm(got - expected) <= tolerance * np.linalg.norm(expected)


def _block(nn=nn):  # noqa: ANN001 an inverted residual's layers (MobileNetV2), unfused
    return nn.Sequential(nn.Conv2d(4, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU6(),
                         nn.Conv2d(12, 12, 3, 2, 1, groups=12, bias=False), nn.BatchNorm2d(12), nn.ReLU6(),
                         nn.Conv2d(12, 5, 1, bias=False), nn.BatchNorm2d(5))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_chunked_sequential_runs_large_batches_image_by_image(dtype, monkeypatch):
    """optimize_for_inference makes a plain Sequential of per-image layers a ChunkedSequential: above
    CHUNK_ABOVE_BYTES (the largest intermediate of the batch) it runs chunks of images whose largest
    intermediate fits CHUNK_BYTES, with the whole batch's results (to rounding); smaller batches run
    whole."""
    fused = sys.modules["npconv.nn.modules.fused"]
    optimized = npconv.optimize_for_inference(_randomize(_block()).to(dtype))
    assert type(optimized) is nn.ChunkedSequential
    plain = npconv.optimize_for_inference(_randomize(_block()))
    assert list(optimized.state_dict()) == list(plain.state_dict())
    x = np.random.default_rng(2).standard_normal((5, 4, 9, 10)).astype(dtype)
    whole = _outputs(nn.Sequential(*optimized.children()), x)  # the same layers, unchunked
    image = 12 * 9 * 10 * np.dtype(dtype).itemsize  # the expansion: the largest intermediate of an image
    seen: list[int] = []
    optimized[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    assert optimized._chunk(npconv.tensor(x)) is None  # a hooked layer: the batch as Sequential shows it
    optimized[0]._forward_pre_hooks.clear()
    first = optimized[0].forward
    monkeypatch.setattr(optimized[0], "forward", lambda t: seen.append(t.shape[0]) or first(t))
    for above, chunk, sizes in ((5 * image, image, [5]), (5 * image - 1, 2 * image + 1, [2, 2, 1]),
                                (0, 1, [1] * 5)):
        monkeypatch.setattr(fused, "CHUNK_ABOVE_BYTES", above)
        monkeypatch.setattr(fused, "CHUNK_BYTES", chunk)
        seen.clear()
        got = _outputs(optimized, x)
        assert seen == sizes and got.dtype == dtype and got.flags.c_contiguous
        tol = 1e-13 if dtype == np.float64 else 1e-6  # a smaller batch may take another kernel
        np.testing.assert_allclose(got, whole, rtol=tol, atol=tol * np.abs(whole).max())


def test_a_chunked_sequential_runs_whole_where_it_must(monkeypatch):
    """Autograd recording, a layer of unknown output size, 2-D input and a bad input all take the
    Sequential's path (the same result and the same error)."""
    fused = sys.modules["npconv.nn.modules.fused"]
    monkeypatch.setattr(fused, "CHUNK_ABOVE_BYTES", 0)
    optimized = npconv.optimize_for_inference(_randomize(_block()))
    x = npconv.tensor(np.random.default_rng(3).standard_normal((3, 4, 8, 8)).astype(np.float32))
    assert optimized._chunk(x) == max(1, fused.CHUNK_BYTES // (12 * 8 * 8 * 4))
    x.requires_grad_(True)
    assert optimized._chunk(x) is None
    y = optimized(x)
    assert y.requires_grad
    with npconv.no_grad():
        assert optimized._chunk(x) is not None
    assert optimized._chunk(npconv.tensor(np.ones((3, 4), np.float32))) is None
    with pytest.raises(ValueError, match="channels"):
        optimized(npconv.tensor(np.ones((3, 5, 8, 8), np.float32)))
    narrowing = npconv.optimize_for_inference(nn.Sequential(nn.Conv2d(12, 2, 1), nn.ReLU()))
    wide_input = npconv.tensor(np.ones((3, 12, 8, 8), np.float32))  # only the layers' results count
    monkeypatch.setattr(fused, "CHUNK_ABOVE_BYTES", 3 * 2 * 8 * 8 * 4)
    assert type(narrowing) is nn.ChunkedSequential and narrowing._chunk(wide_input) is None
    monkeypatch.setattr(fused, "CHUNK_ABOVE_BYTES", 3 * 2 * 8 * 8 * 4 - 1)
    assert narrowing._chunk(wide_input) is not None
    pooled = nn.Sequential(nn.Conv2d(4, 4, 3), nn.MaxPool2d(2))
    assert type(npconv.optimize_for_inference(pooled)) is nn.Sequential
    transposed = nn.Sequential(nn.ConvTranspose2d(4, 4, 3), nn.ReLU())
    assert type(npconv.optimize_for_inference(transposed)) is nn.Sequential


def test_a_chunked_sequential_reaches_into_plain_containers(monkeypatch):
    """A Sequential subclass that keeps Sequential.forward (torchvision's ConvBNActivation) counts as
    per-image layers; one with its own forward, or holding a pooling layer, does not."""
    class ConvBNActivation(nn.Sequential):
        pass

    class Doubling(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    def block(inner=ConvBNActivation, extra=()):
        return nn.Sequential(inner(nn.Conv2d(4, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU6()),
                             inner(nn.Conv2d(12, 12, 3, 2, 1, groups=12), nn.ReLU(), *extra),
                             nn.Conv2d(12, 5, 1))

    optimized = npconv.optimize_for_inference(_randomize(block()))
    assert type(optimized) is nn.ChunkedSequential
    assert type(optimized[0]) is ConvBNActivation and type(optimized[0][0]) is nn.ConvActivation
    fused = sys.modules["npconv.nn.modules.fused"]
    monkeypatch.setattr(fused, "CHUNK_ABOVE_BYTES", 0)
    x = np.random.default_rng(4).standard_normal((3, 4, 8, 8)).astype(np.float32)
    with npconv.no_grad():
        assert optimized._chunk(npconv.tensor(x)) == fused.CHUNK_BYTES // (12 * 8 * 8 * 4)
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(nn.Sequential(*optimized.children()), x),
                               rtol=1e-6, atol=1e-6)
    assert type(npconv.optimize_for_inference(block(Doubling))) is nn.Sequential
    assert type(npconv.optimize_for_inference(block(extra=(nn.MaxPool2d(2),)))) is nn.Sequential


def test_a_chunked_sequential_counts_a_repeated_layer_each_time_it_runs(monkeypatch):
    """A layer that a Sequential holds twice runs twice: its second result (here the larger, padding
    grows the image) is the peak the chunking is sized by, as the run itself sees it."""
    fused = sys.modules["npconv.nn.modules.fused"]
    grow = nn.Conv2d(4, 4, 3, padding=3)  # 8x8 -> 12x12 -> 16x16
    optimized = npconv.optimize_for_inference(nn.Sequential(grow, grow))
    assert type(optimized) is nn.ChunkedSequential
    monkeypatch.setattr(fused, "CHUNK_ABOVE_BYTES", 0)
    x = np.random.default_rng(5).standard_normal((3, 4, 8, 8)).astype(np.float32)
    with npconv.no_grad():
        assert optimized._chunk(npconv.tensor(x)) == fused.CHUNK_BYTES // (4 * 16 * 16 * 4)
        got = _outputs(optimized, x)
    assert got.shape == (3, 4, 16, 16)


class ScaledHardtanh(nn.Hardtanh):
    def forward(self, input):
        return super().forward(input) * 2


class ShiftedReLU(nn.ReLU):
    def forward(self, input):
        return input.clamp(min=0.25)


@pytest.mark.parametrize("make", [ScaledHardtanh, ShiftedReLU, "instance"])
def test_an_activation_computing_something_else_is_not_fused(make):
    """A subclass of a fusable activation with its own forward (or an instance's own forward) is called,
    not replaced by the base activation in the convolution's stores."""
    if make == "instance":
        activation = nn.ReLU()
        activation.forward = lambda input: input * 3
    else:
        activation = make()
    model = _randomize(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), activation)).double().eval()
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 6))
    optimized = npconv.optimize_for_inference(model)
    assert not any(isinstance(m, nn.ConvActivation) for m in optimized.modules())
    np.testing.assert_allclose(_outputs(optimized, x), _outputs(model, x), rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="itself, not a subclass"):
        nn.ConvActivation(nn.Conv2d(2, 3, 3), activation)
    assert isinstance(nn.ConvActivation(nn.Conv2d(2, 3, 3), nn.ReLU6()).activation, nn.ReLU6)
