"""Finite-difference gradient checks that do not use torch.

For ``y = fn(*inputs)`` and a random cotangent ``v`` the loss is ``L = Re <v, y>``; autograd's
``backward(v)`` must give ``dL/dRe(x) + i dL/dIm(x)`` for every input ``x``, which is compared with
central differences (step 1e-6, float64). Covers convolution and transposed convolution in every
padding mode (including 'symmetric' and npconv's padding extensions), ``pad`` and tensor ops, plus
the adjoint identity ``<conv(x), y> = <x, conv_transpose(y)>`` that transposed convolution rests on.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn.functional as F
from npconv import nn

EPS = 1e-6
MODES = ["zeros", "reflect", "replicate", "circular", "symmetric"]


def _loss(fn, arrays: list[np.ndarray], v: np.ndarray) -> float:
    with npconv.no_grad():
        y = fn(*[npconv.Tensor(a) for a in arrays]).numpy()
    return float(np.real(np.vdot(v, y)))


def numerical_gradient(fn, arrays: list[np.ndarray], which: int, v: np.ndarray) -> np.ndarray:
    """Central differences of ``L`` in every element (real and imaginary part) of ``arrays[which]``."""
    x = arrays[which]
    grad = np.zeros_like(x)
    units = (1.0, 1j) if np.iscomplexobj(x) else (1.0,)
    for index in np.ndindex(x.shape):
        original = x[index]
        for unit in units:
            x[index] = original + EPS * unit
            plus = _loss(fn, arrays, v)
            x[index] = original - EPS * unit
            minus = _loss(fn, arrays, v)
            x[index] = original
            grad[index] += (plus - minus) / (2 * EPS) * unit
    return grad


def gradcheck(fn, arrays: list[np.ndarray], seed: int = 0, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Autograd's gradient of every input equals central differences."""
    arrays = [np.array(a, dtype=a.dtype) for a in arrays]
    tensors = [npconv.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*tensors)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(y.shape)
    if np.iscomplexobj(y.numpy()):
        v = v + 1j * rng.standard_normal(y.shape)
    v = v.astype(y.dtype)
    y.backward(v)
    for i, t in enumerate(tensors):
        expected = numerical_gradient(fn, arrays, i, v)
        assert t.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(t.grad.numpy(), expected, rtol=rtol, atol=atol, err_msg=f"input {i}")


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape)


# -- convolution -------------------------------------------------------------------------------
CONV_CASES = [
    # nd, kwargs of F.conv (besides padding_mode), input spatial size
    (1, dict(stride=2, padding=2), (6,)),
    (1, dict(dilation=2, padding=((3, 1),)), (5,)),  # per-side pair
    (1, dict(padding=4), (3,)),  # wider than the input (circular wraps more than once)
    (2, dict(stride=(2, 1), padding=1, groups=2), (5, 4)),
    (2, dict(padding="same", stride=2), (5, 6)),  # 'same' with stride (npconv extension)
    (2, dict(padding="same_lower", dilation=(1, 2)), (4, 5)),
    (3, dict(padding=(1, 0, 2)), (3, 2, 3)),
]


@pytest.mark.parametrize("case, mode", [
    (case, mode) for case in range(len(CONV_CASES)) for mode in MODES
    if not (mode in ("reflect", "symmetric") and CONV_CASES[case][1].get("padding") == 4)  # needs pad < size
])
def test_conv_gradients_by_finite_differences(case, mode):
    nd, kwargs, size = CONV_CASES[case]
    rng = np.random.default_rng(case)
    groups = kwargs.get("groups", 1)
    x = _normal(rng, (2, 2) + size)
    w = _normal(rng, (4, 2 // groups) + (3, 2, 2)[:nd])
    b = _normal(rng, (4,))
    gradcheck(lambda x, w, b: F.conv(x, w, b, padding_mode=mode, **kwargs), [x, w, b], seed=case)


CONV_TRANSPOSE_CASES = [
    (1, dict(stride=2, padding=1, output_padding=1), (4,)),
    (1, dict(dilation=3, output_padding=2, padding=2), (3,)),
    (2, dict(stride=(2, 3), padding=(1, 2), groups=2), (3, 3)),
    (3, dict(stride=2, padding=1, dilation=(1, 2, 1)), (2, 2, 3)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(CONV_TRANSPOSE_CASES)))
def test_conv_transpose_gradients_by_finite_differences(case, mode):
    nd, kwargs, size = CONV_TRANSPOSE_CASES[case]
    rng = np.random.default_rng(10 + case)
    groups = kwargs.get("groups", 1)
    x = _normal(rng, (2, 2) + size)
    w = _normal(rng, (2, 4 // groups) + (3, 2, 2)[:nd])
    b = _normal(rng, (4,))
    gradcheck(lambda x, w, b: F.conv_transpose(x, w, b, padding_mode=mode, **kwargs), [x, w, b], seed=case)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_module_gradients_by_finite_differences(mode, transposed):
    """The layers (weight and bias as Parameters, unbatched input) in every padding mode."""
    npconv.manual_seed(0)
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    layer = cls(2, 2, (2, 3), stride=2, padding=1, padding_mode=mode, dtype=np.float64)
    x = npconv.tensor(_normal(np.random.default_rng(1), (2, 4, 3)), requires_grad=True)
    y = layer(x)
    v = np.random.default_rng(2).standard_normal(y.shape)
    y.backward(v)
    arrays = [x.numpy().copy(), layer.weight.numpy().copy(), layer.bias.numpy().copy()]

    def forward(x, w, b):  # the layer with its parameters' values replaced
        layer.weight.data, layer.bias.data = w.numpy(), b.numpy()
        return layer(x)

    for i, analytic in enumerate([x.grad, layer.weight.grad, layer.bias.grad]):
        numeric = numerical_gradient(forward, arrays, i, v)
        np.testing.assert_allclose(analytic.numpy(), numeric, rtol=1e-6, atol=1e-6, err_msg=f"input {i}")


def test_complex_conv_gradients_by_finite_differences():
    rng = np.random.default_rng(5)

    def cnormal(shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    x, w, b = cnormal((1, 2, 5)), cnormal((3, 2, 2)), cnormal((3,))
    gradcheck(lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), [x, w, b])
    wt = cnormal((2, 3, 2))
    gradcheck(lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2, output_padding=1), [x, wt, b])
    gradcheck(lambda x, w: F.conv(x, w, padding=2, padding_mode="reflect"), [x, w])


@settings(max_examples=10)
@given(nd=st.integers(1, 2), stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.integers(0, 2),
       kernel=st.integers(1, 3), mode=st.sampled_from(MODES), groups=st.sampled_from([1, 2]),
       extra=st.integers(0, 2), seed=st.integers(0, 99))
def test_conv_gradients_for_drawn_arguments(nd, stride, dilation, padding, kernel, mode, groups, extra, seed):
    rng = np.random.default_rng(seed)
    extent = dilation * (kernel - 1) + 1
    size = max(extent - 2 * padding, padding + 1, 1) + extra
    x = _normal(rng, (1, 2) + (size,) * nd)
    w = _normal(rng, (2, 2 // groups) + (kernel,) * nd)
    gradcheck(lambda x, w: F.conv(x, w, None, stride, padding, dilation, groups, padding_mode=mode), [x, w])


# -- the adjoint identity ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_is_the_adjoint_of_conv(nd, mode):
    """<conv(x; w), y> == <x, conv_transpose(y; w)> for the same geometry and padding mode."""
    rng = np.random.default_rng(nd)
    kwargs = dict(stride=2, padding=1, dilation=(1, 2, 1)[:nd], groups=2)
    w = _normal(rng, (4, 1) + (3, 2, 2)[:nd])
    x = _normal(rng, (2, 2) + (5, 6, 4)[:nd])
    conv_x = F.conv(x, w, padding_mode=mode, **kwargs).numpy()
    y = _normal(rng, conv_x.shape)
    # conv's weight (O, C/groups, *k) is already the transposed layer's (C_in, C_out/groups, *k)
    smallest = F.conv_transpose(y, w, padding_mode=mode, **kwargs).shape[2:]
    output_padding = tuple(n - m for n, m in zip(x.shape[2:], smallest, strict=True))
    xt = F.conv_transpose(y, w, padding_mode=mode, output_padding=output_padding, **kwargs).numpy()
    assert xt.shape == x.shape
    np.testing.assert_allclose(np.vdot(conv_x, y), np.vdot(x, xt), rtol=1e-10)


# -- pad --------------------------------------------------------------------------------------
PAD_CASES = [
    ((2, 5), (2, 3), "constant"),
    ((2, 5), (-1, 2), "constant"),
    ((2, 3, 4), (1, -2, -1, 2), "constant"),
    ((2, 5), (4, 3), "reflect"),
    ((2, 4, 3), (1, 2, 3, 0), "reflect"),
    ((2, 3), (4, 5), "replicate"),
    ((2, 3, 4), (1, 2, 3, 1), "replicate"),
    ((2, 3), (2, 7), "circular"),  # wider than the input
    ((2, 3, 4), (1, 2, 3, 1), "circular"),
    ((2, 4), (3, 4), "symmetric"),
    ((1, 2, 3, 2, 2), (1, 1, 2, 0, 0, 1), "replicate"),
]


@pytest.mark.parametrize("case", PAD_CASES, ids=lambda c: f"{c[2]}{c[1]}")
def test_pad_gradients_by_finite_differences(case):
    shape, pad, mode = case
    x = _normal(np.random.default_rng(3), shape)
    gradcheck(lambda t: F.pad(t, pad, mode=mode), [x])


# -- tensor ops -----------------------------------------------------------------------------------
TENSOR_CASES = {
    "matmul_div_pow": (lambda a, b: (a @ b) / (b.sum() + 10) ** 1.5, [(3, 4), (4, 2)]),
    "broadcast_mul_sub": (lambda a, b: a * b - b / (a * a + 1), [(3, 1), (1, 4)]),
    "sigmoid_tanh_exp_log": (lambda a: (a.sigmoid() + a.tanh() + a.exp() + 2).log(), [(2, 3)]),
    "mean_max_getitem": (lambda a: a.mean(0) * a.max(1).values[[0, 2, 2, 1]].sum() + a[1, ::2].sum(),
                         [(3, 4)]),
    "permute_reshape": (lambda a: (a.permute(2, 0, 1).reshape(4, -1) ** 2).sum(1), [(2, 3, 4)]),
    "abs_sqrt_relu": (lambda a: (a.abs() + 1).sqrt() * a.relu(), [(3, 3)]),
}


@pytest.mark.parametrize("name", sorted(TENSOR_CASES))
def test_tensor_op_gradients_by_finite_differences(name):
    fn, shapes = TENSOR_CASES[name]
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s) + (0.3 if name == "abs_sqrt_relu" else 0) for s in shapes]
    gradcheck(fn, arrays)
