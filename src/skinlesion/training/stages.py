"""The training stages: head on cached features, and fitting on the image stream.

``head_on_features`` trains the head on frozen-backbone features computed once
(tutorial 1's frozen model, minus the wasted recomputation). ``fit_images``
trains on augmented images — either the frozen backbone recomputed every epoch
(tutorial 1's way, kept for comparison) or the top ``unfreeze`` layer groups of
the backbone fine-tuned with BatchNorm kept in inference mode. Image stages are
resumable: Keras ``BackupAndRestore`` restores weights, optimizer state and the
epoch, and the data stream is rebuilt from that epoch with the same seeds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.data.metadata import MetadataEncoder, parse_fields
from skinlesion.data.pipeline import (
    DECODER_ID,
    eval_batches,
    feature_batches,
    image_dataset,
    training_stream,
)
from skinlesion.data.targets import DiagnosisClasses
from skinlesion.data.tfrecords import read_index, shard_files, split_dataset
from skinlesion.models.registry import BackboneSpec, get_backbone
from skinlesion.runspec import CHECKPOINTS_DIR, LOGS_DIR
from skinlesion.training.config import TrainConfig
from skinlesion.training.distribute import file_sharded_stream, is_chief, num_workers, replicas
from skinlesion.training.errors import TrainingDivergedError
from skinlesion.training.features import cache_key, extract_features
from skinlesion.training.objectives import (
    class_weights,
    make_loss,
    make_metrics,
    make_optimizer,
    make_schedule,
    monitor_mode,
    steps,
)
from skinlesion.utils.atomic import atomic_path
from skinlesion.utils.progress import Progress, ProgressEvent
from skinlesion.utils.progress import say as report_steps

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What every stage needs: config, data, strategy and the run's folders."""

    cfg: TrainConfig
    run_dir: Path
    splits: Any
    strategy: Any
    bspec: BackboneSpec
    size: int
    preprocessing: str
    global_batch: int
    lr_scale: float
    verbose: int
    say: Callable[[str], None]
    progress: Progress | None = None
    base_train: Any = None
    base_val: Any = None
    worker_shards: tuple[list[str], list[int]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    classes: DiagnosisClasses | None = None
    encoder: MetadataEncoder | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def create(cls, cfg: TrainConfig, run_dir: Path, splits: Any, strategy: Any, *,
               verbose: int, progress: Progress | None) -> StageContext:

        bspec = get_backbone(cfg.model.backbone)
        size = int(cfg.model.input_size or bspec.input_size)
        n_rep = replicas(strategy)
        ctx = cls(cfg=cfg, run_dir=run_dir, splits=splits, strategy=strategy, bspec=bspec,
                  size=size, preprocessing=cfg.model.preprocessing or bspec.preprocessing,
                  global_batch=cfg.stages.batch_size * n_rep,
                  lr_scale=float(n_rep) if cfg.distribute.scale_lr else 1.0, verbose=verbose,
                  say=report_steps(progress, "train"), progress=progress)
        if cfg.data.tfrecords:  # stream the training split from TFRecord shards (docs/SCALING.md)
            ctx.base_train = split_dataset(cfg.data.data_dir, "train",
                                           splits.train["image_id"].tolist(),
                                           size, cache=ctx.image_cache("train"))
            ctx.worker_shards = _worker_shards(cfg, strategy)
        else:
            ctx.base_train = image_dataset(splits.train_paths, splits.y_train, size,
                                           cache=ctx.image_cache("train"))
        ctx.base_val = image_dataset(splits.val_paths, splits.y_val, size,
                                     cache=ctx.image_cache("val"))
        ctx.set_targets()
        return ctx

    def set_targets(self) -> None:
        """Diagnosis classes and metadata encoder fitted on the training split (if asked)."""
        cfg, sp = self.cfg, self.splits
        frames = {"train": sp.train, "val": sp.val}
        if cfg.model.target == "diagnosis":
            self.classes = DiagnosisClasses.from_frame(sp.train, cfg.model.min_class_images)
            self.targets = {k: self.classes.index(f["diagnosis"], f["label"])
                            for k, f in frames.items()}
        else:
            self.targets = {"train": sp.y_train, "val": sp.y_val}
        fields = parse_fields(cfg.metadata.fields)
        if fields:
            self.encoder = MetadataEncoder.fit(sp.train, fields, cfg.metadata.missing)
            self.meta = {k: self.encoder.encode(f) for k, f in frames.items()}
        if (self.classes or self.encoder) and self.worker_shards:
            raise ValueError("target diagnosis and metadata are not supported with multi-worker "
                             "FILE sharding of TFRecords yet; train without --tfrecords")

    @property
    def malignant(self) -> list[int] | None:
        """The 0/1 malignant flag per diagnosis class, or None for a binary head."""
        return list(self.classes.malignant) if self.classes else None

    @property
    def n_classes(self) -> int:
        return self.classes.n if self.classes else 2

    @property
    def extended(self) -> bool:
        """The model needs more than ``(image, label)``: metadata input or diagnosis target."""
        return self.classes is not None or self.encoder is not None

    def wrap(self, split: str) -> Any:
        """``(image, label, index, epoch) -> (inputs, target)`` for ``split`` (None if plain)."""
        if not self.extended:
            return None
        import tensorflow as tf

        from skinlesion.models.classifier import INPUT_NAME, METADATA_INPUT

        target = tf.constant(self.targets[split])
        meta = tf.constant(self.meta[split]) if self.encoder is not None else None
        rate = self.cfg.metadata.dropout if split == "train" else 0.0
        fields = tf.constant(self.encoder.field_matrix()) if self.encoder else None
        blank = tf.constant(self.encoder.blank()) if self.encoder else None
        seed = self.cfg.seed

        def fn(x: Any, y: Any, i: Any, epoch: Any) -> Any:
            i32 = tf.cast(i % len(self.targets[split]), tf.int32)
            t = tf.gather(target, i32)
            if meta is None:
                return x, t
            m = tf.gather(meta, i32)
            if rate > 0 and epoch is not None:  # metadata dropout, reproducible per epoch
                assert fields is not None and blank is not None  # set with meta (an encoder)
                u = tf.random.stateless_uniform(
                    [fields.shape[0]], seed=tf.stack([tf.cast(seed, tf.int64) * 31 + epoch,
                                                      tf.cast(i, tf.int64)]))
                mask = tf.linalg.matvec(fields, tf.cast(u < rate, tf.float32), transpose_a=True)
                m = m * (1.0 - mask) + blank * mask
            return {INPUT_NAME: x, METADATA_INPUT: m}, t

        return fn

    def image_cache(self, split: str) -> str | None:
        """Where decoded, resized images of ``split`` are cached (see ``DataConfig.cache``)."""
        if self.cfg.data.cache == "none":
            return None
        if self.cfg.data.cache == "memory":
            return "memory"
        return str(self.run_dir / CHECKPOINTS_DIR / f"images-{split}")

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / CHECKPOINTS_DIR

    @property
    def run_head_on_features(self) -> bool:
        st = self.cfg.stages
        if st.mode == "frozen":
            return st.cache_features and st.head_epochs > 0
        return st.head_epochs > 0

    def build_model(self) -> Any:
        from skinlesion.models.classifier import build_classifier

        m = self.cfg.model
        return build_classifier(self.bspec.name, self.size, weights=m.weights_arg,
                                dropout=m.dropout, preprocessing=self.preprocessing,
                                malignant=self.malignant,
                                metadata_dim=self.encoder.dim if self.encoder else 0,
                                color_constancy=m.color_constancy)

    def val_batches(self) -> Any:

        return eval_batches(self.base_val, self.global_batch, wrap=self.wrap("val"))

    def predict_val(self, model: Any) -> np.ndarray:
        out = np.asarray(model.predict(self.val_batches(), verbose=0), dtype=np.float64)
        prob = out.reshape(len(out), -1)[:, 0]
        if not np.all(np.isfinite(prob)):
            raise _diverged("validation predictions")
        return np.clip(prob, 0.0, 1.0)


# === Stage 1: the head on cached frozen features ================================

def head_on_features(ctx: StageContext, model: Any) -> pd.DataFrame:
    """Train the head on cached backbone features, then copy it into ``model``.

    Resumable at stage level: a finished head is stored in the checkpoints folder
    and reloaded instead of retrained.
    """
    import keras

    from skinlesion.models.classifier import build_head, copy_head_weights

    cfg, st, done = ctx.cfg, ctx.cfg.stages, ctx.checkpoints / "head.weights.h5"
    hist_path = ctx.checkpoints / "history_head.csv"
    if done.is_file() and hist_path.is_file():
        ctx.say("head stage already finished: reloading it")
        model.load_weights(done)
        frame = pd.read_csv(hist_path)
        frame.attrs["stage"] = "head"
        return frame

    x_train, x_val = _feature_pass(ctx, model)
    views = st.feature_views
    y_train = np.tile(ctx.targets["train"], views)
    y_val = ctx.targets["val"]
    x_train = x_train.reshape(-1, x_train.shape[-1])
    x_fit_in: Any = x_train
    x_val_in: Any = x_val
    if ctx.encoder is not None:  # each view of an image gets its own metadata dropout draw
        meta_train = ctx.encoder.hide(np.tile(ctx.meta["train"], (views, 1)),
                                      cfg.metadata.dropout, np.random.default_rng(cfg.seed))
        x_fit_in, x_val_in = (x_train, meta_train), (x_val, ctx.meta["val"])
    with ctx.strategy.scope():
        head = build_head(x_train.shape[-1], cfg.model.dropout, malignant=ctx.malignant,
                          metadata_dim=ctx.encoder.dim if ctx.encoder else 0)
        head.compile(optimizer=make_optimizer(cfg, st.head_lr * ctx.lr_scale),
                     loss=make_loss(cfg), metrics=make_metrics(ctx.malignant))
    # TensorBoard in this stage too (docs/TRAINING.md promises logs/ for every mode).
    callbacks: list[Any] = [keras.callbacks.TerminateOnNaN(),
                            keras.callbacks.CSVLogger(str(hist_path) + ".part"),
                            keras.callbacks.TensorBoard(str(ctx.run_dir / LOGS_DIR / "head"),
                                                        write_graph=False)]
    if st.patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=st.monitor, mode=monitor_mode(st.monitor), patience=st.patience,
            restore_best_weights=True))
    imbalance = cfg.objective.imbalance
    cw = class_weights(ctx.targets["train"], ctx.n_classes) if imbalance == "class_weight" else None
    x_fit, y_fit = x_fit_in, y_train
    if imbalance == "balanced_sampling":
        x_fit, y_fit = _oversample(x_train, y_train, cfg.seed)
    t = time.perf_counter()
    # tf.data rather than numpy, sharded explicitly: under MultiWorkerMirroredStrategy every
    # worker holds the same features (computed from the same weights) and shuffles them with
    # the same seed, and each takes its part of every global batch (see feature_batches).
    batch = max(st.head_batch_size, ctx.global_batch)
    ctx.say(f"head: training on {len(x_fit)} cached feature vectors, up to {st.head_epochs} "
            f"epochs" + (f" (early stopping after {st.patience} without a better "
                         f"{st.monitor})" if st.patience else ""))
    if not ctx.verbose:  # Keras prints its own epoch lines when verbose
        callbacks.append(epoch_reporter(ctx.say, "head", st.head_epochs, st.monitor))
    hist = head.fit(feature_batches(x_fit, y_fit, batch, seed=cfg.seed, epochs=st.head_epochs),
                    steps_per_epoch=steps(len(y_fit), batch),
                    validation_data=feature_batches(x_val_in, y_val, batch),
                    epochs=st.head_epochs, class_weight=cw, callbacks=callbacks,
                    verbose=ctx.verbose, shuffle=False)
    ctx.timings["head_fit_s"] = time.perf_counter() - t
    ctx.timings["head_epoch_s"] = ctx.timings["head_fit_s"] / max(1, len(hist.epoch))
    _check_finite(hist.history, "head")
    copy_head_weights(head, model)
    with atomic_path(done, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    frame = pd.DataFrame(hist.history).assign(epoch=hist.epoch)
    with atomic_path(hist_path) as tmp:
        frame.to_csv(tmp, index=False)
    Path(str(hist_path) + ".part").unlink(missing_ok=True)
    frame.attrs["stage"] = "head"
    return frame


def _feature_pass(ctx: StageContext, model: Any) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features of the training images (``(views, n, d)``) and of the validation
    images (``(n, d)``), read from the feature cache or computed once into it."""
    from skinlesion.models.classifier import feature_extractor

    cfg = ctx.cfg
    key_parts = {"backbone": ctx.bspec.name, "size": ctx.size, "weights": str(cfg.model.weights),
                 "preprocessing": ctx.preprocessing, "decoder": DECODER_ID}
    if cfg.model.color_constancy:  # keys of runs without it stay as they were
        key_parts["color_constancy"] = "shades_of_gray_p6"
    # Shared beside the data on the chief; another worker computes its own copy privately.
    cache_dir = _feature_cache_dir(cfg) if is_chief() else ctx.checkpoints / "features"
    t = time.perf_counter()
    views = cfg.stages.feature_views
    ctx.say(f"feature pass: {len(ctx.splits.train)} train images × {views} views, "
            f"{len(ctx.splits.val)} val images (cached in {cache_dir})")
    rate = _RateReporter(ctx.say, views, ctx.progress)
    features = _pooled_features(ctx, feature_extractor(model), cache_dir, key_parts, views,
                                batch_size=_feature_batch(ctx.global_batch), rate=rate)
    ctx.timings["feature_pass_s"] = time.perf_counter() - t
    return features


def _pooled_features(ctx: StageContext, extractor: Any, cache_dir: Path,
                     key_parts: dict[str, Any], views: int, *, batch_size: int,
                     rate: _RateReporter) -> tuple[np.ndarray, np.ndarray]:
    """Features of the training (all views) and validation (identity view) images.

    Computed once for the *pool* of training and validation images, stored in the order
    of their sorted paths and keyed by that set: every split of the same pool — the
    stored split, or each cross-validation fold (``--fold``) — reuses one feature pass.
    """
    import tensorflow as tf


    train_paths, val_paths = ctx.splits.train_paths, ctx.splits.val_paths
    pool = sorted(set(train_paths) | set(val_paths))
    rank = {p: i for i, p in enumerate(pool)}
    r_train = np.asarray([rank[p] for p in train_paths], dtype=np.int64)
    r_val = np.asarray([rank[p] for p in val_paths], dtype=np.int64)
    t_train, t_val = tf.constant(r_train), tf.constant(r_val)
    combined = ctx.base_train.map(lambda x, y, i: (x, y, tf.gather(t_train, i))).concatenate(
        ctx.base_val.map(lambda x, y, i: (x, y, tf.gather(t_val, i))))
    if len(pool) != len(train_paths) + len(val_paths):  # an image in both: feed it once
        seen = np.zeros(len(pool), dtype=bool)
        seen[r_train] = True
        keep = tf.constant(~seen)
        combined = ctx.base_train.map(lambda x, y, i: (x, y, tf.gather(t_train, i))).concatenate(
            ctx.base_val.map(lambda x, y, i: (x, y, tf.gather(t_val, i)))
            .filter(lambda x, y, i: tf.gather(keep, i)))
    feats = extract_features(
        extractor, combined, len(pool), views=views, cache_dir=cache_dir,
        key=cache_key({**key_parts, "pool": pool}), batch_size=batch_size,
        progress=rate)
    return feats[:, r_train], feats[0, r_val]


CPU_FEATURE_BATCH = 16
"""Forward-pass batch of the feature pass on a CPU-only machine."""


def _feature_batch(global_batch: int) -> int:
    # On CPUs a batch of 16 is as fast as 32 and the demo's peak memory drops by ~160 MB
    # (activations of one forward pass); accelerators keep the training batch.
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return global_batch
    return min(global_batch, CPU_FEATURE_BATCH)


class _RateReporter:
    """Feature-pass progress: forwards the count events, and says images per second at most
    once every few seconds and once per view."""

    def __init__(self, say: Callable[[str], None], views: int, progress: Progress | None,
                 every_s: float = 5.0) -> None:
        self.say, self.views, self.progress, self.every_s = say, views, progress, every_s
        self.last = self.view_start = time.perf_counter()
        self.view, self.computed = 0, 0
        self.first_done: int | None = None  # the count a view started at (n: from the cache)

    def __call__(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)
        if event.done is None:
            return
        now = time.perf_counter()
        if self.first_done is None:  # a new view starts (a cached one starts complete)
            self.view, self.first_done, self.view_start = self.view + 1, event.done, now
        self.computed = event.done - (self.first_done or 0)
        n = event.total or 0
        if event.finished:
            self._view_done(now)
        elif now - self.last >= self.every_s and event.done < n:
            self.last = now
            speed = self.computed / max(now - self.view_start, 1e-9)
            self.say(f"  view {self.view}/{self.views}: {event.done}/{n} images, "
                     f"{speed:.0f} images/s")

    def _view_done(self, now: float) -> None:
        took = now - self.view_start
        if self.computed:
            self.say(f"  view {self.view}/{self.views} done: {self.computed} images in "
                     f"{took:.1f} s ({self.computed / max(took, 1e-9):.0f} images/s)")
        else:
            self.say(f"  view {self.view}/{self.views}: read from the cache")
        self.last, self.first_done, self.computed = now, None, 0


def _make_epoch_reporter() -> Any:
    import keras

    class _EpochReporter(keras.callbacks.Callback):
        """One line per epoch at most every few seconds (plus the first and last)."""

        def __init__(self, say: Callable[[str], None], stage: str, epochs: int, monitor: str,
                     every_s: float = 3.0) -> None:
            super().__init__()
            self.say, self.stage, self.epochs, self.monitor = say, stage, epochs, monitor
            self.every_s = every_s
            self.last = 0.0
            self.pending: str | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            parts = [f"{k} {float(logs[k]):.3f}" for k in ("loss", "val_loss", self.monitor)
                     if k in logs]
            line = f"{self.stage} epoch {epoch + 1}/{self.epochs}: {', '.join(dict.fromkeys(parts))}"
            now = time.perf_counter()
            if epoch == 0 or now - self.last >= self.every_s:
                self.say(line)
                self.last, self.pending = now, None
            else:
                self.pending = line

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self.pending:
                self.say(self.pending)

    return _EpochReporter


def epoch_reporter(say: Callable[[str], None], stage: str, epochs: int,
                   monitor: str) -> Any:
    """A Keras callback reporting epochs through ``say`` (Keras imported lazily)."""
    return _make_epoch_reporter()(say, stage, epochs, monitor)


def _feature_cache_dir(cfg: TrainConfig) -> Path:
    # Beside the prepared data, so every run on the same data and backbone shares it.
    return Path(cfg.data.data_dir) / "cache" / "features"


def _oversample(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y > 0.5), np.flatnonzero(y <= 0.5)
    small, large = (pos, neg) if len(pos) < len(neg) else (neg, pos)
    extra = rng.choice(small, size=len(large) - len(small), replace=True)
    idx = rng.permutation(np.concatenate([large, small, extra]))
    return x[idx], y[idx]


# === Stage 2: training on the image stream =======================================

def set_trainable(model: Any, bspec: BackboneSpec, unfreeze: int) -> int:
    """Freeze the backbone except its top ``unfreeze`` layer groups (-1 = all).

    The groups are the registry's (``BackboneSpec.top_group_layers``).

    BatchNormalization layers stay frozen: the backbone is called in inference mode,
    and their ImageNet statistics are worth more than what small batches would give.

    Returns:
        The number of trainable backbone layers.
    """
    import keras

    from skinlesion.models.classifier import BACKBONE_NAME

    trunk = model.get_layer(BACKBONE_NAME)
    if unfreeze == 0:
        trunk.trainable = False
        return 0
    trunk.trainable = True
    groups = len(bspec.layer_groups) if unfreeze < 0 else unfreeze
    chosen = {id(layer) for layer in bspec.top_group_layers(trunk, groups)}
    count = 0
    for layer in trunk.layers:
        layer.trainable = (id(layer) in chosen
                           and not isinstance(layer, keras.layers.BatchNormalization))
        count += int(layer.trainable and bool(layer.weights))
    return count


def fit_images(ctx: StageContext, model: Any, *, stage: str, unfreeze: int, lr: float,
               epochs: int) -> pd.DataFrame:
    """Fit ``model`` on the augmented image stream; resumable; returns the stage history."""
    import keras


    cfg, st = ctx.cfg, ctx.cfg.stages
    n_train = len(ctx.splits.train)
    spe = steps(n_train, ctx.global_batch)
    backup = ctx.checkpoints / f"backup_{stage}"
    hist_path = ctx.checkpoints / f"history_{stage}.csv"
    start = _restored_epoch(backup)
    best_so_far = _truncate_history(hist_path, start, st.monitor)
    if start:
        ctx.say(f"{stage}: resuming at epoch {start + 1}/{epochs}")
    trainable = set_trainable(model, ctx.bspec, unfreeze)
    ctx.say(f"{stage}: {epochs} epochs, {trainable} trainable backbone layers, lr {lr * ctx.lr_scale:g}")
    from skinlesion.models.classifier import training_view

    full_model, model = model, training_view(model)  # shares layers: the fit updates both
    with ctx.strategy.scope():
        schedule = make_schedule(cfg, lr * ctx.lr_scale, spe, epochs)
        model.compile(optimizer=make_optimizer(cfg, schedule), loss=make_loss(cfg),
                      metrics=make_metrics(ctx.malignant), jit_compile=cfg.distribute.jit)
    imbalance = cfg.objective.imbalance
    cw = class_weights(ctx.targets["train"], ctx.n_classes) if imbalance == "class_weight" else None
    stream_kw: dict[str, Any] = {"seed": cfg.seed, "start_epoch": start, "epochs": epochs,
                                 "augment": cfg.augment, "shuffle_buffer": cfg.data.shuffle_buffer,
                                 "balanced": imbalance == "balanced_sampling"}
    if ctx.worker_shards:  # multi-worker on TFRecords: each worker reads its own shards
        ctx.say(f"{stage}: FILE sharding, each worker reads its own share of the "
                f"{len(ctx.worker_shards[0])} TFRecord shards")
        stream = file_sharded_stream(
            ctx.strategy, *ctx.worker_shards, size=ctx.size, global_batch=ctx.global_batch,
            steps_per_epoch=spe, cache=ctx.image_cache("train"), class_weight=cw, **stream_kw)
        cw = None  # now per-example weights inside the stream
    else:
        stream = training_stream(ctx.base_train, n_train, batch_size=ctx.global_batch,
                                 wrap=ctx.wrap("train"), **stream_kw)
    best_pattern = f"best_{stage}-epoch{{epoch:03d}}.weights.h5"
    for stale in ctx.checkpoints.glob(f"best_{stage}-epoch*.weights.h5"):
        if _epoch_of(stale) > start:  # written by epochs the resumed run will redo
            stale.unlink()
    mode = monitor_mode(st.monitor)
    # Order matters: the backup is written last, so an epoch it covers has its
    # checkpoint and history row complete.
    callbacks: list[Any] = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(ctx.checkpoints / best_pattern), monitor=st.monitor, mode=mode,
            save_best_only=True, save_weights_only=True, initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(hist_path), append=True),
        keras.callbacks.TensorBoard(str(ctx.run_dir / LOGS_DIR / stage)),
    ]
    if st.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=st.monitor, mode=mode,
                                                       patience=st.patience))
    if cfg.optim.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=st.monitor, mode=mode,
                                                           factor=0.3, patience=2))
    if not ctx.verbose:  # Keras prints its own epoch lines when verbose
        callbacks.append(epoch_reporter(ctx.say, stage, epochs, st.monitor))
    callbacks.append(keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True))
    if start < epochs:
        model.fit(stream, epochs=epochs, initial_epoch=start, steps_per_epoch=spe,
                  validation_data=ctx.val_batches(), class_weight=cw, callbacks=callbacks,
                  verbose=ctx.verbose, shuffle=False)
    history = pd.read_csv(hist_path) if hist_path.is_file() else pd.DataFrame()
    _check_finite(history.to_dict("list"), stage)
    best = sorted(ctx.checkpoints.glob(f"best_{stage}-epoch*.weights.h5"), key=_epoch_of)
    if best:
        model.load_weights(best[-1])
        for old in best[:-1]:
            old.unlink()
    del full_model  # the caller's model holds the same, now best, weights
    history.attrs["stage"] = stage
    return history


def _worker_shards(cfg: TrainConfig, strategy: Any) -> tuple[list[str], list[int]] | None:
    """Shards and image counts for FILE sharding, when it applies (see docs/SCALING.md).

    It applies in a multi-worker job reading TFRecords with at least one shard per worker
    and no ``limit`` (a subset's per-shard counts are unknown without reading the shards).
    """

    workers = num_workers(strategy)
    files = shard_files(cfg.data.data_dir, "train")
    if workers < 2 or cfg.data.limit or len(files) < workers:
        if workers > 1:
            log.info("DATA sharding: %d shard(s) for %d workers%s", len(files), workers,
                     " (limit set)" if cfg.data.limit else "")
        return None
    counts = [int(s["images"]) for s in read_index(cfg.data.data_dir)["splits"]["train"]["shards"]]
    return files, counts


def _restored_epoch(backup: Path) -> int:
    meta = backup / "training_metadata.json"
    if not meta.is_file():
        return 0
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (ValueError, KeyError, json.JSONDecodeError):
        return 0


def _truncate_history(path: Path, start: int, monitor: str) -> float | None:
    """Drop history rows of epochs ≥ start (they will be redone); return the best monitor so far."""
    if not path.is_file():
        return None
    if start == 0:
        path.unlink()
        return None
    hist = pd.read_csv(path)
    hist = hist[hist["epoch"] < start].drop_duplicates("epoch", keep="last")
    with atomic_path(path) as tmp:
        hist.to_csv(tmp, index=False)
    if monitor not in hist or hist.empty:
        return None
    values = hist[monitor].to_numpy(float)
    return float(np.nanmin(values) if monitor_mode(monitor) == "min" else np.nanmax(values))


def _epoch_of(path: Path) -> int:
    return int(path.name.split("epoch")[1].split(".")[0])


# === History and checks ===========================================================

def combine_histories(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One table over all stages with ``stage`` and a global ``epoch`` column."""
    parts = []
    offset = 0
    for frame, name in zip(frames, _stage_names(frames), strict=True):
        if frame is None or frame.empty:
            continue
        f = frame.copy()
        f.insert(0, "stage", name)
        f["epoch"] = np.arange(len(f)) + offset
        offset += len(f)
        parts.append(f)
    if not parts:
        return pd.DataFrame(columns=["stage", "epoch"])
    out = pd.concat(parts, ignore_index=True)
    first = ["stage", "epoch"]
    return out[first + [c for c in out.columns if c not in first]]


def _stage_names(frames: list[pd.DataFrame]) -> list[str]:
    return [str(getattr(f, "attrs", {}).get("stage", f"stage{i + 1}")) for i, f in enumerate(frames)]


def best_of(history: pd.DataFrame, monitor: str) -> tuple[int, float | None]:
    """Global epoch and value of the best ``monitor`` in the combined history."""
    if history.empty or monitor not in history:
        return -1, None
    values = history[monitor].to_numpy(float)
    if not np.isfinite(values).any():
        return -1, None
    idx = int(np.nanargmin(values) if monitor_mode(monitor) == "min" else np.nanargmax(values))
    return int(history["epoch"].iloc[idx]), float(values[idx])


def _check_finite(history: dict[str, Any], stage: str) -> None:
    loss = history.get("loss", [])
    if any(not math.isfinite(float(v)) for v in loss):
        raise _diverged(f"the {stage} stage")


def _diverged(where: str) -> Exception:

    return TrainingDivergedError(
        f"training diverged: the loss became NaN/Inf in {where}. Lower the learning rate "
        "(--head-lr / --finetune-lr), keep --precision float32, and check the input images "
        "(`skinlesion prepare` lists unreadable ones)."
    )
