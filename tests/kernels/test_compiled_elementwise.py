"""The compiled elementwise passes (npconv._core's relu_forward/relu_backward via kernels/pointwise.py)
on every ISA variant this CPU runs, against torch: NaN/inf/-0.0, sizes around the vector widths
and the thread split, in place, non-contiguous inputs (the NumPy passes), and the extension's guards."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import backends
from npconv.kernels import pointwise

pytestmark = pytest.mark.skipif(not backends.core.available,
                                reason=f"compiled core not in use: {backends.core.reason}")


def _specials(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    for value in (np.nan, -0.0, 0.0, np.inf, -np.inf):
        flat[rng.integers(0, flat.size, max(1, flat.size // 16))] = value
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_passes_match_torch(dtype, isa, parallel, torch):
    rng = np.random.default_rng(0)
    for shape in ((1,), (7,), (3, 17), (2, 3, 67), (4, 5, 8, 9)):
        x, g = _specials(rng, shape, dtype), _specials(rng, shape, dtype)
        xt = torch.from_numpy(x)
        y = pointwise.relu(x)
        expected = torch.relu(xt).numpy()
        np.testing.assert_array_equal(y, expected)
        # -0.0 -> 0.0 as npconv's relu op (the NumPy passes) and the fused epilogues; torch keeps -0.0
        np.testing.assert_array_equal(np.signbit(y), np.signbit(np.maximum(x, dtype(0))))
        gx = pointwise.relu_grad(g, y)
        expected_gx = torch.ops.aten.threshold_backward(torch.from_numpy(g), torch.from_numpy(y), 0).numpy()
        np.testing.assert_array_equal(gx, expected_gx)
        assert gx.dtype == y.dtype == x.dtype
        inplace = x.copy()
        assert pointwise.activate_(inplace, "relu") is inplace
        np.testing.assert_array_equal(inplace, expected)


def test_non_contiguous_and_other_dtypes_take_the_numpy_passes(parallel, torch):
    rng = np.random.default_rng(1)
    x = _specials(rng, (6, 5, 9), np.float32).transpose(2, 0, 1)
    g = _specials(rng, (9, 6, 5), np.float32)
    np.testing.assert_array_equal(pointwise.relu(x), torch.relu(torch.from_numpy(x.copy())).numpy())
    y = pointwise.relu(x)
    expected = torch.ops.aten.threshold_backward(torch.from_numpy(g), torch.from_numpy(y), 0).numpy()
    np.testing.assert_array_equal(pointwise.relu_grad(g, y), expected)
    half = x.astype(np.float16)
    np.testing.assert_array_equal(pointwise.relu(half), torch.relu(torch.from_numpy(half.copy())).numpy())


def test_extension_rejects_bad_arguments():
    core, isa = backends.core.module, backends.core.isa_index
    x, y = np.ones(10, np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="element range"):
        core.relu_forward(isa, x, y, 0, 11)
    with pytest.raises(ValueError, match="output has 9 elements, expected 10"):
        core.relu_forward(isa, x, y[:9], 0, 10)
    with pytest.raises(TypeError, match="same element type"):
        core.relu_backward(isa, x, x, y.astype(np.float64), 0, 10)
    with pytest.raises(TypeError, match="float32 or float64"):
        core.relu_forward(isa, x.astype(np.int32), y, 0, 10)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.relu_forward(isa, x, np.zeros((10, 2), np.float32)[:, 0], 0, 10)  # not C-contiguous
    assert not y.any()  # rejected calls wrote nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_matches_torch_bitwise(dtype, isa, parallel, torch):
    rng = np.random.default_rng(2)
    for shape in ((1,), (7,), (3, 17), (2, 3, 67), (4, 5, 8, 9), (2, 1031)):
        a, b = _specials(rng, shape, dtype), _specials(rng, shape, dtype)
        expected = torch.add(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        out = pointwise.add(a, b)
        if parallel == 1:  # one thread: NumPy's add is as fast, the caller runs it
            assert out is None
            continue
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))  # -0.0 + -0.0 stays -0.0
        assert out.dtype == a.dtype and out.flags.c_contiguous
        for target in ("a", "b"):  # in place, into either operand
            x, y = a.copy(), b.copy()
            dst = x if target == "a" else y
            assert pointwise.add(x, y, dst) is dst
            np.testing.assert_array_equal(dst, expected)
        twice = a.copy()
        assert pointwise.add(twice, twice, twice) is twice
        np.testing.assert_array_equal(twice, torch.add(torch.from_numpy(a), torch.from_numpy(a)).numpy())


def test_add_leaves_overlaps_mixed_operands_and_small_arrays_to_numpy(parallel):
    rng = np.random.default_rng(3)
    buffer = rng.standard_normal(1001).astype(np.float32)
    a, b = buffer[:1000], rng.standard_normal(1000).astype(np.float32)
    assert pointwise.add(a, b, buffer[1:]) is None  # out overlaps a, shifted: NumPy buffers it
    assert pointwise.add(a, b, buffer[1:].copy()[::-1]) is None  # out not C-contiguous
    assert pointwise.add(a[::2], b[::2]) is None  # strided operands
    assert pointwise.add(a, b.astype(np.float64)) is None  # mixed dtypes
    assert pointwise.add(a, b[:999]) is None  # broadcasting or mismatched shapes
    assert pointwise.add(a.astype(np.float16), b.astype(np.float16)) is None
    assert np.array_equal(buffer[:1000], a)  # nothing written


def test_add_keeps_numpys_threshold_by_default():
    small = np.ones(pointwise.PARALLEL_CORE_MIN_SIZE - 1, np.float32)
    assert pointwise.add(small, small) is None  # under the threshold: NumPy's single pass


@pytest.mark.parametrize("threads", [1, 2])
def test_tensor_add_of_large_arrays_matches_torch(threads, torch):
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    try:
        rng = np.random.default_rng(4)
        shape = (2, 8, 130, 130)  # 270400 elements: above the core's threshold
        a, b = _specials(rng, shape, np.float32), _specials(rng, shape, np.float32)
        expected = (torch.from_numpy(a) + torch.from_numpy(b)).numpy()
        x, y = npconv.tensor(a), npconv.tensor(b)
        np.testing.assert_array_equal((x + y).numpy(), expected)
        x += y
        np.testing.assert_array_equal(x.numpy(), expected)
        u = npconv.tensor(a.astype(np.float64), requires_grad=True)
        v = npconv.tensor(b.astype(np.float64), requires_grad=True)
        (u + v).sum().backward()
        np.testing.assert_array_equal(u.grad.numpy(), np.ones(shape))
        np.testing.assert_array_equal(v.grad.numpy(), np.ones(shape))
    finally:
        npconv.set_num_threads(previous)


def test_add_extension_rejects_bad_arguments():
    core, isa = backends.core.module, backends.core.isa_index
    a, b, out = np.ones(10, np.float32), np.ones(10, np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="element range"):
        core.add_arrays(isa, a, b, out, 0, 11)
    with pytest.raises(ValueError, match="other has 9 elements, expected 10"):
        core.add_arrays(isa, a, b[:9], out, 0, 10)
    with pytest.raises(TypeError, match="same element type"):
        core.add_arrays(isa, a, b.astype(np.float64), out, 0, 10)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.add_arrays(isa, a, b, np.zeros((10, 2), np.float32)[:, 0], 0, 10)
    with pytest.raises(ValueError, match="writable|read-only"):
        ro = np.zeros(10, np.float32)
        ro.flags.writeable = False
        core.add_arrays(isa, a, b, ro, 0, 10)
    assert not out.any()  # rejected calls wrote nothing
    core.add_arrays(isa, a, b, out, 2, 7)
    np.testing.assert_array_equal(out, [0, 0, 2, 2, 2, 2, 2, 0, 0, 0])  # only the range


def _silu_specials(rng: np.random.Generator, size: int, dtype: type) -> np.ndarray:
    """Normal values, the ends of float32's exp range (88.7228317 is the last argument with a finite exp)
    and NaN/inf/-0.0, scattered so that they land in vector lanes and in the last partial vector."""
    x = (rng.standard_normal(size) * 20).astype(dtype)
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 87.3, -87.3, -87.4, 88.0, -88.0,
                      88.5, -88.5, 88.7228317, -88.7228317, 88.72284, -88.72284, 104.0, -104.0, 800.0,
                      -800.0], dtype)
    x[rng.integers(0, size, edges.size)] = edges
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_and_sigmoid_match_torch(dtype, isa, parallel, torch):
    rng = np.random.default_rng(3)
    rtol = 3e-7 if dtype == np.float32 else 2e-15  # float32: Cephes' expf within 2 ulp; float64: libm
    for size in (1, 7, 16, 17, 67, 1031, 4099):
        x = _silu_specials(rng, size, dtype)
        xt = torch.from_numpy(x)
        for ours, theirs in ((pointwise.silu(x), torch.nn.functional.silu(xt).numpy()),
                             (pointwise.sigmoid(x), torch.sigmoid(xt).numpy())):
            assert ours.dtype == x.dtype and ours.shape == x.shape
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))  # -inf: -inf / inf, as torch
            np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=0)
        inplace = x.copy()
        assert pointwise.activate_(inplace, "silu") is inplace
        np.testing.assert_array_equal(inplace, pointwise.silu(x))


def test_silu_of_an_element_does_not_depend_on_its_position(isa):
    """Whole vectors and the last partial one compute the same arithmetic (the tail goes through a copy)."""
    x = np.random.default_rng(4).standard_normal(2048).astype(np.float32) * 30
    for kernel in (pointwise.silu, pointwise.sigmoid):
        whole = kernel(x)
        for n in (3, 5, 8, 15):  # each element in a short array's partial vector (libm's expf: 4% differ)
            parts = [kernel(x[i:i + n]) for i in range(0, x.size, n)]
            np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_and_sigmoid_against_a_float64_reference(dtype, isa, parallel):
    x = _silu_specials(np.random.default_rng(5), 3001, dtype)
    wide = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-wide)
        silu, sigmoid = wide / (1 + e), 1 / (1 + e)
    tol = 3e-7 if dtype == np.float32 else 2e-15
    for ours, exact in ((pointwise.silu(x), silu), (pointwise.sigmoid(x), sigmoid)):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(exact))
        finite = np.isfinite(exact)
        np.testing.assert_array_equal(ours[~finite], exact[~finite])
        # relative to the value, and to float32's smallest normal where exp(-x) overflowed float32 only
        atol = 1e-36 if dtype == np.float32 else 0
        np.testing.assert_allclose(ours[finite], exact[finite], rtol=tol, atol=atol)


def test_silu_of_non_contiguous_and_half_inputs_takes_numpy(parallel, torch):
    x = np.random.default_rng(6).standard_normal((9, 6, 5)).astype(np.float32).transpose(2, 0, 1)
    expected = torch.nn.functional.silu(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_allclose(pointwise.silu(x), expected, rtol=3e-7)
    expected = torch.sigmoid(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_allclose(pointwise.sigmoid(x), expected, rtol=3e-7)
    half = x.astype(np.float16)
    expected = torch.nn.functional.silu(torch.from_numpy(half.copy())).float().numpy()
    np.testing.assert_allclose(pointwise.silu(half).astype(np.float32), expected, rtol=2e-3)


def test_silu_extension_rejects_bad_arguments():
    core, isa = backends.core.module, backends.core.isa_index
    x, y = np.ones(10, np.float32), np.zeros(10, np.float32)
    for kernel in (core.silu_forward, core.sigmoid_forward):
        with pytest.raises(ValueError, match="element range"):
            kernel(isa, x, y, 0, 11)
        with pytest.raises(ValueError, match="output has 9 elements, expected 10"):
            kernel(isa, x, y[:9], 0, 10)
        with pytest.raises(TypeError, match="same element type"):
            kernel(isa, x, y.astype(np.float64), 0, 10)
    assert not y.any()  # rejected calls wrote nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_backward_matches_torch(dtype, isa, parallel, torch):
    rng = np.random.default_rng(7)
    tol = 1e-5 if dtype == np.float32 else 1e-13  # near the SiLU's minimum the gradient crosses zero
    for size in (1, 7, 17, 1031, 4099):
        x, g = _silu_specials(rng, size, dtype), rng.standard_normal(size).astype(dtype)
        expected = torch.ops.aten.silu_backward(torch.from_numpy(g), torch.from_numpy(x)).numpy()
        gx = pointwise.silu_grad(g, x)
        assert gx.dtype == x.dtype
        np.testing.assert_array_equal(np.isnan(gx), np.isnan(expected))  # inf * 0 as torch's formula
        np.testing.assert_allclose(gx, expected, rtol=tol, atol=tol)
        whole = np.concatenate([pointwise.silu_grad(g[i:i + 5], x[i:i + 5]) for i in range(0, size, 5)])
        np.testing.assert_array_equal(whole, gx)  # the partial vector computes as the whole ones
