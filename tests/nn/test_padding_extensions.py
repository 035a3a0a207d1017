"""Padding beyond torch: strided 'same'/'same_lower', per-side pairs, 'symmetric', circular wider
than the input, and padding modes on transposed convolutions (the adjoint of the padded conv).

Oracles are torch computations built from pieces torch does support: an explicit pad (torch's
F.pad, or an index gather with NumPy's index map for modes/widths torch lacks) followed by a torch
convolution with zero padding; for transposed convolutions torch autograd's gradient with respect
to the input of that padded convolution. Gradients are also checked by finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from kernel_checks import check_finite_differences, npconv_grads
from npconv import nn
from npconv.geometry import ConvGeometry
from npconv.nn import functional as F
from torch_oracle import assert_close, check_against_torch, to_torch, torch_module, torch_pad

MODES = ["zeros", "circular", "reflect", "replicate", "symmetric"]
NUMPY_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap",
              "symmetric": "symmetric"}
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


# -- torch references ---------------------------------------------------------------------------------

def torch_padded_conv(x, w, b, stride, pads, dilation, groups, mode):
    torch = torch_module()
    TF = torch.nn.functional
    conv = getattr(TF, f"conv{w.ndim - 2}d")
    return conv(torch_pad(x, pads, mode), w, b, stride, 0, dilation, groups)


def torch_padded_conv_adjoint(y, w, b, stride, pads, dilation, groups, mode, out_size):
    """torch autograd's d<conv_m(x), y>/dx (a function of y and w, differentiable again) plus bias."""
    torch = torch_module()
    c_out = w.shape[1] * groups
    x0 = torch.zeros((y.shape[0], c_out) + tuple(out_size), dtype=y.dtype, requires_grad=True)
    z = torch_padded_conv(x0, w, None, stride, pads, dilation, groups, mode)
    z = z[(slice(None), slice(None)) + tuple(slice(0, n) for n in y.shape[2:])]  # output_padding >= stride
    (grad,) = torch.autograd.grad((z * y).sum(), x0, create_graph=True)
    return grad if b is None else grad + b.reshape((1, -1) + (1,) * len(out_size))


def onnx_pads(size, kernel, stride, dilation, lower):
    """ONNX auto_pad SAME_UPPER / SAME_LOWER."""
    pads = []
    for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
        total = max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
        head = (total + 1) // 2 if lower else total // 2
        pads.append((head, total - head))
    return tuple(pads)


# -- helpers ------------------------------------------------------------------------------------------

def random_arrays(seed, x_shape, w_shape, bias_size=None):
    rng = np.random.default_rng(seed)
    arrays = dict(x=rng.standard_normal(x_shape), w=rng.standard_normal(w_shape))
    if bias_size is not None:
        arrays["b"] = rng.standard_normal(bias_size)
    return arrays


# -- strided 'same' / 'same_lower' ----------------------------------------------------------------------

@st.composite
def same_cases(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    size = tuple(draw(st.integers(2, 7)) for _ in range(nd))
    padding = draw(st.sampled_from(["same", "same_lower"]))
    mode = draw(st.sampled_from(MODES))
    pads = onnx_pads(size, kernel, stride, dilation, padding == "same_lower")
    if mode == "reflect" and any(lo >= n or hi >= n for (lo, hi), n in zip(pads, size, strict=True)):
        mode = "replicate"
    return dict(kernel=kernel, stride=stride, dilation=dilation, groups=groups, padding=padding, mode=mode,
                pads=pads), (draw(st.integers(1, 2)), cin) + size, (cout, cin // groups) + kernel


@given(case=same_cases(), bias=st.booleans(), seed=st.integers(0, 50))
def test_strided_same_is_onnx_auto_pad(case, bias, seed):
    geometry, x_shape, w_shape = case
    arrays = random_arrays(seed, x_shape, w_shape, w_shape[0] if bias else None)
    stride, dilation, groups, mode = (geometry[k] for k in ("stride", "dilation", "groups", "mode"))

    def ours(x, w, b=None):
        return F.conv(x, w, b, stride, geometry["padding"], dilation, groups, padding_mode=mode)

    def theirs(x, w, b=None):
        return torch_padded_conv(x, w, b, stride, geometry["pads"], dilation, groups, mode)

    check_against_torch(ours, theirs, arrays, what=str(geometry), seed=seed)
    y = ours(**arrays)
    assert y.shape[2:] == tuple(math.ceil(n / s) for n, s in zip(x_shape[2:], stride, strict=True))


@pytest.mark.parametrize("padding", ["same", "same_lower"])
def test_strided_same_on_modules(padding, torch):
    torch.manual_seed(0)
    module = nn.Conv2d(2, 3, (4, 3), stride=(3, 2), padding=padding, dilation=(1, 2), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 2, 9, 7))
    pads = onnx_pads((9, 7), (4, 3), (3, 2), (1, 2), padding == "same_lower")
    assert pads == ((0, 1) if padding == "same" else (1, 0), (2, 2))
    w, b = module.weight.numpy().copy(), module.bias.numpy().copy()
    y, gy, grads = npconv_grads(lambda x: module(x), dict(x=x))
    xt, wt, bt = (to_torch(a, requires_grad=True) for a in (x, w, b))
    y_t = torch_padded_conv(xt, wt, bt, (3, 2), pads, (1, 2), 1, "zeros")
    y_t.backward(to_torch(gy))
    assert y.shape == (2, 3, 3, 4)
    assert_close(y, y_t, np.float64, f"Conv2d padding={padding}")
    assert_close(grads["x"], xt.grad, np.float64, "d/dx")
    assert_close(module.weight.grad, wt.grad, np.float64, "d/dweight")
    assert_close(module.bias.grad, bt.grad, np.float64, "d/dbias")
    assert f"padding={padding}" in repr(module)
    # the same module on a differently sized input re-derives its padding
    assert module(np.zeros((1, 2, 10, 4))).shape == (1, 3, 4, 2)


# -- per-side padding ---------------------------------------------------------------------------------

@st.composite
def per_side_cases(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    size = tuple(draw(st.integers(3, 5)) for _ in range(nd))
    mode = draw(st.sampled_from(MODES))
    top = {"reflect": 2, "circular": 7}.get(mode, 4)  # circular may wrap more than once
    pads = tuple((draw(st.integers(0, top)), draw(st.integers(0, top))) for _ in range(nd))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = tuple(max(n, e - lo - hi) for n, e, (lo, hi) in zip(size, extent, pads, strict=True))
    return dict(stride=stride, pads=pads, dilation=dilation, groups=groups, mode=mode), \
        (draw(st.integers(1, 2)), cin) + size, (cout, cin // groups) + kernel


@given(case=per_side_cases(), bias=st.booleans(), seed=st.integers(0, 50))
def test_per_side_padding_in_every_mode(case, bias, seed):
    geometry, x_shape, w_shape = case
    arrays = random_arrays(seed, x_shape, w_shape, w_shape[0] if bias else None)
    stride, pads, dilation, groups, mode = (
        geometry[k] for k in ("stride", "pads", "dilation", "groups", "mode"))

    def ours(x, w, b=None):
        return F.conv(x, w, b, stride, pads, dilation, groups, padding_mode=mode)

    def theirs(x, w, b=None):
        return torch_padded_conv(x, w, b, stride, pads, dilation, groups, mode)

    check_against_torch(ours, theirs, arrays, what=str(geometry), seed=seed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_per_side_padding_on_modules(nd, mode):
    npconv.manual_seed(nd)
    pads = ((2, 0), (1, 3), (0, 1))[:nd]
    x = np.random.default_rng(nd).standard_normal((2, 2) + (4, 5, 4)[:nd])
    for cls in (CONV[nd], nn.ConvNd):
        module = cls(2, 4, (3, 2, 2)[:nd], stride=(2, 1, 2)[:nd], padding=pads, groups=2, padding_mode=mode,
                     dtype=np.float64)
        assert f"padding={pads}" in repr(module)
        assert module.padding == pads
        w, b = module.weight.numpy().copy(), module.bias.numpy().copy()
        y, gy, grads = npconv_grads(lambda x, module=module: module(x), dict(x=x))
        xt, wt, bt = (to_torch(a, requires_grad=True) for a in (x, w, b))
        y_t = torch_padded_conv(xt, wt, bt, module.stride, pads, (1,) * nd, 2, mode)
        y_t.backward(to_torch(gy))
        what = f"{cls.__name__} padding={pads} {mode}"
        assert_close(y, y_t, np.float64, what)
        assert_close(grads["x"], xt.grad, np.float64, what)
        assert_close(module.weight.grad, wt.grad, np.float64, what)
        assert_close(module.bias.grad, bt.grad, np.float64, what)
    conv = getattr(F, f"conv{nd}d")  # the torch-named functional forms take per-side pairs too
    stride = (2, 1, 2)[:nd]
    assert_close(conv(x, w, None, stride, pads, 1, 2),
                 torch_padded_conv(to_torch(x), to_torch(w), None, stride, pads, (1,) * nd, 2, "zeros"),
                 np.float64)


def test_symmetric_per_side_pairs_are_stored_as_torch_ints():
    module = nn.Conv2d(1, 1, 3, padding=((1, 1), (2, 2)))
    assert module.padding == (1, 2)
    assert "padding=(1, 2)" in repr(module)
    assert "padding=((0, 1), (2, 2))" in repr(nn.ConvTranspose2d(1, 1, 3, padding=((0, 1), (2, 2))))


def test_per_side_padding_on_transposed_modules_crops_torch_full_output(torch):
    TF = torch.nn.functional
    npconv.manual_seed(3)
    pads = ((0, 2), (3, 1))
    module = nn.ConvTranspose2d(2, 4, 3, stride=2, padding=pads, output_padding=(1, 0), groups=2,
                                dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    w, b = module.weight.numpy().copy(), module.bias.numpy().copy()
    y, gy, grads = npconv_grads(lambda x: module(x), dict(x=x))
    xt, wt, bt = (to_torch(a, requires_grad=True) for a in (x, w, b))
    full = TF.conv_transpose2d(xt, wt, bt, 2, 0, (1, 0), 2)
    y_t = full[:, :, 0:full.shape[2] - 2, 3:full.shape[3] - 1]
    y_t.backward(to_torch(gy))
    assert y.shape == (1, 4, 6, 5)
    assert_close(y, y_t, np.float64, "per-side ConvTranspose2d")
    assert_close(grads["x"], xt.grad, np.float64, "d/dx")
    assert_close(module.weight.grad, wt.grad, np.float64, "d/dweight")
    assert_close(module.bias.grad, bt.grad, np.float64, "d/dbias")


# -- symmetric mode and circular wider than the input ---------------------------------------------------

@pytest.mark.parametrize("mode, pads", [("symmetric", ((1, 2), (3, 0))), ("symmetric", ((4, 5), (6, 1))),
                                        ("circular", ((5, 9), (4, 0))), ("circular", ((3, 3), (11, 2)))])
def test_modes_torch_lacks_are_numpy_pad_then_torch_conv(mode, pads, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((3, 2, 2, 3)), rng.standard_normal(3)
    expected = TF.conv2d(to_torch(np.pad(x, [(0, 0), (0, 0), *pads], mode=NUMPY_MODE[mode])), to_torch(w),
                         to_torch(b), (1, 2))
    module = nn.Conv2d(2, 3, (2, 3), stride=(1, 2), padding=pads, padding_mode=mode, dtype=np.float64)
    module.load_state_dict(dict(weight=w, bias=b))
    assert_close(module(x), expected, np.float64, f"{mode} {pads}")
    check_against_torch(lambda x, w, b: F.conv(x, w, b, (1, 2), pads, padding_mode=mode),
                        lambda x, w, b: torch_padded_conv(x, w, b, (1, 2), pads, (1, 1), 1, mode),
                        dict(x=x, w=w, b=b), what=f"{mode} {pads}")


def test_f_pad_circular_wider_than_the_input_and_symmetric():
    x = np.arange(6.0).reshape(1, 2, 3)
    np.testing.assert_array_equal(F.pad(x, (7, 4), mode="circular").numpy(),
                                  np.pad(x, [(0, 0), (0, 0), (7, 4)], mode="wrap"))
    np.testing.assert_array_equal(F.pad(x, (2, 5, 1, 0), mode="symmetric").numpy(),
                                  np.pad(x, [(0, 0), (1, 0), (2, 5)], mode="symmetric"))


# -- padding modes on transposed convolutions: the adjoint of the padded convolution ---------------------

@st.composite
def transposed_cases(draw):
    nd = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
    size = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    mode = draw(st.sampled_from(MODES))
    pads, out_size = [], []
    for n, k, s, d, op in zip(size, kernel, stride, dilation, output_padding, strict=True):
        full = (n - 1) * s + d * (k - 1) + 1 + op  # output size without padding
        lo, hi = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        if lo + hi >= full or (mode == "reflect" and max(lo, hi) >= full - lo - hi):
            lo = hi = 0
        pads.append((lo, hi))
        out_size.append(full - lo - hi)
    return dict(stride=stride, pads=tuple(pads), output_padding=output_padding, groups=groups,
                dilation=dilation, mode=mode, out_size=tuple(out_size)), \
        (draw(st.integers(1, 2)), cin) + size, (cin, cout // groups) + kernel


@given(case=transposed_cases(), bias=st.booleans(), seed=st.integers(0, 50))
def test_transposed_padding_modes_are_torch_autograd_of_the_padded_conv(case, bias, seed):
    geometry, x_shape, w_shape = case
    arrays = random_arrays(seed, x_shape, w_shape, w_shape[1] * geometry["groups"] if bias else None)
    stride, pads, op, groups, dilation, mode, out_size = (
        geometry[k] for k in ("stride", "pads", "output_padding", "groups", "dilation", "mode", "out_size"))

    def ours(x, w, b=None):
        return F.conv_transpose(x, w, b, stride, pads, op, groups, dilation, padding_mode=mode)

    def theirs(x, w, b=None):
        return torch_padded_conv_adjoint(x, w, b, stride, pads, dilation, groups, mode, out_size)

    check_against_torch(ours, theirs, arrays, what=str(geometry), seed=seed)


@given(case=transposed_cases(), seed=st.integers(0, 50))
def test_adjoint_identity_for_every_mode(case, seed):
    """<conv_m(x), y> == <x, convT_m(y)> to rounding, with stride, dilation, groups, output_padding."""
    geometry, y_shape, w_shape = case
    stride, pads, op, groups, dilation, mode, out_size = (
        geometry[k] for k in ("stride", "pads", "output_padding", "groups", "dilation", "mode", "out_size"))
    rng = np.random.default_rng(seed)
    y, w = rng.standard_normal(y_shape), rng.standard_normal(w_shape)
    x = rng.standard_normal((y_shape[0], w_shape[1] * groups) + out_size)
    conv_x = F.conv(x, w, None, stride, pads, dilation, groups, padding_mode=mode).numpy()
    conv_x = conv_x[(slice(None), slice(None)) + tuple(slice(0, n) for n in y_shape[2:])]
    assert conv_x.shape == y.shape
    transposed = F.conv_transpose(y, w, None, stride, pads, op, groups, dilation, padding_mode=mode).numpy()
    assert transposed.shape == x.shape
    lhs, rhs = np.vdot(conv_x, y), np.vdot(x, transposed)
    assert abs(lhs - rhs) <= 1e-12 * (np.abs(conv_x).sum() * np.abs(y).max() + 1), (lhs, rhs)


@pytest.mark.parametrize("mode", MODES)
def test_conv_transpose_modules_with_modes_and_output_size(mode, torch):
    npconv.manual_seed(7)
    module = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=(1, 2), groups=2, padding_mode=mode,
                                dtype=np.float64)
    assert f"padding_mode={mode}" in repr(module) or mode == "zeros"
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4))
    w, b = module.weight.numpy().copy(), module.bias.numpy().copy()
    for output_size, out in ((None, (5, 5)), ((6, 6), (6, 6))):
        module.weight.grad = module.bias.grad = None
        y, gy, grads = npconv_grads(lambda x, s=output_size: module(x, output_size=s), dict(x=x))
        assert y.shape == (1, 2) + out
        xt, wt, bt = (to_torch(a, requires_grad=True) for a in (x, w, b))
        y_t = torch_padded_conv_adjoint(xt, wt, bt, (2, 2), ((1, 1), (2, 2)), (1, 1), 2, mode, out)
        y_t.backward(to_torch(gy))
        assert_close(y, y_t, np.float64, f"ConvTranspose2d {mode} output_size={output_size}")
        assert_close(grads["x"], xt.grad, np.float64, "d/dx")
        assert_close(module.weight.grad, wt.grad, np.float64, "d/dweight")
        assert_close(module.bias.grad, bt.grad, np.float64, "d/dbias")
    if mode == "zeros":  # torch's own ConvTranspose2d
        theirs = torch.nn.ConvTranspose2d(2, 2, 3, stride=2, padding=(1, 2), groups=2, dtype=torch.float64)
        theirs.load_state_dict({"weight": to_torch(w), "bias": to_torch(b)})
        assert_close(module(x), theirs(to_torch(x)), np.float64, "zeros is torch's ConvTranspose2d")


def test_conv_transpose_nd_circular_wider_than_the_output():
    module = nn.ConvTransposeNd(1, 1, (3, 3), stride=1, padding=4, padding_mode="circular", bias=False,
                                dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((1, 1, 9, 8))
    w = module.weight.numpy().copy()
    y, gy, grads = npconv_grads(lambda x: module(x), dict(x=x))
    assert y.shape[2:] == (3, 2)  # (n - 1) - 8 + 3: the padding 4 wraps the output more than once
    xt, wt = to_torch(x, requires_grad=True), to_torch(w, requires_grad=True)
    y_t = torch_padded_conv_adjoint(xt, wt, None, (1, 1), ((4, 4), (4, 4)), (1, 1), 1, "circular",
                                    y.shape[2:])
    y_t.backward(to_torch(gy))
    assert_close(y, y_t, np.float64, "circular wider than the output")
    assert_close(grads["x"], xt.grad, np.float64, "d/dx")


# -- finite differences of everything (no torch) -------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_finite_differences_conv_and_transposed(mode):
    rng = np.random.default_rng(len(mode))
    x, w, b = rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((2, 1, 3, 2)), rng.standard_normal(2)
    wide = 2 if mode == "reflect" else 5
    for padding, stride in ((((1, 2), (0, wide)), (2, 1)), ("same", (3, 2)), ("same_lower", (2, 3))):
        check_finite_differences(
            lambda x, w, b, p=padding, s=stride: F.conv(x, w, b, s, p, (1, 2), 2, padding_mode=mode),
            dict(x=x, w=w, b=b))
    y = rng.standard_normal((1, 2, 3, 4))
    check_finite_differences(
        lambda x, w, b: F.conv_transpose(x, w, b, (2, 1), ((1, 0), (2, 1)), (1, 0), 2, (1, 2),
                                         padding_mode=mode),
        dict(x=y, w=w, b=b))


# -- bad combinations stay clear errors -----------------------------------------------------------------

@pytest.mark.parametrize("build, error, message", [
    (lambda: nn.ConvTranspose2d(1, 1, 3, padding="same"), ValueError,
     "padding='same' is not supported for transposed convolutions"),
    (lambda: nn.ConvTransposeNd(1, 1, (3,), padding="same_lower"), ValueError,
     "padding='same_lower' is not supported for transposed convolutions"),
    (lambda: F.conv_transpose(np.zeros((1, 1, 4)), np.zeros((1, 1, 3)), padding="same", output_padding=1),
     ValueError, "padding='same' is not supported for transposed"),
    (lambda: nn.ConvTranspose1d(1, 1, 3, stride=2, output_padding=2), ValueError,
     "output_padding must be smaller than either stride or dilation"),
    (lambda: nn.Conv2d(1, 1, 3, padding=((1, 2),)), ValueError,
     r"padding must be 2 \(lo, hi\) pairs when given per side"),
    (lambda: nn.ConvNd(1, 1, (3, 3, 3), padding=((1, 2), (0, 0), (1, 2, 3))), ValueError,
     r"padding must be 3 \(lo, hi\) pairs when given per side"),
    (lambda: nn.Conv1d(1, 1, 3, padding=((1, -1),)), ValueError, "padding must be non-negative"),
    (lambda: nn.Conv1d(1, 1, 3, padding=((1, 0.5),)), TypeError, "padding must hold ints in its"),
    (lambda: nn.Conv2d(1, 1, 3, padding="full"), ValueError, "Invalid padding string 'full'"),
    (lambda: nn.Conv2d(1, 1, 3, padding_mode="wrap"), ValueError, "padding_mode must be one of"),
    (lambda: nn.ConvTranspose2d(1, 1, 3, padding_mode="mirror"), ValueError, "padding_mode must be one of"),
    (lambda: F.conv(np.zeros((1, 1, 3)), np.zeros((1, 1, 2)), padding=3, padding_mode="reflect"),
     ValueError, r"Padding size should be less than the corresponding input .*\(3, 3\).*\[1, 1, 3\]"),
    (lambda: F.conv(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)), padding=((0, 3),), padding_mode="reflect"),
     ValueError, r"Padding size should be less than the corresponding input dimension.*\(0, 3\)"),
    (lambda: nn.Conv2d(1, 1, 3, padding=(1, 4), padding_mode="reflect", dtype=np.float64)(
        np.zeros((1, 1, 5, 4))),
     ValueError, r"padding \(4, 4\) at dimension 3 of input \[1, 1, 5, 4\]"),
    (lambda: F.conv_transpose(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)), stride=2, padding=3,
                              padding_mode="reflect"), ValueError,
     r"Padding size should be less .*padding \(3, 3\) at dimension 2 of output \[1, 1, 1\]"),
    (lambda: ConvGeometry.create((3,), 2, "same", output_padding=1), ValueError,
     "output_padding must be 0 except for transposed convolutions"),
    (lambda: nn.ConvTranspose1d(1, 1, 3, stride=2, padding="same", output_padding=1), ValueError,
     "padding='same' is not supported for transposed convolutions"),
    (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), padding="same_upper"), ValueError,
     "Invalid padding string 'same_upper'"),
])
def test_bad_combinations_are_clear_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_a_rejected_call_changes_nothing():
    module = nn.Conv1d(1, 1, 3, padding=4, padding_mode="reflect", dtype=np.float64)
    before = {k: np.array(v) for k, v in module.state_dict().items()}
    x = npconv.tensor(np.ones((1, 1, 4)), requires_grad=True)
    with pytest.raises(ValueError, match="Padding size should be less"):
        module(x)
    assert x.grad is None and np.array_equal(x.numpy(), np.ones((1, 1, 4)))
    assert all(np.array_equal(before[k], v) for k, v in module.state_dict().items())
    assert module.padding == (4,) and module.padding_mode == "reflect"
