"""What a frozen/cached run records for later commands, and what evaluate does with it:
TensorBoard logs, training curves in the report, and the train/test overlap check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import app
from skinlesion.data.manifest import read_manifest, write_manifest
from skinlesion.evaluation.overlap import (
    TRAINING_IMAGES_FILE,
    find_overlap,
    training_images_record,
)
from skinlesion.utils.hashing import sha256_file
from skinlesion.workflows.evaluate import evaluate_run
from test_training import make_dataset, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_dataset(tmp_path_factory.mktemp("records_data"), n_train=16, n_val=8, size=32)
    df = read_manifest(root)
    df["sha256"] = [sha256_file(root / p) for p in df["path"]]  # as prepare records them
    write_manifest(df, root)
    return root


MESSAGES: list[str] = []


@pytest.fixture(scope="module")
def cached_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skinlesion.training.trainer import train

    out = tmp_path_factory.mktemp("records_run") / "run"
    cfg = tiny_config(data, out, mode="frozen", cache_features=True, head_epochs=3,
                      feature_views=2)
    return train(cfg, progress=lambda e: MESSAGES.append(e.message) if e.message else None).run_dir


def test_progress_reports_feature_rate_head_start_and_epochs(cached_run: Path) -> None:
    text = "\n".join(MESSAGES)
    # The feature pass runs over the pool of training and validation images (16 + 8).
    assert "view 1/2 done: 24 images in" in text and "images/s" in text
    assert "head: training on 32 cached feature vectors, up to 3 epochs" in text
    assert "head epoch 1/3:" in text and "head epoch 3/3:" in text  # first and last
    assert text.index("model: ") < text.index("feature pass") < text.index("head: training")


@pytest.fixture(scope="module")
def overlapping(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another data folder whose test split holds 3 renamed copies of training images,
    one validation image under its own id, and 4 images the run never saw."""
    root = tmp_path_factory.mktemp("overlapping")
    src = read_manifest(data)
    rows = []
    picks = ([("train", i, f"copy_{i}") for i in range(3)] + [("val", 0, None)]
             + [("test", i, None) for i in range(4)])
    for split, i, new_id in picks:
        row = src[src["split"] == split].iloc[i].to_dict()
        image_id = new_id or row["image_id"]
        rel = f"images/{image_id}.jpg"
        (root / "images").mkdir(exist_ok=True)
        shutil.copyfile(data / row["path"], root / rel)
        rows.append({**row, "image_id": image_id, "path": rel, "split": "test"})
    df = pd.DataFrame(rows)
    df.loc[df["image_id"] == src[src["split"] == "val"].iloc[0]["image_id"], "sha256"] = ""
    write_manifest(df, root)
    return root


def test_cached_run_writes_tensorboard_logs_and_training_images(cached_run: Path) -> None:
    events = list((cached_run / "logs" / "head").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in cached_run.rglob("*"))
    record = json.loads((cached_run / TRAINING_IMAGES_FILE).read_text())
    assert len(record["splits"]["train"]["image_id"]) == 16
    assert len(record["splits"]["val"]["sha256"]) == 8
    assert all(len(h) == record["hash_chars"] for h in record["splits"]["train"]["sha256"])
    spec = json.loads((cached_run / "model_spec.json").read_text())
    assert spec["train_prevalence"] == pytest.approx(0.5)


def test_find_overlap_by_hash_then_id() -> None:
    record = training_images_record(
        pd.DataFrame({"image_id": ["a", "b"], "sha256": ["1" * 64, "2" * 64]}),
        pd.DataFrame({"image_id": ["c"], "sha256": ["3" * 64]}))
    rows = pd.DataFrame({"image_id": ["renamed", "c", "new"],
                         "sha256": ["2" * 64, "", "9" * 64]})
    found = find_overlap(rows, record)
    assert found.to_dict("records") == [
        {"image_id": "renamed", "seen_in": "train", "matched_by": "sha256"},
        {"image_id": "c", "seen_in": "val", "matched_by": "image_id"}]


def test_evaluate_flags_overlap_and_shows_training_curves(cached_run: Path, overlapping: Path,
                                                          tmp_path: Path) -> None:
    result = evaluate_run(cached_run, overlapping, bootstrap=0, out=tmp_path / "eval")
    ov = result.metrics["overlap"]
    assert ov["checked"] and ov["n_overlap"] == 4 and ov["by_split"] == {"train": 3, "val": 1}
    assert not ov["excluded"] and "optimistic" in ov["warning"]
    assert result.metrics["counts"]["n"] == 8  # scored, but flagged
    html = result.report_path.read_text()
    assert "Train/test overlap" in html and "4 of the 8 images" in html
    assert (tmp_path / "eval" / "training_curves.png").is_file()
    assert 'id="fig-training_curves"' in html


def test_cli_exclude_overlap(cached_run: Path, overlapping: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["evaluate", str(cached_run), "--data", str(overlapping),
                                   "--out", str(tmp_path / "e1"), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    assert "4 of the 8 images" in " ".join(res.stderr.split())
    res = CliRunner().invoke(app, ["evaluate", str(cached_run), "--data", str(overlapping),
                                   "--out", str(tmp_path / "e2"), "--bootstrap", "0",
                                   "--exclude-overlap", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["counts"]["n"] == 4 and doc["overlap"]["excluded"] is True
    ids = set(pd.read_csv(tmp_path / "e2" / "predictions.csv")["image_id"])
    assert not ids & {"copy_0", "copy_1", "copy_2"}


def test_compare_flags_and_excludes_overlap(cached_run: Path, tiny_run: Path, overlapping: Path,
                                            tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["compare", str(cached_run), str(tiny_run), "--data",
                                   str(overlapping), "--out", str(tmp_path / "cmp"),
                                   "--bootstrap", "0", "--exclude-overlap", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    names = list(doc["overlap"])
    assert doc["overlap"][names[0]]["n_overlap"] == 4 and doc["overlap"][names[0]]["excluded"]
    assert doc["overlap"][names[1]]["checked"] is False  # that run records no training data
    assert doc["counts"]["n"] == 4
