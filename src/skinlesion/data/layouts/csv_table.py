"""``csv``: any CSV with a path/filename (or image id) column and a label or diagnosis column.

The generic layout: it matches many tables, so detection uses it only when no specific
layout fits.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from skinlesion.data.labels import LabelMap, normalize_name, resolve_label
from skinlesion.data.layouts.base import SPLIT_ALIASES, Layout, SourceError, SourceRows, add_row
from skinlesion.data.layouts.files import ImageIndex
from skinlesion.data.layouts.tables import ID_COLUMNS, PATH_COLUMNS, first_column, read_table
from skinlesion.data.metadata import METADATA_COLUMNS

_LABEL_COLUMNS = ("label", "target", "class", "benign_malignant", "malignant", "y")
_DIAGNOSIS_COLUMNS = ("diagnosis", "dx", "diagnosis_1")
_ORIGIN = re.compile(r"^[^\s:@]+@[0-9A-Fa-f]+:(?P<dataset>.+)$")


def _matches_csv(h: list[str] | None) -> bool:
    return (h is not None and bool(first_column(h, PATH_COLUMNS) or first_column(h, ID_COLUMNS))
            and bool(first_column(h, _LABEL_COLUMNS) or first_column(h, _DIAGNOSIS_COLUMNS)))


def _read_csv(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    for table in tables:
        df = read_table(table)
        cols = list(df.columns)
        path_col, id_col = first_column(cols, PATH_COLUMNS), first_column(cols, ID_COLUMNS)
        label_col = first_column(cols, _LABEL_COLUMNS)
        diag_col = first_column(cols, _DIAGNOSIS_COLUMNS)
        if not (path_col or id_col) or not (label_col or diag_col):
            raise SourceError(
                f"{table}: needs a path or filename column (one of {list(PATH_COLUMNS)}, or an "
                f"image id column {list(ID_COLUMNS)}) and a label or diagnosis column (one of "
                f"{list(_LABEL_COLUMNS + _DIAGNOSIS_COLUMNS)}); columns found: {cols}")
        index = ImageIndex(root, src.skip)
        default_source = table.parent.resolve().name or table.stem
        patient_col = first_column(cols, METADATA_COLUMNS["patient_id"])
        lesion_col = first_column(cols, METADATA_COLUMNS["lesion_id"])
        age_col = first_column(cols, METADATA_COLUMNS["age"])
        sex_col = first_column(cols, METADATA_COLUMNS["sex"])
        site_col = first_column(cols, METADATA_COLUMNS["site"])
        source_col = first_column(cols, ("source", "dataset"))
        split_col = first_column(cols, ("split", "set", "subset", "partition", "fold_split"))
        for line_no, rec in enumerate(df.to_dict("records"), start=2):
            raw_path = rec.get(path_col, "") if path_col else ""
            image_id = (rec.get(id_col, "") if id_col else "") or Path(raw_path.replace("\\", "/")).stem
            if not image_id:
                src.reject(f"line {line_no}", "", "empty path and image id")
                continue
            split = ""
            if split_col and rec.get(split_col):
                split = SPLIT_ALIASES.get(normalize_name(rec[split_col]), "?")
                if split == "?":
                    src.reject(image_id, raw_path, f"unknown split value {rec[split_col]!r} "
                                                   "(expected train, val or test)")
                    continue
            file: Path | None
            warn = None
            if raw_path:
                file, reason = _resolve_in_root(root, raw_path)
                if reason:
                    src.reject(image_id, raw_path, reason)
                    continue
            else:
                file, warn = index.find(image_id)
            full_source = rec.get(source_col, "") if source_col else ""
            match = _ORIGIN.match(full_source)
            source = match.group("dataset") if match else (full_source or default_source)
            label = rec.get(label_col, "") if label_col else ""
            diagnosis = rec.get(diag_col, "") if diag_col and diag_col != label_col else ""
            add_row(src, image_id=image_id, file=file, wanted=raw_path or image_id,
                    decision=resolve_label(label, diagnosis, label_map), split=split,
                    source=source, source_full=full_source if match else "",
                    patient_id=rec.get(patient_col, "") if patient_col else "",
                    lesion_id=rec.get(lesion_col, "") if lesion_col else "",
                    age=rec.get(age_col, "") if age_col else "",
                    sex=rec.get(sex_col, "") if sex_col else "",
                    site=rec.get(site_col, "") if site_col else "", lookup_warning=warn)


def _resolve_in_root(root: Path, raw_path: str) -> tuple[Path | None, str | None]:
    """The file a CSV names, or why not: the path must stay inside the CSV's folder."""
    rel = raw_path.replace("\\", "/")
    # Lexical check (not resolve()): a ``../`` path is refused, a symlink the user put
    # inside their own data folder is followed.
    # Absolute first: with a relative CSV path the root is "." and commonpath("x.jpg", ".")
    # is "", which refused every row.
    base = os.path.abspath(root)
    full = os.path.normpath(os.path.join(base, rel))
    if os.path.commonpath([full, base]) != base:
        return None, f"path escapes the source folder {root}"
    if not os.path.lexists(full):
        return None, "file not found"
    return Path(full), None


LAYOUT = Layout("csv", "any CSV with a path/filename column and a label or diagnosis column",
                _matches_csv, _read_csv, specific=False)
