"""The manifest: one table, one row per image, that feeds everything.

Stored as ``DATA_DIR/manifest.csv`` (UTF-8, comma separated, header row). CSV
rather than Parquet: it needs no extra dependency, diffs in git, opens in a
spreadsheet, and at 33k rows (ISIC 2020) it reads in well under a second.

Columns (``MANIFEST_COLUMNS``):

============  ========  =======================================================
column        type      meaning
============  ========  =======================================================
image_id      str       unique id (ISIC id where there is one)
path          str       image path relative to DATA_DIR (POSIX separators)
label         int       0 benign, 1 malignant
diagnosis     str       normalised diagnosis name (``melanoma``, ``nevus``, ...)
patient_id    str       patient id, empty if unknown
lesion_id     str       lesion id, empty if unknown
age           float     approximate age in years, empty if unknown
sex           str       ``male``/``female``, empty if unknown
site          str       anatomic site, empty if unknown
source        str       the dataset the row came from
split         str       ``train``, ``val`` or ``test``
============  ========  =======================================================

Optional extra columns (``fold``, ``original_path``, ``sha256``, ``width``,
``height``) are kept when present; ``fold``, ``width`` and ``height`` are read as
integers (``fold`` is ``-1`` for test rows, which stay out of cross-validation).
``skinlesion prepare`` also writes ``source_full`` where a source names its
origin (``owner/repo@commit:dataset``; ``source`` keeps only ``dataset``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from skinlesion.utils.atomic import atomic_path
from skinlesion.utils.hashing import sha256_file
from skinlesion.utils.safe_text import escape_frame, unescape_frame

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id", "path", "label", "diagnosis", "patient_id", "lesion_id",
    "age", "sex", "site", "source", "split",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "path", "label", "split")
SPLITS: tuple[str, ...] = ("train", "val", "test")
_STR_COLUMNS = ("image_id", "path", "diagnosis", "patient_id", "lesion_id", "sex", "site",
                "source", "split")
_INT_COLUMNS = ("fold", "width", "height")


class ManifestError(ValueError):
    """A manifest that does not follow the schema; the message names the file and the problem."""


def manifest_path(data_dir: str | os.PathLike[str]) -> Path:
    """Path of the manifest inside ``data_dir`` (``data_dir`` may also be the CSV itself)."""
    p = Path(data_dir)
    return p if p.suffix.lower() == ".csv" else p / MANIFEST_NAME


def validate_manifest(df: pd.DataFrame, where: str = "manifest") -> pd.DataFrame:
    """Check ``df`` against the schema and return it with normalised dtypes.

    Raises:
        ManifestError: on a missing required column, a label other than 0/1, an unknown
            split name, a duplicate ``image_id`` or an empty/absolute/escaping path.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}: missing required column(s) {missing}; "
                            f"expected at least {list(REQUIRED_COLUMNS)}")
    df = df.copy()
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            df[col] = "" if col != "age" else float("nan")
    for col in _STR_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = df.loc[~labels.isin([0, 1]), "image_id"].tolist()
    if bad:
        raise ManifestError(f"{where}: label must be 0 or 1; bad rows for image_id {bad[:5]}")
    df["label"] = labels.astype("int64")
    df["age"] = pd.to_numeric(df["age"], errors="coerce")
    for col in _INT_COLUMNS:
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            bad_int = df.loc[values.isna() | (values != values.round()), "image_id"].tolist()
            if bad_int:
                raise ManifestError(f"{where}: column {col!r} must hold integers; bad rows for "
                                    f"image_id {bad_int[:5]}")
            df[col] = values.astype("int64")
    unknown = sorted(set(df["split"]) - set(SPLITS))
    if unknown:
        raise ManifestError(f"{where}: unknown split name(s) {unknown}; expected {list(SPLITS)}")
    dup = df.loc[df["image_id"].duplicated(), "image_id"].tolist()
    if dup:
        raise ManifestError(f"{where}: duplicate image_id {dup[:5]}")
    for p in df["path"]:
        if not p or p.startswith("/") or ".." in Path(p).parts:
            raise ManifestError(f"{where}: path {p!r} must be relative to the data folder "
                                "and stay inside it")
    ordered = list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[ordered].reset_index(drop=True)


def read_manifest(data_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate the manifest of ``data_dir``.

    Raises:
        ManifestError: if the file is missing or breaks the schema.
    """
    path = manifest_path(data_dir)
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here; run `skinlesion prepare SOURCE --out "
                            f"{path.parent}` first")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable CSV ({exc})") from exc
    return validate_manifest(unescape_frame(df), where=str(path))


def write_manifest(df: pd.DataFrame, data_dir: str | os.PathLike[str]) -> Path:
    """Validate ``df`` and write it atomically as ``data_dir/manifest.csv``."""
    path = manifest_path(data_dir)
    df = validate_manifest(df, where=str(path))
    with atomic_path(path) as tmp:
        # Cells starting with = + - @ get a leading ' (formula injection); read_manifest
        # removes it again.
        escape_frame(df).to_csv(tmp, index=False, lineterminator="\n")
    return path


def manifest_fingerprint(data_dir: str | os.PathLike[str]) -> str:
    """SHA-256 of the manifest file: the training-data fingerprint stored with a run."""
    return sha256_file(manifest_path(data_dir))


def resolve_paths(df: pd.DataFrame, data_dir: str | os.PathLike[str]) -> list[str]:
    """Absolute image paths for the rows of ``df``."""
    root = manifest_path(data_dir).parent.resolve()
    return [str(root / p) for p in df["path"]]
