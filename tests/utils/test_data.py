"""npconv.utils.data: datasets, samplers, collation and the DataLoader's semantics (in the main
process and in worker processes). npconv's random streams are NumPy's, so shuffles are checked
for their properties (permutations, reproducibility, independence), not against torch's numbers."""

from __future__ import annotations

import collections
import os
import time

import numpy as np
import pytest

import npconv
from npconv.utils.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    StackDataset,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    default_convert,
    get_worker_info,
    random_split,
)

Point = collections.namedtuple("Point", "x y")


class Squares(Dataset):
    """Sample i is (i, i*i) as ndarrays; records nothing, picklable, fork-friendly."""

    def __init__(self, n=10):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return np.array([index], dtype=np.float32), index * index


class WhoAmI(Dataset):
    """Sample i reports the worker that fetched it, its seed, and a draw from npconv's generator."""

    def __len__(self):
        return 12

    def __getitem__(self, index):
        info = get_worker_info()
        draw = float(npconv.random.default_generator().random())
        return {"index": index, "worker": -1 if info is None else info.id,
                "seed": -1 if info is None else info.seed, "pid": os.getpid(), "draw": draw,
                "initialised": int(os.environ.get("NPCONV_TEST_WORKER_INIT", "-1"))}


class Failing(Dataset):
    def __init__(self, action):
        self.action = action

    def __len__(self):
        return 8

    def __getitem__(self, index):
        if index == 5:
            if self.action == "raise":
                raise KeyError("no sample 5")
            if self.action == "exit":
                os._exit(7)
            time.sleep(30)
        return index


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))


def _init_worker(worker_id):
    os.environ["NPCONV_TEST_WORKER_INIT"] = str(worker_id)


def _as_lists(batches):
    return [[np.asarray(getattr(part, "data", part)).tolist() for part in batch] for batch in batches]


# -- datasets -------------------------------------------------------------------------------------
def test_tensor_dataset_and_errors():
    x = npconv.tensor(np.arange(12.0).reshape(6, 2))
    y = npconv.tensor(np.arange(6))
    ds = TensorDataset(x, y)
    assert len(ds) == 6
    a, b = ds[4]
    assert a.numpy().tolist() == [8.0, 9.0] and int(b.numpy()) == 4
    with pytest.raises(ValueError, match="Size mismatch"):
        TensorDataset(x, npconv.tensor(np.arange(5)))
    with pytest.raises(TypeError, match="must be a Tensor"):
        TensorDataset(np.zeros(3))


def test_subset_concat_stack_and_add():
    base = Squares(5)
    sub = Subset(base, [4, 0, 2])
    assert len(sub) == 3 and sub[0][1] == 16 and [s[1] for s in sub.__getitems__([2, 1])] == [4, 0]
    cat = base + Squares(3)
    assert isinstance(cat, ConcatDataset) and len(cat) == 8
    assert cat[5][1] == 0 and cat[-1][1] == 4 and cat[-8][1] == 0
    with pytest.raises(IndexError):
        cat[8]
    with pytest.raises(ValueError, match="absolute value"):
        cat[-9]
    with pytest.raises(ValueError, match="empty"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="IterableDataset"):
        ConcatDataset([Stream(3)])
    stacked = StackDataset(a=Squares(3), b=Squares(3))
    assert stacked[2]["b"][1] == 4
    with pytest.raises(ValueError, match="Size mismatch"):
        StackDataset(Squares(2), Squares(3))


def test_random_split_lengths_fractions_and_generator():
    data = Squares(10)
    parts = random_split(data, [3, 7], generator=np.random.default_rng(0))
    indices = [i for part in parts for i in part.indices]
    assert [len(p) for p in parts] == [3, 7] and sorted(indices) == list(range(10))
    again = random_split(data, [3, 7], generator=np.random.default_rng(0))
    assert [p.indices for p in again] == [p.indices for p in parts]
    assert [len(p) for p in random_split(Squares(11), [0.5, 0.3, 0.2])] == [6, 3, 2]  # remainder round-robin
    npconv.manual_seed(3)
    first = random_split(data, [0.5, 0.5])[0].indices
    npconv.manual_seed(3)
    assert random_split(data, [0.5, 0.5])[0].indices == first
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(data, [3, 3])
    with pytest.raises(ValueError, match="lengths"):
        random_split(data, [0.5, 0.6])
    with pytest.raises(TypeError, match="lengths"):
        random_split(data, 5)
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(Squares(2), [0.99, 0.01])
    with pytest.raises(TypeError, match="generator"):
        random_split(data, [5, 5], generator=42)


# -- samplers -------------------------------------------------------------------------------------
def test_samplers():
    data = Squares(7)
    assert list(SequentialSampler(data)) == list(range(7))
    rng = np.random.default_rng(1)
    perm = list(RandomSampler(data, generator=rng))
    assert sorted(perm) == list(range(7))
    assert list(RandomSampler(data, generator=np.random.default_rng(1))) == perm
    long = list(RandomSampler(data, num_samples=17, generator=rng))
    assert len(long) == 17 and sorted(long[:7]) == sorted(long[7:14]) == list(range(7))
    drawn = list(RandomSampler(data, replacement=True, num_samples=50, generator=rng))
    assert len(drawn) == 50 and set(drawn) <= set(range(7))
    assert sorted(SubsetRandomSampler([3, 5, 9], generator=rng)) == [3, 5, 9]
    weighted = list(WeightedRandomSampler([0.0, 1.0, 3.0], 400, generator=rng))
    assert 0 not in weighted and 2.2 < weighted.count(2) / weighted.count(1) < 4.0
    assert sorted(WeightedRandomSampler([1, 1, 0, 1], 3, replacement=False, generator=rng)) == [0, 1, 3]
    batches = BatchSampler(range(10), 4, drop_last=False)
    assert list(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(batches) == 3
    assert len(BatchSampler(range(10), 4, drop_last=True)) == 2


@pytest.mark.parametrize(("make", "message"), [
    (lambda: RandomSampler(Squares(), replacement=1), "replacement should be a boolean"),
    (lambda: RandomSampler(Squares(), num_samples=0), "num_samples should be a positive integer"),
    (lambda: RandomSampler(Squares(), generator="seed"), "generator must be"),
    (lambda: BatchSampler(range(3), 0, False), "batch_size should be a positive integer"),
    (lambda: BatchSampler(range(3), 2, None), "drop_last should be a boolean"),
    (lambda: WeightedRandomSampler([[1.0]], 2), "1d sequence"),
    (lambda: WeightedRandomSampler([1.0, -1.0], 2), ">= 0"),
    (lambda: WeightedRandomSampler([1.0, 0.0], 2, replacement=False), "without replacement"),
])
def test_sampler_errors(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


# -- collation ------------------------------------------------------------------------------------
def test_default_collate_rules():
    batch = default_collate([(np.ones(2, np.float32), 1, 0.5, "a", {"k": np.int16(3)}, Point(1, [2.0]))] * 3)
    arrays, ints, floats, strings, mapping, point = batch
    assert isinstance(arrays, npconv.Tensor) and arrays.shape == (3, 2) and arrays.dtype == np.float32
    assert ints.dtype == np.int64 and floats.dtype == np.float64 and strings == ("a",) * 3
    assert mapping["k"].dtype == np.int16 and mapping["k"].shape == (3,)
    assert isinstance(point, Point) and point.x.numpy().tolist() == [1, 1, 1] and isinstance(point.y, list)
    assert default_collate([("a", 1), ("b", 2)])[0] == ("a", "b")
    assert default_collate([True, False]).dtype == np.bool_
    assert default_collate([npconv.tensor([1.0]), npconv.tensor([2.0])]).numpy().tolist() == [[1.0], [2.0]]
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [1]])
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(TypeError, match="found"):
        default_collate([object(), object()])
    with pytest.raises(TypeError, match="found"):
        default_collate([np.array(["x"]), np.array(["y"])])
    converted = default_convert({"a": np.zeros(2), "b": (1, "s")})
    assert isinstance(converted["a"], npconv.Tensor) and converted["b"] == [1, "s"]


def test_default_collate_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as torch_collate

    samples = [(np.full((2, 2), i, np.float32), i, i / 2, {"m": np.float64(i), "n": [i, i + 1]}, True)
               for i in range(4)]
    ours, theirs = default_collate(samples), torch_collate(samples)

    def compare(a, b):
        if isinstance(b, torch.Tensor):
            assert isinstance(a, npconv.Tensor)
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            assert a.numpy().dtype == b.numpy().dtype
        elif isinstance(b, dict):
            assert a.keys() == b.keys()
            for key in b:
                compare(a[key], b[key])
        elif isinstance(b, (list, tuple)):
            assert type(a) is type(b) and len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                compare(x, y)
        else:
            assert a == b

    compare(ours, theirs)


# -- DataLoader in the main process ------------------------------------------------------------------
def test_batching_order_len_and_drop_last():
    loader = DataLoader(Squares(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert batches[2][0].shape == (2, 1) and batches[2][1].numpy().tolist() == [64, 81]
    assert len(DataLoader(Squares(10), batch_size=4, drop_last=True)) == 2
    unbatched = list(DataLoader(Squares(3), batch_size=None))
    assert isinstance(unbatched[0][0], npconv.Tensor) and unbatched[2][1] == 4


def test_shuffle_with_generator_is_a_reproducible_permutation_per_epoch():
    seen = []
    for _ in range(2):
        loader = DataLoader(Squares(20), batch_size=5, shuffle=True, generator=np.random.default_rng(7))
        epochs = [[int(i) for b in loader for i in b[1].numpy()] for _ in range(2)]
        seen.append(epochs)
    assert seen[0] == seen[1]  # same seed, same order
    first, second = seen[0]
    assert sorted(first) == sorted(second) == sorted(i * i for i in range(20))
    assert first != second  # a new permutation every epoch
    if hasattr(npconv, "Generator"):
        g = npconv.Generator()
        g.manual_seed(5)
        order = [int(i) for b in DataLoader(Squares(20), batch_size=5, shuffle=True, generator=g)
                 for i in b[1].numpy()]
        g.manual_seed(5)
        assert order == [int(i) for b in DataLoader(Squares(20), batch_size=5, shuffle=True, generator=g)
                         for i in b[1].numpy()]


def test_custom_sampler_batch_sampler_collate_and_getitems():
    class Batched(Squares):
        calls = 0

        def __getitems__(self, indices):
            type(self).calls += 1
            return [self[i] for i in indices]

    loader = DataLoader(Batched(6), sampler=[5, 0, 3], batch_size=2, collate_fn=lambda samples: samples)
    assert [[s[1] for s in batch] for batch in loader] == [[25, 0], [9]] and Batched.calls == 2
    loader = DataLoader(Squares(6), batch_sampler=[[1, 2], [5]])
    assert [b[1].numpy().tolist() for b in loader] == [[1, 4], [25]] and len(loader) == 2


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(num_workers=-1), ValueError, "num_workers option should be non-negative"),
    (dict(timeout=-1), ValueError, "timeout option should be non-negative"),
    (dict(prefetch_factor=2), ValueError, "prefetch_factor option could only be specified"),
    (dict(persistent_workers=True), ValueError, "persistent_workers option needs num_workers > 0"),
    (dict(sampler=[0, 1], shuffle=True), ValueError, "mutually exclusive with shuffle"),
    (dict(batch_sampler=[[0]], batch_size=2), ValueError, "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], drop_last=True), ValueError, "batch_sampler option is mutually exclusive"),
    (dict(batch_size=None, drop_last=True), ValueError, "disables auto-batching"),
    (dict(batch_size=0), ValueError, "batch_size should be a positive integer"),
    (dict(shuffle="yes"), TypeError, "shuffle"),
    (dict(collate_fn=3), TypeError, "collate_fn must be callable"),
    (dict(generator=1), TypeError, "generator must be"),
    (dict(multiprocessing_context="fork"), ValueError, "multi-process loading"),
    (dict(num_workers=1, multiprocessing_context="threads"), ValueError, "valid start method"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        DataLoader(Squares(4), **kwargs)


def test_iterable_dataset_rules_and_attributes_frozen():
    with pytest.raises(ValueError, match="expected unspecified shuffle"):
        DataLoader(Stream(4), shuffle=True)
    batches = [b.numpy().tolist() for b in DataLoader(Stream(7), batch_size=3, drop_last=True)]
    assert batches == [[0, 1, 2], [3, 4, 5]]
    loader = DataLoader(Squares(4))
    with pytest.raises(ValueError, match="should not be set"):
        loader.batch_size = 3


# -- worker processes ------------------------------------------------------------------------------
def test_workers_give_the_same_batches_in_order():
    main = _as_lists(DataLoader(Squares(23), batch_size=4))
    assert _as_lists(DataLoader(Squares(23), batch_size=4, num_workers=2)) == main
    unordered = _as_lists(DataLoader(Squares(23), batch_size=4, num_workers=2, in_order=False,
                                     prefetch_factor=3))
    assert sorted(map(str, unordered)) == sorted(map(str, main))


def test_worker_info_seeds_and_init_fn():
    loader = DataLoader(WhoAmI(), batch_size=3, num_workers=2, worker_init_fn=_init_worker,
                        generator=np.random.default_rng(11))
    batches = list(loader)
    workers = [int(w) for b in batches for w in b["worker"].numpy()]
    assert workers == [0] * 3 + [1] * 3 + [0] * 3 + [1] * 3  # round robin over workers, in order
    assert [int(v) for b in batches for v in b["initialised"].numpy()] == workers
    seeds = {int(w): int(s) for b in batches
             for w, s in zip(b["worker"].numpy(), b["seed"].numpy(), strict=True)}
    assert seeds[1] == seeds[0] + 1
    assert len({int(p) for b in batches for p in b["pid"].numpy()} - {os.getpid()}) == 2
    again = list(DataLoader(WhoAmI(), batch_size=3, num_workers=2, generator=np.random.default_rng(11)))
    assert [b["draw"].numpy().tolist() for b in again] == [b["draw"].numpy().tolist() for b in batches]
    draws = [d for b in batches for d in b["draw"].numpy().tolist()]
    assert len(set(draws)) == len(draws)  # workers do not share a random stream


def test_persistent_workers_are_reused_and_early_break_is_clean():
    loader = DataLoader(WhoAmI(), batch_size=4, num_workers=2, persistent_workers=True)
    pids = [{int(p) for b in loader for p in b["pid"].numpy()} for _ in range(2)]
    assert pids[0] == pids[1]
    for _ in loader:  # abandon an epoch half-way; the next one starts from the beginning
        break
    assert [b["index"].numpy().tolist() for b in loader][0] == [0, 1, 2, 3]
    loader._iterator.close()
    iterator = iter(DataLoader(Squares(40), batch_size=2, num_workers=2))
    next(iterator)
    workers = list(iterator._workers)
    del iterator
    deadline = time.monotonic() + 10
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(w.is_alive() for w in workers)


def test_iterable_dataset_with_workers():
    batches = [b.numpy().tolist() for b in DataLoader(Stream(10), batch_size=3, num_workers=2)]
    assert batches == [[0, 2, 4], [1, 3, 5], [6, 8], [7, 9]]


def test_worker_exception_is_raised_with_its_traceback():
    with pytest.raises(KeyError, match="Caught KeyError in DataLoader worker process"):
        list(DataLoader(Failing("raise"), batch_size=2, num_workers=2))


def test_dead_worker_is_an_error_not_a_hang():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid \d+ exit code 7\) exited unexpectedly"):
        list(DataLoader(Failing("exit"), batch_size=2, num_workers=2))
    assert time.monotonic() - start < 20


def test_timeout():
    with pytest.raises(RuntimeError, match="timed out after 1 seconds"):
        list(DataLoader(Failing("sleep"), batch_size=2, num_workers=1, timeout=1))


@pytest.mark.parametrize("kwargs", [dict(batch_size=4), dict(batch_size=4, drop_last=True),
                                    dict(batch_size=None), dict(batch_sampler=[[3, 1], [0, 2, 4]]),
                                    dict(sampler=[4, 4, 0], batch_size=2)])
def test_unshuffled_batches_match_torch(kwargs):
    torch = pytest.importorskip("torch")

    class Samples(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"x": np.full(3, i, np.float32), "y": i, "w": (i / 4, "s")}

    ours = list(DataLoader(Samples(), **kwargs))
    theirs = list(torch.utils.data.DataLoader(Samples(), **kwargs))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        for key in ("x", "y"):
            expected = b[key].numpy() if isinstance(b[key], torch.Tensor) else np.asarray(b[key])
            np.testing.assert_array_equal(np.asarray(getattr(a[key], "data", a[key])), expected)
        first = b["w"][0]
        np.testing.assert_array_equal(np.asarray(getattr(a["w"][0], "data", a["w"][0])),
                                      first.numpy() if isinstance(first, torch.Tensor) else first)
        assert a["w"][1] == b["w"][1]


def test_signatures_match_torch():
    torch = pytest.importorskip("torch")
    import inspect

    import npconv.utils.data as ours

    for name in ["DataLoader", "RandomSampler", "BatchSampler", "WeightedRandomSampler",
                 "SubsetRandomSampler", "random_split", "Subset", "ConcatDataset"]:
        mine = inspect.signature(getattr(ours, name))
        theirs = inspect.signature(getattr(torch.utils.data, name))
        assert list(mine.parameters) == list(theirs.parameters), name
        for key, parameter in theirs.parameters.items():
            if key != "generator":  # torch's default is its own default_generator object
                assert mine.parameters[key].default == parameter.default, (name, key)


@pytest.mark.parametrize("batch", [[1, 2.5], [True, 2], [2, True], [1.5, True], [1, 2], [True, False],
                                   [1, 2 + 1j]])
def test_default_collate_of_mixed_python_numbers_as_torch(batch):
    pytest.importorskip("torch")
    from torch.utils.data import default_collate as torch_collate

    ours, theirs = default_collate(batch), torch_collate(batch)
    assert str(ours.dtype) == str(theirs.dtype)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_default_collate_promotes_mixed_tensors_and_arrays_as_torch_stack():
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as torch_collate

    for make in (lambda lib, a: lib.tensor(a) if lib is npconv else torch.from_numpy(a), lambda lib, a: a):
        samples = [np.array([1], np.int64), np.array([2.5], np.float32)]
        ours = default_collate([make(npconv, a) for a in samples])
        theirs = torch_collate([make(torch, a) for a in samples])
        assert str(ours.dtype) == str(theirs.dtype) == "torch.float32"
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("workers", [0, 2])
def test_an_iterator_of_a_loader_has_its_length_as_torchs(workers):
    loader = DataLoader(TensorDataset(npconv.arange(10.0)), batch_size=4, num_workers=workers)
    iterator = iter(loader)
    assert len(iterator) == len(loader) == 3
    assert [len(batch[0]) for batch in iterator] == [4, 4, 2]
