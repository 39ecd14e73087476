"""Test-time augmentation: the eight dihedral views of a square image.

A dermoscopic lesion has no canonical orientation, so flips and transposes of the
image are equally valid inputs; averaging the model's probability over them
smooths out orientation-specific quirks (the SIIM-ISIC 2020 winners averaged
eight such views). The views, in the order ``tta=N`` takes the first ``N``:

====  ===========================  ======================
 #    view                         same as
====  ===========================  ======================
 0    identity
 1    horizontal flip (mirror)
 2    vertical flip
 3    horizontal + vertical flip   rotation by 180°
 4    transpose                    mirror over the main diagonal
 5    transpose + horizontal flip  rotation by 90° clockwise
 6    transpose + vertical flip    rotation by 90° counter-clockwise
 7    transpose + both flips       mirror over the anti-diagonal
====  ===========================  ======================

So ``tta=2`` averages the image and its mirror, ``tta=4`` adds the flips
(keeping the rows as rows), ``tta=8`` is the whole dihedral group D4. The mean
is over probabilities (not logits), the usual choice in the ISIC literature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TTA_CHOICES: tuple[int, ...] = (1, 2, 4, 8)
"""Allowed numbers of views."""


def check_tta(n: int) -> int:
    """Return ``n`` if it is a valid number of views.

    Raises:
        ValueError: if ``n`` is not one of ``TTA_CHOICES``.
    """
    if int(n) not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {n!r}")
    return int(n)


def dihedral_view(images: Any, index: int) -> Any:
    """View ``index`` (0–7, see the module table) of a batch ``(N, H, W, C)``.

    Works on NumPy arrays and on TensorFlow/Keras tensors alike (through
    ``keras.ops`` for tensors), so the same definition serves the Keras path and the
    exported-model checks.

    Args:
        images: Batch of square images, channels last.
        index: Which view, 0–7.

    Returns:
        The transformed batch, same shape and dtype.
    """
    if not 0 <= index < 8:
        raise ValueError(f"view index must be in 0..7, got {index}")
    if isinstance(images, np.ndarray):
        flip, transpose = np.flip, np.transpose
    else:
        from keras import ops

        flip, transpose = ops.flip, ops.transpose
    x = images
    if index & 4:  # transpose first, then flip: the table above reads left to right
        x = transpose(x, (0, 2, 1, 3))
    if index & 1:
        x = flip(x, axis=2)
    if index & 2:
        x = flip(x, axis=1)
    return x


def dihedral_views(images: Any, n: int) -> list[Any]:
    """The first ``n`` dihedral views of a batch (``n`` in ``TTA_CHOICES``)."""
    return [dihedral_view(images, i) for i in range(check_tta(n))]
