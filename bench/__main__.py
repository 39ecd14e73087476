"""``python -m bench``: run the benchmarks and regenerate docs/BENCHMARKS.md.

Usage::

    python -m bench --quick                       # everything, small (< 10 min on 2 cores)
    python -m bench                               # full mode (an hour or more)
    python -m bench --only quality.tutorial1,scaling.inference
    python -m bench --report-only                 # re-render from bench/results/*.json
    python -m bench --list

Every bench module ``bench/<name>.py`` with a ``run(quick)`` function is a bench; each runs
in its own child process (its peak memory is its own, a crash or hang is recorded as a
failure and the others go on) and its record is written atomically to
``<out>/<name>.json``. ``--only NAME.PART`` runs one part of a bench whose ``run`` takes
``parts`` (quality: recipes; scaling: prepare, train, inference); the parts measured
earlier stay in the JSON, so a full run can be done in pieces and still renders as one
report. Progress goes to stderr; the exit status is 1 if any bench failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness.child import run_in_child
from bench.harness.environment import REPO, cache_dir, environment, load_average, now_iso
from bench.harness.results import RESULTS_DIR, merge_parts, read_results, write_result
from bench.report import DOCS_PATH, ORDER, write_report

log = logging.getLogger("bench")

NOT_BENCHES = frozenset({"report", "__main__", "__init__"})
TIMEOUT_S = {True: 540, False: 12 * 3600}
"""Per-bench limit: quick mode must finish under 10 minutes in all."""


def discover(folder: Path = REPO / "bench") -> list[str]:
    """Bench names: modules in ``bench/`` that define ``run`` (helpers start with ``_``)."""
    found = []
    for path in folder.glob("*.py"):
        name = path.stem
        if name.startswith("_") or name in NOT_BENCHES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if "\ndef run(" in text:
            found.append(name)
    known = [n for n in ORDER if n in found]
    return known + sorted(n for n in found if n not in ORDER)


def parse_only(only: str | None, available: list[str]) -> dict[str, list[str] | None]:
    """``"quality.tutorial1,scaling"`` → ``{"quality": ["tutorial1"], "scaling": None}``.

    Raises:
        ValueError: naming an unknown bench and listing the available ones.
    """
    if not only:
        return dict.fromkeys(available)
    chosen: dict[str, list[str] | None] = {}
    for item in (s.strip() for s in only.split(",")):
        if not item:
            continue
        name, _, part = item.partition(".")
        if name not in available:
            raise ValueError(f"unknown bench {name!r}; available: {', '.join(available)}")
        if not part:
            chosen[name] = None
        elif name not in chosen or chosen[name] is not None:
            chosen.setdefault(name, [])
            parts = chosen[name]
            if parts is not None and part not in parts:
                parts.append(part)
    return {n: chosen[n] for n in available if n in chosen}


def run_bench(name: str, *, quick: bool, parts: list[str] | None, timeout: float,
              env: dict[str, Any]) -> dict[str, Any]:
    """Run one bench in a child process and build its record (not yet written)."""
    created = now_iso()
    before = load_average()
    child = run_in_child("bench.harness.child:call_bench",
                         {"module": name, "quick": quick, "parts": parts},
                         timeout=timeout, log_path=cache_dir() / "logs" / f"{name}.log")
    record: dict[str, Any] = {
        "schema": 1, "name": name, "quick": quick, "mode": "quick" if quick else "full",
        "parts_run": parts, "created": created,
        "status": "ok" if child.ok else "failed", "error": child.error,
        "wall_s": child.wall_s, "cpu_s": child.cpu_s, "peak_rss_mb": child.peak_rss_mb,
        "environment": env, "load_average": {"before": before, "after": load_average()},
        "log": child.log, "result": child.value,
    }
    result = record["result"]
    if isinstance(result, dict) and result.get("error") and record["status"] == "ok":
        # The bench caught its own failure and returned it: still a failure to see.
        record["status"], record["error"] = "failed", str(result["error"])
    if isinstance(result, dict) and isinstance(result.get("parts"), dict):
        stamp = {"quick": quick, "created": created, "commit": env.get("commit")}
        for part in result["parts"].values():
            if isinstance(part, dict):
                part["run"] = stamp
        # A part that failed inside a bench that itself finished is still a failure to see.
        if any(isinstance(p, dict) and p.get("error") for p in result["parts"].values()):
            record["status"] = "partial"
    return record


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small subsets and few repetitions (< 10 minutes on 2 CPU cores)")
    p.add_argument("--only", metavar="NAME[.PART],...",
                   help="run only these benches or parts (e.g. quality.tutorial1,scaling)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR,
                   help="folder of the JSON results (default bench/results)")
    p.add_argument("--docs", type=Path, default=DOCS_PATH,
                   help="the Markdown report to regenerate (default docs/BENCHMARKS.md)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed per bench (default 540 quick, 12 h full)")
    p.add_argument("--report-only", action="store_true",
                   help="only re-render the report from the JSON results")
    p.add_argument("--no-report", action="store_true", help="measure but do not render")
    p.add_argument("--list", action="store_true", help="list the benches and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    available = discover()
    if args.list:
        for name in available:
            print(name)
        return 0
    if args.report_only:
        out = write_report(args.out, args.docs)
        log.info("wrote %s from %d result(s)", out, len(read_results(args.out)))
        return 0
    try:
        selection = parse_only(args.only, available)
    except ValueError as exc:
        p.error(str(exc))
    if not selection:
        p.error("nothing to run")

    env = environment()
    timeout = args.timeout or TIMEOUT_S[args.quick]
    mode = "quick" if args.quick else "full"
    log.info("bench (%s): %s on %s, %s cores, commit %s", mode, ", ".join(selection),
             env["machine"]["cpu_model"], env["machine"]["usable_cores"], env["commit"])
    start = time.perf_counter()
    statuses: dict[str, str] = {}
    for name, parts in selection.items():
        label = name + (f" ({', '.join(parts)})" if parts else "")
        log.info("→ %s …", label)
        record = run_bench(name, quick=args.quick, parts=parts, timeout=timeout, env=env)
        if parts:
            record = merge_parts(read_results(args.out).get(name), record)
        path = write_result(args.out, name, record)
        statuses[name] = record["status"]
        log.info("  %s: %s in %.0f s wall, %.0f s CPU (peak %.0f MB) → %s", label,
                 record["status"], record["wall_s"], record["cpu_s"] or 0,
                 record["peak_rss_mb"] or 0, path)
        if record["error"]:
            log.error("  %s", record["error"])
    if not args.no_report:
        docs = write_report(args.out, args.docs)
        log.info("wrote %s", docs)
    log.info("done in %.0f s: %s", time.perf_counter() - start,
             ", ".join(f"{n} {s}" for n, s in statuses.items()))
    return 0 if all(s == "ok" for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
