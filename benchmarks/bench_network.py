"""Whole small networks, npconv against PyTorch (CPU), side by side in one process.

Single-layer numbers (``bench_conv.py``) miss what happens between layers: thread pools that keep
spinning into the next layer, one algorithm's threading mode against another's, small layers
dominated by call overhead. This script times a few small networks built the same way in both
libraries (same weights, copied from torch), float32, forward in eval mode (no autograd) and
forward+backward of ``output.sum()`` in train mode, interleaved repetitions, medians, 2 threads
for both, with the tuned malloc and idle-thread settings of ``bench_conv.py`` (the script re-runs
itself with them unless ``--spin`` is given or they are already set)::

    python benchmarks/bench_network.py [--reps 7] [--threads 2] [--json out.json]

It also prints the largest difference between the two libraries' outputs (a sanity check, float32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from bench_conv import NO_SPIN, TUNED_MALLOC

import npconv


def resnet_like(nn):
    """3x3 conv-BN-ReLU stack: 64@56 x2, 128@28 (stride 2) x2, 256@14 (stride 2) x2."""
    layers = []
    for c_in, c_out, stride in ((64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2),
                                (256, 256, 1)):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU()]
    return nn.Sequential(*layers)


def mobilenet_like(nn):
    """Depthwise-separable blocks (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU):
    32@112 -> 64@112 -> 128@56 -> 128@56 -> 256@28."""
    layers = []
    for c_in, c_out, stride in ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2)):
        layers += [nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                   nn.BatchNorm2d(c_in), nn.ReLU(),
                   nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


def cifar_cnn(nn):
    """A small CIFAR-style classifier: 3->32->32, pool, 32->64->64, pool, linear to 10."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 10))


NETWORKS = {
    "resnet-like 6x conv3x3-BN-ReLU, batch 8, 64x56x56 in": (resnet_like, (8, 64, 56, 56)),
    "mobilenet-like 4x dw+pw blocks, batch 8, 32x112x112 in": (mobilenet_like, (8, 32, 112, 112)),
    "CIFAR-style CNN, batch 64, 3x32x32 in": (cifar_cnn, (64, 3, 32, 32)),
}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def run_network(name: str, reps: int, rng: np.random.Generator) -> dict:
    build, shape = NETWORKS[name]
    torch_net = build(torch.nn)
    ours = build(npconv.nn)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in torch_net.state_dict().items()})
    x = rng.standard_normal(shape).astype(np.float32)
    tx = torch.from_numpy(x)

    def np_forward():
        ours.eval()
        with npconv.no_grad():
            return ours(npconv.Tensor(x)).numpy()

    def np_backward():
        ours.train()
        ours(npconv.Tensor(x)).sum().backward()

    def t_forward():
        torch_net.eval()
        with torch.no_grad():
            return torch_net(tx)

    def t_backward():
        torch_net.train()
        torch_net(tx).sum().backward()

    timers = {"npconv": (np_forward, np_backward), "torch": (t_forward, t_backward)}
    for fwd, bwd in timers.values():
        fwd()
        bwd()
    samples = {(lib, kind): [] for lib in timers for kind in ("forward", "fwd+bwd")}
    for rep in range(reps):
        order = ["npconv", "torch"] if rep % 2 == 0 else ["torch", "npconv"]
        for kind, idx in (("forward", 0), ("fwd+bwd", 1)):
            for lib in order:
                samples[(lib, kind)].append(_timed(timers[lib][idx]))
    medians = {f"{lib} {kind}": statistics.median(v) for (lib, kind), v in samples.items()}
    difference = float(np.abs(np_forward() - t_forward().numpy()).max())
    return {"network": name, "ms": medians, "max_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--spin", action="store_true", help="keep the libraries' spinning idle threads")
    args = parser.parse_args()
    wanted = {"GLIBC_TUNABLES": TUNED_MALLOC, **({} if args.spin else NO_SPIN)}
    missing = {key: value for key, value in wanted.items() if key not in os.environ}
    if missing:  # the allocator and thread pools read these when they start: re-run the process
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                  {**os.environ, **missing})
    torch.set_num_threads(args.threads)
    npconv.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"# {args.threads} threads, numpy {np.__version__}, torch {torch.__version__}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')!r}, "
          f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')!r}, {args.reps} reps\n")
    print("| network | fwd npconv ms | fwd torch ms | fwd ratio | f+b npconv ms | f+b torch ms | f+b ratio "
          "| max abs diff |")
    print("|---" * 8 + "|")
    rows = []
    for name in NETWORKS:
        row = run_network(name, args.reps, rng)
        rows.append(row)
        ms = row["ms"]
        print(f"| {name} | {ms['npconv forward']:.1f} | {ms['torch forward']:.1f} "
              f"| {ms['npconv forward'] / ms['torch forward']:.2f} | {ms['npconv fwd+bwd']:.1f} "
              f"| {ms['torch fwd+bwd']:.1f} | {ms['npconv fwd+bwd'] / ms['torch fwd+bwd']:.2f} "
              f"| {row['max_abs_difference']:.1e} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"threads": args.threads, "reps": args.reps, "results": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
