"""The argument rules of the functional layer (npconv.checks + ConvGeometry) against torch: one
exception type per rule whatever the entry point (F or nn), torch's refusals (dtype mixing, empty
weights), torch's acceptances (empty layers, forward and backward), huge integers refused clearly,
and the pad-width rule on every layer (issues 11 and 14). torch is imported per test."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn.functional as F
from npconv import nn
from npconv.checks import must
from npconv.tensor import as_array

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _torch_rejects(call) -> None:
    with pytest.raises(Exception):  # noqa: B017 - torch raises RuntimeError, TypeError, ...
        call()


def test_message_template():
    assert must("groups", "be positive", 0, "conv2d") == "conv2d groups must be positive, but got 0"
    assert must("stride", "be an int", "'a'") == "stride must be an int, but got 'a'"


# -- one exception type per rule, whichever entry point ---------------------------------------------
X = np.zeros((1, 2, 5, 5), np.float32)
W = np.zeros((2, 2, 3, 3), np.float32)


@pytest.mark.parametrize("groups", [True, 1.0, "1", None])
def test_non_int_groups_is_a_type_error_in_f_and_nn(groups, torch):
    with pytest.raises(TypeError, match=r"groups must be an int, but got"):
        F.conv2d(X, W, groups=groups)
    with pytest.raises(TypeError, match=r"groups must be an int, but got"):
        F.conv_transpose2d(X, W, groups=groups)
    with pytest.raises(TypeError, match=r"groups must be an int, but got"):
        nn.Conv2d(2, 2, 3, groups=groups)
    with pytest.raises(TypeError, match=r"groups must be an int, but got"):
        nn.ConvTranspose2d(2, 2, 3, groups=groups)
    with pytest.raises(TypeError):  # torch's functional form: TypeError
        torch.nn.functional.conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3, 3), groups=groups)


@pytest.mark.parametrize("groups", [0, -1])
def test_non_positive_groups_is_a_value_error_in_f_and_nn(groups, torch):
    for call in (lambda: F.conv2d(X, W, groups=groups), lambda: nn.Conv2d(2, 2, 3, groups=groups),
                 lambda: F.conv_transpose2d(X, W, groups=groups)):
        with pytest.raises(ValueError, match=r"groups must be positive, but got"):
            call()
    _torch_rejects(lambda: torch.nn.functional.conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3, 3),
                                                      groups=groups))


def test_output_padding_has_one_rule_and_one_message():
    message = (r"output_padding must be smaller than either stride or dilation, "
               r"but got output_padding=\(2, 2\)")
    with pytest.raises(ValueError, match=message):
        F.conv_transpose2d(X, W, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=message):
        nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)
    layer = nn.ConvTranspose2d(2, 2, 3, stride=2)
    with pytest.raises(ValueError, match=message):
        F.transposed_convolution(X, layer.weight, None, layer.geometry, output_padding=(2, 2))
    with pytest.raises(ValueError, match=r"output_padding must be non-negative"):
        F.conv_transpose2d(X, W, stride=2, output_padding=-1)


@pytest.mark.parametrize("call, op", [
    (lambda: F.conv2d(np.zeros((2, 5), np.float32), W), "conv2d"),
    (lambda: F.conv2d_local(np.zeros((2, 5), np.float32), np.zeros((3, 3, 2, 2, 3, 3), np.float32)),
     "conv2d_local"),
    (lambda: F.conv2d_map(np.zeros((2, 5), np.float32), np.zeros((1, 3, 3), np.float32), [[0, 0]]),
     "conv2d_map"),
    (lambda: nn.LazyConv2d(2, 3)(np.zeros((2, 5), np.float32)), "conv2d"),
    (lambda: F.max_pool2d(np.zeros((2, 5), np.float32), 2), "max_pool2d"),
])
def test_batched_rank_rule_is_one_message(call, op):
    with pytest.raises(ValueError, match=rf"Expected 3D \(unbatched\) or 4D \(batched\) input to {op}, "
                                         r"but got input of size: \[2, 5\]"):
        call()


# -- torch refuses: empty weights ----------------------------------------------------------------------
@pytest.mark.parametrize("factory, channels, match", [
    (lambda m: m.Conv2d(4, 0, 3), 4, r"expected weight to be at least 1 at dimension 0"),
    (lambda m: m.Conv2d(4, 0, 3, groups=2), 4, r"expected weight to be at least 2 at dimension 0"),
    (lambda m: m.ConvTranspose2d(0, 4, 3), 0, r"expected weight to be at least 1 at dimension 0"),
    (lambda m: m.ConvTranspose2d(4, 0, 3), 4, r"conv_transpose2d weight must be non-empty"),
])
def test_layers_with_an_empty_weight_refuse_like_torch(factory, channels, match, torch):
    layer = factory(nn)  # constructed, as torch does
    with pytest.raises(ValueError, match=match):
        layer(npconv.tensor(np.ones((1, channels, 5, 5), np.float32), requires_grad=True))
    _torch_rejects(lambda: factory(torch.nn)(torch.ones(1, channels, 5, 5)))


def test_conv_with_no_input_channels_gives_its_bias(torch):
    """A deliberate difference: an empty sum is 0, so each output channel is its bias (torch 2.13
    returns no output channels at all, bias or not; README "What differs")."""
    layer = nn.Conv2d(0, 4, 3)
    x = npconv.tensor(np.ones((1, 0, 5, 5), np.float32), requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.shape == (1, 4, 3, 3) and x.grad.shape == (1, 0, 5, 5)
    bias = layer.bias.detach().numpy()[:, None, None]
    np.testing.assert_array_equal(y.detach().numpy(), np.broadcast_to(bias, (1, 4, 3, 3)))
    assert layer.weight.grad.shape == (4, 0, 3, 3)
    np.testing.assert_array_equal(layer.bias.grad.numpy(), np.full(4, 9.0))
    assert tuple(torch.nn.Conv2d(0, 4, 3)(torch.ones(1, 0, 5, 5)).shape) == (1, 0, 3, 3)  # torch's


@pytest.mark.parametrize("factory, shape", [
    (lambda m: m.Conv2d(2, 3, kernel_size=(3,)), (1, 2, 6, 7)),
    (lambda m: m.Conv3d(2, 3, kernel_size=[3]), (1, 2, 5, 6, 7)),
    (lambda m: m.ConvTranspose2d(2, 3, kernel_size=(3,)), (1, 2, 6, 7)),
])
def test_a_one_value_kernel_size_of_a_2d_or_3d_layer_is_refused(factory, shape, torch):
    """torch builds the layer with a weight of the wrong rank and fails in its forward; npconv refuses
    the size (a stride, padding or dilation of one value stands for every dimension, as in torch)."""
    nd = len(shape) - 2
    with pytest.raises(ValueError, match=rf"kernel_size must be an int or a tuple of {nd} ints for a "
                                         rf"{nd}-d convolution, but got .3,?. \(1 values\)"):
        factory(nn)
    _torch_rejects(lambda: factory(torch.nn)(torch.ones(*shape)))
    layer = nn.Conv2d(2, 3, 3, stride=(2,), padding=[1], dilation=(1,))
    assert layer.stride == (2, 2) and layer.padding == (1, 1) and layer.dilation == (1, 1)


# -- torch refuses: mixed dtypes; a rejected call changes nothing --------------------------------------
def _f32(*shape):
    return np.ones(shape, np.float32)


def _f64(*shape):
    return np.ones(shape, np.float64)


MIXED = [
    ("linear bias", lambda m, t: m.linear(t(_f32(2, 4)), t(_f32(3, 4)), t(_f64(3))), "bias"),
    ("linear weight", lambda m, t: m.linear(t(_f32(2, 4)), t(_f64(3, 4))), "weight"),
    ("group_norm weight", lambda m, t: m.group_norm(t(_f32(2, 4, 3)), 2, t(_f64(4))), "weight"),
    ("group_norm bias", lambda m, t: m.group_norm(t(_f32(2, 4, 3)), 2, None, t(_f64(4))), "bias"),
    ("batch_norm weight", lambda m, t: m.batch_norm(t(_f32(2, 4, 3)), t(_f32(4)), t(_f32(4)), t(_f64(4)),
                                                    training=True), "weight"),
    ("batch_norm bias", lambda m, t: m.batch_norm(t(_f32(2, 4, 3)), t(_f32(4)), t(_f32(4)), None, t(_f64(4)),
                                                  training=True), "bias"),
    ("batch_norm running_mean", lambda m, t: m.batch_norm(t(_f32(2, 4, 3)), t(_f64(4)), t(_f32(4))),
     "running_mean"),
    ("batch_norm input", lambda m, t: m.batch_norm(t(_f64(2, 4, 3)), t(_f32(4)), t(_f32(4)), training=True),
     "running_mean"),
    ("cross_entropy weight", lambda m, t: m.cross_entropy(t(_f32(2, 3)), t(np.array([0, 1])),
                                                          weight=t(_f64(3))), "weight"),
    ("nll_loss weight", lambda m, t: m.nll_loss(t(_f32(2, 3)), t(np.array([0, 1])), weight=t(_f64(3))),
     "weight"),
]


@pytest.mark.parametrize("case", MIXED, ids=lambda c: c[0])
def test_mixed_dtypes_are_refused_like_torch(case, torch):
    _, call, name = case
    with pytest.raises(TypeError, match=rf"input type \(float\d+\) and {name} type \(float\d+\) should be"):
        call(F, lambda a: a)
    _torch_rejects(lambda: call(torch.nn.functional, torch.from_numpy))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_refuses_float64_input_and_keeps_its_state(training, torch):
    layer = nn.BatchNorm2d(3).train(training)
    before = {k: np.array(as_array(v)) for k, v in layer.state_dict().items()}
    with pytest.raises(TypeError, match=r"input type \(float64\) and running_mean type \(float32\)"):
        layer(np.random.default_rng(0).normal(size=(2, 3, 4, 4)))
    for key, value in layer.state_dict().items():
        value = as_array(value)
        assert value.dtype == before[key].dtype and np.array_equal(value, before[key]), key
    theirs = torch.nn.BatchNorm2d(3).train(training)
    _torch_rejects(lambda: theirs(torch.zeros(2, 3, 4, 4, dtype=torch.float64)))
    assert torch.equal(theirs.running_mean, torch.zeros(3))


# -- torch accepts: empty layers, forward and backward -------------------------------------------------
@pytest.mark.parametrize("in_features, out_features", [(0, 3), (4, 0), (0, 0)])
def test_empty_linear_forward_and_backward_match_torch(in_features, out_features, torch):
    ours = nn.Linear(in_features, out_features, dtype=np.float64)
    theirs = torch.nn.Linear(in_features, out_features, dtype=torch.float64)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.numpy()))
        theirs.bias.copy_(torch.from_numpy(ours.bias.numpy()))
    x = np.random.default_rng(1).normal(size=(2, in_features))
    xo, xt = npconv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    yo.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), atol=1e-12)


def test_group_norm_of_an_empty_batch_matches_torch(torch):
    x = np.zeros((0, 4, 3))
    w, b = np.linspace(1, 2, 4), np.linspace(-1, 1, 4)
    ours = [npconv.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    yo = F.group_norm(ours[0], 2, ours[1], ours[2])
    yt = torch.nn.functional.group_norm(theirs[0], 2, *theirs[1:])
    (yo * 2).sum().backward()
    (yt * 2).sum().backward()
    assert yo.shape == tuple(yt.shape) == (0, 4, 3)
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(o.grad.numpy(), t.grad.numpy())


# -- huge integers: a clear ValueError naming the argument ---------------------------------------------
HUGE = [
    ("conv padding", lambda m: m.Conv2d(1, 1, 3, padding=10**30)(np.zeros((1, 1, 5, 5), np.float32)),
     "padding"),
    ("conv kernel_size", lambda m: m.Conv2d(1, 1, 10**20)(np.zeros((1, 1, 5, 5), np.float32)), "kernel_size"),
    ("conv stride", lambda m: m.Conv2d(1, 1, 3, stride=10**20)(np.zeros((1, 1, 5, 5), np.float32)), "stride"),
    ("max_pool stride", lambda m: m.MaxPool2d(2, stride=10**20)(np.zeros((1, 1, 5, 5), np.float32)),
     "stride"),
    ("avg_pool stride", lambda m: m.AvgPool2d(2, stride=10**20)(np.zeros((1, 1, 5, 5), np.float32)),
     "stride"),
    ("max_pool kernel_size", lambda m: m.MaxPool1d(10**20)(np.zeros((1, 1, 5), np.float32)), "kernel_size"),
    ("avg_pool padding", lambda m: m.AvgPool1d(2, padding=10**30)(np.zeros((1, 1, 5), np.float32)),
     "padding"),
    ("linear features", lambda m: m.Linear(10**20, 2), "in_features"),
    ("transposed output_padding", lambda m: m.ConvTranspose1d(1, 1, 3, 2, output_padding=10**20)(
        np.zeros((1, 1, 5), np.float32)), "output_padding"),
]


@pytest.mark.parametrize("case", HUGE, ids=lambda c: c[0])
def test_huge_integers_are_a_value_error_naming_the_argument(case, torch):
    _, call, name = case
    with pytest.raises(ValueError, match=rf"{name} must"):
        call(nn)

    def torch_call():
        with torch.no_grad():
            return call(_TorchNN(torch))

    _torch_rejects(torch_call)


class _TorchNN:
    """torch.nn with ndarray inputs converted (to run the HUGE calls in torch)."""

    def __init__(self, torch):
        self.torch = torch

    def __getattr__(self, name):
        cls = getattr(self.torch.nn, name)

        def build(*args, **kwargs):
            layer = cls(*args, **kwargs)
            return lambda x: layer(self.torch.from_numpy(x))
        return build


def test_outputs_that_cannot_exist_are_a_value_error():
    with pytest.raises(ValueError, match=r"conv2d output must fit in memory"):
        F.conv2d(np.zeros((1, 1, 5, 5), np.float32), np.zeros((1, 1, 3, 3), np.float32), padding=2**62)
    with pytest.raises(ValueError, match=r"Conv2d weight must fit in memory"):
        nn.Conv2d(1, 1, 2**40)


# -- the pad-width rule on every layer -----------------------------------------------------------------
def test_locally_connected_layer_rejects_padding_wider_than_reflect_allows(torch):
    match = r"Padding size should be less than the corresponding input dimension, but got: padding \(4, 4\)"
    with pytest.raises(ValueError, match=match):
        nn.Conv2dLocal(1, 1, (3, 3), 3, padding=4, padding_mode="reflect")
    with pytest.raises(ValueError, match=match):
        nn.Conv2d(1, 1, 3, padding=4, padding_mode="reflect")(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match=match):
        F.conv2d_local(np.zeros((1, 1, 3, 3), np.float32), np.zeros((9, 9, 1, 1, 3, 3), np.float32),
                       padding=4, padding_mode="reflect")
    with pytest.raises(ValueError, match=match):
        F.conv2d_map(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 3, 3), np.float32), [[0, 0]],
                     padding=4, padding_mode="reflect")
    with pytest.raises(ValueError, match=match):
        nn.Conv2dMap([[0, 0]], 3, padding=4, padding_mode="reflect")(np.zeros((1, 1, 3, 3), np.float32))
    theirs = torch.nn.Conv2d(1, 1, 3, padding=4, padding_mode="reflect")
    _torch_rejects(lambda: theirs(torch.zeros(1, 1, 3, 3)))
    # within torch's limit the locally connected layer still runs
    assert nn.Conv2dLocal(1, 1, (3, 3), 3, padding=2, padding_mode="reflect")(
        np.zeros((1, 1, 3, 3), np.float32)).shape == (1, 1, 5, 5)


def test_one_padding_mode_table():
    from npconv.geometry import PAD_MODES, PADDING_MODES, pad_mode

    assert F.PADDING_MODES is PADDING_MODES
    assert set(PADDING_MODES.values()) == set(PAD_MODES)
    assert [pad_mode(m) for m in PADDING_MODES] == list(PADDING_MODES.values())
    with pytest.raises(ValueError, match=r"padding_mode must be one of .*but got padding_mode='wrap'"):
        nn.Conv2dLocal(1, 1, (3, 3), 3, padding_mode="wrap")


# -- float16 average pooling accumulates in float32 ------------------------------------------------------
@pytest.mark.parametrize("nd, size", [(1, (4096,)), (2, (64, 64)), (3, (16, 16, 16))])
def test_float16_avg_pool_over_large_windows(nd, size, torch):
    x = npconv.tensor(np.ones((1, 1) + size, np.float16), requires_grad=True)
    y = getattr(F, f"avg_pool{nd}d")(x, size)
    y.sum().backward()
    assert y.dtype == np.float16 and float(y.numpy().ravel()[0]) == 1.0
    np.testing.assert_array_equal(x.grad.numpy(), np.float16(1 / np.prod(size)))
    data = np.random.default_rng(2).uniform(0, 1, (1, 2) + size).astype(np.float16)
    ours = getattr(F, f"avg_pool{nd}d")(data, size).numpy().astype(np.float64)
    theirs = getattr(torch.nn.functional, f"avg_pool{nd}d")(torch.from_numpy(data).float(), size).double()
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-3)
