"""The compiled elementwise passes (npconv._core's relu_forward/relu_backward via kernels/pointwise.py)
on every ISA variant this CPU runs, against torch: NaN/inf/-0.0, sizes around the vector widths
and the thread split, in place, non-contiguous inputs (the NumPy passes), and the extension's guards."""

from __future__ import annotations

import numpy as np
import pytest

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
