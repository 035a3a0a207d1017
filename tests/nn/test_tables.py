"""Connection tables (``npconv.nn.tables``): layout, Lua Torch's random rule, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.nn import tables


@given(n_in=st.integers(1, 6), n_out=st.integers(1, 6))
def test_full_is_every_pair_output_major(n_in, n_out):
    table = tables.full(n_in, n_out)
    assert table.shape == (n_in * n_out, 2) and table.dtype == np.int64
    # row o * n_in + i is (i, o): weight.reshape(n_out, n_in, *k)[o, i] is connection (i, o)
    grid = table.reshape(n_out, n_in, 2)
    for o in range(n_out):
        for i in range(n_in):
            assert tuple(grid[o, i]) == (i, o)


def test_one_to_one():
    np.testing.assert_array_equal(tables.one_to_one(3), [[0, 0], [1, 1], [2, 2]])


@given(n_in=st.integers(1, 12), n_out=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**16))
def test_random_table_properties(n_in, n_out, data, seed):
    n_to = data.draw(st.integers(1, n_in))
    table = tables.random(n_in, n_out, n_to, seed=seed)
    assert table.shape == (n_out * n_to, 2) and table.dtype == np.int64
    np.testing.assert_array_equal(table[:, 1], np.repeat(np.arange(n_out), n_to))
    inputs = table[:, 0].reshape(n_out, n_to)
    assert inputs.min() >= 0 and inputs.max() < n_in
    for row in inputs:  # each output reads n_to distinct inputs
        assert len(set(row.tolist())) == n_to
    # evenly used: within each run of n_in // n_to consecutive outputs (one permutation), no input repeats
    per_permutation = n_in // n_to
    for start in range(0, n_out, per_permutation):
        block = inputs[start:start + per_permutation].ravel()
        assert len(set(block.tolist())) == block.size
    counts = np.bincount(table[:, 0], minlength=n_in)
    if n_in % n_to == 0 and n_out % per_permutation == 0:
        assert np.all(counts == n_out * n_to // n_in)  # exactly even
    else:
        assert counts.max() <= -(-n_out // per_permutation)  # at most once per permutation


def test_random_is_reproducible():
    np.testing.assert_array_equal(tables.random(16, 8, 4, seed=3), tables.random(16, 8, 4, seed=3))
    assert not np.array_equal(tables.random(16, 8, 4, seed=3), tables.random(16, 8, 4, seed=4))
    np.testing.assert_array_equal(tables.random(9, 5, 3, seed=np.random.default_rng(1)),
                                  tables.random(9, 5, 3, seed=np.random.default_rng(1)))
    npconv.manual_seed(5)
    first = tables.random(10, 10, 3)
    npconv.manual_seed(5)
    np.testing.assert_array_equal(first, tables.random(10, 10, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: tables.random(3, 4, 4), ValueError, "n_to must be <= n_in"),
    (lambda: tables.random(3, 4, 0), ValueError, "n_to must be >= 1"),
    (lambda: tables.random(3.0, 4, 1), TypeError, "n_in must be an int"),
    (lambda: tables.full(0, 2), ValueError, "n_in must be >= 1"),
    (lambda: tables.one_to_one(True), TypeError, "n must be an int"),
])
def test_bad_generator_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_check_resolves_channels_and_rejects_bad_tables():
    table, c, o = tables.check([[0, 1], [2, 0]])
    assert (c, o) == (3, 2) and table.dtype == np.int64 and table.shape == (2, 2)
    assert tables.check(np.array([[0, 1]], dtype=np.uint8), 4, 5)[1:] == (4, 5)
    assert tables.check(npconv.tensor(np.array([[1, 1]])))[1:] == (2, 2)
    with pytest.raises(ValueError, match="duplicate rows, e.g. \\(0, 1\\)"):
        tables.check([[0, 1], [1, 1], [0, 1]])
    with pytest.raises(ValueError, match="out_channels=1 is too small"):
        tables.check([[0, 1]], out_channels=1)
    # rows that share a plane are distinct; huge plane indices take the row-wise check
    assert len(tables.check([[0, 1], [1, 0], [0, 0], [1, 1]])[0]) == 4
    assert tables.check([[2**40, 1], [2**40, 2]])[1:] == (2**40 + 1, 3)
    with pytest.raises(ValueError, match="duplicate rows, e.g. \\(1099511627776, 2\\) appears 2"):
        tables.check([[2**40, 2], [0, 0], [2**40, 2]])


def test_check_finds_every_duplicate_row():
    rng = np.random.default_rng(5)
    for _ in range(50):
        table = tables.random(int(rng.integers(1, 40)), int(rng.integers(1, 40)), 1, seed=rng)
        assert len(tables.check(table)[0]) == len(table)
        i, j = rng.integers(0, len(table), 2)
        if i == j:
            continue
        copied = table.copy()
        copied[j] = copied[i]  # one row repeated, anywhere
        row = f"\\({copied[i, 0]}, {copied[i, 1]}\\) appears 2 times"
        with pytest.raises(ValueError, match=f"duplicate rows, e.g. {row}"):
            tables.check(copied)
    with pytest.raises(TypeError, match="integer array"):
        tables.check([["a", "b"]])
