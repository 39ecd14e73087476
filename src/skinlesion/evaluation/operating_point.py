"""Choosing the decision threshold on validation data.

A wrong "benign" can cost a life, so the default operating point is
sensitivity-first: the *highest* threshold whose sensitivity on the validation
split reaches the target (tutorial 1 lowered its threshold to 0.23 by hand for
the same reason). Youden's J is recorded beside it. A case is called malignant
when ``probability >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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


def threshold_for_specificity(y_true: ArrayLike, y_prob: ArrayLike, target: float) -> float:
    """Lowest threshold whose specificity (1 − FPR) is at least ``target``.

    The lowest such threshold has the highest sensitivity among those meeting the target.

    Args:
        y_true: 0/1 labels.
        y_prob: Predicted P(malignant).
        target: Required specificity in (0, 1].

    Returns:
        The threshold; ``probability >= threshold`` is called malignant.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target specificity must be in (0, 1], got {target}")
    fpr, _, thr = _roc(y_true, y_prob)
    # fpr is non-decreasing as the threshold falls: take the last point still within budget.
    idx = int(np.searchsorted(fpr, 1.0 - target + 1e-12, side="right")) - 1
    return float(thr[max(idx, 0)])


@dataclass(frozen=True)
class ThresholdRule:
    """How an evaluation picks its decision threshold, parsed from the CLI's ``--threshold``.

    Forms: ``stored`` (the run's ``model_spec.json``), ``youden`` (maximise Youden's J),
    ``sens=0.95`` (highest threshold reaching that sensitivity) or a number in [0, 1].
    ``youden`` and ``sens=`` are fitted on validation data, never on the data being scored.

    Attributes:
        kind: ``"stored"``, ``"youden"``, ``"sensitivity"`` or ``"value"``.
        target: The sensitivity target (``"sensitivity"``) or the fixed value (``"value"``).
    """

    kind: str
    target: float | None = None

    FORMS: ClassVar[str] = "stored, youden, sens=0.95 or a number in [0, 1]"

    def __post_init__(self) -> None:
        if self.kind not in ("stored", "youden", "sensitivity", "value"):
            raise ValueError(f"unknown threshold rule kind {self.kind!r}")
        if (self.kind in ("sensitivity", "value")) != (self.target is not None):
            raise ValueError(f"threshold rule {self.kind!r}: target {self.target!r} not allowed")

    @classmethod
    def parse(cls, text: str | float | ThresholdRule) -> ThresholdRule:
        """Parse ``stored``, ``youden``, ``sens=X`` / ``sensitivity=X`` or a number.

        Raises:
            ValueError: naming the accepted forms.
        """
        if isinstance(text, ThresholdRule):
            return text
        raw = str(text).strip().lower()
        if raw in ("stored", "youden"):
            return cls(raw)
        key, sep, value = raw.partition("=")
        try:
            number = float(value if sep else raw)
        except ValueError:
            number = float("nan")
        if sep and key.strip() in ("sens", "sensitivity") and 0.0 < number <= 1.0:
            return cls("sensitivity", number)
        if not sep and 0.0 <= number <= 1.0:
            return cls("value", number)
        raise ValueError(f"threshold {text!r} not understood; use {cls.FORMS}")

    def __str__(self) -> str:
        if self.kind in ("sensitivity", "value"):
            return f"sens={self.target:g}" if self.kind == "sensitivity" else f"{self.target:g}"
        return self.kind
