"""Small-sample intervals: never zero-width at 0 % or 100 %, flagged when not reliable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from skinlesion.evaluation.evaluate import FIXED_RATES_NOTE, evaluate_predictions
from skinlesion.evaluation.intervals import (
    auc_interval_reliability,
    clopper_pearson_interval,
    rate_intervals,
    wilson_interval,
)
from skinlesion.evaluation.metrics import EvalResult
from skinlesion.evaluation.report import render_report


def test_wilson_nine_of_nine_is_far_below_one() -> None:
    lo, hi = wilson_interval(9, 9)
    assert hi == pytest.approx(1.0)
    assert lo == pytest.approx(0.7008, abs=1e-3)  # Wilson 1927: 9/9 → [0.701, 1]
    lo0, hi0 = wilson_interval(0, 9)
    assert lo0 == 0.0 and hi0 == pytest.approx(1 - 0.7008, abs=1e-3)
    assert wilson_interval(0, 0) is None


def test_wilson_matches_the_textbook_formula_and_shrinks_with_n() -> None:
    # Newcombe (1998), example: 81 of 263 → 0.2553–0.3662.
    lo, hi = wilson_interval(81, 263)
    assert (lo, hi) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    assert np.diff(wilson_interval(45, 50))[0] > np.diff(wilson_interval(450, 500))[0]


def test_clopper_pearson_is_exact_and_wider() -> None:
    lo, hi = clopper_pearson_interval(9, 9)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 9))  # (α/2)^(1/n) when k = n
    lo2, hi2 = clopper_pearson_interval(3, 10)
    assert lo2 == pytest.approx(stats.beta.ppf(0.025, 3, 8))
    assert hi2 == pytest.approx(stats.beta.ppf(0.975, 4, 7))
    w = wilson_interval(3, 10)
    assert lo2 < w[0] and hi2 > w[1]


def test_rate_intervals_cover_all_four_rates() -> None:
    cis = rate_intervals({"tp": 9, "fn": 0, "tn": 8, "fp": 3})
    assert cis["sensitivity_ci95"][0] < 0.75
    assert cis["ppv_ci95"] == wilson_interval(9, 12)
    assert cis["npv_ci95"] == wilson_interval(8, 8)


def test_auc_reliability_rule() -> None:
    assert auc_interval_reliability([0.6, 0.9], 30, 40)["reliable"]
    small = auc_interval_reliability([0.6, 0.9], 3, 40)
    assert not small["reliable"] and "3 malignant" in small["reason"]
    flat = auc_interval_reliability([1.0, 1.0], 12, 12)
    assert not flat["reliable"] and "zero width" in flat["reason"]


def _perfect_small() -> pd.DataFrame:
    # 9 malignant all found, 11 benign: the demo's situation.
    y = np.r_[np.ones(9, int), np.zeros(11, int)]
    p = np.r_[np.linspace(0.6, 0.95, 9), np.linspace(0.05, 0.4, 11)]
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(20)], "label": y, "probability": p,
                         "source": ["a"] * 17 + ["b"] * 3})


def test_perfect_sensitivity_on_nine_cases_has_an_honest_interval() -> None:
    result = evaluate_predictions(_perfect_small(), 0.5, bootstrap=200, seed=0)
    at, rk = result.metrics["at_threshold"], result.metrics["ranking"]
    assert at["sensitivity"] == 1.0
    lo, hi = at["sensitivity_ci95"]
    assert hi == pytest.approx(1.0) and lo < 0.75  # a bootstrap said [1.0, 1.0]
    assert at["ppv_ci95"] is not None and at["npv_ci95"] is not None
    # AUC 1.0 from 9 malignant: the bootstrap interval is flagged, not shown as meaningful.
    assert rk["roc_auc"] == 1.0
    assert rk["roc_auc_ci_reliable"] is False and "9 malignant" in rk["roc_auc_ci_note"]
    assert result.metrics["intervals"]["rates"].startswith("Wilson")
    group_b = next(g for g in result.metrics["subgroups"]["groupings"]["source"]["groups"]
                   if g["group"] == "b")
    assert group_b["roc_auc_ci_reliable"] is False
    s95 = result.metrics["fixed_rates"]["specificity_at_sensitivity_0.95"]
    assert s95["chosen_on"] == FIXED_RATES_NOTE


def test_report_prints_no_zero_width_interval() -> None:
    result = evaluate_predictions(_perfect_small(), 0.5, bootstrap=200, seed=0)
    html = render_report(EvalResult(metrics=result.metrics, predictions=result.predictions), {})
    assert "100.0–100.0" not in html and "1.000–1.000" not in html
    assert "not reliable" in html
    assert "70.1–100.0 %" in html  # the Wilson interval of 9/9
    assert "optimistic" in html
