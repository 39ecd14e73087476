"""``skinlesion predict`` through Typer's test runner, on real isic-dev images and bad files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinlesion import INTENDED_USE
from skinlesion.cli.main import app

pytestmark = pytest.mark.integration


@pytest.fixture()
def photos(isic_dev: Path, tmp_path: Path) -> Path:
    """A folder with three real photos (one in a subfolder) and two bad files."""
    from inference_runs import isic_sample

    folder = tmp_path / "clinic"
    (folder / "sub").mkdir(parents=True)
    paths, _ = isic_sample(isic_dev, 3)
    shutil.copy(paths[0], folder / "a.jpg")
    shutil.copy(paths[1], folder / "b.jpg")
    shutil.copy(paths[2], folder / "sub" / "c.JPG")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo")
    return folder


def test_predict_folder_to_csv_with_heatmaps(tiny_run: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    cams = tmp_path / "cams"
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(photos), "--out", str(out),
                                      "--tta", "2", "--cam", str(cams), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "b.jpg", "empty.jpg", "notes.jpg", "c.JPG"]
    by_name = {Path(r["path"]).name: r for r in rows}
    for name in ("a.jpg", "b.jpg", "c.JPG"):
        r = by_name[name]
        assert 0.0 <= float(r["probability"]) <= 1.0 and r["decision"] in ("benign", "malignant")
        assert r["error"] == "" and Path(r["heatmap"]).is_file()
    assert by_name["empty.jpg"]["probability"] == "" and "empty" in by_name["empty.jpg"]["error"]
    assert "not an image" in by_name["notes.jpg"]["error"]
    assert sorted(p.name for p in cams.iterdir()) == ["a.cam.png", "b.cam.png", "c.cam.png"]
    assert "2 failed" in result.stderr and INTENDED_USE[:40] in result.stderr.replace("\n", " ")


def test_predict_json_on_stdout(tiny_run: Path, photos: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(photos / "a.jpg"),
                                      str(photos / "*.jpg"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["intended_use"] == INTENDED_USE and doc["model_id"] == "tiny-fixture"
    assert doc["summary"] == {"images": 4, "benign": doc["summary"]["benign"],
                              "malignant": 4 - 2 - doc["summary"]["benign"],
                              "inconclusive": 0, "out_of_scope": 0, "failed": 2}
    assert [Path(r["path"]).name for r in doc["rows"]] == ["a.jpg", "b.jpg", "empty.jpg", "notes.jpg"]


def test_exit_codes(tiny_run: Path, photos: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    all_bad = runner.invoke(app, ["predict", str(tiny_run), str(photos / "empty.jpg"),
                                  str(photos / "notes.jpg")])
    assert all_bad.exit_code == 1
    no_run = runner.invoke(app, ["predict", str(tmp_path), str(photos / "a.jpg")])
    assert no_run.exit_code == 2 and "model.keras" in no_run.stderr
    nothing = runner.invoke(app, ["predict", str(tiny_run), str(tmp_path / "nope")])
    assert nothing.exit_code == 1 and "no such file or folder" in " ".join(nothing.stderr.split())
    bad_tta = runner.invoke(app, ["predict", str(tiny_run), str(photos), "--tta", "3"])
    assert bad_tta.exit_code == 2 and "choose one of 1, 2, 4, 8" in bad_tta.stderr
