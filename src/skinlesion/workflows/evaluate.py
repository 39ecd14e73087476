"""``evaluate_run``: score a run on a manifest split and write metrics, plots and the report.

It reads like a table of contents::

    load the run and the manifest split → predict every image (errors kept aside)
    → choose the operating threshold (stored, fixed, or fitted on the *validation* split)
    → compute every metric (evaluation.evaluate_predictions) → write RUN_DIR/eval/

The metrics themselves are pure functions in :mod:`skinlesion.evaluation`.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion import __version__
from skinlesion.data.manifest import read_manifest
from skinlesion.evaluation.bootstrap import DEFAULT_REPLICATES
from skinlesion.evaluation.evaluate import (
    binary_class_names,
    describe_data,
    describe_run,
    diagnosis_block,
    evaluate_predictions,
    write_evaluation,
)
from skinlesion.evaluation.metadata_effect import metadata_effect, metadata_only_probabilities
from skinlesion.evaluation.metrics import EvalResult, json_safe
from skinlesion.evaluation.operating_point import ThresholdRule
from skinlesion.inference.predictor import Predictor
from skinlesion.runspec import EVAL_DIR, read_history, require_run
from skinlesion.utils.progress import Progress
from skinlesion.workflows.scoring import operating_point, predict_manifest, split_rows

logger = logging.getLogger(__name__)


def evaluate_run(run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], *,
                 split: str = "test", threshold: str | float | ThresholdRule = "stored",
                 tta: int = 1, bootstrap: int = DEFAULT_REPLICATES,
                 out: str | os.PathLike[str] | None = None, seed: int = 0,
                 batch_size: int = 32, progress: Progress | None = None,
                 predictor: Predictor | None = None,
                 exclude_overlap: bool = False) -> EvalResult:
    """Evaluate a trained run on a manifest split and write ``RUN_DIR/eval/`` (or ``out``).

    Args:
        run_dir: A finished training run (``model.keras`` + ``model_spec.json``).
        data_dir: Prepared data folder holding ``manifest.csv`` (or the CSV itself).
        split: ``test`` (default), ``val``, ``train`` or ``all``.
        threshold: ``stored``, ``youden``, ``sens=X`` or a number; ``youden`` and ``sens=X``
            are fitted on the manifest's validation split, never on the evaluated images.
        tta: Dihedral test-time-augmentation views averaged (1, 2, 4 or 8).
        bootstrap: Replicates of the stratified bootstrap (0 disables the intervals).
        out: Output folder (default ``RUN_DIR/eval``).
        seed: Bootstrap seed.
        batch_size: Images per forward pass.
        progress: Gets count events (task ``"scoring"``) as images are scored.
        predictor: An already loaded predictor for ``run_dir`` (else loaded here).
        exclude_overlap: Leave out images the run was trained or validated on (found by
            hash and id, see ``overlap.py``); by default they are scored and flagged.

    Returns:
        The result, with ``files`` naming everything written (``report`` = report.html).

    Raises:
        RunError: if ``run_dir`` is not a finished run.
        ManifestError: if the manifest is missing or invalid.
        ValueError: on an unknown split, an empty split or an unusable threshold rule.
    """
    run = require_run(run_dir)
    rule = ThresholdRule.parse(threshold)
    manifest = read_manifest(data_dir)
    rows, (overlap,) = split_rows(manifest, data_dir, split, [run],
                                  exclude_overlap=exclude_overlap)
    predictor = predictor or Predictor.from_run(run)
    spec = predictor.spec
    scored, errors = predict_manifest(predictor, rows, data_dir, tta=tta,
                                      batch_size=batch_size, progress=progress)
    if scored.empty:
        raise ValueError(f"none of the {len(rows)} images of split {split!r} could be read; "
                         f"first error: {errors['error'].iloc[0]}")
    operating = operating_point(predictor, rule, manifest, data_dir, split, scored, tta=tta,
                                batch_size=batch_size)
    result = evaluate_predictions(scored, operating["threshold"], bootstrap=bootstrap, seed=seed,
                                  errors=errors, operating_point=operating,
                                  class_names=binary_class_names(spec))
    if spec.target == "diagnosis" and spec.diagnosis:
        result.metrics["diagnosis"] = json_safe(diagnosis_block(spec, scored))
    if predictor.uses_metadata and predictor.encoder is not None:
        result.metrics["metadata"] = _metadata_block(predictor, manifest, rows, scored, data_dir,
                                                     tta=tta, batch_size=batch_size, seed=seed)
    result.metrics.update(json_safe({
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "evaluator": f"skinlesion {__version__}",
        "tta": tta,
        "runtime": predictor.runtime_name,
        "run": describe_run(run, spec),
        "data": describe_data(data_dir, split, rows, scored, errors),
        "overlap": overlap,
    }))
    history = read_history(run)
    if history is not None:
        result.curves["history"] = history
    return write_evaluation(result, Path(out) if out is not None else run / EVAL_DIR)


def _metadata_block(predictor: Predictor, manifest: pd.DataFrame, rows: pd.DataFrame,
                    scored: pd.DataFrame, data_dir: str | os.PathLike[str], *, tta: int,
                    batch_size: int, seed: int) -> dict[str, Any]:
    """Signal or shortcut: the same model with metadata withheld, and metadata alone."""
    assert predictor.encoder is not None
    withheld, _ = predict_manifest(predictor, rows, data_dir, tta=tta, batch_size=batch_size,
                                   withhold_metadata=True)
    withheld = withheld.set_index("image_id").loc[scored["image_id"], "probability"]
    train_rows = manifest[manifest["split"] == "train"]
    baseline = metadata_only_probabilities(predictor.encoder, train_rows, scored, seed=seed)
    block: dict[str, Any] = json_safe(metadata_effect(
        scored, withheld.to_numpy(float), baseline, predictor.encoder))
    return block
