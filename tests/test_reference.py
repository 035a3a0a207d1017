"""The NumPy reference (tests/reference.py) as the torch-free oracle of the public API.

1. The reference itself: against torch where torch is installed (the ``torch`` fixture), and its
   own identities without torch (adjoint passes, pad and its gradient, small hand-computed cases).
2. Without torch: F.conv1d/2d/3d, F.conv_transpose1d/2d/3d, F.conv/F.conv_transpose of rank 4,
   F.pad and the conv modules with every padding mode against the reference (outputs and the
   gradients of input, weight and bias), in float64 and float32; finite differences in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import reference
from kernel_checks import check_finite_differences, npconv_grads
from npconv import nn
from npconv.geometry import ConvGeometry
from npconv.nn import functional as F
from torch_oracle import to_torch, torch_conv_passes, torch_pad

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}
MODES = ["zeros", "reflect", "replicate", "circular"]


def close(actual, expected, dtype=np.float64, what: str = "") -> None:
    """``actual`` (an npconv Tensor or array) equals ``expected`` to ``dtype``'s tolerance, relative
    to the magnitude of ``expected``; dtypes must agree."""
    a = np.asarray(getattr(actual, "data", actual))
    e = np.asarray(getattr(expected, "detach", lambda: expected)())
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert a.dtype == np.dtype(dtype), f"{what}: dtype {a.dtype} != {np.dtype(dtype)}"
    tol = TOL[np.dtype(dtype)]
    scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
    np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, err_msg=what)


@st.composite
def conv_cases(draw, max_nd: int = 3, transposed: bool = False):
    """``(nd, x_shape, w_shape, kwargs)`` of a torch-valid (transposed) convolution."""
    nd = draw(st.integers(1, max_nd))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    if transposed:
        size = tuple(draw(st.integers(1, 4)) for _ in range(nd))
        output_padding = tuple(draw(st.integers(0, max(s, d) - 1))
                               for s, d in zip(stride, dilation, strict=True))
        # padding keeps every output size >= 1: (n - 1) * s + e + op - 2p >= 1
        padding = tuple(draw(st.integers(0, min(2, ((n - 1) * s + e + op - 1) // 2)))
                        for n, s, e, op in zip(size, stride, extent, output_padding, strict=True))
        kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                      dilation=dilation)
        return nd, (draw(st.integers(1, 2)), cin) + size, (cin, cout // groups) + kernel, kwargs
    padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    size = tuple(max(1, e - 2 * p) + draw(st.integers(0, 4)) for e, p in zip(extent, padding, strict=True))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return nd, (draw(st.integers(1, 2)), cin) + size, (cout, cin // groups) + kernel, kwargs


def _arrays(seed: int, x_shape, w_shape, bias_size: int, dtype) -> dict:
    rng = np.random.default_rng(seed)
    return dict(x=rng.standard_normal(x_shape).astype(dtype), w=rng.standard_normal(w_shape).astype(dtype),
                b=rng.standard_normal(bias_size).astype(dtype))


def _wide(arrays: dict) -> dict:
    return {k: v.astype(np.float64) for k, v in arrays.items()}


# -- 1. the reference against torch, and its own identities --------------------------------------
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_reference_conv_passes_are_torch(torch, case, seed):
    _, x_shape, w_shape, kwargs = case
    arrays = _arrays(seed, x_shape, w_shape, w_shape[0], np.float64)
    geom = ConvGeometry.create(w_shape[2:], kwargs["stride"], kwargs["padding"], kwargs["dilation"],
                               kwargs["groups"], ndim=len(w_shape) - 2)
    x, w = arrays["x"], arrays["w"]
    out_size = geom.output_size(x_shape[2:])
    gy = np.random.default_rng(seed + 1).standard_normal((x_shape[0], w_shape[0]) + out_size)
    for ours, theirs, name in zip(reference.conv_passes(x, w, gy, geom), torch_conv_passes(x, w, gy, geom),
                                  ("y", "grad_input", "grad_weight"), strict=True):
        close(ours, theirs, what=f"{name} {kwargs}")


@given(case=conv_cases(transposed=True), seed=st.integers(0, 2**16))
def test_reference_conv_transpose_is_torch(torch, case, seed):
    nd, x_shape, w_shape, kwargs = case
    arrays = _arrays(seed, x_shape, w_shape, w_shape[1] * kwargs["groups"], np.float64)
    theirs = getattr(torch.nn.functional, f"conv_transpose{nd}d")(
        *(to_torch(arrays[k]) for k in "xwb"), **kwargs)
    close(reference.conv_transpose(arrays["x"], arrays["w"], arrays["b"], **kwargs), theirs, what=str(kwargs))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
def test_reference_pad_and_its_gradient_are_torch(torch, mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    pads = ((2, 1), (3, 0))
    xt = to_torch(x, requires_grad=True)
    yt = torch_pad(xt, pads, mode)
    close(reference.pad(x, pads, mode), yt, what=mode)
    g = np.random.default_rng(1).standard_normal(tuple(yt.shape))
    yt.backward(to_torch(g))
    close(reference.pad_grad(g, x.shape[2:], pads, mode), xt.grad, what=f"gradient {mode}")


@given(case=conv_cases(max_nd=4), seed=st.integers(0, 2**16))
def test_reference_passes_are_adjoint(case, seed):
    """``<conv(x, w), g> == <x, conv_grad_input(g, w)> == <w, conv_grad_weight(x, g)>``, and
    conv_grad_input is conv_transpose (the transposed convolution is the adjoint)."""
    _, x_shape, w_shape, kwargs = case
    arrays = _arrays(seed, x_shape, w_shape, 1, np.float64)
    x, w = arrays["x"], arrays["w"]
    y = reference.conv(x, w, None, **kwargs)
    g = np.random.default_rng(seed + 1).standard_normal(y.shape)
    lhs = np.vdot(y, g)
    gx = reference.conv_grad_input(g, w, x_shape[2:], **kwargs)
    assert np.isclose(lhs, np.vdot(x, gx), rtol=1e-10, atol=1e-10)
    assert np.isclose(lhs, np.vdot(w, reference.conv_grad_weight(x, g, w_shape[2:], **kwargs)), rtol=1e-10,
                      atol=1e-10)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
def test_reference_pad_gradient_is_its_adjoint(mode):
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 3, 4))
    pads = ((2, 3), (1, -1), (0, 2)) if mode != "reflect" else ((2, 3), (1, 0), (0, 2))
    y = reference.pad(x, pads, mode)
    g = np.random.default_rng(3).standard_normal(y.shape)
    assert np.isclose(np.vdot(y, g), np.vdot(x, reference.pad_grad(g, x.shape[2:], pads, mode)), rtol=1e-12)


def test_reference_small_cases_by_hand():
    x = np.arange(1.0, 5.0).reshape(1, 1, 4)  # [1, 2, 3, 4]
    np.testing.assert_array_equal(reference.conv(x, np.array([[[1.0, 10.0]]])), [[[21, 32, 43]]])
    np.testing.assert_array_equal(reference.conv(x, np.array([[[1.0, 10.0]]]), stride=2, padding=1),
                                  [[[10, 32, 4]]])
    np.testing.assert_array_equal(reference.conv(x, np.array([[[1.0, 10.0]]]), dilation=3), [[[41]]])
    # transposed: each input scatters its kernel at i * stride
    np.testing.assert_array_equal(reference.conv_transpose(x[..., :2], np.array([[[1.0, 10.0]]]), stride=3),
                                  [[[1, 10, 0, 2, 20]]])
    np.testing.assert_array_equal(reference.pad(x, [(2, 1)], "reflect"), [[[3, 2, 1, 2, 3, 4, 3]]])
    np.testing.assert_array_equal(reference.pad(x, [(2, 1)], "replicate"), [[[1, 1, 1, 2, 3, 4, 4]]])
    np.testing.assert_array_equal(reference.pad(x, [(2, 1)], "circular"), [[[3, 4, 1, 2, 3, 4, 1]]])
    np.testing.assert_array_equal(reference.pad(x, [(-1, 1)]), [[[2, 3, 4, 0]]])
    # groups: each output channel sees its own group's input channels only
    x2 = np.stack([x[0, 0], 10 * x[0, 0]])[None]
    np.testing.assert_array_equal(reference.conv(x2, np.ones((2, 1, 1)), groups=2), x2)


# -- 2. npconv's public API against the reference (no torch) ------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_functional_conv_and_its_gradients_match_the_reference(dtype, case, seed):
    nd, x_shape, w_shape, kwargs = case
    arrays = _arrays(seed, x_shape, w_shape, w_shape[0], dtype)
    conv = getattr(F, f"conv{nd}d")
    y, gy, grads = npconv_grads(lambda x, w, b: conv(x, w, b, **kwargs), arrays, seed=seed)
    wide, gyw = _wide(arrays), gy.astype(np.float64)
    what = f"conv{nd}d {x_shape} {w_shape} {kwargs}"
    close(y, reference.conv(wide["x"], wide["w"], wide["b"], **kwargs), dtype, f"output {what}")
    gx, gw = (reference.conv_grad_input(gyw, wide["w"], x_shape[2:], **kwargs),
              reference.conv_grad_weight(wide["x"], gyw, w_shape[2:], **kwargs))
    close(grads["x"], gx, dtype, f"d/dx {what}")
    close(grads["w"], gw, dtype, f"d/dw {what}")
    close(grads["b"], gyw.sum(axis=(0,) + tuple(range(2, 2 + nd))), dtype, f"d/db {what}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=conv_cases(transposed=True), seed=st.integers(0, 2**16))
def test_functional_conv_transpose_and_its_gradients_match_the_reference(dtype, case, seed):
    """The gradients of a transposed convolution are a convolution (in x) and the weight gradient of
    a convolution of ``gy`` whose output gradient is ``x`` (in w)."""
    nd, x_shape, w_shape, kwargs = case
    arrays = _arrays(seed, x_shape, w_shape, w_shape[1] * kwargs["groups"], dtype)
    conv_transpose = getattr(F, f"conv_transpose{nd}d")
    y, gy, grads = npconv_grads(lambda x, w, b: conv_transpose(x, w, b, **kwargs), arrays, seed=seed)
    wide, gyw = _wide(arrays), gy.astype(np.float64)
    conv_kwargs = {k: kwargs[k] for k in ("stride", "padding", "dilation", "groups")}
    what = f"conv_transpose{nd}d {x_shape} {w_shape} {kwargs}"
    close(y, reference.conv_transpose(wide["x"], wide["w"], wide["b"], **kwargs), dtype, f"output {what}")
    # an output_padding >= stride (allowed below the dilation) adds outputs no input reaches: cropped
    gx = reference.conv(gyw, wide["w"], None, **conv_kwargs)[(Ellipsis,) + tuple(map(slice, x_shape[2:]))]
    close(grads["x"], gx, dtype, f"d/dx {what}")
    close(grads["w"], reference.conv_grad_weight(gyw, wide["x"], w_shape[2:], **conv_kwargs), dtype,
          f"d/dw {what}")
    close(grads["b"], gyw.sum(axis=(0,) + tuple(range(2, 2 + nd))), dtype, f"d/db {what}")


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_rank_4_functional_matches_the_reference(transposed, data, seed):
    _, x_shape, w_shape, kwargs = data.draw(conv_cases(max_nd=1, transposed=transposed))
    extra = [data.draw(conv_cases(max_nd=1, transposed=transposed)) for _ in range(3)]
    x_shape = x_shape + tuple(c[1][2] for c in extra)  # the other axes' sizes, kernels and arguments
    w_shape = w_shape + tuple(c[2][2] for c in extra)
    kwargs = {k: v + sum((c[3][k] for c in extra), ()) if isinstance(v, tuple) else v
              for k, v in kwargs.items()}
    arrays = _arrays(seed, x_shape, w_shape, (w_shape[1] * kwargs["groups"]) if transposed else w_shape[0],
                     np.float64)
    if transposed:
        y = F.conv_transpose(arrays["x"], arrays["w"], arrays["b"], **kwargs)
        expected = reference.conv_transpose(arrays["x"], arrays["w"], arrays["b"], **kwargs)
    else:
        y = F.conv(arrays["x"], arrays["w"], arrays["b"], **kwargs)
        expected = reference.conv(arrays["x"], arrays["w"], arrays["b"], **kwargs)
    close(y, expected, what=f"{x_shape} {w_shape} {kwargs}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_modules_with_padding_modes_match_the_reference(nd, mode):
    npconv.manual_seed(nd)
    module = getattr(nn, f"Conv{nd}d")(4, 6, (3, 2, 3)[:nd], stride=(2, 1, 2)[:nd], padding=(2, 1, 1)[:nd],
                                       dilation=(1, 2, 1)[:nd], groups=2, padding_mode=mode, dtype=np.float64)
    x = np.random.default_rng(nd).standard_normal((2, 4) + (7, 6, 5)[:nd])
    xt = npconv.tensor(x, requires_grad=True)
    y = module(xt)
    gy = np.random.default_rng(9).standard_normal(y.shape)
    y.backward(gy)
    w, b = module.weight.numpy(), module.bias.numpy()
    pads = tuple((p, p) for p in module.padding)
    xp = reference.pad(x, pads, mode)
    args = (module.stride, 0, module.dilation, 2)
    close(y, reference.conv(xp, w, b, *args), what=f"output {mode}")
    gxp = reference.conv_grad_input(gy, w, xp.shape[2:], *args)
    close(xt.grad, reference.pad_grad(gxp, x.shape[2:], pads, mode), what=f"d/dx {mode}")
    close(module.weight.grad, reference.conv_grad_weight(xp, gy, w.shape[2:], *args), what=f"d/dw {mode}")
    close(module.bias.grad, gy.sum(axis=(0,) + tuple(range(2, 2 + nd))), what=f"d/db {mode}")
    unbatched = module(x[0])
    close(unbatched, reference.conv(xp[:1], w, b, *args)[0], what=f"unbatched {mode}")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_modules_and_output_size_match_the_reference(nd):
    npconv.manual_seed(nd)
    module = getattr(nn, f"ConvTranspose{nd}d")(4, 6, (3, 2, 3)[:nd], stride=(2, 3, 2)[:nd], padding=1,
                                                groups=2, dilation=(1, 1, 2)[:nd], dtype=np.float64)
    x = np.random.default_rng(nd).standard_normal((2, 4) + (3, 4, 2)[:nd])
    smallest = [(n - 1) * s - 2 + d * (k - 1) + 1 for n, s, d, k in
                zip(x.shape[2:], module.stride, module.dilation, module.kernel_size, strict=True)]
    target = [m + 1 for m in smallest]  # output_padding 1 on every axis (< stride or dilation)
    y = module(x, output_size=target)
    expected = reference.conv_transpose(x, module.weight.numpy(), module.bias.numpy(), module.stride, 1, 1, 2,
                                        module.dilation)
    close(y, expected, what=f"ConvTranspose{nd}d output_size={target}")


@given(data=st.data())
def test_functional_pad_matches_the_reference(data):
    mode = data.draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    padded = data.draw(st.integers(1, 3))
    rank = padded + data.draw(st.integers(0 if mode == "constant" else 1, 2))  # torch's ranks per mode
    shape = tuple(data.draw(st.integers(1, 4)) for _ in range(rank))
    pairs = []
    for n in shape[rank - padded:]:
        top = n - 1 if mode == "reflect" else n  # torch's limits for reflect and circular
        low = -1 if mode == "constant" and n > 1 else 0  # constant padding may crop
        pairs.append((data.draw(st.integers(low, top)), data.draw(st.integers(0, top))))
    flat = [v for pair in reversed(pairs) for v in pair]
    x = np.random.default_rng(rank).standard_normal(shape)
    kwargs = dict(value=1.5) if mode == "constant" else {}
    xt = npconv.tensor(x, requires_grad=True)
    y = F.pad(xt, flat, mode=mode, **kwargs)
    close(y, reference.pad(x, pairs, mode, value=1.5), what=f"{mode} {pairs}")
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    close(xt.grad, reference.pad_grad(g, shape[rank - padded:], pairs, mode), what=f"gradient {mode} {pairs}")


@pytest.mark.parametrize("mode", MODES + ["symmetric"])
def test_conv_and_conv_transpose_gradients_by_finite_differences(mode):
    rng = np.random.default_rng(4)
    arrays = dict(x=rng.standard_normal((2, 4, 5, 6)), w=rng.standard_normal((6, 2, 3, 2)),
                  b=rng.standard_normal(6))
    check_finite_differences(lambda x, w, b: F.conv(x, w, b, (2, 1), ((1, 2), (1, 0)), (1, 2), 2,
                                                    padding_mode=mode), arrays)
    arrays = dict(x=rng.standard_normal((2, 4, 3, 4)), w=rng.standard_normal((4, 3, 3, 2)),
                  b=rng.standard_normal(6))
    check_finite_differences(lambda x, w, b: F.conv_transpose(x, w, b, (2, 3), 1, (1, 2), 2, (2, 1)), arrays)
