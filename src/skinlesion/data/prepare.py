"""``prepare``: sources → one manifest, patient-grouped splits, pre-resized images.

The orchestrator reads like its steps::

    read sources → join metadata → fingerprint files → drop duplicates → resize images
    → split → write

Everything a user needs to trust the result lands in ``DATA_DIR``:

* ``manifest.csv`` — one row per kept image (schema in :mod:`skinlesion.data.manifest`),
  with the extra columns ``original_path``, ``sha256``, ``width``, ``height``
  (``source_full`` and ``fold`` where they apply);
* ``images/<image_id>.jpg`` — the resized images;
* ``prepare_report.json`` — settings, counts, per-split label and source counts,
  every rejected row with its reason, metadata coverage and every metadata value
  that could not be used.

Bad rows never stop the run and are never kept silently: they are listed in the
report. With ``strict=True`` any rejection is an error (:class:`PrepareError`)
and no manifest is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion import INTENDED_USE, __version__
from skinlesion.data.images import MAX_PIXELS, ImageError, read_image_bytes
from skinlesion.data.labels import LabelMap
from skinlesion.data.layouts.base import CANDIDATE_FIELDS, SourceError, SourceRows
from skinlesion.data.layouts.detect import read_source
from skinlesion.data.manifest import MANIFEST_COLUMNS, write_manifest
from skinlesion.data.metadata_tables import (
    MetadataJoin,
    coverage_summary,
    join_metadata,
    kept_only,
    metadata_coverage,
    missingness_by_label,
)
from skinlesion.data.resize import (
    DEFAULT_QUALITY,
    DEFAULT_SIZE,
    ResizeTask,
    default_workers,
    resize_images,
)
from skinlesion.data.splits import (
    DEFAULT_FRACTIONS,
    SPLIT_NAMES,
    assign_folds,
    assign_splits,
    group_ids,
)
from skinlesion.utils.atomic import atomic_write_json
from skinlesion.utils.hashing import sha256_file
from skinlesion.utils.progress import Progress, ProgressEvent

logger = logging.getLogger(__name__)

REPORT_NAME = "prepare_report.json"
IMAGES_DIR = "images"
_SETTINGS_NAME = ".prepare_settings.json"



class PrepareError(RuntimeError):
    """``strict`` prepare found rejected rows; the report lists them.

    Attributes:
        report_path: The report written before raising.
        summary: One-line summary.
    """

    def __init__(self, message: str, report_path: Path, summary: str) -> None:
        super().__init__(message)
        self.report_path = report_path
        self.summary = summary


@dataclass(frozen=True)
class PrepareSettings:
    """Settings of one ``prepare`` run (saved in the report).

    Attributes:
        fmt: ``auto`` or a layout name, for every source.
        label_map: User overrides ``{name: 0 | 1 | None}`` on top of the default map.
        fractions: Train, val, test fractions.
        seed: Split seed.
        folds: Number of cross-validation folds over train+val, or None.
        size: Shorter side of the prepared images in pixels (never upscaled).
        quality: JPEG quality of the prepared images.
        workers: Processes for resizing (None: every available core).
        strict: Any rejected row is an error.
        max_pixels: Decompression-bomb limit per image.
    """

    fmt: str = "auto"
    label_map: dict[str, int | None] = field(default_factory=dict)
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 1
    folds: int | None = None
    size: int = DEFAULT_SIZE
    quality: int = DEFAULT_QUALITY
    workers: int | None = None
    strict: bool = False
    max_pixels: int = MAX_PIXELS


@dataclass
class PrepareResult:
    """What ``prepare`` wrote.

    Attributes:
        manifest: The manifest as written.
        report: The report as written.
        manifest_path: Path of ``manifest.csv``.
        report_path: Path of ``prepare_report.json``.
        summary: One-line human summary.
        metadata_summary: One line on metadata coverage and issues.
    """

    manifest: pd.DataFrame
    report: dict[str, Any]
    manifest_path: Path
    report_path: Path
    summary: str
    metadata_summary: str = ""


def prepare(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    settings: PrepareSettings | None = None,
    progress: Progress | None = None,
    *,
    metadata: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
) -> PrepareResult:
    """Ingest ``sources`` into ``out_dir``: manifest, resized images and report.

    Args:
        sources: Folders or CSV files, each in one of the layouts of
            :mod:`skinlesion.data.layouts`. Several combine into one manifest; on a
            duplicate, the earlier source wins.
        out_dir: The data folder to write (created if needed).
        settings: Run settings (defaults: auto-detect, 80/10/10, seed 1, 512 px).
        progress: Gets image counts of the tasks ``"reading"`` and ``"resizing"``.
        metadata: Metadata sidecar CSV(s) joined on image id (``image_id`` plus any of
            ``age``/``age_approx``, ``sex``, ``anatom_site_general``/``localization``,
            ``patient_id``, ``lesion_id``); they fill cells the sources left empty (see
            :mod:`skinlesion.data.metadata_tables` for the precedence).

    Returns:
        A :class:`PrepareResult`.

    Raises:
        SourceError: if a source or a metadata sidecar cannot be read at all (unknown
            layout, missing columns).
        PrepareError: with ``strict``, if any row was rejected.
    """
    settings = settings or PrepareSettings()
    started = time.monotonic()
    out = Path(out_dir)
    _make_out_dir(out)
    label_map = LabelMap(settings.label_map)

    # === Read every source ===
    _check_out_dir(sources, out)
    read = [read_source(s, label_map, settings.fmt, skip=[out]) for s in sources]
    sidecars = _metadata_paths(metadata)
    joined = join_metadata(read, sidecars)
    candidates = _candidates(read)
    rejected = [r for src in read for r in src.rejected]
    notes = [w for src in read for w in src.warnings] + joined.warnings

    # === Fingerprint files, drop unreadable files and duplicates ===
    candidates, dropped = _fingerprint(candidates, settings, progress)
    rejected += dropped
    candidates, dropped = _drop_duplicates(candidates)
    rejected += dropped
    if settings.strict and rejected:
        _fail_strict(out, read, candidates, rejected, notes, settings, started)

    # === Resize ===
    candidates, dropped, reused = _resize(candidates, out, settings, progress)
    rejected += dropped
    if settings.strict and rejected:
        _fail_strict(out, read, candidates, rejected, notes, settings, started)

    # === Split ===
    notes += _split(candidates, settings)

    # === Write ===
    manifest = _manifest_frame(candidates)
    manifest_path = write_manifest(manifest, out)
    report = _report(read, manifest, rejected, notes, settings, started, reused=reused,
                     kept_by_source=Counter(candidates["source_path"]))
    _add_metadata_report(report, manifest, joined, sidecars)
    report["manifest_sha256"] = sha256_file(manifest_path)
    report_path = atomic_write_json(out / REPORT_NAME, report)
    return _result(manifest, report, manifest_path, report_path)


# === Steps ===


def _metadata_paths(metadata: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
                    ) -> list[Path]:
    if metadata is None:
        return []
    if isinstance(metadata, (str, os.PathLike)):
        return [Path(metadata)]
    return [Path(p) for p in metadata]


def _candidates(read: list[SourceRows]) -> pd.DataFrame:
    frames = []
    for order, src in enumerate(read):
        df = pd.DataFrame(src.rows, columns=list(CANDIDATE_FIELDS))
        df["source_order"] = order
        df["source_path"] = src.source_label()
        frames.append(df)
    # Order decides which of two duplicates is kept: earlier sources first, then the
    # source's own order (table rows; folder files sorted by path), so the first
    # occurrence wins and the result does not depend on file-system listing order.
    if not frames:
        return pd.DataFrame(columns=[*CANDIDATE_FIELDS, "source_order", "source_path"])
    return pd.concat(frames, ignore_index=True)


def _make_out_dir(out: Path) -> None:
    """Create DATA_DIR, or say clearly why it cannot be (an existing file, a file on the way)."""
    if out.exists() and not out.is_dir():
        raise SourceError(f"--out {out}: is an existing file, not a folder; give a folder for "
                          "the prepared data (DATA_DIR holds manifest.csv and the images)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None


def _check_out_dir(sources: Sequence[str | os.PathLike[str]], out: Path) -> None:
    """DATA_DIR may lie inside a source folder (it is then skipped), but not be one."""
    target = out.resolve()
    for s in sources:
        p = Path(s)
        root = p if p.is_dir() else p.parent
        if root.resolve() == target:
            raise SourceError(f"{s}: --out {out} is the source folder itself; write the "
                              "prepared data to another folder")


def _fingerprint(df: pd.DataFrame, settings: PrepareSettings,
                 progress: Progress | None) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """SHA-256 of every file (threads: hashing releases the GIL); unreadable files out."""
    total = len(df)

    def one(file: str) -> tuple[str | None, str | None]:
        try:
            data = read_image_bytes(file)
        except ImageError as exc:
            return None, exc.reason
        return hashlib.sha256(data).hexdigest(), None

    workers = settings.workers or default_workers()
    hashes: list[tuple[str | None, str | None]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, res in enumerate(pool.map(one, df["file"].tolist()), start=1):
            hashes.append(res)
            if progress and (i == total or i % 64 == 0):
                progress(ProgressEvent("reading", done=i, total=total, finished=i == total))
    df = df.copy()
    df["sha256"] = [h for h, _ in hashes]
    bad = [i for i, (_, reason) in enumerate(hashes) if reason]
    rejected = [_rejection(df.loc[i], hashes[i][1] or "") for i in bad]
    return df.drop(index=bad).reset_index(drop=True), rejected


def _drop_duplicates(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Exact byte duplicates and repeated image ids: keep the first, list the rest.

    Identical files with different labels are all dropped: keeping either would be a
    silent mislabel.
    """
    rejected: list[dict[str, str]] = []
    drop: set[int] = set()
    for _, idx in df.groupby("sha256", sort=False).groups.items():
        if len(idx) < 2:
            continue
        rows = df.loc[sorted(idx)]
        first = rows.iloc[0]
        if rows["label"].nunique() > 1:
            ids = sorted(rows["image_id"].astype(str))
            for i, row in rows.iterrows():
                drop.add(int(i))
                rejected.append(_rejection(row, f"identical files with conflicting labels "
                                                f"({', '.join(ids[:5])})"))
            continue
        for i, row in rows.iloc[1:].iterrows():
            drop.add(int(i))
            rejected.append(_rejection(row, f"exact duplicate of {first['image_id']} "
                                            f"({first['source_path']}: {first['original_path']})"))
    df = df.drop(index=sorted(drop))
    dup_id = df["image_id"].duplicated(keep="first")
    for _, row in df[dup_id].iterrows():
        first = df[df["image_id"] == row["image_id"]].iloc[0]
        rejected.append(_rejection(row, f"image_id already used by {first['source_path']}: "
                                        f"{first['original_path']} (different bytes)"))
    return df[~dup_id].reset_index(drop=True), rejected


def _resize(df: pd.DataFrame, out: Path, settings: PrepareSettings,
            progress: Progress | None) -> tuple[pd.DataFrame, list[dict[str, str]], int]:
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    _remove_partial_files(images)
    overwrite = _settings_changed(images, settings)
    df = df.copy()
    df["path"] = [f"{IMAGES_DIR}/{name}.jpg" for name in output_names(df["image_id"].tolist())]
    tasks = [ResizeTask(src=f, dst=os.fspath(out / p), size=settings.size,
                        quality=settings.quality, max_pixels=settings.max_pixels,
                        overwrite=overwrite)
             for f, p in zip(df["file"], df["path"], strict=True)]
    results = resize_images(tasks, workers=settings.workers, progress=progress)
    df["width"] = [r.width for r in results]
    df["height"] = [r.height for r in results]
    bad = [i for i, r in enumerate(results) if not r.ok]
    rejected = [_rejection(df.loc[i], results[i].reason or "unreadable image") for i in bad]
    reused = sum(1 for r in results if r.skipped)
    return df.drop(index=bad).reset_index(drop=True), rejected, reused


def _remove_partial_files(images: Path) -> None:
    """Delete temp files an interrupted run left (atomic writes name them ``.<name>.…``)."""
    for p in images.glob(".*.jpg.*"):
        if p.is_file():
            p.unlink(missing_ok=True)


def _settings_changed(images: Path, settings: PrepareSettings) -> bool:
    """Record the image settings; True if images already there were made differently."""
    wanted = {"size": settings.size, "quality": settings.quality, "draft": True}
    marker = images / _SETTINGS_NAME
    previous: dict[str, Any] | None = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
    has_images = any(images.glob("*.jpg"))
    changed = has_images and previous != wanted
    if changed:
        logger.info("%s: image settings changed (%s → %s); preparing every image again",
                    images, previous, wanted)
    if previous != wanted:
        atomic_write_json(marker, wanted)
    return changed


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_names(image_ids: Sequence[str]) -> list[str]:
    """File names (without extension) for ``image_ids``: safe, unique, stable.

    An id made only of letters, digits, ``.``, ``_`` and ``-`` is used as is; any
    other id is sanitised and gets 8 hex digits of its SHA-1, so two ids can never
    share a file, even on a case-insensitive file system.
    """
    names: list[str] = []
    used: set[str] = set()
    for image_id in image_ids:
        base = _SAFE.sub("_", str(image_id)).strip("._")[:120] or "image"
        name = base
        if name != image_id or name.lower() in used:
            name = f"{base}-{hashlib.sha1(str(image_id).encode()).hexdigest()[:8]}"
        n = 2
        while name.lower() in used:
            name = f"{base}-{hashlib.sha1(str(image_id).encode()).hexdigest()[:8]}-{n}"
            n += 1
        used.add(name.lower())
        names.append(name)
    return names


def _split(df: pd.DataFrame, settings: PrepareSettings) -> list[str]:
    """Set the ``split`` column (a source's own split kept where it has one) and, with
    ``folds``, the ``fold`` column; return the notes of the split."""
    split, split_notes = assign_splits(df, settings.fractions, settings.seed, given=df["split"])
    df["split"] = split
    if settings.folds:
        df["fold"] = assign_folds(df, settings.folds, settings.seed)
    return split_notes


def _manifest_frame(df: pd.DataFrame) -> pd.DataFrame:
    extra = ["original_path", "sha256", "width", "height"]
    if (df["source_full"].astype(str) != "").any():
        extra.append("source_full")
    if "fold" in df.columns:
        extra.append("fold")
    out = df[[c for c in MANIFEST_COLUMNS if c in df.columns] + extra].copy()
    out["label"] = out["label"].astype("int64")
    return out.sort_values("image_id", kind="stable").reset_index(drop=True)


# === Report ===


def _rejection(row: pd.Series, reason: str) -> dict[str, str]:
    return {"source": str(row.get("source_path", "")), "image_id": str(row.get("image_id", "")),
            "file": str(row.get("original_path", "") or row.get("file", "")), "reason": reason}


def reason_kind(reason: str) -> str:
    """Coarse category of a rejection reason, for counts in the summary."""
    text = reason.lower()
    for kind, words in (("duplicate", ("duplicate", "identical files", "already used")),
                        ("unsafe path", ("escapes",)),
                        ("missing file", ("not found",)),
                        ("excluded label", ("excluded",)),
                        ("unknown label", ("unknown label", "unknown diagnosis", "no label")),
                        ("conflicting label", ("contradicts", "one-hot", "ground truth")),
                        ("bad split", ("split",)),
                        ("empty file", ("empty file",))):
        if any(w in text for w in words):
            return kind
    return "unreadable image"


def _split_stats(df: pd.DataFrame) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for name in SPLIT_NAMES:
        part = df[df["split"] == name]
        n = len(part)
        stats[name] = {
            "images": n,
            "groups": len(set(group_ids(part))) if n else 0,
            "fraction": round(n / len(df), 4) if len(df) else 0.0,
            "labels": {str(k): int(v) for k, v in sorted(part["label"].value_counts().items())},
            "malignant_fraction": round(float(part["label"].mean()), 4) if n else None,
            "sources": {str(k): int(v) for k, v in sorted(part["source"].value_counts().items())},
        }
    return stats


def _report(read: list[SourceRows], manifest: pd.DataFrame, rejected: list[dict[str, str]],
            notes: list[str], settings: PrepareSettings, started: float, *,
            reused: int | None = None, strict_failed: bool = False,
            kept_by_source: Counter[str] | None = None) -> dict[str, Any]:
    rejected = sorted(rejected, key=lambda r: (r["source"], r["image_id"], r["reason"]))
    by_source = Counter(r["source"] for r in rejected)
    report: dict[str, Any] = {
        "skinlesion_version": __version__,
        "intended_use": INTENDED_USE,
        "status": "failed (strict)" if strict_failed else "ok",
        "sources": [{
            "path": src.source_label(), "format": src.format,
            "tables": [t.name for t in src.tables],
            "candidates": len(src.rows),
            "rejected": by_source.get(src.source_label(), 0),
            **({"kept": kept_by_source.get(src.source_label(), 0)}
               if kept_by_source is not None else {}),
        } for src in read],
        "settings": {
            "format": settings.fmt, "split": list(settings.fractions), "seed": settings.seed,
            "folds": settings.folds, "size": settings.size, "quality": settings.quality,
            "workers": settings.workers or default_workers(), "strict": settings.strict,
            "max_pixels": settings.max_pixels, "label_map_overrides": settings.label_map,
        },
        "counts": {
            "rows_read": sum(len(s.rows) + len(s.rejected) for s in read),
            "kept": 0 if strict_failed else len(manifest),
            "rejected": len(rejected),
            "images_reused": reused,
        },
        "rejected_by_reason": dict(Counter(reason_kind(r["reason"]) for r in rejected)
                                   .most_common()),
        "rejected": rejected,
        "warnings": notes,
        "duration_s": round(time.monotonic() - started, 2),
    }
    if not strict_failed and "split" in manifest.columns:
        report["counts"]["labels"] = {str(k): int(v) for k, v in
                                      sorted(manifest["label"].value_counts().items())}
        report["splits"] = _split_stats(manifest)
        if "fold" in manifest.columns:
            folds = manifest[manifest["fold"] >= 0]
            report["folds"] = {str(f): {"images": len(g), "labels": {
                str(k): int(v) for k, v in sorted(g["label"].value_counts().items())}}
                for f, g in folds.groupby("fold")}
    return report


def _metadata_report(manifest: pd.DataFrame, joined: MetadataJoin) -> dict[str, Any]:
    """Coverage, missingness vs label, tables joined, and per-row issues and conflicts
    (for images that made it into the manifest)."""
    ids = manifest["image_id"].astype(str).tolist()
    return {
        "metadata_coverage": metadata_coverage(manifest),
        "metadata_missingness": missingness_by_label(manifest),
        "metadata_tables": joined.tables,
        "metadata_issues": kept_only(joined.issues, ids),
        "metadata_conflicts": kept_only(joined.conflicts, ids),
    }


def _add_metadata_report(report: dict[str, Any], manifest: pd.DataFrame, joined: MetadataJoin,
                         sidecars: list[Path]) -> None:
    """Add the sidecars given, the metadata report and the metadata issue count to ``report``."""
    report["settings"]["metadata"] = [os.fspath(p) for p in sidecars]
    report.update(_metadata_report(manifest, joined))
    report["counts"]["metadata_issues"] = len(report["metadata_issues"])


def _result(manifest: pd.DataFrame, report: dict[str, Any], manifest_path: Path,
            report_path: Path) -> PrepareResult:
    """The :class:`PrepareResult` of a finished run, its two summary lines logged."""
    summary = _summary(report, manifest_path)
    metadata_summary = coverage_summary(report["metadata_coverage"],
                                        len(report["metadata_issues"]))
    logger.info(summary)
    logger.info(metadata_summary)
    return PrepareResult(manifest, report, manifest_path, report_path, summary,
                         metadata_summary)


def _summary(report: dict[str, Any], manifest_path: Path) -> str:
    counts = report["counts"]
    splits = report.get("splits", {})
    split_txt = " / ".join(f"{name} {splits[name]['images']:,}" for name in SPLIT_NAMES
                           if name in splits)
    labels = counts.get("labels", {})
    kept = counts["kept"]
    mal = f", {100 * labels.get('1', 0) / kept:.1f}% malignant" if kept else ""
    rej = counts["rejected"]
    why = ", ".join(f"{n} {k}" for k, n in report["rejected_by_reason"].items())
    rej_txt = f"{rej:,} rejected ({why}; see {REPORT_NAME})" if rej else "0 rejected"
    return (f"{kept:,} images kept ({split_txt}{mal}), {rej_txt} → {manifest_path}")


def _fail_strict(out: Path, read: list[SourceRows], candidates: pd.DataFrame,
                 rejected: list[dict[str, str]], notes: list[str], settings: PrepareSettings,
                 started: float) -> None:
    report = _report(read, candidates, rejected, notes, settings, started, strict_failed=True)
    report_path = atomic_write_json(out / REPORT_NAME, report)
    why = ", ".join(f"{n} {k}" for k, n in report["rejected_by_reason"].items())
    summary = (f"--strict: {len(rejected):,} row(s) rejected ({why}); no manifest written; "
               f"see {report_path}")
    raise PrepareError(summary, report_path, summary)
