"""Train/test overlap: does the scored split hold images the run was trained or validated on?

A model scored on images it has seen is flattered, and nothing in the numbers says so:
evaluating a run on *another* prepared folder (the demo's model on isic-dev, say) can
silently include its own training images. ``train`` therefore records the ids and
content hashes of its training and validation images in ``RUN_DIR/training_images.json``
(hashes of the original files, as ``prepare`` stores them in ``manifest.csv``), and
``evaluate`` and ``compare`` look every scored image up there — by hash, so a renamed
copy is found, and by id. Runs trained before that file existed fall back to the
training manifest named by ``config.yaml``, if it is still there.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion.data.manifest import manifest_path, read_manifest
from skinlesion.runspec import training_data_dir
from skinlesion.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

TRAINING_IMAGES_FILE = "training_images.json"
HASH_CHARS = 16
"""Hash prefix stored (64 bits): plenty to tell images apart, a quarter of the size."""

SPLITS = ("train", "val")
MAX_LISTED = 50


def _column(df: pd.DataFrame, name: str) -> list[str]:
    if name not in df:
        return []
    return [str(v) for v in df[name].fillna("").astype(str) if str(v)]


def training_images_record(train: pd.DataFrame, val: pd.DataFrame,
                           data_fingerprint: str = "") -> dict[str, Any]:
    """The compact record of a run's training and validation images.

    Args:
        train: Training rows of the manifest (``image_id``, optionally ``sha256``).
        val: Validation rows.
        data_fingerprint: SHA-256 of the training manifest.

    Returns:
        ``{"hash_chars": 16, "data_fingerprint": ..., "splits": {"train": {"image_id":
        [...], "sha256": [...]}, "val": {...}}}`` (hash prefixes of the original files).
    """
    splits = {}
    for name, rows in (("train", train), ("val", val)):
        splits[name] = {"image_id": _column(rows, "image_id"),
                        "sha256": [h[:HASH_CHARS] for h in _column(rows, "sha256")]}
    return {"hash_chars": HASH_CHARS, "data_fingerprint": data_fingerprint, "splits": splits}


def write_training_images(run_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``RUN_DIR/training_images.json`` atomically."""
    return atomic_write_json(Path(run_dir) / TRAINING_IMAGES_FILE, record)


def load_training_images(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str]:
    """The run's record of training/validation images and where it came from.

    Reads ``RUN_DIR/training_images.json``; for older runs, rebuilds it from the manifest
    of ``config.yaml``'s ``data_dir`` when that still exists.

    Returns:
        ``(record or None, source description)``.
    """
    run = Path(run_dir)
    path = run / TRAINING_IMAGES_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8")), str(path)
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("%s: unreadable (%s); cannot check train/test overlap", path, exc)
            return None, f"{path} (unreadable)"

    data_dir = training_data_dir(run)
    if data_dir is None:
        return None, "the run records no training images and its training data are gone"
    try:
        manifest = read_manifest(data_dir)
    except (OSError, ValueError) as exc:
        return None, f"the training manifest is unreadable ({exc})"
    record = training_images_record(manifest[manifest["split"] == "train"],
                                    manifest[manifest["split"] == "val"])
    return record, f"{manifest_path(data_dir)} (named by the run; the run predates " \
                   f"{TRAINING_IMAGES_FILE})"


def find_overlap(rows: pd.DataFrame, record: dict[str, Any]) -> pd.DataFrame:
    """Scored rows that were among the run's training or validation images.

    Args:
        rows: Manifest rows to be scored (``image_id``, optionally ``sha256``).
        record: From :func:`training_images_record` / :func:`load_training_images`.

    Returns:
        ``image_id``, ``seen_in`` (``train`` or ``val``) and ``matched_by`` (``sha256``
        or ``image_id``) for each overlapping row, in ``rows`` order.
    """
    chars = int(record.get("hash_chars") or HASH_CHARS)
    by_hash: dict[str, str] = {}
    by_id: dict[str, str] = {}
    for split in SPLITS:
        part = (record.get("splits") or {}).get(split) or {}
        by_hash.update({h[:chars]: split for h in part.get("sha256", []) if h})
        by_id.update({i: split for i in part.get("image_id", []) if i})
    hashes = rows["sha256"].fillna("").astype(str).str[:chars] if "sha256" in rows else None
    out = []
    for pos, image_id in enumerate(rows["image_id"].astype(str)):
        h = hashes.iloc[pos] if hashes is not None else ""
        if h and h in by_hash:
            out.append({"image_id": image_id, "seen_in": by_hash[h], "matched_by": "sha256"})
        elif image_id in by_id:
            out.append({"image_id": image_id, "seen_in": by_id[image_id], "matched_by": "image_id"})
    return pd.DataFrame(out, columns=["image_id", "seen_in", "matched_by"])


def overlap_summary(rows: pd.DataFrame, run_dir: str | os.PathLike[str], *,
                    excluded: bool) -> tuple[dict[str, Any], pd.DataFrame]:
    """Check ``rows`` against the run's training data; the JSON block and the matches.

    Returns:
        ``({"checked", "source", "n_checked", "n_overlap", "by_split", "excluded",
        "images", "warning"}, matches)``.
    """
    record, source = load_training_images(run_dir)
    if record is None:
        return {"checked": False, "source": source, "n_checked": len(rows), "n_overlap": None,
                "excluded": False}, pd.DataFrame(columns=["image_id", "seen_in", "matched_by"])
    matches = find_overlap(rows, record)
    by_split = {s: int((matches["seen_in"] == s).sum()) for s in SPLITS}
    block: dict[str, Any] = {
        "checked": True, "source": source, "n_checked": len(rows), "n_overlap": len(matches),
        "by_split": by_split, "excluded": bool(excluded and len(matches)),
        "images": matches.head(MAX_LISTED).to_dict("records"),
    }
    if len(matches):
        seen = " and ".join(f"{n} in its {s} split" for s, n in by_split.items() if n)
        block["warning"] = (
            f"{len(matches)} of the {len(rows)} images evaluated were seen by the run in training "
            f"({seen}): " + ("they were left out (--exclude-overlap)." if excluded else
                            "every number here is optimistic. Rerun with --exclude-overlap "
                            "to leave them out."))
    return block, matches
