"""Typed, layered training config: dataclass defaults < YAML file < CLI flags.

The resolved config is saved with every run as ``config.yaml``, so a run can be
reproduced from its directory alone.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from skinlesion.data.augment import AugmentConfig
from skinlesion.data.metadata import MISSING_MODES, parse_fields
from skinlesion.data.targets import TARGETS
from skinlesion.utils.atomic import atomic_write_text

# The choices are types (checked by mypy where code names them) and tuples (checked at
# run time on values read from YAML and flags, by ``TrainConfig.validate``).
Mode = Literal["frozen", "finetune"]
Strategy = Literal["auto", "none", "mirrored", "multiworker"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
Loss = Literal["bce", "focal"]
Imbalance = Literal["class_weight", "balanced_sampling", "none"]
Schedule = Literal["cosine", "plateau", "constant"]
Optimizer = Literal["adamw", "adam", "rmsprop", "sgd"]
Cache = Literal["memory", "disk", "none"]
Target = Literal["binary", "diagnosis"]
MetadataMissing = Literal["flags", "impute"]
MODES: tuple[str, ...] = get_args(Mode)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
PRECISIONS: tuple[str, ...] = get_args(Precision)
LOSSES: tuple[str, ...] = get_args(Loss)
IMBALANCE: tuple[str, ...] = get_args(Imbalance)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
CACHES: tuple[str, ...] = get_args(Cache)
assert get_args(Target) == TARGETS and get_args(MetadataMissing) == MISSING_MODES


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run.

    Attributes:
        data_dir: Prepared data folder (holds manifest.csv).
        out: Run directory.
        backbone: Registry name. Defaults to ``efficientnet_lite0`` (offline ImageNet weights).
        weights: ``"imagenet"``, a local weights file, or ``"none"``.
        input_size: Model input size (0 = the backbone's default).
        preprocessing: Override of the backbone's preprocessing mode ("" = the backbone's).
        dropout: Dropout before the head.
        mode: ``frozen`` (backbone frozen, features cached once) or ``finetune``
            (head warm-up on cached features, then the top blocks at a lower rate).
        cache_features: In ``frozen`` mode, compute backbone features once and train the
            head on them (False = recompute the frozen backbone every epoch, as tutorial 1).
        feature_views: Dihedral views per training image in the feature cache (1–8).
        head_epochs: Epochs of head training (on cached features when available).
        head_batch_size: Batch size of head training on cached features.
        head_lr: Learning rate of the head stage.
        finetune_epochs: Epochs of the fine-tuning stage.
        finetune_lr: Peak learning rate of the fine-tuning stage.
        unfreeze_groups: Number of backbone layer groups unfrozen from the top (-1 = all).
        warmup_epochs: Linear warm-up epochs of the fine-tuning schedule.
        schedule: ``cosine``, ``plateau`` or ``constant``.
        optimizer: ``adamw``, ``adam``, ``rmsprop`` or ``sgd`` (both stages).
        weight_decay: Decoupled weight decay (AdamW/SGD).
        batch_size: Per-replica batch size.
        imbalance: ``class_weight`` (default), ``balanced_sampling`` or ``none``.
        loss: ``bce`` or ``focal``.
        label_smoothing: Label smoothing of the loss.
        focal_gamma: Focal loss gamma.
        monitor: Metric that picks the best checkpoint (tutorial 1 used ``val_loss``).
        patience: Early-stopping patience in epochs (0 disables).
        target_sensitivity: Validation sensitivity the decision threshold must reach.
        threshold: Fixed decision threshold instead of the sensitivity rule (None = rule).
        seed: Seed for splits of the data stream, augmentation and weights.
        strategy: tf.distribute strategy: ``auto``, ``none``, ``mirrored``, ``multiworker``.
        scale_lr: Scale learning rates linearly with the number of replicas.
        precision: ``float32``, ``mixed_float16`` or ``mixed_bfloat16`` (output stays float32).
        jit: Compile with XLA.
        cache: Where decoded, resized images are cached: ``memory``, ``disk`` or ``none``.
        tfrecords: Read the training split from the TFRecord shards written by
            ``skinlesion prepare --tfrecords N`` (explicit, never automatic: it changes the
            input order and so the run; with ``cache: none`` and a ``shuffle_buffer`` the
            data need not fit in memory).
        shuffle_buffer: Shuffle buffer (0 = the whole training split).
        limit: Use at most this many images per split (0 = all; for tests and benchmarks).
        fold: Cross-validation: validate on manifest fold ``fold`` and train on the other
            folds of the training and validation images (needs ``prepare --folds K``;
            -1 = the manifest's own train/val split). The test split is never used.
        target: ``binary`` (malignant or not, sigmoid) or ``diagnosis`` (softmax over the
            manifest's diagnosis classes; P(malignant) = sum of the malignant classes).
        min_class_images: With ``diagnosis``, classes with fewer training images are merged
            into ``other_benign`` / ``other_malignant``.
        metadata: Clinical metadata fused with the image features: a comma-separated
            subset of ``age,sex,site`` ("" = image only).
        metadata_missing: How unknown values are encoded: ``flags`` (a missing flag per
            field) or ``impute`` (training means/frequencies, no flag).
        metadata_dropout: Training only: probability of hiding each known field (it then
            looks unknown), so the model cannot learn that "unknown" means a label.
        color_constancy: Shades-of-Gray colour constancy (p = 6) inside the model.
        augment: Training augmentation.
    """

    data_dir: str = ""
    out: str = ""
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    input_size: int = 0
    preprocessing: str = ""
    dropout: float = 0.3
    mode: Mode = "finetune"
    cache_features: bool = True
    feature_views: int = 8
    head_epochs: int = 40
    head_batch_size: int = 256
    head_lr: float = 1e-3
    finetune_epochs: int = 10
    finetune_lr: float = 2e-4
    unfreeze_groups: int = -1
    warmup_epochs: int = 1
    schedule: Schedule = "cosine"
    optimizer: Optimizer = "adamw"
    weight_decay: float = 1e-4
    batch_size: int = 32
    imbalance: Imbalance = "class_weight"
    loss: Loss = "bce"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    monitor: str = "val_auc"
    patience: int = 8
    target_sensitivity: float = 0.90
    threshold: float | None = None
    seed: int = 1
    strategy: Strategy = "auto"
    scale_lr: bool = True
    precision: Precision = "float32"
    jit: bool = False
    cache: Cache = "memory"
    tfrecords: bool = False
    shuffle_buffer: int = 0
    limit: int = 0
    fold: int = -1
    target: Target = "binary"
    min_class_images: int = 20
    metadata: str = ""
    metadata_missing: MetadataMissing = "flags"
    metadata_dropout: float = 0.0
    color_constancy: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> TrainConfig:
        """Check ranges and choices; return self.

        Raises:
            ValueError: naming the field and the allowed values.
        """
        _choice("mode", self.mode, MODES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("loss", self.loss, LOSSES)
        _choice("imbalance", self.imbalance, IMBALANCE)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("cache", self.cache, CACHES)
        _choice("target", self.target, TARGETS)
        _choice("metadata_missing", self.metadata_missing, MISSING_MODES)
        parse_fields(self.metadata)
        if not 0.0 <= self.metadata_dropout < 1.0:
            raise ValueError(f"metadata_dropout must be in [0, 1), got {self.metadata_dropout}")
        if self.min_class_images < 1:
            raise ValueError(f"min_class_images must be >= 1, got {self.min_class_images}")
        if self.imbalance == "balanced_sampling" and (self.target != "binary" or self.metadata):
            raise ValueError("imbalance balanced_sampling works with the binary image-only "
                             "target; use class_weight with target diagnosis or metadata")
        if not 1 <= self.feature_views <= 8:
            raise ValueError(f"feature_views must be 1–8, got {self.feature_views}")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {self.target_sensitivity}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.monitor.startswith("val_"):
            raise ValueError(f"monitor must be a validation metric (val_...), got {self.monitor}")
        return self

    @property
    def weights_arg(self) -> str | None:
        """``weights`` as the registry expects it (None for random init)."""
        return None if self.weights.lower() in ("none", "", "random") else self.weights

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """YAML text of the resolved config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the resolved config atomically."""
        return atomic_write_text(path, self.to_yaml())


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a TrainConfig from a (possibly partial) dict; unknown keys are an error."""
    data = dict(data)
    aug = data.pop("augment", None) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown config key(s) {unknown}")
    aug_known = {f.name for f in fields(AugmentConfig)}
    bad_aug = sorted(set(aug) - aug_known)
    if bad_aug:
        raise ValueError(f"{where}: unknown augment key(s) {bad_aug}")
    return TrainConfig(**data, augment=AugmentConfig(**aug))


def parse_assignments(assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``train --set``) as ``load_config`` overrides.

    Every field of :class:`TrainConfig` (and ``augment.<field>``) can be set this way, so a
    new hyperparameter needs only its dataclass field. Values are read as YAML scalars
    (``0.3``, ``true``, ``null``, ``adamw``) and checked against the field's type.

    Raises:
        ValueError: naming the assignment and what is wrong with it.
    """
    known = {f.name: f for f in fields(TrainConfig) if f.name != "augment"}
    known.update({f"augment.{f.name}": f for f in fields(AugmentConfig)})
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key not in known:
            raise ValueError(f"--set {item!r}: unknown config key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: cannot read the value ({exc})") from exc
        out[key] = _coerce(item, known[key], value)
    return out


def _coerce(item: str, f: dataclasses.Field[Any], value: Any) -> Any:
    """Check ``value`` against the field's type, as its default (or annotation) shows it."""
    annotation = str(f.type)
    default = f.default if f.default is not dataclasses.MISSING else None
    if value is None:
        if "None" in annotation:
            return None
        raise ValueError(f"--set {item!r}: this key cannot be null")
    if isinstance(default, bool) or annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise ValueError(f"--set {item!r}: expected true or false")
    if isinstance(default, int) or annotation.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"--set {item!r}: expected an integer")
    if isinstance(default, float) or annotation.startswith("float"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"--set {item!r}: expected a number")
    if isinstance(default, str) or annotation.startswith("str"):
        return str(value)
    return value


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Resolve defaults < YAML file < overrides (None values in overrides are ignored).

    Override keys may address the augmentation block as ``augment.rotation_deg``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{p}: cannot read config ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: a config file must hold a mapping")
        data.update(loaded)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key.startswith("augment."):
            data.setdefault("augment", {})
            data["augment"] = {**data["augment"], key.split(".", 1)[1]: value}
        else:
            data[key] = value
    return config_from_dict(data, where=str(path or "overrides")).validate()


# Named recipes: the tutorials' (for comparison) and ours. Each is a set of overrides.
RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {},
    "frozen": {"mode": "frozen", "cache_features": True, "head_epochs": 200, "patience": 20},
    # Tutorial 1: frozen backbone recomputed every epoch, [0,1] input scaling, RMSprop,
    # batch 64, best val_loss, fixed 0.23 threshold, no imbalance handling, no augmentation.
    "tutorial1": {
        "mode": "frozen", "cache_features": False, "preprocessing": "unit", "optimizer": "rmsprop",
        "head_lr": 1e-3, "batch_size": 64, "monitor": "val_loss", "threshold": 0.23,
        "imbalance": "none", "augment": {"enabled": False}, "dropout": 0.0, "head_epochs": 10,
        "patience": 0,
    },
    # Tutorial 2: everything fine-tuned at once with Adam 3e-4 at 224 px, rotation 15,
    # zoom 0.05, h+v flips, batch 32, 0.5 threshold, no imbalance handling.
    "tutorial2": {
        "mode": "finetune", "head_epochs": 0, "unfreeze_groups": -1, "optimizer": "adam",
        "finetune_lr": 3e-4, "warmup_epochs": 0, "schedule": "constant", "weight_decay": 0.0,
        "input_size": 224, "batch_size": 32, "threshold": 0.5, "imbalance": "none",
        "augment": {"rotation_deg": 15.0, "zoom": 0.05, "flip": True, "transpose": False,
                    "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0,
                    "crop_scale": 1.0},
        "finetune_epochs": 5, "monitor": "val_auc",
    },
}


def recipe_overrides(name: str) -> dict[str, Any]:
    """Overrides of a named recipe, flattened to ``load_config`` keys.

    Raises:
        ValueError: for an unknown recipe, listing the valid names.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    flat: dict[str, Any] = {}
    for key, value in RECIPES[name].items():
        if key == "augment":
            flat.update({f"augment.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat
