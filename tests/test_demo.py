"""The README's first command: `skinlesion demo` on the bundled sample (real images, real weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import app
from skinlesion.demo import sample_dir


def test_bundled_sample_is_small_attributed_and_cc0() -> None:
    sample = sample_dir()
    labels = pd.read_csv(sample / "labels.csv")
    assert len(labels) <= 200 and set(labels["label"]) == {0, 1}
    assert set(labels["source"]) <= {"ISIC-archive", "ISIC2016", "ISIC2017-train", "ISIC2017-val"}
    attribution = (sample / "ATTRIBUTION.md").read_text()
    assert "CC-0" in attribution
    assert all(image_id in attribution for image_id in labels["image_id"])
    from PIL import Image

    for rel in labels["filename"]:
        with Image.open(sample / rel) as im:
            assert max(im.size) <= 256


@pytest.mark.slow  # trains and evaluates on the bundled real images
def test_demo_runs_end_to_end_and_prints_the_report_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    report = Path(doc["report"])
    assert report.is_file() and report.name == "report.html"
    assert "not a diagnostic device" in report.read_text()
    run = Path(doc["run_dir"])
    for name in ("config.yaml", "model.keras", "model_spec.json", "history.csv"):
        assert (run / name).is_file()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["ranking"]["roc_auc"] == doc["test_roc_auc"]
    # Real ImageNet features on real lesions: the validation split must beat chance.
    assert doc["val_roc_auc"] > 0.6
    assert doc["test_n"] == 20
