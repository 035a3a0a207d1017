"""Data-parallel training of a small CNN on scikit-learn's digits with MPI.

    pip install 'npconv[mpi,demo]'
    mpiexec -n 2 python examples/mpi_train.py --epochs 5          # 2 local ranks
    python examples/mpi_train.py                                  # the same script, 1 process
    mpiexec -f hostfile -n 8 python examples/mpi_train.py         # a cluster (MPICH hostfile)

Every rank builds the model, DistributedDataParallel makes rank 0's weights everyone's, the
sampler gives each rank its share of every epoch, and gradients are averaged after backward(),
so all replicas stay identical. Only rank 0 prints and saves.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import npconv
from npconv import distributed as dist
from npconv import nn, optim


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )


def load_digits(seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:360], order[360:]
    return images[train], digits.target[train], images[test], digits.target[test]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the weights here (safetensors), from rank 0")
    args = parser.parse_args()

    rank, world = dist.get_rank(), dist.get_world_size()
    npconv.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits(args.seed)
    model = dist.DistributedDataParallel(build_model())
    # the global batch is world * batch_size: scale the learning rate with it
    optimizer = optim.SGD(model.parameters(), lr=0.05 * world, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    sampler = dist.DistributedSampler(len(x_train), shuffle=True, seed=args.seed)

    for epoch in range(args.epochs):
        start = time.perf_counter()
        sampler.set_epoch(epoch)
        model.train()
        indices = sampler.indices()
        for begin in range(0, len(indices), args.batch_size):
            batch = indices[begin:begin + args.batch_size]
            optimizer.zero_grad()
            loss = criterion(model(npconv.Tensor(x_train[batch])), npconv.Tensor(y_train[batch]))
            loss.backward()  # gradients are averaged over the ranks here
            optimizer.step()
        if rank == 0:
            with npconv.no_grad():  # no_grad: DDP does not talk to the other ranks in this forward
                logits = model.module.eval()(npconv.Tensor(x_test))
            accuracy = float((logits.numpy().argmax(1) == y_test).mean())
            print(f"epoch {epoch + 1}/{args.epochs}: last loss {loss.item():.4f}, "
                  f"test accuracy {accuracy:.3f}, {time.perf_counter() - start:.2f} s, {world} rank(s)",
                  flush=True)
    if rank == 0 and args.save:
        npconv.save(model.module.state_dict(), args.save)


if __name__ == "__main__":
    dist.run_guarded(main)  # a rank that raises ends the whole job instead of leaving the others waiting
