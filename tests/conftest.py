"""Shared fixtures: tiny generated images, and the real isic-dev images beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


def isic_dev_dir() -> Path:
    """Location of the real images: $SKINLESION_ISIC_DEV or ../shared/data/isic-dev."""
    env = os.environ.get("SKINLESION_ISIC_DEV")
    return Path(env) if env else REPO.parent / "shared" / "data" / "isic-dev"


# Fixtures that put a test in a tier whatever its own marks say: a test reading the real
# images (directly or through a fixture built on them) is ``integration``; one driving
# chromium is ``browser``. The fast tier (``-m "not slow and not integration and not
# browser"``) then cannot pick up a test that needs ../shared or a browser by accident.
TIER_FIXTURES: dict[str, str] = {"isic_dev": "integration", "chromium": "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the fixtures it uses (see ``TIER_FIXTURES``)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in TIER_FIXTURES.items():
            if fixture in used and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def isic_dev() -> Path:
    """The isic-dev folder; integration tests fail loudly in CI if it is missing."""
    path = isic_dev_dir()
    if not (path / "labels.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must run with ../shared beside the repo")
        pytest.skip(f"real images not found at {path}")
    return path


def make_image(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0,
               color: tuple[int, int, int] | None = None, fmt: str = "JPEG") -> Path:
    """Write a small synthetic RGB image (noise, or a flat colour) and return its path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if color is None:
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    else:
        arr = np.empty((size[1], size[0], 3), dtype=np.uint8)
        arr[...] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def image_factory(tmp_path: Path):
    """Factory writing synthetic images under tmp_path: ``image_factory("a/b.jpg", seed=1)``."""

    def _make(rel: str, **kwargs) -> Path:
        return make_image(tmp_path / rel, **kwargs)

    return _make


def chromium_executable() -> str | None:
    """Path of a headless-capable Chromium (Debian's ``chromium``), or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium for browser tests; CI installs it (.ci/run), elsewhere the test is skipped."""
    path = chromium_executable()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run must install Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, tiny run directory (model.keras + model_spec.json) whose output depends on the image.

    MobileNetV3Small at 32 px with random weights; its BatchNorm statistics are set
    from sample images and its head rescaled (see tests/inference_runs.py), since a
    random-init network with default statistics answers the same for every input.
    """
    from inference_runs import build_responsive_model, save_run
    from skinlesion.runspec import ModelSpec

    run = save_run(build_responsive_model("mobilenet_v3_small", 32),
                   tmp_path_factory.mktemp("tiny_run"), "mobilenet_v3_small", 32)
    spec = ModelSpec.load(run)
    spec.model_id = "tiny-fixture"
    spec.save(run)
    return run


def _tiny_cnn(input_shape, weights):  # type: ignore[no-untyped-def]
    """A 2-conv trunk with well-scaled random features (random-init ImageNet nets vanish)."""
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block1_conv")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="block2_conv")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def _register_test_backbones() -> None:
    from skinlesion.models.registry import BackboneSpec, list_backbones, register_backbone

    if "test_tiny_cnn" in list_backbones():
        return
    register_backbone(BackboneSpec(
        name="test_tiny_cnn", constructor=_tiny_cnn, input_size=32, preprocessing="unit",
        feature_dim=16, last_conv_layer="block2_conv", layer_groups=("block1", "block2"),
        weights_source="random init (tests only)", family="test",
        weights_status=lambda: "unavailable",
    ))


_register_test_backbones()
