"""The one inference path: load a run once, predict arrays, files or uploaded bytes.

``Predictor`` is the only code that loads a run for inference: the ``predict``
CLI, the HTTP service, the evaluation report, exports' parity checks and the
benchmarks all go through it, so they cannot disagree about preprocessing,
resizing or the decision rule.

    predictor = Predictor.from_run("runs/effnet")
    rows = predictor.predict_files(["a.jpg", "b.png"], tta=8)
    rows[0].probability, rows[0].decision

Every image is decoded with ``skinlesion.data.pipeline.decode_for_model`` (EXIF
orientation applied, type sniffed from its bytes), resized and rounded with
``skinlesion.data.pipeline.to_model_input`` — the decode and resize the training
pipeline uses, so a file gives the same array here as in training — and fed as raw
0–255 RGB: the normalisation lives inside the model.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skinlesion.data.extensions import IMAGE_EXTENSIONS
from skinlesion.data.images import MAX_PIXELS as MAX_IMAGE_PIXELS
from skinlesion.data.images import ImageError
from skinlesion.data.pipeline import decode_for_model, to_model_input
from skinlesion.inference.runtimes import (
    EXTRA_HINT,
    RuntimeUnavailable,
    open_artefact,
    select_runtime,
)
from skinlesion.inference.scope import DEFAULT_SCOPE, OUT_OF_SCOPE, ScopeRule
from skinlesion.inference.tta import check_tta, dihedral_view
from skinlesion.runspec import MODEL_FILE, ModelSpec, RunError, require_run
from skinlesion.utils.memory import release_freed_memory
from skinlesion.utils.progress import Progress, Tally

if TYPE_CHECKING:
    import keras
    from PIL import Image

    from skinlesion.inference.gradcam import GradCam
    from skinlesion.inference.runtimes import Runtime

logger = logging.getLogger(__name__)

LARGE_DECODE_PIXELS = 8_000_000
"""After decoding an image larger than this, freed memory is returned to the OS."""

NONFINITE_ERROR = "the model produced NaN or Inf for this image (no probability)"
"""The error of a row whose output was not a number: never reported as a probability."""


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or Inf for some images of a batch.

    Attributes:
        probabilities: The batch's outputs clipped to [0, 1], NaN where they were not finite,
            so callers can keep the finite ones and report the others as errors.
    """

    def __init__(self, message: str, probabilities: np.ndarray) -> None:
        super().__init__(message)
        self.probabilities = probabilities


@dataclass
class PredictionRow:
    """One input's result; exactly one of ``probability`` and ``error`` is set.

    Attributes:
        path: The input's path (or upload name).
        probability: P(malignant) in [0, 1], or None if the input failed.
        decision: ``"benign"``, ``"malignant"`` or ``"inconclusive"``; ``"out_of_scope"``
            for an image that is not plausibly a skin photo (``error`` says why; no
            probability); None on any other error.
        error: Why the input failed (e.g. ``"cannot identify image file"``), or None.
        diagnoses: For a diagnosis model, every class as
            ``[{"diagnosis": name, "probability": p}, …]`` (most likely first), else None.
    """

    path: str
    probability: float | None
    decision: str | None
    error: str | None = None
    diagnoses: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable); ``diagnoses`` only for a diagnosis model."""
        out = asdict(self)
        if out["diagnoses"] is None:
            del out["diagnoses"]
        return out


# === Image loading ===

def find_images(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (recursively) and glob patterns into image paths.

    A named file is kept whatever its extension (it gets an error row later if it is
    not an image); folders and globs contribute only files with an image extension.

    Args:
        inputs: Paths, folders or glob patterns (``"photos/**/*.jpg"``).

    Returns:
        ``(paths, problems)``: the image paths in a stable order without duplicates, and a
        message for each input that matched nothing.
    """

    paths: list[Path] = []
    problems: list[str] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        try:
            key = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            key = p.absolute()
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for raw in inputs:
        item = Path(raw)
        # A named symlink that leads nowhere (broken, or a loop) still gets a row saying why.
        if item.is_file() or (item.is_symlink() and not item.exists()):
            add(item)
        elif item.is_dir():
            found = sorted(p for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            for p in found:
                add(p)
        elif glob.has_magic(os.fspath(raw)):
            found = sorted(p for p in _glob_no_symlink_dirs(os.fspath(raw))
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"{raw}: pattern matched no images")
            for p in found:
                add(p)
        else:
            problems.append(f"{item}: no such file or folder")
    return paths, problems


def _glob_no_symlink_dirs(pattern: str) -> Iterator[Path]:
    """Expand a glob pattern without following symlinked folders under ``**``.

    ``glob.glob(recursive=True)`` follows symlinks to folders, so one link to ``..``
    under ``photos/`` made ``'photos/**/*.jpg'`` recurse until paths hit the OS limit
    (it hangs for minutes). ``pathlib``'s ``**`` does not descend into symlinked
    folders; a symlinked *file* is still matched. Hidden entries are skipped, as
    ``glob`` does.
    """

    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first]) if first else Path()
    rest = "/".join(parts[first:])
    for p in base.glob(rest):
        if not any(part.startswith(".") for part in p.relative_to(base).parts):
            yield p


# === The predictor ===

def _load_keras(run: Path) -> keras.Model:
    import keras

    # Importing the backbones registers their custom layers (EfficientNet-Lite, the
    # Preprocess layer, colour constancy, the diagnosis output) so deserialisation finds them.
    import skinlesion.models.backbones
    import skinlesion.models.layers
    import skinlesion.models.preprocessing  # noqa: F401

    try:
        return keras.saving.load_model(run / MODEL_FILE, compile=False)
    except Exception as exc:  # corrupt zip, unknown layer, version mismatch
        raise RunError(f"{run / MODEL_FILE}: cannot load the model ({exc})") from exc


class Predictor:
    """A loaded run: its ``ModelSpec`` and the model, run by one runtime.

    The runtime (``skinlesion.inference.runtimes``: Keras, TFLite or ONNX Runtime) only
    runs the graph; decoding, resizing, TTA and the decision rule live here, so every
    runtime sees the same pixels. Grad-CAM always uses the Keras model.

    Thread-safe: calls into the model are serialised by a lock (neither Keras models nor
    TFLite interpreters are re-entrant, and on a CPU one forward pass already uses every
    core).

    Args:
        model: The Keras classifier (raw 0–255 RGB ``(N, S, S, 3)`` → ``(N, 1)``
            P(malignant)), or None to load it from ``run_dir`` when first needed.
        spec: Its model spec.
        run_dir: The run folder it came from, if any.
        runtime: What runs the model (default: a ``KerasRuntime`` of ``model``).
        runtime_note: One line on how the runtime was chosen (the CLI shows it).
        scope: When an image is answered "out of scope" instead of with a probability
            (``skinlesion.inference.scope``); None disables the check.

    Attributes:
        model: The Keras model (see ``runtime`` for what predictions use).
        spec: The run's ``ModelSpec`` (threshold, inconclusive band, Grad-CAM layer, ...).
        run_dir: The run folder (``None`` for a model built in memory).
        input_size: Square input size in pixels.
    """

    def __init__(self, model: keras.Model | None, spec: ModelSpec,
                 run_dir: str | os.PathLike[str] | None = None, *,
                 runtime: Runtime | None = None, runtime_note: str = "",
                 scope: ScopeRule | None = DEFAULT_SCOPE) -> None:
        self._model = model
        self.scope = scope
        self.spec = spec
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.input_size = int(spec.input_size)
        if model is None and (runtime is None or self.run_dir is None):
            raise ValueError("a Predictor needs a Keras model, or a runtime and its run folder")
        if model is not None:
            self._check_input(model)
        self._lock = threading.RLock()
        self._runtime = runtime
        self.runtime_note = runtime_note
        self._cam: GradCam | None = None
        self.encoder = spec.metadata_encoder
        self.diagnosis_classes: list[str] = spec.diagnosis_classes
        if model is not None:
            self._check_metadata(model)

    def _check_input(self, model: keras.Model) -> None:
        shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
        if shape is not None and shape[1:3] not in ((self.input_size, self.input_size), (None, None)):
            raise RunError(f"model input {shape} does not match model_spec input_size "
                           f"{self.input_size}")

    def _check_metadata(self, model: keras.Model) -> None:
        from skinlesion.models.classifier import model_metadata_dim

        want = model_metadata_dim(model) if getattr(model, "inputs", None) else 0
        have = self.encoder.dim if self.encoder is not None else 0
        if want != have:
            raise RunError(f"model takes {want} metadata value(s) but model_spec.json describes "
                           f"{have}")

    def _run_runtime(self, runtime: Runtime, images: np.ndarray, meta: np.ndarray) -> np.ndarray:
        """One forward pass through the runtime: ``(n, 1)`` or ``(n, 1 + K)`` float64."""
        from skinlesion.models.classifier import INPUT_NAME, METADATA_INPUT

        n = len(images)
        feeds = {INPUT_NAME: images}
        if self.encoder is not None:
            feeds[METADATA_INPUT] = meta
        out = runtime.run(feeds)
        first = np.asarray(out[runtime.output_names[0]], np.float64)
        width = 1 + len(self.diagnosis_classes)
        if first.size != n * width:
            raise ValueError(f"the model returned shape {first.shape} for {n} image(s); expected "
                             f"{width} value(s) per image")
        return first.reshape(n, width)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str], *, runtime: str = "auto",
                 num_threads: int | None = None) -> Predictor:
        """Load a run once: ``model_spec.json`` and the model, run by ``runtime``.

        Args:
            run_dir: A finished run.
            runtime: ``auto`` (the fastest verified runtime, see
                ``skinlesion.inference.runtimes``), ``keras``, ``tflite``, ``onnx`` or
                ``tflite-int8``. Defaults to ``auto``. With another runtime than Keras,
                ``model.keras`` is loaded only when needed (Grad-CAM, ``with_runtime``).
            num_threads: Threads of a TFLite/ONNX runtime (default: the usable cores).

        Raises:
            RunError: if the folder is not a finished run, the model cannot be loaded, or an
                explicitly requested runtime has no artefact or package.
        """

        run = require_run(run_dir)
        spec = ModelSpec.load(run)
        try:
            choice = select_runtime(run, runtime)
        except (RuntimeUnavailable, ValueError) as exc:
            raise RunError(str(exc)) from exc
        note = choice.note
        if choice.artefact is not None:
            try:
                rt = open_artefact(choice.artefact, num_threads)
            except RuntimeUnavailable as exc:
                if runtime != "auto":
                    raise RunError(str(exc)) from exc
                note = f"runtime keras (auto): {choice.runtime} needs a package: {EXTRA_HINT}"
            else:
                logger.info("loaded %s (%s runtime, %s, %d px, threshold %.3f)", run,
                            choice.runtime, spec.backbone, spec.input_size, spec.threshold)
                return cls(None, spec, run, runtime=rt, runtime_note=note)
        model = _load_keras(run)
        logger.info("loaded %s (%s, %d px, threshold %.3f)", run, spec.backbone,
                    spec.input_size, spec.threshold)
        return cls(model, spec, run, runtime_note=note)

    # --- the model and its runtime ---

    @property
    def model(self) -> keras.Model:
        """The Keras model (loaded from the run on first use when another runtime serves)."""
        with self._lock:
            if self._model is None:
                assert self.run_dir is not None
                model = _load_keras(self.run_dir)
                self._check_input(model)
                self._check_metadata(model)
                self._model = model
            return self._model

    @property
    def runtime(self) -> Runtime:
        """What runs the model: a ``skinlesion.inference.runtimes`` runtime (Keras by default)."""
        with self._lock:
            if self._runtime is None:
                from skinlesion.inference.runtimes import KerasRuntime

                self._runtime = KerasRuntime(self.model)
            return self._runtime

    @property
    def runtime_name(self) -> str:
        """``keras``, ``tflite``, ``onnx`` or ``tflite-int8``."""
        return "keras" if self._runtime is None else self._runtime.name

    def with_runtime(self, runtime: str) -> Predictor:
        """The same run served by another runtime (``keras`` shares this Predictor's model).

        Raises:
            RunError: as ``from_run``.
        """
        if runtime == self.runtime_name:
            return self
        if runtime == "keras":
            return Predictor(self.model, self.spec, self.run_dir, scope=self.scope)
        if self.run_dir is None:
            raise RunError(f"runtime {runtime} needs a run folder with its export")
        other = Predictor.from_run(self.run_dir, runtime=runtime)
        other.spec = self.spec
        return other

    # --- decisions ---

    @property
    def threshold(self) -> float:
        """The stored decision threshold on P(malignant)."""
        return float(self.spec.threshold)

    @property
    def model_id(self) -> str:
        """The run's model id (from the spec), or the run folder's name."""
        return self.spec.model_id or (self.run_dir.name if self.run_dir else "in-memory")

    def decide(self, probability: float) -> str:
        """The decision for one probability at the stored operating point.

        ``"inconclusive"`` when ``|p − threshold| < inconclusive_band`` (band > 0 only),
        else ``"malignant"`` when ``p >= threshold``, else ``"benign"``.
        """
        p, t = float(probability), self.threshold
        band = float(self.spec.inconclusive_band or 0.0)
        if band > 0.0 and abs(p - t) < band:
            return "inconclusive"
        names = self.spec.class_names if len(self.spec.class_names) == 2 else ["benign", "malignant"]
        return names[1] if p >= t else names[0]

    # --- arrays ---

    @property
    def uses_metadata(self) -> bool:
        """The model takes clinical metadata (age/sex/site) beside the image."""
        return self.encoder is not None

    def encode_metadata(self, records: Sequence[dict[str, Any] | None] | None, n: int) -> np.ndarray:
        """Metadata rows (dicts with ``age``/``sex``/``site``; None = unknown) → model input.

        Missing records, missing keys and invalid values count as unknown; for an
        image-only model the result is an empty ``(n, 0)`` array.
        """
        if self.encoder is None:
            return np.zeros((n, 0), dtype=np.float32)
        rows = [dict(r) if r else {} for r in (records or [None] * n)]
        if len(rows) != n:
            raise ValueError(f"got {len(rows)} metadata rows for {n} images")
        return self.encoder.encode(rows)

    def predict_outputs(self, images: np.ndarray, *, metadata: np.ndarray | None = None,
                        tta: int = 1, batch_size: int = 32) -> np.ndarray:
        """The model's whole output for a batch: ``(N, 1)`` or ``(N, 1 + K)`` (diagnosis model).

        Column 0 is P(malignant); a diagnosis model's columns 1… are its class probabilities
        (``diagnosis_classes`` order). Views are averaged in probability space.

        Args:
            images: ``(N, S, S, 3)`` float 0–255 RGB at the model's input size.
            metadata: ``(N, D)`` encoded metadata (``encode_metadata``); None = all unknown.
            tta: Number of dihedral views averaged (1, 2, 4 or 8). Defaults to 1.
            batch_size: Images per forward pass. Defaults to 32.

        Raises:
            ValueError: on a wrong shape or ``tta``.
            NonFiniteOutputError: (a RuntimeError) if the model produced NaN or Inf.
        """
        tta = check_tta(tta)
        x = np.asarray(images, dtype=np.float32)
        s = self.input_size
        if x.ndim != 4 or x.shape[1:] != (s, s, 3):
            raise ValueError(f"expected images of shape (N, {s}, {s}, 3), got {x.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        width = 1 + len(self.diagnosis_classes)
        if len(x) == 0:
            return np.zeros((0, width), dtype=np.float64)
        meta = self.encode_metadata(None, len(x)) if metadata is None else np.asarray(
            metadata, dtype=np.float32)
        if meta.shape != (len(x), self.encode_metadata(None, 0).shape[1]):
            raise ValueError(f"expected metadata of shape ({len(x)}, "
                             f"{self.encoder.dim if self.encoder else 0}), got {meta.shape}")
        out = np.empty((len(x), width), dtype=np.float64)
        with self._lock:
            runtime = self.runtime
            for start in range(0, len(x), batch_size):
                chunk = x[start:start + batch_size]
                mchunk = meta[start:start + batch_size]
                acc = np.zeros((len(chunk), width), dtype=np.float64)
                for view in range(tta):
                    xv = chunk if view == 0 else np.ascontiguousarray(dihedral_view(chunk, view))
                    acc += self._run_runtime(runtime, xv, mchunk)
                out[start:start + len(chunk)] = acc / tta
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            out[bad] = np.nan
            raise NonFiniteOutputError(f"the model produced NaN or Inf probabilities for "
                                       f"{int(bad.sum())} of {len(out)} image(s)",
                                       np.clip(out[:, 0], 0.0, 1.0))
        return np.clip(out, 0.0, 1.0)

    def predict_arrays(self, images: np.ndarray, *, tta: int = 1, batch_size: int = 32,
                       metadata: np.ndarray | None = None) -> np.ndarray:
        """P(malignant) for a batch of model-sized images.

        Args:
            images: ``(N, S, S, 3)`` float 0–255 RGB at the model's input size
                (``to_model_input`` output).
            tta: Number of dihedral views averaged (1, 2, 4 or 8). Defaults to 1.
            batch_size: Images per forward pass. Defaults to 32.
            metadata: ``(N, D)`` encoded clinical metadata (``encode_metadata``); None =
                unknown (always allowed).

        Returns:
            ``(N,)`` float64 probabilities in [0, 1].

        Raises:
            ValueError: on a wrong shape or ``tta``.
            NonFiniteOutputError: (a RuntimeError) if the model produced NaN or Inf.
        """
        return self.predict_outputs(images, metadata=metadata, tta=tta,
                                    batch_size=batch_size)[:, 0]

    def top_diagnoses(self, outputs: np.ndarray, k: int | None = None
                      ) -> list[dict[str, Any]] | None:
        """The diagnoses of one output row, most likely first (all, or the top ``k``);
        None for a binary model."""
        if not self.diagnosis_classes:
            return None
        probs = np.asarray(outputs, dtype=np.float64)[1:]
        order = np.argsort(-probs, kind="stable")[:k]
        return [{"diagnosis": self.diagnosis_classes[i], "probability": round(float(probs[i]), 6)}
                for i in order]

    def predict_array(self, image: np.ndarray, *, tta: int = 1) -> float:
        """P(malignant) for one model-sized image ``(S, S, 3)``."""
        return float(self.predict_arrays(np.asarray(image)[None], tta=tta)[0])

    # --- heatmaps ---

    @property
    def gradcam(self) -> GradCam:
        """Grad-CAM at the spec's ``last_conv_layer``, built on first use.

        Raises:
            GradCamError: if the model's structure does not allow it.
        """
        with self._lock:
            if self._cam is None:
                from skinlesion.inference.gradcam import GradCam

                self._cam = GradCam.from_spec(self.model, self.spec)
            return self._cam

    def heatmaps(self, images: np.ndarray) -> np.ndarray:
        """Grad-CAM maps ``(N, S, S)`` in [0, 1] for model-sized images (identity view)."""
        return self.gradcam.heatmaps(images)

    # --- files and bytes ---

    def decode(self, source: str | os.PathLike[str] | bytes, *, name: str | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS, check_scope: bool = True) -> Image.Image:
        """Decode a file or bytes for this model: reduced, then checked against the scope rule.

        The one place ``predict``, the Predictor's batch methods and the service decode an
        image, with the training pipeline's decoder (``decode_for_model``). It is decoded
        *reduced* (``open_image(reduce_for=input_size)``: JPEG DCT scaling,
        ``Image.reduce`` for other formats) so each side is at most about four times, and
        at least twice, the model input before the model's own resize: memory per image is
        the decoded file plus a small copy, whatever its size.

        Raises:
            ImageError: if it is not a readable image, or is larger than ``max_pixels``.
            OutOfScopeError: (an ImageError) if ``check_scope`` and the image is not
                plausibly a skin photo (``self.scope``).
        """
        label = name or (os.fspath(source) if not isinstance(source, bytes | bytearray | memoryview)
                         else "<bytes>")
        img = decode_for_model(source, self.input_size, name=label, max_pixels=max_pixels)
        w, h = img.info.get("original_size", img.size)
        if w * h > LARGE_DECODE_PIXELS:
            # The full-size buffers are free now; give them back to the OS instead of
            # keeping them in the allocator (RSS would stay at the peak).
            release_freed_memory()
        if check_scope and self.scope is not None:
            self.scope.check(img, label, img.info.get("original_size"))
        return img

    def load_image(self, source: str | os.PathLike[str] | bytes, *, name: str | None = None,
                   max_pixels: int = MAX_IMAGE_PIXELS, check_scope: bool = True) -> np.ndarray:
        """Decode a file or bytes (see :meth:`decode`) and resize it to the model input
        ``(S, S, 3)`` float32 0–255 (whole grey levels: the array the training pipeline
        makes of the same file).

        Raises:
            ImageError: if it is not a readable image, is larger than ``max_pixels``, or
                is out of scope.
        """
        img = self.decode(source, name=name, max_pixels=max_pixels, check_scope=check_scope)
        return to_model_input(img, self.input_size)

    def row(self, path: str, probability: float,
            outputs: np.ndarray | None = None) -> PredictionRow:
        """A successful ``PredictionRow`` for ``probability`` (``outputs``: the whole output
        row, for a diagnosis model's top diagnoses)."""
        return PredictionRow(path=path, probability=float(probability),
                             decision=self.decide(probability), error=None,
                             diagnoses=self.top_diagnoses(outputs) if outputs is not None else None)

    def predict_bytes(self, data: bytes, name: str = "upload", *, tta: int = 1,
                      max_pixels: int = MAX_IMAGE_PIXELS,
                      metadata: dict[str, Any] | None = None) -> PredictionRow:
        """Predict one image given as raw bytes (an upload); its type is sniffed from the bytes.

        Args:
            data: The image bytes.
            name: Label of the upload in the result and in errors.
            tta: Dihedral views averaged.
            max_pixels: Pixel-count limit.
            metadata: ``{"age", "sex", "site"}`` for a model that uses them (any may be
                missing; ignored by an image-only model).

        Raises:
            ImageError: if ``data`` is not a readable image or is over ``max_pixels``
                (the service answers 422).
        """
        x = self.load_image(data, name=name, max_pixels=max_pixels)
        out = self.predict_outputs(x[None], metadata=self.encode_metadata([metadata], 1),
                                   tta=tta)[0]
        return self.row(name, out[0], out)

    def iter_predict_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        tta: int = 1,
        batch_size: int = 32,
        progress: Progress | None = None,
        workers: int = 2,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        check_scope: bool = True,
    ) -> Iterator[PredictionRow]:
        """Predict image files lazily, in input order, holding at most two batches in memory.

        Decoding of the next batch (threads: Pillow releases the GIL) overlaps the model's
        forward pass on the current one. A file that cannot be read yields a row with its
        ``error`` set and never stops the run.

        Args:
            paths: Image files.
            tta: Dihedral views averaged (1, 2, 4 or 8). Defaults to 1.
            batch_size: Images per forward pass. Defaults to 32.
            progress: Gets a count event of task ``"predict"`` after each batch (total = the
                number of paths when known).
            workers: Decoding threads. Defaults to 2.
            metadata: One ``{"age", "sex", "site"}`` dict (or None) per path, in order, for a
                model that uses clinical metadata; None = unknown for every image.
            check_scope: Answer out-of-scope images (``self.scope``) with decision
                ``"out_of_scope"`` and an error saying why, instead of a probability.
                ``evaluate`` turns it off: a test set is scored whole.

        Yields:
            One ``PredictionRow`` per path.
        """
        check_tta(tta)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        def load(p: str) -> np.ndarray | str:
            try:
                return self.load_image(p, check_scope=check_scope)
            except ImageError as exc:
                return f"{p}: {exc.reason}"
            except Exception as exc:  # never let one file stop the batch
                logger.debug("unexpected error reading %s", p, exc_info=True)
                return f"{p}: {type(exc).__name__}: {exc}"

        meta_iter = iter(metadata) if metadata is not None else None
        tally = Tally(progress, "predict", len(paths) if isinstance(paths, Sized) else None)

        def chunks() -> Iterator[tuple[list[str], list[dict[str, Any] | None]]]:
            buf: list[str] = []
            mbuf: list[dict[str, Any] | None] = []
            for p in paths:
                buf.append(os.fspath(p))
                mbuf.append(next(meta_iter, None) if meta_iter is not None else None)
                if len(buf) == batch_size:
                    yield buf, mbuf
                    buf, mbuf = [], []
            if buf:
                yield buf, mbuf

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
            it = chunks()

            def submit() -> tuple[list[str], list[Any], list[Future[np.ndarray | str]]] | None:
                nxt = next(it, None)
                if nxt is None:
                    return None
                return nxt[0], nxt[1], [pool.submit(load, p) for p in nxt[0]]

            pending = submit()
            while pending is not None:
                names, metas, futures = pending
                loaded = [f.result() for f in futures]
                pending = submit()  # decode the next batch while this one runs
                yield from self._predict_loaded(names, loaded, tta, metas)
                tally.add(len(names))
        tally.close()

    def _predict_loaded(self, names: Sequence[str], loaded: Sequence[np.ndarray | str],
                        tta: int, metas: Sequence[dict[str, Any] | None] | None = None,
                        ) -> list[PredictionRow]:
        good = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
        probs: dict[int, float] = {}
        full: dict[int, np.ndarray] = {}
        if good:
            batch = np.stack([loaded[i] for i in good])  # type: ignore[misc]
            meta = self.encode_metadata([metas[i] if metas else None for i in good], len(good))
            try:
                outs = self.predict_outputs(batch, metadata=meta, tta=tta, batch_size=len(batch))
                out = outs[:, 0]
                full = {i: o for i, o in zip(good, outs, strict=True)}
            except NonFiniteOutputError as exc:  # only those images fail, not the batch
                out = exc.probabilities
            for i, p in zip(good, out, strict=True):
                probs[i] = float(p)
        rows = []
        for i, name in enumerate(names):
            item = loaded[i]
            if isinstance(item, str):
                msg = item[len(name) + 2:] if item.startswith(f"{name}: ") else item
                rows.append(PredictionRow(path=name, probability=None, error=msg,
                                          decision="out_of_scope" if msg.startswith(OUT_OF_SCOPE)
                                          else None))
            elif not np.isfinite(probs[i]):
                rows.append(PredictionRow(path=name, probability=None, decision=None,
                                          error=NONFINITE_ERROR))
            else:
                rows.append(self.row(name, probs[i], full.get(i)))
        return rows

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        tta: int = 1,
        batch_size: int = 32,
        progress: Progress | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        check_scope: bool = True,
    ) -> list[PredictionRow]:
        """Predict image files; see ``iter_predict_files`` (this collects its rows in a list)."""
        return list(self.iter_predict_files(paths, tta=tta, batch_size=batch_size,
                                            progress=progress, metadata=metadata,
                                            check_scope=check_scope))
