"""The notebook-facing predictor: the one inference path, plus results that show themselves.

:class:`Predictor` here *is* :class:`skinlesion.inference.predictor.Predictor` (same
loading, preprocessing, decision rule and thread safety; the service accepts it) with
two additions for interactive use:

* :meth:`Predictor.predict` — one image (a path, bytes or an RGB array) to a
  :class:`Prediction` that renders the photo, its Grad-CAM heatmap, the probability and
  the decision inline in Jupyter;
* :meth:`Predictor.predict_table` — many files to a pandas DataFrame.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from skinlesion import INTENDED_USE
from skinlesion.data.pipeline import to_model_input
from skinlesion.display import PredictionDisplay, escape, html_table, img_tag, thumbnail
from skinlesion.inference.predictor import Predictor as _BasePredictor

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from skinlesion.display import PredictionDisplay


@dataclass
class Prediction:
    """One image's result: probability, decision and (optionally) a Grad-CAM heatmap.

    Attributes:
        name: The file name or label of the input.
        probability: P(malignant) in [0, 1].
        decision: ``benign``, ``malignant`` or ``inconclusive`` at ``threshold``.
        threshold: The run's stored operating threshold.
        image: ``(H, W, 3)`` uint8 photo (shrunk to at most 512 px) for display.
        heatmap: ``(S, S)`` Grad-CAM map in [0, 1] on the model input, or None.
        tta: Test-time-augmentation views averaged.
        model_id: The model that answered.
        diagnoses: A diagnosis model's classes, most likely first (else None).
    """

    name: str
    probability: float
    decision: str
    threshold: float
    image: np.ndarray = field(repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    tta: int = 1
    model_id: str = ""
    diagnoses: list[dict[str, Any]] | None = None

    @property
    def overlay(self) -> np.ndarray | None:
        """The photo with the heatmap blended in (``None`` without a heatmap)."""
        if self.heatmap is None:
            return None
        from skinlesion.inference.gradcam import overlay

        return overlay(self.image, self.heatmap)

    def plot(self, ax: Axes | list[Axes] | None = None) -> PredictionDisplay:
        """Draw photo, heatmap and probability bar; see :class:`~skinlesion.display.PredictionDisplay`.

        Args:
            ax: One axes, up to three axes (photo, overlay, bar), or None for a new figure.

        Returns:
            The display (``figure_``, ``axes_``).
        """

        return PredictionDisplay(self.image, self.overlay, self.probability, self.threshold,
                                 self.decision, title=self.name).plot(ax=ax)

    def to_dict(self) -> dict[str, Any]:
        """Name, probability, decision, threshold, tta and model id (JSON-ready)."""
        out = {"name": self.name, "probability": self.probability, "decision": self.decision,
               "threshold": self.threshold, "tta": self.tta, "model_id": self.model_id}
        if self.diagnoses is not None:
            out["diagnoses"] = self.diagnoses
        return out

    def _repr_html_(self) -> str:

        fig = self.plot().figure_
        assert fig is not None  # plot() always sets it
        colour = "#c0392b" if self.decision == "malignant" else (
            "#2e86c1" if self.decision == "benign" else "#b9770e")
        return (f'<div><b>{escape(self.name)}</b>: P(malignant) = '
                f'<b>{self.probability:.3f}</b> → <b style="color:{colour}">'
                f"{escape(self.decision)}</b> (threshold {self.threshold:.3f}"
                f"{f', TTA {self.tta}' if self.tta > 1 else ''})<br/>"
                + (("most likely: " + ", ".join(
                    f"{escape(d['diagnosis'])} {d['probability']:.2f}"
                    for d in self.diagnoses[:3]) + "<br/>") if self.diagnoses else "")
                + f"{img_tag(fig, alt=f'{self.name}: photo, Grad-CAM, probability', fmt='jpeg')}"
                f'<br/><small style="color:#666">{escape(INTENDED_USE)}</small></div>')

    def __repr__(self) -> str:
        return (f"Prediction(name={self.name!r}, probability={self.probability:.4f}, "
                f"decision={self.decision!r}, threshold={self.threshold:.4f})")


class Predictor(_BasePredictor):
    """A loaded run (``skinlesion.load(run)``): the CLI's predictor plus displayable results.

    Everything of :class:`skinlesion.inference.predictor.Predictor` works unchanged
    (``predict_files``, ``predict_arrays``, ``heatmaps``, ``threshold``, ``decide``).
    """

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str], *, runtime: str = "auto",
                 num_threads: int | None = None) -> Predictor:
        """Load ``RUN_DIR/model.keras`` and ``model_spec.json`` (see the base class for
        ``runtime`` and ``num_threads``).

        Raises:
            RunError: if the folder is not a finished run or the model cannot be loaded.
        """
        loaded = super().from_run(run_dir, runtime=runtime, num_threads=num_threads)
        assert isinstance(loaded, cls)  # the base builds ``cls(...)``
        return loaded

    def predict(self, image: str | os.PathLike[str] | bytes | np.ndarray, *, tta: int = 1,
                heatmap: bool = True, name: str | None = None,
                metadata: dict[str, Any] | None = None) -> Prediction:
        """Predict one image and keep what is needed to show it.

        Args:
            image: A file path, the raw bytes of an image, or an ``(H, W, 3)`` RGB array
                (uint8 or float 0–255).
            tta: Dihedral views averaged (1, 2, 4 or 8). Defaults to 1.
            heatmap: Compute the Grad-CAM heatmap. Defaults to True.
            name: Label shown with the result (default: the file name).
            metadata: ``{"age", "sex", "site"}`` for a model trained with clinical metadata
                (any may be missing; ignored by an image-only model).

        Returns:
            A :class:`Prediction` (renders inline in Jupyter).

        Raises:
            ImageError: if the file or bytes are not a readable image.
            ValueError: on an array that is not ``(H, W, 3)``.
        """


        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
            pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
            label = name or "array"
        else:
            label = name or (os.path.basename(os.fspath(image)) if not isinstance(image, bytes)
                             else "upload")
            # The one decode (as predict and training): no scope check for the Python API.
            pil = self.decode(image, name=label, check_scope=False)
        x = to_model_input(pil, self.input_size)
        out = self.predict_outputs(x[None], metadata=self.encode_metadata([metadata], 1),
                                   tta=tta)[0]
        p = float(out[0])
        # An ensemble has no single last convolution: no Grad-CAM for it.
        cam = self.heatmaps(x[None])[0] if heatmap and self.spec.last_conv_layer else None
        return Prediction(name=label, probability=p, decision=self.decide(p),
                          threshold=self.threshold, image=thumbnail(np.asarray(pil), 512),
                          heatmap=cam, tta=tta, model_id=self.model_id,
                          diagnoses=self.top_diagnoses(out))

    def predict_table(self, paths: Iterable[str | os.PathLike[str]], *, tta: int = 1,
                      batch_size: int = 32,
                      metadata: list[dict[str, Any] | None] | None = None) -> pd.DataFrame:
        """Predict many files into a table (``path``, ``probability``, ``decision``, ``error``).

        A file that cannot be read gets its ``error`` and never stops the others.
        ``metadata``: one ``{"age", "sex", "site"}`` dict (or None) per path.
        """

        rows = self.predict_files(paths, tta=tta, batch_size=batch_size, metadata=metadata)
        return pd.DataFrame([r.to_dict() for r in rows],
                            columns=["path", "probability", "decision", "error"])

    def _repr_html_(self) -> str:

        s = self.spec
        return (f"<div><b>Predictor</b> {escape(self.model_id)}"
                + html_table([("backbone", s.backbone), ("input size", f"{s.input_size} px"),
                              ("threshold", f"{s.threshold:.3f} ({s.threshold_rule})"),
                              ("inconclusive band", s.inconclusive_band)])
                + f'<small style="color:#666">{escape(INTENDED_USE)}</small></div>')

    def __repr__(self) -> str:
        return (f"Predictor(model_id={self.model_id!r}, backbone={self.spec.backbone!r}, "
                f"input_size={self.input_size}, threshold={self.threshold:.4f})")
