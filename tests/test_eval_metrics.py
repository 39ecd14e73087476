"""Evaluation metrics against scikit-learn, hand-computed cases and the ISIC definitions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from skinlesion.evaluation.calibration import (
    calibration_bins,
    calibration_summary,
    expected_calibration_error,
)
from skinlesion.evaluation.evaluate import (
    choose_operating_point,
    confident_errors,
    evaluate_predictions,
)
from skinlesion.evaluation.metrics import (
    UndefinedMetricError,
    auc_above_sensitivity,
    average_precision,
    brier_score,
    json_safe,
    partial_auc_above_tpr,
    roc_auc,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    threshold_metrics,
)
from skinlesion.evaluation.operating_point import (
    ThresholdRule,
    rates_at,
    threshold_for_specificity,
    youden_threshold,
)
from skinlesion.evaluation.subgroups import age_band, subgroup_metrics
from skinlesion.runspec import ModelSpec

# A worked example, small enough to draw by hand. Sorted by score, the ROC curve goes
# (0, 0) → (0, .2) → (0, .4) → (0, .6) → [tie at 0.5: 2 malignant, 1 benign] → (.25, 1)
# → (.5, 1) → (.75, 1) → (1, 1).
Y_HAND = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
P_HAND = np.array([0.9, 0.8, 0.7, 0.5, 0.5, 0.5, 0.3, 0.2, 0.1])


def random_scores(n: int = 400, seed: int = 0, shift: float = 0.25,
                  decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities with some signal (rounded, so there are ties)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.4 + shift * y, 0.2), 0, 1)
    return y, (np.round(p, decimals) if decimals is not None else p)


# === Ranking metrics ===


def test_roc_auc_hand_case_counts_ties_as_half() -> None:
    # 20 malignant–benign pairs: 0.9, 0.8, 0.7 beat all 4 benign (12); each 0.5 beats 3 and
    # ties 1 (2 × 3.5 = 7): (12 + 7) / 20.
    assert roc_auc(Y_HAND, P_HAND) == pytest.approx(19 / 20)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_on_probabilities(seed: int) -> None:
    y, p = random_scores(seed=seed)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    # Tutorial 1's bug: AUC of thresholded 0/1 decisions understates a ranking model.
    assert roc_auc(y, p) > skm.roc_auc_score(y, p >= 0.5)


def test_average_precision_and_brier_match_sklearn() -> None:
    y, p = random_scores(seed=3)
    assert average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p))
    assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p))
    # Hand case: (0.1² + 0.9² + 0.1² + 0.1²) / 4 = 0.21.
    assert brier_score([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.21)


def test_partial_auc_worked_example() -> None:
    # Above TPR = 0.8 the curve is the diagonal from (0, .6) to (.25, 1), crossing TPR .8 at
    # FPR .125: area = ∫_.8^1 (1 − FPR(t)) dt with FPR(t) = .625 (t − .6)
    #               = 0.2 − 0.625 · (0.4² − 0.2²) / 2 = 0.2 − 0.0375 = 0.1625.
    assert partial_auc_above_tpr(Y_HAND, P_HAND) == pytest.approx(0.1625)


def test_auc_sens_80_worked_example_isic_challenge_scoring() -> None:
    # isic-challenge-scoring's auc_above_sensitivity: cut the curve at TPR .8 (FPR .125,
    # interpolated), integrate the full height from there: trapezoid (.125 → .25, heights
    # .8 → 1) = .1125, plus .75 × 1 = .8625.
    assert auc_above_sensitivity(Y_HAND, P_HAND) == pytest.approx(0.8625)


def _fpr_at_tpr(y: np.ndarray, p: np.ndarray, t: float) -> float:
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    i = int(np.searchsorted(tpr, t, side="left"))
    return float(np.interp(t, tpr[i - 1: i + 1], fpr[i - 1: i + 1]))


def _pauc_by_geometry(y: np.ndarray, p: np.ndarray, min_tpr: float) -> float:
    # Independent route: walk the piecewise-linear ROC curve and add, for every rising
    # segment (the part above TPR = min_tpr), the area between it and the right edge FPR = 1:
    # ∫ (1 − FPR(t)) dt is exact with the trapezoid rule because FPR is linear in t there.
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    area = 0.0
    for xa, ya, xb, yb in zip(fpr[:-1], tpr[:-1], fpr[1:], tpr[1:], strict=True):
        if yb <= min_tpr or yb == ya:
            continue
        if ya < min_tpr:
            xa, ya = xa + (min_tpr - ya) / (yb - ya) * (xb - xa), min_tpr
        area += (yb - ya) * (1.0 - (xa + xb) / 2.0)
    return area


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_partial_auc_against_integration_and_isic_scoring(seed: int) -> None:
    y, p = random_scores(n=300, seed=seed, decimals=None if seed % 2 else 1)  # ties too
    pauc = partial_auc_above_tpr(y, p)
    assert pauc == pytest.approx(_pauc_by_geometry(y, p, 0.8), abs=1e-12)
    # The two ISIC definitions differ by the rectangle under TPR = .8.
    assert auc_above_sensitivity(y, p) - pauc == pytest.approx(
        0.8 * (1 - _fpr_at_tpr(y, p, 0.8)), abs=1e-9)
    assert 0.0 <= pauc <= 0.2


def test_partial_auc_range_perfect_chance_and_reversed() -> None:
    y = np.array([0] * 500 + [1] * 500)
    assert partial_auc_above_tpr(y, y * 0.5 + 0.25) == pytest.approx(0.2)
    assert partial_auc_above_tpr(y, 0.75 - y * 0.5) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    chance = np.mean([partial_auc_above_tpr(y, rng.uniform(size=y.size)) for _ in range(20)])
    assert chance == pytest.approx(0.5 * 0.2**2, abs=0.004)


def test_ranking_metrics_undefined_with_one_class() -> None:
    with pytest.raises(UndefinedMetricError, match="both classes"):
        roc_auc([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(UndefinedMetricError, match="malignant"):
        average_precision([0, 0], [0.2, 0.5])


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        roc_auc([0, 1], [0.2, 1.5])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.2, 0.5])


# === Metrics at a threshold ===


def test_threshold_metrics_hand_case() -> None:
    m = threshold_metrics(Y_HAND, P_HAND, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (5, 1, 3, 0)
    assert m["accuracy"] == pytest.approx(8 / 9)
    assert m["sensitivity"] == pytest.approx(1.0)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(5 / 6)
    assert m["npv"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(10 / 11)
    assert m["balanced_accuracy"] == pytest.approx(0.875)
    assert "undefined" not in m


@pytest.mark.parametrize("threshold", [0.2, 0.45, 0.6, 0.8])
def test_threshold_metrics_match_sklearn(threshold: float) -> None:
    y, p = random_scores(seed=5)
    pred = (p >= threshold).astype(int)
    m = threshold_metrics(y, p, threshold)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred))
    assert m["npv"] == pytest.approx(skm.precision_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    # "probability >= threshold" is malignant, as in operating_point.rates_at.
    assert m["sensitivity"] == pytest.approx(rates_at(y, p, threshold)["sensitivity"])


def test_threshold_metrics_undefined_values_have_reasons_and_serialise() -> None:
    m = threshold_metrics(Y_HAND, P_HAND, 0.95)  # nothing called malignant
    assert m["ppv"] is None and "nothing called malignant" in m["undefined"]["ppv"]
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0
    one_class = threshold_metrics([0, 0, 0], [0.1, 0.6, 0.2], 0.5)
    assert one_class["sensitivity"] is None and one_class["balanced_accuracy"] is None
    assert set(one_class["undefined"]) == {"sensitivity", "balanced_accuracy"}
    assert one_class["f1"] == 0.0  # one false positive, no true positive: defined, and 0
    json.dumps(json_safe([m, one_class]), allow_nan=False)


def test_specificity_at_sensitivity_hand_case_and_brute_force() -> None:
    r = specificity_at_sensitivity(Y_HAND, P_HAND, 0.9)
    assert (r["threshold"], r["sensitivity"], r["specificity"]) == (0.5, 1.0, 0.75)
    s = sensitivity_at_specificity(Y_HAND, P_HAND, 0.9)
    assert (s["threshold"], s["sensitivity"], s["specificity"]) == (0.7, 0.6, 1.0)
    y, p = random_scores(seed=7)
    for target in (0.8, 0.9, 0.95):
        rates = [rates_at(y, p, t) for t in np.unique(p)]
        best_spec = max(r["specificity"] for r in rates if r["sensitivity"] >= target)
        best_sens = max(r["sensitivity"] for r in rates if r["specificity"] >= target)
        assert specificity_at_sensitivity(y, p, target)["specificity"] == pytest.approx(best_spec)
        assert sensitivity_at_specificity(y, p, target)["sensitivity"] == pytest.approx(best_sens)


def test_threshold_for_specificity_meets_target() -> None:
    y, p = random_scores(seed=8)
    t = threshold_for_specificity(y, p, 0.9)
    assert rates_at(y, p, t)["specificity"] >= 0.9
    # The next lower score would break the target: t is the lowest threshold that meets it.
    assert rates_at(y, p, p[p < t].max())["specificity"] < 0.9


# === Calibration ===


def test_calibration_bins_match_sklearn_and_hand_ece() -> None:
    y, p = random_scores(seed=9, decimals=None)
    bins = [b for b in calibration_bins(y, p, 10) if b["n"]]
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose([b["fraction_malignant"] for b in bins], frac)
    np.testing.assert_allclose([b["mean_predicted"] for b in bins], mean)
    assert sum(b["n"] for b in calibration_bins(y, p, 10)) == y.size
    # Two bins of two: |0.5 − 0.1| · 2/4 + |1.0 − 0.9| · 2/4 = 0.25.
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.25)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    summary = calibration_summary(y, p)
    assert len(summary["bins"]) == 10 and summary["mce"] >= summary["ece"]


# === Subgroups ===


def test_age_bands_boundaries() -> None:
    bands = age_band(pd.Series([0, 29.9, 30, 49.5, 50, 69, 70, 95, None, "x"]))
    assert bands.tolist() == ["<30", "<30", "30–49", "30–49", "50–69", "50–69", "≥70", "≥70",
                              "(unknown)", "(unknown)"]


def test_subgroups_flag_small_groups_and_undefined_auc() -> None:
    y, p = random_scores(n=300, seed=11)
    df = pd.DataFrame({"label": y, "probability": p, "source": ["big"] * 280 + ["tiny"] * 20,
                       "sex": "", "age": np.nan})
    df.loc[df.index[-5:], "label"] = 1  # tiny: force a few
    df.loc[df.index[-20:], "label"] = 1  # tiny is all malignant
    out = subgroup_metrics(df, 0.5, n_boot=100)
    assert set(out["groupings"]) == {"source"}  # empty sex/age columns are skipped
    big, tiny = out["groupings"]["source"]["groups"]
    assert big["group"] == "big" and not big["too_small"]
    assert big["roc_auc"] == pytest.approx(skm.roc_auc_score(y[:280], p[:280]))
    assert big["roc_auc_ci"][0] < big["roc_auc"] < big["roc_auc_ci"][1]
    assert tiny["too_small"] and tiny["roc_auc"] is None and tiny["specificity"] is None
    assert "both classes" in tiny["undefined"]["roc_auc"]
    json.dumps(out, allow_nan=False)


# === The pure core and the operating point ===


def test_evaluate_predictions_numbers_agree_with_sklearn() -> None:
    y, p = random_scores(n=500, seed=12)
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(y.size)], "label": y,
                       "probability": p, "source": np.where(np.arange(y.size) % 3, "a", "b")})
    errors = pd.DataFrame([{"image_id": "broken", "path": "x.jpg", "label": 1,
                            "error": "truncated file"}])
    r = evaluate_predictions(df, 0.55, bootstrap=300, seed=1, errors=errors)
    m = json.loads(json.dumps(r.metrics, allow_nan=False))
    assert m["ranking"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    lo, hi = m["ranking"]["roc_auc_ci95"]
    assert lo < m["ranking"]["roc_auc"] < hi
    assert m["ranking"]["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["at_threshold"]["sensitivity"] == pytest.approx(skm.recall_score(y, p >= 0.55))
    assert m["counts"] == {"n": 500, "n_positive": int(y.sum()), "n_negative": int(500 - y.sum()),
                           "prevalence": pytest.approx(y.mean())}
    assert m["errors"]["count"] == 1 and m["errors"]["images"][0]["image_id"] == "broken"
    assert (r.predictions["decision"] == np.where(p >= 0.55, "malignant", "benign")).all()
    # Same seed, same intervals.
    again = evaluate_predictions(df, 0.55, bootstrap=300, seed=1)
    assert again.metrics["ranking"]["roc_auc_ci95"] == m["ranking"]["roc_auc_ci95"]


def test_evaluate_predictions_single_class_never_crashes() -> None:
    df = pd.DataFrame({"label": [0, 0, 0, 0], "probability": [0.1, 0.2, 0.7, 0.4]})
    r = evaluate_predictions(df, 0.5, bootstrap=50)
    m = r.metrics
    assert m["ranking"]["roc_auc"] is None and "roc_auc" in m["ranking"]["undefined"]
    assert m["bootstrap"]["replicates"] == 0 and "both classes" in m["bootstrap"]["skipped"]
    json.dumps(m, allow_nan=False)


def test_confident_errors_false_negatives_first() -> None:
    df = pd.DataFrame({"image_id": list("abcdef"), "label": [1, 1, 0, 0, 1, 0],
                       "probability": [0.3, 0.05, 0.9, 0.6, 0.8, 0.1]})
    errs = confident_errors(df, 0.5)
    assert errs["image_id"].tolist() == ["b", "a", "c", "d"]
    assert errs["kind"].tolist() == ["FN", "FN", "FP", "FP"]


@pytest.mark.parametrize("text,kind,target", [
    ("stored", "stored", None), ("youden", "youden", None), ("sens=0.95", "sensitivity", 0.95),
    ("sensitivity=0.9", "sensitivity", 0.9), ("0.3", "value", 0.3), ("1", "value", 1.0)])
def test_threshold_rule_parse(text: str, kind: str, target: float | None) -> None:
    rule = ThresholdRule.parse(text)
    assert (rule.kind, rule.target) == (kind, target)
    assert ThresholdRule.parse(str(rule)) == rule


@pytest.mark.parametrize("text", ["sens=0", "sens=1.5", "1.2", "-0.1", "spec=0.9", "auto", ""])
def test_threshold_rule_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="youden"):
        ThresholdRule.parse(text)


def test_fitted_thresholds_come_from_validation_only() -> None:
    spec = ModelSpec(backbone="x", input_size=32, threshold=0.42, threshold_rule="sens>=0.9 on val")
    y_val, p_val = random_scores(n=200, seed=13)
    val = pd.DataFrame({"label": y_val, "probability": p_val})
    op = choose_operating_point(ThresholdRule.parse("youden"), spec, "test", lambda: val)
    assert op["threshold"] == youden_threshold(y_val, p_val)
    assert op["chosen_on"] == "val" and "warning" not in op
    op = choose_operating_point(ThresholdRule.parse("sens=0.95"), spec, "test", lambda: val)
    assert rates_at(y_val, p_val, op["threshold"])["sensitivity"] >= 0.95
    stored = choose_operating_point(ThresholdRule.parse("stored"), spec, "test", None)
    assert stored["threshold"] == 0.42 and "sens>=0.9 on val" in stored["description"]
    optimistic = choose_operating_point(ThresholdRule.parse("youden"), spec, "val", lambda: val)
    assert "optimistic" in optimistic["warning"]
    with pytest.raises(ValueError, match="malignant and benign"):
        choose_operating_point(ThresholdRule.parse("youden"), spec, "test",
                               lambda: val.assign(label=0))
