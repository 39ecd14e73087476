"""TFRecord shards: the deal (grouped, balanced), the files (complete, atomic, indexed), training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion.data.splits import group_ids


def _source(root: Path, n: int = 72, size: int = 36, seed: int = 0) -> Path:
    """A learnable generated source CSV with patients (1–3 images each, ≤ 1 malignant)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, patient, left = [], 0, 0
    for i in range(n):
        if left == 0:
            patient, left = patient + 1, int(rng.integers(1, 4))
            has_malignant = False
        label = int(i % 3 == 0 and not has_malignant)
        has_malignant |= bool(label)
        left -= 1
        img = np.clip(rng.normal(rng.uniform(150, 230, 3), 12, (size, size, 3)), 0, 255)
        if label:
            yy, xx = np.mgrid[:size, :size]
            img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] *= 0.35
        image_id = f"IMG_{i:04d}"
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{image_id}.jpg")
        rows.append({"image_id": image_id, "filename": f"images/{image_id}.jpg", "label": label,
                     "patient_id": f"P{patient:03d}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared data folder made through the CLI, with 4 shards per split."""
    from typer.testing import CliRunner

    from skinlesion.cli.main import app

    root = tmp_path_factory.mktemp("tfrec")
    src = _source(root / "src")
    data = root / "data"
    res = CliRunner().invoke(app, ["prepare", str(src), "--out", str(data), "--size", "36",
                                   "--split", "70/30/0", "--workers", "1", "--tfrecords", "4",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tfrecords"]["shards_requested"] == 4
    return data


# === The deal =======================================================================

def test_assign_shards_keeps_patients_together_and_balances_malignant() -> None:
    from skinlesion.data.tfrecords import assign_shards

    rng = np.random.default_rng(3)
    rows = []
    for p in range(300):  # 1–6 images per patient, at most one malignant each
        k = int(rng.integers(1, 7))
        mal = rng.random() < 0.25
        rows += [{"patient_id": f"p{p}", "label": int(mal and j == 0)} for j in range(k)]
    rows += [{"patient_id": "", "label": int(rng.random() < 0.2)} for _ in range(50)]
    df = pd.DataFrame(rows)
    shards = assign_shards(df, 8, seed=1)
    np.testing.assert_array_equal(shards, assign_shards(df, 8, seed=1))  # reproducible
    groups = group_ids(df)
    for g in np.unique(groups):  # a patient never spans two shards
        assert len(set(shards[groups == g])) == 1
    target = df["label"].sum() / 8
    mal = np.bincount(shards, weights=df["label"], minlength=8)
    assert np.all(np.abs(mal - target) <= 1.0), (mal, target)
    size = np.bincount(shards, minlength=8)
    assert size.max() - size.min() <= 6  # within one (largest) patient
    with pytest.raises(ValueError, match="n_shards"):
        assign_shards(df, 0)


# === The files ========================================================================

def _records(files: list[str]) -> list[dict]:
    import tensorflow as tf

    from skinlesion.data.tfrecords import parse_record

    out = []
    for f in files:
        for raw in tf.data.TFRecordDataset(f):
            r = parse_record(raw)
            out.append({"image_id": r["image_id"].numpy().decode(), "label": int(r["label"]),
                        "index": int(r["index"]), "file": Path(f).name,
                        "bytes": r["image"].numpy()})
    return out


def test_shards_hold_every_image_once_with_balanced_malignant_share(prepared: Path) -> None:
    from skinlesion.data.manifest import read_manifest
    from skinlesion.data.tfrecords import read_index, shard_files

    manifest = read_manifest(prepared)
    index = read_index(prepared)
    assert set(index["splits"]) == {"train", "val"}
    for split, entry in index["splits"].items():
        part = manifest[manifest["split"] == split].reset_index(drop=True)
        files = shard_files(prepared, split)
        assert [Path(f).name for f in files] == [
            f"{split}-{i:05d}-of-{len(files):05d}.tfrec" for i in range(len(files))]
        recs = _records(files)
        # Every image of the split exactly once, with its label, position and prepared bytes.
        assert sorted(r["image_id"] for r in recs) == sorted(part["image_id"])
        by_id = part.set_index("image_id")
        for r in recs:
            assert r["label"] == by_id.loc[r["image_id"], "label"]
            assert part["image_id"].iloc[r["index"]] == r["image_id"]
            assert r["bytes"] == (prepared / by_id.loc[r["image_id"], "path"]).read_bytes()
        # One patient per shard; per-shard counts in the index; malignant share ±1 image.
        rec = pd.DataFrame(recs).merge(part[["image_id", "patient_id"]], on="image_id")
        assert rec.groupby("patient_id")["file"].nunique().max() == 1
        target = part["label"].sum() / len(files)
        for shard in entry["shards"]:
            mine = rec[rec["file"] == shard["file"]]
            assert shard["images"] == len(mine) and shard["malignant"] == mine["label"].sum()
            assert abs(shard["malignant"] - target) <= 1.0
        assert entry["images"] == len(part)
    assert not list((prepared / "tfrecords").glob(".*"))  # no temporary files left


def test_rewrite_with_other_n_replaces_shards_and_stale_index_is_refused(
        prepared: Path, tmp_path: Path) -> None:
    import shutil

    from skinlesion.data.tfrecords import TFRecordError, read_index, shard_files, write_tfrecords

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    index = write_tfrecords(data, 2, seed=5)
    assert len(index["splits"]["train"]["shards"]) == 2
    assert sorted(p.name for p in (data / "tfrecords").glob("*.tfrec")) == [
        "train-00000-of-00002.tfrec", "train-00001-of-00002.tfrec",
        "val-00000-of-00002.tfrec", "val-00001-of-00002.tfrec"]
    (data / "tfrecords" / "train-00001-of-00002.tfrec").unlink()
    with pytest.raises(TFRecordError, match="missing"):
        shard_files(data, "train")
    with (data / "manifest.csv").open("a", encoding="utf-8") as fh:
        fh.write("\n")  # any change of the manifest makes the shards stale
    with pytest.raises(TFRecordError, match="another version"):
        read_index(data)
    with pytest.raises(TFRecordError, match="prepare"):
        read_index(tmp_path)


def test_shards_yield_the_same_elements_as_the_jpeg_pipeline(prepared: Path) -> None:
    from skinlesion.data.manifest import read_manifest, resolve_paths
    from skinlesion.data.pipeline import image_dataset
    from skinlesion.data.tfrecords import split_dataset

    df = read_manifest(prepared)
    train = df[df["split"] == "train"].reset_index(drop=True)
    jpeg = {int(i): (x.numpy(), float(y)) for x, y, i in
            image_dataset(resolve_paths(train, prepared), train["label"].to_numpy(), 32)}
    shards = {int(i): (x.numpy(), float(y)) for x, y, i in
              split_dataset(prepared, "train", train["image_id"].tolist(), 32)}
    assert jpeg.keys() == shards.keys() == set(range(len(train)))
    for k, (x, y) in jpeg.items():
        np.testing.assert_array_equal(shards[k][0], x)
        assert shards[k][1] == y
    # A subset (--limit) keeps only its rows, indexed by their position in the subset.
    subset = train["image_id"].tolist()[::4]
    got = sorted(int(i) for _, _, i in split_dataset(prepared, "train", subset, 32, cache="none"))
    assert got == list(range(len(subset)))


@pytest.mark.slow  # a whole training run (61 epochs) fed from the shards
def test_a_model_trains_from_shards(prepared: Path, tmp_path: Path) -> None:
    from skinlesion.training.trainer import train
    from test_training import tiny_config

    result = train(tiny_config(prepared, tmp_path / "run", backbone="test_tiny_cnn",
                               tfrecords=True, cache="none", shuffle_buffer=16, head_epochs=60,
                               head_lr=3e-2, finetune_epochs=1, feature_views=4))
    assert (tmp_path / "run" / "model.keras").is_file()
    assert result.val_metrics["roc_auc"] > 0.8
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "tfrecords: true" in saved
