"""Test helpers for the inference, export and service tests: small runs whose output responds.

A randomly initialised keras.applications trunk called in inference mode keeps its
BatchNorm moving statistics at mean 0 / variance 1, so the signal shrinks layer by
layer and the probability ends up the same for every image (the shared ``tiny_run``
fixture behaves like that). Plumbing tests need a model whose output *depends on the
image* — batching, TTA averaging, export parity and Grad-CAM are vacuous otherwise —
so these runs get a data-dependent BatchNorm initialisation: one forward pass in
training mode with momentum 0 copies each layer's batch statistics into its moving
statistics. The weights stay random; accuracy is not the point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_CACHE: dict[tuple[Any, ...], Path] = {}


def structured_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 images 0–255 with a dark blob on a skin-coloured, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        r = rng.uniform(0.12, 0.3) * size
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None]
        skin = np.array([220, 170, 150], np.float32) * rng.uniform(0.7, 1.1)
        lesion = np.array([90, 50, 40], np.float32) * rng.uniform(0.5, 1.5)
        img = skin * (1 - blob) + lesion * blob + rng.normal(0, 12, (size, size, 3))
        out[i] = np.clip(img, 0, 255)
    return out


def calibrate_batchnorm(model: Any, images: np.ndarray) -> None:
    """Set every BatchNorm of the ``backbone`` trunk to the statistics of ``images``."""
    import keras

    trunk = model.get_layer("backbone")
    pre = model.get_layer("preprocess")
    bns = [layer for layer in trunk._flatten_layers()
           if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0
        trunk(pre(images), training=True)
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m


def wake_layer_scales(model: Any) -> None:
    """Set ConvNeXt's LayerScale factors (initialised to 1e-6) to 1.

    With them at 1e-6 a random ConvNeXt is its patchify stem and downsampling layers
    only: every location's feature is the same up to scale, which the final LayerNorm
    removes, so the output (and any heatmap) cannot depend on where things are.
    """
    trunk = model.get_layer("backbone")
    for layer in trunk._flatten_layers():
        if "layer_scale" in layer.name and layer.weights:
            layer.set_weights([np.ones_like(w) for w in layer.get_weights()])


def build_responsive_model(backbone: str = "mobilenet_v3_small", size: int = 32, seed: int = 0
                           ) -> Any:
    """A ``build_classifier`` model (weights=None) with data-calibrated BatchNorm."""
    import keras

    from skinlesion.models.classifier import build_classifier

    keras.utils.set_random_seed(seed)
    model = build_classifier(backbone, input_size=size, weights=None, dropout=0.0)
    images = structured_images(16, size, seed)
    wake_layer_scales(model)
    calibrate_batchnorm(model, images)
    spread_head(model, images)
    return model


def spread_head(model: Any, images: np.ndarray, logit_std: float = 1.5) -> None:
    """Rescale the random head so logits on ``images`` have mean 0 and std ``logit_std``.

    Probabilities then spread over (0, 1) instead of clustering near one value, so small
    numeric differences (exports, batching) cannot reorder them by accident.
    """
    import keras

    pooled = keras.Model(model.input, model.get_layer("pool").output)(images)
    head = model.get_layer("head")
    kernel, _ = head.get_weights()
    logits = np.asarray(pooled) @ kernel[:, 0]
    scale = logit_std / max(float(logits.std()), 1e-12)
    head.set_weights([kernel * scale, np.array([-float(logits.mean()) * scale], np.float32)])


def save_run(model: Any, run: Path, backbone: str, size: int, *, threshold: float = 0.5,
             band: float = 0.0) -> Path:
    """Write ``model.keras`` and ``model_spec.json`` into ``run`` (the run-directory contract)."""
    from skinlesion.models.registry import get_backbone
    from skinlesion.runspec import MODEL_FILE, ModelSpec
    from skinlesion.utils.atomic import atomic_path

    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / MODEL_FILE) as tmp:
        model.save(tmp)
    spec = get_backbone(backbone)
    ModelSpec(backbone=backbone, input_size=size, preprocessing=spec.preprocessing,
              threshold=threshold, threshold_rule="fixed (test fixture)",
              inconclusive_band=band, last_conv_layer=spec.last_conv_layer,
              model_id=f"test-{backbone}-{size}").save(run)
    return run


def responsive_run_dir(factory: pytest.TempPathFactory, backbone: str = "mobilenet_v3_small",
                       size: int = 32) -> Path:
    """A run directory with a responsive model, built once per test session."""
    key = (backbone, size)
    if key not in _CACHE:
        model = build_responsive_model(backbone, size)
        _CACHE[key] = save_run(model, factory.mktemp(f"run_{backbone}_{size}"), backbone, size)
    return _CACHE[key]


def isic_sample(isic_dev: Path, n: int, *, both_classes: bool = True) -> tuple[list[Path], np.ndarray]:
    """The first ``n`` isic-dev images (half malignant when ``both_classes``) and their labels."""
    import pandas as pd

    df = pd.read_csv(isic_dev / "labels.csv")
    if both_classes:
        half = n // 2
        df = pd.concat([df[df.label == 1].head(half), df[df.label == 0].head(n - half)])
    else:
        df = df.head(n)
    return [isic_dev / f for f in df.filename], df.label.to_numpy()


# === A real uvicorn server on 127.0.0.1 ===

@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    import threading
    import time

    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
