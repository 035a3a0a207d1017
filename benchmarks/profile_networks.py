"""Where a whole network's time goes between the convolution kernels (npconv only, no torch needed).

Builds ``bench_networks.py``'s ResNet-18 and MobileNetV2 (random weights, non-trivial BatchNorm
statistics) and times, with a timer wrapped around each piece:

* inference of the ``optimize_for_inference`` model: the algorithms' kernels (per algorithm), the
  planner around them with its epilogue (a module's planned call skips both: see the next lines),
  every other layer (per layer type), and the rest (module calls, functional checks, Python);
* the convolution modules' calls, the compiled core's C calls within them (``team_join`` counts the
  wait for the worker threads), and everything outside the C calls: the Python and NumPy around
  the kernels (the part that does not shrink with more threads);
* ``--train``: a ResNet-18 training step (forward, cross-entropy, backward, SGD with momentum): the
  planner's three passes, the optimizer's step and ``zero_grad``, and the rest.

``--cprofile`` prints cProfile's top functions instead. Uses ``npconv.set_num_threads(--threads)``;
run it with the environment of the benchmark you compare with (e.g. ``OPENBLAS_CORETYPE`` unset)::

    python benchmarks/profile_networks.py --network mobilenet --batch 1
    python benchmarks/profile_networks.py --train --reps 3
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import pstats
import statistics
import time
from collections.abc import Callable

import numpy as np
from bench_networks import mobilenet_v2, resnet18, silu_convnet

import npconv
from npconv.kernels import algorithm as registry
from npconv.kernels import plan, pointwise

NETWORKS = {"resnet": resnet18, "mobilenet": mobilenet_v2, "silu": silu_convnet}


def build(name: str, train: bool) -> npconv.nn.Module:
    model = NETWORKS[name](npconv.nn)
    rng = np.random.default_rng(0)
    for module in model.modules():
        if isinstance(module, npconv.nn.BatchNorm2d):
            module.running_mean.numpy()[...] = rng.standard_normal(module.num_features) * 0.1
            module.running_var.numpy()[...] = rng.random(module.num_features) * 0.5 + 0.75
    return model.train() if train else npconv.optimize_for_inference(model)


class Timers:
    """Total seconds and calls per label of the wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, owner: object, attribute: str, label: str) -> None:
        function = getattr(owner, attribute)

        @functools.wraps(function)  # keeps __name__: run_spans finds a kernel's _job twin by it
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        setattr(owner, attribute, timed)

    def total(self, prefix: str) -> float:
        return sum(v for k, v in self.seconds.items() if k.startswith(prefix))


def median_ms(call: Callable[[], object], reps: int) -> float:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(NETWORKS), default="mobilenet")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train", action="store_true", help="a ResNet-18 training step (batch 8, 112 px)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--cache-mib", type=int, default=None,
                        help="npconv.backends.memory.cache_limit in MiB (0: no cache of freed array memory)")
    args = parser.parse_args()
    npconv.set_num_threads(args.threads)
    if args.cache_mib is not None:
        npconv.backends.memory.cache_limit = args.cache_mib << 20
    rng = np.random.default_rng(1)
    timers = Timers()
    if args.train:
        model = build("resnet", train=True)
        x = npconv.from_numpy(rng.standard_normal((8, 3, 112, 112)).astype(np.float32))
        target = npconv.from_numpy(rng.integers(0, 1000, 8))
        optimizer = npconv.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = npconv.nn.CrossEntropyLoss()

        def call() -> None:
            optimizer.zero_grad()
            loss_fn(model(x), target).backward()
            optimizer.step()

        title = "ResNet-18 training step, batch 8, 112 px"
    else:
        model = build(args.network, train=False)
        x = npconv.from_numpy(rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32))

        def call() -> None:
            with npconv.no_grad():
                model(x)

        title = f"{args.network} inference (optimized), batch {args.batch}, {args.size} px"
    for _ in range(2):
        call()
    plain = median_ms(call, args.reps)
    if args.cprofile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.reps):
            call()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    for name, implementation in registry.available().items():
        timers.wrap(implementation, "forward", f"kernel {name}")
    timers.wrap(pointwise, "epilogue_", "epilogue pass (in planner forward)")
    for pass_name in registry.PASSES:
        timers.wrap(plan, pass_name, f"planner {pass_name}")
    if args.train:
        timers.wrap(optimizer, "step", "optimizer step")
        timers.wrap(optimizer, "zero_grad", "optimizer zero_grad")
    convolutions = (npconv.nn.ConvActivation, npconv.nn.Conv2d)
    fused = {id(child) for module in model.modules() if isinstance(module, npconv.nn.ConvActivation)
             for child in module.children()}
    for module in model.modules():  # forward only: their backward is in "everything else"
        if isinstance(module, convolutions) and id(module) not in fused:
            timers.wrap(module, "forward", "conv modules")
        elif not list(module.children()) and not isinstance(module, (npconv.nn.Conv2d, npconv.nn.Identity)):
            timers.wrap(module, "forward", f"layer {type(module).__name__}")
    core = npconv.backends.core
    if core.available:  # the C calls of the calling thread (the workers run theirs inside team_wait)
        skipped = ("available_isas", "job_post", "team_post", "team_wait", "job_chain", "jobs_check")
        for name in npconv.backends.CORE_FUNCTIONS:
            if name in skipped or name.startswith("flag_") or name.endswith(("_job", "_plan", "_scratch")):
                continue
            timers.wrap(core.module, name, f"C {name}")
    start = time.perf_counter()
    for _ in range(args.reps):
        call()
    total = (time.perf_counter() - start) / args.reps * 1e3
    per_call = {k: v / args.reps * 1e3 for k, v in timers.seconds.items()}
    print(f"{title}: median {plain:.2f} ms (uninstrumented), instrumented mean {total:.2f} ms, "
          f"{args.threads} threads; memory cache {npconv.backends.memory.stats()}")
    for label in sorted(per_call):
        print(f"  {label:28s} {per_call[label]:9.2f} ms  {timers.calls[label] // args.reps:4d} calls")
    planner = timers.total("planner ") / args.reps * 1e3
    layers = timers.total("layer ") / args.reps * 1e3
    steps = timers.total("optimizer ") / args.reps * 1e3
    kernels = timers.total("kernel ") / args.reps * 1e3
    rest = total - planner - layers - steps
    convs = timers.total("conv modules") / args.reps * 1e3
    compiled = timers.total("C ") / args.reps * 1e3
    print(f"  => planner passes {planner:.2f} ms (forward kernels {kernels:.2f} of them), other layers "
          f"{layers:.2f} ms, optimizer {steps:.2f} ms, everything else {rest:.2f} ms")
    print(f"  => convolution modules {convs:.2f} ms; the compiled core's C calls {compiled:.2f} ms in all; "
          f"outside them {total - compiled:.2f} ms")


if __name__ == "__main__":
    main()
