"""What a backbone is: the frozen ``BackboneSpec``, and the table of registered specs.

``registry.py`` is the public face (``get_backbone``, ``list_backbones``,
``register_backbone``); this module holds what the built-in specs in ``backbones.py`` need
to register themselves, so neither imports the other in a loop.
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


REGISTERED: dict[str, BackboneSpec] = {}
"""Name → spec of every registered backbone (filled by ``register_backbone``)."""


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (a name may be registered once)."""
    if spec.name in REGISTERED:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    REGISTERED[spec.name] = spec
    return spec
