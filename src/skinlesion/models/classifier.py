"""One classifier builder for every backbone (the tutorials' head on a registry trunk).

    image (raw 0–255 RGB, float32) → [ShadesOfGray] → Preprocess → backbone trunk
      → GlobalAveragePooling2D → Dropout ─┬─────────────→ Dense(1, sigmoid)          binary
    metadata (encoded age/sex/site) → Dense(16, relu) ┘ (Concatenate) → Dense(K, softmax)
      → MalignantProbability → [P(malignant), P(class 0), …]                          diagnosis

Layer names are part of the contract: ``color_constancy``, ``preprocess``, ``backbone``,
``pool``, ``dropout``, ``metadata_dense``, ``fusion``, ``head``, ``malignant_probability``. Grad-CAM, staged unfreezing and the frozen-feature
trainer find the parts by these names. The trunk is always *called* in
inference mode, so its BatchNorm statistics stay frozen while its weights
fine-tune (the standard Keras transfer-learning recipe: small batches on a CPU
would otherwise wreck the ImageNet statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from skinlesion.models.layers import MalignantProbability, ShadesOfGray
from skinlesion.models.preprocessing import Preprocess
from skinlesion.models.registry import WeightsArg, get_backbone

INPUT_NAME = "image"
METADATA_INPUT = "metadata"
COLOR_NAME = "color_constancy"
PREPROCESS_NAME = "preprocess"
BACKBONE_NAME = "backbone"
POOL_NAME = "pool"
DROPOUT_NAME = "dropout"
METADATA_DENSE = "metadata_dense"
FUSION_NAME = "fusion"
HEAD_NAME = "head"
MALIGNANT_NAME = "malignant_probability"
METADATA_UNITS = 16


def build_classifier(
    backbone: str,
    input_size: int | None = None,
    weights: WeightsArg = "imagenet",
    dropout: float = 0.3,
    preprocessing: str | None = None,
    *,
    malignant: Sequence[int] | None = None,
    metadata_dim: int = 0,
    color_constancy: bool = False,
) -> keras.Model:
    """Build the full classifier for ``backbone``.

    Args:
        backbone: Registry name of the backbone.
        input_size: Square input size; defaults to the backbone's.
        weights: ``"imagenet"``, a local weights file, or ``None``. Defaults to ``"imagenet"``.
        dropout: Dropout rate before the head. Defaults to 0.3.
        preprocessing: Override of the spec's preprocessing mode (tutorial 1 used
            ``"unit"``, i.e. [0, 1] scaling). Defaults to the backbone's own.
        malignant: For a diagnosis head, one 0/1 flag per class; None = binary head.
        metadata_dim: Length of the encoded clinical metadata input (0 = image only).
        color_constancy: Apply Shades-of-Gray colour constancy (p = 6) inside the model.

    Returns:
        An uncompiled ``keras.Model``: raw RGB ``(N, S, S, 3)`` (plus ``(N, metadata_dim)``
        metadata when ``metadata_dim``) → ``(N, 1)`` P(malignant), or ``(N, 1 + K)``
        ``[P(malignant), P(class 0), …]`` for a diagnosis head.
    """
    spec = get_backbone(backbone)
    size = int(input_size or spec.input_size)
    trunk = spec.constructor((size, size, 3), weights)
    trunk.name = BACKBONE_NAME
    image = keras.Input((size, size, 3), name=INPUT_NAME, dtype="float32")
    x = ShadesOfGray(6.0, name=COLOR_NAME)(image) if color_constancy else image
    x = Preprocess(preprocessing or spec.preprocessing, name=PREPROCESS_NAME)(x)
    x = trunk(x, training=False)
    features = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(x)
    inputs: list[Any] = [image]
    meta = None
    if metadata_dim:
        meta = keras.Input((metadata_dim,), name=METADATA_INPUT, dtype="float32")
        inputs.append(meta)
    outputs = _head(features, meta, dropout, malignant)
    return keras.Model(inputs if meta is not None else image, outputs,
                       name=f"skinlesion_{spec.name}")


def build_head(feature_dim: int, dropout: float = 0.3, *, malignant: Sequence[int] | None = None,
               metadata_dim: int = 0) -> keras.Model:
    """The head alone (pooled features [+ metadata] → output), for training on cached features.

    Its layers carry the same names and shapes as the full classifier's, so weights copy
    across with ``copy_head_weights``. Its output is the head's own (sigmoid or softmax),
    i.e. what ``training_view`` of the classifier outputs.
    """
    features = keras.Input((feature_dim,), name="features", dtype="float32")
    meta = keras.Input((metadata_dim,), name=METADATA_INPUT, dtype="float32") if metadata_dim else None
    out = _head(features, meta, dropout, malignant, wrap=False)
    inputs = [features, meta] if meta is not None else features
    return keras.Model(inputs, out, name="skinlesion_head")


def _head(features: Any, meta: Any, dropout: float, malignant: Sequence[int] | None,
          wrap: bool = True) -> Any:
    x = keras.layers.Dropout(dropout, name=DROPOUT_NAME)(features)
    if meta is not None:
        m = keras.layers.Dense(METADATA_UNITS, activation="relu", name=METADATA_DENSE)(meta)
        x = keras.layers.Concatenate(name=FUSION_NAME)([x, m])
    if malignant is None:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=HEAD_NAME)(x)
    probs = keras.layers.Dense(len(malignant), activation="softmax", dtype="float32",
                               name=HEAD_NAME)(x)
    return MalignantProbability(malignant, name=MALIGNANT_NAME)(probs) if wrap else probs


def training_view(model: keras.Model) -> keras.Model:
    """The model as it is trained: same inputs, the head's own output (sigmoid or softmax).

    For a binary classifier this is the model itself; for a diagnosis classifier it drops
    the final ``[P(malignant), …]`` wrapper so the loss sees the softmax.
    """
    head = model.get_layer(HEAD_NAME).output
    if head is model.outputs[0]:
        return model
    return keras.Model(model.inputs, head, name=f"{model.name}_train")


def copy_head_weights(src: keras.Model, dst: keras.Model) -> None:
    """Copy the ``head`` (and ``metadata_dense``) weights from ``src`` to ``dst``."""
    for name in (HEAD_NAME, METADATA_DENSE):
        try:
            layer = src.get_layer(name)
        except ValueError:
            continue
        dst.get_layer(name).set_weights(layer.get_weights())


def feature_extractor(model: keras.Model) -> keras.Model:
    """The classifier up to the pooled features (image → ``preprocess`` → ``backbone`` → ``pool``)."""
    return keras.Model(model.get_layer(INPUT_NAME).output, model.get_layer(POOL_NAME).output,
                       name="features")


def model_metadata_dim(model: keras.Model) -> int:
    """Length of the model's metadata input (0 when it takes the image only)."""
    for tensor in model.inputs:
        if tensor.name == METADATA_INPUT:
            return int(tensor.shape[-1])
    return 0
