"""``DistributedSampler`` with torch's signature (``torch.utils.data.DistributedSampler``).

Each of ``num_replicas`` processes iterates over its own shard of a map-style dataset: the indices
(``range(len(dataset))``, permuted per ``(seed, epoch)`` if ``shuffle``) are padded by wrapping around
to a multiple of ``num_replicas`` (or their tail dropped with ``drop_last``), and rank ``r`` takes
every ``num_replicas``-th index from ``r``. Without shuffling the shards equal torch's; the shuffled
order comes from NumPy's generator seeded with ``seed + epoch`` (the same on every rank, not torch's
permutation). The index computation is :class:`npconv.distributed.DistributedSampler`'s.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterator, Sized
from typing import Any, TypeVar

from .sampler import Sampler

__all__ = ["DistributedSampler"]

T_co = TypeVar("T_co", covariant=True)


def _process_group() -> tuple[int, int]:
    """``(world size, rank)`` of npconv.distributed's MPI world once MPI is initialised (by
    ``npconv.distributed``, ``DistributedDataParallel`` or ``mpi4py``), else ValueError as torch's."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        raise ValueError("Default process group has not been initialized: npconv.distributed (MPI) is not "
                         "initialised. Run under mpiexec with npconv.distributed, or pass num_replicas and "
                         "rank to DistributedSampler.")
    return int(mpi.COMM_WORLD.Get_size()), int(mpi.COMM_WORLD.Get_rank())


def _int(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


class DistributedSampler(Sampler[T_co]):
    """This process's shard of ``dataset`` (see the module docstring); call :meth:`set_epoch` at the
    start of every epoch so that each epoch is shuffled differently (and identically on all ranks)."""

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if not isinstance(dataset, Sized):
            raise TypeError(f"dataset must have a length (a map-style dataset), got {type(dataset).__name__}")
        if num_replicas is None or rank is None:
            world, own_rank = _process_group()
            num_replicas = world if num_replicas is None else num_replicas
            rank = own_rank if rank is None else rank
        num_replicas, rank = _int(num_replicas, "num_replicas"), _int(rank, "rank")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive int, got {num_replicas}")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        seed = _int(seed, "seed")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = bool(drop_last)
        n = len(dataset)
        if self.drop_last and n % num_replicas != 0:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = bool(shuffle)
        self.seed = seed

    def __iter__(self) -> Iterator[T_co]:
        from ... import distributed as _dist  # not at import: npconv.distributed imports npconv.nn

        shard = _dist.DistributedSampler(len(self.dataset), self.rank, self.num_replicas, self.shuffle,
                                         self.seed, self.drop_last)
        shard.set_epoch(self.epoch)
        return iter(shard.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of epoch ``epoch`` (the same on all ranks) for the next iteration."""
        epoch = _int(epoch, "epoch")
        if epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch}")
        self.epoch = epoch
