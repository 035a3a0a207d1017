"""The compiled Winograd F(4x4, 3x3) (npconv._core via kernels/compiled_winograd) against the NumPy
reference oracle (tests/reference.py) and torch, on every ISA variant this CPU runs.

Covers forward and grad_input in float32 (Winograd's tolerance: norm-relative 2e-6 of the float64
result on ResNet-like layers, elementwise a few 1e-6 on small ones) and float64, random geometries
(odd sizes at the 4x4 tile edges, padding 0-3 per side, groups, batch), work items of a few tiles
that split tile rows and join images, non-contiguous inputs, the fused bias and activation, one and two
worker threads, the extension's own argument guards, and the registry/planner wiring.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npconv
import reference
from kernel_checks import record_blas_threads
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import plan, winograd, workspace
from npconv.kernels.blas import gemm_routines
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation

compiled_winograd = pytest.importorskip("npconv.kernels.compiled_winograd",
                                        reason=f"compiled core not in use: {backends.core.reason}")
compiled_gemm = pytest.importorskip("npconv.kernels.compiled_gemm")

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 5e-6}


def _geom(padding, groups=1, dilation=(1, 1)) -> ConvGeometry:
    return ConvGeometry.create((3, 3), (1, 1), padding, dilation, groups, ndim=2)


def _whole(geometry: tuple[int, ...]) -> tuple[int, ...]:
    """The extension's geometry of whole arrays from ``(N, C, H, W, O, OH, OW, PH, PW, G, CAP,
    CBLOCK)``: no dilation phase (DH = DW = 1, the full planes the arrays' own, offsets 0)."""
    h, w, oh, ow = geometry[2], geometry[3], geometry[5], geometry[6]
    return tuple(geometry) + (1, 1, h, w, 0, 0, oh, ow, 0, 0)


def _max_relative(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest error over the largest magnitude (absolute below 1)."""
    return float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max()))) if ref.size else 0.0


def _check(rng, n, c, o, size, padding, groups, dtype, bias, tiles=None, contiguous=True, dilation=(1, 1)):
    """forward and grad_input (with and without bias) against the float64 reference."""
    geom = _geom(padding, groups, dilation)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = rng.standard_normal((o, c // groups, 3, 3)).astype(dtype)
    if not contiguous:  # a strided view of a bigger array with the same values
        big = np.zeros((n, c) + tuple(2 * s for s in size), dtype)
        big[:, :, ::2, ::2] = x
        x = big[:, :, ::2, ::2]
    out = geom.output_size(size)
    gy = rng.standard_normal((n, o) + out).astype(dtype)
    if not contiguous:
        gy = np.asfortranarray(gy)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    bx = rng.standard_normal(c).astype(dtype) if bias else None
    wide = (a.astype(np.float64) for a in (x, w, gy))
    y_ref, gx_ref, _ = reference.conv_passes(*wide, geom.with_padding(geom.pads(size)))
    if bias:
        y_ref = y_ref + b.reshape(-1, 1, 1)
        gx_ref = gx_ref + bx.reshape(-1, 1, 1)
    with pytest.MonkeyPatch.context() as patch:
        if tiles is not None:
            patch.setattr(compiled_winograd, "_TARGET_TILES", tiles)
        y = compiled_winograd.forward(x, w, geom, bias=b)
        gx = compiled_winograd.grad_input(gy, w, geom, size, bias=bx)
    tol = TOL[np.dtype(dtype)]
    what = f"{n=} {c=} {o=} {size=} {padding=} {groups=} {dtype=} {bias=} {tiles=} {dilation=}"
    for name, got, ref in (("forward", y, y_ref), ("grad_input", gx, gx_ref)):
        assert got.shape == ref.shape and got.dtype == dtype, (name, what)
        assert _max_relative(got, ref) <= tol, (name, what, _max_relative(got, ref))


def _draw_geometry(data, max_og: int = 4) -> tuple:
    """``(n, c, o, size, padding, groups, dilation)``: groups 1-2, 1-4 input and 1-``max_og`` output
    channels per group, padding 0-3 per side, dilations up to 3, sizes 1-19 that leave an output."""
    groups = data.draw(st.integers(1, 2), label="groups")
    c = groups * data.draw(st.integers(1, 4), label="c/g")
    o = groups * data.draw(st.integers(1, max_og), label="o/g")
    padding = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in range(2))
    dilation = data.draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2), (3, 2)]), label="dilation")
    lows = (2 * d + 1 - lo - hi for d, (lo, hi) in zip(dilation, padding, strict=True))
    size = tuple(data.draw(st.integers(max(1, low), 19)) for low in lows)
    n = data.draw(st.integers(1, 3), label="n")
    return n, c, o, size, padding, groups, dilation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_geometries_match_the_reference(isa, dtype, data):
    n, c, o, size, padding, groups, dilation = _draw_geometry(data)
    tiles = data.draw(st.sampled_from([None, 1, 2, 3, 5, 17]), label="tiles")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    bias, contiguous = data.draw(st.booleans(), label="bias"), data.draw(st.booleans(), label="contiguous")
    _check(np.random.default_rng(seed), n, c, o, size, padding, groups, dtype, bias, tiles, contiguous,
           dilation)


@pytest.mark.parametrize("dilation", [(2, 2), (3, 1)])
def test_dilation_runs_per_phase_with_the_epilogue(isa, dilation):
    """Dilated calls: each output phase an undilated call of the input phase sub-image, including
    phases whose every tap reads padding (the epilogue of zeros) and torch parity of the bias."""
    rng = np.random.default_rng(6)
    _check(rng, 2, 3, 4, (11, 10), ((2, 2), (2, 2)), 1, np.float64, bias=True, dilation=dilation)
    geom = _geom(((7, 7), (7, 0)), dilation=dilation)  # phases at the top read padding only
    x = rng.standard_normal((1, 2, 3, 9))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    y = compiled_winograd.forward(x, w, geom, epilogue=Epilogue(b, Activation("hardtanh", -0.5, 0.5)))
    ref = reference.conv_passes(x, w, np.zeros_like(y), geom.with_padding(geom.pads((3, 9))))[0]
    np.testing.assert_allclose(y, np.clip(ref + b.reshape(-1, 1, 1), -0.5, 0.5), rtol=0, atol=1e-12)


# rows wider than one 16-lane vector of tiles (75 -> 19 tiles), tile edges 1/2/3 columns past a
# multiple of 4, a 1x1 output, many channels (the float32 channel blocks of 128), two threads; runs of
# tiles across tile rows and images whose last tile per row reads real input columns past it (no
# padding on the right, or outputs a multiple of 4 wide), more tiles than one run (WG_RUN = 64); groups
# run one by one (wg_forward_groups): up to 16 channels per group by its own products (output channels
# in register blocks of 4 or 8, the last one partial), more through the matrix product (float32: over
# channel blocks of 128 within a group)
CASES = [
    (2, 40, 22, (9, 13), ((1, 1), (1, 1)), 2),
    (1, 27, 30, (6, 21), ((0, 0), (1, 1)), 3),
    (1, 264, 4, (6, 7), ((1, 1), (1, 1)), 2),
    (2, 3, 5, (9, 75), ((1, 1), (1, 1)), 1),
    (1, 2, 2, (13, 14), ((0, 0), (2, 1)), 2),
    (3, 4, 4, (3, 3), ((0, 0), (0, 0)), 4),
    (1, 130, 3, (6, 7), ((1, 1), (1, 1)), 1),
    (3, 3, 2, (10, 10), ((0, 0), (0, 0)), 1),
    (5, 2, 3, (7, 12), ((1, 0), (0, 2)), 1),
    (4, 3, 2, (14, 14), ((1, 1), (1, 1)), 1),
    (2, 2, 2, (34, 18), ((1, 1), (0, 0)), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_edge_cases(isa, parallel, dtype, case):
    n, c, o, size, padding, groups = case
    _check(np.random.default_rng(1), n, c, o, size, padding, groups, dtype, bias=True)
    _check(np.random.default_rng(2), n, c, o, size, padding, groups, dtype, bias=False, tiles=3)


def test_float32_accuracy_on_a_resnet_like_layer(isa):
    """float32 within 2e-6 norm-relative of float64 (He-initialised weights, normal input)."""
    rng = np.random.default_rng(3)
    for c in (64, 256):
        x = rng.standard_normal((2, c, 12, 12))
        w = rng.standard_normal((c, c, 3, 3)) * np.sqrt(2 / (9 * c))
        geom = _geom(((1, 1), (1, 1)))
        y64 = compiled_winograd.forward(x, w, geom)
        y32 = compiled_winograd.forward(x.astype(np.float32), w.astype(np.float32), geom)
        ref = reference.conv_passes(x, w, np.zeros_like(y64), geom)[0]
        assert np.linalg.norm(y64 - ref) <= 1e-13 * np.linalg.norm(ref)
        assert np.linalg.norm(y32 - ref) <= 2e-6 * np.linalg.norm(ref), c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_epilogue_is_fused_after_the_bias(isa, dtype):
    """ReLU and hardtanh in C, SiLU afterwards; forward and grad_input (a transposed conv's)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 10, 9)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 4, 10, 9)).astype(dtype)
    b, bx = rng.standard_normal(4).astype(dtype), rng.standard_normal(3).astype(dtype)
    geom = _geom(((1, 1), (1, 1)))
    plain = compiled_winograd.forward(x, w, geom, bias=b)
    plain_gx = compiled_winograd.grad_input(gy, w, geom, (10, 9), bias=bx)
    silu = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    for activation, expect in ((Activation("relu"), lambda v: np.maximum(v, 0)),
                               (Activation("hardtanh", 0.0, 6.0), lambda v: np.clip(v, 0, 6)),
                               (Activation("hardtanh", -0.5, 0.25), lambda v: np.clip(v, -0.5, 0.25)),
                               (Activation("silu"), silu)):
        y = compiled_winograd.forward(x, w, geom, epilogue=Epilogue(b, activation))
        gx = compiled_winograd.grad_input(gy, w, geom, (10, 9), epilogue=Epilogue(bx, activation))
        assert y.dtype == gx.dtype == dtype
        tol = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(y, expect(plain), rtol=tol, atol=tol, err_msg=activation.kind)
        np.testing.assert_allclose(gx, expect(plain_gx), rtol=tol, atol=tol, err_msg=activation.kind)


@pytest.mark.parametrize("dilation", [(1, 1), (2, 3)])
def test_calls_beyond_the_kernels_limits_run_the_numpy_winograd(dilation, monkeypatch):
    """Where the extension declines a geometry (its size limits), the NumPy Winograd computes that
    call or phase, with the bias and the fused activation."""
    def declines(geometry):
        raise ValueError("geometry: planes or scratch too large for the compiled kernel")

    monkeypatch.setattr(backends.core.module, "winograd2d_scratch", declines)
    rng = np.random.default_rng(9)
    geom = _geom(((2, 1), (3, 2)), dilation=dilation)
    x, w, b = rng.standard_normal((2, 3, 13, 11)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y = compiled_winograd.forward(x, w, geom, epilogue=Epilogue(b, Activation("hardtanh", -1.0, 2.0)))
    ref = reference.conv_passes(x, w, np.zeros_like(y), geom.with_padding(geom.pads((13, 11))))[0]
    np.testing.assert_allclose(y, np.clip(ref + b.reshape(-1, 1, 1), -1.0, 2.0), rtol=0, atol=1e-11)


def test_relu_and_hardtanh_keep_nan_as_the_ops_do(isa):
    """On values the planner never routes here (NaN), the C epilogue still follows the ops: ReLU as
    np.maximum, hardtanh as np.clip (NaN stays NaN)."""
    core = backends.core.module
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.nan
    u = np.zeros((36, 1, 1))
    geometry = _whole((1, 1, 4, 4, 1, 4, 4, 0, 0, 1, 1, 0))
    scratch = np.empty(core.winograd2d_scratch(geometry))
    for act, expect in ((1, lambda v: np.maximum(v, 0)), (2, lambda v: np.clip(v, -1, 1))):
        y = np.empty((1, 1, 4, 4))
        core.winograd2d_forward(backends.core.isa_index, gemm_routines(), x, u, np.array([-0.0]), y, scratch,
                                geometry, 0, 1, act, -1.0, 1.0)
        raw = np.empty_like(y)  # U = 0: outputs are 0 + bias, NaN where 0 * NaN reaches
        core.winograd2d_forward(backends.core.isa_index, gemm_routines(), x, u, np.array([-0.0]), raw,
                                scratch, geometry, 0, 1, 0, 0.0, 0.0)
        assert np.isnan(raw).any()
        np.testing.assert_array_equal(np.signbit(y), np.signbit(expect(raw)))
        np.testing.assert_array_equal(np.isnan(y), np.isnan(expect(raw)))


def test_matches_torch(torch, isa):
    rng = np.random.default_rng(5)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 5e-6)):
        x = rng.standard_normal((2, 6, 11, 13)).astype(dtype)
        w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
        b = rng.standard_normal(8).astype(dtype)
        geom = _geom(((2, 2), (1, 1)), groups=2)
        y = compiled_winograd.forward(x, w, geom, bias=b)
        tx = torch.from_numpy(x).requires_grad_()
        tw, tb = torch.from_numpy(w), torch.from_numpy(b)
        ty = torch.nn.functional.conv2d(tx, tw, tb, padding=(2, 1), groups=2)
        gy = rng.standard_normal(ty.shape).astype(dtype)
        ty.backward(torch.from_numpy(gy))
        gx = compiled_winograd.grad_input(gy, w, geom, x.shape[2:])
        assert _max_relative(y, ty.detach().numpy()) <= tol
        assert _max_relative(gx, tx.grad.numpy()) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_single_image_with_few_tiles_splits_its_output_channels(torch, isa, dtype, monkeypatch):
    """One ungrouped image whose tiles are too few to share (TILE_CHANNEL_RATIO) on two threads: each
    worker transforms its output channels' weights and runs every tile for them; odd channel counts,
    bias and a fused ReLU6, forward and grad_input against torch in float64. Two images, groups or
    one thread share the tiles instead."""
    parts = []
    run = compiled_winograd._jobs  # its layout's last entry: the output channel parts
    monkeypatch.setattr(compiled_winograd, "_jobs",
                        lambda *a: (a[5][3] and parts.append(a[5][3]), run(*a))[1])
    rng = np.random.default_rng(11)
    relu6 = Activation("hardtanh", 0.0, 6.0)
    previous = npconv.get_num_threads()
    try:
        for threads, n, groups, split in ((2, 1, 1, True), (2, 2, 1, False), (2, 1, 2, False),
                                          (1, 1, 1, False)):
            npconv.set_num_threads(threads)
            parts.clear()
            x = rng.standard_normal((n, 40, 9, 10)).astype(dtype)
            w = rng.standard_normal((38, 40 // groups, 3, 3)).astype(dtype)
            b, bx = rng.standard_normal(38).astype(dtype), rng.standard_normal(40).astype(dtype)
            gy = rng.standard_normal((n, 38, 9, 10)).astype(dtype)
            geom = _geom(((1, 1), (1, 1)), groups=groups)
            y = compiled_winograd.forward(x, w, geom, epilogue=Epilogue(b, relu6))
            gx = compiled_winograd.grad_input(gy, w, geom, (9, 10), bias=bx)
            assert parts == ([[(0, 19), (19, 38)], [(0, 20), (20, 40)]] if split else [])
            tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
            tw = torch.from_numpy(w.astype(np.float64))
            ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b.astype(np.float64)), padding=1,
                                            groups=groups)
            ty.backward(torch.from_numpy(gy.astype(np.float64)))
            expected_gx = tx.grad.numpy() + bx.astype(np.float64).reshape(-1, 1, 1)
            tol, raw = TOL[np.dtype(dtype)], ty.detach().numpy()
            assert y.dtype == gx.dtype == dtype
            error = np.abs(y - np.clip(raw, 0, 6)).max() / np.abs(raw).max()  # of the unclipped scale
            assert error <= tol, (threads, n, groups, error)
            assert _max_relative(gx, expected_gx) <= tol, (threads, n, groups)
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [2, 3])
def test_channel_parts_share_one_input_transform(isa, dtype, threads, monkeypatch):
    """A call of one image whose output channels the workers split, its tiles one work item: each
    worker transforms a share of the input channels into worker 0's V (stage 1), then every worker
    runs its channels' products from it (stage 2) - bit for bit the call where each transforms every
    channel; odd channel counts, bias and ReLU; run directly and bound (scratch full of NaN)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 41, 11, 9)).astype(dtype)
    o = 16 * threads + 3  # CHANNEL_PART_MIN channels per worker and an odd split
    w = rng.standard_normal((o, 41, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    geom = _geom(((1, 1), (1, 1)))
    epilogue = Epilogue(b, Activation("relu"))
    runs = []
    jobs = compiled_winograd._jobs

    def counted(*args):
        made = jobs(*args)
        runs.append(len(made))
        return made

    monkeypatch.setattr(compiled_winograd, "_jobs", counted)
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(threads)
        results = {}
        for shared in (False, True):
            monkeypatch.setattr(compiled_winograd, "SHARED_INPUT_TRANSFORM", shared)
            y = compiled_winograd.forward(x, w, geom, epilogue=epilogue)
            prepared = compiled_winograd.prepare_forward(x.shape, x.dtype, w, geom, epilogue=epilogue)
            bound = np.full_like(y, np.nan)
            buffers: dict = {}  # a scratch source gives one buffer per name, as the programs' does

            def source(name, size, dt, buffers=buffers):
                return buffers.setdefault(name, np.full(size, np.nan, dt))

            prepared.bind(x, bound, source)()
            results[shared] = (y, bound)
        assert runs == [1, 1, 2, 2]  # the staged calls: two runs, a barrier between
        for y in results[True]:
            np.testing.assert_array_equal(y, results[False][0])
        expected = np.maximum(reference.conv(x.astype(np.float64), w.astype(np.float64), padding=1)
                              + b.astype(np.float64).reshape(-1, 1, 1), 0)
        assert _max_relative(results[True][0], expected) <= TOL[np.dtype(dtype)]
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_calls_on_npconvs_gemm_leave_the_blas_threads_alone(threads, monkeypatch):
    """Winograd's products in float32 on the vector builds run on npconv's gemm: its forward (tile
    items, and one image's channel parts with the shared input transform), a bound forward and its
    grad_weight set no BLAS thread count (a threadpoolctl round trip each way per run: 1.4% of ResNet-18
    at batch 1); float64 (SciPy's BLAS) still holds the BLAS to one thread per worker, and so does
    float32 with npconv's gemm switched off. The values do not depend on it."""
    from npconv.kernels import blas

    entered = record_blas_threads(monkeypatch)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    rng = np.random.default_rng(9)
    geom = _geom(((1, 1), (1, 1)))
    try:
        def run(dtype, x_shape):
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal((40, x_shape[1], 3, 3)).astype(dtype)
            entered.clear()
            y = compiled_winograd.forward(x, w, geom)
            gw = compiled_winograd.grad_weight(x, y, geom)
            prepared = compiled_winograd.prepare_forward(x.shape, x.dtype, w, geom)
            yb = np.empty_like(y)
            prepared.bind(x, yb, lambda name, n, d: np.empty(n, d))()
            np.testing.assert_array_equal(yb, y)
            assert y.dtype == gw.dtype == dtype
            return list(entered)

        for x_shape in [(3, 16, 12, 10), (1, 40, 9, 10)]:  # tile items; one image of few tiles
            assert run(np.float64, x_shape) and set(run(np.float64, x_shape)) == {1}
            for isa in {"avx2", "avx512"} & set(backends.core.isas):
                monkeypatch.setattr(backends.core, "isa", isa)
                assert run(np.float32, x_shape) == []
                monkeypatch.setattr(blas, "OWN_GEMM", False)
                assert run(np.float32, x_shape) and set(run(np.float32, x_shape)) == {1}
                monkeypatch.setattr(blas, "OWN_GEMM", True)
    finally:
        npconv.set_num_threads(previous)


def test_the_extension_checks_the_stages_arguments():
    """stage 1 / 2 need a scratch of the geometry, at most CAP tiles and, for stage 1, channels in
    range; a rejected call writes nothing."""
    n, c, h, w, o = 1, 3, 5, 6, 2
    geometry = _whole((n, c, h, w, o, 5, 6, 1, 1, 1, 4, 0))
    size = backends.core.module.winograd2d_scratch(geometry)
    f = np.float64
    args = (backends.core.isa_index, gemm_routines(), np.ones((n, c, h, w), f), np.ones((36, o, c), f), None,
            np.zeros((n, o, 5, 6), f), np.empty(size, f), geometry, 0, 4, 0, 0.0, 0.0)
    shared = np.zeros(size, f)
    core = backends.core.module
    core.winograd2d_forward(*args)
    whole = args[5].copy()
    args[5][...] = np.nan
    for c0, c1 in ((0, 1), (1, c)):  # stage 1 in two shares, then stage 2
        core.winograd2d_forward(*args, 1, shared, c0, c1)
    assert np.isnan(args[5]).all()
    core.winograd2d_forward(*args, 2, shared, 0, 0)
    np.testing.assert_array_equal(args[5], whole)
    y = args[5]
    y[...] = 7.0
    bad = [(ValueError, (3, shared, 0, c)), (ValueError, (-1, shared, 0, c)), (ValueError, (1, None, 0, c)),
           (ValueError, (1, shared, 0, c + 1)), (ValueError, (1, shared, 2, 1)),
           (ValueError, (1, shared, -1, 1)),
           (ValueError, (2, np.zeros(10, f), 0, 0)), (TypeError, (2, np.zeros(size, np.float32), 0, 0)),
           (TypeError, (2, "v", 0, 0))]
    for error, stage in bad:
        with pytest.raises(error):
            core.winograd2d_forward(*args, *stage)
        assert (y == 7.0).all(), stage
    capped = _whole((n, c, h, w, o, 5, 6, 1, 1, 1, 2, 0))  # 2 tiles per call: a stage takes at most 2
    with pytest.raises(ValueError):
        core.winograd2d_forward(*args[:6], np.empty(core.winograd2d_scratch(capped), f), capped, 0, 4, 0, 0.0,
                                0.0, 1, np.zeros(core.winograd2d_scratch(capped), f), 0, c)


def _call(args, **change):
    names = ("isa", "routines", "x", "u", "bias", "y", "scratch", "geometry", "start", "stop", "act", "lo",
             "hi")
    values = dict(zip(names, args, strict=True))
    values.update(change)
    backends.core.module.winograd2d_forward(*(values[k] for k in names))


def test_the_extension_checks_its_arguments():
    core = backends.core.module
    n, c, h, w, o = 1, 2, 5, 6, 3
    geometry = _whole((n, c, h, w, o, 5, 6, 1, 1, 1, 4, 0))
    size = core.winograd2d_scratch(geometry)
    f = np.float64
    args = (backends.core.isa_index, gemm_routines(), np.ones((n, c, h, w), f), np.ones((36, o, c), f), None,
            np.zeros((n, o, 5, 6), f), np.empty(size, f), geometry, 0, 4, 0, 0.0, 0.0)
    _call(args)
    y = args[5]
    before = 7.0
    y[...] = before
    bad = [
        (ValueError, dict(x=np.ones((n, c, h, w + 1), f))),
        (ValueError, dict(u=np.ones((36, o, c + 1), f))),
        (ValueError, dict(y=np.zeros((n, o, 5, 5), f))),
        (ValueError, dict(scratch=np.empty(size - 1, f))),
        (ValueError, dict(bias=np.ones(o + 1, f))),
        (TypeError, dict(x=np.ones((n, c, h, w), np.float32))),
        (TypeError, dict(x=np.ones((n, c, h, w), np.int64))),
        (ValueError, dict(start=-1)),
        (ValueError, dict(stop=5)),  # 2 x 2 tiles in all
        (ValueError, dict(start=3, stop=2)),
        (ValueError, dict(act=4)),
        (ValueError, dict(act=-1)),
        (ValueError, dict(act=2, lo=1.0, hi=0.0)),
        (ValueError, dict(act=2, lo=float("nan"), hi=0.0)),
        (ValueError, dict(isa=17)),
        (TypeError, dict(routines=(1, 2))),
        (ValueError, dict(geometry=_whole((n, c, h, w, o, 5, 6, 1, 1, 2, 4, 0)))),  # groups divide neither
        (ValueError, dict(geometry=_whole((n, c, h, w, o, 5, 6, -1, 1, 1, 4, 0)))),
        (ValueError, dict(geometry=_whole((n, c, h, w, o, 0, 6, 1, 1, 1, 4, 0)))),
        (ValueError, dict(geometry=_whole((1 << 24, 1 << 24, 1 << 14, 1 << 14, 1, 1, 1, 0, 0, 1, 4, 0)))),
        (TypeError, dict(geometry=(n, c, h, w))),
        (TypeError, dict(geometry=(n, c, h, w, o, 5, 6, 1, 1, 1, 4, 0))),
        # a dilation phase must lie inside the full planes: its last row, column, output row or column
        (ValueError, dict(geometry=geometry[:12] + (2, 1, h, w, 0, 0, 5, 6, 0, 0))),
        (ValueError, dict(geometry=geometry[:12] + (1, 1, h, w, 0, 1, 5, 6, 0, 0))),
        (ValueError, dict(geometry=geometry[:12] + (1, 1, h, w, 0, 0, 5, 6, 1, 0))),
        (ValueError, dict(geometry=geometry[:12] + (1, 2, h, w, 0, 0, 5, 6, 0, 0))),
        (ValueError, dict(geometry=geometry[:12] + (0, 1, h, w, 0, 0, 5, 6, 0, 0))),
    ]
    for error, change in bad:
        with pytest.raises(error):
            _call(args, **change)
        assert (y == before).all(), change
    with pytest.raises(ValueError):
        core.winograd2d_scratch(_whole((n, c, h, w, o, 5, 6, 1, 1, 1, 0, 0)))
    # a residual: y = act(conv + residual); laid out as y, of its type, with an undilated y of whole rows
    residual = np.arange(n * o * 30, dtype=f).reshape(n, o, 5, 6) - 40.0
    _call(args)
    expected = np.maximum(y + residual, 0)
    core.winograd2d_forward(*args[:10], 1, 0.0, 0.0, 0, None, 0, 0, residual)
    np.testing.assert_array_equal(y, expected)
    dilated = geometry[:12] + (2, 2, 2 * h, 2 * w, 0, 0, 10, 12, 0, 0)  # a valid phase of 2x larger arrays
    cropped = geometry[:12] + (1, 1, h, w, 0, 0, 5, 7, 0, 0)  # y's rows 7 wide, 6 of them computed
    y[...] = before
    for error, arrays, match in [
            (ValueError, dict(residual=np.zeros((n, o, 5, 5), f)), "residual"),
            (TypeError, dict(residual=residual.astype(np.float32)), "element type"),
            (ValueError, dict(geometry=dilated, x=np.ones((n, c, 2 * h, 2 * w), f),
                              y=np.zeros((n, o, 10, 12), f), residual=np.zeros((n, o, 10, 12), f)),
             "undilated"),
            (ValueError, dict(geometry=cropped, y=np.zeros((n, o, 5, 7), f),
                              residual=np.zeros((n, o, 5, 7), f)), "whole")]:
        values = dict(zip(("x", "y", "geometry", "residual"), (args[2], y, geometry, residual), strict=True))
        values.update(arrays)
        scratch = np.empty(core.winograd2d_scratch(values["geometry"]), f)
        with pytest.raises(error, match=match):
            core.winograd2d_forward(args[0], args[1], values["x"], args[3], None, values["y"], scratch,
                                    values["geometry"], 0, 4, 1, 0.0, 0.0, 0, None, 0, 0, values["residual"])
        assert (y == before).all(), match
    isa = backends.core.isa_index
    u = np.full((36, 4), 7.0)
    w4 = np.ones((4, 3, 3))
    seen = np.full((4, 3, 3), 5.0)
    calls = ((ValueError, (w4, u, 0, 5)), (ValueError, (w4, u, 2, 1)), (ValueError, (w4, u, -1, 2)),
             (ValueError, (np.ones((5, 3, 3)), u, 0, 4)), (TypeError, (w4.astype(np.float32), u, 0, 4)),
             (ValueError, (w4, u, 0, 4, np.ones((5, 3, 3)))),
             (TypeError, (w4, u, 0, 4, seen.astype(np.float32))),
             (ValueError, (w4, u, 0, 4, np.ones((4, 3, 3))[:, ::2])), (TypeError, (w4, u, 0, 4, "seen")))
    for error, call in calls:
        with pytest.raises(error):
            core.winograd2d_weight(isa, *call)
        assert (u == 7.0).all() and (seen == 5.0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_weight_transform_skips_a_range_equal_to_what_it_last_saw(rng, isa, dtype):
    """winograd2d_weight(..., seen): a range whose bytes equal seen's is left alone (U untouched), any other
    is transformed, as without seen, and copied into seen; NaN compares by its bytes."""
    core, index = backends.core.module, backends.core.isas.index(isa)
    w = rng.standard_normal((40, 3, 3)).astype(dtype)
    plain = np.empty((36, 40), dtype)
    core.winograd2d_weight(index, w, plain, 0, 40)
    seen, u = w.copy(), np.full((36, 40), 7.0, dtype)
    core.winograd2d_weight(index, w, u, 0, 40, seen)
    assert (u == 7.0).all()  # w equals seen: nothing transformed
    w[3, 1, 2] = np.nan  # range [0, 20) changed, [20, 40) not
    core.winograd2d_weight(index, w, u, 0, 20, seen)
    core.winograd2d_weight(index, w, u, 20, 40, seen)
    expected = np.empty_like(plain)
    core.winograd2d_weight(index, w, expected, 0, 40)
    np.testing.assert_array_equal(u[:, :20], expected[:, :20])
    assert (u[:, 20:] == 7.0).all()
    np.testing.assert_array_equal(seen, w)  # NaN in the same place, the same bytes
    u[...] = 7.0
    core.winograd2d_weight(index, w, u, 0, 40, seen)
    assert (u == 7.0).all()


def _grad_weight_reference(x, gy, geom):
    """gw in float64 by the NumPy reference (tests/reference.py)."""
    wide = np.zeros((gy.shape[1], x.shape[1] // geom.groups, 3, 3))
    size = tuple(x.shape[2:])
    return reference.conv_passes(x.astype(np.float64), wide, gy.astype(np.float64),
                                 geom.with_padding(geom.pads(size)))[2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_grad_weight_random_geometries_match_the_reference(isa, parallel, dtype, data):
    """grad_weight (the forward's adjoint in U): odd sizes at the tile edges, padding 0-3 per side,
    dilation (one call per output phase, phases reading only padding skipped), groups, work items of
    a few tiles (several items per worker: their float64 sums), the workers splitting tiles or output
    channels, the last step (G^T M G) on one thread or split by channel pairs."""
    n, c, o, size, padding, groups, dilation = _draw_geometry(data, max_og=20)
    tiles = data.draw(st.sampled_from([None, 1, 2, 5, 17]), label="tiles")
    split = data.draw(st.sampled_from([0.0, 1e9]), label="channel split")
    finish = data.draw(st.sampled_from([1, 10**9]), label="pairs for a split finish")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    geom = _geom(padding, groups, dilation)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    gy = rng.standard_normal((n, o) + geom.output_size(size)).astype(dtype)
    with pytest.MonkeyPatch.context() as patch:
        if tiles is not None:
            patch.setattr(compiled_winograd, "_TARGET_TILES", tiles)
        patch.setattr(compiled_winograd, "GW_CHANNEL_SPLIT", split)
        patch.setattr(compiled_winograd, "GW_FINISH_PAIRS", finish)
        gw = compiled_winograd.grad_weight(x, gy, geom)
        again = compiled_winograd.grad_weight(x, gy, geom)
    ref = _grad_weight_reference(x, gy, geom)
    assert gw.shape == ref.shape and gw.dtype == dtype
    what = (n, c, o, size, padding, dilation, groups, tiles)
    assert _max_relative(gw, ref) <= TOL[np.dtype(dtype)] * 4, what
    np.testing.assert_array_equal(gw, again)  # a fixed assignment of items: the same sums each run


def test_grad_weight_float32_accuracy_on_resnet_like_layers(isa):
    """float32 within 2e-6 norm-relative of float64 (each item's products summed in float32, the items
    in float64): 1.1-1.5e-6 on these layers."""
    rng = np.random.default_rng(5)
    for n, c, size in ((8, 64, 56), (8, 256, 14)):
        x = rng.standard_normal((n, c, size, size)).astype(np.float32)
        gy = rng.standard_normal((n, c, size, size)).astype(np.float32)
        geom = _geom(1)
        ref = _grad_weight_reference(x, gy, geom)
        gw = compiled_winograd.grad_weight(x, gy, geom)
        assert np.linalg.norm(gw - ref) / np.linalg.norm(ref) < 2e-6


def test_grad_weight_beyond_its_scratch_share_runs_the_direct_products(monkeypatch):
    """Accumulators (36 x O x C/G float64 per worker or per call) beyond half of the scratch budget,
    or geometries beyond the kernel's limits: the NumPy GEMM's grad_weight, bit for bit."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 9, 9))
    gy = rng.standard_normal((2, 24, 9, 9))
    geom = _geom(1)
    fitting = compiled_winograd.grad_weight(x, gy, geom)
    monkeypatch.setattr(workspace, "SCRATCH_BYTES", 36 * 24 * 16 * 8)
    direct = compiled_winograd.grad_weight(x, gy, geom)
    np.testing.assert_array_equal(direct, compiled_gemm.gemm.grad_weight(x, gy, geom))
    np.testing.assert_allclose(direct, fitting, rtol=1e-12, atol=1e-12)


def test_grad_weight_through_the_planner_keeps_locality(isa):
    """Non-finite data or a spread beyond the limit: the planner's check reroutes grad_weight to the
    local rule's algorithm (the result equals the forced GEMM's); finite data: Winograd's result."""
    rng = np.random.default_rng(8)
    geom = _geom(1)
    x = rng.standard_normal((8, 16, 12, 12)).astype(np.float32)
    gy = rng.standard_normal((8, 16, 12, 12)).astype(np.float32)
    with backends.conv.force({"grad_weight": "winograd"}):
        planned = plan.grad_weight(x, gy, geom)
    np.testing.assert_array_equal(planned, compiled_winograd.grad_weight(x, gy, geom))
    for target, value in (("x", np.nan), ("gy", np.inf), ("gy", 1e30)):
        xc, gyc = x.copy(), gy.copy()
        (xc if target == "x" else gyc)[1, 3, 5, 6] = value
        with np.errstate(all="ignore"):
            with backends.conv.force({"grad_weight": "winograd"}):
                ours = plan.grad_weight(xc, gyc, geom)
            with backends.conv.force({"grad_weight": "gemm"}):
                local = plan.grad_weight(xc, gyc, geom)
        np.testing.assert_array_equal(ours, local)


def test_the_grad_weight_extension_checks_its_arguments():
    core = backends.core.module
    n, c, h, w, o = 1, 2, 5, 6, 3
    geometry = _whole((n, c, h, w, o, 5, 6, 1, 1, 1, 4, 0))
    size = core.winograd2d_grad_weight_scratch(geometry)
    f = np.float64
    args = dict(isa=backends.core.isa_index, routines=gemm_routines(), x=np.ones((n, c, h, w), f),
                gy=np.ones((n, o, 5, 6), f), acc=np.zeros((36, o, c)), scratch=np.empty(size, f),
                geometry=geometry, start=0, stop=4, o0=0, o1=o, first=True)

    def call(**change):
        values = dict(args, **change)
        core.winograd2d_grad_weight(*values.values())

    call()
    assert np.abs(args["acc"]).sum() > 0
    before = args["acc"].copy()
    bad = [
        (ValueError, dict(x=np.ones((n, c, h, w + 1), f))),
        (ValueError, dict(gy=np.ones((n, o, 5, 5), f))),
        (ValueError, dict(acc=np.zeros((36, o, c + 1)))),
        (TypeError, dict(acc=np.zeros((36, o, c), np.float32))),
        (ValueError, dict(scratch=np.empty(size - 1, f))),
        (TypeError, dict(gy=np.ones((n, o, 5, 6), np.float32))),
        (ValueError, dict(start=-1)),
        (ValueError, dict(stop=5)),
        (ValueError, dict(o0=2, o1=2)),
        (ValueError, dict(o1=o + 1)),
        (ValueError, dict(geometry=geometry[:12] + (2, 1, h, w, 0, 0, 5, 6, 0, 0))),
        (ValueError, dict(isa=17)),
    ]
    for error, change in bad:
        with pytest.raises(error):
            call(**change)
        np.testing.assert_array_equal(args["acc"], before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_grad_weight_finish_is_g_transposed_m_g(isa, dtype):
    """grad_weight's last step alone: gw[p] = G^T M_p G with M the accumulators' sum (added in order, in
    float64), against NumPy's float64 product with transform_matrices' G, for 1-3 accumulators in
    float64 or the dtype, pair counts around the kernel's blocks and ranges that start and stop inside
    them (nothing else written)."""
    core, index = backends.core.module, backends.core.isa_index  # the variant the fixture set
    g = np.asarray(winograd.transform_matrices(4)[1], dtype=np.float64)
    rng = np.random.default_rng(11)
    for pairs, acc_dtype in itertools.product((1, 5, 63, 64, 65, 200), (np.float64, dtype)):
        for count in (1, 2, 3):
            acc = rng.standard_normal((count, 36, pairs)) * rng.choice([1e-3, 1.0, 1e5], (count, 1, pairs))
            acc = acc.astype(acc_dtype)  # the float64 sums, or a single call's products in the dtype
            m = acc[0].astype(np.float64)
            for part in acc[1:]:
                m += part
            ref = np.einsum("ai,abp,bj->pij", g, m.reshape(6, 6, pairs), g)
            for start, stop in ((0, pairs), (pairs // 3, pairs), (1, max(1, pairs - 1)), (pairs, pairs)):
                gw = np.full((pairs, 3, 3), 7.0, dtype)
                core.winograd2d_grad_weight_finish(index, acc, gw, count, start, stop)
                assert (gw[:start] == 7).all() and (gw[stop:] == 7).all(), (pairs, count, start, stop)
                scale = np.abs(ref[start:stop]).max(axis=(1, 2), keepdims=True) if stop > start else 1.0
                tol = 1e-14 if dtype == np.float64 else 1e-7
                error = np.abs(gw[start:stop] - ref[start:stop])
                assert (error <= tol * scale).all(), (pairs, count, start, stop)
    acc, gw = np.zeros((2, 36, 4)), np.zeros((4, 3, 3), dtype)
    bad = [(ValueError, (acc, gw, 3, 0, 4)), (ValueError, (acc, gw, 0, 0, 4)),
           (ValueError, (acc, gw, 1, 2, 5)), (ValueError, (acc, np.zeros((4, 8), dtype), 1, 0, 4)),
           (TypeError, (acc.astype(np.float32), gw.astype(np.float64), 1, 0, 4)),
           (TypeError, (acc, gw.astype(int), 1, 0, 4))]
    for error, args in bad:
        with pytest.raises(error):
            core.winograd2d_grad_weight_finish(index, *args)
        assert not gw.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_single_calls_products_in_the_dtype_are_its_float64_sums(isa, dtype, monkeypatch):
    """first = 2 writes a call's products into an accumulator of the dtype: exactly the values first = 1
    stores in float64 (the finish reads the same doubles); grad_weight takes it where every worker runs
    one call, float64 accumulators where some worker runs several."""
    core, isa_index, routines = backends.core.module, backends.core.isa_index, gemm_routines()
    n, c, h, w, o = 2, 5, 9, 7, 6
    geometry = _whole((n, c, h, w, o, 9, 7, 1, 1, 1, 8, 0))
    size = core.winograd2d_grad_weight_scratch(geometry)
    rng = np.random.default_rng(4)
    x, gy = rng.standard_normal((n, c, h, w)).astype(dtype), rng.standard_normal((n, o, 9, 7)).astype(dtype)
    wide, own = np.full((36, o, c), np.nan), np.full((36, o, c), np.nan, dtype)

    def call(acc, first):
        scratch = np.empty(size, dtype)
        core.winograd2d_grad_weight(isa_index, routines, x, gy, acc, scratch, geometry, 0, 6, 0, o, first)

    call(wide, 1)
    call(own, 2)
    np.testing.assert_array_equal(own.astype(np.float64), wide)
    other = wide.astype(np.float32) if dtype == np.float64 else wide
    with pytest.raises(TypeError, match="element type"):
        call(other, 2)
    with pytest.raises(ValueError, match="first"):
        call(wide, 3)
    geom = _geom(1)
    x, gy = (rng.standard_normal((2, 64, 14, 14)).astype(dtype) for _ in range(2))
    kinds = []
    real = workspace.buffer
    monkeypatch.setattr(workspace, "buffer", lambda name, shape, kind: (
        kinds.append(np.dtype(kind)) if name == "compiled-wg-gw" else None, real(name, shape, kind))[1])
    single = compiled_winograd.grad_weight(x, gy, geom)  # 32 tiles: one call per worker
    monkeypatch.setattr(compiled_winograd, "_TARGET_TILES", 5)  # several calls per worker: float64
    several = compiled_winograd.grad_weight(x, gy, geom)
    assert kinds == [np.dtype(dtype), np.dtype(np.float64)]
    assert _max_relative(several, single) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [2, 3])
def test_grad_weight_channel_parts_share_one_input_transform(isa, dtype, threads, monkeypatch):
    """Workers splitting one item's output channels transform a share of the input channels each into
    one V (two stages): bit for bit every worker transforming all of them, also with fewer input
    channels than workers; and the two stages run where (only where) that split has one item."""
    rng = np.random.default_rng(8)
    calls = []
    prepare = backends.core.module.winograd2d_grad_weight_job
    monkeypatch.setattr(backends.core.module, "winograd2d_grad_weight_job",
                        lambda *a: (calls.append(a[12] if len(a) > 12 else 0), prepare(*a))[1], raising=False)
    real = workspace.buffer

    def poisoned(name, shape, kind):  # scratch full of NaN each call: stage 2 reads only what stage 1 wrote
        if name.startswith("compiled-wg-") and name != "compiled-wg-gw":
            return np.full(shape, np.nan, kind)
        return real(name, shape, kind)

    monkeypatch.setattr(workspace, "buffer", poisoned)
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(threads)
        for n, c, o, size, dilation in ((1, 24, 48, (9, 10), (1, 1)), (2, 2, 128, (7, 7), (1, 1)),
                                        (1, 8, 48, (11, 9), (2, 1))):
            geom = _geom(1, 1, dilation)
            x = rng.standard_normal((n, c) + size).astype(dtype)
            gy = rng.standard_normal((n, o) + geom.output_size(size)).astype(dtype)
            results = {}
            for shared in (True, False):
                monkeypatch.setattr(compiled_winograd, "SHARED_INPUT_TRANSFORM", shared)
                calls.clear()
                results[shared] = compiled_winograd.grad_weight(x, gy, geom)
                stages = sorted(set(calls))
                assert stages == ([1, 2] if shared and dilation == (1, 1) else [0]), (n, c, o, shared, stages)
            np.testing.assert_array_equal(results[True], results[False])
            ref = _grad_weight_reference(x, gy, geom)
            assert _max_relative(results[True], ref) <= TOL[np.dtype(dtype)] * 4
    finally:
        npconv.set_num_threads(previous)


def test_the_registry_prefers_it_and_npconv_pure_keeps_the_numpy_one(monkeypatch):
    assert registry.available()["winograd"].compiled
    assert [a.compiled for a in registry.implementations("winograd")["winograd"]] == [True, False]
    monkeypatch.setenv("NPCONV_PURE", "1")
    assert registry.available()["winograd"].module is winograd


def test_recommended_rule_and_the_planner():
    geom = _geom(((1, 1), (1, 1)))
    f32 = np.dtype(np.float32)
    previous = npconv.get_num_threads()
    try:
        for threads in (1, 2):
            npconv.set_num_threads(threads)
            assert compiled_winograd.recommended("forward", (8, 64, 56, 56), (64, 64, 3, 3), geom, f32)
            assert plan.choose("grad_input", (8, 64, 56, 56), (64, 64, 3, 3), geom, f32) == "winograd"
    finally:
        npconv.set_num_threads(previous)
    assert not compiled_winograd.recommended("forward", (8, 8, 56, 56), (8, 8, 3, 3), geom, f32)
    assert not compiled_winograd.recommended("forward", (8, 64, 4, 4), (64, 64, 3, 3), geom, f32)
    assert not compiled_winograd.recommended("forward", (1, 512, 7, 7), (512, 512, 3, 3), geom, f32)
    assert compiled_winograd.recommended("forward", (16, 256, 14, 14), (256, 256, 3, 3), geom, f32)
    assert not compiled_winograd.recommended("forward", (16, 256, 14, 14), (256, 256, 3, 3), geom,
                                             np.dtype(np.float64))
    # workers sharing the tiles: each worker's tiles must reach a quarter of the channels (U is read
    # whole) or MIN_TILES (16); images of 7x7 are 4 tiles: 8 images 32 (16 per worker), 6 images 24;
    # 4 images of 14x14 64 tiles; one thread reads U once for every tile
    for threads, batch, size, chosen in ((1, 8, 7, True), (2, 8, 7, True), (1, 6, 7, True), (2, 6, 7, False),
                                         (2, 4, 14, True)):
        npconv.set_num_threads(threads)
        try:
            for channels in (256, 512):
                assert compiled_winograd.recommended("forward", (batch, channels, size, size),
                                                     (channels, channels, 3, 3), geom, f32) is chosen
        finally:
            npconv.set_num_threads(previous)
    # 16 tiles are enough (a 14x14 image; a 12x12 one's 9 are not), on one thread and for one image's
    # output channels split across two workers; tiles shared by two workers (two images) must reach a
    # quarter of the channels per worker (TILE_CHANNEL_RATIO) or 16
    for threads, batch, size, channels, chosen in ((1, 1, 28, 128, True), (1, 1, 14, 256, True),
                                                   (1, 8, 7, 512, True), (1, 1, 20, 128, True),
                                                   (1, 1, 12, 256, False), (1, 1, 7, 512, False),
                                                   (2, 1, 28, 512, True), (2, 1, 14, 256, True),
                                                   (2, 1, 14, 128, True), (2, 1, 12, 256, False),
                                                   (2, 1, 7, 512, False), (2, 8, 7, 512, True),
                                                   (2, 6, 7, 512, False), (2, 2, 12, 128, False),
                                                   (2, 2, 20, 128, True), (2, 2, 28, 128, True)):
        npconv.set_num_threads(threads)
        try:
            shape = (batch, channels, size, size)
            assert compiled_winograd.recommended("forward", shape, (channels, channels, 3, 3), geom,
                                                 f32) is chosen
            chosen_name = plan.choose("forward", shape, (channels, channels, 3, 3), geom, f32)
            assert (chosen_name == "winograd") is chosen
        finally:
            npconv.set_num_threads(previous)
    with pytest.MonkeyPatch.context() as patch:  # channels for the vectors of tiles (lanes)
        patch.setattr(compiled_winograd, "MIN_MACS", {})
        npconv.set_num_threads(8)
        try:
            for isa, wide in (("avx512", False), ("avx2", True)):
                patch.setattr(npconv.backends.core, "isa", isa)
                # 64 tiles on 8 workers: runs of 8 tiles fill 8 of 16 lanes (all 8 on AVX2)
                assert compiled_winograd.recommended("forward", (4, 32, 16, 16), (32, 32, 3, 3), geom,
                                                     f32) == wide
                # runs cross tile rows: 14x14's rows of 4 tiles still fill the lanes
                assert compiled_winograd.recommended("forward", (32, 128, 14, 14), (128, 128, 3, 3), geom,
                                                     f32)
            # MIN_TILES alone (no lanes rule): images of 2x2 tiles, 16 per call are enough, 12 are not
            patch.setattr(compiled_winograd, "MIN_CHANNEL_LANES", 0)
            npconv.set_num_threads(2)
            for batch, chosen in ((4, True), (3, False)):
                assert compiled_winograd.recommended("forward", (batch, 16, 8, 8), (16, 16, 3, 3), geom,
                                                     f32) is chosen
        finally:
            npconv.set_num_threads(previous)
    # grad_weight: enough tiles for its 36 x O x C/G products per item, accumulators within the scratch
    assert compiled_winograd.recommended("grad_weight", (8, 64, 56, 56), (64, 64, 3, 3), geom, f32)
    assert not compiled_winograd.recommended("grad_weight", (4, 256, 14, 14), (256, 256, 3, 3), geom, f32)
    assert not compiled_winograd.recommended("grad_weight", (8, 512, 7, 7), (512, 512, 3, 3), geom, f32)
    assert not compiled_winograd.recommended("grad_weight", (8, 64, 56, 56), (64, 64, 3, 3), geom,
                                             np.dtype(np.float64))
    dilated = _geom(((2, 2), (2, 2)), dilation=(2, 2))
    assert compiled_winograd.supports("grad_weight", (8, 64, 56, 56), (64, 64, 3, 3), dilated, f32)
    assert not compiled_winograd.recommended("grad_weight", (8, 64, 56, 56), (64, 64, 3, 3), dilated, f32)
    # a dilation makes one call per output phase: the tiles are counted per phase (batch 1 of 56x56
    # at dilation 2: 49 tiles of 28x28 per call; dilation 3: 25 of 19x19, too few for two workers to share)
    for threads, dilation, batch, chosen in ((2, 2, 8, True), (2, 3, 8, True), (2, 2, 1, True),
                                             (2, 3, 1, False), (1, 2, 1, True), (1, 3, 1, True)):
        dilated = _geom(((dilation, dilation), (dilation, dilation)), dilation=(dilation, dilation))
        npconv.set_num_threads(threads)
        try:
            assert compiled_winograd.recommended("forward", (batch, 64, 56, 56), (64, 64, 3, 3), dilated,
                                                 f32) is chosen
        finally:
            npconv.set_num_threads(previous)
    strided = ConvGeometry.create((3, 3), (2, 2), 1, 1, 1, ndim=2)
    assert not compiled_winograd.supports("forward", (8, 64, 56, 56), (64, 64, 3, 3), strided, f32)


def test_the_planner_splits_grouped_3x3_calls_by_channels_per_group_and_tiles(monkeypatch):
    """Grouped 3x3 stride-1 float32 calls on two threads (AVX-512's rule): Winograd (asked before the
    grouped kernel) from 17 channels per group with enough lanes (MIN_GROUP_CHANNEL_LANES) and tiles
    (MIN_TILES, MIN_MACS); else the grouped kernel's forward up to 32 per group
    (FORWARD_MAX_CHANNELS), its grad_input and grad_weight up to 16, the GEMM beyond; Winograd's
    grad_weight for a grouped call only from 17 channels per group and GW_GROUP_MIN_TILE_CHANNELS."""
    monkeypatch.setattr(npconv.backends.core, "isa", "avx512")
    previous = npconv.get_num_threads()
    f32 = np.dtype(np.float32)
    cases = [  # (n, channels, size, groups): forward, grad_input, grad_weight
        ((8, 512, 14, 16), ("winograd", "winograd", "gemm")),  # 32 per group, 128 tiles (lanes 24.5)
        ((8, 384, 14, 16), ("winograd", "winograd", "gemm")),  # 24 per group (lanes 18.4)
        ((8, 1024, 7, 32), ("winograd", "winograd", "gemm")),  # 32 tiles
        ((8, 256, 28, 16), ("grouped", "grouped", "grouped")),  # 16 per group: lanes 16
        ((1, 512, 14, 16), ("grouped", "gemm", "gemm")),  # 16 tiles, 29 M multiply-adds
        ((8, 256, 28, 4), ("winograd", "winograd", "winograd")),  # 64 per group x 392 tiles
        ((8, 128, 56, 4), ("winograd", "winograd", "winograd")),  # 32 per group x 1568 tiles
        ((8, 256, 28, 8), ("winograd", "winograd", "gemm")),  # 32 per group x 392 tiles
        ((1, 512, 14, 8), ("gemm", "gemm", "gemm")),  # 64 per group: beyond the grouped kernel
    ]
    try:
        npconv.set_num_threads(2)
        plan.clear_cache()
        for (n, c, size, groups), expected in cases:
            geom = _geom(((1, 1), (1, 1)), groups)
            shapes = ((n, c, size, size), (c, c // groups, 3, 3), geom, f32)
            chosen = tuple(plan.choose(p, *shapes) for p in ("forward", "grad_input", "grad_weight"))
            assert chosen == expected, (n, c, size, groups)
    finally:
        npconv.set_num_threads(previous)
        plan.clear_cache()


def test_a_small_batch_one_layer_goes_to_the_planned_gemm_on_avx512(isa):
    """MIN_MACS: a batch-1 32x36 layer (12 M multiply-adds) runs on the implicit GEMM with AVX-512
    (its plan beats Winograd's per-call weight transform and data check), on Winograd elsewhere;
    a batch-1 32x56 layer (29 M) and ResNet-18's 64x56 (116 M) on Winograd everywhere."""
    geom = ConvGeometry.create((3, 3), 1, 1, ndim=2)
    f32 = np.dtype(np.float32)
    assert compiled_winograd.recommended("forward", (1, 64, 56, 56), (64, 64, 3, 3), geom, f32)
    assert compiled_winograd.recommended("forward", (1, 32, 56, 56), (32, 32, 3, 3), geom, f32)
    small = compiled_winograd.recommended("forward", (1, 32, 36, 36), (32, 32, 3, 3), geom, f32)
    assert small is (isa != "avx512")
