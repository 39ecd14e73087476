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

This module only wires the parts together: the endpoints are in ``routes.py`` (the work
for one upload in ``prediction.py``), the response models in ``schemas.py``, start-up in
``lifespan.py``, what the routes read from ``app.state`` in ``state.py``, the JSON error
handlers in ``errors.py``, and the middleware in ``limits.py`` (size, deadlines,
concurrency) and ``security.py`` (API key, hosts, origins, rate limit, response headers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from skinlesion import INTENDED_USE, __version__
from skinlesion.inference.predictor import Predictor
from skinlesion.service import errors, limits, security
from skinlesion.service.api_docs import add_offline_docs
from skinlesion.service.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT_MS
from skinlesion.service.lifespan import lifespan
from skinlesion.service.limits import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_READ_TIMEOUT_S,
    UploadLimit,
)
from skinlesion.service.routes import STATIC_DIR, router
from skinlesion.service.state import ServiceSettings, init_state


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
    settings = ServiceSettings(
        max_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, max_pending=max_pending,
        max_batch=max_batch, max_wait_ms=max_wait_ms, runtime=runtime, warmup=warmup,
        admin_model_card=admin_model_card)
    app = FastAPI(
        title="skinlesion",
        version=__version__,
        description=f"Benign vs malignant skin-lesion classification.\n\n**{INTENDED_USE}**",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # served from bundled assets below, not a CDN
    )
    add_offline_docs(app, title="skinlesion")
    init_state(app, source, settings, workers=workers)
    app.middleware("http")(security.security_headers)
    app.include_router(router)
    errors.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Middleware added later runs first. Outside the routes: the size check must run
    # before FastAPI parses the multipart body.
    app.add_middleware(UploadLimit, max_bytes=settings.max_bytes, read_timeout_s=read_timeout_s)
    limits.install(app, body_deadline_s=body_deadline_s, min_rate_bps=min_rate_bps,
                   max_requests=max_requests)
    security.install(app, api_key=api_key, allowed_hosts=allowed_hosts,
                     allowed_origins=allowed_origins, rate_per_minute=rate_per_minute)
    return app
