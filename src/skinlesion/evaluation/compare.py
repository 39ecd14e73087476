"""Comparing runs on the same images, with a paired test of the AUC difference.

Two models scored on the same images are correlated, so comparing their two
AUC confidence intervals is the wrong test. DeLong's test (DeLong, DeLong &
Clarke-Pearson, Biometrics 1988) estimates the covariance of the two AUCs from
each image's placement values; the fast version (Sun & Xu, IEEE Signal
Processing Letters 2014) gets them from three rankings with
``scipy.stats.rankdata``. A paired stratified bootstrap is reported beside it
as a check that needs no normality assumption.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata

from skinlesion.evaluation.bootstrap import (
    DEFAULT_REPLICATES,
    paired_bootstrap_auc_difference,
    stratified_bootstrap,
)
from skinlesion.evaluation.evaluate import fixed_rate_metrics, ranking_metrics
from skinlesion.evaluation.intervals import auc_interval_reliability, rate_intervals
from skinlesion.evaluation.metrics import (
    UndefinedMetricError,
    as_arrays,
    brier_score,
    class_counts,
    collect,
    json_safe,
    threshold_metrics,
)
from skinlesion.utils.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

logger = logging.getLogger(__name__)


# === DeLong ===


def delong_covariance(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scorings of the same cases and their DeLong covariance matrix.

    Args:
        y_true: 0/1 labels, shape ``(N,)``.
        scores: One row of scores per model, shape ``(k, N)``.

    Returns:
        ``(aucs, cov)`` of shapes ``(k,)`` and ``(k, k)``.

    Raises:
        UndefinedMetricError: with fewer than two malignant or two benign cases.
    """
    y = np.asarray(y_true).astype(int).ravel()
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    if s.shape[1] != y.size:
        raise ValueError(f"scores have {s.shape[1]} columns for {y.size} labels")
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise UndefinedMetricError(f"DeLong needs at least 2 malignant and 2 benign cases; got "
                                   f"{m} and {n}")
    # Midranks (ties count one half) within positives, within negatives, and overall.
    tx, ty = rankdata(pos, axis=1), rankdata(neg, axis=1)
    tz = rankdata(np.hstack([pos, neg]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n          # per malignant case: share of benign scored below
    v01 = 1.0 - (tz[:, m:] - ty) / m    # per benign case: share of malignant scored above
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(y_true: ArrayLike, prob_a: ArrayLike, prob_b: ArrayLike, *,
                confidence: float = 0.95) -> dict[str, Any]:
    """Paired DeLong test of ``AUC(a) − AUC(b)`` on the same cases (two-sided).

    Returns:
        ``auc_a``, ``auc_b``, ``difference``, ``se``, ``z``, ``p_value`` and ``ci`` (normal
        interval of the difference at ``confidence``). ``z`` and ``p_value`` are ``None``
        (with ``undefined``) when the difference has zero variance (identical rankings).

    Raises:
        UndefinedMetricError: with fewer than two cases of a class.
    """
    y, pa = as_arrays(y_true, prob_a)
    _, pb = as_arrays(y_true, prob_b)
    aucs, cov = delong_covariance(y, np.vstack([pa, pb]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    zq = float(norm.ppf(0.5 + confidence / 2))
    out: dict[str, Any] = {"method": "DeLong (fast, Sun & Xu 2014), two-sided",
                           "auc_a": float(aucs[0]), "auc_b": float(aucs[1]),
                           "difference": diff, "se": se, "ci": [diff - zq * se, diff + zq * se]}
    if se <= 1e-15:
        out.update(z=None, p_value=None,
                   undefined={"p_value": "the two rankings are identical (zero variance)"})
    else:
        z = diff / se
        out.update(z=float(z), p_value=float(2.0 * norm.sf(abs(z))))
    return out


# === Comparing predictions of several models ===


def model_summary(y: np.ndarray, p: np.ndarray, threshold: float, *, n_boot: int,
                  seed: int) -> dict[str, Any]:
    """One model's column of the comparison table."""
    row: dict[str, Any] = {"threshold": float(threshold), **ranking_metrics(y, p)}
    if n_boot > 0:
        try:
            row["roc_auc_ci95"] = stratified_bootstrap(y, p, n_boot=n_boot, seed=seed).auc_ci
        except UndefinedMetricError:
            row["roc_auc_ci95"] = None
        check = auc_interval_reliability(row["roc_auc_ci95"], int(y.sum()), int(y.size - y.sum()))
        row["roc_auc_ci_reliable"] = check["reliable"]
        if check["reason"] and row["roc_auc_ci95"] is not None:
            row["roc_auc_ci_note"] = check["reason"]
    row["at_threshold"] = threshold_metrics(y, p, threshold)
    row["at_threshold"].update(rate_intervals(row["at_threshold"]))
    row["fixed_rates"] = fixed_rate_metrics(y, p)
    collect(row, "brier", brier_score, y, p)
    return row


def compare_predictions(labels: ArrayLike, probabilities: Mapping[str, ArrayLike],
                        thresholds: Mapping[str, float], *, bootstrap: int = DEFAULT_REPLICATES,
                        seed: int = 0) -> dict[str, Any]:
    """Side-by-side metrics and pairwise paired tests for models scored on the same images.

    Args:
        labels: 0/1 labels of the shared images.
        probabilities: Model name → P(malignant) per image (same order as ``labels``).
        thresholds: Model name → its operating threshold.
        bootstrap: Replicates for AUC intervals and the paired bootstrap (0 = none).
        seed: Bootstrap seed.

    Returns:
        ``counts``, ``models`` (name → summary) and ``pairs`` (one per pair: ``a``, ``b``,
        ``delong`` and ``paired_bootstrap``).
    """
    y = np.asarray(labels).astype(int)
    probs = {name: as_arrays(y, p)[1] for name, p in probabilities.items()}
    out: dict[str, Any] = {"counts": class_counts(y), "models": {}, "pairs": []}
    for name, p in probs.items():
        out["models"][name] = model_summary(y, p, thresholds[name], n_boot=bootstrap, seed=seed)
    for a, b in itertools.combinations(probs, 2):
        pair: dict[str, Any] = {"a": a, "b": b}
        collect(pair, "delong", delong_test, y, probs[a], probs[b])
        if bootstrap > 0:
            try:
                boot = paired_bootstrap_auc_difference(y, probs[a], probs[b], n_boot=bootstrap,
                                                       seed=seed)
                boot.pop("samples")
                pair["paired_bootstrap"] = boot
            except UndefinedMetricError as exc:
                pair["paired_bootstrap"] = None
                pair.setdefault("undefined", {})["paired_bootstrap"] = str(exc)
        out["pairs"].append(pair)
    return json_safe(out)


# === Comparing runs ===


@dataclass
class CompareResult:
    """A comparison of runs: ``comparison`` is what ``compare.json`` holds.

    Attributes:
        comparison: JSON-ready metrics and tests.
        predictions: ``image_id``, ``label`` and one ``p_<name>`` column per run.
        out_dir: Where the files were written.
        files: Name → path of every file written (``report`` = compare.html).
    """

    comparison: dict[str, Any]
    predictions: pd.DataFrame
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def report_path(self) -> Path | None:
        """``compare.html`` once written."""
        return self.files.get("report")


def write_comparison(result: CompareResult, out_dir: str | os.PathLike[str]) -> CompareResult:
    """Write ``compare.json``, ``predictions.csv``, ``roc_comparison.png`` and ``compare.html``."""
    from skinlesion.evaluation.plots import figure_png, plot_roc_comparison
    from skinlesion.evaluation.report import render_compare

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = result.predictions
    figures: dict[str, bytes] = {}
    y = table["label"].to_numpy(dtype=int)
    if 0 < y.sum() < y.size:
        probs = {c[2:]: table[c].to_numpy(dtype=float) for c in table.columns if c.startswith("p_")}
        figures["roc_comparison"] = figure_png(plot_roc_comparison(y, probs)[0].figure_)
    files: dict[str, Path] = {}
    for name, png in figures.items():
        files[name] = atomic_write_bytes(out / f"{name}.png", png)
    with atomic_path(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    files["predictions"] = out / "predictions.csv"
    files["metrics"] = out / "compare.json"
    files["report"] = out / "compare.html"
    result.comparison["files"] = {k: v.name for k, v in files.items()}
    atomic_write_json(files["metrics"], result.comparison)
    atomic_write_text(files["report"], render_compare(result.comparison, figures))
    result.out_dir, result.files = out, files
    return result
