"""The quality levers: diagnosis-aware training, metadata fusion, colour constancy, ensembles.

Tiny real Keras models on generated images (a 2-conv test trunk), plus the multi-class
metrics checked against the official ``isic-challenge-scoring`` package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion.data.manifest import write_manifest
from skinlesion.data.metadata import METADATA_FIELDS, MetadataEncoder, parse_fields
from skinlesion.data.targets import OTHER_BENIGN, OTHER_MALIGNANT, DiagnosisClasses
from skinlesion.training.config import load_config

DIAGNOSES = (("nevus", 0), ("seborrheic_keratosis", 0), ("melanoma", 1),
             ("basal_cell_carcinoma", 1))


def make_meta_dataset(root: Path, n_train: int = 64, n_val: int = 32, size: int = 40) -> Path:
    """Generated images with four diagnoses and metadata; age and the image carry the label."""
    from PIL import Image

    rng = np.random.default_rng(1)
    rows = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    sites = ["torso", "head/neck", "lower extremity", ""]
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        for i in range(n):
            diagnosis, label = DIAGNOSES[i % 4]
            base = rng.uniform(150, 230, size=3)
            img = np.clip(rng.normal(base, 12, size=(size, size, 3)), 0, 255)
            if label:
                yy, xx = np.mgrid[:size, :size]
                blob = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
                img[blob] *= 0.35 if diagnosis == "melanoma" else 0.6
            image_id = f"{split}_{i:03d}"
            Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{image_id}.jpg")
            age = "" if i % 7 == 0 else str(70 if label else 30 + (i % 3) * 5)
            rows.append({"image_id": image_id, "path": f"images/{image_id}.jpg", "label": label,
                         "diagnosis": diagnosis, "source": "synthetic", "split": split,
                         "age": age, "sex": ("female", "male", "")[i % 3],
                         "site": sites[i % 4]})
    write_manifest(pd.DataFrame(rows), root)
    return root


@pytest.fixture(scope="module")
def meta_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_meta_dataset(tmp_path_factory.mktemp("meta_data"))


def tiny(data: Path, out: Path, **kw):  # type: ignore[no-untyped-def]
    base = dict(data_dir=str(data), out=str(out), backbone="test_tiny_cnn", weights="none",
                input_size=32, batch_size=16, head_epochs=6, finetune_epochs=1, feature_views=2,
                patience=0, dropout=0.0, seed=3, head_lr=3e-3)
    base.update(kw)
    return load_config(overrides=base)


@pytest.fixture(scope="module")
def fused_run(meta_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skinlesion.training.trainer import train

    out = tmp_path_factory.mktemp("fused") / "run"
    train(tiny(meta_data, out, target="diagnosis", metadata="age,sex,site",
               metadata_dropout=0.2, color_constancy=True, min_class_images=5))
    return out


# === Metadata encoding ===============================================================

def test_encoder_flags_and_impute_layouts() -> None:
    train = pd.DataFrame({"age": [20.0, 60.0, np.nan], "sex": ["female", "male", ""],
                          "site": ["torso", "", "head/neck"], "label": [0, 1, 0]})
    flags = MetadataEncoder.fit(train, ["age", "sex", "site"], "flags")
    assert flags.dim == 2 + 3 + 7
    x = flags.encode(pd.DataFrame({"age": [40.0, np.nan], "sex": ["x", "male"],
                                   "site": ["anterior torso", "nowhere"]}))
    names = flags.names
    assert x[0, names.index("age")] == pytest.approx(0.0)  # the training mean
    assert x[1, names.index("age_missing")] == 1.0 and x[0, names.index("age_missing")] == 0.0
    assert x[0, names.index("sex_missing")] == 1.0  # "x" is invalid → unknown
    assert x[0, names.index("site=torso")] == 1.0  # ISIC 2019 torso folds into torso
    assert x[1, names.index("site_missing")] == 1.0
    impute = MetadataEncoder.fit(train, ["sex", "site"], "impute")
    y = impute.encode([{"sex": "", "site": ""}])
    assert impute.dim == 2 + 6
    assert y[0, :2].tolist() == pytest.approx([0.5, 0.5])  # training frequencies
    assert MetadataEncoder.from_dict(flags.to_dict()) == flags


def test_metadata_dropout_hides_whole_fields() -> None:
    train = pd.DataFrame({"age": [20.0, 60.0], "sex": ["female", "male"], "site": ["torso"] * 2})
    enc = MetadataEncoder.fit(train, METADATA_FIELDS, "flags")
    full = enc.encode(train)
    hidden = enc.hide(np.repeat(full, 500, axis=0), 0.5, np.random.default_rng(0))
    blank = enc.blank()
    fm = enc.field_matrix().astype(bool)
    for k in range(len(enc.fields)):
        seg = hidden[:, fm[k]]
        is_blank = np.all(seg == blank[fm[k]], axis=1)
        is_orig = np.all(seg == np.repeat(full, 500, axis=0)[:, fm[k]], axis=1)
        assert np.all(is_blank | is_orig)
        assert 0.4 < is_blank.mean() < 0.6
    assert np.array_equal(enc.hide(full, 0.0, np.random.default_rng(0)), full)


def test_parse_fields() -> None:
    assert parse_fields("site, age") == ("age", "site")
    assert parse_fields("") == ()
    with pytest.raises(ValueError, match="unknown metadata field"):
        parse_fields("age,weight")


# === Diagnosis classes ===============================================================

def test_diagnosis_classes_merge_rare_by_label() -> None:
    train = pd.DataFrame({
        "diagnosis": ["nevus"] * 30 + ["melanoma"] * 25 + ["dermatofibroma"] * 3 + ["scc"] * 2 + [""] * 4,
        "label": [0] * 30 + [1] * 25 + [0] * 3 + [1] * 2 + [1, 0, 1, 0],
    })
    classes = DiagnosisClasses.from_frame(train, min_images=10)
    assert classes.classes == ("melanoma", "nevus", OTHER_BENIGN, OTHER_MALIGNANT)
    assert classes.malignant == (1, 0, 0, 1)
    assert classes.merged["dermatofibroma"] == OTHER_BENIGN and classes.merged["scc"] == OTHER_MALIGNANT
    idx = classes.index(["melanoma", "scc", "never_seen", "never_seen"], [1, 1, 1, 0])
    assert idx.tolist() == [0, 3, 3, 2]
    assert DiagnosisClasses.from_dict(classes.to_dict()) == classes
    with pytest.raises(ValueError, match="at least one benign and one malignant"):
        DiagnosisClasses.from_frame(train[train["label"] == 0], min_images=1)


# === Layers and metric ===============================================================

def test_shades_of_gray_removes_a_colour_cast_and_keeps_grey() -> None:
    import keras

    from skinlesion.models.layers import ShadesOfGray

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.uniform(40, 200, (1, 16, 16, 1)), 3, axis=-1).astype("float32")
    layer = ShadesOfGray(6.0)
    assert np.allclose(np.asarray(layer(grey)), grey, atol=1e-2)
    cast = np.clip(grey * np.array([1.3, 1.0, 0.7], "float32"), 0, 255)
    fixed = np.asarray(layer(cast))[0]
    means = fixed.reshape(-1, 3).mean(0)
    assert means.max() / means.min() < 1.05 < (cast.reshape(-1, 3).mean(0).max()
                                              / cast.reshape(-1, 3).mean(0).min())
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert again.power == 6.0


def test_malignant_probability_and_auc_metric() -> None:
    from sklearn.metrics import roc_auc_score

    from skinlesion.models.layers import MalignantProbability
    from skinlesion.training.metrics import MalignantAUC

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = np.asarray(MalignantProbability([0, 1, 0, 1])(probs.astype("float32")))
    assert out.shape == (200, 5)
    assert np.allclose(out[:, 0], probs[:, 1] + probs[:, 3], atol=1e-6)
    truth = rng.integers(0, 4, 200)
    metric = MalignantAUC([0, 1, 0, 1], num_thresholds=2000)
    metric.update_state(truth, probs.astype("float32"))
    expected = roc_auc_score(np.isin(truth, [1, 3]).astype(int), probs[:, 1] + probs[:, 3])
    assert float(metric.result()) == pytest.approx(expected, abs=5e-3)


def test_classifier_with_metadata_and_diagnosis_round_trips(tmp_path: Path) -> None:
    import keras

    from skinlesion.models.classifier import (
        build_classifier,
        feature_extractor,
        model_metadata_dim,
        training_view,
    )

    model = build_classifier("test_tiny_cnn", 32, weights=None, malignant=[1, 0, 0],
                             metadata_dim=5, color_constancy=True)
    assert [t.name for t in model.inputs] == ["image", "metadata"]
    assert model_metadata_dim(model) == 5
    assert training_view(model).outputs[0].shape[-1] == 3
    assert feature_extractor(model).outputs[0].shape[-1] == 16
    x = {"image": np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32"),
         "metadata": np.ones((3, 5), "float32")}
    out = model.predict(x, verbose=0)
    assert out.shape == (3, 4)
    assert np.allclose(out[:, 0], out[:, 1], atol=1e-6)  # only class 0 is malignant
    assert np.allclose(out[:, 1:].sum(1), 1.0, atol=1e-5)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert np.allclose(again.predict(x, verbose=0), out, atol=1e-6)


# === Training, prediction, evaluation =================================================

def test_fused_diagnosis_run_spec_and_predictor(fused_run: Path, meta_data: Path) -> None:
    from skinlesion.inference.predictor import Predictor
    from skinlesion.runspec import ModelSpec

    spec = ModelSpec.load(fused_run)
    assert spec.target == "diagnosis" and spec.color_constancy
    assert spec.diagnosis["classes"] == ["basal_cell_carcinoma", "melanoma", "nevus",
                                         "seborrheic_keratosis"]
    assert spec.diagnosis["malignant"] == [1, 1, 0, 0]
    assert spec.metadata["fields"] == ["age", "sex", "site"]
    assert spec.train_prevalence == pytest.approx(0.5)
    pred = Predictor.from_run(fused_run)
    assert pred.uses_metadata and pred.diagnosis_classes == spec.diagnosis["classes"]
    img = meta_data / "images" / "test_002.jpg"
    rows = pred.predict_files([img, img], metadata=[{"age": 80, "sex": "male", "site": "torso"},
                                                    None])
    for row in rows:
        assert row.error is None and row.diagnoses is not None
        assert sum(d["probability"] for d in row.diagnoses) == pytest.approx(1.0, abs=1e-4)
        mal = sum(d["probability"] for d in row.diagnoses
                  if d["diagnosis"] in ("melanoma", "basal_cell_carcinoma"))
        assert row.probability == pytest.approx(mal, abs=1e-4)
    # The metadata reaches the model: known age/sex/site answer differently from unknown.
    assert rows[0].probability != pytest.approx(rows[1].probability, abs=1e-7)
    assert "diagnoses" in rows[0].to_dict()


def test_binary_image_only_run_keeps_the_v01_contract(meta_data: Path, tmp_path: Path) -> None:
    from skinlesion.inference.predictor import Predictor
    from skinlesion.training.trainer import train

    result = train(tiny(meta_data, tmp_path / "bin", mode="frozen", head_epochs=3))
    assert result.spec.target == "binary" and result.spec.metadata is None
    pred = Predictor.from_run(result.run_dir)
    row = pred.predict_files([meta_data / "images" / "test_001.jpg"])[0]
    assert row.diagnoses is None and "diagnoses" not in row.to_dict()
    assert not pred.uses_metadata


def test_evaluate_adds_diagnosis_and_metadata_tables(fused_run: Path, meta_data: Path) -> None:
    """The multi-class metrics agree with isic-challenge-scoring, the oracle of ISIC 2019."""
    isic = pytest.importorskip("isic_challenge_scoring.metrics")
    from skinlesion.workflows.evaluate import evaluate_run

    result = evaluate_run(fused_run, meta_data, split="test", bootstrap=20)
    diag = result.metrics["diagnosis"]
    preds = result.predictions
    classes = diag["classes"]
    truth = pd.get_dummies(pd.Categorical(
        preds["diagnosis"], categories=classes)).astype(float)
    probs = preds[[f"p_{c}" for c in classes]].set_axis(classes, axis=1).astype(float)
    weights = pd.Series(np.ones(len(preds)))
    assert diag["balanced_accuracy"] == pytest.approx(
        isic.balanced_multiclass_accuracy(truth, probs, weights), abs=1e-9)
    for row in diag["per_class"]:
        oracle = isic.auc(truth[row["diagnosis"]], probs[row["diagnosis"]], weights)
        assert row["auc_ovr"] == pytest.approx(oracle, abs=1e-9)
    assert np.array(diag["confusion"]["matrix"]).sum() == len(preds)
    meta = result.metrics["metadata"]
    overall = meta["rows"][0]
    assert overall["group"] == "all" and overall["n"] == len(preds)
    assert overall["n_complete"] < overall["n"]
    for column in ("fused", "fused_complete", "withheld", "metadata_only"):
        assert 0.0 <= overall[column] <= 1.0
    saved = json.loads((fused_run / "eval" / "metrics.json").read_text())
    assert saved["diagnosis"]["balanced_accuracy"] == pytest.approx(diag["balanced_accuracy"])


def test_ensemble_averages_members_of_different_sizes(fused_run: Path, meta_data: Path,
                                                      tmp_path: Path) -> None:
    from skinlesion.inference.predictor import Predictor
    from skinlesion.runspec import RunError
    from skinlesion.training.trainer import train
    from skinlesion.workflows.ensemble import build_ensemble

    other = train(tiny(meta_data, tmp_path / "small", mode="frozen", input_size=24,
                       head_epochs=3)).run_dir
    spec = build_ensemble([fused_run, other], tmp_path / "ens", data_dir=meta_data)
    assert spec.backbone == "ensemble" and spec.input_size == 32
    assert spec.target == "binary"  # one member is binary: P(malignant) only
    assert spec.metadata is not None and len(spec.members) == 2
    assert 0.0 <= spec.threshold <= 1.0 and "validation" in spec.threshold_rule
    ens = Predictor.from_run(tmp_path / "ens")
    a, b = Predictor.from_run(fused_run), Predictor.from_run(other)
    img = meta_data / "images" / "test_005.jpg"
    meta = [{"age": 70, "sex": "female", "site": "torso"}]
    got = ens.predict_files([img], metadata=meta)[0].probability
    pa = a.predict_files([img], metadata=meta)[0].probability
    x32 = a.load_image(img)
    import tensorflow as tf

    x24 = np.asarray(tf.image.resize(x32[None], (24, 24), antialias=True))
    pb = float(b.predict_arrays(x24)[0])
    assert got == pytest.approx((pa + pb) / 2, abs=1e-5)
    with pytest.raises(RunError, match="already holds a run"):
        build_ensemble([fused_run, other], tmp_path / "ens", data_dir=meta_data)
    with pytest.raises(RunError, match="at least two"):
        build_ensemble([fused_run], tmp_path / "ens2", data_dir=meta_data)


def test_predict_cli_reads_a_metadata_csv(fused_run: Path, meta_data: Path,
                                          tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from skinlesion.cli.main import app
    from skinlesion.inference.predictor import Predictor

    images = [meta_data / "images" / f"test_00{i}.jpg" for i in range(3)]
    table = tmp_path / "meta.csv"
    pd.DataFrame({"image_id": ["test_000", "test_001"], "age_approx": ["85", "250"],
                  "sex": ["male", "x"], "anatom_site_general": ["posterior torso", ""]}
                 ).to_csv(table, index=False)
    out = tmp_path / "pred.csv"
    res = CliRunner().invoke(app, ["predict", str(fused_run), *map(str, images),
                                   "--metadata", str(table), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 of 3 image(s) found" in res.output
    rows = pd.read_csv(out)
    pred = Predictor.from_run(fused_run)
    expect = pred.predict_files(images, metadata=[
        {"age": "85", "sex": "male", "site": "posterior torso"},
        {"age": "250", "sex": "x", "site": ""}, None])
    assert rows["probability"].tolist() == pytest.approx([r.probability for r in expect], abs=1e-6)
    assert rows["diagnoses"].str.contains("melanoma").all()
    bad = CliRunner().invoke(app, ["predict", str(fused_run), str(images[0]),
                                   "--metadata", str(tmp_path / "missing.csv")])
    assert bad.exit_code == 2 and "cannot read the metadata table" in bad.output


def test_service_takes_optional_metadata_fields(fused_run: Path, meta_data: Path) -> None:
    from fastapi.testclient import TestClient

    from skinlesion.service.app import create_app

    app = create_app(fused_run)
    data = (meta_data / "images" / "test_003.jpg").read_bytes()
    with TestClient(app) as client:
        card = client.get("/v1/model").json()
        assert card["metadata"]["fields"] == ["age", "sex", "site"]
        with_meta = client.post("/v1/predict", files={"image": ("a.jpg", data, "image/jpeg")},
                                data={"age": "75", "sex": "male", "site": "back"}).json()
        without = client.post("/v1/predict",
                              files={"image": ("a.jpg", data, "image/jpeg")}).json()
    assert with_meta["metadata"] == {"age": 75.0, "sex": "male", "site": "torso"}
    assert without["metadata"] == {"age": None, "sex": None, "site": None}
    assert with_meta["diagnoses"][0]["probability"] >= with_meta["diagnoses"][-1]["probability"]
    assert with_meta["probability"] != pytest.approx(without["probability"], abs=1e-7)


def test_diagnosis_rejects_focal_loss(meta_data: Path, tmp_path: Path) -> None:
    from skinlesion.training.objectives import make_loss

    with pytest.raises(ValueError, match="cross-entropy"):
        make_loss(tiny(meta_data, tmp_path / "x", target="diagnosis", loss="focal"))
    with pytest.raises(ValueError, match="balanced_sampling"):
        tiny(meta_data, tmp_path / "y", target="diagnosis", imbalance="balanced_sampling")


def test_cross_validation_folds_share_one_feature_pass(meta_data: Path, tmp_path: Path) -> None:
    from skinlesion.data.manifest import read_manifest
    from skinlesion.training.trainer import train

    data = tmp_path / "folds"
    data.mkdir()
    (data / "images").symlink_to(meta_data / "images", target_is_directory=True)
    df = read_manifest(meta_data)
    pool = df["split"] != "test"
    df["fold"] = -1
    df.loc[pool, "fold"] = np.arange(int(pool.sum())) % 3
    write_manifest(df, data)
    cache = data / "cache" / "features"
    runs = []
    for k in (0, 1):
        result = train(tiny(data, tmp_path / f"fold{k}", mode="frozen", fold=k, head_epochs=2))
        runs.append(result)
        n_val = int((df["fold"] == k).sum())
        assert result.spec.val_metrics["n"] == n_val
    # One feature file per view for the pool, written by the first fold, reused by the second.
    assert len(list(cache.glob("*.npy"))) == 2
    assert runs[1].timings["feature_pass_s"] < runs[0].timings["feature_pass_s"]
    with pytest.raises(ValueError, match="no fold 7"):
        train(tiny(data, tmp_path / "fold7", mode="frozen", fold=7))
    with pytest.raises(ValueError, match="prepare it with --folds"):
        train(tiny(meta_data, tmp_path / "nofold", mode="frozen", fold=0))


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_metadata_diagnosis_model_exports_with_parity(fused_run: Path, meta_data: Path,
                                                      tmp_path: Path, fmt: str) -> None:
    """A second input (metadata) and a wide output survive export; auto then serves it."""
    from skinlesion.inference.predictor import Predictor
    from skinlesion.workflows.export import export_run

    run = tmp_path / "run"
    import shutil

    shutil.copytree(fused_run, run, ignore=shutil.ignore_patterns("export", "eval*"))
    result = export_run(run, fmt, check_images=meta_data, check_count=16)
    parity = result.parity
    assert parity is not None and parity["passed"], parity
    assert parity["metadata_checked"] is True
    assert parity["max_abs_diff_all_outputs"] <= 1e-4
    pred = Predictor.from_run(run, runtime=fmt)
    assert pred.runtime_name == fmt
    keras_pred = Predictor.from_run(run, runtime="keras")
    imgs = [meta_data / "images" / f"test_{i:03d}.jpg" for i in range(6)]
    meta = [{"age": 70, "sex": "male", "site": "torso"}, None] * 3
    a = pred.predict_files(imgs, metadata=meta, tta=2)
    b = keras_pred.predict_files(imgs, metadata=meta, tta=2)
    for x, y in zip(a, b, strict=True):
        assert x.probability == pytest.approx(y.probability, abs=1e-4)
        assert x.decision == y.decision
        assert [d["diagnosis"] for d in x.diagnoses] == [d["diagnosis"] for d in y.diagnoses]


def test_python_api_predicts_with_metadata_and_shows_diagnoses(fused_run: Path,
                                                               meta_data: Path) -> None:
    import skinlesion as sl

    model = sl.load(fused_run)
    img = meta_data / "images" / "test_006.jpg"
    known = model.predict(img, metadata={"age": 80, "sex": "male", "site": "torso"})
    unknown = model.predict(img, heatmap=False)
    assert known.diagnoses and unknown.diagnoses
    # Grad-CAM works through the colour-constancy layer, the metadata branch and the softmax.
    assert known.heatmap is not None and 0.0 <= float(known.heatmap.min()) <= float(known.heatmap.max()) <= 1.0
    assert known.probability != pytest.approx(unknown.probability, abs=1e-7)
    assert "most likely:" in known._repr_html_()
    assert "diagnoses" in known.to_dict()
    table = model.predict_table([img, img], metadata=[{"age": 80}, None])
    assert table["probability"].notna().all()


@pytest.mark.integration
def test_real_isic_dev_images_with_metadata_end_to_end(isic_dev: Path, tmp_path: Path) -> None:
    """Real photos: prepare a slice of isic-dev with its metadata.csv, train a diagnosis +
    metadata model, predict with a metadata CSV holding bad values, evaluate."""
    from typer.testing import CliRunner

    from skinlesion.cli.main import app
    from skinlesion.data.prepare import PrepareSettings, prepare
    from skinlesion.training.trainer import train
    from skinlesion.workflows.evaluate import evaluate_run

    labels = pd.read_csv(isic_dev / "labels.csv", dtype=str, keep_default_na=False)
    labels = labels[labels["filename"].str.startswith("images/")]
    picked = pd.concat([g.head(12) for _, g in labels.groupby("diagnosis")])
    (tmp_path / "src").mkdir()
    picked.to_csv(tmp_path / "src" / "labels.csv", index=False)
    (tmp_path / "src" / "images").symlink_to(isic_dev / "images", target_is_directory=True)
    data = tmp_path / "data"
    result = prepare([tmp_path / "src" / "labels.csv"], data, PrepareSettings(size=64, seed=1),
                     metadata=[isic_dev / "metadata.csv"])
    manifest = result.manifest
    assert (manifest["site"].astype(str) != "").any() and manifest["age"].notna().any()
    run = train(tiny(data, tmp_path / "run", mode="frozen", target="diagnosis",
                     metadata="age,sex,site", metadata_dropout=0.3, min_class_images=3,
                     head_epochs=3)).run_dir
    test_rows = manifest[manifest["split"] == "test"].head(4)
    images = [str(data / p) for p in test_rows["path"]]
    table = tmp_path / "meta.csv"
    pd.DataFrame({"image_id": list(test_rows["image_id"]),
                  "age_approx": ["250", "fifty", "45", ""][: len(test_rows)],
                  "sex": ["x", "female", "male", ""][: len(test_rows)],
                  "anatom_site_general": ["nowhere", "back", "torso", ""][: len(test_rows)]}
                 ).to_csv(table, index=False)
    out = tmp_path / "pred.csv"
    res = CliRunner().invoke(app, ["predict", str(run), *images, "--metadata", str(table),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(out)
    assert rows["probability"].between(0, 1).all() and rows["diagnoses"].notna().all()
    ev = evaluate_run(run, data, split="test", bootstrap=10)
    assert "diagnosis" in ev.metrics and "metadata" in ev.metrics
    assert ev.metrics["metadata"]["rows"][0]["n"] == ev.metrics["counts"]["n"]
