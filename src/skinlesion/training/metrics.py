"""Keras metrics for the diagnosis head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="skinlesion")
class MalignantAUC(keras.metrics.AUC):
    """ROC/PR AUC of P(malignant) = Σ malignant-class probabilities, from a softmax head.

    ``y_true`` holds class indices, ``y_pred`` class probabilities; both are turned into
    the malignant bit and its probability before the ordinary ``keras.metrics.AUC`` update.

    Args:
        malignant: One 0/1 flag per class.
        **kwargs: Passed to ``keras.metrics.AUC`` (``name``, ``curve``, ``num_thresholds``).
    """

    def __init__(self, malignant: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.malignant = [int(bool(v)) for v in malignant]

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        mask = ops.convert_to_tensor([float(v) for v in self.malignant], dtype="float32")
        idx = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        truth = ops.take(mask, idx)
        prob = ops.sum(ops.cast(y_pred, "float32") * mask, axis=-1)
        return super().update_state(truth, prob, sample_weight=sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "malignant": list(self.malignant)}
