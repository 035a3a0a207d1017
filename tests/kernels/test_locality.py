"""Issue 14 family 2: a non-local algorithm (FFT, Winograd) never changes what a direct convolution
gives. For each non-local algorithm and each of its passes, forced through the planner: one NaN,
+inf or -inf value reaches exactly the outputs torch's direct kernels give (same NaN/inf positions),
a spike leaves every other output within float tolerance of its window's scale, values near the
dtype's limit do not overflow in transforms; plus the edge of the routing criterion."""

from __future__ import annotations

import numpy as np
import pytest

from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry
from npconv.kernels import fft, numerics, plan, winograd

NON_LOCAL = [name for name, a in registry.available().items() if not a.local]
# name: (algorithm, x_shape, w_shape, padding, groups); small shapes, the large-kernel ones included
CASES = {
    "fft depthwise 9x9": ("fft", (2, 3, 20, 18), (3, 1, 9, 9), 4, 3),
    "fft dense 5x5": ("fft", (2, 4, 12, 13), (6, 2, 5, 5), 2, 2),
    "fft 1-d k1023": ("fft", (1, 2, 1500), (2, 1, 1023), 511, 2),
    "winograd 3x3": ("winograd", (2, 5, 10, 11), (4, 5, 3, 3), 1, 1),
}
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-13}  # relative to the window's scale


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def planner_defaults():
    saved = backends.conv.algorithm, backends.conv.benchmark
    backends.conv.algorithm, backends.conv.benchmark = None, False
    yield
    backends.conv.algorithm, backends.conv.benchmark = saved


def _geom(w_shape, padding, groups):
    nd = len(w_shape) - 2
    geom = ConvGeometry.create(w_shape[2:], 1, padding, 1, groups, ndim=nd)
    return geom.with_padding(((padding, padding),) * nd)


def _torch_passes(torch, x, w, gy, geom):
    """torch's (y, gx, gw) in the arrays' dtype, from its direct kernels."""
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}[geom.ndim]
    xt = torch.from_numpy(x.copy()).requires_grad_()
    wt = torch.from_numpy(w.copy()).requires_grad_()
    pad = geom.pads()[0][0]
    y = conv(xt, wt, None, 1, pad, 1, geom.groups)
    y.backward(torch.from_numpy(gy.copy()))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _reference(torch, x, w, gy, geom):
    """torch's float64 passes by name, and each output's window scale (the passes of |x|, |w|, |gy|)."""
    f64 = [a.astype(np.float64) for a in (x, w, gy)]
    ref = _torch_passes(torch, *f64, geom)
    scale = _torch_passes(torch, *(np.abs(np.nan_to_num(a)) for a in f64), geom)
    return dict(zip(registry.PASSES, ref, strict=True)), dict(zip(registry.PASSES, scale, strict=True))


def _ours(name, pass_name, x, w, gy, geom):
    with backends.conv.force({pass_name: name}):
        if pass_name == "forward":
            return plan.forward(x, w, geom)
        if pass_name == "grad_input":
            return plan.grad_input(gy, w, geom, x.shape[2:])
        return plan.grad_weight(x, gy, geom)


def _check(ours, theirs, scale, dtype, what):
    """Same NaN/+inf/-inf positions; finite outputs within TOLERANCE of their window's ``scale``."""
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(ours), test(theirs), err_msg=f"{what}: {test.__name__}")
    finite = np.isfinite(theirs)
    error = np.abs(ours[finite].astype(np.float64) - theirs[finite])
    bound = TOLERANCE[np.dtype(dtype)] * scale[finite] + 1e-30
    worst = float(np.max(error / bound)) if error.size else 0.0
    assert worst <= 1.0, f"{what}: error {worst:.3g} x tolerance"


def _case(name, dtype, seed=0):
    algorithm, x_shape, w_shape, padding, groups = CASES[name]
    rng = np.random.default_rng(seed)
    geom = _geom(w_shape, padding, groups)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    gy = rng.standard_normal((x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:])).astype(dtype)
    return algorithm, geom, x, w, gy


def _corrupt(a, value, where=0.37):
    a = a.copy()
    a.flat[int(where * a.size)] = value
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e8, 1e30],
                         ids=["nan", "inf", "-inf", "1e8", "1e30"])
@pytest.mark.parametrize("name", list(CASES))
def test_non_local_algorithm_is_local_like_torch(torch, name, value, dtype):
    algorithm, geom, x, w, gy = _case(name, dtype)
    assert algorithm in NON_LOCAL
    # which passes see the corrupted array
    affected = {"x": ("forward", "grad_weight"), "gy": ("grad_input", "grad_weight")}
    with np.errstate(all="ignore"):
        for target, passes in affected.items():
            xc = _corrupt(x, value) if target == "x" else x
            gyc = _corrupt(gy, value) if target == "gy" else gy
            ref, scale = _reference(torch, xc, w, gyc, geom)
            ref32 = dict(zip(registry.PASSES, _torch_passes(torch, xc, w, gyc, geom), strict=True))
            # Winograd's grad_weight takes both operands as data and refuses any non-finite one: its
            # call is the local rule's (test_compiled_winograd's planner test). That GEMM multiplies a
            # NaN of gy at the border by the padding's zeros, as torch's im2col kernels do (float64,
            # 1-d), where torch's oneDNN float32 2-d kernel skips them (docs/performance.md)
            skipped = {"grad_weight"} if algorithm == "winograd" else set()
            checked = set(registry.get(algorithm).passes) - skipped
            for pass_name in set(passes) & checked:
                ours = _ours(algorithm, pass_name, xc, w, gyc, geom)
                assert ours.dtype == dtype
                for test in (np.isnan, np.isinf):  # torch's own float32/float64 kernels
                    np.testing.assert_array_equal(test(ours), test(ref32[pass_name]))
                what = f"{name} {pass_name}, {value} in {target}"
                _check(ours, ref[pass_name], scale[pass_name], dtype, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_error_just_below_the_spread_limit_is_within_tolerance(torch, name, dtype):
    """The limit is where the algorithm, still running, keeps every output within tolerance."""
    algorithm, geom, x, w, gy = _case(name, dtype, seed=7)
    module = registry.get(algorithm).module
    x[(0,) * x.ndim] = 1e30
    x[(0,) * x.ndim] = 1e30 / _checked_spread(x, algorithm == "fft") * module.SPREAD_LIMIT * 0.999
    operands = numerics.Operands((x, w))
    assert module.admits("forward", operands, geom)
    assert _checked_spread(x, algorithm == "fft") > 0.99 * module.SPREAD_LIMIT
    ref, scale = _reference(torch, x, w, gy, geom)
    ours = _ours(algorithm, "forward", x, w, gy, geom)
    _check(ours, ref["forward"], scale["forward"], dtype, f"{name} at the spread limit")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loud_share", [0.3, 0.6])
@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][0] == "fft"])
def test_fft_keeps_a_quiet_regions_outputs_within_tolerance(torch, name, loud_share, dtype):
    """A loud region over a share of the values (not a few spikes: the bulk spread stays small): just
    below the FFT's limit on the quiet regions' spread every output, the quiet ones included, is within
    tolerance of its window's scale; just above, the planner gives the call to a local algorithm."""
    _, geom, x, w, gy = _case(name, dtype, seed=5)
    planes = x.reshape(x.shape[0], x.shape[1], -1)
    loud = planes[..., : int(loud_share * planes.shape[-1])]
    for factor, admitted in ((0.999, True), (1.001, False)):
        xs = x.copy()
        view = xs.reshape(planes.shape)[..., : loud.shape[-1]]
        view *= 1e6  # the loud values set the peak; the quiet scale is the quiet values'
        view *= fft.SPREAD_LIMIT * factor / _checked_spread(xs, True)
        assert numerics.value_range(xs).spread < fft.SPREAD_LIMIT / 8  # a bulk check alone admits it
        assert fft.admits("forward", numerics.Operands((xs, w)), geom) is admitted
        ref, scale = _reference(torch, xs, w, gy, geom)
        _check(plan.forward(xs, w, geom), ref["forward"], scale["forward"], dtype, f"{name} loud x{factor}")
        if admitted:
            _check(_ours("fft", "forward", xs, w, gy, geom), ref["forward"], scale["forward"], dtype, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_does_not_overflow_where_a_direct_convolution_does_not(torch, dtype):
    _, geom, x, w, gy = _case("winograd 3x3", dtype)
    big = float(np.finfo(dtype).max) / 1e3  # a direct sum of 45 such products stays finite
    for pass_name in ("forward", "grad_input"):
        xs = (x / np.abs(x).max() * big).astype(dtype) if pass_name == "forward" else x
        gys = (gy / np.abs(gy).max() * big).astype(dtype) if pass_name == "grad_input" else gy
        ref, scale = _reference(torch, xs, w, gys, geom)
        ours = _ours("winograd", pass_name, xs, w, gys, geom)
        assert np.isfinite(ours).all()
        _check(ours, ref[pass_name], scale[pass_name], dtype, f"winograd {pass_name} near {big:.1e}")


def test_default_planner_depthwise_31x31_nan_and_grad_output_nan(torch):
    """The issue's case through nn.functional: the planner picks FFT and keeps torch's locality."""
    import npconv
    import npconv.nn.functional as F

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 48, 48)).astype(np.float32)
    w = rng.standard_normal((2, 1, 31, 31)).astype(np.float32) / 31
    geom = _geom(w.shape, 15, 2)
    assert plan.choose("forward", x.shape, w.shape, geom, np.float32) == "fft"
    x[0, 1, 20, 30] = np.nan
    xt, wt = npconv.tensor(x, requires_grad=True), npconv.tensor(w, requires_grad=True)
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y, yt = F.conv2d(xt, wt, padding=15, groups=2), torch.nn.functional.conv2d(tx, tw, padding=15, groups=2)
    np.testing.assert_array_equal(np.isnan(y.numpy()), torch.isnan(yt).numpy())
    assert np.isnan(y.numpy()).sum() == 31 * 31 and not np.isnan(y.numpy()[0, 0]).any()
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gy[0, 0, 3, 40] = np.nan
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(np.isnan(xt.grad.numpy()), torch.isnan(tx.grad).numpy())
    np.testing.assert_array_equal(np.isnan(wt.grad.numpy()), torch.isnan(tw.grad).numpy())


# -- the criterion (torch-free) -------------------------------------------------------------------
def _checked_spread(a, regional):
    """The spread the admission reads: the bulk's, and with ``regional`` (FFT) the larger of it and
    the quiet regions' (:func:`numerics.regional_spread`)."""
    r = numerics.value_range(a)
    return max(r.spread, numerics.regional_spread(a, r.peak)) if regional else r.spread


def _spread_array(spread, dtype, size=5000, seed=3, regional=False):
    """A random array whose checked spread (``_checked_spread``) is ``spread`` (one spike over the bulk)."""
    a = np.random.default_rng(seed).standard_normal(size).astype(dtype)
    a[size // 3] = 1e30  # the largest value: the bulk and quiet scales (quantiles) are the same for any spike
    a[size // 3] = 1e30 / _checked_spread(a, regional) * spread
    return a


def test_value_range():
    r = numerics.value_range
    assert r(np.zeros((0, 3))) == numerics.ValueRange(True, 0.0, 1.0)
    assert r(np.zeros(4)).spread == 1.0
    assert r(np.array([0.0, 0.0, -5.0])) == numerics.ValueRange(True, 5.0, np.inf)
    assert not r(np.array([1.0, np.nan])).finite and not r(np.array([1.0, -np.inf])).finite
    assert r(np.full(7, -3.0, np.float32)) == numerics.ValueRange(True, 3.0, 1.0)
    relu = np.maximum(np.random.default_rng(0).standard_normal(100_000), 0)  # half zeros: a normal scale
    assert 1.0 < r(relu).spread < 4.0
    spiky = relu.copy()
    spiky[::2000] = 1e6  # 50 spikes: still measured against the bulk
    assert r(spiky).spread > 1e5
    for spread in (10.0, 1e3, 1e9):
        assert r(_spread_array(spread, np.float64)).spread == pytest.approx(spread, rel=1e-9)


@pytest.mark.skipif(not backends.core.available, reason="compiled core not in use")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_bulk_scale_is_the_samples_exact_quantile(dtype):
    """The core's ``value_range`` selects the sample's k-th smallest magnitude (a radix selection on the
    bits) exactly as NumPy's partition: ties (zeros, one repeated value, +0.0 and -0.0), values across
    many binades, subnormals, one value, every quantile from 0 to 1, samples of every length."""
    core = backends.core.module
    rng = np.random.default_rng(11)
    tiny = np.finfo(dtype).tiny
    cases = [np.zeros(50), np.full(33, -2.5), np.array([7.0]), np.array([0.0, -0.0, 3.0, -0.0]),
             rng.standard_normal(4096) * 10.0 ** rng.integers(-30, 30, 4096),
             np.maximum(rng.standard_normal(5000), 0), rng.integers(-3, 4, 9000).astype(float),
             np.concatenate([rng.random(300) * tiny * 4, rng.random(300)]),  # subnormals and normals
             rng.standard_normal(4097), rng.standard_normal(123),
             rng.permutation(1.0 + np.arange(300) * np.finfo(dtype).eps)]  # neighbours: the last bits decide
    for values in cases:
        a = values.astype(dtype)
        for quantile in (0.0, 0.1, 0.5, 0.9, 1.0):
            for sample in (1, 7, 4096):
                peak, nan, bulk = core.value_range(backends.core.isa_index, a, sample, quantile)
                step = max(1, a.size // sample)
                mags = np.abs(a[::step][:sample]).astype(np.float64)
                k = int(quantile * (mags.size - 1))
                expected = float(np.partition(mags, k)[k]) if peak > 0 else 0.0
                assert bulk == expected and not nan, (a.size, quantile, sample)
                assert peak == float(np.abs(a).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_range_without_its_spread_is_never_admitted_on_spread(dtype):
    """``spread=False`` (an operand whose spread no check reads: a weight) gives the same finiteness and
    peak, and an infinite spread; ``within`` estimates the spread of the data operands only, and an
    operand's range found without its spread is found again when the spread is asked for."""
    rng = np.random.default_rng(7)
    for a in (rng.standard_normal(5000).astype(dtype), _spread_array(1e6, np.float64).astype(dtype),
              np.array([1.0, np.nan], dtype), np.zeros(9, dtype), np.zeros(0, dtype)):
        full, peak_only = numerics.value_range(a), numerics.value_range(a, spread=False)
        assert (peak_only.finite, peak_only.peak) == (full.finite, full.peak)
        assert peak_only.spread == (np.inf if full.finite and full.peak > 0 else full.spread)
    x, w = rng.standard_normal((2, 4, 8, 8)).astype(dtype), rng.standard_normal((4, 4, 3, 3)).astype(dtype)
    w[1, 2, 0, 1] = 1e9  # a spiky weight
    operands = numerics.Operands((x, w))
    assert numerics.within(operands, (0,), 1e3, 1.0)  # a weight's spread is not a data spread
    assert operands.range(1, spread=False).spread == np.inf  # kept from within
    assert 1e8 < operands.range(1).spread < np.inf  # asked for: estimated
    assert not numerics.within(numerics.Operands((w.reshape(2, 4, 2, 9), x)), (0,), 1e3, 1.0)


def _numpy_value_range(a: np.ndarray) -> numerics.ValueRange:
    """The definition with NumPy alone: max and min, the QUANTILE of |a[::step][:SAMPLE]| as the bulk."""
    flat = a.reshape(-1)
    if flat.size == 0:
        return numerics.ValueRange(True, 0.0, 1.0)
    high, low = float(flat.max()), float(flat.min())
    if not (np.isfinite(high) and np.isfinite(low)):
        return numerics.ValueRange(False, np.inf, np.inf)
    peak = max(high, -low)
    if peak == 0.0:
        return numerics.ValueRange(True, 0.0, 1.0)
    sample = np.abs(flat[::max(1, flat.size // numerics.SAMPLE)][:numerics.SAMPLE], dtype=np.float64)
    k = int(numerics.QUANTILE * (sample.size - 1))
    bulk = float(np.partition(sample, k)[k])
    return numerics.ValueRange(True, peak, peak / bulk if bulk > 0.0 else np.inf)


@pytest.mark.skipif(not backends.core.available, reason="the compiled core's value_range")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_range_in_one_compiled_pass_equals_numpys(dtype):
    """The compiled core's one-pass range (the largest magnitude on the bits: vector blocks, then the
    tail) gives exactly NumPy's peak, finiteness and sampled quantile, at every size around the vector
    blocks and the sample, with NaN, +-inf, -0.0, subnormals and spikes anywhere (first element, a
    block's last lane, the tail)."""
    rng = np.random.default_rng(3)
    r = numerics.value_range
    for size in (1, 2, 15, 16, 63, 64, 65, 129, 4095, 4096, 4097, 8193, 100_003, 250_000):
        base = (rng.standard_normal(size) * rng.choice([1e-3, 1.0, 1e4])).astype(dtype)
        for poke in (None, 0, size // 2, size - 1, min(63, size - 1)):
            for value in (np.nan, np.inf, -np.inf, -0.0, 1e30, -7.5, -np.finfo(dtype).smallest_subnormal):
                a = base.copy()
                if poke is not None:
                    a[poke] = value
                assert r(a) == _numpy_value_range(a), (size, poke, value)
        assert r(np.abs(base)) == _numpy_value_range(np.abs(base))
        tiny = np.full(size, -np.finfo(dtype).smallest_subnormal, dtype)  # the peak's bits: 1
        assert r(tiny) == _numpy_value_range(tiny)
        zeros = np.zeros(size, dtype)
        zeros[-1] = -0.0
        assert r(zeros) == numerics.ValueRange(True, 0.0, 1.0)
    relu = np.maximum(rng.standard_normal((8, 64, 56, 56)).astype(dtype), 0)
    assert r(relu) == _numpy_value_range(relu)
    strided = rng.standard_normal((64, 64)).astype(dtype)[:, ::2]  # not contiguous: the NumPy path
    assert r(strided) == _numpy_value_range(np.ascontiguousarray(strided))
    with pytest.raises(ValueError, match="sample"):
        backends.core.module.value_range(backends.core.isa_index, relu.reshape(-1), 0, 0.9)
    with pytest.raises(TypeError, match="float32 or float64"):
        backends.core.module.value_range(backends.core.isa_index, np.arange(5), 8, 0.9)


@pytest.mark.skipif(not backends.core.available, reason="the compiled core's value_range_part")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_range_in_parts_equals_numpys(dtype, monkeypatch):
    """A large array is scanned in parts on the worker threads (value_range_part): the same max, min,
    finiteness and sampled quantile as NumPy's, for 1-3 threads, with NaN, +-inf, -0.0 and spikes at
    the parts' edges; one thread, or a smaller array, takes the single pass."""
    parts = []
    run_calls = numerics.workspace.run_calls
    monkeypatch.setattr(numerics.workspace, "run_calls",
                        lambda kernel, calls, *a: (parts.extend(calls), run_calls(kernel, calls, *a))[1])
    real = backends.core.module.value_range_part
    monkeypatch.setattr(numerics, "PARALLEL_MIN_SIZE", 1000)
    rng = np.random.default_rng(4)
    r = numerics.value_range
    previous = backends.get_num_threads()
    try:
        for threads in (1, 2, 3):
            backends.set_num_threads(threads)
            for size in (999, 1000, 1001, 5003, 40_000):
                base = (rng.standard_normal(size) * rng.choice([1e-3, 1.0, 1e4])).astype(dtype)
                edges = sorted({size * k // threads + d for k in range(threads + 1) for d in (-1, 0)}
                               & set(range(size)))
                for poke in (None, *edges):
                    for value in (np.nan, np.inf, -np.inf, -0.0, 1e30, -7.5):
                        a = base.copy()
                        if poke is not None:
                            a[poke] = value
                        parts.clear()
                        assert r(a) == _numpy_value_range(a), (threads, size, poke, value)
                        split = threads > 1 and size >= 1000
                        assert len(parts) == (threads if split else 0)
                zeros = np.zeros(size, dtype)
                zeros[size // 2] = -0.0
                assert r(zeros) == numerics.ValueRange(True, 0.0, 1.0)
                sparse = np.zeros(size, dtype)
                sparse[1] = 3.0  # the sample (every size // 4096-th value from the first) is all zeros
                assert r(sparse) == _numpy_value_range(sparse)
    finally:
        backends.set_num_threads(previous)
    isa, out = backends.core.isa_index, np.empty(2, dtype)
    a = np.array([5, -3, 2, -9, np.inf, 1, np.nan, 4, -0.0, 0], dtype)
    for start, stop, expected in ((0, 3, [5.0, 0.0]), (1, 4, [9.0, 0.0]), (2, 5, [np.inf, 0.0]),
                                  (5, 7, [1.0, 1.0]), (8, 10, [0.0, 0.0]), (3, 3, [0.0, 0.0])):
        real(isa, a, out, start, stop)  # (max |v|, any NaN)
        assert out.tolist()[1] == expected[1] and (expected[1] or out[0] == expected[0]), (start, stop, out)
    with pytest.raises(ValueError, match="range"):
        real(isa, a, out, 4, 11)
    with pytest.raises(ValueError, match="out has 3 elements"):
        real(isa, a, np.empty(3, dtype), 0, 10)
    with pytest.raises(TypeError, match="same element type"):
        real(isa, a, np.empty(2, np.float64 if dtype == np.float32 else np.float32), 0, 10)


@pytest.mark.parametrize("algorithm, data_pass",
                         [(fft, "forward"), (fft, "grad_weight"), (winograd, "forward")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_routing_edge(algorithm, data_pass, dtype):
    """Just below the algorithm's spread limit it runs; just above, or with any NaN/inf, or where its
    transforms could overflow, the planner's rule gives the call to a local algorithm."""
    limit = algorithm.SPREAD_LIMIT
    geom = _geom((4, 4, 3, 3), 1, 1)
    key = ((1, 4, 25, 50), (4, 4, 3, 3), geom, np.dtype(dtype))
    w = np.full((4, 4, 3, 3), 0.1, dtype)
    gy = np.ones((1, 4, 25, 50), dtype)

    def chosen(x):
        operands = numerics.Operands((x, gy) if data_pass == "grad_weight" else (x, w))
        with backends.conv.force({data_pass: algorithm.NAME}):
            return plan._select(data_pass, key, operands)[0].name

    regional = algorithm is fft
    below = _spread_array(limit * 0.999, dtype, regional=regional).reshape(1, 4, 25, 50)
    above = _spread_array(limit * 1.001, dtype, regional=regional).reshape(1, 4, 25, 50)
    assert chosen(below) == algorithm.NAME
    assert chosen(above) == "gemm"
    for value in (np.nan, np.inf, -np.inf):
        assert chosen(_corrupt(below, value, 0.9)) == "gemm"
    scale = float(np.finfo(dtype).max) / 10  # finite peaks whose product overflows in the transforms
    assert chosen(below / np.abs(below).max() * scale) == "gemm"


# -- one range per array and step ------------------------------------------------------------------
def _non_local_passes():
    """Winograd for the three passes where the engine has its grad_weight (the compiled one), else FFT's."""
    gw = "winograd" if registry.available()["winograd"].compiled else "fft"
    return {"forward": "winograd", "grad_input": "winograd", "grad_weight": gw}


def _scans(monkeypatch):
    """The arrays value_range scans (by identity, with the spread flag), recorded."""
    seen = []
    real = numerics.value_range
    monkeypatch.setattr(numerics, "value_range", lambda a, spread=True: (seen.append((id(a), spread)),
                                                                         real(a, spread))[1])
    return seen


@pytest.mark.parametrize("transposed", [False, True])
def test_a_training_step_scans_each_array_once(monkeypatch, transposed):
    """Through autograd, a step whose three passes run non-local algorithms (Winograd; FFT's grad_weight
    on the NumPy engine) checks x, w and gy once each (the forward's ranges serve the backward, gy's
    both backward passes); a second backward of the same graph with another gy checks that gy again."""
    import npconv
    import npconv.nn.functional as F

    seen = _scans(monkeypatch)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 32, 12, 12)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32) / 17
    with backends.conv.force(_non_local_passes()):
        xt, wt = npconv.tensor(x, requires_grad=True), npconv.tensor(w, requires_grad=True)
        y = (F.conv_transpose2d if transposed else F.conv2d)(xt, wt, padding=1)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        y.backward(gy, retain_graph=True)
        assert len(seen) == 3 and len({a for a, _ in seen}) == 3, seen
        y.backward(gy.copy())
    assert len(seen) == 4, seen


def test_a_second_backward_checks_its_own_grad_output(torch):
    """The ranges kept for a graph's backward are not its last grad_output's: a finite gy, then one with
    a NaN through the same graph give torch's NaN positions each time."""
    import npconv
    import npconv.nn.functional as F

    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 32, 12, 12)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32) / 17
    xt, wt = npconv.tensor(x, requires_grad=True), npconv.tensor(w, requires_grad=True)
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    with backends.conv.force(_non_local_passes()):
        y = F.conv2d(xt, wt, padding=1)
        yt = torch.nn.functional.conv2d(tx, tw, padding=1)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        for corrupt in (False, True):
            if corrupt:
                gy[0, 3, 5, 7] = np.nan
            xt.grad = wt.grad = tx.grad = tw.grad = None
            y.backward(gy.copy(), retain_graph=True)
            yt.backward(torch.from_numpy(gy.copy()), retain_graph=True)
            for ours, theirs in ((xt.grad.numpy(), tx.grad.numpy()), (wt.grad.numpy(), tw.grad.numpy())):
                np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
                assert np.isnan(ours).any() == corrupt
                assert not corrupt or not np.isnan(ours).all()


def test_ranges_are_kept_by_identity():
    """A :class:`numerics.Ranges` scans an array once (its spread asked for later: once more), a copy
    starts with what it has and adds its own, an equal array is a different array, and so is one made
    after another was dropped."""
    a = np.random.default_rng(0).standard_normal(300)
    ranges = numerics.Ranges()
    first = ranges.of(a, spread=False)
    assert first.spread == np.inf and ranges.of(a, spread=False) is first
    full = ranges.of(a)
    assert full == numerics.value_range(a) and ranges.of(a, spread=False) is full
    step = ranges.copy()
    b = a.copy()
    b[0] = np.nan
    assert step.of(a) is full and not step.of(b).finite
    assert ranges.of(a.copy()) is not full and id(b) not in ranges._known
    for k in range(1, 30):  # temporaries: an entry keeps its array, so no later array takes its id
        assert ranges.of(np.full(300, float(k))).peak == k
