"""Service under load and under attack: ``skinlesion serve`` on 127.0.0.1, real photos, hostile clients.

The real command (``python -m skinlesion.cli.main serve RUN``, as a user starts it: its own
process, its own uvicorn configuration) serves the default backbone (``efficientnet_lite0``
at 224 px; ImageNet weights when installed, else random — the cost is the same). Then:

1. **warm-up**: every client sends two requests;
2. **round 1, under attack**: 8 client threads × N/2 requests, each POSTing a real isic-dev
   JPEG (decode, resize, predict; no heatmap), while hostile clients run beside them:
   50 connections that send half a request line and stall (slowloris), one that connects
   and sends nothing, one that stops mid-body, a declared 100 MB body, a streamed body
   that never ends, and TLS bytes on the plain port;
3. **round 2**: the same load again, undisturbed.

Reported: requests, errors (anything but 200), latency p50/p95/max and requests per second
per round; what each hostile client got (status and seconds until the server answered or
closed); the server process's resident memory (RSS, psutil) after warm-up, after each round
and its peak, sampled every 0.25 s. Quick: N = 50 per client (400 requests); full: N = 200
(1,600 requests).

The same functions drive ``tests/reliability/test_service_load.py`` on a tiny model.

Run: ``python -m bench.service_load [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKBONE = "efficientnet_lite0"
CLIENTS = 8
REQUESTS_PER_CLIENT = {True: 50, False: 200}
"""mode (quick?) → requests per client, over both rounds."""
CLIENT_TIMEOUT_S = 5.0
"""``serve --client-timeout``: header deadline and body-stall limit."""
MAX_UPLOAD_MB = 5.0
SLOWLORIS_CONNECTIONS = 50
TRICKLE_CONNECTIONS = 300
"""Clients trickling a body at once (more than ``serve --max-connections`` 256)."""


# === The server ==================================================================

@dataclass
class Server:
    """A running ``skinlesion serve`` process."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def rss_mb(self) -> float:
        """Resident memory of the server process in MiB."""
        import psutil

        return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20

    def tcp_connections(self) -> int:
        """Established TCP connections the server process holds (the listener excluded)."""
        import psutil

        proc = psutil.Process(self.process.pid)
        conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") \
            else proc.connections(kind="tcp")
        return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return ""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(run_dir: str | os.PathLike[str], *, client_timeout: float = CLIENT_TIMEOUT_S,
          max_upload_mb: float = MAX_UPLOAD_MB, startup_timeout: float = 300,
          extra_args: tuple[str, ...] = ()) -> Iterator[Server]:
    """Start ``skinlesion serve RUN_DIR`` on 127.0.0.1 in its own process; stop it afterwards.

    Raises:
        RuntimeError: if the server does not answer ``/v1/health`` in time (its log attached).
    """
    import httpx

    port = free_port()
    log = Path(tempfile.mkstemp(prefix="skinlesion-serve-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "skinlesion.cli.main", "serve", os.fspath(run_dir),
           "--port", str(port), "--log-level", "warning",
           "--client-timeout", str(client_timeout), "--max-upload-mb", str(max_upload_mb),
           *extra_args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", port, proc, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/v1/health", timeout=2).json().get("model_loaded"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start in {startup_timeout:.0f} s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


# === Load ========================================================================

def load(url: str, payloads: list[tuple[str, bytes]], *, clients: int,
         per_client: int) -> dict[str, Any]:
    """``clients`` threads, each POSTing ``per_client`` photos (its own, in turn) on one
    kept-alive connection; every answer but 200 with a finite probability is an error."""
    import math

    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for k in range(per_client):
                name, data = payloads[(i + k * clients) % len(payloads)]
                t = time.perf_counter()
                try:
                    r = http.post("/v1/predict", files={"image": (name, data, "image/jpeg")})
                    p = r.json().get("probability") if r.status_code == 200 else None
                    ok = p is not None and math.isfinite(p) and 0.0 <= p <= 1.0
                    problem = None if ok else f"{r.status_code}: {r.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                took = time.perf_counter() - t
                with lock:
                    if problem is None:
                        latencies.append(took)
                    else:
                        errors.append(problem)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": clients * per_client, "ok": len(latencies),
            "errors": len(errors), "error_samples": errors[:5], "wall_s": wall,
            "requests_per_s": len(latencies) / wall if wall > 0 else None,
            "latency_ms": latency_summary(latencies)}


def latency_summary(seconds: list[float]) -> dict[str, float] | None:
    """p50, p95, min, max and mean in milliseconds (None without samples)."""
    if not seconds:
        return None
    import numpy as np

    ms = np.asarray(seconds) * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "min": float(ms.min()), "max": float(ms.max()), "mean": float(statistics.fmean(ms))}


class MemorySampler:
    """Samples the server's RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, server: Server, interval: float = 0.25) -> None:
        self.server, self.interval = server, interval
        self.peak_mb = server.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.peak_mb = max(self.peak_mb, self.server.rss_mb())

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# === Hostile clients ===============================================================

def _raw(port: int, chunks: list[bytes], *, wait: float, pause_after: int | None = None
         ) -> tuple[str, float]:
    """Send ``chunks`` on a raw socket, then wait for the server to answer and close.

    Returns:
        ``(first response line or "closed" / "timeout", seconds from the last byte sent)``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except OSError:  # the server already answered and closed: fine
                break
        t = time.monotonic()
        data = b""
        try:
            while True:
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except TimeoutError:
            return "timeout", time.monotonic() - t
        except OSError:  # reset after the answer
            pass
    first = data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed"
    return first, time.monotonic() - t


def hostile_clients(port: int, *, client_timeout: float, max_upload_mb: float,
                    slowloris: int = SLOWLORIS_CONNECTIONS) -> list[dict[str, Any]]:
    """Run every hostile client (concurrently) and report what each got.

    Each entry: ``probe``, ``expected`` (status line start), ``got``, ``seconds`` (until the
    server answered or closed, from the client's last byte), ``limit_s`` and ``ok``.
    """
    wait = client_timeout + 30
    big = int(max_upload_mb * 2**20)
    multipart = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n")
    part_head = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
                 b"Content-Type: image/jpeg\r\n\r\n")
    chunk = b"\xff" * 65536
    streamed = [multipart + b"Transfer-Encoding: chunked\r\n\r\n",
                b"%x\r\n%s\r\n" % (len(part_head), part_head)]
    streamed += [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (big // len(chunk) + 2)
    slack = 5.0
    probes: list[tuple[str, list[bytes], str, float]] = [
        ("connects and sends nothing", [], "HTTP/1.1 408", client_timeout + slack),
        ("half a request line, then silence", [b"POST /v1/pre"], "HTTP/1.1 408",
         client_timeout + slack),
        ("headers without the final blank line", [multipart + b"Content-Length: 10\r\n"],
         "HTTP/1.1 408", client_timeout + slack),
        ("headers, 1 KB of a 100 KB body, then silence",
         [multipart + b"Content-Length: 100000\r\n\r\n" + part_head + b"\xff" * 1000],
         "HTTP/1.1 408", client_timeout + slack),
        ("declares a 100 MB body", [multipart + b"Content-Length: 100000000\r\n\r\n"],
         "HTTP/1.1 413", slack),
        ("streams a body past the limit (chunked, no length)", streamed, "HTTP/1.1 413", slack),
        ("TLS handshake bytes on the plain-HTTP port",
         [bytes.fromhex("16030100a5010000a103030000")], "HTTP/1.1 400", slack),
        ("a request line that is not HTTP", [b"HELLO THERE\r\n\r\n"], "HTTP/1.1 400", slack),
    ]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(name: str, chunks: list[bytes], expected: str, limit: float) -> None:
        try:
            got, seconds = _raw(port, chunks, wait=wait)
        except OSError as exc:
            got, seconds = f"{type(exc).__name__}: {exc}", float("nan")
        with lock:
            results.append({"probe": name, "expected": expected, "got": got,
                            "seconds": seconds, "limit_s": limit,
                            "ok": got.startswith(expected) and seconds <= limit})

    loris: list[tuple[str, float]] = []

    def slow() -> None:
        try:
            loris.append(_raw(port, [b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"], wait=wait))
        except OSError as exc:
            loris.append((f"{type(exc).__name__}", float("nan")))

    threads = [threading.Thread(target=one, args=p) for p in probes]
    threads += [threading.Thread(target=slow) for _ in range(slowloris)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if slowloris:
        answered = [s for got, s in loris if got.startswith("HTTP/1.1 408")]
        limit = client_timeout + slack
        results.append({"probe": f"{slowloris} connections sending headers, then silence "
                                 "(slowloris)",
                        "expected": "HTTP/1.1 408", "got": f"{len(answered)}/{slowloris} × 408",
                        "seconds": max(answered) if answered else float("nan"),
                        "limit_s": limit,
                        "ok": len(answered) == slowloris and max(answered) <= limit})
    order = [p[0] for p in probes]
    return sorted(results, key=lambda r: order.index(r["probe"]) if r["probe"] in order else 99)


def trickle_flood(port: int, *, connections: int, interval: float = 2.0, wait: float = 120.0
                  ) -> dict[str, Any]:
    """``connections`` clients that each send a POST head, then one body byte every ``interval`` s.

    Before the body deadline and the minimum rate, every such client held its connection
    for as long as it kept trickling. Now each must be answered — 408 (too slow) or 503 (over
    the connection cap) — and none may stay open. Returns the counts per answer and the
    slowest answer in seconds from the connection's start.
    """
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    answers: list[tuple[str, float]] = []
    lock = threading.Lock()

    def one() -> None:
        t0 = time.monotonic()
        got = "timeout"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
                s.sendall(head)
                s.settimeout(interval)
                while time.monotonic() - t0 < wait:
                    try:
                        data = s.recv(4096)
                        got = data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed"
                        break
                    except TimeoutError:
                        try:
                            s.sendall(b"-")
                        except OSError:
                            got = "closed"
                            break
                    except OSError:
                        got = "reset"
                        break
        except OSError as exc:
            got = type(exc).__name__
        with lock:
            answers.append((got, time.monotonic() - t0))

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts: dict[str, int] = {}
    for got, _ in answers:
        key = got[9:12] if got.startswith("HTTP/1.1 ") else got
        counts[key] = counts.get(key, 0) + 1
    return {"connections": connections, "interval_s": interval, "answers": counts,
            "slowest_s": round(max(sec for _, sec in answers), 1)}


def worst_images() -> list[tuple[str, bytes]]:
    """The worst accepted uploads of issue 17 (row 1): tiny files that decode to 49 MP.

    A lossless WebP of 7,000×7,000 px and a 16-bit greyscale PNG of 7,000×7,000 px (49 MP,
    under the service's 50 MP limit), both of a smooth pattern (so they compress to a few
    KB and are in scope: not constant).
    """
    import io

    import numpy as np
    from PIL import Image

    side = 7000
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    rgb = np.empty((side, side, 3), np.uint8)
    rgb[..., 0] = (ramp[None, :] * 255).astype(np.uint8)
    rgb[..., 1] = (ramp[:, None] * 255).astype(np.uint8)
    rgb[..., 2] = 128
    webp = io.BytesIO()
    Image.fromarray(rgb).save(webp, "WEBP", lossless=True, quality=0, method=0)
    del rgb
    grey = (ramp[None, :] * ramp[:, None] * 65535).astype(np.uint16)
    png = io.BytesIO()
    Image.fromarray(grey).save(png, "PNG", compress_level=9)
    return [("worst.webp", webp.getvalue()), ("worst16.png", png.getvalue())]


def measure_worst_images(run_dir: str | os.PathLike[str], *, parallel: int = 4,
                         extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Peak server RSS and CPU for each worst image alone, then ``parallel`` at once."""
    import httpx
    import psutil

    images = worst_images()
    out: dict[str, Any] = {"images": [], "parallel": {}}
    with serve(run_dir, max_upload_mb=20, extra_args=extra_args) as server:
        proc = psutil.Process(server.process.pid)
        small = photos(1)[0]
        httpx.post(f"{server.url}/v1/predict", files={"image": small}, timeout=120)
        for name, data in images:
            before = server.rss_mb()
            cpu0 = sum(proc.cpu_times()[:2])
            with MemorySampler(server, interval=0.05) as sampler:
                t0 = time.monotonic()
                r = httpx.post(f"{server.url}/v1/predict", files={"image": (name, data)},
                               timeout=600)
                wall = time.monotonic() - t0
            out["images"].append({
                "image": name, "file_kb": round(len(data) / 1024, 1), "status": r.status_code,
                "rss_before_mb": round(before, 1), "rss_peak_mb": round(sampler.peak_mb, 1),
                "peak_growth_mb": round(sampler.peak_mb - before, 1),
                "cpu_s": round(sum(proc.cpu_times()[:2]) - cpu0, 2), "wall_s": round(wall, 2)})
        name, data = images[0]
        before = server.rss_mb()
        with MemorySampler(server, interval=0.05) as sampler:
            threads = [threading.Thread(target=lambda: httpx.post(
                f"{server.url}/v1/predict", files={"image": (name, data)}, timeout=600))
                for _ in range(parallel)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        time.sleep(1.0)
        out["parallel"] = {"image": name, "requests": parallel, "rss_before_mb": round(before, 1),
                           "rss_peak_mb": round(sampler.peak_mb, 1),
                           "rss_after_mb": round(server.rss_mb(), 1)}
    return out


# === The whole measurement ========================================================

def photos(n: int = 32) -> list[tuple[str, bytes]]:
    """``n`` real isic-dev JPEGs (name, bytes), mixed sources and sizes."""
    import pandas as pd

    from bench.harness.environment import isic_dev_dir

    root = isic_dev_dir()
    df = pd.read_csv(root / "labels.csv")
    df = df[~df["filename"].str.startswith("fullsize/")]
    picked = df.groupby("source", sort=True).head(max(1, n // 4)).head(n)
    return [(Path(f).name, (root / f).read_bytes()) for f in picked["filename"]]


def measure_service(run_dir: str | os.PathLike[str], payloads: list[tuple[str, bytes]], *,
                    clients: int, per_client: int, client_timeout: float = CLIENT_TIMEOUT_S,
                    max_upload_mb: float = MAX_UPLOAD_MB,
                    slowloris: int = SLOWLORIS_CONNECTIONS, trickle: int = 0) -> dict[str, Any]:
    """Warm-up, a loaded round under attack, a clean round; memory and connections throughout.

    ``trickle``: that many clients trickling a body (one byte every 2 s) after round 2
    (issue 17, row 2): each must be answered 408 or 503, none left open.
    """
    import httpx

    half = max(1, per_client // 2)
    with serve(run_dir, client_timeout=client_timeout, max_upload_mb=max_upload_mb) as server:
        rss_start = server.rss_mb()
        warm = load(server.url, payloads, clients=clients, per_client=2)
        rss_warm = server.rss_mb()
        with MemorySampler(server) as sampler:
            attack: list[dict[str, Any]] = []
            attacker = threading.Thread(target=lambda: attack.extend(hostile_clients(
                server.port, client_timeout=client_timeout, max_upload_mb=max_upload_mb,
                slowloris=slowloris)))
            attacker.start()
            round1 = load(server.url, payloads, clients=clients, per_client=half)
            attacker.join()
            rss_round1 = server.rss_mb()
            round2 = load(server.url, payloads, clients=clients, per_client=per_client - half)
            rss_round2 = server.rss_mb()
        flood = trickle_flood(server.port, connections=trickle) if trickle else None
        time.sleep(0.5)
        connections_after = server.tcp_connections()
        health = httpx.get(f"{server.url}/v1/health", timeout=10).json()
        alive = server.process.poll() is None
    return {
        "warmup": warm, "round1_under_attack": round1, "round2": round2,
        "hostile_clients": attack,
        "memory_mb": {"start": rss_start, "after_warmup": rss_warm, "after_round1": rss_round1,
                      "after_round2": rss_round2, "peak": sampler.peak_mb,
                      "growth_round2": rss_round2 - rss_round1},
        "trickle_flood": flood,
        "connections_after": connections_after, "healthy_after": health.get("status") == "ok",
        "alive_after": alive,
        "settings": {"clients": clients, "requests_per_client": per_client,
                     "client_timeout_s": client_timeout, "max_upload_mb": max_upload_mb,
                     "slowloris_connections": slowloris, "payloads": len(payloads),
                     "payload_kb": [round(len(d) / 1024, 1) for _, d in payloads]},
    }


def _make_run(folder: Path) -> str:
    """Save the default backbone as a run (ImageNet weights when installed, else random)."""
    from skinlesion.models.classifier import build_classifier
    from skinlesion.models.registry import get_backbone
    from skinlesion.runspec import MODEL_FILE, ModelSpec
    from skinlesion.utils.atomic import atomic_path

    spec = get_backbone(BACKBONE)
    weights = "imagenet" if spec.weights_status() in ("installed", "cached") else None
    model = build_classifier(BACKBONE, weights=weights)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with atomic_path(folder / MODEL_FILE) as tmp:
        model.save(tmp)
    ModelSpec(backbone=BACKBONE, input_size=spec.input_size, preprocessing=spec.preprocessing,
              last_conv_layer=spec.last_conv_layer, model_id=f"bench-{BACKBONE}").save(folder)
    return "imagenet" if weights else "random"


def run(quick: bool = True) -> dict[str, Any]:
    """Measure (see the module docstring) and return the record for docs/BENCHMARKS.md."""
    from bench.harness.environment import cache_dir, load_average

    per_client = REQUESTS_PER_CLIENT[quick]
    run_dir = cache_dir() / "service_load" / "run"
    load_before = load_average()
    weights = _make_run(run_dir)
    value = measure_service(run_dir, photos(), clients=CLIENTS, per_client=per_client,
                            trickle=TRICKLE_CONNECTIONS)
    value["worst_images"] = measure_worst_images(run_dir)
    value.update(backbone=BACKBONE, weights=weights, quick=quick,
                 load_average={"before": load_before, "after": load_average()})
    return {**value, **_render(value)}


def _render(v: dict[str, Any]) -> dict[str, Any]:
    mem = v["memory_mb"]
    rounds = [("warm-up", v["warmup"]), ("round 1, beside the hostile clients",
                                          v["round1_under_attack"]), ("round 2", v["round2"])]
    rows = [{"phase": name, "clients": r["clients"], "requests": r["requests"],
             "errors": r["errors"], "p50_ms": (r["latency_ms"] or {}).get("p50"),
             "p95_ms": (r["latency_ms"] or {}).get("p95"),
             "max_ms": (r["latency_ms"] or {}).get("max"), "requests_per_s": r["requests_per_s"]}
            for name, r in rounds]
    loaded = [r for _, r in rounds[1:]]
    total = sum(r["requests"] for r in loaded)
    errors = sum(r["errors"] for r in loaded)
    r2 = v["round2"]["latency_ms"] or {}
    s = v["settings"]
    return {
        "title": "Service under load and under attack (skinlesion serve on 127.0.0.1)",
        "description": (
            f"`skinlesion serve` ({v['backbone']} at 224 px, {v['weights']} weights) in its own "
            f"process; {s['clients']} client threads, each on one kept-alive connection, POST "
            f"real isic-dev JPEGs ({s['payloads']} photos, "
            f"{min(s['payload_kb']):.0f}–{max(s['payload_kb']):.0f} KB): decode, resize, "
            "predict, no heatmap. Round 1 runs beside hostile clients; round 2 alone. "
            f"--client-timeout {s['client_timeout_s']:g} s, --max-upload-mb "
            f"{s['max_upload_mb']:g}."),
        "headline": [
            {"metric": "Requests under load / errors", "value": f"{total} / {errors}",
             "unit": "", "note": f"{s['clients']} concurrent clients, 2 rounds"},
            {"metric": "Latency p50 / p95 (round 2)",
             "value": f"{r2.get('p50', float('nan')):.0f} / {r2.get('p95', float('nan')):.0f}",
             "unit": "ms", "note": "per request, client side"},
            {"metric": "Server RSS after warm-up → after the last round",
             "value": f"{mem['after_warmup']:.0f} → {mem['after_round2']:.0f}", "unit": "MiB",
             "note": f"peak {mem['peak']:.0f} MiB"},
            {"metric": "Hostile clients handled as expected",
             "value": f"{sum(p['ok'] for p in v['hostile_clients'])} / "
                      f"{len(v['hostile_clients'])}", "unit": "", "note": "408 / 413 / 400"},
        ],
        "rows": rows,
        "tables": [
            {"title": "Hostile clients (during round 1)",
             "columns": ["probe", "expected", "got", "seconds", "limit_s", "ok"],
             "rows": v["hostile_clients"],
             "notes": ["seconds: from the client's last byte until the server answered or "
                       "closed the connection."]},
            {"title": "Server memory (RSS, psutil)", "columns": ["point", "rss_mb"],
             "rows": [{"point": k.replace("_", " "), "rss_mb": val} for k, val in mem.items()]},
            *_extra_tables(v),
        ],
        "notes": [
            "Errors: any answer other than 200 with a probability in [0, 1], or a client-side "
            "exception; latency is measured by the client (connection reused).",
            f"After the run: {v['connections_after']} connection(s) still open on the server, "
            f"health {'ok' if v['healthy_after'] else 'NOT ok'}, process "
            f"{'alive' if v['alive_after'] else 'DEAD'}.",
            "The machine is shared (load average recorded); compare latencies within a run.",
        ],
    }


def _extra_tables(v: dict[str, Any]) -> list[dict[str, Any]]:
    tables = []
    flood = v.get("trickle_flood")
    if flood:
        tables.append({
            "title": f"{flood['connections']} clients trickling a body (one byte every "
                     f"{flood['interval_s']:g} s)",
            "columns": ["answer", "clients"],
            "rows": [{"answer": k, "clients": n} for k, n in sorted(flood["answers"].items())],
            "notes": [f"slowest answer {flood['slowest_s']} s after connecting; 408: body too "
                      "slow (minimum rate after 5 s); 503 with Retry-After: over the requests-"
                      "in-flight cap (--max-connections / 2 = 128), or uvicorn's plain 503 over "
                      "--max-connections (256)."]})
    worst = v.get("worst_images")
    if worst:
        par = worst["parallel"]
        tables.append({
            "title": "Worst accepted images (49 MP): server peak RSS",
            "columns": ["image", "file_kb", "status", "rss_before_mb", "rss_peak_mb",
                        "peak_growth_mb", "cpu_s", "wall_s"],
            "rows": worst["images"],
            "notes": [f"{par['requests']} × {par['image']} at once: RSS {par['rss_before_mb']} → "
                      f"peak {par['rss_peak_mb']} → {par['rss_after_mb']} MiB afterwards."]})
    return tables


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.service_load [--quick]``: print the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 requests instead of 1,600")
    parser.add_argument("--worst-images", action="store_true",
                        help="only the peak RSS/CPU of the worst accepted images (row 1)")
    args = parser.parse_args(argv)
    if args.worst_images:
        from bench.harness.environment import cache_dir

        run_dir = cache_dir() / "service_load" / "run"
        _make_run(run_dir)
        print(json.dumps(measure_worst_images(run_dir), indent=2, default=str))
        return 0
    print(json.dumps(run(quick=args.quick), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
