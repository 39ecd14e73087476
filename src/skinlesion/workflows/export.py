"""``export_run``: a run as SavedModel, TFLite or ONNX, checked against Keras, written atomically.

The converters, the runtimes and the parity check live in :mod:`skinlesion.inference`
(``export.py``, ``runtimes.py``, ``parity.py``); this module chooses the images, runs the
steps in order and writes the export folder: a temporary folder holding the model,
``model_spec.json`` and ``parity.json`` is renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.inference import runtimes as _rt
from skinlesion.inference.export import (
    FORMATS,
    INPUT_NAME,
    MODEL_FILES,
    OUTPUT_NAME,
    PARITY_FILE,
    QUANTIZATIONS,
    ExportError,
    ExportResult,
    export_onnx,
    export_savedmodel,
    export_tflite,
    load_runtime,
    require_libraries,
)
from skinlesion.inference.parity import (
    ImageSample,
    ParityError,
    check_parity,
    load_sample,
    parity_metadata,
    sample_images,
)
from skinlesion.inference.predictor import Predictor
from skinlesion.runspec import MODEL_FILE, SPEC_FILE, training_data_dir
from skinlesion.utils.atomic import atomic_write_json
from skinlesion.utils.progress import Progress, say


def default_out_dir(run_dir: str | os.PathLike[str], fmt: str, quantize: str | None) -> Path:
    """``RUN_DIR/export/<format>[-<quantize>]``."""
    return Path(run_dir) / "export" / (fmt if quantize is None else f"{fmt}-{quantize}")


def export_run(
    run_dir: str | os.PathLike[str],
    fmt: str,
    *,
    quantize: str | None = None,
    out: str | os.PathLike[str] | None = None,
    check_images: str | os.PathLike[str] | None = None,
    calibration_data: str | os.PathLike[str] | None = None,
    check_count: int = 200,
    calibration_count: int = 100,
    skip_check: bool = False,
    seed: int = 0,
    predictor: Predictor | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a run, check it against the Keras model, and write it atomically.

    Args:
        run_dir: The training run.
        fmt: ``savedmodel``, ``tflite`` or ``onnx``.
        quantize: ``float16`` or ``int8`` (TFLite only), or None.
        out: Export folder. Defaults to ``RUN_DIR/export/<format>[-<quantize>]``; an existing
            folder is replaced only once the new export is complete.
        check_images: Images for the parity check: a prepared data folder, a folder with
            ``labels.csv``, or a folder of images. Defaults to the training data's test
            (else val) split, found through ``model_spec.json`` (``data_dir``).
        calibration_data: int8 calibration images (same kinds of folder). Defaults to the
            training data's train split.
        check_count: Images in the parity check. Defaults to 200.
        calibration_count: Images for int8 calibration. Defaults to 100.
        skip_check: Export without a parity check (``parity.json`` says so).
        seed: Sampling seed for both samples.
        predictor: An already loaded Predictor for ``run_dir`` (saves loading it again).
        progress: Gets a step message (task ``"export"``) before each step.

    Returns:
        The ``ExportResult``.

    Raises:
        ExportError: for a bad format/quantisation pair, a missing export library, or no
            images where they are needed.
        RunError: if ``run_dir`` is not a usable run.
    """
    _check_options(fmt, quantize)
    require_libraries(fmt, check=not skip_check)  # first: before minutes of conversion
    step = say(progress, "export")
    # The reference is always the Keras model, whatever runtime a caller's Predictor uses.
    pred = (predictor or Predictor.from_run(run_dir, runtime="keras")).with_runtime("keras")
    target = Path(out) if out is not None else default_out_dir(run_dir, fmt, quantize)

    representative, calibration_source, check = _samples(
        pred, run_dir, quantize=quantize, calibration_data=calibration_data,
        calibration_count=calibration_count, check_images=check_images, check_count=check_count,
        skip_check=skip_check, seed=seed, step=step)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    # mkdtemp makes the folder private (0700); the export is renamed into place, so give it
    # the mode any folder made by this user gets (0755 under the usual umask 022).
    os.chmod(work, 0o777 & ~_umask())
    try:
        model_file = _convert(pred, fmt, quantize, work, representative, step)
        shutil.copy2(Path(run_dir) / SPEC_FILE, work / SPEC_FILE)
        record: dict[str, Any] = {"format": fmt, "quantize": quantize,
                                  "model_id": pred.model_id, "input": INPUT_NAME,
                                  "output": OUTPUT_NAME, "calibration_source": calibration_source,
                                  # ties the record to this exact model (runtime auto-selection)
                                  "keras_sha256": _rt.model_digest(Path(run_dir) / MODEL_FILE)}
        parity = _check(pred, model_file, check, quantize, step)
        record.update(parity if parity is not None else {"checked": False})
        atomic_write_json(work / PARITY_FILE, record)
        _replace_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    final_model = target if fmt == "savedmodel" else target / Path(model_file).name
    return ExportResult(path=target, model_file=final_model, format=fmt, quantize=quantize,
                        parity=parity, size_bytes=_size(final_model))


def _check_options(fmt: str, quantize: str | None) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"unknown quantisation {quantize!r}; choose {', '.join(QUANTIZATIONS)}")
    if quantize is not None and fmt != "tflite":
        raise ExportError(f"--quantize applies to tflite only, not {fmt}")


def _samples(pred: Predictor, run_dir: str | os.PathLike[str], *, quantize: str | None,
             calibration_data: str | os.PathLike[str] | None, calibration_count: int,
             check_images: str | os.PathLike[str] | None, check_count: int, skip_check: bool,
             seed: int, step: Callable[[str], None],
             ) -> tuple[np.ndarray | None, str | None, ImageSample | None]:
    """The int8 calibration images (and their source), and the parity-check sample."""
    representative, calibration_source = None, None
    if quantize == "int8":
        step("loading calibration images")
        cal = _sample(run_dir, calibration_data, calibration_count, ("train",),
                      "int8 calibration", "--calibration-data", seed)
        representative, _, _ = load_sample(pred, cal)
        calibration_source = cal.source
    check = None if skip_check else _sample(run_dir, check_images, check_count,
                                                  ("test", "val"), "parity check",
                                                  "--check-images", seed)
    return representative, calibration_source, check


def _sample(run_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None, n: int,
            splits: tuple[str, ...], what: str, option: str, seed: int) -> ImageSample:
    """``n`` images from ``source``, else from the run's training data folder."""
    src = source if source is not None else training_data_dir(run_dir)
    if src is None:
        raise ExportError(f"no images for the {what}: {Path(run_dir) / SPEC_FILE} names no "
                          f"existing data folder; pass a folder of images with {option}")
    try:
        return sample_images(src, n, seed=seed, splits=splits)
    except (ParityError, ValueError) as exc:
        raise ExportError(f"{what}: {exc}") from exc


def _convert(pred: Predictor, fmt: str, quantize: str | None, work: Path,
             representative: np.ndarray | None, step: Callable[[str], None]) -> Path:
    """Write the model in ``fmt`` into ``work``; returns the model file (or folder)."""
    scratch = work / "_savedmodel"
    step("exporting SavedModel")
    export_savedmodel(pred, work if fmt == "savedmodel" else scratch)
    if fmt == "tflite":
        step(f"converting to TFLite{f' ({quantize})' if quantize else ''}")
        cal_meta = (parity_metadata(pred, len(representative))
                    if representative is not None else None)
        model_file = export_tflite(scratch, work / MODEL_FILES["tflite"], quantize=quantize,
                                   representative=representative, metadata=cal_meta)
    elif fmt == "onnx":
        step("converting to ONNX")
        model_file = export_onnx(scratch, work / MODEL_FILES["onnx"], input_size=pred.input_size,
                                 metadata_dim=pred.encoder.dim if pred.encoder else 0)
    else:
        model_file = work
    if scratch.exists():
        shutil.rmtree(scratch)
    return Path(model_file)


def _check(pred: Predictor, model_file: Path, check: ImageSample | None, quantize: str | None,
           step: Callable[[str], None]) -> dict[str, Any] | None:
    """The parity record of the exported model against Keras on ``check`` (None: skipped)."""
    if check is None:
        return None
    step(f"checking parity on {len(check.paths)} images")
    images, labels, skipped = load_sample(pred, check)
    parity = check_parity(pred, load_runtime(model_file), images, labels,
                          precision=quantize or "float32")
    parity.update(check_source=check.source, skipped=skipped)
    return parity


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace_dir(new: Path, target: Path) -> None:
    # Directories cannot be swapped atomically with one rename if the target exists: move the
    # old one aside first, so a reader sees the old export or the new one, never a mix.
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(new, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
