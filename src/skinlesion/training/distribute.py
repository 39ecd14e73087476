"""tf.distribute strategies: one GPU, many GPUs (Mirrored), many machines (MultiWorker).

The trainer builds and compiles its model inside ``strategy.scope()``. The
global batch is the per-replica batch × the number of replicas, and learning
rates scale linearly with it (Goyal et al., 2017) unless ``scale_lr`` is off.

In a multi-worker job (``TF_CONFIG`` names several workers) every worker runs
the same program and takes part in every step, but only the chief writes the
run directory. The other workers write their checkpoints, logs and model to a
throw-away temporary folder, as TensorFlow's multi-worker guide prescribes:
saving must run on every worker (it may read synchronised variables), only the
copy the chief writes is kept. On ``--resume`` a worker first copies the chief's
training state (``checkpoints/``: BackupAndRestore folders, histories, best
weights) into its own folder, so all workers restore the same epoch and take the
same best-checkpoint decisions. The run directory must therefore be on storage
every worker can read (NFS, a GCS FUSE mount); see docs/SCALING.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from skinlesion.data.pipeline import training_stream
from skinlesion.data.tfrecords import tfrecord_dataset
from skinlesion.training.config import STRATEGIES

log = logging.getLogger(__name__)


def get_strategy(name: str = "auto") -> Any:
    """Return the ``tf.distribute.Strategy`` named by ``name``.

    Call it before TensorFlow runs anything else: MultiWorkerMirroredStrategy
    configures collective ops, which is only possible at program start.

    Args:
        name: ``auto`` (MultiWorker if ``TF_CONFIG`` names several workers, Mirrored
            with more than one GPU, else the default), ``none``, ``mirrored`` (every
            local GPU; without GPUs every logical CPU device, which is how tests run it)
            or ``multiworker`` (configured by ``TF_CONFIG``).

    Raises:
        ValueError: for an unknown name or a malformed ``TF_CONFIG``.
        RuntimeError: if MultiWorkerMirroredStrategy is asked for after TensorFlow started.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
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
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        log.info("MirroredStrategy over %s", devices)
        return tf.distribute.MirroredStrategy(devices=devices)
    if _tf_config_workers() < 1:
        log.warning("--strategy multiworker without TF_CONFIG: training as a single worker")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        raise RuntimeError(f"cannot start MultiWorkerMirroredStrategy ({exc}); it must be "
                           "created before TensorFlow runs any operation") from exc
    patch_keras_for_multi_worker()
    return strategy


def _tf_config() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return data


def _tf_config_workers() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def task() -> tuple[str, int]:
    """This process's ``(type, index)`` from ``TF_CONFIG`` (``("worker", 0)`` without one)."""
    spec = _tf_config().get("task", {})
    return str(spec.get("type", "worker")), int(spec.get("index", 0))


def is_chief() -> bool:
    """True for the process that writes the run directory (always true outside multi-worker)."""
    if not _tf_config().get("task"):
        return True
    kind, index = task()
    has_chief = bool(_tf_config().get("cluster", {}).get("chief"))
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def writable_dir(run_dir: Path) -> Path:
    """``run_dir`` on the chief, a new throw-away temporary folder on the other workers."""
    if is_chief():
        return run_dir
    kind, index = task()
    return Path(tempfile.mkdtemp(prefix=f"skinlesion-{kind}{index}-"))


def worker_run_dir(shared_run: Path, *, resume: bool, checkpoints: str = "checkpoints") -> Path:
    """A non-chief worker's private run folder, seeded from the chief's state on resume.

    Args:
        shared_run: The run directory the chief writes (readable by every worker).
        resume: Copy the chief's ``checkpoints`` folder first, so this worker restores
            the same epoch and makes the same best-checkpoint choices.
        checkpoints: Name of the checkpoints folder inside a run directory.

    Returns:
        The temporary folder this worker writes instead of ``shared_run``.
    """
    private = writable_dir(shared_run)
    src, dst = shared_run / checkpoints, private / checkpoints
    dst.mkdir(parents=True, exist_ok=True)
    if resume and src.is_dir():
        copied = _copy_state(src, dst)
        log.info("worker %s: copied %d state files from %s", task(), copied, src)
    return private


def _copy_state(src: Path, dst: Path) -> int:
    """Copy small training-state files (not image caches); tolerate files the chief removes."""
    count = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0].startswith("images-") or rel.parts[0] == "features" or not path.is_file():
            continue
        if path.name.startswith("."):  # another writer's temporary file
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, target)
        except FileNotFoundError:  # the chief removed a stale checkpoint meanwhile
            continue
        count += 1
    return count


def release_worker_dir(private: Path, shared_run: Path) -> Path:
    """Delete a non-chief worker's temporary folder; return the shared run directory."""
    if private.resolve() != shared_run.resolve():
        shutil.rmtree(private, ignore_errors=True)
    return shared_run


def replicas(strategy: Any) -> int:
    """Number of replicas that share one global batch."""
    return int(getattr(strategy, "num_replicas_in_sync", 1))


def num_workers(strategy: Any) -> int:
    """Worker processes taking part in ``strategy`` (1 unless MultiWorkerMirroredStrategy)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


# === FILE sharding of TFRecord shards ===============================================

def file_sharded_stream(
    strategy: Any, files: list[str], counts: list[int], *, size: int, global_batch: int,
    steps_per_epoch: int, cache: str | None, class_weight: dict[int, float] | None,
    **stream_kwargs: Any,
) -> Any:
    """Each worker streams only its own TFRecord shards (FILE sharding), as a distributed dataset.

    Worker ``w`` of ``W`` reads shards ``w, w + W, …`` — with DATA sharding every worker
    would read and decode every shard and drop most of it. Each worker builds its own
    ``training_stream`` (same per-epoch seeds, so still deterministic and resumable) with
    exactly ``steps_per_epoch`` batches per local replica, because the workers' shares
    differ by a few images while every worker must take the same number of steps.
    A global batch is then the union of the workers' batches, so the run is no longer
    step-for-step identical to a single process (it is with DATA sharding).

    Class weights become per-example weights inside the stream: Keras cannot map
    ``class_weight`` over an already distributed dataset.

    Args:
        strategy: A MultiWorkerMirroredStrategy.
        files: Shard paths of the training split (at least one per worker).
        counts: Images per shard (from the index).
        size: Model input size.
        global_batch: Global batch size.
        steps_per_epoch: Global steps per epoch (``ceil(N / global_batch)``).
        cache: Image cache of each worker's share (see ``tfrecord_dataset``).
        class_weight: ``{0: w0, 1: w1}`` or None.
        **stream_kwargs: ``seed``, ``start_epoch``, ``epochs``, ``augment``,
            ``shuffle_buffer``, ``balanced`` for ``training_stream``.

    Returns:
        A ``tf.distribute`` distributed dataset for ``Model.fit``.
    """
    import tensorflow as tf


    def make(context: Any) -> Any:
        mine = list(range(context.input_pipeline_id, len(files), context.num_input_pipelines))
        log.info("input pipeline %d/%d reads shards %s", context.input_pipeline_id,
                 context.num_input_pipelines, mine)
        base = tfrecord_dataset([files[i] for i in mine], size, cache=cache)
        local_replicas = max(1, context.num_replicas_in_sync // context.num_input_pipelines)
        ds = training_stream(base, sum(counts[i] for i in mine),
                             batch_size=context.get_per_replica_batch_size(global_batch),
                             steps_per_epoch=steps_per_epoch * local_replicas, **stream_kwargs)
        if class_weight:
            weights = tf.constant([class_weight[0], class_weight[1]], tf.float32)
            ds = ds.map(lambda x, y: (x, y, tf.gather(weights, tf.cast(y > 0.5, tf.int32))))
        return ds

    return strategy.distribute_datasets_from_function(make)


# === Keras 3 + MultiWorkerMirroredStrategy ========================================
# Keras 3's TensorFlow trainer breaks under MultiWorkerMirroredStrategy in two places
# (keras-team/keras#20585, tensorflow/tensorflow#72388, still open for Keras 3.15):
#   1. ``_maybe_symbolic_build`` calls ``strategy.reduce("MEAN", batch)`` on a whole
#      (x, y) structure, which the collective strategy cannot convert: "Attempt to
#      convert a value (PerReplica ...) with an unsupported type".
#   2. ``reduce_per_replica`` reduces the step's scalar logs with ``axis=0``:
#      "Invalid reduction dimension 0 for input with 0 dimensions".
# Both wrappers below act only under a multi-worker strategy and otherwise call the
# original. tests/test_distribute.py trains two real workers and fails if Keras
# changes in a way that breaks them.

_PATCHED = False


def patch_keras_for_multi_worker() -> None:
    """Make ``Model.fit``/``evaluate``/``predict`` work under MultiWorkerMirroredStrategy."""
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf

    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tf_trainer

        original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
        original_reduce = tf_trainer.reduce_per_replica
        multi_worker = tf_trainer._collective_all_reduce_multi_worker
    except (ImportError, AttributeError) as exc:  # a Keras that moved these: try unpatched
        log.warning("cannot patch Keras for MultiWorkerMirroredStrategy (%s)", exc)
        return

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or iterator is None or not multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        batch = None
        for _, _, it in iterator:
            batch = next(it)
            break

        def local(value: Any) -> Any:  # shapes and dtypes are all the build needs
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        with strategy.scope():
            self._symbolic_build(data_batch=tree.map_structure(local, batch))

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean") or not multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def one(value: Any) -> Any:
            inner = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
            if getattr(getattr(inner, "shape", None), "rank", None) == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original_reduce(value, strategy, reduction)

        return tree.map_structure(one, values)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
