"""The Predictor: loading a run, batching, TTA, decisions, bad files, real isic-dev images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inference_runs import isic_sample, responsive_run_dir, structured_images
from skinlesion.inference.predictor import PredictionRow, Predictor, find_images
from skinlesion.inference.tta import TTA_CHOICES, check_tta, dihedral_view, dihedral_views
from skinlesion.runspec import ModelSpec, RunError
from skinlesion.utils.progress import ProgressEvent


@pytest.fixture(scope="session")
def responsive_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-px MobileNetV3-Small run whose probability varies with the image."""
    return responsive_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(responsive_run: Path) -> Predictor:
    return Predictor.from_run(responsive_run)


# === TTA views ===

def test_dihedral_views_are_the_eight_symmetries_in_documented_order() -> None:
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    expected = [
        x,
        x[:, :, ::-1],
        x[:, ::-1],
        np.rot90(x, 2, axes=(1, 2)),
        x.transpose(0, 2, 1, 3),
        np.rot90(x, -1, axes=(1, 2)),  # transpose + hflip = 90° clockwise
        np.rot90(x, 1, axes=(1, 2)),   # transpose + vflip = 90° counter-clockwise
        np.rot90(x, 2, axes=(1, 2)).transpose(0, 2, 1, 3),
    ]
    views = dihedral_views(x, 8)
    for got, want in zip(views, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len({v.tobytes() for v in views}) == 8  # all distinct for an asymmetric image
    assert [v.shape for v in dihedral_views(x, 4)] == [x.shape] * 4


def test_dihedral_view_same_on_tensors_and_arrays() -> None:
    import tensorflow as tf

    x = np.random.default_rng(0).uniform(size=(3, 5, 5, 3)).astype(np.float32)
    for i in range(8):
        np.testing.assert_array_equal(np.asarray(dihedral_view(tf.constant(x), i)),
                                      dihedral_view(x, i))


@pytest.mark.parametrize("bad", [0, 3, 5, 16, -1])
def test_check_tta_refuses_other_counts(bad: int) -> None:
    with pytest.raises(ValueError, match="tta must be one of"):
        check_tta(bad)
    assert TTA_CHOICES == (1, 2, 4, 8)


# === Arrays ===

def test_batching_gives_the_same_numbers_as_one_by_one(predictor: Predictor) -> None:
    x = structured_images(11, predictor.input_size, seed=3)
    batched = predictor.predict_arrays(x, batch_size=4)
    single = np.array([predictor.predict_array(img) for img in x])
    assert batched.shape == (11,)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    # The model must actually respond to the image for this test to mean anything.
    assert np.ptp(batched) > 1e-3


@pytest.mark.parametrize("tta", [2, 4, 8])
def test_tta_is_the_mean_over_the_first_views(predictor: Predictor, tta: int) -> None:
    x = structured_images(5, predictor.input_size, seed=4)
    got = predictor.predict_arrays(x, tta=tta, batch_size=3)
    per_view = np.stack([predictor.predict_arrays(dihedral_view(x, i)) for i in range(tta)])
    np.testing.assert_allclose(got, per_view.mean(axis=0), atol=1e-5)
    # Views give different numbers, so the average differs from the identity view.
    assert np.max(np.abs(per_view - per_view[0])) > 1e-4


def test_probabilities_are_finite_and_in_range(predictor: Predictor) -> None:
    rng = np.random.default_rng(0)
    s = predictor.input_size
    x = np.concatenate([np.zeros((1, s, s, 3)), np.full((1, s, s, 3), 255.0),
                        rng.uniform(0, 255, (6, s, s, 3))]).astype(np.float32)
    for tta in TTA_CHOICES:
        p = predictor.predict_arrays(x, tta=tta)
        assert p.dtype == np.float64 and p.shape == (8,)
        assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    assert predictor.predict_arrays(np.zeros((0, s, s, 3), np.float32)).shape == (0,)


def test_wrong_input_shape_is_refused(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 32, 32, 3\)"):
        predictor.predict_arrays(np.zeros((2, 64, 64, 3), np.float32))


# === Decisions ===

def _with_spec(predictor: Predictor, **changes: object) -> Predictor:
    spec = ModelSpec.from_dict({**predictor.spec.to_dict(), **changes})
    return Predictor(predictor.model, spec)


def test_decide_at_threshold_and_inconclusive_band(predictor: Predictor) -> None:
    plain = _with_spec(predictor, threshold=0.3, inconclusive_band=0.0)
    assert [plain.decide(p) for p in (0.0, 0.2999, 0.3, 0.9)] == [
        "benign", "benign", "malignant", "malignant"]
    banded = _with_spec(predictor, threshold=0.3, inconclusive_band=0.05)
    assert [banded.decide(p) for p in (0.24, 0.26, 0.3, 0.34, 0.36)] == [
        "benign", "inconclusive", "inconclusive", "inconclusive", "malignant"]


# === Files, on real images ===

@pytest.mark.integration
def test_predict_files_on_real_images_matches_arrays(predictor: Predictor, isic_dev: Path) -> None:
    paths, _ = isic_sample(isic_dev, 12)
    events: list[ProgressEvent] = []
    rows = predictor.predict_files(paths, batch_size=5, progress=events.append)
    assert [r.path for r in rows] == [str(p) for p in paths]  # input order kept
    # One count event per batch (cumulative), from 0 to the total, then "finished".
    assert [(e.done, e.total, e.finished) for e in events] == [
        (0, 12, False), (5, 12, False), (10, 12, False), (12, 12, False), (12, 12, True)]
    assert {e.task for e in events} == {"predict"}
    assert all(r.error is None and r.decision in ("benign", "malignant") for r in rows)
    probs = np.array([r.probability for r in rows])
    x = np.stack([predictor.load_image(p) for p in paths])
    np.testing.assert_allclose(probs, predictor.predict_arrays(x), atol=1e-6)
    assert np.ptp(probs) > 1e-4
    assert [r.decision for r in rows] == [predictor.decide(p) for p in probs]
    # predict_bytes is the same path for uploads.
    row = predictor.predict_bytes(paths[0].read_bytes(), name="upload.jpg", tta=2)
    x0 = predictor.load_image(paths[0])[None]
    assert row.path == "upload.jpg"
    assert row.probability == pytest.approx(float(predictor.predict_arrays(x0, tta=2)[0]), abs=1e-6)


@pytest.mark.integration
def test_bad_files_get_an_error_row_and_never_stop_the_batch(
        predictor: Predictor, isic_dev: Path, tmp_path: Path) -> None:
    good, _ = isic_sample(isic_dev, 3)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:2000])
    missing = tmp_path / "missing.jpg"
    paths = [good[0], empty, text, good[1], truncated, missing, good[2]]
    rows = predictor.predict_files(paths, batch_size=2)
    by_name = {Path(r.path).name: r for r in rows}
    assert len(rows) == len(paths)
    assert "empty" in by_name["empty.jpg"].error
    assert "not an image" in by_name["notes.jpg"].error
    assert "truncated" in by_name["truncated.jpg"].error
    assert "not found" in by_name["missing.jpg"].error
    for name in ("empty.jpg", "notes.jpg", "truncated.jpg", "missing.jpg"):
        assert by_name[name].probability is None and by_name[name].decision is None
    ok = [r for r in rows if r.error is None]
    assert [Path(r.path).name for r in ok] == [p.name for p in good]
    assert all(0.0 <= r.probability <= 1.0 for r in ok)


@pytest.mark.integration
def test_the_shared_tiny_run_loads_and_predicts(tiny_run: Path, isic_dev: Path) -> None:
    pred = Predictor.from_run(tiny_run)
    paths, _ = isic_sample(isic_dev, 2)
    rows = pred.predict_files(paths, tta=4)
    assert pred.spec.model_id == "tiny-fixture" and pred.input_size == 32
    assert all(isinstance(r, PredictionRow) and r.error is None for r in rows)
    assert all(0.0 <= r.probability <= 1.0 for r in rows)


# === Loading runs, finding files ===

def test_from_run_errors_name_the_problem(responsive_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"model\.keras: missing"):
        Predictor.from_run(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(responsive_run / "model_spec.json", broken / "model_spec.json")
    (broken / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(RunError, match="cannot load the model"):
        Predictor.from_run(broken)


def test_find_images_expands_folders_and_globs(image_factory, tmp_path: Path) -> None:
    a = image_factory("d/a.jpg")
    b = image_factory("d/sub/b.PNG", fmt="PNG")
    (tmp_path / "d" / "readme.txt").write_text("x")
    c = image_factory("e/c.jpeg")
    paths, problems = find_images([tmp_path / "d", str(tmp_path / "e" / "*.jp*g"), a,
                                   tmp_path / "nothing-here"])
    assert paths == [a, b, c]  # recursive, extension-filtered, no duplicates
    assert problems == [f"{tmp_path / 'nothing-here'}: no such file or folder"]
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert "holds no images" in find_images([empty_dir])[1][0]


def test_prepare_and_predict_pick_up_the_same_image_files(tmp_path: Path) -> None:
    """One extension list: every name in it is a format the decoder reads, and a folder
    expanded by ``predict`` holds exactly the files ``prepare`` finds by id."""
    from PIL import Image

    from skinlesion.data.extensions import IMAGE_EXTENSIONS
    from skinlesion.data.images import SUPPORTED_FORMATS
    from skinlesion.data.layouts.files import ImageIndex

    registered = Image.registered_extensions()
    for ext in sorted(IMAGE_EXTENSIONS - {".heic", ".heif"}):  # HEIF: pillow-heif, optional
        assert registered.get(ext) in SUPPORTED_FORMATS, ext
    folder = tmp_path / "photos"
    folder.mkdir()
    names = [f"img{i}{ext.upper() if i % 2 else ext}"
             for i, ext in enumerate(sorted(IMAGE_EXTENSIONS))]
    for name in [*names, "notes.txt", "scan.pdf"]:
        (folder / name).write_bytes(b"\xff\xd8\xff")  # listing only: never decoded here
    found, problems = find_images([folder])
    assert problems == [] and sorted(p.name for p in found) == sorted(names)
    index = ImageIndex(folder)
    assert sorted(index.find(Path(n).stem)[0].name for n in names) == sorted(names)
