"""``npconv.Tensor``: every op's forward and gradient against torch autograd, and the engine's rules."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import npconv
from npconv import Tensor
from torch_oracle import assert_close, to_torch

DTYPES = [np.float64, np.float32]


def _compare(fn_ours, fn_theirs, arrays: list[np.ndarray], dtype, seed: int = 0, what: str = "") -> None:
    """fn(*tensors) forward and the gradient of every input against torch, for a random output grad."""
    ours = [npconv.tensor(a, requires_grad=True) for a in arrays]
    theirs = [to_torch(a, requires_grad=True) for a in arrays]
    y_ours, y_theirs = fn_ours(*ours), fn_theirs(*theirs)
    assert y_ours.dtype == np.dtype(dtype), what
    assert_close(y_ours, y_theirs, dtype, f"forward {what}")
    gy = np.random.default_rng(seed).standard_normal(tuple(y_theirs.shape)).astype(dtype)
    y_ours.backward(gy)
    y_theirs.backward(to_torch(gy))
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.grad is not None and a.grad.dtype == a.dtype, f"{what} input {i}"
        assert_close(a.grad, b.grad, a.dtype, f"gradient of input {i}, {what}")


# -- unary ops and shape ops --------------------------------------------------------------------
POSITIVE = "positive"
UNARY = {
    "neg": (lambda t: -t, POSITIVE),
    "pos": (lambda t: +t * 1, None),
    "exp": (lambda t: t.exp(), None),
    "log": (lambda t: t.log(), POSITIVE),
    "sqrt": (lambda t: t.sqrt(), POSITIVE),
    "abs": (lambda t: t.abs(), None),
    "tanh": (lambda t: t.tanh(), None),
    "sigmoid": (lambda t: t.sigmoid(), None),
    "relu": (lambda t: t.relu(), None),
    "pow2": (lambda t: t**2, None),
    "pow_half": (lambda t: t**0.5, POSITIVE),
    "pow_neg": (lambda t: t ** -1.5, POSITIVE),
    "rpow": (lambda t: 2.0**t, None),
    "rsub": (lambda t: 1.0 - t, None),
    "rdiv": (lambda t: 3.0 / t, POSITIVE),
    "radd": (lambda t: 0.5 + t, None),
    "rmul": (lambda t: 2 * t, None),
    "sum": (lambda t: t.sum(), None),
    "sum_dim": (lambda t: t.sum(1), None),
    "sum_negative_dims_keepdim": (lambda t: t.sum((-1, 0), keepdim=True), None),
    "mean": (lambda t: t.mean(), None),
    "mean_dims": (lambda t: t.mean((0, 2)), None),
    "mean_keepdim": (lambda t: t.mean(-1, keepdim=True), None),
    "max": (lambda t: t.max(), None),
    "reshape": (lambda t: t.reshape(4, -1), None),
    "reshape_tuple": (lambda t: t.reshape((3, 8)), None),
    "view": (lambda t: t.view(-1), None),
    "flatten": (lambda t: t.flatten(), None),
    "flatten_from_1": (lambda t: t.flatten(1), None),
    "unsqueeze_squeeze": (lambda t: t.unsqueeze(1).unsqueeze(-1).squeeze(1).squeeze(-1), None),
    "squeeze_all": (lambda t: t.reshape(2, 1, 3, 1, 4).squeeze(), None),
    "permute": (lambda t: t.permute(2, 0, 1), None),
    "permute_tuple": (lambda t: t.permute((1, 2, 0)), None),
    "transpose": (lambda t: t.transpose(0, -1), None),
    "T": (lambda t: t.reshape(6, 4).T, None),
    "getitem_int": (lambda t: t[1], None),
    "getitem_slices": (lambda t: t[:, 1:3, ::2], None),
    "getitem_negative_step_free": (lambda t: t[..., -1], None),
    "getitem_fancy_repeated": (lambda t: t[[0, 1, 0, 0]], None),
    "getitem_mixed": (lambda t: t[1, [2, 2, 0], 1:], None),
    "getitem_bool_mask": (lambda t: t[t > 0.1], None),
    "clone": (lambda t: t.clone(), None),
    "contiguous": (lambda t: t.contiguous() * 1, None),
    "chain": (lambda t: ((t * t).sum(0) / 3 - t.mean(0)).tanh().sum(-1), None),
}


def _torch_version(name: str):
    if name == "max":
        return lambda t: t.max()
    if name == "squeeze_all":
        return lambda t: t.reshape(2, 1, 3, 1, 4).squeeze()
    return UNARY[name][0]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_op_matches_torch(name, dtype):
    fn, domain = UNARY[name]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4))
    if domain == POSITIVE:
        x = np.abs(x) + 0.5
    _compare(fn, _torch_version(name), [x.astype(dtype)], dtype, what=name)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_max_over_a_dimension_matches_torch(dim, torch):
    x = np.random.default_rng(0).permutation(24).reshape(2, 3, 4).astype(np.float64)
    for keepdim in (False, True):
        _compare(lambda t, d=dim, k=keepdim: t.max(d, keepdim=k).values,
                 lambda t, d=dim, k=keepdim: t.max(d, keepdim=k).values, [x], np.float64)
        values, indices = npconv.tensor(x).max(dim, keepdim=keepdim)
        expected = torch.from_numpy(x).max(dim, keepdim=keepdim)
        np.testing.assert_array_equal(indices.numpy(), expected.indices.numpy())
        assert values.shape == tuple(expected.values.shape)


def test_argmax_matches_torch(torch):
    x = np.random.default_rng(0).permutation(24).reshape(2, 3, 4).astype(np.float32)
    assert npconv.tensor(x).argmax().item() == torch.from_numpy(x).argmax().item()
    np.testing.assert_array_equal(npconv.tensor(x).argmax(1).numpy(), torch.from_numpy(x).argmax(1).numpy())
    assert npconv.tensor(x).argmax(2, keepdim=True).shape == (2, 3, 1)


# -- binary ops with broadcasting --------------------------------------------------------------
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=st.integers(0, 1000))
def test_binary_op_broadcasts_like_torch(name, dtype, shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes.input_shapes)
    if name == "pow":
        a = (np.abs(a) + 0.5).astype(dtype)
    if name == "div":
        b = (np.sign(b) * (np.abs(b) + 0.5)).astype(dtype)
    _compare(BINARY[name], BINARY[name], [a, b], dtype, seed, what=f"{name} {shapes}")


MATMUL_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
                 ((2, 3), (5, 3, 4)), ((5, 1, 2, 3), (4, 3, 2)), ((3,), (2, 3, 4)), ((2, 2, 3), (3,))]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_matches_torch(shapes, dtype):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    _compare(lambda x, y: x @ y, lambda x, y: x @ y, [a, b], dtype, what=str(shapes))


def test_complex_ops_match_torch():
    """Complex gradients follow torch's convention (conjugate Wirtinger)."""
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3)))
    b = (rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2)))
    for fn in (lambda x, y: (x @ y).exp(), lambda x, y: x * y.T / (x + 2), lambda x, y: (x - y.T).log()):
        _compare(fn, fn, [a, b], np.complex128)
    _compare(lambda x, y: (x @ y).abs(), lambda x, y: (x @ y).abs(), [a, b], np.float64)


# -- constants, ndarrays and dtype rules ---------------------------------------------------------
def test_ndarray_operands_are_constants_on_either_side():
    rng = np.random.default_rng(3)
    x, c = rng.standard_normal((2, 3)), rng.standard_normal((3,))
    ours = npconv.tensor(x, requires_grad=True)
    theirs = to_torch(x, requires_grad=True)
    y_ours = (c * ours + ours / c - c + (c - ours) * ours).sum() + (ours @ c).sum()
    y_theirs = (to_torch(c) * theirs + theirs / to_torch(c) - to_torch(c)
                + (to_torch(c) - theirs) * theirs).sum() + (theirs @ to_torch(c)).sum()
    assert isinstance(c * ours, Tensor) and isinstance(c - ours, Tensor) and isinstance(c @ ours.T, Tensor)
    y_ours.backward()
    y_theirs.backward()
    assert_close(y_ours, y_theirs, np.float64)
    assert_close(ours.grad, theirs.grad, np.float64)


@pytest.mark.parametrize("scalar", [2, 2.5, True, np.float64(2.5)])
@pytest.mark.parametrize("op", sorted(BINARY))
def test_python_scalar_does_not_upcast_float32(op, scalar):
    t = npconv.tensor(np.ones((2, 2), np.float32) + 1)
    for result in (BINARY[op](t, scalar), BINARY[op](scalar, t)):
        assert result.dtype == np.float32


def test_dtype_promotion_matches_torch(torch):
    cases = [
        (np.ones(2, np.float32), np.ones(2, np.float64)),
        (np.ones(2, np.int64), 2.5),
        (np.ones(2, np.int32), 3),
        (np.ones(2, np.float64), 1j),
        (np.ones(2, np.float32), 1j),
        (np.ones(2, np.bool_), 2),
        (np.ones(2, np.complex64), 2.5),
    ]
    for left, right in cases:
        is_array = isinstance(right, np.ndarray)
        ours = npconv.tensor(left) * (npconv.tensor(right) if is_array else right)
        theirs = torch.from_numpy(left) * (torch.from_numpy(right) if is_array else right)
        assert str(ours.dtype) == str(theirs.dtype), (left.dtype, right)


def test_tensor_factory_dtypes_like_torch():
    assert npconv.tensor(1.5).dtype == np.float32
    assert npconv.tensor([1.0, 2.0]).dtype == np.float32
    assert npconv.tensor([1, 2]).dtype == np.int64
    assert npconv.tensor([1j]).dtype == np.complex64
    assert npconv.tensor(np.ones(2)).dtype == np.float64
    assert npconv.tensor([1, 2], dtype="float64").dtype == np.float64
    assert npconv.tensor([1, 2], dtype="torch.float64").dtype == np.float64
    source = np.ones(3)
    copy = npconv.tensor(source)
    source[0] = 5
    assert copy.numpy()[0] == 1  # tensor() copies


# -- the engine: accumulation, no_grad, detach, retain_graph, errors ----------------------------
def test_grad_accumulates_over_two_backward_calls():
    x = np.random.default_rng(4).standard_normal((3, 2))
    ours, theirs = npconv.tensor(x, requires_grad=True), to_torch(x, requires_grad=True)
    for _ in range(2):
        (ours * ours).sum().backward()
        (theirs * theirs).sum().backward()
    assert_close(ours.grad, theirs.grad, np.float64)
    np.testing.assert_allclose(ours.grad.numpy(), 4 * x)


def test_shared_subexpression_and_reused_leaf():
    x = np.random.default_rng(5).standard_normal(4)

    def fn(t):
        u = t * 2
        return (u * u + u.exp() * t).sum()

    _compare(lambda t: fn(t).reshape(1), lambda t: fn(t).reshape(1), [x], np.float64)


def test_leaf_gradients_are_independent_writable_arrays():
    a, b = npconv.tensor(np.ones(3), requires_grad=True), npconv.tensor(np.ones(3), requires_grad=True)
    ((a + b) * 2).sum().backward()
    assert a.grad.numpy().flags.writeable and b.grad.numpy().flags.writeable
    a.grad.numpy()[0] = 100.0
    assert b.grad.numpy()[0] == 2.0
    c = npconv.tensor(np.ones((2, 3)), requires_grad=True)
    c.sum().backward()
    c.grad.numpy()[...] = 0  # a gradient of a broadcast must be writable (optimisers update in place)


def test_backward_with_explicit_gradient_and_leaf_backward():
    x = npconv.tensor(np.arange(3.0), requires_grad=True)
    (x * 3).backward(npconv.tensor(np.array([1.0, 2.0, 3.0])))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 6.0, 9.0])
    y = npconv.tensor(np.arange(3.0), requires_grad=True)
    y.backward(np.ones(3))
    np.testing.assert_allclose(y.grad.numpy(), np.ones(3))


def test_no_grad_records_nothing():
    x = npconv.tensor(np.ones(3), requires_grad=True)
    with npconv.no_grad():
        y = x * 2
        assert not npconv.is_grad_enabled()
        with npconv.enable_grad():
            z = x * 2
    assert npconv.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad

    @npconv.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad
    with npconv.set_grad_enabled(False):
        assert not (x * 2).requires_grad


def test_detach_shares_data_and_cuts_the_graph():
    x = npconv.tensor(np.ones(3), requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.numpy(), y.numpy())
    (d * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.ones(3))


def test_second_backward_without_retain_graph_is_an_error():
    x = npconv.tensor(np.ones(3), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.ones(3) + 4 * np.ones(3))


def test_backward_errors():
    x = npconv.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        npconv.tensor(np.ones(3)).sum().backward()
    with pytest.raises(ValueError, match=r"gradient must have the tensor's shape \(3,\), but got \(2,\)"):
        (x * 2).backward(np.ones(2))
    with pytest.raises(TypeError, match="floating point or complex"):
        npconv.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        x += 1
    with pytest.raises(RuntimeError, match="leaf variables"):
        (x * 2).requires_grad = False


def test_properties_and_conversions():
    data = np.arange(6.0).reshape(2, 3)
    t = npconv.tensor(data, requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dim() == 2 and t.size() == (2, 3) and t.size(1) == 3
    assert t.numel() == 6 and len(t) == 2 and t.dtype == np.float64 and t.device == "cpu"
    assert np.array_equal(np.asarray(t), data) and t.numpy() is t.numpy()
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert t[1, 2].item() == 5.0 and t.tolist() == data.tolist()
    assert float(t.sum()) == 15.0
    assert t.is_leaf and (t * 1).grad_fn.name() == "MulBackward0" and not (t * 1).is_leaf
    assert repr(npconv.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "requires_grad=True" in repr(t) and "grad_fn=<MulBackward0>" in repr(t * 1)
    assert (t > 2).dtype == np.bool_ and (t == t).numpy().all()
    restored = pickle.loads(pickle.dumps(t * 1))
    assert np.array_equal(restored.numpy(), data) and not restored.requires_grad
    assert pickle.loads(pickle.dumps(t)).requires_grad


def test_astype_gradient_flows_back_in_the_source_dtype():
    x = np.random.default_rng(6).standard_normal(4).astype(np.float32)
    _compare(lambda t: (t.double() * 2).float(), lambda t: (t.double() * 2).float(), [x], np.float32)


def test_power_with_zero_exponent_has_zero_gradient_at_zero():
    x = np.array([0.0, 1.0, 2.0])
    e = np.array([0.0, 0.0, 1.0])
    _compare(lambda t: t**0, lambda t: t**0, [x], np.float64)
    _compare(lambda t: t**e, lambda t: t ** to_torch(e), [x], np.float64)
