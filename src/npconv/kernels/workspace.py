"""Per-thread scratch buffers and the worker pool that every kernel shares.

* :func:`buffer` hands out a cached per-thread array (contents undefined) that is reused across
  calls: fresh large allocations cost page faults on every call (performance findings, pitfall 2).
  A thread's buffers are owned by that thread (``threading.local``) and freed when it ends;
  :func:`clear` frees those of every live thread.
* :func:`run` spreads work items over Python threads with single-threaded BLAS (or runs them on the
  calling thread, with as many BLAS threads as asked for: one unless a kernel chose BLAS threads).
  With the compiled core, the worker threads are a :class:`_Team` that takes each call through flags
  it spins on for :data:`SPIN_SECONDS` (GIL released) before sleeping: waking a sleeping thread cost
  20-80 us per call, as much as a small convolution (docs/performance.md); without it (or while
  another thread's call holds the team) a ``ThreadPoolExecutor`` runs them.
* :func:`run_jobs` / :func:`run_calls` / :func:`run_spans` hand the workers prepared compiled-kernel
  calls (``_core`` jobs, each worker with its own scratch buffer), which a spinning worker runs inside
  its wait without taking the GIL: 6-8 us per call where a Python job, whose worker must take the GIL
  from the caller, cost 25-35 us.

Fork safety: a child process starts with no pool (its threads do not exist after ``fork``), fresh
locks and only the forking thread's buffers; the pool is re-created on the child's first
multithreaded call (``os.register_at_fork``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..backends import blas_threads, core, memory

__all__ = ["buffer", "clear", "run", "run_jobs", "run_spans", "bind_spans", "run_calls", "ranges",
           "shared_chunk", "SCRATCH", "cached_bytes", "SCRATCH_BYTES", "memory_bound"]

#: The constant term of the memory bound: scratch any pass may use beyond its operands.
SCRATCH_BYTES = 64 * 2**20
#: Seconds a worker thread spins for the next call (GIL released) before it sleeps; the calling
#: thread spins as long for its workers to finish. A network's consecutive layers call well within it.
#: 0: no spinning (a ``ThreadPoolExecutor`` hands the work over).
SPIN_SECONDS = 2e-4
#: After spinning, the calling thread checks its workers' done flags every this many seconds.
POLL_SECONDS = 2e-5
#: The GEMM's, Winograd's and the grouped kernel's forward and grad_input (whose work items write
#: disjoint outputs) share one item range among their workers (:func:`run_calls`' ``chunk``): each
#: claims runs of about ``items / (workers * CLAIMS_PER_WORKER)`` as it gets to them, so a worker that
#: wakes late or whose CPU the host gives to another process takes fewer (a fixed split waits for the
#: slowest). The depthwise kernel keeps fixed ranges (shared: 2-35% slower on its light items), and
#: so do calls under SHARED_MIN_MACS multiply-adds (sharing costs ~1.5 us a call: 3.5% of a 1x1
#: 64->384 14x14 batch-1 layer). False: every worker runs its fixed range (docs/performance.md,
#: "Shared item ranges").
SHARED_RANGES = True
SHARED_MIN_MACS = 32_000_000
CLAIMS_PER_WORKER = 4


def memory_bound(*arrays_bytes: int) -> int:
    """Peak extra bytes a convolution pass may allocate (its result included): twice its operands
    and result, ``2 * (a + b + result)``, plus :data:`SCRATCH_BYTES` (docs/performance.md)."""
    return 2 * sum(arrays_bytes) + SCRATCH_BYTES


#: Views a thread's cache keeps (of its scratch arrays, by name, shape and dtype).
_VIEWS_KEPT = 256


class _Cache:
    """One thread's named scratch arrays (weak-referenceable, so :func:`clear` can reach it)."""

    __slots__ = ("arrays", "views", "__weakref__")

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        #: ``(name, shape, dtype) -> view`` of ``arrays[name]`` last handed out (a call's views cost ~1 us)
        self.views: dict[tuple, np.ndarray] = {}


_local = threading.local()
#: The caches of the live threads; an entry disappears when its thread ends (its local is freed).
_caches: weakref.WeakSet[_Cache] = weakref.WeakSet()
_caches_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_workers = 0
_executor_lock = threading.Lock()
_team: _Team | None = None


def _thread_cache() -> _Cache:
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = _Cache()
        with _caches_lock:
            _caches.add(cache)
    return cache


#: Scratch buffers start at a multiple of this many bytes (one cache line, one AVX-512 vector): the
#: kernels' vectors at whole-vector offsets (packed panels, the lanes grid) are then one line each.
_ALIGN = 64


def buffer(name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A cached per-thread scratch array of ``shape`` and ``dtype`` (contents undefined), starting
    at a multiple of 64 bytes.

    The same ``name`` on the same thread returns (a view of) the same memory, so a kernel must not
    hold two live buffers of one name, nor return a buffer to its caller.
    """
    cache = _thread_cache()
    key = (name, tuple(shape), dtype)
    view = cache.views.get(key)
    if view is not None:
        return view
    dtype = np.dtype(dtype)
    arrays = cache.arrays
    nbytes = math.prod(shape) * dtype.itemsize
    raw = arrays.get(name)
    if raw is None or raw.nbytes - -raw.ctypes.data % _ALIGN < nbytes:
        for old in [k for k in cache.views if k[0] == name]:  # views of the old array go with it
            del cache.views[old]
        arrays.pop(name, None)  # free the old one before allocating the larger one
        raw = np.empty(-(-nbytes // 64) * 8 + _ALIGN // 8, np.float64)  # + room to align the start
        arrays[name] = raw
    if len(cache.views) >= _VIEWS_KEPT:  # shapes that vary call by call: start again
        cache.views.clear()
    start = -raw.ctypes.data % _ALIGN  # whole vectors never straddle two cache lines
    view = cache.views[key] = raw.view(np.uint8)[start:start + nbytes].view(dtype).reshape(shape)
    return view


def clear() -> None:
    """Free the cached scratch buffers of every thread."""
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.views.clear()
        cache.arrays.clear()


def cached_bytes() -> int:
    """Bytes of scratch currently cached by all live threads."""
    with _caches_lock:
        caches = list(_caches)
    return sum(raw.nbytes for cache in caches for raw in list(cache.arrays.values()))


def _worker_start() -> None:
    """A worker thread allocates through npconv's cache of freed array memory (its context starts
    without it: NumPy keeps the allocator per context)."""
    if memory.available:
        memory.module.enter()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_workers
    with _executor_lock:
        if _executor is None or _executor_workers < workers:
            if _executor is not None:
                _executor.shutdown(wait=True)
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="npconv",
                                           initializer=_worker_start)
            _executor_workers = workers
        return _executor


#: int64 flags per cache-line pair: every flag on lines of its own.
_STRIDE = 16


class _Team:
    """``workers`` daemon threads taking calls from one caller at a time (:attr:`busy`).

    Worker ``k`` (1-based) waits for its post flag to change (``core.flag_wait``: a spin with the GIL
    released for :data:`SPIN_SECONDS`, then a sleep on :attr:`posted`, checked under its lock after
    the caller stored the flag: no lost wake-up), runs ``jobs[k]`` and reports the call's number in
    its done flag from its next wait, with the GIL released (the caller then takes the GIL without
    waiting for it). The caller spins, then polls, for every done flag. A prepared job is claimed first
    (its claim flag, next to the slot): after its own, the caller of :meth:`run_compiled` runs every job
    whose worker has not claimed it yet (``team_join``), so a worker asleep or off its CPU delays a call
    by at most the job it already started.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.flags = np.zeros(2 * (workers + 1) * _STRIDE, np.int64)
        self.jobs: list[Callable[[], None] | None] = [None] * (workers + 1)
        self.errors: list[BaseException | None] = [None] * (workers + 1)
        self.calls = 0
        self.busy = threading.Lock()
        self.stopped = False  # set under busy by stop(): a caller that took busy afterwards must not post
        self.posted = threading.Condition(threading.Lock())
        self.asleep = [False] * (workers + 1)
        for k in range(1, workers + 1):
            threading.Thread(target=self._serve, args=(k,), name=f"npconv-{k}", daemon=True).start()

    def _serve(self, k: int) -> None:
        _worker_start()
        wait, flags = core.module.team_wait, self.flags
        post, done = 2 * k * _STRIDE, (2 * k + 1) * _STRIDE
        seen, report = 0, False
        while True:  # compiled jobs run inside wait(); it returns for Python jobs, stops and sleeps
            value, fresh = wait(flags, post, done, post + 1, post + 2, seen, SPIN_SECONDS, report)
            report = False
            if not fresh:
                seen = value
                with self.posted:
                    self.asleep[k] = True
                    while int(flags[post]) == seen:
                        self.posted.wait()
                    self.asleep[k] = False
                continue  # the post goes back to team_wait: a compiled job runs there, without the GIL
            seen = value
            if seen < 0:
                return
            job, self.jobs[k] = self.jobs[k], None
            try:
                job()
            except BaseException as error:  # handed to the caller
                self.errors[k] = error
            report = True

    def run(self, jobs: list[Callable[[], None]], compiled: list[Any] | None = None) -> None:
        """``jobs[0]()`` on the calling thread, ``jobs[k]()`` on worker ``k``; re-raises the first error.
        ``compiled[k]`` (a prepared ``_core`` job, whose ``job_run`` ``jobs[k]`` is): worker ``k`` runs
        it in its wait loop without taking the GIL."""
        self.calls += 1
        call, used = self.calls, range(1, len(jobs))
        for k in used:
            self.jobs[k] = jobs[k]
            post = 2 * k * _STRIDE
            core.module.job_post(self.flags, post, post + 1, call, None if compiled is None else compiled[k])
        with self.posted:
            if any(self.asleep[k] for k in used):
                self.posted.notify_all()
        try:
            jobs[0]()
        finally:  # every worker finished before the call returns or raises; their errors are this call's
            for k in used:
                done = (2 * k + 1) * _STRIDE
                # a worker reports an earlier call late where team_join took its job: wait for this one's
                while (seen := int(self.flags[done])) != call:
                    core.module.flag_wait(self.flags, done, seen, SPIN_SECONDS, -1, 0, POLL_SECONDS)
                self.jobs[k] = None  # a job the worker ran in C left its Python form here
            errors = [e for e in self.errors if e is not None]
            self.errors = [None] * (self.workers + 1)
        if errors:
            raise errors[0]

    def run_compiled(self, jobs: list[Any]) -> None:
        """Prepared ``_core`` jobs: ``jobs[0]`` on the calling thread, ``jobs[k]`` in worker ``k``'s wait
        loop; one C call posts them (``team_post``), one runs the caller's and waits for the rest
        (``team_join``, which also raises ``MemoryError`` for a job whose own allocation failed)."""
        self.calls += 1
        call = self.calls
        core.module.team_post(self.flags, jobs, call, _STRIDE)
        # asleep[k] is set under the GIL before the worker reads its post flag again: if it reads False
        # here (after the post), that worker will see the post; if True, it waits on the condition
        if True in self.asleep:
            with self.posted:
                self.posted.notify_all()
        core.module.team_join(self.flags, jobs, call, _STRIDE, SPIN_SECONDS, POLL_SECONDS)

    def claim(self) -> bool:
        """Take :attr:`busy` without waiting, for a call on a running team (False: busy or stopped)."""
        if not self.busy.acquire(blocking=False):
            return False
        if self.stopped:  # replaced by a larger team after the caller found it
            self.busy.release()
            return False
        return True

    def stop(self) -> None:
        self.stopped = True
        for k in range(1, self.workers + 1):
            core.module.job_post(self.flags, 2 * k * _STRIDE, 2 * k * _STRIDE + 1, -1, None)
        with self.posted:
            self.posted.notify_all()


def _team_of(workers: int) -> _Team | None:
    """The team of at least ``workers`` threads (None without the compiled core)."""
    global _team
    team = _team
    if team is not None and team.workers >= workers:  # the common case, without the lock
        return team
    if not core.available:
        return None
    with _executor_lock:
        if _team is None or _team.workers < workers:
            if _team is not None:
                with _team.busy:
                    _team.stop()
            _team = _Team(workers)
        return _team


def _after_fork_in_child() -> None:
    """The child has only the forking thread: forget the parent's pool (its threads are gone) and
    replace the locks (another thread may have held them at the fork)."""
    global _executor, _executor_workers, _executor_lock, _caches_lock, _caches, _team
    _executor, _executor_workers, _team = None, 0, None
    _executor_lock = threading.Lock()
    _caches_lock = threading.Lock()
    own = getattr(_local, "cache", None)
    _caches = weakref.WeakSet([own] if own is not None else [])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(items: list[Any], work: Callable[[int, Any], None], threads: int, blas: int = 1) -> None:
    """Call ``work(worker_id, item)`` for every item on ``threads`` workers (worker 0 is the caller).

    Worker ``k`` takes items ``k, k + threads, ...`` in order: a fixed assignment, so per-worker
    accumulations (``grad_weight``) sum the same terms in the same order on every run. Every worker
    runs single-threaded BLAS; with one worker, BLAS gets ``blas`` threads (default 1: OpenBLAS's
    pool keeps spinning for ~2**28 cycles after a multithreaded call and takes a core from the
    worker threads of the next call, which cost a CIFAR-style network 1.35-1.6x; see
    ``docs/performance.md``). ``blas=0``: the work calls no BLAS, whose thread count is left alone
    (setting and restoring it costs ~5 us per run).
    """
    threads = max(1, min(threads, len(items)))
    context = contextlib.nullcontext() if blas == 0 else blas_threads(blas if threads == 1 else 1)

    def worker(worker_id: int) -> None:
        for item in items[worker_id::threads]:
            work(worker_id, item)

    with context:
        if threads == 1:
            worker(0)
            return
        team = _team_of(threads - 1) if SPIN_SECONDS > 0 else None
        if team is not None and team.claim():
            try:
                team.run([functools.partial(worker, k) for k in range(threads)])
            finally:
                team.busy.release()
            return
        futures = [_pool(threads - 1).submit(worker, k) for k in range(1, threads)]
        try:
            worker(0)
        finally:
            for future in futures:
                future.result()



def run_jobs(jobs: list[Any], blas: int = 0, chunk: int = 0) -> None:
    """Run prepared ``_core`` jobs (e.g. ``gemm_conv_job``): ``jobs[0]`` on the calling thread, ``jobs[k]``
    on worker ``k``, which runs it without taking the GIL (a worker that must take the GIL from the
    caller sleeps on it: 25-35 us per call). ``blas`` as in :func:`run` (0: the jobs call no BLAS).
    ``chunk`` > 0: the jobs (prepared over one item range) share that range, each claiming ``chunk``
    items at a time (the core's ``jobs_share``)."""
    counter = np.zeros(1, np.int64) if chunk and len(jobs) > 1 else None  # alive until the jobs ran
    if counter is not None:
        core.module.jobs_share(jobs, counter, chunk)
    if blas:
        with blas_threads(blas if len(jobs) == 1 else 1):
            _run_jobs(jobs)
    else:
        _run_jobs(jobs)


def bind_calls(kernel: Callable[..., None], calls: list[tuple[tuple, int | None, tuple]], scratch: str,
               dtype: np.dtype | type, source: Callable[[str, int, np.dtype], np.ndarray], blas: int = 0,
               chunk: int = 0) -> Callable[[], None]:
    """:func:`run_calls`'s calls prepared once as jobs: returns ``run()``, which runs them as
    :func:`run_calls` would (``calls``, ``blas`` and ``chunk`` as there). Worker ``k``'s scratch is
    ``source("<scratch>-k", elements, dtype)``, owned by the caller: any thread may run the jobs, so they
    must not hold a thread cache's buffer. The jobs keep their arrays alive and use the ISA variant
    active now."""
    isa, prepare, dtype = core.isa_index, _job_binding(kernel), np.dtype(dtype)
    jobs = []
    for k, (head, elements, tail) in enumerate(calls):
        own = () if elements is None else (source(scratch_name(scratch, k), elements, dtype),)
        jobs.append(prepare(isa, *head, *own, *tail))
    return prepared_run(jobs, blas, chunk)


def prepared_run(jobs: list[Any], blas: int = 0, chunk: int = 0) -> Callable[[], None]:
    """``run()`` running the prepared jobs as :func:`run_jobs` (``jobs``, ``blas``, ``chunk`` as there)
    would, any number of times (a shared range starts again on each run)."""
    if len(jobs) == 1 and blas == 0:
        job, job_run = jobs[0], core.module.job_run
        return lambda: job_run(job)
    counter = np.zeros(1, np.int64) if chunk and len(jobs) > 1 else None
    if counter is None:
        return lambda: run_jobs(jobs, blas)
    core.module.jobs_share(jobs, counter, chunk)
    start = int(counter[0])

    def run() -> None:
        counter[0] = start  # the jobs claim their items from it
        run_jobs(jobs, blas)

    return run


def _run_jobs(jobs: list[Any]) -> None:
    threads = len(jobs)
    if threads == 1:
        core.module.job_run(jobs[0])
        return
    team = _team_of(threads - 1) if SPIN_SECONDS > 0 else None
    if team is not None and team.claim():
        try:
            team.run_compiled(jobs)  # checks the jobs' allocations itself
        finally:
            team.busy.release()
        return
    calls = [functools.partial(core.module.job_run, job) for job in jobs]
    futures = [_pool(threads - 1).submit(call) for call in calls[1:]]
    try:
        calls[0]()
    finally:
        for future in futures:
            future.result()
    core.module.jobs_check(jobs)  # a worker's job reports a failed allocation only here


#: Stands in ``run_spans``'s ``args`` for each worker's own scratch buffer.
SCRATCH = object()


def ranges(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` items in ``parts`` near-equal contiguous ranges (none empty)."""
    parts = max(1, min(parts, count))
    bounds = [count * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def shared_chunk(items: int, workers: int, macs: int) -> int:
    """Items per claim of a call of ``macs`` multiply-adds whose ``items`` are shared by ``workers``
    (:data:`CLAIMS_PER_WORKER`); 0 (a fixed split) with one worker, under :data:`SHARED_MIN_MACS` or
    with :data:`SHARED_RANGES` off."""
    if workers < 2 or not SHARED_RANGES or macs < SHARED_MIN_MACS:
        return 0
    return -(-items // (workers * CLAIMS_PER_WORKER))


def run_spans(kernel: Callable[..., None], args: tuple, spans: list[tuple[int, ...]], tail: tuple = (),
              scratch: tuple[str, int, np.dtype] | None = None) -> None:
    """``kernel(isa, *args, start, stop, *tail)`` of the compiled core per span, span ``k`` on worker
    ``k`` (:func:`run_calls`). ``scratch`` ``(name, elements, dtype)``: worker ``k``'s buffer
    ``name-k`` replaces :data:`SCRATCH` in ``args``. The kernels call no BLAS."""
    calls, name = span_calls(args, spans, tail, scratch)
    run_calls(kernel, calls, name, np.float64 if scratch is None else scratch[2])


def bind_spans(kernel: Callable[..., None], args: tuple, spans: list[tuple[int, ...]]) -> Callable[[], None]:
    """:func:`run_spans` (no scratch) prepared once on its arrays: ``run()`` runs the calls again."""
    calls, _ = span_calls(args, spans)
    return bind_calls(kernel, calls, "", np.float64, _no_scratch)


def _no_scratch(name: str, elements: int, dtype: np.dtype) -> np.ndarray:
    raise AssertionError(f"bind_spans: the kernel asked for scratch {name!r}")


def span_calls(args: tuple, spans: list[tuple[int, ...]], tail: tuple = (),
               scratch: tuple[str, int, np.dtype] | None = None
               ) -> tuple[list[tuple[tuple, int | None, tuple]], str]:
    """:func:`run_spans`'s ``(calls, scratch name)`` for :func:`run_calls` (or :func:`bind_calls`)."""
    at = next((i for i, a in enumerate(args) if a is SCRATCH), -1) if scratch is not None else -1
    if at < 0:
        return [(args + span + tail, None, ()) for span in spans], ""
    name, elements, _ = scratch
    return [(args[:at], elements, args[at + 1:] + span + tail) for span in spans], name


def run_calls(kernel: Callable[..., None], calls: list[tuple[tuple, int | None, tuple]], scratch: str = "",
              dtype: np.dtype | type = np.float64, blas: int = 0, chunk: int = 0) -> None:
    """``kernel(isa, *head, own, *tail)`` of the compiled core for each ``(head, elements, tail)`` of
    ``calls``, call ``k`` on worker ``k`` as a prepared job (the core's ``<kernel>_job``: the workers
    take them without the GIL), ``own`` worker ``k``'s scratch buffer ``<scratch>-k`` of ``elements``
    ``dtype`` values (left out where ``elements`` is None). A single call without BLAS (``blas`` as in
    :func:`run_jobs`) runs on the calling thread, without a job. ``chunk`` > 0: the calls (equal but
    for the scratch, over one item range) share that range, each worker claiming ``chunk`` items at a
    time (:func:`run_jobs`)."""
    isa = core.isa_index  # read per call: the variant may be switched between a plan's calls
    if len(calls) == 1 and blas == 0:
        kernel(*_arguments(isa, 0, *calls[0], scratch, dtype))
        return
    prepare = _job_binding(kernel)
    run_jobs([prepare(*_arguments(isa, k, *call, scratch, dtype)) for k, call in enumerate(calls)], blas,
             chunk)


def _arguments(isa: int, k: int, head: tuple, elements: int | None, tail: tuple, scratch: str,
               dtype: np.dtype | type) -> tuple:
    """Worker ``k``'s call of :func:`run_calls`: ``(isa, *head, own scratch, *tail)``, no scratch where
    ``elements`` is None (a module function: a closure made per call cost more than its calls)."""
    if elements is None:
        return (isa, *head, *tail)
    return (isa, *head, buffer(scratch_name(scratch, k), (elements,), dtype), *tail)


@functools.cache
def _job_binding(kernel: Callable[..., None]) -> Callable[..., Any]:
    """The core's ``<kernel>_job`` twin of a kernel binding (prepares the same call as a job)."""
    return getattr(core.module, f"{kernel.__name__}_job")


@functools.lru_cache(maxsize=1024)
def scratch_name(prefix: str, worker: int) -> str:
    """Worker ``worker``'s scratch buffer name ``<prefix>-<worker>`` (made once, not per call)."""
    return f"{prefix}-{worker}"
