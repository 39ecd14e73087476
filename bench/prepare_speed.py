"""Prepare throughput: reduced-DCT (draft) decode + resize vs a plain full decode + resize.

On ``../shared/data/isic-dev/fullsize/`` (20 untouched JPEGs of 2,048–3,072 px),
resizing the shorter side to 512 px as ``skinlesion prepare`` does:

* ``per_core``: one process, images per CPU-second (CPU time, so other work on
  a shared machine does not count; wall-clock rates are reported too) for

  - ``plain``: full decode + EXIF + RGB + one Lanczos resize, the way the
    tutorials do it — the baseline of the goal (≥ 3.5×);
  - ``full``: full decode through prepare's decoder and resize (Lanczos with a
    ``reducing_gap`` box pre-reduction), to isolate what draft decoding adds;
  - ``draft``: what ``prepare`` does — reduced-DCT decode, then the same resize;

  the modes are interleaved in every repetition and ratios are taken within each
  repetition (median, min, max reported);
* ``pipeline``: the full prepare image step (decode, resize, atomic JPEG write)
  through :func:`skinlesion.data.resize.resize_images` with ``workers=1`` and
  ``workers=2``, including process start-up, on the 20 files repeated to make
  enough work for two processes; ``busy_cores`` (CPU-seconds of the process and
  its workers per wall-second) shows how many cores the step kept busy — on a
  machine shared with other jobs the wall-clock speed-up is bounded by what the
  others leave free;
* ``fidelity``: mean absolute difference (0–255) between the draft and the full
  decode outputs, so speed is not bought with visibly different pixels.

Run ``python -m bench.prepare_speed`` (``--full`` for more repetitions).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

GOAL_RATIO = 3.5
SIZE = 512


def _data_dir() -> Path:
    env = os.environ.get("SKINLESION_ISIC_DEV")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "isic-dev"


def _stats(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "values": [round(v, 3) for v in values],
            "repetitions": len(values)}


def _plain(path: Path) -> Any:
    """The plain way (tutorials): full decode, EXIF, RGB, one Lanczos resize."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        rgb = im.convert("RGB")
    w, h = rgb.size
    scale = SIZE / min(w, h)
    return rgb.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)


def _time_decode(files: list[Path], mode: str) -> tuple[float, float]:
    """(images per CPU second, images per wall second) in this process.

    ``mode``: ``plain`` (:func:`_plain`), ``full`` (prepare's decoder and resize without
    draft) or ``draft`` (what ``prepare`` does).
    """
    from skinlesion.data.resize import load_resized

    cpu, wall = time.process_time(), time.perf_counter()
    for f in files:
        if mode == "plain":
            _plain(f)
        else:
            load_resized(f, SIZE, draft=mode == "draft")
    return (len(files) / (time.process_time() - cpu), len(files) / (time.perf_counter() - wall))


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _time_pipeline(files: list[Path], workers: int, copies: int) -> tuple[float, float]:
    """(images per wall second, average busy cores = CPU seconds / wall seconds)."""
    from skinlesion.data.resize import ResizeTask, resize_images

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tasks = [ResizeTask(src=os.fspath(f), dst=os.path.join(tmp, f"{i}_{f.stem}.jpg"), size=SIZE)
                 for i in range(copies) for f in files]
        cpu, start = _cpu_seconds(), time.perf_counter()
        results = resize_images(tasks, workers=workers)
        elapsed = time.perf_counter() - start
        busy = (_cpu_seconds() - cpu) / elapsed
    if not all(r.ok for r in results):
        raise RuntimeError([r.reason for r in results if not r.ok][:3])
    return len(tasks) / elapsed, busy


def _fidelity(files: list[Path]) -> dict[str, Any]:
    from skinlesion.data.resize import load_resized

    diffs = []
    for f in files:
        a = np.asarray(load_resized(f, SIZE, draft=False), dtype=np.float32)
        b = np.asarray(load_resized(f, SIZE, draft=True), dtype=np.float32)
        if a.shape != b.shape:  # rounding of the long side may differ by a pixel
            h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
            a, b = a[:h, :w], b[:h, :w]
        diffs.append(float(np.abs(a - b).mean()))
    return {"mean_abs_diff_0_255": _stats(diffs)}


def run(quick: bool = True) -> dict[str, Any]:
    """Measure prepare throughput; returns JSON-serialisable results.

    Args:
        quick: 3 repetitions (else 7) and 4 copies of the files for the pipeline (else 8).
    """
    from PIL import Image

    from skinlesion.data.resize import default_workers

    folder = _data_dir() / "fullsize"
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"{folder}: no JPEGs (set SKINLESION_ISIC_DEV)")
    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append(im.size)
    reps = 3 if quick else 7
    copies = 4 if quick else 8

    _time_decode(files[:2], "plain")  # warm the page cache and imports
    cpu: dict[str, list[float]] = {"plain": [], "full": [], "draft": []}
    wall: dict[str, list[float]] = {"plain": [], "full": [], "draft": []}
    for _ in range(reps):
        for mode in cpu:
            c, w = _time_decode(files, mode)
            cpu[mode].append(c)
            wall[mode].append(w)
    ratios = [d / p for d, p in zip(cpu["draft"], cpu["plain"], strict=True)]
    ratios_full = [d / f for d, f in zip(cpu["draft"], cpu["full"], strict=True)]

    pipe1, pipe2, busy1, busy2 = [], [], [], []
    for _ in range(max(2, reps - 1)):
        rate, busy = _time_pipeline(files, 1, copies)
        pipe1.append(rate)
        busy1.append(busy)
        rate, busy = _time_pipeline(files, 2, copies)
        pipe2.append(rate)
        busy2.append(busy)

    ratio = statistics.median(ratios)
    return {
        "benchmark": "prepare_speed",
        "data": "isic-dev/fullsize",
        "images": len(files),
        "source_px": {"min_long_side": min(max(s) for s in sizes),
                      "max_long_side": max(max(s) for s in sizes),
                      "megapixels_median": round(statistics.median(w * h / 1e6 for w, h in sizes), 2)},
        "target_shorter_side_px": SIZE,
        "cpu_cores_available": default_workers(),
        "per_core": {
            "what": "images per CPU-second of one process (time.process_time): per-core "
                    "throughput, robust to other work on a shared machine",
            "plain_full_decode_resize_img_per_s": _stats(cpu["plain"]),
            "full_decode_prepare_resize_img_per_s": _stats(cpu["full"]),
            "draft_decode_resize_img_per_s": _stats(cpu["draft"]),
            "ratio_draft_vs_plain": _stats(ratios),
            "ratio_draft_vs_full_decode_prepare_resize": _stats(ratios_full),
            "wall_clock_img_per_s": {mode: _stats(v) for mode, v in wall.items()},
        },
        "goal_ratio": GOAL_RATIO,
        "meets_goal": ratio >= GOAL_RATIO,
        "pipeline": {
            "what": "decode (draft) + resize + atomic JPEG q95 write, via resize_images, "
                    "process start-up included",
            "tasks": len(files) * copies,
            "workers_1_img_per_s": _stats(pipe1),
            "workers_2_img_per_s": _stats(pipe2),
            "speedup_2_vs_1": _stats([b / a for a, b in zip(pipe1, pipe2, strict=True)]),
            "busy_cores_workers_1": _stats(busy1),
            "busy_cores_workers_2": _stats(busy2),
            "img_per_cpu_s_workers_1": _stats([r / b for r, b in zip(pipe1, busy1, strict=True)]),
            "img_per_cpu_s_workers_2": _stats([r / b for r, b in zip(pipe2, busy2, strict=True)]),
        },
        "fidelity": _fidelity(files),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--full" not in sys.argv[1:]), indent=2))
