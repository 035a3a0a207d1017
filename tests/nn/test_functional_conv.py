"""``npconv.nn.functional`` conv*, conv_transpose* and pad against torch.nn.functional (forward + grads)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import npconv.nn.functional as F
from torch_oracle import assert_close, to_torch, torch_module

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

# (npconv function, name of torch's function in torch.nn.functional)
CONV = {1: (F.conv1d, "conv1d"), 2: (F.conv2d, "conv2d"), 3: (F.conv3d, "conv3d")}
TRANSPOSED = {1: (F.conv_transpose1d, "conv_transpose1d"), 2: (F.conv_transpose2d, "conv_transpose2d"),
              3: (F.conv_transpose3d, "conv_transpose3d")}
DTYPES = [np.float64, np.float32]


def check_function(pair, arrays: dict, kwargs: dict, dtype, seed: int = 0) -> None:
    """Call npconv's and torch's function on copies of ``arrays``; compare output and every gradient.

    ``arrays`` maps argument names (input, weight, bias) to ndarrays (or None); they are passed
    positionally in that order, then ``kwargs``.
    """
    ours_fn, theirs_fn = pair  # torch's function or its name in torch.nn.functional
    if isinstance(theirs_fn, str):
        theirs_fn = getattr(torch_module().nn.functional, theirs_fn)
    ours_args = [None if a is None else npconv.tensor(a, requires_grad=True) for a in arrays.values()]
    theirs_args = [None if a is None else to_torch(a, requires_grad=True) for a in arrays.values()]
    y_ours = ours_fn(*ours_args, **kwargs)
    y_theirs = theirs_fn(*theirs_args, **kwargs)
    assert_close(y_ours, y_theirs, dtype, f"output, {kwargs}")
    gy = np.random.default_rng(seed).standard_normal(tuple(y_theirs.shape)).astype(dtype)
    y_ours.backward(gy)
    y_theirs.backward(to_torch(gy))
    for name, a, b in zip(arrays, ours_args, theirs_args, strict=True):
        if a is not None:
            assert_close(a.grad, b.grad, dtype, f"gradient in {name}, {kwargs}")


@st.composite
def functional_conv_cases(draw, nd: int, transposed: bool, dtype):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(*[st.integers(1, 3)] * nd)))
    dilation = draw(st.one_of(st.integers(1, 2), st.tuples(*[st.integers(1, 2)] * nd)))
    strides = stride if isinstance(stride, tuple) else (stride,) * nd
    dils = dilation if isinstance(dilation, tuple) else (dilation,) * nd
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dils, strict=True)]
    kwargs = dict(stride=stride, dilation=dilation, groups=groups)
    if transposed:
        padding = draw(st.one_of(st.integers(0, 1), st.tuples(*[st.integers(0, 1)] * nd)))
        pads = padding if isinstance(padding, tuple) else (padding,) * nd
        out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dils, strict=True))
        kwargs.update(padding=padding, output_padding=out_pad)
        size = []
        for e, s, p, op in zip(extent, strides, pads, out_pad, strict=True):
            n = 1
            while (n - 1) * s - 2 * p + e + op < 1:  # the output must not be empty
                n += 1
            size.append(n + draw(st.integers(0, 2)))
        size = tuple(size)
        weight_shape = (cin, cout // groups) + kernel
        bias_size = cout
    else:
        padding = draw(st.one_of(st.integers(0, 2), st.tuples(*[st.integers(0, 2)] * nd),
                                 st.just("valid"), st.just("same")))
        if padding == "same":
            kwargs["stride"] = 1
        pads = (0,) * nd if isinstance(padding, str) else padding
        pads = pads if isinstance(pads, tuple) else (pads,) * nd
        kwargs["padding"] = padding
        size = tuple(max(1, e - 2 * p) + draw(st.integers(0, 2)) for e, p in zip(extent, pads, strict=True))
        weight_shape = (cout, cin // groups) + kernel
        bias_size = cout
    batch = draw(st.sampled_from([None, 0, 1, 2]))
    shape = ((cin,) if batch is None else (batch, cin)) + size
    arrays = dict(input=rng.standard_normal(shape).astype(dtype),
                  weight=rng.standard_normal(weight_shape).astype(dtype),
                  bias=rng.standard_normal(bias_size).astype(dtype) if draw(st.booleans()) else None)
    return arrays, kwargs


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_conv_functional_matches_torch(nd, dtype, data):
    arrays, kwargs = data.draw(functional_conv_cases(nd, False, dtype))
    check_function(CONV[nd], arrays, kwargs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_conv_transpose_functional_matches_torch(nd, dtype, data):
    arrays, kwargs = data.draw(functional_conv_cases(nd, True, dtype))
    check_function(TRANSPOSED[nd], arrays, kwargs, dtype)


def test_positional_signatures_match_torch(torch):
    """conv_transpose*: (input, weight, bias, stride, padding, output_padding, groups, dilation)."""
    TF = torch.nn.functional
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((1, 4, 5, 5)), rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(2)
    check_function(TRANSPOSED[2], dict(input=x, weight=w, bias=b), dict(groups=2), np.float64)
    ours = F.conv_transpose2d(x, w, b, 2, 1, 1, 2, 2).numpy()
    theirs = TF.conv_transpose2d(to_torch(x), to_torch(w), to_torch(b), 2, 1, 1, 2, 2)
    assert_close(ours, theirs, np.float64)
    wc = rng.standard_normal((4, 2, 3, 3))
    # input, weight, bias, stride, padding, dilation, groups
    ours = F.conv2d(x, wc, b[:1].repeat(4), 2, 1, 2, 2).numpy()
    theirs = TF.conv2d(to_torch(x), to_torch(wc), to_torch(b[:1].repeat(4)), 2, 1, 2, 2)
    assert_close(ours, theirs, np.float64)


def test_plain_ndarrays_are_accepted_and_give_a_tensor(torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 6)), rng.standard_normal((4, 3, 2))
    y = F.conv1d(x, w, padding="same")
    assert isinstance(y, npconv.Tensor) and not y.requires_grad
    assert_close(y, TF.conv1d(to_torch(x), to_torch(w), padding="same"), np.float64)


# -- pad ----------------------------------------------------------------------------------------
PAD_CASES = [
    # (input shape, pad, mode, value)
    ((2, 3, 5), (1, 2), "constant", None),
    ((2, 3, 5), (1, 2), "constant", 1.5),
    ((2, 3, 5), (-1, 2), "constant", None),
    ((2, 3, 5, 4), (-1, -2, 2, -3), "constant", -0.5),
    ((3, 5), (1, 1, 2, 3), "constant", 2.0),  # pads every dimension
    ((2, 3, 4, 5, 4), (1, 0, 0, 2, 2, 1), "constant", None),
    ((2, 3, 5), (4, 3), "reflect", None),
    ((3, 5), (2, 1), "reflect", None),  # unbatched
    ((2, 3, 5, 4), (1, 3, 2, 0), "reflect", None),
    ((2, 3, 4, 5, 4), (1, 3, 2, 0, 3, 1), "reflect", None),
    ((2, 3, 5), (4, 7), "replicate", None),
    ((2, 5, 4), (1, 3, 2, 0), "replicate", None),
    ((2, 3, 4, 5, 4), (1, 3, 2, 0, 3, 1), "replicate", None),
    ((2, 3, 5), (5, 3), "circular", None),
    ((2, 3, 5, 4), (1, 3, 4, 0), "circular", None),
    ((2, 3, 4, 5, 4), (1, 3, 2, 0, 3, 1), "circular", None),
    ((2, 3, 4, 5, 4), (0, 0, 0, 0, 0, 0), "reflect", None),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", PAD_CASES, ids=lambda c: f"{c[2]}{c[1]}-{c[0]}")
def test_pad_matches_torch(case, dtype, torch):
    TF = torch.nn.functional
    shape, pad, mode, value = case
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    kwargs = dict(mode=mode) if value is None else dict(mode=mode, value=value)
    check_function((lambda a: F.pad(a, pad, **kwargs), lambda a: TF.pad(a, pad, **kwargs)),
                   dict(input=x), {}, dtype)


@st.composite
def pad_cases(draw):
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    n = draw(st.integers(1, 3))
    if mode == "constant":
        rank = draw(st.integers(n, n + 2))
        shape = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    else:
        rank = draw(st.integers(n + 1, n + 2))  # torch: (C, *spatial) or (N, C, *spatial)
        shape = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    pad = []
    for size in reversed(shape[rank - n:]):
        for _ in range(2):
            if mode == "constant":
                pad.append(draw(st.integers(-size // 2, 3)))
            elif mode == "reflect":
                pad.append(draw(st.integers(0, size - 1)))
            elif mode == "circular":
                pad.append(draw(st.integers(0, size)))
            else:
                pad.append(draw(st.integers(0, 3)))
    value = draw(st.floats(-2, 2)) if mode == "constant" and draw(st.booleans()) else None
    return shape, tuple(pad), mode, value


@given(case=pad_cases(), seed=st.integers(0, 100))
def test_pad_matches_torch_for_drawn_cases(case, seed, torch):
    TF = torch.nn.functional
    shape, pad, mode, value = case
    x = np.random.default_rng(seed).standard_normal(shape)
    kwargs = dict(mode=mode) if value is None else dict(mode=mode, value=value)
    check_function((lambda a: F.pad(a, pad, **kwargs), lambda a: TF.pad(a, pad, **kwargs)),
                   dict(input=x), {}, np.float64)


def test_pad_mode_default_and_value_zero(torch):
    TF = torch.nn.functional
    x = np.arange(6.0).reshape(2, 3)
    assert_close(F.pad(x, (1, 1)), TF.pad(to_torch(x), (1, 1)), np.float64)
    assert_close(F.pad(x, [1, 0, 0, 1], value=0.0), TF.pad(to_torch(x), [1, 0, 0, 1], value=0.0), np.float64)


def test_pad_of_a_scalar_with_no_padding_keeps_the_gradient_shape():
    x = npconv.tensor(np.array(1.5), requires_grad=True)
    y = F.pad(x, [])
    assert y.shape == ()
    y.backward()
    assert x.grad.shape == ()
