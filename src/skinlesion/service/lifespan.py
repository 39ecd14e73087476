"""Start-up and shut-down of the app: load the model, warm it up, run the micro-batcher."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
import numpy as np
from fastapi import FastAPI

from skinlesion.inference.predictor import Predictor
from skinlesion.service.batching import MicroBatcher
from skinlesion.service.state import settings_of

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load ``app.state.source`` once, start the batcher; stop it and drop the model at the end."""
    settings = settings_of(app)
    source = app.state.source
    if isinstance(source, Predictor):
        predictor = source
    else:
        predictor = await anyio.to_thread.run_sync(
            lambda: Predictor.from_run(source, runtime=settings.runtime))
    if settings.warmup:
        await anyio.to_thread.run_sync(warm_up, predictor, settings.max_batch)
    batcher = MicroBatcher(
        lambda x, views, meta=None: predictor.predict_outputs(
            x, metadata=meta, tta=views, batch_size=settings.max_batch),
        max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_pending, metadata=predictor.uses_metadata)
    await batcher.start()
    app.state.batcher = batcher
    app.state.predictor = predictor
    logger.info("serving model %s (runtime %s, micro-batches of up to %d, %g ms wait)",
                predictor.model_id, predictor.runtime_name, settings.max_batch,
                settings.max_wait_ms)
    try:
        yield
    finally:
        app.state.predictor = None
        await batcher.stop()


def warm_up(predictor: Predictor, max_batch: int) -> None:
    """Run the model once per batch size up to ``max_batch`` (and trace Grad-CAM on Keras)."""
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
