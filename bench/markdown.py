"""Markdown for docs/BENCHMARKS.md: cells, tables, bullet lists and JSON blocks.

Shared by the page assembly (:mod:`bench.report`) and the benches' own renderers, so
that a figure looks the same wherever it appears: numbers to 3 significant digits, None
as "—", timings as "median (min–max)".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

JSON_BLOCK_LIMIT = 6000

Row = dict[str, Any]


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: None → "—", floats to ``digits`` significant digits, timings as median (min–max)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return num(value, digits)
    if isinstance(value, dict):
        t = timing_parts(value)
        if t is not None:
            med, lo, hi = t
            return f"{num(med, digits)} ({num(lo, digits)}–{num(hi, digits)})"
        return "`" + json.dumps(value, separators=(",", ":"), default=str)[:200] + "`"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def num(x: float | None, digits: int = 3) -> str:
    """A number to ``digits`` significant digits, thousands separated ("—" for None, NaN)."""
    if x is None or not math.isfinite(x):
        return "—"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:,.{decimals}f}"


def fixed(x: Any, decimals: int = 3) -> str:
    """A figure to a fixed number of decimals, as AUCs are shown: 0.8341 → "0.834" ("—" when
    not a number)."""
    return "—" if not isinstance(x, int | float) else f"{x:.{decimals}f}"


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
        return f"{num(x)} s"
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


def mode_label(quick: Any) -> str:
    """"quick" or "full", the mode a record or part was measured in."""
    return "quick" if quick else "full"


def json_block(obj: Any) -> str:
    """``obj`` as a fenced JSON block, cut at :data:`JSON_BLOCK_LIMIT` characters."""
    text = json.dumps(obj, indent=2, default=str, allow_nan=False)
    if len(text) > JSON_BLOCK_LIMIT:
        text = text[:JSON_BLOCK_LIMIT] + "\n… (cut; the whole result is in bench/results/)"
    return "```json\n" + text + "\n```"


def load_at_start(r: dict[str, Any]) -> str:
    """The 1-minute load average a measurement started under ("—" when not recorded)."""
    load = r.get("load_average")
    return f"{load[0]:.1f}" if isinstance(load, list) and load else "—"


def per_source_table(per_source: list[tuple[str, dict[str, Any]]],
                     value: Callable[[Any], str] = fixed) -> str | None:
    """Test ROC AUC per image source: one row per source, one column per ``(label, groups)``
    (``groups`` maps a source to its ``n``, ``n_positive``, ``roc_auc``, ``too_small``);
    '†' marks fewer than 10 of a class. None when no source was scored."""
    sources: list[str] = []
    counts: dict[str, str] = {}
    for _, groups in per_source:
        for src, g in groups.items():
            if src not in sources:
                sources.append(src)
                counts[src] = f"{fmt(g.get('n'))} ({fmt(g.get('n_positive'))})"
    if not sources:
        return None
    rows = [[short_source(str(src)), counts[src],
             *[value((groups.get(src) or {}).get("roc_auc"))
               + (" †" if (groups.get(src) or {}).get("too_small") else "")
               for _, groups in per_source]] for src in sources]
    return table(["Source", "n (malignant)", *[label for label, _ in per_source]], rows)


def notes_and_failures(result: dict[str, Any], parts: dict[str, Any], order: list[str],
                       what: str) -> list[str]:
    """The bench's notes as bullets, then the parts that failed (``what``: "rows", "recipes")."""
    out = [bullets(fmt(n) for n in result["notes"])] if result.get("notes") else []
    failed = [f"{r}: {parts[r].get('error')}" for r in order if parts[r].get("error")]
    if failed:
        out.append(f"**Failed {what}:**\n\n```text\n" + "\n\n".join(failed)[:4000] + "\n```")
    return out
