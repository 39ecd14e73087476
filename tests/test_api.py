"""The top-level Python API (``import skinlesion as sl``) on generated images and tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import skinlesion as sl
from conftest import REPO


def _write_raw(root: Path, n_per_class: int = 30, size: int = 48) -> Path:
    """Class folders ``benign/`` and ``malignant/``: malignant images carry a dark blob."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in ((0, "benign"), (1, "malignant")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = np.clip(rng.normal(rng.uniform(150, 230, 3), 12, (size, size, 3)), 0, 255)
            if label:
                yy, xx = np.mgrid[:size, :size]
                img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] *= 0.35
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{name}_{i:03d}.jpg")
    return root


TINY = dict(backbone="test_tiny_cnn", weights="none", input_size=32, mode="frozen",
            head_epochs=30, head_lr=3e-2, feature_views=2, patience=0, batch_size=8, dropout=0.0,
            seed=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> sl.PreparedData:
    base = tmp_path_factory.mktemp("api")
    return sl.prepare(_write_raw(base / "raw"), out=base / "data", size=48, workers=1,
                      fractions=(0.6, 0.2, 0.2))


@pytest.fixture(scope="module")
def run(data: sl.PreparedData, tmp_path_factory: pytest.TempPathFactory) -> sl.Run:
    out = tmp_path_factory.mktemp("api_runs") / "tiny"
    return sl.train(data, out=out, augment={"rotation_deg": 30.0}, **TINY)


@pytest.fixture(scope="module")
def evaluation(run: sl.Run, data: sl.PreparedData) -> sl.Evaluation:
    return sl.evaluate(run, data, split="test", bootstrap=100)


# === Import ===


def test_import_skinlesion_does_not_import_tensorflow() -> None:
    code = ("import sys, skinlesion as sl\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
            "assert 'skinlesion.api' not in sys.modules\n"
            "sl.Run, sl.Evaluation, sl.PreparedData, sl.train, sl.Predictor\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    # Even resolving the API's names must not pull TensorFlow in: only calls that need it do.
    assert out.stdout.split() == ["False", "False"]


def test_lazy_names_are_listed_and_unknown_names_fail() -> None:
    for name in ("prepare", "train", "evaluate", "load", "compare", "Run", "Evaluation",
                 "Predictor", "Prediction", "PreparedData"):
        assert name in dir(sl) and name in sl.__all__
        assert callable(getattr(sl, name))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        sl.nonsense  # noqa: B018


# === Data ===


def test_prepare_returns_data_that_shows_its_splits(data: sl.PreparedData) -> None:
    counts = data.counts()
    assert counts["images"].sum() == len(data.manifest) == 60
    assert counts["malignant"].sum() == 30
    assert list(counts.index) == ["train", "val", "test"] and (counts["malignant"] > 0).all()
    assert os.fspath(data) == os.fspath(data.path)
    html = data._repr_html_()
    assert "PreparedData" in html and "60 images (30 malignant)" in html
    for split in ("train", "val", "test"):
        assert f">{split}<" in html
    again = sl.PreparedData.open(data.path)
    assert again.manifest.equals(data.manifest) and data.rejected.empty


def test_show_batch_is_a_jpeg_grid(data: sl.PreparedData) -> None:
    grid = data.show_batch(6, split="train", cols=3)
    jpeg = grid._repr_jpeg_()
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) > 1000
    assert len([ax for ax in grid.figure.axes if ax.images]) == 6


# === Training ===


def test_train_returns_a_run_matching_the_files(run: sl.Run) -> None:
    assert run.spec.backbone == "test_tiny_cnn" and run.spec.input_size == 32
    assert run.result is not None and run.result.timings["total_s"] > 0
    assert run.config["augment"]["rotation_deg"] == 30.0  # augment={...} reached the config
    assert not run.history.empty and "val_auc" in run.history
    # Generated malignant images carry a dark blob: even random-init features separate them.
    assert run.val_metrics["roc_auc"] > 0.8
    reopened = sl.Run.open(run.path)
    assert reopened.spec.model_id == run.spec.model_id and reopened.result is None
    assert reopened.threshold == pytest.approx(run.threshold)


def test_run_renders_spec_and_history(run: sl.Run) -> None:
    html = run._repr_html_()
    assert "test_tiny_cnn at 32 px" in html
    assert f"{run.threshold:.3f}" in html and run.spec.threshold_rule.split()[0] in html
    assert f"ROC AUC {run.val_metrics['roc_auc']:.3f}" in html
    assert html.count('<img alt="training curves"') == 1


def test_plot_history_draws_on_the_given_axes(run: sl.Run) -> None:
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    display = run.plot_history("loss", ax=ax)
    assert display.ax_ is ax and len(display.lines_) == 2
    np.testing.assert_allclose(display.lines_[1].get_ydata(), run.history["val_loss"])
    with pytest.raises(ValueError, match=r"metrics: .*auc"):
        run.plot_history("nonsense")


def test_train_rejects_unknown_settings(data: sl.PreparedData, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nonsense"):
        sl.train(data, out=tmp_path / "a", nonsense=1)
    with pytest.raises(ValueError, match="unknown recipe"):
        sl.train(data, out=tmp_path / "b", recipe="tutorial9")
    with pytest.raises(KeyError, match="no_such_net"):
        sl.train(data, out=tmp_path / "c", backbone="no_such_net")
    assert not (tmp_path / "a").exists()


# === Evaluation ===


def test_evaluate_headline_numbers_agree_with_sklearn(evaluation: sl.Evaluation) -> None:
    from sklearn.metrics import roc_auc_score

    y = evaluation.predictions["label"].to_numpy()
    p = evaluation.predictions["probability"].to_numpy()
    assert evaluation.auc == pytest.approx(roc_auc_score(y, p))
    lo, hi = evaluation.auc_ci
    assert lo <= evaluation.auc <= hi
    called = p >= evaluation.threshold
    assert evaluation.sensitivity == pytest.approx(called[y == 1].mean())
    assert evaluation.specificity == pytest.approx(1 - called[y == 0].mean())
    assert evaluation.summary()["roc_auc"] == pytest.approx(evaluation.auc)


def test_evaluation_html_shows_metrics_with_ci_and_figures(evaluation: sl.Evaluation) -> None:
    html = evaluation._repr_html_()
    lo, hi = evaluation.auc_ci
    assert f"{evaluation.auc:.3f} (95 % CI {lo:.3f}–{hi:.3f})" in html
    assert f"{evaluation.threshold:.3f}" in html
    assert f"sensitivity</td><td style=\"text-align:left;padding:2px 10px\">{evaluation.sensitivity:.3f}" in html
    assert "specificity" in html and "test split" in html
    assert html.count("data:image/png;base64,") == 1
    assert sl.INTENDED_USE in html


def test_evaluation_reopens_from_disk(evaluation: sl.Evaluation, run: sl.Run) -> None:
    assert evaluation.report_path is not None and evaluation.report_path.is_file()
    reopened = sl.Evaluation.open(run.path)
    assert reopened.auc == pytest.approx(evaluation.auc)
    assert len(reopened.predictions) == len(evaluation.predictions)
    assert run.evaluation is not None and run.evaluation.threshold == evaluation.threshold
    metrics = json.loads((evaluation.path / "metrics.json").read_text())
    assert metrics["ranking"]["roc_auc"] == pytest.approx(evaluation.auc)


def test_evaluation_plots_take_ax(evaluation: sl.Evaluation) -> None:
    from matplotlib.figure import Figure

    axes = Figure(figsize=(12, 8)).subplots(2, 3).ravel()
    assert evaluation.plot_roc(ax=axes[0]).ax_ is axes[0]
    assert evaluation.plot_confusion_matrix(ax=axes[1]).ax_ is axes[1]
    assert evaluation.plot_precision_recall(ax=axes[2]).ax_ is axes[2]
    assert evaluation.plot_calibration(ax=axes[3]).ax_ is axes[3]
    assert evaluation.plot_scores(ax=axes[4]) is axes[4]
    assert evaluation.plot_thresholds(ax=axes[5]) is axes[5]
    assert all(ax.has_data() for ax in axes)


def test_evaluate_rejects_a_bad_split(run: sl.Run, data: sl.PreparedData) -> None:
    with pytest.raises(ValueError, match="nonsense"):
        sl.evaluate(run, data, split="nonsense")


# === Prediction ===


def test_load_and_predict_one_image(run: sl.Run, data: sl.PreparedData) -> None:
    from skinlesion.inference.predictor import Predictor as BasePredictor

    model = sl.load(run)
    assert isinstance(model, BasePredictor) and isinstance(model, sl.Predictor)
    path = data.path / data.split("test")["path"].iloc[0]
    pred = model.predict(path)
    row = model.predict_files([path])[0]
    assert pred.probability == pytest.approx(row.probability, abs=1e-6)
    assert pred.decision == row.decision == model.decide(pred.probability)
    assert pred.name == path.name and pred.threshold == pytest.approx(run.threshold)
    assert pred.heatmap is not None and pred.heatmap.shape == (32, 32)
    assert pred.heatmap.min() >= 0.0 and pred.heatmap.max() <= 1.0
    html = pred._repr_html_()
    assert f"<b>{pred.probability:.3f}</b>" in html and f">{pred.decision}</b>" in html
    assert "data:image/jpeg;base64," in html


def test_predict_arrays_bytes_and_tables(run: sl.Run, data: sl.PreparedData) -> None:
    from PIL import Image

    model = run.load()
    path = data.path / data.split("test")["path"].iloc[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    by_array = model.predict(rgb, heatmap=False, name="lesion")
    by_bytes = model.predict(path.read_bytes(), heatmap=False)
    assert by_array.heatmap is None and by_array.name == "lesion"
    assert by_array.probability == pytest.approx(by_bytes.probability, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        model.predict(rgb[..., 0])
    table = model.predict_table([path, data.path / "missing.jpg"])
    assert list(table.columns) == ["path", "probability", "decision", "error"]
    assert table["error"].isna().tolist() == [True, False]
    assert "missing.jpg" in table["path"].iloc[1]


def test_prediction_plot_takes_ax(run: sl.Run, data: sl.PreparedData) -> None:
    from matplotlib.figure import Figure

    pred = sl.load(run).predict(data.path / data.split("val")["path"].iloc[0])
    axes = Figure().subplots(1, 3)
    display = pred.plot(ax=list(axes))
    assert display.axes_ == list(axes) and axes[0].images and axes[1].images
    assert axes[2].get_xlim() == (0.0, 1.0)
    single = Figure().add_subplot()
    assert pred.plot(ax=single).axes_ == [single]


# === Comparison and service ===


def test_compare_two_runs(run: sl.Run, data: sl.PreparedData, evaluation: sl.Evaluation,
                          tmp_path: Path) -> None:
    other = sl.train(data, out=tmp_path / "other", **{**TINY, "head_epochs": 3})
    cmp = sl.compare([run, other], data, bootstrap=50)
    table = cmp.table()
    assert list(table.index) == ["tiny", "other"]
    assert table.loc["tiny", "roc_auc"] == pytest.approx(evaluation.auc)
    tests = cmp.tests()
    assert tests[["a", "b"]].values.tolist() == [["tiny", "other"]]
    p_value = tests["p_value"].iloc[0]  # None where DeLong is undefined (e.g. both AUCs 1.0)
    assert p_value is None or 0.0 <= p_value <= 1.0
    assert "Comparison" in cmp._repr_html_() and "data:image/png;base64," in cmp._repr_html_()
    assert cmp.plot_roc()[0].ax_ is not None
    with pytest.raises(ValueError, match="at least two"):
        sl.compare([run], data)


def test_run_app_serves_in_process(run: sl.Run, data: sl.PreparedData) -> None:
    from fastapi.testclient import TestClient

    image = data.path / data.split("test")["path"].iloc[0]
    expected = sl.load(run).predict(image, heatmap=False).probability
    with TestClient(run.app(warmup=False)) as client:
        assert client.get("/v1/health").json()["status"] == "ok"
        answer = client.post("/v1/predict",
                             files={"image": (image.name, image.read_bytes(), "image/jpeg")})
    assert answer.status_code == 200
    assert answer.json()["probability"] == pytest.approx(expected, abs=1e-5)
