"""The endpoints: ``POST /v1/predict``, ``GET /v1/health``, ``GET /v1/model`` and the page at ``/``.

They read the model, the batcher and the options from ``request.app.state``
(``service/state.py``); ``create_app`` includes :data:`router` once per app.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse

from skinlesion import INTENDED_USE, __version__
from skinlesion.data.metadata import SEX_VALUES, SITE_VALUES
from skinlesion.inference.predictor import Predictor
from skinlesion.inference.tta import TTA_CHOICES
from skinlesion.service.batching import QueueFull
from skinlesion.service.prediction import predict_upload, safe_label
from skinlesion.service.schemas import ErrorBody, Health, Prediction
from skinlesion.service.state import (
    batcher_of,
    decode_limiter_of,
    predictor_or_503,
    settings_of,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
PREDICT_PATH = "/v1/predict"
PUBLIC_SPEC_FIELDS: tuple[str, ...] = ("backbone", "input_size", "class_names", "threshold",
                                       "threshold_rule", "inconclusive_band", "model_id",
                                       "target", "train_prevalence", "color_constancy")
"""What ``GET /v1/model`` shows of the spec unless ``admin_model_card``."""

router = APIRouter()


@router.post(PREDICT_PATH, response_model=Prediction, response_model_exclude_none=True,
             responses={413: {"model": ErrorBody, "description": "Upload over the size limit"},
                        422: {"model": ErrorBody, "description": "Not an image, or too many pixels"},
                        503: {"model": ErrorBody, "description": "Busy or not ready"}},
             summary="Predict P(malignant) for one photo")
async def predict(
    request: Request,
    image: UploadFile = File(..., description="The photo (JPEG, PNG, TIFF, WebP, BMP, GIF)."),
    heatmap: bool = Query(False, description="Also return a Grad-CAM overlay (PNG, base64)."),
    tta: int = Query(1, description="Flip/transpose views averaged: 1, 2, 4 or 8."),
    heatmap_form: bool | None = Form(None, alias="heatmap", include_in_schema=False),
    tta_form: int | None = Form(None, alias="tta", include_in_schema=False),
    age: str | None = Form(None, description="Approximate age in years (optional; used "
                           "only by a model trained with metadata)."),
    sex: str | None = Form(None, description="female or male (optional)."),
    site: str | None = Form(None, description="Anatomic site, ISIC 2020 vocabulary: "
                            "head/neck, upper extremity, lower extremity, torso, "
                            "palms/soles, oral/genital (optional)."),
) -> Any:
    predictor = predictor_or_503(request)
    batcher = batcher_of(request)
    want_heatmap = bool(heatmap_form) if heatmap_form is not None else heatmap
    views = tta_form if tta_form is not None else tta
    if views not in TTA_CHOICES:
        raise HTTPException(422, f"tta must be one of {list(TTA_CHOICES)}, got {views}")
    # A label only: never used to open anything.
    label = safe_label(image.filename)
    parts = len((await request.form()).getlist("image"))  # parsed once, cached
    if parts > 1:
        raise HTTPException(422, f"send one image per request: got {parts} 'image' parts")
    data = await image.read()
    if not data:
        raise HTTPException(422, f"{label}: empty upload")
    try:
        meta = {"age": age or "", "sex": sex or "", "site": site or ""}
        with batcher.admit():  # raises QueueFull when max_pending requests are in
            return await predict_upload(predictor, batcher, decode_limiter_of(request), data,
                                        label, views, want_heatmap,
                                        settings_of(request.app).max_pixels, meta)
    except QueueFull as exc:
        raise HTTPException(503, str(exc),
                            headers={"Retry-After": str(exc.retry_after_s)}) from None


@router.get("/v1/health", response_model=Health, summary="Liveness and model status")
async def health(request: Request) -> Any:
    predictor = request.app.state.predictor
    return Health(status="ok" if predictor is not None else "starting",
                  model_loaded=predictor is not None,
                  model_id=predictor.model_id if predictor is not None else None,
                  version=__version__)


@router.get("/v1/model", summary="The model card: spec, intended use, limits")
async def model_card(request: Request) -> Any:
    predictor = predictor_or_503(request)
    settings = settings_of(request.app)
    spec = predictor.spec.to_dict()
    if not settings.admin_model_card:  # no library versions, git commit or data fingerprint
        spec = {k: spec[k] for k in PUBLIC_SPEC_FIELDS if k in spec}
    return {
        "model_id": predictor.model_id,
        "intended_use": INTENDED_USE,
        "spec_intended_use": spec.pop("intended_use", "") or None,
        "decision_rule": decision_rule(predictor),
        "input": {"size": predictor.input_size, "format": "RGB photo; resized whole "
                  "(no crop) to the model input; normalisation is inside the model"},
        "tta_choices": list(TTA_CHOICES),
        "metadata": metadata_card(predictor),
        "diagnoses": predictor.diagnosis_classes or None,
        "runtime": predictor.runtime_name,
        "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                     "max_pending": settings.max_pending},
        "limits": {"max_upload_mb": settings.max_bytes / 2**20,
                   "max_pixels": settings.max_pixels,
                   "formats": ["JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF"]},
        "spec": spec,
        "version": __version__,
    }


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(index_html())


def metadata_card(predictor: Predictor) -> dict[str, Any] | None:
    """The model card's ``metadata`` entry: the fields a metadata model takes, else None."""
    if predictor.encoder is None:
        return None
    return {"fields": list(predictor.encoder.fields), "sex_values": list(SEX_VALUES),
            "site_values": list(SITE_VALUES), "optional": True,
            "note": "Every field is optional; an unknown value is encoded as unknown."}


def decision_rule(predictor: Predictor) -> str:
    """The decision at the run's threshold (and inconclusive band), in words."""
    t = predictor.threshold
    band = float(predictor.spec.inconclusive_band or 0.0)
    rule = f"malignant if probability >= {t:.4f}, else benign"
    if band > 0:
        rule = (f"inconclusive if |probability - {t:.4f}| < {band:.4f}; otherwise " + rule)
    if predictor.spec.threshold_rule:
        rule += f" (threshold: {predictor.spec.threshold_rule})"
    return rule


def index_html() -> str:
    """The web page, with the intended-use statement filled in."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    # The warning is in the HTML itself, so it shows even before (or without) JavaScript.
    return page.replace("{{INTENDED_USE}}", html.escape(INTENDED_USE))
