"""F.grid_sample and F.affine_grid against torch (every mode/padding/align_corners, 2-D and 3-D, gradients
of input, grid and theta), and a NumPy check of the bilinear weights without torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn.functional as F
from torch_oracle import compare, torch_module


def _grid(shape, dtype, seed, spread=1.3):
    return np.random.default_rng(seed).uniform(-spread, spread, shape).astype(dtype)


@settings(max_examples=40, deadline=None)
@given(
    nd=st.sampled_from([2, 3]),
    mode=st.sampled_from(["bilinear", "nearest"]),
    padding=st.sampled_from(["zeros", "border", "reflection"]),
    align=st.booleans(),
    dtype=st.sampled_from([np.float64, np.float32]),
    data=st.data(),
)
def test_grid_sample_matches_torch(nd, mode, padding, align, dtype, data):
    torch = torch_module()
    in_size = tuple(data.draw(st.lists(st.integers(1, 5), min_size=nd, max_size=nd)))
    out_size = tuple(data.draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    x = np.random.default_rng(0).standard_normal((2, 3) + in_size).astype(dtype)
    g = _grid((2,) + out_size + (nd,), dtype, 1, spread=data.draw(st.sampled_from([0.9, 1.5, 3.5])))
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    # the grid gradient is not defined where a coordinate sits on a cell border or a clip point; the random
    # grid avoids them with probability 1
    compare(
        lambda a, b: F.grid_sample(a, b, **kw),
        lambda a, b: torch.nn.functional.grid_sample(a, b, **kw),
        [x, g],
        tol=1e-9 if dtype == np.float64 else 1e-4,
    )


@settings(max_examples=25, deadline=None)
@given(
    padding=st.sampled_from(["zeros", "border", "reflection"]),
    align=st.booleans(),
    dtype=st.sampled_from([np.float64, np.float32]),
    in_size=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    spread=st.sampled_from([0.9, 1.5, 3.5]),
)
def test_grid_sample_bicubic_matches_torch(padding, align, dtype, in_size, spread):
    torch = torch_module()
    x = np.random.default_rng(0).standard_normal((2, 3) + in_size).astype(dtype)
    g = _grid((2, 3, 4, 2), dtype, 1, spread=spread)
    kw = dict(mode="bicubic", padding_mode=padding, align_corners=align)
    compare(
        lambda a, b: F.grid_sample(a, b, **kw),
        lambda a, b: torch.nn.functional.grid_sample(a, b, **kw),
        [x, g],
        tol=1e-9 if dtype == np.float64 else 1e-4,
    )


def test_grid_sample_exact_pixel_centres_reproduce_the_input_without_torch():
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 5))
    ys, xs = np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 5), indexing="ij")
    grid = np.stack([xs, ys], -1)[None]
    for mode in ("bilinear", "nearest", "bicubic"):
        y = F.grid_sample(npconv.tensor(x), npconv.tensor(grid), mode=mode, align_corners=True)
        np.testing.assert_allclose(y.numpy(), x, atol=1e-12)


def test_grid_sample_bilinear_weights_without_torch():
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    # point (x=1.25, y=0.5) in pixel units (align_corners=True): between columns 1-2 and rows 0-1
    gx, gy = 1.25 / 3 * 2 - 1, 0.5 / 2 * 2 - 1
    y = F.grid_sample(npconv.tensor(x), npconv.tensor(np.array([[[[gx, gy]]]])), align_corners=True)
    expected = (
        0.75 * 0.5 * x[0, 0, 0, 1]
        + 0.25 * 0.5 * x[0, 0, 0, 2]
        + 0.75 * 0.5 * x[0, 0, 1, 1]
        + 0.25 * 0.5 * x[0, 0, 1, 2]
    )
    np.testing.assert_allclose(y.numpy().ravel(), [expected])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 3, 4, 2), (1, 1, 1, 6), (2, 3, 1, 1)])
@pytest.mark.parametrize("align", [False, True])
def test_affine_grid_matches_torch(size, align, dtype):
    torch = torch_module()
    rows = 2 if len(size) == 4 else 3
    theta = np.random.default_rng(3).standard_normal((size[0], rows, rows + 1)).astype(dtype)
    compare(
        lambda t: F.affine_grid(t, size, align_corners=align),
        lambda t: torch.nn.functional.affine_grid(t, size, align_corners=align),
        [theta],
    )


def test_spatial_transformer_chain_matches_torch():
    torch = torch_module()
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 7))
    theta = np.array([[[0.9, 0.2, 0.1], [-0.1, 1.1, 0.05]], [[1.2, 0.0, -0.2], [0.3, 0.8, 0.0]]])

    def ours(a, t):
        return F.grid_sample(a, F.affine_grid(t, (2, 3, 5, 5), align_corners=False), align_corners=False)

    def theirs(a, t):
        TF = torch.nn.functional
        return TF.grid_sample(a, TF.affine_grid(t, (2, 3, 5, 5), align_corners=False), align_corners=False)

    compare(ours, theirs, [x, theta])


def test_align_corners_default_warns_like_torch():
    with pytest.warns(UserWarning, match="align_corners=False"):
        F.grid_sample(npconv.tensor(np.ones((1, 1, 2, 2))), npconv.tensor(np.zeros((1, 1, 1, 2))))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda: F.grid_sample(
                npconv.tensor(np.ones((1, 1, 2, 2))),
                npconv.tensor(np.zeros((1, 1, 1, 2))),
                mode="area",
                align_corners=False,
            ),
            ValueError,
        ),
        (
            lambda: F.grid_sample(
                npconv.tensor(np.ones((1, 1, 2, 2))),
                npconv.tensor(np.zeros((1, 1, 1, 2))),
                padding_mode="wrap",
                align_corners=False,
            ),
            ValueError,
        ),
        (
            lambda: F.grid_sample(
                npconv.tensor(np.ones((1, 1, 2, 2))),
                npconv.tensor(np.zeros((2, 1, 1, 2))),
                align_corners=False,
            ),
            ValueError,
        ),
        (
            lambda: F.grid_sample(
                npconv.tensor(np.ones((1, 1, 2, 2))),
                npconv.tensor(np.zeros((1, 1, 1, 3))),
                align_corners=False,
            ),
            ValueError,
        ),
        (
            lambda: F.grid_sample(
                npconv.tensor(np.ones((1, 1, 2))), npconv.tensor(np.zeros((1, 1, 1))), align_corners=False
            ),
            ValueError,
        ),
        (
            lambda: F.grid_sample(
                npconv.tensor(np.ones((1, 1, 2, 2))),
                npconv.tensor(np.zeros((1, 1, 1, 2), np.float32)),
                align_corners=False,
            ),
            TypeError,
        ),
        (
            lambda: F.affine_grid(npconv.tensor(np.ones((1, 2, 3))), (1, 1, 2, 2, 2), align_corners=False),
            ValueError,
        ),
        (
            lambda: F.affine_grid(npconv.tensor(np.ones((1, 2, 3))), (1, 1, 0, 2), align_corners=False),
            ValueError,
        ),
        (lambda: F.affine_grid(npconv.tensor(np.ones((1, 2, 3))), (1, 2), align_corners=False), ValueError),
    ],
)
def test_bad_arguments_are_rejected(call, error):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error):
            call()
