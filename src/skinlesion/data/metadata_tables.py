"""Metadata tables joined on image id, and the metadata coverage of a manifest.

Besides the metadata a layout reads from its own tables (ISIC 2020's ``age_approx``,
HAM10000's ``localization``, …), two kinds of table add age, sex, anatomic site,
patient id and lesion id to the candidate rows, joined on ``image_id``:

* a folder source's own **metadata tables**: CSVs beside the label table with an
  image id column and metadata columns but no label (isic-dev's ``metadata.csv``,
  ISIC 2017's ``…_metadata.csv``); they apply to that source's rows;
* **sidecars** given with ``prepare --metadata FILE``; they apply to every source.

Precedence, per cell: the layout's own value wins; then the folder's metadata
tables (in file-name order); then the sidecars in the order given. A later table
only fills cells that are still empty after normalisation, so an invalid value
(reported, then made missing) can be filled by the next table. A later table's
valid value that differs from the one kept is listed as a conflict, never
applied silently.

Every value passes through :func:`skinlesion.data.metadata.normalize_metadata`;
a value it refuses is listed per row (``image_id, field, value, reason``) and
becomes missing. Nothing here drops an image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion.data.extensions import IMAGE_EXTENSIONS
from skinlesion.data.layouts.base import SourceError, SourceRows
from skinlesion.data.layouts.tables import ID_COLUMNS, PATH_COLUMNS, first_column, read_table
from skinlesion.data.metadata import (
    ID_FIELDS,
    METADATA_COLUMNS,
    METADATA_FIELDS,
    is_known,
    normalize_metadata,
)

logger = logging.getLogger(__name__)

COVERAGE_FIELDS: tuple[str, ...] = (*METADATA_FIELDS, *ID_FIELDS)
"""Columns counted in the coverage report: age, sex, site, patient_id, lesion_id."""
_EXAMPLES = 10


@dataclass
class MetadataTable:
    """A metadata table read and normalised, keyed by image id.

    Attributes:
        path: The CSV file.
        columns: Field → the column it was read from.
        values: Image id → normalised values of the table's fields.
        problems: Image id → ``{"field", "value", "reason"}`` for values refused.
        duplicate_ids: Ids listed more than once (the first row is used).
        empty_ids: Rows without an image id (skipped).
    """

    path: Path
    columns: dict[str, str]
    values: dict[str, dict[str, object]] = field(default_factory=dict)
    problems: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    duplicate_ids: list[str] = field(default_factory=list)
    empty_ids: int = 0


@dataclass
class MetadataJoin:
    """What joining the metadata tables did, for the report.

    Attributes:
        tables: One stats dict per table joined (see :func:`join_table`).
        issues: Values refused, per row (layout values and table values).
        conflicts: Valid table values that differ from the value kept.
        warnings: Folder metadata tables that could not be read.
    """

    tables: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _image_key(value: str) -> str:
    """The image id a cell names: ``ISIC_1``, ``ISIC_1.jpg`` and ``images/ISIC_1.jpg`` → ``ISIC_1``."""
    name = value.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name


def read_metadata_table(path: str | os.PathLike[str]) -> MetadataTable:
    """Read a metadata CSV: an image id (or path) column plus any metadata columns.

    Column names follow :data:`~skinlesion.data.metadata.METADATA_COLUMNS` (``age`` or
    ``age_approx``, ``sex``, ``anatom_site_general`` or ``localization``, ``patient_id``,
    ``lesion_id``, …); other columns are ignored. Reading never fails on a value.

    Raises:
        SourceError: naming the file, if it is not a readable CSV or lacks an id column
            or any metadata column.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{p}: metadata table not found")
    df = read_table(p)
    cols = list(df.columns)
    id_col = first_column(cols, ID_COLUMNS) or first_column(cols, PATH_COLUMNS)
    if id_col is None:
        raise SourceError(f"{p}: a metadata table needs an image id column (one of "
                          f"{list(ID_COLUMNS)}, or a path column); columns found: {cols}")
    columns = {name: col for name, names in METADATA_COLUMNS.items()
               if (col := first_column(cols, names)) is not None}
    if not columns:
        wanted = sorted({c for names in METADATA_COLUMNS.values() for c in names})
        raise SourceError(f"{p}: no metadata column (any of {wanted}); columns found: {cols}")
    table = MetadataTable(path=p, columns=columns)
    for rec in df.to_dict("records"):
        key = _image_key(str(rec.get(id_col, "")))
        if not key:
            table.empty_ids += 1
            continue
        if key in table.values:
            table.duplicate_ids.append(key)
            continue
        values, problems = normalize_metadata({name: rec.get(col, "")
                                               for name, col in columns.items()})
        table.values[key] = values
        if problems:
            table.problems[key] = problems
    return table


def join_table(rows: list[dict[str, object]], table: MetadataTable, applies_to: str,
               result: MetadataJoin) -> None:
    """Fill the empty metadata cells of ``rows`` (in place) from ``table``.

    Args:
        rows: Candidate rows (dicts with ``image_id`` and the metadata fields).
        table: The table to join.
        applies_to: Which rows, as shown in the report (a source path, or ``all sources``).
        result: Collects the table's stats, its refused values and its conflicts.
    """
    filled = dict.fromkeys(table.columns, 0)
    conflicts = 0
    matched: set[str] = set()
    where = os.fspath(table.path)
    for row in rows:
        image_id = str(row["image_id"])
        entry = table.values.get(image_id)
        if entry is None:
            continue
        matched.add(image_id)
        for problem in table.problems.get(image_id, []):
            result.issues.append({"source": where, "image_id": image_id, **problem})
        for name, value in entry.items():
            if not is_known(value):
                continue
            current = row.get(name)
            if not is_known(current):
                row[name] = value
                filled[name] += 1
            elif current != value:
                conflicts += 1
                result.conflicts.append({"source": where, "image_id": image_id, "field": name,
                                         "kept": _text(current), "ignored": _text(value)})
    unmatched = sorted(set(table.values) - matched)
    rows_without = sum(1 for r in rows if str(r["image_id"]) not in table.values)
    result.tables.append({
        "path": where, "applies_to": applies_to, "columns": table.columns,
        "rows": len(table.values) + len(table.duplicate_ids) + table.empty_ids,
        "matched": len(matched), "images_without_row": rows_without,
        "ids_not_in_data": len(unmatched), "ids_not_in_data_examples": unmatched[:_EXAMPLES],
        "duplicate_ids": len(table.duplicate_ids),
        "duplicate_id_examples": table.duplicate_ids[:_EXAMPLES],
        "empty_ids": table.empty_ids, "filled": filled, "conflicts": conflicts,
    })
    logger.info("%s: %d of %d rows matched, filled %s", where, len(matched), len(rows), filled)


def join_metadata(read: Sequence[SourceRows],
                  sidecars: Iterable[str | os.PathLike[str]] = ()) -> MetadataJoin:
    """Join every source's own metadata tables, then the sidecars, onto the candidate rows.

    Sidecars are read first, so a bad ``--metadata`` file stops ``prepare`` before any
    image is decoded. A folder's own metadata table that cannot be read is a warning.

    Raises:
        SourceError: if a sidecar cannot be read (see :func:`read_metadata_table`).
    """
    tables = [read_metadata_table(p) for p in sidecars]
    # A sidecar that is a folder's own metadata table is joined once, as the sidecar.
    given = {t.path.resolve() for t in tables}
    result = MetadataJoin()
    for src in read:
        result.issues.extend(src.metadata_issues)
        for path in src.metadata_tables:
            if path.resolve() in given:
                continue
            try:
                table = read_metadata_table(path)
            except SourceError as exc:
                result.warnings.append(f"metadata table not joined: {exc}")
                continue
            join_table(src.rows, table, src.source_label(), result)
    every_row = [row for src in read for row in src.rows]
    for table in tables:
        join_table(every_row, table, "all sources", result)
    return result


def kept_only(entries: list[dict[str, str]], image_ids: Iterable[str]) -> list[dict[str, str]]:
    """The entries about images that made it into the manifest, sorted for a stable report."""
    keep = set(image_ids)
    return sorted((e for e in entries if e["image_id"] in keep),
                  key=lambda e: (e["image_id"], e["field"], e["source"]))


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# === Coverage ===


def _known(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series(False, index=df.index)
    col = df[name]
    if name == "age":
        return pd.to_numeric(col, errors="coerce").notna()
    return col.fillna("").astype(str).ne("")


def _coverage_counts(df: pd.DataFrame) -> dict[str, int]:
    known = {name: _known(df, name) for name in COVERAGE_FIELDS}
    clinical = pd.concat([known[n] for n in METADATA_FIELDS], axis=1)
    return {"images": len(df), **{n: int(k.sum()) for n, k in known.items()},
            "complete_age_sex_site": int(clinical.all(axis=1).sum()),
            "none_age_sex_site": int((~clinical.any(axis=1)).sum())}


def metadata_coverage(manifest: pd.DataFrame) -> dict[str, Any]:
    """Non-empty cells per metadata column, overall, per source and per split.

    Returns:
        ``{"overall": {...}, "per_source": {source: {...}}, "per_split": {split: {...}}}``,
        each ``{"images", "age", "sex", "site", "patient_id", "lesion_id",
        "complete_age_sex_site", "none_age_sex_site"}`` (counts of images).
    """
    out: dict[str, Any] = {"overall": _coverage_counts(manifest)}
    for key, col in (("per_source", "source"), ("per_split", "split")):
        if col in manifest.columns:
            out[key] = {str(name): _coverage_counts(part)
                        for name, part in manifest.groupby(col, sort=True)}
    return out


def missingness_by_label(manifest: pd.DataFrame) -> dict[str, Any]:
    """Malignant share among images with and without each of age, sex and site.

    The shortcut guard: when missingness predicts the label (isic-dev: site missing
    more often for benign images), a model that sees missing-value flags can learn it.
    """
    out: dict[str, Any] = {}
    labels = pd.to_numeric(manifest["label"], errors="coerce")
    for name in METADATA_FIELDS:
        known = _known(manifest, name)
        out[name] = {
            part: {"images": int(mask.sum()),
                   "malignant_fraction": (round(float(labels[mask].mean()), 4)
                                          if mask.any() else None)}
            for part, mask in (("known", known), ("missing", ~known))}
    return out


def coverage_summary(coverage: dict[str, Any], issues: int) -> str:
    """One line for the CLI: known values per column out of the images."""
    o = coverage["overall"]
    parts = " · ".join(f"{name} {o[name]:,}" for name in COVERAGE_FIELDS)
    return (f"metadata known for {parts} of {o['images']:,} images (age+sex+site "
            f"{o['complete_age_sex_site']:,}); {issues:,} metadata issue"
            f"{'' if issues == 1 else 's'}")
