"""Dynamic micro-batching for the service: concurrent requests share one model call.

On a CPU one forward pass already uses every core, so requests that each call the
model queue behind one another. A :class:`MicroBatcher` gathers the decoded images
of concurrent requests into one batch instead (the dynamic batching of TF Serving,
Triton and Ray Serve):

* the first request of a batch waits at most ``max_wait_ms`` for company, and a
  batch closes at ``max_batch`` images;
* while a batch runs, new requests queue, so under load the next batch fills by
  itself and ``max_wait_ms`` costs nothing;
* the model runs in one dedicated thread, never on the event loop, so ``/v1/health``
  and new uploads are answered while it works;
* admission is bounded: at most ``max_queue`` requests are admitted at once (being
  decoded, waiting or in the running batch); beyond that :meth:`admit` raises
  :class:`QueueFull` and the service answers 503 with ``Retry-After``, instead of
  letting latency grow without bound.

Requests with different ``tta`` go to separate model calls inside one gathering
round. Batch sizes are recorded (:attr:`MicroBatcher.stats`), so tests and the
benchmark can see that batching happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8
"""Images per model call at most (see docs/DEPLOYMENT.md for the measurement behind it)."""
DEFAULT_MAX_WAIT_MS = 2.0
"""How long the first request of a batch waits for others (only when the model is idle)."""
DEFAULT_MAX_QUEUE = 64
"""Requests admitted at once; more are answered 503 with Retry-After."""

PredictFn = Callable[..., np.ndarray]
"""``(images (N, S, S, 3) float32, tta) -> (N,) probabilities`` or ``(N, W)`` output rows
(column 0 = P(malignant)); with ``metadata=True`` it is called as
``(images, tta, metadata (N, D) float32)``. May raise."""


class QueueFull(RuntimeError):
    """The batcher admits no more requests now.

    Attributes:
        retry_after_s: Whole seconds after which a retry is likely to be admitted.
    """

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class BatchStats:
    """What the batcher did (read by tests, ``/v1/model`` and the benchmark).

    Attributes:
        batches: Model calls made.
        images: Images predicted.
        sizes: Model calls per batch size.
        rejected: Requests answered ``QueueFull``.
        busy_s: Seconds the model thread spent in model calls.
    """

    batches: int = 0
    images: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    rejected: int = 0
    busy_s: float = 0.0

    @property
    def max_size(self) -> int:
        """The largest batch so far (0 before any)."""
        return max(self.sizes, default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"batches": self.batches, "images": self.images, "rejected": self.rejected,
                "max_batch_seen": self.max_size,
                "mean_batch": self.images / self.batches if self.batches else None,
                "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
                "busy_s": round(self.busy_s, 3)}


@dataclass
class _Item:
    image: np.ndarray
    tta: int
    future: asyncio.Future[np.ndarray]
    meta: np.ndarray | None = None


class MicroBatcher:
    """Gather single-image requests into batched model calls (see the module docstring).

    Args:
        predict: The batched model call (e.g. ``Predictor.predict_arrays``).
        max_batch: Images per model call at most. Defaults to 8.
        max_wait_ms: Longest wait of a batch's first request for company. Defaults to 2.
        max_queue: Requests admitted at once (decoding, queued or running). Defaults to 64.
        metadata: Each request also carries a clinical-metadata vector, passed to
            ``predict`` as a third argument ``(N, D)``. Defaults to False.

    Use from the event loop: ``async with batcher.admit(): p = await batcher.predict(x)``;
    call :meth:`start` once the loop runs and :meth:`stop` at shutdown.
    """

    def __init__(self, predict: PredictFn, *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS, max_queue: int = DEFAULT_MAX_QUEUE,
                 metadata: bool = False) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self._predict = predict
        self.metadata = bool(metadata)
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.stats = BatchStats()
        self._admitted = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._last_call_s = 0.05

    # --- lifecycle ---

    async def start(self) -> None:
        """Start the gathering task and the model thread (inside the running event loop)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="microbatcher")

    async def stop(self) -> None:
        """Stop gathering; requests still queued get a ``RuntimeError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if not item.future.done():
                    item.future.set_exception(RuntimeError("the service is shutting down"))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # --- admission ---

    @property
    def admitted(self) -> int:
        """Requests admitted and not yet answered."""
        return self._admitted

    def retry_after_s(self) -> int:
        """Seconds until the admitted work is likely done (at least 1)."""
        rounds = math.ceil(max(self._admitted, 1) / self.max_batch)
        return max(1, math.ceil(rounds * self._last_call_s))

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of ``max_queue`` places for a request's decode and prediction.

        Raises:
            QueueFull: when all places are taken.
        """
        if self._admitted >= self.max_queue:
            self.stats.rejected += 1
            raise QueueFull(f"server busy: {self._admitted} requests in progress (limit "
                            f"{self.max_queue}); retry shortly", self.retry_after_s())
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    # --- prediction ---

    async def predict(self, image: np.ndarray, tta: int = 1,
                      meta: np.ndarray | None = None) -> float:
        """P(malignant) for one model-sized image ``(S, S, 3)``, batched with its neighbours.

        Raises:
            Whatever the model call raised for this image's batch (a
            ``NonFiniteOutputError`` only for the images whose output was not finite).
        """
        return float((await self.predict_row(image, tta, meta))[0])

    async def predict_row(self, image: np.ndarray, tta: int = 1,
                          meta: np.ndarray | None = None) -> np.ndarray:
        """The model's whole output row for one image (column 0 = P(malignant)).

        Args:
            image: ``(S, S, 3)`` model-sized image.
            tta: Dihedral views averaged.
            meta: ``(D,)`` encoded metadata (with ``metadata=True``).
        """
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        vec = None if meta is None else np.asarray(meta, np.float32).reshape(-1)
        self._queue.put_nowait(_Item(np.asarray(image, np.float32), int(tta), future, vec))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            for tta in sorted({item.tta for item in batch}):
                group = [item for item in batch if item.tta == tta and not item.future.done()]
                if group:
                    await self._run(group, tta)

    async def _run(self, group: list[_Item], tta: int) -> None:
        loop = asyncio.get_running_loop()
        images = np.stack([item.image for item in group])
        metas = (np.stack([item.meta if item.meta is not None else np.zeros(0, np.float32)
                           for item in group]) if self.metadata else None)
        try:
            probs = await loop.run_in_executor(self._pool, self._call, images, tta, metas)
        except Exception as exc:
            per_image = getattr(exc, "probabilities", None)
            for i, item in enumerate(group):
                if item.future.done():
                    continue
                if per_image is not None and np.isfinite(per_image[i]):
                    item.future.set_result(np.atleast_1d(np.asarray(per_image[i], np.float64)))
                else:
                    item.future.set_exception(exc)
            return
        for item, p in zip(group, probs, strict=True):
            if not item.future.done():  # a client that went away cancelled its future
                item.future.set_result(np.atleast_1d(np.asarray(p, np.float64)))

    def _call(self, images: np.ndarray, tta: int, metas: np.ndarray | None = None) -> np.ndarray:
        start = time.perf_counter()
        try:
            if self.metadata:
                return np.asarray(self._predict(images, tta, metas))
            return np.asarray(self._predict(images, tta))
        finally:
            took = time.perf_counter() - start
            with self._lock:
                self.stats.batches += 1
                self.stats.images += len(images)
                self.stats.sizes[len(images)] += 1
                self.stats.busy_s += took
                self._last_call_s = took
