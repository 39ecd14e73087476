"""``evaluate`` and ``compare`` end to end: a real tiny run, generated and real isic-dev images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from typer.testing import CliRunner

from conftest import make_image
from skinlesion import INTENDED_USE
from skinlesion.cli.main import app
from skinlesion.evaluation.operating_point import youden_threshold
from skinlesion.workflows.evaluate import evaluate_run
from test_eval_report import assert_valid_html, inline_pngs


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory, isic_dev: Path) -> Path:
    """A data folder: generated images in every split, 8 real isic-dev images in test and val,
    a corrupt file in test and an empty one in val."""
    root = tmp_path_factory.mktemp("eval_data")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        label = i % 2
        split = ("train", "val", "test")[i % 3]
        base = rng.integers(140, 255, 3) if label else rng.integers(0, 120, 3)
        rel = f"images/gen_{i:03d}.jpg"
        make_image(root / rel, size=(40 + i % 7, 36), seed=i,
                   color=None if i % 4 == 0 else tuple(int(c) for c in base))
        rows.append({"image_id": f"gen_{i:03d}", "path": rel, "label": label, "split": split,
                     "source": ("generated-A", "generated-B")[i % 2 if i % 5 else 0],
                     "sex": ("male", "female")[i % 2], "age": 18 + 3 * i, "site": "",
                     "diagnosis": ("nevus", "melanoma")[label]})
    real = pd.read_csv(isic_dev / "labels.csv")
    real = real[~real["filename"].str.startswith("fullsize/")]
    picks = pd.concat([real[real.label == 1].head(4), real[real.label == 0].head(4)])
    for k, (_, r) in enumerate(picks.iterrows()):
        rel = f"real/{Path(r['filename']).name}"
        (root / "real").mkdir(exist_ok=True)
        shutil.copyfile(isic_dev / r["filename"], root / rel)
        rows.append({"image_id": r["image_id"], "path": rel, "label": int(r["label"]),
                     "split": ("test", "val")[k % 2], "source": "isic-dev", "sex": "",
                     "age": None, "site": "", "diagnosis": r["diagnosis"]})
    (root / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows.append({"image_id": "corrupt", "path": "images/corrupt.jpg", "label": 1, "split": "test",
                 "source": "generated-A", "sex": "", "age": None, "site": "", "diagnosis": ""})
    (root / "images" / "empty.png").write_bytes(b"")
    rows.append({"image_id": "empty_val", "path": "images/empty.png", "label": 0, "split": "val",
                 "source": "generated-B", "sex": "", "age": None, "site": "", "diagnosis": ""})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def evaluated(tiny_run: Path, eval_data: Path, tmp_path_factory: pytest.TempPathFactory):
    return evaluate_run(tiny_run, eval_data, bootstrap=200, seed=0,
                        out=tmp_path_factory.mktemp("tiny_eval"))


def test_evaluate_writes_every_output(evaluated) -> None:
    out = evaluated.out_dir
    for name in ("metrics.json", "predictions.csv", "errors.csv", "report.html", "roc.png",
                 "precision_recall.png", "confusion_matrix.png", "reliability.png",
                 "score_histograms.png", "threshold_curves.png", "subgroup_auc.png",
                 "error_gallery.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*"))  # no temporary files left behind
    assert evaluated.report_path == out / "report.html"


def test_metrics_json_agrees_with_sklearn_on_predictions_csv(evaluated) -> None:
    out = evaluated.out_dir
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    pred = pd.read_csv(out / "predictions.csv")
    y, p = pred["label"].to_numpy(), pred["probability"].to_numpy()
    t = m["operating_point"]["threshold"]
    # 16 generated + 4 real test images scored; the corrupt one is listed, not scored.
    assert len(pred) == m["counts"]["n"] == 20 and m["data"]["n_images"] == 21
    assert m["counts"]["n_positive"] == int(y.sum())
    assert m["counts"]["prevalence"] == pytest.approx(y.mean())
    assert m["ranking"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["ranking"]["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    max_fpr = 0.2  # the ISIC 2024 formula, written out
    scaled = skm.roc_auc_score(1 - y, 1 - p, max_fpr=max_fpr)
    assert m["ranking"]["pauc_tpr80"] == pytest.approx(
        0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / 0.5 * (scaled - 0.5))
    pred_mal = (p >= t).astype(int)
    assert (pred["decision"] == np.where(pred_mal, "malignant", "benign")).all()
    at = m["at_threshold"]
    assert at["sensitivity"] == pytest.approx(skm.recall_score(y, pred_mal))
    assert at["specificity"] == pytest.approx(skm.recall_score(y, pred_mal, pos_label=0))
    assert at["accuracy"] == pytest.approx(skm.accuracy_score(y, pred_mal))
    assert m["calibration"]["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["operating_point"]["rule"] == "stored" and t == 0.5
    assert m["intended_use"] == INTENDED_USE and m["tta"] == 1
    assert m["run"]["backbone"] == "mobilenet_v3_small" and len(m["data"]["manifest_sha256"]) == 64
    assert {g["group"] for g in m["subgroups"]["groupings"]["source"]["groups"]} == {
        "generated-A", "generated-B", "isic-dev"}


def test_unreadable_images_are_counted_and_listed(evaluated) -> None:
    out = evaluated.out_dir
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["errors"]["count"] == 1 and m["data"]["n_errors"] == 1
    (err,) = m["errors"]["images"]
    assert err["image_id"] == "corrupt" and err["error"]
    assert pd.read_csv(out / "errors.csv")["image_id"].tolist() == ["corrupt"]
    assert "corrupt" not in set(pd.read_csv(out / "predictions.csv")["image_id"])
    assert "corrupt" in (out / "report.html").read_text(encoding="utf-8")


def test_report_of_a_real_run_is_valid_and_self_contained(evaluated) -> None:
    html = evaluated.report_path.read_text(encoding="utf-8")
    pngs = inline_pngs(assert_valid_html(html))
    on_disk = sorted(evaluated.out_dir.glob("*.png"))
    assert len(pngs) == len(on_disk) == 8
    assert all(path.read_bytes() in pngs for path in on_disk)
    for text in (INTENDED_USE, "mobilenet_v3_small", "32 × 32", "stored with the run",
                 evaluated.metrics["data"]["manifest_sha256"][:12], "isic-dev"):
        assert text in html, text


def test_youden_threshold_is_fitted_on_validation_images(tiny_run: Path, eval_data: Path,
                                                         tmp_path: Path) -> None:
    from skinlesion.data.manifest import read_manifest
    from skinlesion.evaluation.evaluate import select_split
    from skinlesion.inference.predictor import Predictor
    from skinlesion.workflows.scoring import predict_manifest

    predictor = Predictor.from_run(tiny_run)  # loaded once for both
    val_rows = select_split(read_manifest(eval_data), "val")
    vp, _ = predict_manifest(predictor, val_rows, eval_data)
    result = evaluate_run(tiny_run, eval_data, threshold="youden", bootstrap=0,
                          out=tmp_path / "test", predictor=predictor)
    op = result.metrics["operating_point"]
    assert op["chosen_on"] == "val" and "validation split" in op["description"]
    assert f"({len(vp)} images" in op["description"]
    assert op["threshold"] == pytest.approx(youden_threshold(vp["label"], vp["probability"]))
    assert "warning" not in op
    assert op["validation_errors"] == 1  # the empty val image: left out of the fit, counted


def test_cli_evaluate_prints_report_path_and_json(tiny_run: Path, eval_data: Path,
                                                  tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(tiny_run), "--data", str(eval_data), "--out",
                              str(tmp_path / "cli"), "--bootstrap", "50", "--threshold", "0.4"])
    assert res.exit_code == 0, res.output
    report = Path(res.stdout.strip().splitlines()[-1])
    assert report == tmp_path / "cli" / "report.html" and report.is_file()
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text(encoding="utf-8"))
    assert m["operating_point"]["threshold"] == 0.4 and m["bootstrap"]["replicates"] == 50

    res = runner.invoke(app, ["evaluate", str(tiny_run), "--data", str(eval_data), "--out",
                              str(tmp_path / "js"), "--bootstrap", "0", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["report"].endswith("report.html") and payload["counts"]["n"] == 20


@pytest.mark.parametrize("args,message", [
    (["--threshold", "sens=2"], "not understood"),
    (["--split", "holdout"], "choose one of"),
    (["--tta", "3"], "1, 2, 4 or 8"),
])
def test_cli_evaluate_rejects_bad_options(tiny_run: Path, eval_data: Path, args: list[str],
                                          message: str) -> None:
    res = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--data", str(eval_data), *args])
    assert res.exit_code == 2 and message in res.output


def test_cli_evaluate_missing_run_or_manifest(tmp_path: Path, tiny_run: Path) -> None:
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--data", str(tmp_path)])
    assert res.exit_code == 2 and "model.keras: missing" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--data", str(tmp_path)])
    assert res.exit_code == 2 and "no manifest here" in " ".join(res.output.split())


def test_compare_two_runs_on_the_same_images(tiny_run: Path, eval_data: Path, tmp_path: Path,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    from inference_runs import responsive_run_dir

    other = responsive_run_dir(tmp_path_factory)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(tiny_run), str(other), "--data", str(eval_data),
                                   "--out", str(out), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    assert Path(res.stdout.strip().splitlines()[-1]) == out / "compare.html"
    c = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    names = list(c["models"])
    assert len(names) == 2 and c["counts"]["n"] == 20 and c["errors"]["count"] == 1
    table = pd.read_csv(out / "predictions.csv")
    y = table["label"].to_numpy()
    for name in names:
        assert c["models"][name]["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y, table[f"p_{name}"]))
    (pair,) = c["pairs"]
    diff = c["models"][names[0]]["roc_auc"] - c["models"][names[1]]["roc_auc"]
    assert pair["delong"]["difference"] == pytest.approx(diff)
    assert pair["paired_bootstrap"]["difference"] == pytest.approx(diff)
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert len(inline_pngs(assert_valid_html(html))) == 1 and INTENDED_USE in html
