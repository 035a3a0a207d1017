"""Score a large image array with an npconv CNN on a Dask cluster.

    pip install 'npconv[dask]'
    python examples/dask_predict.py                                 # a LocalCluster on this machine
    python examples/dask_predict.py --scheduler tcp://host:8786     # an existing cluster

The images are a lazy dask.array (here random; in practice ``da.from_zarr``/``da.from_npy_stack``
/ ``da.from_array`` of an HDF5 dataset), chunked along the batch axis. ``npconv.dask.predict``
turns each chunk into one forward pass; the model travels once to each worker.
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
import numpy as np
from dask.distributed import Client, LocalCluster

import npconv
import npconv.dask
from npconv import nn


def build_model() -> nn.Module:
    npconv.manual_seed(0)  # in practice: model.load_state_dict(npconv.load("weights.safetensors"))
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    args = parser.parse_args()

    if args.scheduler:
        client = Client(args.scheduler)
    else:
        client = Client(LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None))
    print(client)

    images = da.random.default_rng(0).random((args.samples, 1, 8, 8), dtype=np.float32,
                                             chunks=(args.batch_size, 1, 8, 8))
    logits = npconv.dask.predict(build_model(), images)  # lazy: (samples, 10) float32
    labels = logits.argmax(axis=1)
    print(f"logits {logits.shape} {logits.dtype} in {logits.numblocks[0]} chunks")

    start = time.perf_counter()
    counts = np.bincount(labels.compute(), minlength=10)
    elapsed = time.perf_counter() - start
    print(f"scored {args.samples} images in {elapsed:.2f} s ({args.samples / elapsed:,.0f} images/s)")
    print("predicted class counts:", counts.tolist())
    client.close()


if __name__ == "__main__":  # needed: dask starts worker processes by importing this file
    main()
