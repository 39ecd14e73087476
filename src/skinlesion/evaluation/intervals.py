"""Confidence intervals that stay honest on small samples.

A percentile bootstrap of a proportion collapses to a zero-width interval when the
observed proportion is 0 or 1: nine malignant lesions all found give "sensitivity
100 %, 95 % CI 100–100 %", which says the opposite of the truth (nine cases cannot
rule out a sensitivity of 70 %). Proportions — sensitivity, specificity, PPV, NPV —
therefore get the Wilson score interval (Wilson 1927; recommended by Brown, Cai &
DasGupta 2001 for its coverage at small n), with the Clopper–Pearson exact interval
available for those who need guaranteed coverage.

For the ROC AUC the stratified bootstrap stays (``bootstrap.py``), but its interval
is only shown as meaningful when each class has at least
:data:`MIN_CASES_FOR_AUC_CI` cases and the interval has width; otherwise it is
flagged not reliable and the reason is stored next to it.
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats

DEFAULT_CONFIDENCE = 0.95

MIN_CASES_FOR_AUC_CI = 10
"""A bootstrap AUC interval from fewer malignant or benign cases than this is flagged."""

PROPORTION_METHOD = "Wilson score interval"


def wilson_interval(successes: int, n: int,
                    confidence: float = DEFAULT_CONFIDENCE) -> list[float] | None:
    """Wilson score interval ``[low, high]`` for ``successes`` out of ``n``.

    Never zero-width for ``n > 0``: 9 of 9 gives about ``[0.70, 1.00]``.

    Returns:
        ``None`` when ``n`` is 0 (no proportion to bound).

    Raises:
        ValueError: if the counts are inconsistent or ``confidence`` is outside (0, 1).
    """
    _check(successes, n, confidence)
    if n == 0:
        return None
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    phat = successes / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def clopper_pearson_interval(successes: int, n: int,
                             confidence: float = DEFAULT_CONFIDENCE) -> list[float] | None:
    """Clopper–Pearson exact interval (from beta quantiles); conservative.

    Returns:
        ``None`` when ``n`` is 0.
    """
    _check(successes, n, confidence)
    if n == 0:
        return None
    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(stats.beta.ppf(1 - alpha / 2, successes + 1,
                                                        n - successes))
    return [lo, hi]


def _check(successes: int, n: int, confidence: float) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def rate_intervals(counts: dict[str, int],
                   confidence: float = DEFAULT_CONFIDENCE) -> dict[str, list[float] | None]:
    """Wilson intervals of sensitivity, specificity, PPV and NPV from confusion counts.

    Args:
        counts: ``tp``, ``fp``, ``tn``, ``fn``.
        confidence: Interval level.

    Returns:
        ``sensitivity_ci95``, ``specificity_ci95``, ``ppv_ci95``, ``npv_ci95`` (``None``
        where the rate is undefined).
    """
    tp, fp, tn, fn = (int(counts[k]) for k in ("tp", "fp", "tn", "fn"))
    return {
        "sensitivity_ci95": wilson_interval(tp, tp + fn, confidence),
        "specificity_ci95": wilson_interval(tn, tn + fp, confidence),
        "ppv_ci95": wilson_interval(tp, tp + fp, confidence),
        "npv_ci95": wilson_interval(tn, tn + fn, confidence),
    }


def auc_interval_reliability(interval: list[float] | None, n_positive: int, n_negative: int,
                             min_cases: int = MIN_CASES_FOR_AUC_CI) -> dict[str, Any]:
    """Whether a bootstrap AUC interval can be read as one, and if not, why.

    Returns:
        ``{"reliable": bool, "reason": str | None}``.
    """
    if interval is None:
        return {"reliable": False, "reason": "no interval"}
    if n_positive < min_cases or n_negative < min_cases:
        return {"reliable": False,
                "reason": f"too few cases for a bootstrap interval ({n_positive} malignant, "
                          f"{n_negative} benign; needs ≥ {min_cases} of each)"}
    if interval[1] - interval[0] <= 0.0:
        return {"reliable": False,
                "reason": "the bootstrap interval has zero width (perfectly separated "
                          "scores); it does not mean the AUC is known exactly"}
    return {"reliable": True, "reason": None}
