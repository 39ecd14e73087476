"""Atomic file writes: nothing half-written is ever observable.

Every file of the run-directory contract, the manifest and the reports are
written to a temporary file in the same folder and then renamed over the
target. ``os.replace`` is atomic on POSIX and Windows when source and target
share a file system, so a reader sees either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    Args:
        target: Final path of the file.
        suffix: Suffix of the temporary file (defaults to the target's suffix, which
            matters to writers that pick a format from the name, e.g. ``model.keras``).

    Yields:
        A path to write to. On an exception it is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix or ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    # mkstemp creates 0600; give the file the mode a plain open() would (umask applies).
    os.chmod(tmp, 0o666 & ~_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (NaN and Inf refused) to ``target`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False, default=_json_default)
    return atomic_write_text(target, text + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths: the common non-JSON types in results.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
