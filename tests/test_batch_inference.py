"""Batch inference on Ray Data: a folder of real images → one CSV, same numbers as the Predictor."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip(
    "ray.data", reason="Ray Data is not installed: pip install -e '.[scale]' runs these tests")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_folder_to_csv_matches_the_predictor(local_ray, tiny_run: Path, isic_dev: Path,
                                             tmp_path: Path) -> None:
    from skinlesion.inference.batch import COLUMNS, predict_at_scale
    from skinlesion.inference.predictor import Predictor

    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    real = sorted((isic_dev / "images").glob("*.jpg"))[:6]
    for i, src in enumerate(real):
        shutil.copy(src, (photos / "more" if i % 2 else photos) / src.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("not an image: skipped by extension")

    out = tmp_path / "results" / "predictions.csv"
    result = predict_at_scale(tiny_run, str(photos), out, batch_size=4, concurrency=1)
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == list(COLUMNS)
    assert result.images == len(frame) == 7 and result.failed == 1
    assert frame["path"].tolist() == sorted(frame["path"])
    broken = frame[frame["path"].str.endswith("broken.jpg")].iloc[0]
    assert broken["error"] and broken["probability"] == "" and broken["decision"] == ""
    ok = frame[frame["error"] == ""].copy()
    assert not ok["path"].str.endswith(".txt").any()

    # The same numbers as the one inference path, called directly.
    predictor = Predictor.from_run(tiny_run)
    rows = {Path(r.path).name: r for r in predictor.predict_files(sorted(
        p for p in photos.rglob("*.jpg") if p.name != "broken.jpg"))}
    for _, row in ok.iterrows():
        ref = rows[Path(row["path"]).name]
        assert float(row["probability"]) == pytest.approx(ref.probability, abs=1e-5)
        assert row["decision"] == ref.decision
        assert row["model_id"] == predictor.model_id
    assert result.malignant == int((ok["decision"] == "malignant").sum())

    # Large jobs: the workers write Parquet files into a folder (or a bucket URI).
    folder = tmp_path / "parquet"
    many = predict_at_scale(tiny_run, [str(photos / "more")], folder, batch_size=2)
    assert many.images == 3 and many.failed == 0 and list(folder.glob("*.parquet"))
    probs = pd.read_parquet(folder)["probability"].to_numpy()
    assert np.all((probs >= 0) & (probs <= 1))
