"""Synchronous data-parallel training over MPI (optional extra ``mpi``: ``mpi4py`` + ``mpich``).

Every rank runs the same script on its own shard of the data (:class:`DistributedSampler`) with
its own replica of the model wrapped in :class:`DistributedDataParallel`. The wrapper broadcasts
rank 0's parameters and buffers when it is built, and after every ``backward()`` replaces each
parameter gradient by its average over the ranks, so that any optimizer then takes the same step
on every rank - the step a single process would take on the concatenated batch::

    from npconv import distributed as dist

    model = dist.DistributedDataParallel(Net())
    sampler = dist.DistributedSampler(len(data), shuffle=True, seed=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ...  # loss = criterion(model(x[batch]), y[batch]); loss.backward(); optimizer.step()

Run it with ``mpiexec -n 4 python train.py``. A rank that raises would leave the others blocked
in a collective; :func:`run_guarded` (or :func:`install_excepthook`) prints the failing rank's
traceback and calls ``MPI_Abort`` so the whole job ends with a non-zero exit status instead.

The communicator is any ``mpi4py.MPI.Comm`` (default ``MPI.COMM_WORLD``). Without mpi4py the
module still imports: :func:`is_available` is False and a process is rank 0 of 1.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np

from .nn.modules.module import Module
from .nn.parameter import Parameter, UninitializedParameter
from .tensor import Tensor, is_grad_enabled, make_result, queue_callback

__all__ = [
    "is_available",
    "get_rank",
    "get_world_size",
    "DistributedDataParallel",
    "DistributedSampler",
    "run_guarded",
    "install_excepthook",
]

_MISSING_MPI = (
    "npconv.distributed needs mpi4py and an MPI runtime; install them with "
    "pip install 'npconv[mpi]' (mpi4py + the mpich wheel, which provides mpiexec)"
)


def _mpi() -> Any:
    """The ``mpi4py.MPI`` module (importing it initialises MPI), or ImportError with install advice."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as error:  # RuntimeError: mpi4py found no MPI library
        raise ImportError(_MISSING_MPI) from error
    return MPI


def is_available() -> bool:
    """Whether mpi4py and an MPI library can be loaded (importing them initialises MPI)."""
    try:
        _mpi()
    except ImportError:
        return False
    return True


def _default_comm(comm: Any) -> Any:
    return _mpi().COMM_WORLD if comm is None else comm


def get_rank(comm: Any = None) -> int:
    """This process's rank in ``comm`` (default ``COMM_WORLD``); 0 when MPI is not available."""
    if comm is None and not is_available():
        return 0
    return int(_default_comm(comm).Get_rank())


def get_world_size(comm: Any = None) -> int:
    """The number of ranks in ``comm`` (default ``COMM_WORLD``); 1 when MPI is not available."""
    if comm is None and not is_available():
        return 1
    return int(_default_comm(comm).Get_size())


# -- flat buffers ---------------------------------------------------------------------------------
class _Bucket:
    """Tensors of one dtype laid out back to back in one contiguous 1-d buffer."""

    __slots__ = ("dtype", "tensors", "offsets", "size")

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.tensors: list[Tensor] = []
        self.offsets: list[int] = [0]
        self.size = 0

    def add(self, tensor: Tensor) -> None:
        self.tensors.append(tensor)
        self.size += int(tensor.numpy().size)
        self.offsets.append(self.size)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def views(self, flat: np.ndarray) -> Iterator[tuple[Tensor, np.ndarray]]:
        """Each tensor with the slice of ``flat`` that holds it, shaped like the tensor."""
        for i, tensor in enumerate(self.tensors):
            yield tensor, flat[self.offsets[i]:self.offsets[i + 1]].reshape(tensor.numpy().shape)


def _assign_buckets(tensors: list[Tensor], cap_bytes: int) -> list[_Bucket]:
    """Split ``tensors`` (in the given order) into per-dtype buckets of about ``cap_bytes`` each.

    Like torch's ``compute_bucket_assignment_by_size``: a tensor joins the open bucket of its
    dtype, which is closed once it holds ``cap_bytes`` or more.
    """
    open_buckets: dict[np.dtype, _Bucket] = {}
    buckets: list[_Bucket] = []
    for tensor in tensors:
        dtype = tensor.numpy().dtype
        bucket = open_buckets.get(dtype)
        if bucket is None:
            bucket = open_buckets[dtype] = _Bucket(dtype)
            buckets.append(bucket)
        bucket.add(tensor)
        if bucket.nbytes >= cap_bytes:
            del open_buckets[dtype]
    return buckets


def _broadcast_in_place(comm: Any, tensors: list[Tensor], root: int = 0) -> None:
    """Overwrite every tensor's values with rank ``root``'s: one ``Bcast`` per dtype."""
    for bucket in _assign_buckets(tensors, cap_bytes=sys.maxsize):
        flat = np.empty(bucket.size, dtype=bucket.dtype)
        for tensor, view in bucket.views(flat):
            view[...] = tensor.numpy()
        comm.Bcast(flat, root=root)
        for tensor, view in bucket.views(flat):
            if tensor.numpy().flags.writeable:
                tensor.numpy()[...] = view
            else:
                tensor.data = view.copy()


def _signature(module: Module) -> list[tuple[str, tuple[int, ...], str]]:
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [(name, tuple(t.numpy().shape), t.numpy().dtype.str) for name, t in named]


# -- the wrapper ------------------------------------------------------------------------------------
class DistributedDataParallel(Module):
    """Data-parallel wrapper: after ``backward()`` every parameter's ``.grad`` is the mean over ranks.

    Args:
        module: the replica on this rank. Its parameters and buffers are overwritten in place
            with rank 0's when the wrapper is built (all ranks must build the same architecture).
        comm: an ``mpi4py.MPI.Comm`` (default ``COMM_WORLD``).
        bucket_cap_mb: gradients are packed, per dtype and in reverse ``parameters()`` order (as
            torch does), into contiguous buckets of about this many MiB; each bucket is averaged
            with ONE in-place ``Allreduce``.
        broadcast_buffers: also copy rank 0's buffers (e.g. BatchNorm running statistics) to all
            ranks at the start of every forward that records a graph, like torch.
        find_unused_parameters: a parameter that got no gradient on any rank keeps ``grad=None``
            (costs one extra small ``Allreduce`` per step). Otherwise a missing local gradient
            counts as zeros, so a parameter unused everywhere gets a zero gradient.

    ``forward`` delegates to ``module``; the output is marked so that its backward queues the
    gradient averaging to run once the whole ``backward()`` pass has finished
    (:func:`npconv.tensor.queue_callback`). ``state_dict()`` keys carry the ``module.`` prefix
    as in torch; save ``ddp.module.state_dict()`` to load the weights without the wrapper.
    """

    def __init__(self, module: Module, comm: Any = None, bucket_cap_mb: float = 25,
                 broadcast_buffers: bool = True, find_unused_parameters: bool = False) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"module must be an npconv.nn.Module, got {type(module).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        for name, param in module.named_parameters():
            if isinstance(param, UninitializedParameter):
                raise ValueError(
                    f"parameter {name!r} is uninitialized: run one forward pass of the lazy module "
                    "before wrapping it in DistributedDataParallel"
                )
        comm = _default_comm(comm)
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.world_size = int(comm.Get_size())
        self.bucket_cap_mb = bucket_cap_mb
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.require_backward_grad_sync = True
        self._check_same_architecture(module)
        self.module = module
        _broadcast_in_place(comm, list(module.parameters()) + list(module.buffers()))
        self._layout: list[tuple[int, str, int]] = []
        self._buckets: list[_Bucket] = []
        self._rebuild_buckets()

    def _check_same_architecture(self, module: Module) -> None:
        """Raise the same ValueError on every rank if any rank's tensors differ from rank 0's."""
        signatures = self.comm.allgather(_signature(module))
        for rank, signature in enumerate(signatures):
            if signature == signatures[0]:
                continue
            first = next((a, b) for a, b in zip(signatures[0] + [None], signature + [None], strict=False)
                         if a != b)
            raise ValueError(
                "DistributedDataParallel: every rank must wrap the same architecture; "
                f"rank {rank} has {first[1]} where rank 0 has {first[0]} (name, shape, dtype)"
            )

    # -- buckets ------------------------------------------------------------------------------
    def _trainable(self) -> list[Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _current_layout(self, params: list[Parameter]) -> list[tuple[int, str, int]]:
        return [(id(p), p.numpy().dtype.str, int(p.numpy().size)) for p in params]

    def _rebuild_buckets(self) -> None:
        params = self._trainable()
        self._layout = self._current_layout(params)
        cap = max(1, int(self.bucket_cap_mb * 1024 * 1024))
        self._buckets = _assign_buckets(list(reversed(params)), cap)

    @property
    def bucket_sizes(self) -> list[int]:
        """The number of parameters in each gradient bucket, in all-reduce order."""
        return [len(bucket.tensors) for bucket in self._buckets]

    # -- forward / backward -------------------------------------------------------------------
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        sync = is_grad_enabled() and self.require_backward_grad_sync
        if sync and self.broadcast_buffers and self.world_size > 1:
            buffers = list(self.module.buffers())
            if buffers:
                _broadcast_in_place(self.comm, buffers)
        output = self.module(*inputs, **kwargs)
        return self._mark_for_sync(output) if sync else output

    def _mark_for_sync(self, output: Any) -> Any:
        if isinstance(output, Tensor):
            if not output.requires_grad:
                return output
            return make_result(output.numpy(), (output,), self._identity_backward,
                               "DistributedDataParallelBackward")
        if isinstance(output, tuple) and hasattr(output, "_fields"):  # namedtuple
            return type(output)(*(self._mark_for_sync(item) for item in output))
        if isinstance(output, (tuple, list)):
            return type(output)(self._mark_for_sync(item) for item in output)
        if isinstance(output, dict):
            return type(output)((key, self._mark_for_sync(value)) for key, value in output.items())
        return output

    def _identity_backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        queue_callback(self._average_gradients)
        return (grad,)

    def _average_gradients(self) -> None:
        """Replace each trainable parameter's grad by its mean over ranks (one Allreduce per bucket)."""
        mpi = _mpi()
        params = self._trainable()
        if self._current_layout(params) != self._layout:
            self._rebuild_buckets()
        globally_used = None
        if self.find_unused_parameters:
            used = np.array([p.grad is not None for b in self._buckets for p in b.tensors], dtype=np.int32)
            self.comm.Allreduce(mpi.IN_PLACE, used, op=mpi.SUM)
            globally_used = iter(used > 0)
        for bucket in self._buckets:
            # a fresh buffer per step: the averaged grads are views of it (no copy back)
            flat = np.empty(bucket.size, dtype=bucket.dtype)
            for param, view in bucket.views(flat):
                if param.grad is None:
                    view[...] = 0
                else:
                    view[...] = param.grad.numpy()
            if self.world_size > 1:
                self.comm.Allreduce(mpi.IN_PLACE, flat, op=mpi.SUM)
                flat /= self.world_size
            for param, view in bucket.views(flat):
                if globally_used is not None and not next(globally_used):
                    continue
                param.grad = Tensor(view)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Forwards run inside this context skip the averaging (accumulate gradients locally)."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def extra_repr(self) -> str:
        return f"rank={self.rank}, world_size={self.world_size}" if self.world_size != 1 else ""


# -- sampler ----------------------------------------------------------------------------------------
def _check_int(value: Any, argument: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{argument} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class DistributedSampler:
    """The indices of one rank's shard of a dataset of ``n`` samples, reshuffled every epoch.

    Same algorithm as ``torch.utils.data.DistributedSampler``: permute ``range(n)`` (seeded by
    ``seed + epoch``, NumPy's generator, so the order differs from torch's), then either pad by
    repeating indices from the start (``drop_last=False``) or drop the tail (``drop_last=True``)
    so the total is divisible by ``world``, and give rank ``r`` the indices
    ``r, r + world, r + 2 world, ...``. Every rank gets ``len(sampler)`` indices:
    ``ceil(n / world)``, or ``floor(n / world)`` with ``drop_last``.

    ``n`` is the dataset length (or a sized dataset); ``rank``/``world`` default to
    :func:`get_rank`/:func:`get_world_size`. Call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, n: int | Sized, rank: int | None = None, world: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if not isinstance(n, (int, np.integer)) and isinstance(n, Sized):
            n = len(n)
        n = _check_int(n, "n", 0)
        world = _check_int(get_world_size() if world is None else world, "world", 1)
        rank = _check_int(get_rank() if rank is None else rank, "rank", 0)
        if rank >= world:
            raise ValueError(f"rank must be in [0, world - 1] = [0, {world - 1}], got {rank}")
        seed = _check_int(seed, "seed", 0)
        self.n, self.rank, self.world = n, rank, world
        self.shuffle, self.seed, self.drop_last = bool(shuffle), seed, bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = n // world
        else:
            self.num_samples = math.ceil(n / world)
        self.total_size = self.num_samples * world

    def set_epoch(self, epoch: int) -> None:
        """Use permutation number ``epoch`` (the same on all ranks) for the next iteration."""
        self.epoch = _check_int(epoch, "epoch", 0)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array of length ``len(self)``."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.total_size > self.n and self.n > 0:
            order = np.resize(order, self.total_size)  # repeats from the start, like torch's padding
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.world].astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"DistributedSampler(n={self.n}, rank={self.rank}, world={self.world}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")


# -- failing cleanly ----------------------------------------------------------------------------------
#: Seconds a failing rank waits between printing its error and aborting the job.
ABORT_GRACE_SECONDS = 1.0


def _abort(comm: Any, code: int, error: BaseException) -> None:
    """Print ``error`` tagged with the rank, then ``MPI_Abort`` every rank of ``comm``."""
    comm = _default_comm(comm)
    rank, world = comm.Get_rank(), comm.Get_size()
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    lines = text.rstrip("\n").split("\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"npconv.distributed: rank {rank} of {world} raised an exception; aborting all ranks "
        f"(MPI_Abort with exit code {code})\n" + "".join(f"[rank {rank}] {line}\n" for line in lines)
    )
    sys.stderr.flush()
    # mpiexec forwards the ranks' output through pipes; an abort right away lost this message on a
    # loaded machine (the test suite under load): give the forwarding a moment on this error path
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(code)


def run_guarded(fn: Callable[..., Any], *args: Any, comm: Any = None, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)``; if it raises, print the rank and traceback and abort the job.

    Without this a rank that raises leaves the others waiting forever in their next collective.
    ``sys.exit(0)`` passes through; ``sys.exit(k)`` aborts with code ``k``, anything else with 1.
    """
    try:
        return fn(*args, **kwargs)
    except SystemExit as exit_:
        if exit_.code is None or exit_.code == 0:
            raise
        _abort(comm, exit_.code if isinstance(exit_.code, int) else 1, exit_)
    except BaseException as error:
        _abort(comm, 1, error)
    return None  # not reached: Abort ends the process


def install_excepthook(comm: Any = None) -> None:
    """Make any uncaught exception print the rank and traceback and ``MPI_Abort`` the job."""
    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        _abort(comm, 1, value.with_traceback(tb))

    sys.excepthook = hook
