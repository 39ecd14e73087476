"""Calibration: can a predicted probability be read as a risk?

The reliability bins are the ones ``sklearn.calibration.calibration_curve`` uses
(``strategy="uniform"``: ``n_bins`` equal-width bins on [0, 1]); this module adds
what that function leaves out (the tests check the two agree) — the number of cases per bin — and the expected
calibration error built from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from skinlesion.evaluation.metrics import UndefinedMetricError, as_arrays

DEFAULT_BINS = 10


def _bin_ids(p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    # The same assignment as calibration_curve(strategy="uniform"): a probability on an inner
    # edge goes to the lower bin, 1.0 to the last bin.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return edges, np.searchsorted(edges[1:-1], p)


def calibration_bins(y_true: ArrayLike, y_prob: ArrayLike,
                     n_bins: int = DEFAULT_BINS) -> list[dict[str, Any]]:
    """Equal-width reliability bins.

    Args:
        y_true: 0/1 labels.
        y_prob: Predicted P(malignant).
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        One dict per bin (empty bins included): ``lower``, ``upper``, ``n``,
        ``mean_predicted`` and ``fraction_malignant`` (both ``None`` for an empty bin).
        The non-empty bins' values equal ``calibration_curve(y, p, n_bins=n_bins)``.
    """
    y, p = as_arrays(y_true, y_prob)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges, ids = _bin_ids(p, n_bins)
    total = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    bins = []
    for b in range(n_bins):
        n = int(total[b])
        bins.append({
            "lower": float(edges[b]), "upper": float(edges[b + 1]), "n": n,
            "mean_predicted": float(sum_p[b] / n) if n else None,
            "fraction_malignant": float(sum_y[b] / n) if n else None,
        })
    return bins


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike,
                               n_bins: int = DEFAULT_BINS) -> float:
    """ECE: the case-weighted mean gap between predicted risk and observed frequency.

    ``ECE = Σ_b (n_b / N) · |fraction_malignant_b − mean_predicted_b|`` over the
    equal-width bins of :func:`calibration_bins`. 0 is perfect.

    Raises:
        UndefinedMetricError: with no predictions.
    """
    y, p = as_arrays(y_true, y_prob)
    if y.size == 0:
        raise UndefinedMetricError("no predictions")
    bins = [b for b in calibration_bins(y, p, n_bins) if b["n"]]
    return float(sum(b["n"] * abs(b["fraction_malignant"] - b["mean_predicted"])
                     for b in bins) / y.size)


def max_calibration_error(y_true: ArrayLike, y_prob: ArrayLike,
                          n_bins: int = DEFAULT_BINS) -> float:
    """MCE: the largest gap over the non-empty bins.

    Raises:
        UndefinedMetricError: with no predictions.
    """
    y, p = as_arrays(y_true, y_prob)
    if y.size == 0:
        raise UndefinedMetricError("no predictions")
    return float(max(abs(b["fraction_malignant"] - b["mean_predicted"])
                     for b in calibration_bins(y, p, n_bins) if b["n"]))


def calibration_summary(y_true: ArrayLike, y_prob: ArrayLike,
                        n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """``ece``, ``mce``, ``n_bins`` and ``bins`` in one serialisable dict."""
    y, p = as_arrays(y_true, y_prob)
    if y.size == 0:
        return {"ece": None, "mce": None, "n_bins": n_bins, "bins": [],
                "undefined": {"ece": "no predictions", "mce": "no predictions"}}
    return {"ece": expected_calibration_error(y, p, n_bins),
            "mce": max_calibration_error(y, p, n_bins), "n_bins": n_bins,
            "bins": calibration_bins(y, p, n_bins)}
