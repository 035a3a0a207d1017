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


@pytest.fixture
def two_threads():
    previous = npconv.get_num_threads()
    npconv.set_num_threads(2)
    yield
    npconv.set_num_threads(previous)


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
