"""The HTTP service: ``POST /v1/predict`` with a web page at ``/``.

    app = create_app("runs/effnet")            # or create_app(predictor)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (OpenAPI docs at ``/docs``):

* ``POST /v1/predict`` — multipart field ``image`` (JPEG, PNG, TIFF, WebP, BMP or GIF;
  the type is sniffed from the bytes, never the name); options ``heatmap`` and ``tta``
  as query parameters or form fields. Answers P(malignant), the decision at the
  run's threshold, the model id, the intended-use statement and, on request, a
  Grad-CAM overlay as a base64 PNG.
* ``GET /v1/health`` — liveness and whether the model is loaded.
* ``GET /v1/model`` — the model card: the run's spec, intended use, limits.
* ``GET /`` — the web page (vanilla HTML/JS/CSS from ``service/static``).

Safety: uploads over ``max_upload_mb`` are refused with 413 *before* the body is
read (``Content-Length``) or as soon as the streamed bytes pass the limit
(chunked uploads); images over ``max_pixels`` (decompression bombs) and anything
that is not an image get 422; every error is JSON ``{"detail": ...}``. The server
only ever reads the uploaded bytes — a client-sent file name is a label, never a
path. Uploads are decoded in worker threads; the decoded images of concurrent
requests are gathered into micro-batches (``service/batching.py``: at most
``max_batch`` images, the first waiting at most ``max_wait_ms``) and predicted in one
model thread, so the event loop (and ``/v1/health``) never waits for the model. At
most ``max_pending`` requests are admitted at once; beyond that 503 with Retry-After.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from skinlesion import INTENDED_USE, __version__
from skinlesion.service.api_docs import add_offline_docs
from skinlesion.service.batching import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_WAIT_MS,
    MicroBatcher,
    QueueFull,
)

if TYPE_CHECKING:
    from skinlesion.inference.predictor import Predictor

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
PREDICT_PATH = "/v1/predict"
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 50_000_000
"""Service pixel limit: 50 MP (ISIC 2020's largest photos are 24 MP); a 50 MP RGB decode
needs 150 MB, so a few concurrent uploads cannot exhaust memory."""
HEATMAP_MAX_SIDE = 512
PUBLIC_SPEC_FIELDS: tuple[str, ...] = ("backbone", "input_size", "class_names", "threshold",
                                       "threshold_rule", "inconclusive_band", "model_id",
                                       "target", "train_prevalence", "color_constancy")
"""What ``GET /v1/model`` shows of the spec unless ``admin_model_card``."""
DEFAULT_READ_TIMEOUT_S = 15.0
"""Longest pause allowed while a client sends a request body (slow-client guard)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# === Response models (they document the API in /docs) ===

class DiagnosisProbability(BaseModel):
    """One diagnosis class of a diagnosis model."""

    diagnosis: str
    probability: float = Field(..., ge=0.0, le=1.0)


class Prediction(BaseModel):
    """The answer of ``POST /v1/predict``."""

    probability: float = Field(..., ge=0.0, le=1.0, description="P(malignant) in [0, 1].")
    decision: str = Field(..., description="benign, malignant or inconclusive, at the run's threshold.")
    threshold: float = Field(..., description="The decision threshold on the probability.")
    inconclusive_band: float = Field(..., description="Half-width of the inconclusive band (0 = off).")
    model_id: str
    backbone: str
    tta: int = Field(..., description="Number of flip/transpose views averaged.")
    filename: str = Field(..., description="The upload's name, as a label only.")
    elapsed_ms: float = Field(..., description="Server time for decoding and inference.")
    intended_use: str
    heatmap_png_base64: str | None = Field(
        None, description="Grad-CAM overlay (PNG, base64) when heatmap=true.")
    diagnoses: list[DiagnosisProbability] | None = Field(
        None, description="A diagnosis model's classes, most likely first.")
    metadata: dict[str, Any] | None = Field(
        None, description="For a model that uses clinical metadata: the values it used after "
                          "normalisation (null = unknown).")


class Health(BaseModel):
    """The answer of ``GET /v1/health``."""

    status: str
    model_loaded: bool
    model_id: str | None
    version: str


class ErrorBody(BaseModel):
    """Every error answer."""

    detail: str


# === Upload limit (pure ASGI: runs before the body is read) ===

class UploadLimit:
    """Refuse request bodies over ``max_bytes`` with 413, without buffering them.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the
    streamed chunks are counted and the request is cut off as soon as the count
    passes the limit (a chunked upload, or a lying header). A client that stops
    sending its body for ``read_timeout_s`` seconds gets 408 and is disconnected:
    uvicorn itself would wait for it forever, one held connection per stalled client.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await _send_json(send, 413, self._message(int(declared)))
                return

        seen = 0
        started = False
        rejected = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal seen, rejected, body_done
            if rejected:
                return {"type": "http.disconnect"}
            message = None
            # Only while the body is arriving: afterwards the app may wait on receive() for
            # a disconnect while it works, and that wait must not time out.
            with anyio.move_on_after(None if body_done else self.read_timeout_s):
                message = await receive()
            if message is None:  # the client stalled mid-body
                rejected = True
                if not started:
                    await _send_json(send, 408, f"request body stalled for more than "
                                                f"{self.read_timeout_s:g} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answer now, then tell the app the client went away: raising instead
                    # would be turned into a 400 by FastAPI's body parsing.
                    rejected = True
                    if not started:
                        await _send_json(send, 413, self._message(seen, streamed=True))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # our 413 is the answer; drop whatever the app says after the cut
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _message(self, size: int, streamed: bool = False) -> str:
        amount = f"more than {self.max_bytes:,} bytes" if streamed else f"{size:,} bytes"
        return (f"upload too large: {amount}, over the limit of {self.max_bytes:,} bytes "
                f"({self.max_bytes / 2**20:g} MB)")


async def _send_json(send: Send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# === App factory ===

def create_app(
    source: str | os.PathLike[str] | Predictor,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pending: int = DEFAULT_MAX_QUEUE,
    workers: int = 2,
    warmup: bool = True,
    read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
    runtime: str = "auto",
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    body_deadline_s: float | None = 60.0,
    min_rate_bps: float | None = 1024.0,
    max_requests: int | None = 32,
    api_key: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    allowed_origins: Sequence[str] = (),
    rate_per_minute: float | None = None,
    admin_model_card: bool = False,
) -> FastAPI:
    """Build the FastAPI app for one run.

    Args:
        source: A run directory (loaded once, at start-up) or an already loaded ``Predictor``.
        max_upload_mb: Largest accepted request body in MB (2**20 bytes). Defaults to 20.
        max_pixels: Largest accepted image (width × height). Defaults to 50 MP.
        max_pending: Requests admitted at once (being decoded, waiting for or in a model
            call); more get 503 with Retry-After. Defaults to 64.
        workers: Threads decoding uploads (and drawing heatmaps) in parallel. Defaults to 2.
        warmup: Run the model once per batch size bound at start-up (and trace Grad-CAM
            when the runtime is Keras) so the first request is not slow. Defaults to True.
        read_timeout_s: A client that sends no body bytes for this long is answered 408 and
            disconnected (None: wait forever). Defaults to 15.
        runtime: Model runtime when ``source`` is a run folder (see
            ``skinlesion.inference.runtimes``). Defaults to ``auto``.
        max_batch: Images per model call at most. Defaults to 8.
        max_wait_ms: Longest wait of a batch's first request for others. Defaults to 2.
        body_deadline_s: Longest time for a whole request body (408 beyond); None: none.
        min_rate_bps: Slowest accepted average body rate after 5 s (408 below); None: none.
        max_requests: Requests in flight before 503 + Retry-After (``service/limits.py``).
        api_key: Require this key (``Authorization: Bearer`` or ``X-API-Key``) on the API.
        allowed_hosts: ``Host`` header values accepted (400 otherwise); None: any.
        allowed_origins: Other origins whose pages may POST here (others get 403).
        rate_per_minute: Per-client limit on ``POST /v1/predict`` (429 beyond); None: off.
        admin_model_card: ``GET /v1/model`` shows the whole spec (library versions, git
            commit, data fingerprint, validation metrics); by default only what a client
            needs.

    Returns:
        The ASGI app (``uvicorn.run(app)``); ``app.state.predictor`` holds the Predictor
        and ``app.state.batcher`` the ``MicroBatcher`` once started.
    """
    from skinlesion.inference.tta import TTA_CHOICES

    max_bytes = int(max_upload_mb * 2**20)
    limiter = anyio.CapacityLimiter(max(1, workers))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from skinlesion.inference.predictor import Predictor

        if isinstance(source, Predictor):
            predictor = source
        else:
            predictor = await anyio.to_thread.run_sync(
                lambda: Predictor.from_run(source, runtime=runtime))
        if warmup:
            await anyio.to_thread.run_sync(_warm_up, predictor, max_batch)
        batcher = MicroBatcher(
            lambda x, views, meta=None: predictor.predict_outputs(
                x, metadata=meta, tta=views, batch_size=max_batch),
            max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_pending,
            metadata=predictor.uses_metadata)
        await batcher.start()
        app.state.batcher = batcher
        app.state.predictor = predictor
        logger.info("serving model %s (runtime %s, micro-batches of up to %d, %g ms wait)",
                    predictor.model_id, predictor.runtime_name, max_batch, max_wait_ms)
        try:
            yield
        finally:
            app.state.predictor = None
            await batcher.stop()

    app = FastAPI(
        title="skinlesion",
        version=__version__,
        description=f"Benign vs malignant skin-lesion classification.\n\n**{INTENDED_USE}**",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # served from bundled assets below, not a CDN
    )
    add_offline_docs(app, title="skinlesion")
    app.state.predictor = None
    app.state.batcher = None
    app.state.max_bytes = max_bytes
    app.state.max_pixels = max_pixels

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                               ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        # The docs pages run inline bootstrap scripts, which this policy would block.
        if not request.url.path.startswith(("/docs", "/redoc")):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                "base-uri 'none'; frame-ancestors 'none'")
        return response

    def predictor_or_503(request: Request) -> Predictor:
        predictor = request.app.state.predictor
        if predictor is None:
            raise HTTPException(503, "model not loaded yet")
        return predictor  # type: ignore[no-any-return]

    @app.post(PREDICT_PATH, response_model=Prediction, response_model_exclude_none=True,
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
        batcher: MicroBatcher = request.app.state.batcher
        want_heatmap = bool(heatmap_form) if heatmap_form is not None else heatmap
        views = tta_form if tta_form is not None else tta
        if views not in TTA_CHOICES:
            raise HTTPException(422, f"tta must be one of {list(TTA_CHOICES)}, got {views}")
        # A label only: never used to open anything.
        label = _safe_label(image.filename)
        parts = len((await request.form()).getlist("image"))  # parsed once, cached
        if parts > 1:
            raise HTTPException(422, f"send one image per request: got {parts} 'image' parts")
        data = await image.read()
        if not data:
            raise HTTPException(422, f"{label}: empty upload")
        try:
            meta = {"age": age or "", "sex": sex or "", "site": site or ""}
            with batcher.admit():  # raises QueueFull when max_pending requests are in
                return await _predict_upload(predictor, batcher, limiter, data, label, views,
                                             want_heatmap, max_pixels, meta)
        except QueueFull as exc:
            raise HTTPException(503, str(exc),
                                headers={"Retry-After": str(exc.retry_after_s)}) from None

    @app.get("/v1/health", response_model=Health, summary="Liveness and model status")
    async def health(request: Request) -> Any:
        predictor = request.app.state.predictor
        return Health(status="ok" if predictor is not None else "starting",
                      model_loaded=predictor is not None,
                      model_id=predictor.model_id if predictor is not None else None,
                      version=__version__)

    @app.get("/v1/model", summary="The model card: spec, intended use, limits")
    async def model_card(request: Request) -> Any:
        predictor = predictor_or_503(request)
        spec = predictor.spec.to_dict()
        if not admin_model_card:  # no library versions, git commit or data fingerprint
            spec = {k: spec[k] for k in PUBLIC_SPEC_FIELDS if k in spec}
        return {
            "model_id": predictor.model_id,
            "intended_use": INTENDED_USE,
            "spec_intended_use": spec.pop("intended_use", "") or None,
            "decision_rule": _decision_rule(predictor),
            "input": {"size": predictor.input_size, "format": "RGB photo; resized whole "
                      "(no crop) to the model input; normalisation is inside the model"},
            "tta_choices": list(TTA_CHOICES),
            "metadata": _metadata_card(predictor),
            "diagnoses": predictor.diagnosis_classes or None,
            "runtime": predictor.runtime_name,
            "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms,
                         "max_pending": max_pending},
            "limits": {"max_upload_mb": max_bytes / 2**20, "max_pixels": max_pixels,
                       "formats": ["JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF"]},
            "spec": spec,
            "version": __version__,
        }

    @app.exception_handler(HTTPException)
    async def json_errors(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One string, as the schema (ErrorBody) and the web page expect, not FastAPI's list.
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                 for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_errors(request: Request, exc: Exception) -> JSONResponse:
        # Every answer is JSON, even a bug's; the traceback goes to the log, not the client.
        logger.error("unhandled error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(_index_html())

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Outermost: the size check must run before FastAPI parses the multipart body.
    app.add_middleware(UploadLimit, max_bytes=max_bytes, read_timeout_s=read_timeout_s)
    from skinlesion.service import limits, security

    limits.install(app, body_deadline_s=body_deadline_s, min_rate_bps=min_rate_bps,
                   max_requests=max_requests)
    security.install(app, api_key=api_key, allowed_hosts=allowed_hosts,
                     allowed_origins=allowed_origins, rate_per_minute=rate_per_minute)
    return app


# === Work done in threads ===

def _warm_up(predictor: Predictor, max_batch: int) -> None:
    import numpy as np

    # Every batch size up to the bound: a TFLite interpreter re-allocates per new shape,
    # and the first call of each shape should not fall on a client.
    for n in sorted({1, 2, 4, 8, max_batch}):
        if n <= max_batch:
            x = np.zeros((n, predictor.input_size, predictor.input_size, 3), np.float32)
            predictor.predict_arrays(x, batch_size=n)
    if predictor.runtime_name != "keras":
        return  # Grad-CAM (Keras) loads on the first heatmap request: a smaller server
    try:
        predictor.heatmaps(np.zeros((1, predictor.input_size, predictor.input_size, 3),
                                    np.float32))
    except Exception:  # heatmaps are optional; a model without Grad-CAM still serves
        logger.warning("Grad-CAM unavailable for this model", exc_info=True)


def _decode(predictor: Predictor, data: bytes, label: str, max_pixels: int) -> tuple[Any, Any]:
    from skinlesion.data.pipeline import to_model_input
    from skinlesion.inference.predictor import ImageError

    try:
        # Decoded reduced (memory bounded) and checked against the scope rule, as predict does.
        img = predictor.decode(data, name=label, max_pixels=max_pixels)
    except ImageError as exc:  # includes "out of scope"
        raise HTTPException(422, str(exc)) from None
    return img, to_model_input(img, predictor.input_size)


def _heatmap_png(predictor: Predictor, img: Any, x: Any) -> str:
    from skinlesion.inference.gradcam import overlay, png_bytes

    heat = predictor.heatmaps(x[None])[0]
    png = png_bytes(overlay(img, heat, max_side=HEATMAP_MAX_SIDE))
    return base64.b64encode(png).decode("ascii")


async def _predict_upload(predictor: Predictor, batcher: MicroBatcher,
                          limiter: anyio.CapacityLimiter, data: bytes, label: str, tta: int,
                          heatmap: bool, max_pixels: int,
                          metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    from skinlesion.inference.predictor import NONFINITE_ERROR, NonFiniteOutputError

    start = time.perf_counter()
    img, x = await anyio.to_thread.run_sync(_decode, predictor, data, label, max_pixels,
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
        out["metadata"] = _normalised_metadata(metadata or {})
    if heatmap:
        out["heatmap_png_base64"] = await anyio.to_thread.run_sync(
            _heatmap_png, predictor, img, x, limiter=limiter)
    out["elapsed_ms"] = round((time.perf_counter() - start) * 1000.0, 2)
    return out


# === Helpers ===

def _safe_label(filename: str | None) -> str:
    # Keep the last path component, printable characters only, bounded length.
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or "upload"


def _normalised_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    from skinlesion.data.metadata import (
        MetadataValueError,
        normalize_age,
        normalize_sex,
        normalize_site,
    )

    out: dict[str, Any] = {}
    for field, fn in (("age", normalize_age), ("sex", normalize_sex), ("site", normalize_site)):
        try:
            value = fn(meta.get(field, ""))
        except MetadataValueError:
            value = None
        out[field] = None if value in ("", None) or value != value else value
    return out


def _metadata_card(predictor: Predictor) -> dict[str, Any] | None:
    from skinlesion.data.metadata import SEX_VALUES, SITE_VALUES

    if predictor.encoder is None:
        return None
    return {"fields": list(predictor.encoder.fields), "sex_values": list(SEX_VALUES),
            "site_values": list(SITE_VALUES), "optional": True,
            "note": "Every field is optional; an unknown value is encoded as unknown."}


def _decision_rule(predictor: Predictor) -> str:
    t = predictor.threshold
    band = float(predictor.spec.inconclusive_band or 0.0)
    rule = f"malignant if probability >= {t:.4f}, else benign"
    if band > 0:
        rule = (f"inconclusive if |probability - {t:.4f}| < {band:.4f}; otherwise " + rule)
    if predictor.spec.threshold_rule:
        rule += f" (threshold: {predictor.spec.threshold_rule})"
    return rule


def _index_html() -> str:
    import html

    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    # The warning is in the HTML itself, so it shows even before (or without) JavaScript.
    return page.replace("{{INTENDED_USE}}", html.escape(INTENDED_USE))
