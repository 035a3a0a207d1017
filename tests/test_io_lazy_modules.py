"""`npconv.distributed`, `npconv.dask`, `npconv.io`, `npconv.jit` and `npconv.optim` are attributes after
`import npconv`, imported on first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import npconv

PROBE = """
import json, sys
import npconv
before = sorted(m for m in sys.modules if m.split('.')[0] in ('mpi4py', 'dask', 'distributed')
                or m in ('npconv.distributed', 'npconv.dask'))
dist, dask = npconv.distributed, npconv.dask
print(json.dumps({
    "before": before,
    "same": [dist is sys.modules['npconv.distributed'], dask is sys.modules['npconv.dask']],
    "api": [callable(dist.DistributedDataParallel), callable(dask.predict)],
    "listed": ['distributed' in dir(npconv), 'dask' in dir(npconv)],
}))
"""


def run_probe(probe: str) -> dict:
    """The JSON report a fresh interpreter prints after running probe."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_npconv_imports_neither_mpi4py_nor_dask_and_the_attributes_work():
    report = run_probe(PROBE)
    assert report["before"] == []
    assert report["same"] == [True, True]
    assert report["api"] == [True, True]
    assert report["listed"] == [True, True]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'distributd'"):
        getattr(npconv, "distributd")  # noqa: B009 - the attribute hook under test
    assert not hasattr(npconv, "mpi4py")


IO_PROBE = """
import json, sys
import numpy as np
import npconv
lazy = ('npconv.io', 'npconv.jit', 'npconv.optim')
before = sorted(m for m in sys.modules if m in lazy)
npconv.nn.Conv2d(1, 1, 3)(npconv.tensor(np.zeros((1, 1, 5, 5), np.float32)))
after_conv = sorted(m for m in sys.modules if m in lazy)
from npconv import load, save
from npconv.optim import SGD
report = {
    "before": before, "after_conv": after_conv,
    "functions": [save is sys.modules['npconv.io'].save, load is sys.modules['npconv.io'].load,
                  npconv.load_torch is sys.modules['npconv.io'].load_torch],
    "modules": [npconv.io is sys.modules['npconv.io'], npconv.optim.SGD is SGD,
                callable(npconv.jit.trace)],
    "listed": [n in dir(npconv) for n in ('io', 'jit', 'optim', 'save', 'load', 'load_torch')],
    "star": sorted(n for n in ('io', 'jit', 'optim', 'save', 'load', 'load_torch') if n in npconv.__all__),
}
print(json.dumps(report))
"""


def test_io_jit_and_optim_are_imported_on_first_use_and_their_names_work():
    report = run_probe(IO_PROBE)
    assert report["before"] == [] and report["after_conv"] == []  # a first convolution compiles none of them
    assert report["functions"] == [True, True, True]
    assert report["modules"] == [True, True, True]
    assert all(report["listed"])
    assert report["star"] == ["io", "jit", "load", "load_torch", "optim", "save"]


def test_star_import_reaches_the_lazy_names():
    namespace: dict = {}
    exec("from npconv import *", namespace)  # noqa: S102 - `import *` needs a fresh namespace
    assert namespace["save"] is npconv.io.save and namespace["optim"] is npconv.optim
