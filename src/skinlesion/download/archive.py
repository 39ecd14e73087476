"""ISIC Archive selections through the official client, ``isic-cli``.

``download_archive(ArchiveQuery(search='diagnosis_1:"Malignant"', collections=(70,),
limit=500), out)`` runs, in a subprocess::

    isic image download --search 'diagnosis_1:"Malignant"' --collections 70 --limit 500 STAGING

(the syntax of isic-cli 12: ``isic image download [--search Q] [--collections 1,2]
[--limit N] OUTDIR``; ``--limit 0`` means every matching image). isic-cli writes the
images, ``metadata.csv``, ``attribution.txt`` and ``licenses/`` into the staging folder
``.OUT.isic-partial`` beside ``OUT``; it skips images it already has, so re-running an
interrupted selection resumes it. When it succeeds, a completion marker is written and
the staging folder is renamed to ``OUT`` in one step: ``OUT`` is either absent or a
complete, ``prepare``-ready selection.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from skinlesion import __version__
from skinlesion.download.dataset import MARKER_NAME, read_marker
from skinlesion.download.errors import ArchiveToolError, NetworkUnavailableError
from skinlesion.utils.atomic import atomic_write_json
from skinlesion.utils.hashing import sha256_file

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'skinlesion[archive]'"
API_URL = "https://api.isic-archive.com/api/v2/"
"""isic-cli's API base URL (isic_cli/session.py); probed before starting isic-cli."""
GALLERY_URL = "https://gallery.isic-archive.com"
ARCHIVE_PREPARE_FORMAT = "archive"
_QUERY_NAME = ".skinlesion-query.json"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class ArchiveQuery:
    """A selection of the ISIC Archive.

    Attributes:
        search: isic-cli search string, e.g. ``'diagnosis_1:"Malignant"'`` (empty: all).
        collections: Collection ids (``isic collection list``); empty: all.
        limit: At most this many images; 0 for every matching image. Default 0.
    """

    search: str = ""
    collections: tuple[int, ...] = ()
    limit: int = 0

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"limit must be 0 (all) or positive, not {self.limit}")
        if any(c <= 0 for c in self.collections):
            raise ValueError(f"collection ids are positive integers, not {self.collections}")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (stored in the completion marker)."""
        return {"search": self.search, "collections": list(self.collections),
                "limit": self.limit}


def parse_collections(text: str | None) -> tuple[int, ...]:
    """``"70,65"`` -> ``(70, 65)``.

    Raises:
        ValueError: for anything but comma-separated positive integers.
    """
    if not text or not text.strip():
        return ()
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        ids = ()
    if not ids or any(i <= 0 for i in ids):
        raise ValueError(f"--collections must be comma-separated collection ids such as "
                         f"'70' or '70,65', not {text!r}")
    return ids


def _default_search_path() -> str:
    # PATH first; then the running interpreter's bin folder, where `pip install
    # 'skinlesion[archive]'` puts `isic` even if the venv is not activated.
    return os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])


def find_isic_cli(search_path: str | None = None) -> str:
    """Path of the ``isic`` executable.

    Raises:
        ArchiveToolError: isic-cli is not installed (says how to install it).
    """
    exe = shutil.which("isic", path=search_path if search_path is not None
                       else _default_search_path())
    if exe is None:
        raise ArchiveToolError(
            f"isic-cli is not installed (no `isic` command found). Install it with: "
            f"{INSTALL_HINT}"
        )
    return exe


def build_argv(executable: str, query: ArchiveQuery, outdir: str | os.PathLike[str]) -> list[str]:
    """The isic-cli command line for ``query`` writing into ``outdir``."""
    argv = [executable, "image", "download"]
    if query.search:
        argv += ["--search", query.search]
    if query.collections:
        argv += ["--collections", ",".join(str(c) for c in query.collections)]
    argv += ["--limit", str(query.limit), os.fspath(outdir)]
    return argv


@dataclass(frozen=True)
class ArchiveResult:
    """What ``download_archive`` did."""

    root: Path
    already_complete: bool
    marker: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (for ``--json``)."""
        return {"dataset": "archive", "path": str(self.root),
                "already_complete": self.already_complete,
                "prepare_format": ARCHIVE_PREPARE_FORMAT,
                **{k: self.marker.get(k) for k in ("query", "images", "licences")}}


def check_reachable(url: str, timeout: float = 10.0) -> None:
    """Fail fast when ``url``'s server cannot be reached.

    Offline, isic-cli keeps retrying for minutes before it gives up; one short probe
    turns that into the same clear message as the dataset downloads. Any HTTP answer,
    even an error status, means the network is there.

    Raises:
        NetworkUnavailableError: DNS failure, refused connection or timeout.
    """

    try:
        with httpx.Client(timeout=timeout) as client:
            client.get(url)
    except (httpx.ConnectError, httpx.TimeoutException) as exc:
        raise NetworkUnavailableError([GALLERY_URL], reason=f"{url}: {exc}") from exc


def _isic_version(executable: str) -> str | None:
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[-1] if text else None


def _read_metadata(path: Path) -> tuple[int, list[str]]:
    """Rows and distinct licences of isic-cli's metadata.csv."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "isic_id" not in reader.fieldnames:
            raise ArchiveToolError(f"{path}: not an isic-cli metadata.csv (no isic_id column)")
        rows = list(reader)
    licences = sorted({r.get("copyright_license") or "" for r in rows} - {""})
    return len(rows), licences


def _prepare_staging(staging: Path, query: ArchiveQuery) -> None:
    saved = None
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads((staging / _QUERY_NAME).read_text(encoding="utf-8"))
    if staging.exists() and saved != query.to_json():
        # Images of another selection must not end up in this one.
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_json(staging / _QUERY_NAME, query.to_json())


def download_archive(
    query: ArchiveQuery,
    out: str | os.PathLike[str],
    *,
    executable: str | None = None,
    stdout: int | IO[Any] | None = None,
    force: bool = False,
    probe: bool = True,
) -> ArchiveResult:
    """Download an ISIC Archive selection with isic-cli into ``out``.

    Args:
        query: What to download.
        out: Final folder (must be new or empty, or hold this same selection).
        executable: Path of ``isic``; found on PATH by default.
        stdout: Where isic-cli's standard output goes (the CLI sends it to stderr so
            that ``--json`` output stays clean); inherited by default.
        force: Download again even if ``out`` already holds this selection.
        probe: Check that ``API_URL`` is reachable before isic-cli starts. Default True.

    Returns:
        The result with the completion marker.

    Raises:
        ArchiveToolError: isic-cli missing or failing, or ``out`` holding something else.
        NetworkUnavailableError: the ISIC Archive API cannot be reached.
    """
    out = Path(out)
    marker = read_marker(out)
    if marker is not None and not force:
        if marker.get("query") == query.to_json():
            return ArchiveResult(out, True, marker)
        raise ArchiveToolError(f"{out} already holds another ISIC Archive selection "
                               f"({marker.get('query')}); choose another --out")
    if out.exists() and (not out.is_dir() or (marker is None and any(out.iterdir()))):
        raise ArchiveToolError(f"{out} exists and is not an empty folder; choose a new --out")
    exe = executable or find_isic_cli()
    if probe:
        check_reachable(API_URL)
    staging = out.parent / f".{out.name}.isic-partial"
    _prepare_staging(staging, query)
    argv = build_argv(exe, query, staging)
    logger.info("running %s", shlex.join(argv))
    try:
        returncode = subprocess.run(argv, stdout=stdout, check=False).returncode
    except OSError as exc:
        raise ArchiveToolError(f"could not run isic-cli ({exe}): {exc}") from exc
    if returncode != 0:
        raise ArchiveToolError(
            f"isic-cli failed (exit status {returncode}) running: {shlex.join(argv)}\n"
            f"Images already downloaded are kept in {staging}; run the same command again "
            f"to resume. Without network, select and download images by hand at "
            f"{GALLERY_URL} and run `skinlesion prepare` on them."
        )
    metadata = staging / "metadata.csv"
    if not metadata.is_file():
        raise ArchiveToolError(f"isic-cli finished but wrote no {metadata}")
    rows, licences = _read_metadata(metadata)
    images = sum(1 for p in staging.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if images != rows:
        logger.warning("%s lists %d images but %d image files are present", metadata, rows,
                       images)
    marker = {
        "dataset": "archive", "query": query.to_json(),
        "command": ["isic", *argv[1:-1], "OUTDIR"], "isic_cli_version": _isic_version(exe),
        "images": images, "metadata_rows": rows, "metadata_sha256": sha256_file(metadata),
        "licences": licences, "prepare_format": ARCHIVE_PREPARE_FORMAT,
        "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "skinlesion_version": __version__, "files": [],
    }
    (staging / _QUERY_NAME).unlink(missing_ok=True)
    atomic_write_json(staging / MARKER_NAME, marker)
    _replace_dir(staging, out)
    return ArchiveResult(out, False, marker)


def _replace_dir(src: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    os.rename(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
