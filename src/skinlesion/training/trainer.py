"""``train(cfg) -> TrainResult``: the training orchestrator.

Reads like a table of contents: open the run directory, load the splits, build
the model inside the distribution strategy, train the head (on cached frozen
features when possible), fine-tune the top of the backbone, pick the operating
threshold on validation data, and write the run-directory contract atomically.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from skinlesion import INTENDED_USE, __version__
from skinlesion.data.manifest import manifest_fingerprint, read_manifest, resolve_paths
from skinlesion.evaluation.operating_point import (
    rates_at,
    threshold_for_sensitivity,
    youden_threshold,
)
from skinlesion.evaluation.overlap import (
    TRAINING_IMAGES_FILE,
    training_images_record,
    write_training_images,
)
from skinlesion.runspec import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    HISTORY_FILE,
    LOGS_DIR,
    MODEL_FILE,
    SPEC_FILE,
    ModelSpec,
)
from skinlesion.training import stages
from skinlesion.training.config import TrainConfig, load_config
from skinlesion.training.distribute import (
    get_strategy,
    is_chief,
    release_worker_dir,
    replicas,
    worker_run_dir,
)
from skinlesion.training.errors import RunExistsError
from skinlesion.utils.atomic import atomic_path, atomic_write_json
from skinlesion.utils.hashing import sha256_file
from skinlesion.utils.progress import Progress
from skinlesion.utils.progress import say as report_steps
from skinlesion.utils.versions import git_commit, library_versions

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """Train and validation rows with absolute paths and labels."""

    train: pd.DataFrame
    val: pd.DataFrame
    train_paths: list[str]
    val_paths: list[str]

    @property
    def y_train(self) -> np.ndarray:
        return self.train["label"].to_numpy(np.float32)

    @property
    def y_val(self) -> np.ndarray:
        return self.val["label"].to_numpy(np.float32)


@dataclass
class TrainResult:
    """What ``train`` returns: where the run is and what it measured."""

    run_dir: Path
    spec: ModelSpec
    best_epoch: int
    best_monitor: float | None
    val_metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    history: pd.DataFrame | None = None


# === The orchestrator ==========================================================

def train(
    cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, verbose: int = 0,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a classifier as ``cfg`` says and write the run directory.

    Args:
        cfg: Resolved, validated config (``cfg.data.data_dir``, ``cfg.out`` set).
        resume: Continue an interrupted run in ``cfg.out``.
        overwrite: Replace a finished or interrupted run in ``cfg.out``.
        verbose: Keras verbosity for ``fit`` (0 silent, 1 progress bar, 2 one line per epoch).
        progress: Gets step messages (task ``"train"``) and the feature pass's image counts
            (``progress=print`` prints them).

    Returns:
        A ``TrainResult``.

    Raises:
        RunExistsError: ``cfg.out`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        TrainingDivergedError: the loss became NaN/Inf.
    """
    import keras

    say = report_steps(progress, "train")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    cfg.validate()

    # First of all: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = get_strategy(cfg.distribute.strategy)
    run_dir = open_run_dir(cfg, resume=resume, overwrite=overwrite)
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy(cfg.distribute.precision)
    n_rep = replicas(strategy)
    splits = load_splits(cfg)
    say(f"data: {len(splits.train)} train / {len(splits.val)} val images "
        f"({int(splits.y_train.sum())} / {int(splits.y_val.sum())} malignant), {n_rep} replica(s)")

    ctx = stages.StageContext.create(cfg, run_dir, splits, strategy, verbose=verbose,
                                     progress=progress)
    say(f"model: {ctx.bspec.name} at {ctx.size} px, weights {cfg.model.weights}")
    with strategy.scope():
        model = ctx.build_model()
    histories = []
    if ctx.run_head_on_features:
        t = time.perf_counter()
        histories.append(stages.head_on_features(ctx, model))
        timings["head_s"] = time.perf_counter() - t
        timings.update(ctx.timings)
    st = cfg.stages
    if st.mode == "frozen" and not st.cache_features:
        t = time.perf_counter()
        histories.append(stages.fit_images(ctx, model, stage="frozen", unfreeze=0,
                                           lr=st.head_lr, epochs=st.head_epochs))
        timings["frozen_recomputed_s"] = time.perf_counter() - t
    if st.mode == "finetune" and st.finetune_epochs > 0:
        t = time.perf_counter()
        histories.append(stages.fit_images(ctx, model, stage="finetune", unfreeze=st.unfreeze_groups,
                                           lr=st.finetune_lr, epochs=st.finetune_epochs))
        timings["finetune_s"] = time.perf_counter() - t

    history = stages.combine_histories(histories)
    say("choosing the operating threshold on the validation split")
    val_prob = ctx.predict_val(model)
    spec = make_spec(cfg, ctx, splits, val_prob)
    best_epoch, best_value = stages.best_of(history, st.monitor)
    timings["total_s"] = time.perf_counter() - t0
    spec.val_metrics.update({"best_epoch": best_epoch, st.monitor: best_value})
    write_training_images(run_dir, training_images_record(splits.train, splits.val,
                                                          spec.data_fingerprint))
    write_run(run_dir, model, spec, history)
    if not is_chief():  # the chief wrote the run; drop this worker's private copy
        run_dir = release_worker_dir(run_dir, Path(cfg.out))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return TrainResult(run_dir=run_dir, spec=spec, best_epoch=best_epoch, best_monitor=best_value,
                       val_metrics=spec.val_metrics, timings=timings, peak_memory_mb=peak,
                       history=history)


# === Steps =====================================================================

def open_run_dir(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> Path:
    """Create or reopen ``cfg.out`` and save the resolved config into it.

    A finished run (model.keras + model_spec.json) is never replaced without
    ``overwrite``; an interrupted one (config.yaml but no model) needs ``resume``
    or ``overwrite``. On resume the saved config must match ``cfg``.
    """
    if not cfg.out:
        raise ValueError("no output folder: pass --out RUN_DIR")
    if not cfg.data.data_dir:
        raise ValueError("no data folder: pass DATA_DIR")
    if not is_chief():  # other workers write a private temporary folder (see distribute.py)
        return worker_run_dir(Path(cfg.out), resume=resume)
    run = Path(cfg.out)
    finished = (run / MODEL_FILE).is_file() and (run / SPEC_FILE).is_file()
    started = (run / CONFIG_FILE).is_file() or (run / CHECKPOINTS_DIR).is_dir()
    if overwrite:
        for name in (MODEL_FILE, SPEC_FILE, CONFIG_FILE, HISTORY_FILE, TRAINING_IMAGES_FILE):
            (run / name).unlink(missing_ok=True)
        for name in (LOGS_DIR, CHECKPOINTS_DIR, EVAL_DIR):
            shutil.rmtree(run / name, ignore_errors=True)
    elif finished:
        raise RunExistsError(f"{run} already holds a finished run; pass --overwrite to replace it")
    elif started and not resume:
        raise RunExistsError(f"{run} holds an interrupted run; pass --resume to continue it "
                             "or --overwrite to start again")
    elif resume and (run / CONFIG_FILE).is_file():
        saved = load_config(run / CONFIG_FILE)  # nested, or flat from an earlier version
        mine = cfg.to_dotted()
        diff = {k for k, v in saved.to_dotted().items() if mine.get(k) != v} - {"out"}
        if diff:
            raise ValueError(f"{run / CONFIG_FILE}: --resume needs the same config; differs in "
                             f"{sorted(diff)}")
    run.mkdir(parents=True, exist_ok=True)
    (run / CHECKPOINTS_DIR).mkdir(exist_ok=True)
    cfg.save(run / CONFIG_FILE)
    return run


def load_splits(cfg: TrainConfig) -> Splits:
    """Train and val rows of the manifest (``data.limit`` caps each split, stratified)."""
    data = cfg.data
    df = read_manifest(data.data_dir)
    if data.fold >= 0:  # cross-validation: one fold validates, the others train
        if "fold" not in df.columns:
            raise ValueError(f"{data.data_dir}: --fold needs a manifest with folds; prepare it "
                             "with --folds K")
        folds = sorted(set(df["fold"]) - {-1})
        if data.fold not in folds:
            raise ValueError(f"{data.data_dir}: no fold {data.fold}; folds are {folds}")
        pool = df[(df["fold"] >= 0) & (df["split"] != "test")]
        df = pool.assign(split=np.where(pool["fold"] == data.fold, "val", "train"))
    train_df = _limit(df[df["split"] == "train"], data.limit, cfg.seed)
    val_df = _limit(df[df["split"] == "val"], data.limit, cfg.seed)
    for name, part in (("train", train_df), ("val", val_df)):
        if part["label"].nunique() < 2:
            raise ValueError(f"{data.data_dir}: the {name} split needs both benign and malignant "
                             f"images (has {len(part)} rows, labels {sorted(part['label'].unique())})")
    return Splits(train_df, val_df, resolve_paths(train_df, data.data_dir),
                  resolve_paths(val_df, data.data_dir))


def _limit(df: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    if not limit or len(df) <= limit:
        return df

    keep, _ = train_test_split(df, train_size=limit, stratify=df["label"], random_state=seed)
    return keep.sort_index().reset_index(drop=True)


def make_spec(cfg: TrainConfig, ctx: Any, splits: Splits, val_prob: np.ndarray) -> ModelSpec:
    """The model spec, with the operating threshold chosen on the validation split."""


    y, decision = splits.y_val, cfg.decision
    youden = youden_threshold(y, val_prob)
    if decision.threshold is not None:
        threshold, rule = float(decision.threshold), f"fixed {decision.threshold} (config)"
    else:
        threshold = threshold_for_sensitivity(y, val_prob, decision.target_sensitivity)
        rule = f"highest threshold with sensitivity >= {decision.target_sensitivity:.2f} on the validation split"
    rates = rates_at(y, val_prob, threshold)
    val_metrics = {
        "n": len(y), "positives": int(y.sum()),
        "roc_auc": float(roc_auc_score(y, val_prob)),
        "average_precision": float(average_precision_score(y, val_prob)),
        "sensitivity": rates["sensitivity"], "specificity": rates["specificity"],
    }
    return ModelSpec(
        backbone=ctx.bspec.name, input_size=ctx.size, preprocessing=ctx.preprocessing,
        threshold=threshold, threshold_rule=rule, youden_threshold=youden,
        target_sensitivity=decision.target_sensitivity, last_conv_layer=ctx.bspec.last_conv_layer,
        data_fingerprint=manifest_fingerprint(cfg.data.data_dir), data_dir=str(cfg.data.data_dir),
        code_version=f"skinlesion {__version__}" + (f" ({c})" if (c := git_commit()) else ""),
        versions=library_versions(), val_metrics=val_metrics,
        train_prevalence=float(splits.train["label"].astype(float).mean()),
        created=datetime.now(UTC).isoformat(timespec="seconds"), intended_use=INTENDED_USE,
        target=cfg.model.target, diagnosis=ctx.classes.to_dict() if ctx.classes else None,
        metadata=ctx.encoder.to_dict() if ctx.encoder else None,
        color_constancy=bool(cfg.model.color_constancy),
    )


def write_run(run_dir: Path, model: Any, spec: ModelSpec, history: pd.DataFrame) -> None:
    """Write model.keras, history.csv and (last, as the 'finished' mark) model_spec.json."""
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        model.save(tmp)
    spec.model_id = sha256_file(run_dir / MODEL_FILE)[:12]
    with atomic_path(run_dir / HISTORY_FILE) as tmp:
        history.to_csv(tmp, index=False, lineterminator="\n")
    atomic_write_json(run_dir / CHECKPOINTS_DIR / "state.json", {"finished": True})
    spec.save(run_dir)
