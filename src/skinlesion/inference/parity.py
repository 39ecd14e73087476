"""Do exported models give the Keras model's answers? Measured on real images.

``check_parity`` runs the Keras model (through the ``Predictor``) and an exported
runtime on the *same* decoded, resized images and records the maximum and mean
absolute probability difference, how often the decision at the run's threshold
agrees and, when labels are known and both classes present, the AUC of each and
their difference. The result is written beside the exported file as ``parity.json``.

Images come from (first that applies): a prepared data folder (``manifest.csv``:
the test split, else val, else all rows), a folder with a ``labels.csv``
(``filename``/``path`` and ``label`` columns, e.g. isic-dev), or any folder of images
(no labels, so no AUC).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from skinlesion.inference.predictor import Predictor

logger = logging.getLogger(__name__)

TOLERANCES: dict[str, float] = {"float32": 1e-3, "float16": 2e-2, "int8": 0.1}
"""Largest accepted max-abs probability difference against Keras, by numeric precision.
float32 exports differ only by kernels and operation order (typically 1e-6, up to ~1e-4
where activations are large); float16 weights shift outputs by ~1e-3; int8 quantisation
of weights and activations by a few hundredths (the looser bound is the documented
price of a 4× smaller model)."""


class Runtime(Protocol):
    """An exported model: raw 0–255 RGB ``(N, S, S, 3)`` float32 in, ``(N,)`` P(malignant) out."""

    def predict(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class ImageSample:
    """Images for a parity check or for int8 calibration.

    Attributes:
        paths: Image files.
        labels: 0/1 labels aligned with ``paths``, or None if unknown.
        source: Where they came from (for the record).
    """

    paths: list[str]
    labels: np.ndarray | None
    source: str


class ParityError(ValueError):
    """No usable images for a parity check or calibration."""


def sample_images(source: str | os.PathLike[str], n: int, *, seed: int = 0,
                  splits: Sequence[str] = ("test", "val")) -> ImageSample:
    """Pick up to ``n`` images (stratified by label when labels are known) from ``source``.

    Args:
        source: A prepared data folder, a folder with ``labels.csv``, or a folder of images.
        n: How many images at most.
        seed: Sampling seed (same seed, same images).
        splits: Manifest splits to prefer, in order (the first non-empty one is used;
            all rows if none is).

    Raises:
        ParityError: if ``source`` holds no images.
    """
    import pandas as pd

    from skinlesion.data.manifest import MANIFEST_NAME, read_manifest, resolve_paths
    from skinlesion.inference.predictor import find_images

    root = Path(source)
    if (root / MANIFEST_NAME).is_file():
        df = read_manifest(root)
        chosen = df
        for split in splits:
            if (df["split"] == split).any():
                chosen = df[df["split"] == split]
                break
        chosen = chosen.assign(abs_path=resolve_paths(chosen, root))
        return _stratified(chosen["abs_path"].tolist(), chosen["label"].to_numpy(), n, seed,
                           f"{root / MANIFEST_NAME} ({', '.join(splits)})")
    labels_csv = root / "labels.csv"
    if labels_csv.is_file():
        df = pd.read_csv(labels_csv)
        col = "filename" if "filename" in df.columns else "path" if "path" in df.columns else None
        if col is not None and "label" in df.columns:
            paths = [str(root / p) for p in df[col].astype(str)]
            return _stratified(paths, df["label"].astype(int).to_numpy(), n, seed, str(labels_csv))
    paths, _ = find_images([root])
    if not paths:
        raise ParityError(f"{root}: no images found (expected a manifest.csv, a labels.csv or "
                          "image files)")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.permutation(len(paths))[:n])
    return ImageSample([str(paths[i]) for i in pick], None, str(root))


def _stratified(paths: list[str], labels: np.ndarray, n: int, seed: int, source: str) -> ImageSample:
    if not paths:
        raise ParityError(f"{source}: no images")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(int)
    take: list[int] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        # Keep the class mix, but at least a few of the rare class so an AUC exists.
        k = max(min(len(idx), 5), round(n * len(idx) / len(labels)))
        take.extend(rng.permutation(idx)[:k].tolist())
    take = sorted(rng.permutation(take)[:n].tolist()) if len(take) > n else sorted(take)
    return ImageSample([paths[i] for i in take], labels[take], source)


def load_sample(predictor: Predictor, sample: ImageSample) -> tuple[np.ndarray, np.ndarray | None,
                                                                    list[str]]:
    """Decode a sample with the Predictor's own path; unreadable files are skipped and listed.

    Returns:
        ``(images (N, S, S, 3) float32, labels or None, skipped messages)``.
    """
    from skinlesion.inference.predictor import ImageError

    images, keep, skipped = [], [], []
    for i, p in enumerate(sample.paths):
        try:
            images.append(predictor.load_image(p))
            keep.append(i)
        except ImageError as exc:
            skipped.append(str(exc))
    if not images:
        raise ParityError(f"{sample.source}: none of the {len(sample.paths)} images could be read")
    labels = sample.labels[keep] if sample.labels is not None else None
    return np.stack(images), labels, skipped


def check_parity(predictor: Predictor, runtime: Runtime, images: np.ndarray,
                 labels: np.ndarray | None = None, *, precision: str = "float32",
                 batch_size: int = 32) -> dict[str, Any]:
    """Compare an exported runtime with the Keras model on the same images.

    Args:
        predictor: The run's Predictor (the reference).
        runtime: The exported model.
        images: ``(N, S, S, 3)`` float32 0–255 model inputs.
        labels: 0/1 labels for an AUC comparison, or None.
        precision: ``"float32"``, ``"float16"`` or ``"int8"``: picks the tolerance.
        batch_size: Images per call. Defaults to 32.

    Returns:
        A JSON-serialisable dict: ``n_images``, ``max_abs_diff``, ``mean_abs_diff``,
        ``p99_abs_diff``, ``decision_agreement``, ``auc_keras``/``auc_export``/``auc_diff``
        (None without labels of both classes), ``tolerance``, ``passed``.
    """
    from sklearn.metrics import roc_auc_score

    ref = predictor.predict_arrays(images, batch_size=batch_size)
    got = np.concatenate([np.asarray(runtime.predict(images[i:i + batch_size]), np.float64).ravel()
                          for i in range(0, len(images), batch_size)])
    if got.shape != ref.shape:
        raise ValueError(f"exported model returned {got.shape[0]} values for {ref.shape[0]} images")
    diff = np.abs(got - ref)
    t = predictor.threshold
    result: dict[str, Any] = {
        "n_images": len(images),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "p99_abs_diff": float(np.quantile(diff, 0.99)),
        "decision_agreement": float(np.mean((got >= t) == (ref >= t))),
        "threshold": t,
        "finite": bool(np.all(np.isfinite(got))),
        "auc_keras": None, "auc_export": None, "auc_diff": None,
    }
    if labels is not None and len(np.unique(labels)) == 2:
        result["auc_keras"] = float(roc_auc_score(labels, ref))
        result["auc_export"] = float(roc_auc_score(labels, np.nan_to_num(got, nan=0.5)))
        result["auc_diff"] = result["auc_export"] - result["auc_keras"]
        result["n_malignant"] = int(np.sum(labels == 1))
    tolerance = TOLERANCES[precision]
    result["precision"] = precision
    result["tolerance"] = tolerance
    result["passed"] = bool(result["finite"] and result["max_abs_diff"] <= tolerance)
    return result
