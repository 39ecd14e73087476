"""Scoring a manifest split through the one ``Predictor``, and the operating threshold.

Shared by :func:`~skinlesion.workflows.evaluate.evaluate_run`,
:func:`~skinlesion.workflows.compare.compare_runs` and
:func:`~skinlesion.workflows.ensemble.build_ensemble`: the same images, the same errors
kept aside, the same threshold rules fitted on the *validation* split only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.data.manifest import manifest_path, resolve_paths
from skinlesion.evaluation.evaluate import (
    DIAGNOSIS_PREFIX,
    choose_operating_point,
    metadata_records,
    select_split,
)
from skinlesion.evaluation.operating_point import ThresholdRule
from skinlesion.evaluation.overlap import overlap_summary
from skinlesion.inference.predictor import Predictor
from skinlesion.utils.progress import Progress, relabel

logger = logging.getLogger(__name__)

def predict_manifest(predictor: Predictor, rows: pd.DataFrame, data_dir: str | os.PathLike[str],
                     *, tta: int = 1, batch_size: int = 32,
                     progress: Progress | None = None,
                     withhold_metadata: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the manifest ``rows``; returns ``(scored, errors)``.

    ``scored`` is ``rows`` plus ``probability`` and ``file`` (absolute path) for every image
    that could be read (plus ``p_<class>`` columns for a diagnosis model); ``errors`` holds
    ``image_id``, ``path``, ``label``, ``error`` for the rest (one bad image never stops the
    evaluation, and none is silently dropped). A model that uses clinical metadata gets the
    manifest's ``age``/``sex``/``site`` — or nothing, with ``withhold_metadata``.
    """
    files = resolve_paths(rows, data_dir)
    meta = None if withhold_metadata or not predictor.uses_metadata else metadata_records(rows)
    # A test set is scored whole: the out-of-scope guard is for deployment, not evaluation.
    results = predictor.predict_files(files, tta=tta, batch_size=batch_size,
                                      progress=relabel(progress, "scoring"),
                                      metadata=meta, check_scope=False)
    out = rows.copy()
    out["file"] = files
    out["probability"] = [r.probability for r in results]
    for name in predictor.diagnosis_classes:
        out[f"{DIAGNOSIS_PREFIX}{name}"] = [
            next((d["probability"] for d in (r.diagnoses or []) if d["diagnosis"] == name),
                 np.nan) for r in results]
    out["error"] = [r.error for r in results]
    failed = out["error"].notna()
    for _, row in out[failed].iterrows():
        logger.warning("%s: not scored (%s)", row["file"], row["error"])
    scored = out[~failed].drop(columns=["error"]).reset_index(drop=True)
    scored["probability"] = scored["probability"].astype(float)
    return scored, out.loc[failed, ["image_id", "path", "label", "error"]].reset_index(drop=True)


def split_rows(manifest: pd.DataFrame, data_dir: str | os.PathLike[str], split: str,
               runs: Sequence[Path], *, exclude_overlap: bool = False,
               ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The rows of ``split``, and for each run the images it was trained or validated on.

    Returns:
        ``(rows, overlaps)``: ``overlaps[i]`` summarises run ``i``'s overlap with the rows
        (``overlap.py``). With ``exclude_overlap`` the images any run saw are left out.

    Raises:
        ValueError: for an unknown or empty split, or when excluding leaves nothing.
    """
    rows = select_split(manifest, split, where=str(manifest_path(data_dir)))
    overlaps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for run in runs:
        summary, matches = overlap_summary(rows, run, excluded=exclude_overlap)
        overlaps.append(summary)
        seen |= set(matches["image_id"].astype(str))
        if summary.get("warning"):
            logger.warning("%s: %s", run, summary["warning"])
    if exclude_overlap and seen:
        rows = rows[~rows["image_id"].astype(str).isin(seen)].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"every image of split {split!r} was seen in training"
                             f"{' by some run' if len(runs) > 1 else ''}; nothing left to "
                             "evaluate with --exclude-overlap")
    return rows, overlaps


def operating_point(predictor: Predictor, rule: ThresholdRule, manifest: pd.DataFrame,
                    data_dir: str | os.PathLike[str], split: str, scored: pd.DataFrame, *,
                    tta: int = 1, batch_size: int = 32) -> dict[str, Any]:
    """The run's threshold under ``rule`` (see ``choose_operating_point``).

    Rules fitted on data use the validation split: taken from ``scored`` when the evaluated
    split contains it, otherwise scored here (its unreadable images are counted under
    ``validation_errors``).
    """
    val_errors: list[pd.DataFrame] = []

    def validation() -> pd.DataFrame:
        if split in ("val", "all"):
            return scored[scored["split"] == "val"]
        val_rows = select_split(manifest, "val", where=str(manifest_path(data_dir)))
        val, err = predict_manifest(predictor, val_rows, data_dir, tta=tta,
                                    batch_size=batch_size)
        val_errors.append(err)
        return val

    operating = choose_operating_point(rule, predictor.spec, split, validation)
    if val_errors and len(val_errors[0]):
        operating["validation_errors"] = len(val_errors[0])  # unreadable val images, left out
    return operating
