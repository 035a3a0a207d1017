"""Each convolution of a whole network, timed inside the network, against ONNX Runtime's node.

``bench_networks.py`` says how far a network is from ONNX Runtime; this says which layers make the
difference. It builds ``bench_networks.py``'s ResNet-18 or MobileNetV2 with torch's weights, runs
ONNX Runtime on the exported model with its profiler on (the median kernel time of each node over
the timed runs) and npconv's ``optimize_for_inference`` copy with a timer around every convolution
module's ``forward`` (installed on the classes, so the modules stay hook-free and take their usual
path), and prints the convolutions side by side in execution order (ONNX Runtime fuses the
activations and residual adds into its convolution nodes; its other nodes are listed after).
Medians over ``--reps`` runs after ``--warmup``; float32, ``--threads`` threads for both; the process
re-runs itself in ``bench_networks.py``'s environment (tuned malloc, idle pools sleeping, OpenBLAS
choosing its kernels). Needs the ``bench`` extra (torch, onnx, onnxruntime)::

    python benchmarks/layers_vs_onnxruntime.py --network mobilenet --batch 8
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from bench_conv import NO_SPIN, TUNED_MALLOC
from bench_networks import EXTRA_NETWORKS, NETWORKS, npconv_copy, randomize_batchnorm

import npconv
from npconv.nn.modules.conv import _Conv
from npconv.nn.modules.fused import ConvActivation

BUILDERS = {
    "resnet": NETWORKS["ResNet-18"],
    "mobilenet": NETWORKS["MobileNetV2"],
    "silu": EXTRA_NETWORKS["SiLU-ConvNet"],
}


def onnxruntime_nodes(torch, model, x: np.ndarray, threads: int, warmup: int, reps: int,
                      directory: str) -> list[tuple[str, str, float]]:
    """``(node name, op type, median us)`` of every node, in the order of the first run."""
    import onnxruntime as ort

    path = os.path.join(directory, "model.onnx")
    torch.onnx.export(model, (torch.from_numpy(x),), path, dynamo=False, input_names=["x"],
                      output_names=["y"], opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(directory, "profile")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup + reps):
        session.run(None, {"x": x})
    with open(session.end_profiling()) as file:
        events = json.load(file)
    times: dict[str, list[float]] = collections.defaultdict(list)
    kinds: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][:-len("_kernel_time")]
            times[name].append(float(event["dur"]))
            kinds[name] = event["args"].get("op_name", "")
    return [(name, kinds[name], statistics.median(values[warmup:] or values))
            for name, values in times.items()]


def npconv_convolutions(model, x: np.ndarray, warmup: int, reps: int) -> list[tuple[object, tuple, float]]:
    """``(convolution module, input shape, median us)`` of every convolution module, in call order: the
    median over the forwards of the module's time per forward (a ``ChunkedSequential`` calls its layers
    once per chunk of images; the input shape is the first call's)."""
    times: dict[int, list[float]] = collections.defaultdict(lambda: [0.0] * (warmup + reps))
    current = [0]
    modules: dict[int, tuple[object, tuple]] = {}
    originals = {cls: cls.forward for cls in (_Conv, ConvActivation)}

    def timed(cls):
        forward = originals[cls]

        def run(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return forward(self, *args, **kwargs)
            finally:
                times[id(self)][current[0]] += (time.perf_counter() - start) * 1e6
                modules.setdefault(id(self), (self, tuple(args[0].shape)))
        return run

    try:
        for cls in originals:
            cls.forward = timed(cls)
        with npconv.no_grad():
            tensor = npconv.from_numpy(x)
            for rep in range(warmup + reps):
                current[0] = rep
                model(tensor)
    finally:
        for cls, forward in originals.items():
            cls.forward = forward
    inner = {id(m.conv) for m, _ in modules.values() if isinstance(m, ConvActivation)}
    return [(*modules[key], statistics.median(values[warmup:]))
            for key, values in times.items() if key not in inner]


def describe(module) -> str:
    conv = module.conv if isinstance(module, ConvActivation) else module
    kernel = "x".join(str(k) for k in conv.kernel_size)
    stride = f"/{conv.stride[0]}" if max(conv.stride) > 1 else ""
    groups = f" g{conv.groups}" if conv.groups > 1 else ""
    return f"{conv.in_channels}->{conv.out_channels} {kernel}{stride}{groups}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(BUILDERS), default="mobilenet")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    missing = {k: v for k, v in {"GLIBC_TUNABLES": TUNED_MALLOC, **NO_SPIN}.items() if k not in os.environ}
    if missing or "OPENBLAS_CORETYPE" in os.environ:  # read at start by the allocator, BLAS and pools
        env = {key: value for key, value in {**os.environ, **missing}.items() if key != "OPENBLAS_CORETYPE"}
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)
    import torch

    torch.set_num_threads(args.threads)
    npconv.set_num_threads(args.threads)
    build = BUILDERS[args.network]
    torch.manual_seed(0)
    torch_model = build(torch.nn).eval()
    randomize_batchnorm(torch, torch_model)
    ours = npconv.optimize_for_inference(npconv_copy(torch, build, torch_model).eval())
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as directory:
        nodes = onnxruntime_nodes(torch, torch_model, x, args.threads, args.warmup, args.reps, directory)
    convolutions = npconv_convolutions(ours, x, args.warmup, args.reps)
    theirs = [node for node in nodes if node[1] in ("Conv", "FusedConv")]
    print(f"# {args.network}, batch {args.batch}, {args.size} px, {args.threads} threads; "
          f"{len(convolutions)} npconv convolution modules, {len(theirs)} ONNX Runtime convolution nodes")
    print("| # | layer | input | npconv us | ONNX Runtime us | ratio |")
    print("|---|---|---|---|---|---|")
    for index, (module, shape, ours_us) in enumerate(convolutions):
        theirs_us = theirs[index][2] if index < len(theirs) else float("nan")
        size = "x".join(str(v) for v in shape[2:])
        print(f"| {index} | {describe(module)} | {size} | {ours_us:.0f} | {theirs_us:.0f} | "
              f"{ours_us / theirs_us:.2f} |")
    total_ours, total_theirs = sum(t for *_, t in convolutions), sum(t for *_, t in theirs)
    print(f"\nconvolutions: npconv {total_ours:.0f} us, ONNX Runtime {total_theirs:.0f} us "
          f"({total_ours / total_theirs:.2f})")
    for name, kind, us in nodes:
        if kind not in ("Conv", "FusedConv"):
            print(f"ONNX Runtime {kind} ({name}): {us:.0f} us")


if __name__ == "__main__":
    main()
