"""The HTTP service: FastAPI's TestClient, and a real uvicorn on 127.0.0.1 driven by httpx."""

from __future__ import annotations

import base64
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference_runs import isic_sample, live_server, responsive_run_dir
from skinlesion import INTENDED_USE
from skinlesion.inference.predictor import Predictor
from skinlesion.service.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.from_run(responsive_run_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor, max_upload_mb=1)) as c:
        yield c


@pytest.fixture(scope="module")
def photo(isic_dev: Path) -> Path:
    return isic_sample(isic_dev, 2)[0][1]


def _bomb_png(side: int) -> bytes:
    """A 1-bit PNG of side × side pixels: a few KB on the wire, side² pixels once decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


# === Through the test client ===

def test_predict_returns_the_predictors_answer(client: TestClient, predictor: Predictor,
                                              photo: Path) -> None:
    data = photo.read_bytes()
    # The client's name and declared type are ignored: the bytes say JPEG.
    r = client.post("/v1/predict?tta=2", files={"image": ("../../etc/passwd", data, "text/plain")})
    assert r.status_code == 200, r.text
    body = r.json()
    x = predictor.load_image(photo)[None]
    assert body["probability"] == pytest.approx(float(predictor.predict_arrays(x, tta=2)[0]), abs=1e-6)
    assert body["decision"] == predictor.decide(body["probability"])
    assert body["threshold"] == predictor.threshold and body["tta"] == 2
    assert body["model_id"] == predictor.model_id and body["intended_use"] == INTENDED_USE
    assert body["filename"] == "passwd" and "heatmap_png_base64" not in body


def test_heatmap_as_form_field_is_a_png_overlay(client: TestClient, photo: Path) -> None:
    from PIL import Image

    r = client.post("/v1/predict", files={"image": ("p.jpg", photo.read_bytes(), "image/jpeg")},
                    data={"heatmap": "true", "tta": "4"})
    assert r.status_code == 200, r.text
    assert r.json()["tta"] == 4
    png = base64.b64decode(r.json()["heatmap_png_base64"])
    with Image.open(io.BytesIO(png)) as img, Image.open(photo) as orig:
        assert img.format == "PNG" and max(img.size) == 512
        assert abs(img.size[0] / img.size[1] - orig.size[0] / orig.size[1]) < 0.02
        assert np.asarray(img).std() > 5  # a picture, not a blank


@pytest.mark.parametrize(("kind", "message"), [
    ("empty", "empty upload"),
    ("text", "not an image"),
    ("truncated", "corrupt or truncated"),
])
def test_non_images_are_422_json(client: TestClient, photo: Path, kind: str, message: str) -> None:
    payload = {"empty": b"", "text": b"this is not an image",
               "truncated": photo.read_bytes()[:3000]}[kind]
    r = client.post("/v1/predict", files={"image": ("x.jpg", payload, "image/jpeg")})
    assert r.status_code == 422
    assert message in r.json()["detail"]


def test_decompression_bomb_is_422_before_decoding(client: TestClient) -> None:
    bomb = _bomb_png(8000)  # 64 MP, over the default 50 MP
    assert len(bomb) < 100_000
    r = client.post("/v1/predict", files={"image": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 422 and "too large" in r.json()["detail"]


def test_oversized_upload_is_413_json(client: TestClient) -> None:
    r = client.post("/v1/predict", files={"image": ("big.jpg", b"\0" * (2 * 2**20), "image/jpeg")})
    assert r.status_code == 413 and "over the limit of 1,048,576 bytes" in r.json()["detail"]


def test_bad_options_and_missing_field(client: TestClient, photo: Path) -> None:
    r = client.post("/v1/predict?tta=3", files={"image": ("p.jpg", photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 422 and "tta must be one of" in r.json()["detail"]
    assert client.post("/v1/predict").status_code == 422


def test_health_model_card_docs_and_page(client: TestClient, predictor: Predictor) -> None:
    assert client.get("/v1/health").json() == {
        "status": "ok", "model_loaded": True, "model_id": predictor.model_id,
        "version": client.app.version}
    card = client.get("/v1/model").json()
    assert card["intended_use"] == INTENDED_USE
    assert card["spec"]["backbone"] == predictor.spec.backbone
    assert card["spec"]["threshold"] == predictor.threshold
    assert card["limits"]["max_upload_mb"] == 1.0 and card["input"]["size"] == predictor.input_size
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Research and education only" in page.text and "{{" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_model_loads_once_at_startup(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = responsive_run_dir(tmp_path_factory)
    app = create_app(run, warmup=False)
    assert app.state.predictor is None
    with TestClient(app) as c:
        loaded = app.state.predictor
        assert loaded is not None and loaded.run_dir == run
        c.get("/v1/health")
        c.get("/v1/model")
        assert app.state.predictor is loaded


# === A real uvicorn on 127.0.0.1 ===

@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[str]:
    with live_server(create_app(predictor, max_upload_mb=1)) as url:
        yield url


def _raw_request(url: str, head: bytes, body_parts: list[bytes]) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(head)
        for part in body_parts:
            s.sendall(part)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunks[-1]:
                break
        return b"".join(chunks)


def test_uvicorn_predicts_over_http(server: str, photo: Path) -> None:
    with httpx.Client(base_url=server, timeout=60) as http:
        assert http.get("/v1/health").json()["status"] == "ok"
        r = http.post("/v1/predict", params={"heatmap": "true"},
                      files={"image": ("photo.jpg", photo.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        assert 0.0 <= r.json()["probability"] <= 1.0 and r.json()["heatmap_png_base64"]
        assert http.get("/v1/model").json()["intended_use"] == INTENDED_USE
        r = http.post("/v1/predict", files={"image": ("b.png", _bomb_png(8000), "image/png")})
        assert r.status_code == 422 and "too large" in r.json()["detail"]
        r = http.post("/v1/predict", files={"image": ("t.jpg", b"hello", "image/jpeg")})
        assert r.status_code == 422 and r.headers["content-type"] == "application/json"


def test_uvicorn_refuses_a_declared_oversize_body_without_reading_it(server: str) -> None:
    # Only the headers are sent: a server that waited for the body would time out.
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 100000000\r\n\r\n")
    start = time.monotonic()
    reply = _raw_request(server, head, [])
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"over the limit" in reply and time.monotonic() - start < 10


def test_uvicorn_cuts_off_a_streamed_oversize_body(server: str) -> None:
    # Chunked upload, no Content-Length: refused once the streamed bytes pass 1 MB,
    # although the request body never ends.
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
    part = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    chunk = b"\xff" * 65536
    body = [b"%x\r\n%s\r\n" % (len(part), part)] + [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 17
    reply = _raw_request(server, head, body)
    assert reply.startswith(b"HTTP/1.1 413") and b"upload too large" in reply
