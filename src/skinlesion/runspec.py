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
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from skinlesion.utils.atomic import atomic_write_json

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
    def from_dict(cls, data: dict[str, Any], where: str = SPEC_FILE) -> ModelSpec:
        """Build from a dict, ignoring unknown keys (forward compatibility).

        Raises:
            RunError: if a required key is missing or a value is out of range.
        """
        known = {f.name for f in fields(cls)}
        for key in ("backbone", "input_size"):
            if key not in data:
                raise RunError(f"{where}: missing key {key!r}")
        spec = cls(**{k: v for k, v in data.items() if k in known})
        if not 0.0 <= float(spec.threshold) <= 1.0:
            raise RunError(f"{where}: threshold {spec.threshold} is outside [0, 1]")
        if int(spec.input_size) < 8:
            raise RunError(f"{where}: input_size {spec.input_size} is too small")
        return spec

    @property
    def diagnosis_classes(self) -> list[str]:
        """The diagnosis class names (empty for a binary model)."""
        return list((self.diagnosis or {}).get("classes", [])) if self.target == "diagnosis" else []

    @property
    def metadata_encoder(self) -> Any:
        """The ``MetadataEncoder`` of the model's metadata input, or None (image only)."""
        if not self.metadata:
            return None
        from skinlesion.data.metadata import MetadataEncoder

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
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, where=str(path))


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
