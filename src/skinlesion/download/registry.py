"""The dataset registry: every downloadable dataset is described once by a frozen spec.

A ``DatasetSpec`` lists the files of a dataset (``RemoteFile``: URLs, published size and
checksums, whether it is a zip to extract), its licence, citation and the ``prepare``
format its files produce. Files hosted on a Dataverse repository (HAM10000) are named
by a ``DataverseSource`` and resolved through the Dataverse API at download time, which
also gives their exact sizes and MD5 checksums.

A ``DatasetRegistry`` holds specs by name. ``catalog.default_registry()`` returns the built-in
one (``catalog.py``); tests and users can build their own registry and pass it to
``download_dataset``, so nothing branches on dataset names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_HEX = {"sha256": 64, "md5": 32}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class UnknownDatasetError(KeyError):
    """Raised for a dataset name that is not registered; lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


def _check_name(kind: str, name: str) -> None:
    # Names become paths under --out: keep them to one plain path component.
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise ValueError(f"{kind} {name!r} must be a plain file name (letters, digits, . _ -)")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    Attributes:
        name: Local file name inside ``OUT/DATASET/``.
        urls: Download URLs, the official one first; later ones are mirrors tried in turn
            when an earlier one answers 403/404/410 or cannot be reached.
        approx_size: Size in bytes as published (rounded, e.g. "23GB"); used for
            ``--list`` and the disk-space check. ``None`` if not published.
        size: Exact size in bytes where published; verified after download.
        sha256: Published SHA-256 (lower-case hex); verified after download.
        md5: Published MD5 (lower-case hex); verified after download.
        extract_to: For zips: the folder (under ``OUT/DATASET/``) the archive is
            extracted into; ``None`` keeps the file as it is (CSVs).
        etag_md5: The host is Amazon S3, whose ETag of a single-part upload is the MD5
            of the body: check it (multipart ETags, ``"...-N"``, are skipped).
        description: One line shown by ``--list``.
    """

    name: str
    urls: tuple[str, ...]
    approx_size: int | None = None
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract_to: str | None = None
    etag_md5: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("file name", self.name)
        if self.extract_to is not None:
            _check_name("extract_to", self.extract_to)
        if not self.urls:
            raise ValueError(f"{self.name}: at least one URL is required")
        for algo, length in _HEX.items():
            value = getattr(self, algo)
            if value is not None and not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
                raise ValueError(f"{self.name}: {algo} must be {length} lower-case hex digits")

    @property
    def best_size(self) -> int | None:
        """Exact size if known, else the published approximate size."""
        return self.size if self.size is not None else self.approx_size


@dataclass(frozen=True)
class DataverseFile:
    """A file of a Dataverse dataset, picked by its label.

    Attributes:
        label: The file's name on Dataverse without extension (ingested tabular files
            are relabelled ``.tab``; matching the stem finds them either way).
        name: Local file name to save it as.
        original: Ask for the originally uploaded file (``?format=original``): for
            tabular files Dataverse otherwise serves its tab-separated conversion.
        extract_to: As for ``RemoteFile``.
        description: One line shown by ``--list``.
    """

    label: str
    name: str
    original: bool = False
    extract_to: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("file name", self.name)
        if self.extract_to is not None:
            _check_name("extract_to", self.extract_to)


@dataclass(frozen=True)
class DataverseSource:
    """Files of one dataset on a Dataverse installation (resolved through its API).

    Attributes:
        server: Base URL, e.g. ``https://dataverse.harvard.edu``.
        persistent_id: The dataset DOI, e.g. ``doi:10.7910/DVN/DBW86T``.
        files: The files wanted (a dataset may hold more).
        version: Dataset version; ``:latest-published`` by default.
    """

    server: str
    persistent_id: str
    files: tuple[DataverseFile, ...]
    version: str = ":latest-published"

    @property
    def landing_page(self) -> str:
        """The human page of the dataset (for the offline message and the docs)."""
        return (f"{self.server.rstrip('/')}/dataset.xhtml?persistentId={self.persistent_id}")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the downloader and the docs need to know about one dataset.

    Attributes:
        name: Registry name (lower case, e.g. ``"isic2020"``); also the folder name.
        title: Human title.
        licence: Short licence name (``"CC-0"``, ``"CC-BY-NC 4.0"``).
        licence_url: Licence text.
        citation: How the data must be cited.
        source_page: Official page the URLs were taken from.
        prepare_format: The ``skinlesion prepare --format`` layout the files produce
            (``skinlesion.data.layouts.detect.FORMATS``: folders, isic2020, ham10000, isic2017,
            isic2019, archive, csv).
        files: Files with static URLs.
        dataverse: Files resolved from a Dataverse dataset at download time.
        notes: Anything a user should know (layout, caveats).
    """

    name: str
    title: str
    licence: str
    licence_url: str
    citation: str
    source_page: str
    prepare_format: str
    files: tuple[RemoteFile, ...] = ()
    dataverse: DataverseSource | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        _check_name("dataset name", self.name)
        if not self.files and self.dataverse is None:
            raise ValueError(f"dataset {self.name!r} has no files")
        names = [f.name for f in self.files]
        if self.dataverse is not None:
            names += [f.name for f in self.dataverse.files]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset {self.name!r}: duplicate file names {dup}")

    @property
    def file_names(self) -> tuple[str, ...]:
        """Local names of all files, static and Dataverse ones."""
        names = tuple(f.name for f in self.files)
        if self.dataverse is not None:
            names += tuple(f.name for f in self.dataverse.files)
        return names

    @property
    def approx_total_size(self) -> int | None:
        """Sum of the published sizes; ``None`` if any file's size is not published."""
        if self.dataverse is not None:
            return None
        sizes = [f.best_size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    def manual_urls(self) -> list[str]:
        """URLs a user can open by hand (first URL of each file, or the Dataverse page)."""
        urls = [f.urls[0] for f in self.files]
        if self.dataverse is not None:
            urls.append(self.dataverse.landing_page)
        return urls


@dataclass
class DatasetRegistry:
    """Datasets by name. Unknown names fail listing the valid ones."""

    _specs: dict[str, DatasetSpec] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: Iterable[DatasetSpec]) -> DatasetRegistry:
        """Build a registry holding ``specs``."""
        registry = cls()
        for spec in specs:
            registry.register(spec)
        return registry

    def register(self, spec: DatasetSpec) -> DatasetSpec:
        """Add ``spec`` (a name may be registered once)."""
        if spec.name in self._specs:
            raise ValueError(f"dataset {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> DatasetSpec:
        """Look up a dataset by name (case-insensitive).

        Raises:
            UnknownDatasetError: if ``name`` is not registered; the message lists valid names.
        """
        key = name.strip().lower()
        if key not in self._specs:
            raise UnknownDatasetError(
                f"unknown dataset {name!r}; known datasets: {', '.join(self.names())}"
            )
        return self._specs[key]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._specs)

    def __iter__(self) -> Iterator[DatasetSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._specs




def format_size(n: int | None) -> str:
    """Bytes as a short human string in decimal units (as the data pages publish them)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
