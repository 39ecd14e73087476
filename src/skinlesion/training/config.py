"""Typed, layered training config: dataclass defaults < YAML file < overrides.

The config is a tree of frozen sections (``cfg.data``, ``cfg.model``, ``cfg.stages`` ...),
each a dataclass that documents and validates its own fields. A field is addressed by its
dotted key (``stages.head_epochs``, ``augment.zoom``) or, as in configs written before the
sections existed, by its flat name (``head_epochs``; unique across sections, see
:data:`FIELDS`). Both forms are accepted wherever keys are read: YAML files, ``--set``,
overrides and recipes. A new hyperparameter is one dataclass field (plus a line in its
section's ``validate`` if it has a range); ``--set`` and the Python API reach it at once.

The resolved config is saved with every run as a nested ``config.yaml``, so a run can be
reproduced from its directory alone; flat ``config.yaml`` files of earlier runs still load.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from skinlesion.data.augment import AugmentConfig
from skinlesion.data.metadata import MISSING_MODES, parse_fields
from skinlesion.data.targets import TARGETS
from skinlesion.utils.atomic import atomic_write_text

# The choices are types (checked by mypy where code names them) and tuples (checked at
# run time on values read from YAML and flags, by each section's ``validate``).
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

FLAT = "flat"
"""Field-metadata key of a field's flat name when it is not the field's own name."""


# === Sections ===================================================================

@dataclass(frozen=True)
class DataConfig:
    """Which images are read, and how.

    Attributes:
        data_dir: Prepared data folder (holds manifest.csv).
        limit: Use at most this many images per split (0 = all; for tests and benchmarks).
        fold: Cross-validation: validate on manifest fold ``fold`` and train on the other
            folds of the training and validation images (needs ``prepare --folds K``;
            -1 = the manifest's own train/val split). The test split is never used.
        cache: Where decoded, resized images are cached: ``memory``, ``disk`` or ``none``.
        tfrecords: Read the training split from the TFRecord shards written by
            ``skinlesion prepare --tfrecords N`` (explicit, never automatic: it changes the
            input order and so the run; with ``cache: none`` and a ``shuffle_buffer`` the
            data need not fit in memory).
        shuffle_buffer: Shuffle buffer (0 = the whole training split).
    """

    data_dir: str = ""
    limit: int = 0
    fold: int = -1
    cache: Cache = "memory"
    tfrecords: bool = False
    shuffle_buffer: int = 0

    def validate(self) -> DataConfig:
        """Check ranges and choices; return self (``ValueError`` names the key)."""
        _choice("data.cache", self.cache, CACHES)
        _at_least("data.limit", self.limit, 0)
        _at_least("data.fold", self.fold, -1)
        _at_least("data.shuffle_buffer", self.shuffle_buffer, 0)
        return self


@dataclass(frozen=True)
class ModelConfig:
    """The network: backbone, input, head and what it predicts.

    Attributes:
        backbone: Registry name. Defaults to ``efficientnet_lite0`` (offline ImageNet weights).
        weights: ``"imagenet"``, a local weights file, or ``"none"``.
        input_size: Model input size (0 = the backbone's default).
        preprocessing: Override of the backbone's preprocessing mode ("" = the backbone's).
        dropout: Dropout before the head.
        color_constancy: Shades-of-Gray colour constancy (p = 6) inside the model.
        target: ``binary`` (malignant or not, sigmoid) or ``diagnosis`` (softmax over the
            manifest's diagnosis classes; P(malignant) = sum of the malignant classes).
        min_class_images: With ``diagnosis``, classes with fewer training images are merged
            into ``other_benign`` / ``other_malignant``.
    """

    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    input_size: int = 0
    preprocessing: str = ""
    dropout: float = 0.3
    color_constancy: bool = False
    target: Target = "binary"
    min_class_images: int = 20

    def validate(self) -> ModelConfig:
        """Check ranges and choices; return self (``ValueError`` names the key)."""
        _choice("model.target", self.target, TARGETS)
        _at_least("model.input_size", self.input_size, 0)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.min_class_images < 1:
            raise ValueError(f"model.min_class_images must be >= 1, got {self.min_class_images}")
        return self

    @property
    def weights_arg(self) -> str | None:
        """``weights`` as the registry expects it (None for random init)."""
        return None if self.weights.lower() in ("none", "", "random") else self.weights


@dataclass(frozen=True)
class MetadataConfig:
    """Clinical metadata fused with the image features (flat names ``metadata``,
    ``metadata_missing`` and ``metadata_dropout``).

    Attributes:
        fields: A comma-separated subset of ``age,sex,site`` ("" = image only).
        missing: How unknown values are encoded: ``flags`` (a missing flag per field) or
            ``impute`` (training means/frequencies, no flag).
        dropout: Training only: probability of hiding each known field (it then looks
            unknown), so the model cannot learn that "unknown" means a label.
    """

    fields: str = field(default="", metadata={FLAT: "metadata"})
    missing: MetadataMissing = field(default="flags", metadata={FLAT: "metadata_missing"})
    dropout: float = field(default=0.0, metadata={FLAT: "metadata_dropout"})

    def validate(self) -> MetadataConfig:
        """Check ranges and choices; return self (``ValueError`` names the key)."""
        _choice("metadata.missing", self.missing, MISSING_MODES)
        parse_fields(self.fields)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"metadata.dropout must be in [0, 1), got {self.dropout}")
        return self


@dataclass(frozen=True)
class StagesConfig:
    """The training stages: the head (on cached features), then fine-tuning.

    Attributes:
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
        batch_size: Per-replica batch size of the image stages.
        monitor: Metric that picks the best checkpoint (tutorial 1 used ``val_loss``).
        patience: Early-stopping patience in epochs (0 disables).
    """

    mode: Mode = "finetune"
    cache_features: bool = True
    feature_views: int = 8
    head_epochs: int = 40
    head_batch_size: int = 256
    head_lr: float = 1e-3
    finetune_epochs: int = 10
    finetune_lr: float = 2e-4
    unfreeze_groups: int = -1
    batch_size: int = 32
    monitor: str = "val_auc"
    patience: int = 8

    def validate(self) -> StagesConfig:
        """Check ranges and choices; return self (``ValueError`` names the key)."""
        _choice("stages.mode", self.mode, MODES)
        if not 1 <= self.feature_views <= 8:
            raise ValueError(f"stages.feature_views must be 1–8, got {self.feature_views}")
        for name in ("head_epochs", "finetune_epochs", "patience"):
            _at_least(f"stages.{name}", getattr(self, name), 0)
        _at_least("stages.unfreeze_groups", self.unfreeze_groups, -1)
        _at_least("stages.head_batch_size", self.head_batch_size, 1)
        if self.batch_size < 1:
            raise ValueError(f"stages.batch_size must be ≥ 1, got {self.batch_size}")
        if not self.monitor.startswith("val_"):
            raise ValueError(f"stages.monitor must be a validation metric (val_...), "
                             f"got {self.monitor}")
        return self


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (both stages).

    Attributes:
        optimizer: ``adamw``, ``adam``, ``rmsprop`` or ``sgd``.
        weight_decay: Decoupled weight decay (AdamW/SGD).
        schedule: ``cosine``, ``plateau`` or ``constant`` (of the fine-tuning stage).
        warmup_epochs: Linear warm-up epochs of the fine-tuning schedule.
    """

    optimizer: Optimizer = "adamw"
    weight_decay: float = 1e-4
    schedule: Schedule = "cosine"
    warmup_epochs: int = 1

    def validate(self) -> OptimConfig:
        """Check ranges and choices; return self (``ValueError`` names the key)."""
        _choice("optim.optimizer", self.optimizer, OPTIMIZERS)
        _choice("optim.schedule", self.schedule, SCHEDULES)
        _at_least("optim.weight_decay", self.weight_decay, 0.0)
        _at_least("optim.warmup_epochs", self.warmup_epochs, 0)
        return self


@dataclass(frozen=True)
class ObjectiveConfig:
    """The loss and how class imbalance is handled.

    Attributes:
        loss: ``bce`` or ``focal``.
        label_smoothing: Label smoothing of the loss.
        focal_gamma: Focal loss gamma.
        imbalance: ``class_weight`` (default), ``balanced_sampling`` or ``none``.
    """

    loss: Loss = "bce"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    imbalance: Imbalance = "class_weight"

    def validate(self) -> ObjectiveConfig:
        """Check ranges and choices; return self (``ValueError`` names the key)."""
        _choice("objective.loss", self.loss, LOSSES)
        _choice("objective.imbalance", self.imbalance, IMBALANCE)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"objective.label_smoothing must be in [0, 1), "
                             f"got {self.label_smoothing}")
        _at_least("objective.focal_gamma", self.focal_gamma, 0.0)
        return self


@dataclass(frozen=True)
class DecisionConfig:
    """How the operating threshold is chosen on the validation split.

    Attributes:
        target_sensitivity: Validation sensitivity the decision threshold must reach.
        threshold: Fixed decision threshold instead of the sensitivity rule (None = rule).
    """

    target_sensitivity: float = 0.90
    threshold: float | None = None

    def validate(self) -> DecisionConfig:
        """Check ranges; return self (``ValueError`` names the key)."""
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"decision.target_sensitivity must be in (0, 1], "
                             f"got {self.target_sensitivity}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"decision.threshold must be in [0, 1], got {self.threshold}")
        return self


@dataclass(frozen=True)
class DistributeConfig:
    """Devices, replicas and numerics (see docs/SCALING.md).

    Attributes:
        strategy: tf.distribute strategy: ``auto``, ``none``, ``mirrored``, ``multiworker``.
        scale_lr: Scale learning rates linearly with the number of replicas.
        precision: ``float32``, ``mixed_float16`` or ``mixed_bfloat16`` (output stays float32).
        jit: Compile with XLA.
    """

    strategy: Strategy = "auto"
    scale_lr: bool = True
    precision: Precision = "float32"
    jit: bool = False

    def validate(self) -> DistributeConfig:
        """Check choices; return self (``ValueError`` names the key)."""
        _choice("distribute.strategy", self.strategy, STRATEGIES)
        _choice("distribute.precision", self.precision, PRECISIONS)
        return self


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run: two top-level fields and the sections.

    Attributes:
        out: Run directory.
        seed: Seed for splits of the data stream, augmentation and weights.
        data: Which images, and how they are read (:class:`DataConfig`).
        model: Backbone, input, head and target (:class:`ModelConfig`).
        metadata: Clinical metadata fused with the image (:class:`MetadataConfig`).
        stages: Head and fine-tuning stages, batch size, checkpointing (:class:`StagesConfig`).
        optim: Optimizer and schedule (:class:`OptimConfig`).
        objective: Loss and class imbalance (:class:`ObjectiveConfig`).
        decision: The operating threshold (:class:`DecisionConfig`).
        distribute: Strategy, precision, XLA (:class:`DistributeConfig`).
        augment: Training augmentation (:class:`~skinlesion.data.augment.AugmentConfig`).
    """

    out: str = ""
    seed: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> TrainConfig:
        """Validate every section, then the rules that span sections; return self.

        Raises:
            ValueError: naming the key and the allowed values.
        """
        for name in SECTIONS:
            getattr(self, name).validate()
        if self.objective.imbalance == "balanced_sampling" and (
                self.model.target != "binary" or self.metadata.fields):
            raise ValueError("imbalance balanced_sampling works with the binary image-only "
                             "target; use class_weight with target diagnosis or metadata")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-dict form (the layout of ``config.yaml``)."""
        return dataclasses.asdict(self)

    def to_dotted(self) -> dict[str, Any]:
        """``{dotted key: value}`` for every field (``"stages.head_epochs": 40``)."""
        return {key: self.get(key) for key in FIELDS}

    def to_flat_dict(self) -> dict[str, Any]:
        """The flat form of configs before the sections: every field by its flat name,
        augmentation as an ``augment`` block."""
        flat: dict[str, Any] = {}
        for key, info in FIELDS.items():
            if key.startswith("augment."):
                flat.setdefault("augment", {})[info.name] = self.get(key)
            else:
                flat[info.flat] = self.get(key)
        return flat

    def get(self, key: str) -> Any:
        """The value of a field by dotted key or flat name (``get("mode")``)."""
        node: Any = self
        for part in resolve_key(key).split("."):
            node = getattr(node, part)
        return node

    def to_yaml(self) -> str:
        """YAML text of the resolved config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the resolved config atomically."""
        return atomic_write_text(path, self.to_yaml())


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"{name} must be ≥ {low}, got {value}")


# === Keys =======================================================================

SECTIONS: dict[str, type] = {
    name: t for name, t in get_type_hints(TrainConfig).items()
    if isinstance(t, type) and dataclasses.is_dataclass(t)
}
"""Section name → its dataclass, in ``config.yaml`` order."""


@dataclass(frozen=True)
class FieldInfo:
    """One config field: its keys and the scalar type its values must have.

    Attributes:
        key: Dotted key (``stages.head_epochs``; ``seed`` and ``out`` have no section).
        flat: Flat name of configs before the sections (``head_epochs``), unique; for
            ``augment`` fields the dotted key (they were always addressed that way).
        name: The field's name in its section.
        kind: ``bool``, ``int``, ``float`` or ``str`` (a ``Literal``'s choices are ``str``).
        nullable: None is a valid value.
        choices: The allowed values of a ``Literal`` field (else empty).
        default: The default value.
    """

    key: str
    flat: str
    name: str
    kind: type
    nullable: bool
    choices: tuple[str, ...]
    default: Any


def _field_info(section: str, cls: type, f: dataclasses.Field[Any]) -> FieldInfo:
    hint = get_type_hints(cls)[f.name]
    args = get_args(hint)
    nullable = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if nullable:
        hint = next(a for a in args if a is not type(None))
    choices: tuple[str, ...] = get_args(hint) if get_origin(hint) is Literal else ()
    key = f"{section}.{f.name}" if section else f.name
    flat = key if section == "augment" else f.metadata.get(FLAT, f.name)
    return FieldInfo(key=key, flat=flat, name=f.name, kind=str if choices else hint,
                     nullable=nullable, choices=choices,
                     default=None if f.default is dataclasses.MISSING else f.default)


def _all_fields() -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for f in fields(TrainConfig):
        if f.name in SECTIONS:
            cls = SECTIONS[f.name]
            out.update({i.key: i for i in (_field_info(f.name, cls, g) for g in fields(cls))})
        else:
            out[f.name] = _field_info("", TrainConfig, f)
    return out


FIELDS: dict[str, FieldInfo] = _all_fields()
"""Every field by dotted key, in ``config.yaml`` order."""
KEYS: dict[str, str] = {**{i.flat: k for k, i in FIELDS.items()}, **{k: k for k in FIELDS}}
"""Every accepted key (dotted, or flat name) → its dotted key."""
assert len({i.flat for i in FIELDS.values()}) == len(FIELDS), "flat names must be unique"


def resolve_key(key: str) -> str:
    """The dotted key of ``key`` (a dotted key or a flat name).

    Raises:
        ValueError: for an unknown key, with the closest known ones.
    """
    if key in KEYS:
        return KEYS[key]
    raise ValueError(f"unknown config key {key!r}{_did_you_mean([key])}")


def _did_you_mean(keys: list[str]) -> str:
    close: dict[str, str] = {}  # field → its closest spelling (flat or dotted), once
    for key in keys:
        for match in difflib.get_close_matches(key, KEYS, n=2):
            close.setdefault(KEYS[match], match)
    return f" (did you mean {', '.join(close.values())}?)" if close else ""


def dotted_overrides(data: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Any accepted form of (partial) config data → ``{dotted key: value}``.

    ``data`` may mix section blocks (``{"stages": {"mode": "frozen"}}``), dotted keys
    (``"stages.mode"``) and flat names (``"mode"``). A key that names a section and holds a
    mapping is that section (``metadata: {fields: age}``); otherwise it is a flat name
    (``metadata: age``). Later keys win over earlier ones for the same field.

    Raises:
        ValueError: listing unknown keys.
    """
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for raw_key, value in data.items():
        key = str(raw_key)
        if key in SECTIONS and (value is None or isinstance(value, Mapping)):
            for sub, v in (value or {}).items():
                full = f"{key}.{sub}"
                if full in FIELDS:
                    out.pop(full, None)  # a later setting moves to the end: it wins on merges
                    out[full] = v
                else:
                    unknown.append(full)
        elif key in KEYS:
            out.pop(KEYS[key], None)
            out[KEYS[key]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{where}: unknown config key(s) {sorted(unknown)}"
                         f"{_did_you_mean(unknown)}; keys are section.field "
                         "(stages.head_epochs) or a field's flat name (head_epochs)")
    return out


def flat_overrides(data: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Like :func:`dotted_overrides`, keyed by flat names (``augment.<field>`` for augmentation).

    The form ``recipe_overrides`` and ``parse_assignments`` return, as before the sections,
    so dicts merged with flat keys (``{**recipe_overrides("frozen"), "head_epochs": 5}``)
    still let the later key win.
    """
    return {FIELDS[key].flat: value for key, value in dotted_overrides(data, where).items()}


def merge_overrides(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Override layers, lowest first, as one ``{dotted key: value}`` (None = not given)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in dotted_overrides(layer or {}, where="overrides").items():
            if value is not None:
                out[key] = value
    return out


def nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{dotted key: value}`` → the nested layout of ``config.yaml``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        section, _, name = key.rpartition(".")
        if section:
            out.setdefault(section, {})[name] = value
        else:
            out[key] = value
    return out


# === Loading ====================================================================

def config_from_dict(data: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """Build a TrainConfig from a (possibly partial) dict, nested or flat (not validated).

    Raises:
        ValueError: for unknown keys.
    """
    nested = nest(dotted_overrides(data, where))
    sections = {name: cls(**nested.pop(name, {})) for name, cls in SECTIONS.items()}
    return TrainConfig(**nested, **sections)


def parse_assignments(assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``train --set``) as ``load_config`` overrides (flat names).

    KEY is a dotted key (``stages.head_epochs``, ``augment.zoom``) or a flat name
    (``head_epochs``), so every field can be set this way. Values are read as YAML scalars
    (``0.3``, ``true``, ``null``, ``adamw``) and checked against the field's type.

    Raises:
        ValueError: naming the assignment and what is wrong with it.
    """
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            dotted = resolve_key(key)
        except ValueError as exc:
            raise ValueError(f"--set {item!r}: {exc}") from None
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: cannot read the value ({exc})") from exc
        info = FIELDS[dotted]
        out.pop(info.flat, None)
        out[info.flat] = _coerce(item, info, value)
    return out


def _coerce(item: str, info: FieldInfo, value: Any) -> Any:
    """Check ``value`` against the field's type."""
    if value is None:
        if info.nullable:
            return None
        raise ValueError(f"--set {item!r}: this key cannot be null")
    if info.kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"--set {item!r}: expected true or false")
    if info.kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"--set {item!r}: expected an integer")
    if info.kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"--set {item!r}: expected a number")
    if info.kind is str:
        return str(value)
    return value


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Resolve defaults < YAML file < overrides (None values in overrides are ignored).

    The file may be nested (sections, as runs save it) or flat (runs before the
    sections); override keys are dotted keys, flat names or section blocks.
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
        data.update(dotted_overrides(loaded, where=str(p)))
    for key, value in dotted_overrides(overrides or {}, where="overrides").items():
        if value is not None:
            data[key] = value
    return config_from_dict(data, where=str(path or "overrides")).validate()


# === Recipes ====================================================================

# Named recipes: the tutorials' (for comparison) and ours. Each is a set of overrides
# (nested sections here; flat names would do as well).
RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {},
    "frozen": {"stages": {"mode": "frozen", "cache_features": True, "head_epochs": 200,
                          "patience": 20}},
    # Tutorial 1: frozen backbone recomputed every epoch, [0,1] input scaling, RMSprop,
    # batch 64, best val_loss, fixed 0.23 threshold, no imbalance handling, no augmentation.
    "tutorial1": {
        "model": {"preprocessing": "unit", "dropout": 0.0},
        "stages": {"mode": "frozen", "cache_features": False, "head_lr": 1e-3, "batch_size": 64,
                   "monitor": "val_loss", "head_epochs": 10, "patience": 0},
        "optim": {"optimizer": "rmsprop"},
        "objective": {"imbalance": "none"},
        "decision": {"threshold": 0.23},
        "augment": {"enabled": False},
    },
    # Tutorial 2: everything fine-tuned at once with Adam 3e-4 at 224 px, rotation 15,
    # zoom 0.05, h+v flips, batch 32, 0.5 threshold, no imbalance handling.
    "tutorial2": {
        "model": {"input_size": 224},
        "stages": {"mode": "finetune", "head_epochs": 0, "unfreeze_groups": -1,
                   "finetune_lr": 3e-4, "batch_size": 32, "finetune_epochs": 5,
                   "monitor": "val_auc"},
        "optim": {"optimizer": "adam", "warmup_epochs": 0, "schedule": "constant",
                  "weight_decay": 0.0},
        "objective": {"imbalance": "none"},
        "decision": {"threshold": 0.5},
        "augment": {"rotation_deg": 15.0, "zoom": 0.05, "flip": True, "transpose": False,
                    "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0,
                    "crop_scale": 1.0},
    },
}


def recipe_overrides(name: str) -> dict[str, Any]:
    """Overrides of a named recipe as ``load_config`` keys (flat names, see
    :func:`flat_overrides`).

    Raises:
        ValueError: for an unknown recipe, listing the valid names.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return flat_overrides(RECIPES[name], where=f"recipe {name}")
