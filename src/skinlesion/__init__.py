"""skinlesion: benign vs malignant skin-lesion classification by transfer learning.

Intended use: research and education only. skinlesion is **not** a medical
device and must not be used to diagnose, treat or rule out skin cancer.

Importing this package is cheap: TensorFlow is imported only by the modules
that need it.
"""

from __future__ import annotations

__version__ = "0.1.0"

INTENDED_USE = (
    "Research and education only. skinlesion is not a diagnostic device: it has not "
    "been clinically validated, and its output must never be used to diagnose, "
    "treat or rule out skin cancer. See a dermatologist about any lesion that worries you."
)

__all__ = ["INTENDED_USE", "__version__"]
