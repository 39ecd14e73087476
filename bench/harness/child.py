"""Child processes: a measurement in its own Python process.

:func:`run_in_child` runs ``module:function`` in a fresh interpreter, so its peak memory
(``VmHWM``, else the child's ``ru_maxrss`` from ``wait4``) belongs to that measurement
alone and one crash or hang never takes the whole bench down; :func:`call_bench` is what
``python -m bench`` runs there for every bench.

The child entry point is ``python -m bench.harness.child TARGET KWARGS_JSON OUT_JSON``;
``TARGET`` is ``module:function``, called with the JSON keyword arguments, and its
JSON-serialisable return value is written to ``OUT_JSON``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.environment import REPO
from bench.harness.timing import peak_rss_mb, self_peak_rss_mb
from skinlesion.utils.atomic import atomic_write_json


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
    cmd = [sys.executable, "-m", "bench.harness.child", target, str(args_file), str(out_file)]
    start = time.perf_counter()
    with open(log_file, "wb") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(REPO), env=child_env(pythonpath), start_new_session=True)
        watch = _Watch(proc, timeout)
        usage = watch.wait()
    wall = time.perf_counter() - start
    watch.join()
    result = _collect(target, proc.returncode, watch, usage, wall, _read_json(out_file), log_file)
    for p in (args_file, out_file):
        p.unlink(missing_ok=True)
    if result.ok and not keep_log:
        # A failed child's log stays (its path is in the result); a good one's goes.
        log_file.unlink(missing_ok=True)
        result.log = None
        with contextlib.suppress(OSError):
            work.rmdir()
    return result


class _Watch:
    """A running child, watched: killed with its whole family on timeout, and its peak
    memory (``VmHWM``) polled while it runs."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float | None) -> None:
        self.proc = proc
        self.timed_out = threading.Event()
        self.polled: list[float] = []
        self._done = threading.Event()
        self._timer = threading.Timer(timeout, self.kill) if timeout else None
        self._poller = threading.Thread(target=self._poll, daemon=True)

    def kill(self) -> None:
        """Kill the child: on timeout (from the timer) or when the parent is interrupted."""
        self.timed_out.set()
        # The child's own process group, plus every descendant (a nested child runs in
        # its own session), collected before anything dies and is re-parented.
        family = descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _poll(self) -> None:
        # The last VmHWM seen before a crash is the best figure a dead child leaves.
        while not self._done.wait(0.25):
            value = peak_rss_mb(self.proc.pid)
            if value is not None:
                self.polled.append(value)

    def wait(self) -> Any:
        """Start the timer and the poller, reap the child (setting its ``returncode``) and
        return its resource usage."""
        if self._timer:
            self._timer.daemon = True
            self._timer.start()
        self._poller.start()
        try:
            # wait4 (not Popen.wait): it also returns the resource usage (non-Linux fallback).
            _, status, usage = os.wait4(self.proc.pid, 0)
        except BaseException:
            # Interrupted (Ctrl-C): the child runs in its own session, so end it here.
            self.kill()
            self.proc.wait()
            raise
        finally:
            self._done.set()
            if self._timer:
                self._timer.cancel()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return usage

    def join(self) -> None:
        """Wait for the poller to stop (after :meth:`wait`)."""
        self._poller.join()


def _collect(target: str, returncode: int, watch: _Watch, usage: Any, wall: float,
             payload: dict[str, Any] | None, log_file: Path) -> ChildResult:
    """The :class:`ChildResult` of a finished child from what it wrote and what was seen."""
    peak = (payload or {}).get("peak_rss_mb") or (max(watch.polled) if watch.polled else None)
    if peak is None:
        peak = usage.ru_maxrss / 1024.0 if sys.platform != "darwin" else usage.ru_maxrss / 1024**2
    result = ChildResult(target=target, ok=False, returncode=returncode,
                         timed_out=watch.timed_out.is_set(), wall_s=wall, peak_rss_mb=peak,
                         children_peak_rss_mb=(payload or {}).get("children_peak_rss_mb"),
                         cpu_s=usage.ru_utime + usage.ru_stime, log=str(log_file))
    if payload is not None and payload.get("ok") and returncode == 0:
        result.ok, result.value = True, payload.get("value")
    else:
        result.error = _child_error(result, payload, log_file)
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


if __name__ == "__main__":
    if len(sys.argv) == 4:
        sys.exit(_child_main(sys.argv[1], sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m bench.harness.child MODULE:FUNCTION KWARGS_JSON OUT_JSON")
