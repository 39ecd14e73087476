"""Per-subgroup metrics: fairness and shortcut checks.

The isic-dev data card warns that sources differ in size, crop and malignant
share, so a model can learn the source instead of the lesion. Reporting the
core metrics per source dataset, sex, age band and anatomic site shows whether
the headline numbers hold everywhere. A subgroup with fewer than
``MIN_PER_CLASS`` malignant or benign cases is flagged ``too_small``: its AUC
and rates are still shown (with their wide intervals) but say little.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from skinlesion.evaluation.bootstrap import DEFAULT_REPLICATES, stratified_bootstrap
from skinlesion.evaluation.intervals import auc_interval_reliability, rate_intervals
from skinlesion.evaluation.metrics import (
    UndefinedMetricError,
    class_counts,
    collect,
    roc_auc,
    threshold_metrics,
)

MIN_PER_CLASS = 10
"""Fewer malignant or benign cases than this and a subgroup is flagged too small."""

AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 30, "<30"), (30, 50, "30–49"), (50, 70, "50–69"), (70, float("inf"), "≥70"),
)
"""Half-open age intervals ``[low, high)`` and their labels."""

SUBGROUP_COLUMNS: dict[str, str] = {
    "source": "Source dataset", "sex": "Sex", "age_band": "Age band", "site": "Anatomic site",
}
"""Column → heading, in report order. ``age_band`` is derived from ``age``."""

UNKNOWN = "(unknown)"


def age_band(age: pd.Series) -> pd.Series:
    """Age in years → band label of :data:`AGE_BANDS`; missing ages → ``"(unknown)"``."""
    values = pd.to_numeric(age, errors="coerce")
    out = pd.Series(UNKNOWN, index=age.index, dtype=object)
    for low, high, label in AGE_BANDS:
        out[(values >= low) & (values < high)] = label
    return out


def _group_labels(df: pd.DataFrame, column: str) -> pd.Series | None:
    if column == "age_band":
        if "age" not in df or pd.to_numeric(df["age"], errors="coerce").isna().all():
            return None
        return age_band(df["age"])
    if column not in df:
        return None
    values = df[column].fillna("").astype(str).str.strip()
    if (values == "").all():
        return None
    return values.replace("", UNKNOWN)


def _order(labels: pd.Series, column: str) -> list[str]:
    present = set(labels)
    if column == "age_band":
        ordered = [band for _, _, band in AGE_BANDS if band in present]
    else:
        counts = labels.value_counts()
        ordered = [g for g in counts.index if g != UNKNOWN]
    return ordered + ([UNKNOWN] if UNKNOWN in present else [])


def subgroup_row(y: np.ndarray, p: np.ndarray, threshold: float, *, n_boot: int, seed: int,
                 min_per_class: int = MIN_PER_CLASS) -> dict[str, Any]:
    """Core metrics of one subgroup: counts, AUC (+ CI), sensitivity and specificity.

    Returns:
        ``n``, ``n_positive``, ``n_negative``, ``prevalence``, ``roc_auc``, ``roc_auc_ci``,
        ``roc_auc_ci_reliable`` (and ``roc_auc_ci_note``), ``sensitivity``, ``specificity``,
        ``ppv``, ``npv`` with Wilson ``*_ci95``, ``too_small`` and ``undefined``
        reasons for any ``None``.
    """
    row: dict[str, Any] = class_counts(y)
    collect(row, "roc_auc", roc_auc, y, p)
    try:
        row["roc_auc_ci"] = stratified_bootstrap(y, p, n_boot=n_boot, seed=seed).auc_ci \
            if n_boot > 0 else None
    except UndefinedMetricError:
        row["roc_auc_ci"] = None
    check = auc_interval_reliability(row["roc_auc_ci"], row["n_positive"], row["n_negative"],
                                     min_per_class)
    row["roc_auc_ci_reliable"] = check["reliable"]
    if check["reason"] and row["roc_auc_ci"] is not None:
        row["roc_auc_ci_note"] = check["reason"]
    at = threshold_metrics(y, p, threshold)
    cis = rate_intervals(at)
    for key in ("sensitivity", "specificity", "ppv", "npv"):
        row[key] = at[key]
        row[f"{key}_ci95"] = cis[f"{key}_ci95"]
        if key in at.get("undefined", {}):
            row.setdefault("undefined", {})[key] = at["undefined"][key]
    row["too_small"] = bool(row["n_positive"] < min_per_class or row["n_negative"] < min_per_class)
    return row


def subgroup_metrics(df: pd.DataFrame, threshold: float, *, n_boot: int = DEFAULT_REPLICATES,
                     seed: int = 0, min_per_class: int = MIN_PER_CLASS,
                     columns: tuple[str, ...] = tuple(SUBGROUP_COLUMNS)) -> dict[str, Any]:
    """Core metrics for every subgroup of every grouping the data have.

    Args:
        df: Scored images with ``label``, ``probability`` and any of ``source``, ``sex``,
            ``age``, ``site``.
        threshold: Operating threshold.
        n_boot: Bootstrap replicates for each subgroup's AUC interval (0 skips it).
        seed: Bootstrap seed.
        min_per_class: Flag groups with fewer malignant or benign cases than this.
        columns: Groupings to try, in order; one whose values are all empty is skipped.

    Returns:
        ``{"min_per_class": ..., "groupings": {column: {"title": ..., "groups": [row, ...]}}}``
        where each row is :func:`subgroup_row` plus ``group`` (its label).
    """
    y_all = df["label"].to_numpy(dtype=int)
    p_all = df["probability"].to_numpy(dtype=float)
    groupings: dict[str, Any] = {}
    for column in columns:
        labels = _group_labels(df, column)
        if labels is None:
            continue
        rows = []
        for group in _order(labels, column):
            mask = (labels == group).to_numpy()
            row = subgroup_row(y_all[mask], p_all[mask], threshold, n_boot=n_boot, seed=seed,
                               min_per_class=min_per_class)
            rows.append({"group": group, **row})
        groupings[column] = {"title": SUBGROUP_COLUMNS.get(column, column), "groups": rows}
    return {"min_per_class": min_per_class, "groupings": groupings}
