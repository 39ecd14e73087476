"""Batch inference at scale with Ray Data: a folder or a bucket of images → one table of results.

One engine, and the project's one inference path: Ray Data reads the image
files in parallel (``read_binary_files``: local folders, NFS, ``s3://``,
``gs://``, anything pyarrow's file systems open), and ``map_batches`` hands the
bytes to :class:`PredictorActor`, a callable class that loads
:class:`~skinlesion.inference.predictor.Predictor` once per actor and decodes,
resizes and predicts exactly like ``skinlesion predict`` and the service do. The
same code runs on a laptop (``ray.init()`` starts a local cluster) and on a Ray
cluster (``RAY_ADDRESS=ray://head:10001`` or ``ray job submit``), where actors
spread over the nodes and, with ``num_gpus=1``, each takes a GPU; see
docs/SCALING.md.

Why Ray Data rather than Apache Beam ``RunInference``: it installs from PyPI with
TensorFlow 2.21 and numpy 2 (``pip install 'skinlesion[scale]'``), runs locally
without a runner service, and calls the ``Predictor`` itself instead of a
separately exported SavedModel, so batch results cannot drift from the CLI's.

A file that cannot be decoded gets a row with its ``error`` set and never stops
the job. Results are a CSV written atomically (``OUT.csv``: collected on the
driver, sorted by path) or, for very large jobs, a folder or bucket of Parquet
files written by the workers (``OUT`` without ``.csv``).

This is research software, not a diagnostic device (see ``skinlesion.INTENDED_USE``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.data.extensions import IMAGE_EXTENSIONS
from skinlesion.data.images import ImageError
from skinlesion.inference.predictor import Predictor
from skinlesion.runspec import require_run
from skinlesion.utils.atomic import atomic_path
from skinlesion.utils.safe_text import escape_frame

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("path", "probability", "decision", "error", "model_id")
RAY_MISSING = ("batch inference needs Ray Data: pip install 'skinlesion[scale]' "
               "(or pip install 'ray[data]>=2.9')")


class PredictorActor:
    """Callable class for ``Dataset.map_batches``: one ``Predictor`` per actor.

    Args:
        run_dir: A finished run (``model.keras`` + ``model_spec.json``) readable by every
            node (shared storage, or copied into the image the cluster runs).
        tta: Dihedral views averaged (1, 2, 4 or 8).

    A batch is a dict of columns ``path`` and ``bytes`` (what ``read_binary_files``
    yields); the result has the columns of :data:`COLUMNS`.
    """

    def __init__(self, run_dir: str, tta: int = 1) -> None:

        self.predictor = Predictor.from_run(run_dir)
        self.tta = int(tta)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:

        paths = [str(p) for p in batch["path"]]
        arrays: list[np.ndarray] = []
        good: list[int] = []
        errors: list[str | None] = [None] * len(paths)
        for i, (path, data) in enumerate(zip(paths, batch["bytes"], strict=True)):
            try:
                arrays.append(self.predictor.load_image(bytes(data), name=path))
                good.append(i)
            except ImageError as exc:
                errors[i] = exc.reason
            except Exception as exc:  # one bad file never stops the job
                errors[i] = f"{type(exc).__name__}: {exc}"
        prob = np.full(len(paths), np.nan)
        if arrays:
            prob[good] = self.predictor.predict_arrays(np.stack(arrays), tta=self.tta,
                                                       batch_size=len(arrays))
        decision = [self.predictor.decide(p) if e is None else "" for p, e in zip(prob, errors,
                                                                                 strict=True)]
        return {
            "path": np.asarray(paths, dtype=object),
            "probability": prob,
            "decision": np.asarray(decision, dtype=object),
            "error": np.asarray([e or "" for e in errors], dtype=object),
            "model_id": np.asarray([self.predictor.model_id] * len(paths), dtype=object),
        }


@dataclass
class BatchResult:
    """What :func:`predict_at_scale` did.

    Attributes:
        output: The CSV file, or the folder/bucket of Parquet files.
        images: Rows written.
        failed: Rows whose image could not be read.
        malignant: Rows decided ``malignant`` (None when written by the workers).
    """

    output: str
    images: int
    failed: int
    malignant: int | None


def image_dataset(inputs: str | Sequence[str], *, parallelism: int = -1) -> Any:
    """A Ray dataset of ``path`` and ``bytes`` for every image file under ``inputs``.

    Args:
        inputs: Folders, files or URIs (``s3://bucket/prefix``, ``gs://...``); folders are
            read recursively, keeping files with an image extension.
        parallelism: Read tasks (-1: Ray decides).
    """
    import ray.data

    paths = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    return ray.data.read_binary_files(  # extensions match case-insensitively
        [os.fspath(p) for p in paths], include_paths=True,
        override_num_blocks=None if parallelism < 0 else parallelism,
        file_extensions=sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


def predict_at_scale(
    run_dir: str | os.PathLike[str], inputs: str | Sequence[str], out: str | os.PathLike[str], *,
    tta: int = 1, batch_size: int = 64, concurrency: int = 1, num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> BatchResult:
    """Predict every image under ``inputs`` with the run in ``run_dir``, on the current Ray cluster.

    Connects to ``RAY_ADDRESS`` if set, else starts a local Ray (``ray.init()``); the
    caller may call ``ray.init(...)`` first to choose.

    Args:
        run_dir: The run to apply.
        inputs: Folders, files or bucket URIs.
        out: ``*.csv``: one CSV, sorted by path, written atomically by the driver.
            Anything else: a folder or bucket URI that the workers fill with Parquet files.
        tta: Dihedral views averaged per image.
        batch_size: Images per model call.
        concurrency: Model actors (one Predictor each); on a GPU cluster, the GPU count.
        num_cpus: CPUs reserved per actor.
        num_gpus: GPUs per actor (1 on GPU nodes).

    Returns:
        A :class:`BatchResult`.

    Raises:
        ImportError: if Ray Data is not installed (``pip install 'skinlesion[scale]'``).
        RunError: if ``run_dir`` is not a finished run.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc

    run = require_run(run_dir)
    if not ray.is_initialized():
        ray.init(configure_logging=False, log_to_driver=False)
    results = image_dataset(inputs).map_batches(
        PredictorActor, fn_constructor_kwargs={"run_dir": os.fspath(run.resolve()), "tta": tta},
        batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus,
        batch_format="numpy")
    target = os.fspath(out)
    if not target.lower().endswith(".csv"):
        results.write_parquet(target)  # each worker writes its own files
        count = _count_parquet(target)
        return BatchResult(output=target, images=count[0], failed=count[1], malignant=None)
    frame = results.to_pandas()
    frame = frame.sort_values("path", kind="stable").reset_index(drop=True)[list(COLUMNS)]

    with atomic_path(Path(target)) as tmp:
        escape_frame(frame).to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")
    failed = int((frame["error"] != "").sum())
    log.info("predicted %d images (%d unreadable) → %s", len(frame), failed, target)
    return BatchResult(output=target, images=len(frame), failed=failed,
                       malignant=int((frame["decision"] == "malignant").sum()))


def _count_parquet(target: str) -> tuple[int, int]:
    import ray.data

    written = ray.data.read_parquet(target, columns=["error"])
    counts = written.map_batches(
        lambda b: {"rows": [len(b)], "failed": [int((b["error"] != "").sum())]},
        batch_format="pandas")
    total: Any = counts.sum("rows")
    failed: Any = counts.sum("failed")
    return int(total or 0), int(failed or 0)
