"""Rough edges a newcomer meets: help text, CSV digits, export folder mode, converter noise,
the report's title, recipe and documentation link."""

from __future__ import annotations

import csv
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_image
from skinlesion.cli.main import app
from skinlesion.evaluation.metrics import EvalResult
from skinlesion.evaluation.report import render_report
from skinlesion.utils.quiet import native_stderr_to_log
from test_eval_report import synthetic_predictions

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _help(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "100"}
    res = subprocess.run([sys.executable, "-m", "skinlesion.cli.main", *args, "--help"],
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    return res.stdout


def test_help_has_no_bool_type_and_upper_case_arguments() -> None:
    text = _help("train")
    assert "<bool>" not in text and "{data_dir}" not in text
    assert "{DATA_DIR}" in text and "--overwrite" in text
    assert "{RUN_DIR}" in _help("predict")
    assert "<bool>" not in _help()


def test_predictions_csv_has_six_decimals(tiny_run: Path, tmp_path: Path) -> None:
    make_image(tmp_path / "in" / "a.jpg", size=(40, 40), seed=3)
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(app, ["predict", str(tiny_run), str(tmp_path / "in"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with open(out, newline="", encoding="utf-8") as fh:
        prob = next(csv.DictReader(fh))["probability"]
    assert len(prob.split(".")[1]) == 6, prob


def test_predictions_csv_writer_and_heatmap_names(tmp_path: Path) -> None:
    """What predict --out / --cam write, without the CLI (skinlesion.inference.outputs)."""
    from skinlesion.inference.outputs import (
        HeatmapNames,
        prediction_record,
        write_predictions_csv,
    )
    from skinlesion.inference.predictor import PredictionRow

    rows = [PredictionRow("a/x.jpg", 0.1234567891, "benign"),
            PredictionRow("=cmd.jpg", None, None, "not an image"),
            PredictionRow("b/x.jpg", 0.9, "malignant")]
    names = HeatmapNames(tmp_path / "cams")
    written = {rows[0].path: str(names.next(rows[0].path)), rows[2].path: str(names.next(rows[2].path))}
    assert [Path(v).name for v in written.values()] == ["x.cam.png", "x-2.cam.png"]
    records = [prediction_record(r, written) for r in rows]
    out = write_predictions_csv(tmp_path / "p.csv", records)
    with open(out, newline="", encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["path", "probability", "decision", "error", "heatmap"]
    assert table[1][:4] == ["a/x.jpg", "0.123457", "benign", ""]
    assert table[2][:4] == ["'=cmd.jpg", "", "", "not an image"] and table[2][4] == ""
    assert table[3][4].endswith("x-2.cam.png")
    assert "heatmap" not in prediction_record(rows[0])


@pytest.mark.slow  # a real SavedModel export
def test_export_folder_gets_the_usual_mode(tiny_run: Path, tmp_path: Path) -> None:
    from skinlesion.workflows.export import export_run

    old = os.umask(0o022)
    try:
        result = export_run(tiny_run, "savedmodel", out=tmp_path / "sm", skip_check=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o755


def test_native_stderr_is_logged_not_printed(capfd: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKINLESION_TF_LOGS", raising=False)
    log = logging.getLogger("test.native")
    with caplog.at_level(logging.DEBUG, logger="test.native"), \
            native_stderr_to_log(log, "the converter"):
        os.write(2, b"fully_quantize: 0, inference_type: 6\n")
    err = capfd.readouterr().err  # a log handler may show the DEBUG record, never the raw line
    assert not any(line.startswith("fully_quantize") for line in err.splitlines()), err
    assert "fully_quantize" in caplog.text


@pytest.mark.parametrize(("training_config", "prefix"), [
    ({"input_size": 0, "preprocessing": ""}, ""),  # config.yaml of runs before the sections
    ({"model": {"input_size": 0, "preprocessing": ""}}, "model."),
])
def test_report_title_recipe_and_docs_link(training_config: dict, prefix: str) -> None:
    from skinlesion.evaluation.evaluate import evaluate_predictions

    result = evaluate_predictions(synthetic_predictions(), 0.5, bootstrap=0)
    result.metrics["run"] = {"run_dir": "/home/me/skinlesion-demo/run", "backbone": "b",
                             "input_size": 224, "preprocessing": "torch",
                             "training_config": training_config}
    html = render_report(EvalResult(metrics=result.metrics, predictions=result.predictions), {})
    assert "<h1>Evaluation of skinlesion-demo/run</h1>" in html
    assert f"<code>{prefix}input_size</code> 224 (the backbone" in html
    assert f"<code>{prefix}preprocessing</code> torch (the backbone" in html
    assert 'href="https://' in html


def test_cam_png_shows_photo_overlay_colour_bar_and_title(tiny_run: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    photo = make_image(tmp_path / "in" / "lesion.jpg", size=(120, 90), color=(200, 150, 130))
    with Image.open(photo) as im:  # a dark lesion on flat skin: a flat photo is out of scope
        im = im.convert("RGB")
        ImageDraw.Draw(im).ellipse((45, 30, 75, 60), fill=(90, 50, 40))
        im.save(photo, quality=95)
    res = CliRunner().invoke(app, ["predict", str(tiny_run), str(photo), "--cam",
                                   str(tmp_path / "cams"), "--json"])
    assert res.exit_code == 0, res.output
    png = np.asarray(Image.open(tmp_path / "cams" / "lesion.cam.png").convert("RGB"))
    h, w = png.shape[:2]
    assert w > 2 * h * 120 / 90 * 0.8  # two panels side by side (and a bar), not one overlay
    # The untouched photo is in the left panel: its flat skin colour appears unblended.
    left = png[:, : w // 2].reshape(-1, 3).astype(int)
    assert (np.abs(left - [200, 150, 130]).sum(axis=1) < 12).mean() > 0.15
    # jet's extremes (the colour bar) appear: deep blue and deep red.
    flat = png.reshape(-1, 3).astype(int)
    assert ((flat[:, 2] > 120) & (flat[:, 0] < 40) & (flat[:, 1] < 40)).any()
    assert ((flat[:, 0] > 120) & (flat[:, 1] < 40) & (flat[:, 2] < 40)).any()


def test_heatmap_panel_title_is_drawn() -> None:
    import numpy as np

    from skinlesion.inference.gradcam import heatmap_panel

    photo = np.full((60, 80, 3), 255, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    plain = heatmap_panel(photo, heat, title="")
    titled = heatmap_panel(photo, heat, title="P(malignant) 74.0 % → malignant")
    assert plain.shape == titled.shape and plain.dtype == np.uint8
    top = slice(0, titled.shape[0] // 8)
    assert (titled[top] < 100).sum() > (plain[top] < 100).sum() + 50  # dark title text


def test_piped_messages_do_not_wrap_paths(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "run-that-does-not-exist"
    res = CliRunner().invoke(app, ["export", str(deep), "--format", "savedmodel"])
    assert res.exit_code == 2
    assert str(deep) in res.stderr, res.stderr  # on one line, not broken at 80 columns
