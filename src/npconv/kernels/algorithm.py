"""The algorithm contract and the one registry of convolution algorithms.

An algorithm runs some of the three passes of a convolution (``geom`` has explicit zero padding,
``x (N, C, *in)``, ``w (O, C/groups, *k)``, ``gy (N, O, *out)``):

* ``forward(x, w, geom, bias=None) -> y (N, O, *out)``
* ``grad_input(gy, w, geom, input_size, bias=None) -> gx (N, C, *input_size)``
* ``grad_weight(x, gy, geom) -> gw (O, C/groups, *k)``

``bias`` (one value per channel of the result) is passed only for the passes in ``bias_passes``: the
algorithm adds it to each output block while that is in cache with
:func:`npconv.kernels.common.add_to_channels`; for the other passes the planner adds it afterwards.
A call with an activation (a fused Conv-activation in inference) passes, for the passes in
``epilogue_passes``, ``epilogue=`` an :class:`npconv.kernels.common.Epilogue` (bias and activation)
instead of ``bias=``: the algorithm applies it to each output block in cache (``epilogue.apply_(block)``,
or in compiled code from ``epilogue.activation.code``, ``lo``, ``hi``, with the activation ops' values:
NaN stays NaN, hardtanh keeps ``-0.0``; every kind in ``pointwise.ACTIVATIONS``); otherwise the planner
applies the activation (and the bias the algorithm did not add) in one pass afterwards.

Besides the passes an algorithm declares (see :class:`Algorithm`): ``name``; ``passes``;
``supports(pass_name, x_shape, w_shape, geom, dtype)`` (can it run this call) and ``recommended(...)``
(should the planner's rule pick it); ``local`` (each output computed from its own window only, so
NaN/inf stay in the outputs whose window holds them and the error of an output is relative to its
window, as in a direct convolution) and, for a non-local algorithm, ``admits(pass_name, operands,
geom)``,
the data check deciding whether this call's values are within what it computes like a direct
convolution (finite, dynamic range); ``blas_threads`` (it runs on the calling thread with
multithreaded BLAS); ``compiled`` (a compiled implementation, skipped under ``NPCONV_PURE=1``).
Optionally ``prepare_forward(x_shape, x_dtype, w, geom, bias=None, epilogue=None)``: the forward
planned once for inputs of one shape and dtype (a :class:`npconv.kernels.common.PreparedForward`,
``run(x)`` equal to ``forward``), which a caller repeating the call (a module) keeps and reuses.

An algorithm is an :class:`Algorithm` object or a module with the same names in upper case
(``NAME``, ``PASSES``, ``BIAS_PASSES``, ``EPILOGUE_PASSES``, ``LOCAL``, ``BLAS_THREADS``, ``COMPILED``,
functions ``supports``, ``recommended``, ``admits`` and the passes; missing constants take the defaults of
:class:`Algorithm`). Register it with one call, :func:`register`; the built-in ones are listed in
:data:`BUILTIN`. Several implementations of one name are variants of one algorithm (e.g. a compiled
and a NumPy depthwise kernel): the planner uses the first available one, compiled ones first unless
``NPCONV_PURE=1``. The registry's order of names is the order in which the planner's rule asks
``recommended`` (``gemm``, which runs every call, last).

This module imports nothing from npconv (the settings in :mod:`npconv.backends`
read :data:`PASSES` and :func:`names` from here); implementations are imported on first use.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

#: Annotation aliases: npconv.geometry.ConvGeometry and npconv.kernels.numerics.Operands are not
#: imported here (npconv.backends imports this module; importing them would make a cycle).
ConvGeometry = Any
Operands = Any

__all__ = ["PASSES", "FALLBACK", "BUILTIN", "Algorithm", "ModuleAlgorithm", "register", "unregister", "names",
           "available", "get", "implementations", "unavailable", "reasons", "pure", "refresh", "registered",
           "generation"]

#: The three passes of a convolution, in the order the planner documents them.
PASSES = ("forward", "grad_input", "grad_weight")

#: Built-in implementations ``(name, module)`` in the planner's rule order; a name listed twice has
#: variants (the compiled one is preferred when it imports and ``NPCONV_PURE`` is not set).
BUILTIN: tuple[tuple[str, str], ...] = (
    ("fft", "npconv.kernels.fft"),
    ("depthwise", "npconv.kernels.compiled_depthwise"),
    ("depthwise", "npconv.kernels.depthwise"),
    ("winograd", "npconv.kernels.compiled_winograd"),
    ("winograd", "npconv.kernels.winograd"),
    ("grouped", "npconv.kernels.compiled_grouped"),
    ("gemm", "npconv.kernels.compiled_gemm"),
    ("gemm", "npconv.kernels.gemm"),
)
#: The algorithm that runs every pass of every convolution (the rule's last resort).
FALLBACK = "gemm"


class Algorithm:
    """Base class of the contract (see the module docstring). Subclasses set ``name`` and override
    ``supports`` and the passes they list in ``passes``."""

    name: str = ""
    passes: tuple[str, ...] = PASSES
    bias_passes: tuple[str, ...] = ()
    epilogue_passes: tuple[str, ...] = ()
    local: bool = True
    blas_threads: bool = False
    compiled: bool = False

    def supports(self, pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
                 dtype: np.dtype) -> bool:
        raise NotImplementedError

    def recommended(self, pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int],
                    geom: ConvGeometry, dtype: np.dtype) -> bool:
        return False

    def admits(self, pass_name: str, operands: Operands, geom: ConvGeometry) -> bool:
        """Whether this call's values (``operands``: the pass's arrays in signature order, with their
        :func:`~npconv.kernels.numerics.value_range`) are computed as a direct convolution would;
        only asked of non-local algorithms (see :mod:`npconv.kernels.numerics`)."""
        return True

    def on_blas_threads(self) -> contextlib.AbstractContextManager[None]:
        """A context in which this thread's calls run on multithreaded BLAS (the planner enters it
        for a ``grad_weight`` whose sibling passes run on BLAS threads); by default nothing."""
        return contextlib.nullcontext()

    def forward(self, x: np.ndarray, w: np.ndarray, geom: ConvGeometry,
                bias: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def prepare_forward(self, x_shape: tuple[int, ...], x_dtype: np.dtype, w: np.ndarray, geom: ConvGeometry,
                        bias: np.ndarray | None = None, epilogue: Any = None) -> Any:
        """Optional: ``forward`` for inputs of ``x_shape`` and ``x_dtype`` planned once, a
        :class:`~npconv.kernels.common.PreparedForward` (its ``run(x)`` equals ``forward(x, w, geom,
        bias=..., epilogue=...)``); None when the algorithm does not plan ahead."""
        return None

    def grad_input(self, gy: np.ndarray, w: np.ndarray, geom: ConvGeometry, input_size: tuple[int, ...],
                   bias: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def grad_weight(self, x: np.ndarray, gy: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        raise NotImplementedError

    def runs(self, pass_name: str, x_shape: Sequence[int], w_shape: Sequence[int], geom: ConvGeometry,
             dtype: np.dtype) -> bool:
        """``pass_name in passes`` and ``supports(...)``."""
        return pass_name in self.passes and bool(self.supports(pass_name, x_shape, w_shape, geom, dtype))

    def __repr__(self) -> str:
        kind = "compiled" if self.compiled else "numpy"
        return f"<algorithm {self.name!r} ({kind}, {'local' if self.local else 'non-local'})>"


class ModuleAlgorithm(Algorithm):
    """An algorithm written as a module (upper-case constants, functions); attributes are read from
    the module on every use."""

    def __init__(self, module: ModuleType) -> None:
        name = getattr(module, "NAME", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"an algorithm module must define NAME as a non-empty str, got {name!r} in "
                            f"{module.__name__}")
        if not callable(getattr(module, "supports", None)):
            raise TypeError(f"algorithm module {module.__name__} must define supports(pass_name, x_shape, "
                            "w_shape, geom, dtype)")
        missing = [p for p in getattr(module, "PASSES", PASSES) if not callable(getattr(module, p, None))]
        if missing:
            raise TypeError(f"algorithm module {module.__name__} lists passes it does not define: {missing}")
        self.module = module
        self.name = name

    @property  # type: ignore[override]
    def passes(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, "PASSES", PASSES))

    @property  # type: ignore[override]
    def bias_passes(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, "BIAS_PASSES", ()))

    @property  # type: ignore[override]
    def epilogue_passes(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, "EPILOGUE_PASSES", ()))

    @property  # type: ignore[override]
    def local(self) -> bool:
        return bool(getattr(self.module, "LOCAL", True))

    @property  # type: ignore[override]
    def blas_threads(self) -> bool:
        return bool(getattr(self.module, "BLAS_THREADS", False))

    @property  # type: ignore[override]
    def compiled(self) -> bool:
        return bool(getattr(self.module, "COMPILED", False))

    def supports(self, *args: Any) -> bool:
        return bool(self.module.supports(*args))

    def recommended(self, *args: Any) -> bool:
        rule = getattr(self.module, "recommended", None)
        return bool(rule(*args)) if rule is not None else False

    def admits(self, pass_name: str, operands: Operands, geom: ConvGeometry) -> bool:
        check = getattr(self.module, "admits", None)
        return bool(check(pass_name, operands, geom)) if check is not None else True

    def on_blas_threads(self) -> contextlib.AbstractContextManager[None]:
        context = getattr(self.module, "on_blas_threads", None)
        return context() if context is not None else contextlib.nullcontext()

    def forward(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.module.forward(*args, **kwargs)

    def prepare_forward(self, *args: Any, **kwargs: Any) -> Any:
        prepare = getattr(self.module, "prepare_forward", None)
        return prepare(*args, **kwargs) if prepare is not None else None

    def grad_input(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.module.grad_input(*args, **kwargs)

    def grad_weight(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.module.grad_weight(*args, **kwargs)


# -- the registry --------------------------------------------------------------------------------
_lock = threading.RLock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_order: list[str] = []  # names in rule order
_declared: dict[str, list[Algorithm | ModuleType | str]] = {}  # name -> implementations, as registered
_loaded: dict[str, list[Algorithm]] | None = None
_active: dict[bool, dict[str, Algorithm]] = {}  # available() per value of pure(), until refresh()
_generation = 0
#: Implementations that failed to import or register: ``"name (module)" -> reason``.
unavailable: dict[str, str] = {}


def pure(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``NPCONV_PURE`` (in ``environ``, default ``os.environ``) asks for the NumPy
    implementations only (any value but '', '0')."""
    if environ is None:
        # every planned call asks: os.environ.get encodes the key and decodes the value (0.5 us);
        # CPython's os.environ keeps the encoded items in _data (updated by every change)
        data = getattr(os.environ, "_data", None)
        if isinstance(data, dict) and _PURE_KEY is not None:
            return _PURE_KEY in data and data[_PURE_KEY] not in _PURE_OFF
        environ = os.environ
    return environ.get("NPCONV_PURE", "") not in ("", "0")


def _encoded(name: str) -> tuple[Any, tuple[Any, ...]]:
    """``NPCONV_PURE``'s key in ``os.environ._data`` and its values that mean off, as stored there."""
    try:
        encode_key, encode_value = os.environ.encodekey, os.environ.encodevalue  # type: ignore[attr-defined]
        return encode_key(name), (encode_value(""), encode_value("0"))
    except (AttributeError, TypeError, UnicodeError):
        return None, ()


_PURE_KEY, _PURE_OFF = _encoded("NPCONV_PURE")


def _as_algorithm(implementation: Algorithm | ModuleType) -> Algorithm:
    if isinstance(implementation, Algorithm):
        if not isinstance(implementation.name, str) or not implementation.name:
            raise TypeError(f"an algorithm needs a non-empty str name, got {implementation.name!r}")
        return implementation
    if isinstance(implementation, ModuleType):
        return ModuleAlgorithm(implementation)
    raise TypeError(f"an algorithm must be an npconv.kernels.algorithm.Algorithm, a module or a module "
                    f"path, got {type(implementation).__name__} {implementation!r}")


def register(implementation: Algorithm | ModuleType | str, name: str | None = None,
             before: str | None = FALLBACK) -> None:
    """Register an algorithm implementation (an :class:`Algorithm`, a module, or a module path
    imported on first use, which then needs ``name``). A new name enters the rule order just
    before ``before`` (default: before ``gemm``; None: last); a known name gets a variant."""
    if isinstance(implementation, str):
        if not isinstance(name, str) or not name:
            raise TypeError(f"register of a module path needs name=, got {name!r}")
    else:
        algorithm = _as_algorithm(implementation)
        if name is not None and name != algorithm.name:
            raise ValueError(f"register: name={name!r} differs from the algorithm's name {algorithm.name!r}")
        name = algorithm.name
    with _lock:
        if name not in _order:
            _order.insert(_order.index(before) if before in _order else len(_order), name)
        _declared.setdefault(name, []).append(implementation)
        refresh()


def unregister(name: str, implementation: Algorithm | ModuleType | str | None = None) -> None:
    """Remove one implementation of ``name`` (or all of them, and the name)."""
    with _lock:
        if name not in _declared:
            raise ValueError(f"unregister: no algorithm named {name!r}; registered: {names()}")
        if implementation is None:
            del _declared[name]
        else:
            _declared[name] = [i for i in _declared[name] if i is not implementation]
        if not _declared.get(name):
            _declared.pop(name, None)
            _order.remove(name)
        refresh()


def refresh() -> None:
    """Forget the loaded implementations (re-import and re-read ``NPCONV_PURE`` on next use)."""
    global _loaded, _generation
    with _lock:
        _loaded = None
        _active.clear()
        _generation += 1


def generation() -> int:
    """A number that changes whenever the registry changes (caches of choices key on it)."""
    return _generation


def names() -> tuple[str, ...]:
    """Every registered algorithm name (available or not), in the rule order."""
    return tuple(_order)


def _load(implementation: Algorithm | ModuleType | str, name: str) -> Algorithm | None:
    if not isinstance(implementation, str):
        return _as_algorithm(implementation)
    label = f"{name} ({implementation})"
    try:
        algorithm = _as_algorithm(importlib.import_module(implementation))
    except ModuleNotFoundError as error:
        if error.name != implementation:
            raise
        # a compiled implementation without its extension says why in the error's message
        standard = error.msg == f"No module named {implementation!r}"
        unavailable[label] = "not installed" if standard else error.msg
        return None
    except Exception as error:  # a broken optional implementation must not break convolution
        unavailable[label] = f"{type(error).__name__}: {error}"
        warnings.warn(f"npconv: algorithm {label} failed to load and is disabled ({error})",
                      RuntimeWarning, stacklevel=3)
        return None
    if algorithm.name != name:
        unavailable[label] = f"its NAME is {algorithm.name!r}"
        return None
    return algorithm


def implementations(name: str | None = None) -> dict[str, list[Algorithm]]:
    """The loaded implementations per name (all of them, in preference order: compiled first),
    imported on first use; ``name`` restricts to one."""
    global _loaded
    with _lock:
        if _loaded is None:
            unavailable.clear()
            loaded: dict[str, list[Algorithm]] = {}
            for n in _order:
                found = [a for a in (_load(i, n) for i in _declared[n]) if a is not None]
                loaded[n] = sorted(found, key=lambda a: not a.compiled)  # stable: registration order
            _loaded = loaded
        if name is not None:
            return {name: list(_loaded.get(name, []))}
        return {n: list(v) for n, v in _loaded.items()}


def available() -> dict[str, Algorithm]:
    """The implementation the planner uses per name, in rule order (compiled ones skipped when
    :func:`pure`); names without a usable implementation are absent."""
    skip_compiled = pure()
    active = _active.get(skip_compiled)
    if active is None:
        active = {}
        for n, variants in implementations().items():
            usable = [a for a in variants if not (skip_compiled and a.compiled)]
            if usable:
                active[n] = usable[0]
        _active[skip_compiled] = active
    return dict(active)


def reasons(name: str) -> list[str]:
    """Why implementations of ``name`` are unavailable (after loading)."""
    implementations()
    return [f"{label}: {why}" for label, why in unavailable.items() if label.startswith(f"{name} (")]


def get(name: str) -> Algorithm:
    """The implementation in use for ``name``; ``ValueError`` naming the reason if there is none."""
    active = available()
    if name in active:
        return active[name]
    if name not in _order:
        raise ValueError(f"unknown convolution algorithm {name!r}; registered: {list(names())}")
    why = reasons(name)
    if pure() and implementations(name)[name]:
        why.append("NPCONV_PURE=1 excludes its compiled implementation")
    raise ValueError(f"the convolution algorithm {name!r} is not available ({'; '.join(why) or 'none'})"
                     f"; available: {sorted(active)}")


@contextlib.contextmanager
def registered(implementations_by_name: dict[str, Sequence[Algorithm | ModuleType | str]],
               order: Sequence[str] | None = None) -> Iterator[None]:
    """Test helper: replace the whole registry inside the block (restored on exit)."""
    with _lock:
        saved = (list(_order), {k: list(v) for k, v in _declared.items()})
        _order[:] = list(order or implementations_by_name)
        _declared.clear()
        _declared.update({k: list(v) for k, v in implementations_by_name.items()})
        refresh()
    try:
        yield
    finally:
        with _lock:
            _order[:] = saved[0]
            _declared.clear()
            _declared.update(saved[1])
            refresh()


for _name, _path in BUILTIN:
    if _name not in _order:
        _order.append(_name)
    _declared.setdefault(_name, []).append(_path)

