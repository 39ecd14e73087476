"""Export: SavedModel, TFLite (float32/float16/int8) and ONNX agree with Keras on real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inference_runs import responsive_run_dir, structured_images
from skinlesion.cli.main import app
from skinlesion.inference import export as ex
from skinlesion.inference.parity import CRITERIA, check_parity, load_sample, sample_images
from skinlesion.inference.predictor import Predictor
from skinlesion.utils.progress import ProgressEvent
from skinlesion.workflows import export as wx

pytestmark = pytest.mark.integration
pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnxruntime")

CHECK_COUNT = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return responsive_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run: Path) -> Predictor:
    return Predictor.from_run(run)


@pytest.fixture(scope="module")
def check(predictor: Predictor, isic_dev: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels, skipped = load_sample(predictor, sample_images(isic_dev, CHECK_COUNT))
    assert skipped == [] and len(np.unique(labels)) == 2
    return images, labels


@pytest.fixture(scope="module")
def saved_model(predictor: Predictor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ex.export_savedmodel(predictor, tmp_path_factory.mktemp("export") / "sm")


def _assert_parity(result: dict, precision: str) -> None:
    assert result["passed"] and result["failed_criteria"] == [], result
    assert result["finite"] and result["n_images"] == CHECK_COUNT
    assert result["criteria"] == CRITERIA[precision] and result["precision"] == precision
    assert result["auc_keras"] is not None and result["auc_diff"] is not None
    if precision != "int8":
        assert result["max_abs_diff"] <= CRITERIA[precision]["max_abs_diff"]
        assert result["decision_agreement"] >= 0.95


def test_savedmodel_serving_signature(saved_model: Path, predictor: Predictor, check) -> None:
    import tensorflow as tf

    sig = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    _, inputs = sig.structured_input_signature
    assert list(inputs) == ["image"] and inputs["image"].shape.as_list() == [None, 32, 32, 3]
    assert list(sig.structured_outputs) == ["probability"]
    images, labels = check
    _assert_parity(check_parity(predictor, ex.SavedModelRuntime(saved_model), images, labels),
                   "float32")


@pytest.mark.parametrize("quantize", [None, "float16"])
def test_tflite_matches_keras(saved_model: Path, predictor: Predictor, check, tmp_path: Path,
                              quantize: str | None) -> None:
    path = ex.export_tflite(saved_model, tmp_path / "model.tflite", quantize=quantize)
    runtime = ex.load_runtime(path)
    assert isinstance(runtime, ex.TFLiteRuntime)
    images, labels = check
    _assert_parity(check_parity(predictor, runtime, images, labels,
                                precision=quantize or "float32", batch_size=7), quantize or "float32")
    # Batch sizes change between calls: the interpreter is resized, answers stay per image.
    x = structured_images(3, 32, seed=9)
    np.testing.assert_allclose(runtime.predict(x[:1]), runtime.predict(x)[:1], atol=1e-6)


def test_onnx_matches_keras(saved_model: Path, predictor: Predictor, check, tmp_path: Path) -> None:
    import onnx

    path = ex.export_onnx(saved_model, tmp_path / "model.onnx", input_size=32)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["probability"]
    images, labels = check
    _assert_parity(check_parity(predictor, ex.load_runtime(path), images, labels), "float32")


def test_export_run_int8_writes_a_complete_folder(isic_dev: Path, tmp_path: Path,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    # int8 post-training quantisation of a *random-weight* MobileNetV3 (hard-swish, SE
    # blocks, activations far outside anything seen in training) is meaningless, so the
    # int8 path is checked on the plain conv test trunk; real-model int8 parity is in the bench.
    run = responsive_run_dir(tmp_path_factory, "test_tiny_cnn", 32)
    predictor = Predictor.from_run(run)
    out = tmp_path / "phone"
    steps: list[ProgressEvent] = []
    result = wx.export_run(run, "tflite", quantize="int8", out=out, check_images=isic_dev,
                           calibration_data=isic_dev, check_count=CHECK_COUNT,
                           calibration_count=64, predictor=predictor, progress=steps.append)
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite", "model_spec.json", "parity.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["phone"]  # no temporary folder left
    assert result.model_file == out / "model.tflite" and result.size_bytes > 0
    parity = json.loads((out / "parity.json").read_text())
    assert parity == ex.read_parity(out) and parity["quantize"] == "int8"
    assert parity["calibration_source"].endswith("labels.csv")
    _assert_parity(parity, "int8")
    assert parity["max_abs_diff"] == result.parity["max_abs_diff"]
    assert json.loads((out / "model_spec.json").read_text())["threshold"] == predictor.threshold
    messages = [e.message or "" for e in steps]
    assert any("calibration" in m for m in messages) and any("parity" in m for m in messages)
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_path=str(out / "model.tflite")).get_tensor_details()
    assert any(t["dtype"] == np.int8 for t in tensors)  # really quantised


def test_cli_savedmodel_export(run: Path, isic_dev: Path, tmp_path: Path) -> None:
    out = tmp_path / "serving"
    result = CliRunner().invoke(app, ["export", str(run), "--format", "savedmodel", "--out", str(out),
                                      "--check-images", str(isic_dev), "--check-count", "12", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["parity"]["passed"] and doc["parity"]["n_images"] == 12
    assert doc["model_file"] == str(out)
    assert (out / "saved_model.pb").is_file() and (out / "parity.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]
    assert "parity ok" in " ".join(result.stderr.split())


def test_check_parity_reports_what_failed(predictor: Predictor, check) -> None:
    class Off:
        """A 'runtime' that is off by 0.3 on every image."""

        name = "off"
        input_names = ("image",)
        output_names = ("probability",)

        def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            p = predictor.with_runtime("keras").predict_arrays(inputs["image"])
            return {"probability": np.clip(p + 0.3, 0, 1)}

    images, labels = check
    result = check_parity(predictor, Off(), images, labels, precision="int8")
    assert not result["passed"]
    assert any(f.startswith("mean |Δp|") for f in result["failed_criteria"])
    assert 0.2 < result["max_abs_diff"] <= 0.3 + 1e-9


def test_replace_dir_swaps_a_whole_export(tmp_path: Path) -> None:
    old, new = tmp_path / "export", tmp_path / ".export.tmp"
    old.mkdir()
    (old / "stale.bin").write_text("old")
    new.mkdir()
    (new / "model.onnx").write_text("new")
    wx._replace_dir(new, old)
    assert [p.name for p in old.iterdir()] == ["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_failed_export_leaves_nothing_behind(run: Path, predictor: Predictor, isic_dev: Path,
                                               tmp_path: Path, monkeypatch) -> None:
    def broken(pred: Predictor, target: Path) -> Path:
        (Path(target) / "half-written").write_text("x")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(wx, "export_savedmodel", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        wx.export_run(run, "savedmodel", out=tmp_path / "sm", check_images=isic_dev,
                      check_count=4, predictor=predictor)
    assert list(tmp_path.iterdir()) == []


def test_bad_options_and_missing_images(run: Path, predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(ex.ExportError, match="tflite only"):
        wx.export_run(run, "onnx", quantize="int8", predictor=predictor)
    with pytest.raises(ex.ExportError, match="unknown format"):
        wx.export_run(run, "coreml", predictor=predictor)
    with pytest.raises(ex.ExportError, match="--check-images"):
        wx.export_run(run, "savedmodel", out=tmp_path / "x", predictor=predictor)
    with pytest.raises(ex.ExportError, match="--calibration-data"):
        wx.export_run(run, "tflite", quantize="int8", out=tmp_path / "y", predictor=predictor)
    bad = CliRunner().invoke(app, ["export", str(run), "--format", "tflite", "--quantize", "int4"])
    assert bad.exit_code == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_training_data_dir_comes_from_the_spec(tmp_path: Path, isic_dev: Path) -> None:
    from skinlesion.runspec import ModelSpec, training_data_dir

    run = tmp_path / "run"
    run.mkdir()
    assert training_data_dir(run) is None
    # Runs written before model_spec.json named it: config.yaml, for them alone.
    (run / "config.yaml").write_text(f"data_dir: {isic_dev}\nbackbone: x\n")
    assert training_data_dir(run) == isic_dev
    (run / "config.yaml").write_text("data_dir: /nonexistent/data\n")
    assert training_data_dir(run) is None
    # The spec's data_dir is what a run reads (predict/export/serve read only the model
    # and its spec); config.yaml is not consulted when the spec names the folder.
    ModelSpec(backbone="x", input_size=32, data_dir=str(isic_dev)).save(run)
    (run / "config.yaml").unlink()
    assert training_data_dir(run) == isic_dev
    ModelSpec(backbone="x", input_size=32, data_dir="/nonexistent/data").save(run)
    assert training_data_dir(run) is None


def test_sample_images_from_a_manifest_prefers_the_test_split(image_factory, tmp_path: Path) -> None:
    import pandas as pd

    from skinlesion.data.manifest import write_manifest

    rows = []
    for i in range(12):
        split = "train" if i < 6 else "test"
        rel = f"img/{i}.jpg"
        image_factory(f"data/{rel}", seed=i)
        rows.append({"image_id": f"id{i}", "path": rel, "label": i % 2, "split": split})
    write_manifest(pd.DataFrame(rows), tmp_path / "data")
    test = sample_images(tmp_path / "data", 100)
    assert sorted(Path(p).name for p in test.paths) == sorted(f"{i}.jpg" for i in range(6, 12))
    train = sample_images(tmp_path / "data", 4, splits=("train",))
    assert len(train.paths) == 4 and set(train.labels) == {0, 1}
    assert all(int(Path(p).stem) < 6 for p in train.paths)
