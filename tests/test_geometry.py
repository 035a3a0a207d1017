"""ConvGeometry: every size formula against brute force, ONNX's SAME rule and torch's own helpers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npconv.geometry import ConvGeometry, normalize_padding, normalize_tuple


def window_starts(n: int, lo: int, hi: int, extent: int, stride: int) -> list[int]:
    """Brute force: every start (in padded coordinates) of a window that fits the padded input."""
    return [p for p in range(0, n + lo + hi, stride) if p + extent <= n + lo + hi]


def onnx_same_pads(n: int, k: int, s: int, d: int, lower: bool) -> tuple[int, int]:
    """ONNX's auto_pad rule (onnx/defs/nn/defs.cc, Conv shape inference)."""
    out = math.ceil(n / s)
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
    head = (total + 1) // 2 if lower else total // 2
    return head, total - head


# -- size formulas ----------------------------------------------------------------------------------

@given(n=st.integers(1, 30), k=st.integers(1, 6), s=st.integers(1, 5), d=st.integers(1, 4),
       lo=st.integers(0, 6), hi=st.integers(0, 6))
def test_output_size_counts_the_windows(n, k, s, d, lo, hi):
    geom = ConvGeometry.create((k,), s, ((lo, hi),), d)
    extent = d * (k - 1) + 1
    assert geom.extent == (extent,)
    starts = window_starts(n, lo, hi, extent, s)
    if not starts:
        with pytest.raises(ValueError, match="Kernel size can't be greater than actual input size"):
            geom.output_size((n,))
    else:
        assert geom.output_size((n,)) == (len(starts),)


@given(n=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3),
       lo=st.integers(0, 4), hi=st.integers(0, 4))
def test_transposed_size_range_is_every_size_the_conv_maps_back(n, k, s, d, lo, hi):
    geom = ConvGeometry.create((k,), s, ((lo, hi),), d, transposed=True)
    smallest, largest = geom.transposed_size_range((n,))
    assert smallest == ((n - 1) * s - lo - hi + d * (k - 1) + 1,)
    # every output size m whose convolution gives back n, by brute force
    preimage = [m for m in range(1, 80) if len(window_starts(m, lo, hi, d * (k - 1) + 1, s)) == n]
    if smallest[0] >= 1:
        assert preimage == list(range(smallest[0], largest[0] + 1))
        for extra in range(max(s, d)):  # every valid output_padding
            assert geom.transposed_output_size((n,), (extra,)) == (smallest[0] + extra,)
    else:
        with pytest.raises(ValueError, match="not positive"):
            geom.transposed_output_size((n,), (0,))


def test_transposed_output_size_matches_torch(torch):
    for n, k, s, p, op, d in itertools.product((1, 4, 7), (1, 3), (1, 2, 3), (0, 1, 2), (0, 1), (1, 2)):
        if op >= s and op >= d:
            continue
        geom = ConvGeometry.create(k, s, p, d, output_padding=op, ndim=1, transposed=True)
        args = (torch.zeros(1, 1, n), torch.zeros(1, 1, k), None, s, p, op, 1, d)
        try:
            size = geom.transposed_output_size((n,))
        except ValueError:
            with pytest.raises(RuntimeError):
                torch.nn.functional.conv_transpose1d(*args)
            continue
        assert size == tuple(torch.nn.functional.conv_transpose1d(*args).shape[2:])


def test_output_padding_for_matches_torch(torch):
    module = torch.nn.ConvTranspose2d(1, 1, 3)
    for size, k, s, p, d in itertools.product(((3, 4), (5, 2)), ((3, 2), (1, 4)), ((2, 3), (1, 1)),
                                               ((1, 0), (0, 2)), ((1, 2), (2, 1))):
        geom = ConvGeometry.create(k, s, p, d, ndim=2, transposed=True)
        smallest, largest = geom.transposed_size_range(size)
        for target in itertools.product(*(range(a, b + 1) for a, b in zip(smallest, largest, strict=True))):
            if min(target) < 1:
                continue
            expected = module._output_padding(torch.zeros((1, 1) + size), list(target), list(s), list(p),
                                              list(k), 2, list(d))
            assert geom.output_padding_for(size, target) == tuple(expected)
            assert geom.output_padding_for(size, (1, 1) + target) == tuple(expected)
        with pytest.raises(ValueError, match="valid sizes range"):
            geom.output_padding_for(size, tuple(v + 1 for v in largest))
    geom = ConvGeometry.create(3, 2, 0, ndim=2, transposed=True)
    with pytest.raises(ValueError, match="output_size must have 2 or 4 elements"):
        geom.output_padding_for((3, 3), (7,))
    assert geom.output_padding_for((3, 3), None) == (0, 0)


# -- 'same' and 'same_lower' -------------------------------------------------------------------------

@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 6), d=st.integers(1, 4),
       lower=st.booleans())
def test_same_padding_follows_onnx_auto_pad(n, k, s, d, lower):
    geom = ConvGeometry.create((k,), s, "same_lower" if lower else "same", d)
    pads = geom.pads((n,))
    assert pads == (onnx_same_pads(n, k, s, d, lower),)
    assert geom.output_size((n,)) == (math.ceil(n / s),)
    lo, hi = pads[0]
    assert len(window_starts(n, lo, hi, d * (k - 1) + 1, s)) == math.ceil(n / s)


def test_same_padding_on_a_grid_of_sizes_with_several_dims():
    for sizes in itertools.product((1, 2, 5, 8, 11), (3, 4, 9)):
        for k, s, d in itertools.product(((1, 2), (3, 4), (5, 2)), ((1, 1), (2, 3), (4, 2)),
                                         ((1, 1), (2, 3))):
            for mode, lower in (("same", False), ("same_lower", True)):
                geom = ConvGeometry.create(k, s, mode, d)
                expected = tuple(onnx_same_pads(n, ki, si, di, lower)
                                 for n, ki, si, di in zip(sizes, k, s, d, strict=True))
                assert geom.pads(sizes) == expected
                ceil = tuple(math.ceil(n / si) for n, si in zip(sizes, s, strict=True))
                assert geom.output_size(sizes) == ceil


def test_same_with_stride_one_is_torch_same(torch):
    for k, d in itertools.product(((1, 2), (3, 4), (4, 5), (2, 2)), ((1, 1), (2, 3), (3, 1))):
        module = torch.nn.Conv2d(1, 1, k, padding="same", dilation=d)
        rev = module._reversed_padding_repeated_twice  # [lo_W, hi_W, lo_H, hi_H]
        expected = ((rev[2], rev[3]), (rev[0], rev[1]))
        geom = ConvGeometry.create(k, 1, "same", d)
        assert geom.pads() == expected  # independent of the input for stride 1
        assert geom.pads((50, 3)) == expected


def test_same_with_stride_needs_the_input_size():
    geom = ConvGeometry.create((3, 3), 2, "same")
    with pytest.raises(ValueError, match="depends on the input size"):
        geom.pads()
    with pytest.raises(ValueError, match="padding='same_lower' with stride > 1 depends on the input size"):
        ConvGeometry.create((3,), (2,), "same_lower").pads()
    assert ConvGeometry.create((4,), 1, "same_lower").pads() == ((2, 1),)
    assert ConvGeometry.create((4,), 1, "same").pads() == ((1, 2),)
    assert ConvGeometry.create((3,), 1, "valid").pads() == ((0, 0),)


# -- padding normalisation ---------------------------------------------------------------------------

def test_padding_forms():
    assert normalize_padding(2, 3) == ((2, 2),) * 3
    assert normalize_padding((1, 2), 2) == ((1, 1), (2, 2))
    assert normalize_padding((3,), 2) == ((3, 3), (3, 3))
    assert normalize_padding(((1, 2), (0, 3)), 2) == ((1, 2), (0, 3))
    assert normalize_padding([[1, 2]], 1) == ((1, 2),)
    assert normalize_padding((np.int64(1), np.int32(2)), 2) == ((1, 1), (2, 2))
    assert normalize_padding("valid", 4) == "valid"
    assert normalize_padding("same_lower", 2) == "same_lower"
    geom = ConvGeometry.create((3, 3), padding=((1, 2), (0, 3)))
    assert geom.pads((5, 5)) == ((1, 2), (0, 3))
    assert geom.output_size((5, 5)) == (6, 6)
    assert geom.symmetric_padding() is None
    assert ConvGeometry.create((3, 3), padding=((1, 1), (2, 2))).symmetric_padding() == (1, 2)
    assert ConvGeometry.create((3, 3), padding="same").symmetric_padding() is None
    moved = geom.with_padding(((0, 0), (4, 1)))
    assert moved.padding == ((0, 0), (4, 1)) and moved.kernel_size == geom.kernel_size


@pytest.mark.parametrize("padding, error, message", [
    ("full", ValueError, "Invalid padding string 'full'"),
    (((1, 2),), ValueError, r"padding must be 2 \(lo, hi\) pairs when given per side, but got"),
    (((1, 2), (1, 2, 3)), ValueError, r"padding must be 2 \(lo, hi\) pairs when given per side, but got"),
    (((1, 2), (1.5, 2)), TypeError, "padding must hold ints in its \\(lo, hi\\) pairs, but got"),
    (((1, 2), ("a", 2)), TypeError, "padding must hold ints in its \\(lo, hi\\) pairs, but got"),
    (((1, 2), (True, 2)), TypeError, "padding must hold ints in its \\(lo, hi\\) pairs, but got"),
    (((1, -2), (0, 0)), ValueError, "padding must be non-negative"),
    ((1, 2, 3), ValueError, r"padding must be an int or a tuple of 2 ints .* \(3 values\)"),
    (-1, ValueError, "padding must be non-negative"),
    (1.0, TypeError, "padding must be an int or a tuple of 2 ints, but got 1.0"),
    (((1, 2), 3), TypeError, "padding must be an int or a tuple of 2 ints"),
    ((), ValueError, r"padding must be an int or a tuple of 2 ints .* \(0 values\)"),
])
def test_bad_padding_is_a_clear_error(padding, error, message):
    with pytest.raises(error, match=message):
        ConvGeometry.create((3, 3), padding=padding)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(kernel_size=3), ValueError, "kernel_size must be a tuple when the number of spatial dimensions"),
    (dict(kernel_size=()), ValueError, "at least 1 spatial dimension"),
    (dict(kernel_size=(3, 0)), ValueError, r"kernel_size must be positive \(>= 1\), but got \(3, 0\)"),
    (dict(kernel_size=(3, 3), stride=0), ValueError, r"stride must be positive \(>= 1\), but got 0"),
    (dict(kernel_size=(3, 3), stride=(1, 2, 3)), ValueError, "stride must be an int or a tuple of 2 ints"),
    (dict(kernel_size=(3, 3), dilation=(1, 0)), ValueError, "dilation must be positive"),
    (dict(kernel_size=(3, 3), dilation="2"), TypeError, "dilation must be an int or a tuple of 2 ints"),
    (dict(kernel_size=(3, 3), groups=0), ValueError, "groups must be positive, but got 0"),
    (dict(kernel_size=(3, 3), groups=1.0), TypeError, "groups must be an int, but got 1.0"),
    (dict(kernel_size=(3, 3), output_padding=1), ValueError,
     "output_padding must be 0 except for transposed convolutions"),
    (dict(kernel_size=(3, 3), output_padding=-1, transposed=True), ValueError,
     "output_padding must be non-negative"),
    (dict(kernel_size=(3, 3), stride=2, output_padding=2, transposed=True), ValueError,
     r"output_padding must be smaller than either stride or dilation.*dimension 0"),
    (dict(kernel_size=(3, 3), padding="same", transposed=True), ValueError,
     "padding='same' is not supported for transposed convolutions"),
    (dict(kernel_size=(3, 3), padding="same_lower", transposed=True), ValueError,
     "padding='same_lower' is not supported for transposed convolutions"),
])
def test_bad_geometry_is_a_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        ConvGeometry.create(**kwargs)


def test_output_padding_below_dilation_is_allowed():
    geom = ConvGeometry.create((3,), 1, 0, 3, output_padding=2, transposed=True)
    assert geom.output_padding == (2,)
    assert geom.transposed_output_size((4,)) == (4 - 1 + 7 + 2,)


def test_normalize_tuple_broadcasts_and_any_rank():
    assert normalize_tuple(2, 6, "stride") == (2,) * 6
    assert normalize_tuple((2,), 5, "stride") == (2,) * 5
    geom = ConvGeometry.create((2, 3, 1, 2, 2, 3), (1, 2, 1, 1, 3, 1), 1, (1, 1, 2, 1, 1, 1))
    assert geom.ndim == 6
    assert geom.output_size((4, 5, 3, 3, 7, 4)) == tuple(
        len(window_starts(n, 1, 1, d * (k - 1) + 1, s))
        for n, k, s, d in zip((4, 5, 3, 3, 7, 4), (2, 3, 1, 2, 2, 3), (1, 2, 1, 1, 3, 1), (1, 1, 2, 1, 1, 1),
                              strict=True))
    with pytest.raises(ValueError, match=r"Calculated padded input size per channel: \(3 x 3\)"):
        ConvGeometry.create((4, 4)).output_size((3, 3))


@pytest.mark.parametrize("kernel, stride, dilation, out, first", [
    ((3,), (1,), (1,), (5,), None),
    ((3, 2), (2, 3), (2, 1), (4, 3), (1, 2)),
    ((1, 4, 2), (3, 1, 2), (1, 2, 3), (2, 2, 5), None),
])
def test_tap_region_lists_the_positions_each_tap_reads(kernel, stride, dilation, out, first):
    geom = ConvGeometry.create(kernel, stride, 0, dilation)
    start = first or (0,) * len(kernel)
    for offset in np.ndindex(*kernel):
        region = geom.tap_region(offset, out, first)
        for axis, sl in enumerate(region):
            span = np.arange(sl.stop + 1)[sl]
            expected = [(start[axis] + o) * stride[axis] + offset[axis] * dilation[axis]
                        for o in range(out[axis])]
            assert span.tolist() == expected


def test_window_counts_kept_per_size_stay_exact_and_invisible():
    import pickle

    geometry = ConvGeometry.create((3, 5), (2, 1), ((1, 0), (2, 2)), (1, 2))
    fresh = ConvGeometry.create((3, 5), (2, 1), ((1, 0), (2, 2)), (1, 2))
    for h in range(1, 100):  # past the kept sizes too
        size = (h, h + 3)
        expected = tuple((n + lo + hi - e) // s + 1 if n + lo + hi >= e else 0
                         for n, (lo, hi), e, s in zip(size, ((1, 0), (2, 2)), (3, 9), (2, 1), strict=True))
        assert geometry.window_counts(size) == expected
        assert geometry.window_counts(list(size)) == expected  # any sequence, same answer
    assert geometry == fresh and hash(geometry) == hash(fresh)  # the kept answers are not a field
    assert repr(geometry) == repr(fresh)
    assert pickle.loads(pickle.dumps(geometry)) == fresh
    with pytest.raises(ValueError):
        geometry.window_counts((5,))  # a wrong rank is refused every time, never kept
    with pytest.raises(ValueError):
        geometry.window_counts((5,))
