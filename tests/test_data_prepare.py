"""``prepare`` end to end: manifest, resized images, report, bad input, re-runs, the CLI,
and a run on a sample of the real isic-dev images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from skinlesion.cli.main import app
from skinlesion.data.layouts.base import SourceError
from skinlesion.data.manifest import read_manifest
from skinlesion.data.prepare import PrepareError, PrepareSettings, output_names, prepare
from test_data_formats import img, make_archive, make_isic2019, make_isic2020, make_udacity, write

FAST = PrepareSettings(size=16, workers=1)


def _settings(**kw) -> PrepareSettings:  # type: ignore[no-untyped-def]
    return PrepareSettings(**{"size": 16, "workers": 1, **kw})


def test_udacity_folders_end_to_end(tmp_path: Path) -> None:
    src = make_udacity(tmp_path / "dermatologist-ai" / "data")
    out = tmp_path / "prepared"
    stages: list[str] = []
    result = prepare([src], out, FAST, progress=lambda e: stages.append(e.task))
    df = read_manifest(out)
    assert len(df) == 18 and set(df["split"]) == {"train", "val", "test"}
    assert set(df.loc[df["original_path"].str.startswith("valid/"), "split"]) == {"val"}
    assert df["path"].str.match(r"^images/ISIC_\d{7}\.jpg$").all()
    for p in df["path"]:
        with Image.open(out / p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) == 16
    assert (df[["width", "height"]].min(axis=1) == 16).all()
    assert df["sha256"].str.len().eq(64).all()
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["counts"]["kept"] == 18 and report["counts"]["rejected"] == 0
    assert report["sources"][0]["format"] == "folders"
    assert report["splits"]["val"]["labels"] == {"0": 4, "1": 2}
    assert report["manifest_sha256"] == result.report["manifest_sha256"]
    assert "18 images kept" in result.summary and "0 rejected" in result.summary
    assert {"reading", "resizing"} <= set(stages)


def test_bad_input_is_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    good = [img(root / "img" / f"ok{i}.jpg") for i in range(6)]
    shutil.copy(good[0], root / "img" / "copy_of_ok0.jpg")           # exact duplicate
    shutil.copy(good[1], root / "img" / "conflict_a.jpg")
    shutil.copy(good[1], root / "img" / "conflict_b.jpg")            # same bytes, other label
    (root / "img" / "empty.jpg").write_bytes(b"")
    (root / "img" / "text.jpg").write_text("hello\n")
    data = good[2].read_bytes()
    (root / "img" / "half.jpg").write_bytes(data[: len(data) // 2])
    os.symlink(root / "img" / "loop.jpg", root / "img" / "loop.jpg")
    (root / "img" / "adir.jpg").mkdir()
    write(root / "labels.csv", "\n".join([
        "path,label,diagnosis",
        *[f"img/ok{i}.jpg,{i % 2},{'melanoma' if i % 2 else 'nevus'}" for i in range(6)],
        "img/copy_of_ok0.jpg,0,nevus",
        "img/conflict_a.jpg,1,",
        "img/conflict_b.jpg,0,",
        "img/empty.jpg,0,", "img/text.jpg,0,", "img/half.jpg,0,", "img/loop.jpg,0,",
        "img/adir.jpg,0,",
        "img/nope.jpg,0,", "../../etc/passwd,0,", "img/ok5.jpg,2,", "img/ok4.jpg,0,melanoma",
        "img/ok3.jpg,,actinic keratosis",
    ]) + "\n")
    out = tmp_path / "out"
    result = prepare([root / "labels.csv"], out, FAST)
    df = read_manifest(out)
    # ok1 was dropped with its conflicting twin; ok3/ok4/ok5 rows with a bad label were
    # rejected, but their first (good) rows are kept.
    assert sorted(df["image_id"]) == ["ok0", "ok2", "ok3", "ok4", "ok5"]
    report = json.loads((out / "prepare_report.json").read_text())
    reasons = {r["image_id"]: r["reason"] for r in report["rejected"]}
    assert "exact duplicate of ok0" in reasons["copy_of_ok0"]
    assert "conflicting labels" in reasons["conflict_a"] and "conflicting" in reasons["ok1"]
    assert reasons["empty"].startswith("empty file")
    assert reasons["text"].startswith("not an image")
    assert reasons["half"].startswith("corrupt or truncated")
    assert reasons["loop"] == "symlink loop"
    assert reasons["adir"].startswith("is a directory")
    assert reasons["nope"] == "file not found"
    assert "escapes the source folder" in reasons["passwd"]
    assert len(report["rejected"]) == 14
    kinds = report["rejected_by_reason"]
    assert kinds["duplicate"] == 4 and kinds["missing file"] == 1 and kinds["unsafe path"] == 1
    assert "14 rejected" in result.summary and "prepare_report.json" in result.summary
    assert not any(p.name.startswith(".") and p.suffix == ".jpg" for p in (out / "images").iterdir())

    with pytest.raises(PrepareError, match=r"--strict: 1[0-9] row"):
        prepare([root / "labels.csv"], tmp_path / "strict", _settings(strict=True))
    assert not (tmp_path / "strict" / "manifest.csv").exists()
    strict_report = json.loads((tmp_path / "strict" / "prepare_report.json").read_text())
    assert strict_report["status"] == "failed (strict)" and strict_report["counts"]["rejected"] > 0


def test_rerun_skips_done_images_recovers_from_interruption(tmp_path: Path) -> None:
    src = make_udacity(tmp_path / "data")
    out = tmp_path / "out"
    first = prepare([src], out, FAST)
    manifest_bytes = (out / "manifest.csv").read_bytes()
    victim = out / first.manifest["path"].iloc[0]
    victim.unlink()                                              # interrupted before this one
    (out / "images" / ".ISIC_0000001.jpg.x1y2.jpg").write_bytes(b"half")  # a left-over temp
    second = prepare([src], out, FAST)
    assert second.report["counts"]["images_reused"] == 17
    assert victim.is_file()
    assert (out / "manifest.csv").read_bytes() == manifest_bytes  # bit-for-bit reproducible
    assert not list((out / "images").glob(".*.jpg.*"))
    bigger = prepare([src], out, _settings(size=20))
    assert bigger.report["counts"]["images_reused"] == 0      # settings changed → redone
    assert (bigger.manifest[["width", "height"]].min(axis=1) == 20).all()


def test_seed_and_split_change_manifest(tmp_path: Path) -> None:
    root = make_isic2019(tmp_path / "isic2019")
    a = prepare([root], tmp_path / "a", _settings(seed=1))
    b = prepare([root], tmp_path / "b", _settings(seed=1))
    c = prepare([root], tmp_path / "c", _settings(seed=7, fractions=(0.5, 0.25, 0.25)))
    assert a.report["manifest_sha256"] == b.report["manifest_sha256"]
    assert a.report["manifest_sha256"] != c.report["manifest_sha256"]


def test_several_sources_combine(tmp_path: Path) -> None:
    s2020 = make_isic2020(tmp_path / "isic2020")
    s2019 = make_isic2019(tmp_path / "isic2019")
    arch = make_archive(tmp_path / "archive")  # shares ISIC_0000000/2 ids with 2019
    result = prepare([s2019, s2020, arch], tmp_path / "out", _settings(folds=3))
    df = read_manifest(tmp_path / "out")
    assert set(df["source"]) == {"ISIC2019", "ISIC2020", "ISIC-archive"}
    assert df["image_id"].is_unique
    reasons = {(r["source"], r["image_id"]): r["reason"] for r in result.report["rejected"]}
    assert "image_id already used by" in reasons[(str(arch), "ISIC_0000000")]
    for col in ("patient_id", "lesion_id"):
        ids = df[df[col] != ""]
        assert (ids.groupby(col)["split"].nunique() <= 1).all()
        folded = ids[ids["fold"] >= 0]
        assert (folded.groupby(col)["fold"].nunique() <= 1).all()
    assert set(df.loc[df["split"] == "test", "fold"]) <= {-1}
    assert set(df.loc[df["split"] != "test", "fold"]) == {0, 1, 2}
    assert len(result.report["sources"]) == 3
    assert result.report["folds"]


def test_image_conversions_in_prepare(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    (root / "nevus").mkdir(parents=True)
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(root / "nevus" / "clear.png")
    Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)).save(
        root / "nevus" / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("CMYK", (60, 40), (0, 0, 0, 0)).save(root / "nevus" / "cmyk.jpg",
                                                  exif=exif.tobytes())
    Image.new("RGB", (60, 40), (5, 5, 5)).save(root / "nevus" / "scan.tiff")
    prepare([root], tmp_path / "out", _settings(workers=2))
    df = read_manifest(tmp_path / "out").set_index("image_id")
    with Image.open(tmp_path / "out" / df.loc["clear", "path"]) as im:
        assert im.mode == "RGB" and np.asarray(im).min() > 240  # transparent → white
    with Image.open(tmp_path / "out" / df.loc["cmyk", "path"]) as im:
        assert im.height > im.width  # EXIF rotation applied
    assert len(df) == 4


def test_output_names_are_safe_and_unique() -> None:
    ids = ["ISIC_0000001", "a/b", "a_b", "../../x", "CASE", "case", "", "ünï cødé"]
    names = output_names(ids)
    assert names[0] == "ISIC_0000001" and names[2] == "a_b"
    assert len({n.lower() for n in names}) == len(ids)
    assert all("/" not in n and not n.startswith(".") and n for n in names)


def test_output_folder_inside_the_source_is_not_read(tmp_path: Path) -> None:
    src = make_udacity(tmp_path / "data")
    for _ in range(2):  # the second run must not take the prepared copies for sources
        result = prepare([src], src / "prepared", FAST)
        assert result.report["counts"]["kept"] == 18 and result.report["counts"]["rejected"] == 0
    root = tmp_path / "isic2019"
    make_isic2019(root)
    for _ in range(2):
        result = prepare([root], root / "out", FAST)
        assert not [w for w in result.report["warnings"] if "share this id" in w]
        assert not result.manifest["original_path"].str.startswith("out/").any()
    with pytest.raises(SourceError, match="is the source folder itself"):
        prepare([src], src, FAST)


def test_source_errors_are_errors(tmp_path: Path) -> None:
    bad = write(tmp_path / "t" / "table.csv", "name,score\nfoo,1\n")
    with pytest.raises(SourceError, match=r"table\.csv.*columns found"):
        prepare([bad], tmp_path / "out", FAST)


# === CLI ===


def test_cli_prepare_and_show_batch(tmp_path: Path) -> None:
    src = make_udacity(tmp_path / "data")
    out = tmp_path / "prepared"
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", str(src), "--out", str(out), "--size", "16",
                              "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["counts"]["kept"] == 18
    grid = tmp_path / "grid.png"
    res = runner.invoke(app, ["show-batch", str(out), "--out", str(grid), "--split", "all"])
    assert res.exit_code == 0, res.output
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 500 and im.height > 500
    res = runner.invoke(app, ["show-batch", str(out), "--split", "nope", "--out", str(grid)])
    assert res.exit_code == 2 and "no images in split" in " ".join(res.output.split())


def test_cli_errors_and_strict(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "d"
    img(root / "melanoma" / "a.jpg")
    img(root / "weird" / "b.jpg")
    res = runner.invoke(app, ["prepare", str(root), "--out", str(tmp_path / "o"), "--size", "16",
                              "--strict", "-j", "1"])
    assert res.exit_code == 1 and "unknown label" in " ".join(res.output.split())
    res = runner.invoke(app, ["prepare", str(root), "--out", str(tmp_path / "o2"), "--size", "16",
                              "-j", "1", "--label-map", "weird=0", "--strict"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "o2" / "manifest.csv")) == 2
    for args, msg in ((["--split", "80/20"], "TRAIN/VAL/TEST"), (["--label-map", "x=3"], "bad label"),
                      (["--format", "nope"], "choose one of")):
        res = runner.invoke(app, ["prepare", str(root), "--out", str(tmp_path / "o3"), *args])
        assert res.exit_code == 2 and msg in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o4")])
    assert res.exit_code == 2 and "no such file or folder" in " ".join(res.output.split())


# === Real images ===


@pytest.mark.integration
def test_prepare_sample_of_isic_dev(isic_dev: Path, tmp_path: Path) -> None:
    labels = pd.read_csv(isic_dev / "labels.csv", dtype=str, keep_default_na=False)
    sample = pd.concat([
        labels[labels["filename"].str.startswith("fullsize/")].head(4),
        labels[~labels["filename"].str.startswith("fullsize/")].groupby("source").head(6),
    ]).head(40)
    root = tmp_path / "isic-sample"
    for rel in sample["filename"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(isic_dev / rel, root / rel)  # read-only real images, not copied
    sample.to_csv(root / "labels.csv", index=False)
    out = tmp_path / "prepared"
    result = prepare([root / "labels.csv"], out, PrepareSettings(size=128, workers=2))
    df = read_manifest(out)
    assert len(df) == len(sample) == 40 and result.report["counts"]["rejected"] == 0
    assert set(df["source"]) == {s.rsplit(":", 1)[1] for s in sample["source"]}
    assert (df["source_full"].str.contains("@")).all()
    merged = df.merge(sample, on="image_id")
    assert (merged["label_x"].astype(str) == merged["label_y"]).all()
    assert set(df["split"]) == {"train", "val", "test"}
    for _, row in df.iterrows():
        with Image.open(out / row["path"]) as im:
            assert im.mode == "RGB" and min(im.size) <= 128
            assert im.size == (row["width"], row["height"])
    big = df[df["original_path"].str.startswith("fullsize/")]
    assert len(big) == 4 and (big[["width", "height"]].min(axis=1) == 128).all()
