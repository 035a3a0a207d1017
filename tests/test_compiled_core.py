"""Choosing the engine: npconv.backends.core, NPCONV_PURE, NPCONV_ISA and the fallback with one warning
when the compiled extension is missing (simulated)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import npconv
from npconv import backends
from npconv.kernels import plan

SRC = str(Path(npconv.__file__).resolve().parent.parent)

PROBE = """
import warnings, numpy as np
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import npconv
    from npconv.kernels import plan
    from npconv.geometry import ConvGeometry
    import npconv.nn.functional as F
    x = npconv.tensor(np.ones((1, 4, 8, 8), np.float32), requires_grad=True)
    y = F.conv2d(x, np.ones((4, 1, 3, 3), np.float32), padding=1, groups=4)
    y.sum().backward()
    geom = ConvGeometry.create(3, 1, 1, 1, 4, ndim=2)
    chosen = plan.choose("forward", (1, 4, 8, 8), (4, 1, 3, 3), geom, np.float32)
    implementation = npconv.backends.conv.implementations()["depthwise"].split(":")[0]
core = npconv.backends.core
print(core.name, core.isa, chosen, implementation, float(y.numpy()[0, 0, 3, 3]),
      float(x.grad.numpy()[0, 0, 0, 0]))
for w in caught:
    print("WARNING", w.category.__name__, w.message)
"""


def _probe(env: dict[str, str], prelude: str = "") -> list[str]:
    """Run PROBE in a fresh interpreter with ``env`` added; its output lines."""
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("NPCONV_")}
    full.update(env, PYTHONPATH=SRC)
    done = subprocess.run([sys.executable, "-c", prelude + PROBE], env=full, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_pure_engine_forced_by_environment():
    lines = _probe({"NPCONV_PURE": "1"})
    name, isa, chosen, implementation, y, gx = lines[0].split()
    assert (name, isa, implementation) == ("numpy", "None", "numpy")
    assert chosen == "gemm"  # the NumPy depthwise rule leaves small stride-1 layers to GEMM
    assert (float(y), float(gx)) == (9.0, 4.0)  # a 3x3 box sum inside, 4 taps reach a corner
    assert not [line for line in lines if line.startswith("WARNING")]  # a choice, not a failure


def test_missing_extension_falls_back_with_one_warning():
    """A build without the extension (simulated: its import fails) runs on the NumPy engine and says
    so once, at import."""
    block = ("import sys\nclass _NoCore:\n    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'npconv._core':\n            raise ImportError('simulated: not built')\n"
             "sys.meta_path.insert(0, _NoCore())\n")
    lines = _probe({}, prelude=block)
    name, isa, chosen, implementation, y, gx = lines[0].split()
    assert (name, chosen, implementation, float(y), float(gx)) == ("numpy", "gemm", "numpy", 9.0, 4.0)
    found = [line for line in lines if line.startswith("WARNING")]
    assert len(found) == 1 and "RuntimeWarning" in found[0] and "not built" in found[0], lines


def test_stale_extension_falls_back_with_one_warning():
    """An extension built from older sources (simulated: one function missing) is not used: the NumPy
    engine runs and says why once, instead of an AttributeError at the first pooled call."""
    block = ("import sys, types\nstale = types.ModuleType('npconv._core')\n"
             "stale.available_isas = lambda: ('generic',)\nstale.ISA_NAMES = ('generic',)\n"
             "sys.modules['npconv._core'] = stale\n")
    lines = _probe({}, prelude=block)
    name, isa, chosen, implementation, y, gx = lines[0].split()
    assert (name, implementation, float(y), float(gx)) == ("numpy", "numpy", 9.0, 4.0)
    found = [line for line in lines if line.startswith("WARNING")]
    assert len(found) == 1 and "older than its sources" in found[0], lines
    assert "max_pool2d_forward" in found[0]


def test_core_functions_list_matches_the_extension():
    """backends.CORE_FUNCTIONS names exactly the extension's functions (core.c's method table)."""
    if not backends.core.available:
        pytest.skip(f"compiled core not in use: {backends.core.reason}")
    exported = {name for name in dir(backends.core.module) if callable(getattr(backends.core.module, name))}
    assert set(backends.CORE_FUNCTIONS) == exported


@pytest.mark.skipif(not backends.core.available, reason=f"compiled core not in use: {backends.core.reason}")
def test_isa_forced_by_environment():
    lines = _probe({"NPCONV_ISA": "generic"})
    assert lines[0].split()[:4] == ["compiled", "generic", "depthwise", "compiled"]
    assert not [line for line in lines if line.startswith("WARNING")]
    lines = _probe({"NPCONV_ISA": "sse9"})  # unknown: refused with one warning, best variant used
    assert lines[0].split()[1] == backends.core.isas[-1]
    found = [line for line in lines if line.startswith("WARNING")]
    assert len(found) == 1 and "sse9" in found[0]


def test_isa_the_cpu_lacks_is_refused(monkeypatch):
    """NPCONV_ISA naming a variant the CPU lacks warns and takes the best one; setting it raises."""
    if not backends.core.available:
        pytest.skip(f"compiled core not in use: {backends.core.reason}")
    missing = [name for name in backends.core.module.ISA_NAMES if name not in backends.core.isas]
    if not missing:  # simulate a CPU without the widest variant
        monkeypatch.setattr(backends.core.module, "available_isas", lambda: backends.core.isas[:-1])
        missing = [backends.core.isas[-1]]
    with pytest.warns(RuntimeWarning, match=f"NPCONV_ISA='{missing[0]}' is not available"):
        core = backends._load_core({"NPCONV_ISA": missing[0]})
    assert core.isa != missing[0] and core.isa == core.isas[-1]
    with pytest.raises(ValueError, match="variants this CPU runs"):
        core.isa = missing[0]


def test_core_report_in_process(monkeypatch):
    core = backends.core
    if core.available:
        assert core.name == "compiled" and core.reason is None
        assert core.isa in core.isas and core.isas[0] == "generic"
        assert "compiled" in repr(core)
    else:
        assert core.name == "numpy" and core.isa is None and core.reason
    pure = backends._load_core({"NPCONV_PURE": "1"})
    assert (pure.name, pure.isa, pure.isas, pure.reason) == ("numpy", None, (), "NPCONV_PURE=1")
    with pytest.raises(ValueError, match="not in use"):
        pure.isa = "generic"
    if importlib.util.find_spec("npconv._core") is not None:  # built: "0" means off
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert backends._load_core({"NPCONV_PURE": "0"}).name == "compiled"


def test_npconv_pure_at_run_time_skips_the_compiled_implementation(monkeypatch):
    """The registry re-reads NPCONV_PURE on refresh: the depthwise algorithm is then the NumPy one
    (forcing it still works, on NumPy)."""
    from npconv.geometry import ConvGeometry
    from npconv.kernels import algorithm as registry
    from npconv.kernels import depthwise

    geom = ConvGeometry.create(3, 2, 1, 1, 4, ndim=2)
    x, w = np.ones((1, 4, 9, 9)), np.ones((4, 1, 3, 3))
    if backends.core.available:
        assert registry.available()["depthwise"].compiled
        assert backends.conv.implementations()["depthwise"] == "compiled"
    monkeypatch.setenv("NPCONV_PURE", "1")
    registry.refresh()
    try:
        assert registry.available()["depthwise"].module is depthwise
        assert backends.conv.implementations()["depthwise"] == "numpy"
        with backends.conv.force("depthwise"):
            y = plan.forward(x, w, geom.with_padding(1))
        np.testing.assert_array_equal(y, depthwise.forward(x, w, geom.with_padding(1)))
    finally:
        monkeypatch.undo()
        registry.refresh()
