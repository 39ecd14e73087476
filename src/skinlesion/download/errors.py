"""Errors of the download package; each message says what failed and what to do."""

from __future__ import annotations

from collections.abc import Sequence


class DownloadError(RuntimeError):
    """A dataset could not be downloaded, verified or extracted."""


class NetworkUnavailableError(DownloadError):
    """No server could be reached (DNS failure, no route, connection refused).

    Attributes:
        urls: The URLs a user can fetch by hand instead.
    """

    def __init__(self, urls: Sequence[str], reason: str = "") -> None:
        self.urls = list(urls)
        self.reason = reason
        lines = "\n".join(f"  {u}" for u in self.urls)
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"no network{detail}: download the files by hand from URL and run "
            f"`skinlesion prepare` on them:\n{lines}"
        )


class VerificationError(DownloadError):
    """A downloaded file's size or checksum does not match what was expected."""


class InsufficientSpaceError(DownloadError):
    """Not enough free disk space for the download and its extraction."""


class ExtractionError(DownloadError):
    """An archive is corrupt or unsafe (members escaping the target folder)."""


class CorruptArchiveError(ExtractionError):
    """An archive that cannot be read as a zip (truncated or damaged)."""


class ArchiveToolError(DownloadError):
    """The ISIC Archive client (isic-cli) is missing or failed."""
