"""Clinical metadata through ``prepare``: every layout's columns, folder metadata tables,
``--metadata`` sidecars (with bad values), precedence, coverage, grouped splits, and the
real isic-dev folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import app
from skinlesion.data.labels import LabelMap
from skinlesion.data.layouts.base import SourceError
from skinlesion.data.layouts.detect import detect_format, read_source
from skinlesion.data.manifest import read_manifest
from skinlesion.data.metadata import (
    HAM_LOCALIZATION,
    SEX_VALUES,
    SITE_VALUES,
    MetadataValueError,
    normalize_age,
    normalize_metadata,
    normalize_sex,
    normalize_site,
)
from skinlesion.data.metadata_tables import read_metadata_table
from skinlesion.data.prepare import PrepareSettings, prepare
from test_data_formats import (
    img,
    make_archive,
    make_ham10000,
    make_isic2017,
    make_isic2019,
    make_isic2020,
    write,
)

FAST = PrepareSettings(size=16, workers=1)


def _rows(src) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {str(r["image_id"]): r for r in src.rows}


def _issues(report: dict) -> set[tuple[str, str, str]]:
    return {(i["image_id"], i["field"], i["value"]) for i in report["metadata_issues"]}


# === Vocabulary ===


def test_normalisers_accept_the_vocabulary_and_refuse_the_rest() -> None:
    assert normalize_age("0") == 0.0 and normalize_age(" 45.0 ") == 45.0
    assert math.isnan(normalize_age("")) and math.isnan(normalize_age("unknown"))
    for bad in ("250", "-5", "fifty", "inf"):
        with pytest.raises(MetadataValueError):
            normalize_age(bad)
    assert normalize_sex("M") == "male" and normalize_sex("Female") == "female"
    assert normalize_sex("unknown") == ""
    with pytest.raises(MetadataValueError, match="sex 'x'"):
        normalize_sex("x")
    for site in SITE_VALUES:
        assert normalize_site(site) == site
    assert normalize_site("Anterior Torso") == "torso" and normalize_site("lateral_torso") == "torso"
    with pytest.raises(MetadataValueError, match="anatomic site 'elbow pit'"):
        normalize_site("elbow pit")
    assert set(SEX_VALUES) == {"female", "male"}


def test_ham_localization_mapping_is_the_documented_table() -> None:
    for localization, site in HAM_LOCALIZATION.items():
        assert normalize_site(localization) == site, localization
    assert set(HAM_LOCALIZATION.values()) - {""} <= set(SITE_VALUES)
    # Every HAM10000 localization value appears in the table.
    assert set(HAM_LOCALIZATION) == {
        "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
        "lower extremity", "neck", "scalp", "trunk", "unknown", "upper extremity"}
    documented = (Path(__file__).resolve().parents[1] / "docs" / "DATA.md").read_text()
    for localization, site in HAM_LOCALIZATION.items():
        assert f"| `{localization}` | {f'`{site}`' if site else '(empty)'} |" in documented


def test_normalize_metadata_turns_bad_values_into_missing() -> None:
    values, problems = normalize_metadata({"age": "250", "sex": "x", "site": "moon",
                                           "lesion_id": " unknown ", "patient_id": "IP_1"})
    assert math.isnan(values["age"]) and values["sex"] == "" and values["site"] == ""
    assert values["lesion_id"] == "" and values["patient_id"] == "IP_1"
    assert {(p["field"], p["value"]) for p in problems} == {("age", "250"), ("sex", "x"),
                                                            ("site", "moon")}


# === Each layout's metadata ===


def test_isic2020_metadata(tmp_path: Path) -> None:
    rows = _rows(read_source(make_isic2020(tmp_path / "isic2020"), LabelMap()))
    r = rows["ISIC_0207268"]
    assert (r["age"], r["sex"], r["site"], r["patient_id"]) == (55.0, "male", "torso", "IP_7279968")
    assert rows["ISIC_2637011"]["site"] == "head/neck"


def test_ham10000_metadata_and_bad_values(tmp_path: Path) -> None:
    root = make_ham10000(tmp_path / "ham")
    table = root / "HAM10000_metadata.csv"
    table.write_text(table.read_text().replace("HAM_0002730,ISIC_0026769,bkl,histo,80.0,male,scalp",
                                               "HAM_0002730,ISIC_0026769,bkl,histo,250,x,elbow"))
    src = read_source(root, LabelMap())
    rows = _rows(src)
    assert (rows["ISIC_0031633"]["age"], rows["ISIC_0031633"]["site"]) == (75.0, "head/neck")  # ear
    assert rows["ISIC_0029176"]["site"] == "torso"                                             # back
    assert rows["ISIC_0025276"]["site"] == "torso"                                             # trunk
    assert rows["ISIC_0029396"]["site"] == "lower extremity"
    assert rows["ISIC_0032000"]["site"] == "" and rows["ISIC_0032000"]["sex"] == ""            # unknown
    assert rows["ISIC_0027419"]["lesion_id"] == "HAM_0000118"
    bad = rows["ISIC_0026769"]  # kept, with its bad values missing
    assert math.isnan(bad["age"]) and bad["sex"] == "" and bad["site"] == ""
    assert {(i["image_id"], i["field"], i["value"]) for i in src.metadata_issues} == {
        ("ISIC_0026769", "age", "250"), ("ISIC_0026769", "sex", "x"),
        ("ISIC_0026769", "site", "elbow")}


def test_isic2019_metadata(tmp_path: Path) -> None:
    rows = _rows(read_source(make_isic2019(tmp_path / "isic2019"), LabelMap()))
    r = rows["ISIC_0024331"]
    assert (r["age"], r["sex"], r["site"], r["lesion_id"]) == (
        50.0, "male", "lower extremity", "BCN_0000019")
    assert rows["ISIC_0000000"]["site"] == "torso"  # anterior torso
    assert math.isnan(rows["ISIC_0000001"]["age"])  # not in the metadata table


def test_archive_metadata(tmp_path: Path) -> None:
    rows = _rows(read_source(make_archive(tmp_path / "archive"), LabelMap()))
    r = rows["ISIC_0000002"]
    assert (r["age"], r["sex"], r["site"], r["patient_id"], r["lesion_id"]) == (
        60.0, "female", "upper extremity", "IP_0000001", "IL_0000002")
    assert rows["ISIC_0010001"]["site"] == "torso"  # back


def test_generic_csv_metadata_columns(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for name in ("a", "b", "c"):
        img(root / f"{name}.jpg")
    write(root / "table.csv", "path,label,age_approx,gender,localization,patient,lesion\n"
                              "a.jpg,1,0,F,face,P1,L1\n"
                              "b.jpg,0,,m,acral,P1,\n"
                              "c.jpg,0,old,female,moon,,\n")
    src = read_source(root / "table.csv", LabelMap())
    rows = _rows(src)
    assert (rows["a"]["age"], rows["a"]["sex"], rows["a"]["site"]) == (0.0, "female", "head/neck")
    assert (rows["a"]["patient_id"], rows["a"]["lesion_id"]) == ("P1", "L1")
    assert rows["b"]["site"] == "palms/soles" and math.isnan(rows["b"]["age"])
    assert {(i["field"], i["value"]) for i in src.metadata_issues} == {("age", "old"),
                                                                        ("site", "moon")}


def test_isic2017_metadata_tables_beside_the_ground_truth(tmp_path: Path) -> None:
    root = make_isic2017(tmp_path / "isic2017")
    write(root / "ISIC-2017_Training_Data_metadata.csv",
          "image_id,age_approximate,sex\nISIC_0000000,55,female\nISIC_0000001,unknown,unknown\n"
          "ISIC_0000002,60,female\n")
    write(root / "ISIC-2017_Validation_Data_metadata.csv",
          "image_id,age_approximate,sex\nISIC_0001769,35,male\n")
    src = read_source(root, LabelMap())
    assert [p.name for p in src.metadata_tables] == ["ISIC-2017_Training_Data_metadata.csv",
                                                     "ISIC-2017_Validation_Data_metadata.csv"]
    result = prepare([root], tmp_path / "out", FAST)
    df = read_manifest(tmp_path / "out").set_index("image_id")
    assert (df.loc["ISIC_0000000", "age"], df.loc["ISIC_0000000", "sex"]) == (55.0, "female")
    assert df.loc["ISIC_0001769", "sex"] == "male"
    assert math.isnan(df.loc["ISIC_0000001", "age"]) and df.loc["ISIC_0000001", "sex"] == ""
    assert result.report["metadata_coverage"]["overall"]["sex"] == 3
    assert result.report["metadata_issues"] == []


# === Sidecar ===


def _folders(root: Path, n: int = 12) -> list[str]:
    """Class folders with ``n`` images, ids img00…; returns the ids."""
    ids = [f"img{i:02d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        img(root / ("malignant" if i % 3 == 0 else "benign") / f"{image_id}.jpg")
    return ids


def test_sidecar_with_bad_values_missing_and_extra_ids(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    ids = _folders(root)
    sidecar = write(tmp_path / "clinical.csv", (
        "image_id,age_approx,sex,anatom_site_general,lesion_id,patient_id,metadata_source\n"
        "img00,55,female,anterior torso,L0,P0,a\n"
        "img01,250,male,head/neck,,P0,a\n"         # age out of range
        "img02,fifty,x,upper extremity,,,a\n"      # non-numeric age, bad sex
        "img03,0,M,elbow pit,,,a\n"                # age 0 is real; unknown site
        "img04.jpg,40,F,palms/soles,,,a\n"         # id given with its file extension
        "img05,,,,,,a\n"                           # a row with nothing known
        "img05,70,male,torso,,,a\n"                # duplicate id: the first row is used
        "ghost1,30,male,torso,,,a\n"               # not in the data
        "ghost2,30,male,torso,,,a\n"))
    result = prepare([root], tmp_path / "out", FAST, metadata=sidecar)
    df = read_manifest(tmp_path / "out").set_index("image_id")
    assert sorted(df.index) == ids  # never a dropped image
    assert (df.loc["img00", "age"], df.loc["img00", "sex"], df.loc["img00", "site"]) == (
        55.0, "female", "torso")
    assert (df.loc["img00", "lesion_id"], df.loc["img00", "patient_id"]) == ("L0", "P0")
    assert math.isnan(df.loc["img01", "age"]) and df.loc["img01", "sex"] == "male"
    assert math.isnan(df.loc["img02", "age"]) and df.loc["img02", "sex"] == ""
    assert df.loc["img02", "site"] == "upper extremity"
    assert df.loc["img03", "age"] == 0.0 and df.loc["img03", "site"] == ""
    assert (df.loc["img04", "age"], df.loc["img04", "sex"]) == (40.0, "female")
    assert math.isnan(df.loc["img05", "age"]) and df.loc["img05", "site"] == ""
    assert df.loc[ids[6:], "sex"].eq("").all()

    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert _issues(report) == {("img01", "age", "250"), ("img02", "age", "fifty"),
                               ("img02", "sex", "x"), ("img03", "site", "elbow pit")}
    assert all(i["reason"] and i["source"] == str(sidecar) for i in report["metadata_issues"])
    assert report["counts"]["metadata_issues"] == 4
    table = report["metadata_tables"][0]
    assert table["applies_to"] == "all sources" and table["rows"] == 9
    assert (table["matched"], table["images_without_row"]) == (6, 6)
    assert (table["ids_not_in_data"], table["ids_not_in_data_examples"]) == (2, ["ghost1", "ghost2"])
    assert (table["duplicate_ids"], table["duplicate_id_examples"]) == (1, ["img05"])
    assert table["filled"] == {"age": 3, "sex": 4, "site": 4, "patient_id": 2, "lesion_id": 1}
    cov = report["metadata_coverage"]["overall"]
    assert cov == {"images": 12, "age": 3, "sex": 4, "site": 4, "patient_id": 2, "lesion_id": 1,
                   "complete_age_sex_site": 2, "none_age_sex_site": 7}
    assert report["metadata_coverage"]["per_source"] == {"photos": cov}
    assert sum(s["images"] for s in report["metadata_coverage"]["per_split"].values()) == 12
    site = report["metadata_missingness"]["site"]
    assert site["known"]["images"] == 4 and site["missing"]["images"] == 8
    assert report["settings"]["metadata"] == [str(sidecar)]
    assert "site 4" in result.metadata_summary and "4 metadata issues" in result.metadata_summary


def test_precedence_layout_wins_sidecar_fills_and_conflicts_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for name in ("a", "b", "c"):
        img(root / f"{name}.jpg")
    write(root / "table.csv", "path,label,age,sex,site\n"
                              "a.jpg,1,60,male,torso\n"
                              "b.jpg,0,250,,\n"          # invalid age: the sidecar may fill it
                              "c.jpg,0,,,\n")
    sidecar = write(tmp_path / "side.csv", "image_id,age,sex,site\n"
                                           "a,65,male,head/neck\n"
                                           "b,30,female,\n"
                                           "c,20,,lower extremity\n")
    result = prepare([root / "table.csv"], tmp_path / "out", FAST, metadata=[sidecar])
    df = result.manifest.set_index("image_id")
    assert (df.loc["a", "age"], df.loc["a", "site"]) == (60.0, "torso")        # layout wins
    assert (df.loc["b", "age"], df.loc["b", "sex"]) == (30.0, "female")        # filled
    assert (df.loc["c", "age"], df.loc["c", "site"]) == (20.0, "lower extremity")
    conflicts = {(c["image_id"], c["field"], c["kept"], c["ignored"])
                 for c in result.report["metadata_conflicts"]}
    assert conflicts == {("a", "age", "60", "65"), ("a", "site", "torso", "head/neck")}
    assert _issues(result.report) == {("b", "age", "250")}
    assert result.report["metadata_issues"][0]["source"] == str(root / "table.csv")


def test_sidecar_errors_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _folders(root, 3)
    no_id = write(tmp_path / "no_id.csv", "name,age\nimg00,40\n")
    no_meta = write(tmp_path / "no_meta.csv", "image_id,colour\nimg00,red\n")
    with pytest.raises(SourceError, match=r"no_id\.csv: a metadata table needs an image id"):
        read_metadata_table(no_id)
    with pytest.raises(SourceError, match=r"no_meta\.csv: no metadata column"):
        read_metadata_table(no_meta)
    with pytest.raises(SourceError, match=r"missing\.csv: metadata table not found"):
        prepare([root], tmp_path / "out", FAST, metadata=tmp_path / "missing.csv")
    assert not (tmp_path / "out" / "manifest.csv").exists()
    res = CliRunner().invoke(app, ["prepare", str(root), "--out", str(tmp_path / "o2"),
                                   "--size", "16", "-j", "1", "--metadata", str(no_meta)])
    assert res.exit_code == 2 and "no metadata column" in " ".join(res.output.split())


def test_sidecar_lesions_and_patients_never_straddle_splits(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    ids = _folders(root, 60)
    lines = []
    for i, image_id in enumerate(ids):
        # 15 lesions of 4 images; a patient id on two lesions in each block of five.
        patient = f"P{i // 20}" if i % 20 < 8 else ""
        lines.append(f"{image_id},L{i // 4},{patient}")
    np.random.default_rng(0).shuffle(lines)
    sidecar = write(tmp_path / "ids.csv", "image_id,lesion_id,patient_id\n" + "\n".join(lines) + "\n")
    prepare([root], tmp_path / "out", FAST, metadata=sidecar)
    df = read_manifest(tmp_path / "out")
    assert set(df["split"]) == {"train", "val", "test"}
    for col in ("lesion_id", "patient_id"):
        known = df[df[col] != ""]
        assert known.groupby(col)["split"].nunique().max() == 1, col


# === Folder layout: labels.csv + metadata.csv (+ provenance.csv) ===


def _isic_dev_like(root: Path) -> Path:
    for name in ("ISIC_0000000", "ISIC_0000001", "ISIC_0024306"):
        img(root / "images" / f"{name}.jpg")
    write(root / "labels.csv", "image_id,filename,label,diagnosis,source,patient_id\n"
          "ISIC_0000000,images/ISIC_0000000.jpg,0,nevus,o@1:ISIC2017-train,\n"
          "ISIC_0000001,images/ISIC_0000001.jpg,1,melanoma,o@1:ISIC2017-train,\n"
          "ISIC_0024306,images/ISIC_0024306.jpg,0,nevus,o@1:HAM10000,\n")
    write(root / "metadata.csv", "image_id,age_approx,sex,anatom_site_general,lesion_id,"
          "metadata_source\nISIC_0000000,55,female,anterior torso,,x\n"
          "ISIC_0000001,,,,,x\nISIC_0024306,45,male,,HAM_0000550,x\n")
    write(root / "provenance.csv", "set,image_id,filename,label,diagnosis,source\n"
          "dev,ISIC_0000000,images/ISIC_0000000.jpg,0,nevus,o@1:ISIC2017-train\n")
    return root


def test_folder_with_labels_metadata_and_provenance(tmp_path: Path) -> None:
    root = _isic_dev_like(tmp_path / "isic-dev")
    layout, _, tables = detect_format(root)
    assert layout.name == "csv" and [t.name for t in tables] == ["labels.csv"]
    res = CliRunner().invoke(app, ["prepare", str(root), "--out", str(tmp_path / "out"),
                                   "--size", "16", "-j", "1"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "metadata known for age 2 · sex 2 · site 1" in text and "of 3 images" in text
    df = read_manifest(tmp_path / "out").set_index("image_id")
    assert (df.loc["ISIC_0000000", "site"], df.loc["ISIC_0024306", "lesion_id"]) == (
        "torso", "HAM_0000550")
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["sources"][0]["tables"] == ["labels.csv"]
    assert [t["path"] for t in report["metadata_tables"]] == [str(root / "metadata.csv")]
    assert any(w.startswith("provenance.csv: not read") for w in report["warnings"])
    # The same file given as a sidecar is joined once, with the same result.
    again = prepare([root], tmp_path / "out2", FAST, metadata=root / "metadata.csv")
    assert [t["applies_to"] for t in again.report["metadata_tables"]] == ["all sources"]
    assert again.report["metadata_coverage"] == report["metadata_coverage"]


def test_ambiguous_folder_still_asks_for_one_table(tmp_path: Path) -> None:
    root = tmp_path / "two"
    img(root / "a.jpg")
    write(root / "first.csv", "path,label\na.jpg,0\n")
    write(root / "second.csv", "path,label\na.jpg,1\n")
    with pytest.raises(SourceError, match=r"several label tables found \['first\.csv', "
                                          r"'second\.csv'\] and none is named labels\.csv; "
                                          r"pass the label table itself"):
        detect_format(root)


# === Real images ===


@pytest.mark.integration
def test_isic_dev_folder_metadata_coverage_and_grouped_splits(isic_dev: Path,
                                                              tmp_path: Path) -> None:
    """The isic-dev folder as given: labels.csv read, metadata.csv joined, provenance.csv
    ignored; coverage equals the data card's table (README, Metadata → Coverage)."""
    out = tmp_path / "isic-dev"
    result = prepare([isic_dev], out, PrepareSettings(size=64, seed=1),
                     metadata=isic_dev / "metadata.csv")
    report = result.report
    assert report["counts"]["kept"] == 2587 and report["counts"]["rejected"] == 0
    assert report["metadata_issues"] == [] and report["metadata_conflicts"] == []
    cov = report["metadata_coverage"]
    assert cov["overall"] == {"images": 2587, "age": 2249, "sex": 2265, "site": 1987,
                              "patient_id": 0, "lesion_id": 1400,
                              "complete_age_sex_site": 1899, "none_age_sex_site": 249}
    card = {  # source: images, age, sex, site, lesion_id, none of age/sex/site
        "HAM10000": (1068, 1068, 1068, 960, 1068, 0),
        "ISIC2017-train": (999, 768, 787, 742, 280, 144),
        "ISIC2018-Task3-test": (260, 201, 198, 166, 0, 59),
        "ISIC2017-val": (144, 143, 143, 81, 52, 0),
        "ISIC-archive": (71, 31, 31, 0, 0, 40),
        "ISIC2016": (45, 38, 38, 38, 0, 6),
    }
    got = {s: (c["images"], c["age"], c["sex"], c["site"], c["lesion_id"], c["none_age_sex_site"])
           for s, c in cov["per_source"].items()}
    assert got == card
    site = report["metadata_missingness"]["site"]
    assert site["missing"]["malignant_fraction"] == pytest.approx(0.225, abs=5e-4)
    assert site["known"]["malignant_fraction"] == pytest.approx(0.461, abs=5e-4)

    df = read_manifest(out)
    assert set(df["sex"]) == {"", "female", "male"} and set(df["site"]) - {""} <= set(SITE_VALUES)
    assert (df["age"] == 0).sum() == 6  # 0 is a real bin, not missing
    lesions = df[df["lesion_id"] != ""]
    assert (lesions.groupby("lesion_id").size() > 1).sum() == 7  # the card's MSK-4 lesions
    assert lesions.groupby("lesion_id")["split"].nunique().max() == 1
    assert not (df["patient_id"] != "").any()
    together = df.set_index("image_id").loc[["ISIC_0012756", "ISIC_0013874", "ISIC_0014289"]]
    assert together["split"].nunique() == 1

    # The folder alone (no --metadata) joins metadata.csv itself: same manifest.
    res = CliRunner().invoke(app, ["prepare", str(isic_dev), "--out", str(out), "--size", "64",
                                   "--seed", "1", "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["manifest_sha256"] == report["manifest_sha256"]
    assert again["metadata_coverage"] == cov
    pd.testing.assert_frame_equal(read_manifest(out), df)
