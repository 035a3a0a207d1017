"""The compiled kernels' fused SiLU epilogue (activation code 3, ``csrc/kernels.h`` ``silu_lanes``): for every
compiled algorithm with an epilogue, ``silu(conv + bias)`` computed in the kernel's stores equals the unfused
convolution followed by the silu op's pass (``pointwise.silu``) bit for bit, on every ISA variant, float32
and float64, with values across SiLU's range (exp overflow and underflow, NaN, +-inf where the algorithm is
local); and through the planner it matches torch's ``silu(conv2d(...))``."""

from __future__ import annotations

import numpy as np
import pytest

from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import plan, pointwise
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation

pytest.importorskip("npconv.kernels.compiled_gemm",
                    reason=f"compiled core not in use: {backends.core.reason}")

from npconv.kernels import (  # noqa: E402 (after the skip)
    compiled_depthwise,
    compiled_gemm,
    compiled_grouped,
    compiled_winograd,
)

SILU = Activation("silu")
# (module, x shape, w shape, kernel, stride, padding, groups, local: takes NaN / inf)
CASES = [
    (compiled_depthwise, (2, 6, 11, 19), (6, 1, 3, 3), (3, 3), 1, 1, 6, True),
    (compiled_depthwise, (2, 4, 13, 10), (8, 1, 5, 5), (5, 5), 2, 2, 4, True),
    (compiled_grouped, (2, 8, 12, 17), (12, 2, 3, 3), (3, 3), 1, 1, 4, True),
    (compiled_gemm, (2, 5, 9, 21), (7, 5, 3, 3), (3, 3), 1, 1, 1, True),
    (compiled_gemm, (2, 6, 10, 9), (9, 6, 1, 1), (1, 1), 1, 0, 1, True),
    (compiled_gemm, (2, 3, 13, 12), (8, 3, 3, 3), (3, 3), 2, 1, 1, True),
    (compiled_winograd, (2, 16, 14, 13), (20, 16, 3, 3), (3, 3), 1, 1, 1, False),
    (compiled_winograd, (2, 16, 9, 11), (24, 8, 3, 3), (3, 3), 1, 1, 2, False),
]


def _data(rng, shape, dtype, local: bool) -> np.ndarray:
    """Normal values scaled so the outputs reach SiLU's ends (x < -88.7: exp(-x) overflows in float32),
    with NaN and +-inf for a local algorithm."""
    x = (rng.standard_normal(shape) * 30).astype(dtype)
    if local:
        flat = x.reshape(-1)
        flat[rng.integers(flat.size, size=3)] = [np.nan, np.inf, -np.inf]
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_silu_is_the_silu_pass_after_the_convolution(rng, isa, dtype, case):
    module, x_shape, w_shape, kernel, stride, padding, groups, local = CASES[case]
    geom = ConvGeometry(kernel, (stride,) * 2, ((padding, padding),) * 2, (1, 1), groups)
    x = _data(rng, x_shape, dtype, local)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    plain = module.forward(x, w, geom, b)
    assert np.nanmin(plain) < -88.8 and np.nanmax(plain[np.isfinite(plain)]) > 88.8, "outputs at SiLU's ends"
    fused = module.forward(x, w, geom, epilogue=Epilogue(b, SILU))
    np.testing.assert_array_equal(fused, pointwise.silu(plain))
    if "grad_input" in module.EPILOGUE_PASSES and stride == 1:
        gy = _data(rng, plain.shape, dtype, local)
        bx = rng.standard_normal(x_shape[1]).astype(dtype)
        plain_gx = module.grad_input(gy, w, geom, x_shape[2:], bx)
        fused_gx = module.grad_input(gy, w, geom, x_shape[2:], epilogue=Epilogue(bx, SILU))
        np.testing.assert_array_equal(fused_gx, pointwise.silu(plain_gx))


def test_the_kernels_apply_silu_in_their_stores(monkeypatch, rng):
    """The fused forward applies SiLU inside the C call: the silu op's pass is not run after it."""
    calls = []
    monkeypatch.setattr(pointwise, "silu", lambda y: calls.append(y.shape) or y)
    monkeypatch.setattr(pointwise, "_activate_block", lambda *a: calls.append("block"))
    for module, x_shape, w_shape, kernel, stride, padding, groups, _ in CASES:
        geom = ConvGeometry(kernel, (stride,) * 2, ((padding, padding),) * 2, (1, 1), groups)
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        module.forward(x, w, geom, epilogue=Epilogue(None, SILU))
    assert calls == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_silu_through_the_planner_matches_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    tol = {np.float32: 2e-5, np.float64: 1e-10}[dtype]
    for algorithm, x_shape, w_shape, stride, groups in (("depthwise", (2, 8, 20, 21), (8, 1, 3, 3), 1, 8),
                                                        ("grouped", (2, 8, 12, 17), (12, 2, 3, 3), 1, 4),
                                                        ("gemm", (2, 6, 15, 16), (10, 6, 3, 3), 2, 1),
                                                        ("winograd", (2, 16, 14, 13), (20, 16, 3, 3), 1, 1)):
        x = rng.standard_normal(x_shape).astype(dtype)
        w, b = rng.standard_normal(w_shape).astype(dtype), rng.standard_normal(w_shape[0]).astype(dtype)
        geom = ConvGeometry((3, 3), (stride, stride), ((1, 1), (1, 1)), (1, 1), groups)
        with backends.conv.force(algorithm):
            got = plan.forward(x, w, geom, b, activation=SILU)
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        expected = torch.nn.functional.silu(torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=1,
                                                                       groups=groups)).numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol * scale, err_msg=algorithm)
