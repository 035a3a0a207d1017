"""F.interpolate / nn.Upsample against torch (every mode, size and scale forms, align_corners,
recompute_scale_factor), the fast paths against the general kernel, and torch-free adjointness."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from npconv.ops import interpolate as interp
from torch_oracle import compare, torch_module

MODES_BY_RANK = {
    1: ["nearest", "nearest-exact", "linear", "area"],
    2: ["nearest", "nearest-exact", "bilinear", "bicubic", "area"],
    3: ["nearest", "nearest-exact", "trilinear", "area"],
}
ALIGNABLE = ("linear", "bilinear", "bicubic", "trilinear")


def _x(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@settings(max_examples=60, deadline=None)
@given(
    rank=st.integers(1, 3),
    data=st.data(),
    dtype=st.sampled_from([np.float64, np.float32]),
    align=st.sampled_from([None, False, True]),
    use_size=st.booleans(),
    recompute=st.sampled_from([None, False, True]),
)
def test_interpolate_matches_torch(rank, data, dtype, align, use_size, recompute):
    torch = torch_module()
    mode = data.draw(st.sampled_from(MODES_BY_RANK[rank]))
    spatial = tuple(data.draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    if use_size:
        size = tuple(data.draw(st.lists(st.integers(1, 9), min_size=rank, max_size=rank)))
        kwargs = {"size": size if data.draw(st.booleans()) or rank == 1 else size[0]}
    else:
        factors = data.draw(
            st.lists(
                st.sampled_from([0.5, 0.75, 1.0, 1.3, 1.5, 2.0, 2.5, 3.0, 0.3]), min_size=rank, max_size=rank
            )
        )
        factors = [max(f, 1.0 / n + 1e-3) for f, n in zip(factors, spatial, strict=True)]  # at least 1 output
        kwargs = {"scale_factor": tuple(factors)}
        if recompute is not None:
            kwargs["recompute_scale_factor"] = recompute
    if mode in ALIGNABLE and align is not None:
        kwargs["align_corners"] = align
    x = _x((2, 3) + spatial, dtype)
    compare(
        lambda t: F.interpolate(t, mode=mode, **kwargs),
        lambda t: torch.nn.functional.interpolate(t, mode=mode, **kwargs),
        [x],
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("mode", "shape"),
    [
        ("nearest", (2, 3, 5, 7)),
        ("bilinear", (2, 3, 5, 7)),
        ("nearest", (1, 2, 4)),
        ("linear", (1, 2, 4)),
        ("trilinear", (1, 2, 3, 4, 2)),
        ("nearest", (1, 2, 3, 4, 2)),
        ("linear", (1, 1, 1)),
        ("bilinear", (1, 1, 1, 3)),
    ],
)
def test_twice_fast_paths_match_torch(mode, shape, dtype):
    torch = torch_module()
    x = _x(shape, dtype)
    for kwargs in (
        {"scale_factor": 2},
        {"scale_factor": 2.0, "recompute_scale_factor": True},
        {"size": tuple(2 * n for n in shape[2:])},
    ):
        compare(
            lambda t, kw=kwargs: F.interpolate(t, mode=mode, **kw),
            lambda t, kw=kwargs: torch.nn.functional.interpolate(t, mode=mode, **kw),
            [x],
        )


def test_nan_and_inf_stay_where_torch_puts_them():
    torch = torch_module()
    x = _x((1, 1, 6, 6), np.float64)
    x[0, 0, 2, 3] = np.nan
    x[0, 0, 4, 1] = np.inf
    for mode, kwargs in [
        ("nearest", {}),
        ("bilinear", {}),
        ("bilinear", {"align_corners": True}),
        ("bicubic", {}),
    ]:
        for factor in (2, 1.5, 0.5):
            compare(
                lambda t, f=factor, m=mode, kw=kwargs: F.interpolate(t, scale_factor=f, mode=m, **kw),
                lambda t, f=factor, m=mode, kw=kwargs: torch.nn.functional.interpolate(
                    t, scale_factor=f, mode=m, **kw
                ),
                [x],
            )


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic", "nearest-exact"])
@pytest.mark.parametrize(("n", "m"), [(4, 8), (5, 3), (3, 7), (1, 4), (4, 1), (6, 6)])
@pytest.mark.parametrize("align", [False, True])
def test_backward_is_the_adjoint_without_torch(mode, n, m, align):
    """<A x, g> == <x, A^T g> for every kernel and fast path (no torch needed)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, n, n + 1))
    g = rng.standard_normal((2, 3, m, 2 * (n + 1)))
    align = align and mode in ("linear", "cubic")
    y = interp.interpolate(npconv.tensor(x, requires_grad=True), (m, 2 * (n + 1)), mode, align, [None, None])
    xt = npconv.tensor(x, requires_grad=True)
    y = interp.interpolate(xt, (m, 2 * (n + 1)), mode, align, [None, None])
    y.backward(g)
    np.testing.assert_allclose(np.vdot(y.numpy(), g), np.vdot(x, xt.grad.numpy()), rtol=1e-12)


def test_twice_linear_fast_path_equals_the_general_kernel_without_torch():
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 4))
    fast = interp.interpolate(npconv.tensor(x), (10, 8), "linear", False, [None, None]).numpy()
    # reference: explicit two-tap sums along W then H
    ref = x
    for axis in (3, 2):
        idx, w = interp.axis_taps(ref.shape[axis], 2 * ref.shape[axis], "linear", False, None, x.dtype)
        shape = [1] * 4
        shape[axis] = -1
        ref = np.take(ref, idx[:, 0], axis) * w[:, 0].reshape(shape) + np.take(ref, idx[:, 1], axis) * w[
            :, 1
        ].reshape(shape)
    np.testing.assert_allclose(fast, ref, rtol=1e-14, atol=1e-14)


def test_upsample_modules_repr_and_forward_match_torch():
    torch = torch_module()
    tnn = torch.nn
    pairs = [
        (nn.Upsample(scale_factor=2), tnn.Upsample(scale_factor=2)),
        (
            nn.Upsample(size=(3, 4), mode="bilinear", align_corners=True),
            tnn.Upsample(size=(3, 4), mode="bilinear", align_corners=True),
        ),
        (
            nn.Upsample(scale_factor=(2, 1.5), mode="bicubic"),
            tnn.Upsample(scale_factor=(2, 1.5), mode="bicubic"),
        ),
        (nn.UpsamplingNearest2d(scale_factor=2), tnn.UpsamplingNearest2d(scale_factor=2)),
        (nn.UpsamplingBilinear2d(size=4), tnn.UpsamplingBilinear2d(size=4)),
    ]
    x = _x((2, 3, 4, 5), np.float32)
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict()) == []
        compare(ours, theirs, [x])


@pytest.mark.parametrize(
    ("kwargs", "shape", "error"),
    [
        ({"scale_factor": 2, "size": 3}, (1, 1, 4), ValueError),
        ({}, (1, 1, 4), ValueError),
        ({"size": (2, 3)}, (1, 1, 4), ValueError),
        ({"scale_factor": (2, 3)}, (1, 1, 4), ValueError),
        ({"size": 2.5}, (1, 1, 4), TypeError),
        ({"size": (2.5,)}, (1, 1, 4), TypeError),
        ({"size": 4, "mode": "nearest", "align_corners": True}, (1, 1, 4), ValueError),
        ({"size": 4, "mode": "bilinear"}, (1, 1, 4), ValueError),
        ({"size": 4, "mode": "trilinear"}, (1, 1, 4, 4), ValueError),
        ({"size": 4, "mode": "linear"}, (1, 4), ValueError),
        ({"size": 4, "mode": "cubic"}, (1, 1, 4), ValueError),
        ({"size": 4, "recompute_scale_factor": True}, (1, 1, 4), ValueError),
        ({"size": 0}, (1, 1, 4), ValueError),
        ({"scale_factor": 0.1}, (1, 1, 4), ValueError),
        ({"scale_factor": float("nan")}, (1, 1, 4), TypeError),
        ({"size": 4, "mode": "bilinear", "antialias": True}, (1, 1, 4, 4), ValueError),
    ],
)
def test_bad_arguments_are_rejected(kwargs, shape, error):
    with pytest.raises(error):
        F.interpolate(npconv.tensor(np.ones(shape, np.float32)), **kwargs)


def test_deprecated_upsample_aliases_warn_and_match_interpolate():
    x = npconv.tensor(_x((1, 2, 3, 3), np.float32))
    with pytest.warns(UserWarning, match="deprecated"):
        y = F.upsample_bilinear(x, scale_factor=2)
    np.testing.assert_array_equal(
        y.numpy(), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True).numpy()
    )


@pytest.mark.parametrize("scale", [0.3, 0.7, 1.3, 2.6, 3.3])
def test_nearest_exact_with_a_scale_factor_picks_torchs_source_pixels(scale):
    """torch floors the double (o + 0.5) / scale rounded to float (1.5 / 0.3 is 5.0f: source 5, not 4)."""
    torch = pytest.importorskip("torch")
    x = np.arange(2 * 17 * 13, dtype=np.float64).reshape(1, 2, 17, 13)
    for mode in ("nearest", "nearest-exact"):
        ours = npconv.nn.functional.interpolate(npconv.tensor(x), scale_factor=scale, mode=mode)
        theirs = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=scale, mode=mode)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
