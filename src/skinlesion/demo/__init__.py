"""The bundled demo sample: 200 CC-0 dermoscopic images from the ISIC Archive.

``demo/sample`` holds ``labels.csv``, ``images/`` (≤ 256 px) and ``ATTRIBUTION.md``.
``skinlesion demo`` (:func:`skinlesion.workflows.demo.run_demo`) prepares, trains and
evaluates on it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE = "sample"


def sample_dir() -> Path:
    """Folder of the bundled sample (``labels.csv``, ``images/``, ``ATTRIBUTION.md``)."""
    return Path(str(resources.files("skinlesion.demo") / SAMPLE))
