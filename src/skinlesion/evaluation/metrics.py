"""The metrics a dermatology paper reports, as pure functions over labels and probabilities.

Every function takes 0/1 labels (1 = malignant) and predicted P(malignant) and
returns plain floats or dicts that serialise to JSON. AUC-type metrics are always
computed from the probabilities, never from thresholded decisions (tutorial 1's
bug). A metric that has no value on the data at hand — AUC with a single class,
PPV when nothing is called malignant — raises :class:`UndefinedMetricError` whose
message is the reason; :func:`collect` turns that into ``None`` plus the reason,
so a report never crashes and JSON never holds NaN.

The heavy lifting is scikit-learn's: ``roc_auc_score``, ``roc_curve``,
``average_precision_score``, ``confusion_matrix``, ``recall_score``,
``precision_score``, ``f1_score``, ``balanced_accuracy_score``, ``brier_score_loss``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from skinlesion.evaluation.operating_point import (
    rates_at,
    threshold_for_sensitivity,
    threshold_for_specificity,
)

PAUC_MIN_TPR = 0.80
"""ISIC 2024 ranks by the partial AUC above this true-positive rate."""


class UndefinedMetricError(ValueError):
    """A metric with no value on these data; the message says why."""


# === Input checks ===


def as_arrays(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(labels as int 0/1, probabilities as float)``.

    Raises:
        ValueError: on mismatched lengths, labels other than 0/1, or probabilities that are
            NaN/Inf or outside [0, 1].
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but y_prob has {p.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(np.unique(y).tolist()))[:5]}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities hold NaN or Inf")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"probabilities must lie in [0, 1], got [{p.min():g}, {p.max():g}]")
    return y.astype(int), p


def _need_both_classes(y: np.ndarray, what: str) -> None:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise UndefinedMetricError(
            f"{what} needs both classes; got {n_pos} malignant and {n_neg} benign")


def class_counts(y_true: ArrayLike) -> dict[str, Any]:
    """``n``, ``n_positive`` (malignant), ``n_negative`` and ``prevalence`` (None if empty)."""
    y = np.asarray(y_true).astype(int).ravel()
    n_pos = int(y.sum())
    return {"n": int(y.size), "n_positive": n_pos, "n_negative": int(y.size - n_pos),
            "prevalence": n_pos / y.size if y.size else None}


# === Ranking metrics (threshold-free) ===


def roc_auc(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Area under the ROC curve, from probabilities (``sklearn.metrics.roc_auc_score``).

    Raises:
        UndefinedMetricError: if only one class is present.
    """
    y, p = as_arrays(y_true, y_prob)
    _need_both_classes(y, "ROC AUC")
    return float(skm.roc_auc_score(y, p))


def partial_auc_above_tpr(y_true: ArrayLike, y_prob: ArrayLike,
                          min_tpr: float = PAUC_MIN_TPR) -> float:
    """Raw partial AUC above ``min_tpr``, range [0, 1 − ``min_tpr``] (ISIC 2024's metric).

    The area of ROC space under the curve and above the horizontal line
    ``TPR = min_tpr``. This is the ISIC 2024 Kaggle challenge metric ("pAUC above 80 %
    TPR", max 0.2): labels and scores are flipped so that the TPR band becomes an FPR band
    ``[0, 1 − min_tpr]``, scikit-learn's ``roc_auc_score(..., max_fpr=...)`` gives the
    McClish-standardised partial AUC on the flipped problem, and the standardisation
    is undone to return the raw area::

        v_gt = 1 - y;  v_pred = 1 - p;  max_fpr = 1 - min_tpr
        scaled = roc_auc_score(v_gt, v_pred, max_fpr=max_fpr)
        pauc = 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (scaled - 0.5)

    A random ranking scores ``0.5 · max_fpr²`` (0.02 for ``min_tpr`` = 0.8), a perfect one
    ``max_fpr`` (0.2).

    Note: ``isic-challenge-scoring`` (ImageMarkup, ``metrics.auc_above_sensitivity``,
    reported as ``auc_sens_80`` for ISIC 2018/2019) integrates the *whole height* under
    the curve over the FPR range where TPR ≥ 0.8, so its values lie in [0, 1]; see
    :func:`auc_above_sensitivity`. The two differ by ``min_tpr · (1 − FPR@min_tpr)``.

    Raises:
        UndefinedMetricError: if only one class is present.
    """
    y, p = as_arrays(y_true, y_prob)
    _need_both_classes(y, "partial AUC")
    if not 0.0 <= min_tpr < 1.0:
        raise ValueError(f"min_tpr must be in [0, 1), got {min_tpr}")
    max_fpr = 1.0 - min_tpr
    scaled = skm.roc_auc_score(1 - y, 1.0 - p, max_fpr=max_fpr)
    return float(0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / 0.5 * (scaled - 0.5))


def auc_above_sensitivity(y_true: ArrayLike, y_prob: ArrayLike,
                          sensitivity: float = PAUC_MIN_TPR) -> float:
    """``auc_sens_80`` exactly as ImageMarkup's ``isic-challenge-scoring`` computes it.

    Reproduces ``isic_challenge_scoring.metrics.auc_above_sensitivity``
    (https://github.com/ImageMarkup/isic-challenge-scoring, ``metrics.py``; reported as
    ``auc_sens_80`` by ``classification.py``): the ROC curve from ``roc_curve(...,
    drop_intermediate=False)`` is cut where TPR first reaches ``sensitivity`` (the FPR at
    exactly that TPR is linearly interpolated and prepended), and ``sklearn.metrics.auc``
    integrates TPR over the remaining FPR range. Range [0, 1]: a perfect ranking scores 1.

    Raises:
        UndefinedMetricError: if only one class is present.
    """
    y, p = as_arrays(y_true, y_prob)
    _need_both_classes(y, "AUC above sensitivity")
    if not 0.0 < sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    idx = int(tpr.searchsorted(sensitivity, side="left"))
    fpr_at = np.interp(sensitivity, tpr[idx - 1: idx + 1], fpr[idx - 1: idx + 1])
    return float(skm.auc(np.insert(fpr[idx:], 0, fpr_at), np.insert(tpr[idx:], 0, sensitivity)))


def average_precision(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Average precision (area under the precision–recall curve, step-wise).

    Its baseline is the prevalence, so compare it with ``prevalence``, not with 0.5.

    Raises:
        UndefinedMetricError: if there is no malignant case.
    """
    y, p = as_arrays(y_true, y_prob)
    if y.sum() == 0:
        raise UndefinedMetricError("average precision needs at least one malignant case")
    return float(skm.average_precision_score(y, p))


def brier_score(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean squared error of the probabilities (0 is perfect; 0.25 for always 0.5)."""
    y, p = as_arrays(y_true, y_prob)
    if y.size == 0:
        raise UndefinedMetricError("no predictions")
    return float(skm.brier_score_loss(y, p, labels=[0, 1]))


# === Metrics at a threshold ===


def confusion_counts(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> dict[str, int]:
    """``tp``, ``fp``, ``tn``, ``fn`` of calling ``probability >= threshold`` malignant."""
    y, p = as_arrays(y_true, y_prob)
    tn, fp, fn, tp = skm.confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1]).ravel()
    return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def threshold_metrics(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> dict[str, Any]:
    """Everything that depends on the decision ``probability >= threshold``.

    Returns:
        ``threshold``, the confusion counts, and ``accuracy``, ``sensitivity`` (recall),
        ``specificity``, ``ppv`` (precision), ``npv``, ``f1``, ``balanced_accuracy``, each
        ``None`` where undefined, with the reasons under ``undefined``.
    """
    y, p = as_arrays(y_true, y_prob)
    pred = (p >= threshold).astype(int)
    counts = confusion_counts(y, p, threshold)
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    out: dict[str, Any] = {"threshold": float(threshold), **counts}
    undefined: dict[str, str] = {}
    # Each metric is scikit-learn's; the guard says in words why one has no value.
    checks: list[tuple[str, bool, str, Callable[[], float]]] = [
        ("accuracy", y.size > 0, "no predictions", lambda: skm.accuracy_score(y, pred)),
        ("sensitivity", tp + fn > 0, "no malignant case",
         lambda: skm.recall_score(y, pred, pos_label=1, zero_division=np.nan)),
        ("specificity", tn + fp > 0, "no benign case",
         lambda: skm.recall_score(y, pred, pos_label=0, zero_division=np.nan)),
        ("ppv", tp + fp > 0, "nothing called malignant at this threshold",
         lambda: skm.precision_score(y, pred, pos_label=1, zero_division=np.nan)),
        ("npv", tn + fn > 0, "nothing called benign at this threshold",
         lambda: skm.precision_score(y, pred, pos_label=0, zero_division=np.nan)),
        ("f1", 2 * tp + fp + fn > 0, "no malignant case and nothing called malignant",
         lambda: skm.f1_score(y, pred, pos_label=1, zero_division=np.nan)),
        ("balanced_accuracy", tp + fn > 0 and tn + fp > 0, "needs both classes",
         lambda: skm.balanced_accuracy_score(y, pred)),
    ]
    for name, defined, reason, fn_ in checks:
        out[name] = float(fn_()) if defined else None
        if not defined:
            undefined[name] = reason
    if undefined:
        out["undefined"] = undefined
    return out


def specificity_at_sensitivity(y_true: ArrayLike, y_prob: ArrayLike,
                               target: float) -> dict[str, float]:
    """Best specificity among thresholds whose sensitivity reaches ``target``.

    Uses the highest threshold that reaches the target (empirical, no interpolation) and
    reports the sensitivity and specificity actually achieved there.

    Raises:
        UndefinedMetricError: if only one class is present.
    """
    y, p = as_arrays(y_true, y_prob)
    _need_both_classes(y, "specificity at sensitivity")
    return {"target": float(target), **rates_at(y, p, threshold_for_sensitivity(y, p, target))}


def sensitivity_at_specificity(y_true: ArrayLike, y_prob: ArrayLike,
                               target: float) -> dict[str, float]:
    """Best sensitivity among thresholds whose specificity reaches ``target``.

    Raises:
        UndefinedMetricError: if only one class is present.
    """
    y, p = as_arrays(y_true, y_prob)
    _need_both_classes(y, "sensitivity at specificity")
    return {"target": float(target), **rates_at(y, p, threshold_for_specificity(y, p, target))}


# === Collecting metrics that may be undefined ===


def collect(out: dict[str, Any], name: str, fn: Callable[..., Any], *args: Any,
            **kwargs: Any) -> None:
    """Store ``fn(*args)`` as ``out[name]``, or ``None`` with the reason in ``out["undefined"]``."""
    try:
        out[name] = fn(*args, **kwargs)
    except UndefinedMetricError as exc:
        out[name] = None
        out.setdefault("undefined", {})[name] = str(exc)


def json_safe(obj: Any) -> Any:
    """Recursively make ``obj`` JSON-ready: NaN/Inf → None, numpy → Python, other → str."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, datetime.date):  # e.g. an unquoted date in config.yaml
        return obj.isoformat()
    return str(obj)  # paths and anything else: readable, never a crash


# === The result of an evaluation ===


@dataclass
class EvalResult:
    """What an evaluation produced: serialisable metrics plus the tables behind them.

    Attributes:
        metrics: Everything ``metrics.json`` holds (JSON-safe: no NaN, no numpy types).
        predictions: One row per scored image: ``image_id``, ``label``, ``probability``,
            ``decision`` and any manifest columns kept for subgroups.
        errors: Images that could not be scored (``image_id``, ``path``, ``label``, ``error``);
            excluded from every metric and listed in the report.
        curves: Arrays for the plots (bootstrap ROC band, operating-point CIs); not saved.
        out_dir: Where the files were written (``None`` until written).
        files: Name → path of every file written.
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    errors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["image_id", "path", "label", "error"]))
    curves: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def report_path(self) -> Path | None:
        """``report.html`` once written."""
        return self.files.get("report")

    @property
    def threshold(self) -> float:
        """The operating threshold the metrics were computed at."""
        return float(self.metrics["operating_point"]["threshold"])
