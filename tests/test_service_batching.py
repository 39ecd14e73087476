"""The batching service: micro-batches under concurrency, back-pressure, a free event loop.

Every service test runs a real uvicorn on 127.0.0.1 with concurrent clients. The model
is the tiny fixture run behind a runtime that sleeps in each call (like a big model on a
busy CPU), so requests really overlap.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from inference_runs import isic_sample, live_server
from skinlesion.inference.predictor import NonFiniteOutputError, Predictor
from skinlesion.inference.runtimes import KerasRuntime
from skinlesion.service.app import create_app
from skinlesion.service.batching import MicroBatcher, QueueFull


class SlowRuntime(KerasRuntime):
    """The Keras runtime, plus ``delay`` seconds per call; records batch sizes and overlap."""

    def __init__(self, model, delay: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(model)
        self.delay = delay
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.inflight = 0

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inflight += 1
        self.entered.set()
        try:
            self.sizes.append(len(next(iter(inputs.values()))))
            time.sleep(self.delay)
            return super().run(inputs)
        finally:
            self.inflight -= 1


def _slow_predictor(run: Path, delay: float) -> tuple[Predictor, SlowRuntime]:
    base = Predictor.from_run(run, runtime="keras")
    runtime = SlowRuntime(base.model, delay)
    return Predictor(base.model, base.spec, run, runtime=runtime), runtime


@pytest.fixture(scope="module")
def photos(isic_dev: Path) -> list[tuple[str, bytes]]:
    paths, _ = isic_sample(isic_dev, 8)
    return [(p.name, p.read_bytes()) for p in paths]


def _post(url: str, name: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"image": (name, data, "image/jpeg")},
                      params=params, timeout=60)


# === Over HTTP =====================================================================

def test_concurrent_requests_are_batched_with_the_same_answers(tiny_run: Path, photos) -> None:
    predictor, runtime = _slow_predictor(tiny_run, delay=0.3)
    reference = Predictor.from_run(tiny_run, runtime="keras")
    expected = {name: reference.predict_bytes(data, name).probability for name, data in photos}
    app = create_app(predictor, max_batch=8, max_wait_ms=20, warmup=False)
    with live_server(app) as url:
        with ThreadPoolExecutor(16) as pool:
            jobs = [pool.submit(_post, url, name, data) for name, data in photos * 3]
            answers = [job.result() for job in jobs]
        stats = app.state.batcher.stats
    assert [r.status_code for r in answers] == [200] * 24
    for r in answers:
        body = r.json()
        assert body["probability"] == pytest.approx(expected[body["filename"]], abs=1e-5)
        assert body["decision"] == reference.decide(expected[body["filename"]])
    assert stats.images == 24 and stats.max_size > 1  # batching happened
    assert stats.batches < 24 and max(runtime.sizes) == stats.max_size <= 8
    assert sum(runtime.sizes) == 24


def test_health_answers_while_a_slow_model_call_is_in_flight(tiny_run: Path, photos) -> None:
    predictor, runtime = _slow_predictor(tiny_run, delay=3.0)
    app = create_app(predictor, warmup=False)
    with live_server(app) as url, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_post, url, *photos[0])
        assert runtime.entered.wait(30)
        t = time.perf_counter()
        health = httpx.get(f"{url}/v1/health", timeout=10)
        took = time.perf_counter() - t
        in_flight_during_health = runtime.inflight == 1 and not slow.done()
        assert slow.result().status_code == 200
    assert health.status_code == 200 and health.json()["model_loaded"] is True
    assert in_flight_during_health  # health came back while the model was still busy
    assert took < 1.0  # not the 3 s the model call takes


def test_a_full_queue_answers_503_with_retry_after(tiny_run: Path, photos) -> None:
    predictor, _ = _slow_predictor(tiny_run, delay=1.5)
    app = create_app(predictor, max_pending=2, max_batch=1, max_wait_ms=0, warmup=False)
    with live_server(app) as url:
        with ThreadPoolExecutor(8) as pool:
            answers = [j.result() for j in [pool.submit(_post, url, *photos[i]) for i in range(8)]]
        stats = app.state.batcher.stats
        after = _post(url, *photos[0])  # once the queue drains, requests are admitted again
    codes = sorted(r.status_code for r in answers)
    busy = [r for r in answers if r.status_code == 503]
    assert set(codes) == {200, 503} and codes.count(200) >= 2
    for r in busy:
        assert int(r.headers["Retry-After"]) >= 1
        assert "server busy" in r.json()["detail"]
    assert stats.rejected == len(busy)
    assert after.status_code == 200


# === The batcher itself ============================================================

def test_batcher_groups_by_tta_and_fails_only_nonfinite_images() -> None:
    calls: list[tuple[int, int]] = []

    def predict(x: np.ndarray, tta: int) -> np.ndarray:
        calls.append((len(x), tta))
        out = x[:, 0, 0, 0].astype(np.float64) / 10.0
        if np.any(x[:, 0, 0, 0] == 9):
            bad = np.where(x[:, 0, 0, 0] == 9, np.nan, out)
            raise NonFiniteOutputError("nan", bad)
        return out

    async def main() -> list[object]:
        batcher = MicroBatcher(predict, max_batch=4, max_wait_ms=50, max_queue=3)
        await batcher.start()
        try:
            imgs = [np.full((2, 2, 3), v, np.float32) for v in (1, 2, 3, 9, 4)]
            ttas = [1, 1, 2, 1, 1]
            tasks = [asyncio.create_task(batcher.predict(x, t)) for x, t in zip(imgs, ttas,
                                                                                 strict=True)]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            with (batcher.admit(), batcher.admit(), batcher.admit(),
                  pytest.raises(QueueFull) as full, batcher.admit()):
                pass
            assert full.value.retry_after_s >= 1 and batcher.stats.rejected == 1
            assert batcher.admitted == 0
            return list(results)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert results[0] == pytest.approx(0.1) and results[1] == pytest.approx(0.2)
    assert results[2] == pytest.approx(0.3) and results[4] == pytest.approx(0.4)
    assert isinstance(results[3], NonFiniteOutputError)
    # max_batch 4: the first round takes four (three at tta 1, one at tta 2: one call per
    # tta), the fifth request forms the next batch.
    assert calls[:2] == [(3, 1), (1, 2)] and calls[2:] == [(1, 1)]


def test_serve_workers_starts_processes_that_each_answer(tiny_run: Path, photos) -> None:
    """``skinlesion serve --workers 2``: uvicorn's worker processes build the app themselves."""
    import os
    import socket
    import subprocess
    import sys

    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "skinlesion.cli.main", "serve", str(tiny_run),
                             "--port", str(port), "--workers", "2", "--max-batch", "4",
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).json().get("model_loaded"):
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("serve --workers 2 did not start")
        answers = [_post(url, *photos[i % len(photos)]) for i in range(6)]
        assert [r.status_code for r in answers] == [200] * 6
        card = httpx.get(f"{url}/v1/model", timeout=10).json()
        assert card["batching"]["max_batch"] == 4 and card["runtime"] == "keras"
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) >= 2
    finally:
        proc.terminate()
        proc.wait(timeout=60)
