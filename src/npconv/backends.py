"""User-facing switches for the convolution engine (imports only the algorithm registry of kernels/).

* ``npconv.set_num_threads(n)`` / ``npconv.get_num_threads()``: threads used by the kernels
  (worker threads over images, channels and FFT transforms; BLAS threads via threadpoolctl).
  The default is the number of CPU cores. ``set_num_threads`` also limits the BLAS libraries
  loaded by NumPy/SciPy process-wide, like ``torch.set_num_threads``.
* ``npconv.backends.conv.algorithm``: ``None`` (let the planner choose) or a registered algorithm
  name (``npconv.backends.algorithms()``: ``"fft"``, ``"depthwise"``, ``"winograd"``, ``"gemm"``) used
  for every pass, or a mapping
  ``{"forward": name, "grad_input": name, "grad_weight": name}`` forcing only the listed passes.
  A forced algorithm that cannot run a call raises ``ValueError``. Forcing a non-local algorithm (FFT,
  Winograd) still leaves calls whose values it cannot hold (non-finite, too wide a range) to a local
  one (see ``docs/algorithms.md``).
* ``npconv.backends.conv.implementations()``: which implementation of each algorithm is in use
  (``"numpy"`` or ``"compiled"``; ``NPCONV_PURE=1`` forces the NumPy ones) and which are unavailable.
* ``npconv.backends.conv.force(name_or_mapping)``: a context manager setting ``algorithm``.
* ``npconv.backends.conv.benchmark = True``: like ``torch.backends.cudnn.benchmark``; the first
  call per (pass, shapes, geometry, dtype) runs every algorithm supporting it once, and later
  calls use the fastest. ``npconv.backends.conv.clear_cache()`` forgets the measurements.
* ``npconv.backends.core``: which engine runs the kernels: ``name`` is ``"compiled"`` (npconv's C
  extension ``npconv._core``) or ``"numpy"``; ``isa`` the compiled variant in use (``"generic"``,
  ``"avx2"``, ``"avx512"``; settable to any of ``isas``); ``reason`` why the compiled core is not in
  use (None when it is). Environment, read once at import: ``NPCONV_PURE=1`` forces the NumPy
  engine, ``NPCONV_ISA=generic|avx2|avx512`` forces a variant the CPU supports (see
  ``docs/compiled-core.md``).
* ``npconv.backends.memory``: the cache of freed array memory used inside module calls (the C
  extension ``npconv._arrays``) and backward passes: ``cache_limit`` (bytes held at most, default
  1 GiB or an eighth of the machine's memory if less; 0 turns it off), ``min_size`` (smallest cached
  block, default 128 KiB), ``cached_bytes()``, ``stats()``, ``empty_cache()``; ``available`` /
  ``reason``. Off under ``NPCONV_PURE=1``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from .kernels import algorithm as registry
from .kernels.algorithm import PASSES

__all__ = ["conv", "core", "memory", "cudnn", "mps", "set_num_threads", "get_num_threads", "blas_threads",
           "algorithms", "use_deterministic_algorithms", "are_deterministic_algorithms_enabled",
           "is_deterministic_algorithms_warn_only_enabled", "PASSES"]


def algorithms() -> tuple[str, ...]:
    """The registered convolution algorithm names (:mod:`npconv.kernels.algorithm`)."""
    return registry.names()


def __getattr__(name: str) -> Any:
    if name == "ALGORITHMS":  # the registered names, read when asked (algorithms may register later)
        return registry.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_state = {"num_threads": max(1, os.cpu_count() or 1), "deterministic": False, "warn_only": False}
#: (whether SciPy's BLAS was loaded when scanned, the controllers found then)
_blas_libs: tuple[bool, list[Any]] | None = None


def _scipy_blas_loaded() -> bool:
    return "scipy.linalg.cython_blas" in sys.modules or "scipy.linalg._fblas" in sys.modules


def _blas_controllers() -> list[Any]:
    """threadpoolctl controllers of the BLAS libraries loaded in this process: NumPy's, and SciPy's
    once something loaded it (the compiled kernels call it through ``kernels/blas.py``). Scanned
    again when SciPy's appears; a library found later runs as many threads as the others. Importing
    ``scipy.linalg`` only to find its BLAS would cost a first convolution ~0.3 s."""
    global _blas_libs
    scipy_loaded = _scipy_blas_loaded()
    if _blas_libs is None or _blas_libs[0] != scipy_loaded:
        import numpy  # noqa: F401  (load the library before inspecting it)
        from threadpoolctl import ThreadpoolController

        known = _blas_libs[1] if _blas_libs is not None else []
        libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        if known:  # a newly found library runs as many threads as the ones already controlled
            threads = known[0].get_num_threads()
            for lib in libs:
                if lib.filepath not in {k.filepath for k in known} and lib.get_num_threads() != threads:
                    lib.set_num_threads(threads)
        _blas_libs = (scipy_loaded, libs)
    return _blas_libs[1]


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in npconv's kernels and the BLAS libraries (process-wide)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"set_num_threads expects an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads expects a positive number of threads, got {n}")
    _state["num_threads"] = n
    for lib in _blas_controllers():
        lib.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads npconv's kernels use (default: the number of CPU cores)."""
    return _state["num_threads"]


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Temporarily run the BLAS libraries with ``n`` threads (the counts it changed are restored)."""
    # one query per library: every convolution enters this once or twice, and each threadpoolctl
    # query costs ~1 us (two OpenBLAS copies: NumPy's and SciPy's)
    changed = []
    for lib in _blas_controllers():
        previous = lib.get_num_threads()
        if previous != n:
            lib.set_num_threads(n)
            changed.append((lib, previous))
    try:
        yield
    finally:
        for lib, previous in changed:
            lib.set_num_threads(previous)


def _check_algorithm(value: Any) -> Any:
    if value is None or value == "auto":
        return None
    if isinstance(value, str):
        if value not in algorithms():
            raise ValueError(f"npconv.backends.conv.algorithm must be None, 'auto' or one of {algorithms()}, "
                             f"got {value!r}")
        return value
    if isinstance(value, Mapping):
        for key, name in value.items():
            if key not in PASSES:
                raise ValueError(f"npconv.backends.conv.algorithm keys must be passes {PASSES}, got {key!r}")
            if name is not None and name not in algorithms():
                raise ValueError(f"npconv.backends.conv.algorithm[{key!r}] must be one of {algorithms()}, "
                                 f"got {name!r}")
        return dict(value)
    raise TypeError(f"npconv.backends.conv.algorithm must be None, a str or a mapping of pass to str, "
                    f"got {type(value).__name__} {value!r}")


class ConvBackend:
    """Settings of the convolution planner (see the module docstring)."""

    def __init__(self) -> None:
        self._algorithm: str | dict[str, str] | None = None
        self.benchmark: bool = False
        #: (pass, x_shape, w_shape, geometry, dtype) -> fastest algorithm name, filled in benchmark mode
        self.benchmark_cache: dict[tuple, str] = {}

    @property
    def algorithm(self) -> str | dict[str, str] | None:
        return self._algorithm

    @algorithm.setter
    def algorithm(self, value: Any) -> None:
        self._algorithm = _check_algorithm(value)

    def forced(self, pass_name: str) -> str | None:
        """The algorithm forced for ``pass_name``, or None."""
        if isinstance(self._algorithm, dict):
            return self._algorithm.get(pass_name)
        return self._algorithm

    @contextlib.contextmanager
    def force(self, algorithm: str | Mapping[str, str] | None) -> Iterator[None]:
        """Context manager: force ``algorithm`` (a name, or a mapping pass -> name) inside the block."""
        previous = self._algorithm
        self.algorithm = algorithm
        try:
            yield
        finally:
            self._algorithm = previous

    def measuring(self) -> bool:
        """Whether the planner picks algorithms by timing them: ``benchmark`` on, and not
        :func:`use_deterministic_algorithms` (a timed choice can differ between runs, and with it the
        rounding of the results)."""
        return self.benchmark and not _state["deterministic"]

    def clear_cache(self) -> None:
        """Forget the benchmark mode's measured choices."""
        self.benchmark_cache.clear()

    def implementations(self) -> dict[str, str]:
        """Per registered algorithm, the implementation in use (``"numpy"``, ``"compiled"``) or
        ``"unavailable: <reason>"``."""
        active = registry.available()
        report = {}
        for name in registry.names():
            if name in active:
                report[name] = "compiled" if active[name].compiled else "numpy"
            else:
                report[name] = "unavailable: " + ("; ".join(registry.reasons(name)) or "NPCONV_PURE=1")
        return report


conv = ConvBackend()


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """torch's switch: with ``mode`` True the planner never picks an algorithm by timing it
    (``conv.benchmark`` is then ignored), so a call's results are bitwise the same in every run with
    the same thread count. npconv's kernels are deterministic either way (a fixed order of every sum
    for a given thread count); ``warn_only`` is kept for torch's API and changes nothing."""
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms expects a bool for mode, but got "
                        f"{type(mode).__name__}")
    if not isinstance(warn_only, bool):
        raise TypeError(f"use_deterministic_algorithms expects a bool for warn_only, but got "
                        f"{type(warn_only).__name__}")
    _state["deterministic"], _state["warn_only"] = mode, warn_only


def are_deterministic_algorithms_enabled() -> bool:
    return _state["deterministic"]


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    return _state["warn_only"]


class _CudnnSettings(ModuleType):
    """``npconv.backends.cudnn``: torch's cuDNN switches, so that a CPU program's setup lines
    (``torch.backends.cudnn.benchmark = True``, ``.deterministic = True``) run unchanged. cuDNN is
    CUDA-only: as on torch's CPU path the values change nothing (npconv's own timed choice is
    ``npconv.backends.conv.benchmark``)."""

    enabled = True
    benchmark = False
    deterministic = False
    allow_tf32 = True

    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def version() -> None:
        return None


class _MpsSettings(ModuleType):
    """``npconv.backends.mps``: Apple's Metal backend, never available (npconv runs on the CPU)."""

    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def is_built() -> bool:
        return False


cudnn = _CudnnSettings(f"{__name__}.cudnn")
mps = _MpsSettings(f"{__name__}.mps")
sys.modules.setdefault(cudnn.__name__, cudnn)  # `import torch.backends.cudnn as cudnn` works too
sys.modules.setdefault(mps.__name__, mps)


class CoreBackend:
    """The engine behind the kernels: npconv's compiled core (the C extension ``npconv._core``,
    one ISA variant chosen at import) or the NumPy engine (see the module docstring)."""

    def __init__(self, module: ModuleType | None, isa: str | None, reason: str | None) -> None:
        #: the extension module, or None on the NumPy engine
        self.module = module
        #: ISA variants the build has and this CPU runs, slowest first (empty on the NumPy engine)
        self.isas: tuple[str, ...] = tuple(module.available_isas()) if module is not None else ()
        self._isa = isa
        #: the variants' numbers in the extension's calls (every call reads one)
        self._indices = {name: i for i, name in enumerate(module.ISA_NAMES)} if module is not None else {}
        #: why the compiled core is not in use (None when it is)
        self.reason = reason

    @property
    def name(self) -> str:
        """``"compiled"`` or ``"numpy"``."""
        return "numpy" if self.module is None else "compiled"

    @property
    def available(self) -> bool:
        return self.module is not None

    @property
    def isa(self) -> str | None:
        """The ISA variant the compiled kernels run (None on the NumPy engine)."""
        return self._isa

    @isa.setter
    def isa(self, value: str) -> None:
        if self.module is None:
            raise ValueError(f"npconv.backends.core.isa cannot be set: the compiled core is not in use "
                             f"({self.reason})")
        if value not in self.isas:
            raise ValueError(f"npconv.backends.core.isa must be one of {self.isas} (the variants this CPU "
                             f"runs), got {value!r}")
        self._isa = value

    @property
    def isa_index(self) -> int:
        """The variant's number in the extension's calls."""
        assert self.module is not None and self._isa is not None
        return self._indices[self._isa]

    def __repr__(self) -> str:
        if self.module is None:
            return f"<npconv core: numpy ({self.reason})>"
        return f"<npconv core: compiled, isa={self._isa!r} of {self.isas}>"


#: The functions of ``npconv._core`` the Python side calls: an extension built from older sources (an
#: editable install after ``git pull``) lacks some, and is then not used.
CORE_FUNCTIONS = ("available_isas", "subnormal_operands", "depthwise2d_scratch", "depthwise2d_forward",
                  "depthwise2d_grad_input", "depthwise2d_grad_weight", "grouped2d_scratch",
                  "grouped2d_forward", "grouped2d_grad_weight", "max_pool2d_forward", "max_pool2d_backward",
                  "gemm", "gemm_conv_plan", "gemm_conv", "gemm_conv_job", "job_run", "job_post", "team_wait",
                  "team_post", "team_join", "jobs_share",
                  "job_chain", "jobs_check", "depthwise2d_forward_job", "depthwise2d_grad_input_job",
                  "grouped2d_forward_job", "winograd2d_forward_job", "relu_forward_job",
                  "relu_backward_job", "batch_norm_forward_job", "batch_norm_backward_job",
                  "depthwise2d_grad_weight_job", "grouped2d_grad_weight_job", "max_pool2d_forward_job",
                  "max_pool2d_backward_job", "winograd2d_weight_job",
                  "winograd2d_scratch", "winograd2d_weight",
                  "winograd2d_forward", "winograd3d_forward", "winograd3d_forward_job", "depthwise3d_forward",
                  "depthwise3d_forward_job", "depthwise3d_scratch",
                  "winograd3d_grad_weight", "winograd3d_grad_weight_job",
                  "winograd2d_grad_weight_scratch", "winograd2d_grad_weight",
                  "winograd2d_grad_weight_job", "winograd2d_grad_weight_finish",
                  "winograd2d_grad_weight_finish_job", "flag_wait", "flag_store", "batch_norm_forward",
                  "batch_norm_backward", "relu_forward", "relu_backward", "adjoint_kernel", "value_range",
                  "value_range_part", "value_range_part_job", "linear_rows", "linear_rows_job", "row_means",
                  "row_means_job", "spectral_mix", "spectral_mix_job", "spectral_mix_scratch", "add_arrays",
                  "add_arrays_job", "silu_forward", "silu_forward_job", "sigmoid_forward",
                  "sigmoid_forward_job", "silu_backward", "silu_backward_job", "sgd_step", "sgd_step_job",
                  "adam_step",
                  "adam_step_job", "ir_scratch", "ir_supported", "ir_forward",
                  "ir_forward_job")


def _load_core(environ: Mapping[str, str] = os.environ) -> CoreBackend:
    """The core chosen by the environment (one RuntimeWarning when the extension is missing or an
    ``NPCONV_ISA`` request cannot be honoured)."""
    if registry.pure(environ):
        return CoreBackend(None, None, f"NPCONV_PURE={environ['NPCONV_PURE']}")
    try:
        from . import _core
    except ImportError as error:
        try:
            built = importlib.util.find_spec(f"{__package__}._core") is not None
        except ImportError:
            built = False
        reason = (f"the compiled extension npconv._core failed to load ({error})" if built
                  else "the compiled extension npconv._core is not built")
        warnings.warn(f"npconv: {reason}; running on the slower NumPy engine. Reinstall with a C compiler "
                      f"(pip install -e .) or set NPCONV_PURE=1 to silence this.", RuntimeWarning,
                      stacklevel=3)
        return CoreBackend(None, None, reason)
    stale = [name for name in CORE_FUNCTIONS if not hasattr(_core, name)]
    if stale:
        reason = (f"the compiled extension npconv._core is older than its sources "
                  f"(it lacks {', '.join(stale)})")
        warnings.warn(f"npconv: {reason}; running on the slower NumPy engine. Rebuild it (pip install -e .) "
                      f"or set NPCONV_PURE=1 to silence this.", RuntimeWarning, stacklevel=3)
        return CoreBackend(None, None, reason)
    core = CoreBackend(_core, None, None)
    requested = environ.get("NPCONV_ISA", "")
    if requested and requested not in core.isas:
        known = "" if requested in _core.ISA_NAMES else f" (known variants: {_core.ISA_NAMES})"
        warnings.warn(f"npconv: NPCONV_ISA={requested!r} is not available on this CPU{known}; using "
                      f"{core.isas[-1]!r} from {core.isas}", RuntimeWarning, stacklevel=3)
        requested = ""
    core.isa = requested or core.isas[-1]
    return core


core = _load_core()


class MemoryBackend:
    """npconv's cache of freed array memory (the C extension ``npconv._arrays``, see the module
    docstring): inside module calls and backward passes, NumPy allocations of at least ``min_size``
    bytes reuse blocks that arrays freed earlier (the one freed last among those of the request's
    size up to 4x larger: the likeliest still in the CPU's cache), so a network's layers do not
    page-fault fresh memory on every call. A block is reused only after NumPy freed it (no array,
    view or buffer refers to it), so nothing a caller holds is ever overwritten."""

    def __init__(self, module: ModuleType | None, reason: str | None) -> None:
        #: the extension module, or None when the cache is not in use
        self.module = module
        #: why the cache is not in use (None when it is)
        self.reason = reason

    @property
    def available(self) -> bool:
        return self.module is not None

    def _stats(self) -> dict[str, int]:
        if self.module is None:
            return {"cached_bytes": 0, "blocks": 0, "hits": 0, "misses": 0, "limit": 0, "min_size": 0}
        return self.module.stats()

    @property
    def cache_limit(self) -> int:
        """Bytes of freed blocks the cache may hold (0: none; default 1 GiB, at most an eighth of the
        machine's memory)."""
        return self._stats()["limit"]

    @cache_limit.setter
    def cache_limit(self, value: int) -> None:
        self._configure("cache_limit", value, 0)

    @property
    def min_size(self) -> int:
        """Smallest block (bytes) the cache holds; smaller ones go to NumPy's own allocator."""
        return self._stats()["min_size"]

    @min_size.setter
    def min_size(self, value: int) -> None:
        self._configure("min_size", value, 1)

    def _configure(self, name: str, value: Any, lowest: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"npconv.backends.memory.{name} must be an int, got {type(value).__name__} "
                            f"{value!r}")
        if not lowest <= value <= 2**62:
            raise ValueError(f"npconv.backends.memory.{name} must be in [{lowest}, 2**62], got {value}")
        if self.module is None:
            raise ValueError(f"npconv.backends.memory.{name} cannot be set: the cache is not in use "
                             f"({self.reason})")
        limit, min_size = self.cache_limit, self.min_size
        self.module.configure(*((value, min_size) if name == "cache_limit" else (limit, value)))

    def cached_bytes(self) -> int:
        """Bytes of freed blocks held now."""
        return self._stats()["cached_bytes"]

    def stats(self) -> dict[str, int]:
        """``cached_bytes``, ``blocks``, ``hits`` / ``misses`` (allocations of at least ``min_size``
        served from the cache / by NumPy), ``limit``, ``min_size``."""
        return dict(self._stats())

    def empty_cache(self) -> None:
        """Give every held block back (like ``torch.cuda.empty_cache``)."""
        if self.module is not None:
            self.module.clear()

    def __repr__(self) -> str:
        if self.module is None:
            return f"<npconv memory cache: off ({self.reason})>"
        return f"<npconv memory cache: {self.cached_bytes()} of {self.cache_limit} bytes held>"


def _load_memory(environ: Mapping[str, str] = os.environ) -> MemoryBackend:
    if registry.pure(environ):
        return MemoryBackend(None, f"NPCONV_PURE={environ['NPCONV_PURE']}")
    try:
        from . import _arrays
    except ImportError as error:  # not built (the compiled core's warning covers a failed build)
        return MemoryBackend(None, f"the compiled extension npconv._arrays is not available ({error})")
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_arrays.after_fork_in_child)
    from . import autograd  # imports nothing from npconv: no cycle

    autograd.allocation_scope = (_arrays.enter, _arrays.restore)  # backward passes allocate through it
    _arrays.configure(_default_cache_limit(), 128 << 10)
    return MemoryBackend(_arrays, None)


def _default_cache_limit() -> int:
    """1 GiB, at most an eighth of the machine's memory (256 MiB when that is unknown): a ResNet-18
    training step at batch 16, 224 px, frees ~760 MB per step, all of it reused by the next."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 256 << 20
    return min(1 << 30, max(physical // 8, 0))


memory = _load_memory()
