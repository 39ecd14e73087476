"""tf.distribute strategies: one GPU, many GPUs (Mirrored), many machines (MultiWorker).

The trainer builds and compiles its model inside ``strategy.scope()``. The
global batch is the per-replica batch × the number of replicas, and learning
rates scale linearly with it (Goyal et al., 2017) unless ``scale_lr`` is off.
In a multi-worker job only the chief writes the run directory; the other workers
write to temporary folders, as TensorFlow's multi-worker guide prescribes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def get_strategy(name: str = "auto") -> Any:
    """Return the ``tf.distribute.Strategy`` named by ``name``.

    Args:
        name: ``auto`` (MultiWorker if ``TF_CONFIG`` names several workers, Mirrored
            with more than one GPU, else the default), ``none``, ``mirrored`` or
            ``multiworker``.
    """
    import tensorflow as tf

    if name == "auto":
        if _tf_config_workers() > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "none"
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected auto, none, mirrored or multiworker")


def _tf_config() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from exc


def _tf_config_workers() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def is_chief() -> bool:
    """True for the process that writes the run directory (always true outside multi-worker)."""
    task = _tf_config().get("task", {})
    if not task:
        return True
    kind, index = task.get("type"), int(task.get("index", 0))
    has_chief = bool(_tf_config().get("cluster", {}).get("chief"))
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def writable_dir(run_dir: Path) -> Path:
    """``run_dir`` on the chief, a throw-away temporary folder on the other workers."""
    if is_chief():
        return run_dir
    task = _tf_config().get("task", {})
    return Path(tempfile.mkdtemp(prefix=f"skinlesion-worker{task.get('index', 0)}-"))


def replicas(strategy: Any) -> int:
    """Number of replicas that share one global batch."""
    return int(getattr(strategy, "num_replicas_in_sync", 1))
