"""Training augmentation as stateless TensorFlow ops: the same seed gives the same images.

Each image gets its own seed pair, derived from the run seed, the epoch and the
image's index, so the augmented stream does not depend on thread scheduling and
a resumed run sees exactly the images an uninterrupted one would.

Geometry (rotation, zoom and random resized crop) is one affine warp with
reflected borders; then flips and transposition (together the 8 dihedral views:
dermoscopic images have no canonical orientation); then brightness, contrast,
saturation and hue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly training augmentation (tutorial 2's set plus colour and crops).

    Attributes:
        enabled: Augment training images. Defaults to True.
        rotation_deg: Maximum rotation in degrees (tutorial 2: 15).
        zoom: Maximum relative zoom in/out (tutorial 2: 0.05).
        flip: Random horizontal and vertical flips.
        transpose: Random transposition (with flips: all 8 dihedral views).
        brightness: Maximum brightness delta on the 0–1 scale.
        contrast: Maximum relative contrast change.
        saturation: Maximum relative saturation change.
        hue: Maximum hue delta.
        crop_scale: Minimum area fraction kept by the random resized crop (1.0 disables).
    """

    enabled: bool = True
    rotation_deg: float = 15.0
    zoom: float = 0.05
    flip: bool = True
    transpose: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    crop_scale: float = 0.8

    def validate(self) -> AugmentConfig:
        """Check the ranges the augmentation ops accept; return self.

        Raises:
            ValueError: naming the key (``augment.<field>``) and its range.
        """
        for name in ("rotation_deg", "zoom", "brightness", "contrast", "saturation", "hue"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be ≥ 0, got {getattr(self, name)}")
        if self.zoom >= 1.0:
            raise ValueError(f"augment.zoom must be < 1, got {self.zoom}")
        for name in ("contrast", "saturation"):  # the lower factor 1 - x must stay ≥ 0
            if getattr(self, name) > 1.0:
                raise ValueError(f"augment.{name} must be ≤ 1, got {getattr(self, name)}")
        if self.hue > 0.5:
            raise ValueError(f"augment.hue must be ≤ 0.5, got {self.hue}")
        if self.crop_scale <= 0.0:
            raise ValueError(f"augment.crop_scale must be > 0, got {self.crop_scale}")
        return self


def augment_image(image: Any, seed: Any, cfg: AugmentConfig) -> Any:
    """Augment one square RGB image.

    Args:
        image: ``(S, S, 3)`` tensor, 0–255.
        seed: ``(2,)`` int tensor; the same seed gives the same output.
        cfg: Which augmentations and how strong.

    Returns:
        ``(S, S, 3)`` float32 tensor, 0–255.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=10)
    image = _affine(image, seeds, cfg)
    if cfg.flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[4])
        image = tf.image.stateless_random_flip_up_down(image, seeds[5])
    if cfg.transpose:
        do = tf.random.stateless_uniform([], seeds[6]) < 0.5
        image = tf.cond(do, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        x = image / 255.0
        if cfg.brightness:
            x = tf.image.stateless_random_brightness(x, cfg.brightness, seeds[7])
        if cfg.contrast:
            x = tf.image.stateless_random_contrast(x, 1 - cfg.contrast, 1 + cfg.contrast, seeds[8])
        if cfg.saturation:
            x = tf.image.stateless_random_saturation(
                x, 1 - cfg.saturation, 1 + cfg.saturation, seeds[9])
        if cfg.hue:
            x = tf.image.stateless_random_hue(x, cfg.hue, seeds[3])
        image = tf.clip_by_value(x, 0.0, 1.0) * 255.0
    return image


def _affine(image: Any, seeds: Any, cfg: AugmentConfig) -> Any:
    import tensorflow as tf

    if not (cfg.rotation_deg or cfg.zoom or cfg.crop_scale < 1.0):
        return image
    size = tf.cast(tf.shape(image)[0], tf.float32)
    c = (size - 1.0) / 2.0
    theta = tf.random.stateless_uniform([], seeds[0], -1.0, 1.0) * (cfg.rotation_deg * math.pi / 180)
    zoom = tf.random.stateless_uniform([], seeds[1], 1.0 - cfg.zoom, 1.0 + cfg.zoom)
    # Random resized crop: sample a square window covering `area` of the image.
    area = tf.random.stateless_uniform([], seeds[2], min(cfg.crop_scale, 1.0), 1.0)
    s = tf.sqrt(area) / zoom  # input pixels per output pixel
    free = tf.maximum(1.0 - tf.sqrt(area), 0.0) * size / 2.0
    t = tf.random.stateless_uniform([2], seeds[3], -1.0, 1.0) * free
    cos, sin = tf.cos(theta) * s, tf.sin(theta) * s
    # Output (x, y) → input: centre, rotate+scale, re-centre, shift.
    transform = tf.stack([
        cos, -sin, c - cos * c + sin * c + t[0],
        sin, cos, c - sin * c - cos * c + t[1],
        0.0, 0.0,
    ])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None],
        output_shape=tf.shape(image)[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )
    return out[0]
