"""Built-in backbone specs. Importing this module registers them.

(Initial keras.applications entries; the backbones issue completes the list and
adds EfficientNet-Lite.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skinlesion.models.registry import BackboneSpec, WeightsArg, register_backbone


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def _keras_app(fn_name: str, **kwargs: Any) -> Callable[[tuple[int, int, int], WeightsArg], Any]:
    def construct(input_shape: tuple[int, int, int], weights: WeightsArg) -> Any:
        import keras

        fn = getattr(keras.applications, fn_name)
        w = None if weights is None else (os.fspath(weights) if weights != "imagenet" else "imagenet")
        return fn(input_shape=input_shape, include_top=False, weights=w, **kwargs)

    return construct


def _cached_status(pattern: str) -> Callable[[], str]:
    def status() -> str:
        models = _keras_home() / "models"
        return "cached" if models.is_dir() and any(models.glob(pattern)) else "download"

    return status


register_backbone(BackboneSpec(
    name="efficientnet_b0",
    constructor=_keras_app("EfficientNetB0"),
    input_size=224, preprocessing="none", feature_dim=1280, last_conv_layer="top_conv",
    layer_groups=("stem", "block1", "block2", "block3", "block4", "block5", "block6", "block7", "top"),
    weights_source="keras.applications ImageNet (downloaded to KERAS_HOME)",
    family="keras.applications", weights_status=_cached_status("efficientnetb0_notop*.h5"),
))
register_backbone(BackboneSpec(
    name="mobilenet_v3_small",
    constructor=_keras_app("MobileNetV3Small", include_preprocessing=False),
    input_size=224, preprocessing="tf", feature_dim=576, last_conv_layer="conv_1",
    layer_groups=("conv", "expanded_conv", "conv_1"),
    weights_source="keras.applications ImageNet (downloaded to KERAS_HOME)",
    family="keras.applications", weights_status=_cached_status("weights_mobilenet_v3_small*"),
))
