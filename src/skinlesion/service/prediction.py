"""The work behind ``POST /v1/predict`` for one upload.

The upload is decoded in a worker thread (bounded by the app's decode limiter), its
model input joins a micro-batch (``service/batching.py``), and the optional Grad-CAM
overlay is drawn in a worker thread again, so the event loop never decodes or predicts.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
from fastapi import HTTPException

from skinlesion import INTENDED_USE
from skinlesion.data.metadata import (
    MetadataValueError,
    normalize_age,
    normalize_sex,
    normalize_site,
)
from skinlesion.data.pipeline import to_model_input
from skinlesion.inference.predictor import (
    NONFINITE_ERROR,
    ImageError,
    NonFiniteOutputError,
    Predictor,
)
from skinlesion.service.batching import MicroBatcher

HEATMAP_MAX_SIDE = 512


def safe_label(filename: str | None) -> str:
    """The upload's name as a label: the last path component, printable, at most 120 chars."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or "upload"


def decode_upload(predictor: Predictor, data: bytes, label: str,
                  max_pixels: int) -> tuple[Any, Any]:
    """The decoded image and its model input; ``422`` for anything that is not a usable image."""
    try:
        # Decoded reduced (memory bounded) and checked against the scope rule, as predict does.
        img = predictor.decode(data, name=label, max_pixels=max_pixels)
    except ImageError as exc:  # includes "out of scope"
        raise HTTPException(422, str(exc)) from None
    return img, to_model_input(img, predictor.input_size)


def heatmap_png(predictor: Predictor, img: Any, x: Any) -> str:
    """The Grad-CAM overlay of one image as a base64 PNG."""
    from skinlesion.inference.gradcam import overlay, png_bytes  # imports Keras

    heat = predictor.heatmaps(x[None])[0]
    png = png_bytes(overlay(img, heat, max_side=HEATMAP_MAX_SIDE))
    return base64.b64encode(png).decode("ascii")


def normalised_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata values a model used, after normalisation (``None``: unknown)."""
    out: dict[str, Any] = {}
    for field, fn in (("age", normalize_age), ("sex", normalize_sex), ("site", normalize_site)):
        try:
            value = fn(meta.get(field, ""))
        except MetadataValueError:
            value = None
        out[field] = None if value in ("", None) or value != value else value
    return out


async def predict_upload(predictor: Predictor, batcher: MicroBatcher,
                         limiter: anyio.CapacityLimiter, data: bytes, label: str, tta: int,
                         heatmap: bool, max_pixels: int,
                         metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Decode, predict (micro-batched) and, on request, draw the heatmap: the answer's fields."""
    start = time.perf_counter()
    img, x = await anyio.to_thread.run_sync(decode_upload, predictor, data, label, max_pixels,
                                            limiter=limiter)
    try:
        outputs = await batcher.predict_row(
            x, tta, predictor.encode_metadata([metadata], 1)[0] if predictor.uses_metadata
            else None)
        probability = float(outputs[0])
    except NonFiniteOutputError:  # the model is at fault, not the upload: never answer NaN
        raise HTTPException(500, f"{label}: {NONFINITE_ERROR}") from None
    out: dict[str, Any] = {
        "probability": probability,
        "decision": predictor.decide(probability),
        "threshold": predictor.threshold,
        "inconclusive_band": float(predictor.spec.inconclusive_band or 0.0),
        "model_id": predictor.model_id,
        "backbone": predictor.spec.backbone,
        "tta": tta,
        "filename": label,
        "intended_use": INTENDED_USE,
        "diagnoses": predictor.top_diagnoses(outputs),
    }
    if predictor.uses_metadata:
        out["metadata"] = normalised_metadata(metadata or {})
    if heatmap:
        out["heatmap_png_base64"] = await anyio.to_thread.run_sync(
            heatmap_png, predictor, img, x, limiter=limiter)
    out["elapsed_ms"] = round((time.perf_counter() - start) * 1000.0, 2)
    return out
