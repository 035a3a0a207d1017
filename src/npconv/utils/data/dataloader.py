"""``DataLoader``: batches from a dataset, in the main process or in worker processes.

Semantics follow ``torch.utils.data.DataLoader``: a sampler yields indices, a ``BatchSampler``
groups them, samples are fetched (``dataset.__getitems__(indices)`` when the dataset has it,
else ``dataset[i]`` one by one) and ``collate_fn`` makes the batch. With ``num_workers > 0``
each batch is fetched by one of ``num_workers`` processes (round robin, at most
``prefetch_factor`` batches ahead per worker) and the batches come back in the sampler's order
(``in_order=True``) or as soon as they are ready. Each worker seeds Python's ``random`` and
npconv's global generator with ``base_seed + worker_id`` (``base_seed`` is drawn per epoch from
``generator``), limits npconv's threads to 1, runs ``worker_init_fn(worker_id)`` and sees itself
in :func:`get_worker_info`. An exception in a worker is raised again in the main process with the
worker's traceback; a worker that dies (killed, ``os._exit``) is a ``RuntimeError`` naming its
pid and exit code, never a hang; ``timeout`` bounds the wait for one batch.
"""

from __future__ import annotations

import itertools
import multiprocessing
import numbers
import os
import queue
import random
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .collate import default_collate, default_convert
from .dataset import Dataset, IterableDataset
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, numpy_rng

__all__ = ["DataLoader", "WorkerInfo", "get_worker_info"]

T_co = TypeVar("T_co", covariant=True)

_STATUS_INTERVAL = 0.5  # seconds between checks that workers are alive while waiting for a batch
_SHUTDOWN_GRACE = 5.0  # seconds a worker gets to exit before it is terminated


@dataclass(frozen=True)
class WorkerInfo:
    """What :func:`get_worker_info` returns inside a worker process."""

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """Inside a DataLoader worker: its id, the number of workers, its seed and its dataset copy;
    None in the main process."""
    return _worker_info


class _ExceptionWrapper:
    """An exception from a worker, with its traceback as text (exceptions do not always pickle)."""

    def __init__(self, worker_id: int) -> None:
        exc_type, exc, _ = sys.exc_info()
        self.exc_type = exc_type
        name = exc_type.__name__ if exc_type else "an exception"
        self.message = (f"Caught {name} in DataLoader worker process {worker_id}.\nOriginal "
                        + "".join(traceback.format_exception(exc)))

    def reraise(self) -> None:
        try:
            error = self.exc_type(self.message)  # type: ignore[misc]
        except Exception:
            raise RuntimeError(self.message) from None
        raise error


@dataclass(frozen=True)
class _WorkerDone:
    """An iterable-style dataset's copy in this worker is exhausted for the epoch."""

    worker_id: int


def _fetch(dataset: Any, indices: Any, auto_collation: bool, collate_fn: Callable[[Any], Any]) -> Any:
    if not auto_collation:
        return collate_fn(dataset[indices])
    getitems = getattr(dataset, "__getitems__", None)
    samples = getitems(indices) if callable(getitems) else [dataset[i] for i in indices]
    return collate_fn(samples)


def _next_from_stream(stream: Iterator[Any], batch_size: int | None, drop_last: bool,
                      collate_fn: Callable[[Any], Any]) -> Any:
    """The next batch of an iterable dataset; raises StopIteration when there is none."""
    if batch_size is None:
        return collate_fn(next(stream))
    batch = list(itertools.islice(stream, batch_size))
    if not batch or (drop_last and len(batch) < batch_size):
        raise StopIteration
    return collate_fn(batch)


def _worker_loop(worker_id: int, num_workers: int, dataset: Any, iterable: bool, auto_collation: bool,
                 batch_size: int | None, drop_last: bool, collate_fn: Callable[[Any], Any], seed: int,
                 worker_init_fn: Callable[[int], Any] | None, index_queue: Any, result_queue: Any,
                 parent_pid: int) -> None:
    """A worker process: answer ``(epoch, send_idx, indices)`` tasks until it receives None."""
    global _worker_info
    from ... import random as npconv_random
    from ...backends import set_num_threads

    set_num_threads(1)  # num_workers processes share the cores, as torch's workers do
    random.seed(seed)
    npconv_random.manual_seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    init_error = None
    if worker_init_fn is not None:
        try:
            worker_init_fn(worker_id)
        except Exception:
            init_error = _ExceptionWrapper(worker_id)
    stream, stream_epoch = None, None
    while True:
        try:
            task = index_queue.get(timeout=_STATUS_INTERVAL * 10)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the main process died: do not linger as an orphan
                break
            continue
        if task is None:
            break
        epoch, send_idx, indices = task
        if init_error is not None:
            result_queue.put((epoch, send_idx, init_error))
            continue
        try:
            if iterable:
                if stream_epoch != epoch:
                    stream, stream_epoch = iter(dataset), epoch
                try:
                    data = _next_from_stream(stream, batch_size, drop_last, collate_fn)
                except StopIteration:
                    data = _WorkerDone(worker_id)
            else:
                data = _fetch(dataset, indices, auto_collation, collate_fn)
        except Exception:
            data = _ExceptionWrapper(worker_id)
        result_queue.put((epoch, send_idx, data))
    result_queue.cancel_join_thread()


class _MultiProcessIterator:
    """Worker processes, their queues and the bookkeeping that returns batches in order."""

    def __init__(self, loader: DataLoader[Any]) -> None:
        self._loader = loader
        self._num_workers = loader.num_workers
        self._prefetch = loader.prefetch_factor
        self._in_order = loader.in_order
        self._timeout = loader.timeout
        self._iterable = isinstance(loader.dataset, IterableDataset)
        context = loader.multiprocessing_context or multiprocessing.get_context()
        self._result_queue = context.Queue()
        self._index_queues = [context.Queue() for _ in range(self._num_workers)]
        base_seed = int(numpy_rng(loader.generator).integers(2**62))
        self._workers = []
        self._closed = False
        for worker_id in range(self._num_workers):
            worker = context.Process(
                target=_worker_loop, daemon=True,
                args=(worker_id, self._num_workers, loader.dataset, self._iterable, loader._auto_collation,
                      loader.batch_size, loader.drop_last, loader.collate_fn, base_seed + worker_id,
                      loader.worker_init_fn, self._index_queues[worker_id], self._result_queue, os.getpid()))
            worker.start()
            self._workers.append(worker)
        self._epoch = 0
        self._reset()

    def _reset(self) -> None:
        """Start an epoch (again, for persistent workers): new sampler pass, fresh bookkeeping."""
        self._epoch += 1
        self._sampler_iter = None if self._iterable else iter(self._loader._index_sampler)
        self._send_idx = self._rcvd_idx = 0
        self._outstanding = 0
        self._ready: dict[int, Any] = {}
        self._skipped: set[int] = set()
        self._active = [True] * self._num_workers
        self._next_worker = 0
        self._try_put_index()

    def _try_put_index(self) -> None:
        while self._outstanding < self._prefetch * sum(self._active):
            if self._iterable:
                indices = None
            else:
                try:
                    indices = next(self._sampler_iter)  # type: ignore[arg-type]
                except StopIteration:
                    return
            while not self._active[self._next_worker]:
                self._next_worker = (self._next_worker + 1) % self._num_workers
            self._index_queues[self._next_worker].put((self._epoch, self._send_idx, indices))
            self._next_worker = (self._next_worker + 1) % self._num_workers
            self._send_idx += 1
            self._outstanding += 1

    def __iter__(self) -> _MultiProcessIterator:
        return self

    def __len__(self) -> int:
        return len(self._loader)

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        while True:
            data = self._take_ready()
            if data is not None:
                return self._process(data[0])
            if self._outstanding == 0:
                self._end_epoch()
                raise StopIteration
            epoch, index, result = self._get_result()
            if epoch != self._epoch:
                continue  # a late answer to an abandoned epoch (persistent workers)
            self._outstanding -= 1
            if isinstance(result, _WorkerDone):
                self._active[result.worker_id] = False
                self._skipped.add(index)
                self._try_put_index()
                continue
            self._ready[index] = result

    def _take_ready(self) -> tuple[Any] | None:
        if not self._in_order:
            return (self._ready.pop(next(iter(self._ready))),) if self._ready else None
        while self._rcvd_idx in self._skipped:
            self._skipped.discard(self._rcvd_idx)
            self._rcvd_idx += 1
        if self._rcvd_idx in self._ready:
            self._rcvd_idx += 1
            return (self._ready.pop(self._rcvd_idx - 1),)
        return None

    def _process(self, data: Any) -> Any:
        self._try_put_index()
        if isinstance(data, _ExceptionWrapper):
            data.reraise()
        return data

    def _get_result(self) -> tuple[int, int, Any]:
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = _STATUS_INTERVAL if deadline is None else max(0.0, min(_STATUS_INTERVAL,
                                                                           deadline - time.monotonic()))
            try:
                return self._result_queue.get(timeout=wait)
            except queue.Empty:
                pass
            dead = [w for w in self._workers if not w.is_alive()]
            if dead:
                self.close(grace=0.0)
                details = ", ".join(f"pid {w.pid} exit code {w.exitcode}" for w in dead)
                raise RuntimeError(f"DataLoader worker ({details}) exited unexpectedly") from None
            if deadline is not None and time.monotonic() >= deadline:
                self.close(grace=0.0)
                raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")

    def _end_epoch(self) -> None:
        if not self._loader.persistent_workers:
            self.close()

    def close(self, grace: float = _SHUTDOWN_GRACE) -> None:
        """Stop the workers (each gets ``grace`` seconds to exit, then is terminated) and the queues."""
        if self._closed:
            return
        self._closed = True
        for index_queue in self._index_queues:
            try:
                index_queue.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + grace
        while any(w.is_alive() for w in self._workers) and time.monotonic() < deadline:
            try:  # keep the pipe drained so that no worker blocks on a full result queue
                while True:
                    self._result_queue.get_nowait()
            except (queue.Empty, OSError, ValueError, EOFError):
                pass
            for worker in self._workers:
                worker.join(timeout=0.05)
        for worker in self._workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
        for q in (*self._index_queues, self._result_queue):
            q.cancel_join_thread()
            q.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the modules may be gone already
            pass


class _SingleProcessIterator:
    """The batches of a loader without workers, with torch's ``len(iter(loader))``."""

    def __init__(self, loader: DataLoader, batches: Iterator[Any]) -> None:
        self._loader, self._batches = loader, batches

    def __iter__(self) -> _SingleProcessIterator:
        return self

    def __next__(self) -> Any:
        return next(self._batches)

    def __len__(self) -> int:
        return len(self._loader)


class DataLoader(Generic[T_co]):
    """``torch.utils.data.DataLoader``: iterate over ``dataset`` in batches.

    ``batch_size=None`` disables batching (each sample goes through ``default_convert``);
    ``shuffle=True`` uses a ``RandomSampler`` drawing from ``generator``; ``sampler`` and
    ``batch_sampler`` replace the defaults (mutually exclusive with the options they decide);
    ``num_workers``, ``prefetch_factor``, ``persistent_workers``, ``worker_init_fn``,
    ``multiprocessing_context``, ``timeout`` and ``in_order`` control worker processes (see the
    module docstring). ``pin_memory`` has no effect on the CPU (a warning, like torch without an
    accelerator).
    """

    _FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")

    def __init__(self, dataset: Dataset[T_co], batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Sampler[Any] | Any = None, batch_sampler: Sampler[Any] | Any = None,
                 num_workers: int = 0, collate_fn: Callable[[list[Any]], Any] | None = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable[[int], Any] | None = None, multiprocessing_context: Any = None,
                 generator: Any = None, *, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, pin_memory_device: str = "",
                 in_order: bool = True) -> None:
        prefetch_factor = _check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers)
        _check_callables_and_generator(shuffle, collate_fn, worker_init_fn, generator)
        _check_sampling_options(dataset, batch_size, shuffle, sampler, batch_sampler, drop_last)
        if batch_sampler is not None:
            batch_size, drop_last = None, False
        if sampler is None:
            if isinstance(dataset, IterableDataset):
                sampler = _InfiniteConstantSampler()
            else:
                sampler = (RandomSampler(dataset, generator=generator) if shuffle
                           else SequentialSampler(dataset))
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        if pin_memory:
            warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device "
                          "pinned memory won't be used.", UserWarning, stacklevel=2)
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = int(num_workers)
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = _context(multiprocessing_context, self.num_workers)
        self.generator = generator
        self.persistent_workers = bool(persistent_workers)
        self.in_order = bool(in_order)
        self.collate_fn = collate_fn if collate_fn is not None else (
            default_collate if batch_sampler is not None else default_convert)
        self._iterator: _MultiProcessIterator | None = None
        self.__initialized = True

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_DataLoader__initialized") and name in self._FROZEN:
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self) -> Any:
        return self.batch_sampler if self._auto_collation else self.sampler

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            return _SingleProcessIterator(self, self._single_process())
        if not self.persistent_workers:
            return _MultiProcessIterator(self)  # its workers stop when it ends or is dropped
        if self._iterator is None or self._iterator._closed:
            self._iterator = _MultiProcessIterator(self)
        else:
            self._iterator._reset()
        return self._iterator

    def _single_process(self) -> Iterator[Any]:
        if isinstance(self.dataset, IterableDataset):
            stream = iter(self.dataset)
            while True:
                try:
                    batch = _next_from_stream(stream, self.batch_size, self.drop_last, self.collate_fn)
                except StopIteration:
                    return
                yield batch
        for indices in self._index_sampler:
            yield _fetch(self.dataset, indices, self._auto_collation, self.collate_fn)

    def __len__(self) -> int:
        if isinstance(self.dataset, IterableDataset):
            length = len(self.dataset)  # type: ignore[arg-type]
            if self.batch_size is not None:
                length = length // self.batch_size if self.drop_last else -(-length // self.batch_size)
            return length
        return len(self._index_sampler)


def _check_worker_options(num_workers: Any, timeout: Any, prefetch_factor: Any,
                          persistent_workers: Any) -> int | None:
    """torch's checks of the worker options; returns ``prefetch_factor`` (2 by default with workers)."""
    if not isinstance(num_workers, numbers.Integral) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable "
                         f"multiprocessing (got num_workers={num_workers!r})")
    if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool) or timeout < 0:
        raise ValueError(f"timeout option should be non-negative, got {timeout!r}")
    if num_workers == 0 and prefetch_factor is not None:
        raise ValueError("prefetch_factor option could only be specified in multiprocessing. let "
                         "num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None.")
    if num_workers > 0 and prefetch_factor is None:
        prefetch_factor = 2
    if prefetch_factor is not None and (not isinstance(prefetch_factor, numbers.Integral)
                                        or isinstance(prefetch_factor, bool) or prefetch_factor < 1):
        raise ValueError(f"prefetch_factor must be a positive int, got {prefetch_factor!r}")
    if persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers option needs num_workers > 0")
    return prefetch_factor


def _check_callables_and_generator(shuffle: Any, collate_fn: Any, worker_init_fn: Any,
                                   generator: Any) -> None:
    if shuffle not in (None, True, False):
        raise TypeError(f"shuffle must be a bool or None, got {shuffle!r}")
    for name, value in (("collate_fn", collate_fn), ("worker_init_fn", worker_init_fn)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    numpy_rng(generator)


def _check_sampling_options(dataset: Any, batch_size: Any, shuffle: Any, sampler: Any, batch_sampler: Any,
                            drop_last: Any) -> None:
    """The options that decide the order and grouping of samples exclude each other as in torch."""
    if isinstance(dataset, IterableDataset):
        for name, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
            if value not in (None, False):
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified {name} option, "
                                 f"but got {name}={value!r}")
    elif sampler is not None and shuffle:
        raise ValueError("sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
        raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, "
                         "sampler, and drop_last")
    if batch_sampler is None and batch_size is None and drop_last:
        raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with "
                         "drop_last")


class _InfiniteConstantSampler(Sampler[None]):
    """The sampler of an iterable dataset: the dataset decides what comes next."""

    def __iter__(self) -> Iterator[None]:
        while True:
            yield None


def _context(value: Any, num_workers: int) -> Any:
    """``multiprocessing_context`` as a context object (None: multiprocessing's default)."""
    if value is None:
        return None
    if num_workers == 0:
        raise ValueError("multiprocessing_context can only be used with multi-process loading "
                         f"(num_workers > 0), but got num_workers={num_workers}")
    if isinstance(value, str):
        methods = multiprocessing.get_all_start_methods()
        if value not in methods:
            raise ValueError("multiprocessing_context option should specify a valid start method in "
                             f"{methods}, but got multiprocessing_context={value!r}")
        return multiprocessing.get_context(value)
    if not isinstance(value, multiprocessing.context.BaseContext):
        raise TypeError("multiprocessing_context option should be a valid context object or a string "
                        f"specifying the start method, but got multiprocessing_context={value!r}")
    return value
