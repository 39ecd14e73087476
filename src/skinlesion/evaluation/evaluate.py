"""The metrics of an evaluation, the operating threshold, and the evaluation folder.

:func:`evaluate_predictions` is the pure core: it needs only a table of labels and
probabilities (plus optional subgroup columns), so it is tested without a model. The
orchestrator that scores a run through the ``Predictor`` and calls it is
:func:`skinlesion.workflows.evaluate.evaluate_run`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion import INTENDED_USE
from skinlesion.data.manifest import (
    manifest_fingerprint,
    manifest_path,
)
from skinlesion.data.targets import DiagnosisClasses
from skinlesion.evaluation.bootstrap import DEFAULT_REPLICATES, stratified_bootstrap
from skinlesion.evaluation.calibration import DEFAULT_BINS, calibration_summary
from skinlesion.evaluation.diagnosis import diagnosis_metrics
from skinlesion.evaluation.intervals import (
    MIN_CASES_FOR_AUC_CI,
    PROPORTION_METHOD,
    auc_interval_reliability,
    rate_intervals,
)
from skinlesion.evaluation.metrics import (
    PAUC_MIN_TPR,
    EvalResult,
    UndefinedMetricError,
    as_arrays,
    auc_above_sensitivity,
    average_precision,
    brier_score,
    class_counts,
    collect,
    json_safe,
    partial_auc_above_tpr,
    roc_auc,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    threshold_metrics,
)
from skinlesion.evaluation.operating_point import (
    ThresholdRule,
    threshold_for_sensitivity,
    youden_threshold,
)
from skinlesion.evaluation.subgroups import MIN_PER_CLASS, subgroup_metrics
from skinlesion.runspec import ModelSpec, read_training_config
from skinlesion.utils.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from skinlesion.utils.safe_text import escape_frame

logger = logging.getLogger(__name__)

SPLIT_CHOICES: tuple[str, ...] = ("test", "val", "train", "all")
SENSITIVITY_TARGETS: tuple[float, ...] = (0.90, 0.95)
SPECIFICITY_TARGETS: tuple[float, ...] = (0.90,)
PREDICTION_COLUMNS: tuple[str, ...] = (
    "image_id", "label", "probability", "decision", "diagnosis", "source", "sex", "age", "site",
    "split", "path",
)
ROC_BAND_POINTS = 101
SCHEMA_VERSION = 2
"""2: Wilson intervals for the rates (``*_ci95`` keys kept, ``ppv_ci95``/``npv_ci95`` added),
``roc_auc_ci_reliable``/``roc_auc_ci_note``, ``intervals``, ``fixed_rates.*.chosen_on``."""
FIXED_RATES_NOTE = "read off the evaluated images themselves: optimistic"

# === The pure core ===


def evaluate_predictions(df: pd.DataFrame, threshold: float, *,
                         bootstrap: int = DEFAULT_REPLICATES, seed: int = 0,
                         errors: pd.DataFrame | None = None,
                         operating_point: dict[str, Any] | None = None,
                         class_names: tuple[str, str] = ("benign", "malignant"),
                         n_bins: int = DEFAULT_BINS,
                         min_per_class: int = MIN_PER_CLASS) -> EvalResult:
    """Every metric of the report, from a table of labels and probabilities.

    Args:
        df: One row per scored image: ``label`` (0/1), ``probability`` and optionally
            ``image_id``, ``source``, ``sex``, ``age``, ``site`` (subgroups) and ``path``.
        threshold: Operating threshold; ``probability >= threshold`` is called malignant.
        bootstrap: Stratified bootstrap replicates for the confidence intervals (0 = none).
        seed: Bootstrap seed.
        errors: Images that could not be scored (listed, never scored).
        operating_point: How ``threshold`` was chosen (merged into ``operating_point``).
        class_names: Names of class 0 and 1, used for ``decision``.
        n_bins: Reliability bins.
        min_per_class: Subgroups with fewer cases of a class are flagged too small.

    Returns:
        The :class:`EvalResult` (not yet written anywhere).
    """
    y, p = as_arrays(df["label"], df["probability"])
    predictions = _with_decisions(df, threshold, class_names)
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "intended_use": INTENDED_USE,
        "operating_point": {"threshold": float(threshold), "rule": "given",
                            **(operating_point or {})},
        "counts": class_counts(y),
        "ranking": ranking_metrics(y, p),
        "at_threshold": threshold_metrics(y, p, threshold),
        "fixed_rates": fixed_rate_metrics(y, p),
        "intervals": {"confidence": 0.95, "rates": PROPORTION_METHOD,
                      "roc_auc": "stratified percentile bootstrap",
                      "min_cases_for_auc_ci": MIN_CASES_FOR_AUC_CI},
        "calibration": {**calibration_summary(y, p, n_bins)},
    }
    collect(metrics["calibration"], "brier", brier_score, y, p)
    # Score intervals for the rates: a bootstrap collapses to zero width at 0 % or 100 %.
    metrics["at_threshold"].update(rate_intervals(metrics["at_threshold"]))
    curves: dict[str, Any] = {}
    if metrics["at_threshold"]["sensitivity_ci95"] and metrics["at_threshold"]["specificity_ci95"]:
        curves["operating_ci"] = {"sensitivity_ci": metrics["at_threshold"]["sensitivity_ci95"],
                                  "specificity_ci": metrics["at_threshold"]["specificity_ci95"]}
    metrics["bootstrap"] = _bootstrap_block(y, p, threshold, bootstrap, seed, metrics, curves)
    metrics["subgroups"] = subgroup_metrics(df, threshold, n_boot=bootstrap, seed=seed,
                                            min_per_class=min_per_class)
    errors = _error_table(errors)
    metrics["errors"] = {"count": len(errors),
                         "images": errors[["image_id", "path", "error"]].to_dict("records")}
    return EvalResult(metrics=json_safe(metrics), predictions=predictions, errors=errors,
                      curves=curves)


def ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Threshold-free metrics: ROC AUC, partial AUCs above 80 % TPR, average precision."""
    out: dict[str, Any] = {}
    collect(out, "roc_auc", roc_auc, y, p)
    collect(out, "pauc_tpr80", partial_auc_above_tpr, y, p, PAUC_MIN_TPR)
    collect(out, "auc_sens_80", auc_above_sensitivity, y, p, PAUC_MIN_TPR)
    collect(out, "average_precision", average_precision, y, p)
    return out


def fixed_rate_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Specificity at fixed sensitivities and sensitivity at fixed specificities.

    Each threshold is read off the scored images themselves, so each figure is optimistic
    (``chosen_on`` says so); the operating point is the one fixed on validation.
    """
    out: dict[str, Any] = {}
    for target in SENSITIVITY_TARGETS:
        collect(out, f"specificity_at_sensitivity_{target:.2f}", specificity_at_sensitivity,
                y, p, target)
    for target in SPECIFICITY_TARGETS:
        collect(out, f"sensitivity_at_specificity_{target:.2f}", sensitivity_at_specificity,
                y, p, target)
    for value in out.values():
        if isinstance(value, dict) and "threshold" in value:
            value["chosen_on"] = FIXED_RATES_NOTE
    return out


def _bootstrap_block(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int,
                     metrics: dict[str, Any], curves: dict[str, Any]) -> dict[str, Any]:
    if n_boot <= 0:
        return {"replicates": 0, "skipped": "bootstrap disabled (--bootstrap 0)"}
    try:
        boot = stratified_bootstrap(y, p, n_boot=n_boot, seed=seed, roc_points=ROC_BAND_POINTS)
    except UndefinedMetricError as exc:
        return {"replicates": 0, "skipped": str(exc)}
    summary = boot.summary()
    ci = summary["roc_auc_ci"]
    check = auc_interval_reliability(ci, int(y.sum()), int(y.size - y.sum()))
    metrics["ranking"]["roc_auc_ci95"] = ci
    metrics["ranking"]["roc_auc_ci_reliable"] = check["reliable"]
    if check["reason"]:
        metrics["ranking"]["roc_auc_ci_note"] = check["reason"]
    curves["roc_band"] = boot.roc_band()
    if check["reliable"]:
        curves["auc_ci"] = ci
    return {k: summary[k] for k in ("method", "replicates", "seed", "confidence")}


def _with_decisions(df: pd.DataFrame, threshold: float,
                    class_names: tuple[str, str]) -> pd.DataFrame:
    out = df.copy()
    out["decision"] = np.where(out["probability"].to_numpy(dtype=float) >= threshold,
                               class_names[1], class_names[0])
    first = [c for c in PREDICTION_COLUMNS if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]].reset_index(drop=True)


def _error_table(errors: pd.DataFrame | None) -> pd.DataFrame:
    cols = ["image_id", "path", "label", "error"]
    if errors is None or errors.empty:
        return pd.DataFrame(columns=cols)
    out = errors.copy()
    for c in cols:
        if c not in out:
            out[c] = ""
    return out[cols].reset_index(drop=True)


def confident_errors(predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Misclassified images, false negatives first (lowest P(malignant) first), then false
    positives (highest first): the errors the model was most sure about."""
    p = predictions["probability"].to_numpy(dtype=float)
    y = predictions["label"].to_numpy(dtype=int)
    fn = predictions[(y == 1) & (p < threshold)].sort_values("probability", kind="stable")
    fp = predictions[(y == 0) & (p >= threshold)].sort_values("probability", ascending=False,
                                                              kind="stable")
    return pd.concat([fn.assign(kind="FN"), fp.assign(kind="FP")], ignore_index=True)


# === Choosing the operating threshold ===


def choose_operating_point(rule: ThresholdRule, spec: ModelSpec, split: str,
                           validation: Callable[[], pd.DataFrame] | None) -> dict[str, Any]:
    """Resolve ``rule`` to a threshold and say how it was chosen.

    Args:
        rule: The parsed ``--threshold``.
        spec: The run's model spec (``stored`` reads its threshold).
        split: The split being evaluated (to warn when the threshold saw these images).
        validation: Returns the scored validation images (``label``, ``probability``); only
            called for rules fitted on data.

    Returns:
        ``threshold``, ``rule``, ``description``, ``chosen_on`` and possibly ``warning``.

    Raises:
        ValueError: if a fitted rule has no usable validation images.
    """
    out: dict[str, Any] = {"rule": str(rule)}
    if rule.kind == "stored":
        out.update(threshold=float(spec.threshold), chosen_on="model_spec.json",
                   description=f"stored with the run: {spec.threshold_rule}")
    elif rule.kind == "value":
        out.update(threshold=float(rule.target or 0.0), chosen_on="command line",
                   description=f"fixed at {rule.target:g} on the command line")
    else:
        if validation is None:
            raise ValueError(f"threshold rule {rule} needs validation predictions")
        val = validation()
        y, p = as_arrays(val["label"], val["probability"])
        if y.sum() == 0 or y.sum() == y.size:
            raise ValueError(f"threshold rule {rule} needs malignant and benign images in the "
                             f"validation split; it has {int(y.sum())} malignant of {y.size}")
        if rule.kind == "youden":
            t = youden_threshold(y, p)
            how = "maximises Youden's J (sensitivity + specificity − 1)"
        else:
            t = threshold_for_sensitivity(y, p, float(rule.target or 0.0))
            how = f"highest threshold reaching sensitivity ≥ {rule.target:g}"
        out.update(threshold=float(t), chosen_on="val",
                   description=f"{how} on the validation split ({y.size} images, "
                               f"{int(y.sum())} malignant)")
    warning = _split_warning(split, rule)
    if warning:
        out["warning"] = warning
    return out


def _split_warning(split: str, rule: ThresholdRule) -> str | None:
    if split == "train":
        return "Evaluated on the training split: every number here is optimistic."
    if split in ("val", "all") and rule.kind != "value":
        return ("The threshold was chosen on the validation split, which is part of the "
                "images evaluated here: rates at the threshold are optimistic.")
    if split == "all":
        return "Includes training images: every number here is optimistic."
    return None


# === Predicting a manifest split ===


def select_split(manifest: pd.DataFrame, split: str, where: str = "manifest") -> pd.DataFrame:
    """Rows of ``split`` (``all`` = every row).

    Raises:
        ValueError: for an unknown split name or an empty selection.
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLIT_CHOICES)}")
    rows = manifest if split == "all" else manifest[manifest["split"] == split]
    if rows.empty:
        counts = manifest["split"].value_counts().to_dict()
        raise ValueError(f"{where}: no images in split {split!r} (splits: {counts})")
    return rows.reset_index(drop=True)


DIAGNOSIS_PREFIX = "p_"
"""Column prefix of a diagnosis model's class probabilities in predictions.csv."""


def metadata_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The manifest rows' clinical metadata as the Predictor takes it."""
    cols = [c for c in ("age", "sex", "site") if c in rows.columns]
    return rows[cols].to_dict("records") if cols else [{} for _ in range(len(rows))]


def diagnosis_block(spec: ModelSpec, scored: pd.DataFrame) -> dict[str, Any]:
    """The diagnosis model's multi-class metrics over the ``p_<class>`` columns of ``scored``."""
    classes = DiagnosisClasses.from_dict(spec.diagnosis or {})
    truth = classes.index(scored["diagnosis"], scored["label"])
    probs = scored[[f"{DIAGNOSIS_PREFIX}{c}" for c in classes.classes]].to_numpy(float)
    return diagnosis_metrics(truth, probs, classes.classes, classes.malignant)


def binary_class_names(spec: ModelSpec) -> tuple[str, str]:
    """The (negative, positive) class names the report uses for a run."""
    names = list(spec.class_names)
    return (names[0], names[1]) if len(names) == 2 else ("benign", "malignant")


def describe_run(run: Path, spec: ModelSpec) -> dict[str, Any]:
    """The model card's model half: spec fields and the training config, if saved."""
    info: dict[str, Any] = {
        "run_dir": str(run.resolve()), "model_id": spec.model_id, "backbone": spec.backbone,
        "input_size": spec.input_size, "preprocessing": spec.preprocessing,
        "class_names": list(spec.class_names), "stored_threshold": spec.threshold,
        "stored_threshold_rule": spec.threshold_rule, "youden_threshold": spec.youden_threshold,
        "inconclusive_band": spec.inconclusive_band, "created": spec.created,
        "code_version": spec.code_version, "training_data_fingerprint": spec.data_fingerprint,
        "val_metrics": spec.val_metrics, "versions": spec.versions,
    }
    info["training_config"] = read_training_config(run)
    return info


def describe_data(data_dir: str | os.PathLike[str], split: str, rows: pd.DataFrame,
                  scored: pd.DataFrame, errors: pd.DataFrame) -> dict[str, Any]:
    """The model card's data half: manifest, fingerprint, split, counts and sources."""
    sources = []
    if "source" in scored and (scored["source"].astype(str) != "").any():
        for name, grp in scored.groupby(scored["source"].astype(str).replace("", "(unknown)")):
            sources.append({"source": name, "n": len(grp), "n_positive": int(grp["label"].sum()),
                            "prevalence": float(grp["label"].mean())})
        sources.sort(key=lambda s: -s["n"])
    return {
        "manifest": str(manifest_path(data_dir).resolve()),
        "manifest_sha256": manifest_fingerprint(data_dir),
        "split": split, "n_images": len(rows), "n_scored": len(scored), "n_errors": len(errors),
        "sources": sources,
    }


# === Writing the evaluation folder ===


def write_evaluation(result: EvalResult, out_dir: str | os.PathLike[str], *,
                     gallery_size: int = 12) -> EvalResult:
    """Write metrics.json, predictions.csv, errors.csv (if any), the PNG plots and report.html.

    Every file is written atomically; ``result.files`` and ``result.out_dir`` are set.
    """
    from skinlesion.evaluation.plots import FIGURE_TITLES, evaluation_figures, figure_png
    from skinlesion.evaluation.report import render_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    figures = {name: figure_png(fig) for name, fig in
               evaluation_figures(result, confident_errors(result.predictions, result.threshold),
                                  gallery_size=gallery_size).items()}
    for name, png in figures.items():
        files[name] = atomic_write_bytes(out / f"{name}.png", png)
    # Probabilities to 6 decimals: the 16-digit floats are noise (metrics use full precision).
    files["predictions"] = _write_csv(
        result.predictions.drop(columns=["file"], errors="ignore").round({"probability": 6}),
        out / "predictions.csv")
    if not result.errors.empty:
        files["errors"] = _write_csv(result.errors, out / "errors.csv")
    files["metrics"] = out / "metrics.json"
    files["report"] = out / "report.html"
    result.metrics["files"] = {k: v.name for k, v in files.items()}
    atomic_write_json(files["metrics"], result.metrics)
    atomic_write_text(files["report"], render_report(result, figures))
    # A rerun into the same folder must not leave an earlier run's outputs beside these
    # (an old errors.csv would claim failures that did not happen this time).
    for stale in [f"{name}.png" for name in FIGURE_TITLES] + ["errors.csv"]:
        if (out / stale).is_file() and (out / stale) not in files.values():
            (out / stale).unlink()
    result.out_dir, result.files = out, files
    logger.info("wrote %s", files["report"])
    return result


def _write_csv(df: pd.DataFrame, path: Path) -> Path:

    with atomic_path(path) as tmp:  # = + - @ cells as text (spreadsheet formula injection)
        escape_frame(df).to_csv(tmp, index=False, lineterminator="\n")
    return path
