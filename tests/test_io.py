"""Safetensors save/load, torch checkpoints read without torch, and refusal of malicious pickles."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import npconv
from npconv import nn
from npconv.io import CheckpointError, UnsafeCheckpointError
from torch_oracle import assert_close, torch_module

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def torch_net(dtype: str = "float32"):
    torch = torch_module()
    dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, padding=1, bias=False), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 10),
    ).to(dtype)
    net.train()
    with torch.no_grad():  # move the running statistics away from their initial values
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8, dtype=dtype) * 2 + 0.5)
    return net.eval()


def npconv_net(dtype=np.float32):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 10),
    ).to(dtype).eval()


# -- safetensors ---------------------------------------------------------------------------------
def test_safetensors_round_trip_keeps_values_dtypes_and_order(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 6))
    state = OrderedDict([
        ("z.weight", base.astype(np.float32)),
        ("a.double", base[:, ::2]),                                 # non-contiguous view
        ("m.half", base.T.astype(np.float16)),
        ("count", np.array(7, dtype=np.int64)),                     # 0-d
        ("mask", base > 0),
        ("bytes", np.arange(5, dtype=np.uint8)),
        ("small", np.arange(-3, 3, dtype=np.int8)),
        ("c64", (base + 1j * base[::-1]).astype(np.complex64)),
        ("c128", base * 1j - base),
        ("big_endian", base.astype(">f8")),
        ("empty", np.zeros((0, 3), dtype=np.float32)),
        ("tensor", npconv.tensor(base[0])),
    ])
    path = tmp_path / "weights.safetensors"
    npconv.save(state, path, metadata={"epoch": "3"})
    loaded = npconv.load(path)
    assert list(loaded) == list(state)
    for name, value in state.items():
        expected = np.asarray(value.numpy() if isinstance(value, npconv.Tensor) else value)
        assert isinstance(loaded[name], npconv.Tensor), name
        array = loaded[name].numpy()
        assert array.dtype == expected.dtype.newbyteorder("="), name
        assert array.shape == expected.shape, name
        np.testing.assert_array_equal(array, expected, err_msg=name)
        assert array.flags.writeable
    # the file is plain safetensors: the reference reader sees the same arrays and our metadata
    reference = safetensors_numpy.load_file(str(path))
    np.testing.assert_array_equal(reference["a.double"], state["a.double"])
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as handle:
        assert handle.metadata()["epoch"] == "3"


def test_safetensors_model_weights_load_into_torch_and_back(tmp_path, torch):
    """npconv's file loads with safetensors' torch API into the torch model: same outputs."""
    net = torch_net()
    ours = npconv_net()
    ours.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    path = tmp_path / "net.safetensors"
    npconv.save(ours.state_dict(), path)
    from safetensors.torch import load_file as torch_load_file
    fresh_torch = torch_net()
    for p in fresh_torch.parameters():
        torch.nn.init.zeros_(p)
    fresh_torch.load_state_dict(torch_load_file(str(path)))
    fresh_ours = npconv_net()
    fresh_ours.load_state_dict(npconv.load(path))
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x))
        assert_close(fresh_torch(torch.from_numpy(x)), expected)
    assert_close(fresh_ours(npconv.tensor(x)), expected)


@pytest.mark.parametrize(("obj", "error", "message"), [
    (nn.Linear(2, 2), TypeError, r"model.state_dict\(\)"),
    ([np.zeros(2)], TypeError, "mapping"),
    ({1: np.zeros(2)}, TypeError, "keys must be str"),
    ({"a": np.array(["x"], dtype=object)}, TypeError, "dtype object"),
    ({"a": np.array(["text"])}, TypeError, "dtype <U4"),
])
def test_save_rejects_bad_input_and_writes_nothing(tmp_path, obj, error, message):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(error, match=message):
        npconv.save(obj, path)
    assert not path.exists()


def test_save_rejects_non_text_metadata(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        npconv.save({"a": np.zeros(1)}, tmp_path / "m.safetensors", metadata={"epoch": 3})


def test_safetensors_needs_no_package(tmp_path, monkeypatch):
    """npconv reads and writes the format itself: the safetensors package is only the test's reference."""
    for module in ("safetensors", "safetensors.numpy"):
        monkeypatch.setitem(sys.modules, module, None)
    path = tmp_path / "x.safetensors"
    npconv.save({"a": np.arange(3.0)}, path)
    np.testing.assert_array_equal(npconv.load(path)["a"].numpy(), [0.0, 1.0, 2.0])


# -- torch checkpoints ---------------------------------------------------------------------------
def save_torch(obj, path, legacy):
    torch = torch_module()
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_state_dict_reproduces_torch_outputs(tmp_path, legacy, dtype, torch):
    net = torch_net(dtype)
    path = tmp_path / "net.pt"
    save_torch(net.state_dict(), path, legacy)
    state = npconv.load_torch(path)
    assert isinstance(state, OrderedDict) and list(state) == list(net.state_dict())
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"] == 3
    ours = npconv_net(np.dtype(dtype))
    ours.load_state_dict(state)
    x = np.random.default_rng(2).standard_normal((6, 1, 8, 8)) * 2
    x = x.astype(dtype)
    with torch.no_grad():
        expected = net(torch.from_numpy(x))
    assert_close(ours(npconv.tensor(x)), expected)
    for name, value in net.state_dict().items():  # buffers included, bit for bit
        np.testing.assert_array_equal(state[name], value.numpy(), err_msg=name)


def all_dtypes_checkpoint():
    torch = torch_module()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g, dtype=torch.float64)
    shared = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    with_attribute = torch.ones(2)          # pickled through torch._tensor._rebuild_from_type_v2
    with_attribute.note = "python attribute"
    parameter_with_attribute = torch.nn.Parameter(torch.zeros(3))  # _rebuild_parameter_with_state
    parameter_with_attribute.note = 1
    return {
        "model": torch_net().state_dict(),
        "tensors": {
            "float64": base,
            "float32_transposed": base.float().t(),                      # strides (1, 6)
            "float16": base.half(),
            "bfloat16": base.bfloat16(),
            "int64": torch.arange(-5, 5),
            "int32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
            "int16": torch.tensor([-2, 7], dtype=torch.int16),
            "int8": torch.tensor([-128, 127], dtype=torch.int8),
            "uint8": torch.tensor([0, 255], dtype=torch.uint8),
            "bool": base > 0,
            "complex64": torch.complex(base, -base).to(torch.complex64),
            "complex128": torch.complex(base, base * 2),
            "scalar": torch.tensor(3.5, dtype=torch.float64),
            "empty": torch.zeros(0, 3),
            "offset_view": shared[1:, 2:5],                              # storage offset 8
            "step_view": shared[::2, ::3],                               # strides (12, 3)
            "shared_whole": shared,                                      # same storage as the views
            "expanded": torch.tensor([1.0, 2.0]).expand(3, 2),          # stride 0
            "parameter": torch.nn.Parameter(base[0].clone()),
            "uint16": torch.tensor([1, 65535], dtype=torch.int32).to(torch.uint16),  # _rebuild_tensor_v3
            "with_attribute": with_attribute,
            "parameter_with_attribute": parameter_with_attribute,
        },
        "epoch": 3,
        "lr": [0.1, 0.01],
        "name": "digits",
        "size": torch.Size([2, 3]),
        "dtype": torch.float16,
        "device": torch.device("cpu"),
        "flags": (True, None, 2.5, 1 + 2j),
        "blob": b"\x00\x01bytes",
        "tags": {"a", "b"},
    }


def to_expected(value):
    torch = torch_module()
    if value.dtype == torch.bfloat16:
        return value.float().numpy()
    return value.detach().numpy()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_dtype_view_and_plain_value_loads(tmp_path, legacy):
    checkpoint = all_dtypes_checkpoint()
    path = tmp_path / "all.pt"
    save_torch(checkpoint, path, legacy)
    loaded = npconv.load_torch(path)
    for name, value in checkpoint["tensors"].items():
        ours = loaded["tensors"][name]
        expected = to_expected(value)
        assert isinstance(ours, np.ndarray), name
        # a view that reaches one element twice (stride 0) stays a read-only view, as in torch's memory
        assert ours.flags.writeable == (name != "expanded"), name
        assert ours.dtype == expected.dtype and ours.shape == expected.shape, name
        np.testing.assert_array_equal(ours, expected, err_msg=name)
    # views of one storage share memory, as torch.load's do
    assert np.shares_memory(loaded["tensors"]["offset_view"], loaded["tensors"]["shared_whole"])
    assert np.shares_memory(loaded["tensors"]["step_view"], loaded["tensors"]["shared_whole"])
    assert loaded["epoch"] == 3 and loaded["lr"] == [0.1, 0.01] and loaded["name"] == "digits"
    assert loaded["size"] == (2, 3) and loaded["dtype"] == np.float16 and loaded["device"] == "cpu"
    assert loaded["flags"] == (True, None, 2.5, 1 + 2j)
    assert loaded["blob"] == b"\x00\x01bytes" and loaded["tags"] == {"a", "b"}
    for name, value in checkpoint["model"].items():
        np.testing.assert_array_equal(loaded["model"][name], value.numpy())


def test_load_from_file_object_and_gpu_location_tag(tmp_path, torch):
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, buffer)
    # a checkpoint written on a GPU only differs by the location string of its storages
    data = buffer.getvalue()
    archive = zipfile.ZipFile(io.BytesIO(data))
    entries = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    pkl = next(n for n in entries if n.endswith("data.pkl"))
    entries[pkl] = entries[pkl].replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    path = tmp_path / "gpu.pt"
    write_zip(path, entries)
    np.testing.assert_array_equal(npconv.load_torch(io.BytesIO(data))["w"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(npconv.load_torch(path)["w"], [0.0, 1.0, 2.0])


def test_torch_optimizer_checkpoint_resumes_in_npconv(tmp_path, torch):
    """A torch Adam checkpoint (model + optimizer) resumes in npconv like torch itself continues."""
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((3, 2))
    theirs = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    torch_opt = torch.optim.Adam([theirs], lr=0.01, amsgrad=True, foreach=False)
    grads = [rng.standard_normal((3, 2)) for _ in range(5)]
    for g in grads[:2]:
        theirs.grad = torch.from_numpy(g.copy())
        torch_opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"w": theirs.detach(), "optimizer": torch_opt.state_dict()}, path)
    checkpoint = npconv.load_torch(path)
    ours = nn.Parameter(checkpoint["w"])
    our_opt = npconv.optim.Adam([ours], lr=0.5)
    our_opt.load_state_dict(checkpoint["optimizer"])
    for g in grads[2:]:
        theirs.grad = torch.from_numpy(g.copy())
        torch_opt.step()
        ours.grad = npconv.Tensor(g.copy())
        our_opt.step()
    assert_close(ours.numpy(), theirs)


# -- malformed files -----------------------------------------------------------------------------
def write_zip(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def torch_entries(obj):
    torch = torch_module()
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    archive = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    return {info.filename: archive.read(info.filename) for info in archive.infolist()}


def test_malformed_files_raise_checkpoint_error(tmp_path, torch):
    good = torch_entries({"w": torch.arange(4.0)})
    pkl = next(n for n in good if n.endswith("data.pkl"))
    cases = {
        "random.pt": b"\x80\x02not really a pickle at all",
        "text.pt": b"hello world",
        "truncated.pt": open_bytes(good)[:200],
        "nopickle.pt": {"archive/version": b"3\n"},
        "nostorage.pt": {k: v for k, v in good.items() if "/data/" not in k},
        "short_storage.pt": {k: (v[:8] if "/data/" in k else v) for k, v in good.items()},
        "big_size.pt": {**good, pkl: good[pkl].replace(b"K\x04\x85", b"K\x09\x85")},
        "torchscript.pt": {"archive/constants.pkl": b"", "archive/code/x.py": b""},
    }
    expected_messages = {
        "random.pt": "malformed pickle", "text.pt": "neither a zip", "truncated.pt": "damaged|neither",
        "nopickle.pt": "without data.pkl", "nostorage.pt": "does not contain",
        "short_storage.pt": "declares 16 bytes, but its record holds 8", "big_size.pt": "reaches element",
        "torchscript.pt": "TorchScript",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, dict):
            write_zip(path, content)
        else:
            path.write_bytes(content)
        with pytest.raises(CheckpointError, match=expected_messages[name]) as info:
            npconv.load_torch(path)
        assert isinstance(info.value, ValueError), name


def open_bytes(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- malicious pickles ---------------------------------------------------------------------------
class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


class Payload:
    """A custom class whose unpickling (``__setstate__``) writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()
        self.__dict__.update(state)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize(("make", "refused"), [
    (RunsShell, "system"), (RunsEval, "builtin__.eval"), (Payload, "Payload"),
], ids=["os.system", "eval", "custom-class"])
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, make, refused, legacy, torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    # the payload sits first, next to real tensors, as a poisoned state dict would carry it
    save_torch({"payload": make(marker), "weight": torch.ones(2, 2)}, path, legacy)
    with pytest.raises(UnsafeCheckpointError, match=refused) as info:
        npconv.load_torch(path)
    assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, ValueError)
    assert "nothing from the file was executed" in str(info.value)
    assert not marker.exists()
    # the payload is live: torch's unrestricted loader does run it
    torch.load(path, weights_only=False)
    assert marker.exists()


PROTO2_EXEC = b"\x80\x02cbuiltins\nexec\nq\x00X\x0c\x00\x00\x00import os\n1+1q\x01\x85q\x02Rq\x03."


@pytest.mark.parametrize(("payload", "message"), [
    # GLOBAL + REDUCE of builtins.exec
    (PROTO2_EXEC, "builtins.exec"),
    # protocol 4 STACK_GLOBAL of os.system
    (pickle.dumps(RunsShell("/nonexistent/x"), protocol=4), "system"),
    # INST opcode (protocol 0) of subprocess.Popen
    (b"(S'true'\nisubprocess\nPopen\n.", "subprocess.Popen"),
    # an admitted class (OrderedDict) whose BUILD state tries to overwrite a dunder
    (b"\x80\x02ccollections\nOrderedDict\n)R}X\x09\x00\x00\x00__class__K\x01sb.", "state of"),
    # an admitted function smuggled as the class of NEWOBJ
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)\x81.", "instantiate"),
    # a persistent id that is not a storage
    (b"\x80\x02X\x04\x00\x00\x00evilQ.", "persistent id"),
    # copyreg's extension registry (would let later EXT opcodes name arbitrary globals)
    (b"\x80\x02ccopyreg\nadd_extension\n.", "copyreg.add_extension"),
])
def test_hand_written_pickles_are_refused(tmp_path, payload, message):
    path = tmp_path / "crafted.pt"
    write_zip(path, {"archive/data.pkl": payload, "archive/version": b"3\n"})
    with pytest.raises(UnsafeCheckpointError, match=message):
        npconv.load_torch(path)


def test_admitted_rebuild_function_with_bogus_arguments_is_a_clean_error(tmp_path):
    payload = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sK\x00))\x89NtR."
    path = tmp_path / "bogus.pt"
    write_zip(path, {"archive/data.pkl": payload})
    with pytest.raises(CheckpointError, match="rebuilt from a storage"):
        npconv.load_torch(path)


def test_legacy_stream_with_malicious_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy_evil.pt"
    path.write_bytes(pickle.dumps(RunsShell(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        npconv.load_torch(path)
    assert not marker.exists()


def test_save_and_load_take_torchs_pickle_arguments():
    buffer = io.BytesIO()
    npconv.save({"x": npconv.ones(2)}, buffer, pickle_module=pickle, pickle_protocol=4,
                _use_new_zipfile_serialization=False)
    buffer.seek(0)
    assert npconv.load(buffer, pickle_module=pickle)["x"].numpy().tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="pickle_protocol must be an int from 2 to 5"):
        npconv.save({}, io.BytesIO(), pickle_protocol=1)
    with pytest.raises(TypeError, match="pickle_module must be a pickle-like module"):
        npconv.load(io.BytesIO(), pickle_module="pickle")
