"""Differential tests of the six convolution modules against torch 2.13 (the oracle).

Every test builds the layer in torch, copies torch's weights into the npconv layer with
``load_state_dict`` (plain ndarrays), runs both on the same input and compares the output and
the gradients with respect to input, weight and bias for a random output gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv import nn
from torch_oracle import assert_close, to_torch, torch_module

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

# (npconv class, name of torch's class in torch.nn)
CONV = {1: (nn.Conv1d, "Conv1d"), 2: (nn.Conv2d, "Conv2d"), 3: (nn.Conv3d, "Conv3d")}
TRANSPOSED = {1: (nn.ConvTranspose1d, "ConvTranspose1d"), 2: (nn.ConvTranspose2d, "ConvTranspose2d"),
              3: (nn.ConvTranspose3d, "ConvTranspose3d")}
DTYPES = [np.float64, np.float32]


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        values = values + 1j * rng.standard_normal(shape)
    return values.astype(dtype)


def _build_pair(classes, kwargs: dict, dtype) -> tuple:
    """The torch layer and an npconv layer holding a copy of torch's parameters."""
    torch = torch_module()
    ours_cls, torch_name = classes
    theirs = getattr(torch.nn, torch_name)(**kwargs, dtype=getattr(torch, np.dtype(dtype).name))
    ours = ours_cls(**kwargs, dtype=dtype)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def check_layer(classes, kwargs: dict, input_shape: tuple[int, ...], dtype=np.float64, seed: int = 0,
                **forward_kwargs) -> None:
    """Forward output and d/d(input, weight, bias) of npconv's layer equal torch's."""
    rng = np.random.default_rng(seed)
    ours, theirs = _build_pair(classes, kwargs, dtype)
    x = _random(rng, input_shape, dtype)
    x_ours = npconv.tensor(x, requires_grad=True)
    x_theirs = to_torch(x, requires_grad=True)
    y_ours = ours(x_ours, **forward_kwargs)
    y_theirs = theirs(x_theirs, **forward_kwargs)
    assert y_ours.dtype == np.dtype(dtype)
    assert_close(y_ours, y_theirs, dtype, f"output of {kwargs}")
    gy = _random(rng, tuple(y_theirs.shape), dtype)
    y_ours.backward(gy)
    y_theirs.backward(to_torch(gy))
    assert_close(x_ours.grad, x_theirs.grad, dtype, f"input gradient of {kwargs}")
    assert_close(ours.weight.grad, theirs.weight.grad, dtype, f"weight gradient of {kwargs}")
    if theirs.bias is not None:
        assert_close(ours.bias.grad, theirs.bias.grad, dtype, f"bias gradient of {kwargs}")
    else:
        assert ours.bias is None


# -- hypothesis strategies --------------------------------------------------------------------
def _per_dim(draw, nd: int, values: st.SearchStrategy, as_tuple: bool | None = None):
    """An int (same for every dimension) or a tuple of nd ints, returned with its expansion."""
    if as_tuple is None:
        as_tuple = draw(st.booleans())
    if as_tuple:
        items = tuple(draw(values) for _ in range(nd))
        return items, items
    value = draw(values)
    return value, (value,) * nd


@st.composite
def conv_configs(draw, nd: int):
    """Constructor kwargs and an input shape that torch accepts for Conv{nd}d."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel_size, kernel = _per_dim(draw, nd, st.integers(1, 3))
    dilation, dil = _per_dim(draw, nd, st.integers(1, 2))
    padding_kind = draw(st.sampled_from(["int", "tuple", "valid", "same"]))
    if padding_kind == "same":
        stride, strides = 1, (1,) * nd  # torch: 'same' needs stride 1
    else:
        stride, strides = _per_dim(draw, nd, st.integers(1, 3))
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dil, strict=True))
    if padding_kind == "int":
        padding = draw(st.integers(0, 2))
        pads = ((padding, padding),) * nd
    elif padding_kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
        pads = tuple((p, p) for p in padding)
    elif padding_kind == "valid":
        padding = "valid"
        pads = ((0, 0),) * nd
    else:
        padding = "same"
        pads = tuple(((e - 1) // 2, e - 1 - (e - 1) // 2) for e in extent)
    padding_mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    # the input must hold the kernel after padding, and (reflect, circular) be wider than the pad
    size = []
    for e, (lo, hi) in zip(extent, pads, strict=True):
        minimum = max(1, e - lo - hi, max(lo, hi) + 1 if padding_mode != "zeros" else 1)
        size.append(minimum + draw(st.integers(0, 2 if nd < 3 else 1)))
    batch = draw(st.sampled_from([None, 0, 1, 2]))
    kwargs = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
                  padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()),
                  padding_mode=padding_mode)
    shape = ((in_channels,) if batch is None else (batch, in_channels)) + tuple(size)
    return kwargs, shape


@st.composite
def conv_transpose_configs(draw, nd: int):
    """Constructor kwargs, an input shape and forward kwargs that torch accepts for ConvTranspose{nd}d."""
    groups = draw(st.sampled_from([1, 1, 2]))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel_size, kernel = _per_dim(draw, nd, st.integers(1, 3))
    stride, strides = _per_dim(draw, nd, st.integers(1, 3))
    dilation, dil = _per_dim(draw, nd, st.integers(1, 2))
    padding, pads = _per_dim(draw, nd, st.integers(0, 2))
    output_padding, out_pads = _per_dim(draw, nd, st.integers(0, 2))
    out_pads = tuple(min(op, max(s, d) - 1) for op, s, d in zip(out_pads, strides, dil, strict=True))
    output_padding = out_pads if isinstance(output_padding, tuple) else min(out_pads)
    out_pads = (output_padding,) * nd if isinstance(output_padding, int) else output_padding
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dil, strict=True))
    size = []
    for e, s, p, op in zip(extent, strides, pads, out_pads, strict=True):
        minimum = 1  # output (n - 1) * s - 2 p + e + op must be positive
        while (minimum - 1) * s - 2 * p + e + op < 1:
            minimum += 1
        size.append(minimum + draw(st.integers(0, 2 if nd < 3 else 1)))
    batch = draw(st.sampled_from([None, 0, 1, 2]))
    kwargs = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
                  padding=padding, output_padding=output_padding, groups=groups, bias=draw(st.booleans()),
                  dilation=dilation)
    shape = ((in_channels,) if batch is None else (batch, in_channels)) + tuple(size)
    forward_kwargs = {}
    smallest = [(n - 1) * s - 2 * p + e for n, e, s, p in zip(size, extent, strides, pads, strict=True)]
    if draw(st.booleans()) and all(m + s - 1 >= 1 for m, s in zip(smallest, strides, strict=True)):
        # any size in [smallest, smallest + stride - 1] is a valid output_size (torch's rule)
        spatial = []
        for n, e, s, p in zip(size, extent, strides, pads, strict=True):
            smallest = (n - 1) * s - 2 * p + e
            spatial.append(draw(st.integers(max(smallest, 1), smallest + s - 1)))
        if draw(st.booleans()):
            spatial = list(shape[:-nd]) + spatial if batch is not None else spatial
        forward_kwargs["output_size"] = spatial
    return kwargs, shape, forward_kwargs


# -- combined arguments (hypothesis) -----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_conv_matches_torch_for_drawn_arguments(nd, dtype, data):
    kwargs, shape = data.draw(conv_configs(nd))
    check_layer(CONV[nd], kwargs, shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_conv_transpose_matches_torch_for_drawn_arguments(nd, dtype, data):
    kwargs, shape, forward_kwargs = data.draw(conv_transpose_configs(nd))
    check_layer(TRANSPOSED[nd], kwargs, shape, dtype, **forward_kwargs)


# -- each argument alone ------------------------------------------------------------------------
BASE = dict(in_channels=4, out_channels=6, kernel_size=3)
SIZE = {1: (7,), 2: (7, 6), 3: (5, 6, 5)}

CONV_SINGLE = [
    dict(kernel_size=1), dict(kernel_size=2), dict(kernel_size=(3,)), dict(stride=2), dict(stride=3),
    dict(padding=1), dict(padding=2), dict(padding="valid"), dict(padding="same"), dict(dilation=2),
    dict(groups=2), dict(in_channels=4, out_channels=4, groups=4), dict(bias=False),
    dict(padding=1, padding_mode="reflect"), dict(padding=2, padding_mode="replicate"),
    dict(padding=2, padding_mode="circular"), dict(padding=1, padding_mode="zeros"),
]


def _expand(kwargs: dict, nd: int) -> dict:
    """Turn 1-tuples into nd-tuples of growing values (exercising per-dimension tuples)."""
    result = dict(BASE)
    for key, value in kwargs.items():
        if isinstance(value, tuple) and len(value) == 1:
            value = tuple(value[0] - i % 2 for i in range(nd))
        result[key] = value
    return result


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("single", CONV_SINGLE, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_conv_single_argument(single, nd, dtype):
    check_layer(CONV[nd], _expand(single, nd), (2, _expand(single, nd)["in_channels"]) + SIZE[nd], dtype)


TRANSPOSE_SINGLE = [
    dict(kernel_size=1), dict(kernel_size=2), dict(kernel_size=(3,)), dict(stride=2), dict(stride=3),
    dict(padding=1), dict(padding=2), dict(dilation=2), dict(dilation=3, output_padding=2),
    dict(stride=2, output_padding=1), dict(stride=3, output_padding=(2,)), dict(groups=2),
    dict(in_channels=4, out_channels=4, groups=4), dict(bias=False), dict(padding_mode="zeros"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("single", TRANSPOSE_SINGLE, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_conv_transpose_single_argument(single, nd, dtype):
    kwargs = _expand(single, nd)
    check_layer(TRANSPOSED[nd], kwargs, (2, kwargs["in_channels"]) + SIZE[nd], dtype)


# -- padding modes, 'same' and every combination with groups/dilation/stride ---------------------
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", ["same", "valid", 1, (2, 1, 0)])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_padding_modes(nd, padding, padding_mode):
    padding = padding[:nd] if isinstance(padding, tuple) else padding
    kwargs = dict(in_channels=2, out_channels=4, kernel_size=(2, 3, 4)[:nd], dilation=(1, 2, 1)[:nd],
                  groups=2, padding=padding, padding_mode=padding_mode)
    check_layer(CONV[nd], kwargs, (2, 2) + (6, 5, 7)[:nd])


def test_conv_circular_padding_is_p_on_each_side():
    """The corrected circular padding (torch >= 1.5): output shape as for zeros padding."""
    kwargs = dict(in_channels=1, out_channels=1, kernel_size=3, padding=2, padding_mode="circular")
    check_layer(CONV[1], kwargs, (1, 1, 4))
    assert nn.Conv1d(**kwargs)(np.zeros((1, 1, 4), np.float32)).shape == (1, 1, 6)


# -- output_size and output_padding -------------------------------------------------------------
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_every_valid_output_size(nd):
    kwargs = dict(in_channels=2, out_channels=3, kernel_size=3, stride=(3, 2, 2)[:nd], padding=1,
                  dilation=(1, 2, 1)[:nd])
    size = (4, 3, 2)[:nd]
    smallest = [(n - 1) * s - 2 + 2 * d + 1 for n, s, d in zip(size, kwargs["stride"], kwargs["dilation"],
                                                                strict=True)]
    for extra in range(3):
        spatial = [m + min(extra, s - 1) for m, s in zip(smallest, kwargs["stride"], strict=True)]
        check_layer(TRANSPOSED[nd], kwargs, (2, 2) + size, output_size=spatial)
        check_layer(TRANSPOSED[nd], kwargs, (2, 2) + size, output_size=[2, 3] + spatial)
        check_layer(TRANSPOSED[nd], kwargs, (2,) + size, output_size=[2] + spatial)  # unbatched


def test_conv_transpose_output_size_overrides_output_padding(torch):
    kwargs = dict(in_channels=2, out_channels=2, kernel_size=3, stride=3, output_padding=2)
    check_layer(TRANSPOSED[2], kwargs, (1, 2, 3, 3), output_size=(9, 10))
    check_layer(TRANSPOSED[2], kwargs, (1, 2, 3, 3), output_size=torch.Size([9, 11]))


def test_conv_transpose_output_padding_from_dilation():
    """output_padding may reach dilation - 1 when it exceeds stride - 1."""
    kwargs = dict(in_channels=2, out_channels=2, kernel_size=2, stride=1, dilation=3, output_padding=2)
    for nd in (1, 2, 3):
        check_layer(TRANSPOSED[nd], kwargs, (2, 2) + (3,) * nd)


# -- unbatched input and an empty batch ----------------------------------------------------------
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unbatched_and_empty_batch(nd, transposed):
    classes = TRANSPOSED[nd] if transposed else CONV[nd]
    kwargs = dict(in_channels=2, out_channels=4, kernel_size=2, stride=2, padding=1, groups=2)
    for shape in [(2,) + (5,) * nd, (0, 2) + (5,) * nd, (1, 2) + (5,) * nd]:
        check_layer(classes, kwargs, shape)


def test_zero_sized_batch_gives_zero_gradients():
    """An empty batch: empty output, a zero weight gradient and a zero bias gradient."""
    ours = nn.Conv2d(2, 3, 3, dtype=np.float64)
    y = ours(np.zeros((0, 2, 5, 5)))
    assert y.shape == (0, 3, 3, 3)
    y.sum().backward()
    assert ours.weight.grad.shape == ours.weight.shape and not ours.weight.grad.numpy().any()
    assert ours.bias.grad.shape == (3,) and not ours.bias.grad.numpy().any()


# -- complex dtypes -------------------------------------------------------------------------------
COMPLEX_CASES = [
    (CONV[1], dict(in_channels=2, out_channels=4, kernel_size=3, padding=1, groups=2), (2, 2, 7), {}),
    (CONV[2], dict(in_channels=3, out_channels=2, kernel_size=(2, 3), stride=2, dilation=(1, 2)),
     (1, 3, 6, 7), {}),
    (CONV[2], dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", padding_mode="reflect"),
     (2, 2, 5, 4), {}),
    (CONV[3], dict(in_channels=2, out_channels=2, kernel_size=2, padding=1, padding_mode="circular",
                   bias=False), (1, 2, 3, 4, 3), {}),
    (TRANSPOSED[1], dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1), (2, 2, 5),
     {"output_size": [10]}),
    (TRANSPOSED[2], dict(in_channels=4, out_channels=2, kernel_size=2, stride=2, groups=2, output_padding=1),
     (1, 4, 3, 3), {}),
    (TRANSPOSED[3], dict(in_channels=2, out_channels=2, kernel_size=2, dilation=2), (2, 3, 2, 3), {}),
]


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64], ids=["complex128", "complex64"])
@pytest.mark.parametrize("case", range(len(COMPLEX_CASES)))
def test_complex_matches_torch(case, dtype):
    classes, kwargs, shape, forward_kwargs = COMPLEX_CASES[case]
    check_layer(classes, kwargs, shape, dtype, **forward_kwargs)


def test_complex_equals_real_decomposition(torch):
    """(a + ib) * (w + iv) = (a*w - b*v) + i(a*v + b*w), computed with torch's real convolutions."""
    rng = np.random.default_rng(3)
    ours = nn.Conv2d(2, 3, 3, padding=1, dtype=np.complex128)
    x = _random(rng, (2, 2, 5, 4), np.complex128)
    w, b = ours.weight.numpy(), ours.bias.numpy()

    def conv(a, v):
        return torch.nn.functional.conv2d(to_torch(a), to_torch(v), padding=1).numpy()

    re = conv(x.real, w.real) - conv(x.imag, w.imag)
    im = conv(x.real, w.imag) + conv(x.imag, w.real)
    expected = re + b.real[:, None, None] + 1j * (im + b.imag[:, None, None])
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=1e-10, atol=1e-10)


# -- attributes as torch stores them ------------------------------------------------------------
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_attributes_and_parameter_shapes_match_torch(nd, transposed):
    kwargs = dict(in_channels=4, out_channels=6, kernel_size=(3, 2, 1)[:nd], stride=2, padding=1, groups=2,
                  dilation=(1, 2, 1)[:nd])
    if transposed:
        kwargs["output_padding"] = 1
    ours, theirs = _build_pair(TRANSPOSED[nd] if transposed else CONV[nd], kwargs, np.float32)
    for name in ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "transposed", "output_padding", "padding_mode"]:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.weight.shape == tuple(theirs.weight.shape)
    assert ours.bias.shape == tuple(theirs.bias.shape)
    assert ours.weight.dtype == np.float32 and ours.weight.requires_grad
    assert math.prod(ours.weight.shape) == theirs.weight.numel()


@pytest.mark.parametrize("transposed", [False, True])
def test_non_contiguous_input_and_output_gradient(transposed):
    """Strided, reversed and transposed views are read correctly (input and output gradient)."""
    classes = TRANSPOSED[2] if transposed else CONV[2]
    kwargs = dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1)
    ours, theirs = _build_pair(classes, kwargs, np.float64)
    x = np.random.default_rng(0).standard_normal((5, 6, 3, 2)).transpose(3, 2, 1, 0)[:, :, ::-1, ::2]
    assert not x.flags.c_contiguous
    x_ours, x_theirs = npconv.tensor(x, requires_grad=True), to_torch(x, requires_grad=True)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert_close(y_ours, y_theirs, np.float64)
    gy = np.asfortranarray(np.random.default_rng(1).standard_normal(y_ours.shape))
    y_ours.backward(gy)
    y_theirs.backward(to_torch(gy))
    assert_close(x_ours.grad, x_theirs.grad, np.float64)
    assert_close(ours.weight.grad, theirs.weight.grad, np.float64)
