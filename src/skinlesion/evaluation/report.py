"""The HTML report: one self-contained file that renders an evaluation result.

The report only *renders*: every number comes from ``EvalResult.metrics`` and every
figure from the PNGs the evaluation wrote, embedded as base64 ``data:`` URIs so the
file can be mailed or archived alone. Templates live in ``templates/`` (Jinja2,
autoescaped).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from skinlesion import INTENDED_USE, __version__
from skinlesion.evaluation.metrics import EvalResult
from skinlesion.evaluation.plots import FIGURE_TITLES

CLINICAL_PREVALENCE = 0.018
"""Malignant share of ISIC 2020 (33,126 images, 584 malignant): a screening-like prevalence."""

FIGURE_CAPTIONS: dict[str, str] = {
    "roc": "Each point of the curve is one threshold: sensitivity against 1 − specificity. "
           "The shaded band is the 95 % pointwise bootstrap band; the black point is the "
           "operating threshold, with 95 % Wilson score intervals for its sensitivity and "
           "specificity. The dashed diagonal is chance.",
    "precision_recall": "Precision (PPV) against recall (sensitivity). The dashed line is the "
                        "prevalence of these data — the precision of guessing. At clinical "
                        "prevalence the whole curve would sit far lower.",
    "confusion_matrix": "Rows are the true class and sum to 1: the top row holds specificity "
                        "and the false-positive rate, the bottom row the miss rate and "
                        "sensitivity. Counts in brackets.",
    "reliability": "If the model is calibrated, lesions given P(malignant) = 0.3 are "
                   "malignant 30 % of the time and the points lie on the diagonal. Grey bars: "
                   "images per bin (sparse bins are noisy).",
    "score_histograms": "P(malignant) for truly benign and truly malignant images. Separated "
                        "humps mean good ranking; the overlap around the threshold is where "
                        "the errors are.",
    "threshold_curves": "Moving the threshold trades sensitivity against specificity; the "
                        "dashed line is the operating threshold.",
    "subgroup_auc": "ROC AUC with its 95 % bootstrap interval in every subgroup; hollow "
                    "markers are groups too small to say much. Large gaps between sources can "
                    "mean the model recognises the source rather than the lesion.",
    "error_gallery": "The errors the model was most sure about: missed malignant lesions "
                     "(false negatives) first, then benign lesions called malignant.",
    "training_curves": "Loss and ROC AUC per epoch from the run's history.csv, one colour per "
                       "training stage: training solid, validation dashed. Validation loss "
                       "rising while training loss falls is overfitting; the best epoch by "
                       "the monitored metric is the one kept. TensorBoard logs of every "
                       "stage are in the run's logs/ folder.",
}


# === Formatting filters ===


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def _pct(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * float(value):.{digits}f} %"


def _ci(value: Any, digits: int = 3, percent: bool = False) -> str:
    if not value:
        return ""
    lo, hi = value
    sep = " to " if lo < 0 else "–"  # "−0.04–0.07" reads as a range of negatives
    if percent:
        return f"{100 * lo:.{digits - 2}f}{sep}{100 * hi:.{digits - 2}f} %"
    return f"{lo:.{digits}f}{sep}{hi:.{digits}f}"


def _thr(value: Any) -> str:
    # Thresholds can be tiny (an uncalibrated model): keep three significant digits.
    return "—" if value is None else f"{float(value):.3g}"


def _when(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(value)


def _short_hash(value: Any) -> str:
    return str(value)[:12] if value else "—"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → ``{"a.b": value}`` (for the training-recipe table)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("skinlesion.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(("html", "j2")),
        undefined=jinja2.StrictUndefined,  # a typo in the template fails, not blank cells
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(num=_num, pct=_pct, ci=_ci, thr=_thr, when=_when, short_hash=_short_hash)
    return env


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# === Caveats: what the numbers do not say ===


def caveats(metrics: Mapping[str, Any]) -> list[str]:
    """Plain-language caveats derived from the measured numbers."""
    notes: list[str] = []
    overlap = metrics.get("overlap") or {}
    if overlap.get("warning"):
        notes.append(overlap["warning"])
    elif overlap and not overlap.get("checked"):
        notes.append(f"Train/test overlap not checked: {overlap.get('source')}.")
    counts = metrics.get("counts", {})
    prev = counts.get("prevalence")
    at = metrics.get("at_threshold", {})
    if prev is not None:
        text = (f"{_pct(prev)} of these images are malignant ({counts['n_positive']:,} of "
                f"{counts['n']:,}), far above clinical prevalence (ISIC 2020: "
                f"{_pct(CLINICAL_PREVALENCE)}). Sensitivity, specificity and AUC do not "
                "depend on prevalence; PPV, NPV, accuracy, F1 and average precision do.")
        sens, spec = at.get("sensitivity"), at.get("specificity")
        if sens is not None and spec is not None and (sens > 0 or spec < 1):
            ppv = sens * CLINICAL_PREVALENCE / (
                sens * CLINICAL_PREVALENCE + (1 - spec) * (1 - CLINICAL_PREVALENCE))
            text += (f" With the measured sensitivity and specificity, Bayes' rule gives a PPV "
                     f"of about {_pct(ppv)} at {_pct(CLINICAL_PREVALENCE)} prevalence "
                     f"(a projection, not a measurement; measured here: {_pct(at.get('ppv'))}).")
        notes.append(text)
    sources = metrics.get("subgroups", {}).get("groupings", {}).get("source", {}).get("groups", [])
    known = [g for g in sources if g["group"] != "(unknown)" and g["prevalence"] is not None]
    if len(known) >= 2:
        lo = min(known, key=lambda g: g["prevalence"])
        hi = max(known, key=lambda g: g["prevalence"])
        text = (f"Sources differ: the malignant share ranges from {_pct(lo['prevalence'])} "
                f"({lo['group']}) to {_pct(hi['prevalence'])} ({hi['group']})")
        aucs = [g for g in known if g["roc_auc"] is not None and not g["too_small"]]
        if len(aucs) >= 2:
            a_lo = min(aucs, key=lambda g: g["roc_auc"])
            a_hi = max(aucs, key=lambda g: g["roc_auc"])
            text += (f", and AUC from {_num(a_lo['roc_auc'])} ({a_lo['group']}) to "
                     f"{_num(a_hi['roc_auc'])} ({a_hi['group']})")
        notes.append(text + ". Source images differ in size, crop and colour; a model can "
                     "learn the source instead of the lesion, so judge it per source too.")
    warning = metrics.get("operating_point", {}).get("warning")
    if warning:
        notes.append(warning)
    small = [f"{grouping['title'].lower()} {g['group']}"
             for grouping in metrics.get("subgroups", {}).get("groupings", {}).values()
             for g in grouping["groups"] if g["too_small"]]
    if small:
        notes.append(f"{len(small)} subgroup(s) have fewer than "
                     f"{metrics['subgroups']['min_per_class']} malignant or benign images and "
                     f"say little: {', '.join(small[:8])}{' …' if len(small) > 8 else ''}.")
    n_err = metrics.get("errors", {}).get("count", 0)
    if n_err:
        notes.append(f"{n_err} image(s) could not be read and are excluded from every metric "
                     "(listed below).")
    notes.append("Confidence intervals cover the sampling variability of these images only — "
                 "not a change of clinic, camera, population or skin type, which this data set "
                 "does not record.")
    return notes


# === Rendering ===


DOCS_URL = "https://example.invalid/skinlesion"
"""The project's home page (``[project.urls]`` in pyproject.toml); the metric definitions
are in its docs/EVALUATION.md, which a pip install does not ship."""

_GENERIC_RUN_NAMES = frozenset({"run", "runs", "out", "output", "model", "eval", "."})


def _title(run: Mapping[str, Any]) -> str:
    path = Path(str(run["run_dir"])) if run.get("run_dir") else None
    name = path.name if path else ""
    if path is not None and name.lower() in _GENERIC_RUN_NAMES and path.parent.name:
        name = f"{path.parent.name}/{name}"  # "skinlesion-demo/run", not "run"
    return f"Evaluation of {name or run.get('model_id') or 'a model'}"


def _recipe(config: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """The training config, with "use the backbone's default" values resolved from the spec.

    The config is nested (``model.input_size``) or, from runs saved before the config
    sections, flat (``input_size``).
    """
    recipe = flatten(config)
    for name in ("input_size", "preprocessing"):
        key = f"model.{name}" if f"model.{name}" in recipe else name
        if not recipe.get(key) and run.get(name):
            recipe[key] = f"{run[name]} (the backbone's default)"
    return recipe


def render_report(result: EvalResult, figures: Mapping[str, bytes]) -> str:
    """Render ``report.html`` for ``result`` with ``figures`` (name → PNG bytes) inline."""
    m = result.metrics
    config = (m.get("run") or {}).get("training_config")
    context = {
        "m": m,
        "intended_use": m.get("intended_use") or INTENDED_USE,
        "title": _title(m.get("run") or {}),
        "figures": [{"name": name, "title": FIGURE_TITLES.get(name, name),
                     "caption": FIGURE_CAPTIONS.get(name, ""), "src": png_data_uri(png)}
                    for name, png in figures.items()],
        "recipe": _recipe(config, m.get("run") or {}) if isinstance(config, Mapping) else {},
        "docs_url": DOCS_URL,
        "caveats": caveats(m),
        "errors": result.errors.to_dict("records"),
        "rendered": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
    }
    return _environment().get_template("report.html.j2").render(**context)


def render_compare(comparison: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """Render ``compare.html`` for a comparison of runs (see ``compare.compare_runs``)."""
    context = {
        "c": comparison,
        "intended_use": INTENDED_USE,
        "figures": [{"name": name, "title": name.replace("_", " "), "src": png_data_uri(png)}
                    for name, png in figures.items()],
        "rendered": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
    }
    return _environment().get_template("compare.html.j2").render(**context)
