"""A request larger than the machine's memory is npconv's ValueError naming the size: never a NumPy
MemoryError from deep inside, never a half-built module. Sizes are at least 2**50 bytes, beyond any
machine's memory and address space, so the refusal does not depend on overcommit settings."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from npconv.checks import check_allocatable, memory_limit, refuses_oversize

BIG = 2**25  # BIG**2 float32 elements: 2**52 bytes

x = npconv.ones(1, 1, 4, 4)

CASES = {
    "pad": lambda: F.pad(x, (2**50, 2**50)),
    "zeros": lambda: npconv.zeros(BIG, BIG),
    "empty": lambda: npconv.empty(BIG, BIG),
    "ones_like": lambda: npconv.ones_like(x).repeat(1, 1, BIG, BIG),
    "randn": lambda: npconv.randn(BIG, BIG),
    "full": lambda: npconv.full((BIG, BIG), 1.0),
    "arange": lambda: npconv.arange(2**52),
    "linspace": lambda: npconv.linspace(0, 1, 2**52),
    "eye": lambda: npconv.eye(BIG),
    "new_zeros": lambda: x.new_zeros(BIG, BIG),
    "interpolate": lambda: F.interpolate(x, size=(BIG, BIG)),
    "Upsample": lambda: nn.Upsample(scale_factor=2**23)(x),
    "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x, (BIG, BIG)),
    "adaptive_max_pool2d": lambda: F.adaptive_max_pool2d(x, (BIG, BIG)),
    "one_hot": lambda: F.one_hot(npconv.tensor([2**50])),
    "conv_transpose2d": lambda: F.conv_transpose2d(x, npconv.ones(1, 1, 3, 3), stride=2**23),
    "Conv2d": lambda: nn.Conv2d(2**20, 2**20, 3),
    "Linear": lambda: nn.Linear(BIG, BIG),
    "Embedding": lambda: nn.Embedding(BIG, BIG),
    "BatchNorm2d": lambda: nn.BatchNorm2d(2**52),
    "LayerNorm": lambda: nn.LayerNorm([BIG, BIG]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_oversized_requests_are_value_errors(name):
    with pytest.raises(ValueError, match=r"must fit in memory \(at most \d+ bytes"):
        CASES[name]()


def test_message_names_op_and_size():
    with pytest.raises(ValueError) as caught:
        npconv.zeros(BIG, BIG)
    assert str(caught.value).startswith("zeros result must fit in memory")
    assert f"[{BIG}, {BIG}]" in str(caught.value)
    with pytest.raises(ValueError, match=r"^BatchNorm2d parameter must fit in memory"):
        nn.BatchNorm2d(2**52)


def test_limit_is_the_machine_memory_and_sizes_below_it_run():
    limit = memory_limit()
    assert 2**20 < limit <= 2**63 - 1
    check_allocatable((limit // 4,), 4, "output")  # exactly at the limit: allowed
    with pytest.raises(ValueError, match="output must fit in memory"):
        check_allocatable((limit // 4 + 1,), 4, "output")
    assert F.pad(x, (1, 1)).shape == (1, 1, 4, 6)


def test_decorator_passes_other_errors_and_results_through():
    @refuses_oversize("op")
    def allocate(n):
        if n < 0:
            raise ValueError("negative")
        return np.zeros(n)

    assert allocate(3).shape == (3,)
    with pytest.raises(ValueError, match="negative"):
        allocate(-1)
    with pytest.raises(ValueError, match=r"^op result must fit in memory .* size \[1125899906842624\]"):
        allocate(2**50)


def test_user_modules_keep_their_own_memory_errors():
    """Only npconv's layers translate MemoryError; a user's own Module subclass is left alone."""
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            raise MemoryError("mine")

    with pytest.raises(MemoryError, match="mine"):
        Mine()
