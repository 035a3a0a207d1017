"""The planner: picks the algorithm for each convolution pass.

Every pass has one entry point here; the differentiable ops in :mod:`npconv.ops.conv` call
only these. Signatures (``geom`` has explicit zero padding):

* ``forward(x, w, geom) -> y``
* ``grad_input(gy, w, geom, input_size) -> gx``

(plus ``bias=`` for the passes an algorithm lists in ``BIAS_PASSES``: it then adds the bias of the
output channels itself, block by block; the planner adds it afterwards for the others)
* ``grad_weight(x, gy, geom) -> gw``

Algorithms are the modules of this package exposing ``NAME``, ``supports(pass_name, x_shape,
w_shape, geom, dtype)``, ``recommended(...)`` and the pass functions (``x_shape`` is the batched
input shape of the convolution, ``w_shape`` its weight shape ``(O, C/groups, *k)``), and optionally
``unavailable_reason()`` (a str when the module cannot run in this process, e.g. a compiled
algorithm on the NumPy engine). ``gemm`` always exists and runs everything; ``fft``,
``compiled_depthwise``, ``depthwise`` and ``winograd`` are optional.

Choice per call, in order:

1. the algorithm forced by :data:`npconv.backends.conv` (``ValueError`` if it cannot run the call);
2. in benchmark mode, the fastest supporting algorithm measured on the first call with the same
   (pass, shapes, geometry, dtype), cached in ``npconv.backends.conv.benchmark_cache``;
3. the first optional algorithm in :data:`PRIORITY` that supports and recommends the call;
4. ``gemm``.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .. import backends
from ..geometry import ConvGeometry
from . import gemm
from .bias import add_bias

__all__ = ["forward", "grad_input", "grad_weight", "choose", "candidates", "algorithms", "PRIORITY"]

#: Optional algorithms, in the order their ``recommended`` heuristics are consulted.
PRIORITY = ("fft", "compiled_depthwise", "depthwise", "winograd")

_modules: dict[str, ModuleType] | None = None
#: Optional algorithms that failed to import, with the reason.
unavailable: dict[str, str] = {}


def algorithms(refresh: bool = False) -> dict[str, ModuleType]:
    """The importable algorithm modules by name (``gemm`` first), imported once."""
    global _modules
    if _modules is None or refresh:
        found: dict[str, ModuleType] = {gemm.NAME: gemm}
        unavailable.clear()
        for name in PRIORITY:
            try:
                module = importlib.import_module(f"{__package__}.{name}")
                reason = getattr(module, "unavailable_reason", lambda: None)()
                if reason is None:
                    found[name] = module
                else:  # e.g. the compiled core is not in use (npconv.backends.core warned once)
                    unavailable[name] = reason
            except ModuleNotFoundError as error:
                if error.name != f"{__package__}.{name}":
                    raise
                unavailable[name] = "not installed"
            except Exception as error:  # a broken optional algorithm must not break convolution
                unavailable[name] = f"{type(error).__name__}: {error}"
                warnings.warn(f"npconv: algorithm {name!r} failed to import and is disabled ({error})",
                              RuntimeWarning, stacklevel=2)
        _modules = found
    return _modules


def _supports(module: ModuleType, pass_name: str, key: tuple) -> bool:
    if not callable(getattr(module, pass_name, None)) or not callable(getattr(module, "supports", None)):
        return False
    return bool(module.supports(pass_name, *key))


def candidates(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
               dtype: Any) -> list[str]:
    """Names of the algorithms able to run this pass."""
    key = (tuple(x_shape), tuple(w_shape), geom, np.dtype(dtype))
    return [name for name, module in algorithms().items() if _supports(module, pass_name, key)]


def choose(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
           dtype: Any) -> str:
    """The algorithm the planner uses for this pass without measuring (steps 1, 2 if cached, 3, 4)."""
    key = (tuple(x_shape), tuple(w_shape), geom, np.dtype(dtype))
    forced = _forced(pass_name, key)
    if forced is not None:
        return forced
    if backends.conv.benchmark:
        cached = backends.conv.benchmark_cache.get((pass_name,) + key)
        if cached is not None:
            return cached
    return _heuristic(pass_name, key)


def _forced(pass_name: str, key: tuple) -> str | None:
    name = backends.conv.forced(pass_name)
    if name is None:
        return None
    module = algorithms().get(name)
    if module is None:
        reason = unavailable.get(name, "unknown algorithm")
        raise ValueError(f"the forced convolution algorithm {name!r} is not available ({reason}); "
                         f"available: {sorted(algorithms())}")
    if not _supports(module, pass_name, key):
        x_shape, w_shape, geom, dtype = key
        raise ValueError(
            f"the forced convolution algorithm {name!r} does not support the {pass_name} pass of this "
            f"convolution (input {x_shape}, weight {w_shape}, kernel_size={geom.kernel_size}, "
            f"stride={geom.stride}, dilation={geom.dilation}, groups={geom.groups}, dtype={dtype}); "
            f"supporting algorithms: {candidates(pass_name, *key)}. Force per pass with a mapping, e.g. "
            f"npconv.backends.conv.force({{'{pass_name}': 'gemm'}})"
        )
    return name


def _heuristic(pass_name: str, key: tuple) -> str:
    modules = algorithms()
    for name in PRIORITY:
        module = modules.get(name)
        if module is None or not _supports(module, pass_name, key):
            continue
        if callable(getattr(module, "recommended", None)) and module.recommended(pass_name, *key):
            return name
    return gemm.NAME


def _dispatch(pass_name: str, key: tuple, call: Callable[[ModuleType], np.ndarray]) -> np.ndarray:
    modules = algorithms()
    name = _forced(pass_name, key)
    if name is None and backends.conv.benchmark:
        cache_key = (pass_name,) + key
        name = backends.conv.benchmark_cache.get(cache_key)
        if name is None:
            best: tuple[float, str, np.ndarray] | None = None
            for candidate in candidates(pass_name, *key):
                start = time.perf_counter()
                result = call(modules[candidate])
                elapsed = time.perf_counter() - start
                if best is None or elapsed < best[0]:
                    best = (elapsed, candidate, result)
            assert best is not None  # gemm supports every pass
            backends.conv.benchmark_cache[cache_key] = best[1]
            return best[2]
    if name is None:
        name = _heuristic(pass_name, key)
    return call(modules[name])


def _with_bias(module: ModuleType, pass_name: str, bias: np.ndarray | None,
               run: Callable[..., np.ndarray]) -> np.ndarray:
    """``run()`` plus ``bias`` per output channel: passed on (``run(bias=bias)``) to an algorithm
    listing the pass in its ``BIAS_PASSES`` (it adds the bias to each output block while that is in
    cache), else added afterwards by :func:`npconv.kernels.bias.add_bias`."""
    if bias is None:
        return run()
    if pass_name in getattr(module, "BIAS_PASSES", ()):
        return run(bias=bias)
    return add_bias(run(), bias)


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None) -> np.ndarray:
    """``y = conv(x, w) (+ bias[o])``."""
    key = (x.shape, w.shape, geom, np.result_type(x, w))
    return _dispatch("forward", key, lambda m: _with_bias(
        m, "forward", bias, lambda **kw: m.forward(x, w, geom, **kw)))


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: tuple[int, ...],
               bias: np.ndarray | None = None) -> np.ndarray:
    """``gx = conv^T(gy, w) (+ bias[c])``: the bias is the transposed convolution's."""
    input_size = tuple(int(v) for v in input_size)
    x_shape = (gy.shape[0], w.shape[1] * geom.groups) + input_size
    key = (x_shape, w.shape, geom, np.result_type(gy, w))
    return _dispatch("grad_input", key, lambda m: _with_bias(
        m, "grad_input", bias, lambda **kw: m.grad_input(gy, w, geom, input_size, **kw)))


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    w_shape = (gy.shape[1], x.shape[1] // geom.groups) + tuple(geom.kernel_size)
    key = (x.shape, w_shape, geom, np.result_type(x, gy))

    def call(module: ModuleType) -> np.ndarray:
        if module is gemm and _siblings_on_blas_threads(key):
            with gemm.on_blas_threads():
                return module.grad_weight(x, gy, geom)
        return module.grad_weight(x, gy, geom)

    return _dispatch("grad_weight", key, call)


def _siblings_on_blas_threads(key: tuple) -> bool:
    """Whether the forward or grad_input pass of this convolution runs on multithreaded BLAS (an
    algorithm whose ``on_blas_threads()`` is true), so that its GEMM ``grad_weight`` should too."""
    modules = algorithms()
    for pass_name in ("forward", "grad_input"):
        module = modules.get(choose(pass_name, *key))
        runs_on_blas = getattr(module, "runs_on_blas_threads", None)
        if module is not gemm and callable(runs_on_blas) and runs_on_blas():
            return True
    return False
