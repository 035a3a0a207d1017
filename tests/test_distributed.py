"""npconv.distributed: DDP over MPI (2 real ranks via mpiexec), bucketing, sampler, aborts.

Also covers the autograd engine hook DDP relies on (``npconv.tensor.queue_callback``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv import distributed as dist
from npconv import nn
from npconv.tensor import Tensor, make_result, queue_callback

# ------------------------------------------------------------------------------------------------
# engine hook: queue_callback
# ------------------------------------------------------------------------------------------------


def _tap(x: Tensor, on_backward) -> Tensor:
    """Identity op whose backward calls ``on_backward()`` (to queue callbacks from inside a pass)."""
    def backward(g):
        on_backward()
        return (g,)
    return make_result(x.numpy(), (x,), backward, "Tap")


def test_queued_callback_runs_once_after_all_leaf_grads_are_accumulated():
    a = npconv.tensor([1.0, 2.0], requires_grad=True)
    b = npconv.tensor([3.0, 4.0], requires_grad=True)
    seen = []

    def callback():
        seen.append((a.grad.numpy().copy(), b.grad.numpy().copy()))

    # the tap sits early in the graph (near the root): b's grad does not exist yet when it fires
    y = _tap(a * b, lambda: queue_callback(callback))
    z = _tap(y * 2.0, lambda: queue_callback(callback))  # queued twice in one pass: runs once
    z.sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0][0], [6.0, 8.0])
    np.testing.assert_array_equal(seen[0][1], [2.0, 4.0])
    # a new pass has a new queue
    y2 = _tap(a * b, lambda: queue_callback(callback))
    y2.sum().backward()
    assert len(seen) == 2


def test_callbacks_may_queue_callbacks_and_are_dropped_when_the_pass_raises():
    order = []
    a = npconv.tensor([1.0], requires_grad=True)

    def first():
        order.append("first")
        queue_callback(lambda: order.append("second"))

    _tap(a, lambda: queue_callback(first)).sum().backward()
    assert order == ["first", "second"]

    def fail(g):
        raise ZeroDivisionError("backward failed")
    broken = make_result(
        a.numpy(), (_tap(a, lambda: queue_callback(lambda: order.append("late"))),), fail, "Fail")
    with pytest.raises(ZeroDivisionError):
        broken.sum().backward()
    assert order == ["first", "second"]  # the callback queued before the failure did not run
    with pytest.raises(RuntimeError, match="only be called while backward"):
        queue_callback(lambda: None)  # the failed pass left no queue behind


def test_queue_callback_rejects_non_callables():
    a = npconv.tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError, match="callback must be callable"):
        _tap(a, lambda: queue_callback(3)).sum().backward()


# ------------------------------------------------------------------------------------------------
# DistributedSampler (no MPI needed): torch's DistributedSampler is the oracle for the split
# ------------------------------------------------------------------------------------------------


@given(n=st.integers(0, 40), world=st.integers(1, 5), drop_last=st.booleans())
def test_sampler_split_matches_torch_without_shuffle(n, world, drop_last, torch):
    for rank in range(world):
        ours = dist.DistributedSampler(n, rank=rank, world=world, shuffle=False, drop_last=drop_last)
        theirs = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False,
                                               drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs)


@given(n=st.integers(1, 40), world=st.integers(1, 5), seed=st.integers(0, 100), epoch=st.integers(0, 5))
def test_shuffled_shards_partition_the_padded_permutation(n, world, seed, epoch):
    shards = []
    for rank in range(world):
        sampler = dist.DistributedSampler(n, rank=rank, world=world, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        shards.append(sampler.indices())
    sizes = {len(s) for s in shards}
    assert sizes == {-(-n // world)}  # every rank gets ceil(n / world)
    counts = np.bincount(np.concatenate(shards), minlength=n)
    # every sample appears, the padding (fewer than world extra) repeats some once more
    assert counts.min() >= 1 and counts.sum() - n < world


def test_sampler_epochs_reshuffle_and_seed_is_shared():
    a = dist.DistributedSampler(50, rank=0, world=2, seed=3)
    b = dist.DistributedSampler(50, rank=1, world=2, seed=3)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert set(a) | set(b) == set(range(50)) and not set(a) & set(b)


def test_sampler_drop_last_and_sized_datasets():
    sampler = dist.DistributedSampler(list(range(11)), rank=2, world=3, shuffle=False, drop_last=True)
    assert list(sampler) == [2, 5, 8] and len(sampler) == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 10, "rank": 2, "world": 2}, "rank must be in"),
    ({"n": -1, "rank": 0, "world": 1}, "n must be an integer >= 0"),
    ({"n": 10, "rank": 0, "world": 0}, "world must be an integer >= 1"),
    ({"n": 10, "rank": 0, "world": 1, "seed": 1.5}, "seed must be an integer"),
])
def test_sampler_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dist.DistributedSampler(**kwargs)
    with pytest.raises(ValueError, match="epoch"):
        dist.DistributedSampler(4, rank=0, world=1).set_epoch(-1)


# ------------------------------------------------------------------------------------------------
# DDP in-process with a recording fake communicator (counts collectives)
# ------------------------------------------------------------------------------------------------


class FakeComm:
    """Rank 0 of 2 where the other rank holds identical values: Allreduce(SUM) doubles."""

    def __init__(self, other_signature=None):
        self.allreduce_buffers = []
        self.bcast_buffers = []
        self.other_signature = other_signature

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def allgather(self, obj):
        return [obj, obj if self.other_signature is None else self.other_signature]

    def Bcast(self, buf, root=0):
        self.bcast_buffers.append((buf.dtype, buf.size))

    def Allreduce(self, sendbuf, recvbuf, op=None):
        mpi = pytest.importorskip("mpi4py.MPI")
        assert sendbuf is mpi.IN_PLACE and op is mpi.SUM
        assert recvbuf.ndim == 1 and recvbuf.flags.c_contiguous
        self.allreduce_buffers.append((recvbuf.dtype, recvbuf.size))
        recvbuf *= 2


class FourParams(nn.Module):
    """a: f64 (100,), b: f32 (10,), c: f64 (50,), d: f64 (200,) - registration order a, b, c, d."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.a = nn.Parameter(rng.normal(size=100))
        self.b = nn.Parameter(rng.normal(size=10).astype(np.float32))
        self.c = nn.Parameter(rng.normal(size=50))
        self.d = nn.Parameter(rng.normal(size=200))
        self.register_buffer("steps", np.zeros(3, dtype=np.int64))

    def forward(self, x):
        return (self.a * x).sum() + self.b.sum().astype(np.float64) * x.sum() + (self.c ** 2).sum() \
            + (self.d * 3.0).sum()


def test_one_allreduce_per_bucket_in_reverse_order_by_dtype():
    pytest.importorskip("mpi4py")
    comm = FakeComm()
    model = FourParams()
    # cap 1000 bytes; reverse order d(1600 B, closes alone), c(400 B, f64 open), b(40 B, f32), a(800 B,
    # joins c -> 1200 B, closes): buckets [d], [c, a], [b]
    ddp = dist.DistributedDataParallel(model, comm=comm, bucket_cap_mb=1000 / 2**20)
    assert ddp.bucket_sizes == [1, 2, 1]
    assert comm.bcast_buffers == [(np.float64, 350), (np.float32, 10), (np.int64, 3)]  # one per dtype
    x = npconv.tensor(np.linspace(0, 1, 100))
    loss = ddp(x)
    loss.backward()
    assert comm.allreduce_buffers == [(np.float64, 200), (np.float64, 150), (np.float32, 10)]
    # the fake other rank has the same gradients, so the averages are the local gradients
    np.testing.assert_allclose(model.a.grad.numpy(), x.numpy(), rtol=1e-15)
    expected_b = np.full(10, x.numpy().sum(), dtype=np.float32)
    np.testing.assert_allclose(model.b.grad.numpy(), expected_b, rtol=1e-6)
    np.testing.assert_allclose(model.c.grad.numpy(), 2 * model.c.numpy(), rtol=1e-15)
    np.testing.assert_allclose(model.d.grad.numpy(), np.full(200, 3.0), rtol=1e-15)
    assert model.b.grad.dtype == np.float32


def test_several_forwards_one_backward_sync_once_and_no_sync_skips():
    pytest.importorskip("mpi4py")
    comm = FakeComm()
    model = FourParams()
    ddp = dist.DistributedDataParallel(model, comm=comm)  # 25 MB: one bucket per dtype
    assert ddp.bucket_sizes == [3, 1]
    assert len(comm.bcast_buffers) == 3  # wrap: one per dtype (float64, float32, int64 buffer)
    x = npconv.tensor(np.ones(100))
    (ddp(x) + ddp(2 * x)).backward()
    assert len(comm.allreduce_buffers) == 2  # one pass, two buckets
    assert len(comm.bcast_buffers) == 3 + 2  # each grad-mode forward re-broadcasts the int64 buffer
    with ddp.no_sync():
        ddp(x).backward()
    with npconv.no_grad():
        ddp(x)
    assert len(comm.allreduce_buffers) == 2  # accumulated locally only
    assert len(comm.bcast_buffers) == 5
    ddp(x).backward()  # the accumulated grads are averaged by the next synced pass
    assert len(comm.allreduce_buffers) == 4
    np.testing.assert_allclose(model.d.grad.numpy(), np.full(200, 4 * 3.0))


def test_missing_local_grads_count_as_zeros_and_unused_parameters_stay_none():
    pytest.importorskip("mpi4py")

    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Parameter(np.ones(4))
            self.unused = nn.Parameter(np.ones(3))

        def forward(self, x):
            return (self.used * x).sum()

    model = Partial()
    comm = FakeComm()
    ddp = dist.DistributedDataParallel(model, comm=comm)
    ddp(npconv.tensor(np.ones(4))).backward()
    np.testing.assert_array_equal(model.unused.grad.numpy(), np.zeros(3))
    model.zero_grad()
    comm = FakeComm()
    ddp = dist.DistributedDataParallel(model, comm=comm, find_unused_parameters=True)
    ddp(npconv.tensor(np.ones(4))).backward()
    assert model.unused.grad is None
    np.testing.assert_array_equal(model.used.grad.numpy(), np.ones(4))
    assert len(comm.allreduce_buffers) == 2  # the usage map, then the one float64 bucket


def test_wrapper_is_a_module_with_torch_style_state_dict():
    pytest.importorskip("mpi4py")
    model = FourParams()
    ddp = dist.DistributedDataParallel(model, comm=FakeComm())
    assert ddp.module is model
    assert list(ddp.state_dict()) == ["module.a", "module.b", "module.c", "module.d", "module.steps"]
    assert [name for name, _ in ddp.named_parameters()] == ["module.a", "module.b", "module.c", "module.d"]
    assert repr(ddp).startswith("DistributedDataParallel(\n  rank=0, world_size=2\n  (module): FourParams()")
    ddp.eval()
    assert not model.training


def test_wrapper_rejects_bad_arguments_and_different_architectures():
    pytest.importorskip("mpi4py")
    model = FourParams()
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="module must be an npconv.nn.Module, got function"):
        dist.DistributedDataParallel(lambda x: x, comm=FakeComm())
    with pytest.raises(ValueError, match="bucket_cap_mb must be a positive number, got 0"):
        dist.DistributedDataParallel(model, comm=FakeComm(), bucket_cap_mb=0)
    other = [("a", (100,), "<f8"), ("b", (11,), "<f4")]
    with pytest.raises(ValueError, match=r"rank 1 has \('b', \(11,\), '<f4'\) where rank 0 has"):
        dist.DistributedDataParallel(model, comm=FakeComm(other_signature=other))
    with pytest.raises(ValueError, match="parameter 'weight' is uninitialized"):
        dist.DistributedDataParallel(nn.LazyConv1d(2, 3), comm=FakeComm())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_single_process_world_is_rank_0_of_1_and_ddp_keeps_grads():
    pytest.importorskip("mpi4py")
    assert dist.is_available()
    assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
    model = FourParams()
    ddp = dist.DistributedDataParallel(model)
    ddp(npconv.tensor(np.ones(100))).backward()
    np.testing.assert_array_equal(model.d.grad.numpy(), np.full(200, 3.0))


class AbortRecorder(FakeComm):
    def __init__(self):
        super().__init__()
        self.aborted = []

    def Abort(self, code):
        self.aborted.append(code)


def test_run_guarded_reports_the_rank_and_aborts_with_the_exit_code(capsys):
    comm = AbortRecorder()

    def fails():
        raise OSError("disk full")

    dist.run_guarded(fails, comm=comm)
    err = capsys.readouterr().err
    assert comm.aborted == [1]
    assert err.startswith("npconv.distributed: rank 0 of 2 raised an exception; aborting all ranks "
                          "(MPI_Abort with exit code 1)\n[rank 0] Traceback")
    assert "[rank 0] OSError: disk full" in err
    dist.run_guarded(sys.exit, 3, comm=comm)
    assert comm.aborted == [1, 3]
    with pytest.raises(SystemExit):
        dist.run_guarded(sys.exit, 0, comm=comm)  # a clean exit is not an error
    assert dist.run_guarded(lambda a, b=0: a + b, 2, b=3, comm=comm) == 5
    assert comm.aborted == [1, 3]


# ------------------------------------------------------------------------------------------------
# two real ranks under mpiexec
# ------------------------------------------------------------------------------------------------

WORKER = textwrap.dedent('''
    import sys
    from pathlib import Path

    import numpy as np

    import npconv
    from npconv import distributed as dist
    from npconv import nn, optim

    N, C, H, W, OUT = 8, 2, 5, 5, 3


    class Net(nn.Module):
        """conv -> relu -> flatten -> matmul head, float64; a buffer to check the broadcast."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(C, 3, 3, padding=1, dtype=np.float64)
            self.head = nn.Parameter(np.asarray(npconv.random.default_generator().normal(
                size=(3 * H * W, OUT)) * 0.1))
            self.register_buffer("offset", npconv.random.default_generator().normal(size=OUT))

        def forward(self, x):
            return self.conv(x).relu().flatten(1) @ self.head + self.offset


    def build(seed):
        npconv.manual_seed(seed)
        return Net()


    def data():
        rng = np.random.default_rng(123)
        return rng.normal(size=(N, C, H, W)), rng.normal(size=(N, OUT))


    def train(model, params, x, y, optimizer_name, steps=2):
        optimizer = (optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3) if optimizer_name == "sgd"
                     else optim.Adam(params, lr=0.01))
        for _ in range(steps):
            optimizer.zero_grad()
            loss = ((model(npconv.Tensor(x)) - npconv.Tensor(y)) ** 2).mean()
            loss.backward()
            optimizer.step()


    def step_mode(out, optimizer_name):
        rank = dist.get_rank()
        model = build(seed=rank)  # different on each rank: the wrapper must broadcast rank 0's
        ddp = dist.DistributedDataParallel(model, bucket_cap_mb=200 / 2**20)  # several buckets
        sampler = dist.DistributedSampler(N, shuffle=True, seed=5)
        sampler.set_epoch(1)
        index = sampler.indices()
        x, y = data()
        train(ddp, ddp.parameters(), x[index], y[index], optimizer_name)
        state = {k: v for k, v in model.state_dict().items()}
        np.savez(Path(out, f"rank{rank}.npz"), index=index, buckets=np.array(ddp.bucket_sizes), **state)


    def unused_mode(out, find_unused):
        rank = dist.get_rank()

        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Parameter(np.zeros(3))
                self.b = nn.Parameter(np.zeros(3))
                self.c = nn.Parameter(np.zeros(3))

            def forward(self, x, use_b):
                out = (x * self.a).sum()
                return out + (x * self.b).sum() if use_b else out

        model = Branchy()
        ddp = dist.DistributedDataParallel(model, find_unused_parameters=find_unused)
        ddp(npconv.Tensor(np.full(3, rank + 1.0)), use_b=rank == 1).backward()
        grads = {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
        np.savez(Path(out, f"rank{rank}.npz"), **grads)


    def raise_mode():
        rank = dist.get_rank()
        model = nn.Conv1d(1, 1, 2, dtype=np.float64)
        ddp = dist.DistributedDataParallel(model)
        if rank == 1:
            raise ValueError("deliberate failure on rank 1")
        ddp(npconv.Tensor(np.ones((1, 1, 4)))).sum().backward()  # rank 0 waits in Allreduce


    def mismatch_mode():
        rank = dist.get_rank()
        dist.DistributedDataParallel(nn.Conv1d(1, 1 + rank, 2))


    def hook_mode():
        from mpi4py import MPI
        dist.install_excepthook()
        if dist.get_rank() == 0:
            raise KeyError("uncaught on rank 0")
        MPI.COMM_WORLD.Barrier()  # rank 1 would wait here forever


    if __name__ == "__main__":
        mode = sys.argv[1]
        if mode == "step":
            dist.run_guarded(step_mode, sys.argv[2], sys.argv[3])
        elif mode == "unused":
            dist.run_guarded(unused_mode, sys.argv[2], sys.argv[3] == "1")
        elif mode == "raise":
            dist.run_guarded(raise_mode)
        elif mode == "mismatch":
            dist.run_guarded(mismatch_mode)
        elif mode == "hook":
            hook_mode()
''')

MPI_TIMEOUT = 60


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="the 'mpi' extra (mpi4py, mpich) is not installed")
    candidate = Path(sys.executable).parent / "mpiexec"
    found = str(candidate) if candidate.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpiexec not found (install the 'mpi' extra: the mpich wheel provides it)")
    return found


def run_mpi(args: list[str], cwd: Path, ranks: int = 2, timeout: float = MPI_TIMEOUT):
    """Run ``mpiexec -n ranks python *args``; fail (not hang) if it takes longer than ``timeout``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    process = subprocess.Popen([_mpiexec(), "-n", str(ranks), sys.executable, *args], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"mpiexec hung for {timeout} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi") / "ddp_worker.py"
    path.write_text(WORKER)
    spec = importlib.util.spec_from_file_location("ddp_worker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_two_ranks_take_the_single_process_step_on_the_concatenated_batch(worker, tmp_path, optimizer_name):
    path, module = worker
    result = run_mpi([str(path), "step", str(tmp_path), optimizer_name], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    # the sampler split the 8 samples into two disjoint halves
    assert sorted(np.concatenate([r["index"] for r in ranks]).tolist()) == list(range(8))
    assert len(ranks[0]["buckets"]) > 1
    # reference: one process, rank 0's initial weights, the whole batch
    reference = module.build(seed=0)
    x, y = module.data()
    module.train(reference, reference.parameters(), x, y, optimizer_name)
    expected = reference.state_dict()
    assert set(expected) == set(ranks[0]) - {"index", "buckets"}
    for key, value in expected.items():
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)  # replicas identical
        np.testing.assert_allclose(ranks[0][key], value, rtol=1e-12, atol=1e-14, err_msg=key)
    # the step changed the weights, and rank 1's own initialisation was replaced by rank 0's
    initial_0, initial_1 = module.build(seed=0), module.build(seed=1)
    assert not np.allclose(ranks[1]["conv.weight"], initial_0.conv.weight.numpy())
    assert not np.allclose(initial_0.conv.weight.numpy(), initial_1.conv.weight.numpy())
    np.testing.assert_array_equal(ranks[1]["offset"], initial_0.offset.numpy())


@pytest.mark.parametrize("find_unused", [False, True])
def test_grads_missing_on_one_rank_average_with_zeros(worker, tmp_path, find_unused):
    path, _ = worker
    result = run_mpi([str(path), "unused", str(tmp_path), "1" if find_unused else "0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for rank in range(2):
        grads = dict(np.load(tmp_path / f"rank{rank}.npz"))
        np.testing.assert_array_equal(grads["a"], np.full(3, (1.0 + 2.0) / 2))  # x = rank + 1
        np.testing.assert_array_equal(grads["b"], np.full(3, (0.0 + 2.0) / 2))  # used on rank 1 only
        if find_unused:
            assert "c" not in grads  # unused on every rank: stays None
        else:
            np.testing.assert_array_equal(grads["c"], np.zeros(3))


@pytest.mark.parametrize(("mode", "messages"), [
    ("raise", ["rank 1 of 2 raised an exception; aborting all ranks",
               "[rank 1] ValueError: deliberate failure on rank 1"]),
    ("mismatch", ["every rank must wrap the same architecture",
                  "rank 1 has ('weight', (2, 1, 2), '<f4') where rank 0 has ('weight', (1, 1, 2), '<f4')"]),
    ("hook", ["rank 0 of 2 raised an exception", "[rank 0] KeyError: 'uncaught on rank 0'"]),
])
def test_a_failing_rank_aborts_the_job_with_a_clear_message(worker, tmp_path, mode, messages):
    path, _ = worker
    result = run_mpi([str(path), mode], cwd=tmp_path, timeout=30)
    assert result.returncode != 0
    for message in messages:
        assert message in result.stderr, result.stderr


def test_demo_runs_distributed_on_two_ranks_and_reports_from_rank_0(tmp_path):
    if importlib.util.find_spec("npconv.demo") is None:
        pytest.skip("npconv.demo is not present")
    pytest.importorskip("sklearn")
    result = run_mpi(["-m", "npconv", "demo", "--distributed", "--epochs", "1", "--no-progress",
                      "--out", str(tmp_path / "out")], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("held-out accuracy") == 1 and "on 2 ranks" in result.stdout, result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert (tmp_path / "out" / "digits_cnn.safetensors").exists()
