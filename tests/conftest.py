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
