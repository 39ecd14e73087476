"""Runtimes behind the Predictor: parity on real images, the ``auto`` choice, train's export."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inference_runs import build_responsive_model, save_run
from skinlesion.cli.main import app
from skinlesion.inference import runtimes as rt
from skinlesion.inference.predictor import Predictor
from skinlesion.runspec import ModelSpec, RunError
from skinlesion.workflows.export import export_run

pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnxruntime")


def _isic_split(isic_dev: Path, root: Path, n: int = 120) -> Path:
    """A prepared data folder of ``n`` real isic-dev photos (train/val/test by position)."""
    df = pd.read_csv(isic_dev / "labels.csv")
    df = df[~df["filename"].str.startswith("fullsize/")]
    picks = pd.concat([df[df.label == 1].head(n // 3), df[df.label == 0].head(n - n // 3)])
    picks = picks.sample(frac=1.0, random_state=0).reset_index(drop=True)
    rows = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, r in picks.iterrows():
        rel = f"images/{Path(r['filename']).name}"
        shutil.copyfile(isic_dev / r["filename"], root / rel)
        split = "train" if i < n // 2 else "val" if i < 2 * n // 3 else "test"
        rows.append({"image_id": r["image_id"], "path": rel, "label": int(r["label"]),
                     "split": split, "source": "isic-dev", "diagnosis": r["diagnosis"]})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def isic_data(isic_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _isic_split(isic_dev, tmp_path_factory.mktemp("isic_data"))


def _test_images(data: Path, size: int) -> np.ndarray:
    from skinlesion.data.pipeline import load_model_input

    m = pd.read_csv(data / "manifest.csv")
    return np.stack([load_model_input(data / p, size) for p in m[m.split == "test"].path])


@pytest.fixture(scope="module")
def exported_run(isic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A responsive run (output depends on the image) with its threshold at the median
    Keras probability of the test photos, so decisions split both ways; exported to
    TFLite, ONNX and int8 TFLite with parity checked on the real test split."""
    run = save_run(build_responsive_model("mobilenet_v3_small", 32),
                   tmp_path_factory.mktemp("rt_run"), "mobilenet_v3_small", 32)
    keras_probs = Predictor.from_run(run, runtime="keras").predict_arrays(_test_images(isic_data, 32))
    spec = ModelSpec.load(run)
    spec.threshold = float(np.median(keras_probs))
    spec.save(run)
    for fmt, q in (("tflite", None), ("onnx", None), ("tflite", "int8")):
        export_run(run, fmt, quantize=q, check_images=isic_data, calibration_data=isic_data,
                   check_count=200, calibration_count=20)
    return run


# === Parity on real images =========================================================

@pytest.mark.parametrize("runtime", ["tflite", "onnx"])
@pytest.mark.parametrize("tta", [1, 4])
def test_float_runtimes_match_keras_on_isic_dev_test_images(exported_run: Path, isic_data: Path,
                                                            runtime: str, tta: int) -> None:
    images = _test_images(isic_data, 32)
    keras = Predictor.from_run(exported_run, runtime="keras")
    other = Predictor.from_run(exported_run, runtime=runtime)
    assert other.runtime_name == runtime and keras.runtime_name == "keras"
    ref = keras.predict_arrays(images, tta=tta)
    got = other.predict_arrays(images, tta=tta, batch_size=7)  # uneven batches: resizing
    assert ref.std() > 0.01  # the outputs depend on the image: the comparison is not vacuous
    assert np.max(np.abs(got - ref)) <= 1e-4
    assert [keras.decide(p) for p in ref] == [other.decide(p) for p in got]
    assert {keras.decide(p) for p in ref} == {"benign", "malignant"}


def test_parity_records_name_the_checked_model_and_pass_the_auto_tolerance(exported_run: Path
                                                                          ) -> None:
    digest = rt.model_digest(exported_run / "model.keras")
    for name in ("tflite", "onnx"):
        art = rt.find_artefact(exported_run, name, digest)
        assert art is not None and art.verified, art and art.problems
        assert art.parity["keras_sha256"] == digest
        assert art.parity["n_images"] == 40 and art.parity["decision_agreement"] == 1.0
    int8 = rt.find_artefact(exported_run, "tflite-int8", digest)
    assert int8 is not None and not int8.verified
    assert any("int8" in p for p in int8.problems)


def test_predict_files_agrees_across_runtimes_with_grad_cam_from_keras(exported_run: Path,
                                                                      isic_data: Path) -> None:
    m = pd.read_csv(isic_data / "manifest.csv")
    files = [isic_data / p for p in m[m.split == "test"].path[:12]]
    rows = {name: Predictor.from_run(exported_run, runtime=name).predict_files(files, batch_size=5)
            for name in ("keras", "tflite", "onnx")}
    for name in ("tflite", "onnx"):
        assert [r.decision for r in rows[name]] == [r.decision for r in rows["keras"]]
        np.testing.assert_allclose([r.probability for r in rows[name]],
                                   [r.probability for r in rows["keras"]], atol=1e-4)
    fast = Predictor.from_run(exported_run, runtime="tflite")
    assert fast._model is None  # Keras not loaded for predictions...
    maps = fast.heatmaps(_test_images(isic_data, 32)[:2])  # ...but Grad-CAM loads it
    assert maps.shape == (2, 32, 32) and fast._model is not None


# === Choosing a runtime ============================================================

def test_auto_picks_the_fastest_verified_runtime(exported_run: Path) -> None:
    pred = Predictor.from_run(exported_run)
    assert pred.runtime_name == "tflite"
    assert "auto" in pred.runtime_note and "max |Δp|" in pred.runtime_note


def _copy_run(src: Path, dest: Path, keep: tuple[str, ...]) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("export"))
    for name in keep:
        shutil.copytree(src / "export" / name, dest / "export" / name)
    return dest


def test_auto_without_artefact_falls_back_to_keras_with_a_note(tiny_run: Path) -> None:
    pred = Predictor.from_run(tiny_run)
    assert pred.runtime_name == "keras"
    assert pred.runtime_note.startswith("runtime keras (auto)")
    assert "skinlesion export" in pred.runtime_note


def test_auto_skips_an_artefact_whose_parity_fails_the_tolerance(exported_run: Path,
                                                                 tmp_path: Path) -> None:
    run = _copy_run(exported_run, tmp_path / "run", ("tflite", "onnx"))
    parity = run / "export" / "tflite" / "parity.json"
    record = json.loads(parity.read_text())
    record["max_abs_diff"] = 5e-4  # passes export's 1e-3 criterion, fails auto's 1e-4
    parity.write_text(json.dumps(record))
    pred = Predictor.from_run(run)
    assert pred.runtime_name == "onnx"  # the next fastest verified one
    record["max_abs_diff"] = 1e-6
    record["decision_agreement"] = 0.99
    parity.write_text(json.dumps(record))
    shutil.rmtree(run / "export" / "onnx")
    pred = Predictor.from_run(run)
    assert pred.runtime_name == "keras"
    assert "tflite" in pred.runtime_note and "decisions differ" in pred.runtime_note


def test_auto_ignores_an_export_of_another_model_and_never_picks_int8(exported_run: Path,
                                                                      tmp_path: Path) -> None:
    run = _copy_run(exported_run, tmp_path / "run", ("tflite", "tflite-int8"))
    choice = rt.select_runtime(run, "auto")
    assert choice.runtime == "tflite"
    shutil.rmtree(run / "export" / "tflite")
    assert rt.select_runtime(run, "auto").runtime == "keras"  # int8 exists, not chosen
    explicit = Predictor.from_run(run, runtime="tflite-int8")
    assert explicit.runtime_name == "tflite-int8" and "decisions identical" in explicit.runtime_note
    # Retrain (a different model.keras): the old parity record no longer applies.
    run2 = _copy_run(exported_run, tmp_path / "run2", ("tflite",))
    save_run(build_responsive_model("mobilenet_v3_small", 32, seed=5), run2,
             "mobilenet_v3_small", 32)
    choice = rt.select_runtime(run2, "auto")
    assert choice.runtime == "keras" and "different model.keras" in choice.note


def test_explicit_runtime_without_artefact_says_how_to_make_it(tiny_run: Path) -> None:
    with pytest.raises(RunError, match=r"skinlesion export .* --format onnx"):
        Predictor.from_run(tiny_run, runtime="onnx")
    with pytest.raises(RunError, match="unknown runtime"):
        Predictor.from_run(tiny_run, runtime="tensorrt")


def test_missing_package_names_the_extra(exported_run: Path, isic_data: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_litert(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("ai_edge_litert"):
            raise ImportError("No module named 'ai_edge_litert'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(RunError, match=r"pip install 'skinlesion\[export\]'"):
        Predictor.from_run(exported_run, runtime="tflite")
    pred = Predictor.from_run(exported_run)  # auto: falls back, and says why
    assert pred.runtime_name == "keras" and "skinlesion[export]" in pred.runtime_note
    result = CliRunner().invoke(app, ["predict", str(exported_run), str(isic_data / "images"),
                                      "--runtime", "tflite"])
    assert result.exit_code == 2
    assert "pip install 'skinlesion[export]'" in " ".join(result.output.split())


def test_runtime_interface_is_named_inputs_to_named_outputs(exported_run: Path) -> None:
    x = np.full((3, 32, 32, 3), 128.0, np.float32)
    outs = {}
    for name in ("keras", "tflite", "onnx"):
        runtime = Predictor.from_run(exported_run, runtime=name).runtime
        assert isinstance(runtime, rt.Runtime)
        assert runtime.input_names == ("image",) and runtime.output_names == ("probability",)
        out = runtime.run({"image": x})
        assert set(out) == {"probability"}
        outs[name] = np.asarray(out["probability"]).reshape(-1)
        with pytest.raises(ValueError, match=r"unexpected input\(s\) \['metadata'\]"):
            runtime.run({"image": x, "metadata": x[:, 0, 0]})
        np.testing.assert_allclose(runtime.predict_batch(x.astype(np.uint8)).reshape(-1),
                                   outs[name], atol=1e-4)  # uint8 in works too
    np.testing.assert_allclose(outs["tflite"], outs["keras"], atol=1e-4)


# === The CLI ======================================================================

def test_train_writes_a_verified_tflite_export_that_auto_uses(isic_data: Path, tmp_path: Path
                                                              ) -> None:
    run = tmp_path / "trained"
    args = ["train", str(isic_data), "--out", str(run), "--backbone", "mobilenet_v3_small",
            "--weights", "none", "--input-size", "32", "--batch-size", "16", "--head-epochs", "1",
            "--finetune-epochs", "1", "--patience", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    export = summary["tflite_export"]
    assert export["written"] and export["verified_for_auto"], export
    assert export["parity"]["n_images"] == 40 and export["seconds"] > 0
    assert (run / "export" / "tflite" / "model.tflite").is_file()
    predicted = CliRunner().invoke(app, ["predict", str(run), str(isic_data / "images"),
                                         "--json"])
    assert predicted.exit_code == 0, predicted.output
    body = json.loads(predicted.stdout[predicted.stdout.index("{"):])
    assert body["runtime"] == "tflite" and body["summary"]["images"] == 120
    keras = CliRunner().invoke(app, ["predict", str(run), str(isic_data / "images"), "--json",
                                     "--runtime", "keras"])
    kbody = json.loads(keras.stdout[keras.stdout.index("{"):])
    assert [r["decision"] for r in kbody["rows"]] == [r["decision"] for r in body["rows"]]

    skipped = tmp_path / "no_export"
    result = CliRunner().invoke(app, [*args[:3], str(skipped), *args[4:-1], "--no-export-tflite"])
    assert result.exit_code == 0, result.output
    assert not (skipped / "export").exists()
