"""``python -m npconv demo``: train a small CNN on scikit-learn's handwritten digits.

The 1,797 8x8 digit images of ``sklearn.datasets.load_digits`` (shipped with scikit-learn, no
download) are split 80/20 with a seeded permutation. A two-block CNN
(conv-BN-ReLU-maxpool twice, then linear) is trained with Adam and a cosine learning-rate
schedule, showing a tqdm bar per epoch with the running loss and accuracy. Afterwards the demo
prints the held-out accuracy and writes, into ``--out``:

- ``digits_cnn.safetensors``: the trained weights (``npconv.load`` + ``load_state_dict``);
- ``digits_cnn.png``: the learned first-layer filters and a few test digits with predictions;
- ``metrics.json``: accuracy, loss per epoch, seed and timings.

The run is deterministic for a given ``--seed`` (weights from ``npconv.manual_seed``, data order
from seeded generators). With ``--distributed`` (under ``mpiexec -n N``) each rank trains on its
shard of every epoch (``npconv.distributed.DistributedSampler``) with gradients averaged by
``DistributedDataParallel``; ``--batch-size`` stays the global batch, split over the ranks, and
only rank 0 prints and writes files.

Needs the ``demo`` extra: ``pip install 'npconv[demo]'`` (scikit-learn, tqdm, matplotlib,
safetensors).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import io, nn, optim
from .nn import functional as F
from .random import manual_seed
from .tensor import Tensor, no_grad

__all__ = ["DigitsCNN", "DemoResult", "load_digits_split", "run_demo", "add_arguments", "main"]

_DEMO_EXTRA = "pip install 'npconv[demo]'"


def _require(module: str, purpose: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ImportError(f"the npconv demo needs {module.split('.')[0]} ({purpose}); install the demo "
                          f"extra with {_DEMO_EXTRA}") from error


class DigitsCNN(nn.Module):
    """``(N, 1, 8, 8)`` digits -> ``(N, 10)`` logits: two conv-BN-ReLU-maxpool blocks and a linear layer."""

    def __init__(self, channels: tuple[int, int] = (16, 32), num_classes: int = 10) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),   # c1 x 4 x 4
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),  # c2 x 2 x 2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 2 * 2, num_classes))

    def forward(self, x: Any) -> Tensor:
        return self.classifier(self.features(x))


def load_digits_split(seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)``: float32 ``(N, 1, 8, 8)`` images standardised with the
    training set's mean and standard deviation, int64 labels; the split is a seeded permutation."""
    datasets = _require("sklearn.datasets", "the digits data set")
    digits = datasets.load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return images[train], labels[train], images[test], labels[test]


@dataclass
class DemoResult:
    accuracy: float
    correct: int
    total: int
    epochs: int
    seed: int
    seconds: float
    world_size: int
    epoch_loss: list[float] = field(default_factory=list)
    epoch_train_accuracy: list[float] = field(default_factory=list)
    weights_path: str | None = None
    figure_path: str | None = None


def _evaluate(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    predictions = []
    with no_grad():
        for start in range(0, len(x), batch_size):
            predictions.append(model(Tensor(x[start:start + batch_size])).numpy().argmax(axis=1))
    model.train()
    return np.concatenate(predictions)


def _plot(path: Path, model: DigitsCNN, x_test: np.ndarray, y_test: np.ndarray, predicted: np.ndarray,
          accuracy: float) -> None:
    """Two rows of first-layer 3x3 filters, then two rows of test digits titled "predicted (true)":
    the misclassified ones first (in red, at most half), then correctly classified ones."""
    _require("matplotlib", "the figure")
    from matplotlib.figure import Figure

    filters = model.features[0].weight.numpy()[:, 0]
    columns = max(4, (len(filters) + 1) // 2)
    wrong = np.flatnonzero(predicted != y_test)[:columns]
    right = np.flatnonzero(predicted == y_test)[:2 * columns - len(wrong)]
    shown = np.sort(np.concatenate([wrong, right]))
    figure = Figure(figsize=(columns * 0.9, 4.8), layout="constrained")
    grid = figure.add_gridspec(4, columns)
    figure.suptitle(f"npconv digits CNN - first-layer filters (top); test digits, predicted (true) label, "
                    f"errors in red (bottom); held-out accuracy {accuracy:.2%}", fontsize=8)
    limit = float(np.abs(filters).max()) or 1.0
    for index, kernel in enumerate(filters[: 2 * columns]):
        axis = figure.add_subplot(grid[index // columns, index % columns])
        axis.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axis.set_axis_off()
    for slot, index in enumerate(shown):
        axis = figure.add_subplot(grid[2 + slot // columns, slot % columns])
        axis.imshow(x_test[index, 0], cmap="gray_r")
        ok = predicted[index] == y_test[index]
        axis.set_title(f"{predicted[index]} ({y_test[index]})", fontsize=8, color="black" if ok else "red")
        axis.set_axis_off()
    figure.savefig(path, dpi=110)


def run_demo(epochs: int = 8, seed: int = 0, out: str | os.PathLike | None = "npconv-demo",
             batch_size: int = 32, lr: float = 1e-2, distributed: bool = False,
             progress: bool = True) -> DemoResult:
    """Train :class:`DigitsCNN` on the digits and return the held-out accuracy (see the module doc).

    ``out=None`` writes no files. Raises ``ValueError`` for non-positive ``epochs``/``batch_size``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    tqdm = _require("tqdm", "the progress bars").tqdm
    started = time.perf_counter()
    rank, world = 0, 1
    if distributed:
        from . import distributed as dist  # lazy: mpi4py is optional

        if not dist.is_available():
            raise ImportError("--distributed needs mpi4py and an MPI runtime: pip install 'npconv[mpi]'")
        rank, world = dist.get_rank(), dist.get_world_size()
        _share_cores_between_local_ranks()
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    manual_seed(seed)
    model = DigitsCNN()
    trained: nn.Module = model
    sampler = None
    if distributed:
        trained = dist.DistributedDataParallel(model)
        sampler = dist.DistributedSampler(len(y_train), rank, world, shuffle=True, seed=seed)
    local_batch = max(1, batch_size // world)
    steps = math.ceil((len(sampler) if sampler is not None else len(y_train)) / local_batch)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    shuffler = np.random.default_rng(seed + 1)
    result = DemoResult(0.0, 0, len(y_test), epochs, seed, 0.0, world)
    model.train()
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = sampler.indices()
        else:
            order = shuffler.permutation(len(y_train))
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=True,
                   disable=not progress or rank != 0, file=sys.stderr, dynamic_ncols=True)
        for step in range(steps):
            batch = order[step * local_batch:(step + 1) * local_batch]
            optimizer.zero_grad()
            logits = trained(Tensor(x_train[batch]))
            loss = F.cross_entropy(logits, y_train[batch])
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(batch)
            loss_sum += float(loss.numpy()) * len(batch)
            correct += int((logits.numpy().argmax(axis=1) == y_train[batch]).sum())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}", refresh=False)
        bar.close()
        result.epoch_loss.append(loss_sum / seen)
        result.epoch_train_accuracy.append(correct / seen)
    predicted = _evaluate(model, x_test)
    result.correct = int((predicted == y_test).sum())
    result.accuracy = result.correct / len(y_test)
    result.seconds = time.perf_counter() - started
    if out is not None and rank == 0:
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / "digits_cnn.safetensors"
        io.save(model.state_dict(), weights, metadata={"model": "npconv.demo.DigitsCNN", "seed": str(seed),
                                                       "accuracy": f"{result.accuracy:.6f}"})
        figure = directory / "digits_cnn.png"
        _plot(figure, model, x_test, y_test, predicted, result.accuracy)
        result.weights_path, result.figure_path = str(weights), str(figure)
        (directory / "metrics.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _share_cores_between_local_ranks() -> None:
    """Give each of the ranks on this machine its share of the cores (not all cores each)."""
    from mpi4py import MPI

    from .backends import set_num_threads

    local_ranks = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_ranks)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default: 8)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split, the initial weights and the data order (default: 0)")
    parser.add_argument("--out", default="npconv-demo",
                        help="directory for the weights, figure and metrics (default: ./npconv-demo)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="global batch size, split over the ranks with --distributed (default: 32)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's initial learning rate (default: 0.01)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over MPI ranks: mpiexec -n N python -m npconv demo --distributed")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def main(args: argparse.Namespace) -> int:
    """Run the demo from parsed arguments; print the result on rank 0. Returns the exit status."""
    run = run_demo
    if args.distributed:
        from . import distributed as dist

        if dist.is_available():
            def run(**kwargs: Any) -> DemoResult:
                return dist.run_guarded(run_demo, **kwargs)
    result = run(epochs=args.epochs, seed=args.seed, out=args.out, batch_size=args.batch_size, lr=args.lr,
                 distributed=args.distributed, progress=not args.no_progress)
    if result.world_size == 1 or _rank() == 0:
        print(f"held-out accuracy: {result.accuracy:.2%} ({result.correct}/{result.total} test digits) "
              f"after {result.epochs} epochs in {result.seconds:.1f} s"
              + (f" on {result.world_size} ranks" if result.world_size > 1 else ""))
        if result.weights_path:
            print(f"weights: {result.weights_path}")
            print(f"figure:  {result.figure_path}")
    return 0


def _rank() -> int:
    from . import distributed as dist

    return dist.get_rank()
