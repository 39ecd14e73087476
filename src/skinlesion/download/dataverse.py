"""Resolve files of a Dataverse dataset (HAM10000) into downloadable ``RemoteFile``s.

Dataverse files have no stable direct URL. The native API lists a dataset version's
files with their numeric ids, sizes and checksums::

    GET {server}/api/datasets/:persistentId/versions/{version}/files?persistentId={doi}

and the access API serves one file (redirecting to storage)::

    GET {server}/api/access/datafile/{id}[?format=original]

See https://guides.dataverse.org/en/latest/api/native-api.html ("List Files in a
Dataset") and .../api/dataaccess.html. For an ingested tabular file the recorded
checksum is that of the originally uploaded file (IQSS/dataverse#7275), which is what
``?format=original`` returns; its size is then ``originalFileSize``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import httpx

from skinlesion.download.errors import DownloadError, NetworkUnavailableError
from skinlesion.download.registry import DataverseFile, DataverseSource, RemoteFile
from skinlesion.download.transfer import RetryPolicy, get_json

logger = logging.getLogger(__name__)


def files_url(source: DataverseSource) -> str:
    """The API URL listing the files of ``source``'s dataset version."""
    return (f"{source.server.rstrip('/')}/api/datasets/:persistentId/versions/"
            f"{source.version}/files?persistentId={source.persistent_id}")


def _stem(name: str) -> str:
    return PurePosixPath(name).stem if "." in name else name


def _entry_for(wanted: DataverseFile, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    for entry in entries:
        data = entry.get("dataFile") or {}
        names = {entry.get("label"), data.get("filename"), data.get("originalFileName")}
        if wanted.label in {_stem(n) for n in names if isinstance(n, str)}:
            return entry
    return None


def _checksums(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(sha256, md5) from a ``dataFile`` record (Dataverse may use MD5, SHA-1, SHA-256...)."""
    checksum = data.get("checksum") or {}
    kind = str(checksum.get("type", "")).upper().replace("-", "")
    value = str(checksum.get("value", "")).lower() or None
    md5 = data.get("md5") or (value if kind == "MD5" else None)
    sha256 = value if kind == "SHA256" else None
    return sha256, (str(md5).lower() if md5 else None)


def resolve_dataverse(
    source: DataverseSource,
    client: httpx.Client,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tuple[RemoteFile, ...]:
    """Look the wanted files up in the Dataverse API and return them as ``RemoteFile``s.

    Raises:
        NetworkUnavailableError: the Dataverse server cannot be reached (the message
            points at the dataset page).
        DownloadError: the API answer is not understood or a wanted file is missing.
    """
    url = files_url(source)
    try:
        payload = get_json(url, client, retry=retry, sleep=sleep)
    except NetworkUnavailableError as exc:
        raise NetworkUnavailableError([source.landing_page], reason=exc.reason) from exc
    entries = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise DownloadError(f"{url}: unexpected answer (no 'data' list of files)")
    resolved = []
    for wanted in source.files:
        entry = _entry_for(wanted, entries)
        if entry is None:
            labels = sorted(str(e.get("label")) for e in entries)
            raise DownloadError(f"{source.landing_page}: no file {wanted.label!r} in the "
                                f"dataset (it lists {labels})")
        data = entry["dataFile"]
        tabular = bool(data.get("originalFileFormat"))
        original = wanted.original and tabular
        size = data.get("originalFileSize") if original else data.get("filesize")
        sha256, md5 = _checksums(data)
        if tabular and not original:
            # The stored checksum is the uploaded original's, not the .tab conversion's.
            sha256 = md5 = None
        query = "?format=original" if original else ""
        resolved.append(RemoteFile(
            name=wanted.name,
            urls=(f"{source.server.rstrip('/')}/api/access/datafile/{data['id']}{query}",),
            approx_size=int(size) if size is not None else None,
            size=int(size) if size is not None else None,
            sha256=sha256, md5=md5,
            extract_to=wanted.extract_to, description=wanted.description,
        ))
        logger.debug("dataverse %s -> %s (%s bytes, md5 %s)", wanted.label, resolved[-1].urls[0],
                     size, md5)
    return tuple(resolved)
