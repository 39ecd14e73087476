"""``skinlesion demo``: prepare → train → evaluate on the bundled sample of real ISIC images.

The sample (``skinlesion/demo/sample``: 200 CC-0 dermoscopic images, ≤ 256 px, with an
attribution file) is tiny, so the demo trains the frozen-cached recipe: the
offline EfficientNet-Lite0 runs once per image and view, then only the head
trains. It finishes in a few minutes on two CPU cores and ends with the path of
the HTML report. Twenty test images cannot measure a model: the report's
confidence intervals say how little they tell.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from skinlesion.data.prepare import PrepareSettings, prepare
from skinlesion.demo import sample_dir
from skinlesion.training.config import load_config
from skinlesion.training.trainer import train
from skinlesion.utils.progress import Progress
from skinlesion.utils.progress import say as report_steps
from skinlesion.workflows.evaluate import evaluate_run

DEMO_OVERRIDES: dict[str, Any] = {
    "stages": {"mode": "frozen", "cache_features": True, "feature_views": 8, "head_epochs": 150,
               "head_lr": 1e-3, "patience": 25},
    "model": {"dropout": 0.3}, "seed": 1,
}



def run_demo(out: str | Path, *, overwrite: bool = True,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run the whole demo into ``out`` and return its headline numbers and paths.

    Args:
        out: Folder for ``data/``, ``run/`` and the report.
        overwrite: Replace an earlier demo in ``out`` (else an earlier run is an error).
        progress: Gets a step message (task ``"demo"``) at each step.

    Returns:
        ``report`` (path of report.html), ``run_dir``, ``data_dir``, ``test_roc_auc``,
        ``test_n`` and ``seconds``.
    """
    say = report_steps(progress, "demo")
    t0 = time.perf_counter()
    out = Path(out)
    data_dir, run_dir = out / "data", out / "run"
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    say(f"1/3 prepare: {sample_dir() / 'labels.csv'} → {data_dir}")
    prepared = prepare([sample_dir() / "labels.csv"], data_dir, PrepareSettings(size=256, seed=1))
    say(f"    {prepared.summary}")
    say("2/3 train: EfficientNet-Lite0 (ImageNet, offline), frozen features cached, head trained")
    cfg = load_config(overrides={**DEMO_OVERRIDES, "data.data_dir": str(data_dir),
                                 "out": str(run_dir)})
    result = train(cfg, overwrite=overwrite, progress=_indented(progress))
    say(f"3/3 evaluate on the test split → {run_dir / 'eval'}")
    ev = evaluate_run(run_dir, data_dir, split="test", bootstrap=1000)
    metrics = ev.metrics
    return {
        "report": str(ev.report_path),
        "run_dir": str(run_dir),
        "data_dir": str(data_dir),
        "val_roc_auc": result.val_metrics.get("roc_auc"),
        "test_roc_auc": metrics["ranking"]["roc_auc"],
        "test_n": len(ev.predictions),
        "threshold": result.spec.threshold,
        "seconds": time.perf_counter() - t0,
    }


def _indented(progress: Progress | None) -> Progress | None:
    """Training's events under the demo's steps: messages indented, counts unchanged."""
    if progress is None:
        return None
    return lambda e: progress(replace(e, message=f"    {e.message}") if e.message else e)
