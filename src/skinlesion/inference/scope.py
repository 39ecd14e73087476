"""Out-of-scope inputs: images that are not plausibly a dermoscopic photograph.

A file that decodes is not thereby a skin photo. A 1×1 px image, a 20:1 strip or a
flat grey square would still get a probability from the model — a number with no
meaning. :class:`ScopeRule` states, before the model runs, when an image gets the
answer *out of scope* instead of a probability. It is applied in one place,
:meth:`skinlesion.inference.predictor.Predictor.decode`, which ``skinlesion predict``,
``Predictor.predict_files``/``predict_bytes`` and the service all go through.

The rule (defaults; all configurable, ``None`` disables one check):

* **shorter side ≥ 32 px** — smaller is a thumbnail or an icon, not a photo;
* **aspect ratio ≤ 4** (longer side / shorter side) — a banner or a strip;
* **pixel standard deviation ≥ 2.0** (grey levels 0–255, on the image as decoded for
  the model) — a near-constant image. Measured on the 2,587 isic-dev photos: the lowest
  is 5.0, the 1st percentile 9.3, the median 24.8; no isic-dev photo is out of scope
  (``test_no_isic_dev_photo_is_out_of_scope``).

This is a plausibility guard, not a quality check: an in-scope image may still be a
poor or non-dermoscopic photo.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageStat

from skinlesion.data.images import ImageError

OUT_OF_SCOPE = "out of scope"
"""The start of every out-of-scope message (and the decision reported for such rows)."""


class OutOfScopeError(ImageError):
    """An image that decodes but is not plausibly a skin photo; ``reason`` says which rule."""


@dataclass(frozen=True)
class ScopeRule:
    """When an image is answered *out of scope* instead of with a probability.

    Attributes:
        min_side: Smallest accepted shorter side, in pixels of the original image.
        max_aspect: Largest accepted longer-side / shorter-side ratio.
        min_std: Smallest accepted standard deviation of the grey levels (0–255).
    """

    min_side: int | None = 32
    max_aspect: float | None = 4.0
    min_std: float | None = 2.0

    def reason(self, image: Image.Image, original_size: tuple[int, int] | None = None) -> str | None:
        """Why ``image`` is out of scope, or None if it is in scope.

        Args:
            image: The decoded image (possibly reduced for the model).
            original_size: ``(width, height)`` before any reduction (defaults to
                ``image.size``); the size rules apply to it.
        """
        w, h = original_size or image.size
        short, long = min(w, h), max(w, h)
        if self.min_side is not None and short < self.min_side:
            return (f"{OUT_OF_SCOPE}: image is {w}×{h} px; the shorter side must be at least "
                    f"{self.min_side} px for a photo of a skin lesion")
        if self.max_aspect is not None and long > self.max_aspect * short:
            return (f"{OUT_OF_SCOPE}: aspect ratio {long / short:.1f}:1 ({w}×{h} px) is over "
                    f"{self.max_aspect:g}:1")
        if self.min_std is not None:
            std = float(ImageStat.Stat(image.convert("L")).stddev[0])
            if std < self.min_std:
                return (f"{OUT_OF_SCOPE}: near-constant image (pixel standard deviation "
                        f"{std:.2f} < {self.min_std:g})")
        return None

    def check(self, image: Image.Image, name: str,
              original_size: tuple[int, int] | None = None) -> None:
        """Raise :class:`OutOfScopeError` naming ``name`` if ``image`` is out of scope."""
        why = self.reason(image, original_size)
        if why is not None:
            raise OutOfScopeError(name, why)


DEFAULT_SCOPE = ScopeRule()
"""The rule ``predict``, the Predictor and the service apply unless told otherwise."""
