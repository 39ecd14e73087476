"""What the model learns to output: one malignant bit, or the diagnosis.

``binary`` is the tutorials' target (label 0/1, sigmoid). ``diagnosis`` trains a softmax
over the manifest's diagnosis classes (as the SIIM-ISIC 2020 winners did) and reports
P(malignant) as the sum of the malignant classes' probabilities, so every consumer of
P(malignant) — thresholds, metrics, predict, the service — works unchanged.

Classes with fewer than ``min_images`` training images are merged into ``other_benign``
or ``other_malignant`` (by their manifest label), so the softmax never has a class it
cannot learn and the malignant map stays exact. A diagnosis whose rows disagree on the
label takes the label of the majority of its rows; the disagreement is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("binary", "diagnosis")
OTHER_BENIGN = "other_benign"
OTHER_MALIGNANT = "other_malignant"
UNKNOWN_DIAGNOSES = frozenset({"", "unknown", "nan"})


@dataclass(frozen=True)
class DiagnosisClasses:
    """The diagnosis classes of a model and which of them are malignant.

    Attributes:
        classes: Class names in output order.
        malignant: One 0/1 flag per class.
        merged: Original diagnosis → the class it was merged into (``other_*``).
    """

    classes: tuple[str, ...]
    malignant: tuple[int, ...]
    merged: dict[str, str]

    @classmethod
    def from_frame(cls, train: pd.DataFrame, min_images: int = 20) -> DiagnosisClasses:
        """Derive the classes from the training split's ``diagnosis`` and ``label`` columns.

        Rows without a diagnosis fall into ``other_benign``/``other_malignant`` by label.

        Raises:
            ValueError: if fewer than two classes remain, or no class is malignant or benign.
        """
        diag = train["diagnosis"].fillna("").astype(str).str.strip().str.lower()
        labels = train["label"].astype(int)
        label_of: dict[str, int] = {}
        for name, group in labels.groupby(diag):
            share = float(group.mean())
            if 0.0 < share < 1.0:
                log.warning("diagnosis %r has both labels (%.0f%% malignant); using the majority",
                            name, 100 * share)
            label_of[str(name)] = int(share >= 0.5)
        counts = diag.value_counts()
        keep = sorted(d for d, c in counts.items()
                      if c >= min_images and d not in UNKNOWN_DIAGNOSES)
        merged = {d: (OTHER_MALIGNANT if label_of[d] else OTHER_BENIGN)
                  for d in counts.index if d not in keep}
        classes = list(keep)
        for other in (OTHER_BENIGN, OTHER_MALIGNANT):
            if other in merged.values() and other not in classes:
                classes.append(other)
        malignant = [label_of.get(c, int(c == OTHER_MALIGNANT)) for c in classes]
        if len(classes) < 2 or not any(malignant) or all(malignant):
            raise ValueError(f"target diagnosis needs at least one benign and one malignant class "
                             f"with >= {min_images} training images; found {dict(counts)}")
        return cls(tuple(classes), tuple(malignant), dict(sorted(merged.items())))

    @property
    def n(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def index(self, diagnoses: Any, labels: Any) -> np.ndarray:
        """Class index per row; unseen diagnoses go to ``other_*`` by label (or the label's
        first class of that kind when no ``other_*`` class exists)."""
        pos = {c: i for i, c in enumerate(self.classes)}
        out = []
        for d, y in zip(diagnoses, labels, strict=True):
            name = str(d or "").strip().lower()
            name = self.merged.get(name, name)
            if name not in pos:
                name = OTHER_MALIGNANT if int(y) else OTHER_BENIGN
            if name not in pos:  # no other_* class: the first class of the same label
                name = next(c for c, m in zip(self.classes, self.malignant, strict=True)
                            if m == int(y))
            out.append(pos[name])
        return np.asarray(out, dtype=np.int32)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in ``model_spec.json``)."""
        return {"classes": list(self.classes), "malignant": list(self.malignant),
                "merged": dict(self.merged)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiagnosisClasses:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(str(c) for c in data["classes"]),
                   tuple(int(m) for m in data["malignant"]),
                   {str(k): str(v) for k, v in dict(data.get("merged", {})).items()})
