"""Robust HTTP download of one file: resume, bounded retries with back-off, verification.

``fetch_file`` downloads ``RemoteFile`` into ``DEST/NAME``:

* bytes go to ``NAME.part``; a sidecar ``NAME.part.json`` remembers the URL and the
  server's validator (ETag or Last-Modified). A later attempt, in this process or the
  next run, sends ``Range: bytes=<size of .part>-`` and ``If-Range: <validator>``, so a
  file that changed on the server is fetched again from the start instead of being
  spliced;
* connection drops, timeouts, HTTP 429 and 5xx are retried with exponential back-off
  (``RetryPolicy``); 403/404/410 move on to the next mirror;
* the SHA-256 (and MD5 where one is expected) is computed while streaming; the finished
  file is checked against the exact size, published checksums and, on S3, the MD5
  ETag. Only then is ``NAME.part`` renamed to ``NAME``: a file under its final name is
  always complete and verified. A file that fails verification is deleted.

When no server can be reached at all, ``NetworkUnavailableError`` says so and lists the
URLs to fetch by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from skinlesion import __version__
from skinlesion.download.errors import DownloadError, NetworkUnavailableError, VerificationError
from skinlesion.download.registry import RemoteFile
from skinlesion.utils.atomic import atomic_write_json
from skinlesion.utils.progress import Progress, Tally

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
PART_SUFFIX = ".part"
META_SUFFIX = ".part.json"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
# Failures before any byte was exchanged: what "offline" looks like.
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        attempts: Tries per URL for failures after a connection was made (drops, 5xx).
            Default 6.
        connect_attempts: Tries per URL when the server cannot be reached at all (DNS,
            refused): retrying an absent network for long helps nobody. Default 3.
        backoff: First wait in seconds; doubles each retry. Default 1.0.
        max_backoff: Longest wait in seconds. Default 60.
    """

    attempts: int = 6
    connect_attempts: int = 3
    backoff: float = 1.0
    max_backoff: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        return min(self.max_backoff, self.backoff * 2 ** max(failures - 1, 0))


@dataclass(frozen=True)
class FetchedFile:
    """A downloaded, verified file."""

    name: str
    path: Path
    url: str
    size: int
    sha256: str
    md5: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record (for the completion marker)."""
        out: dict[str, Any] = {"name": self.name, "url": self.url, "size": self.size,
                               "sha256": self.sha256}
        if self.md5 is not None:
            out["md5"] = self.md5
        return out


def make_client(timeout: float = 60.0) -> httpx.Client:
    """An ``httpx.Client`` set up for large downloads.

    Redirects are followed (Dataverse answers with a redirect to signed S3 URLs);
    ``Accept-Encoding: identity`` keeps byte offsets meaningful for range requests.
    """
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout, connect=15.0),
        headers={"User-Agent": f"skinlesion/{__version__}", "Accept-Encoding": "identity"},
    )


class _Digest:
    """Running checksums of a ``.part`` file; carried across attempts in one process."""

    def __init__(self, with_md5: bool) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if with_md5 else None
        self.count = 0

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.count += len(data)

    @classmethod
    def of_file(cls, path: Path, length: int, with_md5: bool) -> _Digest:
        """Digest of the first ``length`` bytes of ``path`` (the part being resumed)."""
        digest = cls(with_md5)
        if length:
            with open(path, "rb") as fh:
                while digest.count < length:
                    block = fh.read(min(CHUNK_SIZE, length - digest.count))
                    if not block:
                        break
                    digest.update(block)
        return digest


class _Retryable(Exception):
    """A failure worth retrying on the same URL (5xx, 429, short body)."""


class _Refused(Exception):
    """The URL will not serve this file (4xx): try the next mirror."""


class _Restart(Exception):
    """The partial file cannot be resumed; it was discarded: try again at once."""


@dataclass
class _Outcome:
    digest: _Digest
    etag: str | None


def _discard(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _resume_offset(part: Path, meta_path: Path, url: str) -> tuple[int, str | None]:
    """Bytes already on disk for ``url`` and the validator to send with ``If-Range``."""
    if not part.is_file():
        return 0, None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    # Without the sidecar we cannot tell what the bytes are; a part from another mirror
    # may be another encoding of the file. Both restart from zero.
    if not isinstance(meta, dict) or meta.get("url") != url:
        _discard(part)
        return 0, None
    return part.stat().st_size, meta.get("validator")


def _validator(response: httpx.Response) -> str | None:
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return etag
    return response.headers.get("Last-Modified")


def _attempt(url: str, remote: RemoteFile, part: Path, meta_path: Path,
             client: httpx.Client, progress: Progress | None, digest: _Digest | None,
             with_md5: bool) -> _Outcome:
    offset, validator = _resume_offset(part, meta_path, url)
    headers: dict[str, str] = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:
            unsatisfied = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
            if unsatisfied and int(unsatisfied.group(1)) == offset:
                # The previous run got every byte but stopped before the rename.
                return _Outcome(_reuse(digest, part, offset, with_md5), _etag(response, meta_path))
            _discard(part, meta_path)
            raise _Restart(f"{url}: the server refused to resume at byte {offset}")
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status not in (200, 206):
            raise _Refused(f"HTTP {status}")
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                _discard(part, meta_path)
                raise _Restart(f"{url}: unexpected Content-Range "
                               f"{response.headers.get('Content-Range')!r}")
            total = None if match.group(3) == "*" else int(match.group(3))
            if validator and _validator(response) not in (None, validator):
                # A server that ignores If-Range sends the range of a changed file; its
                # bytes must not be appended to the old ones.
                _discard(part, meta_path)
                raise _Restart(f"{url}: the file changed on the server since the partial "
                               "download; starting again")
        else:
            # A full body: the server ignores ranges, or the file changed (If-Range).
            if offset:
                logger.info("%s: server sent the whole file; restarting from byte 0", remote.name)
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if remote.size is not None and total is not None and total != remote.size:
            raise VerificationError(
                f"{remote.name}: {url} serves {total} bytes but {remote.size} are expected; "
                "the file on the server is not the published one"
            )
        atomic_write_json(meta_path, {"url": url, "validator": _validator(response),
                                      "total": total})
        digest = _reuse(digest, part, offset, with_md5)
        tally = Tally(progress, remote.name, total, unit="bytes", done=offset)
        try:
            with open(part, "ab" if offset else "wb", buffering=CHUNK_SIZE) as fh:
                # No chunk_size: httpx would hold bytes back to fill a chunk and lose
                # them when the connection drops; we keep every byte that arrived.
                for chunk in response.iter_raw():
                    fh.write(chunk)
                    digest.update(chunk)
                    tally.add(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            tally.close()
        if total is not None and digest.count != total:
            raise _Retryable(f"connection closed after {digest.count} of {total} bytes")
        return _Outcome(digest, response.headers.get("ETag"))


def _reuse(digest: _Digest | None, part: Path, offset: int, with_md5: bool) -> _Digest:
    # Rehashing a 20 GB part after every dropped connection would cost minutes; the
    # running digest is valid as long as it covers exactly the bytes on disk.
    on_disk = part.stat().st_size if part.is_file() else 0
    if digest is not None and digest.count == offset == on_disk:
        return digest
    return _Digest.of_file(part, offset, with_md5)


def _etag(response: httpx.Response, meta_path: Path) -> str | None:
    etag = response.headers.get("ETag")
    if etag:
        return etag
    with contextlib.suppress(OSError, ValueError):
        validator = json.loads(meta_path.read_text(encoding="utf-8")).get("validator")
        if isinstance(validator, str) and validator.startswith('"'):
            return validator
    return None


def _verify(remote: RemoteFile, url: str, part: Path, outcome: _Outcome,
            verify_etag: bool) -> tuple[int, str, str | None]:
    size = part.stat().st_size
    sha256 = outcome.digest.sha256.hexdigest()
    md5 = outcome.digest.md5.hexdigest() if outcome.digest.md5 is not None else None
    problems = []
    if remote.size is not None and size != remote.size:
        problems.append(f"size {size} bytes, expected {remote.size}")
    if remote.sha256 is not None and sha256 != remote.sha256:
        problems.append(f"SHA-256 {sha256}, expected {remote.sha256}")
    if remote.md5 is not None and md5 != remote.md5:
        problems.append(f"MD5 {md5}, expected {remote.md5}")
    if remote.etag_md5 and verify_etag and outcome.etag:
        etag = outcome.etag.strip('"').lower()
        # S3: a single-part upload's ETag is the body's MD5; multipart ones end in -N.
        if not outcome.etag.startswith("W/") and _MD5_ETAG.match(etag) and md5 != etag:
            problems.append(f"MD5 {md5}, but the server's ETag says {etag}")
    if problems:
        raise VerificationError(
            f"{remote.name}: corrupt download from {url}: {'; '.join(problems)}. "
            "The bad file was deleted; run the command again to fetch it anew."
        )
    return size, sha256, md5


def fetch_file(
    remote: RemoteFile,
    dest_dir: str | os.PathLike[str],
    client: httpx.Client,
    *,
    retry: RetryPolicy | None = None,
    progress: Progress | None = None,
    verify_etag: bool = True,
    sleep: Callable[[float], None] | None = None,
) -> FetchedFile:
    """Download ``remote`` into ``dest_dir``, resuming a previous partial download.

    Args:
        remote: The file (URLs, expected size and checksums).
        dest_dir: Folder to write ``remote.name`` into.
        client: HTTP client (see ``make_client``).
        retry: Retry policy; defaults to ``RetryPolicy()``.
        progress: Gets byte counts, one task per file (its name); None shows nothing.
        verify_etag: Check S3 MD5 ETags where ``remote.etag_md5`` is set. Default True.
        sleep: Waits between retries; ``time.sleep`` by default (tests pass a no-op).

    Returns:
        The verified file, renamed to its final name.

    Raises:
        NetworkUnavailableError: no URL could be reached at all.
        VerificationError: the size or a checksum does not match (the file is deleted).
        DownloadError: retries exhausted or every mirror refused; a partial file is kept
            so that the next run resumes.
    """
    retry = retry or RetryPolicy()
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    state = _Attempts(dest=dest, remote=remote, client=client, retry=retry,
                      progress=progress, sleep=sleep or time.sleep,
                      verify_etag=verify_etag)
    for url in remote.urls:
        fetched = state.from_url(url)
        if fetched is not None:
            return fetched
    if state.unreachable:
        raise NetworkUnavailableError(remote.urls,
                                      reason=state.failures[-1] if state.failures else "")
    kept = f" The partial file {state.part} is kept: run the command again to resume." \
        if state.part.is_file() else ""
    raise DownloadError(f"{remote.name}: download failed.{kept}\n  "
                        + "\n  ".join(state.failures[-4:]))


@dataclass
class _Attempts:
    """The tries of one ``fetch_file``: what failed, whether any server answered."""

    dest: Path
    remote: RemoteFile
    client: httpx.Client
    retry: RetryPolicy
    progress: Progress | None
    sleep: Callable[[float], None]
    verify_etag: bool
    digest: _Digest | None = None
    failures: list[str] = field(default_factory=list)
    unreachable: bool = True

    @property
    def part(self) -> Path:
        return self.dest / f"{self.remote.name}{PART_SUFFIX}"

    @property
    def meta_path(self) -> Path:
        return self.dest / f"{self.remote.name}{META_SUFFIX}"

    def from_url(self, url: str) -> FetchedFile | None:
        """Download from one mirror with retries: the verified file, or None to try the next."""
        remote, part = self.remote, self.part
        with_md5 = bool(remote.md5 is not None or (remote.etag_md5 and self.verify_etag))
        consecutive = tries = 0
        while True:
            tries += 1
            try:
                outcome = _attempt(url, remote, part, self.meta_path, self.client, self.progress,
                                   self.digest, with_md5)
            except OSError as exc:
                # Disk full, permissions, a vanished folder: retrying will not help; the
                # partial file is kept for the next run.
                raise DownloadError(f"{remote.name}: cannot write {part}: {exc}") from exc
            except _Refused as exc:
                self.unreachable = False
                self.failures.append(f"{url}: {exc}")
                logger.warning("%s: %s from %s; trying the next source", remote.name, exc, url)
                return None
            except _Restart as exc:
                self.unreachable = False
                self.digest = None
                logger.info("%s", exc)
                if tries < self.retry.attempts:
                    continue
                self.failures.append(str(exc))
                return None
            except (httpx.TransportError, _Retryable) as exc:
                is_connect = isinstance(exc, _CONNECT_ERRORS)
                self.unreachable = self.unreachable and is_connect
                self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
                limit = self.retry.connect_attempts if is_connect else self.retry.attempts
                consecutive += 1
                if tries >= limit:
                    return None
                wait = self.retry.delay(consecutive)
                logger.warning("%s: %s (%s); retry %d/%d in %.0f s", remote.name,
                               type(exc).__name__, exc, tries, limit - 1, wait)
                self.sleep(wait)
                continue
            return self._finish(url, outcome)

    def _finish(self, url: str, outcome: _Outcome) -> FetchedFile:
        size, sha256, md5 = _verify_or_discard(self.remote, url, self.part, self.meta_path,
                                               outcome, self.verify_etag)
        final = self.dest / self.remote.name
        os.replace(self.part, final)
        _discard(self.meta_path)
        logger.info("%s: %d bytes, sha256 %s", self.remote.name, size, sha256)
        return FetchedFile(self.remote.name, final, url, size, sha256, md5)


def _verify_or_discard(remote: RemoteFile, url: str, part: Path, meta_path: Path,
                       outcome: _Outcome, verify_etag: bool) -> tuple[int, str, str | None]:
    try:
        return _verify(remote, url, part, outcome, verify_etag)
    except VerificationError:
        # A corrupt part must not be resumed nor mistaken for a finished file.
        _discard(part, meta_path)
        raise


def get_json(url: str, client: httpx.Client, *, retry: RetryPolicy | None = None,
             sleep: Callable[[float], None] | None = None) -> Any:
    """GET a small JSON document with the same retry rules as ``fetch_file``.

    Raises:
        NetworkUnavailableError: the server cannot be reached.
        DownloadError: an HTTP error or a body that is not JSON.
    """
    retry = retry or RetryPolicy()
    sleep = sleep or time.sleep
    tries = 0
    while True:
        tries += 1
        try:
            response = client.get(url)
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
        except (httpx.TransportError, _Retryable) as exc:
            is_connect = isinstance(exc, _CONNECT_ERRORS)
            limit = retry.connect_attempts if is_connect else retry.attempts
            if tries >= limit:
                if is_connect:
                    raise NetworkUnavailableError([url], reason=str(exc)) from exc
                raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
            sleep(retry.delay(tries))
            continue
        if response.status_code != 200:
            raise DownloadError(f"{url}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise DownloadError(f"{url}: the answer is not JSON ({exc})") from exc
