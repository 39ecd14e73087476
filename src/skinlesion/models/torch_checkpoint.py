"""Read PyTorch checkpoints (``.pth``) with the standard library and numpy only.

PyTorch is a large dependency we do not otherwise need, and ``torch.load`` on an
untrusted file can run arbitrary code: a checkpoint is a pickle, and unpickling
calls whatever ``module.name`` the file asks for. This reader uses a *restricted*
unpickler that resolves only the names a plain tensor checkpoint needs:

* ``torch._utils._rebuild_tensor_v2`` (and the older ``_rebuild_tensor``), which
  rebuild a tensor from a storage, an offset, a shape and strides;
* the storage types (``torch.FloatStorage`` … ``torch.BoolStorage``), which only
  name the element type;
* ``collections.OrderedDict`` and plain containers (dict, list, tuple are pickle
  opcodes; ``builtins.set``/``frozenset`` are admitted as well).

Anything else — ``os.system``, ``builtins.eval``, a module class — fails with a
``CheckpointError`` before it is called. Tensors come back as numpy arrays.

Two on-disk formats are understood:

* the *legacy* format (``torch.save(..., _use_new_zipfile_serialization=False)``,
  the default before PyTorch 1.6): four pickles back to back (magic number,
  protocol version, system info, the object with persistent storage ids), then
  the list of storage keys, then each storage's raw bytes preceded by its
  element count as an int64;
* the *zip* format (PyTorch ≥ 1.6): ``<name>/data.pkl`` plus one raw file per
  storage under ``<name>/data/<key>``.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["CheckpointError", "load_checkpoint", "load_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage type name → numpy dtype (little-endian; big-endian files are refused).
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
# bfloat16 has no numpy dtype: read as uint16 and widen to float32 (upper half).
_BFLOAT16 = "BFloat16Storage"


MAX_DEPTH = 64
"""Deepest nesting of containers accepted in a checkpoint (a state dict is 1–3 deep)."""
MAX_PICKLE_BYTES = 64 << 20
"""Largest ``data.pkl`` accepted (the pickle holds names and shapes, not tensor data)."""
MAX_RATIO = 100
"""Largest compression ratio of a storage member over 1 MiB (PyTorch stores them uncompressed)."""
DEFAULT_MAX_BYTES = 4 << 30
"""Default cap on the bytes a checkpoint may make this reader read and allocate (4 GiB)."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or asks for a forbidden global."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only its element type matters."""

    name: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype("<u2") if self.name == _BFLOAT16 else _STORAGE_DTYPES[self.name]


@dataclass
class _StorageRef:
    """A storage named by the pickle; its bytes are attached once read."""

    key: str
    dtype: np.dtype[Any]
    numel: int
    bfloat16: bool = False
    data: np.ndarray | None = None
    # Legacy files may describe a storage as a view into another (root) storage.
    root: _StorageRef | None = None
    view_offset: int = 0

    def array(self) -> np.ndarray:
        if self.root is not None:
            base = self.root.array()
            return base[self.view_offset : self.view_offset + self.numel]
        if self.data is None:
            raise CheckpointError(f"storage {self.key!r} has no data (truncated file?)")
        return self.data


@dataclass
class _TensorRef:
    """A tensor to rebuild once its storage's bytes are known."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _Budget(threading.local):
    """Bytes the current load may still read or allocate (per thread)."""

    left: int = DEFAULT_MAX_BYTES

    def spend(self, nbytes: int) -> None:
        if nbytes > self.left:
            raise CheckpointError(f"checkpoint needs more than its memory budget "
                                  f"(another {nbytes:,} bytes, {self.left:,} left); raise "
                                  "max_bytes if this is a genuinely large checkpoint")
        self.left -= nbytes


_budget = _Budget()


def remaining(fh: IO[bytes]) -> int:
    """Bytes left in a seekable file after its current position."""
    pos = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    fh.seek(pos)
    return end - pos


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       *_ignored: Any) -> _TensorRef:
    # Remaining arguments (requires_grad, backward_hooks, metadata) do not matter for values.
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("tensor refers to something that is not a storage")
    try:
        size_t = tuple(int(s) for s in size)
        stride_t = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed tensor metadata: {exc}") from exc
    if len(size_t) != len(stride_t) or offset < 0 or any(s < 0 for s in size_t + stride_t):
        raise CheckpointError(f"malformed tensor shape {size_t} / strides {stride_t}")
    if any(st == 0 and n > 1 for n, st in zip(size_t, stride_t, strict=True)):
        # A zero stride repeats one element: a 392-byte file could then describe a tensor
        # of any size, and copying it out would allocate all of it.
        raise CheckpointError(f"tensor with a zero stride (shape {size_t}, strides {stride_t}): "
                              "not a saved parameter")
    numel = math.prod(size_t)
    if storage.numel >= 0 and numel > storage.numel and storage.root is None:
        raise CheckpointError(f"tensor of shape {size_t} has {numel:,} elements but its storage "
                              f"{storage.key!r} holds {storage.numel:,}")
    return _TensorRef(storage, offset, size_t, stride_t)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


# (module, name) → object the unpickler may hand out. Nothing else resolves.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    **{("torch", name): _StorageType(name) for name in (*_STORAGE_DTYPES, _BFLOAT16)},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only tensor-rebuilding names (see module docstring)."""

    def __init__(self, file: IO[bytes], persistent_load: Callable[[Any], Any]) -> None:
        super().__init__(file, encoding="utf-8")
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refusing to load global {module}.{name}: only tensor data is allowed "
                "in a checkpoint (it may be malicious or not a plain state dict)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent(pid)


def _plain_unpickler(file: IO[bytes]) -> _RestrictedUnpickler:
    def no_persistent(pid: Any) -> Any:
        raise CheckpointError(f"unexpected persistent id {pid!r}")

    return _RestrictedUnpickler(file, no_persistent)


def _storage_type(obj: Any) -> _StorageType:
    if not isinstance(obj, _StorageType):
        raise CheckpointError(f"unknown storage type {obj!r}")
    return obj


# === Formats ===

def _load_legacy(fh: IO[bytes]) -> Any:
    magic = _plain_unpickler(fh).load()
    if magic != _LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    protocol = _plain_unpickler(fh).load()
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _plain_unpickler(fh).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise CheckpointError("big-endian checkpoints are not supported")

    storages: dict[str, _StorageRef] = {}

    def persistent_load(pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 6 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id {pid!r}")
        _, stype, root_key, _location, numel, view_metadata = pid[:6]
        stype = _storage_type(stype)
        root_key = str(root_key)
        if int(numel) < 0:
            raise CheckpointError(f"storage {root_key!r} with a negative size {numel}")
        if root_key not in storages:
            storages[root_key] = _StorageRef(root_key, stype.dtype, int(numel),
                                             bfloat16=stype.name == _BFLOAT16)
        root = storages[root_key]
        if view_metadata is None:
            return root
        view_key, offset, view_size = view_metadata
        if int(offset) < 0 or int(view_size) < 0 or int(offset) + int(view_size) > root.numel:
            raise CheckpointError(f"storage view {view_key!r} ({offset}+{view_size}) lies outside "
                                  f"its storage of {root.numel} elements")
        return _StorageRef(str(view_key), root.dtype, int(view_size), root.bfloat16,
                           root=root, view_offset=int(offset))

    obj = _RestrictedUnpickler(fh, persistent_load).load()
    keys = _plain_unpickler(fh).load()
    if not isinstance(keys, list):
        raise CheckpointError("malformed storage key list")
    for key in keys:
        ref = storages.get(str(key))
        if ref is None:
            raise CheckpointError(f"storage {key!r} listed but never used")
        header = fh.read(8)
        if len(header) != 8:
            raise CheckpointError(f"file ends before storage {key!r} (truncated)")
        (numel,) = struct.unpack("<q", header)
        if numel != ref.numel:
            raise CheckpointError(f"storage {key!r} holds {numel} elements, expected {ref.numel}")
        nbytes = numel * ref.dtype.itemsize
        if numel < 0 or nbytes > remaining(fh):
            raise CheckpointError(f"storage {key!r} declares {nbytes:,} bytes but the file has "
                                  f"{remaining(fh):,} left (truncated or corrupt)")
        _budget.spend(nbytes)
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(
                f"file ends inside storage {key!r}: {len(raw)} of {nbytes} bytes (truncated)"
            )
        ref.data = np.frombuffer(raw, dtype=ref.dtype)
    return obj


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise CheckpointError("zip archive has no data.pkl: not a PyTorch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        storages: dict[str, _StorageRef] = {}

        def persistent_load(pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise CheckpointError(f"unsupported persistent id {pid!r}")
            _, stype, key, _location, numel = pid[:5]
            stype = _storage_type(stype)
            key = str(key)
            if key not in storages:
                # New-style files count numel in bytes for untyped storages; the
                # raw file length is authoritative, so numel is checked below.
                storages[key] = _StorageRef(key, stype.dtype, int(numel),
                                            bfloat16=stype.name == _BFLOAT16)
            return storages[key]

        with zf.open(pkl) as fh:
            obj = _RestrictedUnpickler(fh, persistent_load).load()  # type: ignore[arg-type]
        info = zf.getinfo(pkl)
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{pkl} is {info.file_size:,} bytes; a state dict's pickle is "
                                  f"far smaller (limit {MAX_PICKLE_BYTES:,})")
        for key, ref in storages.items():
            member = f"{prefix}data/{key}"
            try:
                minfo = zf.getinfo(member)
            except KeyError:
                raise CheckpointError(f"storage {member} missing from the archive") from None
            # Sizes are checked on the zip directory, before a byte is decompressed: the
            # pickle's element count (or byte count, for untyped storages) must match.
            expected = (ref.numel * ref.dtype.itemsize, ref.numel)
            if minfo.file_size not in expected:
                raise CheckpointError(f"storage {member} holds {minfo.file_size:,} bytes but the "
                                      f"pickle declares {ref.numel:,} elements of "
                                      f"{ref.dtype.itemsize} bytes")
            if minfo.compress_size and minfo.file_size > MAX_RATIO * minfo.compress_size \
                    and minfo.file_size > 1 << 20:
                raise CheckpointError(f"storage {member} expands {minfo.file_size:,} bytes from "
                                      f"{minfo.compress_size:,} (over {MAX_RATIO}×: a zip bomb?)")
            _budget.spend(minfo.file_size)
            raw = zf.read(member)
            if len(raw) % ref.dtype.itemsize:
                raise CheckpointError(f"storage {member} has a partial element (corrupt)")
            ref.data = np.frombuffer(raw, dtype=ref.dtype)
            ref.numel = ref.data.size
    return obj


# === Materialising tensors ===

def _materialise(obj: Any, memo: dict[int, Any] | None = None, depth: int = 0) -> Any:
    """Replace tensor references by arrays, once per shared object, depth-limited.

    A pickle can reference one list from two places at every level: 547 bytes then
    describe 2**22 paths, and a naive walk copies each one (17 s / 0.9 GB at depth 22).
    Shared objects are materialised once (``memo``, as pickle's own memo shares them),
    nesting deeper than :data:`MAX_DEPTH` is refused, and the tensors' bytes count
    against the load's byte budget.
    """
    memo = {} if memo is None else memo
    if depth > MAX_DEPTH:
        raise CheckpointError(f"objects nested more than {MAX_DEPTH} levels deep: not a "
                              "state dict")
    key = id(obj)
    if key in memo:
        return memo[key]
    out: Any
    if isinstance(obj, _TensorRef):
        out = _tensor_array(obj)
    elif isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        memo[key] = out
        for k, v in obj.items():
            out[k] = _materialise(v, memo, depth + 1)
    elif isinstance(obj, list):
        out = []
        memo[key] = out
        out.extend(_materialise(v, memo, depth + 1) for v in obj)
    elif isinstance(obj, tuple):
        out = tuple(_materialise(v, memo, depth + 1) for v in obj)
    else:
        return obj
    memo[key] = out
    return out


def _tensor_array(t: _TensorRef) -> np.ndarray:
    data = t.storage.array()
    if t.size and 0 in t.size:
        return np.zeros(t.size, dtype=np.float32 if t.storage.bfloat16 else data.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
    if last >= data.size:
        raise CheckpointError(
            f"tensor of shape {t.size} reaches element {last} of storage {t.storage.key!r} "
            f"which has {data.size} (corrupt or truncated)"
        )
    _budget.spend(math.prod(t.size) * data.itemsize)
    strides = tuple(s * data.itemsize for s in t.stride)
    arr = np.lib.stride_tricks.as_strided(data[t.offset :], shape=t.size, strides=strides)
    arr = np.array(arr)  # own, contiguous, writable copy
    if t.storage.bfloat16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


# === Public API ===

def load_checkpoint(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Load a PyTorch checkpoint safely, with tensors as numpy arrays.

    Sizes are checked before anything is read: a storage must match what the pickle
    declares and fit in the file (or the zip member), tensors may not use zero strides
    or reach outside their storage, shared references are rebuilt once, nesting is
    limited to :data:`MAX_DEPTH`, and everything read and allocated counts against
    ``max_bytes``.

    Args:
        path: A ``.pth``/``.pt`` file in the legacy or the zip format.
        max_bytes: Most bytes of tensor data the load may read and allocate
            (default 4 GiB; a backbone checkpoint is 10–500 MB).

    Returns:
        The unpickled object (usually an ``OrderedDict`` state dict) with every
        tensor replaced by a numpy array.

    Raises:
        CheckpointError: The file is missing, truncated, corrupt, not a checkpoint,
            or references a global outside the allow-list. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    _budget.left = int(max_bytes)
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path)
        else:
            with open(path, "rb") as fh:
                obj = _load_legacy(fh)
        return _materialise(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error,
            ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError,
            UnicodeDecodeError, RecursionError, OverflowError) as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def load_state_dict(path: str | os.PathLike[str]) -> OrderedDict[str, np.ndarray]:
    """Load a checkpoint that holds a state dict (name → tensor) as name → numpy array.

    A checkpoint saved as ``{"state_dict": ...}`` (a common training-script wrapper)
    is unwrapped.

    Raises:
        CheckpointError: as ``load_checkpoint``, or if the file holds no state dict.
    """
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return OrderedDict(obj)
