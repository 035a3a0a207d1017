"""3-d convolutions of ``(KD, 3, 3)`` kernels on the compiled Winograd (kernels/compiled_winograd's
``_forward3d``: F(4x4, 3x3) in each depth slice, direct along the depth, the depth windows as the
images of one 2-d call per image) against the float64 NumPy reference and torch, on every ISA variant
this CPU runs: forward and grad_input in float32 and float64 on random geometries (depth kernels 1-4,
any zero padding per side, odd sizes at the tile edges, work items of a few tiles, non-contiguous
inputs, one and two threads), the fused bias and activation, the planner's choice and autograd end to
end, the extension's image step ``XS``, and the fallback beyond the kernel's limits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npconv
import reference
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import plan
from npconv.kernels.blas import gemm_routines
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation

compiled_winograd = pytest.importorskip("npconv.kernels.compiled_winograd",
                                        reason=f"compiled core not in use: {backends.core.reason}")

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 5e-6}


def _geom(kd: int, padding) -> ConvGeometry:
    return ConvGeometry.create((kd, 3, 3), 1, padding, 1, 1, ndim=3)


def _max_relative(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max()))) if ref.size else 0.0


def _check(rng, n, c, o, kd, size, padding, dtype, bias, tiles=None, contiguous=True):
    """forward, grad_input (bias or none) and grad_weight against the float64 reference."""
    geom = _geom(kd, padding)
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert compiled_winograd.supports(pass_name, (n, c) + size, (o, c, kd, 3, 3), geom, dtype), pass_name
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = rng.standard_normal((o, c, kd, 3, 3)).astype(dtype)
    if not contiguous:
        x = np.asfortranarray(x)
        w = w.transpose(1, 0, 2, 3, 4).copy().transpose(1, 0, 2, 3, 4)
    out = geom.output_size(size)
    gy = rng.standard_normal((n, o) + out).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    bx = rng.standard_normal(c).astype(dtype) if bias else None
    wide = (a.astype(np.float64) for a in (x, w, gy))
    y_ref, gx_ref, gw_ref = reference.conv_passes(*wide, geom.with_padding(geom.pads(size)))
    if bias:
        y_ref = y_ref + b.reshape(-1, 1, 1, 1)
        gx_ref = gx_ref + bx.reshape(-1, 1, 1, 1)
    with pytest.MonkeyPatch.context() as patch:
        if tiles is not None:
            patch.setattr(compiled_winograd, "_TARGET_TILES", tiles)
        y = compiled_winograd.forward(x, w, geom, bias=b)
        gx = compiled_winograd.grad_input(gy, w, geom, size, bias=bx)
        gw = compiled_winograd.grad_weight(x, gy, geom)
    what = f"{n=} {c=} {o=} {kd=} {size=} {padding=} {dtype=} {bias=} {tiles=} {contiguous=}"
    for name, got, ref in (("forward", y, y_ref), ("grad_input", gx, gx_ref), ("grad_weight", gw, gw_ref)):
        assert got.shape == ref.shape and got.dtype == dtype, (name, what)
        assert _max_relative(got, ref) <= TOL[np.dtype(dtype)], (name, what, _max_relative(got, ref))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_geometries_match_the_reference(isa, parallel, dtype, data):
    kd = data.draw(st.integers(1, 4), label="kd")
    padding = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in range(3))
    extents = (kd, 3, 3)
    size = tuple(data.draw(st.integers(max(1, e - lo - hi), 11 if i else 6))
                 for i, (e, (lo, hi)) in enumerate(zip(extents, padding, strict=True)))
    n, c, o = (data.draw(st.integers(1, m), label=k) for k, m in (("n", 3), ("c", 5), ("o", 5)))
    tiles = data.draw(st.sampled_from([None, 1, 3, 7]), label="tiles")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    bias, contiguous = data.draw(st.booleans(), label="bias"), data.draw(st.booleans(), label="contiguous")
    _check(np.random.default_rng(seed), n, c, o, kd, size, padding, dtype, bias, tiles, contiguous)


# many channels (the float32 channel blocks of 128 over KD * C), one output depth slice (a single image:
# its output channels split across the workers), rows wider than a vector of tiles, depth padding only
# on one side, more tiles than one transform run
CASES = [
    (1, 48, 20, 3, (3, 6, 7), ((0, 0), (1, 1), (1, 1))),
    (2, 4, 40, 3, (1, 5, 6), ((1, 1), (1, 1), (1, 1))),
    (1, 3, 5, 2, (4, 9, 75), ((1, 0), (1, 1), (1, 1))),
    (2, 6, 3, 5, (7, 13, 14), ((0, 2), (0, 0), (2, 1))),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_edge_cases(isa, parallel, dtype, case):
    n, c, o, kd, size, padding = case
    _check(np.random.default_rng(1), n, c, o, kd, size, padding, dtype, bias=True)
    _check(np.random.default_rng(2), n, c, o, kd, size, padding, dtype, bias=False, tiles=3)


def test_float32_accuracy_on_a_3d_layer(isa):
    """float32 within 2e-6 norm-relative of float64 (He-initialised weights, normal input)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 32, 8, 16, 16))
    w = rng.standard_normal((32, 32, 3, 3, 3)) * np.sqrt(2 / (32 * 27))
    geom = _geom(3, 1)
    exact = compiled_winograd.forward(x, w, geom)
    got = compiled_winograd.forward(x.astype(np.float32), w.astype(np.float32), geom)
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) <= 2e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_epilogue_is_fused_after_the_bias(isa, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    geom = _geom(3, ((1, 1), (2, 0), (0, 1)))
    ref = reference.conv_passes(x.astype(np.float64), w.astype(np.float64), np.zeros((2, 5, 4, 7, 4)),
                                geom.with_padding(geom.pads((4, 7, 6))))[0] + b.reshape(-1, 1, 1, 1)
    for activation, expect in ((Activation("relu"), np.maximum(ref, 0)),
                               (Activation("hardtanh", -0.5, 0.75), np.clip(ref, -0.5, 0.75))):
        y = compiled_winograd.forward(x, w, geom, epilogue=Epilogue(b, activation))
        assert np.abs(y - expect).max() <= TOL[np.dtype(dtype)] * np.abs(ref).max()


def test_matches_torch_through_the_planner_and_autograd(torch, isa):
    """``npconv.nn.functional.conv3d`` with autograd: the planner runs the forward and grad_input
    passes on the Winograd (float32, a layer its rule takes), torch's output and every gradient."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 32, 6, 20, 20)).astype(np.float32)
    w = (rng.standard_normal((32, 32, 3, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    geom = _geom(3, 1)
    for pass_name in ("forward", "grad_input", "grad_weight"):
        assert plan.choose(pass_name, x.shape, w.shape, geom, np.float32) == "winograd", pass_name
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv3d(tx, tw, tb, padding=1)
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(gy))
    nx, nw, nb = (npconv.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ny = npconv.nn.functional.conv3d(nx, nw, nb, padding=1)
    ny.backward(npconv.from_numpy(gy))
    for got, want in ((ny, ty), (nx.grad, tx.grad), (nw.grad, tw.grad), (nb.grad, tb.grad)):
        want = want.detach().numpy()
        assert _max_relative(got.numpy(), want) <= 5e-6


def test_float64_matches_torch(torch, isa):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 9, 8))
    w = rng.standard_normal((4, 3, 2, 3, 3))
    geom = _geom(2, ((1, 0), (0, 2), (1, 1)))
    y = compiled_winograd.forward(x, w, geom)
    tx = torch.nn.functional.pad(torch.from_numpy(x), (1, 1, 0, 2, 1, 0)).requires_grad_()
    ty = torch.nn.functional.conv3d(tx, torch.from_numpy(w))
    gy = rng.standard_normal(ty.shape)
    ty.backward(torch.from_numpy(gy))
    gx = compiled_winograd.grad_input(gy, w, geom, x.shape[2:])
    assert _max_relative(y, ty.detach().numpy()) <= 1e-12
    assert _max_relative(gx, tx.grad.numpy()[:, :, 1:, :-2, 1:-1]) <= 1e-12


def test_only_what_it_computes_is_supported():
    """Stride, dilation, groups and a kernel other than (KD, 3, 3) go elsewhere."""
    x, w = (1, 4, 6, 8, 8), (4, 4, 3, 3, 3)
    ok = _geom(3, 1)
    assert compiled_winograd.supports("forward", x, w, ok, np.float32)
    assert compiled_winograd.supports("grad_weight", x, w, ok, np.float32)
    others = [ConvGeometry.create((3, 3, 3), (1, 2, 1), 1, 1, 1, ndim=3),
              ConvGeometry.create((3, 3, 3), 1, 1, (2, 1, 1), 1, ndim=3),
              ConvGeometry.create((3, 3, 3), 1, 1, 1, 2, ndim=3)]
    for geom in others:
        shape = (4, 4 // geom.groups, 3, 3, 3)
        for pass_name in ("forward", "grad_input", "grad_weight"):
            assert not compiled_winograd.supports(pass_name, x, shape, geom, np.float32), (pass_name, geom)
    assert not compiled_winograd.supports("forward", x, (4, 4, 3, 5, 3), ConvGeometry.create(
        (3, 5, 3), 1, 1, 1, 1, ndim=3), np.float32)
    assert not compiled_winograd.supports("forward", x, w, ok, np.float16)


def test_calls_beyond_the_kernels_limits_run_the_gemm(monkeypatch):
    """Where the extension declines the call, the NumPy GEMM computes it, bias and activation too; and
    grad_weight."""
    def declines(geometry):
        raise ValueError("geometry: planes or scratch too large for the compiled kernel")

    monkeypatch.setattr(backends.core.module, "winograd2d_scratch", declines)
    monkeypatch.setattr(backends.core.module, "winograd2d_grad_weight_scratch", declines)
    rng = np.random.default_rng(9)
    geom = _geom(3, ((1, 1), (2, 1), (0, 1)))
    x, w = rng.standard_normal((2, 3, 4, 7, 6)), rng.standard_normal((4, 3, 3, 3, 3))
    b = rng.standard_normal(4)
    y = compiled_winograd.forward(x, w, geom, epilogue=Epilogue(b, Activation("hardtanh", -1.0, 2.0)))
    ref = reference.conv_passes(x, w, np.zeros_like(y), geom.with_padding(geom.pads((4, 7, 6))))[0]
    np.testing.assert_allclose(y, np.clip(ref + b.reshape(-1, 1, 1, 1), -1.0, 2.0), rtol=0, atol=1e-11)
    gy = rng.standard_normal(y.shape)
    gw = compiled_winograd.grad_weight(x, gy, geom)
    gw_ref = reference.conv_passes(x, w, gy, geom.with_padding(geom.pads((4, 7, 6))))[2]
    np.testing.assert_allclose(gw, gw_ref, rtol=0, atol=1e-11)


def _extension_call(core, args, **change):
    names = ("isa", "routines", "x", "u", "bias", "y", "scratch", "geometry", "depth", "z0", "z1", "t0", "t1",
             "act", "lo", "hi")
    values = dict(zip(names, args, strict=True))
    values.update(change)
    core.winograd3d_forward(*(values[k] for k in names))


def test_the_extension_runs_one_item_and_checks_its_arguments():
    """``winograd3d_forward``: output slices [z0, z1) x tiles [t0, t1) of one image (the others left as they
    were), and a ValueError/TypeError for every argument out of line, ``y`` unchanged."""
    core = backends.core.module
    rng = np.random.default_rng(7)
    c, d, h, w, o, kd, pd = 2, 5, 6, 7, 3, 3, 1
    x = rng.standard_normal((c, d, h, w))
    wt = rng.standard_normal((o, c, kd, 3, 3))
    u = np.empty((36, o, kd * c))
    core.winograd2d_weight(backends.core.isa_index, np.ascontiguousarray(wt.swapaxes(1, 2)), u, 0, o * kd * c)
    geom = _geom(kd, ((pd, pd), (1, 1), (1, 1)))
    od, oh, ow = geom.output_size((d, h, w))
    tiles = -(-oh // 4) * -(-ow // 4)
    rows = (2 + kd - 1) * c  # V rows for two output slices
    geometry = (1, rows, h, w, o, oh, ow, 1, 1, 1, tiles, 0, 1, 1, h, w, 0, 0, oh, ow, 0, 0)
    scratch = np.empty(core.winograd2d_scratch(geometry))
    b = rng.standard_normal(o)
    y = np.full((o, od, oh, ow), 7.0)
    depth = (d, od, kd, pd, c)
    args = (backends.core.isa_index, gemm_routines(), x, u, b, y, scratch, geometry, depth, 1, 3, 1, tiles, 0,
            0.0, 0.0)
    _extension_call(core, args)
    padded = geom.with_padding(geom.pads((d, h, w)))
    ref = reference.conv_passes(x[None], wt, np.zeros((1, o, od, oh, ow)), padded)[0]
    ref = ref[0] + b.reshape(-1, 1, 1, 1)
    done = np.zeros(y.shape, bool)  # slices 1, 2; tiles from the second (columns 4.. of the first tile row)
    done[:, 1:3] = True
    done[:, 1:3, :4, :4] = False
    np.testing.assert_allclose(y[done], ref[done], rtol=0, atol=1e-12)
    assert (y[~done] == 7.0).all()
    before = y.copy()
    bad = [
        (ValueError, dict(z0=2, z1=5)),  # three slices need more V rows than the geometry holds
        (ValueError, dict(z1=od + 1)),
        (ValueError, dict(t1=tiles + 1)),
        (ValueError, dict(x=x[:, :-1].copy())),
        (ValueError, dict(u=u[:, :, :-1].copy())),
        (ValueError, dict(y=np.zeros((o, od - 1, oh, ow)))),
        (ValueError, dict(scratch=scratch[:-1].copy())),
        (ValueError, dict(bias=b[:-1].copy())),
        (ValueError, dict(depth=(d, od, kd, pd, 0))),
        (ValueError, dict(geometry=(2,) + geometry[1:])),
        (ValueError, dict(geometry=geometry[:12] + (2, 1) + geometry[14:])),
        (TypeError, dict(u=u.astype(np.float32))),
        (TypeError, dict(depth=(d, od, kd))),
        (ValueError, dict(act=7)),
    ]
    for error, change in bad:
        with pytest.raises(error):
            _extension_call(core, args, **change)
        np.testing.assert_array_equal(y, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_items_of_one_output_slice_and_split_tiles(isa, parallel, dtype, monkeypatch):
    """Items of the fewest bytes (one output slice each: every item transforms its KD input slices again)
    and of a few tiles (slices' tile grids split), against items of the whole depth: the same values."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 5, 7, 13, 10)).astype(dtype)
    w = rng.standard_normal((6, 5, 3, 3, 3)).astype(dtype)
    geom = _geom(3, ((2, 1), (1, 1), (0, 2)))
    whole = compiled_winograd.forward(x, w, geom)
    monkeypatch.setattr(compiled_winograd, "DEPTH_ITEM_BYTES", 1)
    monkeypatch.setattr(compiled_winograd, "_TARGET_TILES", 5)
    split = compiled_winograd._depth_items(2, 5, (7, 13, 10), 6, geom.output_size((7, 13, 10)), 3,
                                           geom.pads((7, 13, 10)), np.dtype(dtype), 2)
    assert split.slices == 1 and split.tiles == 4 and len(split.items) == 2 * 8 * 3
    small = compiled_winograd.forward(x, w, geom)
    np.testing.assert_allclose(small, whole, rtol=0, atol=TOL[np.dtype(dtype)] * np.abs(whole).max())


def test_the_grad_weight_extension_adds_one_items_products_and_checks_its_arguments():
    """``winograd3d_grad_weight``: an item's products stored (first) or added into the float64 accumulator;
    ``G^T M G`` of it (the 2-d finish) is that item's share of the weight gradient; bad arguments raise,
    the accumulator unchanged."""
    core = backends.core.module
    rng = np.random.default_rng(11)
    c, d, h, w, o, kd, pd = 2, 5, 6, 7, 3, 3, 1
    x = rng.standard_normal((c, d, h, w))
    geom = _geom(kd, ((pd, pd), (1, 1), (1, 1)))
    od, oh, ow = geom.output_size((d, h, w))
    gy = rng.standard_normal((o, od, oh, ow))
    tiles = -(-oh // 4) * -(-ow // 4)
    geometry = (1, (od + kd - 1) * c, h, w, o, oh, ow, 1, 1, 1, tiles, 0, 1, 1, h, w, 0, 0, oh, ow, 0, 0)
    scratch = np.empty(core.winograd2d_grad_weight_scratch(geometry))
    acc = np.full((36, o, kd * c), 5.0)
    depth = (d, od, kd, pd, c)
    isa = backends.core.isa_index
    args = [isa, gemm_routines(), x, gy, acc, scratch, geometry, depth, 0, od, 0, tiles, True]
    core.winograd3d_grad_weight(*args)
    core.winograd3d_grad_weight(*args[:12], False)  # the same products again: twice the sums
    gw = np.empty((o * kd * c, 3, 3))
    core.winograd2d_grad_weight_finish(backends.core.isa_index, acc, gw, 1, 0, o * kd * c)
    padded = geom.with_padding(geom.pads((d, h, w)))
    ref = reference.conv_passes(x[None], np.zeros((o, c, kd, 3, 3)), gy[None], padded)[2]
    np.testing.assert_allclose(gw.reshape(o, kd, c, 3, 3).swapaxes(1, 2), 2 * ref, rtol=0, atol=1e-11)
    before = acc.copy()
    bad = [
        (ValueError, 8, -1),
        (ValueError, 9, od + 1),
        (ValueError, 11, tiles + 1),
        (ValueError, 2, x[:, :-1].copy()),
        (ValueError, 3, gy[:, :-1].copy()),
        (ValueError, 4, acc[:, :, :-1].copy()),
        (ValueError, 5, scratch[:-1].copy()),
        (ValueError, 6, (1, c, h, w) + geometry[4:]),  # V rows for one slice only
        (TypeError, 4, acc.astype(np.float32)),
        (TypeError, 3, gy.astype(np.float32)),
    ]
    for error, index, value in bad:
        changed = list(args)
        changed[index] = value
        with pytest.raises(error):
            core.winograd3d_grad_weight(*changed)
        np.testing.assert_array_equal(acc, before)


def test_the_planners_3d_rule():
    """At least MIN_SLICE_TILES tiles per depth slice (a slice's products' columns), then the 2-d rule of the
    equivalent call; grad_weight at most GW3_PAIRS_PER_TILE weight values per tile of a slice."""
    geom = _geom(3, 1)

    def rec(pass_name, x, o):
        return compiled_winograd.recommended(pass_name, x, (o, x[1], 3, 3, 3), geom, np.float32)

    assert not rec("forward", (1, 256, 8, 7, 7), 256)  # 4 tiles per slice
    assert not rec("forward", (4, 64, 4, 12, 12), 64)  # 9
    assert rec("forward", (2, 32, 32, 32, 32), 32) and rec("grad_input", (2, 32, 32, 32, 32), 32)
    assert rec("grad_weight", (2, 32, 32, 32, 32), 32)
    assert rec("grad_weight", (2, 64, 8, 14, 14), 64)  # 12288 values, 16 tiles
    assert not rec("grad_weight", (1, 128, 8, 14, 14), 128)  # 49152 values, 16 tiles
    assert rec("grad_weight", (2, 128, 4, 28, 28), 128)  # 49152 values, 49 tiles
    x, w = (2, 32, 32, 32, 32), (32, 32, 3, 3, 3)
    assert not compiled_winograd.recommended("forward", x, w, geom, np.float64)
