"""Result files: one JSON record per bench, ``<out>/<name>.json``, written atomically.

:func:`write_result` / :func:`read_results` write and read the records;
:func:`merge_parts` folds a partial run (``--only NAME.PART``) into the record before it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from bench.harness.environment import REPO
from skinlesion.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

RESULTS_DIR = REPO / "bench" / "results"
SCHEMA_VERSION = 1


def result_path(out_dir: str | os.PathLike[str], name: str) -> Path:
    """``<out_dir>/<name>.json``."""
    return Path(out_dir) / f"{name}.json"


def write_result(out_dir: str | os.PathLike[str], name: str, record: dict[str, Any]) -> Path:
    """Write one bench's record atomically to ``<out_dir>/<name>.json`` (NaN refused)."""
    return atomic_write_json(result_path(out_dir, name), _json_safe(record))


def read_results(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` record in ``out_dir`` by bench name; unreadable files are skipped
    with a warning (never a crash: the report shows what it can)."""
    out: dict[str, dict[str, Any]] = {}
    folder = Path(out_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: not a readable result (%s); skipped", path, exc)
            continue
        if isinstance(data, dict):
            out[str(data.get("name") or path.stem)] = data
    return out


def merge_parts(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Merge a partial run's ``result.parts`` into the previous record of the same bench.

    A bench measured in parts (``--only quality.tutorial1``) returns only those parts;
    the parts measured earlier stay, each stamped with its own run (mode, date, commit).
    """
    if not old or not isinstance(old.get("result"), dict):
        return new
    old_parts = old["result"].get("parts")
    new_result = new.get("result")
    if not isinstance(old_parts, dict) or not isinstance(new_result, dict):
        return new
    new_parts = dict(new_result.get("parts") or {})
    for name, part in new_parts.items():
        before = old_parts.get(name)
        if isinstance(part, dict) and isinstance(before, dict) and not before.get("quick") \
                and _commit(before) and _commit(before) != _commit(part):
            # Re-measured at another commit: the earlier record stays beside the new one,
            # so a report can show what changed (one level: its own "previous" is dropped).
            part["previous"] = {k: v for k, v in before.items() if k != "previous"}
    merged_parts = {**old_parts, **new_parts}
    merged = dict(new)
    merged["result"] = {**new_result, "parts": merged_parts}
    return merged


def _commit(part: dict[str, Any]) -> str:
    return str((part.get("run") or {}).get("commit") or "")


def _json_safe(obj: Any) -> Any:
    import math

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, str | bytes):
        with contextlib.suppress(Exception):
            obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
