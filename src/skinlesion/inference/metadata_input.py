"""Clinical metadata for ``predict --metadata CSV``: one table, matched to image files.

The table names each image by a ``path``/``filename`` column (matched on the full path,
then the file name) or an ``image_id`` column (matched on the file's stem), and gives any
of ``age`` (or ``age_approx``), ``sex``, ``site`` (or ``anatom_site_general``,
``anatom_site_general_challenge``, ``localization``). Values are normalised as in
``prepare`` (:mod:`skinlesion.data.metadata`); an invalid value, a missing column or an
image without a row simply counts as unknown — metadata is always optional.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

_KEY_COLUMNS = ("path", "filepath", "file_path", "filename", "file_name", "file", "image_path")
_ID_COLUMNS = ("image_id", "isic_id", "image_name", "image", "id")
_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "age": ("age", "age_approx"),
    "sex": ("sex", "gender"),
    "site": ("site", "anatom_site_general", "anatom_site_general_challenge", "localization",
             "anatomic_site"),
}


class MetadataTableError(ValueError):
    """A metadata table that cannot be used at all (unreadable, or no key column)."""


class MetadataTable:
    """A metadata CSV indexed by path, file name and image id.

    Args:
        path: The CSV file.

    Raises:
        MetadataTableError: if the file cannot be read or has no path/id column.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:

        self.path = Path(path)
        try:
            df = pd.read_csv(self.path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise MetadataTableError(f"{self.path}: cannot read the metadata table ({exc})") from exc
        cols = {c.strip().lower(): c for c in df.columns}
        key = next((cols[c] for c in _KEY_COLUMNS if c in cols), None)
        ident = next((cols[c] for c in _ID_COLUMNS if c in cols), None)
        if key is None and ident is None:
            raise MetadataTableError(
                f"{self.path}: needs a path/filename column {list(_KEY_COLUMNS)} or an image id "
                f"column {list(_ID_COLUMNS)}; columns found: {list(df.columns)}")
        fields = {f: next((cols[c] for c in names if c in cols), None)
                  for f, names in _FIELD_COLUMNS.items()}
        self.fields = [f for f, c in fields.items() if c is not None]
        self._by_key: dict[str, dict[str, Any]] = {}
        for rec in df.to_dict("records"):
            meta = {f: rec[c] for f, c in fields.items() if c is not None}
            if key is not None and rec.get(key):
                raw = str(rec[key]).replace("\\", "/")
                self._by_key.setdefault(f"path:{raw}", meta)
                self._by_key.setdefault(f"name:{Path(raw).name}", meta)
                self._by_key.setdefault(f"id:{Path(raw).stem}", meta)
            if ident is not None and rec.get(ident):
                self._by_key.setdefault(f"id:{Path(str(rec[ident])).stem}", meta)

    def lookup(self, path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The metadata of the image at ``path`` (None when the table has no row for it)."""
        p = Path(path)
        for key in (f"path:{os.fspath(path)}".replace("\\", "/"), f"name:{p.name}", f"id:{p.stem}"):
            if key in self._by_key:
                return self._by_key[key]
        return None

    def records(self, paths: Sequence[str | os.PathLike[str]]) -> tuple[list[dict[str, Any] | None], int]:
        """One record per path (None where unmatched) and the number matched."""
        out = [self.lookup(p) for p in paths]
        return out, sum(r is not None for r in out)
