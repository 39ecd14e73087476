"""Dataset layouts: read each common ISIC layout into candidate manifest rows.

A *layout* knows how to find labels and image files in one source (a folder or
a CSV). Layouts are registered once in :data:`FORMATS` (name → :class:`Layout`);
:func:`detect_format` picks one from the files themselves (CSV headers, folder
structure) and :func:`read_source` returns a :class:`SourceRows`: candidate rows
(label decided, image file located, nothing decoded yet) plus rows rejected
with a reason. Decoding, de-duplication and splitting happen in
:mod:`skinlesion.data.prepare`.

Layouts:

==========  ================================================================
folders     one folder per class (any names, ``--label-map``); optional
            ``train/ valid/ test/`` parents keep their split (udacity
            dermatologist-ai)
isic2020    ISIC 2020 training CSV (``image_name, patient_id, …, target``; the
            v2 table's ``lesion_id`` is used too) with its JPEG folder and,
            if present, ``ISIC_2020_Training_Duplicates.csv``
ham10000    ``HAM10000_metadata.csv`` (``lesion_id, image_id, dx, …``),
            images in one or more folders
isic2017    ISIC 2017 ground truth (``image_id, melanoma,
            seborrheic_keratosis``) and ISIC 2016 (header-less
            ``ISIC_…, benign|malignant|0|1``); Training / Validation / Test
            files give the split
isic2019    ISIC 2019 ground truth, one-hot ``MEL NV BCC AK BKL DF VASC SCC
            UNK`` (also ISIC 2018 Task 3 with ``AKIEC``), optional
            ``…Metadata.csv`` for age, sex, site, lesion
archive     ISIC Archive download by ``isic image download``:
            ``metadata.csv`` with ``isic_id, diagnosis_1…5`` (or
            ``benign_malignant``), ``patient_id, lesion_id, …``
csv         any CSV with a path/filename (or image id) column and a label
            (0/1 or a name) or diagnosis column; optional ``split``,
            ``patient_id``, ``lesion_id``, ``source``, ... columns
==========  ================================================================
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from skinlesion.data.extensions import IMAGE_EXTENSIONS
from skinlesion.data.labels import LabelDecision, LabelMap, normalize_name, resolve_label
from skinlesion.data.metadata import METADATA_COLUMNS, normalize_metadata

logger = logging.getLogger(__name__)

_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})

# Split names found in folder names, file names and ``split`` columns.
_SPLIT_ALIASES: dict[str, str] = {
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


# === Tables ===


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


def _first(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    cols = set(columns)
    return next((c for c in candidates if c in cols), None)


# === Image lookup ===


def _walk(top: Path, skip: tuple[Path, ...]) -> Iterable[tuple[str, list[str]]]:
    """``os.walk`` in sorted order without hidden folders and without ``skip`` folders."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not _skipped(Path(dirpath) / d, skip))
        yield dirpath, sorted(filenames)


def _skipped(path: Path, skip: tuple[Path, ...]) -> bool:
    return bool(skip) and path.resolve() in skip


class ImageIndex:
    """Image files under a folder, found by id (file stem), built lazily with one walk."""

    def __init__(self, root: Path, skip: tuple[Path, ...] = ()) -> None:
        self.root = root
        self.skip = skip
        self._by_stem: dict[str, list[Path]] | None = None

    def _build(self) -> dict[str, list[Path]]:
        index: dict[str, list[Path]] = defaultdict(list)
        for dirpath, filenames in _walk(self.root, self.skip):
            for fname in filenames:
                p = Path(dirpath) / fname
                if not fname.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
                    index[p.stem].append(p)
        return index

    def find(self, image_id: str) -> tuple[Path | None, str | None]:
        """The file for ``image_id`` and a warning when several files share that id.

        When several match (an id in two folders), the shallowest path wins, then the
        alphabetically first: deterministic, and listed in the report.
        """
        if self._by_stem is None:
            self._by_stem = self._build()
        key = image_id
        if Path(image_id).suffix.lower() in IMAGE_EXTENSIONS:
            key = Path(image_id).stem
        hits = self._by_stem.get(key, [])
        if Path(image_id).suffix:
            exact = [h for h in hits if h.name == Path(image_id).name]
            hits = exact or hits
        if not hits:
            return None, None
        hits = sorted(hits, key=lambda p: (len(p.relative_to(self.root).parts), str(p)))
        warning = None
        if len(hits) > 1:
            warning = (f"{image_id}: {len(hits)} files share this id; used "
                       f"{hits[0].relative_to(self.root).as_posix()}")
        return hits[0], warning


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _split_from_name(name: str) -> str:
    """``train``/``val``/``test`` from a file or folder name (``ISIC-2017_Validation_…``)."""
    for token in re.split(r"[^a-z]+", name.lower()):
        if token in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[token]
    return ""


def _normalise_given_splits(parts: dict[str, str]) -> dict[str, str]:
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


def _add_row(src: SourceRows, *, image_id: str, file: Path | None, wanted: str,
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
        "image_id": image_id, "file": os.fspath(file), "original_path": _rel(file, src.root),
        "label": decision.label, "diagnosis": decision.diagnosis, **meta,
        "source": source, "source_full": source_full, "split": split,
    })


# === Layout readers ===


def _read_folders(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    del tables
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                     and not _skipped(d, src.skip))
    split_dirs = [d for d in subdirs if d.name.lower() in _SPLIT_ALIASES]
    if split_dirs:
        for d in subdirs:
            if d not in split_dirs:
                src.warnings.append(f"{d.name}/: ignored (beside split folders "
                                    f"{[s.name for s in split_dirs]})")
        parts = {d.name: _SPLIT_ALIASES[d.name.lower()] for d in split_dirs}
        given = _normalise_given_splits(parts)
        class_dirs = [(c, given[d.name]) for d in split_dirs for c in sorted(d.iterdir())
                      if c.is_dir() and not c.name.startswith(".") and not _skipped(c, src.skip)]
        for d in split_dirs:
            for f in sorted(d.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    src.reject(f.stem, _rel(f, root), "not inside a class folder")
    else:
        class_dirs = [(d, "") for d in subdirs]
    if not class_dirs:
        raise SourceError(f"{root}: no class folders found (expected e.g. benign/ and "
                          "malignant/, or train/<class>/ …)")
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
            src.reject(f.stem, f.name, "not inside a class folder")

    files: list[tuple[Path, Path, str]] = []
    for class_dir, split in class_dirs:
        for dirpath, filenames in _walk(class_dir, src.skip):
            for fname in filenames:
                if fname.startswith(".") or fname.lower() in _JUNK_FILES:
                    continue
                files.append((Path(dirpath) / fname, class_dir, split))
    stems: dict[str, int] = defaultdict(int)
    for f, _, _ in files:
        stems[f.stem] += 1
    source = root.resolve().name or "folders"
    for f, class_dir, split in files:
        # The file stem is the id (ISIC files are named by id); where two files share a
        # stem (img001.jpg in benign/ and malignant/) the relative path disambiguates.
        image_id = f.stem if stems[f.stem] == 1 else _rel(f.with_suffix(""), root).replace("/", "__")
        decision = resolve_label(class_dir.name, "", label_map)
        _add_row(src, image_id=image_id, file=f, wanted=_rel(f, root), decision=decision,
                 split=split, source=source)


def _read_isic2020(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    duplicates = _isic2020_duplicates(root, src)
    # v2 first: it has every v1 column plus lesion_id. An image listed by both tables
    # (v1 and v2 side by side) is read once.
    seen: set[str] = set()
    for table in sorted(tables, key=lambda t: ("v2" not in t.stem.lower(), t.name)):
        df = read_table(table)
        _require(df, table, ("image_name", "target"))
        repeated = 0
        for rec in df.to_dict("records"):
            image_id = rec["image_name"]
            if image_id in seen:
                repeated += 1
                continue
            seen.add(image_id)
            if image_id in duplicates:
                src.reject(image_id, image_id, duplicates[image_id])
                continue
            label = rec.get("target", "") or rec.get("benign_malignant", "")
            decision = resolve_label(label, rec.get("diagnosis", ""), label_map)
            if rec.get("target") and rec.get("benign_malignant"):
                decision = _cross_check(decision, rec["benign_malignant"], label_map)
            file, warn = index.find(image_id)
            _add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                     source="ISIC2020", patient_id=rec.get("patient_id", ""),
                     lesion_id=rec.get("lesion_id", ""), age=rec.get("age_approx", ""), sex=rec.get("sex", ""),
                     site=rec.get("anatom_site_general_challenge", rec.get("anatom_site_general", "")),
                     lookup_warning=warn)
        if repeated:
            src.warnings.append(f"{table.name}: {repeated} image(s) already listed by another "
                                "ground-truth table; read once")


def _isic2020_duplicates(root: Path, src: SourceRows) -> dict[str, str]:
    """Second members of the pairs in ``ISIC_2020_Training_Duplicates.csv``, if present."""
    out: dict[str, str] = {}
    for path in sorted(root.glob("*[Dd]uplicates*.csv")):
        try:
            df = read_table(path)
        except SourceError as exc:
            src.warnings.append(str(exc))
            continue
        if {"image_name_1", "image_name_2"} <= set(df.columns):
            for a, b in zip(df["image_name_1"], df["image_name_2"], strict=True):
                out[b] = f"listed as a duplicate of {a} in {path.name}"
    return out


def _read_ham10000(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    for table in tables:
        df = read_table(table)
        _require(df, table, ("lesion_id", "image_id", "dx"))
        for rec in df.to_dict("records"):
            image_id = rec["image_id"]
            file, warn = index.find(image_id)
            _add_row(src, image_id=image_id, file=file, wanted=image_id,
                     decision=resolve_label("", rec["dx"], label_map), source="HAM10000",
                     lesion_id=rec["lesion_id"], age=rec.get("age", ""), sex=rec.get("sex", ""),
                     site=rec.get("localization", ""), lookup_warning=warn)


def _read_isic2017(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    given = _normalise_given_splits({t.name: _split_from_name(t.stem) for t in tables})
    for table in tables:
        df = read_table(table)
        if "melanoma" in df.columns or "label" not in df.columns:
            _require(df, table, ("image_id", "melanoma", "seborrheic_keratosis"))
        year = _year(table.name, default="2017")
        for rec in df.to_dict("records"):
            image_id = rec.get("image_id", "")
            if "melanoma" in df.columns:
                mel, sk = (_float(rec.get("melanoma")), _float(rec.get("seborrheic_keratosis")))
                if mel is None or sk is None or mel not in (0, 1) or sk not in (0, 1) or mel + sk > 1:
                    decision = LabelDecision(None, "", "ground truth must be 0/1 with at most one "
                                             f"class set (melanoma={rec.get('melanoma')!r}, "
                                             f"seborrheic_keratosis={rec.get('seborrheic_keratosis')!r})")
                else:
                    name = "melanoma" if mel else "seborrheic keratosis" if sk else "nevus"
                    decision = resolve_label("", name, label_map)
            else:
                decision = resolve_label(rec.get("label", ""), "", label_map)
            file, warn = index.find(image_id)
            _add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                     split=given[table.name], source=f"ISIC{year}", lookup_warning=warn)


_ONEHOT = ("mel", "nv", "bcc", "ak", "akiec", "bkl", "df", "vasc", "scc", "unk")


def _read_isic2019(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    meta = _isic2019_metadata(root, src)
    given = _normalise_given_splits({t.name: _split_from_name(t.stem) for t in tables})
    for table in tables:
        df = read_table(table)
        _require(df, table, ("image",))
        classes = [c for c in df.columns if c in _ONEHOT]
        if not classes:
            raise SourceError(f"{table}: no one-hot class columns (MEL, NV, BCC, …); columns "
                              f"found: {list(df.columns)}")
        year = _year(table.name, default="2019")
        for rec in df.to_dict("records"):
            image_id = rec.get("image", "")
            values = {c: _float(rec.get(c)) for c in classes}
            hot = [c for c, v in values.items() if v == 1]
            if any(v not in (0, 1) for v in values.values()) or len(hot) != 1:
                decision = LabelDecision(None, "", "one-hot ground truth must have exactly one "
                                         f"class set to 1 (got {hot or 'none'})")
            else:
                decision = resolve_label("", hot[0], label_map)
            m = meta.get(image_id, {})
            file, warn = index.find(image_id)
            _add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                     split=given[table.name], source=f"ISIC{year}", lesion_id=m.get("lesion_id", ""),
                     age=m.get("age_approx", ""), sex=m.get("sex", ""),
                     site=m.get("anatom_site_general", ""), lookup_warning=warn)


def _isic2019_metadata(root: Path, src: SourceRows) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for path in sorted(root.glob("*[Mm]etadata*.csv")):
        header = read_header(path) or []
        if "image" not in header:
            continue
        try:
            df = read_table(path)
        except SourceError as exc:
            src.warnings.append(str(exc))
            continue
        for rec in df.to_dict("records"):
            out.setdefault(rec["image"], rec)
        src.tables.append(path)
    return out


def _read_archive(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    for table in tables:
        df = read_table(table)
        _require(df, table, ("isic_id",))
        diag_cols = [c for c in ("diagnosis_5", "diagnosis_4", "diagnosis_3", "diagnosis_2")
                     if c in df.columns]
        for rec in df.to_dict("records"):
            image_id = rec["isic_id"]
            # diagnosis_1 is the benign/malignant/indeterminate level of the ISIC taxonomy;
            # the deepest filled level is the most specific diagnosis.
            label = rec.get("diagnosis_1", "") or rec.get("benign_malignant", "")
            diagnosis = next((rec[c] for c in diag_cols if rec.get(c)), rec.get("diagnosis", ""))
            decision = resolve_label(label, diagnosis, label_map)
            file, warn = index.find(image_id)
            _add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                     source="ISIC-archive", patient_id=rec.get("patient_id", ""),
                     lesion_id=rec.get("lesion_id", ""), age=rec.get("age_approx", ""),
                     sex=rec.get("sex", ""), site=rec.get("anatom_site_general", ""),
                     lookup_warning=warn)


_PATH_COLUMNS = ("path", "filepath", "file_path", "filename", "file_name", "file", "image_path",
                 "image_file", "img_path", "relative_path")
_ID_COLUMNS = ("image_id", "isic_id", "image_name", "image", "id")
_LABEL_COLUMNS = ("label", "target", "class", "benign_malignant", "malignant", "y")
_DIAGNOSIS_COLUMNS = ("diagnosis", "dx", "diagnosis_1")
_ORIGIN = re.compile(r"^[^\s:@]+@[0-9A-Fa-f]+:(?P<dataset>.+)$")


def _read_csv(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    for table in tables:
        df = read_table(table)
        cols = list(df.columns)
        path_col, id_col = _first(cols, _PATH_COLUMNS), _first(cols, _ID_COLUMNS)
        label_col, diag_col = _first(cols, _LABEL_COLUMNS), _first(cols, _DIAGNOSIS_COLUMNS)
        if not (path_col or id_col) or not (label_col or diag_col):
            raise SourceError(
                f"{table}: needs a path or filename column (one of {list(_PATH_COLUMNS)}, or an "
                f"image id column {list(_ID_COLUMNS)}) and a label or diagnosis column (one of "
                f"{list(_LABEL_COLUMNS + _DIAGNOSIS_COLUMNS)}); columns found: {cols}")
        index = ImageIndex(root, src.skip)
        default_source = table.parent.resolve().name or table.stem
        patient_col = _first(cols, METADATA_COLUMNS["patient_id"])
        lesion_col = _first(cols, METADATA_COLUMNS["lesion_id"])
        age_col = _first(cols, METADATA_COLUMNS["age"])
        sex_col = _first(cols, METADATA_COLUMNS["sex"])
        site_col = _first(cols, METADATA_COLUMNS["site"])
        source_col = _first(cols, ("source", "dataset"))
        split_col = _first(cols, ("split", "set", "subset", "partition", "fold_split"))
        for line_no, rec in enumerate(df.to_dict("records"), start=2):
            raw_path = rec.get(path_col, "") if path_col else ""
            image_id = (rec.get(id_col, "") if id_col else "") or Path(raw_path.replace("\\", "/")).stem
            if not image_id:
                src.reject(f"line {line_no}", "", "empty path and image id")
                continue
            split = ""
            if split_col and rec.get(split_col):
                split = _SPLIT_ALIASES.get(normalize_name(rec[split_col]), "?")
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
            _add_row(src, image_id=image_id, file=file, wanted=raw_path or image_id,
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


# === Helpers ===


def _require(df: pd.DataFrame, table: Path, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceError(f"{table}: missing required column(s) {missing}; columns found: "
                          f"{list(df.columns)}")


def _cross_check(decision: LabelDecision, name: str, label_map: LabelMap) -> LabelDecision:
    """Reject when a second label column (``benign_malignant``) contradicts the first."""
    if decision.label is None:
        return decision
    other = resolve_label(name, "", label_map)
    if other.label is not None and other.label != decision.label:
        return LabelDecision(None, decision.diagnosis,
                             f"target {decision.label} contradicts benign_malignant {name!r}")
    return decision


def _float(value: object) -> float | None:
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _year(name: str, default: str) -> str:
    m = re.search(r"(20\d\d)", name)
    return m.group(1) if m else default


# === Registry and detection ===


def _matches_isic2020(h: list[str] | None) -> bool:
    return h is not None and {"image_name", "patient_id", "target"} <= set(h)


def _matches_ham(h: list[str] | None) -> bool:
    return h is not None and {"lesion_id", "image_id", "dx"} <= set(h)


def _matches_isic2017(h: list[str] | None) -> bool:
    return h is None or {"image_id", "melanoma", "seborrheic_keratosis"} <= set(h)


def _matches_isic2019(h: list[str] | None) -> bool:
    return h is not None and "image" in h and len(set(h) & set(_ONEHOT)) >= 3


def _matches_archive(h: list[str] | None) -> bool:
    return h is not None and "isic_id" in h and bool({"diagnosis_1", "benign_malignant"} & set(h))


def _matches_csv(h: list[str] | None) -> bool:
    return (h is not None and bool(_first(h, _PATH_COLUMNS) or _first(h, _ID_COLUMNS))
            and bool(_first(h, _LABEL_COLUMNS) or _first(h, _DIAGNOSIS_COLUMNS)))


FORMATS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("isic2020", "ISIC 2020 training CSV (image_name, patient_id, …, target) + JPEG folder",
           _matches_isic2020, _read_isic2020),
    Layout("ham10000", "HAM10000_metadata.csv (lesion_id, image_id, dx, …) + image folders",
           _matches_ham, _read_ham10000),
    Layout("isic2017", "ISIC 2016/2017 ground truth (image_id, melanoma, seborrheic_keratosis)",
           _matches_isic2017, _read_isic2017),
    Layout("isic2019", "ISIC 2018/2019 one-hot ground truth (image, MEL, NV, BCC, …)",
           _matches_isic2019, _read_isic2019),
    Layout("archive", "ISIC Archive download: metadata.csv (isic_id, diagnosis_1…5, …)",
           _matches_archive, _read_archive),
    Layout("csv", "any CSV with a path/filename column and a label or diagnosis column",
           _matches_csv, _read_csv, specific=False),
    Layout("folders", "one folder per class (optionally under train/ valid/ test/)",
           None, _read_folders, specific=False),
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
    has_id = bool(_first(header, _ID_COLUMNS) or _first(header, _PATH_COLUMNS))
    return has_id and any(_first(header, names) for names in METADATA_COLUMNS.values())


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
