"""Grad-CAM: every registered backbone's nested trunk, the tiny run, overlays and PNGs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_runs import build_responsive_model, isic_sample, structured_images
from skinlesion.inference.gradcam import GradCam, GradCamError, overlay, png_bytes, save_png
from skinlesion.inference.predictor import Predictor
from skinlesion.models.registry import get_backbone, list_backbones

CAM_SIZE = 96  # a 3×3 feature map for trunks that downsample 32×
CAM_SIZES = {"inception_v3": 139}  # its valid-padded stem needs 139 px for a 3×3 map
# One trunk per structural family runs by default: the two smallest in the fast tier, the
# others in the slow tier; the other registered backbones (large EfficientNets, ConvNeXt,
# DenseNet, ...) take minutes in all, so they opt in:
# SKINLESION_SLOW=1 pytest -m slow tests/test_gradcam.py
FAST_BACKBONES = frozenset({"test_tiny_cnn", "mobilenet_v3_small"})
DEFAULT_BACKBONES = FAST_BACKBONES | {"efficientnet_lite0", "efficientnet_b0", "inception_v3"}
_SLOW = [pytest.mark.slow,
         pytest.mark.skipif(not os.environ.get("SKINLESION_SLOW"),
                            reason="slow: set SKINLESION_SLOW=1 to run every registered backbone")]


def _tier(backbone: str) -> Any:
    if backbone in FAST_BACKBONES:
        return ()
    return pytest.mark.slow if backbone in DEFAULT_BACKBONES else _SLOW


@pytest.mark.parametrize("backbone", [
    pytest.param(name, marks=_tier(name)) for name in list_backbones()
])
def test_gradcam_for_every_registered_backbone(backbone: str) -> None:
    size = CAM_SIZES.get(backbone, CAM_SIZE)
    model = build_responsive_model(backbone, size)
    x = structured_images(3, size, seed=1)
    # A threshold below every image's probability: each has positive evidence to show.
    threshold = 0.5 * float(np.min(np.asarray(model(x, training=False))))
    cam = GradCam(model, get_backbone(backbone).last_conv_layer, threshold=threshold)
    maps = cam.heatmaps(x, batch_size=2)
    assert maps.shape == (3, size, size) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and maps.min() >= 0.0 and maps.max() <= 1.0
    # A structured image gives a structured map, normalised to peak at 1 ...
    assert maps.std(axis=(1, 2)).min() > 0.01
    assert np.allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-3)
    # ... and the map follows the image: different lesions, different maps.
    assert np.abs(maps[0] - maps[1]).mean() > 0.01
    # Batched and single computations agree.
    np.testing.assert_allclose(cam.heatmap(x[2]), maps[2], atol=1e-4)


def test_unknown_layer_names_the_trunk_layers() -> None:
    model = build_responsive_model("mobilenet_v3_small", 32)
    with pytest.raises(GradCamError, match="is not in the backbone 'backbone'"):
        GradCam(model, "no_such_layer")


def test_gradcam_from_a_model_and_its_spec_is_the_predictors(tiny_run: Path) -> None:
    """GradCam needs a model and its ModelSpec, not a Predictor; the Predictor's is the same."""
    import dataclasses

    pred = Predictor.from_run(tiny_run)
    cam = GradCam.from_spec(pred.model, pred.spec)
    assert (cam.layer_name, cam.threshold) == ("conv_1", pred.threshold)
    x = structured_images(2, 32, seed=3)
    np.testing.assert_allclose(cam.heatmaps(x), pred.heatmaps(x), atol=1e-5)
    # A spec without a layer falls back on the registry's layer for its backbone.
    bare = dataclasses.replace(pred.spec, last_conv_layer=None)
    assert GradCam.from_spec(pred.model, bare).layer_name == get_backbone(
        "mobilenet_v3_small").last_conv_layer


@pytest.mark.integration
def test_gradcam_on_the_tiny_run_and_real_images(tiny_run: Path, isic_dev: Path,
                                                 tmp_path: Path) -> None:
    from PIL import Image

    pred = Predictor.from_run(tiny_run)
    paths, _ = isic_sample(isic_dev, 2)
    x = np.stack([pred.load_image(p) for p in paths])
    maps = pred.heatmaps(x)
    assert pred.gradcam.layer_name == "conv_1"  # the spec's layer
    assert maps.shape == (2, 32, 32)
    assert np.all(np.isfinite(maps)) and maps.min() >= 0.0 and maps.max() <= 1.0
    photo = Image.open(paths[0])
    out = save_png(tmp_path / "cams" / "a.png", overlay(photo, maps[0], max_side=256))
    with Image.open(out) as back:
        assert back.format == "PNG" and back.mode == "RGB"
        w, h = photo.size
        assert max(back.size) == 256 and abs(back.size[0] / back.size[1] - w / h) < 0.02
    assert [p.name for p in out.parent.iterdir()] == ["a.png"]  # no temp file left behind


def test_overlay_keeps_aspect_and_shows_the_map() -> None:
    photo = np.full((60, 90, 3), 128, np.uint8)
    cold = overlay(photo, np.zeros((8, 8)), max_side=None)
    hot_left = np.zeros((8, 8))
    hot_left[:, :4] = 1.0
    hot = overlay(photo, hot_left, max_side=None)
    assert cold.shape == hot.shape == (60, 90, 3) and hot.dtype == np.uint8
    # Hot half coloured differently from the cold half; the cold half matches the cold map.
    assert np.abs(hot[:, :30].astype(int) - cold[:, :30]).mean() > 20
    np.testing.assert_array_equal(hot[:, -20:], cold[:, -20:])
    assert overlay(np.zeros((2000, 1000, 3)), np.ones((4, 4)), max_side=500).shape == (500, 250, 3)
    assert png_bytes(cold)[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradcam_at_the_trunk_output_is_the_closed_form_class_activation_map() -> None:
    """At the trunk's last layer the gradient through average pooling is kernel / (h·w),
    so Grad-CAM reduces to ReLU(Σ_k kernel_k · A_k) (Zhou et al.'s CAM): an independent check."""
    import tensorflow as tf

    model = build_responsive_model("mobilenet_v3_small", CAM_SIZE)
    trunk = model.get_layer("backbone")
    cam = GradCam(model, trunk.layers[-1].name)
    x = structured_images(2, CAM_SIZE, seed=5)
    feats = trunk(model.get_layer("preprocess")(x), training=False)
    kernel = model.get_layer("head").get_weights()[0][:, 0]
    ref = np.maximum(np.asarray(feats) @ kernel, 0.0)
    ref = np.asarray(tf.image.resize(ref[..., None], (CAM_SIZE, CAM_SIZE), method="bilinear"))[..., 0]
    ref = ref / ref.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(cam.heatmaps(x), ref, atol=1e-4)


@pytest.mark.parametrize("threshold", [0.15, 0.5, 0.8])
def test_threshold_relative_map_is_each_locations_logit_against_the_threshold(threshold: float
                                                                               ) -> None:
    """At the trunk's last layer, location (i, j) seen everywhere would give the logit
    Σ_k kernel_k·A_k(i, j) + bias: the map is that minus logit(threshold), ReLU'd."""
    import tensorflow as tf

    model = build_responsive_model("test_tiny_cnn", CAM_SIZE)
    trunk = model.get_layer("backbone")
    cam = GradCam(model, trunk.layers[-1].name, threshold=threshold)
    x = structured_images(4, CAM_SIZE, seed=6)
    feats = np.asarray(trunk(model.get_layer("preprocess")(x), training=False))
    kernel, bias = (w.astype(np.float64) for w in model.get_layer("head").get_weights())
    margin = feats @ kernel[:, 0] + bias[0] - np.log(threshold / (1 - threshold))
    ref = np.asarray(tf.image.resize(np.maximum(margin, 0)[..., None].astype(np.float32),
                                     (CAM_SIZE, CAM_SIZE), method="bilinear"))[..., 0]
    peak = ref.max(axis=(1, 2), keepdims=True)
    ref = np.divide(ref, peak, out=np.zeros_like(ref), where=peak > 0)
    np.testing.assert_allclose(cam.heatmaps(x), ref, atol=1e-4)
    # Every image the model calls malignant at this threshold has a non-empty map.
    probs = np.asarray(model(x, training=False)).ravel()
    maps = cam.heatmaps(x)
    assert all(m.max() > 0.99 for m, p in zip(maps, probs, strict=True) if p >= threshold)
