"""Loss, class weights, optimizers and learning-rate schedules from the config."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skinlesion.training.config import TrainConfig


def class_weights(labels: np.ndarray, n_classes: int = 2) -> dict[int, float]:
    """Balanced class weights n / (K · n_c): each of the K classes carries 1/K of the loss."""
    labels = np.asarray(labels).astype(int)
    n = labels.size
    out = {}
    for c in range(n_classes):
        count = int((labels == c).sum())
        if count == 0:
            raise ValueError(f"the training split has no examples of class {c}")
        out[c] = n / (n_classes * float(count))
    return out


def make_loss(cfg: TrainConfig) -> Any:
    """Binary cross-entropy, or focal loss; both with optional label smoothing.

    With ``target: diagnosis``: sparse categorical cross-entropy over the classes.
    """
    import keras

    obj = cfg.objective
    if cfg.model.target == "diagnosis":
        if obj.loss != "bce" or obj.label_smoothing:
            raise ValueError("target diagnosis trains with cross-entropy: use loss bce and "
                             "label_smoothing 0")
        return keras.losses.SparseCategoricalCrossentropy()

    if obj.loss == "focal":
        return keras.losses.BinaryFocalCrossentropy(
            gamma=obj.focal_gamma, label_smoothing=obj.label_smoothing)
    return keras.losses.BinaryCrossentropy(label_smoothing=obj.label_smoothing)


def make_metrics(malignant: list[int] | tuple[int, ...] | None = None) -> list[Any]:
    """Tutorial 2's metrics plus ROC and PR AUC (computed from probabilities).

    Args:
        malignant: For a diagnosis head, the 0/1 malignant flag of each class: accuracy is
            then the diagnosis accuracy and ``auc``/``pr_auc`` are computed on P(malignant)
            (the sum of the malignant classes) against the malignant bit, so ``val_auc``
            means the same thing for both targets.
    """
    import keras

    if malignant is not None:
        from skinlesion.training.metrics import MalignantAUC

        return [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            MalignantAUC(malignant, name="auc", num_thresholds=500),
            MalignantAUC(malignant, name="pr_auc", curve="PR", num_thresholds=500),
        ]

    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
        keras.metrics.AUC(name="auc", num_thresholds=500),
        keras.metrics.AUC(name="pr_auc", curve="PR", num_thresholds=500),
    ]


def make_schedule(cfg: TrainConfig, lr: float, steps_per_epoch: int, epochs: int) -> Any:
    """Warm-up then cosine decay (or a constant rate; ``plateau`` uses a callback)."""
    import keras

    if cfg.optim.schedule != "cosine" or epochs <= 0:
        return lr
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, steps_per_epoch * cfg.optim.warmup_epochs)
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr * 0.1, decay_steps=total - warmup, alpha=0.01,
            warmup_target=lr, warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=0.01)


def make_optimizer(cfg: TrainConfig, learning_rate: Any) -> Any:
    """The optimizer named by the config."""
    import keras

    opt = cfg.optim
    if opt.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=opt.weight_decay)
    if opt.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if opt.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9, weight_decay=opt.weight_decay or None)


def monitor_mode(monitor: str) -> str:
    """``min`` for losses, ``max`` for everything else (AUC, accuracy, ...)."""
    return "min" if monitor.endswith("loss") else "max"


def steps(n: int, batch_size: int) -> int:
    """Batches per epoch over ``n`` examples."""
    return max(1, math.ceil(n / batch_size))
