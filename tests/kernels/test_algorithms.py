"""Every registered algorithm implementation x every pass it declares against the NumPy reference
(tests/reference.py), without torch: random geometries (strides, dilations, groups, asymmetric and
oversized padding, odd sizes), whole images and row tiles of one output row (tiny workspace)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from kernel_checks import draw_geometry
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import depthwise, fft, gemm, winograd

try:
    from npconv.kernels import compiled_winograd
except ImportError:  # the compiled core is not in use (NPCONV_PURE=1 or not built)
    compiled_winograd = None

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}
# the size caps that split a call into work items, set to 1 for items of one row / tile / image
CAPS = {gemm: ("WORKSPACE_BYTES", "BATCH_CHUNK_BYTES"), fft: ("WORKSPACE_BYTES",),
        depthwise: ("_TASK_BYTES", "_STACK_BYTES", "_STRIDED_BYTES"),
        winograd: ("_TARGET_TILES", "_TARGET_TILES_WORKERS")}
if compiled_winograd is not None:
    CAPS[compiled_winograd] = ("_TARGET_TILES",)
try:  # the compiled GEMM's caps: one output position (or row of the row shift) per work item
    from npconv.kernels import compiled_gemm
except ImportError:
    pass
else:
    CAPS[compiled_gemm] = ("TILE_BYTES", "MIN_BAND", "CHUNK_BYTES", "SHIFT_TILE_BYTES", "SHIFT_HALO_RATIO")


def _implementation(module_path: str) -> registry.Algorithm:
    """The registered implementation defined in ``module_path`` (skip where it is not built)."""
    name = next(n for n, path in registry.BUILTIN if path == module_path)
    for algorithm in registry.implementations(name)[name]:
        if getattr(algorithm, "module", None) is not None and algorithm.module.__name__ == module_path:
            return algorithm
    pytest.skip(f"{module_path} is not available: {registry.reasons(name)}")


IMPLEMENTATIONS = pytest.mark.parametrize("module_path", [path for _, path in registry.BUILTIN],
                                          ids=lambda p: p.rsplit(".", 1)[1])


@contextlib.contextmanager
def _tiles(on: bool):
    """With ``on``, every cap in :data:`CAPS` at 1 (the smallest work items), else the defaults."""
    with pytest.MonkeyPatch.context() as patch:
        for module, names in CAPS.items():
            for name in names if on else ():
                patch.setattr(module, name, 1)
        yield


def _draw_case(data, algorithm: registry.Algorithm):
    """``(x_shape, w_shape, geom)`` of a call the algorithm's family supports."""
    name = algorithm.name
    if name == "winograd":
        nd, kernel, stride, dilation = 2, (3, 3), (1, 1), (1, 1)
        padding = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in range(nd))
        size = tuple(data.draw(st.integers(max(1, 3 - lo - hi), 9)) for lo, hi in padding)
    else:
        nd = data.draw(st.integers(1, 2 if name == "grouped" else 3))
        kernel, stride, dilation, padding, size = draw_geometry(data, nd, 3, 2, 4)
    if name == "depthwise":
        c = data.draw(st.integers(1, 3))
        groups, o = c, c * data.draw(st.integers(1, 2))
    else:
        groups = data.draw(st.integers(2 if name == "grouped" else 1, 2))
        c, o = groups * data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2))
    geom = ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=nd)
    n = data.draw(st.integers(1, 2))
    return (n, c) + size, (o, c // groups) + kernel, geom


def _close(actual: np.ndarray, expected: np.ndarray, dtype, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}"
    tol = TOL[np.dtype(dtype)]
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


@IMPLEMENTATIONS
@pytest.mark.parametrize("tiles", [False, True], ids=["whole", "row-tiles"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_every_pass_matches_the_reference(module_path, tiles, dtype, data):
    implementation = _implementation(module_path)
    x_shape, w_shape, geom = _draw_case(data, implementation)
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal((x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:])).astype(dtype)
    assert implementation.runs("forward", x_shape, w_shape, geom, np.dtype(dtype)), (x_shape, w_shape, geom)
    y_ref, gx_ref, gw_ref = reference.conv_passes(x, w, gy, geom)
    what = f"{implementation!r} {x_shape=} {w_shape=} {geom}"
    for pass_name in implementation.passes:
        if not implementation.runs(pass_name, x_shape, w_shape, geom, np.dtype(dtype)):
            continue
        with _tiles(tiles):
            if pass_name == "forward":
                ours, ref = implementation.forward(x, w, geom), y_ref
            elif pass_name == "grad_input":
                ours, ref = implementation.grad_input(gy, w, geom, x_shape[2:]), gx_ref
            else:
                ours, ref = implementation.grad_weight(x, gy, geom), gw_ref
        _close(ours, ref, dtype, f"{pass_name} {what}")


@IMPLEMENTATIONS
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_passes_are_one_adjoint_triple(module_path, nd):
    """``<forward(x, w), gy> == <x, grad_input(gy, w)> == <w, grad_weight(x, gy)>`` in float64."""
    implementation = _implementation(module_path)
    if implementation.name == "winograd" and nd != 2:
        pytest.skip("Winograd runs 2-d 3x3 convolutions only")
    if implementation.name == "grouped" and nd == 3:
        pytest.skip("the grouped kernel runs 1-d and 2-d convolutions only")
    rng = np.random.default_rng(nd)
    kernel = (3,) * nd
    stride = (1,) * nd if implementation.name == "winograd" else (2, 1, 3)[:nd]
    groups = 2
    channels = 2 if implementation.name == "depthwise" else 4
    geom = ConvGeometry.create(kernel, stride, ((1, 2), (0, 1), (2, 0))[:nd], 1, groups, ndim=nd)
    x = rng.standard_normal((2, channels) + (7, 6, 5)[:nd])
    w = rng.standard_normal((4, channels // groups) + kernel)
    y = implementation.forward(x, w, geom)
    gy = rng.standard_normal(y.shape)
    lhs = np.vdot(y, gy)
    if "grad_input" in implementation.passes:
        assert np.isclose(lhs, np.vdot(x, implementation.grad_input(gy, w, geom, x.shape[2:])), rtol=1e-12)
    if "grad_weight" in implementation.passes:
        assert np.isclose(lhs, np.vdot(w, implementation.grad_weight(x, gy, geom)), rtol=1e-12)


def test_every_builtin_algorithm_is_covered():
    assert {name for name, _ in registry.BUILTIN} == set(registry.names()) >= {"gemm", "fft", "depthwise",
                                                                               "grouped", "winograd"}
