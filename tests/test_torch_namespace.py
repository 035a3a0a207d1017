"""The torch namespace npconv offers (``npconv.*`` and Tensor methods) against torch 2.13.

Each function runs on npconv and torch with the same inputs; values, dtypes, shapes and the gradient
of every input are compared in float64 and float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import npconv
from torch_oracle import backward_weighted

DTYPES = [np.float64, np.float32]
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _close(ours, theirs, what: str = "") -> None:
    a = np.asarray(ours.numpy() if hasattr(ours, "numpy") else ours)
    e = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != torch's {e.shape}"
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != torch's {e.dtype}"
    if a.dtype.kind in "fc":
        tol = TOL.get(np.dtype(a.real.dtype), 1e-3)
        scale = max(1.0, float(np.nanmax(np.abs(e)))) if e.size and np.isfinite(e).any() else 1.0
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, err_msg=what, equal_nan=True)
    else:
        np.testing.assert_array_equal(a, e, err_msg=what)


def _parity(torch, fn, arrays, dtype, what="", seed=0, grad=True):
    """``fn(lib, *tensors)`` on both libraries: outputs and every input gradient equal torch's."""
    ours = [npconv.tensor(a.astype(dtype), requires_grad=grad) for a in arrays]
    theirs = [torch.tensor(a.astype(dtype), requires_grad=grad) for a in arrays]
    out_ours, out_theirs = fn(npconv, *ours), fn(torch, *theirs)
    pairs = (
        list(zip(out_ours, out_theirs, strict=True))
        if isinstance(out_theirs, tuple)
        else [(out_ours, out_theirs)]
    )
    for i, (o, t) in enumerate(pairs):
        _close(o, t, f"{what} output {i}")
    if not grad:
        return
    if not backward_weighted(pairs, dtype, seed):
        return
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if b.grad is None:
            assert a.grad is None or not np.any(a.grad.numpy()), f"{what}: input {i} gradient"
        else:
            _close(a.grad, b.grad, f"{what}: gradient of input {i}")


RNG = np.random.default_rng(7)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((3, 4))
POS = RNG.uniform(0.5, 2.0, (3, 4))
C3 = RNG.standard_normal((2, 3, 4))

OPS = {
    "add_alpha": (lambda L, x, y: L.add(x, y, alpha=0.5), [A, B]),
    "sub_alpha": (lambda L, x, y: L.sub(x, y, alpha=2), [A, B]),
    "mul": (lambda L, x, y: L.mul(x, y), [A, B]),
    "div": (lambda L, x, y: L.div(x, y), [A, POS]),
    "pow": (lambda L, x, y: L.pow(x, y), [POS, B]),
    "abs": (lambda L, x: L.abs(x), [A]),
    "exp": (lambda L, x: L.exp(x), [A]),
    "log": (lambda L, x: L.log(x), [POS]),
    "log1p": (lambda L, x: L.log1p(x), [POS]),
    "sqrt": (lambda L, x: L.sqrt(x), [POS]),
    "rsqrt": (lambda L, x: L.rsqrt(x), [POS]),
    "tanh": (lambda L, x: L.tanh(x), [A]),
    "sigmoid": (lambda L, x: L.sigmoid(x), [A]),
    "relu": (lambda L, x: L.relu(x), [A]),
    "sign": (lambda L, x: L.sign(x), [A]),
    "sin_cos": (lambda L, x: L.sin(x) * L.cos(x), [A]),
    "clamp": (lambda L, x: L.clamp(x, -0.5, 0.7), [A]),
    "clamp_min": (lambda L, x: L.clamp(x, min=0.1), [A]),
    "clamp_tensor": (lambda L, x, lo: L.clamp(x, lo, None), [A, B]),
    "where": (lambda L, x, y: L.where(x > y, x, y), [A, B]),
    "maximum": (lambda L, x, y: L.maximum(x, y), [A, B]),
    "softmax": (lambda L, x: L.softmax(x, 1), [A]),
    "softmax_dim0": (lambda L, x: L.softmax(x, dim=0), [A]),
    "log_softmax": (lambda L, x: L.log_softmax(x, -1), [A]),
    "sum": (lambda L, x: L.sum(x), [A]),
    "sum_dims": (lambda L, x: L.sum(x, (0, 2), keepdim=True), [C3]),
    "mean_dim": (lambda L, x: L.mean(x, 1), [C3]),
    "max_all": (lambda L, x: L.max(x), [A]),
    "max_dim": (lambda L, x: tuple(L.max(x, 1)), [A]),
    "min_dim_keepdim": (lambda L, x: tuple(L.min(x, 0, keepdim=True)), [A]),
    "max_binary": (lambda L, x, y: L.max(x, y), [A, B]),
    "argmax": (lambda L, x: L.argmax(x, 1), [A]),
    "argmax_all": (lambda L, x: L.argmax(x), [A]),
    "var": (lambda L, x: x.var(), [A]),
    "var_dim_unbiased_false": (lambda L, x: x.var(1, unbiased=False), [A]),
    "std_correction": (lambda L, x: x.std(dim=0, correction=0, keepdim=True), [A]),
    "norm": (lambda L, x: x.norm(), [A]),
    "norm_p1_dim": (lambda L, x: x.norm(p=1, dim=1), [A]),
    "norm_p3": (lambda L, x: x.norm(3), [A]),
    "norm_inf": (lambda L, x: x.norm(float("inf"), dim=0), [A]),
    "cumsum": (lambda L, x: L.cumsum(x, 1), [A]),
    "topk": (lambda L, x: tuple(L.topk(x, 2, dim=1)), [A]),
    "topk_smallest": (lambda L, x: tuple(L.topk(x, 3, dim=0, largest=False)), [A]),
    "sort": (lambda L, x: tuple(L.sort(x, dim=1)), [A]),
    "sort_descending": (lambda L, x: tuple(L.sort(x, 0, descending=True)), [A]),
    "logsumexp": (lambda L, x: L.logsumexp(x, 1), [A]),
    "prod": (lambda L, x: x.prod(1), [A]),
    "flatten": (lambda L, x: L.flatten(x, 1), [C3]),
    "squeeze_unsqueeze": (lambda L, x: L.squeeze(L.unsqueeze(x, 1), 1), [A]),
    "cat": (lambda L, x, y: L.cat([x, y], 1), [A, B]),
    "stack": (lambda L, x, y: L.stack([x, y], -1), [A, B]),
    "split": (lambda L, x: L.split(x, 3, dim=1), [C3]),
    "split_sizes": (lambda L, x: L.split(x, [1, 3], dim=2), [C3]),
    "chunk": (lambda L, x: L.chunk(x, 3, 1), [C3]),
    "flip": (lambda L, x: L.flip(x, (0, 2)), [C3]),
    "roll": (lambda L, x: L.roll(x, (1, -2), (0, 2)), [C3]),
    "roll_flat": (lambda L, x: L.roll(x, 5), [C3]),
    "expand": (lambda L, x: x[:, :1].expand(3, 5) * 1, [A]),
    "expand_as": (lambda L, x, y: x[:1].expand_as(y) * y, [A, B]),
    "repeat": (lambda L, x: x.repeat(2, 1, 3), [A]),
    "narrow": (lambda L, x: x.narrow(1, 1, 2), [A]),
    "unfold": (lambda L, x: x.unfold(1, 2, 1), [C3]),
    "unfold_step": (lambda L, x: x.unfold(2, 2, 2), [C3]),
    "gather": (lambda L, x: x.gather(1, L.tensor([[0, 0], [1, 3], [2, 1]])), [A]),
    "scatter": (lambda L, x, y: x.scatter(1, L.tensor([[0, 1], [1, 3], [2, 0]]), y[:, :2]), [A, B]),
    "index_select": (lambda L, x: x.index_select(1, L.tensor([3, 0, 3])), [A]),
    "masked_fill": (lambda L, x: x.masked_fill(x > 0.2, -1.0), [A]),
    "t_matmul": (lambda L, x, y: L.matmul(x.t(), y), [A, B]),
    "mm": (lambda L, x, y: L.mm(x, y.T), [A, B]),
    "bmm": (lambda L, x: L.bmm(x, x.transpose(1, 2)), [C3]),
    "matmul_vector": (lambda L, x, y: x @ y[0], [A, B]),
    "einsum": (lambda L, x, y: L.einsum("ij,kj->ik", x, y), [A, B]),
    "einsum_batch": (lambda L, x: L.einsum("bij,bkj->bik", x, x), [C3]),
    "getitem": (lambda L, x: x[1:, ::2], [A]),
    "getitem_fancy": (lambda L, x: x[[0, 2, 0]], [A]),
    "permute_view": (lambda L, x: x.permute(2, 0, 1).reshape(4, -1), [C3]),
    "view_as": (lambda L, x, y: x.view_as(y) * y, [A, B]),
    "std_mean": (lambda L, x: L.std_mean(x, 1), [A]),
    "amax": (lambda L, x: L.amax(x, 1), [A]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPS))
def test_function_matches_torch(name, dtype, torch):
    fn, arrays = OPS[name]
    _parity(torch, fn, arrays, dtype, name)


@settings(max_examples=30, deadline=None)
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    op=st.sampled_from(["add", "sub", "mul", "div", "maximum", "where"]),
    dtypes=st.sampled_from([(np.float64, np.float64), (np.float32, np.float32), (np.float32, np.float64)]),
)
def test_broadcasting_binary_ops_match_torch(shapes, op, dtypes, torch):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2, shapes.input_shapes[0]).astype(dtypes[0])
    y = rng.uniform(0.5, 2, shapes.input_shapes[1]).astype(dtypes[1])
    results = []
    for lib in (npconv, torch):
        xa, ya = lib.tensor(x, requires_grad=True), lib.tensor(y, requires_grad=True)
        out = lib.where(xa > ya, xa, ya) if op == "where" else getattr(lib, op)(xa, ya)
        out.sum().backward()
        results.append((out, xa.grad, ya.grad))
    for ours, theirs in zip(*results, strict=True):
        _close(ours, theirs, op)


@pytest.mark.parametrize(
    "left, right",
    [
        (np.ones(2, np.int64), 2.5),
        (np.ones(2, np.int32), np.float64(2.5)),
        (np.ones(2, np.float32), np.ones((), np.float64)),
        (np.ones(2, np.int64), np.ones(2, np.float32)),
        (np.ones(2, np.uint8), np.ones(2, np.int8)),
        (np.ones(2, np.bool_), True),
        (np.ones(2, np.float16), 3),
        (np.ones(2, np.int16), np.ones((), np.int64)),
        (np.ones((), np.int64), np.ones((), np.float32)),
    ],
)
def test_type_promotion_matches_torch(left, right, torch):
    ours = npconv.add(npconv.tensor(left), npconv.tensor(right) if isinstance(right, np.ndarray) else right)
    theirs = torch.add(torch.tensor(left), torch.tensor(right) if isinstance(right, np.ndarray) else right)
    assert str(ours.dtype) == str(theirs.dtype)
    assert npconv.result_type(npconv.tensor(left), right) == ours.dtype


# -- factories ---------------------------------------------------------------------------------------
def test_factories_match_torch_shapes_and_dtypes(torch):
    cases = [
        lambda L: L.zeros(2, 3),
        lambda L: L.zeros((2, 3), dtype=L.float64),
        lambda L: L.ones([4]),
        lambda L: L.ones(2, dtype=L.long),
        lambda L: L.empty(3, 2).shape,
        lambda L: L.full((2, 2), 7),
        lambda L: L.full((2,), 1.5),
        lambda L: L.full((2,), True),
        lambda L: L.zeros_like(L.ones(2, 3, dtype=L.int32)),
        lambda L: L.ones_like(L.zeros(3), dtype=L.float64),
        lambda L: L.arange(5),
        lambda L: L.arange(1, 4, 0.5),
        lambda L: L.arange(0, 1, 0.1),
        lambda L: L.arange(10, 0, -3),
        lambda L: L.arange(5.0),
        lambda L: L.linspace(0, 1, 5),
        lambda L: L.linspace(-2, 3, 7, dtype=L.float64),
        lambda L: L.eye(3),
        lambda L: L.eye(2, 4, dtype=L.int64),
        lambda L: L.tensor([1, 2]),
        lambda L: L.tensor([[1.0, 2.0]]),
        lambda L: L.tensor(3.5),
        lambda L: L.tensor([True, False]),
        lambda L: L.tensor([1j]),
        lambda L: L.as_tensor([1.0, 2.0], dtype=L.float64),
        lambda L: L.randn(2, 3).shape,
        lambda L: L.rand(4, dtype=L.float64).dtype,
        lambda L: L.randint(0, 5, (3,)).dtype,
        lambda L: L.randint(5, (2, 2)).shape,
        lambda L: L.randperm(6).sort().values,
        lambda L: L.zeros(0, 3),
        lambda L: L.tensor([]),
    ]
    for i, case in enumerate(cases):
        ours, theirs = case(npconv), case(torch)
        if isinstance(theirs, torch.Tensor):
            _close(ours, theirs, f"factory {i}")
        else:
            assert str(ours) == str(theirs), f"factory {i}"


def test_random_factories_draw_from_the_generator():
    g = npconv.Generator().manual_seed(3)
    a = npconv.randn(4, generator=g)
    g.manual_seed(3)
    assert npconv.equal(a, npconv.randn(4, generator=g))
    npconv.manual_seed(5)
    b = npconv.rand(3)
    npconv.manual_seed(5)
    assert npconv.equal(b, npconv.rand(3)) and 0 <= b.min().item() and b.max().item() < 1
    values = npconv.randint(2, 5, (1000,), generator=g)
    assert values.dtype == npconv.int64 and set(values.tolist()) == {2, 3, 4}
    assert g.initial_seed() == 3


def test_from_numpy_shares_memory_and_as_tensor_copies_only_when_needed():
    array = np.zeros(3, np.float32)
    t = npconv.from_numpy(array)
    array[0] = 5
    assert t[0].item() == 5
    assert npconv.as_tensor(array).numpy() is array
    assert npconv.as_tensor(t) is t
    assert npconv.as_tensor(array, dtype=npconv.float64).dtype == npconv.float64
    assert npconv.tensor(array).numpy() is not array
    with pytest.raises(TypeError, match="from_numpy expected np.ndarray"):
        npconv.from_numpy([1, 2])


def test_default_dtype():
    assert npconv.get_default_dtype() == npconv.float32
    npconv.set_default_dtype(npconv.float64)
    try:
        assert npconv.tensor([1.5]).dtype == npconv.float64
        assert npconv.zeros(2).dtype == npconv.float64 and npconv.randn(2).dtype == npconv.float64
        assert npconv.arange(3).dtype == npconv.int64 and npconv.arange(3.0).dtype == npconv.float64
        assert (npconv.tensor([1, 2]) * 0.5).dtype == npconv.float64
    finally:
        npconv.set_default_dtype(npconv.float32)
    with pytest.raises(TypeError, match="floating point"):
        npconv.set_default_dtype(npconv.int64)


# -- dtypes, device, Size ------------------------------------------------------------------------------
def test_dtype_objects_compare_and_print_like_torch(torch):
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
        "complex64",
        "complex128",
        "half",
        "float",
        "double",
        "long",
        "int",
        "short",
        "cfloat",
    ):
        ours, theirs = getattr(npconv, name), getattr(torch, name)
        assert repr(ours) == repr(theirs) and str(ours) == str(theirs), name
        assert ours.is_floating_point == theirs.is_floating_point and ours.is_complex == theirs.is_complex
        assert ours.itemsize == theirs.itemsize and ours.is_signed == theirs.is_signed
    x = npconv.zeros(2)
    assert x.dtype == npconv.float32 and x.dtype == np.float32 and x.dtype != npconv.float64
    assert np.zeros(2, dtype=x.dtype).dtype == np.float32 and {npconv.float32: 1}[x.dtype] == 1
    assert npconv.float64.to_complex() == npconv.complex128 and npconv.cfloat.to_real() == npconv.float32
    assert str(npconv.zeros(2, dtype=npconv.float64)) == "tensor([0., 0.], dtype=torch.float64)"


def test_device_is_cpu_only():
    x = npconv.ones(2)
    assert x.device == npconv.device("cpu") and x.device == "cpu" and str(x.device) == "cpu"
    assert repr(npconv.device("cpu")) == "device(type='cpu')" and npconv.device("cuda:1").index == 1
    assert (
        x.to("cpu") is x
        and x.cpu() is x
        and x.to(npconv.device("cpu"), npconv.float64).dtype == npconv.float64
    )
    assert x.to(x.new_zeros(1, dtype=npconv.float64)).dtype == npconv.float64
    assert not npconv.cuda.is_available() and npconv.cuda.device_count() == 0
    for bad in (
        lambda: x.to("cuda"),
        lambda: x.cuda(),
        lambda: npconv.zeros(2, device="cuda"),
        lambda: x.to(npconv.device("mps")),
    ):
        with pytest.raises(ValueError, match="npconv runs on NumPy and has no"):
            bad()
    with pytest.raises(ValueError, match="device type must be one of"):
        npconv.device("gpu")


def test_size(torch):
    x = npconv.zeros(2, 3, 4)
    assert isinstance(x.size(), npconv.Size) and x.shape == (2, 3, 4) and x.size(-1) == 4
    assert repr(x.shape) == repr(torch.zeros(2, 3, 4).shape)
    assert x.shape[1:] == (3, 4) and isinstance(x.shape[1:], npconv.Size) and x.shape.numel() == 24


# -- Tensor methods ------------------------------------------------------------------------------------
def test_conversions_match_torch(torch):
    data = np.array([[1.7, -2.2], [0.0, 3.9]])
    for method in ("long", "int", "float", "double", "half", "bool", "short", "byte"):
        _close(getattr(npconv.tensor(data), method)(), getattr(torch.tensor(data), method)(), method)
    t = npconv.tensor(data)
    assert t.type() == torch.tensor(data).type() == "torch.DoubleTensor"
    assert t.type(npconv.int32).dtype == npconv.int32 and t.type("torch.FloatTensor").dtype == npconv.float32
    assert t.type_as(npconv.zeros(1, dtype=npconv.float16)).dtype == npconv.float16
    assert t.is_floating_point() and not t.long().is_floating_point()
    assert t.to(npconv.float64) is t and t.to(npconv.float64, copy=True) is not t
    x = npconv.tensor(data, requires_grad=True)
    x.float().sum().backward()
    assert x.grad.dtype == npconv.float64


def test_new_tensors_take_dtype(torch):
    for lib in (npconv, torch):
        base = lib.zeros(2, dtype=lib.float64)
        got = [
            base.new_zeros(3),
            base.new_ones((2, 2)),
            base.new_full((2,), 4),
            base.new_tensor([1, 2]),
            base.new_empty(1),
        ]
        if lib is npconv:
            ours = got
        else:
            for a, b in zip(ours, got, strict=True):
                if b.shape == (1,):
                    assert a.shape == b.shape and a.dtype == npconv.float64
                else:
                    _close(a, b)


def test_inplace_methods_match_torch(torch):
    data = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    sequences = [
        lambda L, t: t.add_(1),
        lambda L, t: t.add_(L.ones(3), alpha=2),
        lambda L, t: t.sub_(0.5),
        lambda L, t: t.mul_(L.tensor([1.0, 2.0, 3.0], dtype=L.float64)),
        lambda L, t: t.div_(4),
        lambda L, t: t.clamp_(-1, 2),
        lambda L, t: t.clamp_(min=0),
        lambda L, t: t.fill_(3.5),
        lambda L, t: t.zero_(),
        lambda L, t: t.copy_(L.tensor([9.0, 8.0, 7.0])),
        lambda L, t: t.masked_fill_(t > 0, 0.25),
        lambda L, t: t.pow_(2),
        lambda L, t: t.neg_(),
        lambda L, t: t.abs_(),
        lambda L, t: t.relu_(),
        lambda L, t: t.sigmoid_(),
        lambda L, t: t.exp_(),
        lambda L, t: t.__setitem__((0, 1), 42.0),
        lambda L, t: t.__setitem__(t < 0, 0.0),
        lambda L, t: t.__itruediv__(2),
    ]
    for i, sequence in enumerate(sequences):
        results = []
        for lib in (npconv, torch):
            t = lib.tensor(data.copy())
            version = t._version
            out = sequence(lib, t)
            assert out is None or out is t, i
            results.append(t)
            assert (t._version if lib is torch else t._version.value) > (version if lib is torch else 0), (
                f"sequence {i}: version counter not bumped"
            )
        _close(results[0], results[1], f"sequence {i}")


def test_int_tensor_inplace_with_a_float_is_refused_like_torch(torch):
    for lib in (npconv, torch):
        t = lib.tensor([1, 2])
        with pytest.raises(RuntimeError, match="can't be cast"):
            t.add_(lib.tensor([0.5, 0.5]))
        assert t.tolist() == [1, 2]


def test_random_inplace_fills():
    x = npconv.zeros(1000, dtype=npconv.float64)
    x.normal_(2.0, 0.5, generator=npconv.Generator().manual_seed(0))
    assert abs(x.mean().item() - 2.0) < 0.1 and abs(x.std().item() - 0.5) < 0.1
    x.uniform_(-1, 1)
    assert -1 <= x.min().item() and x.max().item() < 1
    w = npconv.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.normal_()
    with npconv.no_grad():
        w.normal_()
    assert w.requires_grad and w.is_leaf


def test_comparisons_and_tests_match_torch(torch):
    a = np.array([1.0, np.nan, np.inf, -2.0])
    b = np.array([1.0, 2.0, np.inf, 3.0])
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        _close(
            getattr(npconv.tensor(a), name)(npconv.tensor(b)), getattr(torch.tensor(a), name)(torch.tensor(b))
        )
    for op in (lambda x, y: x == y, lambda x, y: x != y, lambda x, y: x < 1.5, lambda x, y: x >= y):
        _close(op(npconv.tensor(a), npconv.tensor(b)), op(torch.tensor(a), torch.tensor(b)))
    for name in ("isnan", "isfinite", "isinf"):
        _close(getattr(npconv.tensor(a), name)(), getattr(torch.tensor(a), name)())
    t = npconv.tensor([[True, False], [True, True]])
    tt = torch.tensor([[True, False], [True, True]])
    _close(t.all(), tt.all())
    _close(t.any(1), tt.any(1))
    _close(t.all(dim=0), tt.all(dim=0))
    assert npconv.allclose(npconv.tensor([1.0, 2.0]), npconv.tensor([1.0, 2.0 + 1e-9]))
    assert not npconv.allclose(npconv.tensor([1.0]), npconv.tensor([1.1]))


def test_nan_handling_matches_torch(torch):
    data = np.array([[1.0, np.nan, 3.0], [2.0, 0.5, -1.0]])
    for fn in (
        lambda L, x: L.max(x),
        lambda L, x: tuple(L.max(x, 1)),
        lambda L, x: L.argmax(x, 1),
        lambda L, x: tuple(L.sort(x, 1)),
        lambda L, x: tuple(L.topk(x, 2)),
        lambda L, x: L.clamp(x, 0, 2),
        lambda L, x: tuple(L.sort(x, 1, descending=True)),
        lambda L, x: L.relu(x),
    ):
        _parity(torch, fn, [data], np.float64, "nan")


def test_hypothesis_reductions_over_dims(torch):
    @settings(max_examples=25, deadline=None)
    @given(
        shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
        keepdim=st.booleans(),
        data=st.data(),
        op=st.sampled_from(["sum", "mean", "var", "std", "norm", "amax", "logsumexp"]),
    )
    def check(shape, keepdim, data, op):
        ndim = len(shape)
        dims = data.draw(
            st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim, unique_by=lambda d: d % ndim)
        )
        x = np.random.default_rng(1).standard_normal(shape)
        if op in ("var", "std") and np.prod([shape[d] for d in dims]) < 2:
            return
        _parity(torch, lambda L, t: getattr(L, op)(t, dim=tuple(dims), keepdim=keepdim), [x], np.float64, op)

    check()


def test_autograd_namespace(torch):
    assert npconv.autograd.grad is not None and issubclass(npconv.autograd.Function, object)
    assert npconv.is_tensor(npconv.zeros(1)) and not npconv.is_tensor(np.zeros(1))


def test_bad_arguments_are_clear_errors():
    x = npconv.ones(2, 3)
    with pytest.raises(RuntimeError, match="shape '\\[4, -1\\]' is invalid for input of size 6"):
        x.view(4, -1)
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        npconv.cat([x, npconv.ones(3, 3)], 1)
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        npconv.stack([x, npconv.ones(3)])
    with pytest.raises(RuntimeError, match="k out of range"):
        x.topk(4)
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        x @ x
    with pytest.raises(RuntimeError, match="chunk expects"):
        x.chunk(0)
    with pytest.raises(RuntimeError, match="expanded size"):
        x.expand(4, 3)
    with pytest.raises(ValueError, match="clamp: at least one of 'min' or 'max'"):
        x.clamp()
    with pytest.raises(RuntimeError, match="could not infer output dtype"):
        npconv.arange(3).mean()
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is ambiguous"):
        bool(x)
