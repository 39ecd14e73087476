"""skinlesion: benign vs malignant skin-lesion classification by transfer learning.

Intended use: research and education only. skinlesion is **not** a medical
device and must not be used to diagnose, treat or rule out skin cancer.

The Python API (docs/API.md)::

    import skinlesion as sl

    data = sl.prepare("raw/isic2020", out="data/isic")   # -> sl.PreparedData
    run = sl.train(data, out="runs/lite0")               # -> sl.Run
    ev = sl.evaluate(run, data, split="test")            # -> sl.Evaluation
    model = sl.load(run)                                 # -> sl.Predictor
    model.predict("lesion.jpg")                          # -> sl.Prediction

Importing this package is cheap: those names are resolved on first use (module
``__getattr__``), and TensorFlow is imported only by the calls that need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

INTENDED_USE = (
    "Research and education only. skinlesion is not a diagnostic device: it has not "
    "been clinically validated, and its output must never be used to diagnose, "
    "treat or rule out skin cancer. See a dermatologist about any lesion that worries you."
)

# Public name → module that defines it; imported on first attribute access.
_LAZY: dict[str, str] = {
    "prepare": "skinlesion.api",
    "train": "skinlesion.api",
    "evaluate": "skinlesion.api",
    "load": "skinlesion.api",
    "compare": "skinlesion.api",
    "ensemble": "skinlesion.api",
    "PreparedData": "skinlesion.api",
    "Run": "skinlesion.api",
    "Evaluation": "skinlesion.api",
    "Comparison": "skinlesion.api",
    "Predictor": "skinlesion.inference.interactive",
    "Prediction": "skinlesion.inference.interactive",
    "sample_dir": "skinlesion.demo",
}

if TYPE_CHECKING:
    from skinlesion.api import (
        Comparison,
        Evaluation,
        PreparedData,
        Run,
        compare,
        evaluate,
        load,
        prepare,
        train,
    )
    from skinlesion.demo import sample_dir
    from skinlesion.inference.interactive import Prediction, Predictor

__all__ = [
    "INTENDED_USE",
    "Comparison",
    "Evaluation",
    "Prediction",
    "Predictor",
    "PreparedData",
    "Run",
    "__version__",
    "compare",
    "ensemble",
    "evaluate",
    "load",
    "prepare",
    "sample_dir",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'skinlesion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
