"""Safe, atomic zip extraction.

``extract_zip(archive, dest)`` never leaves a complete-looking ``dest``:

1. every member name is checked first (zip-slip): absolute paths, drive letters,
   ``..`` components and symbolic links are rejected before anything is written;
2. members are written into a hidden temporary folder beside ``dest``
   (``.DEST.extracting-XXXX``), together with a stamp file naming the archive's SHA-256;
3. only then is the temporary folder renamed to ``dest`` (one ``rename``, atomic on one
   file system). An interrupted extraction leaves at most a hidden temporary folder,
   which ``remove_stale_extractions`` deletes on the next run.

If every member sits under one top-level folder (``train/melanoma/...`` in ``train.zip``)
that folder level is dropped, so ``dest`` holds its content rather than ``dest/train/``.
macOS metadata (``__MACOSX/``, ``.DS_Store``) is skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from skinlesion.download.errors import (
    CorruptArchiveError,
    ExtractionError,
    InsufficientSpaceError,
)
from skinlesion.download.transfer import CHUNK_SIZE
from skinlesion.utils.progress import Progress, Tally

logger = logging.getLogger(__name__)

STAMP_NAME = ".skinlesion-extracted.json"
_TMP_MARK = ".extracting-"
_DRIVE = re.compile(r"^[A-Za-z]:")
_JUNK_DIRS = {"__MACOSX"}
_JUNK_FILES = {".DS_Store", "Thumbs.db"}
MAX_TOTAL_BYTES = 256 * 2**30
"""Largest total uncompressed size extracted (ISIC 2020 with its test set is ~50 GB)."""
MAX_RATIO = 100.0
"""Largest compression ratio of a member over 1 MiB."""


def _member_parts(archive: Path, info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """Validated path components of a member; ``None`` for junk to skip.

    Raises:
        ExtractionError: for a member that would land outside the target folder.
    """
    name = info.filename.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or _DRIVE.match(name):
        raise ExtractionError(f"{archive}: unsafe member {info.filename!r} (absolute path); "
                              "refusing to extract")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise ExtractionError(f"{archive}: unsafe member {info.filename!r} (escapes the target "
                              "folder with '..'); refusing to extract")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ExtractionError(f"{archive}: unsafe member {info.filename!r} (symbolic link); "
                              "refusing to extract")
    if not parts or parts[0] in _JUNK_DIRS or parts[-1] in _JUNK_FILES:
        return None
    return parts


def plan_members(archive: Path, zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Members to extract with their relative target paths (top folder stripped if single).

    Raises:
        ExtractionError: on an unsafe member name.
    """
    members = []
    for info in zf.infolist():
        parts = _member_parts(archive, info)
        if parts is not None:
            members.append((info, parts))
    tops = {parts[0] for _, parts in members}
    single_dir = len(tops) == 1 and all(len(p) > 1 or i.is_dir() for i, p in members)
    if single_dir:
        members = [(i, p[1:]) for i, p in members if len(p) > 1]
    return members


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_stamp(dest: Path) -> dict[str, object] | None:
    """The stamp of a finished extraction in ``dest``, or ``None``."""
    try:
        stamp = json.loads((dest / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def remove_stale_extractions(folder: Path) -> list[Path]:
    """Delete temporary folders left by an extraction that was killed; return them."""
    removed = []
    for tmp in folder.glob(f".*{_TMP_MARK}*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            logger.info("removed the unfinished extraction %s", tmp)
    return removed


def extract_zip(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    archive_sha256: str | None = None,
    progress: Progress | None = None,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
) -> Path:
    """Extract ``archive`` into ``dest`` atomically (see the module docstring).

    Args:
        archive: The zip file.
        dest: Final folder; must not be inside the archive's own members' reach.
        archive_sha256: Recorded in the stamp; an existing ``dest`` whose stamp has the
            same hash is kept as it is (nothing to do).
        progress: Gets byte counts (task ``"extract <archive>"``) as members are written.
        max_total_bytes: Refuse an archive whose members add up to more than this,
            uncompressed (default :data:`MAX_TOTAL_BYTES`, 256 GiB).
        max_ratio: Refuse a member over 1 MiB that expands more than this many times
            (default :data:`MAX_RATIO`, 100: JPEGs do not compress, CSVs ~5–20×; a zip
            bomb reaches 1,000×). The sizes checked are the archive's declared ones,
            before anything is written; ``zipfile`` never reads a member past its
            declared size.

    Returns:
        ``dest``.

    Raises:
        CorruptArchiveError: the archive is not a readable zip (nothing is left behind).
        ExtractionError: an unsafe member (nothing is written at all).
        InsufficientSpaceError: the uncompressed content does not fit on the disk.
    """
    archive, dest = Path(archive), Path(dest)
    stamp = read_stamp(dest)
    if stamp is not None and archive_sha256 is not None and stamp.get("sha256") == archive_sha256:
        logger.info("%s is already extracted in %s", archive.name, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = plan_members(archive, zf)
            needed = sum(info.file_size for info, _ in members)
            _check_sizes(archive, members, needed, max_total_bytes, max_ratio)
            free = shutil.disk_usage(dest.parent).free
            if needed > free:
                raise InsufficientSpaceError(
                    f"{archive}: extracting needs {needed / 1e9:.2f} GB but only "
                    f"{free / 1e9:.2f} GB are free in {dest.parent}"
                )
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_TMP_MARK}", dir=dest.parent))
            # mkdtemp makes a private (0700) folder; the data folder should get the
            # permissions any folder made here would get.
            tmp.chmod(0o777 & ~_umask())
            try:
                _write_members(zf, members, tmp, progress, archive.name, needed)
                (tmp / STAMP_NAME).write_text(json.dumps(
                    {"archive": archive.name, "sha256": archive_sha256,
                     "members": len(members)}, indent=2) + "\n", encoding="utf-8")
                _swap_in(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise CorruptArchiveError(f"{archive}: not a valid zip file ({exc})") from exc
    except OSError as exc:
        raise ExtractionError(f"{archive}: extraction into {dest.parent} failed ({exc}); "
                              "nothing was left behind") from exc
    logger.info("extracted %s (%d files) into %s", archive.name, len(members), dest)
    return dest


def _check_sizes(archive: Path, members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
                 needed: int, max_total: int, max_ratio: float) -> None:
    """Refuse a zip bomb from its directory: total uncompressed size and per-member ratio."""
    if needed > max_total:
        raise ExtractionError(f"{archive}: {needed / 2**30:.1f} GiB uncompressed is over the "
                              f"limit of {max_total / 2**30:.1f} GiB (max_total_bytes); nothing "
                              "was extracted")
    for info, _ in members:
        if info.file_size > 2**20 and info.file_size > max_ratio * max(1, info.compress_size):
            raise ExtractionError(
                f"{archive}: member {info.filename!r} expands {info.file_size:,} bytes from "
                f"{info.compress_size:,} (compression ratio {info.file_size / max(1, info.compress_size):.0f}:1, "
                f"limit {max_ratio:g}:1): a zip bomb? Nothing was extracted")


def _write_members(zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
                   tmp: Path, progress: Progress | None, label: str, total: int) -> None:
    root = tmp.resolve()
    tally = Tally(progress, f"extract {label}", total, unit="bytes")
    try:
        for info, parts in members:
            target = root.joinpath(*parts)
            # Second guard after the name checks: the resolved path must stay inside.
            if not target.resolve().is_relative_to(root):
                raise ExtractionError(f"unsafe member {info.filename!r} escapes {root}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                while block := src.read(CHUNK_SIZE):
                    dst.write(block)
                    tally.add(len(block))
    finally:
        tally.close()


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an older ``dest`` is moved aside first, then deleted."""
    old = None
    if dest.exists():
        # A folder from another version of the archive (stamp mismatch) or a
        # hand-made one: replace it, but only once the new content is complete. Its
        # temporary name matches remove_stale_extractions' pattern should we die here.
        old = dest.with_name(f".{dest.name}{_TMP_MARK}old-{os.getpid()}")
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
