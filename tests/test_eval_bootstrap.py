"""Stratified bootstrap, fast DeLong, and their agreement."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from skinlesion.evaluation.bootstrap import (
    paired_bootstrap_auc_difference,
    stratified_bootstrap,
    weighted_roc_auc,
)
from skinlesion.evaluation.compare import compare_predictions, delong_covariance, delong_test
from skinlesion.evaluation.metrics import UndefinedMetricError


def correlated_models(n: int = 600, gap: float = 0.4, seed: int = 0,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two models that share a latent lesion score (so they are correlated);
    model A sees the label more strongly than B by ``gap``."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.35).astype(int)
    latent = rng.normal(size=n) + 1.0 * y
    a = latent + gap * y + rng.normal(0, 0.6, n)
    b = latent + rng.normal(0, 0.6, n)

    def to_prob(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    return y, to_prob(a), to_prob(b)


# === Weighted AUC and the bootstrap ===


def test_weighted_auc_equals_sklearn_sample_weight_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.uniform(size=200) * 0.6 + 0.3 * y, 1)  # heavy ties
    weights = rng.integers(0, 4, size=(6, 200)).astype(float)
    expected = [roc_auc_score(y, p, sample_weight=w) for w in weights]
    np.testing.assert_allclose(weighted_roc_auc(y, p, weights), expected, rtol=0, atol=1e-12)
    assert weighted_roc_auc(y, p, np.ones(200))[0] == pytest.approx(roc_auc_score(y, p))


def test_stratified_bootstrap_interval_contains_auc_and_is_seeded() -> None:
    y, p, _ = correlated_models(seed=1)
    boot = stratified_bootstrap(y, p, threshold=0.5, n_boot=1000, seed=3, roc_points=51)
    lo, hi = boot.auc_ci
    auc = roc_auc_score(y, p)
    assert lo < auc < hi and 0.02 < hi - lo < 0.2
    assert boot.auc.shape == (1000,) and boot.tpr is not None and boot.tpr.shape == (1000, 51)
    _grid, band_lo, band_hi = boot.roc_band()
    assert np.all(band_lo <= band_hi + 1e-12) and band_lo[0] >= 0 and band_hi[-1] == 1.0
    # Same seed, same numbers; another seed, different replicates.
    again = stratified_bootstrap(y, p, threshold=0.5, n_boot=1000, seed=3)
    assert again.auc_ci == boot.auc_ci
    assert stratified_bootstrap(y, p, n_boot=1000, seed=4).auc_ci != boot.auc_ci
    # Stratified: every replicate keeps the class counts, so a rate's replicates are exact
    # multiples of 1 / n_class.
    n_pos = int(y.sum())
    assert boot.sensitivity is not None
    np.testing.assert_allclose(boot.sensitivity * n_pos, np.round(boot.sensitivity * n_pos),
                               atol=1e-9)


def test_bootstrap_interval_shrinks_with_more_cases() -> None:
    y1, p1, _ = correlated_models(n=200, seed=2)
    y2, p2, _ = correlated_models(n=3200, seed=2)
    w1 = np.diff(stratified_bootstrap(y1, p1, n_boot=500).auc_ci)[0]
    w2 = np.diff(stratified_bootstrap(y2, p2, n_boot=500).auc_ci)[0]
    assert w2 < w1 / 2.5  # ~ 1/sqrt(16) = 1/4 in theory


def test_bootstrap_needs_both_classes() -> None:
    with pytest.raises(UndefinedMetricError, match="both classes"):
        stratified_bootstrap([1, 1, 1], [0.1, 0.5, 0.9], n_boot=10)


# === DeLong ===


def test_delong_aucs_match_sklearn_and_variance_matches_bootstrap() -> None:
    y, a, b = correlated_models(seed=6)
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, [roc_auc_score(y, a), roc_auc_score(y, b)], atol=1e-12)
    assert cov.shape == (2, 2) and cov[0, 1] > 0  # the two models are correlated
    boot = stratified_bootstrap(y, a, n_boot=3000, seed=0)
    assert np.sqrt(cov[0, 0]) == pytest.approx(boot.auc.std(ddof=1), rel=0.15)


def test_delong_hand_case() -> None:
    # 2 malignant (0.9, 0.4), 2 benign (0.6, 0.1). Placements: malignant 0.9 beats both
    # benign (V10 = 1), 0.4 beats one (0.5); benign 0.6 is beaten by one malignant
    # (V01 = 0.5), 0.1 by both (1). AUC = 0.75; var = var(V10)/2 + var(V01)/2
    # = 0.125/2 + 0.125/2 = 0.125.
    aucs, cov = delong_covariance([1, 0, 1, 0], [[0.9, 0.6, 0.4, 0.1]])
    assert aucs[0] == pytest.approx(0.75)
    assert cov[0, 0] == pytest.approx(0.125)


@pytest.mark.parametrize("gap,different", [(0.8, True), (0.0, False)])
def test_delong_agrees_with_paired_bootstrap(gap: float, different: bool) -> None:
    y, a, b = correlated_models(n=800, gap=gap, seed=7)
    d = delong_test(y, a, b)
    boot = paired_bootstrap_auc_difference(y, a, b, n_boot=2000, seed=1)
    assert d["difference"] == pytest.approx(boot["difference"], abs=1e-12)
    assert d["difference"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert d["se"] == pytest.approx(boot["se"], rel=0.2)
    assert d["ci"][0] == pytest.approx(boot["ci"][0], abs=0.02)
    assert d["ci"][1] == pytest.approx(boot["ci"][1], abs=0.02)
    if different:
        assert d["p_value"] < 0.001 and boot["p_value"] < 0.01
    else:
        assert d["p_value"] > 0.05 and boot["p_value"] > 0.05


def test_delong_identical_models_and_too_few_cases() -> None:
    y, a, _ = correlated_models(n=100, seed=8)
    same = delong_test(y, a, a)
    assert same["difference"] == 0.0 and same["p_value"] is None and "identical" in \
        same["undefined"]["p_value"]
    with pytest.raises(UndefinedMetricError, match="at least 2"):
        delong_test([1, 0, 0], [0.9, 0.2, 0.1], [0.8, 0.3, 0.1])


def test_compare_predictions_side_by_side() -> None:
    y, a, b = correlated_models(n=400, gap=0.6, seed=9)
    out = compare_predictions(y, {"A": a, "B": b}, {"A": 0.5, "B": 0.4}, bootstrap=300)
    assert list(out["models"]) == ["A", "B"]
    assert out["models"]["A"]["roc_auc"] == pytest.approx(roc_auc_score(y, a))
    assert out["models"]["B"]["threshold"] == 0.4
    (pair,) = out["pairs"]
    assert (pair["a"], pair["b"]) == ("A", "B")
    assert pair["delong"]["difference"] > 0 and pair["paired_bootstrap"]["replicates"] == 300
    assert "samples" not in pair["paired_bootstrap"]
