"""Download a registered dataset: fetch, verify, extract, mark complete.

``download_dataset("isic2020", out)`` fills ``out/isic2020/``::

    out/isic2020/
        .skinlesion-complete.json          written last: the dataset is complete
        ISIC_2020_Training_JPEG.zip        verified download (kept unless delete_archives)
        ISIC_2020_Training_JPEG/           extracted atomically
        ISIC_2020_Training_GroundTruth_v2.csv
        ...

While it runs, ``*.part`` files hold partial downloads and ``.skinlesion-download.json``
the receipts (size, SHA-256) of files already verified, so an interrupted run resumes
where it stopped. The completion marker lists every file with its size and hashes; when
it exists a new run returns at once without any network request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from skinlesion import __version__
from skinlesion.download.catalog import default_registry
from skinlesion.download.dataverse import resolve_dataverse
from skinlesion.download.errors import (
    CorruptArchiveError,
    DownloadError,
    InsufficientSpaceError,
    NetworkUnavailableError,
)
from skinlesion.download.extract import extract_zip, read_stamp, remove_stale_extractions
from skinlesion.download.registry import (
    DatasetRegistry,
    DatasetSpec,
    RemoteFile,
    format_size,
)
from skinlesion.download.transfer import (
    PART_SUFFIX,
    FetchedFile,
    RetryPolicy,
    fetch_file,
    make_client,
)
from skinlesion.utils.atomic import atomic_write_json
from skinlesion.utils.hashing import sha256_file
from skinlesion.utils.progress import Progress

logger = logging.getLogger(__name__)

MARKER_NAME = ".skinlesion-complete.json"
STATE_NAME = ".skinlesion-download.json"
LOCK_NAME = ".skinlesion-download.lock"


@dataclass(frozen=True)
class DownloadResult:
    """What ``download_dataset`` did.

    Attributes:
        spec: The dataset.
        root: ``OUT/NAME``.
        already_complete: True if a completion marker was found and nothing was done.
        marker: The completion marker's content (files with sizes and hashes).
    """

    spec: DatasetSpec
    root: Path
    already_complete: bool
    marker: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (for ``--json``)."""
        return {"dataset": self.spec.name, "path": str(self.root),
                "already_complete": self.already_complete,
                "prepare_format": self.spec.prepare_format, "licence": self.spec.licence,
                "files": self.marker.get("files", [])}


def read_marker(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The completion marker of ``root`` if it exists and is well-formed, else ``None``."""
    path = Path(root) / MARKER_NAME
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s); downloading again", path, exc)
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), list):
        logger.warning("%s is not a completion marker; downloading again", path)
        return None
    return marker


def required_space(root: Path, files: tuple[RemoteFile, ...]) -> tuple[int, int, list[str]]:
    """Bytes still to download, bytes to extract, and files of unknown size.

    Extraction is estimated at the archive's size: the archives hold JPEGs, which
    zip barely compresses. ``extract_zip`` checks the exact figure before it starts.
    """
    download = extract = 0
    unknown = []
    for f in files:
        size = f.best_size
        if size is None:
            unknown.append(f.name)
            continue
        if not (root / f.name).is_file():
            part = root / f"{f.name}{PART_SUFFIX}"
            download += max(size - (part.stat().st_size if part.is_file() else 0), 0)
        if f.extract_to and read_stamp(root / f.extract_to) is None:
            extract += size
    return download, extract, unknown


def check_disk_space(root: Path, files: tuple[RemoteFile, ...]) -> None:
    """Fail before the first byte if the download and its extraction cannot fit.

    Raises:
        InsufficientSpaceError: with the figures and what to do.
    """
    download, extract, unknown = required_space(root, files)
    free = shutil.disk_usage(root).free
    if unknown:
        logger.warning("sizes of %s are not published; the disk-space check leaves them out",
                       ", ".join(unknown))
    if download + extract > free:
        raise InsufficientSpaceError(
            f"not enough disk space in {root}: about {format_size(download + extract)} needed "
            f"({format_size(download)} to download, {format_size(extract)} to extract) but "
            f"{format_size(free)} free. Free some space or choose another --out."
        )


def _load_state(root: Path) -> dict[str, dict[str, Any]]:
    try:
        state = json.loads((root / STATE_NAME).read_text(encoding="utf-8"))
        files = state.get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _reuse_verified(f: RemoteFile, root: Path, receipts: dict[str, dict[str, Any]]) -> FetchedFile | None:
    """A file already under its final name from an earlier, interrupted run."""
    final = root / f.name
    if not final.is_file():
        return None
    size = final.stat().st_size
    receipt = receipts.get(f.name)
    if receipt and receipt.get("size") == size and receipt.get("sha256"):
        return FetchedFile(f.name, final, str(receipt.get("url", f.urls[0])), size,
                           str(receipt["sha256"]), receipt.get("md5"))
    # Final names are only given after verification, so this is a finished file whose
    # receipt was not saved (killed in between): hash it again, check what we can.
    sha256 = sha256_file(final)
    if (f.size is not None and size != f.size) or (f.sha256 is not None and sha256 != f.sha256):
        logger.warning("%s does not match the expected size/checksum; downloading it again",
                       final)
        final.unlink()
        return None
    return FetchedFile(f.name, final, f.urls[0], size, sha256, None)


def download_dataset(
    name: str,
    out: str | os.PathLike[str],
    *,
    registry: DatasetRegistry | None = None,
    client: httpx.Client | None = None,
    retry: RetryPolicy | None = None,
    progress: Progress | None = None,
    force: bool = False,
    delete_archives: bool = False,
    verify_etag: bool = True,
    sleep: Callable[[float], None] | None = None,
) -> DownloadResult:
    """Download, verify and extract dataset ``name`` into ``out/name``.

    Args:
        name: Registry name (see ``default_registry().names()``).
        out: Parent folder; the dataset goes to ``out/<name>/``.
        registry: Where to look ``name`` up; defaults to the built-in registry.
        client: HTTP client; one from ``make_client()`` by default.
        retry: Retry policy for each file; ``RetryPolicy()`` by default.
        progress: Gets byte counts for every transfer and extraction.
        force: Ignore an existing completion marker (files already verified are kept).
        delete_archives: Delete zips once extracted and the marker is written.
        verify_etag: Check S3 MD5 ETags. Default True.
        sleep: Waits between retries; ``time.sleep`` by default (tests pass a no-op).

    Returns:
        The result, with the completion marker's content.

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        NetworkUnavailableError: offline; the message lists the URLs to fetch by hand.
        InsufficientSpaceError: not enough free disk space.
        VerificationError: a file does not match its expected size or checksum.
        ExtractionError: a zip is corrupt or unsafe.
        DownloadError: anything else that stops the download.
    """
    spec = (registry or default_registry()).get(name)
    root = Path(out) / spec.name
    marker = read_marker(root)
    if marker is not None and not force:
        logger.info("%s is already complete in %s", spec.name, root)
        return DownloadResult(spec, root, True, marker)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root):
        marker = read_marker(root)  # another run may have finished while we waited
        if marker is not None and not force:
            return DownloadResult(spec, root, True, marker)
        return _download(spec, root, client=client, retry=retry, progress=progress,
                         delete_archives=delete_archives, verify_etag=verify_etag,
                         sleep=sleep)


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root``: two runs appending to one ``.part`` would
    corrupt it. Advisory (``flock``); where it is unavailable, no lock is taken."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(root / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DownloadError(f"another `skinlesion download` is writing into {root}; "
                                "wait for it to finish") from exc
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _download(spec: DatasetSpec, root: Path, *, client: httpx.Client | None,
              retry: RetryPolicy | None, progress: Progress | None, delete_archives: bool,
              verify_etag: bool, sleep: Callable[[float], None] | None) -> DownloadResult:
    """The steps of ``download_dataset`` once ``root`` is locked."""
    remove_stale_extractions(root)

    http = client or make_client()
    try:
        files = spec.files
        if spec.dataverse is not None:
            files += resolve_dataverse(spec.dataverse, http, retry=retry, sleep=sleep)
        check_disk_space(root, files)
        receipts = _load_state(root)
        fetched = []
        for f in files:
            got = _reuse_verified(f, root, receipts)
            if got is None:
                got = fetch_file(f, root, http, retry=retry, progress=progress,
                                 verify_etag=verify_etag, sleep=sleep)
            receipts[f.name] = got.to_json()
            atomic_write_json(root / STATE_NAME, {"dataset": spec.name, "files": receipts})
            fetched.append(got)
    except NetworkUnavailableError as exc:
        raise NetworkUnavailableError(spec.manual_urls(), reason=exc.reason) from exc
    finally:
        if client is None:
            http.close()

    records = []
    for f, got in zip(files, fetched, strict=True):
        record = got.to_json()
        if f.extract_to:
            try:
                extract_zip(got.path, root / f.extract_to, archive_sha256=got.sha256,
                            progress=progress)
            except CorruptArchiveError as exc:
                if f.sha256 or f.md5:
                    raise  # it matches the published checksum: the source itself is bad
                # Unverifiable download that is not a zip: fetch it anew next time.
                got.path.unlink(missing_ok=True)
                receipts.pop(f.name, None)
                atomic_write_json(root / STATE_NAME, {"dataset": spec.name, "files": receipts})
                raise CorruptArchiveError(f"{exc}. The file was deleted; run the command "
                                          "again to download it anew.") from exc
            record["extracted_to"] = f.extract_to
        records.append(record)

    marker = {
        "dataset": spec.name, "title": spec.title, "licence": spec.licence,
        "licence_url": spec.licence_url, "citation": spec.citation,
        "source_page": spec.source_page, "prepare_format": spec.prepare_format,
        "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "skinlesion_version": __version__, "archives_deleted": False, "files": records,
    }
    atomic_write_json(root / MARKER_NAME, marker)
    (root / STATE_NAME).unlink(missing_ok=True)
    if delete_archives:
        _delete_archives(root, marker)
    logger.info("%s complete in %s", spec.name, root)
    return DownloadResult(spec, root, False, marker)


def _delete_archives(root: Path, marker: dict[str, Any]) -> None:
    for record in marker["files"]:
        if record.get("extracted_to"):
            (root / record["name"]).unlink(missing_ok=True)
    marker["archives_deleted"] = True
    atomic_write_json(root / MARKER_NAME, marker)

