"""Where things live and what a result was measured on: folders, machine, software, time.

* :func:`cache_dir`, :func:`isic_dev_dir`, :func:`prepared_isic_dev` — the bench's scratch
  folder, the real images and their copy prepared once into that folder;
* :func:`environment` — the machine (CPU model from ``/proc/cpuinfo``, cores, memory,
  load average), library versions (``skinlesion.utils.versions``) and the git commit,
  recorded with every result;
* :func:`now_iso` — the timestamp every record carries.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skinlesion.utils.versions import git_commit, library_versions

REPO = Path(__file__).resolve().parents[2]

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
