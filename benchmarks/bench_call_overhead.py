"""The fixed cost of one call: npconv against torch on tiny inputs, where a call is all overhead.

A network of small layers (batch 1, small images, functional-style code) runs as fast as its calls
do. For each op below both libraries get the same tiny float32 input without autograd
(``no_grad``), and each is timed in its own block of calls (``--number`` calls, best of
``--repeat`` blocks, the libraries' blocks alternating ``--rounds`` times; the median of the rounds
is reported), in one process with the libraries' idle threads sleeping (``bench_conv.py``'s
environment). The ratio is npconv / torch: below 1, npconv's call costs less. Needs torch::

    python benchmarks/bench_call_overhead.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import timeit
from collections.abc import Callable

import numpy as np
from bench_conv import NO_SPIN, TUNED_MALLOC
from machine import cpu_description

import npconv


def cases(lib, x: np.ndarray) -> dict[str, Callable[[], object]]:
    """``name -> call`` of each op in library ``lib`` (``torch`` or ``npconv``) on tiny inputs."""
    nn, F = lib.nn, lib.nn.functional
    t = lib.from_numpy(x)
    flat = lib.from_numpy(x.reshape(1, -1).copy())
    conv = nn.Conv2d(16, 16, 3, padding=1)
    weight, bias = conv.weight.detach(), conv.bias.detach()
    depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    linear = nn.Linear(flat.shape[1], 10)
    modules = {"ReLU": nn.ReLU(), "ReLU6(inplace)": nn.ReLU6(inplace=True), "Flatten": nn.Flatten(),
               "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d(1), "MaxPool2d 3x3/2": nn.MaxPool2d(3, 2, 1),
               "BatchNorm2d (eval)": nn.BatchNorm2d(16).eval(), "Dropout (eval)": nn.Dropout(0.2).eval()}
    calls = {
        "F.conv2d 3x3": lambda: F.conv2d(t, weight, bias, 1, 1),
        "Conv2d 3x3": lambda: conv(t),
        "Conv2d 3x3 depthwise": lambda: depthwise(t),
        "Linear": lambda: linear(flat),
        "F.relu": lambda: F.relu(t),
        "add": lambda: t + t,
    }
    calls.update({name: (lambda m=m: m(t)) for name, m in modules.items()})
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=8, help="the tiny input: (1, 16, size, size)")
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    missing = {k: v for k, v in {"GLIBC_TUNABLES": TUNED_MALLOC, **NO_SPIN}.items() if k not in os.environ}
    if missing:  # read at start by the allocator and the thread pools
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                  {**os.environ, **missing})
    import torch

    torch.set_num_threads(args.threads)
    npconv.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 16, args.size, args.size)).astype(np.float32)
    libs = {"torch": (torch, torch.no_grad), "npconv": (npconv, npconv.no_grad)}
    calls = {name: cases(lib, x) for name, (lib, _) in libs.items()}
    times: dict[str, dict[str, list[float]]] = {op: {name: [] for name in libs} for op in calls["npconv"]}
    for op in times:
        for round_ in range(args.rounds):
            for name in (("npconv", "torch") if round_ % 2 else ("torch", "npconv")):
                with libs[name][1]():
                    call = calls[name][op]
                    call()
                    best = min(timeit.repeat(call, number=args.number, repeat=args.repeat))
                times[op][name].append(best / args.number * 1e6)
    print(f"# one call on a (1, 16, {args.size}, {args.size}) float32 input, no autograd, {args.threads} "
          f"threads; {cpu_description()}, npconv core {npconv.backends.core!r}, "
          f"torch {torch.__version__}")
    print("| op | npconv us | torch us | npconv / torch |")
    print("|---|---|---|---|")
    rows = []
    for op, by in times.items():
        ours, theirs = statistics.median(by["npconv"]), statistics.median(by["torch"])
        rows.append({"op": op, "npconv_us": ours, "torch_us": theirs, "ratio": ours / theirs})
        print(f"| {op} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"threads": args.threads, "size": args.size, "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()
