"""``skinlesion ensemble``: several finished runs as one run directory.

The ensemble is an ordinary run: ``model.keras`` + ``model_spec.json``, so evaluate,
compare, predict, serve, export and TTA treat it like any other. Its model takes the
raw image at the largest member input size (and the clinical metadata when a member
uses it), resizes it inside the graph for smaller members (bilinear, antialiased — the
same resize as everywhere else), runs every member, and averages their outputs in
*probability* space: P(malignant) is the mean of the members' P(malignant); when every
member is a diagnosis model over the same classes, the class probabilities are
averaged too and the ensemble is a diagnosis model. Its decision threshold is fitted on
the validation split of ``--data`` by the same rule as training (highest threshold
reaching the target sensitivity), never on test images.

Members that use metadata must share one metadata encoding (same fields and missing
mode, fitted on the same training split); image-only members ignore the metadata input.
Grad-CAM is not available for an ensemble (no single last convolution).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.metrics import average_precision_score, roc_auc_score

from skinlesion import INTENDED_USE, __version__
from skinlesion.data.manifest import manifest_fingerprint, read_manifest
from skinlesion.evaluation.evaluate import select_split
from skinlesion.evaluation.operating_point import (
    rates_at,
    threshold_for_sensitivity,
    youden_threshold,
)
from skinlesion.inference.predictor import Predictor
from skinlesion.models.classifier import INPUT_NAME, METADATA_INPUT
from skinlesion.runspec import MODEL_FILE, SPEC_FILE, ModelSpec, RunError, require_run
from skinlesion.utils.atomic import atomic_path
from skinlesion.utils.hashing import sha256_file
from skinlesion.utils.progress import Progress
from skinlesion.utils.progress import say as report_steps
from skinlesion.utils.versions import git_commit, library_versions
from skinlesion.workflows.scoring import predict_manifest

logger = logging.getLogger(__name__)

ENSEMBLE_BACKBONE = "ensemble"


def _metadata_encoding(specs: Sequence[ModelSpec]) -> dict[str, Any] | None:
    encodings = [s.metadata for s in specs if s.metadata]
    if not encodings:
        return None
    first = {k: v for k, v in encodings[0].items() if k != "names"}
    for other in encodings[1:]:
        if {k: v for k, v in other.items() if k != "names"} != first:
            raise RunError("members use different metadata encodings (fields, missing mode or "
                           "training statistics); ensemble members must share one")
    return encodings[0]


def _shared_diagnosis(specs: Sequence[ModelSpec]) -> dict[str, Any] | None:
    diags = [s.diagnosis if s.target == "diagnosis" else None for s in specs]
    if any(d is None for d in diags):
        return None
    first = diags[0]
    assert first is not None
    if all(d is not None and d["classes"] == first["classes"] and d["malignant"] == first["malignant"]
           for d in diags):
        return first
    return None


def build_ensemble_model(models: Sequence[Any], specs: Sequence[ModelSpec]) -> Any:
    """The averaging model over loaded member ``models`` (see the module docstring)."""
    import keras

    from skinlesion.models.layers import TakeColumns

    size = max(int(s.input_size) for s in specs)
    meta = _metadata_encoding(specs)
    diag = _shared_diagnosis(specs)
    image = keras.Input((size, size, 3), name=INPUT_NAME, dtype="float32")
    inputs: list[Any] = [image]
    meta_in = None
    if meta is not None:
        meta_in = keras.Input((len(meta["names"]),), name=METADATA_INPUT, dtype="float32")
        inputs.append(meta_in)
    outs = []
    for i, (model, spec) in enumerate(zip(models, specs, strict=True)):
        model.name = f"member{i}_{spec.backbone}"
        x = image
        if int(spec.input_size) != size:
            x = keras.layers.Resizing(int(spec.input_size), int(spec.input_size),
                                      interpolation="bilinear", antialias=True,
                                      name=f"resize_member{i}")(x)
        y = model({INPUT_NAME: x, METADATA_INPUT: meta_in} if spec.metadata else x)
        outs.append(y if diag is not None else TakeColumns(0, 1, name=f"p_member{i}")(y))
    avg = keras.layers.Average(name="mean_probability")(outs) if len(outs) > 1 else outs[0]
    return keras.Model(inputs if meta_in is not None else image, avg, name="skinlesion_ensemble")


def build_ensemble(members: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                   data_dir: str | os.PathLike[str], target_sensitivity: float = 0.90,
                   overwrite: bool = False, progress: Progress | None = None,
                   ) -> ModelSpec:
    """Write the ensemble of ``members`` as the run directory ``out``.

    Args:
        members: Finished runs (at least two).
        out: The ensemble's run directory.
        data_dir: Prepared data folder whose validation split fits the threshold.
        target_sensitivity: Validation sensitivity the threshold must reach.
        overwrite: Replace an existing run in ``out``.
        progress: Gets a step message (task ``"ensemble"``) at each step.

    Returns:
        The ensemble's ``ModelSpec`` (also written to ``out``).

    Raises:
        RunError: fewer than two members, a member that is not a finished run, members that
            cannot be combined, or ``out`` holding a run without ``overwrite``.
    """
    import keras

    import skinlesion.models.layers
    import skinlesion.models.preprocessing  # noqa: F401  (custom layers the members need)

    say = report_steps(progress, "ensemble")
    if len(members) < 2:
        raise RunError("an ensemble needs at least two member runs")
    runs = [require_run(m) for m in members]
    dest = Path(out)
    if (dest / MODEL_FILE).exists() or (dest / SPEC_FILE).exists():
        if not overwrite:
            raise RunError(f"{dest} already holds a run; pass --overwrite to replace it")
        shutil.rmtree(dest)
    specs = [ModelSpec.load(r) for r in runs]
    models = []
    for run in runs:
        say(f"loading {run}")
        models.append(keras.saving.load_model(run / MODEL_FILE, compile=False))
    model = build_ensemble_model(models, specs)
    spec = ensemble_spec(runs, specs)
    say("fitting the threshold on the validation split")
    fit_threshold(Predictor(model, spec), data_dir, target_sensitivity)
    spec.data_fingerprint = manifest_fingerprint(data_dir)
    spec.data_dir = str(data_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / MODEL_FILE) as tmp:
        model.save(tmp)
    spec.model_id = sha256_file(dest / MODEL_FILE)[:12]
    spec.save(dest)  # last: the "finished" mark
    logger.info("ensemble of %d runs → %s (val AUC %.3f)", len(runs), dest,
                spec.val_metrics["roc_auc"])
    return spec


def ensemble_spec(runs: Sequence[Path], specs: Sequence[ModelSpec]) -> ModelSpec:
    """The ensemble's ``ModelSpec`` before its threshold is fitted."""
    diag = _shared_diagnosis(specs)
    return ModelSpec(
        backbone=ENSEMBLE_BACKBONE, input_size=max(int(s.input_size) for s in specs),
        preprocessing="per member (inside each member)",
        target="diagnosis" if diag else "binary", diagnosis=diag,
        metadata=_metadata_encoding(specs),
        color_constancy=any(s.color_constancy for s in specs),
        members=[{"run": str(r.resolve()), "backbone": s.backbone, "input_size": s.input_size,
                  "model_id": s.model_id, "target": s.target, "metadata": bool(s.metadata),
                  "val_auc": s.val_metrics.get("roc_auc")} for r, s in zip(runs, specs, strict=True)],
        train_prevalence=specs[0].train_prevalence,
        code_version=f"skinlesion {__version__}" + (f" ({c})" if (c := git_commit()) else ""),
        versions=library_versions(), intended_use=INTENDED_USE,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def fit_threshold(predictor: Predictor, data_dir: str | os.PathLike[str],
                  target_sensitivity: float) -> None:
    """Score the validation split of ``data_dir`` and set the spec's threshold and val metrics.

    The same rule as training: the highest threshold reaching ``target_sensitivity``.

    Raises:
        RunError: if the validation split lacks benign or malignant images.
    """
    spec = predictor.spec
    val_rows = select_split(read_manifest(data_dir), "val")
    scored, errors = predict_manifest(predictor, val_rows, data_dir)
    y = scored["label"].to_numpy(int)
    p = scored["probability"].to_numpy(float)
    if y.min() == y.max():
        raise RunError(f"{data_dir}: the validation split needs benign and malignant images")
    spec.threshold = float(threshold_for_sensitivity(y, p, target_sensitivity))
    spec.threshold_rule = (f"highest threshold with sensitivity >= {target_sensitivity:.2f} on the "
                           "validation split (ensemble)")
    spec.target_sensitivity = target_sensitivity
    spec.youden_threshold = float(youden_threshold(y, p))
    rates = rates_at(y, p, spec.threshold)
    spec.val_metrics = {"n": len(y), "positives": int(y.sum()),
                        "roc_auc": float(roc_auc_score(y, p)),
                        "average_precision": float(average_precision_score(y, p)),
                        "sensitivity": rates["sensitivity"], "specificity": rates["specificity"],
                        "unreadable": len(errors)}
