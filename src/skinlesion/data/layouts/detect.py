"""The layout registry and detection: :data:`FORMATS`, :func:`detect_format` and
:func:`read_source` (one source → :class:`~skinlesion.data.layouts.base.SourceRows`).

Adding a layout: a module beside this one with a ``LAYOUT`` (its header matcher and its
reader), and one line in :data:`FORMATS`. Order matters: a table is given to the first
layout whose header matches, so the generic ``csv`` comes after the specific layouts.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from skinlesion.data.labels import LabelMap
from skinlesion.data.layouts import (
    archive,
    csv_table,
    folders,
    ham10000,
    isic2017,
    isic2019,
    isic2020,
)
from skinlesion.data.layouts.base import Layout, SourceError, SourceRows
from skinlesion.data.layouts.tables import ID_COLUMNS, PATH_COLUMNS, first_column, read_header
from skinlesion.data.metadata import METADATA_COLUMNS

logger = logging.getLogger(__name__)


FORMATS: dict[str, Layout] = {layout.name: layout for layout in (
    isic2020.LAYOUT,
    ham10000.LAYOUT,
    isic2017.LAYOUT,
    isic2019.LAYOUT,
    archive.LAYOUT,
    csv_table.LAYOUT,
    folders.LAYOUT,
)}
"""Every layout, by ``--format`` name (``auto`` detects)."""

FORMAT_NAMES: tuple[str, ...] = ("auto", *FORMATS)

LABEL_TABLE_NAMES: tuple[str, ...] = ("labels.csv", "label.csv")
"""File names that mark the label table of a folder holding several generic CSV tables."""


def detect_format(source: Path, fmt: str = "auto") -> tuple[Layout, Path, list[Path]]:
    """Find the layout of ``source`` (a folder or a CSV file).

    Args:
        source: The source as given.
        fmt: ``auto`` or a layout name to force.

    Returns:
        ``(layout, root, tables)``: the layout, the folder image paths are found in,
        and the label tables to read (empty for ``folders``).

    Raises:
        SourceError: if the source does not exist, no layout fits, or several do.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r}; choose one of {list(FORMAT_NAMES)}")
    if source.is_file():
        header = read_header(source)
        if fmt != "auto":
            layout = FORMATS[fmt]
            if layout.matches is None:
                raise SourceError(f"{source}: format {fmt!r} needs a folder, not a file")
            return layout, source.parent, [source]
        for layout in FORMATS.values():
            if layout.matches is not None and layout.matches(header):
                return layout, source.parent, [source]
        raise SourceError(f"{source}: no known layout matches this table; columns found: "
                          f"{header}. A generic CSV needs a path/filename column and a label "
                          "or diagnosis column.")
    if not source.is_dir():
        raise SourceError(f"{source}: no such file or folder")
    if fmt == "folders":
        return FORMATS["folders"], source, []
    found: dict[str, list[Path]] = defaultdict(list)
    for csv_path in sorted(source.glob("*.csv")) + sorted(source.glob("*.CSV")):
        header = read_header(csv_path)
        candidates = [FORMATS[fmt]] if fmt != "auto" else list(FORMATS.values())
        for layout in candidates:
            if layout.matches is not None and layout.matches(header):
                found[layout.name].append(csv_path)
                break
    specific = [name for name in found if FORMATS[name].specific]
    if len(specific) == 1:
        return FORMATS[specific[0]], source, found[specific[0]]
    if len(specific) > 1:
        raise SourceError(f"{source}: tables of several layouts found "
                          f"({ {k: [p.name for p in v] for k, v in found.items()} }); pass the "
                          "CSV files one by one, or use --format")
    if found.get("csv"):
        tables = found["csv"]
        if len(tables) > 1:
            # A folder that names its label table labels.csv (isic-dev: beside provenance.csv,
            # a per-image record that also has a label column) needs no choice from the user.
            named = [p for p in tables if p.name.lower() in LABEL_TABLE_NAMES]
            if len(named) != 1:
                raise SourceError(
                    f"{source}: several label tables found {[p.name for p in tables]} and none "
                    f"is named {LABEL_TABLE_NAMES[0]}; pass the label table itself as SOURCE "
                    f"(e.g. {tables[0]}) and metadata tables with --metadata")
            tables = named
        return FORMATS["csv"], source, tables
    if fmt not in ("auto", "folders"):
        raise SourceError(f"{source}: no {fmt} table found in this folder")
    return FORMATS["folders"], source, []


def read_source(source: str | os.PathLike[str], label_map: LabelMap,
                fmt: str = "auto", skip: Iterable[str | os.PathLike[str]] = ()) -> SourceRows:
    """Read one source into candidate rows (nothing is decoded).

    Args:
        source: A folder or a CSV file.
        label_map: Names → labels.
        fmt: ``auto`` or a layout name.
        skip: Folders to leave out (``prepare`` passes its output folder).

    Returns:
        The :class:`SourceRows` of the source.

    Raises:
        SourceError: if the source cannot be read at all; single bad rows are rejected
            into ``SourceRows.rejected`` instead.
    """
    path = Path(source)
    layout, root, tables = detect_format(path, fmt)
    src = SourceRows(path=path, format=layout.name, root=root, tables=list(tables),
                     skip=tuple(Path(p).resolve() for p in skip))
    logger.info("%s: layout %s, %d table(s)", path, layout.name, len(tables))
    layout.read(root, tables, label_map, src)
    if path.is_dir():
        _find_side_tables(src)
    return src


def is_metadata_header(header: list[str] | None) -> bool:
    """Whether a CSV header is a metadata table: an image id (or path) column and at least
    one metadata column (:data:`~skinlesion.data.metadata.METADATA_COLUMNS`)."""
    if not header:
        return False
    has_id = bool(first_column(header, ID_COLUMNS) or first_column(header, PATH_COLUMNS))
    return has_id and any(first_column(header, names) for names in METADATA_COLUMNS.values())


def _find_side_tables(src: SourceRows) -> None:
    """Sort the other CSVs at the top of a folder source: metadata-only tables (an id and
    metadata columns, no label) are joined later; other label tables are named in a warning."""
    used = {t.resolve() for t in src.tables}
    for csv_path in sorted({*src.root.glob("*.csv"), *src.root.glob("*.CSV")}):
        if csv_path.resolve() in used:
            continue
        header = read_header(csv_path)
        if any(layout.matches is not None and layout.matches(header)
               for layout in FORMATS.values()):
            used_for = (", ".join(t.name for t in src.tables) if src.tables
                        else "the class folders")
            src.warnings.append(f"{csv_path.name}: not read (labels come from {used_for})")
        elif is_metadata_header(header):
            src.metadata_tables.append(csv_path)
