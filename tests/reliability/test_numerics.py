"""Numerical safety: a diverging training stops with a clear message and writes no model;
probabilities are always finite and in [0, 1] — a model that emits NaN gets an error row
(predict) or an error answer (service), never a NaN probability."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from skinlesion.cli.main import app
from skinlesion.inference.predictor import Predictor
from skinlesion.runspec import MODEL_FILE, SPEC_FILE, ModelSpec
from skinlesion.service.app import create_app
from skinlesion.utils.atomic import atomic_path
from test_training import make_dataset, tiny_config

SIZE = 32
BRIGHT, DARK = 230, 40


# === Training that diverges ===

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("numerics data"), n_train=16, n_val=8, size=32)


def test_nan_loss_stops_training_with_a_hint(data: Path, tmp_path: Path) -> None:
    """The CLI on a learning rate of 1e30: exit 4, a message that says what to do, no model."""
    config = tmp_path / "diverge.yaml"
    # Plain SGD: Adam's normalised steps would grow the weights by only ~lr per step.
    config.write_text(yaml.safe_dump({"optimizer": "sgd", "mode": "frozen", "head_lr": 1e30}))
    run = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "train", str(data), "--out", str(run), "--config", str(config),
        "--backbone", "test_tiny_cnn", "--weights", "none", "--input-size", "32",
        "--batch-size", "8", "--head-epochs", "3", "--patience", "0", "--seed", "1"])
    assert res.exit_code == 4, res.output
    msg = " ".join(res.stderr.split())
    assert "training diverged: the loss became NaN/Inf in the head stage" in msg
    assert "Lower the learning rate (--head-lr / --finetune-lr)" in msg
    # Nothing that looks like a finished run, and nothing half-written.
    assert not (run / MODEL_FILE).exists() and not (run / SPEC_FILE).exists()
    assert not list(run.glob(".model.keras*")) and not list(run.glob(".model_spec.json*"))


def test_nan_loss_in_the_image_stage(data: Path, tmp_path: Path) -> None:
    """Fine-tuning on images (Keras TerminateOnNaN inside fit) raises TrainingDivergedError."""
    from skinlesion.training.errors import TrainingDivergedError
    from skinlesion.training.trainer import train

    cfg = tiny_config(data, tmp_path / "run", backbone="test_tiny_cnn", head_epochs=0,
                      finetune_epochs=3, finetune_lr=1e30, optimizer="sgd", warmup_epochs=0)
    with pytest.raises(TrainingDivergedError, match=r"finetune stage\. Lower the learning rate"):
        train(cfg)
    assert not (tmp_path / "run" / MODEL_FILE).exists()


# === A model that emits NaN ===

def _nan_model() -> Any:
    """Raw 0–255 RGB in, P(malignant) out — NaN for bright images, a number for dark ones."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="reliability_tests")
    class NanWhenBright(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            mean = ops.mean(x, axis=(1, 2, 3))
            p = ops.sigmoid((mean - 128.0) / 64.0)
            return ops.expand_dims(ops.where(mean > 128.0, ops.full_like(p, float("nan")), p), -1)

    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, NanWhenBright(name="nan_when_bright")(inputs))


def _linear_model(value: float) -> Any:
    """A model whose 'probability' is ``value`` whatever the input (out of range on purpose)."""
    import keras
    from keras import ops

    inputs = keras.Input((SIZE, SIZE, 3))
    out = keras.layers.Lambda(lambda x: ops.ones_like(x[:, :1, 0, 0]) * value)(inputs)
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("nan_run")
    with atomic_path(run / MODEL_FILE) as tmp:
        _nan_model().save(tmp)
    ModelSpec(backbone="test_nan", input_size=SIZE, threshold=0.5, model_id="nan-model").save(run)
    return run


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("numerics photos")
    out = {}
    rng = np.random.default_rng(0)
    for name, level in (("bright", BRIGHT), ("dark", DARK)):
        out[name] = folder / f"{name}.png"
        # A little texture (± 8 grey levels): a flat image is answered "out of scope".
        noise = rng.integers(-8, 9, (40, 48, 3))
        Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8)).save(out[name])
    return out


def test_predictor_gives_an_error_row_not_nan(nan_run: Path, photos: dict[str, Path]) -> None:
    predictor = Predictor.from_run(nan_run)
    rows = predictor.predict_files([photos["dark"], photos["bright"], photos["dark"]])
    dark, bright, dark2 = rows
    assert bright.probability is None and bright.decision is None
    assert bright.error is not None and "NaN" in bright.error
    for row in (dark, dark2):  # the rest of the batch is unaffected
        assert row.error is None and row.probability is not None
        assert math.isfinite(row.probability) and 0.0 <= row.probability <= 1.0
    # The array API refuses rather than return a NaN.
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        predictor.predict_arrays(np.full((1, SIZE, SIZE, 3), BRIGHT, np.float32))


def test_predict_cli_writes_an_error_row(nan_run: Path, photos: dict[str, Path],
                                         tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", str(nan_run), str(photos["bright"]),
                                   str(photos["dark"]), "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).name: r for r in json.loads(res.stdout)["rows"]}
    assert rows["bright.png"]["probability"] is None and "NaN" in rows["bright.png"]["error"]
    assert 0.0 <= rows["dark.png"]["probability"] <= 1.0
    text = out.read_text()
    assert "nan" not in text.lower().replace("nan or inf", "")  # no NaN cell in the CSV


@pytest.fixture(scope="module")
def nan_client(nan_run: Path) -> Iterator[TestClient]:
    with TestClient(create_app(nan_run, warmup=False), raise_server_exceptions=False) as c:
        yield c


def test_service_answers_json_error_not_nan(nan_client: TestClient, photos: dict[str, Path]) -> None:
    bright = nan_client.post("/v1/predict", files={"image": ("b.png", photos["bright"].read_bytes(),
                                                            "image/png")})
    assert bright.status_code == 500
    assert bright.headers["content-type"] == "application/json"
    assert "NaN" in bright.json()["detail"]
    dark = nan_client.post("/v1/predict", files={"image": ("d.png", photos["dark"].read_bytes(),
                                                          "image/png")})
    assert dark.status_code == 200 and 0.0 <= dark.json()["probability"] <= 1.0
    assert nan_client.get("/v1/health").json()["status"] == "ok"  # the service stays up


@pytest.mark.parametrize(("value", "expected"), [(1.7, 1.0), (-0.3, 0.0), (1.0 + 1e-7, 1.0)])
def test_out_of_range_outputs_are_clipped(value: float, expected: float) -> None:
    predictor = Predictor(_linear_model(value), ModelSpec(backbone="test", input_size=SIZE))
    p = predictor.predict_arrays(np.zeros((3, SIZE, SIZE, 3), np.float32))
    assert p.tolist() == [expected] * 3


def test_probabilities_finite_on_extreme_inputs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real (random-init, BatchNorm-calibrated) MobileNetV3 on black, white, noise, mid-grey."""
    from inference_runs import responsive_run_dir

    predictor = Predictor.from_run(responsive_run_dir(tmp_path_factory))
    rng = np.random.default_rng(0)
    x = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 255.0),
                  rng.uniform(0, 255, (32, 32, 3)), np.full((32, 32, 3), 127.5)]).astype(np.float32)
    for tta in (1, 8):
        p = predictor.predict_arrays(x, tta=tta)
        assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
