"""Load a torch program as written, or with only its import lines rewritten to npconv, and compare results.

A *program* (``tests/ports/programs/*.py``) is a conv-net script written the way torch users write them.
It exposes ``run(dtype_name, weights_path) -> dict``: it builds its model(s), loads ``weights_path`` if
the file exists (else saves its freshly initialised ``state_dict()`` there, so the torch run's initial
weights reach every other run through a file torch wrote), trains/evaluates on NumPy-seeded data and
returns named tensors/numbers (outputs, losses, every gradient, parameters after steps, buffers,
optimizer state). :func:`rewrite_imports` changes the import statements and nothing else.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

PROGRAMS = Path(__file__).parent / "programs"

_IMPORT = re.compile(r"^(?P<indent>\s*)import torch(?P<sub>(\.\w+)*)(?P<alias> as \w+)?\s*$")
_FROM = re.compile(r"^(?P<indent>\s*)from torch(?P<sub>(\.\w+)*) import (?P<names>.+)$")


def rewrite_line(line: str) -> str:
    """One import statement of torch rewritten to npconv; any other line unchanged."""
    match = _IMPORT.match(line)
    if match:
        indent, sub, alias = match["indent"], match["sub"], match["alias"]
        if alias:
            return f"{indent}import npconv{sub}{alias}"
        if sub:  # `import torch.nn` binds `torch`: keep that name bound to npconv
            return f"{indent}import npconv{sub}; import npconv as torch"
        return f"{indent}import npconv as torch"
    match = _FROM.match(line)
    if match:
        return f"{match['indent']}from npconv{match['sub']} import {match['names']}"
    return line


def rewrite_imports(source: str) -> str:
    """``source`` with every torch import statement pointing at npconv (the only edit a port may make)."""
    return "\n".join(rewrite_line(line) for line in source.split("\n"))


def changed_lines(source: str) -> list[tuple[str, str]]:
    """The (before, after) pairs the rewrite changes: all of them must be import statements."""
    pairs = zip(source.split("\n"), rewrite_imports(source).split("\n"), strict=True)
    return [(a, b) for a, b in pairs if a != b]


def load_program(name: str, library: str) -> types.ModuleType:
    """The program ``programs/<name>.py`` as a module, importing ``torch`` or (rewritten) ``npconv``."""
    path = PROGRAMS / f"{name}.py"
    source = path.read_text()
    if library == "npconv":
        source = rewrite_imports(source)
    elif library != "torch":
        raise ValueError(f"library must be 'torch' or 'npconv', got {library!r}")
    module_name = f"ports_{name}_{library}"
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    sys.modules[module_name] = module  # pickling/deepcopy of classes defined in the program find it
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def program_names() -> list[str]:
    return sorted(p.stem for p in PROGRAMS.glob("*.py") if not p.stem.startswith("_"))


def flatten(result: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts/lists of tensors (either library), arrays and numbers as ``{dotted.name: ndarray}``."""
    out: dict[str, np.ndarray] = {}
    if isinstance(result, dict):
        for key, value in result.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(result, (list, tuple)):
        for i, value in enumerate(result):
            out.update(flatten(value, f"{prefix}{i}."))
    elif hasattr(result, "detach") and hasattr(result, "numpy"):
        out[prefix[:-1]] = np.array(result.detach().cpu().numpy())
    elif result is None or isinstance(result, str):
        out[prefix[:-1]] = np.array(repr(result))
    else:
        out[prefix[:-1]] = np.asarray(result)
    return out


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Norm-relative distance (inf where shapes, dtypes' kinds or the non-finite pattern differ)."""
    if actual.shape != expected.shape or actual.dtype.kind != expected.dtype.kind:
        return float("inf")
    if actual.dtype.kind in "USbiu":
        return 0.0 if np.array_equal(actual, expected) else float("inf")
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    finite = np.isfinite(e)
    same_non_finite = np.array_equal(a[~finite], e[~finite], equal_nan=True)
    if not np.array_equal(finite, np.isfinite(a)) or not same_non_finite:
        return float("inf")
    scale = max(float(np.linalg.norm(e[finite])), 1e-30)
    return float(np.linalg.norm(a[finite] - e[finite])) / scale


def max_abs_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest elementwise difference of two same-shaped numeric arrays (inf otherwise)."""
    if actual.dtype.kind != "f" or expected.dtype.kind != "f" or relative_error(actual, expected) == np.inf:
        return float("inf")  # also for a different shape or non-finite pattern
    finite = np.isfinite(expected)
    difference = np.abs(actual[finite].astype(np.float64) - expected[finite].astype(np.float64))
    return float(difference.max(initial=0.0))
