"""The ports suite: torch conv-net programs run unchanged on npconv except for their import lines.

Each program in ``programs/`` runs four times: torch float32 (which saves its initial weights with
``torch.save``), torch float64, and npconv float32/float64 with only the imports rewritten (these and the
torch float64 run load the torch float32 run's file). Every named result - outputs, losses, gradients,
parameters after optimizer steps, buffers, optimizer and scheduler state - must match torch: float64 to
~1e-10 (norm-relative), float32 to 1e-4 (values that are rounding noise in both libraries
are judged by absolute floors), or, where float32 rounding moves torch itself (a ReLU mask
flipping), no further from torch float64 than torch float32 is. A program that needs an edit to run on
npconv - the rewritten file raises, or its numbers differ - fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ports.runner import (
    PROGRAMS,
    changed_lines,
    flatten,
    load_program,
    max_abs_difference,
    program_names,
    relative_error,
    rewrite_imports,
)

FLOAT64_TOL = 1e-10
FLOAT32_TOL = 1e-4
# Absolute floors for values that are rounding noise in both libraries (e.g. the gradient of a BatchNorm's
# bias followed by a 1x1 conv and another BatchNorm: exactly zero in exact arithmetic, ~1e-16 in float64).
FLOAT64_ATOL = 1e-12
FLOAT32_ATOL = 1e-5


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _run(name: str, library: str, dtype_name: str, weights: Path) -> dict[str, np.ndarray]:
    return flatten(load_program(name, library).run(dtype_name, str(weights)))


def _mismatches(
    actual: dict, expected: dict, tol: float, atol: float, fallback: tuple[dict, dict] | None = None
) -> list[str]:
    """Entries of ``actual`` farther than ``tol`` from ``expected`` (float32: see the module docstring)."""
    problems = [f"missing {k}" for k in expected.keys() - actual.keys()]
    problems += [f"unexpected {k}" for k in actual.keys() - expected.keys()]
    for key in sorted(expected.keys() & actual.keys()):
        error = relative_error(actual[key], expected[key])
        if error <= tol or max_abs_difference(actual[key], expected[key]) <= atol:
            continue
        if fallback is not None:
            torch64, torch32 = fallback
            torch_own = relative_error(torch32[key], torch64[key])
            if relative_error(actual[key], torch64[key]) <= max(tol, 10 * torch_own):
                continue
        problems.append(f"{key}: relative error {error:.3g} > {tol:g}")
    return problems


@pytest.mark.parametrize("name", program_names())
def test_program_runs_unchanged_on_npconv(name, torch, tmp_path):
    weights = tmp_path / "initial.pt"
    # the programs initialise with torch's global generator, as their users do: seed it, so that the
    # initial weights (and how far float32 rounding carries through training) do not depend on which
    # tests ran before in this process
    torch.manual_seed(0)
    torch32 = _run(name, "torch", "float32", weights)
    assert weights.exists(), "the program must save its initial weights on its first run"
    torch64 = _run(name, "torch", "float64", weights)
    ours64 = _run(name, "npconv", "float64", weights)
    ours32 = _run(name, "npconv", "float32", weights)
    problems = [f"float64 {p}" for p in _mismatches(ours64, torch64, FLOAT64_TOL, FLOAT64_ATOL)]
    float32 = _mismatches(ours32, torch32, FLOAT32_TOL, FLOAT32_ATOL, (torch64, torch32))
    problems += [f"float32 {p}" for p in float32]
    assert not problems, "\n".join(problems)
    assert len(torch32) >= 10, "a program must report its outputs, losses, gradients and state"


def test_there_are_at_least_ten_programs():
    assert len(program_names()) >= 10


@pytest.mark.parametrize("name", program_names())
def test_only_import_lines_change(name):
    source = (PROGRAMS / f"{name}.py").read_text()
    assert "npconv" not in source, "a program is written for torch"
    pairs = changed_lines(source)
    assert any(before.strip() == "import torch" for before, _ in pairs), "a program must import torch"
    for before, after in pairs:
        assert re.match(r"\s*(import|from) torch(\.\w+)*( |$)", before), before
        assert re.match(r"\s*(import|from) npconv(\.\w+)*( |;)", after), after


def test_rewrite_rules():
    assert rewrite_imports("import torch") == "import npconv as torch"
    assert rewrite_imports("import torch.nn as nn") == "import npconv.nn as nn"
    assert rewrite_imports("    import torch.nn.functional as F") == "    import npconv.nn.functional as F"
    rewritten = rewrite_imports("from torch.utils.data import DataLoader")
    assert rewritten == "from npconv.utils.data import DataLoader"
    assert rewrite_imports("from torch import nn, optim") == "from npconv import nn, optim"
    assert rewrite_imports("import torch.optim") == "import npconv.optim; import npconv as torch"
    assert rewrite_imports("import torchvision") == "import torchvision"
    assert rewrite_imports("x = torch.zeros(3)  # import torch") == "x = torch.zeros(3)  # import torch"


def test_a_wrong_number_fails(torch, tmp_path):
    """The comparison is not vacuous: a perturbed result is reported."""
    ours = _run("tutorial_cnn", "torch", "float64", tmp_path / "w.pt")
    other = {k: v.copy() for k, v in ours.items()}
    key = next(k for k, v in other.items() if v.dtype.kind == "f" and v.size > 1)
    other[key].flat[0] += 1e-6 + 1e-6 * abs(other[key].flat[0])
    problems = _mismatches(other, ours, FLOAT64_TOL, FLOAT64_ATOL)
    assert len(problems) == 1 and problems[0].startswith(f"{key}: relative error")
    assert _mismatches({}, ours, FLOAT64_TOL, FLOAT64_ATOL)
