"""Choosing the decision threshold on validation data.

A wrong "benign" can cost a life, so the default operating point is
sensitivity-first: the *highest* threshold whose sensitivity on the validation
split reaches the target (tutorial 1 lowered its threshold to 0.23 by hand for
the same reason). Youden's J is recorded beside it. A case is called malignant
when ``probability >= threshold``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve


def _roc(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but y_prob has {p.size}")
    if len(np.unique(y)) < 2:
        raise ValueError("choosing a threshold needs both classes in the data")
    if not np.all(np.isfinite(p)):
        raise ValueError("y_prob holds NaN or Inf")
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    return fpr, tpr, np.minimum(thr, 1.0)


def threshold_for_sensitivity(y_true: ArrayLike, y_prob: ArrayLike, target: float) -> float:
    """Highest threshold whose sensitivity (TPR) is at least ``target``.

    Args:
        y_true: 0/1 labels.
        y_prob: Predicted P(malignant).
        target: Required sensitivity in (0, 1].

    Returns:
        The threshold; ``probability >= threshold`` is called malignant.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    _, tpr, thr = _roc(y_true, y_prob)
    idx = int(np.argmax(tpr >= target - 1e-12))
    return float(thr[idx])


def youden_threshold(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity − 1."""
    fpr, tpr, thr = _roc(y_true, y_prob)
    return float(thr[int(np.argmax(tpr - fpr))])


def rates_at(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> dict[str, float]:
    """Sensitivity and specificity of ``probability >= threshold``."""
    y = np.asarray(y_true).astype(int).ravel()
    pred = np.asarray(y_prob, dtype=float).ravel() >= threshold
    pos, neg = y == 1, y == 0
    return {
        "threshold": float(threshold),
        "sensitivity": float(pred[pos].mean()) if pos.any() else float("nan"),
        "specificity": float((~pred[neg]).mean()) if neg.any() else float("nan"),
    }
