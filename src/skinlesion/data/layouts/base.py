"""What every layout shares: the rows a reader fills, the layout record, given splits
and the one way a row is added (or rejected)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skinlesion.data.labels import LabelDecision, LabelMap
from skinlesion.data.layouts.files import relative_posix
from skinlesion.data.metadata import normalize_metadata

# Split names found in folder names, file names and ``split`` columns.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "holdout": "test",
}
TRAINVAL = "trainval"
"""Given split for rows a source puts in its training part when it has its own test part
but no validation part: they are split into train/val only, never into test."""


class SourceError(ValueError):
    """A source that cannot be read at all (unknown layout, missing columns, bad CSV)."""


@dataclass
class SourceRows:
    """Candidate rows of one source.

    Attributes:
        path: The source as given (folder or CSV file).
        format: Layout name.
        root: Folder that image paths are relative to (and may not escape).
        rows: Candidate rows: dicts with ``CANDIDATE_FIELDS`` keys.
        rejected: ``{"image_id", "file", "reason"}`` dicts for rows left out.
        warnings: Non-fatal observations for the report.
        tables: Label tables that were read (paths).
        skip: Resolved folders never read (the output folder, when it lies inside
            the source: its resized copies must not be taken for source images).
        metadata_issues: ``{"source", "image_id", "field", "value", "reason"}`` dicts for
            metadata values that could not be used (they became missing).
        metadata_tables: Metadata-only tables found beside the label table and joined
            on image id (see :mod:`skinlesion.data.metadata_tables`).
    """

    path: Path
    format: str
    root: Path
    rows: list[dict[str, object]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    skip: tuple[Path, ...] = ()
    metadata_issues: list[dict[str, str]] = field(default_factory=list)
    metadata_tables: list[Path] = field(default_factory=list)

    def reject(self, image_id: str, file: str, reason: str) -> None:
        """Record a row that is left out."""
        self.rejected.append({"source": self.source_label(), "image_id": image_id,
                              "file": file, "reason": reason})

    def source_label(self) -> str:
        """The source as shown in the report (its path as given)."""
        return os.fspath(self.path)


CANDIDATE_FIELDS: tuple[str, ...] = (
    "image_id", "file", "original_path", "label", "diagnosis", "patient_id", "lesion_id",
    "age", "sex", "site", "source", "source_full", "split",
)


@dataclass(frozen=True)
class Layout:
    """One dataset layout.

    Attributes:
        name: ``--format`` value.
        description: One line for ``--help`` and the docs.
        matches: Given a CSV's normalised header (``None`` for a header-less ISIC 2016
            table), whether the CSV is a label table of this layout. None for
            layouts that are not CSV based (``folders``).
        read: ``read(root, tables, label_map, source) -> None`` filling ``source``.
        specific: Whether a header match is decisive (False for the generic ``csv``
            layout, which matches many tables and is used only when nothing else fits).
    """

    name: str
    description: str
    matches: Callable[[list[str] | None], bool] | None
    read: Callable[[Path, list[Path], LabelMap, SourceRows], None]
    specific: bool = True


def split_from_name(name: str) -> str:
    """``train``/``val``/``test`` from a file or folder name (``ISIC-2017_Validation_…``)."""
    for token in re.split(r"[^a-z]+", name.lower()):
        if token in SPLIT_ALIASES:
            return SPLIT_ALIASES[token]
    return ""


def normalise_given_splits(parts: dict[str, str]) -> dict[str, str]:
    """Turn per-part split names into given splits.

    A source's own split is kept only if it has a held-out part: a lone training table
    gives no split (computed later); training + test without validation marks the
    training rows ``trainval`` (split into train/val only).
    """
    kinds = set(parts.values())
    if not kinds & {"val", "test"}:
        return dict.fromkeys(parts, "")
    if "val" not in kinds:
        return {k: (TRAINVAL if v in ("train", "") else v) for k, v in parts.items()}
    if "test" not in kinds:
        # Train + val but no test: the source's test part is missing, so computed splits
        # must draw a test set; keep val, put train rows back in the pool.
        return {k: ("" if v == "train" else v) for k, v in parts.items()}
    return {k: (v or "") for k, v in parts.items()}


def add_row(src: SourceRows, *, image_id: str, file: Path | None, wanted: str,
            decision: LabelDecision, split: str = "", source: str, source_full: str = "",
            patient_id: object = "", lesion_id: object = "", age: object = "", sex: object = "",
            site: object = "", lookup_warning: str | None = None) -> None:
    """Append a candidate row, or a rejection when the label or the file is missing."""
    if lookup_warning:
        src.warnings.append(lookup_warning)
    if decision.reason is not None:
        src.reject(image_id, wanted, decision.reason)
        return
    if file is None:
        src.reject(image_id, wanted, f"image file not found under {src.root} (looked for "
                                     f"{wanted or image_id})")
        return
    meta, problems = normalize_metadata({"patient_id": patient_id, "lesion_id": lesion_id,
                                         "age": age, "sex": sex, "site": site})
    for problem in problems:
        src.metadata_issues.append({"source": src.source_label(), "image_id": image_id,
                                    **problem})
    src.rows.append({
        "image_id": image_id, "file": os.fspath(file),
        "original_path": relative_posix(file, src.root),
        "label": decision.label, "diagnosis": decision.diagnosis, **meta,
        "source": source, "source_full": source_full, "split": split,
    })
