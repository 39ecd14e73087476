"""Exporting a run for servers and phones: SavedModel, TFLite (float32/float16/int8), ONNX.

Every format keeps the run's contract: raw 0–255 RGB float32 ``(N, S, S, 3)`` in
(the normalisation is inside the graph), P(malignant) ``(N,)`` out, named ``image``
and ``probability``. The route, chosen because it works with TF 2.21 / Keras 3:

* **SavedModel** — ``keras.export.ExportArchive`` (what ``model.export()`` uses) with one
  ``serve`` endpoint, also the ``serving_default`` signature TF Serving calls.
* **TFLite** — ``tf.lite.TFLiteConverter.from_saved_model`` on that SavedModel; run with
  ``ai_edge_litert`` (``tf.lite.Interpreter`` is deprecated). ``float16`` stores weights in
  half precision; ``int8`` quantises weights and activations, calibrated on a
  representative sample of the training split (ops without an int8 kernel stay float;
  input and output stay float32, so every format is called the same way).
* **ONNX** — ``tf2onnx.convert.from_function`` on the SavedModel's serving signature
  (independent of tf2onnx's Keras-version support), run with ``onnxruntime``.

Each export is checked against the Keras model on real images (``parity.py``) and
written atomically: a temporary folder holding the model, ``model_spec.json`` and
``parity.json`` is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skinlesion.inference import runtimes as _rt
from skinlesion.utils.quiet import native_stderr_to_log

if TYPE_CHECKING:
    from skinlesion.inference.predictor import Predictor

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS: tuple[str, ...] = ("float16", "int8")
PARITY_FILE = "parity.json"
MODEL_FILES: dict[str, str] = {"savedmodel": "saved_model.pb", "tflite": "model.tflite",
                               "onnx": "model.onnx"}
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
ONNX_OPSET = 17


EXTRA_INSTALL = "pip install 'skinlesion[export]'"

# Which libraries each format needs: (module, distribution, what for). Checked before any
# conversion starts, so a missing one costs nothing.
_LIBRARIES: dict[str, tuple[tuple[str, str, str, bool], ...]] = {
    # (module, distribution, purpose, needed only for the parity check)
    "savedmodel": (),
    "tflite": (("ai_edge_litert", "ai-edge-litert", "running TFLite", True),),
    "onnx": (("tf2onnx", "tf2onnx", "ONNX export", False),
             ("onnxruntime", "onnxruntime", "running ONNX", True)),
}


class ExportError(ValueError):
    """An export that cannot be made (bad option, missing library, no check images)."""


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_libraries(fmt: str, *, check: bool = True) -> list[str]:
    """``"<purpose> needs <distribution>"`` for each library ``fmt`` needs and lacks.

    Args:
        fmt: ``savedmodel``, ``tflite`` or ``onnx``.
        check: Whether the parity check will run (it needs the format's runtime).
    """
    return [f"{purpose} needs {dist}" for module, dist, purpose, for_check in _LIBRARIES.get(fmt, ())
            if (check or not for_check) and not _have(module)]


def require_libraries(fmt: str, *, check: bool = True) -> None:
    """Raise before any work if ``fmt`` needs a library that is not installed.

    Raises:
        ExportError: naming the libraries and the install command (the ``export`` extra).
    """
    missing = missing_libraries(fmt, check=check)
    if missing:
        raise ExportError(f"{'; '.join(missing)}: {EXTRA_INSTALL}")


@dataclass
class ExportResult:
    """What ``export_run`` produced.

    Attributes:
        path: The export folder (model file, ``model_spec.json``, ``parity.json``).
        model_file: The model file (or the SavedModel folder).
        format: ``savedmodel``, ``tflite`` or ``onnx``.
        quantize: ``float16``, ``int8`` or None.
        parity: The parity record (see ``parity.check_parity``), or None if skipped.
        size_bytes: Size of the model on disk.
    """

    path: Path
    model_file: Path
    format: str
    quantize: str | None
    parity: dict[str, Any] | None
    size_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)


# === Converters ===

def export_savedmodel(predictor: Predictor, target: str | os.PathLike[str]) -> Path:
    """Write a TF Serving SavedModel of the run's model into ``target`` (a new folder).

    Signature ``serving_default`` (= endpoint ``serve``): ``image`` float32
    ``(None, S, S, 3)`` raw 0–255 RGB (plus ``metadata`` float32 ``(None, D)``, the encoded
    age/sex/site of ``model_spec.json``, for a model trained with metadata) →
    ``probability`` float32: ``(None,)`` P(malignant) for a binary model, ``(None, 1 + K)``
    ``[P(malignant), P(class 1…K)]`` for a diagnosis model.
    """
    import keras
    import tensorflow as tf

    from skinlesion.models.classifier import METADATA_INPUT

    model = predictor.model
    size = predictor.input_size
    width = 1 + len(predictor.diagnosis_classes)
    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME)]

    def shape_out(y: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: tf.reshape(y, (-1,) if width == 1 else (-1, width))}

    if predictor.encoder is not None:
        signature.append(tf.TensorSpec((None, predictor.encoder.dim), tf.float32,
                                       name=METADATA_INPUT))

        def serve_meta(image: Any, metadata: Any) -> dict[str, Any]:
            return shape_out(model({INPUT_NAME: image, METADATA_INPUT: metadata},
                                   training=False))

        archive.add_endpoint("serve", serve_meta, input_signature=signature)
    else:
        def serve(image: Any) -> dict[str, Any]:
            return shape_out(model(image, training=False))

        archive.add_endpoint("serve", serve, input_signature=signature)
    archive.write_out(os.fspath(target), verbose=False)
    return Path(target)


def export_tflite(saved_model: str | os.PathLike[str], target: str | os.PathLike[str], *,
                  quantize: str | None = None,
                  representative: np.ndarray | None = None,
                  metadata: np.ndarray | None = None) -> Path:
    """Convert a SavedModel from ``export_savedmodel`` to a ``.tflite`` file.

    Args:
        saved_model: The SavedModel folder.
        target: The ``.tflite`` file to write.
        quantize: None (float32), ``"float16"`` or ``"int8"``.
        representative: For int8: ``(N, S, S, 3)`` float32 0–255 calibration images.
        metadata: For int8 of a metadata model: encoded metadata rows to calibrate with.

    Raises:
        ExportError: for int8 without representative images.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative is None or len(representative) == 0:
            raise ExportError("int8 quantisation needs representative images for calibration")
        images = np.asarray(representative, np.float32)

        def dataset() -> Iterator[Any]:
            for i in range(len(images)):
                if metadata is None:
                    yield [images[i:i + 1]]
                else:  # calibrate the metadata path too, cycling through its rows
                    yield {INPUT_NAME: images[i:i + 1],
                           "metadata": metadata[i % len(metadata)][None]}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
    elif quantize is not None:
        raise ExportError(f"unknown quantisation {quantize!r}; choose {', '.join(QUANTIZATIONS)}")
    # The converter prints a line of its settings ("fully_quantize: 0, inference_type: 6, …")
    # straight to stderr from C++; it says nothing a user needs (logged at debug level).
    with native_stderr_to_log(logger, "the TFLite converter"):
        flatbuffer = converter.convert()
    Path(target).write_bytes(flatbuffer)
    return Path(target)


def export_onnx(saved_model: str | os.PathLike[str], target: str | os.PathLike[str], *,
                input_size: int, opset: int = ONNX_OPSET, metadata_dim: int = 0) -> Path:
    """Convert a SavedModel from ``export_savedmodel`` to ONNX with tf2onnx.

    Raises:
        ExportError: if tf2onnx is not installed (``pip install 'skinlesion[export]'``).
    """
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError as exc:
        raise ExportError(f"ONNX export needs tf2onnx: {EXTRA_INSTALL}") from exc
    loaded = tf.saved_model.load(os.fspath(saved_model))
    signature = loaded.signatures["serving_default"]
    specs = [tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=INPUT_NAME)]
    if metadata_dim:
        specs.append(tf.TensorSpec((None, metadata_dim), tf.float32, name="metadata"))

        @tf.function(input_signature=specs, autograph=False)
        def serve(image: Any, metadata: Any) -> dict[str, Any]:
            return {OUTPUT_NAME: signature(image=image, metadata=metadata)[OUTPUT_NAME]}
    else:
        @tf.function(input_signature=specs, autograph=False)
        def serve(image: Any) -> dict[str, Any]:  # type: ignore[misc]
            return {OUTPUT_NAME: signature(image=image)[OUTPUT_NAME]}

    # tf2onnx logs a traceback when one of its optional graph optimisations does not
    # apply (a scalar Add in the preprocessing); the conversion itself is unaffected.
    with _quiet_logger("tf2onnx"):
        tf2onnx.convert.from_function(serve, input_signature=specs, opset=opset,
                                      output_path=os.fspath(target))
    return Path(target)


@contextlib.contextmanager
def _quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    log = logging.getLogger(name)
    old = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(old)


# === Runtimes (what parity checks and benchmarks call) ===

class SavedModelRuntime(_rt._Base):
    """A SavedModel's ``serving_default`` signature (the runtime protocol of ``runtimes.py``)."""

    name = "savedmodel"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tensorflow as tf

        self._fn = tf.saved_model.load(os.fspath(path)).signatures["serving_default"]
        _, kwargs = self._fn.structured_input_signature
        names = sorted(kwargs)
        # The image first: single-input callers feed it positionally.
        self.input_names = tuple([INPUT_NAME] + [n for n in names if n != INPUT_NAME]
                                 if INPUT_NAME in names else names)
        self.output_names = (OUTPUT_NAME,)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        feeds = dict(zip(self.input_names, self._feeds(inputs), strict=True))
        out = self._fn(**{k: tf.constant(v) for k, v in feeds.items()})
        return {OUTPUT_NAME: np.asarray(out[OUTPUT_NAME])}


# The TFLite and ONNX runtimes live in ``runtimes.py`` (the Predictor uses them too).
TFLiteRuntime = _rt.TFLiteRuntime
OnnxRuntime = _rt.OnnxRuntime


def load_runtime(path: str | os.PathLike[str], num_threads: int | None = None
                 ) -> SavedModelRuntime | TFLiteRuntime | OnnxRuntime:
    """Open an exported model (an export folder, a SavedModel folder, a .tflite or .onnx file).

    Raises:
        ExportError: if ``path`` is none of those.
    """
    try:
        return _open(Path(path), num_threads)
    except _rt.RuntimeUnavailable as exc:
        raise ExportError(str(exc)) from exc


def _open(p: Path, num_threads: int | None) -> SavedModelRuntime | TFLiteRuntime | OnnxRuntime:
    if p.is_dir():
        if (p / MODEL_FILES["savedmodel"]).is_file():
            return SavedModelRuntime(p)
        for fmt in ("tflite", "onnx"):
            if (p / MODEL_FILES[fmt]).is_file():
                return _open(p / MODEL_FILES[fmt], num_threads)
    elif p.suffix == ".tflite":
        return TFLiteRuntime(p, num_threads)
    elif p.suffix == ".onnx":
        return OnnxRuntime(p, num_threads)
    raise ExportError(f"{p}: not an exported model (expected a SavedModel folder, "
                      "model.tflite or model.onnx)")


# === The export command's orchestrator ===

def read_parity(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``parity.json`` of an export folder."""
    return json.loads((Path(export_dir) / PARITY_FILE).read_text(encoding="utf-8"))
