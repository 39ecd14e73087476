"""Quality: the tutorials' recipes against ours, trained and evaluated the same way.

isic-dev is prepared once (``prepare([labels.csv], …, PrepareSettings(seed=1))``, cached in
``bench/.cache``); every recipe then trains with
``train(load_config(overrides=recipe_overrides(name) | {...}))`` on the same split with the
same seed, and is scored by the same ``evaluate_run(run, data, split="test", bootstrap=…)``
at the threshold stored with the run — fixed for the tutorials (0.23 and 0.5), chosen on
the validation split for ours (highest threshold with sensitivity ≥ 0.90). Ours is also
scored with 8-view dihedral test-time augmentation at that same stored threshold (what
``skinlesion predict --tta 8`` would decide).

Each recipe runs in its own child process (peak memory per recipe; one crash does not
stop the others) on its own view of the prepared data (its own, cold feature cache, so a
recipe never profits from features another one computed).

``--quick`` trains on a stratified subset of every split at 128 px with very few epochs:
its numbers check that the pipeline works and are *not comparable* with anything.

Run one recipe: ``python -m bench --only quality.tutorial1``; the others already in
``bench/results/quality.json`` are kept and the report shows them together.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness.child import run_in_child
from bench.harness.environment import cache_dir, load_average, now_iso, prepared_isic_dev
from bench.harness.timing import self_peak_rss_mb
from bench.markdown import (
    Row,
    bullets,
    ci,
    fmt,
    load_at_start,
    mb,
    mode_label,
    notes_and_failures,
    num,
    pct,
    per_source_table,
    secs,
    table,
)
from skinlesion.utils.progress import ProgressEvent

log = logging.getLogger(__name__)

RECIPE_ORDER: tuple[str, ...] = ("tutorial1", "tutorial2", "frozen", "finetune")
"""Recipes in report order (names of ``skinlesion.training.config.RECIPES``)."""

LABELS: dict[str, str] = {
    "tutorial1": "T1 · tutorial 1 (frozen backbone, recomputed each epoch)",
    "tutorial2": "T2 · tutorial 2 (everything fine-tuned at once)",
    "frozen": "ours · frozen, cached features",
    "finetune": "ours · staged fine-tuning (default)",
}
OURS: tuple[str, ...] = ("frozen", "finetune")
QUICK_TTA: tuple[str, ...] = ("finetune",)
TTA_VIEWS = 8

QUICK_SUBSET: dict[str, int] = {"train": 160, "val": 80, "test": 100}
"""Images per split in quick mode (stratified by label)."""
QUICK_INPUT_SIZE = 96
QUICK_BOOTSTRAP = 100
FULL_BOOTSTRAP = 2000
QUICK_TIMEOUT_S = 420
FULL_TIMEOUT_S = 6 * 3600
SEED = 1


# === The bench ===================================================================

def run(quick: bool = True, parts: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate every recipe (or only ``parts``) and return the comparison.

    Args:
        quick: Small subset, 128 px, few epochs (numbers not comparable).
        parts: Recipe names to run (default: all of :data:`RECIPE_ORDER`).

    Returns:
        ``{"title", "quick", "data", "notes", "parts": {recipe: record}}`` where each record
        holds the recipe's config, test metrics (and TTA metrics for ours), training wall
        time and peak memory, or its error.

    Raises:
        ValueError: for an unknown recipe name.
    """
    recipes = _select(parts)
    data = prepared_isic_dev(SEED)
    mode = "quick" if quick else "full"
    root = cache_dir() / "quality" / mode
    t1_backbone, t1_note = tutorial1_backbone()
    notes = [
        t1_note,
        "T2: tutorial 2 fine-tuned NASNet; its ImageNet weights are not available offline, so "
        "T2 runs on the offline default backbone (efficientnet_lite0) with tutorial 2's recipe "
        "(Adam 3e-4, 224 px, rotation 15 / zoom 0.05 / h+v flips, batch 32, threshold 0.5).",
        "Sensitivity and specificity are at each recipe's own stored threshold: fixed 0.23 (T1) "
        "and 0.5 (T2); for ours the highest threshold reaching sensitivity ≥ 0.90 on the "
        "validation split. TTA rows use that same stored threshold.",
        "Training wall time includes the frozen-feature pass (each recipe starts with a cold "
        "feature cache) and is measured on this machine's CPU while it is shared; peak memory "
        "is the training process's maximum resident set size.",
    ]
    if quick:
        notes.insert(0, f"QUICK MODE — not comparable: {QUICK_SUBSET} images per split, "
                        f"{QUICK_INPUT_SIZE} px, 1 epoch on images or ≤ 20 head epochs on one "
                        f"feature view, {QUICK_BOOTSTRAP} bootstrap replicates, TTA only for "
                        "the default recipe.")
    out_parts: dict[str, Any] = {}
    for recipe in recipes:
        backbone = t1_backbone if recipe == "tutorial1" else None
        overrides = recipe_settings(recipe, quick=quick, backbone=backbone)
        view = make_data_view(data["data_dir"], root / f"data-{recipe}",
                              QUICK_SUBSET if quick else None, seed=SEED)
        run_dir = root / f"run-{recipe}"
        tta = TTA_VIEWS if recipe in (QUICK_TTA if quick else OURS) else 1
        log.info("quality: %s (%s)", recipe, mode)
        load = load_average()
        child = run_in_child(
            "bench.quality:train_and_evaluate",
            {"recipe": recipe, "data_dir": str(view), "run_dir": str(run_dir),
             "overrides": overrides, "bootstrap": QUICK_BOOTSTRAP if quick else FULL_BOOTSTRAP,
             "tta": tta},
            timeout=QUICK_TIMEOUT_S if quick else FULL_TIMEOUT_S,
            log_path=root / "logs" / f"{recipe}.log")
        record: dict[str, Any] = {"recipe": recipe, "label": LABELS[recipe], "quick": quick,
                                  "created": now_iso(), "overrides": overrides,
                                  "child": child.describe(),
                                  "load_average": {"before": load, "after": load_average()}}
        if child.ok:
            record.update(child.value)
        else:
            record["error"] = child.error
            log.warning("quality: %s failed: %s", recipe, child.error)
        out_parts[recipe] = record
    return {
        "title": "Quality: the tutorials' recipes against ours (isic-dev test split)",
        "quick": quick, "data": data, "notes": notes, "parts": out_parts,
        "recipe_order": list(RECIPE_ORDER),
    }


def _select(parts: list[str] | None) -> list[str]:
    if not parts:
        return list(RECIPE_ORDER)
    unknown = [p for p in parts if p not in RECIPE_ORDER]
    if unknown:
        raise ValueError(f"unknown quality part(s) {unknown}; valid: {', '.join(RECIPE_ORDER)}")
    return [r for r in RECIPE_ORDER if r in parts]


def tutorial1_backbone() -> tuple[str, str]:
    """Tutorial 1's InceptionV3 if its ImageNet weights are here (installed or cached),
    else the offline default backbone; with a sentence saying which and why."""
    from skinlesion.models.registry import DEFAULT_BACKBONE, get_backbone

    status = get_backbone("inception_v3").weights_status()
    if status in ("installed", "cached"):
        return "inception_v3", ("T1 uses InceptionV3 with ImageNet weights, as tutorial 1 did "
                                "(299 px).")
    return DEFAULT_BACKBONE, (
        f"T1: tutorial 1 used InceptionV3, whose ImageNet weights are not available offline "
        f"here (status: {status}); T1 runs on the offline default backbone ({DEFAULT_BACKBONE}) "
        "with tutorial 1's recipe ([0, 1] scaling, RMSprop, batch 64, best val_loss, no class "
        "weights, no augmentation, threshold 0.23).")


def recipe_settings(recipe: str, *, quick: bool, backbone: str | None = None) -> dict[str, Any]:
    """Overrides the bench adds on top of the recipe: seed, backbone, and in quick mode the
    shrunken input size and epoch counts.

    Raises:
        ValueError: for an unknown recipe.
    """
    from skinlesion.training.config import load_config, recipe_overrides

    cfg = load_config(overrides=recipe_overrides(recipe))
    out: dict[str, Any] = {"seed": SEED}
    if backbone:
        out["backbone"] = backbone
    if quick:
        st = cfg.stages
        recomputed = st.mode == "frozen" and not st.cache_features
        out.update({
            "input_size": QUICK_INPUT_SIZE,
            "head_epochs": min(st.head_epochs, 1 if recomputed else 20),
            "finetune_epochs": min(st.finetune_epochs, 1),
            "feature_views": 1,
        })
    return out


# === Data views ====================================================================

def subset_manifest(df: pd.DataFrame, sizes: dict[str, int], seed: int = SEED) -> pd.DataFrame:
    """At most ``sizes[split]`` rows of each split, stratified by label (other splits kept whole).

    Deterministic for a given ``seed``; the result keeps the manifest's row order.
    """
    from sklearn.model_selection import train_test_split

    parts = []
    for split, rows in df.groupby("split", sort=False):
        limit = sizes.get(str(split), 0)
        if limit and len(rows) > limit:
            strat = rows["label"] if rows["label"].value_counts().min() >= 2 else None
            rows, _ = train_test_split(rows, train_size=limit, stratify=strat,
                                       random_state=seed)
        parts.append(rows)
    return pd.concat(parts).sort_index()


def make_data_view(prepared: str | os.PathLike[str], dest: str | os.PathLike[str],
                   subset: dict[str, int] | None = None, seed: int = SEED) -> Path:
    """A fresh data folder over the prepared images: its own manifest (optionally a subset)
    and an ``images`` link to the prepared images, so its feature cache starts empty."""
    from skinlesion.data.manifest import read_manifest, write_manifest
    from skinlesion.data.prepare import IMAGES_DIR

    src, out = Path(prepared).resolve(), Path(dest)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    df = read_manifest(src)
    if subset:
        df = subset_manifest(df, subset, seed)
    write_manifest(df.reset_index(drop=True), out)
    (out / IMAGES_DIR).symlink_to(src / IMAGES_DIR, target_is_directory=True)
    return out


# === One recipe (runs in a child process) ==========================================

def train_and_evaluate(recipe: str, data_dir: str, run_dir: str, overrides: dict[str, Any],
                       bootstrap: int, tta: int = 1) -> dict[str, Any]:
    """Train ``recipe`` on ``data_dir`` into ``run_dir`` and evaluate it on the test split.

    Args:
        recipe: A name of ``RECIPES``.
        data_dir: Prepared data folder.
        run_dir: Run directory (replaced if it exists).
        overrides: Config overrides on top of the recipe.
        bootstrap: Bootstrap replicates for the confidence intervals.
        tta: Also evaluate with this many dihedral TTA views (1 = not).

    Returns:
        ``backbone``, ``input_size``, ``config`` (the decisive resolved fields), ``train``
        (wall time, stage timings, peak memory, epochs, validation metrics), ``test`` (see
        :func:`summarize_metrics`) and, with ``tta`` > 1, ``test_tta``.
    """
    from skinlesion.inference.predictor import Predictor
    from skinlesion.training.config import load_config, recipe_overrides
    from skinlesion.training.trainer import train
    from skinlesion.workflows.evaluate import evaluate_run

    cfg = load_config(overrides={**recipe_overrides(recipe), **overrides,
                                 "data_dir": data_dir, "out": run_dir})
    t = time.perf_counter()
    result = train(cfg, overwrite=True, progress=_log_steps)
    train_s = time.perf_counter() - t
    train_peak = self_peak_rss_mb()  # before evaluation adds its own
    history = result.history if result.history is not None else pd.DataFrame()
    out: dict[str, Any] = {
        "backbone": result.spec.backbone, "input_size": result.spec.input_size,
        "config": {k: v for k, v in cfg.to_flat_dict().items() if k in _CONFIG_SHOWN},
        "train": {
            "wall_s": train_s, "timings": result.timings, "peak_memory_mb": result.peak_memory_mb,
            "peak_rss_mb": train_peak,
            "epochs_run": len(history),
            "epochs_by_stage": ({str(k): int(v) for k, v in history["stage"].value_counts().items()}
                                if "stage" in history else {}),
            "best_epoch": result.best_epoch, "val_metrics": result.val_metrics,
        },
    }
    t = time.perf_counter()
    predictor = Predictor.from_run(run_dir)  # loaded once for both evaluations
    ev = evaluate_run(run_dir, data_dir, split="test", bootstrap=bootstrap, seed=0,
                      predictor=predictor)
    out["eval_s"] = time.perf_counter() - t
    out["test"] = summarize_metrics(ev.metrics)
    if tta > 1:
        t = time.perf_counter()
        ev_tta = evaluate_run(run_dir, data_dir, split="test", bootstrap=bootstrap, seed=0,
                              tta=tta, out=Path(run_dir) / f"eval-tta{tta}", predictor=predictor)
        out["eval_tta_s"] = time.perf_counter() - t
        out["tta"] = tta
        out["test_tta"] = summarize_metrics(ev_tta.metrics)
    return out


# Flat field names: the records' "config" keeps the layout it had before the config sections.
_CONFIG_SHOWN = frozenset({
    "backbone", "weights", "input_size", "preprocessing", "mode", "cache_features",
    "feature_views", "head_epochs", "head_lr", "finetune_epochs", "finetune_lr",
    "unfreeze_groups", "optimizer", "batch_size", "imbalance", "monitor", "patience",
    "threshold", "target_sensitivity", "seed", "dropout",
})


def summarize_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures the comparison reports, read from ``evaluate_run``'s ``metrics.json``.

    Args:
        metrics: ``EvalResult.metrics`` (the content of ``eval/metrics.json``).

    Returns:
        ``n``, ``n_positive``, ``roc_auc``, ``roc_auc_ci95``, ``pauc_tpr80`` (raw, max 0.2),
        ``average_precision``, ``threshold``, ``threshold_rule``, ``sensitivity`` and
        ``specificity`` (with ``*_ci95``) at that threshold,
        ``specificity_at_sensitivity_95`` (with the sensitivity actually reached) and
        ``per_source`` rows (``source``, ``n``, ``n_positive``, ``roc_auc``, ``too_small``).
        Missing values are None.
    """
    ranking = metrics.get("ranking") or {}
    at = metrics.get("at_threshold") or {}
    op = metrics.get("operating_point") or {}
    s95 = (metrics.get("fixed_rates") or {}).get("specificity_at_sensitivity_0.95") or {}
    counts = metrics.get("counts") or {}
    groups = (((metrics.get("subgroups") or {}).get("groupings") or {}).get("source") or {}).get(
        "groups") or []
    return {
        "n": counts.get("n"), "n_positive": counts.get("n_positive"),
        "roc_auc": ranking.get("roc_auc"), "roc_auc_ci95": ranking.get("roc_auc_ci95"),
        "pauc_tpr80": ranking.get("pauc_tpr80"),
        "average_precision": ranking.get("average_precision"),
        "threshold": op.get("threshold"),
        "threshold_rule": op.get("description") or op.get("rule"),
        "sensitivity": at.get("sensitivity"), "sensitivity_ci95": at.get("sensitivity_ci95"),
        "specificity": at.get("specificity"), "specificity_ci95": at.get("specificity_ci95"),
        "specificity_at_sensitivity_95": s95.get("specificity"),
        "sensitivity_reached_95": s95.get("sensitivity"),
        "per_source": [{"source": g.get("group"), "n": g.get("n"),
                        "n_positive": g.get("n_positive"), "roc_auc": g.get("roc_auc"),
                        "too_small": g.get("too_small")} for g in groups],
        "bootstrap_replicates": (metrics.get("bootstrap") or {}).get("replicates"),
        "tta": metrics.get("tta", 1),
    }


# === Rendering (docs/BENCHMARKS.md) ===================================================

def render_report(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """The recipe comparison table, per-source AUCs and notes."""
    result = rec.get("result") or {}
    parts: dict[str, Any] = result.get("parts") or {}
    order = [r for r in result.get("recipe_order") or [] if r in parts]
    order += [r for r in parts if r not in order]
    rows, heads, per_source = [], [], []
    for recipe in order:
        p = parts[recipe]
        for variant, test in _variants(p):
            label = p.get("label", recipe) + (f" + TTA {p.get('tta')}" if variant else "")
            rows.append((recipe, variant, label, p, test))
    body = []
    modes = {mode_label(p.get("quick")) for p in parts.values()}
    commits = {((p.get("run") or {}).get("commit") or "")[:12] for p in parts.values()}
    if "quick" in modes:
        body.append("**Quick mode: small subsets, small images and about one epoch. These "
                    "numbers show that every recipe runs end to end; they say nothing about "
                    "which recipe is better.**")
    if len(modes) > 1 or len(commits - {""}) > 1:
        body.append(f"**Warning:** the recipes below were measured in different runs (modes "
                    f"{sorted(modes)}, commits {sorted(commits - {''})}).")
    cells = []
    for _recipe, variant, label, p, test in rows:
        train = p.get("train") or {}
        if p.get("error") and not test:
            cells.append([label, "failed", *(["—"] * 8), mb((p.get("child") or {}).get(
                "peak_rss_mb"))])
            continue
        cells.append([
            label, f"{fmt(p.get('backbone'))} ({fmt(p.get('input_size'))} px)",
            f"{num(test.get('roc_auc'))}{ci(test.get('roc_auc_ci95'))}",
            num(test.get("pauc_tpr80")),
            num(test.get("threshold")),
            f"{pct(test.get('sensitivity'))}{_ci_pct(test.get('sensitivity_ci95'))}",
            f"{pct(test.get('specificity'))}{_ci_pct(test.get('specificity_ci95'))}",
            pct(test.get("specificity_at_sensitivity_95")),
            "″" if variant else secs(train.get("wall_s")),
            "″" if variant else mb(train.get("peak_rss_mb") or train.get("peak_memory_mb")),
        ])
        if test.get("roc_auc") is not None:
            heads.append({"metric": f"Test ROC AUC — {label}",
                          "value": f"{num(test.get('roc_auc'))}{ci(test.get('roc_auc_ci95'))}",
                          "note": f"sens {pct(test.get('sensitivity'))} / spec "
                                  f"{pct(test.get('specificity'))} at threshold "
                                  f"{num(test.get('threshold'))}"})
        per_source.append((label, {s.get("source"): s for s in test.get("per_source") or []}))
    body.append(table(
        ["Recipe", "Backbone", "Test ROC AUC [95 % CI]", "pAUC TPR ≥ 80 % (max 0.2)",
         "Threshold", "Sensitivity [CI]", "Specificity [CI]", "Spec. at 95 % sens.",
         "Training wall time", "Training peak memory"], cells))
    data = result.get("data") or {}
    n_test = next((t.get("n") for _, _, _, _, t in rows if t.get("n")), None)
    npos = next((t.get("n_positive") for _, _, _, _, t in rows if t.get("n_positive")), None)
    body.append(f"Test split: {fmt(n_test)} images ({fmt(npos)} malignant); prepared splits "
                f"{fmt(data.get('splits'))} (seed 1). ″ = same training run as the row above. "
                "CIs: stratified percentile bootstrap "
                f"({fmt(next((t.get('bootstrap_replicates') for *_, t in rows), None))} "
                "replicates). pAUC is the raw area above 80 % TPR (ISIC 2024 metric; random "
                "0.02, perfect 0.2).")
    body.append("**Per-source test ROC AUC** (n = images, malignant in brackets; † = fewer than "
                "10 of a class, says little):\n\n" + _per_source_table(per_source))
    body.append("**What each recipe ran** (from its resolved config):\n\n" + _recipe_lines(
        order, parts))
    body.extend(notes_and_failures(result, parts, order, "recipes"))
    return "\n\n".join(body), heads


def _variants(p: dict[str, Any]) -> list[tuple[bool, dict[str, Any]]]:
    out = [(False, p.get("test") or {})]
    if p.get("test_tta"):
        out.append((True, p["test_tta"]))
    return out


def _ci_pct(pair: Any) -> str:
    if isinstance(pair, list | tuple) and len(pair) == 2 and all(
            isinstance(v, int | float) for v in pair):
        return f" [{100 * pair[0]:.0f}–{100 * pair[1]:.0f}]"
    return ""


def _per_source_table(per_source: list[tuple[str, dict[str, Any]]]) -> str:
    return per_source_table(per_source, value=num) or "_(no per-source results)_"


def _recipe_lines(order: list[str], parts: dict[str, Any]) -> str:
    lines = []
    for r in order:
        p = parts[r]
        c = p.get("config") or {}
        t = p.get("train") or {}
        stages = ", ".join(f"{k} {v} epoch{'s' if v != 1 else ''}"
                           for k, v in (t.get("epochs_by_stage") or {}).items())
        lines.append(
            f"{p.get('label', r)} (`{r}`): {fmt(c.get('backbone'))} "
            f"{fmt(c.get('input_size') or p.get('input_size'))} px, "
            f"mode {fmt(c.get('mode'))}, unfrozen groups {fmt(c.get('unfreeze_groups'))}, "
            f"optimizer {fmt(c.get('optimizer'))}, batch "
            f"{fmt(c.get('batch_size'))}, imbalance {fmt(c.get('imbalance'))}, monitor "
            f"{fmt(c.get('monitor'))}; ran {stages or '—'}; stage timings "
            f"{_timings(t.get('timings'))}; load average at start "
            f"{load_at_start({'load_average': (p.get('load_average') or {}).get('before')})}.")
    return bullets(lines)


def _timings(t: Any) -> str:
    if not isinstance(t, dict) or not t:
        return "—"
    return ", ".join(f"{k.removesuffix('_s')} {secs(v)}" for k, v in t.items()
                     if isinstance(v, int | float))


def _log_steps(event: ProgressEvent) -> None:
    """Training's step messages to the bench log (the per-batch counts are left out)."""
    if event.message is not None:
        log.info("%s", event.message)


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=str))
