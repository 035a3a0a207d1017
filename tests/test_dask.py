"""npconv.dask.predict on the threaded scheduler and on a 2-process LocalCluster, against torch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import npconv
from npconv import nn

da = pytest.importorskip("dask.array", reason="the 'dask' extra (dask[array], distributed) is not installed")
distributed = pytest.importorskip("distributed", reason="the 'dask' extra (distributed) is not installed")
from npconv.dask import predict  # noqa: E402
from torch_oracle import assert_close, to_torch, torch_module  # noqa: E402


def conv_model(dtype=np.float64) -> nn.Conv2d:
    npconv.manual_seed(7)
    return nn.Conv2d(2, 4, 3, stride=(2, 1), padding=1, padding_mode="circular", dtype=dtype)


def torch_forward(model: nn.Conv2d, x: np.ndarray):
    torch = torch_module()
    padded = torch.nn.functional.pad(to_torch(x), (1, 1, 1, 1), mode="circular")
    return torch.nn.functional.conv2d(padded, to_torch(model.weight.numpy()), to_torch(model.bias.numpy()),
                                      stride=(2, 1))


class FlattenedConv(nn.Module):
    """Changes the number of axes (4-d in, 2-d out) and records the mode it ran in."""

    def __init__(self):
        super().__init__()
        npconv.manual_seed(3)
        self.conv = nn.Conv2d(2, 3, 2, dtype=np.float64)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, npconv.is_grad_enabled()))
        return self.conv(x).flatten(1)


@pytest.fixture(scope="module")
def client():
    """One 2-worker process cluster for the module: starting it is the slow part."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, worker_dashboard_address=None)
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


def test_cluster_predict_equals_torch_with_a_ragged_last_chunk(client):
    # both dtypes in one test: the cluster fixture then starts once even under pytest-xdist
    for dtype in (np.float64, np.float32):
        model = conv_model(dtype)
        x = np.random.default_rng(0).normal(size=(11, 2, 6, 5)).astype(dtype)
        result = predict(model, da.from_array(x, chunks=(5, 1, 6, 5)), batch_size=4)
        assert result.chunks == ((4, 4, 3), (4,), (3,), (5,))
        assert result.dtype == dtype
        with distributed.get_task_stream(client) as stream:
            computed = client.compute(result).result()
        assert_close(computed, torch_forward(model, x), dtype=dtype)
        names = [key[0] if isinstance(key, tuple) else key for key in (task["key"] for task in stream.data)]
        assert sum(name.startswith("npconv-predict") for name in names) == 3
        assert sum(name.startswith("Conv2d") for name in names) == 1  # the module: one task, shared


def test_module_is_one_task_of_the_graph_not_embedded_per_chunk():
    npconv.manual_seed(0)
    model = nn.Conv2d(8, 64, 3, dtype=np.float64)  # 36 KiB of weights
    x = da.zeros((40, 8, 5, 5), chunks=(4, 8, 5, 5))
    graph = dict(predict(model, x).__dask_graph__())
    heavy = [key for key, task in graph.items() if len(pickle.dumps(task)) > model.weight.numpy().nbytes]
    chunk_tasks = [key for key in graph if isinstance(key, tuple) and key[0].startswith("npconv-predict")]
    assert len(chunk_tasks) == 10
    assert len(heavy) == 1 and heavy[0] not in chunk_tasks


def test_threaded_scheduler_runs_in_eval_mode_without_graph_and_leaves_the_module_alone(torch):
    model = FlattenedConv()
    x = np.random.default_rng(1).normal(size=(7, 2, 4, 3))
    result = predict(model, x, batch_size=3)  # a plain ndarray is accepted
    assert result.shape == (7, 3 * 3 * 2) and result.chunks == ((3, 3, 1), (18,))
    computed = result.compute(scheduler="threads")
    conv = model.conv
    expected = torch.nn.functional.conv2d(to_torch(x), to_torch(conv.weight.numpy()),
                                          to_torch(conv.bias.numpy()))
    assert_close(computed, expected.flatten(1))
    assert model.training and model.seen == []  # predict ran a copy
    assert npconv.is_grad_enabled()


def test_batch_size_none_keeps_batch_chunks_and_merges_the_other_axes():
    model = conv_model()
    x = np.random.default_rng(2).normal(size=(9, 2, 6, 5))
    result = predict(model, da.from_array(x, chunks=(2, 1, 3, 5)))
    assert result.chunks[0] == (2, 2, 2, 2, 1)
    assert_close(result.compute(scheduler="synchronous"), torch_forward(model, x))


def test_predict_rejects_bad_arguments():
    model = conv_model()
    x = da.zeros((4, 2, 6, 5), chunks=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None, got 0"):
        predict(model, x, batch_size=0)
    with pytest.raises(TypeError, match="module must be an npconv.nn.Module, got function"):
        predict(lambda t: t, x)
    with pytest.raises(ValueError, match="x must have a batch axis"):
        predict(model, da.from_array(np.float64(1.0)))

    class Pooled(nn.Module):
        def forward(self, t):
            return t.sum()

    with pytest.raises(ValueError, match=r"module must keep the batch axis: .* shape \(\)"):
        predict(Pooled(), x)
