"""Model runtimes behind the ``Predictor``: Keras, TFLite (LiteRT + XNNPACK) and ONNX Runtime.

A runtime runs one model graph and nothing else: named float32 arrays in, named
arrays out. Decoding, resizing, test-time augmentation and the decision rule stay
in the ``Predictor``, so every runtime sees the same pixels and is judged by the
same threshold.

    rt = open_runtime("runs/effnet", "auto")       # → TFLiteRuntime when verified
    rt.run({"image": x})                           # → {"probability": (N,) float32}
    rt.predict_batch(x)                            # → the first output, float64

Which runtime ``auto`` picks (``select_runtime``): the fastest one, in the order
measured by ``bench/inference_speed.py`` (:data:`AUTO_ORDER`: TFLite, then ONNX
Runtime, then Keras), whose artefact exists in the run *and* whose recorded parity
with the Keras model on real images meets :data:`AUTO_TOLERANCE` (max |Δp| ≤ 1e-4,
every decision identical) for *this* ``model.keras`` (the record carries its
SHA-256). A run without such an artefact falls back to Keras. int8 is never chosen
automatically: ``tflite-int8`` must be asked for, and its measured parity is shown.

Artefacts live where ``skinlesion export`` writes them (and ``skinlesion train``
writes the float32 TFLite one): ``RUN_DIR/export/<format>[-<quantize>]/`` holding the
model file, ``model_spec.json`` and ``parity.json``.

The interface is deliberately not tied to one image input and one scalar output:
``run`` takes and returns dicts keyed by name (``input_names``/``output_names``), so a
model with a second input (clinical metadata) or several outputs fits the same protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from skinlesion.runspec import MODEL_FILE
from skinlesion.utils.quiet import native_stderr_to_log

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "probability"
EXTRA_HINT = "pip install 'skinlesion[export]'"

RUNTIMES: tuple[str, ...] = ("keras", "tflite", "onnx", "tflite-int8")
"""Runtimes a run can be served with (``tflite-int8`` only on request)."""
RUNTIME_CHOICES: tuple[str, ...] = ("auto", *RUNTIMES)
AUTO_ORDER: tuple[str, ...] = ("tflite", "onnx", "keras")
"""Fastest first, as measured by ``bench/inference_speed.py`` on this project's CPUs
(batch-1: TFLite float32 2.4 ms, ONNX Runtime 2.5 ms, Keras 10.4 ms)."""
AUTO_TOLERANCE: dict[str, float] = {"max_abs_diff": 1e-4, "decision_agreement": 1.0}
"""What a float32 artefact's recorded parity must show for ``auto`` to use it."""
ARTEFACT_DIRS: dict[str, str] = {"tflite": "tflite", "onnx": "onnx", "tflite-int8": "tflite-int8"}
"""Runtime → folder under ``RUN_DIR/export`` (the names ``skinlesion export`` uses)."""
MODEL_FILES: dict[str, str] = {"tflite": "model.tflite", "onnx": "model.onnx",
                               "tflite-int8": "model.tflite"}
PARITY_FILE = "parity.json"


class RuntimeUnavailable(RuntimeError):
    """A runtime cannot be used: its artefact or its package is missing."""


def cpu_threads() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


# === The protocol =================================================================

@runtime_checkable
class Runtime(Protocol):
    """One model graph: named arrays in, named arrays out.

    Attributes:
        name: ``keras``, ``tflite``, ``onnx`` or ``tflite-int8``.
        input_names: The graph's inputs, in order (``("image",)`` for an image model).
        output_names: The graph's outputs, in order (``("probability",)``).
    """

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch: every input ``(N, ...)`` float32, keyed by name; outputs keyed by name."""
        ...

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Raw 0–255 RGB ``(N, S, S, 3)`` (uint8 or float32) → the first output as float64."""
        ...


class _Base:
    name = "base"
    input_names: tuple[str, ...] = (INPUT_NAME,)
    output_names: tuple[str, ...] = (OUTPUT_NAME,)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        out = self.run({self.input_names[0]: np.asarray(images, np.float32)})
        return np.asarray(out[self.output_names[0]], np.float64)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """``(N,)`` P(malignant) for a binary model (what parity checks call)."""
        out = self.predict_batch(images)
        return out.reshape(len(out), -1)[:, 0] if out.ndim > 1 else out

    def _feeds(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing and len(self.input_names) == 1 and len(inputs) == 1:
            return [np.ascontiguousarray(next(iter(inputs.values())), np.float32)]
        unknown = [n for n in inputs if n not in self.input_names]
        if missing or unknown:
            raise ValueError(f"{self.name} runtime: missing input(s) {missing}, unexpected "
                             f"input(s) {unknown}; it takes {list(self.input_names)}")
        return [np.ascontiguousarray(inputs[n], np.float32) for n in self.input_names]


def _clean(name: str) -> str:
    # TFLite names signature tensors "serving_default_image:0"; ONNX keeps "image".
    name = name.split(":")[0]
    for prefix in ("serving_default_", "StatefulPartitionedCall_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


# === Keras ========================================================================

class KerasRuntime(_Base):
    """A Keras model behind one traced ``tf.function`` (unknown batch size: never retraced).

    Args:
        model: The classifier (raw 0–255 RGB in).
    """

    name = "keras"

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        inputs = list(getattr(model, "inputs", None) or [])
        outputs = list(getattr(model, "outputs", None) or [])
        if len(inputs) > 1:
            self.input_names = tuple(_clean(t.name) for t in inputs)
        if len(outputs) > 1:
            self.output_names = tuple(getattr(model, "output_names", None)
                                      or [_clean(t.name) for t in outputs])
        self._fn: Any = None

    def _forward(self) -> Any:
        if self._fn is None:
            import tensorflow as tf

            model = self.model
            specs = [tf.TensorSpec((None, *t.shape[1:]), tf.float32)
                     for t in (model.inputs if getattr(model, "inputs", None) else [])]
            if not specs:  # a subclassed model without a known input
                specs = [tf.TensorSpec(None, tf.float32)]

            @tf.function(input_signature=specs)
            def forward(*xs: Any) -> Any:
                out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
                return out if isinstance(out, list | tuple | dict) else [out]

            self._fn = forward
        return self._fn

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._forward()(*self._feeds(inputs))
        if isinstance(outs, dict):
            return {k: np.asarray(v) for k, v in outs.items()}
        return {n: np.asarray(v) for n, v in zip(self.output_names, outs, strict=True)}


# === TFLite (LiteRT) ==============================================================

class TFLiteRuntime(_Base):
    """A ``.tflite`` model run with LiteRT (``ai_edge_litert``); XNNPACK is its default CPU delegate.

    The interpreter is resized when the batch size changes (a re-allocation that costs
    about a millisecond, far less than a forward pass).

    Args:
        path: The ``.tflite`` file.
        num_threads: Interpreter threads. Defaults to the cores this process may use.
        name: The runtime's name (``tflite`` or ``tflite-int8``).

    Raises:
        RuntimeUnavailable: if ``ai-edge-litert`` is not installed.
    """

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None,
                 name: str = "tflite") -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeUnavailable(f"the TFLite runtime needs ai-edge-litert: {EXTRA_HINT}"
                                     ) from exc
        self.name = name
        self.path = Path(path)
        self.num_threads = num_threads or cpu_threads()

        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++:
        # a debug-level fact, not something to show a user.
        with native_stderr_to_log(logger, "LiteRT"):
            self._interp = Interpreter(model_path=os.fspath(path), num_threads=self.num_threads)
        self._inputs = self._interp.get_input_details()
        self._outputs = self._interp.get_output_details()
        self.input_names = tuple(_clean(d["name"]) for d in self._inputs)
        self.output_names = tuple(_clean(d["name"]) for d in self._outputs)
        if len(self._inputs) == 1:
            self.input_names = (INPUT_NAME,)
        if len(self._outputs) == 1:
            self.output_names = (OUTPUT_NAME,)
        self._shapes: tuple[tuple[int, ...], ...] = ()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self._feeds(inputs)
        shapes = tuple(x.shape for x in feeds)
        if shapes != self._shapes:
            for d, x in zip(self._inputs, feeds, strict=True):
                self._interp.resize_tensor_input(d["index"], list(x.shape))
            with native_stderr_to_log(logger, "LiteRT"):
                self._interp.allocate_tensors()
            self._shapes = shapes
        for d, x in zip(self._inputs, feeds, strict=True):
            dtype = d["dtype"]
            if np.issubdtype(dtype, np.integer):  # a fully-integer model: quantise the input
                scale, zero = d["quantization"]
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
            self._interp.set_tensor(d["index"], x)
        self._interp.invoke()
        result = {}
        for n, d in zip(self.output_names, self._outputs, strict=True):
            out = self._interp.get_tensor(d["index"])
            if np.issubdtype(out.dtype, np.integer):
                scale, zero = d["quantization"]
                out = (out.astype(np.float64) - zero) * scale
            result[n] = np.array(out)  # a copy: the interpreter reuses its buffers
        return result


# === ONNX Runtime =================================================================

class OnnxRuntime(_Base):
    """An ONNX model run with ``onnxruntime`` on the CPU.

    Args:
        path: The ``.onnx`` file.
        num_threads: Intra-op threads. Defaults to the cores this process may use.

    Raises:
        RuntimeUnavailable: if ``onnxruntime`` is not installed.
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable(f"the ONNX runtime needs onnxruntime: {EXTRA_HINT}") from exc
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or cpu_threads()
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(os.fspath(path), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._in = [i.name for i in self._session.get_inputs()]
        self._out = [o.name for o in self._session.get_outputs()]
        self.input_names = tuple(_clean(n) for n in self._in)
        self.output_names = tuple(_clean(n) for n in self._out)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = dict(zip(self._in, self._feeds(inputs), strict=True))
        outs = self._session.run(None, feeds)
        return dict(zip(self.output_names, outs, strict=True))


# === Artefacts, parity records and the choice =====================================

def model_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (hex): ties a parity record to the exact ``model.keras`` it checked."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Artefact:
    """A runtime's model file in a run and what its parity record says.

    Attributes:
        runtime: ``tflite``, ``onnx`` or ``tflite-int8``.
        path: The model file.
        parity: The ``parity.json`` record, or None if there is none.
        problems: Why ``auto`` may not use it (empty when verified).
    """

    runtime: str
    path: Path
    parity: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """Parity recorded for this ``model.keras`` and within :data:`AUTO_TOLERANCE`."""
        return not self.problems

    def parity_summary(self) -> str:
        """One line: the recorded parity with Keras (or that there is none)."""
        p = self.parity or {}
        if not p or p.get("checked") is False or "max_abs_diff" not in p:
            return "no parity with Keras recorded"
        return (f"parity with Keras on {p.get('n_images', '?')} images: max |Δp| "
                f"{p['max_abs_diff']:.2g}, mean |Δp| {p.get('mean_abs_diff', float('nan')):.2g}, "
                f"decisions identical on {100 * p.get('decision_agreement', 0):.1f} %")


def find_artefact(run_dir: str | os.PathLike[str], runtime: str,
                  keras_digest: str | None = None) -> Artefact | None:
    """The artefact for ``runtime`` in ``RUN_DIR/export``, judged against :data:`AUTO_TOLERANCE`.

    Args:
        run_dir: The run.
        runtime: ``tflite``, ``onnx`` or ``tflite-int8``.
        keras_digest: SHA-256 of the run's ``model.keras`` (computed if None).

    Returns:
        The artefact, or None if its model file does not exist.
    """
    folder = Path(run_dir) / "export" / ARTEFACT_DIRS[runtime]
    path = folder / MODEL_FILES[runtime]
    if not path.is_file():
        return None
    parity: dict[str, Any] | None = None
    problems: list[str] = []
    try:
        parity = json.loads((folder / PARITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        problems.append(f"no readable {folder / PARITY_FILE}")
    if parity is not None:
        if parity.get("checked") is False or "max_abs_diff" not in parity:
            problems.append("exported without a parity check")
        else:
            if parity.get("quantize"):
                problems.append(f"{parity['quantize']} (only float32 is chosen automatically)")
            if not parity.get("finite", True):
                problems.append("non-finite outputs")
            if float(parity["max_abs_diff"]) > AUTO_TOLERANCE["max_abs_diff"]:
                problems.append(f"max |Δp| {parity['max_abs_diff']:.2g} > "
                                f"{AUTO_TOLERANCE['max_abs_diff']:g}")
            if float(parity.get("decision_agreement", 0.0)) < AUTO_TOLERANCE["decision_agreement"]:
                problems.append("decisions differ from Keras on some images")
        recorded = parity.get("keras_sha256")
        if recorded is None:
            problems.append("parity record does not name the model.keras it checked "
                            "(re-export to record it)")
        else:
            if keras_digest is None:
                keras_digest = model_digest(Path(run_dir) / MODEL_FILE)
            if recorded != keras_digest:
                problems.append("checked against a different model.keras (re-export)")
    return Artefact(runtime, path, parity, problems)


@dataclass
class Selection:
    """What ``select_runtime`` decided.

    Attributes:
        runtime: The runtime to use.
        artefact: Its artefact (None for Keras).
        note: One line for the user (why this runtime; what was skipped), or "".
    """

    runtime: str
    artefact: Artefact | None
    note: str = ""


def select_runtime(run_dir: str | os.PathLike[str] | None, requested: str = "auto") -> Selection:
    """Choose a runtime for a run (see the module docstring for the ``auto`` rule).

    Args:
        run_dir: The run (None: a model built in memory, which only Keras can run).
        requested: ``auto`` or one of :data:`RUNTIMES`.

    Returns:
        The ``Selection``.

    Raises:
        ValueError: for an unknown runtime name.
        RuntimeUnavailable: if an explicitly requested runtime has no artefact in the run.
    """
    if requested not in RUNTIME_CHOICES:
        raise ValueError(f"unknown runtime {requested!r}; choose one of "
                         f"{', '.join(RUNTIME_CHOICES)}")
    if requested == "keras":
        return Selection("keras", None)
    if run_dir is None:
        if requested == "auto":
            return Selection("keras", None)
        raise RuntimeUnavailable(f"runtime {requested} needs a run folder with its export")

    digest = model_digest(Path(run_dir) / MODEL_FILE)
    if requested != "auto":
        art = find_artefact(run_dir, requested, digest)
        if art is None:
            fmt = "tflite --quantize int8" if requested == "tflite-int8" else requested
            expected = Path(run_dir) / "export" / ARTEFACT_DIRS[requested] / MODEL_FILES[requested]
            raise RuntimeUnavailable(f"{run_dir}: no {requested} model (expected {expected}); "
                                     f"create it with: skinlesion export {run_dir} --format {fmt}")
        note = f"runtime {requested}: {art.parity_summary()}"
        if requested != "tflite-int8" and not art.verified:
            note += f" (not verified: {'; '.join(art.problems)})"
        return Selection(requested, art, note)
    skipped = []
    for name in AUTO_ORDER:
        if name == "keras":
            break
        art = find_artefact(run_dir, name, digest)
        if art is None:
            continue
        if art.verified:
            return Selection(name, art, f"runtime {name} (auto): {art.parity_summary()}")
        skipped.append(f"{name} ({'; '.join(art.problems)})")
    if skipped:
        note = f"runtime keras (auto): not using {', '.join(skipped)}"
    else:
        note = ("runtime keras (auto): the run has no verified TFLite/ONNX export "
                f"(skinlesion export {run_dir} --format tflite adds one)")
    return Selection("keras", None, note)


def open_artefact(art: Artefact, num_threads: int | None = None) -> Runtime:
    """Open an artefact's model with its runtime.

    Raises:
        RuntimeUnavailable: if the runtime's package is missing.
    """
    if art.runtime in ("tflite", "tflite-int8"):
        return TFLiteRuntime(art.path, num_threads, name=art.runtime)
    return OnnxRuntime(art.path, num_threads)
