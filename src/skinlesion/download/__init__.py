"""Download known datasets and ISIC Archive selections, resumable and verified.

* ``registry.py`` — ``DatasetSpec``/``RemoteFile`` and ``DatasetRegistry``;
  ``catalog.py`` — the built-in datasets with their sources;
* ``transfer.py`` — one file over HTTP: range resume, retries, verification;
* ``dataverse.py`` — resolve Dataverse files (HAM10000) through its API;
* ``extract.py`` — zip-slip-safe extraction into a temporary folder, then a rename;
* ``dataset.py`` — ``download_dataset``: the steps above plus the completion marker;
* ``archive.py`` — ISIC Archive selections through ``isic-cli``.

Nothing here prints; progress goes to a ``skinlesion.utils.progress.Progress`` callback.
"""

from __future__ import annotations

from skinlesion.download.archive import ArchiveQuery, download_archive
from skinlesion.download.catalog import default_registry
from skinlesion.download.dataset import MARKER_NAME, DownloadResult, download_dataset, read_marker
from skinlesion.download.errors import (
    ArchiveToolError,
    CorruptArchiveError,
    DownloadError,
    ExtractionError,
    InsufficientSpaceError,
    NetworkUnavailableError,
    VerificationError,
)
from skinlesion.download.registry import (
    DatasetRegistry,
    DatasetSpec,
    DataverseFile,
    DataverseSource,
    RemoteFile,
    UnknownDatasetError,
)
from skinlesion.download.transfer import RetryPolicy

__all__ = [
    "MARKER_NAME",
    "ArchiveQuery",
    "ArchiveToolError",
    "CorruptArchiveError",
    "DatasetRegistry",
    "DatasetSpec",
    "DataverseFile",
    "DataverseSource",
    "DownloadError",
    "DownloadResult",
    "ExtractionError",
    "InsufficientSpaceError",
    "NetworkUnavailableError",
    "RemoteFile",
    "RetryPolicy",
    "UnknownDatasetError",
    "VerificationError",
    "default_registry",
    "download_archive",
    "download_dataset",
    "read_marker",
]
