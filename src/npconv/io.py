"""Saving and loading checkpoints: torch's own file format both ways, and safetensors.

- :func:`save` writes ``torch.save``'s zip format (``torch.load(..., weights_only=True)`` reads
  it), or safetensors for a ``.safetensors`` path or ``format="safetensors"``.
- :func:`load` reads any of them - a file ``torch.save`` wrote (zip or the older "legacy" stream),
  npconv's own files, safetensors files - detecting the format from the first bytes, and returns
  npconv Tensors where the file holds tensors, like ``torch.load``.
- :func:`load_torch` reads a torch checkpoint into ndarrays (no Tensors), for NumPy-only code.

Everything here is written for files from strangers. Pickles are read by a restricted unpickler
that admits only the globals a checkpoint of tensors needs (tensor/parameter rebuild functions,
storage types, dtypes, ``OrderedDict``, ``torch.Size``/``torch.device`` and a few builtins):
nothing in a file is ever imported or executed, whatever ``weights_only`` says. Every size a
file declares is checked against the file's real length (the zip directory, the safetensors
header) before anything is allocated, tensors are views of their storage (a stride-0 "giant"
stays a read-only view), and every malformed file raises :class:`CheckpointError`.
"""

from __future__ import annotations

import io as _io
import json
import numbers
import os
import pickle
import struct
import sys
import uuid
import zipfile
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np

from . import dtypes
from .tensor import Tensor

__all__ = ["save", "load", "load_torch", "CheckpointError", "UnsafeCheckpointError"]

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A checkpoint file that is malformed or uses a feature npconv cannot read."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint's pickle asks for something other than tensor data: it is refused, unexecuted."""


# Exceptions the parsing layers (zipfile, zlib, json, pickle, struct) raise for bad bytes: each is
# turned into a CheckpointError at the one place a file is read.
_PARSE_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
                 ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error,
                 UnicodeDecodeError, RecursionError, MemoryError, OverflowError, NotImplementedError,
                 RuntimeError, OSError)
_CHUNK = 1 << 20  # bytes copied per read from a file into a storage


# -- public API ----------------------------------------------------------------------------------
def load(f: PathLike | BinaryIO, map_location: Any = None, pickle_module: Any = None, *,
         weights_only: bool | None = None, mmap: bool | None = None) -> Any:
    """Read a checkpoint as ``torch.load`` does: a ``torch.save`` file or a safetensors file.

    The format comes from the file's first bytes (zip, legacy pickle stream, safetensors header).
    Tensors and Parameters come back as npconv :class:`Tensor`/``nn.Parameter`` (``requires_grad``
    as saved), views of one storage share memory as in torch, bfloat16/float8 are upcast to
    float32; state dicts come back as ``OrderedDict``, plain values (numbers, strings, containers,
    ``torch.Size`` as a tuple, dtypes as NumPy dtypes, devices as strings) as saved. A safetensors
    file gives ``{name: Tensor}`` in the saved order.

    ``map_location``: ``None``, ``"cpu"``, a device whose type is ``"cpu"``, a dict mapping saved
    locations to such devices, or a function ``(storage, location) -> storage`` returning the
    storage it is given; npconv runs on the CPU, so every tensor lands there (also tensors saved
    on a GPU) and another device (``"cuda"``) is a ``ValueError``. ``weights_only`` (default True,
    as in torch >= 2.6): npconv reads data only, and ``weights_only=False`` does not lift that -
    a pickle naming any other global raises :class:`UnsafeCheckpointError` with its name.
    ``mmap=True`` (a path to a zip checkpoint, as in torch) maps each uncompressed storage
    copy-on-write instead of reading it: pages load on first use and writes stay in memory.
    ``pickle_module`` is accepted for torch's signature and not used (npconv reads with its own
    data-only unpickler).
    """
    _check_weights_only(weights_only)
    if pickle_module is not None and not hasattr(pickle_module, "Unpickler"):
        raise TypeError(f"pickle_module must be a pickle-like module, got {pickle_module!r:.80}")
    if mmap is not None and not isinstance(mmap, bool):
        raise TypeError(f"mmap must be a bool or None, got {mmap!r}")
    if mmap and not isinstance(f, (str, os.PathLike)):
        raise ValueError(f"mmap=True needs a file path (as in torch), got a {type(f).__name__}")
    location_check = _location_check(map_location)
    with _opened(f, "rb") as (handle, name):
        return _read(handle, name, _TensorBuilder(), location_check, formats=("zip", "legacy", "safetensors"),
                     mapped=name if mmap else None)


def load_torch(path: PathLike | BinaryIO) -> Any:
    """Read a ``torch.save`` checkpoint with NumPy alone: like :func:`load`, tensors as ndarrays.

    Parameters become ndarrays too; views of one storage share memory (a view that overlaps
    itself, such as a stride-0 expansion, is read-only). Raises :class:`UnsafeCheckpointError`
    naming the first global outside the allow-list and :class:`CheckpointError` for a malformed
    or unsupported file.
    """
    with _opened(path, "rb") as (handle, name):
        return _read(handle, name, _ArrayBuilder(), _location_check(None), formats=("zip", "legacy"))


def save(obj: Any, f: PathLike | BinaryIO, pickle_module: Any = None, pickle_protocol: int = 2,
         _use_new_zipfile_serialization: bool = True, *, format: str | None = None,
         metadata: Mapping[str, str] | None = None) -> None:
    """Write ``obj`` as ``torch.save`` does, or as safetensors.

    ``format``: ``"torch"`` (torch's zip format; the default) or ``"safetensors"`` (the default
    for a path ending in ``.safetensors``).

    torch format: ``obj`` may nest dicts, ``OrderedDict``s, lists, tuples and sets of Tensors,
    Parameters, ndarrays (saved as tensors), numbers, strings, bytes, ``None`` and NumPy dtypes
    (saved as torch dtypes): state dicts, optimizer state dicts, ``{'model': ..., 'optimizer': ...,
    'epoch': 3}``. Tensors that view one array share one storage in the file, as in torch.

    safetensors: ``obj`` is a flat ``{str: Tensor | ndarray}``; ``complex128`` (which safetensors
    lacks) is stored as float64 pairs and restored by :func:`load`; the key order is kept;
    ``metadata`` is free text (``{str: str}``) stored in the header.

    Raises ``TypeError`` naming the first value that cannot be saved; then nothing is written.
    A path is written through a temporary file and renamed, so a reader never sees half a file.
    ``pickle_module``, ``pickle_protocol`` (2 to 5) and ``_use_new_zipfile_serialization`` are accepted
    for torch's signature: npconv writes torch's zip format with pickle protocol 2, which every torch
    reads.
    """
    if pickle_module is not None and not hasattr(pickle_module, "Pickler"):
        raise TypeError(f"pickle_module must be a pickle-like module, got {pickle_module!r:.80}")
    protocol_ok = isinstance(pickle_protocol, int) and not isinstance(pickle_protocol, bool)
    if not protocol_ok or not 2 <= pickle_protocol <= 5:
        raise ValueError(f"pickle_protocol must be an int from 2 to 5, got {pickle_protocol!r}")
    if not isinstance(_use_new_zipfile_serialization, bool):
        raise TypeError("_use_new_zipfile_serialization must be a bool, got "
                        f"{_use_new_zipfile_serialization!r}")
    if format is None:
        is_safetensors = isinstance(f, (str, os.PathLike)) and os.fspath(f).endswith(".safetensors")
        format = "safetensors" if is_safetensors else "torch"
    if format == "torch":
        if metadata is not None:
            raise ValueError("metadata is stored only in safetensors files (format='safetensors'), "
                             f"got metadata={metadata!r} for format='torch'")
        write = _torch_writer(obj)
    elif format == "safetensors":
        write = _safetensors_writer(obj, metadata)
    else:
        raise ValueError(f"format must be 'torch' or 'safetensors', got {format!r}")
    if not isinstance(f, (str, os.PathLike)):
        write(f)
        return
    path = os.fspath(f)
    temporary = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(temporary, "xb") as handle:
            write(handle)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# -- arguments -----------------------------------------------------------------------------------
def _check_weights_only(weights_only: Any) -> None:
    if weights_only is not None and not isinstance(weights_only, bool):
        raise TypeError(f"weights_only must be a bool or None, got {weights_only!r}")


def _cpu_only(where: str, value: Any) -> ValueError:
    return ValueError(f"{where}={value!r} names a device npconv does not have: npconv runs on the CPU "
                      "only, so every tensor is loaded there; use map_location='cpu' (or leave it None)")


def _device_type(value: Any, where: str) -> str:
    """'cpu' for 'cpu', 'cpu:0', torch.device('cpu') or npconv's device; a ValueError otherwise."""
    if isinstance(value, str):
        text = value
    elif isinstance(getattr(value, "type", None), str):
        text = value.type
    else:
        raise TypeError(f"{where} must be a device string, a device, a dict or a function, got {value!r}")
    if text.split(":")[0] != "cpu":
        raise _cpu_only(where, value)
    return "cpu"


class _MappedStorage:
    """What a ``map_location`` function is given: a CPU storage (returning it keeps it on the CPU)."""

    def cpu(self) -> _MappedStorage:
        return self


def _location_check(map_location: Any) -> Callable[[str], None]:
    """Validate ``map_location`` now; return the check applied to each storage's saved location."""
    if map_location is None:
        return lambda location: None
    if isinstance(map_location, Mapping):
        for key, value in map_location.items():
            if not isinstance(key, str):
                raise TypeError(f"map_location keys must be location strings, got {key!r}")
            _device_type(value, f"map_location[{key!r}]")
        return lambda location: None
    if callable(map_location) and not isinstance(map_location, type) and not hasattr(map_location, "type"):
        def check(location: str) -> None:
            storage = _MappedStorage()
            if map_location(storage, location) is not storage:
                raise ValueError("a map_location function must return the storage it is given (npconv "
                                 "keeps every tensor on the CPU); it returned something else for "
                                 f"{location!r}")
        return check
    _device_type(map_location, "map_location")
    return lambda location: None


@contextmanager
def _opened(f: Any, mode: str) -> Iterator[tuple[BinaryIO, str]]:
    if isinstance(f, (str, os.PathLike)):
        with open(f, mode) as handle:
            yield handle, os.fspath(f)
    elif hasattr(f, "read" if "r" in mode else "write"):
        yield f, str(getattr(f, "name", "<file>"))
    else:
        raise TypeError(f"f must be a path or a binary file object, got {type(f).__name__}")


# -- element types -------------------------------------------------------------------------------
class _Upcast:
    """An element type NumPy lacks (bfloat16, float8): read as uint8/uint16 bits, returned as float32."""

    def __init__(self, name: str, itemsize: int, table: Callable[[], np.ndarray] | None = None) -> None:
        self.name, self.itemsize, self._table_maker, self._table = name, itemsize, table, None

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def convert(self, raw: np.ndarray, out: np.ndarray, byteorder: str) -> None:
        """Write the float32 values of the little/big-endian element bits in ``raw`` into ``out``."""
        if self.itemsize == 2:  # bfloat16 is the high half of a float32
            bits = out.view(np.uint32)
            bits[...] = raw.view("<u2" if byteorder == "little" else ">u2")
            bits <<= 16
        else:
            if self._table is None:
                self._table = self._table_maker()  # type: ignore[misc]
            np.take(self._table, raw, out=out)


def _float8_table(exponent_bits: int, mantissa_bits: int, finite_only: bool) -> Callable[[], np.ndarray]:
    """float32 value of each of the 256 float8 bit patterns (E4M3FN: no inf, one NaN; E5M2: IEEE)."""
    def make() -> np.ndarray:
        codes = np.arange(256)
        sign = np.where(codes >> 7, -1.0, 1.0)
        exponent = (codes >> mantissa_bits) & ((1 << exponent_bits) - 1)
        mantissa = codes & ((1 << mantissa_bits) - 1)
        bias = (1 << (exponent_bits - 1)) - 1
        normal = (1 + mantissa / (1 << mantissa_bits)) * np.exp2(exponent - bias)
        subnormal = mantissa / (1 << mantissa_bits) * np.exp2(1.0 - bias)
        value = sign * np.where(exponent == 0, subnormal, normal)
        top = exponent == (1 << exponent_bits) - 1
        if finite_only:
            value[top & (mantissa == (1 << mantissa_bits) - 1)] = np.nan
        else:
            value[top] = np.where(mantissa[top] == 0, sign[top] * np.inf, np.nan)
        return value.astype(np.float32)
    return make


BFLOAT16 = _Upcast("bfloat16", 2)
FLOAT8_E4M3FN = _Upcast("float8_e4m3fn", 1, _float8_table(4, 3, finite_only=True))
FLOAT8_E5M2 = _Upcast("float8_e5m2", 1, _float8_table(5, 2, finite_only=False))


def _itemsize(dtype: Any) -> int:
    return dtype.itemsize


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
    "bfloat16": BFLOAT16, "float8_e4m3fn": FLOAT8_E4M3FN, "float8_e5m2": FLOAT8_E5M2,
    "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32), "int16": np.dtype(np.int16),
    "short": np.dtype(np.int16), "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32), "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_), "complex64": np.dtype(np.complex64), "cfloat": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128), "cdouble": np.dtype(np.complex128),
}


# -- storages and tensor views -------------------------------------------------------------------
class _Storage:
    """One storage: its raw bytes (allocated once its size is checked) and its typed flat views.

    A flat view is the raw bytes seen as one dtype; big-endian data and the upcast types get a
    converted copy instead, filled once the bytes are read (the legacy format reads them after
    the pickle that makes the tensors).
    """

    def __init__(self, raw: np.ndarray, byteorder: str) -> None:
        self.raw, self.byteorder, self.filled, self.is_view = raw, byteorder, False, False
        self._flats: dict[Any, np.ndarray] = {}
        self._pending: list[Callable[[], None]] = []

    def fill(self) -> None:
        self.filled = True
        for task in self._pending:
            task()
        self._pending.clear()

    def _after_fill(self, task: Callable[[], None]) -> None:
        if self.filled:
            task()
        else:
            self._pending.append(task)

    def flat(self, dtype: Any) -> np.ndarray:
        if dtype in self._flats:
            return self._flats[dtype]
        size = _itemsize(dtype)
        if self.raw.size % size:
            raise CheckpointError(f"a storage of {self.raw.size} bytes cannot hold elements of {dtype}")
        if isinstance(dtype, _Upcast):
            flat = np.empty(self.raw.size // size, dtype=np.float32)
            self._after_fill(lambda: dtype.convert(self.raw, flat, self.byteorder))
        elif self.byteorder != sys.byteorder and size > 1:
            flat = np.empty(self.raw.size // size, dtype=dtype)
            swapped = dtype.newbyteorder("<" if self.byteorder == "little" else ">")
            self._after_fill(lambda: flat.__setitem__(Ellipsis, self.raw.view(swapped)))
        else:
            flat = self.raw.view(dtype)
        if dtype == np.bool_:
            def check() -> None:
                if self.raw.size and self.raw.max() > 1:
                    raise CheckpointError("a bool storage holds bytes other than 0 and 1")
            self._after_fill(check)
        self._flats[dtype] = flat
        return flat


class _StorageRef:
    """What a storage persistent id unpickles to: a storage and the element type it was saved as."""

    def __init__(self, storage: _Storage, dtype: Any) -> None:
        self.storage, self.dtype = storage, dtype

    def __repr__(self) -> str:
        return f"<storage of {self.storage.raw.size} bytes>"


def _non_overlapping(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """True when no two indices of the view reach the same element (then it may be written)."""
    reach = 0
    for step, count in sorted((s, n) for n, s in zip(size, stride, strict=True) if n > 1):
        if step <= reach:
            return False
        reach += step * (count - 1)
    return True


def _tensor_view(storage: _Storage, dtype: Any, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> np.ndarray:
    """The tensor's elements as a view of its storage (checked to lie inside it)."""
    flat = storage.flat(dtype)
    count = 1
    for n in size:
        count *= n
    out_dtype = flat.dtype
    if count == 0:
        if offset > flat.size or any(n >= 1 << 62 for n in size):
            raise CheckpointError(f"an empty tensor of size {size} has offset {offset} in a storage of "
                                  f"{flat.size} elements")
        return np.empty(size, dtype=out_dtype)
    if count * out_dtype.itemsize >= 1 << 62:
        raise CheckpointError(f"a tensor of size {size} is too large to be addressed")
    stride = tuple(s if n > 1 else 0 for n, s in zip(size, stride, strict=True))
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= flat.size:
        raise CheckpointError(f"a tensor of size {size}, stride {stride} and offset {offset} reaches element "
                              f"{last} of a storage of {flat.size} elements")
    writeable = flat.flags.writeable and _non_overlapping(size, stride)
    return np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * out_dtype.itemsize
                                                                               for s in stride],
                                           writeable=writeable)


# -- what tensors become -------------------------------------------------------------------------
class _ArrayBuilder:
    """load_torch: tensors and Parameters are ndarrays."""

    def tensor(self, array: np.ndarray, requires_grad: bool) -> Any:
        return array

    def parameter(self, tensor: Any, requires_grad: bool) -> Any:
        if not isinstance(tensor, np.ndarray):
            raise CheckpointError(f"a Parameter must wrap a tensor, got {type(tensor).__name__}")
        return tensor


class _TensorBuilder:
    """load: tensors are npconv Tensors (requires_grad as saved), Parameters nn.Parameters."""

    def tensor(self, array: np.ndarray, requires_grad: bool) -> Any:
        return Tensor(array, requires_grad=requires_grad and array.dtype.kind in "fc")

    def parameter(self, tensor: Any, requires_grad: bool) -> Any:
        from .nn.parameter import Parameter  # nn imports io's users; import on use

        if not isinstance(tensor, Tensor) or isinstance(tensor, Parameter):
            raise CheckpointError(f"a Parameter must wrap a tensor, got {type(tensor).__name__}")
        array = tensor.numpy()
        return Parameter(array, requires_grad=bool(requires_grad) and array.dtype.kind in "fc")


# -- the restricted unpickler --------------------------------------------------------------------
class _StorageType:
    """What a ``torch.<X>Storage`` global unpickles to: only its element dtype."""

    def __init__(self, name: str, dtype: Any) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _TensorMarker:
    """What ``torch.Tensor`` / ``torch.nn.Parameter`` unpickle to (a type tag, never instantiated)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in value):
        raise CheckpointError(f"tensor {what} must be a tuple of non-negative ints, got {value!r:.200}")
    return tuple(int(v) for v in value)


def _torch_size(dims: Any = ()) -> dtypes.Size:
    if not isinstance(dims, (tuple, list)):
        raise CheckpointError(f"torch.Size must be built from a tuple of ints, got {dims!r:.80}")
    return dtypes.Size(_int_tuple(dims, "torch.Size"))


def _torch_device(kind: Any, index: Any = None) -> dtypes.device:
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise CheckpointError(f"torch.device must be built from a str (and an int), got {kind!r:.80}, "
                              f"{index!r:.80}")
    try:
        return dtypes.device(kind if index is None else f"{kind}:{index}")
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"torch.device({kind!r:.40}, {index!r:.40}) is not a device: {error}") from None


_TEXT_ENCODINGS = ("latin1", "latin-1", "utf-8", "utf8")


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """What protocol-2 pickles use for ``bytes`` (``_codecs.encode(str, 'latin1')``)."""
    if not isinstance(text, str) or encoding not in _TEXT_ENCODINGS or errors != "strict":
        raise CheckpointError(f"_codecs.encode is only admitted for str and latin1/utf-8, got "
                              f"{encoding!r:.40}")
    return text.encode(encoding)


def _bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    """``bytearray`` from bytes or (str, encoding) only: an int argument would allocate that many bytes."""
    if isinstance(data, (bytes, bytearray)) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in _TEXT_ENCODINGS:
        return bytearray(data, encoding)
    raise CheckpointError(f"bytearray is only admitted from bytes or a latin1/utf-8 str, got {data!r:.40}")


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, numbers.Real) for v in (real, imag)):
        raise CheckpointError(f"complex is only admitted from two real numbers, got {real!r:.40}, "
                              f"{imag!r:.40}")
    return complex(real, imag)


def _set(items: Any = ()) -> set[Any]:
    if not isinstance(items, (list, tuple)):
        raise CheckpointError(f"set is only admitted from a list, got {type(items).__name__}")
    return set(items)


def _npconv_dtype(dtype: Any) -> Any:
    """``torch.float32`` in a file loads as ``npconv.float32``; dtypes npconv lacks (bfloat16) as read."""
    try:
        return dtypes.as_dtype(dtype)
    except TypeError:
        return dtype


def _counter(*args: Any) -> Counter:
    """``collections.Counter`` as pickle rebuilds it (``Counter(dict)``; a ``MultiStepLR`` state's
    milestones), as torch's weights-only load allows it; nothing but a dict of counts accepted."""
    if len(args) > 1 or (args and not isinstance(args[0], dict)):
        _refuse(f"refusing to call collections.Counter with {args!r:.80}")
    return Counter(*args)


_STATIC_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "Counter"): _counter,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("torch", "Tensor"): _TensorMarker("Tensor"),
    ("torch.nn.parameter", "Parameter"): _TensorMarker("Parameter"),
    ("_codecs", "encode"): _codecs_encode,
    **{(module, name): value for module in ("builtins", "__builtin__")  # protocol 2 says __builtin__
       for name, value in (("set", _set), ("complex", _complex), ("bytearray", _bytearray))},
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8)),
    **{("torch", name): _npconv_dtype(dtype) for name, dtype in _TORCH_DTYPES.items()},
}
_CLASSES = (OrderedDict, set, frozenset, complex)
_MAX_TUPLE_DEPTH = 1000
_REFUSAL = ("npconv only reads tensor data, storages, dtypes and plain Python containers (like "
            "torch.load(weights_only=True)) and never executes code from a file, not even with "
            "weights_only=False; nothing from the file was executed")


def _refuse(message: str) -> None:
    raise UnsafeCheckpointError(f"{message}. {_REFUSAL}")


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler with an allow-list of globals and guarded REDUCE/BUILD/NEWOBJ.

    It is iterative (no recursion on nesting) and reads its file in bounded pieces.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: Any, builder: Any,
                 storages: Callable[[tuple[Any, ...]], _StorageRef] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._builder = builder
        self._storages = storages
        rebuilders = {
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor_v3"): self._rebuild_tensor_v3,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch._tensor", "_rebuild_from_type_v2"): self._rebuild_from_type_v2,
        }
        self._globals = {**_STATIC_GLOBALS, **rebuilders}
        self._tensor_rebuilders = tuple(rebuilders.values())[:3]
        self._callables = [v for v in self._globals.values() if callable(v) and not isinstance(v, np.dtype)]
        self._tuple_depth: dict[int, tuple[tuple[Any, ...], int]] = {}

    # rebuild functions: the tensor is a view of its storage, made at once
    def _rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any,
                        dtype: Any = None, requires_grad: Any = False) -> Any:
        if not isinstance(storage, _StorageRef):
            raise CheckpointError(f"a tensor must be rebuilt from a storage, got {type(storage).__name__}")
        if not isinstance(storage_offset, numbers.Integral) or isinstance(storage_offset, bool) \
                or storage_offset < 0:
            raise CheckpointError(f"storage_offset must be a non-negative int, got {storage_offset!r:.80}")
        size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
        if len(size) != len(stride):
            raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
        element = storage.dtype if dtype is None else dtype
        view = _tensor_view(storage.storage, element, int(storage_offset), size, stride)
        return self._builder.tensor(view, requires_grad is True)

    def _rebuild_tensor_v2(self, storage: Any, storage_offset: Any, size: Any, stride: Any,
                           requires_grad: Any = False, backward_hooks: Any = None,
                           metadata: Any = None) -> Any:
        return self._rebuild_tensor(storage, storage_offset, size, stride, requires_grad=requires_grad)

    def _rebuild_tensor_v3(self, storage: Any, storage_offset: Any, size: Any, stride: Any,
                           requires_grad: Any, backward_hooks: Any, dtype: Any, metadata: Any = None) -> Any:
        if isinstance(dtype, dtypes.dtype):
            dtype = dtype.dtype
        if not isinstance(dtype, (np.dtype, _Upcast)):
            raise CheckpointError(f"_rebuild_tensor_v3 needs a torch dtype, got {dtype!r:.80}")
        return self._rebuild_tensor(storage, storage_offset, size, stride, dtype=dtype,
                                    requires_grad=requires_grad)

    def _rebuild_parameter(self, data: Any, requires_grad: Any = True, backward_hooks: Any = None,
                           state: Any = None) -> Any:
        return self._builder.parameter(data, requires_grad is True)

    def _rebuild_from_type_v2(self, func: Any, new_type: Any, args: Any, state: Any) -> Any:
        if not any(func is f for f in self._tensor_rebuilders) or not isinstance(new_type, _TensorMarker) \
                or not isinstance(args, tuple):
            raise CheckpointError("_rebuild_from_type_v2 is only admitted for plain tensors and Parameters")
        return func(*args)

    def find_class(self, module: str, name: str) -> Any:
        found = self._globals.get((module, name))
        if found is None:
            if module == "torch" and name.endswith("Storage"):
                raise CheckpointError(f"unsupported storage type torch.{name} (quantized or exotic dtype)")
            if module == "torch" and name in ("float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
                                               "float4_e2m1fn_x2", "complex32", "chalf", "qint8", "quint8",
                                               "qint32", "quint4x2", "quint2x4"):
                raise CheckpointError(f"unsupported tensor dtype torch.{name}")
            _refuse(f"refusing to load the global '{module}.{name}'")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage") \
                or self._storages is None:
            _refuse(f"refusing the persistent id {pid!r:.80}")
        return self._storages(pid[1:])

    def _load_reduce(self) -> None:
        func = self.stack[-2]
        if not any(func is allowed for allowed in self._callables):
            _refuse(f"refusing to call {func!r:.80}")
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise CheckpointError(f"REDUCE needs a tuple of arguments, got {type(args).__name__}")
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
        if cls not in _CLASSES or not isinstance(args, tuple):
            _refuse(f"refusing to instantiate {cls!r:.80}")
        self.append(cls.__new__(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in _CLASSES or kwargs or not isinstance(args, tuple):
            _refuse(f"refusing to instantiate {cls!r:.80}")
        self.append(cls.__new__(cls, *args))

    def _load_out_of_band(self) -> None:  # protocol 5: BYTEARRAY8 would allocate its claimed length
        raise CheckpointError("the pickle uses protocol-5 buffers, which torch checkpoints never contain")

    def _track_tuple(self) -> None:
        """Refuse tuples nested deeper than _MAX_TUPLE_DEPTH: hashing one (as a dict key or set item)
        recurses in C without a depth check and would crash the interpreter."""
        made = self.stack[-1]
        depths = self._tuple_depth
        depth = 1 + max((depths[id(x)][1] for x in made if type(x) is tuple and id(x) in depths), default=0)
        if depth > _MAX_TUPLE_DEPTH:
            raise CheckpointError(f"the pickle nests tuples more than {_MAX_TUPLE_DEPTH} deep")
        if depth > 1 or made:
            self._tuple_depth[id(made)] = (made, depth)  # the tuple is kept so that its id stays its own

    def _load_tuple(self) -> None:
        pickle._Unpickler.load_tuple(self)  # type: ignore[attr-defined]
        self._track_tuple()

    def _load_tuple1(self) -> None:
        pickle._Unpickler.load_tuple1(self)  # type: ignore[attr-defined]
        self._track_tuple()

    def _load_tuple2(self) -> None:
        pickle._Unpickler.load_tuple2(self)  # type: ignore[attr-defined]
        self._track_tuple()

    def _load_tuple3(self) -> None:
        pickle._Unpickler.load_tuple3(self)  # type: ignore[attr-defined]
        self._track_tuple()

    dispatch[pickle.TUPLE[0]] = _load_tuple
    dispatch[pickle.TUPLE1[0]] = _load_tuple1
    dispatch[pickle.TUPLE2[0]] = _load_tuple2
    dispatch[pickle.TUPLE3[0]] = _load_tuple3
    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BYTEARRAY8[0]] = _load_out_of_band
    dispatch[pickle.NEXT_BUFFER[0]] = _load_out_of_band
    dispatch[pickle.READONLY_BUFFER[0]] = _load_out_of_band


class _BoundedReader:
    """A file seen up to ``limit`` bytes: a huge length read from the file never becomes an allocation."""

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self._handle, self.left = handle, limit

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self._handle.read(n)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._handle.readline(self.left)
        self.left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)


def _unpickle(file: Any, builder: Any,
              storages: Callable[[tuple[Any, ...]], _StorageRef] | None = None) -> Any:
    try:
        return _RestrictedUnpickler(file, builder, storages).load()
    except CheckpointError:
        raise
    except _PARSE_ERRORS as error:
        message = f"malformed pickle in the checkpoint: {type(error).__name__}: {error}"
        raise CheckpointError(message[:2000]) from error


def _check_result(obj: Any) -> Any:
    """Refuse internal objects left bare in the result (a storage, a storage type, a rebuild function)."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (_StorageRef, _StorageType, _TensorMarker, _Upcast)) or callable(item):
            raise CheckpointError(f"the checkpoint contains a bare {item!r:.60}, not tensor data")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            stack.extend(getattr(item, "__dict__", {}).values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return obj


def _storage_from_pid(pid: tuple[Any, ...], storages: dict[Any, _StorageRef],
                      make: Callable[[Any, Any, int], _Storage],
                      location_check: Callable[[str], None]) -> _StorageRef:
    """A ``('storage', type, key, location, numel[, view_metadata])`` persistent id -> (storage, dtype)."""
    if len(pid) not in (4, 5):
        raise CheckpointError(f"malformed storage id {pid!r:.80}")
    storage_type, key, location, numel = pid[:4]
    view = pid[4] if len(pid) == 5 else None
    if not isinstance(storage_type, _StorageType) or not isinstance(key, (str, int)) \
            or isinstance(key, bool) or not isinstance(numel, numbers.Integral) or isinstance(numel, bool) \
            or numel < 0 or not isinstance(location, str):
        raise CheckpointError(f"malformed storage id {pid!r:.80}")
    dtype = storage_type.dtype
    if key not in storages:
        location_check(location)
        storages[key] = _StorageRef(make(key, dtype, int(numel) * _itemsize(dtype)), dtype)
    ref = storages[key]
    if view is None:
        return ref
    if not (isinstance(view, tuple) and len(view) == 3):
        raise CheckpointError(f"malformed storage view {view!r:.80}")
    view_key, offset, view_size = view
    if view_key not in storages:
        size, base = _itemsize(ref.dtype), ref.storage
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
                   for v in (offset, view_size)) or (offset + view_size) * size > base.raw.size:
            raise CheckpointError(f"storage view {view!r:.80} lies outside its storage of "
                                  f"{base.raw.size} bytes")
        sub = _Storage(base.raw[offset * size:(offset + view_size) * size], base.byteorder)
        sub.is_view = True
        base._after_fill(sub.fill)
        storages[view_key] = _StorageRef(sub, ref.dtype)
    return storages[view_key]


def _read(handle: BinaryIO, name: str, builder: Any, location_check: Callable[[str], None],
          formats: tuple[str, ...], mapped: str | None = None) -> Any:
    """Detect the format from the first bytes and read the file; every parse failure is a CheckpointError."""
    try:
        start = handle.tell()
        head = handle.read(9)
        handle.seek(start)
        total = handle.seek(0, os.SEEK_END) - start
        handle.seek(start)
    except (OSError, AttributeError, ValueError):  # a stream without seek: read it once
        data = handle.read()
        handle, start, total = _io.BytesIO(data), 0, len(data)
        head = data[:9]
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") and "zip" in formats:
        kind = "zip"
    elif head[:1] == b"\x80" and "legacy" in formats:
        kind = "legacy"
    elif len(head) == 9 and head[8:9] == b"{" and "safetensors" in formats:
        kind = "safetensors"
    else:
        what = "a torch.save checkpoint or a safetensors file" if "safetensors" in formats \
            else "a torch.save checkpoint (zip or legacy stream)"
        raise CheckpointError(f"{name} is neither a zip nor {what} (it starts with {head[:9]!r})")
    if mapped is not None and kind != "zip":
        raise ValueError(f"mmap=True needs torch's zip format (as in torch), but {name} is a {kind} file")
    try:
        if kind == "zip":
            return _check_result(_load_zip(handle, start, total, name, builder, location_check, mapped))
        if kind == "legacy":
            return _check_result(_load_legacy(_BoundedReader(handle, total), name, builder, location_check))
        return _load_safetensors(handle, start, total, name, builder)
    except CheckpointError:
        raise
    except _PARSE_ERRORS as error:
        raise CheckpointError(f"{name} is a damaged checkpoint: {type(error).__name__}: {error}"[:2000]) \
            from error


# -- torch's zip format --------------------------------------------------------------------------
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand its input more than this


def _check_zip_directory(archive: zipfile.ZipFile, total: int, name: str) -> None:
    """Every record must lie inside the file, be unencrypted, stored or deflated, and not inflate
    beyond what deflate can: then no read allocates more than the file holds (x1032 for deflate)."""
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{name}: record {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{name}: record {info.filename!r} uses compression method "
                                  f"{info.compress_type}; torch checkpoints are stored (or deflated)")
        if info.header_offset < 0 or info.header_offset + 30 + info.compress_size > total:
            raise CheckpointError(f"{name}: record {info.filename!r} claims {info.compress_size} bytes at "
                                  f"offset {info.header_offset}, past the end of the {total}-byte file")
        limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO)
        if info.file_size > limit:
            raise CheckpointError(f"{name}: record {info.filename!r} claims {info.file_size} bytes from "
                                  f"{info.compress_size} compressed bytes")


def _read_record(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: np.ndarray) -> None:
    """Read exactly ``out.size`` (== the record's size) bytes into ``out``, in bounded pieces; the
    record's CRC is checked at its end."""
    view = memoryview(out).cast("B")
    with archive.open(info) as member:
        done = 0
        while done < out.size:
            piece = member.read(min(_CHUNK, out.size - done))
            if not piece:
                raise CheckpointError(f"record {info.filename!r} ends after {done} of {out.size} bytes")
            view[done:done + len(piece)] = piece
            done += len(piece)
        member.read(1)  # reaching the end makes zipfile check the CRC


def _map_record(handle: BinaryIO, path: str, info: zipfile.ZipInfo, total: int) -> np.ndarray:
    """A stored record's bytes mapped copy-on-write (its local header gives where the data starts)."""
    handle.seek(info.header_offset)
    header = handle.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{path}: record {info.filename!r} has no local header")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.file_size > total:
        raise CheckpointError(f"{path}: record {info.filename!r} runs past the end of the file")
    return np.memmap(path, dtype=np.uint8, mode="c", offset=start, shape=(info.file_size,))


def _load_zip(handle: BinaryIO, start: int, total: int, name: str, builder: Any,
              location_check: Callable[[str], None], mapped: str | None = None) -> Any:
    handle.seek(start)
    with zipfile.ZipFile(handle) as archive:
        _check_zip_directory(archive, total, name)
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [n for n in infos if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            if any(n.endswith("constants.pkl") for n in infos):
                raise CheckpointError(f"{name} is a TorchScript archive (torch.jit.save), not a torch.save "
                                      "checkpoint")
            raise CheckpointError(f"{name} is a zip file without data.pkl: not a torch.save checkpoint")
        if len(pickles) > 1:
            raise CheckpointError(f"{name} has several data.pkl records: {pickles[:4]}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in infos:
            record = infos[prefix + "byteorder"]
            if record.file_size > 16:
                raise CheckpointError(f"{name}: a byteorder record of {record.file_size} bytes")
            byteorder = archive.read(record).decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"unknown byteorder {byteorder!r} in {name}")

        def make(key: Any, dtype: Any, nbytes: int) -> _Storage:
            record = infos.get(f"{prefix}data/{key}")
            if record is None:
                raise CheckpointError(f"{name} names the storage {key!r:.40}, which it does not contain")
            if record.file_size != nbytes:
                raise CheckpointError(f"{name}: storage {key!r:.40} declares {nbytes} bytes, but its record "
                                      f"holds {record.file_size}")
            if mapped is not None and record.compress_type == zipfile.ZIP_STORED and nbytes:
                raw = _map_record(handle, mapped, record, total)
            else:
                raw = np.empty(nbytes, dtype=np.uint8)
                _read_record(archive, record, raw)
            storage = _Storage(raw, byteorder)
            storage.fill()
            return storage

        storages: dict[Any, _StorageRef] = {}
        # streamed: the bytes after the pickle's STOP are never read
        with archive.open(infos[pickles[0]]) as stream:
            return _unpickle(stream, builder,
                             lambda pid: _storage_from_pid(pid, storages, make, location_check))


# -- torch's legacy stream format ----------------------------------------------------------------
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _load_legacy(stream: _BoundedReader, name: str, builder: Any,
                 location_check: Callable[[str], None]) -> Any:
    """torch.save(..., _use_new_zipfile_serialization=False): pickles, then the raw storages."""
    if _unpickle(stream, builder) != _LEGACY_MAGIC:
        raise CheckpointError(f"{name}: invalid magic number; not a torch.save checkpoint")
    protocol = _unpickle(stream, builder)
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{name}: unsupported legacy protocol version {protocol!r:.40}")
    sys_info = _unpickle(stream, builder)
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    declared = 0

    def make(key: Any, dtype: Any, nbytes: int) -> _Storage:
        nonlocal declared
        declared += nbytes
        if declared > stream.left:  # the storages follow the pickle: they cannot exceed what is left
            raise CheckpointError(f"{name}: its storages declare {declared} bytes, the file has only "
                                  f"{stream.left} bytes left")
        return _Storage(np.empty(nbytes, dtype=np.uint8), byteorder)

    storages: dict[Any, _StorageRef] = {}
    result = _unpickle(stream, builder, lambda pid: _storage_from_pid(pid, storages, make, location_check))
    keys = _unpickle(stream, builder)
    if not isinstance(keys, list):
        raise CheckpointError(f"{name}: malformed storage key list")
    for key in keys:
        if not isinstance(key, (str, int)) or key not in storages:
            raise CheckpointError(f"{name}: the data section names an unknown storage {key!r:.40}")
        storage, dtype = storages[key].storage, storages[key].dtype
        if storage.filled or storage.is_view:
            raise CheckpointError(f"{name}: the data section names storage {key!r:.40} twice or names a view")
        header = stream.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{name} is truncated (storage {key!r:.40})")
        count = int.from_bytes(header, byteorder)
        if count * _itemsize(dtype) != storage.raw.size:
            raise CheckpointError(f"{name}: storage {key!r:.40} has {count} elements, the pickle says "
                                  f"{storage.raw.size // _itemsize(dtype)}")
        view = memoryview(storage.raw).cast("B")
        done = 0
        while done < storage.raw.size:
            piece = stream.read(min(_CHUNK, storage.raw.size - done))
            if not piece:
                raise CheckpointError(f"{name} is truncated (storage {key!r:.40})")
            view[done:done + len(piece)] = piece
            done += len(piece)
        storage.fill()
    if any(not ref.storage.filled for ref in storages.values()):
        raise CheckpointError(f"{name}: a storage named in the pickle has no data in the file")
    return result


# -- safetensors ---------------------------------------------------------------------------------
_ORDER_KEY = "npconv.keys"
_COMPLEX128_KEY = "npconv.complex128"
_SAFETENSORS_READ: dict[str, Any] = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"), "C64": np.dtype("<c8"),
    "BF16": BFLOAT16, "F8_E4M3": FLOAT8_E4M3FN, "F8_E5M2": FLOAT8_E5M2,
}
_SAFETENSORS_WRITE = {np.dtype(v).newbyteorder("="): k for k, v in _SAFETENSORS_READ.items()
                      if isinstance(v, np.dtype)}
_MAX_HEADER = 100_000_000  # the safetensors specification's limit


def _load_safetensors(handle: BinaryIO, start: int, total: int, name: str, builder: Any) -> dict[str, Any]:
    handle.seek(start)
    (header_size,) = struct.unpack("<Q", handle.read(8))
    if header_size > min(_MAX_HEADER, total - 8):
        raise CheckpointError(f"{name}: a safetensors header of {header_size} bytes in a {total}-byte file")
    try:
        header = json.loads(handle.read(header_size).decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{name}: the safetensors header is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{name}: __metadata__ must map strings to strings")
    data_size = total - 8 - header_size
    entries = []
    for key, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{name}: tensor {key!r:.80} needs exactly dtype, shape and data_offsets")
        dtype = _SAFETENSORS_READ.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise CheckpointError(f"{name}: tensor {key!r:.80} has dtype {info['dtype']!r:.40}, which npconv "
                                  f"cannot read (it reads {', '.join(_SAFETENSORS_READ)}; BF16 and F8 are "
                                  "upcast to float32)")
        shape = _int_tuple(info["shape"], f"{key!r:.80} shape")
        offsets = _int_tuple(info["data_offsets"], f"{key!r:.80} data_offsets")
        count = 1
        for n in shape:
            count *= n
        if len(offsets) != 2 or offsets[1] - offsets[0] != count * _itemsize(dtype) or offsets[1] > data_size:
            raise CheckpointError(f"{name}: tensor {key!r:.80} of shape {shape} and dtype {info['dtype']} "
                                  f"has data_offsets {list(offsets)} in a data section of {data_size} bytes")
        entries.append((offsets[0], offsets[1], key, dtype, shape))
    end = 0
    for begin, stop, key, _, _ in sorted(entries, key=lambda e: (e[0], e[1])):
        if begin < end:  # overlapping tensors would let a small file claim its data many times over
            raise CheckpointError(f"{name}: tensor {key!r:.80} overlaps another tensor's data")
        end = stop
    arrays: dict[str, np.ndarray] = {}
    for begin, stop, key, dtype, shape in entries:
        raw = np.empty(stop - begin, dtype=np.uint8)
        handle.seek(start + 8 + header_size + begin)
        view, done = memoryview(raw).cast("B"), 0
        while done < raw.size:
            piece = handle.read(min(_CHUNK, raw.size - done))
            if not piece:
                raise CheckpointError(f"{name} is truncated (tensor {key!r:.80})")
            view[done:done + len(piece)] = piece
            done += len(piece)
        if isinstance(dtype, _Upcast):
            values = np.empty(raw.size // dtype.itemsize, dtype=np.float32)
            dtype.convert(raw, values, "little")
        else:
            values = raw.view(dtype).astype(dtype.newbyteorder("="), copy=False)
            if dtype == np.bool_ and raw.size and raw.max() > 1:
                raise CheckpointError(f"{name}: bool tensor {key!r:.80} holds bytes other than 0 and 1")
        arrays[key] = values.reshape(shape)
    _apply_npconv_metadata(arrays, header, metadata, name)
    return {key: builder.tensor(array, False) for key, array in arrays.items()}


def _npconv_names(metadata: dict[str, str], key: str, name: str) -> list[str] | None:
    if key not in metadata:
        return None
    try:
        names = json.loads(metadata[key])
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{name}: metadata {key!r} is not JSON: {error}") from error
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise CheckpointError(f"{name}: metadata {key!r} must be a JSON list of distinct tensor names")
    return names


def _apply_npconv_metadata(arrays: dict[str, np.ndarray], header: dict[str, Any], metadata: dict[str, str],
                           name: str) -> None:
    """Restore complex128 (stored as float64 pairs) and the key order, after checking both."""
    for key in _npconv_names(metadata, _COMPLEX128_KEY, name) or []:
        if key not in arrays or header[key]["dtype"] != "F64" or not arrays[key].shape \
                or arrays[key].shape[-1] != 2:
            raise CheckpointError(f"{name}: metadata {_COMPLEX128_KEY} names {key!r:.80}, which is not a "
                                  "float64 tensor of (real, imaginary) pairs")
        arrays[key] = np.ascontiguousarray(arrays[key]).view(np.complex128).reshape(arrays[key].shape[:-1])
    order = _npconv_names(metadata, _ORDER_KEY, name)
    if order is not None:
        if sorted(order) != sorted(arrays):
            raise CheckpointError(f"{name}: metadata {_ORDER_KEY} does not list the file's tensors")
        reordered = {key: arrays[key] for key in order}
        arrays.clear()
        arrays.update(reordered)


def _safetensors_writer(obj: Any, metadata: Mapping[str, str] | None) -> Callable[[BinaryIO], None]:
    if not isinstance(obj, Mapping):
        hint = " (pass model.state_dict())" if hasattr(obj, "state_dict") else ""
        raise TypeError(f"obj must be a mapping from names to arrays{hint}, got {type(obj).__name__}")
    if metadata is not None and (not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError(f"metadata must be a mapping from str to str, got {metadata!r}")
    arrays: dict[str, np.ndarray] = {}
    complex_names = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be str, got {key!r}")
        array = np.asarray(value.numpy() if isinstance(value, Tensor) else value)
        native = array.dtype.newbyteorder("=")
        if native == np.complex128:
            array = np.ascontiguousarray(array, dtype=native).view(np.float64).reshape(array.shape + (2,))
            complex_names.append(key)
        elif native not in _SAFETENSORS_WRITE:
            raise TypeError(f"cannot save {key!r}: dtype {array.dtype} is not a numeric or bool dtype "
                            "supported by safetensors")
        arrays[key] = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")  # keeps 0-d
    header: dict[str, Any] = {}
    offset = 0
    for key, array in arrays.items():
        header[key] = {"dtype": _SAFETENSORS_WRITE[array.dtype.newbyteorder("=")], "shape": list(array.shape),
                       "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = dict(metadata or {})
    text[_ORDER_KEY] = json.dumps(list(arrays))
    if complex_names:
        text[_COMPLEX128_KEY] = json.dumps(complex_names)
    header["__metadata__"] = text
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned

    def write(handle: BinaryIO) -> None:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for array in arrays.values():
            if array.size:
                handle.write(memoryview(array.reshape(-1).view(np.uint8)))
    return write


# -- writing torch's zip format ------------------------------------------------------------------
_TYPED_STORAGES = {np.dtype(np.float64): "DoubleStorage", np.dtype(np.float32): "FloatStorage",
                   np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                   np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
                   np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage",
                   np.dtype(np.bool_): "BoolStorage", np.dtype(np.complex64): "ComplexFloatStorage",
                   np.dtype(np.complex128): "ComplexDoubleStorage"}
_UNTYPED = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))  # saved as torch does: v3
_DTYPE_NAMES = {np.dtype(name): name for name in (
    "float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64",
    "bool", "complex64", "complex128")}


def _root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


class _StoragePlan:
    """Which bytes each saved array's storage holds: arrays viewing one contiguous root array share
    one storage, spanning only the part of the root they reach (torch would save the whole root)."""

    def __init__(self) -> None:
        self.groups: dict[Any, list[Any]] = {}  # key -> [root, dtype, lo, hi] (bytes in the root)
        self.placement: dict[int, tuple[Any, int]] = {}  # id(array) -> (group key, byte offset in root)
        self.keep: list[np.ndarray] = []

    def add(self, array: np.ndarray) -> np.ndarray:
        """Plan ``array`` (returns the array actually saved: a native-order copy if needed)."""
        if id(array) in self.placement:
            return array
        itemsize = array.dtype.itemsize
        root = _root(array)
        shape_strides = list(zip(array.shape, array.strides, strict=True))
        shareable = (array.size > 0 and array.dtype.isnative
                     and (root.flags.c_contiguous or root.flags.f_contiguous)
                     and all(s >= 0 and s % itemsize == 0 for n, s in shape_strides if n > 1))
        if not shareable:  # a copy of its own: empty, byte-swapped, negative or odd strides, scattered root
            array = root = np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)
        self.keep.append(array)
        offset = _address(array) - _address(root) if array.size else 0
        shape_strides = list(zip(array.shape, array.strides, strict=True))
        reach = offset + sum((n - 1) * s for n, s in shape_strides) + itemsize if array.size else 0
        key = (id(root), array.dtype.str, offset % itemsize)
        group = self.groups.setdefault(key, [root, array.dtype, offset, reach])
        group[2], group[3] = min(group[2], offset), max(group[3], reach)
        self.placement[id(array)] = (key, offset)
        return array


class _TorchPickler:
    """Emits the protocol-2 pickle ``torch.save`` writes, with only the opcodes and globals that
    ``torch.load(weights_only=True)`` accepts. Nothing is imported from torch."""

    def __init__(self) -> None:
        self.out = _io.BytesIO()
        self.out.write(b"\x80\x02")
        self.memo: dict[int, int] = {}
        self.globals: dict[tuple[str, str], int] = {}
        self.plan = _StoragePlan()
        self.storage_ids: dict[Any, str] = {}
        self.keep: list[Any] = []

    # -- opcodes
    def put(self, obj: Any) -> None:
        index = len(self.memo) + len(self.globals)
        self.memo[id(obj)] = index
        self.keep.append(obj)
        self.out.write(b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index))

    def get(self, index: int) -> None:
        self.out.write(b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index))

    def global_(self, module: str, name: str) -> None:
        if (module, name) in self.globals:
            self.get(self.globals[(module, name)])
            return
        self.out.write(f"c{module}\n{name}\n".encode())
        index = len(self.memo) + len(self.globals)
        self.globals[(module, name)] = index
        self.out.write(b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index))

    def tuple_(self, items: tuple[Any, ...], where: str) -> None:
        if len(items) <= 3:
            if not items:
                self.out.write(b")")
                return
            for i, item in enumerate(items):
                self.save(item, f"{where}[{i}]")
            self.out.write(b"\x85\x86\x87"[len(items) - 1:len(items)])
            return
        self.out.write(b"(")
        for i, item in enumerate(items):
            self.save(item, f"{where}[{i}]")
        self.out.write(b"t")

    def call(self, module: str, name: str, args: tuple[Any, ...], where: str) -> None:
        self.global_(module, name)
        self.tuple_(args, where)
        self.out.write(b"R")

    def save_items(self, items: list[tuple[Any, Any]], where: str) -> None:
        for start in range(0, len(items), 1000):
            self.out.write(b"(")
            for key, value in items[start:start + 1000]:
                self.save(key, f"{where} key")
                self.save(value, f"{where}[{key!r:.40}]")
            self.out.write(b"u")

    # -- objects
    def save(self, obj: Any, where: str) -> None:
        if obj is None:
            self.out.write(b"N")
        elif obj is True or obj is False:
            self.out.write(b"\x88" if obj else b"\x89")
        elif isinstance(obj, np.generic) and not isinstance(obj, (np.datetime64, np.timedelta64, np.void)):
            self.save(obj.item(), where)
        elif isinstance(obj, int):
            self.save_int(int(obj), where)
        elif isinstance(obj, float):
            self.out.write(b"G" + struct.pack(">d", obj))
        elif isinstance(obj, str):
            data = obj.encode("utf-8", "surrogatepass")
            self.out.write(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(obj, complex):
            self.call("builtins", "complex", (obj.real, obj.imag), where)
        elif isinstance(obj, bytes):
            self.call("_codecs", "encode", (obj.decode("latin1"), "latin1"), where)
        elif isinstance(obj, dtypes.Size):
            self.call("torch", "Size", (tuple(obj),), where)
        elif isinstance(obj, dtypes.device):
            self.call("torch", "device", (str(obj),), where)
        elif isinstance(obj, (np.dtype, dtypes.dtype)) or (isinstance(obj, type)
                                                            and issubclass(obj, np.generic)):
            dtype = dtypes.to_numpy_dtype(obj)
            if dtype.newbyteorder("=") not in _DTYPE_NAMES:
                raise TypeError(f"cannot save {where}: dtype {dtype} has no torch equivalent")
            self.global_("torch", _DTYPE_NAMES[dtype.newbyteorder("=")])
        elif id(obj) in self.memo:
            self.get(self.memo[id(obj)])
        elif isinstance(obj, (Tensor, np.ndarray)):
            self.save_tensor(obj, where)
        elif isinstance(obj, (dict, list, tuple, set)):
            self.save_container(obj, where)
        else:
            hint = "; save model.state_dict() instead" if hasattr(obj, "state_dict") else ""
            raise TypeError(f"cannot save {where}: a {type(obj).__name__} is not a tensor, number, string, "
                            f"bytes, None or a dict/list/tuple/set of them{hint}")

    def save_int(self, value: int, where: str) -> None:
        if 0 <= value < 256:
            self.out.write(b"K" + bytes([value]))
        elif 0 <= value < 65536:
            self.out.write(b"M" + struct.pack("<H", value))
        elif -(1 << 31) <= value < 1 << 31:
            self.out.write(b"J" + struct.pack("<i", value))
        else:
            data = pickle.encode_long(value)  # type: ignore[attr-defined]
            if len(data) > 255:
                raise TypeError(f"cannot save {where}: an integer of {value.bit_length()} bits (torch reads "
                                "integers up to 2040 bits)")
            self.out.write(b"\x8a" + bytes([len(data)]) + data)

    def save_container(self, obj: Any, where: str) -> None:
        if isinstance(obj, tuple):  # by value: torch's reader lacks the POP that pickle's tuple memo needs
            self.tuple_(obj, where)
        elif isinstance(obj, list):
            self.out.write(b"]")
            self.put(obj)
            for start in range(0, len(obj), 1000):
                self.out.write(b"(")
                for i, item in enumerate(obj[start:start + 1000], start):
                    self.save(item, f"{where}[{i}]")
                self.out.write(b"e")
        elif isinstance(obj, set):
            self.call("builtins", "set", (list(obj),), where)
            self.put(obj)
        elif isinstance(obj, OrderedDict):
            self.call("collections", "OrderedDict", (), where)
            self.put(obj)
            self.save_items(list(obj.items()), where)
            attributes = {k: v for k, v in getattr(obj, "__dict__", {}).items() if not k.startswith("__")}
            if attributes:  # a state dict's _metadata (layer versions), as torch keeps it
                self.save(attributes, f"{where}.__dict__")
                self.out.write(b"b")
        else:
            self.out.write(b"}")
            self.put(obj)
            self.save_items(list(obj.items()), where)

    def save_tensor(self, obj: Tensor | np.ndarray, where: str) -> None:
        from .nn.parameter import Parameter

        array = obj.numpy() if isinstance(obj, Tensor) else obj
        native = array.dtype.newbyteorder("=")
        if native not in _DTYPE_NAMES:
            raise TypeError(f"cannot save {where}: dtype {array.dtype} has no torch equivalent")
        is_parameter = isinstance(obj, Parameter)
        requires_grad = isinstance(obj, Tensor) and obj.requires_grad
        if is_parameter:
            self.global_("torch._utils", "_rebuild_parameter")
            self.out.write(b"(")
        saved = self.plan.add(array)
        key, offset = self.plan.placement[id(saved)]
        group = self.plan.groups[key]
        storage_id = self.storage_ids.setdefault(key, str(len(self.storage_ids)))
        itemsize = native.itemsize
        untyped = native in _UNTYPED
        self.global_("torch._utils", "_rebuild_tensor_v3" if untyped else "_rebuild_tensor_v2")
        self.out.write(b"((")
        self.save("storage", where)
        if untyped:
            self.global_("torch.storage", "UntypedStorage")
        else:
            self.global_("torch", _TYPED_STORAGES[native])
        self.save(storage_id, where)
        self.save("cpu", where)
        span = (group[3] - group[2]) if saved.size else 0
        self.save_int(span if untyped else span // itemsize, where)
        self.out.write(b"tQ")
        self.save_int((offset - group[2]) // itemsize if saved.size else 0, where)
        self.tuple_(tuple(saved.shape), where)
        strides = tuple(s // itemsize if n > 1 and saved.size else c for n, s, c in
                        zip(saved.shape, saved.strides, _contiguous_strides(saved.shape), strict=True))
        self.tuple_(strides, where)
        self.out.write(b"\x88" if requires_grad and not is_parameter else b"\x89")
        self.call("collections", "OrderedDict", (), where)
        if untyped:
            self.global_("torch", _DTYPE_NAMES[native])
        self.out.write(b"tR")
        if is_parameter:
            self.out.write(b"\x88" if obj.requires_grad else b"\x89")  # type: ignore[union-attr]
            self.call("collections", "OrderedDict", (), where)
            self.out.write(b"tR")
        self.put(obj)

    def storages(self) -> list[tuple[str, memoryview]]:
        records = []
        for key, storage_id in self.storage_ids.items():
            root, _, lo, hi = self.plan.groups[key]
            flat = root.ravel(order="K").view(np.uint8) if root.size else np.empty(0, np.uint8)
            records.append((storage_id, memoryview(flat[lo:hi])))
        return records


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _torch_writer(obj: Any) -> Callable[[BinaryIO], None]:
    """Build the pickle now (so a value that cannot be saved raises before a byte is written)."""
    pickler = _TorchPickler()
    try:
        pickler.save(obj, "obj")
    except RecursionError as error:
        raise ValueError("cannot save obj: it is nested too deeply (or contains itself through a tuple)") \
            from error
    pickler.out.write(b".")
    payload = pickler.out.getvalue()
    records = pickler.storages()

    def write(handle: BinaryIO) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            _write_record(archive, "archive/data.pkl", memoryview(payload))
            _write_record(archive, "archive/byteorder", memoryview(sys.byteorder.encode()))
            for storage_id, data in records:
                _write_record(archive, f"archive/data/{storage_id}", data)
            _write_record(archive, "archive/version", memoryview(b"3\n"))
    return write


def _write_record(archive: zipfile.ZipFile, name: str, data: memoryview) -> None:
    """A stored record whose data starts at a multiple of 64 bytes (as torch writes them, so that
    ``torch.load(mmap=True)`` can map the storages)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header = 30 + len(name.encode()) + 4 + (20 if len(data) * 1.05 > zipfile.ZIP64_LIMIT else 0)
    pad = -(archive.start_dir + header) % 64
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # torch's padding field ('FB')
    archive.writestr(info, data)
