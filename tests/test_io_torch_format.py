"""npconv.save writes torch's zip format, npconv.load reads what torch.save wrote: checked against torch."""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv import nn
from npconv.io import CheckpointError, UnsafeCheckpointError


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def torch_round(obj, torch, **load_args):
    """npconv.save -> bytes -> torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    npconv.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True, **load_args)


def npconv_round(obj, torch, **load_args):
    """torch.save -> bytes -> npconv.load."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return npconv.load(buffer, **load_args)


def arrays_by_dtype():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 4))
    return {
        "float16": base.astype(np.float16), "float32": base.astype(np.float32), "float64": base,
        "int64": rng.integers(-2**62, 2**62, (3, 4)), "int32": rng.integers(-9, 9, (3, 4)).astype(np.int32),
        "int16": np.array([-2, 7], dtype=np.int16), "int8": np.array([-128, 127], dtype=np.int8),
        "uint8": np.array([0, 255], dtype=np.uint8), "uint16": np.array([1, 65535], dtype=np.uint16),
        "bool": base > 0, "complex64": (base + 1j).astype(np.complex64), "complex128": base - 2j * base,
        "scalar": np.array(2.5), "int_scalar": np.array(7), "empty": np.zeros((0, 3), dtype=np.float32),
        "empty_3d": np.ones((2, 0, 4), dtype=np.int64),
    }


# -- npconv.save -> torch.load ---------------------------------------------------------------------
def test_every_dtype_saved_by_npconv_loads_in_torch(torch):
    state = {name: npconv.tensor(array) for name, array in arrays_by_dtype().items()}
    loaded = torch_round(state, torch)
    assert list(loaded) == list(state)
    for name, value in state.items():
        ours = loaded[name]
        assert isinstance(ours, torch.Tensor) and not ours.requires_grad, name
        assert ours.dtype == getattr(torch, value.numpy().dtype.name), name
        assert tuple(ours.shape) == value.shape, name
        np.testing.assert_array_equal(ours.numpy(), value.numpy(), err_msg=name)


def test_views_of_one_array_share_one_storage_in_torch(torch):
    base = np.arange(40, dtype=np.float32).reshape(5, 8)
    state = OrderedDict([("whole", base), ("rows", base[1:3]), ("cols", base[:, 2:7:2]), ("t", base.T),
                         ("elem", base[4, 7, ...]), ("copy", base.copy())])
    loaded = torch_round(state, torch)
    for name, array in state.items():
        np.testing.assert_array_equal(loaded[name].numpy(), array, err_msg=name)
    pointer = loaded["whole"].untyped_storage().data_ptr()
    for name in ("rows", "cols", "t", "elem"):
        assert loaded[name].untyped_storage().data_ptr() == pointer, name
    assert loaded["copy"].untyped_storage().data_ptr() != pointer
    loaded["whole"][1, 2] = -1.0  # writes through, as views in torch do
    assert loaded["rows"][0, 2] == -1.0 and loaded["t"][2, 1] == -1.0


def test_a_small_view_of_a_large_array_saves_only_what_it_reaches(torch):
    big = np.zeros((1000, 1000))
    buffer = io.BytesIO()
    npconv.save({"corner": big[500:502, :3]}, buffer)  # reaches 1003 elements of the million
    assert len(buffer.getvalue()) < 16384  # torch.save(big_tensor[500:502, :3]) would write all 8 MB
    buffer.seek(0)
    assert torch.load(buffer)["corner"].shape == (2, 3)


def test_odd_layouts_are_saved_as_copies(torch):
    base = np.arange(24.0).reshape(4, 6)
    raw = np.frombuffer(np.arange(10, dtype=np.int32).tobytes()[2:38], dtype=np.int32)  # unaligned root
    state = {"reversed": base[::-1, ::-2], "big_endian": base.astype(">f4"), "broadcast": np.broadcast_to(
        np.arange(3.0), (4, 3)), "unaligned": raw, "fortran": np.asfortranarray(base)[1:, 1:]}
    loaded = torch_round(state, torch)
    for name, array in state.items():
        np.testing.assert_array_equal(loaded[name].numpy(), array, err_msg=name)


def test_parameters_requires_grad_and_plain_values_reach_torch(torch):
    weight = nn.Parameter(np.ones((2, 2), dtype=np.float32))
    frozen = nn.Parameter(np.zeros(3), requires_grad=False)
    leaf = npconv.tensor(np.arange(3.0), requires_grad=True)
    state = OrderedDict(a=1)
    state._metadata = {"": {"version": 1}}
    obj = {"weight": weight, "frozen": frozen, "leaf": leaf, "again": weight, "state": state,
           "plain": [1, -7, 2**40, -(2**70), 1.5, float("inf"), "text", "ünï", b"\x00\xffbytes", None, True,
                     False, 1 - 2j, (1, (2, [3])), {4, 5}, np.float32(0.25), np.int64(3), np.bool_(True)],
           "dtypes": [np.float32, np.dtype(np.int64), np.dtype(np.bool_)], 3: "int key"}
    loaded = torch_round(obj, torch)
    assert isinstance(loaded["weight"], torch.nn.Parameter) and loaded["weight"].requires_grad
    assert isinstance(loaded["frozen"], torch.nn.Parameter) and not loaded["frozen"].requires_grad
    assert loaded["frozen"].dtype == torch.float64
    assert not isinstance(loaded["leaf"], torch.nn.Parameter) and loaded["leaf"].requires_grad
    assert loaded["again"] is loaded["weight"]
    assert isinstance(loaded["state"], OrderedDict) and loaded["state"]._metadata == {"": {"version": 1}}
    assert loaded["plain"] == obj["plain"][:15] + [0.25, 3, True]
    assert loaded["dtypes"] == [torch.float32, torch.int64, torch.bool]
    assert loaded[3] == "int key"


def test_shared_containers_stay_shared(torch):
    inner = [1, 2]
    outer = {"a": inner, "b": inner}
    for loaded in (torch_round(outer, torch), npconv_round(outer, torch)):
        assert loaded["a"] is loaded["b"] and loaded["a"] == [1, 2]


def test_torch_can_memory_map_npconv_files(torch, tmp_path):
    path = tmp_path / "mapped.pt"
    state = {"w": np.arange(100, dtype=np.float32), "b": np.ones(7)}
    npconv.save(state, path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    np.testing.assert_array_equal(loaded["w"].numpy(), state["w"])
    np.testing.assert_array_equal(loaded["b"].numpy(), state["b"])


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=3), data=st.data(),
       dtype=st.sampled_from(["float32", "float64", "int64", "bool", "float16"]))
def test_random_views_round_trip_both_ways(shape, data, dtype):
    torch = pytest.importorskip("torch")
    base = np.asarray(np.arange(int(np.prod(shape))).reshape(shape) % 7, dtype=dtype)
    slices = tuple(slice(data.draw(st.integers(0, n)), None, data.draw(st.integers(1, 3))) for n in shape)
    view = base[slices] if shape else base[...]
    if view.ndim > 1 and data.draw(st.booleans()):
        view = view.transpose(data.draw(st.permutations(range(view.ndim))))
    state = {"base": base, "view": view}
    theirs = torch_round(state, torch)
    for name, array in state.items():
        assert theirs[name].shape == array.shape
        np.testing.assert_array_equal(theirs[name].numpy(), array)
    ours = npconv_round(theirs, torch)
    for name, array in state.items():
        assert ours[name].numpy().dtype == array.dtype
        np.testing.assert_array_equal(ours[name].numpy(), array)


# -- torch.save -> npconv.load ---------------------------------------------------------------------
def test_every_dtype_saved_by_torch_loads_as_npconv_tensors(torch):
    state = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in arrays_by_dtype().items()}
    state["bfloat16"] = torch.linspace(-3, 3, 11).bfloat16()
    loaded = npconv_round(state, torch)
    for name, value in state.items():
        ours = loaded[name]
        assert isinstance(ours, npconv.Tensor) and not isinstance(ours, nn.Parameter), name
        expected = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
        assert ours.numpy().dtype == expected.dtype and ours.shape == tuple(value.shape), name
        np.testing.assert_array_equal(ours.numpy(), expected, err_msg=name)
        assert ours.numpy().flags.writeable, name


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_every_bit_pattern_of_the_upcast_types_matches_torch(torch, name):
    """bfloat16 and float8 come back as float32 with exactly torch's values (inf and NaN included)."""
    bits = torch.arange(65536 if name == "bfloat16" else 256, dtype=torch.int32)
    raw = bits.to(torch.int16 if name == "bfloat16" else torch.uint8)
    values = raw.view(getattr(torch, name))
    ours = npconv_round({"v": values, "strided": values[1::3]}, torch)
    expected = values.float().numpy()
    np.testing.assert_array_equal(ours["v"].numpy(), expected)
    np.testing.assert_array_equal(ours["strided"].numpy(), expected[1::3])
    assert ours["v"].numpy().dtype == np.float32


def test_torch_views_share_memory_and_overlapping_views_are_read_only(torch):
    base = torch.arange(24.0).reshape(4, 6)
    obj = {"base": base, "view": base[1:, ::2], "t": base.t(), "expanded": torch.ones(3).expand(1000, 3),
           "scalar": torch.tensor(5), "empty": torch.zeros(0, 2)}
    loaded = npconv_round(obj, torch)
    for name, value in obj.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value.numpy(), err_msg=name)
    assert np.shares_memory(loaded["view"].numpy(), loaded["base"].numpy())
    assert np.shares_memory(loaded["t"].numpy(), loaded["base"].numpy())
    loaded["base"].numpy()[1, 2] = -1  # as in torch, a write shows in every view of the storage
    assert loaded["view"].numpy()[0, 1] == -1 and loaded["t"].numpy()[2, 1] == -1
    assert not loaded["expanded"].numpy().flags.writeable  # 1000 rows over 3 elements: a view, not a copy
    assert loaded["expanded"].numpy().base is not None and loaded["scalar"].shape == ()


def test_parameters_and_requires_grad_come_back_as_torch_saved_them(torch):
    leaf = torch.arange(3.0, requires_grad=True)
    obj = {"p": torch.nn.Parameter(torch.ones(2)),
           "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
           "leaf": leaf, "plain": torch.ones(2), "size": torch.Size([2, 3]), "dtype": torch.float16,
           "device": torch.device("cpu"), "nested": [{"x": (torch.zeros(1), 3)}], "epoch": 7,
           "bytes": b"\x01", "set": {1, 2}, "complex": 1 + 1j}
    loaded = npconv_round(obj, torch)
    assert isinstance(loaded["p"], nn.Parameter) and loaded["p"].requires_grad
    assert isinstance(loaded["frozen"], nn.Parameter) and not loaded["frozen"].requires_grad
    assert type(loaded["leaf"]) is npconv.Tensor and loaded["leaf"].requires_grad
    assert not loaded["plain"].requires_grad
    assert loaded["size"] == (2, 3) and loaded["dtype"] == np.float16 and loaded["device"] == "cpu"
    assert isinstance(loaded["nested"][0]["x"][0], npconv.Tensor) and loaded["nested"][0]["x"][1] == 3
    plain = (loaded["epoch"], loaded["bytes"], loaded["set"], loaded["complex"])
    assert plain == (7, b"\x01", {1, 2}, 1 + 1j)


def test_load_torch_returns_ndarrays_and_load_returns_tensors(torch, tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.nn.Parameter(torch.ones(2))}, path)
    assert type(npconv.load_torch(path)["w"]) is np.ndarray
    assert isinstance(npconv.load(path)["w"], nn.Parameter)
    assert isinstance(npconv.load(str(path))["w"], nn.Parameter)
    with open(path, "rb") as handle:
        assert isinstance(npconv.load(handle)["w"], nn.Parameter)


# -- whole training states -------------------------------------------------------------------------
class TorchNet:
    @staticmethod
    def build(torch):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))


def npconv_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def batches(count):
    rng = np.random.default_rng(5)
    return [(rng.standard_normal((8, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 8))
            for _ in range(count)]


def torch_steps(torch, model, optimizer, data):
    for x, y in data:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimizer.step()


def npconv_steps(model, optimizer, data):
    for x, y in data:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(npconv.tensor(x)), npconv.tensor(y)).backward()
        optimizer.step()


def assert_state_close(ours, theirs):
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(np.asarray(ours[name]), value.numpy(), rtol=2e-5, atol=2e-6, err_msg=name)


def test_torch_training_checkpoint_resumes_in_npconv(torch, tmp_path):
    data = batches(6)
    model = TorchNet.build(torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    torch_steps(torch, model, optimizer, data[:3])
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, path)
    torch_steps(torch, model, optimizer, data[3:])

    checkpoint = npconv.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 3 and isinstance(checkpoint["model"], OrderedDict)
    ours = npconv_net()
    ours.load_state_dict(checkpoint["model"])
    our_optimizer = npconv.optim.Adam(ours.parameters(), lr=0.5)
    our_optimizer.load_state_dict(checkpoint["optimizer"])
    npconv_steps(ours, our_optimizer, data[3:])
    assert_state_close(ours.state_dict(), model.state_dict())


def test_npconv_training_checkpoint_resumes_in_torch(torch, tmp_path):
    data = batches(6)
    reference = TorchNet.build(torch)
    ours = npconv_net()
    ours.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    our_optimizer = npconv.optim.Adam(ours.parameters(), lr=0.01)
    npconv_steps(ours, our_optimizer, data[:3])
    path = tmp_path / "ckpt.pt"
    npconv.save({"model": ours.state_dict(), "optimizer": our_optimizer.state_dict(), "epoch": 3}, path)
    npconv_steps(ours, our_optimizer, data[3:])

    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == 3
    theirs = TorchNet.build(torch)
    theirs.load_state_dict(checkpoint["model"])
    optimizer = torch.optim.Adam(theirs.parameters(), lr=0.5)
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch_steps(torch, theirs, optimizer, data[3:])
    assert_state_close(ours.state_dict(), theirs.state_dict())


# -- arguments -------------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    npconv.save({"w": np.arange(3.0)}, path)
    return path


def test_map_location_on_the_cpu(checkpoint, torch):
    for location in (None, "cpu", "cpu:0", torch.device("cpu"), {"cuda:0": "cpu"},
                     {"cpu": torch.device("cpu")}, lambda storage, where: storage,
                     lambda storage, where: storage.cpu()):
        np.testing.assert_array_equal(npconv.load(checkpoint, map_location=location)["w"].numpy(), [0, 1, 2])


def test_a_checkpoint_saved_on_a_gpu_lands_on_the_cpu(checkpoint, tmp_path):
    import zipfile

    with zipfile.ZipFile(checkpoint) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["archive/data.pkl"] = entries["archive/data.pkl"].replace(b"X\x03\x00\x00\x00cpu",
                                                                      b"X\x06\x00\x00\x00cuda:0")
    gpu = tmp_path / "gpu.pt"
    with zipfile.ZipFile(gpu, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    seen = []
    loaded = npconv.load(gpu, map_location=lambda storage, where: seen.append(where) or storage)
    assert seen == ["cuda:0"]
    np.testing.assert_array_equal(loaded["w"].numpy(), [0, 1, 2])


@pytest.mark.parametrize(("location", "error", "message"), [
    ("cuda", ValueError, "CPU only"), ("cuda:1", ValueError, "CPU only"), ("mps", ValueError, "CPU only"),
    ({"cpu": "cuda:0"}, ValueError, r"map_location\['cpu'\]"), (3, TypeError, "map_location must be"),
    ({0: "cpu"}, TypeError, "keys must be"),
    (lambda storage, where: "cuda", ValueError, "return the storage"),
])
def test_map_location_elsewhere_is_a_clear_error(checkpoint, location, error, message):
    with pytest.raises(error, match=message):
        npconv.load(checkpoint, map_location=location)


def test_cuda_map_location_is_refused_before_the_file_is_opened(tmp_path, torch):
    with pytest.raises(ValueError, match="CPU only"):
        npconv.load(tmp_path / "does-not-exist.pt", map_location=torch.device("cuda"))


def test_weights_only(checkpoint, tmp_path):
    for flag in (True, False, None):
        np.testing.assert_array_equal(npconv.load(checkpoint, weights_only=flag)["w"].numpy(), [0, 1, 2])
    with pytest.raises(TypeError, match="weights_only must be a bool"):
        npconv.load(checkpoint, weights_only="no")


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_weights_only_false_still_never_executes_code(tmp_path, torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "payload": Payload(marker)}, path)
    refusal = r"'posix\.system'.*not even with weights_only=False"
    with pytest.raises(UnsafeCheckpointError, match=refusal) as info:
        npconv.load(path, weights_only=False)
    assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, ValueError)
    assert not marker.exists()


@pytest.mark.parametrize(("obj", "error", "message"), [
    (nn.Linear(2, 2), TypeError, r"a Linear is not a tensor.*model.state_dict\(\)"),
    ({"a": np.array(["x"], dtype=object)}, TypeError, r"obj\['a'\]: dtype object"),
    ({"a": [1, frozenset({1})]}, TypeError, r"obj\['a'\]\[1\]: a frozenset"),
    ({"f": lambda: 0}, TypeError, r"obj\['f'\]: a function"),
    ({"big": 2**3000}, TypeError, "3001 bits"),
    ({"t": np.array(["2020-01-01"], dtype="datetime64[D]")}, TypeError, "datetime64"),
])
def test_save_refuses_what_torch_could_not_load_and_writes_nothing(tmp_path, obj, error, message):
    path = tmp_path / "out.pt"
    with pytest.raises(error, match=message):
        npconv.save(obj, path)
    assert not path.exists()
    path.write_bytes(b"previous")
    with pytest.raises(error):
        npconv.save(obj, path)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.pt"]


def test_save_refuses_deep_nesting_cleanly(tmp_path):
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        npconv.save(deep, tmp_path / "deep.pt")


def test_save_format_argument(tmp_path, torch):
    state = {"w": np.arange(3.0)}
    npconv.save(state, tmp_path / "a.pt", format="safetensors")
    npconv.save(state, tmp_path / "b.safetensors")
    npconv.save(state, tmp_path / "c.safetensors", format="torch")
    assert (tmp_path / "a.pt").read_bytes()[8:9] == b"{"
    assert (tmp_path / "b.safetensors").read_bytes()[8:9] == b"{"
    assert (tmp_path / "c.safetensors").read_bytes()[:4] == b"PK\x03\x04"
    for name in ("a.pt", "b.safetensors", "c.safetensors"):
        np.testing.assert_array_equal(npconv.load(tmp_path / name)["w"].numpy(), state["w"])
    assert torch.load(io.BytesIO((tmp_path / "c.safetensors").read_bytes()))["w"].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(CheckpointError, match="neither a zip nor a torch.save checkpoint"):
        npconv.load_torch(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="format must be 'torch' or 'safetensors'"):
        npconv.save(state, tmp_path / "d.pt", format="pickle")
    with pytest.raises(ValueError, match="metadata is stored only in safetensors"):
        npconv.save(state, tmp_path / "e.pt", metadata={"a": "b"})
    with pytest.raises(TypeError, match="path or a binary file"):
        npconv.load(3.5)
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "b.safetensors", "c.safetensors"]


def test_mmap_maps_storages_copy_on_write(tmp_path):
    path = tmp_path / "mapped.pt"
    npconv.save({"w": np.arange(1 << 16, dtype=np.float32), "b": np.ones(3)}, path)
    before = path.read_bytes()
    loaded = npconv.load(path, mmap=True)
    np.testing.assert_array_equal(loaded["w"].numpy(), np.arange(1 << 16))
    owner, chain = loaded["w"].numpy(), []
    while owner is not None:
        chain.append(type(owner).__name__)
        owner = getattr(owner, "base", None)
    assert "memmap" in chain or "mmap" in chain, chain
    loaded["w"].numpy()[0] = -1.0  # private pages: the file is unchanged
    assert path.read_bytes() == before
    np.testing.assert_array_equal(npconv.load(path, mmap=False)["w"].numpy(), np.arange(1 << 16))
    with pytest.raises(ValueError, match="needs a file path"):
        npconv.load(io.BytesIO(before), mmap=True)
    npconv.save({"w": np.ones(2)}, tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="zip format"):
        npconv.load(tmp_path / "s.safetensors", mmap=True)
    with pytest.raises(TypeError, match="mmap must be a bool"):
        npconv.load(path, mmap="yes")


def test_a_torch_multisteplr_state_loads_with_its_counter(tmp_path):
    """torch's weights-only load allows ``collections.Counter`` (a ``MultiStepLR`` state's milestones);
    npconv reads it too, and the scheduler resumes from it."""
    import collections

    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 3, 3], gamma=0.5)
    scheduler.step()
    torch.save({"scheduler": scheduler.state_dict()}, tmp_path / "s.pt")
    state = npconv.load(tmp_path / "s.pt")["scheduler"]
    assert type(state["milestones"]) is collections.Counter
    theirs = torch.load(tmp_path / "s.pt")["scheduler"]["milestones"]
    assert state["milestones"] == collections.Counter([2, 3, 3]) == theirs
    ours = npconv.optim.SGD([npconv.nn.Parameter(npconv.zeros(2))], lr=0.1)
    resumed = npconv.optim.lr_scheduler.MultiStepLR(ours, milestones=[1])
    resumed.load_state_dict(state)
    lrs = []
    for _ in range(3):
        ours.step(), resumed.step(), opt.step(), scheduler.step()
        lrs.append((ours.param_groups[0]["lr"], opt.param_groups[0]["lr"]))
    assert all(a == pytest.approx(b) for a, b in lrs)


def test_a_counter_is_rebuilt_only_from_a_dict():
    from npconv import io

    assert io._counter({1: 2}) == {1: 2} and io._counter() == {}
    for args in (([1, 2],), ({1: 2}, {3: 4}), ("abc",)):
        with pytest.raises(npconv.io.UnsafeCheckpointError, match="collections.Counter"):
            io._counter(*args)
