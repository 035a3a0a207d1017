"""Benchmark npconv's convolutions against PyTorch's CPU path, side by side in one process.

Usage::

    python benchmarks/bench_conv.py                 # headline run (tuned glibc malloc), all cases
    python benchmarks/bench_conv.py --env both      # headline run and a default-environment run
    python benchmarks/bench_conv.py --quick --cases resnet,dw
    python benchmarks/bench_conv.py --cases depthwise --passes   # + grad_input / grad_weight alone

For every case (float32, ``--threads`` threads for both libraries) it times the forward pass and
forward+backward (gradients of input, weight and bias), the two libraries in alternating blocks
of calls (``--schedule``, below), and reports medians, the ratio npconv/torch, npconv's GFLOP/s, the
algorithm the planner picked per pass, the peak extra memory of one npconv forward (tracemalloc,
cold workspace caches) and the float32 error of npconv (and torch) against a float64 reference,
``||y32 - y64|| / ||y64||`` (the worst of output, input gradient and weight gradient).

glibc's malloc returns large blocks to the OS, so fresh allocations page-fault and swing timings
of both libraries by 1-3x depending on allocation history. Headline numbers therefore come from
a child process run with ``GLIBC_TUNABLES`` = :data:`TUNED_MALLOC`; ``--env both`` adds a run in
the default environment.

Both libraries' idle worker threads spin after each call (torch's OpenMP pool, NumPy's OpenBLAS
pool: about 2**28 cycles) and take a core from whatever runs next, so back-to-back interleaving
charges each library for the other's pool. Measured on the 2-core machine: torch's ResNet 3x3
64x56 forward takes 11 ms on its own and 23-43 ms right after an npconv call; npconv's grouped
g=32 forward 6 ms on its own and 11 ms right after a torch call. The child processes therefore
run with :data:`NO_SPIN` (idle threads sleep at once; neither library's own time changes
measurably, checked with ``--alone``). ``--spin`` keeps the libraries' defaults.

``--schedule`` decides the order of the timed calls: ``blocks`` (the default) times each library in
blocks of ``--block`` calls, each block after one untimed warm-up call, the libraries' blocks
alternating (their order reversed every round) until each has ``--reps`` calls; ``interleaved``
alternates the libraries call by call (each call then follows the other library's work: its caches
and its threads' wake-ups, which cost small calls most, docs/performance.md "a call after an idle
gap"); ``alone`` (also ``--alone``) runs all of one library's calls, then the other's.
``--passes`` also times the grad_input and grad_weight passes on their own (npconv's planner entry
points; torch's ``aten.convolution_backward`` with one output requested), for plain convolutions.
The engine (npconv's compiled core and its ISA variant, or the NumPy engine) is in the run's title.
The child processes run without an ``OPENBLAS_CORETYPE`` from the environment (``--blas-coretype
keep`` keeps it), so NumPy's OpenBLAS picks the kernels for this CPU itself: a forced ``Haswell``
(which the Zen 5 machines of docs/performance.md set) halves its sgemm speed there. The BLAS
libraries' kernel choice is in the run's title.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from machine import cpu_description

TUNED_MALLOC = "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824"
#: Idle worker threads sleep instead of spinning: torch's OpenMP pool and NumPy's OpenBLAS pool
#: (OpenBLAS's minimum timeout, 2**4 cycles).
NO_SPIN = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
#: ``--cap-isa avx2``: every library held to its AVX2 kernels (the AMD Zen 3 machines have no AVX-512).
CAP_AVX2 = {"NPCONV_ISA": "avx2", "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
            "ONEDNN_MAX_CPU_ISA": "AVX2"}


@dataclass(frozen=True)
class Case:
    name: str
    category: str  # "dense", "depthwise/grouped", "large-kernel/long-1d"
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    transposed: bool = False
    output_padding: int = 0

    @property
    def ndim(self) -> int:
        return len(self.size)

    def weight_shape(self) -> tuple[int, ...]:
        k = (self.kernel,) * self.ndim
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups) + k
        return (self.out_channels, self.in_channels // self.groups) + k

    def conv_positions(self) -> int:
        """Output positions of the underlying (non-transposed) convolution."""
        if self.transposed:
            return math.prod(self.size)
        e = self.dilation * (self.kernel - 1) + 1
        return math.prod((n + 2 * self.padding - e) // self.stride + 1 for n in self.size)

    def forward_flops(self) -> float:
        return 2.0 * self.batch * self.conv_positions() * math.prod(self.weight_shape())


CASES = [
    Case("resnet3x3_64x56", "dense", 8, 64, 64, (56, 56), 3, padding=1),
    Case("resnet3x3_128x28", "dense", 8, 128, 128, (28, 28), 3, padding=1),
    Case("resnet3x3_256x14", "dense", 8, 256, 256, (14, 14), 3, padding=1),
    Case("stem7x7s2_224", "dense", 8, 3, 64, (224, 224), 7, stride=2, padding=3),
    Case("1x1_256to1024_14", "dense", 8, 256, 1024, (14, 14), 1),
    Case("strided3x3_64to128_56", "dense", 8, 64, 128, (56, 56), 3, stride=2, padding=1),
    Case("dilated3x3_64x56_d2", "dense", 8, 64, 64, (56, 56), 3, padding=2, dilation=2),
    Case("audio1d_64x4096_k7", "dense", 8, 64, 64, (4096,), 7, padding=3),
    Case("conv3d_32x32^3_k3", "dense", 2, 32, 32, (32, 32, 32), 3, padding=1),
    Case("convT4x4s2_128to64_28", "dense", 8, 128, 64, (28, 28), 4, stride=2, padding=1, transposed=True),
    Case("convT3x3_64x56", "dense", 8, 64, 64, (56, 56), 3, padding=1, transposed=True),
    Case("dense13x13_64x32", "dense", 4, 64, 64, (32, 32), 13, padding=6),
    Case("depthwise3x3_128x56", "depthwise/grouped", 8, 128, 128, (56, 56), 3, padding=1, groups=128),
    Case("depthwise3x3s2_128x56", "depthwise/grouped", 8, 128, 128, (56, 56), 3, stride=2, padding=1,
         groups=128),
    Case("depthwise3x3_256x28", "depthwise/grouped", 8, 256, 256, (28, 28), 3, padding=1, groups=256),
    Case("depthwise5x5_128x56", "depthwise/grouped", 8, 128, 128, (56, 56), 5, padding=2, groups=128),
    Case("grouped3x3_g32_256x28", "depthwise/grouped", 8, 256, 256, (28, 28), 3, padding=1, groups=32),
    Case("depthwise31x31_64x56", "large-kernel/long-1d", 2, 64, 64, (56, 56), 31, padding=15, groups=64),
    Case(
        "depthwise1d_k1023_16384", "large-kernel/long-1d", 2, 32, 32, (16384,), 1023, padding=511, groups=32
    ),
]

#: Issue 12's targets: the geometric mean of npconv/torch per category and pass must be at most the
#: first number, and no single case of the category above the second (None: no per-case limit).
TARGETS = {
    ("dense", "forward"): (0.8, 1.2),
    ("dense", "fwd+bwd"): (0.8, 1.2),
    ("depthwise/grouped", "forward"): (0.5, None),
    ("depthwise/grouped", "fwd+bwd"): (0.5, None),
    ("large-kernel/long-1d", "forward"): (0.05, None),
    ("large-kernel/long-1d", "fwd+bwd"): (0.05, None),
}


@dataclass
class Result:
    case: str
    category: str
    forward_ms: dict[str, float] = field(default_factory=dict)
    backward_ms: dict[str, float] = field(default_factory=dict)  # forward + backward
    #: with --passes: {"grad_input": {lib: ms}, "grad_weight": {lib: ms}}
    pass_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    gflops_forward: float = 0.0
    gflops_fwd_bwd: float = 0.0
    algorithms: dict[str, str] = field(default_factory=dict)
    peak_extra_mib: float = 0.0
    memory_bound_mib: float = 0.0
    error_npconv: float = 0.0
    error_torch: float = float("nan")


def _npconv_call(case: Case, F, x, w, b):  # noqa: N803 (F is the functional module)
    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    if case.transposed:
        return F.conv_transpose(x, w, b, output_padding=case.output_padding, **kw)
    return F.conv(x, w, b, **kw)


def _torch_call(case: Case, torch, x, w, b):
    F = torch.nn.functional  # noqa: N806
    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    if case.transposed:
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[case.ndim]
        return fn(x, w, b, output_padding=case.output_padding, **kw)
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[case.ndim](x, w, b, **kw)


def _relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    return float(
        np.linalg.norm((actual.astype(np.float64) - reference).ravel())
        / max(np.linalg.norm(reference.ravel()), 1e-300)
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _samples(calls: dict[str, Callable[[], object]], reps: int, schedule: str,
             block: int) -> dict[str, list[float]]:
    """``reps`` (or more: whole blocks) timed calls per library in ``schedule``'s order (see the module
    docstring), after one warm-up call each."""
    for fn in calls.values():
        fn()
    samples: dict[str, list[float]] = {lib: [] for lib in calls}
    names = list(calls)
    if schedule == "alone":
        for lib in names:
            samples[lib].extend(_timed(calls[lib]) for _ in range(reps))
    elif schedule == "interleaved":
        for rep in range(reps):
            for lib in names if rep % 2 == 0 else names[::-1]:
                samples[lib].append(_timed(calls[lib]))
    else:
        for rnd in range(-(-reps // block)):
            for lib in names if rnd % 2 == 0 else names[::-1]:
                calls[lib]()  # the block's warm-up: after the other library's block
                samples[lib].extend(_timed(calls[lib]) for _ in range(block))
    return samples


def _time_passes(case: Case, reps: int, torch, x, w, gy, geom, schedule: str = "blocks",
                 block: int = 3) -> dict[str, dict[str, float]]:
    """grad_input and grad_weight on their own, the libraries in ``schedule``'s order."""
    from npconv.kernels import plan

    calls = {"grad_input": {"npconv": lambda: plan.grad_input(gy, w, geom, x.shape[2:])},
             "grad_weight": {"npconv": lambda: plan.grad_weight(x, gy, geom)}}
    if torch is not None:
        tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
        args = (list(case.stride if isinstance(case.stride, tuple) else (case.stride,) * case.ndim),
                [lo for lo, _ in geom.pads()], list(geom.dilation), False, [0] * case.ndim, case.groups)

        def torch_pass(mask):
            return lambda: torch.ops.aten.convolution_backward(tgy, tx, tw, None, *args, mask)

        calls["grad_input"]["torch"] = torch_pass([True, False, False])
        calls["grad_weight"]["torch"] = torch_pass([False, True, False])
    result: dict[str, dict[str, float]] = {}
    for pass_name, libs in calls.items():
        samples = _samples(libs, reps, schedule, block)
        result[pass_name] = {lib: statistics.median(v) for lib, v in samples.items()}
    return result


def run_case(case: Case, reps: int, torch, rng: np.random.Generator, schedule: str = "blocks",
             passes: bool = False, block: int = 3) -> Result:
    import npconv
    from npconv.geometry import ConvGeometry
    from npconv.kernels import gemm, plan
    from npconv.kernels.algorithm import PASSES
    from npconv.nn import functional as F  # noqa: N812

    x64 = rng.standard_normal((case.batch, case.in_channels) + case.size)
    w64 = rng.standard_normal(case.weight_shape()) / math.sqrt(math.prod(case.weight_shape()[1:]))
    b64 = rng.standard_normal(case.out_channels) * 0.1
    x, w, b = (a.astype(np.float32) for a in (x64, w64, b64))
    with npconv.no_grad():
        y_shape = _npconv_call(case, F, npconv.tensor(x[:1]), npconv.tensor(w), None).shape
    gy64 = rng.standard_normal((case.batch,) + tuple(y_shape[1:]))
    gy = gy64.astype(np.float32)
    result = Result(case.name, case.category)

    # which algorithm the planner picks per pass; a transposed convolution runs the adjoint passes
    geom = ConvGeometry.create(
        case.kernel,
        case.stride,
        case.padding,
        case.dilation,
        case.groups,
        case.output_padding,
        case.ndim,
        case.transposed,
    )
    geom = geom.with_padding(geom.pads())
    if case.transposed:  # the underlying convolution maps y's shape to x's shape
        conv_x = (case.batch, case.out_channels) + tuple(y_shape[2:])
        roles = {"forward": "grad_input", "grad_input": "forward", "grad_weight": "grad_weight"}
    else:
        conv_x = x.shape
        roles = {p: p for p in PASSES}
    for role, pass_name in roles.items():
        result.algorithms[role] = plan.choose(pass_name, conv_x, case.weight_shape(), geom, np.float32)
    tx_np, tw_np, tb_np = (npconv.Tensor(a) for a in (x, w, b))

    def np_forward():
        with npconv.no_grad():
            return _npconv_call(case, F, tx_np, tw_np, tb_np).numpy()

    def np_backward():
        xt, wt, bt = (npconv.Tensor(a, requires_grad=True) for a in (x, w, b))
        _npconv_call(case, F, xt, wt, bt).backward(gy)
        return xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()

    timers = {"npconv": (np_forward, np_backward)}
    if torch is not None:
        tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))

        def t_forward():
            with torch.no_grad():
                return _torch_call(case, torch, tx, tw, tb)

        def t_backward():
            xt, wt, bt = (a.clone().requires_grad_() for a in (tx, tw, tb))
            _torch_call(case, torch, xt, wt, bt).backward(tgy)
            return xt.grad, wt.grad, bt.grad

        timers["torch"] = (t_forward, t_backward)

    # the forward, then forward+backward, each timed in ``schedule``'s order (module docstring)
    for kind, idx in (("forward", 0), ("backward", 1)):
        samples = _samples({lib: fns[idx] for lib, fns in timers.items()}, reps, schedule, block)
        target = result.forward_ms if kind == "forward" else result.backward_ms
        for lib, values in samples.items():
            target[lib] = statistics.median(values)
    flops = case.forward_flops()
    result.gflops_forward = flops / result.forward_ms["npconv"] / 1e6
    result.gflops_fwd_bwd = 3 * flops / result.backward_ms["npconv"] / 1e6
    if passes and not case.transposed:
        result.pass_ms = _time_passes(case, reps, torch, x, w, gy, geom, schedule, block)

    # peak extra memory of one forward with cold workspace caches
    gemm.clear_workspace()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    y = np_forward()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    result.peak_extra_mib = peak / 2**20
    result.memory_bound_mib = (2 * (x.nbytes + y.nbytes) + 64 * 2**20) / 2**20

    # float32 accuracy against a float64 reference (torch float64 when available, else npconv)
    ys = [y, *np_backward()]
    if torch is not None:
        refs = []
        xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x64, w64, b64))
        out = _torch_call(case, torch, xt, wt, bt)
        out.backward(torch.from_numpy(gy64))
        refs = [out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]
        t32 = [t_forward().numpy(), *(g.numpy() for g in t_backward())]
        result.error_torch = max(_relative_error(a, r) for a, r in zip(t32[:3], refs[:3], strict=True))
    else:
        with npconv.no_grad():
            ref = _npconv_call(case, F, npconv.tensor(x64), npconv.tensor(w64), npconv.tensor(b64)).numpy()
        xt, wt, bt = (npconv.tensor(a, requires_grad=True) for a in (x64, w64, b64))
        _npconv_call(case, F, xt, wt, bt).backward(gy64)
        refs = [ref, xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]
    result.error_npconv = max(_relative_error(a, r) for a, r in zip(ys[:3], refs[:3], strict=True))
    return result


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(results: list[dict]) -> dict:
    summary = {}
    for category in dict.fromkeys(r["category"] for r in results):
        rows = [r for r in results if r["category"] == category and "torch" in r["forward_ms"]]
        for kind, key in (("forward", "forward_ms"), ("fwd+bwd", "backward_ms")):
            ratios = [r[key]["npconv"] / r[key]["torch"] for r in rows]
            if ratios:
                summary[f"{category} {kind}"] = {
                    "geomean_ratio": geometric_mean(ratios),
                    "max_ratio": max(ratios),
                    "target": TARGETS.get((category, kind), (None, None))[0],
                    "max_target": TARGETS.get((category, kind), (None, None))[1],
                }
    return summary


def print_table(results: list[dict], title: str) -> None:
    from npconv.kernels.algorithm import PASSES

    print(f"\n## {title}\n")
    print(
        "| case | fwd npconv ms | fwd torch ms | fwd ratio | fwd GFLOP/s | f+b npconv ms | f+b torch ms "
        "| f+b ratio | f+b GFLOP/s | algorithms (F/GI/GW) | peak MiB (bound) | err npconv | err torch |"
    )
    print("|---" * 13 + "|")
    for r in results:
        f, bk = r["forward_ms"], r["backward_ms"]
        tf, tb = f.get("torch", float("nan")), bk.get("torch", float("nan"))
        algos = "/".join(str(r["algorithms"].get(p)) for p in PASSES)
        print(
            f"| {r['case']} | {f['npconv']:.2f} | {tf:.2f} | {f['npconv'] / tf:.2f} "
            f"| {r['gflops_forward']:.0f} | {bk['npconv']:.2f} | {tb:.2f} | {bk['npconv'] / tb:.2f} "
            f"| {r['gflops_fwd_bwd']:.0f} | {algos} "
            f"| {r['peak_extra_mib']:.0f} ({r['memory_bound_mib']:.0f}) | {r['error_npconv']:.1e} "
            f"| {r['error_torch']:.1e} |"
        )
    print("\n| category | pass | geomean ratio | max ratio | target (geomean; each case) | met |\n"
          "|---|---|---|---|---|---|")
    for key, s in summarize(results).items():
        category, kind = key.rsplit(" ", 1)
        limit = f"<= {s['target']}" + (f"; <= {s['max_target']}" if s["max_target"] is not None else "")
        met = s["target"] is not None and s["geomean_ratio"] <= s["target"] and (
            s["max_target"] is None or s["max_ratio"] <= s["max_target"])
        print(f"| {category} | {kind} | {s['geomean_ratio']:.2f} | {s['max_ratio']:.2f} | {limit} "
              f"| {'yes' if met else 'no'} |")
    timed = [r for r in results if r.get("pass_ms")]
    if timed:
        print("\n| case | forward npconv / torch ms | grad_input npconv / torch ms "
              "| grad_weight npconv / torch ms |\n|---|---|---|---|")
        for r in timed:
            cells = [(r["forward_ms"]["npconv"], r["forward_ms"].get("torch", float("nan")))]
            cells += [(r["pass_ms"][p]["npconv"], r["pass_ms"][p].get("torch", float("nan")))
                      for p in ("grad_input", "grad_weight")]
            row = " | ".join(f"{a:.2f} / {b:.2f} = {a / b:.2f}" for a, b in cells)
            print(f"| {r['case']} | {row} |")


def worker(args: argparse.Namespace) -> dict:
    import npconv

    try:
        import torch
    except ImportError:
        torch = None
    npconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    selected = [c for c in CASES if not args.cases or any(p in c.name for p in args.cases.split(","))]
    rng = np.random.default_rng(0)
    results = []
    for case in selected:
        r = run_case(case, args.reps, torch, rng, args.schedule, args.passes, args.block)
        results.append(asdict(r))
        f, bk = r.forward_ms, r.backward_ms
        print(
            f"{case.name:28s} fwd {f['npconv']:8.2f} ms (torch {f.get('torch', float('nan')):8.2f})  "
            f"f+b {bk['npconv']:8.2f} ms (torch {bk.get('torch', float('nan')):8.2f})  {r.algorithms}",
            file=sys.stderr,
            flush=True,
        )
    import scipy
    from threadpoolctl import threadpool_info

    meta = {
        "machine": platform.machine(),
        "cpu": cpu_description(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": getattr(torch, "__version__", None),
        "npconv": npconv.__version__,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "reps": args.reps,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT", ""),
        "order": args.schedule if args.schedule != "blocks" else f"blocks of {args.block}",
        "core": npconv.backends.core.name,
        "isa": npconv.backends.core.isa,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability() if torch is not None else None,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "blas": ", ".join(f"{i.get('prefix')} {i.get('version')} {i.get('architecture')}"
                          for i in threadpool_info() if i.get("user_api") == "blas"),
    }
    return {"meta": meta, "results": results, "summary": summarize(results)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of --reps")
    parser.add_argument("--reps", type=int, default=9, help="timed calls per library and measurement")
    parser.add_argument("--cases", default="", help="comma-separated substrings of case names to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--env",
        choices=("tuned", "default", "both"),
        default="tuned",
        help="allocator environment(s): tuned glibc malloc (headline), default, or both",
    )
    parser.add_argument(
        "--spin", action="store_true", help="keep the libraries' spinning idle threads (no NO_SPIN)"
    )
    parser.add_argument("--schedule", choices=("blocks", "interleaved", "alone"), default="blocks",
                        help="order of the timed calls (module docstring)")
    parser.add_argument("--block", type=int, default=3, help="timed calls per block (--schedule blocks)")
    parser.add_argument(
        "--alone", action="store_true", help="the same as --schedule alone"
    )
    parser.add_argument("--passes", action="store_true", help="also time grad_input and grad_weight alone")
    parser.add_argument("--blas-coretype", choices=("detect", "keep"), default="detect",
                        help="detect: no OPENBLAS_CORETYPE (OpenBLAS picks its kernels); keep: keep it")
    parser.add_argument("--cap-isa", choices=("native", "avx2"), default="native",
                        help="avx2: every library on its AVX2 kernels (npconv NPCONV_ISA=avx2, OpenBLAS "
                             "OPENBLAS_CORETYPE=Haswell, torch ATEN_CPU_CAPABILITY=avx2 and "
                             "ONEDNN_MAX_CPU_ISA=AVX2), as on an AVX2-only CPU")
    parser.add_argument("--json", default="benchmarks/results/bench_conv.json", help="output JSON path")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.reps = 3
    if args.alone:
        args.schedule = "alone"
    if args.block < 1:
        parser.error(f"--block must be at least 1, got {args.block}")
    if args.worker:
        json.dump(worker(args), sys.stdout)
        return
    runs = {}
    for env_name in ("tuned", "default") if args.env == "both" else (args.env,):
        env = dict(os.environ)
        if env_name == "tuned":
            env["GLIBC_TUNABLES"] = TUNED_MALLOC
        else:
            env.pop("GLIBC_TUNABLES", None)
        if args.blas_coretype == "detect":
            env.pop("OPENBLAS_CORETYPE", None)
        if not args.spin:  # values already set in the environment win
            for key, value in NO_SPIN.items():
                env.setdefault(key, value)
        if args.cap_isa == "avx2":
            env.update(CAP_AVX2)
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--reps",
            str(args.reps),
            "--threads",
            str(args.threads),
            "--cases",
            args.cases,
            "--schedule",
            args.schedule,
            "--block",
            str(args.block),
        ] + (["--passes"] if args.passes else [])
        print(f"running the {env_name} environment ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, check=True, text=True)
        runs[env_name] = json.loads(done.stdout)
    for env_name, run in runs.items():
        meta = run["meta"]
        print_table(
            run["results"],
            f"{env_name} environment (GLIBC_TUNABLES={meta['glibc_tunables']!r}, "
            f"OMP_WAIT_POLICY={meta['omp_wait_policy']!r}, "
            f"OPENBLAS_THREAD_TIMEOUT={meta['openblas_thread_timeout']!r}); {meta['order']}; "
            f"{meta['threads']} threads; numpy {meta['numpy']}, scipy {meta['scipy']}, "
            f"torch {meta['torch']}, {meta['cpus']} CPUs, {meta['reps']} reps; npconv core "
            f"{meta.get('core')} ({meta.get('isa')}); BLAS {meta.get('blas')} (OPENBLAS_CORETYPE="
            f"{meta.get('openblas_coretype')!r}); torch {meta.get('torch_cpu_capability')} "
            f"(ONEDNN_MAX_CPU_ISA={meta.get('onednn_max_cpu_isa')!r})",
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump(runs, handle, indent=1)
    print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
