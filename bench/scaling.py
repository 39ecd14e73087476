"""How cost grows: prepare and training time against dataset size, inference against batch size.

* **prepare** — ``skinlesion.data.prepare.prepare`` on stratified subsets of isic-dev's
  ``labels.csv`` (a subset CSV in the bench cache, beside links to isic-dev's image folders),
  each into an empty folder (cold: nothing reused);
* **train** — recipe ``frozen`` (cached features) with one feature view, 50 head epochs and
  no early stopping, so the work is the same per image at every size, on training subsets of
  the prepared split (the validation split is fixed);
* **inference** — ``Predictor.predict_arrays`` (the one inference path) at several batch sizes,
  on the default backbone at its input size.

Every point runs in its own child process. A straight line ``seconds = fixed + per_image · N``
is fitted to each series so the table says what one more thousand images costs.

Parts: ``python -m bench --only scaling.prepare`` (or ``.train``, ``.inference``).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.harness.child import run_in_child
from bench.harness.environment import (
    cache_dir,
    isic_dev_dir,
    load_average,
    now_iso,
    prepared_isic_dev,
)
from bench.harness.timing import summarize_times, time_calls
from bench.markdown import Row, bullets, fmt, load_at_start, mb, num, secs, table
from skinlesion.utils.progress import ProgressEvent

log = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("prepare", "train", "inference")
QUICK = {"prepare_sizes": (125, 250, 500), "prepare_repeats": 1, "train_sizes": (100, 300),
         "train_val": 40, "batch_sizes": (1, 8, 32), "inference_images": 64,
         "inference_repeats": 3}
FULL = {"prepare_sizes": (250, 500, 1000, 2000), "prepare_repeats": 3,
        "train_sizes": (250, 500, 1000, 2000), "train_val": 0, "batch_sizes": (1, 8, 32, 64),
        "inference_images": 256, "inference_repeats": 5}
TRAIN_OVERRIDES: dict[str, Any] = {"feature_views": 1, "head_epochs": 50, "patience": 0}
TIMEOUT_S = {True: 300, False: 3 * 3600}
SEED = 1


def run(quick: bool = True, parts: list[str] | None = None) -> dict[str, Any]:
    """Measure every series (or only ``parts``); see the module docstring.

    Returns:
        ``{"title", "quick", "settings", "notes", "parts": {"prepare": …, "train": …,
        "inference": …}}``; each part has ``rows`` and, for sizes, a linear ``fit``.

    Raises:
        ValueError: for an unknown part.
    """
    chosen = list(PARTS) if not parts else [p for p in PARTS if p in parts]
    unknown = sorted(set(parts or ()) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown scaling part(s) {unknown}; valid: {', '.join(PARTS)}")
    s = QUICK if quick else FULL
    root = cache_dir() / "scaling" / ("quick" if quick else "full")
    out_parts: dict[str, Any] = {}
    if "prepare" in chosen:
        out_parts["prepare"] = scale_prepare(root, s["prepare_sizes"], s["prepare_repeats"],
                                             TIMEOUT_S[quick])
    if "train" in chosen:
        out_parts["train"] = scale_train(root, s["train_sizes"], s["train_val"], TIMEOUT_S[quick])
    if "inference" in chosen:
        out_parts["inference"] = scale_inference(root, s["batch_sizes"], s["inference_images"],
                                                 s["inference_repeats"], TIMEOUT_S[quick])
    notes = [
        "prepare: each size into an empty folder (nothing reused); the operating system's "
        "file cache is warm after the first run.",
        f"train: recipe `frozen` with {TRAIN_OVERRIDES} (the same work per image at every "
        "size); time = feature pass + head epochs, including the validation split "
        + ("(40 images)." if quick else "(whole)."),
        "inference: Predictor.predict_arrays on in-memory 0–255 arrays (decoding excluded), "
        "default backbone with random weights (speed does not depend on the weights).",
        "fit: least-squares line seconds = fixed + per_image × N over the measured sizes.",
    ]
    if quick:
        notes.insert(0, "Quick mode: fewer and smaller sizes, fewer repetitions.")
    return {"title": "How cost grows", "quick": quick,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
            "notes": notes, "parts": out_parts, "created": now_iso()}


def linear_fit(sizes: list[float], seconds: list[float]) -> dict[str, float] | None:
    """Least-squares ``seconds = fixed_s + per_image_s · size`` (None with < 2 points)."""
    pts = [(float(n), float(t)) for n, t in zip(sizes, seconds, strict=True)
           if t is not None and n is not None]
    if len(pts) < 2 or len({n for n, _ in pts}) < 2:
        return None
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    slope, intercept = np.polyfit(x, y, 1)
    # More images can only cost more: a slope ≤ 0 means noise (a shared machine) swamped
    # the size effect, and the line says nothing.
    return {"fixed_s": float(intercept), "per_image_s": float(slope),
            "per_1000_images_s": float(slope * 1000.0), "points": len(pts),
            "meaningful": bool(slope > 0)}


# === prepare vs dataset size =========================================================

def subset_labels(labels_csv: Path, n: int, dest: Path, seed: int = SEED) -> Path:
    """A stratified ``n``-row subset of ``labels_csv`` written to ``dest/labels.csv``, with
    links to the source's image folders so its relative file names resolve."""
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    if n < len(df):
        df, _ = train_test_split(df, train_size=n, stratify=df["label"], random_state=seed)
        df = df.sort_index()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for folder in sorted({str(f).replace("\\", "/").split("/")[0] for f in df["filename"]
                          if "/" in str(f)}):
        (dest / folder).symlink_to(labels_csv.parent.resolve() / folder, target_is_directory=True)
    out = dest / "labels.csv"
    df.to_csv(out, index=False)
    return out


def measure_prepare(labels_csv: str, out_dir: str, repeats: int) -> dict[str, Any]:
    """Time ``prepare`` of ``labels_csv`` into an emptied ``out_dir``, ``repeats`` times."""
    from skinlesion.data.prepare import PrepareSettings, prepare

    times, kept = [], 0
    for _ in range(repeats):
        shutil.rmtree(out_dir, ignore_errors=True)
        t = time.perf_counter()
        result = prepare([labels_csv], out_dir, PrepareSettings(seed=SEED))
        times.append(time.perf_counter() - t)
        kept = int(result.report["counts"]["kept"])
    return {"images": kept, "timing": summarize_times(times, items=kept)}


def scale_prepare(root: Path, sizes: tuple[int, ...], repeats: int,
                  timeout: float) -> dict[str, Any]:
    """Prepare time at each size, each size in a child process."""
    labels = isic_dev_dir() / "labels.csv"
    rows = []
    for n in sizes:
        csv = subset_labels(labels, n, root / f"prepare-src-{n}")
        load = load_average()
        res = run_in_child("bench.scaling:measure_prepare",
                           {"labels_csv": str(csv), "out_dir": str(root / f"prepare-out-{n}"),
                            "repeats": repeats},
                           timeout=timeout, log_path=root / "logs" / f"prepare-{n}.log")
        value = res.value or {}
        timing = value.get("timing") or {}
        rows.append({"size": n, "images": value.get("images"), "median_s": timing.get("median_s"),
                     "min_s": timing.get("min_s"), "max_s": timing.get("max_s"),
                     "repeats": timing.get("repeats"), "img_per_s": timing.get("per_s_median"),
                     "load_average": load, "peak_rss_mb": res.peak_rss_mb, "error": res.error})
    return {"rows": rows, "fit": linear_fit([r["images"] or r["size"] for r in rows],
                                            [r["median_s"] for r in rows])}


# === training vs dataset size ========================================================

def measure_train(data_dir: str, run_dir: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train recipe ``frozen`` with ``overrides`` once; its timings and peak memory."""
    from skinlesion.training.config import load_config, recipe_overrides
    from skinlesion.training.trainer import train

    cfg = load_config(overrides={**recipe_overrides("frozen"), **overrides,
                                 "data_dir": data_dir, "out": run_dir})
    t = time.perf_counter()
    result = train(cfg, overwrite=True, progress=_log_steps)
    return {"wall_s": time.perf_counter() - t, "timings": result.timings,
            "peak_memory_mb": result.peak_memory_mb}


def scale_train(root: Path, sizes: tuple[int, ...], val: int, timeout: float) -> dict[str, Any]:
    """Training time at each training-set size (fresh data view: cold feature cache)."""
    from bench.quality import make_data_view

    data = prepared_isic_dev(SEED)
    rows = []
    for n in sizes:
        subset = {"train": n, **({"val": val} if val else {})}
        view = make_data_view(data["data_dir"], root / f"train-data-{n}", subset, seed=SEED)
        load = load_average()
        res = run_in_child("bench.scaling:measure_train",
                           {"data_dir": str(view), "run_dir": str(root / f"train-run-{n}"),
                            "overrides": {**TRAIN_OVERRIDES, "seed": SEED}},
                           timeout=timeout, log_path=root / "logs" / f"train-{n}.log")
        value = res.value or {}
        timings = value.get("timings") or {}
        rows.append({"size": n, "wall_s": value.get("wall_s"),
                     "feature_pass_s": timings.get("feature_pass_s"),
                     "head_fit_s": timings.get("head_fit_s"),
                     "img_per_s": n / value["wall_s"] if value.get("wall_s") else None,
                     "repeats": 1, "load_average": load, "peak_rss_mb": res.peak_rss_mb,
                     "error": res.error})
    return {"rows": rows, "recipe": "frozen", "overrides": TRAIN_OVERRIDES,
            "fit": linear_fit([r["size"] for r in rows], [r["wall_s"] for r in rows])}


# === inference vs batch size =========================================================

def measure_inference(batch_sizes: list[int], n_images: int, repeats: int) -> dict[str, Any]:
    """img/s and per-batch latency of ``Predictor.predict_arrays`` at each batch size.

    One model serves every batch size (one child process for the whole curve: building
    the model costs more than the measurements).
    """
    from skinlesion.inference.predictor import Predictor
    from skinlesion.models.classifier import build_classifier
    from skinlesion.models.registry import DEFAULT_BACKBONE, get_backbone
    from skinlesion.runspec import ModelSpec

    spec = get_backbone(DEFAULT_BACKBONE)
    model = build_classifier(spec.name, spec.input_size, weights=None)
    predictor = Predictor(model, ModelSpec(backbone=spec.name, input_size=spec.input_size,
                                           preprocessing=spec.preprocessing))
    rng = np.random.default_rng(SEED)
    n = max(n_images, *batch_sizes)
    x = rng.uniform(0, 255, (n, spec.input_size, spec.input_size, 3)).astype(np.float32)
    rows = []
    for b in batch_sizes:
        timing = time_calls(lambda b=b: predictor.predict_arrays(x, batch_size=b),
                            repeats=repeats, warmup=1, items=n)
        rows.append({"batch_size": b, "timing": timing,
                     "batch_latency_s": timing["median_s"] / -(-n // b)})
    return {"backbone": spec.name, "input_size": spec.input_size, "images": n, "rows": rows}


def scale_inference(root: Path, batch_sizes: tuple[int, ...], n_images: int, repeats: int,
                    timeout: float) -> dict[str, Any]:
    """Inference throughput at each batch size (the whole curve in one child process)."""
    load = load_average()
    res = run_in_child("bench.scaling:measure_inference",
                       {"batch_sizes": list(batch_sizes), "n_images": n_images,
                        "repeats": repeats},
                       timeout=timeout, log_path=root / "logs" / "inference.log")
    value = res.value or {}
    rows = []
    for r in value.get("rows", []):
        timing = r["timing"]
        rows.append({"batch_size": r["batch_size"], "img_per_s": timing.get("per_s_median"),
                     "img_per_s_best": timing.get("per_s_best"),
                     "img_per_s_worst": timing.get("per_s_worst"),
                     "batch_latency_ms": r["batch_latency_s"] * 1000.0,
                     "images": value.get("images"), "repeats": timing.get("repeats")})
    best = max((r for r in rows if r["img_per_s"]), key=lambda r: r["img_per_s"], default=None)
    return {"rows": rows, "backbone": value.get("backbone"), "input_size": value.get("input_size"),
            "peak_rss_mb": res.peak_rss_mb, "error": res.error, "load_average": load,
            "best_batch_size": best["batch_size"] if best else None,
            "best_img_per_s": best["img_per_s"] if best else None}


# === Rendering (docs/BENCHMARKS.md) ===================================================

def render_report(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """Prepare and training time vs size, inference vs batch size."""
    result = rec.get("result") or {}
    parts = result.get("parts") or {}
    body, heads = [], []
    prep = parts.get("prepare")
    if prep:
        rows = [[fmt(r.get("images") or r.get("size")),
                 f"{num(r.get('median_s'))} ({num(r.get('min_s'))}–{num(r.get('max_s'))})",
                 num(r.get("img_per_s")), fmt(r.get("repeats")), mb(r.get("peak_rss_mb"))
                 + (" (failed)" if r.get("error") else ""), load_at_start(r)]
                for r in prep.get("rows") or []]
        body.append("**Prepare time vs dataset size**\n\n" + table(
            ["Images", "Seconds median (min–max)", "img/s", "Repeats", "Peak memory",
             "Load avg at start"], rows)
            + _fit_line(prep.get("fit")))
    train = parts.get("train")
    if train:
        rows = [[fmt(r.get("size")), secs(r.get("wall_s")), secs(r.get("feature_pass_s")),
                 secs(r.get("head_fit_s")), num(r.get("img_per_s")), fmt(r.get("repeats")),
                 mb(r.get("peak_rss_mb")) + (" (failed)" if r.get("error") else ""), load_at_start(r)]
                for r in train.get("rows") or []]
        body.append(f"**Training time vs training-set size** (recipe "
                    f"`{fmt(train.get('recipe'))}` with {fmt(train.get('overrides'))})\n\n"
                    + table(["Training images", "Wall time", "Feature pass", "Head fit",
                             "Training images / s", "Repeats", "Peak memory",
                             "Load avg at start"], rows)
                    + _fit_line(train.get("fit")))
    inf = parts.get("inference")
    if inf:
        rows = [[fmt(r.get("batch_size")),
                 f"{num(r.get('img_per_s'))} ({num(r.get('img_per_s_worst'))}–"
                 f"{num(r.get('img_per_s_best'))})", num(r.get("batch_latency_ms")),
                 fmt(r.get("images")), fmt(r.get("repeats"))] for r in inf.get("rows") or []]
        body.append(f"**Inference vs batch size** ({fmt(inf.get('backbone'))}, "
                    f"{fmt(inf.get('input_size'))} px, `Predictor.predict_arrays`, peak memory "
                    f"{mb(inf.get('peak_rss_mb'))})\n\n"
                    + table(["Batch size", "img/s median (min–max)", "Latency per batch (ms)",
                             "Images per repetition", "Repeats"], rows))
        if inf.get("error"):
            body.append("```text\n" + str(inf["error"])[:3000] + "\n```")
        one = next((r for r in inf.get("rows") or [] if r.get("batch_size") == 1), None)
        if inf.get("best_img_per_s"):
            heads.append({"metric": "Inference throughput, best batch size (Keras Predictor)",
                          "value": inf["best_img_per_s"], "unit": "img/s",
                          "note": f"batch {fmt(inf.get('best_batch_size'))}"
                                  + (f"; batch 1 latency {num(one.get('batch_latency_ms'))} ms"
                                     if one else "")})
    if result.get("notes"):
        body.append(bullets(fmt(n) for n in result["notes"]))
    return "\n\n".join(body) or "_No parts measured._", heads


def _fit_line(fit: Any) -> str:
    if not isinstance(fit, dict):
        return ""
    if fit.get("meaningful") is False or (fit.get("per_image_s") or 0) <= 0:
        return (f"\n\nLinear fit over {fit.get('points')} sizes: not meaningful in this run "
                "(the slope is not positive: timing noise on the shared machine exceeded the "
                "effect of size).")
    return (f"\n\nLinear fit over {fit.get('points')} sizes: {secs(fit.get('fixed_s'))} fixed + "
            f"{secs(fit.get('per_1000_images_s'))} per 1,000 images.")


def _log_steps(event: ProgressEvent) -> None:
    """Training's step messages to the bench log (the per-batch counts are left out)."""
    if event.message is not None:
        log.info("%s", event.message)


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=str))
