"""Turning images into model input: the one resize used everywhere.

Every path into a model — the training pipeline, evaluation, ``predict``, the
service, export checks — resizes the *whole* image to the square model input
with ``tf.image.resize(..., antialias=True)`` (bilinear). The whole lesion stays
in view (tutorial 1 resized the same way); aspect ratio is not kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


def resize_for_model(image: Any, size: int) -> Any:
    """Resize an RGB tensor (H, W, 3) or batch (N, H, W, 3) to ``size``×``size`` float32 0–255."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    out = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.clip_by_value(out, 0.0, 255.0)


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """A decoded RGB PIL image as the model's input: float32 array (size, size, 3), 0–255."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.asarray(resize_for_model(arr, size), dtype=np.float32)
