"""The run directory contract and ``model_spec.json``.

Commands talk to each other only through files::

    RUN_DIR/
      config.yaml         resolved training config            (train)
      model.keras         whole model: raw 0–255 RGB in, P(malignant) out  (train)
      model_spec.json     ModelSpec below                     (train)
      history.csv         per-epoch metrics                   (train)
      training_images.json  ids and hashes of the train/val images (train; overlap checks)
      logs/               TensorBoard                         (train)
      checkpoints/        resumable training state            (train)
      eval/               metrics.json, report.html, predictions.csv, plots  (evaluate)
      export/tflite/      model.tflite + model_spec.json + parity.json      (train, export)
      export/<format>[-<quantize>]/  other exports, same layout             (export)

``predict``, ``evaluate`` and ``serve`` read ``model.keras`` and ``model_spec.json``, and
use an ``export/`` runtime instead of Keras when its ``parity.json`` shows it gives the
Keras model's answers for this very ``model.keras`` (``skinlesion.inference.runtimes``).

Reading a run folder goes through this module: ``require_run`` (a finished run),
``ModelSpec.load``, ``training_data_dir`` (the data it was trained on), ``read_history``
and ``read_training_config``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from skinlesion.data.metadata import MetadataEncoder
from skinlesion.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
SPEC_FILE = "model_spec.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
EVAL_DIR = "eval"
SPEC_VERSION = 1


class RunError(ValueError):
    """A run directory that is missing files or holds an invalid spec."""


@dataclass
class ModelSpec:
    """What a trained model needs to be used correctly, stored as ``model_spec.json``.

    Attributes:
        backbone: Registry name of the backbone.
        input_size: Square input size in pixels; the model takes raw 0–255 RGB at this size.
        preprocessing: The in-graph preprocessing mode (informational: it is inside the model).
        class_names: Names of class 0 and class 1.
        threshold: Decision threshold on P(malignant), chosen on the validation split.
        threshold_rule: How ``threshold`` was chosen (e.g. ``"sensitivity>=0.90 on val"``).
        youden_threshold: Threshold maximising Youden's J on the validation split.
        target_sensitivity: Sensitivity target used for ``threshold``.
        inconclusive_band: Half-width of the band around ``threshold`` reported as
            "inconclusive" by predict/serve (0 disables it).
        last_conv_layer: Layer in the backbone used by Grad-CAM.
        model_id: Short identifier (hash of the model file at save time).
        data_fingerprint: SHA-256 of the training manifest.
        data_dir: The prepared data folder the run was trained on, as given to ``train``
            (export finds its parity and calibration images there; "" = unknown).
        code_version: skinlesion version and git commit.
        versions: Library versions at training time.
        val_metrics: Validation metrics at the chosen threshold.
        train_prevalence: Malignant share of the training split (what the model's
            probabilities are anchored to; ``None`` for older runs).
        created: ISO-8601 time of writing.
        intended_use: The intended-use statement shipped with the model.
        target: ``binary`` or ``diagnosis`` (then the model outputs
            ``[P(malignant), P(class 0), …]``).
        diagnosis: For ``diagnosis``: ``{"classes", "malignant", "merged"}``
            (see ``skinlesion.data.targets.DiagnosisClasses``).
        metadata: The clinical metadata encoder of the model's second input (see
            ``skinlesion.data.metadata.MetadataEncoder.to_dict``), or None (image only).
        color_constancy: Shades-of-Gray colour constancy inside the model (informational).
        members: For an ensemble: the member runs (name, backbone, input size, model id).
    """

    backbone: str
    input_size: int
    preprocessing: str = "none"
    class_names: list[str] = field(default_factory=lambda: ["benign", "malignant"])
    threshold: float = 0.5
    threshold_rule: str = "default 0.5"
    youden_threshold: float | None = None
    target_sensitivity: float | None = None
    inconclusive_band: float = 0.0
    last_conv_layer: str | None = None
    model_id: str = ""
    data_fingerprint: str = ""
    data_dir: str = ""
    code_version: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    val_metrics: dict[str, Any] = field(default_factory=dict)
    train_prevalence: float | None = None
    created: str = ""
    intended_use: str = ""
    target: str = "binary"
    diagnosis: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    color_constancy: bool = False
    members: list[dict[str, Any]] | None = None
    spec_version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = SPEC_FILE) -> ModelSpec:
        """Build from a dict checked by :func:`validate_spec` (unknown keys are ignored,
        for forward compatibility).

        Raises:
            RunError: naming ``where`` and the field, if the spec breaks the schema.
        """
        validate_spec(data, where)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def diagnosis_classes(self) -> list[str]:
        """The diagnosis class names (empty for a binary model)."""
        return list((self.diagnosis or {}).get("classes", [])) if self.target == "diagnosis" else []

    @property
    def metadata_encoder(self) -> Any:
        """The ``MetadataEncoder`` of the model's metadata input, or None (image only)."""
        if not self.metadata:
            return None

        return MetadataEncoder.from_dict(self.metadata)

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``run_dir/model_spec.json`` atomically."""
        return atomic_write_json(Path(run_dir) / SPEC_FILE, self.to_dict())

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> ModelSpec:
        """Read ``run_dir/model_spec.json``.

        Raises:
            RunError: if the file is missing or not valid JSON.
        """
        path = Path(run_dir) / SPEC_FILE
        if not path.is_file():
            raise RunError(f"{path}: no model spec; is {run_dir} a finished training run?")
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise RunError(f"{path}: {size:,} bytes is too large for a model spec "
                           f"(limit {MAX_SPEC_BYTES:,})")
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RunError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise RunError(f"{path}: not a model spec (JSON nested too deeply)") from None
        return cls.from_dict(data, where=str(path))


# === The model_spec.json schema ===

MAX_SPEC_BYTES = 1_000_000
"""A model spec is a few KB; anything over 1 MB is refused before parsing."""

_NUMBER = (int, float)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def validate_spec(data: Any, where: str = SPEC_FILE) -> None:
    """Check a parsed ``model_spec.json`` against its schema; nothing defaults silently.

    Required: ``backbone`` (non-empty string), ``input_size`` (integer 8–4096) and
    ``threshold`` (number in [0, 1]: a missing threshold is an error, never 0.5).
    Optional, checked when present: ``class_names`` (two or more distinct non-empty
    strings), ``inconclusive_band`` (number in [0, 0.5]: the half-width of the band
    around the threshold), ``youden_threshold``/``target_sensitivity`` (number in
    [0, 1] or null), text fields (strings, ``last_conv_layer`` may be null), ``versions``
    and ``val_metrics`` (objects), ``spec_version`` (integer ≥ 1). Keys it does not know
    are allowed (newer specs add fields); add a rule here for each new field that a
    decision depends on.

    Raises:
        RunError: ``"<where>: field '<name>': <what is wrong>"`` for the first problem.
    """
    def bad(field_name: str, what: str) -> RunError:
        return RunError(f"{where}: field {field_name!r}: {what}")

    if not isinstance(data, dict):
        raise RunError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key in ("backbone", "input_size", "threshold"):
        if key not in data:
            raise bad(key, "missing (required)")
    if not isinstance(data["backbone"], str) or not data["backbone"].strip():
        raise bad("backbone", f"must be a non-empty string, got {data['backbone']!r:.80}")
    size = data["input_size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
        raise bad("input_size", f"must be an integer from 8 to 4096, got {size!r:.80}")
    for key, required in (("threshold", True), ("youden_threshold", False),
                          ("target_sensitivity", False)):
        if key in data and not (data[key] is None and not required):
            value = data[key]
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise bad(key, f"must be a number in [0, 1], got {value!r:.80}")
    if "inconclusive_band" in data:
        band = data["inconclusive_band"]
        if not _is_number(band) or not 0.0 <= band <= 0.5:
            raise bad("inconclusive_band", "must be a number in [0, 0.5] (the half-width of "
                                           f"the band around the threshold), got {band!r:.80}")
    if "class_names" in data:
        names = data["class_names"]
        if (not isinstance(names, list) or len(names) < 2
                or not all(isinstance(n, str) and n.strip() for n in names)
                or len(set(names)) != len(names)):
            raise bad("class_names", f"must be a list of two or more distinct non-empty "
                                     f"strings, got {names!r:.80}")
    for key in ("preprocessing", "threshold_rule", "model_id", "data_fingerprint", "data_dir",
                "code_version", "created", "intended_use"):
        if key in data and not isinstance(data[key], str):
            raise bad(key, f"must be a string, got {type(data[key]).__name__}")
    if "last_conv_layer" in data and not isinstance(data["last_conv_layer"], str | None):
        raise bad("last_conv_layer", f"must be a string or null, got {type(data['last_conv_layer']).__name__}")
    for key in ("versions", "val_metrics"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, f"must be an object, got {type(data[key]).__name__}")
    version = data.get("spec_version", SPEC_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad("spec_version", f"must be an integer >= 1, got {version!r:.80}")


def require_run(run_dir: str | os.PathLike[str]) -> Path:
    """Return ``run_dir`` as a Path if it holds ``model.keras`` and ``model_spec.json``.

    Raises:
        RunError: naming the missing file.
    """
    run = Path(run_dir)
    for name in (MODEL_FILE, SPEC_FILE):
        if not (run / name).is_file():
            raise RunError(f"{run / name}: missing; is {run} a finished training run?")
    return run


def training_data_dir(run_dir: str | os.PathLike[str]) -> Path | None:
    """The prepared data folder a run was trained on, if it still exists.

    Read from ``model_spec.json`` (``data_dir``); runs written before that field existed
    name it only in ``config.yaml``, which is read for them alone. A relative path is
    tried as given and then beside the run folder.
    """
    run = Path(run_dir)
    raw = ""
    with contextlib.suppress(RunError):
        raw = ModelSpec.load(run).data_dir
    if not raw:
        raw = _legacy_config_data_dir(run)
    if not raw:
        return None
    for candidate in (Path(raw), run.parent / raw):
        if candidate.is_dir() or (candidate.suffix == ".csv" and candidate.is_file()):
            return candidate
    return None


def _legacy_config_data_dir(run: Path) -> str:

    try:
        cfg = yaml.safe_load((run / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    if not isinstance(cfg, dict):
        return ""
    data = cfg.get("data")  # nested since the config sections; flat before them
    raw = data.get("data_dir") if isinstance(data, dict) else cfg.get("data_dir")
    return raw if isinstance(raw, str) else ""


def read_history(run: Path) -> pd.DataFrame | None:
    """``RUN_DIR/history.csv`` (per-epoch metrics of every stage), or ``None``."""
    path = run / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read the training history (%s)", path, exc)
        return None


def read_training_config(run: Path) -> dict[str, Any] | None:
    """``RUN_DIR/config.yaml`` as a dict, or ``None`` if absent or unreadable."""

    path = run / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        logger.warning("%s: cannot read the training config (%s)", path, exc)
        return None
    return loaded if isinstance(loaded, dict) else None
