"""The backbone registry: every pretrained CNN is described once by a frozen spec.

``register_backbone`` adds a ``BackboneSpec``; ``get_backbone`` looks one up
(an unknown name fails listing the valid ones); ``list_backbones`` feeds the
CLI's choices; ``build_backbone`` constructs the feature extractor.
No code anywhere branches on backbone names: differences live in the spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Importing the built-in specs registers them.
from skinlesion.models import backbones  # noqa: F401
from skinlesion.models.spec import (
    REGISTERED,
    BackboneSpec,
    UnknownBackboneError,
    WeightsArg,
    register_backbone,
)

if TYPE_CHECKING:
    import keras

__all__ = [
    "DEFAULT_BACKBONE",
    "BackboneSpec",
    "UnknownBackboneError",
    "WeightsArg",
    "build_backbone",
    "get_backbone",
    "list_backbones",
    "register_backbone",
]

DEFAULT_BACKBONE = "efficientnet_lite0"


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(REGISTERED)


def get_backbone(name: str) -> BackboneSpec:
    """Look up a backbone by name.

    Raises:
        UnknownBackboneError: if ``name`` is not registered; the message lists valid names.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in REGISTERED:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(sorted(REGISTERED))}"
        )
    return REGISTERED[key]


def build_backbone(
    name: str, input_size: int | None = None, weights: WeightsArg = "imagenet"
) -> keras.Model:
    """Build the convolutional trunk of backbone ``name``.

    Args:
        name: Registry name.
        input_size: Square input size; defaults to the spec's ``input_size``.
        weights: ``"imagenet"``, a local weights file, or ``None``. Defaults to ``"imagenet"``.

    Returns:
        A Keras model mapping preprocessed ``(N, S, S, 3)`` input to a 4-D feature map.
    """
    spec = get_backbone(name)
    size = input_size or spec.input_size
    return spec.constructor((size, size, 3), weights)
