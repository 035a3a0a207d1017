"""``npconv.utils.data.DistributedSampler`` against torch 2.13: the shards without shuffling equal
torch's; shuffled shards partition the (wrapped-around) dataset deterministically per (seed, epoch);
process-group defaults and errors."""

import sys
import types

import numpy as np
import pytest

from npconv.utils.data import DataLoader, DistributedSampler


@pytest.mark.parametrize("n", [0, 1, 7, 10, 12])
@pytest.mark.parametrize("replicas", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_shards_equal_torch(torch, n, replicas, drop_last):
    for rank in range(replicas):
        ours = DistributedSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
        theirs = torch.utils.data.DistributedSampler(range(n), replicas, rank, shuffle=False,
                                                     drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs)
        assert (ours.num_samples, ours.total_size) == (theirs.num_samples, theirs.total_size)


@pytest.mark.parametrize("n,replicas,drop_last",
                         [(10, 3, False), (10, 3, True), (12, 4, False), (2, 5, False)])
def test_shuffled_shards_partition_the_dataset(n, replicas, drop_last):
    def shards(epoch, seed=0):
        out = []
        for rank in range(replicas):
            sampler = DistributedSampler(list(range(n)), replicas, rank, seed=seed, drop_last=drop_last)
            sampler.set_epoch(epoch)
            out.append(list(sampler))
        return out

    first = shards(0)
    size = len(first[0])
    assert all(len(s) == size for s in first)
    union = [i for s in first for i in s]
    if drop_last:
        assert len(set(union)) == len(union) == (n // replicas) * replicas  # disjoint, tail dropped
    else:
        assert set(union) == set(range(n))  # covering
        total = size * replicas
        # interleaved back, the shards are a permutation followed by its wrap-around padding
        order = [first[i % replicas][i // replicas] for i in range(total)]
        assert sorted(order[:n]) == list(range(n))
        assert order[n:] == (order[:n] * (total // n + 1))[:total - n]
    assert shards(0) == first  # deterministic per (seed, epoch)
    assert shards(1) != first or n < 3
    assert shards(0, seed=5) != first or n < 3


def test_defaults_come_from_npconv_distributed_or_raise(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(ValueError, match="process group has not been initialized"):
        DistributedSampler(range(10))
    world = types.SimpleNamespace(Get_size=lambda: 4, Get_rank=lambda: 2)
    fake = types.SimpleNamespace(Is_initialized=lambda: True, Is_finalized=lambda: False, COMM_WORLD=world)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", fake)
    sampler = DistributedSampler(range(10), shuffle=False)
    assert (sampler.num_replicas, sampler.rank) == (4, 2)
    assert list(sampler) == [2, 6, 0]  # padded by wrapping around
    assert DistributedSampler(range(10), rank=0, shuffle=False).num_replicas == 4
    fake.Is_finalized = lambda: True
    with pytest.raises(ValueError, match="not been initialized"):
        DistributedSampler(range(10))


def test_errors_and_data_loader():
    with pytest.raises(ValueError, match=r"Invalid rank 3, rank should be in the interval \[0, 2\]"):
        DistributedSampler(range(5), 3, 3)
    with pytest.raises(ValueError, match="Invalid rank"):
        DistributedSampler(range(5), 3, -1)
    with pytest.raises(TypeError, match="num_replicas"):
        DistributedSampler(range(5), 2.0, 0)
    with pytest.raises(TypeError, match="length"):
        DistributedSampler(iter(range(5)), 2, 0)
    with pytest.raises(TypeError, match="epoch"):
        DistributedSampler(range(5), 2, 0).set_epoch("1")
    data = np.arange(10.0)
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, 2, 1, shuffle=False))
    assert [b.numpy().tolist() for b in loader] == [[1.0, 3.0], [5.0, 7.0], [9.0]]
