"""Small Keras layers that live inside the saved model (so every path agrees).

* :class:`ShadesOfGray` — colour constancy (Finlayson & Trezzi 2004), as the ISIC 2019
  winners used it (Gessert et al. 2020): each image's illuminant is estimated by the
  Minkowski p-norm of each channel and divided out. Inside the model, training,
  evaluation, ``predict``, the service and exported models all apply the same step.
* :class:`MalignantProbability` — turns a diagnosis softmax into the model's output
  ``[P(malignant), P(class 0), …, P(class K-1)]`` where P(malignant) is the sum of the
  malignant classes' probabilities.

Both are registered Keras serializables (never ``Lambda``), so ``safe_mode`` loading
keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="skinlesion")
class ShadesOfGray(keras.layers.Layer):
    """Shades-of-Gray colour constancy on raw 0–255 RGB.

    The illuminant ``e_c = (mean(x_c ** p)) ** (1/p)`` is estimated per image and channel,
    normalised to unit length, and each channel is scaled by ``1 / (sqrt(3) · e_c)`` so
    a grey illuminant leaves the image unchanged; the result is clipped to 0–255.

    Args:
        power: Minkowski norm ``p`` (1 = grey world, ∞ = max-RGB). Defaults to 6.
    """

    def __init__(self, power: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not power >= 1.0:
            raise ValueError(f"power must be >= 1, got {power}")
        self.power = float(power)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        # Normalise to [0, 1] before the power so x ** 6 stays well inside float32.
        unit = ops.clip(x / 255.0, 0.0, 1.0)
        illum = ops.power(ops.mean(ops.power(unit, self.power), axis=(1, 2), keepdims=True),
                          1.0 / self.power)
        illum = illum / (ops.sqrt(ops.sum(ops.square(illum), axis=-1, keepdims=True)) + 1e-6)
        out = x / (illum * math.sqrt(3.0) + 1e-6)
        return ops.cast(ops.clip(out, 0.0, 255.0), self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "power": self.power}


@keras.saving.register_keras_serializable(package="skinlesion")
class MalignantProbability(keras.layers.Layer):
    """``(N, K)`` class probabilities → ``(N, 1 + K)``: P(malignant) first, then the classes.

    Args:
        malignant: One 0/1 flag per class (1 = the class counts as malignant).
    """

    def __init__(self, malignant: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.malignant = [int(bool(v)) for v in malignant]
        if not any(self.malignant) or all(self.malignant):
            raise ValueError("malignant must flag at least one class and leave at least one out")

    def call(self, inputs: Any) -> Any:
        probs = ops.cast(inputs, "float32")
        mask = ops.convert_to_tensor([float(v) for v in self.malignant], dtype="float32")
        p_mal = ops.sum(probs * mask, axis=-1, keepdims=True)
        return ops.concatenate([p_mal, probs], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], input_shape[-1] + 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "malignant": list(self.malignant)}


@keras.saving.register_keras_serializable(package="skinlesion")
class TakeColumns(keras.layers.Layer):
    """``x[..., start:stop]`` as a serializable layer (ensembles keep P(malignant) only).

    Args:
        start: First column.
        stop: One past the last column.
    """

    def __init__(self, start: int = 0, stop: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs: Any) -> Any:
        return inputs[..., self.start:self.stop]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "stop": self.stop}
