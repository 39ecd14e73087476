"""The files ``predict`` writes: the predictions CSV and the Grad-CAM file names.

``predict --out`` writes one row per input (``path, probability, decision, error``
and, when present, the diagnosis and heatmap columns) with
:func:`write_predictions_csv`; ``predict --cam`` names each heatmap PNG after its
photo with :class:`HeatmapNames`. The CLI only calls these, so a script or
notebook that writes the same files gets the same format.

    records = [prediction_record(row) for row in predictor.predict_files(paths)]
    write_predictions_csv("predictions.csv", records)
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinlesion.utils.atomic import atomic_path
from skinlesion.utils.safe_text import csv_escape, display_path

if TYPE_CHECKING:
    from skinlesion.inference.predictor import PredictionRow

PREDICTION_COLUMNS: tuple[str, ...] = ("path", "probability", "decision", "error")
"""The first columns of a predictions CSV; any other keys of the records follow them."""

HEATMAP_SUFFIX = ".cam.png"
"""What a heatmap file's name adds to its photo's stem (``lesion.jpg`` → ``lesion.cam.png``)."""


def prediction_record(row: PredictionRow,
                      heatmaps: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One row as a plain dict, for JSON or :func:`write_predictions_csv`.

    Args:
        row: A Predictor result.
        heatmaps: Heatmap file per input path (``HeatmapNames`` targets actually written);
            when given, the record gets a ``heatmap`` key (None for a row without one).

    Returns:
        ``row.to_dict()`` with its path as text any UTF-8 writer accepts (a non-UTF-8 file
        name must not lose the results).
    """
    rec = row.to_dict()
    rec["path"] = display_path(row.path)
    if heatmaps is not None:
        rec["heatmap"] = heatmaps.get(row.path)
    return rec


def write_predictions_csv(path: str | os.PathLike[str],
                          records: Sequence[Mapping[str, Any]]) -> Path:
    """Write prediction records as a CSV, atomically.

    Columns: :data:`PREDICTION_COLUMNS`, then the first record's other keys. Probabilities
    have six decimals, a diagnosis list is flattened to ``"melanoma 0.612000; …"``, a
    missing value is an empty cell and text a spreadsheet would run as a formula is
    escaped.

    Args:
        path: The CSV file to write.
        records: Rows from :func:`prediction_record`.

    Returns:
        ``path``.
    """
    columns = list(PREDICTION_COLUMNS) + [k for k in (records[0] if records else {})
                                          if k not in PREDICTION_COLUMNS]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: _cell(rec.get(k)) for k in columns})
    return Path(path)


def _cell(value: Any) -> Any:
    # Six decimals: a probability's 16 digits are float noise, not precision.
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    # A diagnosis model's class list, flattened for a spreadsheet: "melanoma 0.612000; …".
    if isinstance(value, list):
        return "; ".join(f"{d['diagnosis']} {d['probability']:.6f}" for d in value)
    # Spreadsheet formula injection: a name starting with = + - @ is written as text.
    return csv_escape(value)


class HeatmapNames:
    """Heatmap file names in one folder: the photo's stem plus :data:`HEATMAP_SUFFIX`.

    Two photos with the same name from different folders keep both heatmaps: the second
    ``a.jpg`` gets ``a-2.cam.png``.

    Args:
        folder: Where the heatmaps go.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._seen: Counter[str] = Counter()

    def next(self, photo: str | os.PathLike[str]) -> Path:
        """The file for the heatmap of ``photo`` (each call takes a new name)."""
        stem = Path(photo).stem
        self._seen[stem] += 1
        n = self._seen[stem]
        return self.folder / (f"{stem}{HEATMAP_SUFFIX}" if n == 1 else f"{stem}-{n}{HEATMAP_SUFFIX}")
