"""Whole networks: npconv against torch eager and ONNX Runtime (CPU), same weights, outputs checked.

Single-layer numbers (``bench_conv.py``) miss what happens between layers: thread pools handing the
cores over, the passes between convolutions (BatchNorm, activations, residual adds, pooling) and
per-call overhead. This script builds torchvision-style ResNet-18 and MobileNetV2 (and with ``--only
silu`` a YOLOv5-style Conv-BN-SiLU backbone; the definitions
below, written once over an ``nn`` namespace, so the two libraries run the same architecture) with
torch's weights copied into npconv, eval mode, and times

* inference (no autograd) at batch 1 and 8, ``--size`` px (default 224): torch eager, ONNX Runtime
  (the torch model exported with ``torch.onnx.export``), npconv as written, and npconv after
  ``npconv.optimize_for_inference`` (BatchNorm folded into the convolutions, activations fused);
* a ResNet-18 training step at batch 8, ``--train-size`` px (default 112): forward, cross-entropy,
  backward, SGD step (momentum 0.9) for torch and npconv.

Each library is timed in its own block (a warm-up call, then ``--reps`` timed calls), the blocks
alternating library order over ``--rounds`` rounds; medians of all timed calls. Float32, ``--threads``
threads for every library. The process re-runs itself with the tuned malloc (``--malloc default``:
glibc's defaults, as users run) and the idle-pool
settings of ``bench_conv.py`` (idle threads sleep: torch's OpenMP pool, OpenBLAS's pool; ONNX
Runtime's pool with ``session.intra_op.allow_spinning=0``) unless ``--spin``. It also removes an
``OPENBLAS_CORETYPE`` from the environment (``--blas-coretype keep`` keeps it), so NumPy's and
SciPy's OpenBLAS pick their kernels for this CPU themselves: a forced ``OPENBLAS_CORETYPE=Haswell``
(the 2-vCPU Zen 5 machines of the measurements in docs/performance.md set it) runs the AVX2 sgemm at
half the speed of the AVX-512 one OpenBLAS picks there (npconv's dense convolutions run on that
sgemm; torch and ONNX Runtime do not use OpenBLAS). Outputs of every
library are compared with torch's (norm-relative error of the logits; for training, the first
step's loss, npconv's float64 gradients against torch's, and both libraries' float32 gradients
against torch's float64 ones)::

    python benchmarks/bench_networks.py [--rounds 3] [--reps 5] [--size 224] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from bench_conv import NO_SPIN, TUNED_MALLOC
from machine import cpu_description

import npconv

# -- the networks, written over an ``nn`` namespace (torch.nn or npconv.nn) --------------------------


def resnet18(nn, num_classes: int = 1000):
    """torchvision's ``resnet18`` (BasicBlock, [2, 2, 2, 2]), same module names and forward."""

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            inplanes = 64
            for index, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), 1):
                setattr(self, f"layer{index}", nn.Sequential(BasicBlock(inplanes, planes, stride),
                                                             BasicBlock(planes, planes)))
                inplanes = planes
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.flatten = nn.Flatten(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.flatten(self.avgpool(x)))

    return ResNet()


def mobilenet_v2(nn, num_classes: int = 1000):
    """torchvision's ``mobilenet_v2`` (width 1.0): ``features`` of Conv-BN-ReLU6 blocks and inverted
    residuals, ``classifier`` = Dropout + Linear; same module names and forward."""

    class ConvBNActivation(nn.Sequential):  # torchvision's Conv2dNormActivation
        def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
            padding = (kernel - 1) // 2
            super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
            super().__init__()
            hidden = int(round(c_in * expand_ratio))
            self.use_res_connect = stride == 1 and c_in == c_out
            layers = [ConvBNActivation(c_in, hidden, 1)] if expand_ratio != 1 else []
            layers += [ConvBNActivation(hidden, hidden, stride=stride, groups=hidden),
                       nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1)]
            features = [ConvBNActivation(3, 32, stride=2)]
            c_in = 32
            for t, c, n, s in settings:
                for i in range(n):
                    features.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                    c_in = c
            features.append(ConvBNActivation(c_in, 1280, 1))
            self.features = nn.Sequential(*features)
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.flatten = nn.Flatten(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            return self.classifier(self.flatten(self.pool(self.features(x))))

    return MobileNetV2()


def silu_convnet(nn, num_classes: int = 1000):
    """A YOLOv5-style backbone of Conv-BN-SiLU layers: a 6x6/2 stem, then per stage a 3x3/2
    convolution and residual bottlenecks (1x1, 3x3, + input), global pooling and a linear head. The SiLU
    networks (YOLO, EfficientNet) spend a pass per layer on the activation."""

    class ConvBNSiLU(nn.Sequential):
        def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = -1):
            padding = kernel // 2 if padding < 0 else padding
            conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
            super().__init__(conv, nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))

    class Bottleneck(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.cv1, self.cv2 = ConvBNSiLU(c, c, 1), ConvBNSiLU(c, c, 3)

        def forward(self, x):
            return x + self.cv2(self.cv1(x))

    class SiLUConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = [ConvBNSiLU(3, 16, 6, 2, 2)]
            for c_in, c_out, blocks in ((16, 32, 1), (32, 64, 2), (64, 128, 3), (128, 256, 1)):
                layers.append(ConvBNSiLU(c_in, c_out, 3, 2))
                layers += [Bottleneck(c_out) for _ in range(blocks)]
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.flatten = nn.Flatten(1)
            self.head = nn.Linear(256, num_classes)

        def forward(self, x):
            return self.head(self.flatten(self.pool(self.features(x))))

    return SiLUConvNet()


NETWORKS = {"ResNet-18": resnet18, "MobileNetV2": mobilenet_v2}
#: Run only when named in ``--only`` (not part of the issue's targets).
EXTRA_NETWORKS = {"SiLU-ConvNet": silu_convnet}


def randomize_batchnorm(torch, model) -> None:
    """Non-trivial running statistics and affine parameters (fresh ones would make BN an identity)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def npconv_copy(torch, build, torch_model):
    ours = build(npconv.nn)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()})
    return ours


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    difference = np.linalg.norm(actual.astype(np.float64) - reference)
    return float(difference / max(np.linalg.norm(reference), 1e-300))


# -- timing ----------------------------------------------------------------------------------------


def time_blocks(calls: dict[str, Callable[[], object]], rounds: int, reps: int) -> dict[str, float]:
    """Median ms per library: each library in its own block (one warm-up call, ``reps`` timed calls),
    the order of the blocks alternating from round to round."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for rnd in range(rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            calls[name]()
            for _ in range(reps):
                start = time.perf_counter()
                calls[name]()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def ort_session(torch, model, example, threads: int, spin: bool, directory: str):
    import onnxruntime as ort

    path = os.path.join(directory, f"model_{id(model)}_{example.shape[0]}.onnx")
    torch.onnx.export(model, (example,), path, dynamo=False, input_names=["x"], output_names=["y"],
                      opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:  # idle threads sleep, as the other libraries' pools in this run
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_inference(torch, name: str, batch: int, size: int, args, directory: str) -> dict:
    build = {**NETWORKS, **EXTRA_NETWORKS}[name]
    torch.manual_seed(0)
    torch_model = build(torch.nn).eval()
    randomize_batchnorm(torch, torch_model)
    ours = npconv_copy(torch, build, torch_model).eval()
    optimized = npconv.optimize_for_inference(ours) if hasattr(npconv, "optimize_for_inference") else None
    x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
    tx = torch.from_numpy(x)
    session = ort_session(torch, torch_model, tx, args.threads, args.spin, directory)

    def t_call():
        with torch.no_grad():
            return torch_model(tx).numpy()

    def ort_call():
        return session.run(None, {"x": x})[0]

    def np_call(model=ours):
        with npconv.no_grad():
            return model(npconv.from_numpy(x)).numpy()

    calls = {"torch": t_call, "onnxruntime": ort_call, "npconv": np_call}
    if optimized is not None:
        calls["npconv optimized"] = lambda: np_call(optimized)
    if optimized is not None and hasattr(npconv, "jit"):  # the optimized model's forward replayed
        traced = npconv.jit.trace(optimized, npconv.from_numpy(x))
        calls["npconv traced"] = lambda: np_call(traced)
    reference = t_call()
    errors = {lib: relative_error(call(), reference) for lib, call in calls.items() if lib != "torch"}
    ms = time_blocks(calls, args.rounds, args.reps)
    return {"kind": "inference", "network": name, "batch": batch, "size": size, "ms": ms, "errors": errors}


def run_training(torch, batch: int, size: int, args) -> dict:
    torch.manual_seed(0)
    torch_model = resnet18(torch.nn).train()
    randomize_batchnorm(torch, torch_model)
    ours = npconv_copy(torch, resnet18, torch_model).train()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    target = rng.integers(0, 1000, batch)
    tx, tt = torch.from_numpy(x), torch.from_numpy(target)
    nx, nt = npconv.from_numpy(x), npconv.from_numpy(target)
    t_opt = torch.optim.SGD(torch_model.parameters(), lr=0.01, momentum=0.9)
    n_opt = npconv.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9)
    t_loss_fn, n_loss_fn = torch.nn.CrossEntropyLoss(), npconv.nn.CrossEntropyLoss()

    def t_step():
        t_opt.zero_grad()
        loss = t_loss_fn(torch_model(tx), tt)
        loss.backward()
        t_opt.step()
        return float(loss.detach())

    def np_step():
        n_opt.zero_grad()
        loss = n_loss_fn(ours(nx), nt)
        loss.backward()
        n_opt.step()
        return float(loss.item())

    # correctness: the first step's gradients from the same weights. In float64 npconv's must equal
    # torch's; in float32 both libraries' are compared with torch's float64 ones (train-mode
    # BatchNorm's backward cancels: both libraries' float32 gradients are ~1e-2 off on this net)
    reference = copy.deepcopy(torch_model).double()
    torch.nn.CrossEntropyLoss()(reference(tx.double()), tt).backward()
    ours64 = npconv_copy(torch, resnet18, torch_model).double().train()
    npconv.nn.CrossEntropyLoss()(ours64(npconv.from_numpy(x.astype(np.float64))), nt).backward()
    losses = (t_step(), np_step())
    ref_grads = {n: p.grad.numpy() for n, p in reference.named_parameters()}
    t_grads = {n: p.grad.numpy() for n, p in torch_model.named_parameters()}

    grads64 = [(n, p.grad.numpy()) for n, p in ours64.named_parameters()]
    grads32 = [(n, p.grad.numpy()) for n, p in ours.named_parameters()]

    def worst(grads) -> float:
        return max(relative_error(g, ref_grads[n]) for n, g in grads)

    errors = {"npconv loss vs torch": abs(losses[1] - losses[0]) / abs(losses[0]),
              "float64 grads, npconv vs torch": worst(grads64),
              "float32 grads vs float64: npconv": worst(grads32),
              "torch": worst(t_grads.items())}
    ms = time_blocks({"torch": t_step, "npconv": np_step}, args.rounds, args.reps)
    return {"kind": "training step", "network": "ResNet-18", "batch": batch, "size": size, "ms": ms,
            "errors": errors}


def print_rows(rows: list[dict]) -> None:
    print("\n| network | pass | batch | px | torch ms | ORT ms | npconv ms | npconv optimized ms "
          "| npconv traced ms | npconv / torch | npconv / ORT | optimized / torch | optimized / ORT "
          "| traced / ORT | rel. error vs torch |")
    print("|---" * 16 + "|")
    for r in rows:
        ms = r["ms"]
        t, o = ms["torch"], ms.get("onnxruntime", float("nan"))
        n, p = ms["npconv"], ms.get("npconv optimized", float("nan"))
        q = ms.get("npconv traced", float("nan"))
        errors = ", ".join(f"{k} {v:.1e}" for k, v in r["errors"].items())
        print(f"| {r['network']} | {r['kind']} | {r['batch']} | {r['size']} | {t:.1f} | {o:.1f} | {n:.1f} "
              f"| {p:.1f} | {q:.1f} | {n / t:.2f} | {n / o:.2f} | {p / t:.2f} | {p / o:.2f} | {q / o:.2f} "
              f"| {errors} |", flush=True)


def blas_architectures() -> str:
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i.get('prefix')} {i.get('version')} {i.get('architecture')}"
                     for i in threadpool_info() if i.get("user_api") == "blas")


def run_all(torch, only: list[str], args: argparse.Namespace, directory: str,  # noqa: ANN001
            rows: list[dict]) -> None:
    """The selected networks' inference rows and the training step's, appended to ``rows``."""
    for name in [*NETWORKS, *EXTRA_NETWORKS]:
        if (only or name in EXTRA_NETWORKS) and not any(s in name.lower() for s in only):
            continue
        for batch in (int(b) for b in args.batches.split(",")):
            rows.append(run_inference(torch, name, batch, args.size, args, directory))
            print(f"{name} batch {batch}: {rows[-1]['ms']}", file=sys.stderr, flush=True)
    if not only or "train" in only:
        rows.append(run_training(torch, 8, args.train_size, args))
        print(f"training step: {rows[-1]['ms']}", file=sys.stderr, flush=True)


#: The neighbour process: busy for its first argument's milliseconds, asleep for the second's, in turn.
_NEIGHBOUR = """import sys, time
busy, idle = float(sys.argv[1]) / 1e3, float(sys.argv[2]) / 1e3
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < busy:
        pass
    time.sleep(idle)
"""


def start_neighbour(spec: str) -> subprocess.Popen:
    """A process taking ``busy / (busy + idle)`` of a core (``spec`` "BUSY_MS,IDLE_MS") until killed."""
    try:
        busy, idle = (float(v) for v in spec.split(","))
    except ValueError:
        raise SystemExit(f"--neighbour: expected BUSY_MS,IDLE_MS (e.g. 2,2), got {spec!r}") from None
    return subprocess.Popen([sys.executable, "-c", _NEIGHBOUR, str(busy), str(idle)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per library")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="inference image size")
    parser.add_argument("--train-size", type=int, default=112, help="training-step image size")
    parser.add_argument("--batches", default="1,8", help="inference batch sizes")
    parser.add_argument("--only", default="", help="comma-separated: resnet, mobilenet, train, silu (a "
                        "YOLOv5-style Conv-BN-SiLU backbone, only when named)")
    parser.add_argument("--json", default="benchmarks/results/bench_networks.json")
    parser.add_argument("--spin", action="store_true", help="keep the libraries' spinning idle threads")
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                        help="tuned: glibc's mmap/trim thresholds raised (GLIBC_TUNABLES, bench_conv.py's); "
                             "default: glibc's defaults, what users get (every library page-faults fresh "
                             "large blocks; npconv's own cache of freed memory is in force either way)")
    parser.add_argument("--blas-coretype", choices=("detect", "keep"), default="detect",
                        help="detect: remove OPENBLAS_CORETYPE (OpenBLAS picks its kernels); keep: keep it")
    parser.add_argument("--neighbour", default="", metavar="BUSY_MS,IDLE_MS",
                        help="run a neighbour process during the measurements, busy for BUSY_MS then asleep "
                             "for IDLE_MS in turn (e.g. 2,2: half a core in 2 ms bursts), as a shared "
                             "machine's other tenants")
    args = parser.parse_args()
    wanted = {**({"GLIBC_TUNABLES": TUNED_MALLOC} if args.malloc == "tuned" else {}),
              **({} if args.spin else NO_SPIN)}
    missing = {key: value for key, value in wanted.items() if key not in os.environ}
    drop = args.blas_coretype == "detect" and "OPENBLAS_CORETYPE" in os.environ
    clear_malloc = args.malloc == "default" and "GLIBC_TUNABLES" in os.environ
    if missing or drop or clear_malloc:  # the allocator, BLAS and thread pools read these at start: re-run
        env = {**os.environ, **missing}
        if clear_malloc:
            env.pop("GLIBC_TUNABLES")
        if drop:
            env["BENCH_REMOVED_OPENBLAS_CORETYPE"] = env.pop("OPENBLAS_CORETYPE")
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    npconv.set_num_threads(args.threads)
    only = [s for s in args.only.split(",") if s]
    meta = {"threads": args.threads, "rounds": args.rounds, "reps": args.reps, "numpy": np.__version__,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "cpu": cpu_description(),
            "core": npconv.backends.core.name, "isa": npconv.backends.core.isa,
            "load_before": os.getloadavg()[0], "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
            "memory_cache": repr(npconv.backends.memory),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "blas": blas_architectures(),
            "removed_openblas_coretype": os.environ.get("BENCH_REMOVED_OPENBLAS_CORETYPE")}
    print(f"# {args.threads} threads, numpy {np.__version__}, torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, npconv core {meta['core']} ({meta['isa']}), OMP_WAIT_POLICY="
          f"{meta['omp_wait_policy']!r}, GLIBC_TUNABLES={meta['glibc_tunables']!r}, "
          f"{meta['memory_cache']}, {args.rounds} rounds x {args.reps} reps, "
          f"load {meta['load_before']:.2f}\n# BLAS: {meta['blas']} (OPENBLAS_CORETYPE="
          f"{meta['openblas_coretype']!r}, removed from the environment: "
          f"{meta['removed_openblas_coretype']!r})")
    rows: list[dict] = []
    neighbour = start_neighbour(args.neighbour) if args.neighbour else None
    meta["neighbour"] = args.neighbour or None
    try:
        with tempfile.TemporaryDirectory() as directory:
            run_all(torch, only, args, directory, rows)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    meta["load_after"] = os.getloadavg()[0]
    print_rows(rows)
    print(f"\nload average (1 min) before {meta['load_before']:.2f}, after {meta['load_after']:.2f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "results": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
