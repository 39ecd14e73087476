"""The thirteen hardening rows of docs/RELIABILITY.md (section "Hostile and unlucky inputs"),
plus the design gaps that are not about exposing the service (test_exposure.py has those).

Each test is named after its row; each failed on the code before the fix (the report of
the change lists how)."""

from __future__ import annotations

import io
import json
import os
import pickle
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import make_image
from inference_runs import responsive_run_dir
from skinlesion.cli.main import app
from skinlesion.data.images import ImageError, open_image
from skinlesion.runspec import SPEC_FILE, ModelSpec, RunError

# === Row 1: memory for any accepted upload is bounded ===


def _png16(side: int) -> bytes:
    ramp = np.linspace(0, 65535, side, dtype=np.float32)
    arr = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_row1_16bit_png_is_converted_without_float64_copies() -> None:
    # 3,000×3,000 16-bit: the old path made a float64 copy (72 MB) and more; numpy
    # allocations are what tracemalloc sees (Pillow's own buffers are not counted).
    data = _png16(3000)
    tracemalloc.start()
    try:
        img = open_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.mode == "RGB" and img.size == (3000, 3000)
    assert peak < 20 * 2**20, f"numpy peak {peak / 2**20:.0f} MiB converting 16-bit"
    arr = np.asarray(img)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255  # full scale kept, not clipped


@pytest.mark.parametrize("fmt", ["WEBP", "PNG", "JPEG"])
def test_row1_large_images_are_decoded_reduced_for_the_model(fmt: str) -> None:
    from skinlesion.data.images import reduced_side

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((4000, 3000), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out = open_image(buf.getvalue(), reduce_for=224)
    least = reduced_side(224)
    assert least <= min(out.size) < 2 * least, out.size
    assert abs(out.size[0] / out.size[1] - 4 / 3) < 0.02  # one factor: aspect kept
    assert out.info["original_size"] == (4000, 3000)


def test_row1_16bit_png_reduced_for_the_model_keeps_its_scale() -> None:
    out = open_image(_png16(2200), reduce_for=64)
    assert min(out.size) < 1024
    arr = np.asarray(out)
    assert arr[0, 0, 0] < 5 and arr[-1, -1, 0] > 250


# === Row 3: a relative CSV path ===

def test_row3_prepare_with_a_relative_csv_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    data = tmp_path / "data"
    for i in range(6):
        make_image(data / f"img/p{i}.jpg", seed=i)
    (data / "labels.csv").write_text("path,label\n" + "".join(f"img/p{i}.jpg,{i % 2}\n"
                                                              for i in range(6)))
    monkeypatch.chdir(data)
    res = CliRunner().invoke(app, ["prepare", "labels.csv", "--out", "p", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["counts"]["rejected"] == 0, report["rejected"][:2]
    assert report["counts"]["kept"] == 6


# === Row 4: TeX-like text in ids and sources ===

def test_row4_mathtext_in_labels_does_not_abort_the_figures() -> None:
    import pandas as pd

    from skinlesion.evaluation import plots

    y = np.array([0, 1] * 10)
    p = np.linspace(0.05, 0.95, 20)
    ax = plots.plot_roc_comparison(y, {r"$\undefinedmacro$": p, "b": p[::-1]})
    assert plots.figure_png(ax[0].figure_)[:4] == b"\x89PNG"
    errors = pd.DataFrame({"image_id": [r"$\undefinedmacro$"], "path": ["/nonexistent"],
                           "label": [1], "probability": [0.02], "kind": ["FN"]})
    fig = plots.plot_error_gallery(errors, n=2, columns=2)
    assert plots.figure_png(fig)[:4] == b"\x89PNG"


# === Rows 5, 12, 13: predict's CSV and terminal output ===

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return responsive_run_dir(tmp_path_factory)


def test_row5_non_utf8_file_name_still_writes_the_csv(run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    make_image(folder / "good.jpg", seed=1)
    raw = os.fsencode(folder) + b"/caf\xe9.jpg"  # Latin-1 é: not UTF-8
    with open(raw, "wb") as fh:
        fh.write((folder / "good.jpg").read_bytes()[:-1] + b"\xd9")
    out = tmp_path / "x.csv"
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert "caf\\xe9.jpg" in text and "good.jpg" in text


def test_row12_formula_cells_are_escaped_in_predictions_csv(run_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import csv

    folder = tmp_path / "photos"
    make_image(folder / "=HYPERLINK(evil).jpg", seed=2)
    make_image(folder / "+plus.jpg", seed=3)
    out = tmp_path / "p.csv"
    monkeypatch.chdir(folder)  # relative names: the cell starts with the formula character
    res = CliRunner().invoke(app, ["predict", str(run_dir), "=HYPERLINK(evil).jpg", "+plus.jpg",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == ["'+plus.jpg", "'=HYPERLINK(evil).jpg"]
    from skinlesion.utils.safe_text import csv_escape, csv_unescape

    for value in ("=1+1", "+x", "-cmd", "@SUM(A1)", "\tx"):
        assert csv_escape(value) == "'" + value and csv_unescape(csv_escape(value)) == value
    assert csv_escape("-0.25") == "-0.25" and csv_escape("ISIC_1") == "ISIC_1"


def test_row12_manifest_escapes_and_reads_back(tmp_path: Path) -> None:
    import pandas as pd

    from skinlesion.data.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest

    row = {c: "" for c in MANIFEST_COLUMNS}
    row.update(image_id="=1+1", path="images/a.jpg", label="1", split="train",
               patient_id="@evil", source="-src")
    df = pd.DataFrame([row])
    for col in ("label",):
        df[col] = df[col].astype(int)
    try:
        path = write_manifest(df, tmp_path)
    except Exception as exc:  # the schema may need more columns: fill what it asks for
        pytest.fail(f"manifest schema: {exc}")
    text = path.read_text(encoding="utf-8")
    assert "'=1+1" in text and "'@evil" in text and "'-src" in text
    back = read_manifest(tmp_path)
    assert back.loc[0, "image_id"] == "=1+1" and back.loc[0, "patient_id"] == "@evil"


def test_row13_escape_sequences_in_file_names_never_reach_the_terminal(
        run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    name = "evil\x1b]0;pwned\x07\x1b[2J[bold]x[/bold].jpg"
    make_image(folder / name, seed=4)
    (folder / "notes\x1b[31m.jpg").write_bytes(b"not an image")
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(folder)], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    assert "\x1b" not in res.stderr
    assert "\\x1b" in res.stdout and "[bold]x[/bold]" in res.stdout


# === Row 6: symlinks to .. under a recursive glob ===

def test_row6_recursive_glob_with_symlink_to_parent_terminates(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    from skinlesion.inference.predictor import find_images

    photos = tmp_path / "photos"
    for rel in ("a.jpg", "sub/b.jpg", "sub/deeper/c.jpg"):
        make_image(photos / rel)
    os.symlink("..", photos / "sub" / "up")
    os.symlink("../..", photos / "sub" / "deeper" / "up2")
    monkeypatch.chdir(tmp_path)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(find_images(["photos/**/*.jpg"])),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "glob expansion did not finish in 60 s (followed the links)"
    paths, problems = result[0]
    assert sorted(p.as_posix() for p in paths) == ["photos/a.jpg", "photos/sub/b.jpg",
                                                   "photos/sub/deeper/c.jpg"]
    assert problems == []


# === Row 7: the type is read from the first bytes ===

def test_row7_large_non_image_is_refused_from_its_first_bytes(tmp_path: Path) -> None:
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as fh:
        fh.write(b"this is a text file, not a photo\n" * (48 * 2**20 // 33))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="not an image"):
            open_image(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"read {peak / 2**20:.0f} MiB of a non-image before refusing it"


# === Row 8: torch checkpoints ===

def _ckpt_helpers():
    import test_backbones_checkpoint as t

    return t


def test_row8_zero_stride_tensor_is_refused(tmp_path: Path) -> None:
    from skinlesion.models.torch_checkpoint import CheckpointError, load_checkpoint

    t = _ckpt_helpers()
    main = t._state_dict_pickle([("w", t._tensor(t._legacy_pid("k0", 12), 0, (50_000, 50_000),
                                                 (0, 0)))])
    path = t.write_legacy(tmp_path / "zero.pth", main)
    assert path.stat().st_size < 1000
    with pytest.raises(CheckpointError, match="zero stride"):
        load_checkpoint(path)


def test_row8_shared_references_are_not_expanded(tmp_path: Path) -> None:
    from skinlesion.models.torch_checkpoint import load_checkpoint

    x: list = []
    for _ in range(24):
        x = [x, x]  # 2**24 paths, 25 distinct lists
    path = tmp_path / "shared.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(x, protocol=2))
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        out = load_checkpoint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    depth = 0
    while out:
        assert out[0] is out[1]
        out, depth = out[0], depth + 1
    assert depth == 24


def test_row8_storage_size_is_checked_before_it_is_read(tmp_path: Path) -> None:
    from skinlesion.models.torch_checkpoint import CheckpointError, load_checkpoint

    t = _ckpt_helpers()
    main = t._state_dict_pickle([("w", t._tensor(t._zip_pid("0", 12), 0, (12,), (1,)))])
    path = tmp_path / "bomb.pth"
    zero = bytes(2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", main)
        with zf.open("archive/data/0", "w") as member:
            for _ in range(256):  # 256 MiB of zeros, ~250 KB compressed
                member.write(zero)
    assert path.stat().st_size < 600_000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="holds 268,435,456 bytes but the pickle"):
            load_checkpoint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_row8_deep_nesting_is_a_clear_error(tmp_path: Path) -> None:
    from skinlesion.models.torch_checkpoint import CheckpointError, load_checkpoint

    n = 100_000
    # [[[...]]]: open n lists, then append each into its parent.
    deep = (pickle.PROTO + b"\x02" + pickle.EMPTY_LIST * n + pickle.APPEND * (n - 1)
            + pickle.STOP)
    path = tmp_path / "deep.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", deep)
    with pytest.raises(CheckpointError, match="nested more than"):
        load_checkpoint(path)


# === Rows 9 and 9b: model_spec.json ===

_GOOD_SPEC = {"backbone": "mobilenet_v3_small", "input_size": 32, "threshold": 0.4,
              "class_names": ["benign", "malignant"], "inconclusive_band": 0.0}


@pytest.mark.parametrize(("change", "field"), [
    ({"threshold": "abc"}, "threshold"),
    ({"threshold": None}, "threshold"),
    ({"threshold": [0.5]}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"input_size": "abc"}, "input_size"),
    ({"threshold": "DROP"}, "threshold"),
    ({"class_names": [1, 2]}, "class_names"),
    ({"inconclusive_band": 5}, "inconclusive_band"),
    ({"inconclusive_band": "wide"}, "inconclusive_band"),
    ({"backbone": ""}, "backbone"),
], ids=["threshold-text", "threshold-null", "threshold-list", "threshold-bool", "size-text",
        "threshold-missing", "class-names-ints", "band-5", "band-text", "backbone-empty"])
def test_row9_invalid_spec_fields_are_named(tmp_path: Path, change: dict, field: str) -> None:
    spec = {**_GOOD_SPEC, **change}
    spec = {k: v for k, v in spec.items() if v != "DROP"}
    (tmp_path / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(RunError, match=rf"{SPEC_FILE}: field '{field}'"):
        ModelSpec.load(tmp_path)


@pytest.mark.parametrize(("raw", "message"), [
    (b"\xff\xfe{not utf-8", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'"a string"', "expected a JSON object, got str"),
    (b"[1, 2]", "expected a JSON object, got list"),
])
def test_row9_unreadable_specs_are_clear_errors(tmp_path: Path, raw: bytes, message: str) -> None:
    (tmp_path / SPEC_FILE).write_bytes(raw)
    with pytest.raises(RunError, match=message):
        ModelSpec.load(tmp_path)


def test_row9_unknown_fields_are_allowed(tmp_path: Path) -> None:
    (tmp_path / SPEC_FILE).write_text(json.dumps({**_GOOD_SPEC, "target": "melanoma",
                                                  "ensemble": {"members": []}}))
    assert ModelSpec.load(tmp_path).threshold == 0.4


def test_row9b_serve_refuses_a_spec_without_threshold(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    spec = json.loads((bad / SPEC_FILE).read_text())
    del spec["threshold"]
    (bad / SPEC_FILE).write_text(json.dumps(spec))
    res = CliRunner().invoke(app, ["serve", str(bad), "--port", "0"])
    assert res.exit_code == 2
    assert "field 'threshold': missing" in " ".join(res.output.split())
    assert "Traceback" not in res.output


# === Row 10: prepare --out that is a file ===

@pytest.mark.parametrize("suffix", ["", "/"])
def test_row10_prepare_out_is_an_existing_file(tmp_path: Path, suffix: str) -> None:
    data = tmp_path / "data"
    for i in range(4):
        make_image(data / f"img/p{i}.jpg", seed=i)
    (data / "labels.csv").write_text("path,label\n" + "".join(f"img/p{i}.jpg,{i % 2}\n"
                                                              for i in range(4)))
    target = tmp_path / "foo.csv"
    target.write_text("already here\n")
    res = CliRunner().invoke(app, ["prepare", str(data / "labels.csv"), "--out",
                                   str(target) + suffix])
    assert res.exit_code == 2, res.output
    assert "is an existing file, not a folder" in " ".join(res.output.split())
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert target.read_text() == "already here\n"


# === Row 11: serve on a model that cannot load ===

def test_row11_serve_on_a_model_that_cannot_load(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    (bad / "model.keras").write_bytes(b"PK\x03\x04 not really a keras file")
    res = CliRunner().invoke(app, ["serve", str(bad), "--port", "0"])
    assert res.exit_code == 2, res.output
    assert "cannot load the model" in " ".join(res.output.split())
    assert res.exception is None or isinstance(res.exception, SystemExit)


# === Design gaps: out of scope, two image parts, zip caps ===

@pytest.mark.parametrize(("size", "flat", "message"), [
    ((1, 1), False, "shorter side must be at least 32 px"),
    ((400, 20), False, "shorter side must be at least 32 px"),
    ((600, 100), False, "aspect ratio 6.0:1"),
    ((120, 100), True, "near-constant image"),
])
def test_out_of_scope_inputs_get_no_probability(run_dir: Path, tmp_path: Path,
                                                size: tuple[int, int], flat: bool,
                                                message: str) -> None:
    from skinlesion.inference.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    path = make_image(tmp_path / "x.png", size=size, fmt="PNG",
                      color=(120, 80, 60) if flat else None)
    good = make_image(tmp_path / "ok.jpg", size=(80, 60), seed=5)
    rows = predictor.predict_files([path, good])
    assert rows[0].probability is None and rows[0].decision == "out_of_scope"
    assert rows[0].error.startswith("out of scope: ") and message in rows[0].error
    assert rows[1].probability is not None
    from skinlesion.inference.scope import ScopeRule

    relaxed = Predictor(predictor.model, predictor.spec, scope=ScopeRule(None, None, None))
    assert relaxed.predict_files([path])[0].probability is not None  # configurable


@pytest.mark.integration
def test_no_isic_dev_photo_is_out_of_scope(isic_dev: Path) -> None:
    import pandas as pd

    from skinlesion.inference.scope import DEFAULT_SCOPE

    df = pd.read_csv(isic_dev / "labels.csv")
    out = []
    for f in df["filename"]:
        img = open_image(isic_dev / f, reduce_for=224)
        why = DEFAULT_SCOPE.reason(img, img.info["original_size"])
        if why:
            out.append((f, why))
    assert len(df) > 2000
    assert out == [], out[:5]


def test_two_image_parts_are_refused(run_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from skinlesion.inference.predictor import Predictor
    from skinlesion.service.app import create_app

    jpg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8)).save(jpg, "JPEG")
    with TestClient(create_app(Predictor.from_run(run_dir), warmup=False)) as client:
        r = client.post("/v1/predict", files=[("image", ("a.jpg", jpg.getvalue(), "image/jpeg")),
                                              ("image", ("b.jpg", jpg.getvalue(), "image/jpeg"))])
        assert r.status_code == 422
        assert "one image per request" in r.json()["detail"]
        flat = io.BytesIO()
        Image.new("RGB", (100, 100), (90, 90, 90)).save(flat, "PNG")
        r = client.post("/v1/predict", files={"image": ("flat.png", flat.getvalue(), "image/png")})
        assert r.status_code == 422 and "out of scope" in r.json()["detail"]


def test_zip_extraction_caps_total_size_and_ratio(tmp_path: Path) -> None:
    from skinlesion.download.errors import ExtractionError as ExtractError
    from skinlesion.download.extract import extract_zip

    bomb = tmp_path / "bomb.zip"
    with (zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf,
          zf.open("data/zeros.bin", "w") as member):
        for _ in range(64):
            member.write(bytes(2**20))  # 64 MiB of zeros, ~64 KB compressed
    with pytest.raises(ExtractError, match="compression ratio"):
        extract_zip(bomb, tmp_path / "out1")
    assert not (tmp_path / "out1").exists() or not any((tmp_path / "out1").rglob("*.bin"))
    with pytest.raises(ExtractError, match="uncompressed"):
        extract_zip(bomb, tmp_path / "out2", max_ratio=10_000, max_total_bytes=32 * 2**20)
    ok = extract_zip(bomb, tmp_path / "out3", max_ratio=10_000)
    assert (ok / "zeros.bin").stat().st_size == 64 * 2**20  # the one top folder is dropped
