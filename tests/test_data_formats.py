"""Every dataset layout, on fixtures shaped like the real files (real header rows,
real file and folder names, generated small images)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinlesion.data.labels import LabelMap
from skinlesion.data.layouts.base import SourceError
from skinlesion.data.layouts.detect import detect_format, read_source
from skinlesion.data.layouts.tables import read_table

_seed = itertools.count(1)


def img(path: Path, fmt: str = "JPEG") -> Path:
    """A small unique noise image (distinct bytes each call)."""
    rng = np.random.default_rng(next(_seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


# === Layout fixtures ===


def make_isic2020(root: Path) -> Path:
    write(root / "ISIC_2020_Training_GroundTruth.csv", (
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
        "benign_malignant,target\n"
        "ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0\n"
        "ISIC_0015719,IP_3075186,female,45.0,upper extremity,unknown,benign,0\n"
        "ISIC_0052212,IP_2842074,female,50.0,lower extremity,nevus,benign,0\n"
        "ISIC_0068279,IP_6890425,female,45.0,head/neck,unknown,benign,0\n"
        "ISIC_0074268,IP_8723313,female,55.0,upper extremity,unknown,benign,0\n"
        "ISIC_0074311,IP_2950485,female,40.0,lower extremity,unknown,benign,0\n"
        "ISIC_0149568,IP_0962375,female,55.0,upper extremity,melanoma,malignant,1\n"
        "ISIC_0188432,IP_0962375,female,50.0,upper extremity,unknown,benign,0\n"
        "ISIC_0207268,IP_7279968,male,55.0,torso,melanoma,malignant,1\n"
        "ISIC_0232101,IP_4655710,male,65.0,torso,unknown,benign,0\n"
        "ISIC_0247330,IP_4655710,male,65.0,torso,melanoma,benign,1\n"      # contradiction
        "ISIC_0250839,IP_1234567,female,75.0,head/neck,melanoma,malignant,1\n"
        "ISIC_0999999,IP_1234567,female,75.0,head/neck,nevus,benign,0\n"   # duplicate listed
    ))
    write(root / "ISIC_2020_Training_Duplicates.csv",
          "image_name_1,image_name_2\nISIC_0250839,ISIC_0999999\n")
    for name in ("ISIC_2637011", "ISIC_0015719", "ISIC_0052212", "ISIC_0068279", "ISIC_0074268",
                 "ISIC_0074311", "ISIC_0149568", "ISIC_0188432", "ISIC_0207268", "ISIC_0232101",
                 "ISIC_0247330", "ISIC_0250839", "ISIC_0999999"):
        img(root / "ISIC_2020_Training_JPEG" / "train" / f"{name}.jpg")
    (root / "ISIC_2020_Training_JPEG" / "train" / "ISIC_0232101.jpg").unlink()  # missing file
    return root


def make_ham10000(root: Path) -> Path:
    write(root / "HAM10000_metadata.csv", (
        "lesion_id,image_id,dx,dx_type,age,sex,localization,dataset\n"
        "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp,vidir_modern\n"
        "HAM_0000118,ISIC_0025030,bkl,histo,80.0,male,scalp,vidir_modern\n"
        "HAM_0002730,ISIC_0026769,bkl,histo,80.0,male,scalp,vidir_modern\n"
        "HAM_0001466,ISIC_0031633,mel,histo,75.0,male,ear,vidir_modern\n"
        "HAM_0002761,ISIC_0029176,nv,follow_up,60.0,female,back,vidir_molemax\n"
        "HAM_0005132,ISIC_0025837,akiec,histo,70.0,female,face,vidir_modern\n"
        "HAM_0001396,ISIC_0025276,bcc,histo,55.0,female,trunk,rosendahl\n"
        "HAM_0004234,ISIC_0029396,df,consensus,45.0,male,lower extremity,vidir_modern\n"
        "HAM_0001949,ISIC_0032000,vasc,consensus,,unknown,unknown,vidir_modern\n"
    ))
    for i, name in enumerate(("ISIC_0027419", "ISIC_0025030", "ISIC_0026769", "ISIC_0031633",
                              "ISIC_0029176", "ISIC_0025837", "ISIC_0025276", "ISIC_0029396",
                              "ISIC_0032000")):
        part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
        img(root / part / f"{name}.jpg")
    return root


def make_isic2017(root: Path) -> Path:
    header = "image_id,melanoma,seborrheic_keratosis\n"
    parts = {"Training": ["ISIC_0000000,0.0,0.0", "ISIC_0000001,0.0,0.0", "ISIC_0000002,1.0,0.0",
                          "ISIC_0000003,0.0,1.0", "ISIC_0000004,1.0,1.0"],
             "Validation": ["ISIC_0001769,0.0,0.0", "ISIC_0001852,1.0,0.0"],
             "Test_v2": ["ISIC_0012086,0.0,1.0", "ISIC_0012092,1.0,0.0"]}
    for part, rows in parts.items():
        write(root / f"ISIC-2017_{part}_Part3_GroundTruth.csv", header + "\n".join(rows) + "\n")
        for row in rows:
            image_id = row.split(",")[0]
            img(root / f"ISIC-2017_{part}_Data" / f"{image_id}.jpg")
            img(root / f"ISIC-2017_{part}_Data" / f"{image_id}_superpixels.png", fmt="PNG")
    return root


def make_isic2016(root: Path) -> Path:
    write(root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
          "ISIC_0000000,benign\nISIC_0000001,benign\nISIC_0000002,malignant\n")
    write(root / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv",
          "ISIC_0000003,0.0\nISIC_0000012,1.0\n")
    for name in ("ISIC_0000000", "ISIC_0000001", "ISIC_0000002"):
        img(root / "ISBI2016_ISIC_Part3_Training_Data" / f"{name}.jpg")
    for name in ("ISIC_0000003", "ISIC_0000012"):
        img(root / "ISBI2016_ISIC_Part3_Test_Data" / f"{name}.jpg")
    return root


def make_isic2019(root: Path) -> Path:
    write(root / "ISIC_2019_Training_GroundTruth.csv", (
        "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
        "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000001,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000002,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000004,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0024329,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0024331,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0024332,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n"
        "ISIC_0000013_downsampled,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000019,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
    ))
    write(root / "ISIC_2019_Training_Metadata.csv", (
        "image,age_approx,anatom_site_general,lesion_id,sex\n"
        "ISIC_0000000,55.0,anterior torso,,female\n"
        "ISIC_0000002,60.0,upper extremity,,female\n"
        "ISIC_0024329,70.0,head/neck,BCN_0000019,male\n"
        "ISIC_0024331,50.0,lower extremity,BCN_0000019,male\n"
    ))
    for name in ("ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000004", "ISIC_0024329",
                 "ISIC_0024331", "ISIC_0024332", "ISIC_0000013_downsampled", "ISIC_0000019"):
        img(root / "ISIC_2019_Training_Input" / f"{name}.jpg")
    return root


def make_archive(root: Path) -> Path:
    write(root / "metadata.csv", (
        "isic_id,attribution,copyright_license,age_approx,anatom_site_general,diagnosis_1,"
        "diagnosis_2,diagnosis_3,diagnosis_4,diagnosis_5,diagnosis_confirm_type,image_type,"
        "lesion_id,patient_id,sex\n"
        "ISIC_0000000,Anonymous,CC-0,55,anterior torso,Benign,Benign melanocytic proliferations,"
        "Nevus,,,,dermoscopic,IL_0000001,IP_0000001,female\n"
        "ISIC_0000002,Anonymous,CC-0,60,upper extremity,Malignant,Malignant melanocytic "
        "proliferations (Melanoma),Melanoma Invasive,,,histopathology,dermoscopic,IL_0000002,"
        "IP_0000001,female\n"
        "ISIC_0010000,Anonymous,CC-BY,40,back,Indeterminate,Indeterminate melanocytic "
        "proliferations,Atypical melanocytic neoplasm,,,histopathology,dermoscopic,IL_0000003,"
        "IP_0000002,male\n"
        "ISIC_0010001,Anonymous,CC-BY,40,back,Benign,,,,,,dermoscopic,IL_0000004,IP_0000002,male\n"
        "ISIC_0010002,Anonymous,CC-BY,40,back,Benign,Malignant epidermal proliferations,"
        "Basal cell carcinoma,,,histopathology,dermoscopic,,IP_0000003,male\n"
    ))
    write(root / "attribution.txt", "Anonymous (CC-0)\n")
    for name in ("ISIC_0000000", "ISIC_0000002", "ISIC_0010000", "ISIC_0010001", "ISIC_0010002"):
        img(root / f"{name}.jpg")
    return root


def make_udacity(root: Path) -> Path:
    """udacity dermatologist-ai: data/{train,valid,test}/{melanoma,nevus,seborrheic_keratosis}."""
    n = 0
    for split in ("train", "valid", "test"):
        for cls in ("melanoma", "nevus", "seborrheic_keratosis"):
            for _ in range(2):
                img(root / split / cls / f"ISIC_{n:07d}.jpg")
                n += 1
    return root


# === Tests per layout ===


def _by_id(src) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {str(r["image_id"]): r for r in src.rows}


def _reasons(src) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r["image_id"]: r["reason"] for r in src.rejected}


def test_isic2020(tmp_path: Path) -> None:
    src = read_source(make_isic2020(tmp_path / "isic2020"), LabelMap())
    assert src.format == "isic2020"
    rows = _by_id(src)
    assert rows["ISIC_2637011"]["label"] == 0 and rows["ISIC_2637011"]["diagnosis"] == "unknown"
    assert rows["ISIC_0149568"]["label"] == 1
    assert rows["ISIC_0149568"]["patient_id"] == "IP_0962375"
    assert rows["ISIC_0149568"]["site"] == "upper extremity"
    assert rows["ISIC_0149568"]["age"] == 55.0 and rows["ISIC_0149568"]["sex"] == "female"
    assert rows["ISIC_0149568"]["source"] == "ISIC2020"
    assert rows["ISIC_0149568"]["original_path"] == "ISIC_2020_Training_JPEG/train/ISIC_0149568.jpg"
    reasons = _reasons(src)
    assert "contradicts" in reasons["ISIC_0247330"]
    assert "not found" in reasons["ISIC_0232101"]
    assert "duplicate of ISIC_0250839" in reasons["ISIC_0999999"]
    assert len(src.rows) == 10


def test_isic2020_v2_ground_truth_with_lesion_id(tmp_path: Path) -> None:
    root = tmp_path / "isic2020"
    write(root / "ISIC_2020_Training_GroundTruth_v2.csv", (
        "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
        "benign_malignant,target\n"
        "ISIC_0015719,IP_3075186,IL_0000001,female,45.0,upper extremity,unknown,benign,0\n"
        "ISIC_0052212,IP_2842074,IL_0000002,female,50.0,lower extremity,nevus,benign,0\n"))
    for name in ("ISIC_0015719", "ISIC_0052212"):
        img(root / "ISIC_2020_Training_JPEG" / f"{name}.jpg")
    src = read_source(root, LabelMap())
    assert src.format == "isic2020"
    assert _by_id(src)["ISIC_0052212"]["lesion_id"] == "IL_0000002"
    # v1 beside v2 (both as published): every image is still read once, from v2.
    write(root / "ISIC_2020_Training_GroundTruth.csv", (
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
        "benign_malignant,target\n"
        "ISIC_0015719,IP_3075186,female,45.0,upper extremity,unknown,benign,0\n"))
    both = read_source(root, LabelMap())
    assert len(both.rows) == 2 and not both.rejected
    assert _by_id(both)["ISIC_0015719"]["lesion_id"] == "IL_0000001"
    assert any("read once" in w for w in both.warnings)


def test_isic2020_csv_file_given_directly(tmp_path: Path) -> None:
    root = make_isic2020(tmp_path / "isic2020")
    src = read_source(root / "ISIC_2020_Training_GroundTruth.csv", LabelMap())
    assert src.format == "isic2020" and len(src.rows) == 10


def test_ham10000(tmp_path: Path) -> None:
    src = read_source(make_ham10000(tmp_path / "ham"), LabelMap())
    assert src.format == "ham10000"
    rows = _by_id(src)
    assert rows["ISIC_0027419"]["lesion_id"] == "HAM_0000118"
    assert rows["ISIC_0027419"]["diagnosis"] == "benign keratosis"
    assert rows["ISIC_0031633"]["label"] == 1 and rows["ISIC_0031633"]["diagnosis"] == "melanoma"
    assert rows["ISIC_0025276"]["label"] == 1  # bcc
    assert rows["ISIC_0032000"]["sex"] == "" and math.isnan(rows["ISIC_0032000"]["age"])
    assert "ISIC_0025837" in _reasons(src)  # akiec excluded by default
    assert {r["original_path"].split("/")[0] for r in src.rows} == {
        "HAM10000_images_part_1", "HAM10000_images_part_2"}


def test_ham10000_akiec_kept_when_mapped(tmp_path: Path) -> None:
    src = read_source(make_ham10000(tmp_path / "ham"), LabelMap({"akiec": 0}))
    assert _by_id(src)["ISIC_0025837"]["label"] == 0
    assert not src.rejected


def test_isic2017_keeps_official_splits(tmp_path: Path) -> None:
    src = read_source(make_isic2017(tmp_path / "isic2017"), LabelMap())
    assert src.format == "isic2017"
    rows = _by_id(src)
    assert (rows["ISIC_0000000"]["label"], rows["ISIC_0000000"]["diagnosis"]) == (0, "nevus")
    assert (rows["ISIC_0000002"]["label"], rows["ISIC_0000002"]["diagnosis"]) == (1, "melanoma")
    assert rows["ISIC_0000003"]["diagnosis"] == "seborrheic keratosis"
    assert {rows[i]["split"] for i in ("ISIC_0000000", "ISIC_0000002")} == {"train"}
    assert rows["ISIC_0001769"]["split"] == "val" and rows["ISIC_0012086"]["split"] == "test"
    assert "at most one class" in _reasons(src)["ISIC_0000004"]
    assert not any("superpixels" in str(r["file"]) for r in src.rows)
    assert rows["ISIC_0000000"]["source"] == "ISIC2017"


def test_isic2016_headerless(tmp_path: Path) -> None:
    src = read_source(make_isic2016(tmp_path / "isic2016"), LabelMap())
    assert src.format == "isic2017"
    rows = _by_id(src)
    assert rows["ISIC_0000002"]["label"] == 1 and rows["ISIC_0000000"]["label"] == 0
    assert rows["ISIC_0000012"]["label"] == 1 and rows["ISIC_0000003"]["label"] == 0
    # Training + test but no validation: training rows may go to train or val, not test.
    assert rows["ISIC_0000000"]["split"] == "trainval"
    assert rows["ISIC_0000003"]["split"] == "test"
    assert rows["ISIC_0000000"]["source"] == "ISIC2016"


def test_isic2019_with_metadata(tmp_path: Path) -> None:
    src = read_source(make_isic2019(tmp_path / "isic2019"), LabelMap())
    assert src.format == "isic2019"
    rows = _by_id(src)
    assert rows["ISIC_0000000"]["label"] == 0 and rows["ISIC_0000000"]["site"] == "torso"
    assert rows["ISIC_0024331"]["label"] == 1 and rows["ISIC_0024331"]["lesion_id"] == "BCN_0000019"
    assert rows["ISIC_0024332"]["diagnosis"] == "squamous cell carcinoma"
    assert rows["ISIC_0000013_downsampled"]["diagnosis"] == "benign keratosis"
    reasons = _reasons(src)
    assert "excluded" in reasons["ISIC_0024329"]  # AK
    assert "exactly one class" in reasons["ISIC_0000019"]
    assert all(r["split"] == "" for r in src.rows)  # no official test: splits computed


def test_archive(tmp_path: Path) -> None:
    src = read_source(make_archive(tmp_path / "archive"), LabelMap())
    assert src.format == "archive"
    rows = _by_id(src)
    assert (rows["ISIC_0000000"]["label"], rows["ISIC_0000000"]["diagnosis"]) == (0, "nevus")
    assert rows["ISIC_0000002"]["label"] == 1
    assert rows["ISIC_0000002"]["diagnosis"] == "melanoma"
    assert rows["ISIC_0000002"]["patient_id"] == "IP_0000001"
    assert rows["ISIC_0010001"]["diagnosis"] == "benign"
    reasons = _reasons(src)
    assert "excluded diagnosis 'indeterminate'" in reasons["ISIC_0010000"]
    assert "contradicts" in reasons["ISIC_0010002"]  # Benign but basal cell carcinoma
    mapped = read_source(tmp_path / "archive", LabelMap({"indeterminate": 1}))
    assert _by_id(mapped)["ISIC_0010000"]["label"] == 1


def test_udacity_folders_keep_split(tmp_path: Path) -> None:
    src = read_source(make_udacity(tmp_path / "data"), LabelMap())
    assert src.format == "folders"
    assert len(src.rows) == 18 and not src.rejected
    splits = {r["split"] for r in src.rows}
    assert splits == {"train", "val", "test"}
    by_dx = {(r["diagnosis"], r["label"]) for r in src.rows}
    assert by_dx == {("melanoma", 1), ("nevus", 0), ("seborrheic keratosis", 0)}


def test_folders_with_user_label_map(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for cls in ("Benign Moles", "Cancer"):
        img(root / cls / "a.jpg")
        img(root / cls / "nested" / "b.png", fmt="PNG")
    write(root / "Cancer" / "notes.txt", "not an image\n")
    (root / "Cancer" / ".DS_Store").write_bytes(b"\0\0")
    img(root / "stray.jpg")
    src = read_source(root, LabelMap({"benign moles": 0, "cancer": 1}))
    ids = _by_id(src)
    # Same stems in two folders: the relative path makes the ids unique.
    assert set(ids) == {"Benign Moles__a", "Benign Moles__nested__b", "Cancer__a",
                        "Cancer__nested__b", "notes"}
    assert ids["Cancer__a"]["label"] == 1 and ids["Benign Moles__a"]["label"] == 0
    assert all(r["split"] == "" for r in src.rows)
    assert "not inside a class folder" in _reasons(src)["stray"]
    unmapped = read_source(root, LabelMap())
    assert all("unknown label" in r["reason"] for r in unmapped.rejected
               if r["image_id"] != "stray")


def test_folders_numeric_class_names(tmp_path: Path) -> None:
    root = tmp_path / "binary"
    img(root / "0" / "x.jpg")
    img(root / "1" / "y.jpg")
    rows = _by_id(read_source(root, LabelMap()))
    assert rows["x"]["label"] == 0 and rows["y"]["label"] == 1


# === Generic CSV ===


def test_generic_csv_isic_dev_shape(tmp_path: Path) -> None:
    root = tmp_path / "isic-dev"
    img(root / "images" / "ISIC_0000000.jpg")
    img(root / "images" / "ISIC_0024306.jpg")
    img(root / "fullsize" / "ISIC_0000090.jpg")
    write(root / "labels.csv", (
        "image_id,filename,label,diagnosis,source,patient_id\n"
        "ISIC_0000000,images/ISIC_0000000.jpg,0,nevus,epostIt/MachineLearning@8150a59:ISIC2017-train,\n"
        "ISIC_0024306,images/ISIC_0024306.jpg,0,nevus,congtran19/XLA@a8ba08a:HAM10000,\n"
        "ISIC_0000090,fullsize/ISIC_0000090.jpg,1,melanoma,epostIt/MachineLearning@8150a59:ISIC2017-train,\n"
    ))
    src = read_source(root / "labels.csv", LabelMap())
    assert src.format == "csv"
    rows = _by_id(src)
    assert rows["ISIC_0000000"]["source"] == "ISIC2017-train"
    assert rows["ISIC_0024306"]["source"] == "HAM10000"
    assert rows["ISIC_0024306"]["source_full"] == "congtran19/XLA@a8ba08a:HAM10000"
    assert rows["ISIC_0000090"]["original_path"] == "fullsize/ISIC_0000090.jpg"
    assert rows["ISIC_0000000"]["patient_id"] == ""


def test_generic_csv_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    img(root / "a.jpg")
    img(root / "b.jpg")
    img(tmp_path / "outside.jpg")
    write(root / "labels.csv", (
        "path,label,split\n"
        "a.jpg,1,train\n"
        "../outside.jpg,0,\n"
        "../../etc/passwd,0,\n"
        "/etc/hostname,0,\n"
        "missing.jpg,0,\n"
        "b.jpg,maybe,\n"
        "b.jpg,0,holdout-2\n"
    ))
    src = read_source(root, LabelMap())
    assert [r["image_id"] for r in src.rows] == ["a"]
    assert src.rows[0]["split"] == "train"
    reasons = [r["reason"] for r in src.rejected]
    assert sum("escapes the source folder" in r for r in reasons) == 3
    assert any(r == "file not found" for r in reasons)
    assert any("unknown label 'maybe'" in r for r in reasons)
    assert any("unknown split value" in r for r in reasons)


def test_csv_with_bom_semicolons_and_blank_lines(tmp_path: Path) -> None:
    root = tmp_path / "excel"
    img(root / "img" / "one.jpg")
    img(root / "img" / "two.jpg")
    text = "\ufeffFile Name;Diagnosis\r\n\r\nimg/one.jpg;Melanoma\r\n\r\nimg/two.jpg; nevus \r\n\r\n"
    write(root / "export.csv", text)
    src = read_source(root / "export.csv", LabelMap())
    rows = _by_id(src)
    assert rows["one"]["label"] == 1 and rows["two"]["label"] == 0
    assert rows["two"]["diagnosis"] == "nevus"


def test_csv_by_image_id_only(tmp_path: Path) -> None:
    root = tmp_path / "ids"
    img(root / "pics" / "ISIC_1.jpg")
    write(root / "labels.csv", "isic_id,target\nISIC_1,1\nISIC_2,0\n")
    src = read_source(root / "labels.csv", LabelMap())
    assert _by_id(src)["ISIC_1"]["label"] == 1
    assert "not found" in _reasons(src)["ISIC_2"]


def test_csv_missing_columns_names_file_and_columns(tmp_path: Path) -> None:
    bad = write(tmp_path / "x" / "table.csv", "name,score\nfoo,1\n")
    with pytest.raises(SourceError, match=r"table\.csv: no known layout.*\['name', 'score'\]"):
        read_source(bad, LabelMap())
    with pytest.raises(SourceError, match=r"table\.csv: needs a path or filename column.*"
                                          r"columns found: \['name', 'score'\]"):
        read_source(bad, LabelMap(), fmt="csv")
    with pytest.raises(SourceError, match=r"missing required column\(s\) \['image_name', 'target'\]"):
        read_source(bad, LabelMap(), fmt="isic2020")
    for fmt in ("ham10000", "isic2017", "isic2019", "archive"):
        with pytest.raises(SourceError, match=r"table\.csv: .*columns found: \['name', 'score'\]"):
            read_source(bad, LabelMap(), fmt=fmt)


def test_csv_not_utf8_and_empty(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    latin = tmp_path / "a" / "l.csv"
    latin.write_bytes("path,label\ncaf\xe9.jpg,1\n".encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8"):
        read_table(latin)
    empty = write(tmp_path / "a" / "e.csv", "\n\n")
    with pytest.raises(SourceError, match="empty table"):
        read_table(empty)


def test_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        detect_format(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no class folders"):
        read_source(tmp_path / "empty", LabelMap())
    both = tmp_path / "both"
    make_ham10000(both)
    write(both / "ISIC_2019_Training_GroundTruth.csv", "image,MEL,NV,BCC,AK\nISIC_1,1,0,0,0\n")
    with pytest.raises(SourceError, match="several layouts"):
        detect_format(both)
    with pytest.raises(SourceError, match="unknown format"):
        detect_format(both, "nope")
    layout, _, tables = detect_format(both, "ham10000")
    assert layout.name == "ham10000" and [t.name for t in tables] == ["HAM10000_metadata.csv"]


def test_forced_folders_ignores_tables(tmp_path: Path) -> None:
    root = make_udacity(tmp_path / "data")
    write(root / "labels.csv", "path,label\ntrain/melanoma/ISIC_0000000.jpg,1\n")
    assert detect_format(root)[0].name == "csv"
    assert detect_format(root, "folders")[0].name == "folders"
