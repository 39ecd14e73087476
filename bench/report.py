"""Render docs/BENCHMARKS.md from the JSON results in bench/results — every figure from JSON.

``python -m bench`` calls :func:`write_report` after measuring; ``python -m bench.report``
re-renders from the results already there. Nothing in the document is typed by hand.

**The result shape for bench modules.** A bench module ``bench/<name>.py`` exposes
``run(quick: bool = True) -> dict``. The harness stores that dict as ``result`` in
``bench/results/<name>.json`` (beside the machine, versions, commit, mode, wall time and
peak memory) and renders it with a generic renderer that understands::

    {
      "title": "Inference latency and throughput",      # section heading (default: name)
      "description": "One paragraph on what is measured.",
      "headline": [                                      # optional: rows of the headline table
        {"metric": "Keras batch-32 throughput", "value": 41.2, "unit": "img/s",
         "note": "median of 5"}
      ],
      "tables": [                                        # any number of tables
        {"title": "By runtime", "columns": ["runtime", "img_per_s"],   # columns optional
         "rows": [{"runtime": "keras", "img_per_s": 41.2}],
         "notes": ["…"]}
      ],
      "rows": [...], "columns": [...],                   # shorthand for a single table
      "notes": ["Method, caveats, what 'quick' changes."],
      "parts": {...},                                    # optional: see --only NAME.PART
      "error": "…"                                       # set only if the measurement failed
    }

Cells may be numbers (shown to 3 significant digits), strings, booleans, None (—), lists,
or a timing from ``bench.harness.timing.summarize_times`` / any dict with ``median``/``min``/``max``
(or ``median_s``/``min_s``/``max_s``), shown as "median (min–max)". Column names ending in
``per_s``, ``_s``, ``_ms``, ``_mb`` get units in the heading (``img_per_s`` → "img/s").
A result with neither ``tables`` nor ``rows`` still renders (:func:`auto_tables`): its
scalars, lists of records and mappings of records become tables and anything else a JSON
code block, so an unknown shape never breaks the report — but only the documented shape
gets titles, column order and headline rows. ``quality``, ``training_speed`` and ``scaling`` have their own renderers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.harness.environment import REPO
from bench.harness.results import RESULTS_DIR, read_results
from skinlesion import INTENDED_USE
from skinlesion.utils.atomic import atomic_write_text

DOCS_PATH = REPO / "docs" / "BENCHMARKS.md"
ORDER: tuple[str, ...] = ("quality", "quality_ablation", "quality_peer", "training_speed", "scaling",
                          "prepare_speed", "backbone_speed", "inference_speed", "tfrecord_speed",
                          "machine")
"""Section order; benches not listed follow alphabetically."""
JSON_BLOCK_LIMIT = 6000

Row = dict[str, Any]


# === Formatting ==================================================================

def fmt(value: Any, digits: int = 3) -> str:
    """A cell: None → "—", floats to ``digits`` significant digits, timings as median (min–max)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return _num(value, digits)
    if isinstance(value, dict):
        t = timing_parts(value)
        if t is not None:
            med, lo, hi = t
            return f"{_num(med, digits)} ({_num(lo, digits)}–{_num(hi, digits)})"
        return "`" + json.dumps(value, separators=(",", ":"), default=str)[:200] + "`"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:,.{decimals}f}"


def timing_parts(d: dict[str, Any]) -> tuple[float, float, float] | None:
    """``(median, min, max)`` of a timing dict (``median_s``… or ``median``…), else None."""
    for med, lo, hi in (("median_s", "min_s", "max_s"), ("median", "min", "max")):
        if all(isinstance(d.get(k), int | float) for k in (med, lo, hi)):
            return float(d[med]), float(d[lo]), float(d[hi])
    return None


def secs(x: float | None) -> str:
    """Seconds for people: 0.0123 s, 4.56 s, 3 min 05 s, 1 h 02 min."""
    if x is None or not math.isfinite(x):
        return "—"
    if x < 60:
        return f"{_num(x)} s"
    if x < 3600:
        return f"{int(x // 60)} min {round(x % 60):02d} s"
    return f"{int(x // 3600)} h {round(x % 3600 / 60):02d} min"


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.8523 → "85.2 %"."""
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def ci(pair: Any, digits: int = 3) -> str:
    """A ``[low, high]`` interval as "[0.81–0.88]" ('' when absent)."""
    if isinstance(pair, list | tuple) and len(pair) == 2 and all(
            isinstance(v, int | float) for v in pair):
        return f" [{pair[0]:.{digits}f}–{pair[1]:.{digits}f}]"
    return ""


def mb(x: float | None) -> str:
    """MiB, rounded."""
    return "—" if x is None else f"{x:,.0f} MB"


def table(columns: list[str], rows: Iterable[list[str]], align: list[str] | None = None) -> str:
    """A Markdown table from header cells and rows of already formatted cells."""
    align = align or ["---"] * len(columns)
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(c.replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bullets(items: Iterable[str]) -> str:
    """A Markdown bullet list."""
    return "\n".join(f"- {s}" for s in items)


def short_source(name: str) -> str:
    """``origin@commit:ISIC2017-train`` → ``ISIC2017-train`` (the data set, for tables)."""
    return name.rsplit(":", 1)[-1] if ":" in name else name


def _mode(quick: Any) -> str:
    return "quick" if quick else "full"


# === The document ================================================================

def render(results: dict[str, dict[str, Any]]) -> str:
    """The whole of docs/BENCHMARKS.md from the records of ``read_results``."""
    names = ordered(results)
    headline: list[Row] = []
    sections: list[str] = []
    for name in names:
        rec = results[name]
        renderer = RENDERERS.get(name, render_generic)
        try:
            body, heads = renderer(name, rec)
        except Exception as exc:  # one malformed result must not hide the others
            body = (f"_This result could not be rendered ({type(exc).__name__}: {exc}); "
                    "its JSON:_\n\n" + json_block(rec.get("result")))
            heads = []
        sections.append(f"## {section_title(name, rec)}\n\n{run_line(rec)}\n\n{body}")
        headline += [{**h, "bench": name, "quick": rec.get("quick")} for h in heads]
    parts = [
        "# Benchmarks",
        "<!-- Generated by `python -m bench` from bench/results/*.json. Do not edit by hand:"
        " edit bench/report.py or re-run the bench. -->",
        f"> {INTENDED_USE}",
        "Every figure below is read from the JSON results in `bench/results/`, measured by "
        "`python -m bench` on the machine described below; comparisons are ratios taken in "
        "the same run. Figures marked *quick* come from `python -m bench --quick` (small "
        "subsets, few epochs) and are not comparable with full-mode figures.",
        "## Headline\n\n" + render_headline(headline),
        "## Machine and versions\n\n" + render_machine(results, names),
        *sections,
        REGENERATE,
    ]
    return "\n\n".join(p.strip() for p in parts) + "\n"


REGENERATE = """## How to regenerate

```bash
python -m bench --quick                        # everything, small: under 10 minutes on 2 CPU cores
python -m bench                                # full mode: the real recipes (an hour or more)
python -m bench --only quality.tutorial1       # one part; results of parts merge into one report
python -m bench --only training_speed,scaling  # some benches
python -m bench --report-only                  # re-render this file from bench/results/*.json
pip install --no-deps sklesion                 # optional peer (pins TF 2.17: never with its deps)
python -m bench --only quality_peer            # the peer beside the ablation runs (after them)
```

`quality_peer` reads the finished ablation runs from `$SKINLESION_ABLATION_RUNS` (default
`bench/.cache/quality_ablation/full`); without `sklesion` its peer row reads "not installed".

Each bench runs in its own child process (so its peak memory is its own and a crash is
reported instead of stopping the rest) and writes `bench/results/<name>.json` atomically;
the report is then rendered from every JSON file present. A bench module returns a dict
whose shape is documented in `bench/report.py`."""


def ordered(results: dict[str, Any]) -> list[str]:
    """Bench names in :data:`ORDER`, then the rest alphabetically."""
    known = [n for n in ORDER if n in results]
    return known + sorted(n for n in results if n not in ORDER)


def section_title(name: str, rec: dict[str, Any]) -> str:
    """The section heading: the result's title, else the bench name."""
    result = rec.get("result")
    title = result.get("title") if isinstance(result, dict) else None
    return str(title or name.replace("_", " ").capitalize())


def run_line(rec: dict[str, Any]) -> str:
    """One italic line: mode, date, commit, wall time, peak memory, load, status."""
    env = rec.get("environment") or {}
    commit = (env.get("commit") or "unknown")[:12]
    load = (rec.get("load_average") or {}).get("before")
    bits = [f"mode: **{_mode(rec.get('quick'))}**", f"measured {rec.get('created', '?')}",
            f"commit `{commit}`", f"wall time {secs(rec.get('wall_s'))}"]
    if rec.get("peak_rss_mb") is not None:
        bits.append(f"peak memory of the bench process {mb(rec.get('peak_rss_mb'))}")
    if load:
        bits.append(f"load average at start {load[0]:.1f} on "
                    f"{(env.get('machine') or {}).get('usable_cores', '?')} cores")
    if rec.get("status") != "ok":
        bits.append(f"status: **{rec.get('status', 'unknown')}**")
    line = "_" + " · ".join(bits) + "_"
    if rec.get("status") == "failed":
        line += "\n\n**This bench failed:**\n\n```text\n" + str(rec.get("error", "")).strip()[
            :4000] + "\n```"
    return line


def render_headline(rows: list[Row]) -> str:
    """The headline table (what the README quotes)."""
    if not rows:
        return "_No results yet: run `python -m bench --quick`._"
    body = []
    for r in rows:
        value = r["value"] if isinstance(r.get("value"), str) else fmt(r.get("value"))
        unit = f" {r['unit']}" if r.get("unit") else ""
        body.append([fmt(r.get("metric")), value + unit, fmt(r.get("note") or ""),
                     f"{r['bench']} ({_mode(r.get('quick'))})"])
    return table(["Figure", "Value", "Note", "Bench (mode)"], body)


def render_machine(results: dict[str, dict[str, Any]], names: list[str]) -> str:
    """Machine and versions of the newest record, and one line per bench."""
    if not names:
        return "_No results yet._"
    newest = max((results[n] for n in names), key=lambda r: str(r.get("created", "")))
    env = newest.get("environment") or {}
    m = env.get("machine") or {}
    versions = env.get("versions") or {}
    rows = [["CPU", fmt(m.get("cpu_model"))],
            ["Cores (logical / usable)", f"{fmt(m.get('logical_cores'))} / "
                                         f"{fmt(m.get('usable_cores'))}"],
            ["Memory", f"{fmt(m.get('memory_gb'))} GB"], ["OS", fmt(m.get("os"))],
            ["Commit", f"`{env.get('commit') or 'unknown'}`"]]
    rows += [[k, fmt(v)] for k, v in versions.items()]
    out = table(["", "(newest result)"], rows)
    per = []
    machines = set()
    for n in names:
        r = results[n]
        e = r.get("environment") or {}
        mm = e.get("machine") or {}
        machines.add((mm.get("cpu_model"), mm.get("usable_cores")))
        load = r.get("load_average") or {}
        per.append([n, _mode(r.get("quick")), fmt(r.get("status")), fmt(r.get("created")),
                    f"`{(e.get('commit') or '?')[:12]}`", secs(r.get("wall_s")),
                    secs(r.get("cpu_s")), mb(r.get("peak_rss_mb")), fmt(load.get("before")),
                    fmt(load.get("after"))])
    out += "\n\n" + table(["Bench", "Mode", "Status", "Measured (UTC)", "Commit", "Wall time",
                           "CPU time", "Peak memory", "Load avg before (1/5/15 min)",
                           "Load avg after"], per)
    for key, what in (("wall_s", "wall times"), ("cpu_s", "CPU times")):
        values = [results[n].get(key) for n in names]
        if values and all(isinstance(v, int | float) for v in values):
            out += f"\n\nSum of the benches' {what}: {secs(sum(values))}."
    if len(machines) > 1:
        out += ("\n\n**Warning:** these results come from different machines "
                f"({sorted(map(str, machines))}); compare figures only within one bench.")
    out += ("\n\nThe machine is shared: a load average above the core count means other "
            "processes competed for the CPU during the measurement, which slows every timing "
            "(ratios taken in the same run are affected less). CPU time (user + system of the "
            "bench and every process it started) hardly depends on that load.")
    return out


def json_block(obj: Any) -> str:
    """``obj`` as a fenced JSON block, cut at :data:`JSON_BLOCK_LIMIT` characters."""
    text = json.dumps(obj, indent=2, default=str, allow_nan=False)
    if len(text) > JSON_BLOCK_LIMIT:
        text = text[:JSON_BLOCK_LIMIT] + "\n… (cut; the whole result is in bench/results/)"
    return "```json\n" + text + "\n```"


# === Generic renderer ============================================================

def column_heading(name: str) -> str:
    """``img_per_s`` → "img/s", ``latency_ms`` → "latency (ms)", ``wall_s`` → "wall (s)"."""
    if name.endswith("per_s") and len(name) > len("per_s"):
        return name[: -len("per_s")].rstrip("_").replace("_", " ") + "/s"
    for suffix, unit in (("_ms", "ms"), ("_mb", "MB"), ("_gb", "GB"), ("_s", "s")):
        if name.endswith(suffix) and len(name) > len(suffix):
            return f"{name[: -len(suffix)].replace('_', ' ')} ({unit})"
    return name.replace("_", " ")


def generic_table(spec: dict[str, Any]) -> str:
    """A table from ``{"title"?, "columns"?, "rows": [dict, ...], "notes"?}``."""
    rows = [r for r in spec.get("rows") or [] if isinstance(r, dict)]
    columns = list(spec.get("columns") or [])
    if not columns:
        for r in rows:
            columns += [k for k in r if k not in columns]
    out = []
    if spec.get("title"):
        out.append(f"**{fmt(spec['title'])}**")
    if rows and columns:
        out.append(table([column_heading(c) for c in columns],
                         [[fmt(r.get(c)) for c in columns] for r in rows]))
    else:
        out.append("_(no rows)_")
    if spec.get("notes"):
        out.append(bullets(fmt(n) for n in spec["notes"]))
    return "\n\n".join(out)


def render_generic(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """Render any result of the documented shape; anything else as a JSON block."""
    result = rec.get("result")
    if not isinstance(result, dict):
        return (json_block(result) if result is not None else "_No result._"), []
    out = []
    if result.get("description"):
        out.append(str(result["description"]))
    tables = [t for t in result.get("tables") or [] if isinstance(t, dict)]
    if isinstance(result.get("rows"), list):
        tables.insert(0, {"columns": result.get("columns"), "rows": result["rows"]})
    for t in tables:
        out.append(generic_table(t))
    if not tables:
        out += auto_tables({k: v for k, v in result.items()
                            if k not in ("title", "description", "notes", "headline")})
    if result.get("notes"):
        out.append(bullets(fmt(n) for n in result["notes"]))
    heads = [h for h in result.get("headline") or [] if isinstance(h, dict) and "metric" in h]
    return "\n\n".join(out), heads


_SKIP_KEYS = frozenset({"environment"})  # the harness records it beside every result


def auto_tables(result: dict[str, Any]) -> list[str]:
    """Best-effort tables for a result not in the documented shape.

    Scalars go into one "quantity | value" table; a list of records or a mapping of records
    (``{name: {...}}``) becomes a table with one row per record (nested mappings flattened
    one level, as ``outer.inner`` columns); a mapping of scalars and timings becomes a
    "quantity | value" table; anything else is shown as JSON.
    """
    out: list[str] = []
    scalars: list[Row] = []
    leftover: dict[str, Any] = {}
    for key, value in result.items():
        if key in _SKIP_KEYS:
            continue
        title = key.replace("_", " ")
        if _is_cell(value):
            scalars.append({"quantity": title, "value": value})
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(generic_table({"title": title, "rows": [_flat(v) for v in value]}))
        elif isinstance(value, dict) and value and all(isinstance(v, dict) and timing_parts(v)
                                                       is None for v in value.values()):
            out.append(generic_table({"title": title,
                                      "rows": [{"name": k, **_flat(v)} for k, v in value.items()]}))
        elif isinstance(value, dict) and value and all(
                _is_cell(v) or (isinstance(v, dict) and all(_is_cell(x) for x in v.values()))
                for v in value.values()):
            out.append(generic_table({"title": title, "columns": ["quantity", "value"],
                                      "rows": [{"quantity": k.replace("_", " "), "value": v}
                                               for k, v in _flat(value).items()]}))
        else:
            leftover[key] = value
    if scalars:
        out.insert(0, generic_table({"columns": ["quantity", "value"], "rows": scalars}))
    if leftover:
        out.append(json_block(leftover))
    return out


def _is_cell(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, dict):
        return timing_parts(value) is not None
    return isinstance(value, list) and len(value) <= 6 and all(
        v is None or isinstance(v, str | int | float | bool) for v in value)


def _flat(record: dict[str, Any]) -> Row:
    """One level of nested mappings flattened into ``outer.inner`` keys (timings kept whole)."""
    out: Row = {}
    for k, v in record.items():
        if isinstance(v, dict) and timing_parts(v) is None and v:
            for k2, v2 in v.items():
                out[f"{k} · {k2}"] = v2
        else:
            out[k] = v
    return out


# === Quality =====================================================================

def render_quality(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
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
    modes = {_mode(p.get("quick")) for p in parts.values()}
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
            f"{_num(test.get('roc_auc'))}{ci(test.get('roc_auc_ci95'))}",
            _num(test.get("pauc_tpr80")),
            _num(test.get("threshold")),
            f"{pct(test.get('sensitivity'))}{_ci_pct(test.get('sensitivity_ci95'))}",
            f"{pct(test.get('specificity'))}{_ci_pct(test.get('specificity_ci95'))}",
            pct(test.get("specificity_at_sensitivity_95")),
            "″" if variant else secs(train.get("wall_s")),
            "″" if variant else mb(train.get("peak_rss_mb") or train.get("peak_memory_mb")),
        ])
        if test.get("roc_auc") is not None:
            heads.append({"metric": f"Test ROC AUC — {label}",
                          "value": f"{_num(test.get('roc_auc'))}{ci(test.get('roc_auc_ci95'))}",
                          "note": f"sens {pct(test.get('sensitivity'))} / spec "
                                  f"{pct(test.get('specificity'))} at threshold "
                                  f"{_num(test.get('threshold'))}"})
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
    if result.get("notes"):
        body.append(bullets(fmt(n) for n in result["notes"]))
    failed = [f"{r}: {parts[r].get('error')}" for r in order if parts[r].get("error")]
    if failed:
        body.append("**Failed recipes:**\n\n```text\n" + "\n\n".join(failed)[:4000] + "\n```")
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
    sources: list[str] = []
    counts: dict[str, str] = {}
    for _, groups in per_source:
        for s, g in groups.items():
            if s not in sources:
                sources.append(s)
                counts[s] = f"{fmt(g.get('n'))} ({fmt(g.get('n_positive'))})"
    if not sources:
        return "_(no per-source results)_"
    rows = []
    for s in sources:
        row = [short_source(str(s)), counts[s]]
        for _, groups in per_source:
            g = groups.get(s) or {}
            row.append(_num(g.get("roc_auc")) + (" †" if g.get("too_small") else ""))
        rows.append(row)
    return table(["Source", "n (malignant)", *[label for label, _ in per_source]], rows)


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
            f"{_load({'load_average': (p.get('load_average') or {}).get('before')})}.")
    return bullets(lines)


def _timings(t: Any) -> str:
    if not isinstance(t, dict) or not t:
        return "—"
    return ", ".join(f"{k.removesuffix('_s')} {secs(v)}" for k, v in t.items()
                     if isinstance(v, int | float))


# === Training speed ==============================================================

def render_training_speed(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """Regimes table, cached-vs-recomputed ratio, input vs model, compute and FLOPs."""
    result = rec.get("result") or {}
    comp = result.get("comparison") or {}
    meas = result.get("measurements") or {}
    compute = meas.get("compute") or {}
    body, heads = [], []
    ratio_v = comp.get("cached_vs_recomputed")
    ref = comp.get("reference_images", 2000)
    body.append(
        f"**Frozen-cached vs frozen-recomputed, per epoch over {fmt(ref)} images: "
        f"{_num(ratio_v)}×** (head epoch {secs(comp.get('head_epoch_s'))} vs recomputed "
        f"{secs(comp.get('recomputed_epoch_s'))}; target ≥ {_num(comp.get('ratio_target'))}×: "
        f"{_met(comp.get('ratio_target_met'))}; head epoch under "
        f"{_num(comp.get('head_epoch_target_s'))} s: {_met(comp.get('head_epoch_target_met'))}).")
    rows = []
    for r in comp.get("regimes") or []:
        groups = r.get("unfreeze_groups")
        unfrozen = ("" if groups in (None, 0) else
                    " — all layer groups" if groups == -1 else f" — top {groups} layer groups")
        rows.append([fmt(r.get("label")) + unfrozen,
                     f"{_num(r.get('img_per_s'))} ({_num(r.get('img_per_s_worst'))}–"
                     f"{_num(r.get('img_per_s_best'))})",
                     secs(r.get("epoch_2000_s")), fmt(r.get("batch_size")), fmt(r.get("repeats")),
                     _num(r.get("gflop_per_image")), _num(r.get("achieved_gflops")),
                     pct(r.get("fraction_of_peak")), mb(r.get("peak_rss_mb"))
                     + (" (failed)" if r.get("error") else ""), _load(r)])
    body.append(table(["Regime", "img/s median (min–max)", f"Epoch over {fmt(ref)} images",
                       "Batch", "Timed epochs", "GFLOP / image (train, est.)",
                       "Achieved GFLOP/s", "Fraction of machine peak", "Peak memory",
                       "Load avg at start"], rows))
    iv = comp.get("input_vs_model") or {}
    pipe = meas.get("input_pipeline") or {}
    body.append("**Input pipeline vs model step**\n\n" + table(
        ["Stage", "img/s median (min–max)"],
        [["tf.data decode + resize + augment (prepared JPEGs, no cache)", fmt(
            _rate_timing(pipe.get("full")))],
         ["tf.data decode + resize only", fmt(_rate_timing(pipe.get("decode_resize")))],
         ["model training step (ours, fine-tuning stage of the default recipe)",
          _num(iv.get("model_step_img_per_s"))]])
        + f"\n\nInput / model = {_num(iv.get('input_over_model'))}× "
          "(above 1: the input pipeline keeps up with training on this CPU; both share the "
          "same cores, so in training they compete).")
    mm = compute.get("matmul") or {}
    fwd = comp.get("inference_forward") or {}
    body.append("**Compute: model FLOPs and the machine's limit**\n\n" + table(
        ["Quantity", "Value"],
        [[f"float32 matmul {fmt(mm.get('n'))}×{fmt(mm.get('n'))} (TensorFlow), best / median",
          f"{_num(mm.get('gflops_best'))} / {_num(mm.get('gflops_median'))} GFLOP/s"],
         ["Forward FLOPs per image (profiler)", _gflop(compute.get("profiler_flops_per_image"))],
         ["Forward FLOPs per image (analytic, conv + dense)",
          _gflop(compute.get("analytic_flops_per_image"))],
         [f"Inference forward, batch {fmt(fwd.get('batch_size'))}",
          f"{_num(fwd.get('img_per_s'))} img/s = {_num(fwd.get('achieved_gflops'))} GFLOP/s = "
          f"{pct(fwd.get('fraction_of_peak'))} of the matmul peak"]]))
    if compute.get("profiler_note"):
        body.append(f"FLOP counter: {compute['profiler_note']}.")
    if result.get("notes"):
        body.append(bullets(fmt(n) for n in result["notes"]))
    errors = [f"{k}: {v.get('error')}" for k, v in meas.items() if isinstance(v, dict)
              and v.get("error")]
    if errors:
        body.append("**Failed measurements:**\n\n```text\n" + "\n\n".join(errors)[:4000]
                    + "\n```")
    if ratio_v is not None:
        heads.append({"metric": f"Head epoch over {fmt(ref)} images: cached features vs "
                                "recomputed backbone (T1's way)",
                      "value": f"{_num(ratio_v)}× faster",
                      "note": f"{secs(comp.get('head_epoch_s'))} vs "
                              f"{secs(comp.get('recomputed_epoch_s'))}"})
    for r in comp.get("regimes") or []:
        if r.get("regime") == "finetune_ours" and r.get("img_per_s"):
            groups = r.get("unfreeze_groups")
            what = "all layers" if groups == -1 else f"top {groups} groups"
            heads.append({"metric": f"Fine-tuning throughput (ours, {what})",
                          "value": r["img_per_s"], "unit": "img/s",
                          "note": f"{pct(r.get('fraction_of_peak'))} of the float32 matmul peak"})
    if fwd.get("img_per_s"):
        heads.append({"metric": "Inference forward pass (Keras, default backbone)",
                      "value": fwd["img_per_s"], "unit": "img/s",
                      "note": f"{pct(fwd.get('fraction_of_peak'))} of the float32 matmul peak "
                              f"({_num(mm.get('gflops_best'))} GFLOP/s)"})
    return "\n\n".join(body), heads


def _met(v: Any) -> str:
    return "—" if v is None else ("**met**" if v else "**not met**")


def _rate_timing(t: Any) -> dict[str, float] | None:
    if not isinstance(t, dict):
        return None
    keys = ("per_s_median", "per_s_worst", "per_s_best")
    if not all(isinstance(t.get(k), int | float) for k in keys):
        return None
    return {"median": t["per_s_median"], "min": t["per_s_worst"], "max": t["per_s_best"]}


def _gflop(x: float | None) -> str:
    return "—" if x is None else f"{_num(x / 1e9)} GFLOP"


# === Scaling =====================================================================

def render_scaling(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """Prepare and training time vs size, inference vs batch size."""
    result = rec.get("result") or {}
    parts = result.get("parts") or {}
    body, heads = [], []
    prep = parts.get("prepare")
    if prep:
        rows = [[fmt(r.get("images") or r.get("size")),
                 f"{_num(r.get('median_s'))} ({_num(r.get('min_s'))}–{_num(r.get('max_s'))})",
                 _num(r.get("img_per_s")), fmt(r.get("repeats")), mb(r.get("peak_rss_mb"))
                 + (" (failed)" if r.get("error") else ""), _load(r)]
                for r in prep.get("rows") or []]
        body.append("**Prepare time vs dataset size**\n\n" + table(
            ["Images", "Seconds median (min–max)", "img/s", "Repeats", "Peak memory",
             "Load avg at start"], rows)
            + _fit_line(prep.get("fit")))
    train = parts.get("train")
    if train:
        rows = [[fmt(r.get("size")), secs(r.get("wall_s")), secs(r.get("feature_pass_s")),
                 secs(r.get("head_fit_s")), _num(r.get("img_per_s")), fmt(r.get("repeats")),
                 mb(r.get("peak_rss_mb")) + (" (failed)" if r.get("error") else ""), _load(r)]
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
                 f"{_num(r.get('img_per_s'))} ({_num(r.get('img_per_s_worst'))}–"
                 f"{_num(r.get('img_per_s_best'))})", _num(r.get("batch_latency_ms")),
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
                                  + (f"; batch 1 latency {_num(one.get('batch_latency_ms'))} ms"
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


def _load(r: dict[str, Any]) -> str:
    load = r.get("load_average")
    return f"{load[0]:.1f}" if isinstance(load, list) and load else "—"


def render_quality_ablation(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """Rendered beside its bench (bench/quality_ablation.py)."""
    from bench.quality_ablation import render_report

    return render_report(name, rec)


def render_quality_peer(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """Rendered beside its bench (bench/quality_peer.py)."""
    from bench.quality_peer import render_report

    return render_report(name, rec)


RENDERERS: dict[str, Callable[[str, dict[str, Any]], tuple[str, list[Row]]]] = {
    "quality": render_quality,
    "quality_ablation": render_quality_ablation,
    "quality_peer": render_quality_peer,
    "training_speed": render_training_speed,
    "scaling": render_scaling,
}


# === Writing =====================================================================

def write_report(results_dir: str | os.PathLike[str] = RESULTS_DIR,
                 docs_path: str | os.PathLike[str] = DOCS_PATH) -> Path:
    """Render every result in ``results_dir`` into ``docs_path`` (atomically)."""
    return atomic_write_text(docs_path, render(read_results(results_dir)))


if __name__ == "__main__":
    import sys

    out = write_report(*(sys.argv[1:3]))
    print(out, file=sys.stderr)
