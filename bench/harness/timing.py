"""Timings and memory: :func:`time_calls` / :func:`summarize_times` turn repetitions into
``median_s``/``min_s``/``max_s`` (plus items per second when the call processes ``items``
things); :func:`peak_rss_mb` reads a process's peak resident memory."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def summarize_times(times: Sequence[float], items: int | None = None,
                    warmup: int = 0) -> dict[str, Any]:
    """Median, min and max of repeated timings (and throughput when ``items`` is given).

    Args:
        times: Seconds per repetition (at least one).
        items: Things processed per repetition (images, batches); adds ``items``,
            ``per_s_median`` (items / median time), ``per_s_best`` (items / min time) and
            ``per_s_worst`` (items / max time).
        warmup: Repetitions run and discarded before ``times`` (recorded only).

    Returns:
        ``{"repeats", "warmup", "median_s", "min_s", "max_s", "times_s", ...}``.

    Raises:
        ValueError: if ``times`` is empty or holds a negative value.
    """
    ts = [float(t) for t in times]
    if not ts:
        raise ValueError("no timings to summarise")
    if min(ts) < 0:
        raise ValueError(f"negative timing in {ts}")
    out: dict[str, Any] = {
        "repeats": len(ts), "warmup": int(warmup), "median_s": statistics.median(ts),
        "min_s": min(ts), "max_s": max(ts), "times_s": ts,
    }
    if items is not None:
        out["items"] = int(items)
        out["per_s_median"] = _rate(items, out["median_s"])
        out["per_s_best"] = _rate(items, out["min_s"])
        out["per_s_worst"] = _rate(items, out["max_s"])
    return out


def _rate(items: float, seconds: float) -> float | None:
    return float(items) / seconds if seconds > 0 else None


def time_calls(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
               items: int | None = None) -> dict[str, Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (``perf_counter``).

    Returns:
        :func:`summarize_times` of the timed calls.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return summarize_times(times, items=items, warmup=warmup)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory (``VmHWM``) of process ``pid`` in MiB, or None where unknown.

    ``VmHWM`` belongs to the process's current memory map, so it starts afresh at
    ``exec``; ``ru_maxrss`` does not (Linux carries the pre-exec peak over, so a child
    forked from a big parent would inherit the parent's size).
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def self_peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``VmHWM``, else ``ru_maxrss``)."""
    import resource

    hwm = peak_rss_mb("self")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0**2
