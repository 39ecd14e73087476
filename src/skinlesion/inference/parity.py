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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from skinlesion.data.manifest import MANIFEST_NAME, read_manifest, resolve_paths
from skinlesion.data.metadata import SEX_VALUES, SITE_VALUES
from skinlesion.inference.predictor import ImageError, Predictor, find_images

if TYPE_CHECKING:
    from skinlesion.inference.predictor import Predictor
    from skinlesion.inference.runtimes import Runtime

logger = logging.getLogger(__name__)

CRITERIA: dict[str, dict[str, float]] = {
    "float32": {"max_abs_diff": 1e-3},
    "float16": {"max_abs_diff": 5e-2},
    "int8": {"mean_abs_diff": 0.05, "abs_auc_diff": 0.02, "min_decision_agreement": 0.95},
}
"""What an export must meet against Keras, by numeric precision.

float32 exports (SavedModel, TFLite, ONNX) differ only by kernels and operation order:
typically 1e-6, so the worst image must be within 1e-3. float16 weights move outputs by
~1e-3 on average and ~1e-2 on the worst image: within 0.05. int8 quantises activations
too, so single images can move by 0.1–0.2 while the model as a whole is unchanged; it is
judged on the mean difference (≤ 0.05), the AUC (within 0.02, when labels are known)
and the decision at the threshold (the same for ≥ 95 % of images) rather than on the
worst image: the looser, documented price of a 4× smaller model."""


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
    found, _ = find_images([root])
    if not found:
        raise ParityError(f"{root}: no images found (expected a manifest.csv, a labels.csv or "
                          "image files)")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.permutation(len(found))[:n])
    return ImageSample([str(found[i]) for i in pick], None, str(root))


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


def parity_metadata(predictor: Predictor, n: int) -> np.ndarray | None:
    """Metadata for a parity check of a model that takes it: a fixed cycle of known and
    unknown ages, sexes and sites (every field and the all-unknown row are exercised)."""
    if not predictor.uses_metadata:
        return None

    ages = ["", "25", "45", "65", "85"]
    rows = [{"age": ages[i % len(ages)], "sex": ([*SEX_VALUES, ""])[i % 3],
             "site": ([*SITE_VALUES, ""])[i % (len(SITE_VALUES) + 1)]} for i in range(n)]
    return predictor.encode_metadata(rows, n)


def check_parity(predictor: Predictor, runtime: Runtime, images: np.ndarray,
                 labels: np.ndarray | None = None, *, precision: str = "float32",
                 batch_size: int = 32) -> dict[str, Any]:
    """Compare an exported runtime with the Keras model on the same images.

    Args:
        predictor: The run's Predictor (its Keras model is the reference, whatever runtime
            it serves with).
        runtime: The exported model, as a ``skinlesion.inference.runtimes.Runtime`` (named
            arrays in, named arrays out): it serves a Predictor on the run's own spec.
        images: ``(N, S, S, 3)`` float32 0–255 model inputs.
        labels: 0/1 labels for an AUC comparison, or None.
        precision: ``"float32"``, ``"float16"`` or ``"int8"``: picks the ``CRITERIA``.
        batch_size: Images per call. Defaults to 32.

    Returns:
        A JSON-serialisable dict: ``n_images``, ``max_abs_diff``, ``mean_abs_diff``,
        ``p99_abs_diff``, ``decision_agreement``, ``auc_keras``/``auc_export``/``auc_diff``
        (None without labels of both classes), ``criteria`` (from ``CRITERIA``),
        ``failed_criteria`` and ``passed``.
    """


    keras_pred = predictor.with_runtime("keras")
    meta = parity_metadata(keras_pred, len(images))
    ref_all = keras_pred.predict_outputs(images, metadata=meta, batch_size=batch_size)
    exported = Predictor(keras_pred.model, keras_pred.spec, keras_pred.run_dir, runtime=runtime)
    try:
        got_all = exported.predict_outputs(images, metadata=meta, batch_size=batch_size)
    except Exception as exc:  # NonFiniteOutputError carries the finite part
        got_p = getattr(exc, "probabilities", None)
        if got_p is None:
            raise
        got_all = np.full_like(ref_all, np.nan)
        got_all[:, 0] = got_p
    if got_all.shape != ref_all.shape:
        raise ValueError(f"exported model returned {got_all.shape} for {ref_all.shape}")
    ref, got = ref_all[:, 0], got_all[:, 0]
    diff = np.abs(got - ref)
    t = predictor.threshold
    result: dict[str, Any] = {
        "n_images": len(images),
        "max_abs_diff_all_outputs": float(np.nanmax(np.abs(got_all - ref_all))),
        "metadata_checked": bool(keras_pred.uses_metadata),
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
    criteria = CRITERIA[precision]
    failed = []
    if not result["finite"]:
        failed.append("non-finite outputs")
    if "max_abs_diff" in criteria and result["max_abs_diff"] > criteria["max_abs_diff"]:
        failed.append(f"max |Δp| {result['max_abs_diff']:.3g} > {criteria['max_abs_diff']:g}")
    if "mean_abs_diff" in criteria and result["mean_abs_diff"] > criteria["mean_abs_diff"]:
        failed.append(f"mean |Δp| {result['mean_abs_diff']:.3g} > {criteria['mean_abs_diff']:g}")
    if ("abs_auc_diff" in criteria and result["auc_diff"] is not None
            and abs(result["auc_diff"]) > criteria["abs_auc_diff"]):
        failed.append(f"|ΔAUC| {abs(result['auc_diff']):.3g} > {criteria['abs_auc_diff']:g}")
    if ("min_decision_agreement" in criteria
            and result["decision_agreement"] < criteria["min_decision_agreement"]):
        failed.append(f"decision agreement {result['decision_agreement']:.1%} < "
                      f"{criteria['min_decision_agreement']:.0%}")
    result["precision"] = precision
    result["criteria"] = criteria
    result["failed_criteria"] = failed
    result["passed"] = not failed
    return result
