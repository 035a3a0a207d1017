"""The compiled GEMM convolution (npconv._core via kernels/compiled_gemm) against the NumPy reference
(tests/reference.py), the NumPy GEMM engine (kernels/gemm) and torch, on every ISA variant this CPU runs.

Covers the three passes in float32 and float64 on random 1-d/2-d/3-d geometries (odd sizes, strides,
dilations, per-side padding up to wider than the kernel, groups), each tiling of the work (bands of
positions, bands of rows with the row shift, chunks of images, channel chunks; caps at one position),
one and two worker threads, non-contiguous inputs, the fused bias and clamp, transposed convolutions
through the adjoint, determinism, and the extension's own guards.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from kernel_checks import (
    GEMM_TILINGS,
    assert_passes_are_adjoint,
    draw_geometry,
    gemm_tiling,
    record_blas_threads,
    relative_error,
)
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import gemm, plan, workspace
from npconv.kernels.blas import gemm_routines
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation
from torch_oracle import assert_close

compiled_gemm = pytest.importorskip(
    "npconv.kernels.compiled_gemm", reason=f"compiled core not in use: {backends.core.reason}"
)

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}

def _gemm_conv_calls(monkeypatch, record) -> None:
    """Call ``record(pass code, geometry tuple)`` for every ``gemm_conv`` call of the compiled core
    (``workspace.run_calls``: every pass runs its worker calls through it)."""
    run = workspace.run_calls

    def recording(kernel, calls, *args, **kwargs):
        if kernel is backends.core.module.gemm_conv:
            record(calls[0][0][0], calls[0][2][0])
        return run(kernel, calls, *args, **kwargs)

    monkeypatch.setattr(workspace, "run_calls", recording)


def _uses_c(monkeypatch) -> list[int]:
    """Record the pass code of every C call (a fallback to the NumPy engine would record none)."""
    calls: list[int] = []
    _gemm_conv_calls(monkeypatch, lambda code, geometry: calls.append(code))
    return calls


def _tilings(monkeypatch) -> list[tuple[int, ...]]:
    """Record the C kernel's geometry tuple of every call (its last five values: band, images, chunk,
    shift, implicit: which tiling ran)."""
    seen: list[tuple[int, ...]] = []
    _gemm_conv_calls(monkeypatch, lambda code, geometry: seen.append(geometry))
    return seen


def _check(rng, x_shape, w_shape, geom, dtype, bias=True):
    """The three passes against tests/reference.py, with bias on forward and grad_input."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal((x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:])).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    bx = rng.standard_normal(x_shape[1]).astype(dtype) if bias else None
    resolved = geom.with_padding(geom.pads(x_shape[2:]))
    y_ref, gx_ref, gw_ref = reference.conv_passes(x, w, gy, resolved)
    if bias:
        y_ref = y_ref + b.reshape((-1,) + (1,) * geom.ndim)
        gx_ref = gx_ref + bx.reshape((-1,) + (1,) * geom.ndim)
    results = {
        "forward": (compiled_gemm.forward(x, w, geom, b), y_ref),
        "grad_input": (compiled_gemm.grad_input(gy, w, geom, x_shape[2:], bx), gx_ref),
        "grad_weight": (compiled_gemm.grad_weight(x, gy, geom), gw_ref),
    }
    tol = TOL[np.dtype(dtype)]
    for name, (got, ref) in results.items():
        assert got.shape == ref.shape and got.dtype == dtype, name
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(
            got, ref, rtol=tol, atol=tol * scale, err_msg=f"{name} {x_shape} {w_shape} {geom}"
        )


@settings(max_examples=40, deadline=None)
@given(nd=st.integers(1, 3), groups=st.integers(1, 2), data=st.data())
def test_random_geometries_match_the_reference(nd, groups, data):
    """Random geometries x tilings x ISA variants x 1-2 threads, float32 and float64, each pass in C."""
    kernel, stride, dilation, padding, size = draw_geometry(data, nd, 3 if nd == 3 else 5, 2, 6)
    c, o = groups * data.draw(st.integers(1, 3)), groups * data.draw(st.integers(1, 3))
    n = data.draw(st.integers(1, 3))
    geom = ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=nd)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    previous = backends.core.isa, backends.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        gemm_tiling(patch, data.draw(st.sampled_from(sorted(GEMM_TILINGS))))
        patch.setattr(gemm, "WORKER_MIN_MACS", 0)
        calls = _uses_c(patch)
        backends.core.isa = data.draw(st.sampled_from(backends.core.isas))
        backends.set_num_threads(data.draw(st.integers(1, 2)))
        try:
            _check(
                np.random.default_rng(data.draw(st.integers(0, 2**31))),
                (n, c) + size,
                (o, c // groups) + kernel,
                geom,
                dtype,
                bias=data.draw(st.booleans()),
            )
        finally:
            backends.core.isa, _ = previous
            backends.set_num_threads(previous[1])
    assert {0, 2} <= set(calls), calls  # grad_input may run as a forward (stride 1)


@settings(max_examples=30, deadline=None)
@given(nd=st.integers(1, 3), groups=st.integers(1, 2), data=st.data())
def test_random_wide_implicit_geometries_match_the_reference(nd, groups, data):
    """The implicit GEMM's forward (packed, or the channels on the lanes: up to 50 output channels
    per group and 8-40 input channels, so both are taken) and grad_weight on random stride-1
    geometries, slab sizes (bands of lines or planes per item) and 1-3 workers, float32, each vector
    build, against the reference."""
    vector = [isa for isa in ("avx2", "avx512") if isa in backends.core.isas]
    if not vector:
        pytest.skip("the implicit GEMM runs on the avx2 and avx512 builds")
    kernel, _, dilation, padding, size = draw_geometry(data, nd, 3 if nd == 3 else 5, 2, 6)
    c = groups * data.draw(st.integers(8, 40))
    o = groups * data.draw(st.integers(1, 50))
    n = data.draw(st.integers(1, 2))
    geom = ConvGeometry.create(kernel, 1, padding, dilation, groups, ndim=nd)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.standard_normal((n, c) + size).astype(np.float32)
    w = rng.standard_normal((o, c // groups) + kernel).astype(np.float32)
    out = geom.output_size(size)
    gy = rng.standard_normal((n, o) + out).astype(np.float32)
    y_ref, _, gw_ref = reference.conv_passes(x, w, gy, geom.with_padding(geom.pads(size)))
    previous = backends.core.isa, backends.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("IMPLICIT_MIN_POSITIONS", 0), ("IMPLICIT_MIN_POSITIONS_BATCH", 0),
                            ("IMPLICIT_GW_MIN_POSITIONS", 0),
                            ("IMPLICIT_MAX_GRID", 1e9),
                            ("IMPLICIT_SLAB_BYTES", data.draw(st.sampled_from([1, 1 << 12, 1 << 20]))),
                            ("IMPLICIT_LANES", data.draw(st.booleans()))):
            patch.setattr(compiled_gemm, name, value)
        backends.set_num_threads(data.draw(st.integers(1, 3)))
        try:
            for isa in vector:
                backends.core.isa = isa
                for got, ref in ((compiled_gemm.forward(x, w, geom), y_ref),
                                 (compiled_gemm.grad_weight(x, gy, geom), gw_ref)):
                    scale = max(1.0, float(np.abs(ref).max()))
                    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5 * scale, err_msg=isa)
        finally:
            backends.core.isa, _ = previous
            backends.set_num_threads(previous[1])


@settings(max_examples=40, deadline=None)
@given(nd=st.integers(1, 2), groups=st.integers(1, 2), data=st.data())
def test_random_strided_direct_forwards_match_the_reference(nd, groups, data):
    """The direct lanes forward (geometry implicit 3: the output channels on the lanes, each (channel, tap)'s
    inputs broadcast from a padded copy of an item's rows) on random strided 1-d/2-d geometries (stride 1-3
    along the first axis, 1-2 along the last; dilation, per-side padding, groups, 1-120 output channels per
    group: ragged vectors and blocks), 1-3 images and workers, the output channels in parts or the images and
    rows split, the epilogues, each vector build, float32, against the reference."""
    vector = [isa for isa in ("avx2", "avx512") if isa in backends.core.isas]
    if not vector:
        pytest.skip("the direct forward runs on the avx2 and avx512 builds")
    kernel = (*data.draw(st.lists(st.integers(1, 5), min_size=nd - 1, max_size=nd - 1)),
              data.draw(st.integers(2, 5)))  # two taps at least: a 1x1 kernel is its input's columns
    stride = (*data.draw(st.lists(st.integers(1, 3), min_size=nd - 1, max_size=nd - 1)),
              data.draw(st.integers(1, 2)))
    if max(stride) == 1:
        stride = (2,) + stride[1:]
    dilation = tuple(data.draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd)))
    padding = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in range(nd))
    size = tuple(data.draw(st.integers(max(1, d * (k - 1) + 1 - lo - hi), d * (k - 1) + 10))
                 for k, d, (lo, hi) in zip(kernel, dilation, padding, strict=True))
    c = groups * data.draw(st.integers(1, 12))
    o = groups * data.draw(st.integers(1, 120))
    n = data.draw(st.integers(1, 3))
    geom = ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=nd)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.standard_normal((n, c) + size).astype(np.float32)
    w = rng.standard_normal((o, c // groups) + kernel).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    resolved = geom.with_padding(geom.pads(size))
    y_ref = reference.conv_passes(x, w, np.zeros((n, o) + geom.output_size(size), np.float32), resolved)[0]
    y_ref = y_ref + b.reshape((-1,) + (1,) * nd)
    activation = data.draw(st.sampled_from([None, Activation("relu"), Activation("hardtanh", -0.5, 1.0)]))
    expected = y_ref if activation is None else np.clip(y_ref, activation.lo, activation.hi) \
        if activation.kind == "hardtanh" else np.maximum(y_ref, 0)
    previous = backends.core.isa, backends.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        seen = _tilings(patch)
        gemm_tiling(patch, data.draw(st.sampled_from(["direct", "direct-parts"])))
        backends.set_num_threads(data.draw(st.integers(1, 3)))
        try:
            for isa in vector:
                backends.core.isa = isa
                got = compiled_gemm.forward(x, w, resolved, epilogue=Epilogue(b, activation))
                assert seen[-1][-1] == 3, seen[-1]
                scale = max(1.0, float(np.abs(expected).max()))
                np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * scale, err_msg=isa)
        finally:
            backends.core.isa, _ = previous
            backends.set_num_threads(previous[1])


@pytest.mark.parametrize("threads", [1, 2])
def test_direct_forward_keeps_nan_and_inf_local_like_torch(torch, monkeypatch, threads):
    """The direct forward computes each output from its own window only (no junk position, padding read
    as zeros): a NaN, an inf and a -inf in x and an inf in one weight give NaN/inf exactly where torch's
    direct convolution has them, with the padding's zeros times the inf weight as NaN in the border."""
    if not compiled_gemm.implicit_runs(np.dtype(np.float32)):
        pytest.skip("the direct forward runs on the vector builds with npconv's gemm")
    monkeypatch.setattr(backends, "get_num_threads", lambda: threads)
    monkeypatch.setattr(compiled_gemm, "get_num_threads", lambda: threads)
    monkeypatch.setattr(compiled_gemm, "DIRECT_ISAS", (backends.core.isa,))
    monkeypatch.setattr(compiled_gemm, "DIRECT_MAX_GROUP_CHANNELS", {})
    seen = _tilings(monkeypatch)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 30, 29)).astype(np.float32)
    w = rng.standard_normal((72, 16, 3, 3)).astype(np.float32)
    x[0, 3, 7, 11], x[1, 0, 0, 28], x[1, 15, 17, 2] = np.nan, np.inf, -np.inf
    w[40, 5, 0, 2] = np.inf
    geom = ConvGeometry.create(3, 2, 1, 1, 1, ndim=2)
    geom = geom.with_padding(geom.pads(x.shape[2:]))
    y = compiled_gemm.forward(x, w, geom)
    assert seen[-1][-1] == 3
    expected = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                          stride=2, padding=1).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(expected))
    finite = np.isfinite(expected)
    scale = np.abs(expected[finite]).max()
    np.testing.assert_allclose(y[finite], expected[finite], rtol=2e-5, atol=2e-5 * scale)


def test_direct_forward_rule(monkeypatch):
    """Strided float32 3x3 layers of enough column rows and positions take the direct forward on the ISA
    variants of DIRECT_ISAS (AVX2 up to 128 output channels per group, AVX-512 any), their output
    channels in one part per worker where the weight outweighs the input (else images or rows split);
    stride 1, a 1x1 kernel, float64, 3-d, a stride of 3 along the rows, too few positions, another
    variant, more channels than the variant's cap do not."""
    monkeypatch.setattr(backends, "get_num_threads", lambda: 2)
    monkeypatch.setattr(compiled_gemm, "get_num_threads", lambda: 2)
    assert compiled_gemm.DIRECT_ISAS == ("avx2", "avx512")
    assert compiled_gemm.DIRECT_MAX_GROUP_CHANNELS == {"avx2": 128}
    monkeypatch.setattr(compiled_gemm, "DIRECT_ISAS", (backends.core.isa,))
    monkeypatch.setattr(compiled_gemm, "DIRECT_MAX_GROUP_CHANNELS", {})
    layout = compiled_gemm._forward_layout.__wrapped__

    def geometry(x_shape, w_shape, stride, dtype=np.float32, nd=2, groups=1):
        geom = ConvGeometry.create(w_shape[2:], stride, 1, 1, groups, ndim=nd)
        geom = geom.with_padding(geom.pads(x_shape[2:]))
        return layout(x_shape, w_shape, geom, np.dtype(dtype), compiled_gemm._settings())[0]

    if not compiled_gemm.implicit_runs(np.dtype(np.float32)):
        pytest.skip("the direct forward runs on the vector builds with npconv's gemm")
    parts = geometry((1, 256, 14, 14), (512, 256, 3, 3), 2)  # 49 positions: too few for one image
    assert parts[-1] != 3
    parts = geometry((2, 256, 14, 14), (512, 256, 3, 3), 2)  # 98 positions for a 1.2 M weight: too few
    assert parts[-1] != 3
    parts = geometry((4, 256, 14, 14), (512, 256, 3, 3), 2)  # 196 positions: 6 K weight values each
    assert parts[-1] != 3
    parts = geometry((8, 256, 14, 14), (512, 256, 3, 3), 2)  # 392: 3 K each
    assert parts[-1] == 3 and parts[-3] == 2  # the weight (1.2 M values) outweighs the input (0.4 M)
    rows = geometry((1, 64, 56, 56), (128, 64, 3, 3), 2)
    assert rows[-1] == 3 and rows[-3] == 1 and rows[22] == 14  # one image: half its 28 output rows each
    images = geometry((8, 64, 56, 56), (128, 64, 3, 3), 2)
    assert images[-1] == 3 and images[-3] == 1 and images[22] == 28
    assert geometry((1, 64, 1024), (128, 64, 3), 2, nd=1)[-1] == 3
    for x_shape, w_shape, stride, dtype, nd in (((1, 64, 56, 56), (128, 64, 3, 3), 1, np.float32, 2),
                                               ((1, 128, 56, 56), (128, 128, 1, 1), 2, np.float32, 2),
                                               ((1, 64, 56, 56), (128, 64, 3, 3), 2, np.float64, 2),
                                               ((1, 64, 56, 56), (128, 64, 3, 3), (2, 3), np.float32, 2),
                                               ((1, 8, 56, 56), (128, 8, 3, 3), 2, np.float32, 2),
                                               ((1, 16, 8, 8, 8), (32, 16, 3, 3, 3), 2, np.float32, 3)):
        assert geometry(x_shape, w_shape, stride, dtype, nd)[-1] != 3, (x_shape, w_shape, stride, dtype)
    monkeypatch.setattr(compiled_gemm, "DIRECT_MAX_GROUP_CHANNELS", {backends.core.isa: 128})
    assert geometry((1, 64, 56, 56), (128, 64, 3, 3), 2)[-1] == 3
    assert geometry((2, 128, 56, 56), (256, 128, 3, 3), 2)[-1] != 3  # 256 channels: beyond the cap
    assert geometry((2, 256, 56, 56), (256, 128, 3, 3), 2, groups=2)[-1] == 3  # 128 per group
    monkeypatch.setattr(compiled_gemm, "DIRECT_ISAS", ())
    assert geometry((1, 64, 56, 56), (128, 64, 3, 3), 2)[-1] != 3


# (x_shape, w_shape, kernel, stride, padding, dilation, groups): first layers, strided and dilated 2-d,
# padding wider than the kernel and than the input, stride beyond the kernel (pixels never read),
# 1x1 direct and 1x1 strided, 1-d, 3-d with the row shift and strides, a widening stride-1 layer
# (grad_input by col2im), outputs wholly inside the padding
CASES = [
    ((2, 3, 17, 19), (8, 3), (7, 7), 2, 3, 1, 1),
    ((2, 4, 11, 10), (6, 4), (3, 3), 2, 1, 1, 1),
    ((1, 4, 12, 9), (4, 2), (3, 2), 1, ((4, 1), (0, 5)), (2, 3), 2),
    ((2, 2, 3, 4), (3, 2), (2, 2), 1, 6, 1, 1),
    ((1, 2, 9, 9), (2, 2), (2, 2), 4, 0, 1, 1),
    ((3, 6, 5, 4), (4, 6), (1, 1), 1, 0, 1, 1),
    ((2, 6, 7, 6), (4, 3), (1, 1), 2, 0, 1, 2),
    ((2, 5, 40), (3, 5), (5,), 1, 2, 3, 1),
    ((1, 4, 33), (6, 2), (4,), 3, ((0, 5),), 1, 2),
    ((1, 3, 6, 5, 7), (4, 3), (3, 3, 3), 1, 1, 1, 1),
    ((2, 2, 5, 6, 4), (2, 2), (2, 3, 2), (2, 1, 2), ((1, 0), (2, 2), (0, 1)), (1, 2, 1), 1),
    ((2, 2, 8, 8), (16, 2), (3, 3), 1, 1, 1, 1),
    ((1, 2, 2, 2), (3, 2), (3, 3), 1, 4, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tiling", sorted(GEMM_TILINGS))
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_cases_match_the_reference(rng, monkeypatch, isa, case, tiling, dtype):
    x_shape, (o, cg), kernel, stride, padding, dilation, groups = case
    geom = ConvGeometry.create(kernel, stride, padding, dilation, groups, ndim=len(kernel))
    gemm_tiling(monkeypatch, tiling)
    calls = _uses_c(monkeypatch)
    _check(rng, x_shape, (o, cg) + kernel, geom, dtype)
    assert {0, 2} <= set(calls)


def test_row_shift_and_chunks_are_used(monkeypatch):
    """The tiling picks the row shift (stride 1 along the first of >= 2 axes), chunks of small images,
    and bands of positions otherwise (the C kernel's geometry tuple says which); float64 here, which
    the implicit GEMM (float32 only) leaves to these."""
    seen = _tilings(monkeypatch)
    monkeypatch.setattr(compiled_gemm, "CHUNK_BYTES", 1 << 20)  # 1 MB images: too large to chunk
    x, w = np.ones((2, 8, 40, 40)), np.ones((8, 8, 3, 3))
    compiled_gemm.forward(x, w, ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2))
    assert seen[-1][-2] == 2  # row shift along H (canonical axis 1)
    compiled_gemm.forward(x[:, :, :10, :5], w, ConvGeometry.create((3, 3), 2, 1, 1, 1, ndim=2))
    assert seen[-1][-4] == 2 and seen[-1][-2] == 0  # two small images (5x3 outputs) per item
    compiled_gemm.forward(x[:, :, :4, :4], w[:, :, :1, :1], ConvGeometry.create(1, 1, 0, 1, 1, ndim=2))
    assert seen[-1][-4] == 1  # a 1x1 kernel (CHUNK_MIN_TAPS): every image is its own column matrix
    compiled_gemm.forward(x[:, :, :8, :8], w[:, :, :1, :1], ConvGeometry.create(1, 2, 0, 1, 1, ndim=2))
    assert seen[-1][-4] == 1  # strided too
    compiled_gemm.forward(
        np.ones((1, 4, 9, 9, 9)), np.ones((2, 4, 3, 3, 3)), ConvGeometry.create(3, 1, 1, 1, 1, ndim=3)
    )
    assert seen[-1][-2] == 1  # row shift along D
    compiled_gemm.forward(x[:1], w, ConvGeometry.create((3, 3), 2, 1, 1, 1, ndim=2))
    assert seen[-1][-2] == 0 and seen[-1][-4] == 1
    for isa in {"avx2", "avx512"} & set(backends.core.isas):  # float32 stride 1: the implicit GEMM
        monkeypatch.setattr(backends.core, "isa", isa)
        x32, geom = x.astype(np.float32), ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)
        compiled_gemm.forward(x32, w.astype(np.float32), geom)
        assert seen[-1][-1] == 2 and seen[-1][-2] == 0  # the forward's channels on the lanes where they fit
        compiled_gemm.grad_weight(x32, x32, geom)  # 1600 positions per image
        assert seen[-1][-1] == 1
        compiled_gemm.grad_weight(x32[:, :, :20, :20], x32[:, :, :20, :20], geom)  # 400: im2col
        assert seen[-1][-1] == 0


def test_chunks_of_images_are_a_multiple_of_the_threads(monkeypatch, rng):
    """8 small images that CHUNK_BYTES would pack 3 to a chunk: on two threads 4 chunks of 2 (3 + 3 + 2
    left a worker idle for a third of the call), on one thread 3 per chunk; results as the reference."""
    import npconv

    seen = _tilings(monkeypatch)
    x = rng.standard_normal((8, 4, 6, 6))
    w = rng.standard_normal((4, 4, 3, 3))
    geom = ConvGeometry.create((3, 3), 2, 1, 1, 1, ndim=2)  # 3x3 outputs: (36 + 4) * 9 * 8 bytes an image
    monkeypatch.setattr(compiled_gemm, "CHUNK_BYTES", 3 * (36 + 4) * 9 * 8)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    previous = npconv.get_num_threads()
    try:
        for threads, images in ((2, 2), (1, 3)):
            npconv.set_num_threads(threads)
            y = compiled_gemm.forward(x, w, geom)
            assert seen[-1][-4] == images
            assert relative_error(y, reference.conv(x, w, stride=2, padding=1)) < 1e-12
    finally:
        npconv.set_num_threads(previous)


def test_forward_chunks_of_small_images_stay_within_the_workspace_share(rng, monkeypatch):
    """A chunk's scratch as the C plan counts it (columns, padded planes, products) within the thread's
    share of gemm.WORKSPACE_BYTES (here made small): fewer images per chunk, or bands of one image
    where even two do not fit; forward and grad_weight as the reference."""
    import npconv

    seen = _tilings(monkeypatch)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    geom = ConvGeometry.create((3, 3), 2, 1, 1, 1, ndim=2)
    x = rng.standard_normal((8, 16, 6, 6))  # 3x3 outputs: 9 positions an image
    w = rng.standard_normal((8, 16, 3, 3))
    gy = rng.standard_normal((8, 8, 3, 3))
    one = backends.core.module.gemm_conv_plan(0, compiled_gemm._geometry(8, 16, 8, (6, 6), geom)[:-5]
                                              + (9, 1, 1, 0, 0))[0] * 8
    two = backends.core.module.gemm_conv_plan(0, compiled_gemm._geometry(8, 16, 8, (6, 6), geom)[:-5]
                                              + (9, 2, 1, 0, 0))[0] * 8
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(2)
        for share, images in ((1 << 24, 4), (two, 2), (two - 8, 1)):  # the plans count the gemm's packing too
            monkeypatch.setattr(gemm, "WORKSPACE_BYTES", 2 * share)
            y = compiled_gemm.forward(x, w, geom)
            geometry = seen[-1]
            assert geometry[-4] == images, (share, geometry)
            if images >= 2:
                assert backends.core.module.gemm_conv_plan(0, geometry)[0] * 8 <= share
            assert relative_error(y, reference.conv(x, w, stride=2, padding=1)) < 1e-12
            gw = compiled_gemm.grad_weight(x, gy, geom)
            assert relative_error(gw, reference.conv_grad_weight(x, gy, (3, 3), 2, 1)) < 1e-12
        assert two > one
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_single_small_image_splits_output_channels(monkeypatch, rng, dtype):
    """One 7x7 image on two threads: each worker computes its output channels (72: 32 + 40, the last
    not whole register tiles) over all positions, with bias and the fused ReLU, against the reference;
    more positions, fewer channels or more images keep the split by positions. Stride-1 float32 parts
    pack their columns as the implicit GEMM does (1-d, 2-d and 3-d), with the same products as im2col's
    parts; strided parts and float64 take im2col."""
    import npconv

    runs = []  # each worker's (output block, geometry) of every forward run
    real = workspace.run_calls
    monkeypatch.setattr(workspace, "run_calls", lambda kernel, calls, *a, **k: (
        runs.append([(head[5], tail[0]) for head, _, tail in calls]), real(kernel, calls, *a, **k))[1])
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    implicit = compiled_gemm.implicit_runs(np.dtype(dtype))
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(2)
        for shape, o, stride, split in (((1, 5, 7, 7), 72, 1, True), ((1, 5, 7, 7), 56, 1, False),
                                        ((2, 5, 7, 7), 72, 1, False), ((1, 5, 11, 11), 72, 1, False),
                                        ((1, 5, 9, 9), 72, 2, True), ((1, 6, 40), 80, 1, True),
                                        ((1, 3, 4, 3, 5), 72, 1, True)):
            nd = len(shape) - 2
            geom = ConvGeometry.create((3,) * nd, stride, 1, 1, 1, ndim=nd)
            x = rng.standard_normal(shape).astype(dtype)
            w = rng.standard_normal((o, shape[1]) + (3,) * nd).astype(dtype)
            b = rng.standard_normal(o).astype(dtype)
            y = compiled_gemm.forward(x, w, geom, epilogue=Epilogue(b, Activation("relu")))
            channels = [out.shape[1] for out, _ in runs[-1]]
            assert channels == (([32, 40] if o == 72 else [40, 40]) if split else [o] * len(channels))
            if split:
                assert [g[-1] for _, g in runs[-1]] == [int(implicit and stride == 1)] * 2
                with monkeypatch.context() as m:
                    m.setattr(compiled_gemm, "IMPLICIT_CHANNEL_PARTS", False)
                    packed = compiled_gemm.forward(x, w, geom, epilogue=Epilogue(b, Activation("relu")))
                    assert [g[-1] for _, g in runs[-1]] == [0, 0]
                np.testing.assert_array_equal(y, packed)
            expected = reference.conv(x, w, stride=stride, padding=1) + b.reshape((-1,) + (1,) * nd)
            assert relative_error(y, np.maximum(expected, 0)) < (1e-12 if dtype == np.float64 else 1e-6)
    finally:
        npconv.set_num_threads(previous)


def test_grad_weight_splits_output_channels_for_small_images(monkeypatch, rng):
    """Many output channels on few positions: each worker computes its rows of gw over all images
    (no per-worker accumulators), float32 and float64 against the reference, rows not a multiple of
    the register tile included; fewer channels keep the split by images."""
    import npconv

    calls = []
    real = compiled_gemm._grad_weight_by_channels
    monkeypatch.setattr(compiled_gemm, "_grad_weight_by_channels",
                        lambda *a: calls.append(a[4]) or real(*a))
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(2)
    try:
        assert compiled_gemm.GW_CHANNEL_SPLIT * 32 <= 68
        for dtype, o, split in ((np.float64, 68, True), (np.float32, 72, True), (np.float64, 12, False)):
            x = rng.standard_normal((2, 5, 4, 4)).astype(dtype)
            geom = ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)  # 2 images x 16 positions
            gy = rng.standard_normal((2, o, 4, 4)).astype(dtype)
            calls.clear()
            gw = compiled_gemm.grad_weight(x, gy, geom)
            assert calls == ([2] if split else [])
            expected = reference.conv_grad_weight(x.astype(np.float64), gy.astype(np.float64), (3, 3),
                                                  padding=1)
            assert relative_error(gw, expected) < TOL[np.dtype(dtype)]
    finally:
        npconv.set_num_threads(previous)


def test_row_shift_only_where_it_saves_more_than_the_weight_rearrangement(monkeypatch):
    """A weight-heavy layer on a small image (here 512 output channels on 14x14, like ResNet's 512x7x7
    at batch 1) packs its columns once instead of rearranging the weight per call; the same shapes
    follow every setting change (the work items are cached per call shape and settings)."""
    seen = _tilings(monkeypatch)
    geom = ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)
    x, w = np.ones((1, 8, 14, 14)), np.ones((512, 8, 3, 3))  # 196 * 2/3 columns saved < 512 weight rows
    compiled_gemm.forward(x, w, geom)
    assert seen[-1][-2] == 0
    compiled_gemm.forward(np.ones((1, 8, 40, 40)), w, geom)  # 1600 * 2/3 >= 512: worth it
    assert seen[-1][-2] == 2
    monkeypatch.setattr(compiled_gemm, "SHIFT_MIN_SAVING", 0.1)
    compiled_gemm.forward(x, w, geom)
    assert seen[-1][-2] == 2
    monkeypatch.setattr(compiled_gemm, "ROW_SHIFT", False)
    compiled_gemm.forward(x, w, geom)
    assert seen[-1][-2] == 0
    defaults = compiled_gemm.IMPLICIT_MIN_POSITIONS, compiled_gemm.IMPLICIT_MIN_POSITIONS_BATCH
    # float32: the implicit GEMM from 64 positions for one image, from 32 for several
    for isa in {"avx2", "avx512"} & set(backends.core.isas):
        monkeypatch.setattr(backends.core, "isa", isa)
        x32, w32 = np.ones((8, 8, 5, 5), np.float32), np.ones((8, 8, 3, 3), np.float32)
        compiled_gemm.forward(x32, w32, geom)
        assert seen[-1][-1] == 0  # 25 positions per image: chunks of images on im2col
        compiled_gemm.forward(np.ones((8, 8, 7, 7), np.float32), w32, geom)
        assert seen[-1][-1] == 2  # 49 positions, 8 images
        compiled_gemm.forward(np.ones((1, 8, 7, 7), np.float32), w32, geom)
        assert seen[-1][-1] == 0  # one image of 49
        compiled_gemm.forward(np.ones((1, 8, 8, 8), np.float32), w32, geom)
        assert seen[-1][-1] == 2
        monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS_BATCH", 0)
        compiled_gemm.forward(x32, w32, geom)
        assert seen[-1][-1] == 2
        monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS_BATCH", defaults[1])


def test_torch_parity_and_transposed_convolutions(rng, isa, torch):
    """All passes against torch in float64 and float32, including a transposed convolution run as the
    adjoint (grad_input with the transposed layer's bias)."""
    tf = torch.nn.functional
    for dtype in (np.float64, np.float32):
        x = rng.standard_normal((2, 6, 13, 11)).astype(dtype)
        w = rng.standard_normal((8, 3, 3, 4)).astype(dtype)
        b = rng.standard_normal(8).astype(dtype)
        geom = ConvGeometry.create((3, 4), (2, 1), ((1, 1), (2, 2)), (1, 2), 2, ndim=2)
        xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        yt = tf.conv2d(xt, wt, bt, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
        y = compiled_gemm.forward(x, w, geom, b)
        assert_close(y, yt, what="forward")
        gy = rng.standard_normal(y.shape).astype(dtype)
        yt.backward(torch.from_numpy(gy))
        assert_close(compiled_gemm.grad_input(gy, w, geom, x.shape[2:]), xt.grad, what="grad_input")
        assert_close(compiled_gemm.grad_weight(x, gy, geom), wt.grad, what="grad_weight")
        # ConvTranspose1d 4/2 with output_padding: y = grad_input(x) + bias
        xs = rng.standard_normal((3, 5, 9)).astype(dtype)
        ws = rng.standard_normal((5, 4, 4)).astype(dtype)
        bs = rng.standard_normal(4).astype(dtype)
        ref = tf.conv_transpose1d(
            torch.from_numpy(xs),
            torch.from_numpy(ws),
            torch.from_numpy(bs),
            stride=2,
            padding=1,
            output_padding=1,
        )
        tgeom = ConvGeometry.create((4,), 2, 1, 1, 1, ndim=1)
        assert_close(compiled_gemm.grad_input(xs, ws, tgeom, (ref.shape[2],), bs), ref, what="transposed")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pass_name", ["forward", "grad_input", "grad_weight"])
def test_float32_passes_on_npconvs_gemm_leave_the_blas_threads_alone(threads, pass_name, monkeypatch):
    """Every product of a float32 pass on the vector builds runs on npconv's gemm: the call sets no
    BLAS thread count (a threadpoolctl round trip per call); float64 (SciPy's BLAS) still pins the
    BLAS to one thread per worker, and so does float32 with npconv's gemm switched off."""
    import npconv
    from npconv.kernels import blas

    entered = record_blas_threads(monkeypatch)
    monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 0)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    try:
        geom = ConvGeometry.create((3, 3), 2, 1, ndim=2)  # strided: grad_input on col2im, not the adjoint
        x, w, gy = np.ones((2, 4, 12, 12)), np.ones((4, 4, 3, 3)), np.ones((2, 4, 6, 6))

        def run(dtype):
            entered.clear()
            if pass_name == "forward":
                y = compiled_gemm.forward(x.astype(dtype), w.astype(dtype), geom)
            elif pass_name == "grad_input":
                y = compiled_gemm.grad_input(gy.astype(dtype), w.astype(dtype), geom, (12, 12))
            else:
                y = compiled_gemm.grad_weight(x.astype(dtype), gy.astype(dtype), geom)
            assert y.dtype == dtype
            return entered

        assert run(np.float64) == [1]
        vector = {"avx2", "avx512"} & set(backends.core.isas)
        for isa in vector:
            monkeypatch.setattr(backends.core, "isa", isa)
            assert run(np.float32) == []
            monkeypatch.setattr(blas, "OWN_GEMM", False)
            assert run(np.float32) == [1]
            monkeypatch.setattr(blas, "OWN_GEMM", True)
    finally:
        npconv.set_num_threads(previous)


def test_two_worker_threads_and_non_contiguous_inputs(rng, isa, parallel, monkeypatch):
    monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 0)
    geom = ConvGeometry.create((3, 3), (2, 1), 1, 1, 1, ndim=2)
    base = rng.standard_normal((3, 4, 22, 17))
    x = base[:, :, ::2, :]  # non-contiguous
    w = np.ascontiguousarray(rng.standard_normal((5, 4, 3, 3)).transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    y = compiled_gemm.forward(x, w, geom)
    np.testing.assert_allclose(y, gemm.forward(x.copy(), w.copy(), geom), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)[..., ::-1]  # negative strides
    np.testing.assert_allclose(
        compiled_gemm.grad_input(gy, w, geom, x.shape[2:]),
        gemm.grad_input(gy.copy(), w.copy(), geom, x.shape[2:]),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        compiled_gemm.grad_weight(x, gy, geom),
        gemm.grad_weight(x.copy(), gy.copy(), geom),
        rtol=1e-12,
        atol=1e-12,
    )


def test_adjoint_identities(rng, isa):
    for nd in (1, 2, 3):
        geom = ConvGeometry.create(
            (3,) * nd, (2, 1, 3)[:nd], ((1, 2), (0, 1), (2, 0))[:nd], (1, 2, 1)[:nd], 2, ndim=nd
        )
        x = rng.standard_normal((2, 4) + (9, 8, 7)[:nd])
        w = rng.standard_normal((6, 2) + (3,) * nd)
        assert_passes_are_adjoint(compiled_gemm, x, w, geom, rng)


@pytest.mark.parametrize("stride", [(2, 1), (1, 1)])  # im2col; stride 1: implicit on the vector builds
def test_grad_weight_is_deterministic(rng, monkeypatch, stride):
    """Per-worker accumulators over a fixed assignment of items: bitwise equal results on every run."""
    monkeypatch.setattr(gemm, "WORKER_MIN_MACS", 0)
    monkeypatch.setattr(compiled_gemm, "TILE_BYTES", 1)
    monkeypatch.setattr(compiled_gemm, "MIN_BAND", 7)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_SLAB_BYTES", 1)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_GW_MIN_POSITIONS", 0)
    previous = backends.get_num_threads()
    backends.set_num_threads(2)
    try:
        x = rng.standard_normal((3, 4, 20, 18)).astype(np.float32)
        geom = ConvGeometry.create((3, 3), stride, 1, 1, 1, ndim=2)
        gy = rng.standard_normal((3, 6) + geom.output_size((20, 18))).astype(np.float32)
        first = compiled_gemm.grad_weight(x, gy, geom)
        for _ in range(3):
            np.testing.assert_array_equal(compiled_gemm.grad_weight(x, gy, geom), first)
    finally:
        backends.set_num_threads(previous)


def test_float32_accuracy_bound(rng, isa):
    geom = ConvGeometry.create((5, 5), 2, 2, 1, 1, ndim=2)
    x, w = rng.standard_normal((2, 16, 30, 30)), rng.standard_normal((32, 16, 5, 5)) / 20
    gy = rng.standard_normal((2, 32, 15, 15))
    x32, w32, gy32 = (a.astype(np.float32) for a in (x, w, gy))
    assert relative_error(compiled_gemm.forward(x32, w32, geom), compiled_gemm.forward(x, w, geom)) < 2e-6
    assert (
        relative_error(
            compiled_gemm.grad_input(gy32, w32, geom, (30, 30)),
            compiled_gemm.grad_input(gy, w, geom, (30, 30)),
        )
        < 2e-6
    )
    assert (
        relative_error(compiled_gemm.grad_weight(x32, gy32, geom), compiled_gemm.grad_weight(x, gy, geom))
        < 2e-6
    )


@pytest.mark.parametrize("threads", [1, 4])
def test_grad_input_with_a_weight_pitch_of_2_kib(rng, isa, threads):
    """grad_input by gemm + col2im where the transposed weight's pitch (Cg * K = 512 or 1024 values)
    is a multiple of 2 KiB, the case the 32-byte build copies into rows: whole channels per item
    (more than 160 rows: B packed) and, on four workers, 8-channel chunks (128 rows: B in place),
    against the reference."""
    previous = backends.get_num_threads()
    backends.set_num_threads(threads)
    try:
        for c, kernel in ((32, 4), (64, 4), (128, 2)):
            geom = ConvGeometry.create(kernel, 2, 1, 1, 1, ndim=2)
            size = (13, 10)
            out = geom.output_size(size)
            w = rng.standard_normal((24, c, kernel, kernel)).astype(np.float32)
            gy = rng.standard_normal((1, 24) + out).astype(np.float32)
            b = rng.standard_normal(c).astype(np.float32)
            resolved = geom.with_padding(geom.pads(size))
            expected = reference.conv_passes(np.zeros((1, c) + size, np.float32), w, gy, resolved)[1]
            expected = expected + b.reshape(-1, 1, 1)
            got = compiled_gemm.grad_input(gy, w, geom, size, b)
            np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * float(np.abs(expected).max()),
                                       err_msg=f"{c} channels, {kernel}x{kernel}")
    finally:
        backends.set_num_threads(previous)


def test_stride1_grad_input_runs_as_the_adjoint_forward_only_on_enough_positions(rng, monkeypatch):
    """Below ADJOINT_MIN_POSITIONS input positions the flipped weight copy costs more than col2im:
    the grad_input pass of the C kernel (code 1) runs; from there, the adjoint's forward (code 0)."""
    geom = ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)
    w = rng.standard_normal((4, 4, 3, 3))
    for n, size, code in ((2, 20, 1), (3, 20, 0)):  # 800 and 1200 input positions
        calls = _uses_c(monkeypatch)
        gy = rng.standard_normal((n, 4, size, size))
        got = compiled_gemm.grad_input(gy, w, geom, (size, size))
        assert calls == [code]
        np.testing.assert_allclose(got, gemm.grad_input(gy, w, geom, (size, size)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("n", "size", "kernel", "stride", "groups"), [
    (8, (4, 4), (3, 3), 1, 1), (5, (7, 7), (3, 3), 2, 1), (7, (5, 6), (2, 3), (2, 1), 2),
    (3, (9,), (4,), 2, 1), (6, (3, 4, 3), (3, 2, 2), 1, 2), (9, (6, 6), (1, 1), 2, 1)])
def test_grad_input_of_small_images_takes_chunks_of_them(rng, monkeypatch, isa, dtype, threads, n, size,
                                                          kernel, stride, groups):
    """Fewer output positions than GI_IMAGE_COLUMNS: the C grad_input runs chunks of whole images per
    product (their gy side by side, a multiple of the threads' chunks), with the bias and ReLU epilogue
    per image; equal to the reference (and to one image at a time)."""
    import npconv

    seen = _tilings(monkeypatch)
    monkeypatch.setattr(compiled_gemm, "ADJOINT_MIN_POSITIONS", 1 << 62)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    geom = ConvGeometry.create(kernel, stride, 1, 1, groups, ndim=len(size))
    c, o = 4 * groups, 6 * groups
    w = rng.standard_normal((o, c // groups) + kernel).astype(dtype)
    gy = rng.standard_normal((n, o) + geom.output_size(size)).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    expected = reference.conv_passes(np.zeros((n, c) + size), w.astype(np.float64), gy.astype(np.float64),
                                     geom.with_padding(geom.pads(size)))[1]
    expected = np.maximum(expected + bias.reshape((-1,) + (1,) * len(size)), 0)
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(threads)
        got = compiled_gemm.grad_input(gy, w, geom, size, epilogue=Epilogue(bias, Activation("relu")))
        images = seen[-1][-4]
        monkeypatch.setattr(compiled_gemm, "GI_IMAGE_COLUMNS", 0)
        one = compiled_gemm.grad_input(gy, w, geom, size, epilogue=Epilogue(bias, Activation("relu")))
        assert seen[-1][-4] == 1
    finally:
        npconv.set_num_threads(previous)
    chunks = -(-n // images)
    assert images > 1 and chunks % threads == 0 and images * (chunks - 1) < n
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())))
    np.testing.assert_allclose(got, one, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())))


def test_grad_input_chunks_of_small_images_stay_within_the_workspace_share(rng, monkeypatch):
    """The chunks' columns and gy take at most the thread's share of gemm.WORKSPACE_BYTES (here made
    small): fewer images per chunk, or one image at a time with bands where even two do not fit."""
    import npconv

    seen = _tilings(monkeypatch)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    monkeypatch.setattr(compiled_gemm, "GI_CHANNEL_SPLIT", float("inf"))  # chunks of images, not channels
    geom = ConvGeometry.create((3, 3), 2, 1, 1, 1, ndim=2)
    w = rng.standard_normal((8, 16, 3, 3))
    gy = rng.standard_normal((8, 8, 3, 3))  # 6x6 inputs, 9 output positions an image
    per_image = (16 * 9 + 8) * 9 * 8  # (columns + gy) bytes of one image
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(2)
        for share, images in ((1 << 20, 4), (3 * per_image, 3), (per_image + 1, 1)):
            monkeypatch.setattr(gemm, "WORKSPACE_BYTES", 2 * share)
            got = compiled_gemm.grad_input(gy, w, geom, (6, 6))
            geometry = seen[-1]
            assert geometry[-4] <= images and (images == 1) == (geometry[-4] == 1), (share, geometry)
            scratch = backends.core.module.gemm_conv_plan(1, geometry)[0] * 8
            assert scratch <= share + 8 * 1024 * 1024  # plus the gemm's own packing buffer (GM_SCRATCH)
            np.testing.assert_allclose(got, gemm.grad_input(gy, w, geom, (6, 6)), rtol=1e-12, atol=1e-12)
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize(("n", "c", "o", "size", "kernel", "stride"), [
    (4, 16, 6, (4, 4), (3, 3), 1), (3, 11, 5, (5, 3), (3, 2), 2), (2, 9, 4, (7,), (5,), 2),
    (2, 16, 3, (2, 2, 2), (2, 2, 2), 1), (2, 40, 8, (4, 4), (1, 1), 2)])
def test_grad_input_of_a_batch_splits_its_channels_where_the_weight_outweighs_its_columns(
        rng, monkeypatch, isa, dtype, threads, n, c, o, size, kernel, stride):
    """At least GI_CHANNEL_SPLIT weight columns (Cg*K) per column of the batch: one item per worker,
    all images' gy side by side and ceil(C / threads) input channels each (odd counts: a shorter last
    chunk); equal to the reference with the bias and ReLU epilogue. Below the ratio, or where all the
    images' columns exceed the thread's share of the workspace, the images are split as before."""
    import npconv

    seen = _tilings(monkeypatch)
    monkeypatch.setattr(compiled_gemm, "ADJOINT_MIN_POSITIONS", 1 << 62)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    geom = ConvGeometry.create(kernel, stride, 1, 1, 1, ndim=len(size))
    out = geom.output_size(size)
    w = rng.standard_normal((o, c) + kernel).astype(dtype)
    gy = rng.standard_normal((n, o) + out).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    expected = reference.conv_passes(np.zeros((n, c) + size), w.astype(np.float64), gy.astype(np.float64),
                                     geom.with_padding(geom.pads(size)))[1]
    expected = np.maximum(expected + bias.reshape((-1,) + (1,) * len(size)), 0)
    ratio = c * math.prod(kernel) / (n * math.prod(out))
    assert ratio >= compiled_gemm.GI_CHANNEL_SPLIT
    tol = TOL[np.dtype(dtype)]
    previous = npconv.get_num_threads()
    try:
        npconv.set_num_threads(threads)
        for split, share, splits in ((ratio, 1 << 30, True), (ratio * 1.01, 1 << 30, False),
                                     (ratio, 64, False)):
            monkeypatch.setattr(compiled_gemm, "GI_CHANNEL_SPLIT", split)
            monkeypatch.setattr(gemm, "WORKSPACE_BYTES", threads * share)
            got = compiled_gemm.grad_input(gy, w, geom, size, epilogue=Epilogue(bias, Activation("relu")))
            images, chunk = seen[-1][-4:-2]
            assert (images == n and chunk == -(-c // threads)) == splits, (split, share, seen[-1])
            scale = max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * scale)
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tiling", ["default", "positions", "image-chunks"])
@pytest.mark.parametrize(("size", "kernel", "stride", "padding", "dilation"), [
    ((9, 13), (4, 4), 2, 1, 1), ((8, 40), (3, 7), 2, 3, 1), ((5, 6), (2, 5), (1, 2), 2, (1, 2)),
    ((23,), (4,), 2, 0, 1), ((4, 5, 9), (2, 3, 4), (1, 2, 2), 1, 1),
    ((3, 6, 11), (1, 2, 6), (1, 1, 2), 2, 1)])
def test_strided_col2im_through_even_and_odd_columns_matches_the_reference(
        rng, monkeypatch, isa, dtype, tiling, size, kernel, stride, padding, dilation):
    """Stride 2 and at least 4 taps along the last axis: grad_input's col2im adds each channel's columns
    into the even and odd input columns apart, then interleaves them into gx; odd and even widths,
    dilation (all taps on one parity), 1-d/2-d/3-d, bands that start inside a row (one plane of the first
    axis: its rows only) and whole images, the bias and ReLU epilogue; equal to the reference."""
    gemm_tiling(monkeypatch, tiling)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    seen = _tilings(monkeypatch)
    geom = ConvGeometry.create(kernel, stride, padding, dilation, 1, ndim=len(size))
    n, c, o = 3, 5, 4
    w = rng.standard_normal((o, c) + kernel).astype(dtype)
    gy = rng.standard_normal((n, o) + geom.output_size(size)).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    expected = reference.conv_passes(np.zeros((n, c) + size), w.astype(np.float64), gy.astype(np.float64),
                                     geom.with_padding(geom.pads(size)))[1]
    expected = np.maximum(expected + bias.reshape((-1,) + (1,) * len(size)), 0)
    got = compiled_gemm.grad_input(gy, w, geom, size, epilogue=Epilogue(bias, Activation("relu")))
    assert seen, "the C grad_input ran"
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("width", "row_shift"), [(6, True), (7, False)])  # im2col of 7x7: 49 positions
def test_fused_activation_epilogue(rng, monkeypatch, isa, dtype, width, row_shift):
    """``epilogue=``: bias then ReLU / ReLU6 / Hardtanh in the C epilogue (NaN stays NaN), SiLU after the
    kernel; forward and grad_input (col2im and stride-1 adjoint forward). The products' columns past
    whole vectors (49 or 98 of them: 48 or 96 in tiles) are dot products with an epilogue of their own."""
    monkeypatch.setattr(compiled_gemm, "ROW_SHIFT", row_shift)
    geom = ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)
    # one 7x7 image is an item of its own (two would be one product over both, the epilogue after it)
    x = rng.standard_normal((1 if width == 7 else 2, 3, 7, width)).astype(dtype)
    o = 20  # row tiles of 8 (AVX-512) and 4 (AVX2): the bias of each
    w, b = rng.standard_normal((o, 3, 3, 3)).astype(dtype), rng.standard_normal(o).astype(dtype)
    x[0, 0, 3, 3] = np.nan
    plain = compiled_gemm.forward(x, w, geom, b)
    assert np.isnan(plain).any()
    np.testing.assert_allclose(plain, gemm.forward(x, w, geom, b), rtol=1e-5, atol=1e-5)  # the NumPy engine
    for activation, expected in ((Activation("relu"), np.maximum(plain, 0)),
                                 (Activation("hardtanh", 0.0, 6.0), np.clip(plain, 0, 6)),
                                 (Activation("hardtanh", -0.5, 0.25), np.clip(plain, -0.5, 0.25)),
                                 (Activation("silu"), plain * (1 / (1 + np.exp(-plain))))):
        fused = compiled_gemm.forward(x, w, geom, epilogue=Epilogue(b, activation))
        if activation.kind == "silu":
            np.testing.assert_allclose(fused, expected, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(fused, expected)
    gy = rng.standard_normal((2, o, 4, (width + 1) // 2)).astype(dtype)
    bx = rng.standard_normal(3).astype(dtype)
    strided = ConvGeometry.create((3, 3), 2, 1, 1, 1, ndim=2)  # grad_input by gemm + col2im
    np.testing.assert_array_equal(
        compiled_gemm.grad_input(gy, w, strided, (7, width),
                                 epilogue=Epilogue(bx, Activation("hardtanh", 0, 1))),
        np.clip(compiled_gemm.grad_input(gy, w, strided, (7, width), bx), 0, 1))
    monkeypatch.setattr(compiled_gemm, "ADJOINT_MIN_POSITIONS", 0)
    gy1 = rng.standard_normal((2, o, 7, width)).astype(dtype)  # stride 1: the adjoint's forward
    np.testing.assert_array_equal(
        compiled_gemm.grad_input(gy1, w, geom, (7, width), epilogue=Epilogue(bx, Activation("relu"))),
        np.maximum(compiled_gemm.grad_input(gy1, w, geom, (7, width), bx), 0))


@pytest.mark.parametrize(("kernel", "stride", "cin"), [(3, 1, 40), (3, 2, 40), (1, 1, 300)],
                         ids=["implicit", "im2col-bands", "1x1-in-place"])
@pytest.mark.parametrize("bias", [False, True])
def test_several_depth_blocks_sum_in_scratch_over_split_images(rng, monkeypatch, parallel, isa, kernel,
                                                              stride, cin, bias):
    """Products over several depth blocks (Cg * K > 256) whose workers split one image's positions sum
    in scratch and write y once with the epilogue (bias, ReLU / Hardtanh, NaN kept): the reference's
    values, and the epilogue's exactly as applied after the kernel; each worker a band of the image."""
    monkeypatch.setattr(compiled_gemm, "CHANNEL_SPLIT_MAX_POSITIONS", 0)  # positions, not channel parts
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    tilings = _tilings(monkeypatch)
    pad = kernel // 2
    geom = ConvGeometry.create((kernel, kernel), stride, pad, 1, 1, ndim=2)
    x = rng.standard_normal((1, cin, 13, 11)).astype(np.float32)  # Cg * K = 360 or 300: two depth blocks
    o = 56  # more than the lanes path takes (48): the packed products
    w = (rng.standard_normal((o, cin, kernel, kernel)) / math.sqrt(cin * kernel * kernel)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    x[0, 5, 6, 4] = np.nan
    plain = compiled_gemm.forward(x, w, geom, b)
    band, images, _, shift, implicit = tilings[0][-5:]
    if compiled_gemm.implicit_runs(np.float32):  # the vector builds (the generic one calls the BLAS)
        assert images == 1 and shift == 0 and bool(implicit) == (kernel == 3 and stride == 1)
        if backends.get_num_threads() > 1:  # the image's lines (implicit) or positions split
            assert band < (13 if implicit else math.prod(geom.output_size((13, 11))))
    resolved = geom.with_padding(geom.pads(x.shape[2:]))
    clean = np.nan_to_num(x, nan=0.0).astype(np.float64)
    padded = np.pad(clean, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    expected = reference.conv(padded, w.astype(np.float64), None, resolved.stride, 0, resolved.dilation, 1)
    if bias:
        expected = expected + b.astype(np.float64).reshape(-1, 1, 1)
    reached = np.isnan(plain)
    assert reached.any() and not reached.all()
    np.testing.assert_allclose(plain[~reached], expected[~reached], rtol=2e-5, atol=2e-5)
    for activation, after in ((Activation("relu"), np.maximum(plain, 0)),
                              (Activation("hardtanh", -0.5, 0.25), np.clip(plain, -0.5, 0.25))):
        fused = compiled_gemm.forward(x, w, geom, epilogue=Epilogue(b, activation))
        np.testing.assert_array_equal(fused, after)


def test_other_dtypes_and_huge_geometries_run_on_the_numpy_engine(rng, monkeypatch):
    calls = _uses_c(monkeypatch)
    geom = ConvGeometry.create((3,), 1, 1, 1, 1, ndim=1)
    x, w = rng.standard_normal((2, 3, 8)) + 1j, rng.standard_normal((4, 3, 3)) + 0j
    np.testing.assert_allclose(compiled_gemm.forward(x, w, geom), gemm.forward(x, w, geom), rtol=1e-12)
    np.testing.assert_array_equal(
        compiled_gemm.forward(np.zeros((0, 3, 8)), w.real, geom), np.zeros((0, 4, 8))
    )
    huge = ConvGeometry.create((2,), 2**40, ((2**40, 0),), 1, 1, ndim=1)
    xs, ws = rng.standard_normal((1, 2, 5)), rng.standard_normal((3, 2, 2))
    np.testing.assert_allclose(compiled_gemm.forward(xs, ws, huge), gemm.forward(xs, ws, huge), rtol=1e-12)
    assert calls == []


def test_memory_stays_bounded_for_huge_padding_and_stride(rng):
    """Padding and stride cost no scratch: a call's extra memory stays within workspace.memory_bound."""
    import tracemalloc

    from npconv.kernels import workspace

    cases = [
        (ConvGeometry.create((3, 3), 1, 300, 20, 1, ndim=2), (1, 4, 8, 8)),
        (ConvGeometry.create((3, 3), 997, 0, 1, 1, ndim=2), (1, 4, 1000, 1000)),
    ]
    for geom, x_shape in cases:
        x, w = (
            rng.standard_normal(x_shape).astype(np.float32),
            rng.standard_normal((4, 4, 3, 3)).astype(np.float32),
        )
        workspace.clear()
        tracemalloc.start()
        y = compiled_gemm.forward(x, w, geom)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= workspace.memory_bound(x.nbytes, w.nbytes, y.nbytes), (geom, peak)


def _guard_args():
    geometry = (1, 2, 3, 1, 1, 5, 5, 1, 5, 5, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 25, 1, 1, 0, 0)
    size, _ = backends.core.module.gemm_conv_plan(0, geometry)
    return geometry, np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), np.zeros((1, 3, 5, 5)), np.zeros(size)


def test_extension_guards_a_residual():
    """A residual (forward only) is y's size and element type and shares no memory with y or scratch;
    a refused call writes nothing; an accepted one adds it before the activation."""
    core, isa, routines = backends.core.module, backends.core.isa_index, gemm_routines()
    geometry, x, w, y, scratch = _guard_args()
    x[...], w[...] = 1.0, 0.5
    res = np.full(y.shape, -10.0)
    core.gemm_conv(isa, 0, routines, x, w, None, y, scratch, geometry, 0, 1, 1, 0.0, 0.0, res)
    expected = np.zeros(y.shape)
    core.gemm_conv(isa, 0, routines, x, w, None, expected, scratch, geometry, 0, 1, 0, 0.0, 0.0)
    np.testing.assert_array_equal(y, np.maximum(expected - 10.0, 0))  # ReLU after the residual
    core.gemm_conv(isa, 0, routines, x, w, None, y, scratch, geometry, 0, 1, 0, 0.0, 0.0, None)  # None: none
    np.testing.assert_array_equal(y, expected)
    y[...] = 7.0

    def refused(error, match, res_, pass_=0):
        with pytest.raises(error, match=match):
            core.gemm_conv(isa, pass_, routines, x, w, None, y, scratch, geometry, 0, 1, 0, 0.0, 0.0, res_)
        assert (y == 7.0).all()

    refused(ValueError, "residual", res.reshape(-1)[:-1])
    refused(TypeError, "element type", res.astype(np.float32))
    refused(ValueError, "overlap", y)
    refused(ValueError, "only the forward pass takes a residual", res, 1)


def test_extension_guards_its_buffers():
    """The extension checks sizes, element types, ranges and overlap itself; a refused call writes nothing."""
    core, isa, routines = backends.core.module, backends.core.isa_index, gemm_routines()
    geometry, x, w, y, scratch = _guard_args()
    core.gemm_conv(isa, 0, routines, x, w, None, y, scratch, geometry, 0, 1, 0, 0.0, 0.0)
    y[...] = 7.0

    def refused(error, match, *args):
        with pytest.raises(error, match=match):
            core.gemm_conv(*args)
        assert (y == 7.0).all()

    refused(ValueError, "scratch", isa, 0, routines, x, w, None, y, scratch[:-1], geometry, 0, 1, 0, 0.0, 0.0)
    refused(
        ValueError, "output", isa, 0, routines, x, w, None, y[:, :2], scratch, geometry, 0, 1, 0, 0.0, 0.0
    )
    refused(ValueError, "weight", isa, 0, routines, x, w[:2], None, y, scratch, geometry, 0, 1, 0, 0.0, 0.0)
    refused(ValueError, "bias", isa, 0, routines, x, w, np.zeros(2), y, scratch, geometry, 0, 1, 0, 0.0, 0.0)
    refused(ValueError, "item range", isa, 0, routines, x, w, None, y, scratch, geometry, 0, 2, 0, 0.0, 0.0)
    refused(
        TypeError,
        "element type",
        isa,
        0,
        routines,
        x.astype(np.float32),
        w,
        None,
        y,
        scratch,
        geometry,
        0,
        1,
        0,
        0.0,
        0.0,
    )
    refused(
        ValueError,
        "contiguous",
        isa,
        0,
        routines,
        x[..., ::-1],
        w,
        None,
        y,
        scratch,
        geometry,
        0,
        1,
        0,
        0.0,
        0.0,
    )
    shared = np.zeros(scratch.size + y.size)
    refused(
        ValueError,
        "overlap",
        isa,
        0,
        routines,
        x,
        w,
        None,
        shared[: y.size].reshape(y.shape),
        shared[y.size // 2 :],
        geometry,
        0,
        1,
        0,
        0.0,
        0.0,
    )
    assert not shared.any()
    refused(
        ValueError,
        "geometry value",
        isa,
        0,
        routines,
        x,
        w,
        None,
        y,
        scratch,
        (0,) + geometry[1:],
        0,
        1,
        0,
        0.0,
        0.0,
    )
    refused(
        ValueError,
        "divisible",
        isa,
        0,
        routines,
        x,
        w,
        None,
        y,
        scratch,
        geometry[:3] + (2,) + geometry[4:],
        0,
        1,
        0,
        0.0,
        0.0,
    )
    refused(
        ValueError,
        "beyond",
        isa,
        0,
        routines,
        x,
        w,
        None,
        y,
        scratch,
        geometry[:22] + (26,) + geometry[23:],
        0,
        1,
        0,
        0.0,
        0.0,
    )
    refused(
        ValueError,
        "row shift",
        isa,
        0,
        routines,
        x,
        w,
        None,
        y,
        scratch,
        geometry[:14] + (2,) + geometry[15:-2] + (2, 0),
        0,
        1,
        0,
        0.0,
        0.0,
    )
    refused(ValueError, "act", isa, 0, routines, x, w, None, y, scratch, geometry, 0, 1, 4, 0.0, 0.0)
    refused(ValueError, "pass", isa, 3, routines, x, w, None, y, scratch, geometry, 0, 1, 0, 0.0, 0.0)
    refused(ValueError, "ISA variant", 99, 0, routines, x, w, None, y, scratch, geometry, 0, 1, 0, 0.0, 0.0)
    refused(TypeError, "sgemm capsule", isa, 0, (1, 2), x, w, None, y, scratch, geometry, 0, 1, 0, 0.0, 0.0)
    refused(TypeError, "27 ints", isa, 0, routines, x, w, None, y, scratch, geometry[:-1], 0, 1, 0, 0.0, 0.0)
    implicit = geometry[:22] + (5, 1, 1, 0, 1)  # bands of 5 output lines
    strided = implicit[:14] + (2,) + implicit[15:]
    tail = (0, 1, 0, 0.0, 0.0)
    refused(ValueError, "stride 1", isa, 0, routines, x, w, None, y, scratch, strided, *tail)
    six_lines = implicit[:22] + (6,) + implicit[23:]
    refused(ValueError, "whole planes", isa, 0, routines, x, w, None, y, scratch, six_lines, *tail)
    four = implicit[:-1] + (4,)  # 1 packs the columns, 2 puts the forward's channels on the lanes, 3 direct
    refused(ValueError, "geometry value 26", isa, 0, routines, x, w, None, y, scratch, four, *tail)
    direct = implicit[:-1] + (3,)  # bands of output rows of a 1-d/2-d geometry, stride 1 or 2 along the rows
    for bad, match in ((direct[:4] + (2,) + direct[5:7] + (2,) + direct[8:], "1-d or 2-d"),  # 3-d
                       (direct[:15] + (3,) + direct[16:], "stride 1 or 2"),
                       (direct[:22] + (6,) + direct[23:], "bands of output rows"),
                       (direct[:24] + (4,) + direct[25:], "chunk beyond")):  # more parts than output channels
        refused(ValueError, match, isa, 0, routines, x, w, None, y, scratch, bad, *tail)
    for pass_code in (1, 2):
        with pytest.raises(ValueError, match="forward pass only"):
            core.gemm_conv_plan(pass_code, direct)
    if "avx2" in backends.core.isas:
        vector = backends.core.module.ISA_NAMES.index("avx2")
        size = core.gemm_conv_plan(0, implicit)[0]
        refused(TypeError, "float32", vector, 0, routines, x, w, None, y, np.zeros(size), implicit, *tail)
        x32, w32, y32, s32 = (a.astype(np.float32) for a in (x, w, y, np.zeros(size)))
        core.gemm_conv(vector, 0, routines, x32, w32, None, y32, s32, implicit, *tail)
        assert np.isfinite(y32).all()
        y32[...] = 7.0
        refused(ValueError, "avx2 and avx512", 0, 0, routines, x32, w32, None, y32, s32, implicit, *tail)
        assert (y32 == 7.0).all()
        size = core.gemm_conv_plan(0, direct)[0]
        refused(TypeError, "float32", vector, 0, routines, x, w, None, y, np.zeros(size), direct, *tail)
        s32 = np.zeros(size, np.float32)
        refused(ValueError, "avx2 and avx512", 0, 0, routines, x32, w32, None, y32, s32, direct, *tail)
        for pass_code in (1, 2):  # the call's own guard, besides the plan's
            refused(ValueError, "the forward", vector, pass_code, routines, x32, w32, None, y32, s32, direct,
                    *tail)
    with pytest.raises(ValueError, match="forward and grad_weight passes only"):
        core.gemm_conv_plan(1, implicit)
    with pytest.raises(ValueError, match="too large"):
        core.gemm_conv_plan(0, (2**31 - 1, 2**31 - 1) + geometry[2:])
    with pytest.raises(ValueError, match="no bias"):
        core.gemm_conv(
            isa,
            2,
            routines,
            x,
            y,
            np.zeros(3),
            np.zeros(math.prod(w.shape)),
            scratch,
            geometry,
            0,
            1,
            0,
            0.0,
            0.0,
        )
    with pytest.raises(ValueError, match="no activation"):
        core.gemm_conv(
            isa,
            2,
            routines,
            x,
            y,
            None,
            np.zeros(math.prod(w.shape)),
            scratch,
            geometry,
            0,
            1,
            1,
            0.0,
            0.0,
        )


def test_registry_prefers_the_compiled_variant():
    args = ((2, 16, 8, 8), (8, 16, 3, 3), ConvGeometry.create((3, 3), 2, 1, 1, 1, ndim=2))
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert compiled_gemm.supports(pass_name, *args, np.dtype(np.float32))
        assert compiled_gemm.recommended(pass_name, *args, np.dtype(np.float32))
    if not registry.pure():
        assert registry.available()["gemm"].compiled
        assert plan.choose("forward", *args, np.float32) == "gemm"


def _vector_isas() -> list[str]:
    vector = [isa for isa in ("avx2", "avx512") if isa in backends.core.isas]
    if not vector:
        pytest.skip("the implicit GEMM runs on the avx2 and avx512 builds")
    return vector


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize(("c", "o", "groups"), [(16, 16, 1), (32, 5, 1), (30, 34, 2), (64, 48, 1),
                                                (15, 20, 1), (130, 3, 1), (40, 96, 2), (8, 8, 1)])
def test_implicit_forward_with_channels_on_the_lanes(rng, monkeypatch, nd, c, o, groups):
    """The implicit forward's channels-on-lanes tiles (geometry implicit 2: taken in C for at most 48
    output channels per group at 64-byte vectors, 32 at 32-byte in blocks of 16, and >= 128 column
    rows; the packed path otherwise) and the packed one (implicit 1) against the NumPy reference: 1-3
    vectors of channels and ragged counts, two blocks of channels (32-byte vectors), tiles across
    line ends and past the last plane, dilated and padded, bias and the clamp in the epilogue, bands
    of lines per item and whole images."""
    kernel, size = {1: (9, (45,)), 2: (3, (11, 14)), 3: (3, (4, 6, 7))}[nd]
    geom = ConvGeometry.create(kernel, 1, 2, 2, groups, ndim=nd)
    x = rng.standard_normal((2, c) + size).astype(np.float32)
    w = rng.standard_normal((o, c // groups) + geom.kernel_size).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y_ref = reference.conv_passes(x, w, np.zeros((2, o) + geom.output_size(size), np.float32),
                                  geom.with_padding(geom.pads(size)))[0] + b.reshape((-1,) + (1,) * nd)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS", 0)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS_BATCH", 0)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_MAX_GRID", 1e9)
    seen = _tilings(monkeypatch)
    for isa in _vector_isas():
        monkeypatch.setattr(backends.core, "isa", isa)
        for lanes, slab in ((True, 1), (True, 1 << 20), (False, 1 << 20)):
            monkeypatch.setattr(compiled_gemm, "IMPLICIT_LANES", lanes)
            monkeypatch.setattr(compiled_gemm, "IMPLICIT_SLAB_BYTES", slab)
            y = compiled_gemm.forward(x, w, geom, b)
            assert seen[-1][-1] == (2 if lanes else 1)
            np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5 * float(np.abs(y_ref).max()),
                                       err_msg=f"{isa} lanes={lanes} slab={slab}")
            clamp = Epilogue(b, Activation("hardtanh", -1.0, 2.0))
            clamped = compiled_gemm.forward(x, w, geom, epilogue=clamp)
            np.testing.assert_array_equal(clamped, np.clip(y, -1.0, 2.0))


@pytest.mark.parametrize("lanes", [False, True])
@pytest.mark.parametrize(("size", "kernel", "dilation", "padding"), [
    ((3, 32, 32), 3, 1, 0),                  # one output plane of a 3x3x3 kernel (video: depth 3 -> 1)
    ((3, 6, 4), (2, 3, 2), (2, 1, 1), 0),
    ((3, 6, 3), (3, 3, 4), (1, 1, 2), (0, 0, 2)),
    ((2, 9, 9), (2, 3, 3), 1, (0, 1, 1)),
])
def test_implicit_gemm_of_one_output_plane_of_a_deep_kernel(rng, monkeypatch, size, kernel, dilation,
                                                           padding, lanes):
    """A 3-d convolution whose output has one plane but whose kernel reaches over several input planes
    runs the implicit GEMM with whole planes per item (the slab holds every plane the kernel reads):
    treated as 2-d (one padded plane) it read past its slab and gave wrong values (before 2026-12-04).
    Forward and grad_weight against the reference; the first case with the default settings."""
    if not {"avx2", "avx512"} & set(backends.core.isas):
        pytest.skip("the implicit GEMM runs on the avx2 and avx512 builds")
    if size != (3, 32, 32):
        monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS", 0)
        monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS_BATCH", 0)
        monkeypatch.setattr(compiled_gemm, "IMPLICIT_GW_MIN_POSITIONS", 0)
        monkeypatch.setattr(compiled_gemm, "IMPLICIT_MAX_GRID", 1e9)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_LANES", lanes)
    geom = ConvGeometry.create(kernel, 1, padding, dilation, 1, ndim=3)
    out = geom.output_size(size)
    assert out[0] == 1
    x = rng.standard_normal((2, 20) + size).astype(np.float32)
    w = rng.standard_normal((12, 20) + geom.kernel_size).astype(np.float32)
    gy = rng.standard_normal((2, 12) + out).astype(np.float32)
    y_ref, _, gw_ref = reference.conv_passes(x, w, gy, geom.with_padding(geom.pads(size)))
    seen = _tilings(monkeypatch)
    for isa in {"avx2", "avx512"} & set(backends.core.isas):
        monkeypatch.setattr(backends.core, "isa", isa)
        y = compiled_gemm.forward(x, w, geom)
        assert seen[-1][-1] == (2 if lanes else 1)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * float(np.abs(y_ref).max()), err_msg=isa)
        gw = compiled_gemm.grad_weight(x, gy, geom)
        scale = float(np.abs(gw_ref).max())
        np.testing.assert_allclose(gw, gw_ref, rtol=1e-5, atol=1e-5 * scale, err_msg=isa)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("channels", [3, 16])  # 16: 144 column rows, the forward's channels on the lanes
def test_implicit_gemm_keeps_nan_and_inf_local(rng, monkeypatch, nd, channels, torch):
    """The implicit GEMM packs output positions only (forward), computes the padded grid's junk
    positions without storing them (the forward's channels on the lanes) and skips them (grad_weight):
    a NaN or an inf in x reaches exactly the outputs and weight gradients whose windows read it
    (torch's pattern), dilated and padded."""
    vector = _vector_isas()
    size = {1: (23,), 2: (9, 20), 3: (3, 40, 40)}[nd]
    geom = ConvGeometry.create(3 if nd > 1 or channels == 3 else 9, 1, 2, 2, 1, ndim=nd)
    x = rng.standard_normal((2, channels) + size).astype(np.float32)
    x[(1, 2) + tuple(s // 2 for s in size)] = np.nan
    x[(0, 0) + tuple(s - 1 for s in size)] = np.inf
    w = rng.standard_normal((4, channels) + geom.kernel_size).astype(np.float32)
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[nd]
    wt = torch.from_numpy(w).requires_grad_()
    out = conv(torch.from_numpy(x), wt, padding=2, dilation=2)
    expected = out.detach().numpy()
    gy = rng.standard_normal(expected.shape).astype(np.float32)
    out.backward(torch.from_numpy(gy))
    expected_gw = wt.grad.numpy()
    assert np.isnan(expected_gw).any() and np.isfinite(expected_gw).any()
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_GW_MIN_POSITIONS", 0)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS", 0)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_MIN_POSITIONS_BATCH", 0)
    monkeypatch.setattr(compiled_gemm, "IMPLICIT_MAX_GRID", 1e9)
    seen = _tilings(monkeypatch)
    for isa in vector:
        monkeypatch.setattr(backends.core, "isa", isa)
        y = compiled_gemm.forward(x, w, geom)
        assert seen[-1][-1] == 2
        np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
        np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
        np.testing.assert_array_equal(np.isneginf(y), np.isneginf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-5,
                                   atol=2e-6 * float(np.abs(expected[finite]).max()))
        gw = compiled_gemm.grad_weight(x, gy, geom)
        assert seen[-1][-1] == 1
        for test in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(test(gw), test(expected_gw))
        finite = np.isfinite(expected_gw)
        np.testing.assert_allclose(gw[finite], expected_gw[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_adjoint_kernel_matches_numpy(rng, dtype):
    """The core's tiled flip-and-transpose of a weight (tiles of 16 kernels: sizes across them) equals
    NumPy's, for groups, 1-3 spatial axes and non-contiguous weights."""
    from npconv.kernels.common import adjoint_kernel

    for shape, groups in (((40, 35, 3, 3), 1), ((18, 4, 2, 5), 3), ((6, 2, 7), 2), ((4, 3, 2, 3, 2), 4),
                          ((17, 33, 1, 1), 1)):
        w = rng.standard_normal(shape).astype(dtype)
        expected = adjoint_kernel(w, groups)
        got = adjoint_kernel(w, groups, compiled=True)
        assert got.dtype == dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)
    w = rng.standard_normal((8, 6, 3, 3)).astype(dtype)[:, ::2]  # non-contiguous
    np.testing.assert_array_equal(adjoint_kernel(w, 1, compiled=True), adjoint_kernel(w, 1))


def test_adjoint_kernel_binding_checks_its_arguments():
    core = backends.core.module
    w, out = np.zeros((4, 3, 3, 3), np.float32), np.zeros((3, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="groups >= 1"):
        core.adjoint_kernel(w, out, 0, 4, 3, 9)
    with pytest.raises(ValueError, match="elements"):
        core.adjoint_kernel(w, out, 1, 4, 3, 8)
    with pytest.raises(TypeError, match="same element type"):
        core.adjoint_kernel(w, out.astype(np.float64), 1, 4, 3, 9)
    with pytest.raises((ValueError, TypeError, BufferError)):
        core.adjoint_kernel(w, np.zeros((4, 3, 3, 6), np.float32)[..., ::2], 1, 4, 3, 9)


def test_worker_threshold_is_the_compiled_one(monkeypatch):
    """Ungrouped calls of at least compiled_gemm.WORKER_MIN_MACS (below the NumPy engine's
    gemm.WORKER_MIN_MACS) go to the workers as prepared jobs; smaller ones run on the caller.
    Results equal the NumPy reference either way."""
    import npconv
    from npconv.kernels import workspace

    seen = []
    real_run = workspace.run_jobs
    monkeypatch.setattr(workspace, "run_jobs",
                        lambda jobs, *a, **kw: (seen.append(len(jobs)), real_run(jobs, *a, **kw))[1])
    assert compiled_gemm.WORKER_MIN_MACS < gemm.WORKER_MIN_MACS
    rng = np.random.default_rng(0)
    geom = ConvGeometry.create(1, 1, 0, ndim=2)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(2)
    try:
        for c, o, size, threads in ((144, 32, 28, 2), (192, 64, 14, 1)):  # 3.6 M and 2.4 M multiply-adds
            assert (c * o * size * size >= compiled_gemm.WORKER_MIN_MACS) == (threads == 2)
            x = rng.standard_normal((1, c, size, size)).astype(np.float32)
            w = rng.standard_normal((o, c, 1, 1)).astype(np.float32)
            seen.clear()
            y = compiled_gemm.forward(x, w, geom)
            # one worker: called directly, or as one job where the products run on the BLAS (generic)
            assert seen == [threads] if threads > 1 else seen in ([], [1])
            assert relative_error(y, reference.conv(x.astype(np.float64), w.astype(np.float64))) < 1e-5
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tiling", ["bands", "images", "shift", "implicit"])
def test_grad_weight_fresh_writes_its_range_sum_over_any_old_values(rng, isa, dtype, tiling):
    """``fresh`` (what compiled_gemm's grad_weight passes, its accumulators np.empty): the range's sum is
    written over NaN-filled memory (the first item's products at beta 0), without it added to what is
    there; an empty fresh range writes zeros; only grad_weight takes it, and its job cannot share a
    range (one sum, not claimed in pieces)."""
    if tiling == "implicit" and (isa == "generic" or dtype != np.float32):
        pytest.skip("the implicit GEMM runs float32 on the avx2 and avx512 builds")
    core = backends.core.module
    index = core.ISA_NAMES.index(isa)
    n, c, o, size = 3, 4, 5, (6, 7)
    geom = ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)
    tail = {"bands": dict(band=10), "images": dict(band=42, images=2), "shift": dict(band=2, shift=2),
            "implicit": dict(band=3, implicit=1)}[tiling]
    geometry = compiled_gemm._geometry(n, c, o, size, geom, **tail)
    elements, items = core.gemm_conv_plan(2, geometry)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    gy = rng.standard_normal((n, o) + size).astype(dtype)
    expected = reference.conv_passes(x, rng.standard_normal((o, c, 3, 3)).astype(dtype), gy,
                                     geom.with_padding(geom.pads(size)))[2]
    if tiling == "shift":  # the row-shift layout (k0, O, Cg, K_rest)
        expected = expected.transpose(2, 0, 1, 3)
    routines, scratch = gemm_routines(), np.empty(elements, dtype)
    args = (index, 2, routines, x, gy, None)
    out = np.full(expected.size, np.nan, dtype)
    core.gemm_conv(*args, out, scratch, geometry, 0, items, 0, 0.0, 0.0, None, True)
    np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=TOL[np.dtype(dtype)],
                               atol=TOL[np.dtype(dtype)])
    ones = np.ones(expected.size, dtype)
    core.gemm_conv(*args, ones, scratch, geometry, 0, items, 0, 0.0, 0.0)  # not fresh: added
    np.testing.assert_allclose(ones.reshape(expected.shape), 1 + expected, rtol=TOL[np.dtype(dtype)],
                               atol=TOL[np.dtype(dtype)])
    out[:] = np.nan
    core.gemm_conv(*args, out, scratch, geometry, 1, 1, 0, 0.0, 0.0, None, True)
    assert (out == 0).all()
    with pytest.raises(ValueError, match="only the grad_weight pass takes fresh"):
        core.gemm_conv(index, 0, routines, x, rng.standard_normal((o, c, 3, 3)).astype(dtype), None,
                       np.empty((n, o) + size, dtype), np.empty(core.gemm_conv_plan(0, geometry)[0], dtype),
                       geometry, 0, 1, 0, 0.0, 0.0, None, True)
    job = core.gemm_conv_job(*args, out, scratch, geometry, 0, items, 0, 0.0, 0.0, None, True)
    with pytest.raises(ValueError, match="no item range to share"):
        core.jobs_share([job], np.zeros(1, np.int64), 1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("images", [1, 2])
def test_grad_input_through_the_padded_extent_leaves_unreached_inputs_zero(rng, isa, dtype, images):
    """grad_input's col2im of whole small images with unit strides adds each tap's columns into the
    zero-padded extent the outputs read and then its interior into gx (`gc_pad_elements`): with a
    geometry whose outputs reach only part of the input (rows past the last output's reach, which the
    extent does not hold), those rows stay zero and the rest equals the reference on the reached part;
    one image per product and chunks of two."""
    core = backends.core.module
    n, c, o, size, reach = 3, 4, 5, (6, 7), 5  # 4 output rows (padding 1) read input rows 0..4
    geom = ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)
    base = compiled_gemm._geometry(n, c, o, size, geom)
    length = 4 * 7
    geometry = base[:7] + (1, 4, 7) + base[10:22] + ((length, images, c, 0, 0) if images > 1 else
                                                      (length, 1, c, 0, 0))
    elements, items = core.gemm_conv_plan(1, geometry)
    w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    gy = rng.standard_normal((n, o, 4, 7)).astype(dtype)
    gx = np.full((n, c) + size, np.nan, dtype)
    core.gemm_conv(core.ISA_NAMES.index(isa), 1, gemm_routines(), gy, w, None, gx, np.empty(elements, dtype),
                   geometry, 0, items, 0, 0.0, 0.0)
    expected = np.zeros((n, c) + size)
    expected[:, :, :reach] = reference.conv_grad_input(gy.astype(np.float64), w.astype(np.float64),
                                                       (reach, 7), (1, 1), ((1, 0), (1, 1)), (1, 1), 1)
    np.testing.assert_allclose(gx, expected, rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_image_chunks_pack_through_padded_planes_that_hold_only_what_outputs_read(rng, isa, dtype):
    """Chunks of whole small images with unit strides pack their columns from each image's zero-padded
    channel plane (`GC(pad_plane)`: the extent the outputs read), forward and grad_weight: with a
    geometry whose 4 output rows read only input rows 0..4 of 6 (the plane holds no more), both equal
    the reference on the reached rows - row 5's values, NaN here, never read."""
    core = backends.core.module
    index, routines = core.ISA_NAMES.index(isa), gemm_routines()
    n, c, o, size, reach = 3, 4, 5, (6, 7), 5
    geom = ConvGeometry.create((3, 3), 1, 1, 1, 1, ndim=2)
    base = compiled_gemm._geometry(n, c, o, size, geom)
    geometry = base[:7] + (1, 4, 7) + base[10:22] + (4 * 7, 2, 1, 0, 0)  # two images per item
    x = rng.standard_normal((n, c) + size).astype(dtype)
    x[:, :, reach:] = np.nan
    w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    gy = rng.standard_normal((n, o, 4, 7)).astype(dtype)
    args = ((1, 1), ((1, 0), (1, 1)), (1, 1), 1)
    x64 = x[:, :, :reach].astype(np.float64)
    elements, items = core.gemm_conv_plan(0, geometry)
    y = np.empty((n, o, 4, 7), dtype)
    core.gemm_conv(index, 0, routines, x, w, None, y, np.empty(elements, dtype), geometry, 0, items,
                   0, 0.0, 0.0)
    np.testing.assert_allclose(y, reference.conv(x64, w.astype(np.float64), None, *args),
                               rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])
    elements, items = core.gemm_conv_plan(2, geometry)
    gw = np.empty(w.size, dtype)
    core.gemm_conv(index, 2, routines, x, gy, None, gw, np.empty(elements, dtype), geometry, 0, items,
                   0, 0.0, 0.0, None, True)
    np.testing.assert_allclose(gw.reshape(w.shape),
                               reference.conv_grad_weight(x64, gy.astype(np.float64), (3, 3), *args),
                               rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])
