"""Exposing the service: API key, allowed hosts, cross-origin POSTs, rate limit, model card,
body deadline, minimum rate and the concurrency cap — each through a real uvicorn on
127.0.0.1 (row 2 and the design gaps of docs/RELIABILITY.md)."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from inference_runs import live_server, responsive_run_dir
from skinlesion.cli.main import app as cli
from skinlesion.inference.predictor import Predictor
from skinlesion.service.app import create_app

KEY = "k" * 24


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.from_run(responsive_run_dir(tmp_path_factory))


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def exposed(predictor: Predictor) -> Iterator[str]:
    app = create_app(predictor, warmup=False, api_key=KEY,
                     allowed_hosts=["127.0.0.1", "localhost"],
                     allowed_origins=["https://app.example.org"], rate_per_minute=6)
    with live_server(app) as url:
        yield url


def _post(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"image": ("a.jpg", _jpeg(), "image/jpeg")},
                      headers=headers or {}, timeout=60)


def test_api_key_is_required_on_the_api_but_not_on_the_page(exposed: str) -> None:
    r = _post(exposed)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "API key" in r.json()["detail"]
    assert _post(exposed, {"Authorization": "Bearer wrong-key-wrong-key"}).status_code == 401
    assert httpx.get(f"{exposed}/v1/model", timeout=10).status_code == 401
    assert httpx.get(f"{exposed}/v1/health", timeout=10).status_code == 200
    assert httpx.get(f"{exposed}/", timeout=10).status_code == 200
    ok = _post(exposed, {"X-API-Key": KEY})
    assert ok.status_code == 200, ok.text
    assert 0.0 <= ok.json()["probability"] <= 1.0


def test_host_header_must_be_allowed(exposed: str) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: its Host header gives it away.
    r = httpx.get(f"{exposed}/v1/health", headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code == 400
    assert httpx.get(f"{exposed}/v1/health", headers={"Host": "localhost"}, timeout=10
                     ).status_code == 200


def test_cross_origin_posts_are_refused(exposed: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    r = _post(exposed, {**auth, "Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    r = _post(exposed, {**auth, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    port = exposed.rsplit(":", 1)[1]
    assert _post(exposed, {**auth, "Origin": f"http://127.0.0.1:{port}",
                           "Sec-Fetch-Site": "same-origin"}).status_code in (200, 429)
    assert _post(exposed, {**auth, "Origin": "https://app.example.org"}).status_code in (200, 429)


def test_rate_limit_per_client(predictor: Predictor) -> None:
    app = create_app(predictor, warmup=False, rate_per_minute=3)  # burst 1
    with live_server(app) as url:
        codes = [_post(url).status_code for _ in range(3)]
        assert codes[0] == 200 and 429 in codes
        r = _post(url)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "too many requests" in r.json()["detail"]


def test_model_card_shows_only_what_a_client_needs(predictor: Predictor) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(predictor, warmup=False)) as c:
        card = c.get("/v1/model").json()
    assert card["spec"]["threshold"] == predictor.threshold
    for secret in ("versions", "code_version", "data_fingerprint", "val_metrics", "created"):
        assert secret not in card["spec"]
    with TestClient(create_app(predictor, warmup=False, admin_model_card=True)) as c:
        assert "versions" in c.get("/v1/model").json()["spec"]


# === Row 2: request bodies that never end, and too many of them ===

def _head(length: int = 100_000) -> bytes:
    return (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % length)


_PART = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
         b"Content-Type: image/jpeg\r\n\r\n")


def _trickle(port: int, every: float, limit: float) -> tuple[str, float]:
    """Send a head, then one body byte every ``every`` s; the answer and when it came."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(_head() + _PART)  # a valid start: the multipart parser waits for more
        s.settimeout(every)
        while time.monotonic() - t0 < limit:
            try:
                data = s.recv(4096)
                return data.split(b"\r\n", 1)[0].decode("latin-1") or "closed", time.monotonic() - t0
            except TimeoutError:
                try:
                    s.sendall(b"-")
                except OSError:
                    return "closed", time.monotonic() - t0
    return "still open", time.monotonic() - t0


def test_row2_a_trickling_body_is_cut_by_the_minimum_rate(predictor: Predictor) -> None:
    # Before: a pause under --client-timeout (15 s) never ended the request.
    app = create_app(predictor, warmup=False, read_timeout_s=15, body_deadline_s=60,
                     min_rate_bps=1024)
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        got, seconds = _trickle(port, every=1.0, limit=40)
        assert got.startswith("HTTP/1.1 408"), got
        assert 4.0 <= seconds <= 12.0, seconds  # the 5 s grace, then the rate check


def test_row2_overall_body_deadline(predictor: Predictor) -> None:
    app = create_app(predictor, warmup=False, body_deadline_s=3, min_rate_bps=None)
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        got, seconds = _trickle(port, every=0.5, limit=30)
        assert got.startswith("HTTP/1.1 408"), got
        assert 2.5 <= seconds <= 8.0, seconds


def test_row2_requests_over_the_cap_get_503_with_retry_after(predictor: Predictor) -> None:
    app = create_app(predictor, warmup=False, max_requests=2, body_deadline_s=20,
                     min_rate_bps=None)
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        held = []
        for _ in range(2):  # two requests in flight, their bodies pending
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(_head() + b"--b\r\n")
            held.append(s)
        time.sleep(0.5)
        r = _post(url)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert "server busy" in r.json()["detail"]
        for s in held:
            s.close()
        time.sleep(0.5)
        assert _post(url).status_code == 200


# === serve refuses to expose itself without a key ===

def test_serve_beyond_loopback_needs_a_key_and_hosts(tmp_path_factory: pytest.TempPathFactory,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    run = responsive_run_dir(tmp_path_factory)
    monkeypatch.delenv("SKINLESION_API_KEY", raising=False)
    res = CliRunner().invoke(cli, ["serve", str(run), "--host", "0.0.0.0", "--port", "0"])
    assert res.exit_code == 2 and "give an API key" in " ".join(res.output.split())
    key = tmp_path / "key"
    key.write_text("short\n")
    res = CliRunner().invoke(cli, ["serve", str(run), "--host", "0.0.0.0", "--port", "0",
                                   "--api-key-file", str(key)])
    assert res.exit_code == 2 and "at least 16 characters" in " ".join(res.output.split())
    monkeypatch.setenv("SKINLESION_API_KEY", KEY)
    res = CliRunner().invoke(cli, ["serve", str(run), "--host", "0.0.0.0", "--port", "0"])
    assert res.exit_code == 2 and "--allowed-host" in " ".join(res.output.split())
