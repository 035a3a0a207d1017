"""Padding layers, PixelShuffle/Unshuffle and channel dropout (Dropout1d/2d/3d) against torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import compare, torch_module

PAD_LAYERS = ["ZeroPad", "ConstantPad", "ReflectionPad", "ReplicationPad", "CircularPad"]


def _pad_layer(module, kind, nd, padding):
    cls = getattr(module, f"{kind}{nd}d")
    return cls(padding, 1.5) if kind == "ConstantPad" else cls(padding)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(PAD_LAYERS),
    nd=st.integers(1, 3),
    batched=st.booleans(),
    data=st.data(),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_padding_layers_match_torch(kind, nd, batched, data, dtype):
    torch = torch_module()
    size = tuple(data.draw(st.lists(st.integers(2, 5), min_size=nd, max_size=nd)))
    if data.draw(st.booleans()):
        padding = data.draw(st.integers(0, 1))
    else:
        padding = tuple(data.draw(st.integers(0, min(size[nd - 1 - i // 2] - 1, 3))) for i in range(2 * nd))
    shape = ((2,) if batched else ()) + (3,) + size
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    ours, theirs = _pad_layer(nn, kind, nd, padding), _pad_layer(torch.nn, kind, nd, padding)
    assert repr(ours) == repr(theirs)
    compare(ours, theirs, [x])


@pytest.mark.parametrize("kind", ["ReflectionPad", "ReplicationPad", "CircularPad"])
def test_padding_layers_reject_the_wrong_rank(kind):
    layer = getattr(nn, f"{kind}2d")(1)
    with pytest.raises(ValueError, match="3D or 4D input"):
        layer(npconv.tensor(np.ones((2, 3, 4, 5, 6))))


def test_reflection_pad_wider_than_input_is_rejected():
    with pytest.raises(ValueError, match="Padding size should be less than"):
        nn.ReflectionPad1d(3)(npconv.tensor(np.ones((1, 2, 3))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize(
    ("shape", "r"), [((1, 8, 2, 3), 2), ((2, 9, 3, 2), 3), ((4, 2, 2), 2), ((2, 3, 4, 1, 1), 1)]
)
def test_pixel_shuffle_and_unshuffle_match_torch(shape, r, dtype):
    torch = torch_module()
    x = (np.random.default_rng(0).standard_normal(shape) * 10).astype(dtype)
    compare(lambda t: F.pixel_shuffle(t, r), lambda t: torch.nn.functional.pixel_shuffle(t, r), [x])
    y = F.pixel_shuffle(npconv.tensor(x), r).numpy()
    compare(lambda t: F.pixel_unshuffle(t, r), lambda t: torch.nn.functional.pixel_unshuffle(t, r), [y])
    np.testing.assert_array_equal(F.pixel_unshuffle(npconv.tensor(y), r).numpy(), x)  # exact inverse


def test_pixel_shuffle_modules_match_torch():
    torch = torch_module()
    for ours, theirs in [
        (nn.PixelShuffle(2), torch.nn.PixelShuffle(2)),
        (nn.PixelUnshuffle(2), torch.nn.PixelUnshuffle(2)),
    ]:
        assert repr(ours) == repr(theirs)
        compare(ours, theirs, [np.random.default_rng(1).standard_normal((2, 4, 4, 6))])


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: F.pixel_shuffle(npconv.tensor(np.ones((3, 2, 2))), 2), ValueError),
        (lambda: F.pixel_shuffle(npconv.tensor(np.ones((4, 2))), 2), ValueError),
        (lambda: F.pixel_shuffle(npconv.tensor(np.ones((4, 2, 2))), 0), ValueError),
        (lambda: F.pixel_shuffle(npconv.tensor(np.ones((4, 2, 2))), 2.0), TypeError),
        (lambda: F.pixel_unshuffle(npconv.tensor(np.ones((1, 3, 2))), 2), ValueError),
        (lambda: F.pixel_unshuffle(npconv.tensor(np.ones((1, 2, 3))), 2), ValueError),
        (lambda: F.dropout1d(npconv.tensor(np.ones((1, 2, 3, 4)))), ValueError),
        (lambda: F.dropout2d(npconv.tensor(np.ones((2, 2))), p=1.5), ValueError),
        (lambda: nn.Dropout2d(p=-0.1), ValueError),
    ],
)
def test_bad_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("dropout1d", (8, 50, 3)),
        ("dropout1d", (50, 3)),
        ("dropout2d", (8, 50, 2, 2)),
        ("dropout3d", (8, 50, 2, 1, 2)),
        ("dropout3d", (50, 2, 1, 2)),
    ],
)
def test_channel_dropout_zeroes_whole_channels_and_scales_the_rest(name, shape):
    npconv.manual_seed(0)
    p = 0.3
    x = npconv.tensor(np.ones(shape), requires_grad=True)
    y = getattr(F, name)(x, p)
    nd = int(name[7])
    planes = y.numpy().reshape(-1, int(np.prod(shape[-nd:])))  # one row per channel
    assert set(np.unique(planes)) <= {0.0, 1 / (1 - p)}
    assert (planes.min(axis=1) == planes.max(axis=1)).all()  # a channel is kept or dropped whole
    assert 0.15 < (planes[:, 0] == 0).mean() < 0.45
    y.backward(np.ones(shape))
    np.testing.assert_array_equal(x.grad.numpy(), y.numpy())  # gradient is the same mask and scale
    np.testing.assert_array_equal(getattr(F, name)(x, p, training=False).numpy(), x.numpy())


def test_dropout2d_on_3d_input_warns_and_drops_1d_channels():
    npconv.manual_seed(1)
    x = npconv.tensor(np.ones((4, 30, 5)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = F.dropout2d(x, 0.5)
    assert any("assuming that channel-wise 1D dropout" in str(w.message) for w in caught)
    assert (y.numpy().min(axis=2) == y.numpy().max(axis=2)).all()


def test_channel_dropout_modules_repr_and_eval_identity():
    torch = torch_module()
    for cls in ("Dropout1d", "Dropout2d", "Dropout3d"):
        assert repr(getattr(nn, cls)(0.25, True)) == repr(getattr(torch.nn, cls)(0.25, True))
        layer = getattr(nn, cls)().eval()
        x = npconv.tensor(np.ones((2, 3, 4, 4, 4)[: int(cls[7]) + 2]))
        np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


@pytest.mark.parametrize("kwargs", [{"start_dim": 1}, {"start_dim": 1, "end_dim": 0},
                                    {"start_dim": 0, "end_dim": 1}])
def test_flatten_of_a_zero_dim_tensor_checks_its_dims_as_torch(kwargs):
    torch = pytest.importorskip("torch")
    with pytest.raises(IndexError, match=r"expected to be in range of \[-1, 0\], but got 1"):
        torch.flatten(torch.tensor(2.0), **kwargs)
    with pytest.raises(IndexError, match=r"expected to be in range of \[-1, 0\], but got 1"):
        npconv.flatten(npconv.tensor(2.0), **kwargs)
    assert npconv.flatten(npconv.tensor(2.0), start_dim=-1, end_dim=0).shape == (1,)
