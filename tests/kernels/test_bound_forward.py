"""Bound forwards (``PreparedForward.bind``: the kernel calls of a planned forward prepared once on fixed
input and output arrays, as ``npconv.jit``'s programs run them) against tests/reference.py, and bitwise
equal to the plan's own ``run(x)``: every gemm tiling, shared and fixed work ranges, one and two worker
threads, the epilogues (bias, ReLU and Hardtanh in the kernel, SiLU after it), depthwise stencils; run
again on new input values and after the weight changed in place; scratch from the caller only."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from kernel_checks import GEMM_TILINGS, forked_check, gemm_tiling
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import plan, workspace
from npconv.kernels.common import Epilogue
from npconv.kernels.pointwise import Activation

compiled_gemm = pytest.importorskip(
    "npconv.kernels.compiled_gemm", reason=f"compiled core not in use: {backends.core.reason}"
)

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}
ACTIVATIONS = {"none": None, "relu": Activation("relu"), "relu6": Activation("hardtanh", 0.0, 6.0),
               "silu": Activation("silu")}


def _activated(y: np.ndarray, activation: Activation | None) -> np.ndarray:
    if activation is None:
        return y
    if activation.kind == "relu":
        return np.maximum(y, 0)
    if activation.kind == "hardtanh":
        return np.clip(y, activation.lo, activation.hi)
    out = np.array(y)  # the silu op's pass: the kernels' fused SiLU has its arithmetic, bit for bit
    activation.apply_(out)
    return out


def _check_bound(rng, x_shape, w_shape, geom, dtype, activation, bias=True) -> None:
    """Bind a planned forward to fixed arrays; each run equals the reference and ``run(x)``."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    resolved = geom.with_padding(geom.pads(x_shape[2:]))
    prepared = plan.prepare_forward(x.shape, x.dtype, w, resolved, b, activation)
    assert prepared is not None and prepared.bind is not None
    def scratch(name, elements, dtype_):
        return np.empty(elements, dtype_)

    xb = np.empty_like(x)
    yb = np.empty((x_shape[0], w_shape[0]) + resolved.output_size(x_shape[2:]), dtype)
    run = prepared.bind(xb, yb, scratch)
    tol = TOL[np.dtype(dtype)]
    for step in range(3):
        if step == 2:
            w *= -0.5  # in place: the bound run reads the weight's current values
        x = rng.standard_normal(x_shape).astype(dtype)
        xb[...] = x
        run()
        expected = _activated(_reference(x, w, b, resolved), activation)
        np.testing.assert_allclose(yb, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())),
                                   err_msg=f"{x_shape} {w_shape} {geom} run {step}")
        np.testing.assert_array_equal(yb, prepared.run(x))


def _refuses_bad_residuals(prepared, xb, yb, scratch, res) -> None:
    """bind_residual refuses a residual of another layout, one sharing y's memory and an activation without a
    residual."""
    with pytest.raises(ValueError, match="residual must be a C-contiguous"):
        prepared.bind_residual(xb, yb, scratch, res[:, :1], None)
    with pytest.raises(ValueError, match="must not share memory"):
        prepared.bind_residual(xb, yb, scratch, yb, None)
    with pytest.raises(ValueError, match="activation needs a residual"):
        prepared.bind_residual(xb, yb, scratch, None, Activation("relu"))


def _reference(x, w, b, geom):
    lows = tuple(p[0] for p in geom.padding)
    highs = tuple(p[1] for p in geom.padding)
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(zip(lows, highs, strict=True)))
    y = reference.conv(xp, w, None, geom.stride, 0, geom.dilation, geom.groups)
    return y if b is None else y + b.reshape((-1,) + (1,) * geom.ndim)


GEMM_CASES = [  # (x shape, w shape, kernel, stride, padding, groups)
    ((2, 5, 9, 11), (7, 5, 1, 1), (1, 1), (1, 1), 0, 1),
    ((1, 6, 10, 9), (40, 6, 3, 3), (3, 3), (1, 1), 1, 1),  # one image, many channels: channel parts
    ((2, 3, 13, 12), (8, 3, 3, 3), (3, 3), (2, 2), 1, 1),
    ((2, 4, 7, 8), (6, 2, 3, 2), (3, 2), (1, 1), 1, 2),
    ((3, 4, 21), (5, 4, 5), (5,), (1,), 2, 1),
]


@pytest.mark.parametrize("tiling", sorted(GEMM_TILINGS))
@pytest.mark.parametrize("shared", [False, True], ids=["fixed-ranges", "shared-ranges"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_gemm_forward(rng, monkeypatch, parallel, tiling, shared, dtype):
    gemm_tiling(monkeypatch, tiling)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    monkeypatch.setattr(workspace, "SHARED_MIN_MACS", 0 if shared else 1 << 60)
    for i, (x_shape, w_shape, kernel, stride, padding, groups) in enumerate(GEMM_CASES):
        nd = len(kernel)
        geom = ConvGeometry(kernel, stride, ((padding, padding),) * nd, (1,) * nd, groups)
        activation = list(ACTIVATIONS.values())[i % len(ACTIVATIONS)]
        with backends.conv.force("gemm"):
            _check_bound(rng, x_shape, w_shape, geom, dtype, activation, bias=i % 2 == 0)


@pytest.mark.parametrize("tiling", sorted(GEMM_TILINGS))
@pytest.mark.parametrize("shared", [False, True], ids=["fixed-ranges", "shared-ranges"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_gemm_forward_with_a_residual(rng, monkeypatch, parallel, tiling, shared, dtype):
    """bind_residual: ``activation(run(x) + residual)`` bit for bit (the addition and activation run
    after the convolution, each work item's output while in cache), on every tiling and work split, with
    NaN and inf in the residual staying where they are; plans with an activation of their own have none,
    and bad arrays are refused."""
    gemm_tiling(monkeypatch, tiling)
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    monkeypatch.setattr(workspace, "SHARED_MIN_MACS", 0 if shared else 1 << 60)

    def scratch(name, elements, dtype_):
        return np.empty(elements, dtype_)

    for i, (x_shape, w_shape, kernel, stride, padding, groups) in enumerate(GEMM_CASES):
        nd = len(kernel)
        geom = ConvGeometry(kernel, stride, ((padding, padding),) * nd, (1,) * nd, groups)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype) if i % 2 == 0 else None
        with backends.conv.force("gemm"):
            prepared = plan.prepare_forward(x_shape, np.dtype(dtype), w, geom, b)
            assert plan.prepare_forward(x_shape, np.dtype(dtype), w, geom, b,
                                        Activation("relu")).bind_residual is None
        y_shape = (x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:])
        xb, yb, res = np.empty(x_shape, dtype), np.empty(y_shape, dtype), np.empty(y_shape, dtype)
        activation = [None, Activation("relu"), Activation("hardtanh", -0.5, 0.5), Activation("silu")][i % 4]
        run = prepared.bind_residual(xb, yb, scratch, res, activation)
        for _ in range(2):
            xb[...] = rng.standard_normal(x_shape)
            res[...] = rng.standard_normal(y_shape)
            res.reshape(-1)[rng.integers(res.size)] = [np.nan, np.inf][i % 2]
            run()
            np.testing.assert_array_equal(yb, _activated(prepared.run(xb) + res, activation))
        _refuses_bad_residuals(prepared, xb, yb, scratch, res)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_depthwise_forward(rng, monkeypatch, parallel, activation, dtype):
    from npconv.kernels import compiled_depthwise

    monkeypatch.setattr(compiled_depthwise, "MIN_THREAD_MACS", 1)
    for x_shape, multiplier, kernel, stride, dilation in [((2, 6, 11, 10), 1, (3, 3), (1, 1), (1, 1)),
                                                          ((1, 5, 12, 13), 2, (3, 3), (2, 2), (1, 1)),
                                                          ((2, 4, 9, 9), 1, (5, 5), (1, 1), (2, 2)),
                                                          ((2, 3, 30), 1, (7,), (2,), (1,))]:
        nd = len(kernel)
        c = x_shape[1]
        geom = ConvGeometry(kernel, stride, ((kernel[0] // 2, kernel[0] // 2),) * nd, dilation, c)
        with backends.conv.force("depthwise"):
            _check_bound(rng, x_shape, (c * multiplier, 1) + kernel, geom, dtype, ACTIVATIONS[activation])


def test_bind_checks_its_arrays(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    with backends.conv.force("gemm"):
        prepared = plan.prepare_forward((2, 3, 8, 8), np.dtype(np.float32), w, geom)
    y = np.empty((2, 4, 8, 8), np.float32)
    wrong = r"x must be a C-contiguous float32 array of shape \(2, 3, 8, 8\), got float32 \(2, 3, 8, 9\)"
    for x, message in [(np.empty((2, 3, 8, 9), np.float32), wrong),
                       (np.empty((2, 3, 8, 8)), "got float64"),
                       (np.empty((2, 3, 8, 16), np.float32)[..., ::2], "not contiguous")]:
        with pytest.raises(ValueError, match=message):
            prepared.bind(x, y, lambda name, n, d: np.empty(n, d))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_non_local_choice_is_planned_with_its_local_reroute(rng, parallel, dtype):
    """Winograd (its use depends on the values: ``admits``) planned and bound: each run checks the
    call's values, and those it does not admit (a spread beyond its limit, inf, NaN) run the local
    algorithm the planner reroutes them to, with the planner's values (NaN and inf where it puts them)."""
    from npconv.kernels import compiled_winograd

    x_shape, w = (2, 16, 12, 10), rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    relu = Activation("relu")
    with backends.conv.force("winograd"):
        prepared = plan.prepare_forward(x_shape, np.dtype(dtype), w, geom, b, relu)
        assert prepared is not None and prepared.bind is not None
        xb, yb = np.empty(x_shape, dtype), np.empty(x_shape[:1] + (16,) + x_shape[2:], dtype)
        run = prepared.bind(xb, yb, lambda name, n, d: np.empty(n, d))
        for case in ("normal", "spread", "inf", "nan"):
            x = rng.standard_normal(x_shape).astype(dtype)
            if case != "normal":
                x[1, 3, 4, 5] = {"spread": 1e30 if dtype == np.float64 else 1e18, "inf": np.inf,
                                 "nan": np.nan}[case]
            xb[...] = x
            run()
            if case == "normal":  # Winograd's own values
                own = compiled_winograd.forward(x, w, geom, epilogue=Epilogue(b, relu))
                np.testing.assert_array_equal(yb, own)
            eager = plan.forward(x, w, geom, b, relu)
            np.testing.assert_array_equal(yb, eager, err_msg=case)
            np.testing.assert_array_equal(prepared.run(x), eager, err_msg=case)
            if case in ("normal", "spread"):
                wide = [a.astype(np.float64) for a in (x, w, b)]
                expected = np.maximum(_reference(*wide, geom), 0)
                tol = TOL[np.dtype(dtype)]
                np.testing.assert_allclose(yb, expected, rtol=tol, atol=tol * float(np.abs(expected).max()))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shared", [False, True], ids=["fixed-ranges", "shared-ranges"])
def test_bound_winograd_forward(rng, monkeypatch, parallel, activation, shared):
    """Winograd's bound runs (its values admitted): tiles shared or split by output channels (one image
    with few tiles on two threads), groups, float32 and float64."""
    monkeypatch.setattr(workspace, "SHARED_MIN_MACS", 0 if shared else 1 << 60)
    for dtype in (np.float32, np.float64):
        for x_shape, w_shape, groups in [((1, 40, 9, 10), (38, 40, 3, 3), 1),
                                         ((2, 16, 12, 10), (16, 16, 3, 3), 1),
                                         ((2, 16, 8, 9), (16, 8, 3, 3), 2)]:
            geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), groups)
            with backends.conv.force("winograd"):
                _check_bound(rng, x_shape, w_shape, geom, dtype, ACTIVATIONS[activation])


@pytest.mark.parametrize("cap", [None, 5], ids=["whole-items", "5-tile-items"])
@pytest.mark.parametrize("shared", [False, True], ids=["fixed-ranges", "shared-ranges"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_winograd_forward_with_a_residual(rng, monkeypatch, parallel, shared, dtype, cap):
    """Winograd's bind_residual (through the planner's non-local plan): ``activation(run(x) + residual)``
    bit for bit, each output run's values added in the output transform, on shared and fixed tile ranges,
    channel parts with the shared input transform (one image of few tiles, two threads), groups and
    ragged tiles, items of 5 tiles (starting and ending inside tile rows and images); NaN and inf in the
    residual stay where they are; an input the check does not admit (a NaN)
    runs the local algorithm's bind_residual, as the planner's rerouted call (a grouped call, whose local
    kernel has no bind_residual, has none through the planner); bad arrays are refused."""
    from npconv.kernels import compiled_winograd

    monkeypatch.setattr(workspace, "SHARED_MIN_MACS", 0 if shared else 1 << 60)
    if cap is not None:
        monkeypatch.setattr(compiled_winograd, "_TARGET_TILES", cap)
    calls, codes = [], compiled_winograd.fused_residual_codes
    monkeypatch.setattr(compiled_winograd, "fused_residual_codes",
                        lambda *a: calls.append(a[2] is not None) or codes(*a))

    def scratch(name, elements, dtype_):
        return np.empty(elements, dtype_)

    cases = [((1, 40, 9, 10), (38, 40, 3, 3), 1), ((2, 16, 12, 10), (16, 16, 3, 3), 1),
             ((2, 16, 8, 9), (16, 8, 3, 3), 2), ((2, 16, 9, 9), (24, 8, 3, 3), 2)]
    for i, (x_shape, w_shape, groups) in enumerate(cases):
        geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), groups)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype) if i != 1 else None
        with backends.conv.force("winograd"):
            prepared = plan.prepare_forward(x_shape, np.dtype(dtype), w, geom, b)
            assert plan.prepare_forward(x_shape, np.dtype(dtype), w, geom, b,
                                        Activation("relu")).bind_residual is None
        if groups > 1:  # the planner's local reroute (the grouped kernel) has none: Winograd's own plan
            assert prepared.bind_residual is None
            prepared = compiled_winograd.prepare_forward(x_shape, np.dtype(dtype), w, geom, b)
        y_shape = (x_shape[0], w_shape[0]) + geom.output_size(x_shape[2:])
        xb, yb, res = np.empty(x_shape, dtype), np.empty(y_shape, dtype), np.empty(y_shape, dtype)
        activation = [None, Activation("relu"), Activation("hardtanh", -0.5, 0.5), Activation("silu")][i % 4]
        calls.clear()
        run = prepared.bind_residual(xb, yb, scratch, res, activation)
        assert calls == [True]  # the Winograd kernel took the residual
        for case in ("admitted", "admitted", "nan input")[:3 if groups == 1 else 2]:
            x = rng.standard_normal(x_shape).astype(dtype)
            if case == "nan input":
                x[0, 1, 2, 3] = np.nan
            xb[...] = x
            res[...] = rng.standard_normal(y_shape)
            res.reshape(-1)[rng.integers(res.size)] = [np.nan, np.inf][i % 2]
            run()
            expected = _activated(prepared.run(x) + res, activation)
            np.testing.assert_array_equal(yb, expected, err_msg=f"{x_shape} {case}")
            if case != "nan input":
                own = compiled_winograd.forward(x, w, geom, b) + res
                np.testing.assert_array_equal(yb, _activated(own, activation))
        _refuses_bad_residuals(prepared, xb, yb, scratch, res)


#: Winograd weights changed between runs: (x shape, w shape, C-contiguous w).
_WEIGHT_CASES = [((1, 40, 9, 10), (38, 40, 3, 3), True),  # channel parts
                 ((2, 16, 12, 10), (16, 16, 3, 3), True),  # ranges of kernels
                 ((2, 16, 12, 10), (16, 16, 3, 3), False)]
_CHANGES = ("none", "first", "none", "last", "all", "nan", "restored")


def _changing_weights(rng, dtype):
    """Per case of _WEIGHT_CASES: (x shape, a random w laid out as the case says, a copy of it)."""
    for x_shape, w_shape, contiguous in _WEIGHT_CASES:
        w = rng.standard_normal(w_shape).astype(dtype)
        w = w if contiguous else np.asfortranarray(w)
        yield x_shape, w, w.copy()


def _change(w: np.ndarray, change: str, original: np.ndarray) -> None:
    """One kernel of the first or the last range, the whole weight, a NaN, or the original values."""
    if change == "first":
        w[0, 1] += 1.0
    elif change == "last":
        w[-1, -1, 2, 0] = -3.0
    elif change == "all":
        w *= 0.5
    elif change == "nan":
        w[5, 2, 1, 1] = np.nan
    elif change == "restored":
        w[...] = original


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "every-run"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_winograd_transforms_the_weight_again_only_where_it_changed(rng, monkeypatch, parallel, keep,
                                                                          dtype):
    """A bound Winograd run keeps its transformed weight (KEEP_TRANSFORM) and transforms a worker's range
    (or an output-channel part's) again only where the weight's values changed: each run, after one
    kernel changed in place in the first or the last range, the whole weight, a NaN the planner reroutes
    around, and the values restored, equals an unbound call on the current values; a non-contiguous
    weight (a contiguous copy refilled per run) too."""
    from npconv.kernels import compiled_winograd

    monkeypatch.setattr(compiled_winograd, "KEEP_TRANSFORM", keep)
    geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    for x_shape, w, original in _changing_weights(rng, dtype):
        with backends.conv.force("winograd"):
            prepared = plan.prepare_forward(x_shape, np.dtype(dtype), w, geom)
            xb = np.empty(x_shape, dtype)
            yb = np.empty(x_shape[:1] + w.shape[:1] + x_shape[2:], dtype)
            run = prepared.bind(xb, yb, lambda name, n, d: np.empty(n, d))
            for change in _CHANGES:
                _change(w, change, original)
                xb[...] = rng.standard_normal(x_shape)
                run()
                np.testing.assert_array_equal(yb, plan.forward(xb, w, geom), err_msg=change)
                if change != "nan":
                    np.testing.assert_array_equal(yb, compiled_winograd.forward(xb, w, geom), err_msg=change)


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "every-run"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_planned_winograd_runs_keep_the_transform_while_the_weight_is_unchanged(rng, monkeypatch, parallel,
                                                                                keep, dtype):
    """An unbound run of a Winograd plan (a module's in inference) keeps its transformed weight within
    KEPT_TRANSFORM_BYTES and transforms a range again only where the weight's values changed: each run,
    after the same changes as the bound runs', equals an unplanned call on the current values; a
    non-contiguous weight (a contiguous copy per run) too; the budget is returned when the plan goes,
    and a plan beyond it keeps nothing and gives the same values."""
    import gc

    from npconv.kernels import compiled_winograd

    monkeypatch.setattr(compiled_winograd, "KEPT_TRANSFORM_BYTES", 256 << 20 if keep else 0)
    geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    held = compiled_winograd._kept_bytes
    for x_shape, w, original in _changing_weights(rng, dtype):
        with backends.conv.force("winograd"):
            prepared = plan.prepare_forward(x_shape, np.dtype(dtype), w, geom)
            for change in _CHANGES:
                _change(w, change, original)
                x = rng.standard_normal(x_shape).astype(dtype)
                y = prepared.run(x)
                assert compiled_winograd._kept_bytes == held + (5 * w.nbytes if keep else 0)
                np.testing.assert_array_equal(y, plan.forward(x, w, geom), err_msg=change)
                if change != "nan":
                    np.testing.assert_array_equal(y, compiled_winograd.forward(x, w, geom), err_msg=change)
        del prepared
        gc.collect()
        assert compiled_winograd._kept_bytes == held


def test_planned_winograd_runs_from_two_threads_at_once(rng, parallel):
    """Two threads running one Winograd plan at once (one on the kept transform, the other transforming
    the weight itself), the weight changed in place between rounds: every result is the unplanned
    call's."""
    import threading

    geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    xs = [rng.standard_normal((2, 16, 12, 12)).astype(np.float32) for _ in range(2)]
    with backends.conv.force("winograd"):
        prepared = plan.prepare_forward(xs[0].shape, xs[0].dtype, w, geom)
        for round_ in range(4):
            w[round_] *= -2.0
            expected = [plan.forward(x, w, geom) for x in xs]
            results: list = [[], []]
            start = threading.Barrier(2)

            def work(k: int, start: threading.Barrier, out: list) -> None:
                start.wait()
                for _ in range(20):
                    out.append(prepared.run(xs[k]))

            threads = [threading.Thread(target=work, args=(k, start, results[k])) for k in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for k in range(2):
                assert len(results[k]) == 20
                for y in results[k]:
                    np.testing.assert_array_equal(y, expected[k])


def _eager_transform(function, kind):
    """The ``kind`` object a plan's ``run`` closes over (through the planner's wrappers)."""
    seen, todo = set(), [function]
    while todo:
        item = todo.pop()
        if isinstance(item, kind):
            return item
        if id(item) in seen:
            continue
        seen.add(id(item))
        if callable(item) and getattr(item, "__closure__", None):
            todo.extend(cell.cell_contents for cell in item.__closure__)
        elif isinstance(item, tuple):  # a PreparedForward
            todo.extend(item)
    raise AssertionError("no kept transform in the plan")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_its_own_winograd_transform(rng) -> None:
    """A child forked while another thread of the parent held a plan's kept transform (its lock taken,
    its U possibly half made) keeps a transform of its own again, counted once, and computes right."""
    from npconv.kernels import compiled_winograd

    geom = ConvGeometry((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    with backends.conv.force("winograd"):
        prepared = plan.prepare_forward(x.shape, x.dtype, w, geom)
        prepared.run(x)
        expected = plan.forward(x, w, geom)
        eager = _eager_transform(prepared.run, compiled_winograd._EagerTransform)
        held = compiled_winograd._kept_bytes

        def child() -> bool:
            w[0] *= 2.0  # the child's weight changes: its own transform must follow
            expected_child = plan.forward(x, w, geom)
            y = prepared.run(x)
            return (np.array_equal(y, expected_child) and eager.kept is not None
                    and np.array_equal(eager.kept.seen, w)  # made in the child, from its weight
                    and compiled_winograd._kept_bytes == held)

        assert forked_check(eager.lock, child)  # as if another thread of the parent were running the plan
        np.testing.assert_array_equal(prepared.run(x), expected)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_grouped_forward(rng, parallel, activation, dtype):
    """The grouped kernel's bound runs: images x groups split across the workers, or one ungrouped
    image's output rows (its forward takes few input channels), a 1-d one's output channels."""
    for x_shape, w_shape, kernel, stride, groups in [((2, 8, 9, 10), (12, 2, 3, 3), (3, 3), (1, 1), 4),
                                                     ((1, 3, 11, 12), (20, 3, 3, 3), (3, 3), (2, 2), 1),
                                                     ((1, 2, 13, 9), (9, 2, 5, 5), (5, 5), (3, 2), 1),
                                                     ((1, 3, 30), (20, 3, 7), (7,), (2,), 1),
                                                     ((3, 6, 17), (6, 3, 5), (5,), (2,), 2)]:
        nd = len(kernel)
        geom = ConvGeometry(kernel, stride, ((1, 1),) * nd, (1,) * nd, groups)
        with backends.conv.force("grouped"):
            _check_bound(rng, x_shape, w_shape, geom, dtype, ACTIVATIONS[activation])
