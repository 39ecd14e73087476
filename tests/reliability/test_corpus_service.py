"""The bad-input corpus through the service: FastAPI's TestClient for every row of the table
in docs/RELIABILITY.md (service column), and a real uvicorn on 127.0.0.1 for a subset."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from inference_runs import live_server, responsive_run_dir
from reliability.corpus import (
    ACCEPTED,
    REJECTED,
    Built,
    Case,
    build_all,
    cases,
    heif_installed,
    real_photos,
)
from skinlesion import INTENDED_USE
from skinlesion.inference.predictor import Predictor
from skinlesion.service.app import create_app

pytestmark = pytest.mark.integration

_SERVICE = cases(entry="service")
_OVER_HTTP = ("control_photo", "empty_file", "truncated_jpeg", "text_as_jpg", "png_alpha",
              "exif_rotated", "bomb_png", "bomb_jpeg", "heic", "path_non_ascii", "path_escape")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.from_run(responsive_run_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def corpus(isic_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    return build_all(tmp_path_factory.mktemp("corpus service"), real_photos(isic_dev),
                     group=None)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor, warmup=False)) as c:
        yield c


def _label(name: str) -> str:
    """What the service may echo for an upload's name: its last component, printable."""
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def _check_answer(c: Case, status: int, body: dict, headers: httpx.Headers,
                  predictor: Predictor, built: Built) -> None:
    assert headers["content-type"] == "application/json"
    name, data = built.upload()
    if c.service.status == REJECTED:
        assert status == 422, body
        assert c.service.message in body["detail"], body
        assert set(body) == {"detail"}
        return
    assert c.service.status == ACCEPTED
    assert status == 200, body
    p = body["probability"]
    assert math.isfinite(p) and 0.0 <= p <= 1.0
    # The same conversion as the Predictor: the same number.
    assert p == pytest.approx(predictor.predict_bytes(data, name).probability, abs=1e-6)
    assert body["decision"] == predictor.decide(p)
    assert body["filename"] == _label(name)
    assert body["intended_use"] == INTENDED_USE


@pytest.mark.parametrize("c", _SERVICE, ids=lambda c: c.name)
def test_service_case(c: Case, client: TestClient, predictor: Predictor,
                      corpus: dict[str, Built]) -> None:
    if c.name == "heic" and heif_installed():
        pytest.skip("pillow-heif is installed; the table documents the default install")
    name, data = corpus[c.name].upload()
    r = client.post("/v1/predict", files={"image": (name, data, "application/octet-stream")})
    _check_answer(c, r.status_code, r.json(), r.headers, predictor, corpus[c.name])


def test_uvicorn_subset(predictor: Predictor, corpus: dict[str, Built]) -> None:
    """The same answers from a real server on 127.0.0.1, one connection reused throughout."""
    chosen = [c for c in _SERVICE if c.name in _OVER_HTTP]
    assert len(chosen) == len(_OVER_HTTP)
    with live_server(create_app(predictor, warmup=False)) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        for c in chosen:
            if c.name == "heic" and heif_installed():
                continue
            name, data = corpus[c.name].upload()
            r = http.post("/v1/predict", files={"image": (name, data, "image/jpeg")})
            _check_answer(c, r.status_code, r.json(), r.headers, predictor, corpus[c.name])
        # Still healthy after every bad upload.
        assert http.get("/v1/health").json()["status"] == "ok"
