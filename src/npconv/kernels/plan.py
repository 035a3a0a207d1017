"""The planner: picks the algorithm for each convolution pass and runs it.

Every pass has one entry point here; the differentiable ops in :mod:`npconv.ops.conv` call only
these (signatures in :mod:`npconv.kernels.algorithm`, whose registry lists the algorithms).

Choice per call (:func:`_select`, the one selection function), in order:

1. the algorithm forced by :data:`npconv.backends.conv` (``ValueError`` if it cannot run the call);
2. in benchmark mode, the fastest supporting algorithm measured on the first call with the same
   (pass, shapes, geometry, dtype), cached in ``npconv.backends.conv.benchmark_cache``;
3. the rule: the first algorithm in registry order that supports and recommends the call
   (``gemm``, last, runs everything). Its answer is cached per (pass, shapes, geometry, dtype,
   registry generation, ``NPCONV_PURE``, thread count): asking every algorithm cost more than a
   small convolution itself (~0.3 ms per call); :func:`clear_cache` forgets it.

Then locality: a non-local algorithm (FFT, Winograd) runs only if its ``admits`` check accepts this
call's values (finite, within its dynamic range); otherwise the rule's first local algorithm runs
it, so an algorithm choice never changes what a direct convolution would give.
The bias epilogue goes to the algorithm for its ``bias_passes``, else :func:`common.add_bias`. A
forward pass with an ``activation`` (fused Conv-activation, inference only) hands the algorithm a
:class:`~npconv.kernels.common.Epilogue` for its ``epilogue_passes``; otherwise the bias goes as above
and the planner applies the activation afterwards (with the bias, in one pass, when the algorithm
fuses neither: :func:`~npconv.kernels.pointwise.epilogue_`).

:func:`prepare_forward` plans a forward once for callers that repeat it (modules in inference): the
same choice, handed to the algorithm's optional ``prepare_forward``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import backends
from ..geometry import ConvGeometry
from . import algorithm as registry
from .algorithm import FALLBACK, PASSES, Algorithm
from .common import Epilogue, PreparedForward, ScratchSource, add_bias
from .numerics import Operands, Ranges
from .pointwise import Activation, epilogue_

__all__ = ["forward", "grad_input", "grad_weight", "choose", "candidates", "clear_cache", "state"]

Key = tuple  # (x_shape, w_shape, geom, dtype)


def _key(x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry, dtype: Any) -> Key:
    return (tuple(int(v) for v in x_shape), tuple(int(v) for v in w_shape), geom, np.dtype(dtype))


def _runs(algorithm: Algorithm, pass_name: str, key: Key) -> bool:
    return algorithm.runs(pass_name, *key)


def candidates(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
               dtype: Any) -> list[str]:
    """Names of the available algorithms able to run this pass, in rule order."""
    key = _key(x_shape, w_shape, geom, dtype)
    return [name for name, a in registry.available().items() if _runs(a, pass_name, key)]


def choose(pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
           dtype: Any) -> str:
    """The algorithm the planner uses for this pass on finite, ordinary data, without measuring
    (steps 1, 2 if cached, 3)."""
    return _select(pass_name, _key(x_shape, w_shape, geom, dtype))[0].name


def _forced(pass_name: str, key: Key) -> Algorithm | None:
    name = backends.conv.forced(pass_name)
    if name is None:
        return None
    algorithm = registry.get(name)  # ValueError naming why when unavailable
    if not _runs(algorithm, pass_name, key):
        x_shape, w_shape, geom, dtype = key
        raise ValueError(
            f"the forced convolution algorithm {name!r} does not support the {pass_name} pass of this "
            f"convolution (input {x_shape}, weight {w_shape}, kernel_size={geom.kernel_size}, "
            f"stride={geom.stride}, dilation={geom.dilation}, groups={geom.groups}, dtype={dtype}); "
            f"supporting algorithms: {candidates(pass_name, *key)}. Force per pass with a mapping, e.g. "
            f"npconv.backends.conv.force({{'{pass_name}': '{FALLBACK}'}})"
        )
    return algorithm


#: The rule's answers: (pass, key, local_only, generation, pure, threads) -> algorithm.
_rule_cache: dict[tuple, Algorithm] = {}
_RULE_CACHE_SIZE = 4096


def clear_cache() -> None:
    """Forget the rule's cached answers (the registry's changes, ``NPCONV_PURE`` and the thread
    count are part of the cache key already)."""
    _rule_cache.clear()


def _rule(pass_name: str, key: Key, local_only: bool = False) -> Algorithm:
    cache_key = (pass_name, key, local_only, registry.generation(), registry.pure(),
                 backends.get_num_threads())
    algorithm = _rule_cache.get(cache_key)
    if algorithm is None:
        algorithm = _rule_uncached(pass_name, key, local_only)
        if len(_rule_cache) >= _RULE_CACHE_SIZE:
            _rule_cache.clear()
        _rule_cache[cache_key] = algorithm
    return algorithm


def _rule_uncached(pass_name: str, key: Key, local_only: bool) -> Algorithm:
    active = registry.available()
    usable = [a for a in active.values() if (a.local or not local_only) and _runs(a, pass_name, key)]
    for algorithm in usable:
        if algorithm.recommended(pass_name, *key):
            return algorithm
    fallback = active.get(FALLBACK)
    if fallback is not None and fallback in usable:
        return fallback
    if usable:
        return usable[-1]
    raise ValueError(f"no available convolution algorithm runs the {pass_name} pass of this call "
                     f"(input {key[0]}, weight {key[1]}, dtype {key[3]})")


def _select(pass_name: str, key: Key, operands: Operands | None = None,
            run: Callable[[Algorithm], np.ndarray] | None = None) -> tuple[Algorithm, np.ndarray | None]:
    """The algorithm for this call (forced -> cached -> measured if ``run`` -> rule), rerouted to a
    local one when a non-local choice does not admit ``operands``; with the result if measuring ran
    the chosen algorithm already."""
    algorithm = _forced(pass_name, key)
    result = None
    if algorithm is None and backends.conv.measuring():
        cache_key = (pass_name,) + key
        cached = backends.conv.benchmark_cache.get(cache_key)
        if cached is not None:
            algorithm = registry.available().get(cached)
        elif run is not None:
            algorithm, result = _measure(pass_name, key, operands, run)
    if algorithm is None:
        algorithm = _rule(pass_name, key)
    if operands is not None and not algorithm.local and not algorithm.admits(pass_name, operands, key[2]):
        return _rule(pass_name, key, local_only=True), None
    return algorithm, result


def _measure(pass_name: str, key: Key, operands: Operands | None,
             run: Callable[[Algorithm], np.ndarray]) -> tuple[Algorithm | None, np.ndarray | None]:
    """Benchmark mode: run every supporting algorithm once, cache and return the fastest. Values a
    non-local candidate does not admit are not measured (nothing is cached for them)."""
    found = [a for a in registry.available().values() if _runs(a, pass_name, key)]
    if operands is not None and any(not a.local and not a.admits(pass_name, operands, key[2]) for a in found):
        return None, None
    best: tuple[float, Algorithm, np.ndarray] | None = None
    for algorithm in found:
        start = time.perf_counter()
        result = run(algorithm)
        elapsed = time.perf_counter() - start
        if best is None or elapsed < best[0]:
            best = (elapsed, algorithm, result)
    if best is None:
        return None, None
    backends.conv.benchmark_cache[(pass_name,) + key] = best[1].name
    return best[1], best[2]


def _dispatch(pass_name: str, key: Key, operands: Sequence[np.ndarray],
              call: Callable[[Algorithm], np.ndarray], ranges: Ranges | None) -> np.ndarray:
    algorithm, result = _select(pass_name, key, Operands(operands, ranges), call)
    return call(algorithm) if result is None else result


def _with_bias(algorithm: Algorithm, pass_name: str, bias: np.ndarray | None,
               run: Callable[..., np.ndarray]) -> np.ndarray:
    """``run()`` plus ``bias`` per output channel: fused by the algorithm for its ``bias_passes``
    (``run(bias=bias)``), else added afterwards."""
    if bias is None:
        return run()
    if pass_name in algorithm.bias_passes:
        return run(bias=bias)
    return add_bias(run(), bias)


def _with_epilogue(algorithm: Algorithm, pass_name: str, bias: np.ndarray | None, activation: Activation,
                   run: Callable[..., np.ndarray]) -> np.ndarray:
    """``activation(run() + bias[o])``: the whole epilogue fused by the algorithm for its
    ``epilogue_passes`` (``run(epilogue=...)``), else the bias as in :func:`_with_bias` and the
    activation (with the bias when the algorithm does not fuse it) in one pass afterwards."""
    if pass_name in algorithm.epilogue_passes:
        return run(epilogue=Epilogue(bias, activation))
    if bias is not None and pass_name in algorithm.bias_passes:
        return epilogue_(run(bias=bias), None, activation)
    return epilogue_(run(), bias, activation)


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: np.ndarray | None = None,
            activation: Activation | None = None, ranges: Ranges | None = None) -> np.ndarray:
    """``y = conv(x, w) (+ bias[o])``, then ``activation`` if given (not differentiable: inference).
    ``ranges``: the value ranges a non-local algorithm's check reads, shared with the step's other
    passes (:class:`~npconv.kernels.numerics.Ranges`)."""
    # _key's normal form without its per-call conversions: ndarray shapes are tuples of ints already
    key = (x.shape, w.shape, geom, x.dtype if x.dtype == w.dtype else np.result_type(x, w))
    if activation is not None:
        return _dispatch("forward", key, (x, w), lambda a: _with_epilogue(
            a, "forward", bias, activation, lambda **kw: a.forward(x, w, geom, **kw)), ranges)
    return _dispatch("forward", key, (x, w), lambda a: _with_bias(
        a, "forward", bias, lambda **kw: a.forward(x, w, geom, **kw)), ranges)


def state() -> tuple:
    """What the choice of an algorithm depends on besides the call (:func:`choose`,
    :func:`prepare_forward`: a cache of choices keys on it)."""
    return (registry.generation(), registry.pure(), backends.get_num_threads(),
            backends.conv.forced("forward"), backends.conv.measuring())


def prepare_forward(x_shape: tuple[int, ...], x_dtype: np.dtype, w: np.ndarray, geom: ConvGeometry,
                    bias: np.ndarray | None = None,
                    activation: Activation | None = None) -> PreparedForward | None:
    """:func:`forward` of inputs of ``x_shape`` and ``x_dtype`` planned once, or None where the plan
    would not hold for every such input: in benchmark mode, where the chosen algorithm does not plan
    ahead (``prepare_forward``), or where the planner would apply the bias or activation after it. A
    non-local choice (its use depends on the values, see ``admits``) is planned with the local
    algorithm the planner reroutes the values it does not admit to, each run checking them
    (:func:`_admitted`); None where that one does not plan ahead. Valid while the choice's inputs
    (:func:`state`) and the algorithms' own (their ``tokens``) are unchanged; ``run(x)`` is then bitwise
    :func:`forward`."""
    if backends.conv.measuring():
        return None
    dtype = x_dtype if x_dtype == w.dtype else np.result_type(x_dtype, w.dtype)
    key = (tuple(x_shape), w.shape, geom, dtype)
    chosen_in = state()
    algorithm, _ = _select("forward", key)
    prepared = _prepared(algorithm, key, x_dtype, w, bias, activation)
    if prepared is not None and not algorithm.local:
        local = _prepared(_rule("forward", key, local_only=True), key, x_dtype, w, bias, activation)
        prepared = None if local is None else _admitted(algorithm, prepared, local, w, geom)
    if prepared is None:
        return None
    return prepared._replace(tokens=(state, *prepared.tokens), planned=(chosen_in, *prepared.planned))


def _prepared(algorithm: Algorithm, key: Key, x_dtype: np.dtype, w: np.ndarray, bias: np.ndarray | None,
              activation: Activation | None) -> PreparedForward | None:
    """``algorithm``'s plan of the call, or None where it has none or the planner would apply the bias
    or activation after it."""
    if activation is not None:
        if "forward" not in algorithm.epilogue_passes:
            return None
        return algorithm.prepare_forward(key[0], x_dtype, w, key[2], epilogue=Epilogue(bias, activation))
    if bias is not None:
        if "forward" not in algorithm.bias_passes:
            return None
        return algorithm.prepare_forward(key[0], x_dtype, w, key[2], bias=bias)
    return algorithm.prepare_forward(key[0], x_dtype, w, key[2])


def _admitted(algorithm: Algorithm, chosen: PreparedForward, local: PreparedForward, w: np.ndarray,
              geom: ConvGeometry) -> PreparedForward:
    """The plan of a non-local choice: each run checks that the call's values admit it, else runs the
    plan of the local algorithm the planner reroutes such a call to (:func:`_select`)."""
    def admitted(x: np.ndarray) -> bool:
        return algorithm.admits("forward", Operands((x, w)), geom)

    def run(x: np.ndarray) -> np.ndarray:
        return chosen.run(x) if admitted(x) else local.run(x)

    def checked(x: np.ndarray, first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
        return lambda: first() if admitted(x) else second()

    bind = bind_residual = None
    if chosen.bind is not None and local.bind is not None:
        def bind(x: np.ndarray, y: np.ndarray, scratch: ScratchSource) -> Callable[[], None]:
            return checked(x, chosen.bind(x, y, scratch), local.bind(x, y, scratch))

    if chosen.bind_residual is not None and local.bind_residual is not None:
        def bind_residual(x: np.ndarray, y: np.ndarray, scratch: ScratchSource, residual: np.ndarray | None,
                          activation: Activation | None) -> Callable[[], None]:
            return checked(x, chosen.bind_residual(x, y, scratch, residual, activation),
                           local.bind_residual(x, y, scratch, residual, activation))

    return PreparedForward(run, chosen.tokens + local.tokens, chosen.planned + local.planned, bind,
                           bind_residual)


def grad_input(gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: Sequence[int],
               bias: np.ndarray | None = None, ranges: Ranges | None = None) -> np.ndarray:
    """``gx = conv^T(gy, w) (+ bias[c])``: the bias is the transposed convolution's (``ranges`` as in
    :func:`forward`)."""
    input_size = tuple(int(v) for v in input_size)
    x_shape = (gy.shape[0], w.shape[1] * geom.groups) + input_size
    key = _key(x_shape, w.shape, geom, np.result_type(gy, w))
    return _dispatch("grad_input", key, (gy, w), lambda a: _with_bias(
        a, "grad_input", bias, lambda **kw: a.grad_input(gy, w, geom, input_size, **kw)), ranges)


def grad_weight(x: np.ndarray, gy: np.ndarray, geom: ConvGeometry,
                ranges: Ranges | None = None) -> np.ndarray:
    """``gw = sum_n corr(x, gy)`` of shape ``(O, C/groups, *k)`` (``ranges`` as in :func:`forward`)."""
    w_shape = (gy.shape[1], x.shape[1] // geom.groups) + tuple(geom.kernel_size)
    key = _key(x.shape, w_shape, geom, np.result_type(x, gy))

    def call(algorithm: Algorithm) -> np.ndarray:
        if not algorithm.blas_threads and _siblings_on_blas_threads(key):
            with algorithm.on_blas_threads():
                return algorithm.grad_weight(x, gy, geom)
        return algorithm.grad_weight(x, gy, geom)

    return _dispatch("grad_weight", key, (x, gy), call, ranges)


def _siblings_on_blas_threads(key: Key) -> bool:
    """Whether the forward or grad_input pass of this convolution runs on multithreaded BLAS, so that
    the grad_weight should too (switching modes within a layer charges the worker threads for
    OpenBLAS's still-spinning pool)."""
    for pass_name in PASSES:
        if pass_name == "grad_weight":
            continue
        try:
            if _select(pass_name, key)[0].blas_threads:
                return True
        except ValueError:  # a forced algorithm that runs grad_weight but not this sibling pass
            continue
    return False
