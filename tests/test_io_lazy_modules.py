"""`npconv.distributed` and `npconv.dask` are attributes after `import npconv`, imported on first use."""

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


def test_import_npconv_imports_neither_mpi4py_nor_dask_and_the_attributes_work():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["before"] == []
    assert report["same"] == [True, True]
    assert report["api"] == [True, True]
    assert report["listed"] == [True, True]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'distributd'"):
        getattr(npconv, "distributd")  # noqa: B009 - the attribute hook under test
    assert not hasattr(npconv, "mpi4py")
