"""The bad-input corpus through ``skinlesion prepare`` (Typer's CliRunner): every row of the
table in docs/RELIABILITY.md, ``prepare`` column; and the table itself against the corpus."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from reliability.corpus import (
    ACCEPTED,
    CASES,
    NA,
    REFUSED,
    REJECTED,
    TABLE_END,
    TABLE_START,
    Built,
    Case,
    build_all,
    case,
    cases,
    documented_table,
    heif_installed,
    real_photos,
    render_table,
    run_unprivileged,
    running_as_root,
    shared_table,
    world_dir,
)
from skinlesion.cli.main import app
from skinlesion.data.manifest import read_manifest

pytestmark = pytest.mark.integration

# As root, chmod 000 does not stop a read: that case runs in an unprivileged child instead.
_IN_PROCESS = [c for c in cases(entry="prepare") if c.group != "table"
               and not (c.unprivileged and running_as_root())]


def _flat(text: str) -> str:
    """Rich wraps long messages at the console width; compare with single spaces."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def corpus(isic_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Built]]:
    folder = tmp_path_factory.mktemp("corpus prepare ü")  # the corpus folder itself has a space
    return folder, build_all(folder, real_photos(isic_dev))


@pytest.fixture(scope="module")
def prepared(corpus: tuple[Path, dict[str, Built]]) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    """One ``prepare`` run over one table naming every file and path case."""
    folder, built = corpus
    table = shared_table(folder, built, [c.name for c in _IN_PROCESS])
    out = folder.parent / "prepared"
    res = CliRunner().invoke(app, ["prepare", str(table), "--out", str(out), "--size", "64",
                                   "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output  # bad files never stop the run
    report = json.loads(res.stdout)
    return out, report, read_manifest(out)


# === Files and paths: one run, one row per case ===

@pytest.mark.parametrize("c", _IN_PROCESS, ids=lambda c: c.name)
def test_prepare_case(c: Case, prepared: tuple[Path, dict[str, Any], pd.DataFrame]) -> None:
    if c.name == "heic" and heif_installed():
        pytest.skip("pillow-heif is installed; the table documents the default install")
    out, report, manifest = prepared
    reasons = {r["image_id"]: r["reason"] for r in report["rejected"]}
    row = manifest[manifest["image_id"] == c.name]
    if c.prepare.status == REJECTED:
        assert row.empty, f"{c.name} should have been left out"
        assert c.prepare.message in reasons.get(c.name, ""), reasons.get(c.name)
        return
    assert c.prepare.status == ACCEPTED
    assert c.name not in reasons, reasons.get(c.name)
    assert len(row) == 1
    r = row.iloc[0]
    with Image.open(out / r["path"]) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert im.size == (r["width"], r["height"])
        arr = np.asarray(im)
    if c.name == "one_pixel":
        assert arr.shape[:2] == (1, 1)
    elif c.name == "aspect_strip":
        assert arr.shape[:2] == (40, 400)  # shorter side already under --size: kept
    elif c.name == "exif_rotated":
        assert arr.shape[0] > arr.shape[1]  # stored landscape, shown portrait
    else:
        assert min(arr.shape[:2]) == 64 or max(arr.shape[:2]) < 64
    if c.name.startswith("path_"):
        # Spaces and non-ASCII never reach the output file name.
        assert r["path"].isascii() and " " not in r["path"], r["path"]
    if c.check is not None:
        c.check(arr)


def test_prepare_counts_every_case(prepared: tuple[Path, dict[str, Any], pd.DataFrame]) -> None:
    _, report, manifest = prepared
    accepted = {c.name for c in _IN_PROCESS if c.prepare.status == ACCEPTED}
    rejected = {c.name for c in _IN_PROCESS if c.prepare.status == REJECTED}
    assert set(manifest["image_id"]) == accepted
    assert {r["image_id"] for r in report["rejected"]} == rejected
    assert report["counts"]["kept"] == len(accepted)
    assert report["counts"]["rejected"] == len(rejected)


def test_unreadable_file_as_an_unprivileged_user(isic_dev: Path) -> None:
    """chmod 000 for real: as root, ``prepare`` runs in a child that has dropped to nobody."""
    c = case("unreadable")
    folder = world_dir("skinlesion-unreadable-")
    try:
        photo = real_photos(isic_dev)
        built = {c.name: c.build(folder, photo), "control_photo": case("control_photo").build(folder, photo)}
        table = shared_table(folder, built, ["control_photo", c.name])
        out = folder / "prepared"

        def child() -> dict[str, Any]:
            from skinlesion.data.prepare import PrepareSettings, prepare

            denied = not os.access(built[c.name].path, os.R_OK)  # type: ignore[arg-type]
            result = prepare([table], out, PrepareSettings(size=32, workers=1))
            return {"denied": denied, "rejected": result.report["rejected"],
                    "kept": result.report["counts"]["kept"]}

        got = run_unprivileged(child)
        assert "value" in got, got
        assert not running_as_root() or got["uid"] != 0
        value = got["value"]
        assert value["denied"] is True  # the OS refuses the read: nothing simulated
        assert value["kept"] == 1
        reasons = {r["image_id"]: r["reason"] for r in value["rejected"]}
        assert c.prepare.status == REJECTED and reasons[c.name] == c.prepare.message
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# === Label tables: one run each ===

@pytest.mark.parametrize("c", cases("table"), ids=lambda c: c.name)
def test_prepare_table_case(c: Case, corpus: tuple[Path, dict[str, Built]]) -> None:
    folder, built = corpus
    table = built[c.name].table
    assert table is not None
    out = folder.parent / f"out-{c.name}"
    res = CliRunner().invoke(app, ["prepare", str(table), "--out", str(out), "--size", "32",
                                   "--workers", "1", "--json"])
    if c.prepare.status == REFUSED:
        assert res.exit_code == 2, res.output
        assert c.prepare.message in _flat(res.stderr), res.stderr
        assert str(table.name) in _flat(res.stderr)  # the message names the file
        assert not (out / "manifest.csv").exists()
        return
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    manifest = read_manifest(out)
    assert len(manifest) == report["counts"]["kept"] == c.kept
    reasons = [r["reason"] for r in report["rejected"]]
    if c.prepare.status == REJECTED:
        assert len(reasons) == 1 and c.prepare.message in reasons[0], reasons
    else:
        assert reasons == []
        assert report["sources"][0]["format"] == "csv"
        assert sorted(manifest["label"].tolist()) == [0, 0, 0, 1, 1, 1]


# === The document ===

def test_docs_table_matches_the_corpus() -> None:
    """docs/RELIABILITY.md shows exactly the table rendered from CASES (no drift)."""
    expected = render_table()
    assert documented_table() == expected, (
        f"docs/RELIABILITY.md is out of date: replace the table between {TABLE_START!r} and "
        f"{TABLE_END!r} with the output of `python tests/reliability/corpus.py`")


def test_tests_named_in_the_docs_exist() -> None:
    """Every `test_…` the page cites is a test function somewhere under tests/."""
    import re

    from reliability.corpus import DOCS

    cited = set(re.findall(r"`(test_[a-z0-9_]+)`", DOCS.read_text(encoding="utf-8")))
    assert len(cited) > 15
    tests = Path(__file__).resolve().parents[1]
    defined = {m for p in tests.rglob("test_*.py")
               for m in re.findall(r"^def (test_[a-z0-9_]+)\(", p.read_text(encoding="utf-8"),
                                   flags=re.M)}
    assert cited <= defined, sorted(cited - defined)


def test_every_case_has_an_outcome_per_entry_point() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    for c in CASES:
        for entry in ("prepare", "predict", "service"):
            outcome = getattr(c, entry)
            assert outcome.status in (ACCEPTED, REJECTED, REFUSED, NA), (c.name, entry)
            if outcome.status in (REJECTED, REFUSED):
                assert outcome.message, (c.name, entry)
            if outcome.status == NA:
                assert outcome.how, (c.name, entry)
        assert (c.kept is not None) == (c.group == "table" and c.prepare.status != REFUSED), c.name
    # The list, all present.
    for required in ("empty_file", "truncated_jpeg", "random_bytes", "text_as_jpg", "png_alpha",
                     "png_16bit", "grayscale", "cmyk_jpeg", "exif_rotated", "one_pixel",
                     "bomb_png", "animated_gif", "tiff", "webp", "heic", "path_spaces",
                     "path_non_ascii", "symlink_loop", "unreadable", "table_missing_columns",
                     "table_unknown_label", "table_duplicate_ids", "table_bom",
                     "table_semicolons", "table_blank_lines", "table_path_escape"):
        assert required in names, required
    assert NA not in (case("control_photo").prepare.status,)
