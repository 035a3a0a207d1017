"""Files from strangers: a corpus of malformed and hostile checkpoints, each built here by code.

Every file must give npconv's own CheckpointError (a ValueError) - never a zlib, zipfile, pickle,
Recursion, Memory or NumPy error - allocate nothing near what it claims (tracemalloc peak), and
run none of its code. Needs neither torch nor the safetensors package: the valid files the
corpus starts from are written by npconv.save.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import npconv
from npconv.io import CheckpointError, UnsafeCheckpointError

# Every file below claims far more. Beyond its tensors (whose sizes are checked against the file), a
# pickle makes at most one small Python object per opcode byte: ~100 bytes per byte of pickle at worst.
PEAK_LIMIT = 8 << 20
PER_FILE_BYTE = 128
HUGE = 1 << 40


def torch_entries(obj) -> dict[str, bytes]:
    buffer = io.BytesIO()
    npconv.save(obj, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def zip_bytes(entries, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_headers(data: bytes, offset_local: int, offset_central: int, fmt: str, value: int,
                  only: bytes | None = None) -> bytes:
    """Rewrite one field of every local and central zip header (of the record named ``only``)."""
    out = bytearray(data)
    for signature, field, name_at in ((b"PK\x03\x04", offset_local, 30), (b"PK\x01\x02", offset_central, 46)):
        start = 0
        while (start := out.find(signature, start)) >= 0:
            name_length = struct.unpack_from("<H", out, start + (26 if name_at == 30 else 28))[0]
            name = bytes(out[start + name_at:start + name_at + name_length])
            if only is None or name == only:
                struct.pack_into(fmt, out, start + field, value)
            start += 4
    return bytes(out)


def with_pickle(payload: bytes, storages: dict[str, bytes] | None = None) -> bytes:
    entries = {"archive/data.pkl": payload, "archive/version": b"3\n"}
    entries.update({f"archive/data/{k}": v for k, v in (storages or {}).items()})
    return zip_bytes(entries)


def tensor_pickle(numel: int, size: tuple[int, ...], stride: tuple[int, ...], storage="FloatStorage",
                  offset: int = 0, dtype: str | None = None) -> bytes:
    """The pickle torch writes for one tensor, with chosen storage size, shape, strides (and v3 dtype)."""
    def ints(values):
        return b"(" + b"".join(b"\x8a\x08" + v.to_bytes(8, "little", signed=True) for v in values) + b"t"
    rebuild = b"_rebuild_tensor_v3" if dtype else b"_rebuild_tensor_v2"
    return (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n" + rebuild + b"\n((X\x07\x00\x00\x00storage"
            + b"ctorch\n" + storage.encode() + b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
            + b"\x8a\x08" + numel.to_bytes(8, "little") + b"tQ" + b"\x8a\x08" + offset.to_bytes(8, "little")
            + ints(size) + ints(stride) + b"\x89ccollections\nOrderedDict\n)R"
            + (b"ctorch\n" + dtype.encode() + b"\n" if dtype else b"") + b"tRs.")


def legacy_stream(body: bytes, tail: bytes = b"") -> bytes:
    header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001,
                                                            {"little_endian": True}))
    return header + body + tail


def safetensors_bytes(header: dict, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    encoded = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def good_safetensors(metadata=None) -> tuple[dict, bytes]:
    buffer = io.BytesIO()
    npconv.save({"a": np.arange(4, dtype=np.float32), "b": np.ones(2, dtype=np.uint8)}, buffer,
                format="safetensors", metadata=metadata)
    data = buffer.getvalue()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def corpus():
    good = torch_entries({"w": np.arange(4, dtype=np.float32)})
    pkl = good["archive/data.pkl"]
    storage = good["archive/data/0"]
    deflated = zip_bytes(good, zipfile.ZIP_DEFLATED)
    data_0 = b"archive/data/0"
    cases = {}

    def add(name, content, message):
        cases[name] = (content, message)

    # -- the zip layer
    packed = zlib.compress(storage)[2:-4]
    add("corrupt deflate", deflated.replace(packed, b"\xff" * len(packed), 1), "damaged|Error")
    add("encrypted flag", patch_headers(zip_bytes(good), 6, 8, "<H", 1), "encrypted")
    add("unknown compression", patch_headers(zip_bytes(good), 8, 10, "<H", 93), "compression method 93")
    add("lzma compression", patch_headers(zip_bytes(good), 8, 10, "<H", 14), "compression method 14")
    add("record past the end", patch_headers(zip_bytes(good), 18, 20, "<I", 0xFFFFFFF0, data_0),
        "past the end")
    add("inflation claim", patch_headers(deflated, 22, 24, "<I", 0xFFFFFFF0, data_0),
        "claims 4294967280 bytes from")
    bomb = zip_bytes({**good, "archive/data/0": storage + bytes(16 << 20)}, zipfile.ZIP_DEFLATED)
    add("storage inflates beyond its size", patch_headers(bomb, 22, 24, "<I", len(storage), data_0),
        "damaged|CRC|Bad")
    add("truncated zip", zip_bytes(good)[:300], "damaged|neither")
    add("no central directory", zip_bytes(good)[:-22], "damaged")
    add("two data.pkl", zip_bytes({**good, "other/data.pkl": pkl}), "several data.pkl")
    add("long byteorder", zip_bytes({**good, "archive/byteorder": b"little" * 100}), "byteorder record")
    add("odd byteorder", zip_bytes({**good, "archive/byteorder": b"middle"}), "unknown byteorder")

    # -- sizes the pickle claims
    stored = {"0": storage}
    add("storage claims 1 TiB", with_pickle(tensor_pickle(HUGE, (4,), (1,)), stored),
        "declares 4398046511104 bytes, but its record holds 16")
    add("tensor beyond its storage", with_pickle(tensor_pickle(4, (HUGE, HUGE), (1, 1)), stored),
        "reaches element|too large")
    add("stride-0 giant beyond addressing",
        with_pickle(tensor_pickle(1, (1 << 31, 1 << 31), (0, 0)), {"0": storage[:4]}), "too large")
    add("offset beyond its storage", with_pickle(tensor_pickle(4, (2,), (1,), offset=HUGE), stored),
        "reaches element")
    add("negative size", with_pickle(tensor_pickle(4, (-2,), (1,)), stored), "non-negative")
    add("missing storage", with_pickle(tensor_pickle(4, (4,), (1,))), "does not contain")
    add("bool bytes", with_pickle(tensor_pickle(4, (4,), (1,), "BoolStorage"), {"0": b"\x00\x01\x02\x03"}),
        "bool storage holds bytes other than 0 and 1")
    add("half storage of odd length",
        with_pickle(tensor_pickle(3, (1,), (1,), "UntypedStorage", dtype="half"), {"0": b"abc"}),
        "cannot hold elements")
    add("v3 without a dtype", with_pickle(tensor_pickle(4, (1,), (1,), dtype="Size"), stored),
        "needs a torch dtype")

    # -- the pickle itself
    add("bytearray of 1 TiB",
        with_pickle(b"\x80\x02c__builtin__\nbytearray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85R."),
        "bytearray is only admitted")
    add("protocol-5 bytearray8", with_pickle(b"\x80\x05\x96" + HUGE.to_bytes(8, "little") + b"."),
        "protocol-5")
    add("unicode claims 4 GiB", with_pickle(b"\x80\x02X\xff\xff\xff\xffabc."), "malformed pickle")
    add("huge decimal", with_pickle(b"L" + b"9" * 100_000 + b"L\n."), "malformed pickle")
    add("unknown protocol", with_pickle(b"\x80\x09N."), "malformed pickle")
    add("unhashable set", with_pickle(b"\x80\x02c__builtin__\nset\n]]a\x85R."), "malformed pickle")
    add("deep tuple as a key", with_pickle(b"\x80\x02}" + b"(" * 5000 + b")" + b"t" * 5000 + b"Ns."),
        "nests tuples more than 1000 deep")
    add("deep tuple1 in a set", with_pickle(b"\x80\x02c__builtin__\nset\n)" + b"\x85" * 5000 + b"\x85\x85R."),
        "nests tuples more than 1000 deep")
    add("bare storage type", with_pickle(b"\x80\x02ctorch\nFloatStorage\n."), "bare")
    add("bare rebuild function", with_pickle(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n."), "bare")
    add("complex from strings",
        with_pickle(b"\x80\x02c__builtin__\ncomplex\nX\x03\x00\x00\x001e9\x85R."), "complex is only admitted")
    add("empty pickle", with_pickle(b""), "malformed pickle")

    # -- the legacy stream
    legacy_pid = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
                  b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
                  b"\x8a\x06\x00\x00\x00\x00\x00\x01tQK\x00K\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs.")
    add("legacy storage claims 4 TiB", legacy_stream(legacy_pid, pickle.dumps(["0"], protocol=2)),
        "storages declare")
    add("legacy truncated", legacy_stream(pickle.dumps({"a": 1}, protocol=2))[:-3], "malformed pickle")
    add("legacy wrong magic", pickle.dumps(12345, protocol=2) + b"junk", "invalid magic")
    add("legacy unknown key",
        legacy_stream(pickle.dumps({"a": 1}, protocol=2), pickle.dumps(["7"], protocol=2)), "unknown storage")

    # -- safetensors
    header, data = good_safetensors()
    meta = header["__metadata__"]

    def changed(name, **fields):
        return {**header, name: {**header[name], **fields}}

    def with_meta(**fields):
        return safetensors_bytes({**header, "__metadata__": {**meta, **fields}}, data)

    add("safetensors header past the end", struct.pack("<Q", HUGE) + b"{}", "header of 1099511627776")
    add("safetensors not JSON", safetensors_bytes({}, raw_header=b"{not json"), "not JSON")
    add("safetensors deep JSON", safetensors_bytes({}, raw_header=b'{"a":' + b"[" * 100_000 + b"]" * 100_000
                                                   + b"}"), "not JSON|needs exactly")
    add("safetensors entry not an object", safetensors_bytes({}, raw_header=b'{"a": 1}'), "needs exactly")
    add("safetensors shape claims 1 TiB", safetensors_bytes(changed("a", shape=[HUGE]), data), "data_offsets")
    add("safetensors offsets past the end",
        safetensors_bytes(changed("a", shape=[HUGE // 4], data_offsets=[0, HUGE]), data), "data_offsets")
    add("safetensors overlapping", safetensors_bytes(
        {f"t{i}": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]} for i in range(64)},
        data), "overlaps")
    add("safetensors unknown dtype", safetensors_bytes(changed("a", dtype="F8_E8M0"), data),
        "F8_E8M0.*cannot read")
    add("safetensors bool bytes", safetensors_bytes(changed("b", dtype="BOOL"), data[:16] + b"\x07\x01"),
        "bool tensor")
    add("safetensors metadata not text", safetensors_bytes({**header, "__metadata__": {"a": 1}}, data),
        "__metadata__")
    add("complex128 names a missing tensor", with_meta(**{"npconv.complex128": '["zz"]'}), "names 'zz'")
    add("complex128 names a uint8 tensor", with_meta(**{"npconv.complex128": '["b"]'}), "names 'b'")
    add("complex128 not JSON", with_meta(**{"npconv.complex128": "[b"}), "not JSON")
    add("keys not distinct", with_meta(**{"npconv.keys": '["a", "a"]'}), "distinct tensor names")
    add("keys missing one", with_meta(**{"npconv.keys": '["a"]'}), "does not list")
    add("not a checkpoint", b"GIF89a this is an image", "neither a zip")
    add("empty file", b"", "neither a zip")
    return cases


CORPUS = corpus()


@pytest.mark.parametrize("case", list(CORPUS))
def test_malformed_file_is_a_checkpoint_error_in_bounded_memory(tmp_path, case):
    content, message = CORPUS[case]
    path = tmp_path / "hostile.bin"
    path.write_bytes(content)
    for reader in (npconv.load, npconv.load_torch):
        if reader is npconv.load_torch and content[8:9] == b"{":  # safetensors: npconv.load only
            continue
        tracemalloc.start()
        try:
            with pytest.raises(CheckpointError, match=message) as info:
                reader(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert isinstance(info.value, ValueError)
        assert peak < PEAK_LIMIT + PER_FILE_BYTE * len(content), f"{case}: peak {peak} bytes"
        # the same bytes from a file object behave the same
        with pytest.raises(CheckpointError, match=message):
            reader(io.BytesIO(content))


def measure(function):
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stride_zero_giant_is_a_read_only_view(tmp_path):
    """8192 x 8192 floats over a 4-byte storage: a view (torch's memory layout), not 256 MiB."""
    path = tmp_path / "giant.pt"
    storage = np.float32(1.5).tobytes()
    path.write_bytes(with_pickle(tensor_pickle(1, (8192, 8192), (0, 0)), {"0": storage}))
    for reader in (npconv.load, npconv.load_torch):
        loaded, peak = measure(lambda reader=reader: reader(path))
        array = loaded["w"].numpy() if isinstance(loaded["w"], npconv.Tensor) else loaded["w"]
        assert array.shape == (8192, 8192) and array.strides == (0, 0)
        assert not array.flags.writeable and array[8191, 8191] == 1.5
        assert peak < 1 << 20, peak


def test_trailing_junk_after_the_pickle_is_never_read(tmp_path):
    entries = torch_entries({"w": np.arange(4, dtype=np.float32)})
    entries["archive/data.pkl"] += bytes(16 << 20)
    path = tmp_path / "junk.pt"
    path.write_bytes(zip_bytes(entries))
    loaded, peak = measure(lambda: npconv.load(path))
    np.testing.assert_array_equal(loaded["w"].numpy(), np.arange(4))
    assert peak < 4 << 20, peak


def test_deeply_nested_lists_load_without_recursion(tmp_path):
    depth = 50_000
    path = tmp_path / "deep.pt"
    path.write_bytes(with_pickle(b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."))
    loaded = npconv.load(path)
    for _ in range(depth - 1):
        assert len(loaded) == 1
        loaded = loaded[0]
    assert loaded == []


def test_many_views_of_one_storage_do_not_multiply_memory(tmp_path):
    """10000 tensors over one 4 MiB storage: views (as torch shares them), not 40 GiB of copies."""
    array = np.zeros(1 << 20, dtype=np.float32)
    path = tmp_path / "views.pt"
    npconv.save({f"v{i}": array for i in range(2)}, path)  # two names, one storage
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    body = entries["archive/data.pkl"]
    start = body.index(b"X\x02\x00\x00\x00v1")
    item = body[start:-2]  # the second key and its tensor (memo references to the first's globals)
    entries["archive/data.pkl"] = body[:start] + b"".join(
        item.replace(b"v1", f"{i:02x}".encode()) for i in range(256)) + body[-2:]
    path.write_bytes(zip_bytes(entries))
    loaded, peak = measure(lambda: npconv.load(path))
    assert len(loaded) == 257
    assert peak < 2 * (4 << 20), peak  # the storage once, plus read buffers
    assert all(np.shares_memory(v.numpy(), loaded["v0"].numpy()) for v in loaded.values())


class Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("weights_only", [True, False])
def test_hostile_pickles_execute_nothing(tmp_path, weights_only):
    marker = tmp_path / "pwned"
    payloads = [pickle.dumps(Marker(marker), protocol=p) for p in (0, 2, 4, 5)]
    payloads.append(b"\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x00print('hi')\x85R.")
    payloads.append(b"\x80\x02cnumpy\nload\nX\x01\x00\x00\x00x\x85R.")
    for payload in payloads:
        path = tmp_path / "evil.pt"
        path.write_bytes(with_pickle(payload))
        with pytest.raises(UnsafeCheckpointError, match="never executes code"):
            npconv.load(path, weights_only=weights_only)
        path.write_bytes(payload if payload[:1] == b"\x80" else b"\x80\x02" + payload)
        with pytest.raises(CheckpointError):
            npconv.load(path, weights_only=weights_only)
    assert not marker.exists()


def fuzz_seeds() -> dict[str, bytes]:
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3), "b": np.ones(2, dtype=bool),
             "nested": [1.5, "s", (2, b"x")]}
    torch_file = io.BytesIO()
    npconv.save(state, torch_file)
    safetensors_file = io.BytesIO()
    plain = {k: v for k, v in state.items() if k != "nested"}
    npconv.save(plain, safetensors_file, format="safetensors")
    legacy = legacy_stream(b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
                           b"(X\x07\x00\x00\x00"
                           b"storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00"
                           b"K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs.",
                           pickle.dumps(["0"], protocol=2) + (2).to_bytes(8, "little") + b"\x00" * 8)
    return {"torch": torch_file.getvalue(), "safetensors": safetensors_file.getvalue(), "legacy": legacy,
            "pickle in a zip": torch_file.getvalue()}


def fuzz_target(seed: str, original: bytes):
    """The bytes to edit and how to make a file of them: the pickle of a zip is fuzzed inside a rebuilt
    zip (valid CRCs), so the edits reach the unpickler rather than zipfile's CRC check."""
    if seed != "pickle in a zip":
        return original, bytes
    with zipfile.ZipFile(io.BytesIO(original)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    return entries["archive/data.pkl"], lambda pkl: zip_bytes({**entries, "archive/data.pkl": pkl})


FUZZ_SEEDS = fuzz_seeds()


@pytest.mark.parametrize("seed", list(FUZZ_SEEDS))
def test_fuzzed_files_load_or_raise_checkpoint_error(seed):
    """Random byte changes, insertions and truncations of valid files: a result or a CheckpointError."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    original, make_file = fuzz_target(seed, FUZZ_SEEDS[seed])
    assert npconv.load(io.BytesIO(make_file(original))) is not None

    edit = st.tuples(st.sampled_from(["set", "insert", "delete", "truncate"]),
                     st.integers(0, len(original) - 1), st.integers(0, 255), st.integers(1, 8))

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.lists(edit, min_size=1, max_size=4))
    def check(edits):
        data = bytearray(original)
        for kind, where, value, count in edits:
            where = min(where, len(data))
            if kind == "set" and where < len(data):
                data[where] = value
            elif kind == "insert":
                data[where:where] = bytes([value]) * count
            elif kind == "delete":
                del data[where:where + count]
            else:
                del data[where:]
        for reader in (npconv.load, npconv.load_torch):
            try:
                reader(io.BytesIO(make_file(bytes(data))))
            except CheckpointError:
                pass

    check()
