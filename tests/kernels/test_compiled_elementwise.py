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
