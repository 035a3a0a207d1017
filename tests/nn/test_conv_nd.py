"""N-d convolution: ConvNd/ConvTransposeNd and F.conv/F.conv_transpose/F.pad of any rank.

Oracles: torch's Conv1d/2d/3d for ranks 1-3; for rank 4 an explicit sum of torch conv3d /
conv_transpose3d over the 4th axis (torch autograd of that sum gives the gradients); for ranks
5-6 the NumPy reference (tests/reference.py) plus finite-difference gradients; np.pad for F.pad.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import reference
from kernel_checks import check_finite_differences, npconv_grads
from npconv import nn
from npconv.nn import functional as F
from torch_oracle import assert_close, check_against_torch, to_torch, torch_grads, torch_module

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


# -- helpers ----------------------------------------------------------------------------------------

def torch_conv4d(x, w, b, stride, pads, dilation, groups):
    """4-d cross-correlation as a sum of torch conv3d over the first spatial axis (differentiable).

    ``pads`` holds four (lo, hi) pairs; the last three are applied by a constant F.pad first.
    """
    torch = torch_module()
    TF = torch.nn.functional
    (lo, hi), rest = pads[0], pads[1:]
    x = TF.pad(x, [v for pair in reversed(rest) for v in pair])
    size, k = x.shape[2], w.shape[2]
    out = (size + lo + hi - dilation[0] * (k - 1) - 1) // stride[0] + 1
    slices = []
    for a in range(out):
        terms = [TF.conv3d(x[:, :, src], w[:, :, j], None, stride[1:], 0, dilation[1:], groups)
                 for j in range(k) if 0 <= (src := a * stride[0] + j * dilation[0] - lo) < size]
        if not terms:  # the window lies entirely in the zero padding
            terms = [0 * TF.conv3d(x[:, :, 0], w[:, :, 0], None, stride[1:], 0, dilation[1:], groups)]
        slices.append(sum(terms[1:], terms[0]))
    y = torch.stack(slices, dim=2)
    return y if b is None else y + b.reshape(1, -1, 1, 1, 1, 1)


def torch_conv_transpose4d(x, w, b, stride, padding, output_padding, groups, dilation):
    """4-d transposed convolution as a sum of torch conv_transpose3d over the first spatial axis."""
    torch = torch_module()
    TF = torch.nn.functional
    (lo, hi), rest = padding[0], tuple(p for p, _ in padding[1:])
    size, k = x.shape[2], w.shape[2]
    out = (size - 1) * stride[0] - lo - hi + dilation[0] * (k - 1) + 1 + output_padding[0]
    slices = [[] for _ in range(out)]
    for a, j in itertools.product(range(size), range(k)):
        target = a * stride[0] + j * dilation[0] - lo
        if 0 <= target < out:
            slices[target].append(TF.conv_transpose3d(x[:, :, a], w[:, :, j], None, stride[1:], rest,
                                                      output_padding[1:], groups, dilation[1:]))
    zero = 0 * TF.conv_transpose3d(x[:, :, 0], w[:, :, 0], None, stride[1:], rest, output_padding[1:],
                                   groups, dilation[1:])
    y = torch.stack([sum(terms, zero) for terms in slices], dim=2)
    return y if b is None else y + b.reshape(1, -1, 1, 1, 1, 1)


# -- ConvNd with 1-3 dims is torch's Conv1d/2d/3d ---------------------------------------------------

@st.composite
def torch_conv_cases(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = 1 if kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = {"int": draw(st.integers(0, 2)), "tuple": tuple(draw(st.integers(0, 2)) for _ in range(nd)),
               "same": "same", "valid": "valid"}[kind]
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = tuple(max(e, 3) + draw(st.integers(0, 2)) for e in extent)
    kwargs = dict(in_channels=cin, out_channels=cout, kernel_size=kernel, stride=stride, padding=padding,
                  dilation=dilation, groups=groups, bias=draw(st.booleans()), padding_mode=mode)
    return kwargs, (draw(st.integers(1, 2)), cin) + size


def torch_module_pair(kwargs: dict, dtype=np.float64):
    nd = len(kwargs["kernel_size"])
    torch = torch_module()
    theirs = getattr(torch.nn, f"Conv{nd}d")(**kwargs, dtype=getattr(torch, np.dtype(dtype).name))
    ours = nn.ConvNd(**kwargs, dtype=dtype)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    return ours, theirs


@given(case=torch_conv_cases(), seed=st.integers(0, 50))
def test_convnd_of_rank_1_to_3_is_torch_conv(case, seed):
    kwargs, shape = case
    ours, theirs = torch_module_pair(kwargs)
    x = np.random.default_rng(seed).standard_normal(shape)
    y, gy, grads = npconv_grads(lambda x: ours(x), dict(x=x), seed=seed)
    y_t, grads_t = torch_grads(lambda x: theirs(x), dict(x=x), gy)
    assert_close(y, y_t, np.float64, f"output {kwargs}")
    assert_close(grads["x"], grads_t["x"], np.float64, f"d/dx {kwargs}")
    assert_close(ours.weight.grad, theirs.weight.grad, np.float64, f"d/dweight {kwargs}")
    if kwargs["bias"]:
        assert_close(ours.bias.grad, theirs.bias.grad, np.float64, f"d/dbias {kwargs}")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_convnd_float32_and_unbatched(nd):
    kwargs = dict(in_channels=4, out_channels=2, kernel_size=(3,) * nd, stride=(2,) + (1,) * (nd - 1),
                  padding=1, dilation=1, groups=2, bias=True, padding_mode="circular")
    ours, theirs = torch_module_pair(kwargs, np.float32)
    x = np.random.default_rng(nd).standard_normal((4,) + (5,) * nd).astype(np.float32)
    check_against_torch(lambda x: ours(x), lambda x: theirs(x), dict(x=x), np.float32, "unbatched float32")
    assert ours(x).dtype == np.float32
    assert repr(ours).startswith("ConvNd(4, 2, kernel_size=")


# -- 4-d: sums of torch conv3d ---------------------------------------------------------------------

@st.composite
def conv4d_cases(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(4))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(4))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(4))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(4))
    size = tuple(d * (k - 1) + 1 + draw(st.integers(0, 2)) for k, d in zip(kernel, dilation, strict=True))
    return dict(stride=stride, pads=pads, dilation=dilation, groups=groups), (1, cin) + size, \
        (cout, cin // groups) + kernel, draw(st.booleans())


@given(case=conv4d_cases(), seed=st.integers(0, 50))
def test_conv4d_is_a_sum_of_torch_conv3d(case, seed):
    geometry, x_shape, w_shape, with_bias = case
    rng = np.random.default_rng(seed)
    arrays = dict(x=rng.standard_normal(x_shape), w=rng.standard_normal(w_shape))
    if with_bias:
        arrays["b"] = rng.standard_normal(w_shape[0])
    stride, pads, dilation, groups = (geometry[k] for k in ("stride", "pads", "dilation", "groups"))

    def ours(x, w, b=None):
        return F.conv(x, w, b, stride, pads, dilation, groups)

    def theirs(x, w, b=None):
        return torch_conv4d(x, w, b, stride, pads, dilation, groups)

    check_against_torch(ours, theirs, arrays, what=str(geometry))


def test_conv4d_module_with_every_argument_on_the_4th_axis(torch):
    torch.manual_seed(0)
    module = nn.ConvNd(4, 6, (3, 2, 1, 2), stride=(2, 1, 1, 2), padding=((2, 1), (0, 1), (1, 0), (1, 1)),
                       dilation=(2, 1, 1, 1), groups=2, dtype=np.float64)
    assert module.weight.shape == (6, 2, 3, 2, 1, 2) and module.bias.shape == (6,)
    assert "padding=((2, 1), (0, 1), (1, 0), (1, 1))" in repr(module)
    x = np.random.default_rng(3).standard_normal((2, 4, 7, 3, 2, 4))
    w, b = module.weight.numpy().copy(), module.bias.numpy().copy()
    y, gy, grads = npconv_grads(lambda x: module(x), dict(x=x))
    y_t, grads_t = torch_grads(
        lambda x, w, b: torch_conv4d(x, w, b, module.stride, module.padding, module.dilation, 2),
        dict(x=x, w=w, b=b), gy)
    assert_close(y, y_t, np.float64, "4-d module output")
    assert_close(grads["x"], grads_t["x"], np.float64, "4-d d/dx")
    assert_close(module.weight.grad, grads_t["w"], np.float64, "4-d d/dweight")
    assert_close(module.bias.grad, grads_t["b"], np.float64, "4-d d/dbias")
    unbatched = module(x[0])
    assert_close(unbatched, y_t[0], np.float64, "unbatched 4-d")


@st.composite
def conv_transpose4d_cases(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(4))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(4))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(4))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
    size = tuple(draw(st.integers(1, 3)) for _ in range(4))
    padding = []
    for n, k, s, d, op in zip(size, kernel, stride, dilation, output_padding, strict=True):
        room = (n - 1) * s + d * (k - 1) + op  # output size with padding 0, minus one
        p = draw(st.integers(0, min(2, room // 2)))
        padding.append((p, p))
    lo, hi = draw(st.integers(0, 2)), draw(st.integers(0, 2))  # per-side on the 4th axis
    room = (size[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + output_padding[0]
    if lo + hi <= room:
        padding[0] = (lo, hi)
    return (dict(stride=stride, padding=tuple(padding), output_padding=output_padding, groups=groups,
                 dilation=dilation), (2, cin) + size, (cin, cout // groups) + kernel, draw(st.booleans()))


@given(case=conv_transpose4d_cases(), seed=st.integers(0, 50))
def test_conv_transpose4d_is_a_sum_of_torch_conv_transpose3d(case, seed):
    geometry, x_shape, w_shape, with_bias = case
    rng = np.random.default_rng(seed)
    arrays = dict(x=rng.standard_normal(x_shape), w=rng.standard_normal(w_shape))
    if with_bias:
        arrays["b"] = rng.standard_normal(w_shape[1] * geometry["groups"])
    args = (geometry["stride"], geometry["padding"], geometry["output_padding"], geometry["groups"],
            geometry["dilation"])

    def ours(x, w, b=None):
        return F.conv_transpose(x, w, b, *args)

    def theirs(x, w, b=None):
        return torch_conv_transpose4d(x, w, b, *args)

    check_against_torch(ours, theirs, arrays, what=str(geometry))


def test_conv_transpose_nd_module_and_output_size():
    module = nn.ConvTransposeNd(2, 4, (2, 3, 1, 2), stride=(2, 1, 3, 2), padding=(1, 0, 0, 1),
                                groups=2, dtype=np.float64)
    assert module.weight.shape == (2, 2, 2, 3, 1, 2)
    x = np.random.default_rng(5).standard_normal((1, 2, 3, 2, 2, 3))
    target = (5, 4, 6, 5)  # sizes 4..5, 4, 4..6, 4..5: every one in range
    y = module(npconv.tensor(x), output_size=target)
    assert y.shape == (1, 4) + target
    pads = tuple((p, p) for p in module.padding)
    weight, bias = to_torch(module.weight.numpy()), to_torch(module.bias.numpy())
    expected = torch_conv_transpose4d(to_torch(x), weight, bias,
                                      module.stride, pads, (1, 0, 2, 1), 2, (1, 1, 1, 1))
    assert_close(y, expected, np.float64, "ConvTransposeNd with output_size")
    with pytest.raises(ValueError, match="valid sizes range"):
        module(npconv.tensor(x), output_size=(6, 4, 6, 5))


# -- 5-d and 6-d: direct loops and finite differences ----------------------------------------------

@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect", "replicate", "symmetric"])
@pytest.mark.parametrize("nd", [5, 6])
def test_high_rank_conv_matches_a_direct_loop_and_finite_differences(nd, mode):
    rng = np.random.default_rng(nd)
    kernel = (2, 1, 2, 1, 2, 1)[:nd]
    stride = (1, 2, 1, 1, 2, 1)[:nd]
    dilation = (1, 1, 2, 1, 1, 1)[:nd]
    pads = ((1, 0), (0, 1), (1, 1), (0, 0), (1, 2), (1, 0))[:nd]
    size = (3, 3, 3, 2, 3, 2)[:nd]
    x = rng.standard_normal((1, 2) + size)
    w = rng.standard_normal((4, 1) + kernel)
    b = rng.standard_normal(4)

    def ours(x, w, b):
        return F.conv(x, w, b, stride, pads, dilation, 2, padding_mode=mode)

    expected = reference.conv(x, w, b, stride, pads, dilation, 2, mode)
    np.testing.assert_allclose(ours(x, w, b).numpy(), expected, rtol=1e-12, atol=1e-12)
    check_finite_differences(ours, dict(x=x, w=w, b=b), seed=nd)


@pytest.mark.parametrize("nd", [5, 6])
def test_high_rank_module_and_transposed_finite_differences(nd):
    npconv.manual_seed(nd)
    conv = nn.ConvNd(2, 2, (2,) * nd, stride=2, padding="same", dtype=np.float64)
    up = nn.ConvTransposeNd(2, 2, (2,) * nd, stride=2, padding=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((1, 2) + (3,) * nd)
    y = conv(x)
    assert y.shape == (1, 2) + (2,) * nd  # ceil(3 / 2)
    z = up(y)
    assert z.shape == (1, 2) + (4,) * nd
    assert np.all(np.isfinite(z.numpy()))
    w, b = up.weight.numpy().copy(), up.bias.numpy().copy()
    check_finite_differences(lambda x, w, b: F.conv_transpose(x, w, b, 2), dict(x=y.numpy(), w=w, b=b),
                             seed=nd)
    # the transposed conv is the adjoint of the direct loop's conv: <convT(r), v> == <r, conv(v)>
    r = np.random.default_rng(1).standard_normal((1, 2) + (2,) * nd)
    v = np.random.default_rng(2).standard_normal((1, 2) + (3,) * nd)
    pads = ((1, 0),) * nd
    transposed = F.conv_transpose(r, w, None, 2, pads)
    assert transposed.shape == v.shape
    assert np.isclose(np.sum(transposed.numpy() * v),
                      np.sum(r * reference.conv(v, w, None, (2,) * nd, pads, (1,) * nd, 1)), rtol=1e-10)


# -- F.conv and F.conv_transpose ---------------------------------------------------------------------

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_functional_rank_comes_from_the_weight(nd, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, 4) + (6,) * nd)
    w = rng.standard_normal((6, 2) + (3,) * nd)
    b = rng.standard_normal(6)
    torch_conv = getattr(TF, f"conv{nd}d")
    check_against_torch(lambda x, w, b: F.conv(x, w, b, 2, 1, 1, 2),
                        lambda x, w, b: torch_conv(x, w, b, 2, 1, 1, 2), dict(x=x, w=w, b=b),
                        what=f"F.conv {nd}")
    wt = rng.standard_normal((4, 3) + (2,) * nd)
    torch_conv_t = getattr(TF, f"conv_transpose{nd}d")
    check_against_torch(lambda x, w: F.conv_transpose(x, w, None, 2, 1, 1, 2, 1),
                        lambda x, w: torch_conv_t(x, w, None, 2, 1, 1, 2, 1), dict(x=x, w=wt),
                        what=f"F.conv_transpose {nd}")
    assert_close(F.conv(x[0], w, b, padding="same", groups=2),
                 torch_conv(to_torch(x[0]), to_torch(w), to_torch(b), padding="same", groups=2), np.float64)


def test_functional_errors():
    x = np.zeros((1, 2, 5, 5, 5, 5))
    with pytest.raises(ValueError, match=r"weight must have at least 3 dimensions.*\[2, 2\]"):
        F.conv(x, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"Expected 5D \(unbatched\) or 6D \(batched\) input to conv, "
                                         r"but got input of size: \[1, 2, 5, 5\]"):
        F.conv(x[..., 0, 0], np.zeros((1, 2, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match="expected input.* to have 4 channels, but got 2"):
        F.conv(x, np.zeros((2, 2, 1, 1, 1, 1)), groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for transposed"):
        F.conv_transpose(x, np.zeros((2, 1, 1, 1, 1, 1)), padding="same")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        F.conv(x, np.zeros((1, 2, 1, 1, 1, 1)), padding_mode="wrap")
    with pytest.raises(ValueError, match="stride must be an int or a tuple of 4 ints"):
        F.conv(x, np.zeros((1, 2, 1, 1, 1, 1)), stride=(1, 2))
    with pytest.raises(ValueError, match="kernel_size must be a tuple for ConvNd"):
        nn.ConvNd(2, 2, 3)
    with pytest.raises(ValueError, match="kernel_size must be a tuple for ConvNd"):
        nn.ConvTransposeNd(2, 2, 3)


# -- F.pad of any rank -------------------------------------------------------------------------------

@st.composite
def pad_any_rank(draw):
    rank = draw(st.integers(1, 6))
    shape = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    padded = draw(st.integers(1, rank))
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular", "symmetric"]))
    pad = []
    for size in reversed(shape[rank - padded:]):
        for _ in range(2):
            top = size - 1 if mode == "reflect" else 2 * size + 1  # wider than the input where allowed
            pad.append(draw(st.integers(0, top)))
    return shape, tuple(pad), mode


@given(case=pad_any_rank(), seed=st.integers(0, 50))
def test_pad_of_any_rank_is_numpy_pad(case, seed):
    shape, pad, mode = case
    x = np.random.default_rng(seed).standard_normal(shape)
    n = len(pad) // 2
    width = [(0, 0)] * (len(shape) - n) + [(pad[2 * i], pad[2 * i + 1]) for i in reversed(range(n))]
    numpy_mode = {"replicate": "edge", "circular": "wrap"}.get(mode, mode)
    value = 1.25 if mode == "constant" else None
    expected = np.pad(x, width, mode=numpy_mode, **({"constant_values": value} if value else {}))
    result = F.pad(x, pad, mode=mode, value=value)
    np.testing.assert_array_equal(result.numpy(), expected)
    check_finite_differences(lambda x: F.pad(x, pad, mode=mode, value=value), dict(x=x), seed=seed)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pad", [(1, -2), (-1, 2), (-2, -1), (-1, 1, 2, -2), (2, -3), (4, -2),
                                 (0, -1, -1, 0)])
def test_negative_pads_match_torch_in_every_mode(mode, pad, torch):
    TF = torch.nn.functional
    x = np.random.default_rng(len(pad)).standard_normal((2, 3, 6, 5)[:len(pad) // 2 + 2])
    check_against_torch(lambda x: F.pad(x, pad, mode=mode), lambda x: TF.pad(x, pad, mode=mode), dict(x=x),
                        what=f"{mode} {pad}")


@pytest.mark.parametrize("pad, mode, message", [
    ((3, 0), "reflect", r"Padding size should be less than the corresponding input dimension.*\(3, 0\)"),
    ((2, -6), "constant", r"negative padding must crop at most the size 3 .*but got \(2, -6\)"),
    ((1, -4), "circular", r"negative padding must crop at most the size 3 .*but got \(1, -4\)"),
    ((1, -3), "circular", r"circular padding must have a non-empty .*but got padding \(1, -3\)"),
    ((-3, -1), "replicate", "resulted in a negative output size"),
    ((1, 2, 3), "constant", "Padding length must be divisible by 2"),
    ((1, 1) * 4, "constant", "Padding length should be less than or equal to two times the input dimension"),
    ((1, 1), "wrap", "Unsupported padding mode: '?wrap"),
])
def test_bad_pads_are_clear_errors(pad, mode, message):
    x = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match=message):
        F.pad(x, pad, mode=mode)
