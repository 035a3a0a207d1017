"""Threads and processes: the worker pool survives ``fork`` (a child convolves after the parent
ran a multithreaded convolution) and the scratch of a thread is freed when the thread ends."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queue_module
import threading

import numpy as np
import pytest

import npconv
from kernel_checks import direct_conv
from npconv import autograd
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm, gemm, plan, workspace

needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="needs the 'fork' start method")


def _operands(seed: int = 0):
    rng = np.random.default_rng(seed)
    # above gemm.WORKER_MIN_MACS, so the call runs on the worker pool
    x = rng.standard_normal((4, 16, 40, 40))
    w = rng.standard_normal((32, 16, 3, 3))
    return x, w, ConvGeometry.create(3, 1, 1, ndim=2)


def _convolve_into(queue, x, w, geom) -> None:
    try:
        queue.put(("ok", plan.forward(x, w, geom)))
    except BaseException as error:  # report instead of dying silently
        queue.put(("error", repr(error)))


@needs_fork
@pytest.mark.parametrize("algorithm", ["gemm", "fft"])
def test_forked_child_convolves_after_a_multithreaded_parent(two_threads, algorithm):
    x, w, geom = _operands()
    with npconv.backends.conv.force(algorithm):
        plan.forward(x, w, geom)  # starts the worker pool (and scipy.fft's) in the parent
        assert workspace._executor is not None or workspace._team is not None or algorithm == "fft"
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_convolve_into, args=(queue, x, w, geom))
        child.start()
        try:  # read before joining: a child exits only once its queued result is consumed
            status, y = queue.get(timeout=60)
        except queue_module.Empty:
            status, y = "hung", "the forked child hung on the parent's worker pool"
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
    assert status == "ok", y
    np.testing.assert_allclose(y, direct_conv(x, w, padding=1), rtol=1e-10, atol=1e-10)


@needs_fork
def test_child_pool_and_locks_are_fresh(two_threads):
    """In the child the parent's pool is forgotten and the locks are new: free even though a
    parent thread held them at the fork."""
    x, w, geom = _operands()
    plan.forward(x, w, geom)
    parent_pool = workspace._team if npconv.backends.core.available else workspace._executor
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def child() -> None:
        locks = (workspace._executor_lock, workspace._caches_lock, algorithm._lock, autograd._accumulate_lock)
        fresh = workspace._executor is None and workspace._team is None
        queue.put((fresh, [lock.acquire(blocking=False) for lock in locks]))

    held = threading.Event()
    release = threading.Event()

    def holder() -> None:  # another thread holds every lock while the main thread forks
        with workspace._executor_lock, workspace._caches_lock, algorithm._lock, autograd._accumulate_lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    try:
        process = context.Process(target=child)
        process.start()
    finally:
        release.set()
        thread.join()
    result = queue.get(timeout=60)
    process.join(timeout=10)
    assert parent_pool is not None
    assert result == (True, [True, True, True, True])


def test_scratch_of_an_ended_thread_is_freed():
    previous = npconv.get_num_threads()
    npconv.set_num_threads(1)  # every thread convolves on itself: its scratch is its own
    try:
        gemm.clear_workspace()
        rng = np.random.default_rng(1)
        x = rng.standard_normal((1, 8, 64, 64))
        w = rng.standard_normal((8, 8, 3, 3))
        geom = ConvGeometry.create(3, 1, 1, ndim=2)
        expected = direct_conv(x, w, padding=1)
        results, sizes = [], []

        def work() -> None:
            results.append(plan.forward(x, w, geom))
            sizes.append(workspace.cached_bytes())

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
            thread.join()
        assert min(sizes) > 0  # each thread held scratch while it lived
        assert workspace.cached_bytes() == 0
        for y in results:
            np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    finally:
        npconv.set_num_threads(previous)


def test_clear_frees_the_scratch_of_every_live_thread():
    previous = npconv.get_num_threads()
    npconv.set_num_threads(1)
    try:
        started, release = threading.Event(), threading.Event()

        def hold() -> None:
            workspace.buffer("held", (1 << 20,), np.float64)
            started.set()
            release.wait(30)

        thread = threading.Thread(target=hold)
        thread.start()
        started.wait(30)
        assert workspace.cached_bytes() >= 8 << 20
        workspace.clear()
        assert workspace.cached_bytes() == 0
        release.set()
        thread.join()
    finally:
        npconv.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("blas", [0, 1])
def test_run_assigns_items_to_workers_and_sets_blas_threads_only_when_asked(threads, blas, two_threads,
                                                                             monkeypatch):
    """Worker k takes items k, k + threads, ...; ``blas=0`` (work without BLAS) leaves the BLAS
    thread count alone, otherwise the workers run with one BLAS thread."""
    from npconv import backends

    entered = []

    @contextlib.contextmanager
    def recording(n):
        entered.append(n)
        yield

    monkeypatch.setattr(workspace, "blas_threads", recording)
    seen: dict[int, list[int]] = {}
    lock = threading.Lock()

    def work(worker: int, item: int) -> None:
        with lock:
            seen.setdefault(worker, []).append(item)

    workspace.run(list(range(7)), work, threads, blas=blas)
    used = min(threads, 7)
    assert seen == {k: list(range(k, 7, used)) for k in range(used)}
    assert entered == ([] if blas == 0 else [1])
    assert backends.get_num_threads() == 2


needs_core = pytest.mark.skipif(not npconv.backends.core.available, reason="the compiled core is not built")


@needs_core
@pytest.mark.parametrize("spin", [1e-6, 0.05])
def test_team_wakes_sleeping_workers_and_reraises_their_errors(spin, monkeypatch):
    """Workers that stopped spinning (a pause longer than SPIN_SECONDS) are woken by the next call; an
    error in a worker's item reaches the caller after every worker finished; the team keeps serving."""
    import time

    monkeypatch.setattr(workspace, "SPIN_SECONDS", spin)
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(worker: int, item: int) -> None:
        if item == 5:
            raise ValueError("item 5")
        with lock:
            seen.append((worker, item))

    def calls() -> None:
        for _ in range(3):
            seen.clear()
            workspace.run([0, 1, 2, 3], work, 2, blas=0)
            assert sorted(seen) == [(0, 0), (0, 2), (1, 1), (1, 3)]
            time.sleep(0.01)  # longer than the short spin: the workers go to sleep
        with pytest.raises(ValueError, match="item 5"):
            workspace.run([0, 1, 2, 5], work, 2, blas=0)
        with pytest.raises(ValueError, match="item 5"):  # both raise: the caller's, the worker's dropped
            workspace.run([5, 5], work, 2, blas=0)
        seen.clear()
        workspace.run([0, 1], work, 2, blas=0)
        assert sorted(seen) == [(0, 0), (1, 1)]
        finished.set()

    finished = threading.Event()
    thread = threading.Thread(target=calls, daemon=True)  # a lost wake-up hangs it, not the suite
    thread.start()
    thread.join(30)
    assert finished.is_set(), "a call on the team did not finish (lost wake-up?)"


@needs_core
def test_concurrent_callers_share_the_workers():
    """Calls from several threads at once: one holds the team, the others run on the executor."""
    results: dict[int, list[int]] = {}

    def caller(index: int) -> None:
        out = [0] * 64

        def work(_: int, item: int) -> None:
            out[item] = item * index

        for _ in range(20):
            workspace.run(list(range(64)), work, 3, blas=0)
        results[index] = out

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {i: [item * i for item in range(64)] for i in range(1, 5)}


@needs_core
def test_flag_bindings_check_their_buffer():
    core = npconv.backends.core.module
    flags = np.zeros(4, np.int64)
    core.flag_store(flags, 2, 7)
    assert flags.tolist() == [0, 0, 7, 0]
    assert core.flag_wait(flags, 2, 0, 0.0) == 7  # differs already
    assert core.flag_wait(flags, 2, 7, 1e-4) == 7  # spins, then gives up
    assert core.flag_wait(flags, 1, 0, 1e-4, 3, 9) == 0 and flags[3] == 9  # stores first
    with pytest.raises(TypeError, match="int64"):
        core.flag_wait(np.zeros(4, np.float64), 0, 0, 0.0)
    with pytest.raises(ValueError, match="outside"):
        core.flag_store(flags, 4, 1)
    with pytest.raises(ValueError, match="outside"):
        core.flag_wait(flags, 0, 1, 0.0, 4, 1)


def _gemm_job(seed: int = 0):
    """A prepared gemm_conv forward (3x3, padding 1, 1x2x5x5 -> 1x3x5x5) and its expected output."""
    from npconv.kernels.blas import gemm_routines

    core = npconv.backends.core.module
    geometry = (1, 2, 3, 1, 1, 5, 5, 1, 5, 5, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 25, 1, 1, 0, 0)
    size, items = core.gemm_conv_plan(0, geometry)
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    y, scratch = np.zeros((1, 3, 5, 5)), np.zeros(size)
    job = core.gemm_conv_job(npconv.backends.core.isa_index, 0, gemm_routines(), x, w, None, y, scratch,
                             geometry, 0, items, 0, 0.0, 0.0)
    return job, y, direct_conv(x, w, padding=1)


@needs_core
def test_team_wait_runs_posted_jobs_without_returning():
    """A worker's wait runs every posted job in C and reports it done; a post without a job, or a stop,
    returns to Python; bad arguments are refused before anything runs."""
    core = npconv.backends.core.module
    job, y, expected = _gemm_job()
    flags = np.zeros(4, np.int64)  # post 0, slot 1, done 2, claim 3
    core.job_post(flags, 0, 1, 5, job)
    assert flags[0] == 5 and flags[1] != 0
    assert core.team_wait(flags, 0, 2, 1, 3, 0, 1e-4, False) == (5, 0)  # ran it, then spun without a post
    assert flags[2] == 5 and flags[3] == 5
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    y[...] = 0.0
    core.job_post(flags, 0, 1, 6, None)  # a Python job: handed back, nothing run
    assert core.team_wait(flags, 0, 2, 1, 3, 5, 1e-4, False) == (6, 1) and flags[1] == 0 and flags[2] == 5
    assert core.team_wait(flags, 0, 2, 1, 3, 6, 0.0, True) == (6, 0) and flags[2] == 6  # reports first
    core.job_post(flags, 0, 1, 7, job)  # claimed already (a caller took it): reported done, not run
    flags[3] = 7
    assert core.team_wait(flags, 0, 2, 1, 3, 6, 1e-4, False) == (7, 0) and flags[2] == 7 and (y == 0.0).all()
    core.job_post(flags, 0, 1, -1, job)  # a stop is never run as a job
    assert core.team_wait(flags, 0, 2, 1, 3, 7, 1e-4, False) == (-1, 1) and (y == 0.0).all()
    core.job_run(job)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="job"):
        core.job_run(object())
    with pytest.raises(TypeError, match="job"):
        core.job_post(flags, 0, 1, 7, "not a job")
    with pytest.raises(ValueError, match="distinct"):
        core.job_post(flags, 1, 1, 7, None)
    with pytest.raises(ValueError, match="distinct"):
        core.team_wait(flags, 0, 0, 1, 3, 0, 0.0, False)
    with pytest.raises(ValueError, match="distinct"):
        core.team_wait(flags, 0, 2, 1, 1, 0, 0.0, False)
    with pytest.raises(ValueError, match="outside"):
        core.team_wait(flags, 0, 2, 1, 4, 0, 0.0, False)
    assert flags.tolist() == [-1, int(flags[1]), 7, 7]


@needs_core
def test_team_post_and_join_run_each_job_once_on_its_worker():
    """team_post puts jobs[k] in worker k's slot and posts the call number; team_join runs jobs[0] on
    the caller and returns only once every worker reported that call done; bad arguments are refused
    before anything is posted."""
    core = npconv.backends.core.module
    stride = 4
    flags = np.zeros(2 * 3 * stride, np.int64)  # workers 1 and 2: post 2k * stride, done (2k + 1) * stride
    made = [_gemm_job(seed) for seed in range(3)]
    jobs = [job for job, _, _ in made]
    for bad, error in (([jobs[0]], ValueError), ([jobs[0], "x"], TypeError)):
        with pytest.raises(error):
            core.team_post(flags, bad, 1, stride)
        with pytest.raises(error):
            core.team_join(flags, bad, 1, stride, 0.0, 1e-5)
    with pytest.raises(ValueError, match="stride"):
        core.team_post(flags, jobs, 1, 1)
    with pytest.raises(ValueError, match="outside"):  # too few flags for three workers
        core.team_post(np.zeros(5 * stride, np.int64), jobs, 1, stride)  # worker 2 done at 5 * stride
    assert not flags.any()
    returned: list[tuple[int, int]] = []

    def worker(k: int) -> None:  # as a team's worker: runs its posted job in team_wait, reports it done
        post = 2 * k * stride
        returned.append(core.team_wait(flags, post, post + stride, post + 1, post + 2, 0, 0.5, False))

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2)]
    for thread in threads:
        thread.start()
    core.team_post(flags, jobs, 7, stride)
    assert flags[2 * stride] == 7 and flags[4 * stride] == 7 and flags[0] == 0  # not the caller's own
    core.team_join(flags, jobs, 7, stride, 1e-3, 1e-5)
    for _, y, expected in made:  # every job ran before team_join returned (on its worker or taken here)
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    for thread in threads:
        thread.join(10)
    assert flags[3 * stride] == 7 and flags[5 * stride] == 7  # each worker reported the call
    assert flags[2 * stride + 2] == 7 and flags[4 * stride + 2] == 7  # and each job was claimed once
    assert returned == [(7, 0), (7, 0)]  # each handled its post in C and then spun out without another


@needs_core
def test_team_join_runs_the_jobs_no_worker_claimed_and_a_late_worker_skips_them():
    """With no worker running (asleep, or its CPU given to another process), team_join runs the posted
    jobs itself instead of waiting; a worker that sees the post afterwards finds the job claimed, does not
    run it again and reports the call done."""
    core = npconv.backends.core.module
    stride = 4
    flags = np.zeros(2 * 3 * stride, np.int64)
    made = [_gemm_job(seed) for seed in range(3)]
    jobs = [job for job, _, _ in made]
    core.team_post(flags, jobs, 3, stride)
    caller = threading.Thread(target=core.team_join, args=(flags, jobs, 3, stride, 1e-4, 1e-5), daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive()  # it returned: nobody else would have run jobs 1 and 2
    for _, y, expected in made:
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
        y[...] = 0.0
    assert flags[2 * stride + 2] == 3 and flags[4 * stride + 2] == 3 and flags[3 * stride] == 0
    post = 2 * stride  # worker 1, late
    assert core.team_wait(flags, post, post + stride, post + 1, post + 2, 0, 1e-4, False) == (3, 0)
    assert flags[3 * stride] == 3 and not made[1][1].any()  # reported, not run again


@needs_core
@pytest.mark.parametrize("spin", [1e-6, 0.05])
def test_team_runs_compiled_and_python_jobs_in_turn(spin, monkeypatch):
    """Prepared jobs (run by the workers without the GIL) and Python jobs alternate on one team, with
    workers spinning or asleep: each runs once, on its worker, and the slot of a finished job never
    runs again."""
    import time

    monkeypatch.setattr(workspace, "SPIN_SECONDS", spin)
    seen: list[int] = []

    def calls() -> None:
        for round_ in range(4):
            jobs = [_gemm_job(seed) for seed in range(3)]
            workspace.run_jobs([job for job, _, _ in jobs])
            for _, y, expected in jobs:
                np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
            seen.clear()
            workspace.run([0, 1, 2], lambda worker, item: seen.append(worker * 10 + item), 3, blas=0)
            assert sorted(seen) == [0, 11, 22]
            if round_ % 2:
                time.sleep(0.01)  # the workers go to sleep (short spin)
        finished.set()

    finished = threading.Event()
    thread = threading.Thread(target=calls, daemon=True)
    thread.start()
    thread.join(30)
    assert finished.is_set(), "a call on the team did not finish (lost wake-up?)"


@needs_core
def test_job_bindings_check_like_their_calls():
    """Every ``<kernel>_job`` binding parses and checks exactly as its kernel's call: a refused call
    prepares nothing; chains and checks take jobs only."""
    core = npconv.backends.core.module
    names = [name for name in npconv.backends.CORE_FUNCTIONS if name.endswith("_job")]
    assert len(names) >= 12
    for name in names:
        with pytest.raises(TypeError):
            getattr(core, name)()
        assert hasattr(core, name[: -len("_job")]), name
    job, y, expected = _gemm_job()
    chained = core.job_chain([job, job])
    core.job_run(chained)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    core.jobs_check([job, chained])
    with pytest.raises(TypeError, match="job"):
        core.job_chain([job, 3])
    with pytest.raises(TypeError, match="job"):
        core.jobs_check([job, "x"])
    with pytest.raises(ValueError, match="range"):  # the same checks as gemm_conv's: range past the items
        from npconv.kernels.blas import gemm_routines

        geometry = (1, 2, 3, 1, 1, 5, 5, 1, 5, 5, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 25, 1, 1, 0, 0)
        size, items = core.gemm_conv_plan(0, geometry)
        core.gemm_conv_job(npconv.backends.core.isa_index, 0, gemm_routines(), np.zeros((1, 2, 5, 5)),
                           np.zeros((3, 2, 3, 3)), None, np.zeros((1, 3, 5, 5)), np.zeros(size), geometry, 0,
                           items + 1, 0, 0.0, 0.0)


@needs_core
@pytest.mark.parametrize("shared", [False, True], ids=["fixed", "shared"])
def test_concurrent_callers_of_compiled_jobs(two_threads, monkeypatch, shared):
    """Callers on several threads at once run prepared jobs: one holds the team (its workers run the
    jobs without the GIL), the others the executor; every result is right and scratch is per caller.
    Shared item ranges: each call's jobs claim from that call's own counter, on the team or not."""
    compiled_gemm = pytest.importorskip("npconv.kernels.compiled_gemm")
    monkeypatch.setattr(compiled_gemm, "WORKER_MIN_MACS", 0)
    monkeypatch.setattr(workspace, "SHARED_RANGES", shared)
    monkeypatch.setattr(workspace, "SHARED_MIN_MACS", 0)
    x, w, geom = _operands()
    x, w = x.astype(np.float32), w.astype(np.float32)
    expected = direct_conv(x.astype(np.float64), w.astype(np.float64), padding=1)
    errors: list[float] = []

    def caller(seed: int) -> None:
        scale = np.float32(seed + 1)
        for _ in range(10):
            y = compiled_gemm.forward(x * scale, w, geom)
            errors.append(float(np.abs(y - scale * expected).max() / (scale * np.abs(expected).max())))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(errors) == 40 and max(errors) < 1e-5


def test_scratch_buffers_reuse_their_memory_and_views(monkeypatch):
    """``buffer`` hands out the thread's array of a name as the view asked for (kept per name, shape
    and dtype); a larger request replaces the array (its old views go with it); ``clear`` frees all."""
    workspace.clear()
    a = workspace.buffer("t-scratch", (4, 8), np.float32)
    assert a.shape == (4, 8) and a.dtype == np.float32
    assert workspace.buffer("t-scratch", [4, 8], np.float32) is a  # the kept view (a list shape too)
    b = workspace.buffer("t-scratch", (16,), np.float64)  # the same memory, another view
    assert b.ctypes.data == a.ctypes.data and b.shape == (16,)
    big = workspace.buffer("t-scratch", (1000,), np.float64)  # larger: a new array
    assert big.nbytes == 8000
    assert workspace.buffer("t-scratch", (4, 8), np.float32).ctypes.data == big.ctypes.data
    assert workspace.cached_bytes() >= 8000
    monkeypatch.setattr(workspace, "_VIEWS_KEPT", 3)
    views = [workspace.buffer("t-scratch", (n,), np.float32) for n in range(1, 10)]
    assert len(workspace._thread_cache().views) <= 3 and all(v.ctypes.data == big.ctypes.data for v in views)
    workspace.clear()
    assert workspace.cached_bytes() == 0 and not workspace._thread_cache().views
    fresh = workspace.buffer("t-scratch", (4, 8), np.float32)
    assert fresh is not a and fresh.shape == (4, 8)
    workspace.clear()


def test_scratch_buffers_start_on_a_cache_line():
    """Every scratch view starts at a multiple of 64 bytes (the kernels' whole vectors must not straddle
    two cache lines), also where the kept array itself starts off a line and would hold the bytes only
    from its start: then it is replaced."""
    workspace.clear()
    for n in (1, 3, 17, 64, 1000, 4097, 100, 5):
        for dtype in (np.float32, np.float64):
            view = workspace.buffer("t-aligned", (n,), dtype)
            assert view.ctypes.data % 64 == 0 and view.shape == (n,)
            view[:] = 1  # writable over its whole length
    backing = np.empty(64 + 40, np.uint8)
    offset = (16 - backing.ctypes.data) % 64 or 16  # a start 16 bytes past a line (or more)
    misaligned = backing[offset:offset + 32].view(np.float64)  # 32 bytes, not on a line
    assert misaligned.ctypes.data % 64
    workspace._thread_cache().arrays["t-off"] = misaligned
    view = workspace.buffer("t-off", (4,), np.float64)  # 32 bytes fit, but not from a line
    assert view.ctypes.data % 64 == 0 and view.shape == (4,)
    workspace.clear()


@needs_core
def test_a_replaced_team_is_not_claimed(monkeypatch):
    """A caller that found the team just before a call needing more workers replaced it (a thread count
    raised meanwhile) must not post to the stopped workers: ``claim`` refuses, and the call runs on
    the executor."""
    monkeypatch.setattr(workspace, "_team", None)
    old = workspace._team_of(1)
    new = workspace._team_of(2)
    try:
        assert new is not old and new.workers == 2 and old.stopped
        assert not old.claim()
        assert new.claim()
        assert not new.claim()  # busy: a second caller goes to the executor
        new.busy.release()
    finally:
        with new.busy:
            new.stop()
