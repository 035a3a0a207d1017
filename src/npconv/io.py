"""Saving and loading weights: safetensors files, and PyTorch checkpoints without PyTorch.

- :func:`save` / :func:`load`: a state dict (``{name: ndarray or Tensor}``) to and from the
  `safetensors <https://huggingface.co/docs/safetensors>`_ format through the ``safetensors``
  package's NumPy API (optional: ``pip install 'npconv[io]'``). The format stores raw little-endian
  arrays and a JSON header - loading never runs code.
- :func:`load_torch`: read a ``torch.save`` checkpoint (``.pt``/``.pth``: the zip format of
  torch >= 1.6, or the older "legacy" stream format) into ndarrays, with NumPy alone. The pickle
  inside is read by a restricted unpickler that admits only the globals a checkpoint of tensors
  needs (tensor/parameter rebuild functions, storage types, dtypes, ``OrderedDict``, ``torch.Size``
  and a few builtins) and refuses everything else with :class:`UnsafeCheckpointError` - the same
  promise as ``torch.load(weights_only=True)``: nothing in the file is ever executed or imported.
"""

from __future__ import annotations

import io as _io
import json
import numbers
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from .tensor import Tensor

__all__ = ["save", "load", "load_torch", "CheckpointError", "UnsafeCheckpointError"]

PathLike = str | os.PathLike

_ORDER_KEY = "npconv.keys"
_SAFETENSORS_DTYPES = {np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.complex64, np.complex128)}
_COMPLEX128_KEY = "npconv.complex128"


class CheckpointError(ValueError):
    """A checkpoint file that is malformed or uses a feature npconv cannot read."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint's pickle asks for something other than tensor data: it is refused, unexecuted."""


# -- safetensors ---------------------------------------------------------------------------------
def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy as safetensors_numpy
    except ImportError as error:
        raise ImportError(
            "npconv.save/npconv.load use the optional 'safetensors' package; install it with "
            "pip install 'npconv[io]' (or pip install safetensors)"
        ) from error
    return safetensors_numpy


def save(obj: Mapping[str, Any], path: PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict ``{name: ndarray | Tensor}`` to ``path`` in the safetensors format.

    Arrays are stored contiguous and little-endian; ``complex128`` (which safetensors lacks) is
    stored as float64 pairs and restored by :func:`load`. The key order is kept. ``metadata`` is
    free text (``{str: str}``) stored in the header. Raises ``TypeError`` for a non-mapping,
    a non-string key or a value that is not a numeric/bool array.
    """
    if not isinstance(obj, Mapping):
        hint = " (pass model.state_dict())" if hasattr(obj, "state_dict") else ""
        raise TypeError(f"obj must be a mapping from names to arrays{hint}, got {type(obj).__name__}")
    if metadata is not None and (not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError(f"metadata must be a mapping from str to str, got {metadata!r}")
    arrays: dict[str, np.ndarray] = {}
    complex_names = []
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"state dict keys must be str, got {name!r}")
        array = np.asarray(value.data if isinstance(value, Tensor) else value)
        if array.dtype.newbyteorder("=") not in _SAFETENSORS_DTYPES:
            raise TypeError(f"cannot save {name!r}: dtype {array.dtype} is not a numeric or bool dtype "
                            "supported by safetensors")
        if array.dtype == np.complex128:
            array = np.asarray(array, order="C").view(np.float64).reshape(array.shape + (2,))
            complex_names.append(name)
        arrays[name] = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
    header = dict(metadata or {})
    header[_ORDER_KEY] = json.dumps(list(arrays))
    if complex_names:
        header[_COMPLEX128_KEY] = json.dumps(complex_names)
    _safetensors_numpy().save_file(arrays, os.fspath(path), metadata=header)


def load(path: PathLike) -> dict[str, np.ndarray]:
    """Read a safetensors file into ``{name: ndarray}`` (writable copies, in the saved order)."""
    _safetensors_numpy()  # the helpful ImportError when the extra is missing
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="np") as handle:
        header = handle.metadata() or {}
        arrays = {name: np.array(handle.get_tensor(name)) for name in handle.keys()}
    for name in json.loads(header.get(_COMPLEX128_KEY, "[]")):
        pairs = arrays[name]
        arrays[name] = np.ascontiguousarray(pairs).view(np.complex128).reshape(pairs.shape[:-1])
    order = json.loads(header.get(_ORDER_KEY, "[]"))
    if sorted(order) == sorted(arrays):
        return {name: arrays[name] for name in order}
    return arrays


# -- PyTorch checkpoints -------------------------------------------------------------------------
class _BFloat16:
    """Marker for torch.bfloat16 (no NumPy dtype): stored as the high half of a float32."""

    def __repr__(self) -> str:
        return "torch.bfloat16"


BFLOAT16 = _BFloat16()

_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.dtype(np.float64), "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": BFLOAT16,
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16), "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64), "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}
_TORCH_DTYPES: dict[str, Any] = {
    "float64": np.dtype(np.float64), "double": np.dtype(np.float64), "float32": np.dtype(np.float32),
    "float": np.dtype(np.float32), "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "bfloat16": BFLOAT16, "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32), "int16": np.dtype(np.int16),
    "short": np.dtype(np.int16), "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32), "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_), "complex64": np.dtype(np.complex64), "cfloat": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128), "cdouble": np.dtype(np.complex128),
}


class _StorageType:
    """What a ``torch.<X>Storage`` global unpickles to: only its element dtype."""

    def __init__(self, name: str, dtype: Any) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Storage:
    """A storage named in the pickle: raw bytes from the archive, read once, shared by its views."""

    def __init__(self, dtype: Any, numel: int, source: Callable[[], bytes] | None = None) -> None:
        self.dtype, self.numel, self._source, self._bytes = dtype, numel, source, None
        self.base: _Storage | None = None
        self.offset = 0

    @property
    def raw_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.dtype is BFLOAT16 else self.dtype

    def set_bytes(self, data: bytes) -> None:
        self._bytes = data

    def data(self) -> bytes:
        if self.base is not None:
            size = self.raw_dtype.itemsize
            return self.base.data()[self.offset * size:(self.offset + self.numel) * size]
        if self._bytes is None:
            if self._source is None:
                raise CheckpointError("a storage named in the checkpoint has no data in the file")
            self._bytes = self._source()
        return self._bytes


class _TensorMarker:
    """What ``torch.Tensor`` / ``torch.nn.Parameter`` unpickle to (a type tag, never instantiated)."""

    def __init__(self, name: str) -> None:
        self.name = name


class _PendingTensor:
    """A tensor rebuilt during unpickling; becomes an ndarray once every storage's bytes are known."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                 dtype: Any = None) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = storage.dtype if dtype is None else dtype

    def materialize(self, byteorder: str) -> np.ndarray:
        raw = self.storage.raw_dtype
        dtype = np.dtype(np.uint16) if self.dtype is BFLOAT16 else self.dtype
        data = self.storage.data()
        if len(data) < self.storage.numel * raw.itemsize:
            raise CheckpointError(f"a storage holds {len(data)} bytes, fewer than its {self.storage.numel} "
                                  f"elements of {raw} need")
        data = data[:self.storage.numel * raw.itemsize]
        if len(data) % dtype.itemsize:
            raise CheckpointError(f"a storage of {len(data)} bytes cannot hold elements of {dtype}")
        flat = np.frombuffer(data, dtype=dtype.newbyteorder("<" if byteorder == "little" else ">"))
        count = int(np.prod(self.size, dtype=np.int64)) if self.size else 1
        if count == 0:
            array = np.empty(self.size, dtype=dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
            if last >= flat.size:
                raise CheckpointError(
                    f"a tensor of size {self.size}, stride {self.stride} and offset {self.offset} reaches "
                    f"element {last} of a storage of {flat.size} elements"
                )
            view = np.lib.stride_tricks.as_strided(
                flat[self.offset:], shape=self.size, strides=[s * flat.itemsize for s in self.stride],
                writeable=False)
            array = np.array(view, dtype=dtype.newbyteorder("="))
        if self.dtype is BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in value):
        raise CheckpointError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(int(v) for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any,
                    dtype: Any = None) -> _PendingTensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor must be rebuilt from a storage, got {type(storage).__name__}")
    if not isinstance(storage_offset, numbers.Integral) or storage_offset < 0:
        raise CheckpointError(f"storage_offset must be a non-negative int, got {storage_offset!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
    return _PendingTensor(storage, int(storage_offset), size, stride, dtype)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _PendingTensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> _PendingTensor:
    if not (dtype is BFLOAT16 or isinstance(dtype, np.dtype)):
        raise CheckpointError(f"_rebuild_tensor_v3 needs a torch dtype, got {dtype!r}")
    return _rebuild_tensor(storage, storage_offset, size, stride, dtype=dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None,
                       state: Any = None) -> _PendingTensor:
    if not isinstance(data, _PendingTensor):
        raise CheckpointError(f"a Parameter must wrap a tensor, got {type(data).__name__}")
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> _PendingTensor:
    if func not in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3) or not isinstance(
            new_type, _TensorMarker) or not isinstance(args, tuple):
        raise CheckpointError("_rebuild_from_type_v2 is only admitted for plain tensors and Parameters")
    return func(*args)


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    return _int_tuple(tuple(dims), "torch.Size")


def _torch_device(kind: Any, index: Any = None) -> str:
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise CheckpointError(f"torch.device must be built from a str (and an int), got {kind!r}, {index!r}")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """What protocol-2 pickles use for ``bytes`` (``_codecs.encode(str, 'latin1')``)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise CheckpointError(f"_codecs.encode is only admitted for str and latin1/utf-8, got {encoding!r}")
    return text.encode(encoding)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("torch", "Tensor"): _TensorMarker("Tensor"),
    ("torch.nn.parameter", "Parameter"): _TensorMarker("Parameter"),
    ("_codecs", "encode"): _codecs_encode,
    **{(module, name): value for module in ("builtins", "__builtin__")  # protocol 2 says __builtin__
       for name, value in (("set", set), ("frozenset", frozenset), ("complex", complex),
                           ("bytearray", bytearray))},
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8)),
    **{("torch", name): dtype for name, dtype in _TORCH_DTYPES.items()},
}
_CALLABLE_GLOBALS = tuple(v for v in _ALLOWED_GLOBALS.values() if callable(v) and not isinstance(v, np.dtype))
_CLASSES = (OrderedDict, set, frozenset, complex, bytearray)


def _refuse(message: str) -> None:
    raise UnsafeCheckpointError(
        f"{message}. npconv.load_torch only admits tensor data, storages, dtypes and plain Python "
        "containers (like torch.load(weights_only=True)); nothing from the file was executed"
    )


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler with an allow-list of globals and guarded REDUCE/BUILD/NEWOBJ."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: BinaryIO, storages: Callable[[tuple[Any, ...]], _Storage] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            if module == "torch" and name.endswith("Storage"):
                raise CheckpointError(f"unsupported storage type torch.{name} (quantized or exotic dtype)")
            _refuse(f"refusing to load the global '{module}.{name}'")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage") \
                or self._storages is None:
            _refuse(f"refusing the persistent id {pid!r:.80}")
        return self._storages(pid[1:])

    def _load_reduce(self) -> None:
        func = self.stack[-2]
        if not any(func is allowed for allowed in _CALLABLE_GLOBALS):
            _refuse(f"refusing to call {func!r:.80}")
        args = self.stack.pop()
        self.stack[-1] = func(*args)

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if type(inst) is not OrderedDict or not isinstance(state, dict) or not all(
                isinstance(k, str) and not k.startswith("__") for k in state):
            _refuse(f"refusing to set the state of a {type(inst).__name__}")
        for key, value in state.items():
            setattr(inst, key, value)

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        if klass not in _CLASSES:
            _refuse(f"refusing to instantiate {klass!r:.80}")
        super()._instantiate(klass, args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in _CLASSES:
            _refuse(f"refusing to instantiate {cls!r:.80}")
        self.append(cls.__new__(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in _CLASSES or kwargs:
            _refuse(f"refusing to instantiate {cls!r:.80}")
        self.append(cls.__new__(cls, *args))

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex


def _unpickle(file: BinaryIO, storages: Callable[[tuple[Any, ...]], _Storage] | None = None) -> Any:
    try:
        return _RestrictedUnpickler(file, storages).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, UnicodeDecodeError, RecursionError, MemoryError, OverflowError) as error:
        message = f"malformed pickle in the checkpoint: {type(error).__name__}: {error}"
        raise CheckpointError(message) from error


def _materialize(obj: Any, byteorder: str, seen: dict[int, Any]) -> Any:
    """Replace every pending tensor in ``obj`` (dicts and lists in place, keeping their attributes)."""
    if isinstance(obj, _PendingTensor):
        if id(obj) not in seen:
            seen[id(obj)] = obj.materialize(byteorder)
        return seen[id(obj)]
    bare = isinstance(obj, (_Storage, _StorageType, _TensorMarker))
    if bare or callable(obj) and not isinstance(obj, type):
        raise CheckpointError(f"the checkpoint contains a bare {obj!r:.60}, not tensor data")
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, dict):
        seen[id(obj)] = obj
        for key in list(obj):
            obj[key] = _materialize(obj[key], byteorder, seen)
        for key, value in list(getattr(obj, "__dict__", {}).items()):
            setattr(obj, key, _materialize(value, byteorder, seen))
        return obj
    if isinstance(obj, list):
        seen[id(obj)] = obj
        obj[:] = [_materialize(v, byteorder, seen) for v in obj]
        return obj
    if isinstance(obj, tuple):
        result = tuple(_materialize(v, byteorder, seen) for v in obj)
        seen[id(obj)] = result
        return result
    return obj


def _storage_from_pid(pid: tuple[Any, ...], storages: dict[Any, _Storage],
                      source: Callable[[Any], Callable[[], bytes]] | None) -> _Storage:
    """A ``('storage', type, key, location, numel[, view_metadata])`` persistent id -> shared storage."""
    if len(pid) not in (4, 5):
        raise CheckpointError(f"malformed storage id {pid!r:.80}")
    storage_type, key, _location, numel = pid[:4]
    view = pid[4] if len(pid) == 5 else None
    if not isinstance(storage_type, _StorageType) or not isinstance(key, (str, int)) or not isinstance(
            numel, numbers.Integral) or numel < 0:
        raise CheckpointError(f"malformed storage id {pid!r:.80}")
    if key not in storages:
        storages[key] = _Storage(storage_type.dtype, int(numel), None if source is None else source(key))
    storage = storages[key]
    if view is None:
        return storage
    if not (isinstance(view, tuple) and len(view) == 3):
        raise CheckpointError(f"malformed storage view {view!r:.80}")
    view_key, offset, view_size = view
    if view_key not in storages:
        if not all(isinstance(v, numbers.Integral) and v >= 0 for v in (offset, view_size)) \
                or offset + view_size > storage.numel:
            raise CheckpointError(f"storage view {view!r:.80} lies outside its storage of {storage.numel} "
                                  "elements")
        sub = _Storage(storage.dtype, int(view_size))
        sub.base, sub.offset = storage, int(offset)
        storages[view_key] = sub
    return storages[view_key]


def _load_zip(archive: zipfile.ZipFile, name: str) -> Any:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
        if any(n.endswith("constants.pkl") for n in names):
            raise CheckpointError(f"{name} is a TorchScript archive (torch.jit.save), not a torch.save "
                                  "checkpoint")
        raise CheckpointError(f"{name} is a zip file without data.pkl: not a torch.save checkpoint")
    if len(pickles) > 1:
        raise CheckpointError(f"{name} has several data.pkl records: {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"unknown byteorder {byteorder!r} in {name}")
    members = set(names)

    def source(key: Any) -> Callable[[], bytes]:
        member = f"{prefix}data/{key}"
        if member not in members:
            raise CheckpointError(f"{name} names the storage {key!r}, which it does not contain")
        return lambda: archive.read(member)

    storages: dict[Any, _Storage] = {}
    with archive.open(pickles[0]) as handle:
        result = _unpickle(_io.BytesIO(handle.read()), lambda pid: _storage_from_pid(pid, storages, source))
    return _materialize(result, byteorder, {})


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _load_legacy(handle: BinaryIO, name: str) -> Any:
    """torch.save(..., _use_new_zipfile_serialization=False): pickles then raw storages in one stream."""
    if handle.read(1) != b"\x80":
        raise CheckpointError(f"{name} is neither a zip checkpoint nor a legacy torch.save stream")
    handle.seek(0)
    if _unpickle(handle) != _LEGACY_MAGIC:
        raise CheckpointError(f"{name}: invalid magic number; not a torch.save checkpoint")
    protocol = _unpickle(handle)
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{name}: unsupported legacy protocol version {protocol!r}")
    sys_info = _unpickle(handle)
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    storages: dict[Any, _Storage] = {}
    result = _unpickle(handle, lambda pid: _storage_from_pid(pid, storages, None))
    keys = _unpickle(handle)
    if not isinstance(keys, list):
        raise CheckpointError(f"{name}: malformed storage key list")
    for key in keys:
        storage = storages.get(key)
        if storage is None or storage.base is not None:
            raise CheckpointError(f"{name}: the data section names an unknown storage {key!r:.40}")
        header = handle.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{name} is truncated (storage {key!r})")
        count = int.from_bytes(header, byteorder)
        if count != storage.numel:
            raise CheckpointError(f"{name}: storage {key!r} has {count} elements, the pickle says "
                                  f"{storage.numel}")
        nbytes = count * storage.raw_dtype.itemsize
        data = handle.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{name} is truncated (storage {key!r})")
        storage.set_bytes(data)
    return _materialize(result, byteorder, {})


def load_torch(path: PathLike | BinaryIO) -> Any:
    """Read a ``torch.save`` checkpoint into ndarrays, without torch and without running its code.

    Returns the saved object with every tensor replaced by an ``ndarray`` of the same shape,
    values and dtype (bfloat16 becomes float32); Parameters become ndarrays too. State dicts come
    back as ``OrderedDict`` (loadable by ``Module.load_state_dict``), nested containers and plain
    Python values (``{'model': ..., 'epoch': 3}``) as saved. Views are materialised with their
    storage offset and strides. Raises :class:`UnsafeCheckpointError` (a ``pickle.UnpicklingError``
    and a ``ValueError``) naming the first global outside the allow-list, and
    :class:`CheckpointError` for a malformed or unsupported file.
    """
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "<file>")
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as handle:
            return _load_handle(handle, str(name))
    return _load_handle(path, str(name))


def _load_handle(handle: BinaryIO, name: str) -> Any:
    start = handle.tell()
    if zipfile.is_zipfile(handle):
        handle.seek(start)
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as error:
            raise CheckpointError(f"{name} is a damaged zip file: {error}") from error
        with archive:
            try:
                return _load_zip(archive, name)
            except (zipfile.BadZipFile, KeyError, OSError) as error:
                raise CheckpointError(f"{name} is a damaged checkpoint: {error}") from error
    handle.seek(start)
    return _load_legacy(handle, name)
