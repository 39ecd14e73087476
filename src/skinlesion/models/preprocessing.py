"""Input normalisation as a Keras layer, so a saved model takes raw 0–255 RGB.

keras.applications backbones disagree on their input: ResNetV2/Inception/NASNet/
MobileNetV2 want [-1, 1] ("tf"), DenseNet ImageNet mean/std ("torch"), ResNet50
BGR minus the mean ("caffe"), EfficientNet/ConvNeXt/MobileNetV3 rescale inside
their own graph ("none"), and EfficientNet-Lite (x − 127) / 128 ("lite").
Tutorial 1 scaled to [0, 1] ("unit"). Putting the right one inside the model
means training, evaluation, the CLI, the service and exported models all feed
the same raw pixels and cannot disagree.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

PREPROCESSING_MODES: tuple[str, ...] = ("none", "unit", "tf", "torch", "caffe", "lite")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocess_array(x: Any, mode: str) -> Any:
    """Apply ``mode`` to a float tensor/array of raw 0–255 RGB pixels (last axis = channels)."""
    if mode == "none":
        return x
    if mode == "unit":
        return x / 255.0
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "lite":
        return (x - 127.0) / 128.0
    if mode == "torch":
        mean = ops.convert_to_tensor(_IMAGENET_MEAN, dtype=x.dtype) * 255.0
        std = ops.convert_to_tensor(_IMAGENET_STD, dtype=x.dtype) * 255.0
        return (x - mean) / std
    if mode == "caffe":
        bgr = ops.flip(x, axis=-1)
        return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
    raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}")


@keras.saving.register_keras_serializable(package="skinlesion")
class Preprocess(keras.layers.Layer):
    """Normalise raw 0–255 RGB input the way a backbone expects.

    Args:
        mode: One of ``PREPROCESSING_MODES``. Defaults to ``"none"``.
    """

    def __init__(self, mode: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}"
            )
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        return preprocess_array(ops.cast(inputs, self.compute_dtype), self.mode)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}
