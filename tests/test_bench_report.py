"""The report renders docs/BENCHMARKS.md from structurally real JSON: records built by the
harness's timing helpers on tiny functions, the real metric summaries of ``evaluate_predictions``
and the real comparison code, written with ``write_result`` and read back from disk."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import markdown as mk
from bench import report as r
from bench.harness.environment import environment, load_average, now_iso
from bench.harness.results import read_results, write_result
from bench.harness.timing import self_peak_rss_mb, time_calls

from skinlesion import INTENDED_USE


def _busy(n: int = 64) -> Any:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return lambda: a @ a


def _record(name: str, result: Any, env: dict[str, Any], *, quick: bool = True,
            status: str = "ok", error: str | None = None) -> dict[str, Any]:
    timing = time_calls(_busy(), repeats=3)
    return {"schema": 1, "name": name, "quick": quick, "mode": "quick" if quick else "full",
            "created": now_iso(), "status": status, "error": error,
            "wall_s": timing["median_s"], "peak_rss_mb": self_peak_rss_mb(),
            "environment": env, "load_average": {"before": load_average(),
                                                 "after": load_average()},
            "result": result}


def _test_metrics(seed: int, signal: float) -> dict[str, Any]:
    from bench.quality import summarize_metrics

    from skinlesion.evaluation.evaluate import evaluate_predictions

    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], 30)
    p = np.clip(signal * y + rng.uniform(0, 1 - signal, y.size), 0, 1)
    df = pd.DataFrame({"label": y, "probability": p,
                       "source": np.where(np.arange(y.size) % 3, "HAM10000", "ISIC2017-train")})
    return summarize_metrics(evaluate_predictions(df, 0.5, bootstrap=30, seed=0).metrics)


def _quality(env: dict[str, Any]) -> dict[str, Any]:
    from bench.quality import LABELS, RECIPE_ORDER

    parts = {}
    for i, recipe in enumerate(RECIPE_ORDER):
        train_time = time_calls(_busy(32), repeats=2)
        parts[recipe] = {
            "recipe": recipe, "label": LABELS[recipe], "quick": True,
            "backbone": "efficientnet_lite0", "input_size": 96,
            "config": {"backbone": "efficientnet_lite0", "input_size": 96, "mode": "frozen",
                       "optimizer": "adamw", "batch_size": 32},
            "train": {"wall_s": train_time["median_s"], "peak_memory_mb": 1234.0,
                      "timings": {"total_s": train_time["median_s"]},
                      "epochs_by_stage": {"head": 3}},
            "test": _test_metrics(i, 0.1 + 0.1 * i),
            "child": {"ok": True, "peak_rss_mb": 1500.0},
            "run": {"quick": True, "created": now_iso(), "commit": env["commit"]},
        }
    parts["finetune"]["test_tta"] = _test_metrics(9, 0.45)
    parts["finetune"]["tta"] = 8
    return {"title": "Quality: the tutorials' recipes against ours", "quick": True,
            "data": {"splits": {"train": 160, "val": 80, "test": 100}},
            "notes": ["QUICK MODE — not comparable."], "parts": parts,
            "recipe_order": list(RECIPE_ORDER)}


def _training_speed() -> dict[str, Any]:
    from bench.training_speed import REGIMES, compare, matmul_gflops, measure_head

    meas: dict[str, Any] = {
        "compute": {"matmul": matmul_gflops(128, 2), "forward": time_calls(_busy(), repeats=3,
                                                                              items=32),
                    "batch_size": 32, "forward_flops_per_image": 7.8e8,
                    "profiler_flops_per_image": 7.8e8, "analytic_flops_per_image": 7.7e8,
                    "train_flops_per_image": {k: 1.5e9 for k in REGIMES}},
        "head_cached": measure_head(n_images=300, feature_dim=16, epochs=2),
        "input_pipeline": {"full": time_calls(_busy(), repeats=3, items=64),
                           "decode_resize": time_calls(_busy(), repeats=3, items=64)},
    }
    for k, n in zip(REGIMES, (96, 128, 160), strict=True):
        meas[k] = {"epoch": time_calls(_busy(n), repeats=3, items=64), "batch_size": 32,
                   "child": {"peak_rss_mb": 900.0}}
    return {"title": "Training speed", "quick": True, "measurements": meas,
            "comparison": compare(meas), "notes": ["Quick mode."]}


def _scaling() -> dict[str, Any]:
    from bench.scaling import linear_fit

    rows, train_rows = [], []
    for n in (100, 200, 400):
        t = time_calls(_busy(n // 2), repeats=2, items=n)
        rows.append({"size": n, "images": n, "median_s": t["median_s"], "min_s": t["min_s"],
                     "max_s": t["max_s"], "repeats": 2, "img_per_s": t["per_s_median"],
                     "peak_rss_mb": 300.0, "error": None})
        train_rows.append({"size": n, "wall_s": 10 + n / 20, "feature_pass_s": n / 25,
                           "head_fit_s": 1.0, "img_per_s": n / (10 + n / 20), "repeats": 1,
                           "peak_rss_mb": 1200.0, "error": None})
    inf = [{"batch_size": b, "img_per_s": 10.0 * b ** 0.5, "img_per_s_best": 11.0 * b ** 0.5,
            "img_per_s_worst": 9.0 * b ** 0.5, "batch_latency_ms": 100.0 * b ** 0.5,
            "images": 64, "repeats": 3} for b in (1, 8, 32)]
    return {"title": "How cost grows", "quick": True, "notes": [], "parts": {
        "prepare": {"rows": rows, "fit": linear_fit([100, 200, 400],
                                                    [r_["median_s"] for r_ in rows])},
        "train": {"rows": train_rows, "recipe": "frozen", "overrides": {"feature_views": 1},
                  "fit": linear_fit([100, 200, 400], [r_["wall_s"] for r_ in train_rows])},
        "inference": {"rows": inf, "backbone": "efficientnet_lite0", "input_size": 224,
                      "peak_rss_mb": 800.0, "best_batch_size": 32,
                      "best_img_per_s": inf[-1]["img_per_s"]}}}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    env = environment()
    out = tmp_path_factory.mktemp("results")
    lat = time_calls(_busy(), repeats=4, items=32)
    records = {
        "quality": _record("quality", _quality(env), env),
        "training_speed": _record("training_speed", _training_speed(), env),
        "scaling": _record("scaling", _scaling(), env),
        "inference_speed": _record("inference_speed", {
            "title": "Inference runtimes",
            "tables": [{"title": "By runtime", "columns": ["runtime", "latency", "img_per_s"],
                        "rows": [{"runtime": "keras", "latency": lat,
                                  "img_per_s": lat["per_s_median"]}],
                        "notes": ["batch 32"]}],
            "headline": [{"metric": "Keras batch-32 throughput", "value": lat["per_s_median"],
                          "unit": "img/s"}]}, env),
        "backbone_speed": _record("backbone_speed", {
            "results": [{"backbone": "efficientnet_lite0", "batch_32": lat}],
            "comparisons": {"lite0_vs_b0": 1.7}}, env),
        "weird_bench": _record("weird_bench", {"matrix": [[1, 2], [3, 4]], "what": "odd",
                                               "per_core": {"plain": lat, "ratio": 2.5}}, env),
        "broken": _record("broken", None, env, status="failed",
                          error="bench.harness.child:call_bench: ZeroDivisionError: boom"),
    }
    for name, rec in records.items():
        write_result(out, name, rec)
    docs = r.write_report(out, out / "docs" / "BENCHMARKS.md")
    return docs.read_text(encoding="utf-8"), read_results(out)


def test_document_structure(rendered: tuple[str, dict[str, Any]]) -> None:
    md, results = rendered
    assert md.startswith("# Benchmarks\n") and INTENDED_USE in md
    order = ["## Headline", "## Machine and versions", "## Quality", "## Training speed",
             "## How cost grows", "## How to regenerate"]
    positions = [md.index(s) for s in order]
    assert positions == sorted(positions)
    machine = results["quality"]["environment"]["machine"]
    assert machine["cpu_model"] in md
    assert "python -m bench --quick" in md and "Do not edit by hand" in md


def test_quality_figures_come_from_the_json(rendered: tuple[str, dict[str, Any]]) -> None:
    md, results = rendered
    ft = results["quality"]["result"]["parts"]["finetune"]
    auc, (lo, hi) = ft["test"]["roc_auc"], ft["test"]["roc_auc_ci95"]
    cell = f"{mk.num(auc)} [{lo:.3f}–{hi:.3f}]"
    headline = md[md.index("## Headline"):md.index("## Machine")]
    assert f"| Test ROC AUC — {ft['label']} | {cell} |" in headline
    assert f"{mk.num(ft['test_tta']['roc_auc'])}" in md and "+ TTA 8" in md
    assert mk.pct(ft["test"]["specificity_at_sensitivity_95"]) in md
    assert "| HAM10000 |" in md and "| ISIC2017-train |" in md  # per-source table
    assert "they say nothing about which recipe is better" in md


def test_speed_and_scaling_figures(rendered: tuple[str, dict[str, Any]]) -> None:
    md, results = rendered
    comp = results["training_speed"]["result"]["comparison"]
    assert comp["cached_vs_recomputed"] is not None
    assert f"{mk.num(comp['cached_vs_recomputed'])}×" in md
    assert f"{mk.num(comp['peak_gflops'])} /" in md  # matmul peak, best / median
    fit = results["scaling"]["result"]["parts"]["train"]["fit"]
    assert f"{mk.secs(fit['per_1000_images_s'])} per 1,000 images" in md
    assert "| 32 | 56.6 (50.9–62.2) |" in md  # inference vs batch: median (min–max)


def test_generic_unknown_and_failed_results(rendered: tuple[str, dict[str, Any]]) -> None:
    md, results = rendered
    lat = results["inference_speed"]["result"]["tables"][0]["rows"][0]["latency"]
    assert "**By runtime**" in md and "| runtime | latency | img/s |" in md
    assert f"| keras | {mk.num(lat['median_s'])} ({mk.num(lat['min_s'])}–" in md
    assert "| Keras batch-32 throughput |" in md  # another bench's headline entry
    assert "**results**" in md and "| efficientnet_lite0 |" in md  # records → auto table
    assert "| lite0 vs b0 | 1.70 |" in md  # a mapping of scalars → quantity | value
    weird = md[md.index("## Weird bench"):md.index("## How to regenerate")]
    assert "| what | odd |" in weird and "| ratio | 2.50 |" in weird
    assert "```json" in weird and '"matrix"' in weird  # the rest of an unknown shape: JSON
    broken = md[md.index("## Broken"):]
    assert "This bench failed" in broken and "ZeroDivisionError: boom" in broken


def test_each_bench_renders_its_own_section() -> None:
    import importlib

    for name in ("quality", "quality_ablation", "quality_peer", "training_speed", "scaling"):
        module = importlib.import_module(f"bench.{name}")
        assert r.renderer_for(name) is module.render_report, name
    # No renderer of its own, no bench module, or not a module name: the generic renderer.
    for name in ("machine", "inference_speed", "weird_bench", "report", "a.b", "../x", "__main__"):
        assert r.renderer_for(name) is r.render_generic, name


def test_formatting_helpers() -> None:
    assert mk.fmt(None) == "—" and mk.fmt(True) == "yes" and mk.fmt(12345) == "12,345"
    assert mk.fmt(0.012345) == "0.0123" and mk.fmt(123.456) == "123" and mk.fmt(4567.8) == "4,568"
    assert mk.fmt({"median_s": 2.0, "min_s": 1.5, "max_s": 3.25}) == "2.00 (1.50–3.25)"
    assert mk.fmt("a|b") == "a\\|b"
    assert mk.secs(4.5) == "4.50 s" and mk.secs(75) == "1 min 15 s" and mk.secs(3720) == "1 h 02 min"
    assert mk.ci([0.8, 0.9]) == " [0.800–0.900]" and mk.ci(None) == ""
    assert mk.short_source("org/repo@abc:ISIC2018-test") == "ISIC2018-test"


def test_empty_results_render_a_placeholder(tmp_path: Path) -> None:
    md = r.render({})
    assert "No results yet" in md and "## How to regenerate" in md
    assert r.write_report(tmp_path / "none", tmp_path / "B.md").read_text() == md
