"""What one app keeps in ``app.state``, and typed access to it for the routes and the lifespan.

``create_app`` stores the model source and a frozen :class:`ServiceSettings` once; the
lifespan loads the model and sets ``predictor`` and ``batcher`` (both ``None`` outside a
running app). ``max_bytes`` and ``max_pixels`` are kept there as plain attributes too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import anyio
from fastapi import FastAPI, HTTPException, Request

from skinlesion.inference.predictor import Predictor
from skinlesion.service.batching import MicroBatcher

ModelSource = str | os.PathLike[str] | Predictor
"""A run directory (loaded at start-up) or an already loaded ``Predictor``."""


@dataclass(frozen=True)
class ServiceSettings:
    """The options of ``create_app`` that the lifespan and the routes read."""

    max_bytes: int
    max_pixels: int
    max_pending: int
    max_batch: int
    max_wait_ms: float
    runtime: str
    warmup: bool
    admin_model_card: bool


def init_state(app: FastAPI, source: ModelSource, settings: ServiceSettings, *,
               workers: int) -> None:
    """Store what the lifespan and the routes need; nothing is loaded yet."""
    app.state.source = source
    app.state.settings = settings
    # Threads decoding uploads and drawing heatmaps, shared by all requests of this app.
    app.state.decode_limiter = anyio.CapacityLimiter(max(1, workers))
    app.state.predictor = None
    app.state.batcher = None
    app.state.max_bytes = settings.max_bytes
    app.state.max_pixels = settings.max_pixels


def settings_of(app: FastAPI) -> ServiceSettings:
    """The app's settings."""
    settings: ServiceSettings = app.state.settings
    return settings


def predictor_or_503(request: Request) -> Predictor:
    """The loaded model, or ``503`` while it is still loading."""
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise HTTPException(503, "model not loaded yet")
    return predictor


def batcher_of(request: Request) -> MicroBatcher:
    """The running micro-batcher (set together with the predictor)."""
    batcher: MicroBatcher = request.app.state.batcher
    return batcher


def decode_limiter_of(request: Request) -> anyio.CapacityLimiter:
    """The limiter of the threads that decode uploads and draw heatmaps."""
    limiter: anyio.CapacityLimiter = request.app.state.decode_limiter
    return limiter
