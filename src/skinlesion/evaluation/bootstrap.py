"""Stratified percentile bootstrap: confidence intervals for AUC, the ROC curve and rates.

Each replicate draws the malignant cases with replacement from the malignant
cases and the benign cases from the benign ones, so every replicate keeps the
observed class counts (the AUC is defined in every replicate, and prevalence
does not wobble). The interval is the percentile interval of the replicates.

A replicate is represented by *counts* (how often each case was drawn), and the
AUC of a replicate is the weighted Mann–Whitney statistic — exactly what
``sklearn.metrics.roc_auc_score(y, p, sample_weight=counts)`` returns (the tests
check this), but computed for hundreds of replicates at once after a single
sort, which makes 2,000 replicates per subgroup cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from skinlesion.evaluation.metrics import UndefinedMetricError, as_arrays

DEFAULT_REPLICATES = 2000
DEFAULT_CONFIDENCE = 0.95
_BLOCK_CELLS = 4_000_000  # replicates × cases held in memory at once (~32 MB per matrix)


@dataclass
class BootstrapResult:
    """Replicate values of a stratified bootstrap.

    Attributes:
        n_boot: Number of replicates.
        seed: Seed of ``numpy.random.default_rng``.
        confidence: Level of the percentile intervals (0.95).
        auc: ROC AUC of each replicate, shape ``(n_boot,)``.
        threshold: Threshold of ``sensitivity``/``specificity`` (``None`` if not asked).
        sensitivity: Sensitivity at ``threshold`` per replicate.
        specificity: Specificity at ``threshold`` per replicate.
        fpr_grid: FPR values at which ``tpr`` is sampled.
        tpr: TPR of each replicate's ROC curve at ``fpr_grid``, shape ``(n_boot, len(grid))``.
    """

    n_boot: int
    seed: int
    confidence: float
    auc: np.ndarray
    threshold: float | None = None
    sensitivity: np.ndarray | None = None
    specificity: np.ndarray | None = None
    fpr_grid: np.ndarray = field(default_factory=lambda: np.empty(0))
    tpr: np.ndarray | None = None

    def interval(self, values: np.ndarray) -> list[float]:
        """Percentile interval ``[low, high]`` of ``values`` at ``confidence``."""
        alpha = (1.0 - self.confidence) / 2.0
        lo, hi = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
        return [float(lo), float(hi)]

    @property
    def auc_ci(self) -> list[float]:
        """Percentile interval of the AUC."""
        return self.interval(self.auc)

    def roc_band(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fpr_grid, tpr_low, tpr_high)``: pointwise percentile band of the ROC curve."""
        if self.tpr is None:
            raise ValueError("this bootstrap did not record ROC curves")
        alpha = (1.0 - self.confidence) / 2.0
        lo, hi = np.percentile(self.tpr, [100 * alpha, 100 * (1 - alpha)], axis=0)
        return self.fpr_grid, lo, hi

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: method, replicates, seed and the intervals."""
        out: dict[str, Any] = {
            "method": "stratified percentile bootstrap (cases resampled within each class)",
            "replicates": self.n_boot, "seed": self.seed, "confidence": self.confidence,
            "roc_auc_ci": self.auc_ci,
        }
        if self.sensitivity is not None and self.specificity is not None:
            out["threshold"] = self.threshold
            out["sensitivity_ci"] = self.interval(self.sensitivity)
            out["specificity_ci"] = self.interval(self.specificity)
        return out


# === Weighted AUC for many replicates at once ===


class _Sorted:
    """Cases sorted by score once, with the boundaries of tied scores."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        self.order = np.argsort(p, kind="mergesort")
        ps = p[self.order]
        self.y = y[self.order].astype(float)
        self.starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]]) if ps.size else np.empty(
            0, dtype=int)

    def grouped(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Malignant and benign weight per distinct score (ascending), shape ``(B, U)``."""
        w = weights[:, self.order]
        pos = np.add.reduceat(w * self.y, self.starts, axis=1)
        neg = np.add.reduceat(w * (1.0 - self.y), self.starts, axis=1)
        return pos, neg


def _auc_from_grouped(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    # Mann–Whitney: each malignant case scores the benign weight below it plus half the ties.
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_roc_auc(y_true: ArrayLike, y_prob: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """ROC AUC for each row of ``weights`` (case weights, e.g. bootstrap counts).

    Equals ``roc_auc_score(y_true, y_prob, sample_weight=row)`` for every row (ties count
    one half); NaN for a row that leaves one class without weight.

    Args:
        y_true: 0/1 labels, shape ``(N,)``.
        y_prob: Scores, shape ``(N,)``.
        weights: Non-negative weights, shape ``(N,)`` or ``(B, N)``.

    Returns:
        Shape ``(B,)`` (``(1,)`` for one weight vector).
    """
    y, p = as_arrays(y_true, y_prob)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    if w.shape[1] != y.size:
        raise ValueError(f"weights have {w.shape[1]} columns for {y.size} cases")
    pos, neg = _Sorted(y, p).grouped(w)
    return _auc_from_grouped(pos, neg)


def _roc_tpr_on_grid(pos: np.ndarray, neg: np.ndarray, grid: np.ndarray) -> np.ndarray:
    # Thresholds from the top score down: cumulative weights from the right end.
    tp = np.cumsum(pos[:, ::-1], axis=1)
    fp = np.cumsum(neg[:, ::-1], axis=1)
    tpr = np.hstack([np.zeros((tp.shape[0], 1)), tp / tp[:, -1:]])
    fpr = np.hstack([np.zeros((fp.shape[0], 1)), fp / fp[:, -1:]])
    return np.vstack([np.interp(grid, fpr[i], tpr[i]) for i in range(tp.shape[0])])


def _resample_counts(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    # How often each of n cases is drawn in each of b replicates of size n.
    draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(float)


def _blocks(n_boot: int, n_cases: int) -> list[int]:
    size = max(1, min(n_boot, _BLOCK_CELLS // max(n_cases, 1)))
    return [min(size, n_boot - start) for start in range(0, n_boot, size)]


# === The bootstraps ===


def stratified_bootstrap(y_true: ArrayLike, y_prob: ArrayLike, *,
                         threshold: float | None = None, n_boot: int = DEFAULT_REPLICATES,
                         seed: int = 0, confidence: float = DEFAULT_CONFIDENCE,
                         roc_points: int = 0) -> BootstrapResult:
    """Stratified bootstrap of the AUC (and optionally rates at a threshold and the ROC band).

    Args:
        y_true: 0/1 labels.
        y_prob: Predicted P(malignant).
        threshold: Also resample sensitivity and specificity of ``probability >= threshold``.
        n_boot: Number of replicates.
        seed: Seed for ``numpy.random.default_rng``: the same inputs give the same intervals.
        confidence: Level of the percentile intervals.
        roc_points: If > 0, also record each replicate's ROC curve at this many FPR values.

    Returns:
        The replicates; intervals via :class:`BootstrapResult`.

    Raises:
        UndefinedMetricError: if a class is missing (the AUC is undefined).
    """
    y, p = as_arrays(y_true, y_prob)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if pos_idx.size == 0 or neg_idx.size == 0:
        raise UndefinedMetricError(f"bootstrap AUC needs both classes; got {pos_idx.size} "
                                   f"malignant and {neg_idx.size} benign")
    rng = np.random.default_rng(seed)
    sorted_ = _Sorted(y, p)
    grid = np.linspace(0.0, 1.0, roc_points) if roc_points > 0 else np.empty(0)
    aucs, sens, spec, tprs = [], [], [], []
    for b in _blocks(n_boot, y.size):
        w = np.zeros((b, y.size))
        w_pos = _resample_counts(rng, pos_idx.size, b)
        w_neg = _resample_counts(rng, neg_idx.size, b)
        w[:, pos_idx], w[:, neg_idx] = w_pos, w_neg
        pos, neg = sorted_.grouped(w)
        aucs.append(_auc_from_grouped(pos, neg))
        if threshold is not None:
            sens.append(w_pos @ (p[pos_idx] >= threshold) / pos_idx.size)
            spec.append(w_neg @ (p[neg_idx] < threshold) / neg_idx.size)
        if roc_points > 0:
            tprs.append(_roc_tpr_on_grid(pos, neg, grid))
    return BootstrapResult(
        n_boot=n_boot, seed=seed, confidence=confidence, auc=np.concatenate(aucs),
        threshold=threshold,
        sensitivity=np.concatenate(sens) if sens else None,
        specificity=np.concatenate(spec) if spec else None,
        fpr_grid=grid, tpr=np.vstack(tprs) if tprs else None,
    )


def paired_bootstrap_auc_difference(y_true: ArrayLike, prob_a: ArrayLike, prob_b: ArrayLike, *,
                                    n_boot: int = DEFAULT_REPLICATES, seed: int = 0,
                                    confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Paired stratified bootstrap of ``AUC(a) − AUC(b)`` on the same cases.

    Both models are scored on the *same* resampled cases in each replicate, so the
    correlation between them (they see the same images) is kept.

    Returns:
        ``difference`` (observed), ``ci`` (percentile), ``se`` (replicate SD),
        ``p_value`` (two-sided, from the share of replicates on the other side of 0) and
        the ``replicates`` array under ``samples``.

    Raises:
        UndefinedMetricError: if a class is missing.
    """
    y, pa = as_arrays(y_true, prob_a)
    _, pb = as_arrays(y_true, prob_b)
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if pos_idx.size == 0 or neg_idx.size == 0:
        raise UndefinedMetricError("paired bootstrap needs both classes")
    rng = np.random.default_rng(seed)
    sa, sb = _Sorted(y, pa), _Sorted(y, pb)
    diffs = []
    for b in _blocks(n_boot, y.size):
        w = np.zeros((b, y.size))
        w[:, pos_idx] = _resample_counts(rng, pos_idx.size, b)
        w[:, neg_idx] = _resample_counts(rng, neg_idx.size, b)
        diffs.append(_auc_from_grouped(*sa.grouped(w)) - _auc_from_grouped(*sb.grouped(w)))
    d = np.concatenate(diffs)
    full = np.ones((1, y.size))
    observed = float(_auc_from_grouped(*sa.grouped(full))[0] - _auc_from_grouped(
        *sb.grouped(full))[0])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(d, [100 * alpha, 100 * (1 - alpha)])
    # Two-sided p: twice the smaller tail mass beyond zero (+1 smoothing: never exactly 0).
    tail = min((d <= 0).sum(), (d >= 0).sum())
    p_value = min(1.0, 2.0 * (tail + 1) / (d.size + 1))
    return {"difference": observed, "ci": [float(lo), float(hi)], "se": float(d.std(ddof=1)),
            "p_value": float(p_value), "replicates": int(d.size), "seed": seed, "samples": d}
