"""The bad-input corpus through ``Predictor.predict_files`` and ``skinlesion predict``: every
row of the table in docs/RELIABILITY.md, ``predict`` column."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from inference_runs import responsive_run_dir
from reliability.corpus import (
    ACCEPTED,
    REJECTED,
    Built,
    Case,
    build_all,
    case,
    cases,
    heif_installed,
    real_photos,
    run_unprivileged,
    running_as_root,
    world_dir,
)
from skinlesion.cli.main import app
from skinlesion.inference.predictor import PredictionRow, Predictor

pytestmark = pytest.mark.integration

_IN_PROCESS = [c for c in cases(entry="predict") if not (c.unprivileged and running_as_root())]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A model whose output depends on the pixels, so a wrong conversion changes the number.
    return responsive_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_run(run_dir)


@pytest.fixture(scope="module")
def corpus(isic_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    return build_all(tmp_path_factory.mktemp("corpus predict"), real_photos(isic_dev))


@pytest.fixture(scope="module")
def rows(predictor: Predictor, corpus: dict[str, Built]) -> dict[str, PredictionRow]:
    """One batch over every case: one bad file never stops the others."""
    names = [c.name for c in _IN_PROCESS]
    paths = [corpus[n].path for n in names]
    out = predictor.predict_files(paths, batch_size=8)  # type: ignore[arg-type]
    assert len(out) == len(names)
    return dict(zip(names, out, strict=True))


@pytest.fixture(scope="module")
def cli_rows(run_dir: Path, corpus: dict[str, Built]) -> dict[str, dict[str, Any]]:
    names = [c.name for c in _IN_PROCESS]
    res = CliRunner().invoke(app, ["predict", str(run_dir), *[str(corpus[n].path) for n in names],
                                   "--json", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    by_path = {r["path"]: r for r in doc["rows"]}
    assert len(doc["rows"]) == len(names)  # every named input has a row, none dropped
    return {n: by_path[str(corpus[n].path)] for n in names}


@pytest.mark.parametrize("c", _IN_PROCESS, ids=lambda c: c.name)
def test_predictor_case(c: Case, rows: dict[str, PredictionRow], predictor: Predictor,
                        corpus: dict[str, Built]) -> None:
    if c.name == "heic" and heif_installed():
        pytest.skip("pillow-heif is installed; the table documents the default install")
    row = rows[c.name]
    if c.predict.status == REJECTED:
        assert row.error is not None and c.predict.message in row.error, row.error
        scope = row.error.startswith("out of scope")
        assert row.probability is None and row.decision == ("out_of_scope" if scope else None)
        return
    assert c.predict.status == ACCEPTED
    assert row.error is None, row.error
    p = row.probability
    assert p is not None and math.isfinite(p) and 0.0 <= p <= 1.0
    assert row.decision == predictor.decide(p)
    x = predictor.load_image(corpus[c.name].path)  # type: ignore[arg-type]
    assert x.shape == (predictor.input_size, predictor.input_size, 3) and x.dtype == np.float32
    assert float(predictor.predict_arrays(x[None])[0]) == pytest.approx(p, abs=1e-6)
    if c.check is not None:
        c.check(x)  # the conversion, seen on the pixels the model received


@pytest.mark.parametrize("c", _IN_PROCESS, ids=lambda c: c.name)
def test_predict_cli_case(c: Case, cli_rows: dict[str, dict[str, Any]],
                          rows: dict[str, PredictionRow]) -> None:
    if c.name == "heic" and heif_installed():
        pytest.skip("pillow-heif is installed; the table documents the default install")
    got, want = cli_rows[c.name], rows[c.name]
    assert got["error"] == want.error
    assert got["decision"] == want.decision
    if want.probability is None:
        assert got["probability"] is None
    else:
        assert got["probability"] == pytest.approx(want.probability, abs=1e-6)


def test_rotated_photo_is_not_predicted_sideways(predictor: Predictor, corpus: dict[str, Built],
                                                tmp_path: Path) -> None:
    """The same pixels without the EXIF tag give other model input (the tag is not ignored)."""
    from PIL import Image

    path = corpus["exif_rotated"].path
    assert path is not None
    with Image.open(path) as im:
        sideways = tmp_path / "sideways.png"
        im.save(sideways)  # pixels as stored, orientation tag dropped
    upright, stored = predictor.load_image(path), predictor.load_image(sideways)
    assert np.abs(upright - stored).mean() > 40
    assert np.allclose(np.rot90(stored, k=-1), upright, atol=1.0)  # 90° clockwise


def test_unreadable_file_as_an_unprivileged_user(predictor: Predictor, isic_dev: Path) -> None:
    """chmod 000 for real: the Predictor's batch path runs in a child that dropped to nobody.

    The child never reaches TensorFlow (a file that fails to decode is never batched), which
    matters because TensorFlow's thread pools do not survive the fork.
    """
    c = case("unreadable")
    folder = world_dir("skinlesion-unreadable-predict-")
    try:
        path = c.build(folder, real_photos(isic_dev)).path
        assert path is not None

        def child() -> dict[str, Any]:
            import os

            [row] = predictor.predict_files([path])
            return {"denied": not os.access(path, os.R_OK), "row": row.to_dict()}

        got = run_unprivileged(child)
        assert "value" in got, got
        assert not running_as_root() or got["uid"] != 0
        assert got["value"]["denied"] is True  # the OS refuses the read: nothing simulated
        row = got["value"]["row"]
        assert row["probability"] is None and c.predict.message in row["error"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_unreadable_file_through_the_cli(run_dir: Path, corpus: dict[str, Built],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's row for an unreadable file; the OS refusal is simulated when running as root
    (the real refusal is checked by the test above, on the same code path)."""
    c = case("unreadable")
    path = corpus[c.name].path
    good = corpus["control_photo"].path
    assert path is not None and good is not None
    if running_as_root():
        real = Path.open

        def deny(self: Path, *args: object, **kwargs: object) -> object:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", deny)
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(path), str(good), "--json"])
    assert res.exit_code == 0, res.output
    by_path = {r["path"]: r for r in json.loads(res.stdout)["rows"]}
    assert c.predict.message in by_path[str(path)]["error"]
    assert by_path[str(good)]["probability"] is not None
    assert "1 failed" in " ".join(res.stderr.split())
