"""Benchmark npconv's locally connected and connection-table layers against PyTorch (CPU).

* ``Conv2dLocal`` vs the usual hand-rolled torch layer, ``unfold`` + ``einsum``
  (``einsum('ncl,loc->nol', F.unfold(x, ...), weight.view(L, O, C*kh*kw))``);
* ``Conv2dMap`` (methods ``auto``, ``dense``, ``sparse``) vs torch ``conv2d`` with the dense
  weight masked by the table (the cheapest torch equivalent) - this also shows where npconv's
  dense/sparse switch (:func:`npconv.ops.local.dense_fraction`) should sit.

Both libraries run in one process, float32, ``--threads`` threads each, in alternating blocks
(``--reps`` rounds; per round each callable warms up once, then runs :data:`BLOCK` timed calls: one
library's idle pool must not run on while the other is timed), medians in milliseconds. The process
re-runs itself with the tuned malloc and, unless ``--spin``, the idle pools sleeping at once
(``bench_conv.NO_SPIN``: torch's unfold + einsum, many small parallel regions, is ~10x slower
that way, so the locally connected comparison is fairest with ``--spin``). ``fwd`` is a forward pass
without graph recording, ``fwd+bwd`` a recorded forward plus the backward pass for the input, weight
and bias gradients.

Usage::

    python benchmarks/bench_local.py [--reps 5] [--threads 2] [--only local|map] [--spin]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_conv import NO_SPIN, TUNED_MALLOC

import npconv
import npconv.nn as nn
from npconv.geometry import ConvGeometry
from npconv.ops import local as local_ops

TF = torch.nn.functional


#: Timed calls per callable and round (after one untimed call).
BLOCK = 3


def _median_ms(fns: dict[str, Callable[[], None]], reps: int) -> dict[str, float]:
    """``reps`` rounds over the callables, each a block: one warm-up call, then :data:`BLOCK` timed
    calls (interleaving call by call charged each library for the other's spinning pool: npconv's
    dense Map method measured 3.5 ms there against 1.5 alone); medians in ms."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            fn()
            for _ in range(BLOCK):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


# -- locally connected -----------------------------------------------------------------------
LOCAL_CASES = [
    # name, N, C, O, input size, kernel, stride, padding
    ("lenet-like 3->16 32x32 k5", 32, 3, 16, 32, 5, 1, 0),
    ("16->32 16x16 k3 p1", 16, 16, 32, 16, 3, 1, 1),
    ("8->16 24x24 k3 s2", 32, 8, 16, 24, 3, 2, 0),
    ("face-like 32->32 12x12 k3", 8, 32, 32, 12, 3, 1, 0),
]


def bench_local(reps: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [_local_case(case, rng, reps) for case in LOCAL_CASES]


def _local_case(case: tuple, rng: np.random.Generator, reps: int) -> dict:
    name, n, c, o, size, k, s, p = case
    layer = nn.Conv2dLocal(c, o, size, k, stride=s, padding=p)
    oh, ow = layer.output_size
    x_np = rng.standard_normal((n, c, size, size)).astype(np.float32)
    x_ours = npconv.tensor(x_np, requires_grad=True)
    x_torch = torch.from_numpy(x_np.copy()).requires_grad_(True)
    w_torch = torch.from_numpy(layer.weight.numpy().copy()).requires_grad_(True)
    b_torch = torch.from_numpy(layer.bias.numpy().copy()).requires_grad_(True)

    def torch_local(x):
        cols = TF.unfold(x, k, padding=p, stride=s)  # (N, C*k*k, L)
        y = torch.einsum("ncl,loc->nol", cols, w_torch.view(oh * ow, o, c * k * k))
        return y.reshape(n, o, oh, ow) + b_torch

    def ours_fwd():
        with npconv.no_grad():
            layer(x_np)

    def torch_fwd():
        with torch.no_grad():
            torch_local(x_torch)

    def ours_train():
        layer.zero_grad()
        x_ours.grad = None
        layer(x_ours).sum().backward()

    def torch_train():
        x_torch.grad = w_torch.grad = b_torch.grad = None
        torch_local(x_torch).sum().backward()

    with npconv.no_grad():
        y_ours = layer(x_np).numpy()
    with torch.no_grad():
        y_torch = torch_local(x_torch).numpy()
    error = float(np.linalg.norm(y_ours - y_torch) / np.linalg.norm(y_torch))
    fwd = _median_ms({"npconv": ours_fwd, "torch": torch_fwd}, reps)
    train = _median_ms({"npconv": ours_train, "torch": torch_train}, reps)
    print(f"{name:28s} fwd {fwd['npconv']:8.2f} ms vs torch {fwd['torch']:8.2f} ms "
          f"(x{fwd['npconv'] / fwd['torch']:.2f})   fwd+bwd {train['npconv']:8.2f} ms vs "
          f"{train['torch']:8.2f} ms (x{train['npconv'] / train['torch']:.2f})   rel.diff {error:.1e}",
          flush=True)
    return dict(case=name, fwd=fwd, train=train, error=error)


# -- connection tables -----------------------------------------------------------------------
MAP_CASES = [
    # name, N, C, O, n_to (inputs per output), size, kernel
    ("16->32 n_to=1 (6%)", 16, 16, 32, 1, 24, 5),
    ("16->32 n_to=4 (25%)", 16, 16, 32, 4, 24, 5),
    ("16->32 n_to=16 (full)", 16, 16, 32, 16, 24, 5),
    ("64->64 n_to=1 (1.6%)", 8, 64, 64, 1, 16, 3),
    ("64->64 n_to=2 (3%)", 8, 64, 64, 2, 16, 3),
    ("64->64 n_to=4 (6%)", 8, 64, 64, 4, 16, 3),
    ("64->64 one_to_one", 8, 64, 64, 0, 16, 3),
]


def bench_map(reps: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [_map_case(case, rng, reps) for case in MAP_CASES]


def _map_case(case: tuple, rng: np.random.Generator, reps: int) -> dict:
    name, n, c, o, n_to, size, k = case
    table = nn.tables.one_to_one(c) if n_to == 0 else nn.tables.random(c, o, n_to, seed=0)
    layers = {method: nn.Conv2dMap(table, k, padding=k // 2, method=method)
              for method in ("auto", "dense", "sparse")}
    for layer in layers.values():
        layer.load_state_dict(layers["auto"].state_dict())
    x_np = rng.standard_normal((n, c, size, size)).astype(np.float32)
    dense = np.zeros((o, c, k, k), np.float32)
    dense[table[:, 1], table[:, 0]] = layers["auto"].weight.numpy()
    connected = np.zeros((o, c, 1, 1), np.float32)
    connected[table[:, 1], table[:, 0]] = 1
    mask = torch.from_numpy(connected)
    w_torch = torch.from_numpy(dense).requires_grad_(True)
    b_torch = torch.from_numpy(layers["auto"].bias.numpy().copy()).requires_grad_(True)
    x_torch = torch.from_numpy(x_np.copy()).requires_grad_(True)

    def torch_map(x):
        return TF.conv2d(x, w_torch * mask, b_torch, padding=k // 2)

    fns_fwd: dict[str, Callable[[], None]] = {}
    fns_train: dict[str, Callable[[], None]] = {}
    for method, layer in layers.items():
        x_ours = npconv.tensor(x_np, requires_grad=True)

        def fwd(layer=layer):
            with npconv.no_grad():
                layer(x_np)

        def train(layer=layer, x_ours=x_ours):
            layer.zero_grad()
            x_ours.grad = None
            layer(x_ours).sum().backward()

        fns_fwd[method], fns_train[method] = fwd, train

    def torch_fwd():
        with torch.no_grad():
            torch_map(x_torch)

    def torch_train():
        x_torch.grad = w_torch.grad = b_torch.grad = None
        torch_map(x_torch).sum().backward()

    fns_fwd["torch"], fns_train["torch"] = torch_fwd, torch_train
    fwd, train = _median_ms(fns_fwd, reps), _median_ms(fns_train, reps)
    density = len(table) / (c * o)
    geom = ConvGeometry.create(k, 1, k // 2, 1, 1, ndim=2)
    threshold = local_ops.dense_fraction(x_np.shape, (k, k), len(table), geom, np.float32)
    chosen = "dense" if density >= threshold else "sparse"
    text = "  ".join(f"{m} {fwd[m]:7.2f}/{train[m]:7.2f}" for m in ("auto", "dense", "sparse", "torch"))
    print(f"{name:22s} (auto={chosen:6s}) fwd/fwd+bwd ms: {text}", flush=True)
    return dict(case=name, density=density, auto=chosen, fwd=fwd, train=train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["local", "map"], default=None)
    parser.add_argument("--spin", action="store_true", help="keep the libraries' spinning idle threads")
    args = parser.parse_args()
    wanted = {"GLIBC_TUNABLES": TUNED_MALLOC, **({} if args.spin else NO_SPIN)}
    missing = {k: v for k, v in wanted.items() if k not in os.environ}
    if missing or "OPENBLAS_CORETYPE" in os.environ:  # read at start by the allocator, BLAS and pools
        env = {key: value for key, value in {**os.environ, **missing}.items() if key != "OPENBLAS_CORETYPE"}
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)
    npconv.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"npconv vs torch {torch.__version__}, numpy {np.__version__}, {platform.machine()}, "
          f"{args.threads} threads, float32, medians of {args.reps} rounds x {BLOCK} calls, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')!r}")
    if args.only in (None, "local"):
        print("\nConv2dLocal vs torch unfold+einsum")
        bench_local(args.reps)
    if args.only in (None, "map"):
        print("\nConv2dMap (random tables, n_to inputs per output) vs torch conv2d, masked dense weight")
        bench_map(args.reps)


if __name__ == "__main__":
    main()
