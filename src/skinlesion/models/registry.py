"""The backbone registry: every pretrained CNN is described once by a frozen spec.

``register_backbone`` adds a ``BackboneSpec``; ``get_backbone`` looks one up
(an unknown name fails listing the valid ones); ``list_backbones`` feeds the
CLI's choices; ``build_backbone`` constructs the feature extractor.
No code anywhere branches on backbone names: differences live in the spec.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

WeightsArg = str | os.PathLike[str] | None
"""``"imagenet"``, a path to a local weights file, or ``None`` for random init."""


class UnknownBackboneError(KeyError):
    """Raised for a backbone name that is not registered; lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the rest of the package needs to know about one backbone.

    Attributes:
        name: Registry name (lower case, e.g. ``"efficientnet_lite0"``).
        constructor: ``(input_shape, weights) -> keras.Model`` returning the
            convolutional trunk without its classification head and without pooling;
            it takes *preprocessed* input (see ``preprocessing``).
        input_size: Default square input size in pixels.
        preprocessing: Mode of ``skinlesion.models.preprocessing.Preprocess`` that turns
            raw 0–255 RGB into what ``constructor``'s model expects.
        feature_dim: Channels of the trunk's last feature map (= pooled feature size).
        last_conv_layer: Name of the layer inside the trunk whose output Grad-CAM uses.
        layer_groups: Layer-name prefixes of the trunk's blocks, from input to output;
            staged fine-tuning unfreezes groups from the end of this tuple.
        weights_source: Human-readable origin of the ImageNet weights.
        family: ``"keras.applications"`` or ``"efficientnet_lite"``.
        weights_status: ``() -> str`` telling whether ImageNet weights are available now:
            ``"installed"``, ``"cached"``, ``"download"`` or ``"unavailable"``.
        extra: Free-form notes (licence, paper) shown by ``skinlesion backbones``;
            ``extra["params"]`` is the trunk's parameter count (checked by a test).
        min_input_size: Smallest square input the architecture accepts. Defaults to 32.
    """

    name: str
    constructor: Callable[[tuple[int, int, int], WeightsArg], keras.Model]
    input_size: int
    preprocessing: str
    feature_dim: int
    last_conv_layer: str
    layer_groups: tuple[str, ...]
    weights_source: str
    family: str
    weights_status: Callable[[], str]
    extra: dict[str, Any] = field(default_factory=dict)
    min_input_size: int = 32

    def layer_group(self, layer_name: str) -> int | None:
        """Index in ``layer_groups`` of the group that ``layer_name`` belongs to.

        The *longest* matching prefix wins, so nested names resolve to their own
        block (MobileNetV3: ``conv_1_bn`` is in ``conv_1``, not the stem's ``conv``;
        ``expanded_conv_10_add`` in ``expanded_conv_10_``, not ``expanded_conv_1_``).
        Returns None for a name no prefix matches.
        """
        best: int | None = None
        for i, prefix in enumerate(self.layer_groups):
            if layer_name.startswith(prefix) and (
                best is None or len(prefix) > len(self.layer_groups[best])
            ):
                best = i
        return best

    def top_group_layers(self, trunk: keras.Model, n: int) -> list[keras.Layer]:
        """The trunk's layers in the last ``n`` groups (what staged fine-tuning unfreezes)."""
        first = len(self.layer_groups) - max(0, n)
        out = []
        for layer in trunk.layers:
            group = self.layer_group(layer.name)
            if group is not None and group >= first:
                out.append(layer)
        return out


_REGISTRY: dict[str, BackboneSpec] = {}
_BUILTINS_LOADED = False
DEFAULT_BACKBONE = "efficientnet_lite0"


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (a name may be registered once)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # The built-in specs live in their own module; importing it registers them.
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from skinlesion.models import backbones  # noqa: F401


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """Look up a backbone by name.

    Raises:
        UnknownBackboneError: if ``name`` is not registered; the message lists valid names.
    """
    _ensure_loaded()
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[key]


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
