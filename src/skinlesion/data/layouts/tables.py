"""CSV label tables: robust reading, header sniffing, column lookup and cell parsing."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from skinlesion.data.layouts.base import SourceError

PATH_COLUMNS = ("path", "filepath", "file_path", "filename", "file_name", "file", "image_path",
                "image_file", "img_path", "relative_path")
ID_COLUMNS = ("image_id", "isic_id", "image_name", "image", "id")


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV robustly: UTF-8 with or without BOM, ``,`` ``;`` or tab separated,
    blank lines skipped, every cell a stripped string, column names lower-cased.

    A header-less ISIC 2016 ground truth (first cell ``ISIC_…``) gets the columns
    ``image_id, label``.

    Raises:
        SourceError: naming the file, if it cannot be read as a table.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "re-save it as UTF-8") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise SourceError(f"{path}: empty table")
    sep = _sniff_separator(lines[0])
    headerless = bool(re.match(r'^"?ISIC_\d+', lines[0]))
    try:
        df = pd.read_csv(io.StringIO("\n".join(lines)), sep=sep, dtype=str, keep_default_na=False,
                         header=None if headerless else "infer", skipinitialspace=True,
                         on_bad_lines="error", engine="python")
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise SourceError(f"{path}: not a readable CSV ({exc})") from None
    if headerless:
        if df.shape[1] < 2:
            raise SourceError(f"{path}: header-less table needs at least 2 columns (id, label)")
        df = df.iloc[:, :2]
        df.columns = ["image_id", "label"]
    else:
        df.columns = [_norm_col(c) for c in df.columns]
        if len(set(df.columns)) != len(df.columns):
            raise SourceError(f"{path}: duplicate column names {list(df.columns)}")
    return df.apply(lambda col: col.str.strip())


def read_header(path: Path) -> list[str] | None:
    """Normalised column names of a CSV (None for a header-less ISIC 2016 table)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = ""
            for line in fh:
                if line.strip():
                    first = line
                    break
    except OSError:
        return []
    if re.match(r'^"?ISIC_\d+', first):
        return None
    sep = _sniff_separator(first)
    cells = next(csv.reader([first], delimiter=sep), [])
    return [_norm_col(c) for c in cells]


def _sniff_separator(line: str) -> str:
    counts = {sep: line.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] > 0 else ","


def _norm_col(name: object) -> str:
    return re.sub(r"\s+", "_", str(name).strip().lower())


def first_column(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    """The first of ``candidates`` that is one of ``columns`` (None if none is)."""
    cols = set(columns)
    return next((c for c in candidates if c in cols), None)


def require_columns(df: pd.DataFrame, table: Path, columns: Iterable[str]) -> None:
    """Raise :class:`SourceError` naming ``table`` if any of ``columns`` is missing."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceError(f"{table}: missing required column(s) {missing}; columns found: "
                          f"{list(df.columns)}")


def to_float(value: object) -> float | None:
    """A table cell as a number (None if it is not one)."""
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def year_in_name(name: str, default: str) -> str:
    """The year (``20xx``) in a file name, or ``default``."""
    m = re.search(r"(20\d\d)", name)
    return m.group(1) if m else default
