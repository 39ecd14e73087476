"""``compare_runs``: several runs scored on the same images, compared pairwise.

The paired tests (DeLong, paired bootstrap) are pure functions in
:mod:`skinlesion.evaluation.compare`; this module scores each run through its
``Predictor`` and writes the comparison folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion import INTENDED_USE, __version__
from skinlesion.data.manifest import manifest_fingerprint, manifest_path, read_manifest
from skinlesion.evaluation.bootstrap import DEFAULT_REPLICATES
from skinlesion.evaluation.compare import CompareResult, compare_predictions, write_comparison
from skinlesion.evaluation.metrics import json_safe
from skinlesion.evaluation.operating_point import ThresholdRule
from skinlesion.inference.predictor import Predictor
from skinlesion.runspec import EVAL_DIR, ModelSpec, require_run
from skinlesion.utils.progress import Progress, relabel
from skinlesion.workflows.scoring import operating_point, predict_manifest, split_rows

logger = logging.getLogger(__name__)


def compare_runs(run_dirs: Sequence[str | os.PathLike[str]], data_dir: str | os.PathLike[str],
                 *, split: str = "test", threshold: str | ThresholdRule = "stored",
                 tta: int = 1, bootstrap: int = DEFAULT_REPLICATES,
                 out: str | os.PathLike[str] | None = None, seed: int = 0,
                 batch_size: int = 32, progress: Progress | None = None,
                 exclude_overlap: bool = False) -> CompareResult:
    """Score several runs on the same manifest split and compare them pairwise.

    Images that any run fails to read are dropped for every run (a paired test needs
    the same images) and listed under ``errors``.

    Args:
        run_dirs: Two or more finished runs.
        data_dir: Prepared data folder (``manifest.csv``).
        split: Manifest split to score (default ``test``).
        threshold: Rule for each run's operating threshold (see ``evaluate_run``).
        tta: Dihedral TTA views.
        bootstrap: Replicates for intervals and the paired bootstrap.
        out: Output folder (default ``<first run>/eval/compare``).
        seed: Bootstrap seed.
        batch_size: Images per forward pass.
        progress: Gets count events, one task per run (``"scoring <run>"``).
        exclude_overlap: Leave out images that any run was trained or validated on.

    Returns:
        The :class:`CompareResult` with files written.
    """
    runs = [require_run(r) for r in run_dirs]
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    rule = ThresholdRule.parse(threshold)
    manifest = read_manifest(data_dir)
    rows, overlaps = split_rows(manifest, data_dir, split, runs, exclude_overlap=exclude_overlap)
    names = run_names(runs)
    scored: dict[str, pd.DataFrame] = {}
    operating: dict[str, dict[str, Any]] = {}
    errors: list[pd.DataFrame] = []
    specs: dict[str, ModelSpec] = {}
    for name, run in zip(names, runs, strict=True):
        predictor = Predictor.from_run(run)
        specs[name] = predictor.spec
        scored[name], err = predict_manifest(predictor, rows, data_dir, tta=tta,
                                             batch_size=batch_size,
                                             progress=relabel(progress, f"scoring {name}"))
        errors.append(err.assign(run=name))
        operating[name] = operating_point(predictor, rule, manifest, data_dir, split,
                                          scored[name], tta=tta, batch_size=batch_size)
    table = shared_predictions(rows, scored)
    comparison = compare_predictions(
        table["label"], {n: table[f"p_{n}"] for n in names},
        {n: operating[n]["threshold"] for n in names}, bootstrap=bootstrap, seed=seed)
    all_errors = pd.concat(errors, ignore_index=True)
    comparison.update(json_safe({
        "intended_use": INTENDED_USE,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "evaluator": f"skinlesion {__version__}",
        "data": {"manifest": str(manifest_path(data_dir).resolve()),
                 "manifest_sha256": manifest_fingerprint(data_dir), "split": split,
                 "n_images": len(rows), "n_shared": len(table)},
        "tta": tta,
        "overlap": dict(zip(names, overlaps, strict=True)),
        "runs": {n: {"run_dir": str(r.resolve()), "backbone": specs[n].backbone,
                     "input_size": specs[n].input_size, "model_id": specs[n].model_id,
                     "operating_point": operating[n]} for n, r in zip(names, runs, strict=True)},
        "errors": {"count": int(all_errors["image_id"].nunique()),
                   "images": all_errors[["run", "image_id", "path", "error"]].to_dict("records")},
    }))
    result = CompareResult(comparison=comparison, predictions=table)
    return write_comparison(result, Path(out) if out is not None else runs[0] / EVAL_DIR / "compare")


def run_names(run_dirs: Sequence[Path]) -> list[str]:
    """Each run's folder name; numbered (``1:run``) when two runs share a name."""
    names = [p.resolve().name for p in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{i + 1}:{n}" for i, n in enumerate(names)]
    return names


def shared_predictions(rows: pd.DataFrame, scored: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``image_id``, ``label`` and one ``p_<run>`` column, over the images every run scored.

    Raises:
        ValueError: if no image was scored by every run.
    """
    shared = set.intersection(*(set(df["image_id"]) for df in scored.values()))
    table = rows[rows["image_id"].isin(shared)][["image_id", "label"]].reset_index(drop=True)
    for name, df in scored.items():
        table[f"p_{name}"] = table["image_id"].map(df.set_index("image_id")["probability"])
    if table.empty:
        raise ValueError("no image could be scored by every run")
    return table
