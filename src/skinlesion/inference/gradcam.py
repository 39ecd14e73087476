"""Grad-CAM heatmaps: where in the image the model's malignant score comes from.

Grad-CAM (Selvaraju et al., 2017) weights each channel of a convolutional feature
map by the spatial mean of the gradient of the class score with respect to it,
sums, and keeps the positive part. Here the score is the head's *logit* for
"malignant" (not the sigmoid probability, whose gradient vanishes when the model
is confident) and the feature map is ``ModelSpec.last_conv_layer`` inside the nested
``backbone`` trunk. The trunk is rebuilt as a two-output model (that layer's output
and the trunk's output) on the same weights; the classifier's own ``preprocess``,
``pool``, ``dropout`` (inference mode) and ``head`` layers finish the forward pass, so
the heatmap explains exactly the model that predicts.

    cam = GradCam.from_spec(model, spec)      # or predictor.gradcam for a loaded run
    heat = cam.heatmaps(x)                     # (N, S, S) in [0, 1]
    save_png("cam.png", overlay(photo, heat[0]))

**Relative to the decision threshold.** The original Grad-CAM keeps locations whose
linearised contribution to the logit is positive, i.e. it compares them with p = 0.5.
A sensitivity-first threshold sits far below 0.5 (0.15 is common), so a photo called
malignant at p = 0.19 gets an *empty* map: no location beats 0.5. ``from_spec``
therefore measures each location against the run's threshold instead. With Grad-CAM's
channel weights ``w`` and the feature map ``A`` on an ``h × w`` grid, the logit is
``Σ_loc Σ_k w_k A_k(loc) + c`` to first order (exactly, with ``c`` the head's bias, when
the layer feeds the pooling directly; the registered layers sit just before each trunk's
last BatchNorm/activation, where it is Grad-CAM's usual approximation). An image in
which every location looked like ``loc`` would get the logit
``h·w·(cam(loc) − mean cam) + logit``, and the map is
``ReLU(h·w·(cam − mean cam) + logit − logit(threshold))``: the regions that push the
score above the operating point. Its mean is ``logit − logit(threshold)``, so every
positive decision has a non-empty map, and a negative one can still show the regions
that argued for malignancy. ``GradCam(model, layer)`` without a threshold is the paper's
Grad-CAM.

Maps are normalised to a peak of 1 per image (an all-zero map stays 0) and computed on
the identity view only, whatever TTA the prediction used.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from skinlesion.models.classifier import (
    BACKBONE_NAME,
    COLOR_NAME,
    DROPOUT_NAME,
    HEAD_NAME,
    POOL_NAME,
    PREPROCESS_NAME,
)
from skinlesion.utils.atomic import atomic_path

if TYPE_CHECKING:
    import keras

    from skinlesion.runspec import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_CMAP = "jet"
DEFAULT_ALPHA = 0.45


class GradCamError(ValueError):
    """A model whose structure does not allow Grad-CAM (missing layer, subclassed trunk)."""


class GradCam:
    """Grad-CAM for a ``build_classifier`` model.

    Args:
        model: The classifier (layers ``preprocess``, ``backbone``, ``pool``, ``dropout``, ``head``).
        layer_name: Layer inside the ``backbone`` trunk whose output is explained (the
            spec's ``last_conv_layer``).
        threshold: If given, the map is relative to this decision threshold (see the module
            docstring); None gives the original Grad-CAM. Defaults to None.

    Raises:
        GradCamError: if the model lacks a named part or the layer is not in the trunk.
    """

    def __init__(self, model: keras.Model, layer_name: str, threshold: float | None = None
                 ) -> None:
        import keras
        import tensorflow as tf

        try:
            self._pre = model.get_layer(PREPROCESS_NAME)
            trunk = model.get_layer(BACKBONE_NAME)
            self._pool = model.get_layer(POOL_NAME)
            self._dropout = model.get_layer(DROPOUT_NAME)
            head = model.get_layer(HEAD_NAME)
        except ValueError as exc:
            raise GradCamError(f"Grad-CAM needs a skinlesion classifier: {exc}") from exc
        try:
            conv = trunk.get_layer(layer_name)
        except ValueError as exc:
            names = [layer.name for layer in trunk.layers[-8:]]
            raise GradCamError(f"layer {layer_name!r} is not in the backbone {trunk.name!r} "
                               f"(its last layers: {names})") from exc
        try:
            # Same layers, same weights: a view of the trunk with a second output.
            self._trunk = keras.Model(trunk.inputs, [conv.output, trunk.output],
                                      name="gradcam_trunk")
        except (AttributeError, ValueError) as exc:
            raise GradCamError(f"backbone {trunk.name!r} is not a functional model; "
                               f"Grad-CAM cannot reach layer {layer_name!r} ({exc})") from exc
        self.layer_name = layer_name
        self.threshold = threshold
        # The threshold as a logit; clipped so 0 and 1 stay finite.
        t = None if threshold is None else min(max(float(threshold), 1e-6), 1 - 1e-6)
        self._threshold_logit = None if t is None else float(np.log(t / (1 - t)))
        self.input_size = int(model.inputs[0].shape[1])
        self._kernel, self._bias, exact = _image_logit(model, head, int(self._pool.output.shape[-1]))
        if not exact:  # metadata or diagnosis head: the threshold is not on this logit's scale
            self._threshold_logit = None
        try:
            self._cc: Any = model.get_layer(COLOR_NAME)
        except ValueError:
            self._cc = None
        self._lock = threading.Lock()
        size = self.input_size
        spec = tf.TensorSpec((None, size, size, 3), tf.float32)
        self._compute = tf.function(self._graph, input_signature=[spec])

    @classmethod
    def from_spec(cls, model: keras.Model, spec: ModelSpec) -> GradCam:
        """Grad-CAM for a run's model, at the layer its spec names (or the registry's default
        for its backbone), relative to the spec's decision threshold.

        Args:
            model: The run's Keras classifier.
            spec: Its ``ModelSpec`` (``last_conv_layer``, ``backbone``, ``threshold``).
        """
        layer = spec.last_conv_layer
        if not layer:
            from skinlesion.models.registry import get_backbone

            layer = get_backbone(spec.backbone).last_conv_layer
        return cls(model, layer, threshold=float(spec.threshold))

    def _graph(self, images: Any) -> Any:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            x = self._cc(images) if self._cc is not None else images
            feats, out = self._trunk(self._pre(x), training=False)
            pooled = self._pool(out)
            pooled = self._dropout(pooled, training=False)
            # The head's logit: sigmoid would squash the gradient of confident predictions.
            logit = tf.squeeze(tf.matmul(tf.cast(pooled, tf.float32), self._kernel) + self._bias, -1)
        grads = tape.gradient(logit, feats)
        feats = tf.cast(feats, tf.float32)
        grads = tf.cast(grads, tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel
        cam = tf.reduce_sum(weights * feats, axis=-1)                 # (N, h, w)
        if self._threshold_logit is not None:
            # Each location's share of the logit, relative to the threshold's logit:
            # h·w·(cam − mean cam) + (logit − logit_t). Exact at the trunk's last layer.
            cells = tf.cast(tf.shape(cam)[1] * tf.shape(cam)[2], tf.float32)
            centred = cells * (cam - tf.reduce_mean(cam, axis=(1, 2), keepdims=True))
            cam = centred + (logit - self._threshold_logit)[:, None, None]
        cam = tf.nn.relu(cam)
        up = tf.image.resize(cam[..., None], (self.input_size, self.input_size),
                             method="bilinear")[..., 0]
        peak = tf.reduce_max(up, axis=(1, 2), keepdims=True)
        # An all-zero map (nothing argues for "malignant") stays zero instead of 0/0.
        up = tf.math.divide_no_nan(up, peak)
        return tf.clip_by_value(up, 0.0, 1.0), tf.sigmoid(logit)

    def heatmaps(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Grad-CAM maps for model-sized images.

        Args:
            images: ``(N, S, S, 3)`` float 0–255 RGB (``to_model_input`` output).
            batch_size: Images per gradient pass. Defaults to 16.

        Returns:
            ``(N, S, S)`` float32 maps in [0, 1] (1 = the strongest evidence for malignant).
        """
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected images of shape (N, {self.input_size}, "
                             f"{self.input_size}, 3), got {x.shape}")
        out = []
        with self._lock:
            for start in range(0, len(x), batch_size):
                cam, _ = self._compute(x[start:start + batch_size])
                out.append(np.asarray(cam, dtype=np.float32))
        maps = np.concatenate(out) if out else np.zeros((0, self.input_size, self.input_size),
                                                        np.float32)
        return np.nan_to_num(maps, nan=0.0, posinf=1.0, neginf=0.0)

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """Grad-CAM map ``(S, S)`` for one model-sized image ``(S, S, 3)``."""
        return self.heatmaps(np.asarray(image)[None])[0]


# === Display ===

def overlay(image: Any, heatmap: np.ndarray, *, alpha: float = DEFAULT_ALPHA,
            cmap: str = DEFAULT_CMAP, max_side: int | None = 1024) -> np.ndarray:
    """Blend a heatmap over an image with a matplotlib colormap.

    The heatmap (from the square model input) is stretched back to the image's own
    aspect ratio: ``to_model_input`` squashes the whole image without cropping, so that
    is the exact inverse mapping.

    Args:
        image: The photo: a PIL image or an ``(H, W, 3)`` array (uint8, or float 0–255).
        heatmap: ``(h, w)`` map in [0, 1].
        alpha: Weight of the heatmap colour where the map is 1 (scaled down with the map,
            so cold regions leave the photo visible). Defaults to 0.45.
        cmap: Matplotlib colormap name. Defaults to ``"jet"``.
        max_side: Downscale the photo so its longer side is at most this (``None`` keeps it).

    Returns:
        ``(H', W', 3)`` uint8 RGB.
    """
    from matplotlib import colormaps

    pil = image if isinstance(image, Image.Image) else Image.fromarray(
        np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8))
    pil = pil.convert("RGB")
    if max_side and max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    w, h = pil.size
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    heat_img = Image.fromarray(heat, mode="F").resize((w, h), Image.Resampling.BILINEAR)
    heat = np.clip(np.asarray(heat_img, dtype=np.float32), 0.0, 1.0)
    colour = colormaps[cmap](heat)[..., :3] * 255.0
    weight = (alpha * (0.25 + 0.75 * heat))[..., None]
    base = np.asarray(pil, dtype=np.float32)
    return np.clip(base * (1.0 - weight) + colour * weight, 0, 255).round().astype(np.uint8)


def heatmap_panel(image: Any, heatmap: np.ndarray, *, title: str, alpha: float = DEFAULT_ALPHA,
                  cmap: str = DEFAULT_CMAP, max_side: int = 640, dpi: int = 100) -> np.ndarray:
    """The photo beside its Grad-CAM overlay, with a colour bar and a title (one RGB image).

    What ``predict --cam`` writes: an overlay alone hides the lesion it is drawn over and
    does not say what the colours or the score were.

    Args:
        image: The photo (PIL image or ``(H, W, 3)`` array).
        heatmap: ``(h, w)`` map in [0, 1].
        title: Shown above both panels, e.g. the probability and the decision.
        alpha: Overlay weight (see :func:`overlay`).
        cmap: Matplotlib colormap name.
        max_side: Longer side of each panel in pixels at most.
        dpi: Rendering resolution.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    blended = overlay(image, heatmap, alpha=alpha, cmap=cmap, max_side=max_side)
    h, w = blended.shape[:2]
    photo = np.asarray(_as_rgb_image(image).resize((w, h)), dtype=np.uint8)
    panel_w = 4.0
    fig = Figure(figsize=(2 * panel_w + 0.9, panel_w * h / w + 0.8), dpi=dpi, layout="compressed")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, img, label in ((axes[0], photo, "photo"), (axes[1], blended, "Grad-CAM overlay")):
        ax.imshow(img)
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap=cmap), ax=axes, shrink=0.8,
                       fraction=0.04, pad=0.02)
    bar.set_label("evidence for malignant (1 = this image's strongest)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
    return np.array(rgba[..., :3], dtype=np.uint8)


def _as_rgb_image(image: Any) -> Any:

    pil = image if isinstance(image, Image.Image) else Image.fromarray(
        np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8))
    return pil.convert("RGB")


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG."""


    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write ``rgb`` as a PNG at ``path`` atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(png_bytes(rgb))
    return Path(path)


def _image_logit(model: Any, head: Any, n_features: int) -> tuple[Any, Any, bool]:
    """The linear score Grad-CAM explains, on the pooled image features only.

    Binary image-only head: its own kernel and bias (the logit of P(malignant), exact).
    With clinical metadata the head also sees the metadata branch; its part of the logit
    does not depend on the image, so only the image features' rows of the kernel are kept.
    A diagnosis head has one logit per class: the score is the mean logit of the malignant
    classes minus the mean logit of the benign ones (what pushes P(malignant) up).

    Returns:
        ``(kernel (F, 1), bias (1,), exact)`` as float32 constants; ``exact`` is False when
        the score is not the logit of P(malignant) itself.
    """
    import tensorflow as tf

    kernel = np.asarray(head.kernel, np.float32)
    bias = np.asarray(head.bias, np.float32)
    exact = kernel.shape == (n_features, 1)
    kernel = kernel[:n_features]
    if kernel.shape[1] > 1:
        from skinlesion.models.classifier import MALIGNANT_NAME

        mal = np.asarray(model.get_layer(MALIGNANT_NAME).malignant, bool)
        kernel = (kernel[:, mal].mean(1) - kernel[:, ~mal].mean(1))[:, None]
        bias = np.asarray([bias[mal].mean() - bias[~mal].mean()], np.float32)
    return tf.constant(kernel), tf.constant(bias), exact
