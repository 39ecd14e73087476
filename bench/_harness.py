"""The bench harness's building blocks: machine info, timings, child processes, result files.

Every bench module uses these so that all results look alike:

* :func:`environment` — the machine (CPU model from ``/proc/cpuinfo``, cores, memory,
  load average), library versions (``skinlesion.utils.versions``) and the git commit;
* :func:`time_calls` / :func:`summarize_times` — repetitions → ``median_s``/``min_s``/``max_s``
  (plus items per second when the call processes ``items`` things);
* :func:`run_in_child` — a measurement in its own Python process, so its peak memory
  (the child's ``ru_maxrss`` from ``wait4``) belongs to that measurement alone and one
  crash or hang never takes the whole bench down;
* :func:`write_result` / :func:`read_results` — one JSON file per bench, written atomically.

The child entry point is ``python -m bench._harness child TARGET KWARGS_JSON OUT_JSON``;
``TARGET`` is ``module:function``, called with the JSON keyword arguments, and its
JSON-serialisable return value is written to ``OUT_JSON``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skinlesion.utils.atomic import atomic_write_json
from skinlesion.utils.versions import git_commit, library_versions

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
SCHEMA_VERSION = 1

_EXTRA_PACKAGES = ("onnxruntime", "tf2onnx", "jinja2", "matplotlib")


# === Where things live ===========================================================

def cache_dir() -> Path:
    """The bench's scratch folder: ``$SKINLESION_BENCH_CACHE`` or ``bench/.cache`` (gitignored)."""
    env = os.environ.get("SKINLESION_BENCH_CACHE")
    path = Path(env) if env else REPO / "bench" / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def isic_dev_dir() -> Path:
    """The real images: ``$SKINLESION_ISIC_DEV`` or ``../shared/data/isic-dev`` beside the repo."""
    env = os.environ.get("SKINLESION_ISIC_DEV")
    return Path(env) if env else REPO.parent / "shared" / "data" / "isic-dev"


def prepared_isic_dev(seed: int = 1) -> dict[str, Any]:
    """isic-dev prepared once into the bench cache (``prepare`` with ``PrepareSettings(seed)``).

    Reused when a previous bench run prepared it with the same seed; the first call pays
    the preparation, and says so in the returned record.

    Returns:
        ``{"data_dir": str, "prepared_now": bool, "prepare_s": float | None,
        "splits": {split: images}}``.

    Raises:
        FileNotFoundError: if isic-dev is not where :func:`isic_dev_dir` looks.
    """
    from skinlesion.data.manifest import read_manifest
    from skinlesion.data.prepare import REPORT_NAME, PrepareSettings, prepare

    labels = isic_dev_dir() / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: isic-dev not found; set SKINLESION_ISIC_DEV to its "
                                "folder (the one holding labels.csv)")
    out = cache_dir() / f"isic-dev-seed{seed}"
    report = out / REPORT_NAME
    fresh, took = False, None
    if not _prepared_with(report, seed):
        t = time.perf_counter()
        prepare([labels], out, PrepareSettings(seed=seed))
        took, fresh = time.perf_counter() - t, True
    manifest = read_manifest(out)
    return {"data_dir": str(out), "prepared_now": fresh, "prepare_s": took,
            "source": str(labels),
            "splits": {str(k): int(v) for k, v in manifest["split"].value_counts().items()}}


def _prepared_with(report: Path, seed: int) -> bool:
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("status") == "ok" and data.get("settings", {}).get("seed") == seed


# === Machine and software ========================================================

def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, logical and usable cores, memory, OS and the current load average."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "load_average": load_average(),
    }


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (a shared machine's timings depend on them)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """Machine, library versions and git commit, recorded with every result."""
    versions = library_versions()
    from importlib import metadata

    for name in _EXTRA_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {"machine": machine_info(), "versions": versions, "commit": git_commit(REPO)}


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# === Timings =====================================================================

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


# === Child processes =============================================================

@dataclass
class ChildResult:
    """What a measurement run in a child process gave back.

    Attributes:
        target: ``module:function`` that ran.
        ok: It returned normally.
        value: Its return value (None unless ``ok``).
        error: Why it failed (exception, signal, timeout), with the log tail.
        returncode: The child's exit status (negative: killed by that signal).
        timed_out: It was killed after ``timeout`` seconds.
        wall_s: Wall time of the whole child, interpreter start included.
        peak_rss_mb: The child's peak resident memory in MiB: its own ``VmHWM`` at exit, or
            for a child that died, the last value polled from ``/proc`` while it ran (a lower
            bound), or ``wait4``'s ``ru_maxrss`` where ``/proc`` does not exist.
        children_peak_rss_mb: Largest peak among processes the child started and waited for
            (worker pools), from the child's ``RUSAGE_CHILDREN``.
        cpu_s: CPU seconds (user + system) of the child and every descendant it waited for,
            from ``wait4``: unlike wall time, barely affected by other load on the machine.
        log: Where its stdout and stderr went.
    """

    target: str
    ok: bool
    value: Any = None
    error: str | None = None
    returncode: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0
    peak_rss_mb: float | None = None
    children_peak_rss_mb: float | None = None
    cpu_s: float | None = None
    log: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable if ``value`` is)."""
        return asdict(self)

    def describe(self) -> dict[str, Any]:
        """The child's bookkeeping without its value: what results store beside each figure."""
        return {"ok": self.ok, "error": self.error, "returncode": self.returncode,
                "timed_out": self.timed_out, "wall_s": round(self.wall_s, 3),
                "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
                "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
                "children_peak_rss_mb": (None if self.children_peak_rss_mb is None
                                         else round(self.children_peak_rss_mb, 1))}


def child_env(pythonpath: Iterable[str | os.PathLike[str]] = ()) -> dict[str, str]:
    """Environment of a child: quiet TensorFlow, Agg plots, the repo importable."""
    env = dict(os.environ)
    paths = [os.fspath(p) for p in pythonpath] + [str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_in_child(target: str, kwargs: dict[str, Any] | None = None, *,
                 timeout: float | None = None, log_path: str | os.PathLike[str] | None = None,
                 pythonpath: Iterable[str | os.PathLike[str]] = ()) -> ChildResult:
    """Run ``target(**kwargs)`` in a fresh Python process and collect its result.

    The child starts from a clean interpreter (``sys.executable``), so its peak resident
    memory (``VmHWM``, see :func:`peak_rss_mb`) is this measurement's alone, and a
    crash, an out-of-memory kill or a hang (``timeout``) is reported instead of ending
    the bench. The child runs in its own session; on timeout exactly that process group
    is killed.

    Args:
        target: ``"package.module:function"``; the function takes ``**kwargs`` and returns
            something JSON-serialisable.
        kwargs: JSON-serialisable keyword arguments.
        timeout: Seconds before the child is killed (None = no limit).
        log_path: File for the child's stdout and stderr (default: a temp file, deleted
            when the child succeeds).
        pythonpath: Extra import folders for the child (the repo is always importable).

    Returns:
        A :class:`ChildResult`.
    """
    if ":" not in target:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    work = Path(tempfile.mkdtemp(prefix="bench-child-"))
    args_file, out_file = work / "kwargs.json", work / "result.json"
    args_file.write_text(json.dumps(kwargs or {}), encoding="utf-8")
    keep_log = log_path is not None
    log_file = Path(log_path) if log_path is not None else work / "child.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench._harness", "child", target, str(args_file), str(out_file)]
    start = time.perf_counter()
    timed_out = threading.Event()
    with open(log_file, "wb") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(REPO), env=child_env(pythonpath), start_new_session=True)

        def kill() -> None:
            timed_out.set()
            # The child's own process group, plus every descendant (a nested child runs in
            # its own session), collected before anything dies and is re-parented.
            family = descendants(proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            for pid in family:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        polled: list[float] = []
        done = threading.Event()

        def poll() -> None:
            # The last VmHWM seen before a crash is the best figure a dead child leaves.
            while not done.wait(0.25):
                value = peak_rss_mb(proc.pid)
                if value is not None:
                    polled.append(value)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            # wait4 (not Popen.wait): it also returns the resource usage (non-Linux fallback).
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            # Interrupted (Ctrl-C): the child runs in its own session, so end it here.
            kill()
            proc.wait()
            raise
        finally:
            done.set()
            if timer:
                timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    poller.join()
    payload = _read_json(out_file)
    peak = (payload or {}).get("peak_rss_mb") or (max(polled) if polled else None)
    if peak is None:
        peak = usage.ru_maxrss / 1024.0 if sys.platform != "darwin" else usage.ru_maxrss / 1024**2
    result = ChildResult(target=target, ok=False, returncode=proc.returncode,
                         timed_out=timed_out.is_set(), wall_s=wall, peak_rss_mb=peak,
                         children_peak_rss_mb=(payload or {}).get("children_peak_rss_mb"),
                         cpu_s=usage.ru_utime + usage.ru_stime, log=str(log_file))
    if payload is not None and payload.get("ok") and proc.returncode == 0:
        result.ok, result.value = True, payload.get("value")
    else:
        result.error = _child_error(result, payload, log_file)
    for p in (args_file, out_file):
        p.unlink(missing_ok=True)
    if result.ok and not keep_log:
        # A failed child's log stays (its path is in the result); a good one's goes.
        log_file.unlink(missing_ok=True)
        result.log = None
        with contextlib.suppress(OSError):
            work.rmdir()
    return result


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through ``/proc``; [] elsewhere)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _child_error(result: ChildResult, payload: dict[str, Any] | None, log_file: Path) -> str:
    if result.timed_out:
        why = "timed out and was killed"
    elif payload is not None and payload.get("error"):
        why = str(payload["error"])
    elif result.returncode is not None and result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = f"signal {-result.returncode}"
        why = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        why = f"exited with status {result.returncode} without a result"
    tail = log_tail(log_file)
    return f"{result.target}: {why}" + (f"\n--- last lines of the child's log ---\n{tail}"
                                        if tail else "")


def log_tail(path: str | os.PathLike[str], lines: int = 15) -> str:
    """The last ``lines`` non-noise lines of a log file ('' if unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    keep = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("I0000", "W0000"))]
    return "\n".join(keep[-lines:])


def _own_peaks() -> dict[str, float | None]:
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"peak_rss_mb": self_peak_rss_mb(), "children_peak_rss_mb": kids or None}


def _child_main(target: str, args_file: str, out_file: str) -> int:
    """Entry point inside the child: import, call, write ``{"ok", "value"}`` or the error."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    start = time.perf_counter()
    try:
        kwargs = json.loads(Path(args_file).read_text(encoding="utf-8"))
        module_name, func_name = target.split(":", 1)
        func = getattr(importlib.import_module(module_name), func_name)
        value = func(**kwargs)
        payload = {"ok": True, "value": value, "wall_s": time.perf_counter() - start,
                   **_own_peaks()}
        atomic_write_json(out_file, payload)
        return 0
    except BaseException as exc:  # report everything, KeyboardInterrupt included
        traceback.print_exc()
        payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=20), **_own_peaks()}
        with contextlib.suppress(Exception):
            atomic_write_json(out_file, payload)
        return 1


# === Calling bench modules =======================================================

def call_bench(module: str, quick: bool, parts: list[str] | None = None) -> Any:
    """Import ``bench.<module>`` and call its ``run(quick)`` (with ``parts`` if it takes them).

    This is what ``python -m bench`` runs in a child process for every bench.

    Raises:
        TypeError: if ``parts`` are given but the module's ``run`` does not take them.
    """
    import inspect

    mod = importlib.import_module(f"bench.{module}")
    run = getattr(mod, "run", None)
    if run is None:
        raise AttributeError(f"bench/{module}.py has no run(quick) function")
    if parts:
        if "parts" not in inspect.signature(run).parameters:
            raise TypeError(f"bench/{module}.py: run() takes no parts; run it whole "
                            f"(--only {module})")
        return run(quick=quick, parts=parts)
    return run(quick=quick)


# === Result files ================================================================

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


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        sys.exit(_child_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    sys.exit("usage: python -m bench._harness child MODULE:FUNCTION KWARGS_JSON OUT_JSON")
