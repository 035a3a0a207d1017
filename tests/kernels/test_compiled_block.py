"""The compiled core's fused inverted residual block (``ir_forward``, csrc/block.h, and
``kernels/compiled_block.py``) on every ISA variant this CPU runs, against the float64 NumPy reference
of its three convolutions: strides 1 and 2, with and without the expansion (or a stem in its place) and
the residual, every activation, odd sizes, bands and tiles of every size; each item writing only its
rows; NaN staying in its receptive field; the variants and widths it refuses, and the extension's
guards."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import reference
from npconv import backends
from npconv.kernels import compiled_block, workspace
from npconv.kernels.pointwise import Activation

pytestmark = pytest.mark.skipif(not backends.core.available,
                                reason=f"compiled core not in use: {backends.core.reason}")

RELU6 = Activation("hardtanh", 0.0, 6.0)
ACTS = {None: (0, 0.0, 0.0), "relu": (1, 0.0, 0.0), "relu6": (2, 0.0, 6.0), "clamp": (2, -0.5, 0.25),
        "silu": (3, 0.0, 0.0)}


def _block(rng, n, cin, cexp, cout, h, w, expand=True, residual=False):  # noqa: ANN001, ANN202
    """The block's arrays; ``expand`` True (a 1x1 expansion), False or "stem" (3x3, stride 2: ``(h, w)``
    its input's size)."""
    f = np.float32
    x = rng.standard_normal((n, cin, h, w)).astype(f)
    taps = 9 if expand == "stem" else 1
    w1 = (rng.standard_normal((cexp, cin * taps)) / np.sqrt(cin * taps)).astype(f) if expand else None
    b1 = rng.standard_normal(cexp).astype(f) if expand else None
    wd = (rng.standard_normal((cexp, 9)) / 3).astype(f)
    bd = rng.standard_normal(cexp).astype(f)
    w2 = (rng.standard_normal((cout, cexp)) / np.sqrt(cexp)).astype(f)
    b2 = rng.standard_normal(cout).astype(f)
    return x, w1, b1, wd, bd, w2, b2


def _act(y: np.ndarray, code: tuple[int, float, float]) -> np.ndarray:
    kind, lo, hi = code
    if kind == 1:
        return np.where(y > 0, y, 0.0)
    if kind == 3:
        return y / (1.0 + np.exp(-y))
    return np.clip(y, lo, hi) if kind == 2 else y


def _reference(x, w1, b1, wd, bd, w2, b2, stride, res, acts):  # noqa: ANN001, ANN202
    """The three convolutions in float64 (reference.conv), the residual after the projection's bias."""
    d = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    e = d(x)
    if w1 is not None and w1.shape[1] == 9 * x.shape[1]:  # a stem
        e = _act(reference.conv(e, d(w1).reshape(-1, x.shape[1], 3, 3), d(b1), stride=2, padding=1), acts[0])
    elif w1 is not None:
        e = _act(reference.conv(e, d(w1)[:, :, None, None], d(b1)), acts[0])
    c = e.shape[1]
    t = _act(reference.conv(e, d(wd).reshape(c, 1, 3, 3), d(bd), stride=stride, padding=1, groups=c), acts[1])
    y = reference.conv(t, d(w2)[:, :, None, None], d(b2))
    return _act(y if res is None else y + d(res), acts[2])


def _geometry(n, cin, cexp, cout, h, w, stride, bands, tile, expand, residual, acts):  # noqa: ANN001, ANN202
    """The kernel's geometry; with ``expand`` "stem" ``(h, w)`` is the stem's input's size."""
    xh, xw = h, w
    if expand == "stem":
        h, w = (xh - 1) // 2 + 1, (xw - 1) // 2 + 1
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    geometry = (n, cin, cexp, cout, h, w, oh, ow, stride, bands, tile, 2 if expand == "stem" else int(expand),
                int(residual), *(a[0] for a in acts), xh, xw)
    return geometry, tuple(v for a in acts for v in a[1:])


def _lanes() -> int:
    return {"avx512": 16, "avx2": 8}.get(backends.core.isa, 0)


def _fits(lanes: int, ow: int, stride: int, stem: tuple[int, int] | None = None) -> bool:
    """Whether a variant of ``lanes`` float32 lanes fuses depthwise output rows of ``ow`` columns (with a
    stem of ``(cin, cexp)`` channels: whole register blocks of 8 channels at 16 lanes, 4 at 8)."""
    if lanes == 0 or (stem and (stem[1] % (lanes // 2) or stem[0] * 9 > compiled_block.STEM_MAX_PAIRS)):
        return False
    if ow >= lanes:
        return stride == 1 or lanes >= 16 or ow >= 2 * lanes
    return lanes >= 16 and ow >= 4


CASES = [  # n, cin, cexp, cout, h, w, stride, expand, residual, bands, tile, acts
    (1, 16, 96, 24, 40, 36, 2, True, False, 1, 3, ("relu6", "relu6", None)),
    (1, 24, 48, 24, 19, 33, 1, True, True, 2, 4, ("relu6", "relu6", None)),
    (2, 8, 40, 12, 17, 35, 2, True, False, 2, 3, ("relu", "clamp", "relu")),
    (1, 16, 16, 8, 20, 32, 1, False, False, 3, 2, (None, "relu6", None)),
    (3, 12, 36, 12, 16, 16, 1, True, True, 1, 16, ("relu6", None, "relu")),
    (1, 8, 24, 8, 23, 17, 1, True, True, 5, 1, ("clamp", "relu", "clamp")),
    (1, 16, 64, 16, 20, 36, 1, True, True, 2, 3, ("silu", "silu", None)),  # SiLU (EfficientNet's MBConv)
    (2, 8, 40, 12, 17, 35, 2, True, False, 2, 3, ("silu", "relu6", "silu")),
    (2, 5, 300, 7, 9, 40, 2, True, True, 1, 2, ("relu6", "relu6", "relu6")),  # deeper than a GEMM block
    (1, 3, 7, 5, 6, 33, 2, True, False, 3, 1, (None, None, None)),
    (1, 6, 6, 6, 2, 18, 1, False, True, 2, 5, ("relu", "relu", None)),
    # rows of 4-15 columns (AVX-512: one vector per row, its spare lanes on the next row)
    (1, 16, 96, 16, 14, 14, 1, True, True, 1, 8, ("relu6", "relu6", None)),
    (2, 8, 40, 12, 13, 13, 1, True, False, 2, 3, ("relu", "clamp", "relu")),
    (1, 6, 6, 6, 5, 15, 1, False, True, 3, 1, (None, "relu6", "clamp")),
    (1, 4, 12, 4, 14, 14, 2, True, False, 1, 7, ("relu6", "relu6", None)),  # 7 columns at stride 2
    (1, 16, 64, 24, 28, 28, 2, True, False, 1, 8, ("relu6", "relu6", None)),  # 14 columns at stride 2
    (2, 8, 24, 8, 27, 27, 2, True, False, 2, 3, ("relu", "clamp", "relu")),
    (1, 4, 8, 4, 9, 29, 2, True, False, 2, 2, (None, "relu6", None)),  # 15 columns, 5 rows
    (2, 8, 48, 8, 7, 7, 1, True, True, 1, 7, ("relu6", "relu6", None)),  # 7 columns at stride 1
    (1, 4, 8, 4, 6, 4, 1, True, False, 2, 2, ("relu", None, None)),
    (1, 4, 8, 4, 6, 3, 1, True, False, 1, 2, ("relu", None, None)),  # 3 columns: not taken
    # a stem (3x3, stride 2, padding 1) in the expansion's place: (h, w) its input's size
    (1, 3, 32, 16, 64, 64, 1, "stem", False, 2, 9, ("relu6", "relu6", None)),
    (2, 3, 16, 8, 37, 41, 1, "stem", True, 1, 4, ("clamp", "relu", "relu6")),
    (1, 3, 32, 16, 64, 64, 1, "stem", False, 2, 9, ("silu", "silu", None)),
    (1, 1, 8, 8, 33, 35, 2, "stem", False, 3, 2, ("relu", "relu6", None)),  # odd sizes, stride-2 depthwise
    (2, 4, 24, 12, 30, 65, 1, "stem", False, 2, 1, (None, None, "clamp")),
    (1, 3, 16, 8, 27, 27, 1, "stem", True, 1, 14, ("relu6", "relu6", None)),  # 14 columns
    (1, 7, 8, 8, 33, 33, 1, "stem", False, 1, 3, ("relu6", None, None)),  # 63 pairs
    (1, 8, 8, 8, 33, 33, 1, "stem", False, 1, 3, ("relu6", None, None)),  # 72 pairs: not taken
    (1, 3, 12, 8, 40, 40, 1, "stem", False, 1, 3, ("relu6", None, None)),  # 12 channels: not at 16 lanes
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_items_match_the_float64_reference(case, isa) -> None:  # noqa: ANN001
    n, cin, cexp, cout, h, w, stride, expand, residual, bands, tile, names = case
    acts = [ACTS[a] for a in names]
    rng = np.random.default_rng(sum(case[:7]))
    x, w1, b1, wd, bd, w2, b2 = _block(rng, n, cin, cexp, cout, h, w, expand)
    geometry, bounds = _geometry(n, cin, cexp, cout, h, w, stride, bands, tile, expand, residual, acts)
    oh, ow = geometry[6:8]
    core = backends.core.module
    res = rng.standard_normal((n, cout, oh, ow)).astype(np.float32) if residual else None
    lanes = _lanes()
    takes = core.ir_supported(backends.core.isa_index, geometry, bounds)
    assert takes == _fits(lanes, ow, stride, (cin, cexp) if expand == "stem" else None)
    y = np.full((n, cout, oh, ow), np.nan, np.float32)
    scratch = np.empty(core.ir_scratch(geometry, bounds), np.float32)
    args = (x, w1, b1, wd, bd, w2, b2, res, y, scratch, geometry, bounds)
    if not takes:
        with pytest.raises(ValueError, match="ir_supported"):
            core.ir_forward(backends.core.isa_index, *args, 0, n * bands)
        return
    expected = _reference(x, w1, b1, wd, bd, w2, b2, stride, res, acts)
    scale = max(1.0, float(np.abs(expected).max()))
    for start, stop in [(0, n * bands), (n * bands - 1, n * bands)]:
        y[...] = np.nan
        core.ir_forward(backends.core.isa_index, *args, start, stop)
        rows = np.zeros((n, oh), bool)  # the output rows items [start, stop) own
        for item in range(start, stop):
            image, band = divmod(item, bands)
            rows[image, band * oh // bands:(band + 1) * oh // bands] = True
        got = np.moveaxis(y, 1, 2)[rows]
        want = np.moveaxis(expected, 1, 2)[rows]
        assert np.abs(got - want).max() <= 3e-6 * scale
        assert np.isnan(np.moveaxis(y, 1, 2)[~rows]).all()  # the other items' rows untouched


def test_nan_stays_in_its_receptive_field(isa) -> None:  # noqa: ANN001
    n, cin, cexp, cout, h, w = 1, 8, 32, 8, 12, 40
    acts = [ACTS["relu6"], ACTS["relu6"], ACTS[None]]
    for stride, (r, c) in [(1, (5, 17)), (2, (6, 20)), (1, (0, 0)), (2, (11, 39))]:
        geometry, bounds = _geometry(n, cin, cexp, cout, h, w, stride, 2, 3, True, False, acts)
        if not backends.core.module.ir_supported(backends.core.isa_index, geometry, bounds):
            pytest.skip(f"{backends.core.isa} does not fuse {w}-column rows")
        x, w1, b1, wd, bd, w2, b2 = _block(np.random.default_rng(stride), n, cin, cexp, cout, h, w)
        x[0, 3, r, c] = np.nan
        oh, ow = geometry[6:8]
        y = np.empty((n, cout, oh, ow), np.float32)
        scratch = np.empty(backends.core.module.ir_scratch(geometry, bounds), np.float32)
        backends.core.module.ir_forward(backends.core.isa_index, x, w1, b1, wd, bd, w2, b2, None, y, scratch,
                                        geometry, bounds, 0, 2)
        # output (i, j) reads input rows i*s-1 .. i*s+1 and columns j*s-1 .. j*s+1
        near = np.zeros((oh, ow), bool)
        for i in range(oh):
            for j in range(ow):
                near[i, j] = abs(i * stride - r) <= 1 and abs(j * stride - c) <= 1
        assert np.isnan(y[0][:, near]).all() and np.isfinite(y[0][:, ~near]).all()


def test_a_stems_nan_stays_in_its_receptive_field(isa) -> None:  # noqa: ANN001
    """An input NaN reaches the stem outputs whose 3x3 windows (stride 2) hold it, and from them the
    depthwise outputs whose windows hold those: nothing else, whatever the junk positions read."""
    n, cin, cexp, cout, xh, xw = 1, 3, 16, 8, 29, 64
    acts = [ACTS["relu6"], ACTS["relu6"], ACTS[None]]
    for stride, (r, c) in [(1, (9, 30)), (2, (14, 41)), (1, (0, 0)), (2, (28, 63)), (1, (28, 0))]:
        geometry, bounds = _geometry(n, cin, cexp, cout, xh, xw, stride, 2, 3, "stem", False, acts)
        if not backends.core.module.ir_supported(backends.core.isa_index, geometry, bounds):
            pytest.skip(f"{backends.core.isa} does not fuse a stem")
        x, w1, b1, wd, bd, w2, b2 = _block(np.random.default_rng(stride), n, cin, cexp, cout, xh, xw, "stem")
        x[0, 1, r, c] = np.nan
        h, w, oh, ow = geometry[4:8]
        y = np.empty((n, cout, oh, ow), np.float32)
        scratch = np.full(backends.core.module.ir_scratch(geometry, bounds), np.nan, np.float32)
        backends.core.module.ir_forward(backends.core.isa_index, x, w1, b1, wd, bd, w2, b2, None, y, scratch,
                                        geometry, bounds, 0, 2)
        stem = np.zeros((h, w), bool)  # stem output (i, j) reads input rows 2i-1 .. 2i+1, columns alike
        for i in range(h):
            for j in range(w):
                stem[i, j] = abs(2 * i - r) <= 1 and abs(2 * j - c) <= 1
        near = np.zeros((oh, ow), bool)
        for i in range(oh):
            for j in range(ow):
                rows = slice(max(0, i * stride - 1), i * stride + 2)
                near[i, j] = stem[rows, max(0, j * stride - 1):j * stride + 2].any()
        assert np.isnan(y[0][:, near]).all() and np.isfinite(y[0][:, ~near]).all()


def test_refusals_and_guards() -> None:
    core, isa_index = backends.core.module, backends.core.isa_index
    acts = [ACTS["relu6"], ACTS["relu6"], ACTS[None]]
    geometry, bounds = _geometry(1, 4, 8, 4, 8, 40, 1, 1, 2, True, False, acts)
    x, w1, b1, wd, bd, w2, b2 = _block(np.random.default_rng(0), 1, 4, 8, 4, 8, 40)
    y = np.empty((1, 4, 8, 40), np.float32)
    scratch = np.empty(core.ir_scratch(geometry, bounds), np.float32)
    bad = [(geometry[:8] + (3,) + geometry[9:], "not an inverted residual block"),  # stride 3
           (geometry[:6] + (7,) + geometry[7:], "not an inverted residual block"),  # OH not the output's
           (geometry[:9] + (9,) + geometry[10:], "not an inverted residual block"),  # more bands than rows
           (geometry[:13] + (4,) + geometry[14:], "act must be"),
           (geometry[:11] + (3,) + geometry[12:], "not an inverted residual block"),  # expand 3
           (geometry[:16] + (9, 40), "not an inverted residual block"),  # XH not H without a stem
           (geometry[:11] + (2,) + geometry[12:], "not an inverted residual block"),  # a stem: H not XH's
           (geometry[:5], "tuple of 18 ints")]
    for geom, message in bad:
        with pytest.raises((ValueError, TypeError), match=message):
            core.ir_forward(isa_index, x, w1, b1, wd, bd, w2, b2, None, y, scratch, geom, bounds, 0, 1)
    with pytest.raises(ValueError, match="lo <= hi"):
        core.ir_forward(isa_index, x, w1, b1, wd, bd, w2, b2, None, y, scratch, geometry, (0, 6, 1, 0, 0, 0),
                        0, 1)
    with pytest.raises(ValueError, match="exactly when"):  # no expansion weight for an expanding block
        core.ir_forward(isa_index, x, None, None, wd, bd, w2, b2, None, y, scratch, geometry, bounds, 0, 1)
    with pytest.raises(ValueError, match="exactly when"):  # a residual the geometry does not have
        core.ir_forward(isa_index, x, w1, b1, wd, bd, w2, b2, y, y, scratch, geometry, bounds, 0, 1)
    with pytest.raises(ValueError, match="item range"):
        core.ir_forward(isa_index, x, w1, b1, wd, bd, w2, b2, None, y, scratch, geometry, bounds, 0, 2)
    with pytest.raises(ValueError, match="scratch has"):
        core.ir_forward(isa_index, x, w1, b1, wd, bd, w2, b2, None, y, scratch[:10], geometry, bounds, 0, 1)
    with pytest.raises(ValueError, match="input has"):
        core.ir_forward(isa_index, x[:, :3], w1, b1, wd, bd, w2, b2, None, y, scratch, geometry, bounds, 0, 1)
    with pytest.raises(TypeError, match="same element type"):
        core.ir_forward(isa_index, x, w1.astype(np.float64), b1, wd, bd, w2, b2, None, y, scratch, geometry,
                        bounds, 0, 1)
    stem, stem_bounds = _geometry(1, 4, 8, 4, 16, 80, 1, 1, 2, "stem", False, acts)  # its output as above
    with pytest.raises(ValueError, match="expand_weight has"):  # a 1x1 expansion's weight for a stem
        core.ir_forward(isa_index, np.zeros((1, 4, 16, 80), np.float32), w1, b1, wd, bd, w2, b2, None, y,
                        np.empty(core.ir_scratch(stem, stem_bounds), np.float32), stem, stem_bounds, 0, 1)
    wide = [a.astype(np.float64) for a in (x, w1, b1, wd, bd, w2, b2, y, scratch)]
    with pytest.raises(ValueError, match="takes float32"):
        core.ir_forward(isa_index, *wide[:7], None, *wide[7:], geometry, bounds, 0, 1)


def _stage(weight: np.ndarray, bias: np.ndarray | None, act: Activation | None) -> compiled_block.Stage:
    return compiled_block.Stage(weight, bias, act)


@pytest.mark.parametrize("threads, n, shared", [(1, 1, 2), (2, 1, 2), (2, 3, 2), (2, 2, 2), (2, 4, 2),
                                               (2, 5, 2), (2, 5, 0), (2, 3, 1)])
def test_bind_block_splits_images_or_rows_over_the_threads(threads: int, n: int, shared: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed shares of the items (images, or bands of one image's rows) per worker, or from
    MIN_SHARED_ITEMS per worker claimed one at a time: every item run once, as the reference."""
    monkeypatch.setattr(compiled_block, "MIN_SHARED_ITEMS", shared)
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    try:
        rng = np.random.default_rng(threads * 10 + n)
        cin, cexp, cout, h, w = 8, 48, 8, 21, 34
        x, w1, b1, wd, bd, w2, b2 = _block(rng, n, cin, cexp, cout, h, w)
        expand = _stage(w1.reshape(cexp, cin, 1, 1), b1, RELU6)
        depthwise = _stage(wd.reshape(cexp, 1, 3, 3), bd, RELU6)
        project = _stage(w2.reshape(cout, cexp, 1, 1), b2, Activation("relu"))
        y = np.full((n, cout, h, w), np.nan, np.float32)
        buffers: dict = {}

        def source(name: str, size: int, dtype: np.dtype) -> np.ndarray:
            return buffers.setdefault(name, np.empty(size, dtype))

        run = compiled_block.bind_block(x, y, x, expand, depthwise, project, 1, source)
        if _lanes() == 0:
            assert run is None
            return
        assert len(buffers) == min(threads, n * (1 if n % threads == 0 else threads))
        counter = [None]
        original = compiled_block.workspace.bind_calls

        def bind_calls(*args, **kwargs):  # the claims: every worker's call over all the items
            counter[0] = (kwargs.get("chunk", 0), [call[2][2:] for call in args[1]])
            return original(*args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(compiled_block.workspace, "bind_calls", bind_calls)
            run = compiled_block.bind_block(x, y, x, expand, depthwise, project, 1, source)
        items = n * (1 if n % threads == 0 else threads)
        claimed = bool(shared) and threads > 1 and items >= shared * threads
        assert counter[0][0] == int(claimed)
        assert counter[0][1] == ([(0, items)] * threads if claimed else workspace.ranges(items, threads))
        run()
        y[...] = np.nan
        run()  # the claims start again on every run
        acts = [ACTS["relu6"], ACTS["relu6"], ACTS["relu"]]
        expected = _reference(x, w1, b1, wd, bd, w2, b2, 1, x, acts)
        assert np.abs(y - expected).max() <= 3e-6 * max(1.0, float(np.abs(expected).max()))
        x[...] = 0  # the bound run reads the arrays themselves
        w2[...] = 0
        b2[...] = 0
        run()
        assert np.array_equal(y, np.zeros_like(y))
        # not a block the kernel takes: a 5x5 depthwise, float64, a strided view
        wide = _stage(np.zeros((cexp, 1, 5, 5), np.float32), bd, None)
        assert compiled_block.bind_block(x, y, None, expand, wide, project, 1, source) is None
        assert not compiled_block.takes(x.astype(np.float64), y, None, expand, depthwise, project, 1)
        assert not compiled_block.takes(x[..., ::2], y, None, expand, depthwise, project, 2)
    finally:
        npconv.set_num_threads(previous)


def test_tiles_make_whole_vectors_of_positions() -> None:
    assert compiled_block._tile(24, 144, 56, 56, 1, 28) % 2 == 0  # 56-column rows in pairs
    assert compiled_block._tile(32, 192, 28, 28, 1, 28) % 4 == 0
    assert compiled_block._tile(16, 96, 112, 56, 2, 28) * 56 % 16 == 0
    assert compiled_block._tile(100, 4000, 500, 500, 1, 10) == 1  # larger than the budget: one row
    assert compiled_block._tile(4, 8, 10, 10, 1, 3) == 3  # never more than the band's rows
