"""The Winograd kernel (forward and grad_input) against the NumPy reference (tests/reference.py, itself
checked against torch), and its float32 accuracy bound.

Covers both tile sizes (F(2x2,3x3) and F(4x4,3x3)), odd sizes, outputs smaller than a tile,
asymmetric, zero and oversized padding (grad_input then crops), groups, float64 and float32,
the exactness of the transform matrices, the float32 bound (2e-6 norm-relative against a float64
reference) on scaled ResNet layers, the adjoint identity without torch, and ``supports()``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import reference
from kernel_checks import assert_passes_are_adjoint, relative_error
from npconv.kernels import winograd
from torch_oracle import assert_close, conv_geom


def _check_passes(rng, x_shape, out_channels, groups, padding, dtype):
    geom = conv_geom(3, 1, padding, 1, groups, x_shape[2:])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((out_channels, x_shape[1] // groups, 3, 3)).astype(dtype)
    assert winograd.supports("forward", x.shape, w.shape, geom, x.dtype)
    assert winograd.supports("grad_input", x.shape, w.shape, geom, x.dtype)
    gy = rng.standard_normal((x_shape[0], out_channels) + geom.output_size(x_shape[2:])).astype(dtype)
    y_ref, gx_ref, _ = reference.conv_passes(x, w, gy, geom)
    y = winograd.forward(x, w, geom)
    gx = winograd.grad_input(gy, w, geom, x_shape[2:])
    assert y.dtype == gx.dtype == dtype
    assert_close(y, y_ref, what="forward")
    assert_close(gx, gx_ref, what="grad_input")


CASES = [
    # x_shape, out_channels, groups, padding
    ((2, 5, 9, 11), 7, 1, 1),
    ((2, 3, 16, 16), 4, 1, 1),  # exact 4x4 tiles
    ((1, 4, 8, 8), 3, 1, 0),  # 6x6 output: 2x2 tiles
    ((3, 4, 13, 6), 6, 2, ((0, 2), (3, 1))),
    ((2, 3, 2, 3), 4, 1, ((2, 3), (1, 0))),
    ((1, 2, 5, 7), 3, 1, 4),  # padding wider than the kernel: grad_input crops
    ((2, 6, 3, 3), 2, 2, "valid"),  # one output pixel
    ((1, 3, 1, 20), 2, 1, ((1, 1), (0, 0))),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_passes_match_the_reference(rng, case, dtype):
    _check_passes(rng, *case, dtype)


@pytest.mark.parametrize("workers", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_thread_modes_and_uneven_chunks_match_the_reference(rng, monkeypatch, workers, dtype):
    """Caller thread with multithreaded BLAS (default) and Python worker threads, with work items
    of 2 images over a batch of 5 (the last item shorter)."""
    monkeypatch.setattr(winograd, "WORKER_THREADS", workers)
    monkeypatch.setattr(winograd, "_TARGET_TILES", 18)  # 3x3 tiles of 4 per image: 2 images per item
    monkeypatch.setattr(winograd, "_TARGET_TILES_WORKERS", 18)
    _check_passes(rng, (5, 4, 11, 12), 6, 1, 1, dtype)

@pytest.mark.parametrize("workers", [False, True])
@pytest.mark.parametrize("padding", [1, ((0, 3), (2, 0)), 0])
def test_bands_of_tile_rows_match_the_reference(rng, monkeypatch, workers, padding):
    """Images larger than a work item are split into bands of tile rows (bounded scratch): one or
    two tile rows per item, exact and ragged outputs, padding cut at band edges."""
    monkeypatch.setattr(winograd, "WORKER_THREADS", workers)
    monkeypatch.setattr(winograd, "_TARGET_TILES", 4)
    monkeypatch.setattr(winograd, "_TARGET_TILES_WORKERS", 2)
    _check_passes(rng, (2, 3, 13, 10), 4, 1, padding, np.float64)


@given(n=st.integers(1, 2), groups=st.integers(1, 2), cg=st.integers(1, 3), og=st.integers(1, 3),
       h=st.integers(1, 14), w=st.integers(1, 14), pads=st.lists(st.integers(0, 3), min_size=4, max_size=4),
       seed=st.integers(0, 2**31))
def test_random_shapes_match_the_reference(n, groups, cg, og, h, w, pads, seed):
    assume(h + pads[0] + pads[1] >= 3 and w + pads[2] + pads[3] >= 3)
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    rng = np.random.default_rng(seed)
    _check_passes(rng, (n, groups * cg, h, w), groups * og, groups, padding, np.float64)


def test_both_tile_sizes_are_used():
    assert winograd._tile_size((56, 56)) == 4
    assert winograd._tile_size((6, 6)) == 2


@pytest.mark.parametrize("m", [2, 4])
def test_transform_matrices_are_exact(m):
    at, g, bt = winograd.transform_matrices(m)
    identity = np.einsum("ik,kj,kl->ijl", at, g, bt)
    expected = np.zeros_like(identity)
    for i in range(m):
        for j in range(3):
            expected[i, j, i + j] = 1
    np.testing.assert_allclose(identity, expected, atol=1e-14)
    d, k = np.arange(1.0, m + 3), np.array([2.0, -1.0, 0.5])
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), np.correlate(d, k, "valid"), rtol=1e-14)
    # B^T has small dyadic entries: the input transform itself rounds nothing
    assert all(Fraction(float(v)).denominator <= 4 for v in bt.ravel())


def test_adjoint_identity_without_torch(rng):
    geom = conv_geom(3, 1, ((1, 2), (0, 3)), 1, 2, (9, 10))
    x = rng.standard_normal((2, 4, 9, 10))
    w = rng.standard_normal((6, 2, 3, 3))
    assert_passes_are_adjoint(winograd, x, w, geom, rng, weight_pass=False)


@pytest.mark.parametrize("channels,size", [(64, 24), (128, 12), (256, 14), (256, 8)])
def test_float32_accuracy_bound(rng, channels, size):
    """float32 within 2e-6 norm-relative of the float64 reference on ResNet-like layers (batch 1)."""
    geom = conv_geom(3, 1, 1, 1, 1, (size, size))
    x = rng.standard_normal((1, channels, size, size))
    w = rng.standard_normal((channels, channels, 3, 3)) * np.sqrt(2 / (9 * channels))
    gy = rng.standard_normal((1, channels, size, size))
    y_ref, gx_ref, _ = reference.conv_passes(x, w, gy, geom)
    f32 = [a.astype(np.float32) for a in (x, w, gy)]
    assert relative_error(winograd.forward(f32[0], f32[1], geom), y_ref) <= 2e-6
    assert relative_error(winograd.grad_input(f32[2], f32[1], geom, (size, size)), gx_ref) <= 2e-6


def test_recommended_only_on_one_thread(monkeypatch):
    ok = conv_geom(3, 1, 1, 1, 1, (8, 8))
    monkeypatch.setattr(winograd, "get_num_threads", lambda: 1)
    assert winograd.recommended("forward", (2, 64, 8, 8), (64, 64, 3, 3), ok, np.float32)
    assert winograd.recommended("grad_input", (2, 32, 8, 8), (32, 32, 3, 3), ok, np.float32)
    assert not winograd.recommended("forward", (2, 16, 8, 8), (16, 16, 3, 3), ok, np.float32)
    assert not winograd.recommended("forward", (2, 64, 8, 8), (64, 64, 3, 3), ok, np.float64)
    small = conv_geom(3, 1, 0, 1, 1, (8, 8))  # 6x6 output
    assert not winograd.recommended("forward", (2, 64, 8, 8), (64, 64, 3, 3), small, np.float32)
    monkeypatch.setattr(winograd, "get_num_threads", lambda: 2)
    assert not winograd.recommended("forward", (2, 256, 8, 8), (256, 256, 3, 3), ok, np.float32)


def test_supports_only_3x3_stride_1():
    size = (8, 8)
    ok = conv_geom(3, 1, 1, 1, 1, size)
    assert winograd.supports("forward", (2, 4, 8, 8), (4, 4, 3, 3), ok, np.float32)
    assert not winograd.recommended("forward", (2, 4, 8, 8), (4, 4, 3, 3), ok, np.float32)  # few channels
    assert not winograd.supports("grad_weight", (2, 4, 8, 8), (4, 4, 3, 3), ok, np.float32)
    assert not winograd.supports("forward", (2, 4, 8, 8), (4, 4, 3, 3), ok, np.float16)
    assert not winograd.supports("forward", (2, 4, 8, 8), (4, 4, 3, 3), ok, np.complex128)
    assert not winograd.supports("forward", (2, 4, 8, 8), (4, 4, 3, 3), conv_geom(3, 2, 1, 1, 1, size),
                                 np.float32)
    assert not winograd.supports("forward", (2, 4, 8, 8), (4, 4, 3, 3), conv_geom(3, 1, 1, 2, 1, size),
                                 np.float32)
    assert not winograd.supports("forward", (2, 4, 8, 8), (4, 4, 5, 5), conv_geom(5, 1, 1, 1, 1, size),
                                 np.float32)
    assert not winograd.supports("forward", (2, 4, 8), (4, 4, 3), conv_geom(3, 1, 1, 1, 1, (8,)), np.float32)
    assert not winograd.supports("forward", (2, 4, 1, 1), (4, 4, 3, 3), conv_geom(3, 1, 0, 1, 1, (1, 1)),
                                 np.float32)  # kernel larger than the input
    assert not winograd.supports("forward", (2, 4, 8, 8), (4, 2, 3, 3), ok, np.float32)  # channels mismatch


def test_no_grad_weight_pass_and_bad_dtypes_raise():
    geom = conv_geom(3, 1, 1, 1, 1, (5, 5))
    assert "grad_weight" not in winograd.PASSES and not hasattr(winograd, "grad_weight")
    assert not winograd.supports("grad_weight", (1, 2, 5, 5), (2, 2, 3, 3), geom, np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        winograd.forward(np.ones((1, 2, 5, 5), np.int64), np.ones((2, 2, 3, 3), np.int64), geom)
