"""One classifier builder for every backbone (the tutorials' head on a registry trunk).

    image (raw 0–255 RGB, float32) → Preprocess → backbone trunk → GlobalAveragePooling2D
      → Dropout → Dense(1, sigmoid, float32)

Layer names are part of the contract: ``preprocess``, ``backbone``, ``pool``,
``dropout``, ``head``. Grad-CAM, staged unfreezing and the frozen-feature
trainer find the parts by these names. The trunk is always *called* in
inference mode, so its BatchNorm statistics stay frozen while its weights
fine-tune (the standard Keras transfer-learning recipe: small batches on a CPU
would otherwise wreck the ImageNet statistics).
"""

from __future__ import annotations

from typing import Any

import keras

from skinlesion.models.preprocessing import Preprocess
from skinlesion.models.registry import WeightsArg, get_backbone

INPUT_NAME = "image"
PREPROCESS_NAME = "preprocess"
BACKBONE_NAME = "backbone"
POOL_NAME = "pool"
DROPOUT_NAME = "dropout"
HEAD_NAME = "head"


def build_classifier(
    backbone: str,
    input_size: int | None = None,
    weights: WeightsArg = "imagenet",
    dropout: float = 0.3,
    preprocessing: str | None = None,
) -> keras.Model:
    """Build the full classifier for ``backbone``.

    Args:
        backbone: Registry name of the backbone.
        input_size: Square input size; defaults to the backbone's.
        weights: ``"imagenet"``, a local weights file, or ``None``. Defaults to ``"imagenet"``.
        dropout: Dropout rate before the head. Defaults to 0.3.
        preprocessing: Override of the spec's preprocessing mode (tutorial 1 used
            ``"unit"``, i.e. [0, 1] scaling). Defaults to the backbone's own.

    Returns:
        An uncompiled ``keras.Model`` mapping ``(N, S, S, 3)`` raw RGB to ``(N, 1)`` P(malignant).
    """
    spec = get_backbone(backbone)
    size = int(input_size or spec.input_size)
    trunk = spec.constructor((size, size, 3), weights)
    trunk.name = BACKBONE_NAME
    inputs = keras.Input((size, size, 3), name=INPUT_NAME, dtype="float32")
    x = Preprocess(preprocessing or spec.preprocessing, name=PREPROCESS_NAME)(inputs)
    x = trunk(x, training=False)
    features = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(x)
    outputs = _head(features, dropout)
    return keras.Model(inputs, outputs, name=f"skinlesion_{spec.name}")


def build_head(feature_dim: int, dropout: float = 0.3) -> keras.Model:
    """The head alone (pooled features → probability), for training on cached features.

    Its ``dropout`` and ``head`` layers carry the same names and shapes as the full
    classifier's, so weights copy across with ``copy_head_weights``.
    """
    inputs = keras.Input((feature_dim,), name="features", dtype="float32")
    return keras.Model(inputs, _head(inputs, dropout), name="skinlesion_head")


def _head(features: Any, dropout: float) -> Any:
    x = keras.layers.Dropout(dropout, name=DROPOUT_NAME)(features)
    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=HEAD_NAME)(x)


def copy_head_weights(src: keras.Model, dst: keras.Model) -> None:
    """Copy the ``head`` Dense weights from ``src`` to ``dst`` (head model ↔ classifier)."""
    dst.get_layer(HEAD_NAME).set_weights(src.get_layer(HEAD_NAME).get_weights())


def feature_extractor(model: keras.Model) -> keras.Model:
    """The classifier up to the pooled features (``preprocess`` → ``backbone`` → ``pool``)."""
    return keras.Model(model.inputs, model.get_layer(POOL_NAME).output, name="features")
