"""More of the torch namespace against torch 2.13: clone/numel/is_floating_point, tril/triu/diag,
nonzero/argwhere, unique, meshgrid, median, erf, masked_select, repeat_interleave, vstack/hstack,
nan_to_num, addcmul/addcdiv and the in-place lerp_/addcmul_/addcdiv_, set_printoptions.

Values, dtypes, shapes, the gradient of a random weighted sum of the outputs for every input, and the
errors for bad arguments (the same exception class as torch's, a message naming the argument).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import npconv
from torch_oracle import backward_weighted

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}
FLOATS = [np.float64, np.float32]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _numpy(value):
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def _close(ours, theirs, what=""):
    a, e = _numpy(ours), _numpy(theirs)
    assert type(ours).__name__ == "Tensor", f"{what}: {type(ours)} is not a Tensor"
    assert a.shape == e.shape, f"{what}: shape {a.shape} != torch's {e.shape}"
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != torch's {e.dtype}"
    if a.dtype.kind in "fc":
        tol = TOL[np.dtype(a.real.dtype)]
        finite = np.isfinite(e)
        scale = max(1.0, float(np.abs(e[finite]).max())) if finite.any() else 1.0
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, err_msg=what, equal_nan=True)
    else:
        np.testing.assert_array_equal(a, e, err_msg=what)


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _parity(torch, fn, arrays, dtype, what, grad=True, seed=0):
    """``fn(lib, *tensors)`` on both libraries: every output and every input gradient equal torch's."""
    ours = [npconv.tensor(a.astype(dtype), requires_grad=grad) for a in arrays]
    theirs = [torch.tensor(a.astype(dtype), requires_grad=grad) for a in arrays]
    out_ours, out_theirs = _outputs(fn(npconv, *ours)), _outputs(fn(torch, *theirs))
    assert len(out_ours) == len(out_theirs), what
    for i, (o, t) in enumerate(zip(out_ours, out_theirs, strict=True)):
        _close(o, t, f"{what} output {i}")
        assert o.requires_grad == t.requires_grad, f"{what} output {i} requires_grad"
    if not grad:
        return
    differentiable = backward_weighted(zip(out_ours, out_theirs, strict=True), dtype, seed)
    assert differentiable, f"{what}: nothing differentiable"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert (a.grad is None) == (b.grad is None), f"{what}: gradient of input {i} missing"
        if b.grad is not None:
            _close(a.grad, b.grad, f"{what}: gradient of input {i}")


RNG = np.random.default_rng(11)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((3, 4))
POS = RNG.uniform(0.5, 2.0, (3, 4))
C3 = RNG.standard_normal((2, 3, 5))
V = RNG.standard_normal(4)
W = RNG.standard_normal(3)
TIES = np.array([[1.0, 2.0, 2.0, 3.0], [5.0, 5.0, 0.5, 2.0], [2.0, 7.0, 2.0, 2.0]])
SPECIAL = np.array([[np.nan, 1.5, np.inf], [-np.inf, -2.0, 0.25]])
MASK = np.array([True, False, True, True])
MASK_COLUMN = np.array([[True], [False], [True]])

DIFFERENTIABLE = {
    "clone": (lambda L, x: L.clone(x), [A]),
    "clone_method": (lambda L, x: x.clone() * 2, [A]),
    "tril": (lambda L, x: L.tril(x), [A]),
    "tril_diagonal_1": (lambda L, x: L.tril(x, 1), [A]),
    "tril_batched_negative": (lambda L, x: L.tril(x, diagonal=-2), [C3]),
    "triu": (lambda L, x: L.triu(x), [A]),
    "triu_method_tall": (lambda L, x: x.T.triu(2), [A]),
    "triu_batched_negative": (lambda L, x: x.triu(-1), [C3]),
    "diag_vector": (lambda L, x: L.diag(x), [V]),
    "diag_vector_above": (lambda L, x: L.diag(x, 1), [V]),
    "diag_vector_below": (lambda L, x: x.diag(diagonal=-2), [V]),
    "diag_matrix": (lambda L, x: L.diag(x), [A]),
    "diag_matrix_above": (lambda L, x: L.diag(x, 2), [A]),
    "diag_matrix_below_tall": (lambda L, x: L.diag(x.T, -1), [A]),
    "diag_matrix_outside": (lambda L, x: L.diag(x, 7) + 0, [A]),
    "erf": (lambda L, x: L.erf(x * 2), [A]),
    "erf_method": (lambda L, x: x.erf(), [C3]),
    "masked_select": (lambda L, x: L.masked_select(x, L.tensor(MASK)), [A]),
    "masked_select_broadcast_input": (lambda L, x: L.masked_select(x, L.tensor(MASK_COLUMN)), [V]),
    "masked_select_method": (lambda L, x: x.masked_select(x > 0), [C3]),
    "repeat_interleave_flat": (lambda L, x: L.repeat_interleave(x, 2), [A]),
    "repeat_interleave_dim": (lambda L, x: L.repeat_interleave(x, 3, dim=1), [A]),
    "repeat_interleave_counts": (lambda L, x: x.repeat_interleave(L.tensor([2, 0, 1]), dim=0), [A]),
    "repeat_interleave_negative_dim": (lambda L, x: L.repeat_interleave(x, L.tensor([1, 3, 0, 2, 1]), -1),
                                       [C3]),
    "repeat_interleave_one_count": (lambda L, x: L.repeat_interleave(x, L.tensor([2]), dim=1), [A]),
    "vstack": (lambda L, x, y: L.vstack([x, y]), [A, B]),
    "vstack_vectors": (lambda L, x, y: L.vstack((x[0], y[1], x[2])), [A, B]),
    "hstack": (lambda L, x, y: L.hstack([x, y[:, :1]]), [A, B]),
    "hstack_vectors": (lambda L, x, y: L.hstack([x[0], y[1, :2]]), [A, B]),
    "hstack_3d": (lambda L, x: L.hstack([x, x[:, :1]]), [C3]),
    "nan_to_num": (lambda L, x: L.nan_to_num(x), [SPECIAL]),
    "nan_to_num_values": (lambda L, x: x.nan_to_num(nan=1.0, posinf=9.5, neginf=-3), [SPECIAL]),
    "nan_to_num_finite": (lambda L, x: L.nan_to_num(x, posinf=2.0), [A]),
    "median": (lambda L, x: L.median(x), [A]),
    "median_ties": (lambda L, x: L.median(x), [TIES]),
    "median_even_count_method": (lambda L, x: x[:, :2].median(), [A]),
    "median_dim_values": (lambda L, x: L.median(x, 1).values, [A]),
    "median_dim_keepdim": (lambda L, x: tuple(L.median(x, dim=-1, keepdim=True)), [C3]),
    "median_dim0": (lambda L, x: tuple(x.median(0)), [A]),
    "addcmul": (lambda L, x, y, z: L.addcmul(x, y, z), [A, B, POS]),
    "addcmul_value_broadcast": (lambda L, x, y, z: L.addcmul(x[0], y[:, :1], z, value=-0.5), [A, B, POS]),
    "addcdiv": (lambda L, x, y, z: L.addcdiv(x, y, z, value=2), [A, B, POS]),
    "addcdiv_method_broadcast": (lambda L, x, y, z: x.addcdiv(y[:1], z[:, 1:2], value=0.25), [A, B, POS]),
    "addcmul_method": (lambda L, x, y, z: x.addcmul(y, z), [A, B, POS]),
    "lerp_": (lambda L, x, y: (x * 1).lerp_(y, 0.3), [A, B]),
    "lerp_tensor_weight": (lambda L, x, y, w: (x * 1).lerp_(y, L.sigmoid(w)), [A, B, POS]),
    "addcmul_": (lambda L, x, y, z: (x * 1).addcmul_(y, z, value=0.7), [A, B, POS]),
    "addcmul_broadcast_": (lambda L, x, y, z: (x * 1).addcmul_(y[:1], z[:, :1]), [A, B, POS]),
    "addcdiv_": (lambda L, x, y, z: (x * 1).addcdiv_(y, z, value=-1.5), [A, B, POS]),
    "erf_": (lambda L, x: (x * 1).erf_(), [A]),
    "nan_to_num_": (lambda L, x: (x * 1).nan_to_num_(posinf=1.0), [SPECIAL]),
    "tril_": (lambda L, x: (x * 1).tril_(-1), [A]),
    "triu_": (lambda L, x: (x * 1).triu_(1), [C3]),
    "meshgrid_ij": (lambda L, x, y: L.meshgrid(x[0], y[1, :3], indexing="ij"), [A, B]),
    "meshgrid_xy_three": (lambda L, x, y: L.meshgrid([x[0], y[1, :3], x[2, :2]], indexing="xy"), [A, B]),
    "meshgrid_scalar": (lambda L, x: L.meshgrid(x[0, 0], x[1], indexing="xy"), [A]),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_values_and_gradients_match_torch(name, dtype, torch):
    fn, arrays = DIFFERENTIABLE[name]
    _parity(torch, fn, arrays, dtype, name)


INTS = np.array([[3, 0, -2, 3], [1, 1, 0, 7], [0, 3, 5, -2]])
FLAGS = np.array([[True, False, True], [False, False, True]])

INTEGER = {
    "tril": (lambda L, x: L.tril(x, 1), INTS),
    "triu_bool": (lambda L, x: L.triu(x), FLAGS),
    "diag": (lambda L, x: L.diag(x, -1), INTS),
    "diag_vector": (lambda L, x: L.diag(x[0]), INTS),
    "nonzero": (lambda L, x: L.nonzero(x), INTS),
    "nonzero_tuple": (lambda L, x: L.nonzero(x, as_tuple=True), INTS),
    "nonzero_bool_method": (lambda L, x: x.nonzero(), FLAGS),
    "nonzero_0d": (lambda L, x: L.nonzero(x[0, 0]), INTS),
    "nonzero_0d_zero": (lambda L, x: L.nonzero(x[0, 1]), INTS),
    "nonzero_0d_tuple": (lambda L, x: L.nonzero(x[0, 0], as_tuple=True), INTS),
    "argwhere": (lambda L, x: L.argwhere(x), INTS),
    "argwhere_method": (lambda L, x: x.argwhere(), FLAGS),
    "unique": (lambda L, x: L.unique(x), INTS),
    "unique_all": (lambda L, x: L.unique(x, return_inverse=True, return_counts=True), INTS),
    "unique_counts": (lambda L, x: L.unique(x, sorted=False, return_counts=True), INTS),
    "unique_method_inverse": (lambda L, x: x.unique(return_inverse=True), INTS),
    "unique_bool": (lambda L, x: L.unique(x, return_counts=True), FLAGS),
    "unique_dim0": (lambda L, x: L.unique(L.cat([x, x[:2]]), dim=0, return_inverse=True,
                                          return_counts=True), INTS),
    "unique_dim_negative": (lambda L, x: L.unique(L.cat([x, x[:, 1:2]], 1), dim=-1, return_inverse=True),
                            INTS),
    "unique_0d": (lambda L, x: L.unique(x[1, 3], return_inverse=True, return_counts=True), INTS),
    "median": (lambda L, x: L.median(x), INTS),
    "median_even": (lambda L, x: x[:2, :2].median(), INTS),
    "masked_select": (lambda L, x: L.masked_select(x, x > 0), INTS),
    "repeat_interleave": (lambda L, x: L.repeat_interleave(x, L.tensor([1, 0, 3, 2]), dim=1), INTS),
    "repeat_interleave_counts_only": (lambda L, x: L.repeat_interleave(x[1].abs()), INTS),
    "repeat_interleave_0d": (lambda L, x: L.repeat_interleave(x[0, 0], 3), INTS),
    "vstack_promotes": (lambda L, x: L.vstack([x, x.float()]), INTS),
    "hstack": (lambda L, x: L.hstack([x, x[:, :1]]), INTS),
    "nan_to_num": (lambda L, x: L.nan_to_num(x, nan=3.5), INTS),
    "meshgrid": (lambda L, x: L.meshgrid(x[0], x[1, :2], indexing="ij"), INTS),
    "clone": (lambda L, x: L.clone(x), INTS),
    "erf_promotes": (lambda L, x: L.erf(x), INTS),
    "addcmul": (lambda L, x: L.addcmul(x, x, x[:1], value=3), INTS),
    "addcdiv_one_float": (lambda L, x: L.addcdiv(x, x.double(), x + 10), INTS),
}


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("name", sorted(INTEGER))
def test_integer_and_bool_results_match_torch(name, dtype, torch):
    """Integer data in int64 and int32; bool data as bool (int64) and as int32."""
    fn, array = INTEGER[name]
    if array.dtype == np.bool_ and dtype is np.int64:
        dtype = np.bool_
    try:
        theirs = fn(torch, torch.tensor(array.astype(dtype)))
    except (RuntimeError, TypeError) as error:  # not defined for this dtype in torch: nor in npconv
        with pytest.raises(type(error)):
            fn(npconv, npconv.tensor(array.astype(dtype)))
        return
    ours = fn(npconv, npconv.tensor(array.astype(dtype)))
    assert type(ours) is type(theirs) or isinstance(theirs, tuple) == isinstance(ours, tuple)
    out_ours, out_theirs = _outputs(ours), _outputs(theirs)
    assert len(out_ours) == len(out_theirs), name
    for i, (o, t) in enumerate(zip(out_ours, out_theirs, strict=True)):
        _close(o, t, f"{name} output {i}")


FLOAT_ONLY = {
    "unique_nan": (lambda L, x: L.unique(x, return_inverse=True, return_counts=True),
                   np.array([np.nan, 1.0, np.nan, -1.0, 1.0])),
    "unique_dim1": (lambda L, x: L.unique(x, dim=1, return_counts=True),
                    np.array([[1.0, 0.5, 1.0], [2.0, 3.0, 2.0]])),
    "median_nan": (lambda L, x: L.median(x), np.array([1.0, np.nan, 3.0, np.nan])),
    "median_nan_dim": (lambda L, x: tuple(L.median(x, 1)),
                       np.array([[1.0, np.nan, 3.0, np.nan], [4.0, 2.0, 3.0, 1.0]])),
    "median_empty": (lambda L, x: L.median(x), np.zeros(0)),
    "median_0d_dim": (lambda L, x: tuple(L.median(x[0], 0)), np.array([4.0])),
    "unique_empty_dim": (lambda L, x: L.unique(x, dim=0, return_inverse=True, return_counts=True),
                         np.zeros((0, 3))),
    "nan_to_num_complex": (lambda L, x: L.nan_to_num(x),
                           np.array([complex(np.nan, np.inf), complex(-np.inf, 2)])),
    "vstack_0d": (lambda L, x: L.vstack([x[0], x[1]]), np.array([1.0, 2.0])),
    "hstack_0d": (lambda L, x: L.hstack([x[0], x[1]]), np.array([1.0, 2.0])),
}


@pytest.mark.parametrize("name", sorted(FLOAT_ONLY))
def test_special_values_match_torch(name, torch):
    fn, array = FLOAT_ONLY[name]
    dtype = np.complex128 if array.dtype.kind == "c" else np.float64
    out_ours = _outputs(fn(npconv, npconv.tensor(array.astype(dtype))))
    out_theirs = _outputs(fn(torch, torch.tensor(array.astype(dtype))))
    assert len(out_ours) == len(out_theirs)
    for i, (o, t) in enumerate(zip(out_ours, out_theirs, strict=True)):
        _close(o, t, f"{name} output {i}")


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.float32])
def test_median_with_ties_returns_an_index_of_the_median(dtype, torch):
    """Among equal values the index is implementation-defined (torch's introselect): it must point at the
    median value, and the values must be torch's."""
    data = np.array([[4, 1, 4, 1, 4], [2, 2, 2, 9, 2], [0, 5, 5, 0, 3]]).astype(dtype)
    for dim in (0, 1, -1):
        ours, theirs = npconv.median(npconv.tensor(data), dim), torch.median(torch.tensor(data), dim)
        _close(ours.values, theirs.values, f"median dim {dim}")
        assert ours.indices.dtype == npconv.int64
        picked = np.take_along_axis(data, np.expand_dims(ours.indices.numpy(), dim), dim).squeeze(dim)
        np.testing.assert_array_equal(picked, theirs.values.numpy())


def test_numel_and_is_floating_point_match_torch(torch):
    for shape in [(), (0,), (3,), (2, 3, 4)]:
        for dtype in ["float16", "float32", "float64", "int32", "int64", "bool", "complex64"]:
            ours = npconv.zeros(shape, dtype=getattr(npconv, dtype))
            theirs = torch.zeros(shape, dtype=getattr(torch, dtype))
            assert npconv.numel(ours) == torch.numel(theirs) == ours.numel() == ours.nelement()
            assert type(npconv.numel(ours)) is int
            floating = torch.is_floating_point(theirs)
            assert npconv.is_floating_point(ours) is floating and ours.is_floating_point() is floating
    assert npconv.Tensor.numel is npconv.numel and npconv.Tensor.is_floating_point is npconv.is_floating_point


def test_tensor_methods_are_the_functions():
    for name in ["clone", "tril", "triu", "diag", "nonzero", "argwhere", "unique", "median", "erf",
                 "masked_select", "repeat_interleave", "nan_to_num", "addcmul", "addcdiv"]:
        assert getattr(npconv.Tensor, name) is getattr(npconv, name), name
        assert name in npconv.__all__, name
    for name in ["meshgrid", "vstack", "hstack", "set_printoptions", "numel", "is_floating_point"]:
        assert name in npconv.__all__ and callable(getattr(npconv, name)), name


def test_clone_owns_its_memory_and_unique_has_no_derivative(torch):
    x = npconv.tensor(A, requires_grad=True)
    y = npconv.clone(x)
    y.detach().numpy()[0, 0] = 100.0
    assert x.detach().numpy()[0, 0] == A[0, 0] and y.grad_fn.name() == "CloneBackward0"
    for lib in (npconv, torch):
        u = lib.unique(lib.tensor([3.0, 1.0, 3.0], requires_grad=True))
        assert u.requires_grad
        with pytest.raises(NotImplementedError, match="derivative for '_unique2' is not implemented"):
            u.sum().backward()


def test_meshgrid_warns_without_indexing_like_torch(torch):
    for lib in (npconv, torch):
        with pytest.warns(UserWarning, match="indexing argument"):
            grids = lib.meshgrid(lib.arange(2), lib.arange(3))
        assert [tuple(g.shape) for g in grids] == [(2, 3), (2, 3)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lib.meshgrid(lib.arange(2), lib.arange(3), indexing="ij")


def _version(t):
    return t._version_value if isinstance(t, npconv.Tensor) else t._version


def test_inplace_ops_follow_the_inplace_rules(torch):
    for lib in (npconv, torch):
        leaf, other = lib.ones(3, requires_grad=True), lib.ones(3)
        for method, args in (("lerp_", (other, 0.5)), ("addcmul_", (other, other)),
                             ("addcdiv_", (other, other)), ("erf_", ())):
            with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
                getattr(leaf, method)(*args)
        x = lib.ones(3)
        version = _version(x)
        assert x.addcmul_(lib.full((3,), 2.0), lib.full((3,), 3.0), value=0.5) is x
        assert _version(x) > version
        np.testing.assert_array_equal(x.numpy(), np.full(3, 4.0, np.float32))
        x.addcdiv_(lib.full((3,), 2.0), lib.full((3,), 4.0), value=2).lerp_(lib.zeros(3), 0.25)
        np.testing.assert_array_equal(x.numpy(), np.full(3, 3.75, np.float32))
        h = lib.ones(3, requires_grad=True) * 1
        y = h * h
        h.addcmul_(lib.ones(3), lib.ones(3))  # h is saved by y's backward
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


BAD = [
    ("clone_list", lambda L: L.clone([1.0, 2.0]), TypeError, "input"),
    ("numel_list", lambda L: L.numel([1, 2]), TypeError, "input"),
    ("is_floating_point_list", lambda L: L.is_floating_point([1.0]), TypeError, "input"),
    ("tril_1d", lambda L: L.tril(L.ones(3)), RuntimeError, "2 dimensions"),
    ("triu_float_diagonal", lambda L: L.triu(L.ones(2, 2), 1.5), TypeError, "diagonal"),
    ("diag_3d", lambda L: L.diag(L.ones(2, 2, 2)), RuntimeError, "1D or 2D"),
    ("diag_0d", lambda L: L.diag(L.tensor(2.0)), RuntimeError, "1D or 2D"),
    ("diag_float_diagonal", lambda L: L.diag(L.ones(3), diagonal=1.0), TypeError, "diagonal"),
    ("nonzero_positional_as_tuple", lambda L: L.nonzero(L.ones(2), True), TypeError, ""),
    ("unique_dim_out_of_range", lambda L: L.unique(L.ones(2, 3), dim=2), IndexError, "out of range"),
    ("unique_dim_0d", lambda L: L.unique(L.tensor(3), dim=0), IndexError, "no dimensions"),
    ("meshgrid_2d", lambda L: L.meshgrid(L.ones(2), L.ones(2, 2), indexing="ij"), RuntimeError, "0D or 1D"),
    ("meshgrid_dtypes", lambda L: L.meshgrid(L.ones(2), L.arange(2), indexing="ij"), RuntimeError, "dtype"),
    ("meshgrid_indexing", lambda L: L.meshgrid(L.ones(2), L.ones(2), indexing="ji"), RuntimeError,
     "indexing"),
    ("meshgrid_empty", lambda L: L.meshgrid(indexing="ij"), RuntimeError, "non-empty"),
    ("median_dim_out_of_range", lambda L: L.median(L.ones(2, 3), 2), IndexError, "out of range"),
    ("median_empty_dim", lambda L: L.median(L.ones(2, 0), 1), IndexError, "reduction dim 1"),
    ("median_bool", lambda L: L.median(L.tensor([True, False])), RuntimeError, "Bool"),
    ("median_keepdim_without_dim", lambda L: L.median(L.ones(3), keepdim=True), TypeError, "dim"),
    ("erf_complex", lambda L: L.erf(L.ones(2, dtype=L.complex64)), RuntimeError, "complex"),
    ("masked_select_int_mask", lambda L: L.masked_select(L.ones(3), L.tensor([1, 0, 1])), RuntimeError,
     "mask"),
    ("masked_select_shapes", lambda L: L.masked_select(L.ones(3), L.tensor([True, False])), RuntimeError,
     "size of tensor"),
    ("repeat_interleave_negative", lambda L: L.repeat_interleave(L.ones(2), -1), RuntimeError,
     "non-negative"),
    ("repeat_interleave_negative_counts", lambda L: L.repeat_interleave(L.ones(2), L.tensor([1, -1]), 0),
     RuntimeError, "negative"),
    ("repeat_interleave_float_counts", lambda L: L.repeat_interleave(L.ones(2), L.tensor([1.0, 2.0]), 0),
     RuntimeError, "repeats"),
    ("repeat_interleave_2d_counts", lambda L: L.repeat_interleave(L.ones(2), L.tensor([[1, 2]]), 0),
     RuntimeError, "repeats"),
    ("repeat_interleave_count_size", lambda L: L.repeat_interleave(L.ones(2, 3), L.tensor([1, 2]), 1),
     RuntimeError, "repeats must have the same size"),
    ("repeat_interleave_float", lambda L: L.repeat_interleave(L.ones(2), 2.0), TypeError, "repeats"),
    ("repeat_interleave_dim", lambda L: L.repeat_interleave(L.ones(2, 2), 2, dim=3), IndexError,
     "out of range"),
    ("repeat_interleave_output_size", lambda L: L.repeat_interleave(L.ones(2), L.tensor([1, 2]), 0,
                                                                    output_size=4), RuntimeError, "size"),
    ("repeat_interleave_counts_2d", lambda L: L.repeat_interleave(L.tensor([[1, 2]])), RuntimeError, "1D"),
    ("vstack_empty", lambda L: L.vstack([]), RuntimeError, "non-empty"),
    ("hstack_empty", lambda L: L.hstack(()), RuntimeError, "non-empty"),
    ("vstack_tensor", lambda L: L.vstack(L.ones(2, 3)), TypeError, "tensors"),
    ("hstack_shapes", lambda L: L.hstack([L.ones(2, 1), L.ones(3, 3)]), RuntimeError, "Sizes of tensors"),
    ("nan_to_num_string", lambda L: L.nan_to_num(L.ones(2), nan="a"), TypeError, "nan"),
    ("nan_to_num_posinf_string", lambda L: L.nan_to_num(L.ones(2), posinf="a"), TypeError, "posinf"),
    ("addcmul_number", lambda L: L.addcmul(L.ones(2), 2, L.ones(2)), TypeError, "tensor1"),
    ("addcmul_value", lambda L: L.addcmul(L.ones(2), L.ones(2), L.ones(2), value="a"), TypeError, "value"),
    ("addcmul_shapes", lambda L: L.addcmul(L.ones(2), L.ones(2, 1), L.ones(3)), RuntimeError, ""),
    ("addcdiv_integers", lambda L: L.addcdiv(L.ones(2), L.ones(2, dtype=L.int64), L.ones(2, dtype=L.int32)),
     RuntimeError, "Integer division"),
    ("addcmul__broadcast_grows", lambda L: L.ones(2).addcmul_(L.ones(2, 1), L.ones(2)), RuntimeError,
     "shape"),
    ("addcdiv__int_target", lambda L: L.ones(2, dtype=L.int64).addcdiv_(L.ones(2), L.ones(2)), RuntimeError,
     "cast"),
    ("lerp__end_dtype", lambda L: L.ones(2).lerp_(L.ones(2, dtype=L.float64), 0.3), RuntimeError, "end"),
    ("lerp__weight_dtype", lambda L: L.ones(2).lerp_(L.ones(2), L.ones(2, dtype=L.float64)), RuntimeError,
     "weight"),
    ("lerp__int", lambda L: L.ones(2, dtype=L.int64).lerp_(L.ones(2, dtype=L.int64), 0.3), RuntimeError, ""),
    ("lerp__shape", lambda L: L.ones(2).lerp_(L.ones(2, 1), 0.5), RuntimeError, "shape"),
]


@pytest.mark.parametrize("name, fn, error, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_like_torch(name, fn, error, fragment, torch):
    with pytest.raises(error):
        fn(torch)
    with pytest.raises(error, match=fragment):
        fn(npconv)


PRINT_CASES = [
    [1.2345, -2.3456, 3.14159],
    [1.0, 2.0],
    [0.5, 1e-5],
    [1.5, 2.25],
    [123.456, 0.001],
    list(range(10)),
    np.arange(12.0).reshape(3, 4).tolist(),
    (np.arange(40) / 7).tolist(),
    np.arange(30.0).reshape(10, 3).tolist(),
    list(range(2000)),
]


@pytest.fixture
def print_options(torch):
    yield
    npconv.set_printoptions(profile="default")
    torch.set_printoptions(profile="default")


@pytest.mark.parametrize(
    "options",
    [
        {"precision": 2},
        {"precision": 6},
        {"precision": 2, "sci_mode": True},
        {"precision": 3, "sci_mode": False},
        {"threshold": 5, "edgeitems": 2},
        {"threshold": 8, "edgeitems": 1, "precision": 1},
        {"linewidth": 40, "precision": 3},
        {"profile": "short"},
        {"profile": "full"},
    ],
    ids=str,
)
def test_set_printoptions_prints_like_torch(options, print_options, torch):
    before = [repr(npconv.tensor(c)) for c in PRINT_CASES]
    npconv.set_printoptions(**options)
    torch.set_printoptions(**options)
    after = [repr(npconv.tensor(c)) for c in PRINT_CASES]
    for case, ours in zip(PRINT_CASES, after, strict=True):
        assert ours == repr(torch.tensor(case)), case
    assert after != before
    npconv.set_printoptions(profile="default")
    assert [repr(npconv.tensor(c)) for c in PRINT_CASES] == before


def test_set_printoptions_keeps_unset_options_and_rejects_bad_ones(print_options, torch):
    for lib in (npconv, torch):
        lib.set_printoptions(precision=2)
        lib.set_printoptions(threshold=3)  # precision stays 2
        assert repr(lib.tensor([1.23456, 2.5])) == "tensor([1.23, 2.50])"
        assert repr(lib.arange(5)) == "tensor([0, 1, 2, 3, 4])" or lib is torch
    assert repr(npconv.arange(5)) == repr(torch.arange(5))
    with pytest.raises(ValueError, match="profile"):
        npconv.set_printoptions(profile="long")
    with pytest.raises(TypeError, match="precision"):
        npconv.set_printoptions(precision="2")
    with pytest.raises(ValueError, match="edgeitems"):
        npconv.set_printoptions(edgeitems=-1)
