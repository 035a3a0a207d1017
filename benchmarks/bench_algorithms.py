"""Micro-benchmark of npconv's specialised convolution algorithms against PyTorch (CPU).

Each case calls one registered algorithm (``npconv.kernels.algorithm.get(name)``: the implementation
the planner uses, compiled if available) directly, for one pass, and torch's own kernel for the same pass
(``aten.convolution`` / ``aten.convolution_backward`` with only that gradient requested), in
one process, interleaved repetitions, medians; float32; 2 threads for both libraries.
It also prints the float32 result's norm-relative error against a float64 reference.

Run (headline numbers; the malloc settings must be set before the process starts)::

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824 \\
        python benchmarks/bench_algorithms.py [--reps 7] [--only fft,depthwise,winograd] [--json out.json]

On a machine shared with other jobs, ``--threads 1 --cpu-time`` compares the CPU time each
library spends (both then run entirely in the calling thread), which contention barely changes.

Like ``bench_conv.py``, the script re-runs itself with ``bench_conv.NO_SPIN`` set (idle torch
OpenMP and OpenBLAS threads sleep instead of spinning into the other library's call) unless
``--spin`` is given or the variables are already set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from bench_conv import NO_SPIN
from machine import cpu_description

import npconv
from npconv.geometry import ConvGeometry
from npconv.kernels import algorithm as registry


def _module(name: str) -> registry.Algorithm:
    return registry.get(name)


@dataclass
class Case:
    name: str
    algorithm: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    padding: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    passes: tuple[str, ...] = registry.PASSES

    def geom(self) -> ConvGeometry:
        nd = len(self.x_shape) - 2
        return ConvGeometry.create(self.w_shape[2:], self.stride, self.padding, self.dilation, self.groups,
                                   ndim=nd).with_padding(((self.padding, self.padding),) * nd)

    def flops(self) -> float:
        geom = self.geom()
        out = geom.output_size(self.x_shape[2:])
        return 2.0 * self.x_shape[0] * self.w_shape[0] * math.prod(out) * math.prod(self.w_shape[1:])


CASES = [
    Case("resnet 3x3 64x56x56", "winograd", (8, 64, 56, 56), (64, 64, 3, 3), 1),
    Case("resnet 3x3 128x28x28", "winograd", (8, 128, 28, 28), (128, 128, 3, 3), 1),
    Case("resnet 3x3 256x14x14", "winograd", (8, 256, 14, 14), (256, 256, 3, 3), 1),
    # torch's depthwise 31x31 grad_weight at batch 8 took > 20 GB and minutes here: batch 1, 32 channels
    Case("depthwise 31x31 128x64x64", "fft", (8, 128, 64, 64), (128, 1, 31, 31), 15, groups=128,
         passes=("forward", "grad_input")),
    Case("depthwise 31x31 32x64x64 b1", "fft", (1, 32, 64, 64), (32, 1, 31, 31), 15, groups=32,
         passes=("grad_weight",)),
    Case("1-D depthwise k1023 64x16384", "fft", (1, 64, 16384), (64, 1, 1023), 511, groups=64),
    Case("depthwise 3x3 128x56x56", "depthwise", (8, 128, 56, 56), (128, 1, 3, 3), 1, groups=128),
    Case("depthwise 5x5 256x28x28", "depthwise", (8, 256, 28, 28), (256, 1, 5, 5), 2, groups=256),
    Case("depthwise 3x3/2 128x56x56", "depthwise", (8, 128, 56, 56), (128, 1, 3, 3), 1, stride=2, groups=128),
]


def _torch_pass(case: Case, pass_name: str, x, w, gy):
    nd = len(case.x_shape) - 2
    args = ((case.stride,) * nd, (case.padding,) * nd, (case.dilation,) * nd, False, (0,) * nd, case.groups)
    if pass_name == "forward":
        return lambda: torch.ops.aten.convolution(x, w, None, *args)
    mask = [pass_name == "grad_input", pass_name == "grad_weight", False]
    return lambda: torch.ops.aten.convolution_backward(gy, x, w, None, *args, mask)


def _np_pass(case: Case, pass_name: str, x, w, gy):
    module, geom = _module(case.algorithm), case.geom()
    if pass_name == "forward":
        return lambda: module.forward(x, w, geom)
    if pass_name == "grad_input":
        return lambda: module.grad_input(gy, w, geom, x.shape[2:])
    return lambda: module.grad_weight(x, gy, geom)


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def run_case(case: Case, pass_name: str, reps: int, rng: np.random.Generator,
             clock=time.perf_counter) -> dict | None:
    module, geom = _module(case.algorithm), case.geom()
    if pass_name not in case.passes or not module.runs(pass_name, case.x_shape, case.w_shape, geom,
                                                           np.dtype(np.float32)):
        return None
    out = geom.output_size(case.x_shape[2:])
    x64 = rng.standard_normal(case.x_shape)
    w64 = rng.standard_normal(case.w_shape) / math.sqrt(math.prod(case.w_shape[1:]))
    gy64 = rng.standard_normal((case.x_shape[0], case.w_shape[0]) + out)
    x, w, gy = (a.astype(np.float32) for a in (x64, w64, gy64))
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
    npf, tf = _np_pass(case, pass_name, x, w, gy), _torch_pass(case, pass_name, tx, tw, tgy)
    result32 = npf()
    tf()
    np_times, torch_times = [], []
    for _ in range(reps):
        t0 = clock()
        npf()
        t1 = clock()
        tf()
        t2 = clock()
        np_times.append(t1 - t0)
        torch_times.append(t2 - t1)
    ref = _np_pass(case, pass_name, x64, w64, gy64)()  # float64 run of the same algorithm
    tref = _torch_pass(case, pass_name, *(torch.from_numpy(a) for a in (x64, w64, gy64)))()
    if pass_name != "forward":
        tref = tref[0] if pass_name == "grad_input" else tref[1]
    tref = tref.numpy()
    error = float(np.linalg.norm(result32 - tref) / np.linalg.norm(tref))
    error64 = float(np.linalg.norm(ref - tref) / np.linalg.norm(tref))
    npm, tm = _median_ms(np_times), _median_ms(torch_times)
    return {"case": case.name, "algorithm": case.algorithm, "pass": pass_name, "npconv_ms": npm,
            "torch_ms": tm, "ratio": npm / tm, "npconv_gflops": case.flops() / npm / 1e6,
            "torch_gflops": case.flops() / tm / 1e6, "f32_rel_error": error, "f64_rel_error": error64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    specialised = [name for name in registry.names() if name != registry.FALLBACK]
    parser.add_argument("--only", default=",".join(specialised))
    parser.add_argument("--passes", default=",".join(registry.PASSES))
    parser.add_argument("--json", default=None)
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --threads 1: time the calling thread's CPU time (robust under load)")
    parser.add_argument("--spin", action="store_true", help="keep the libraries' spinning idle threads")
    args = parser.parse_args()
    missing = {key: value for key, value in NO_SPIN.items() if key not in os.environ}
    if missing and not args.spin:  # the thread pools read these when they start: re-run the process
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                  {**os.environ, **missing})
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time needs --threads 1 (all work then runs in the calling thread)")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    npconv.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    wanted = set(args.only.split(","))
    print(f"# {cpu_description()}, {os.cpu_count()} cores, {args.threads} threads, "
          f"numpy {np.__version__}, torch {torch.__version__}, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(default)')}, "
          f"clock={'thread CPU time' if args.cpu_time else 'wall'}, load average {os.getloadavg()[0]:.1f}")
    header = f"{'case':30s} {'alg':9s} {'pass':11s} {'npconv ms':>9s} {'torch ms':>9s} {'ratio':>6s} " \
             f"{'GF/s np':>8s} {'GF/s th':>8s} {'f32 err':>8s}"
    print(header)
    rows = []
    for case in CASES:
        if case.algorithm not in wanted:
            continue
        for pass_name in args.passes.split(","):
            row = run_case(case, pass_name, args.reps, rng, clock)
            if row is None:
                continue
            rows.append(row)
            print(f"{row['case']:30s} {row['algorithm']:9s} {pass_name:11s} {row['npconv_ms']:9.2f} "
                  f"{row['torch_ms']:9.2f} {row['ratio']:6.3f} {row['npconv_gflops']:8.1f} "
                  f"{row['torch_gflops']:8.1f} {row['f32_rel_error']:8.1e}", flush=True)
    if rows:
        print(f"geometric mean ratio: {math.exp(statistics.fmean(math.log(r['ratio']) for r in rows)):.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
