"""Multi-class metrics for a diagnosis model: the ISIC 2019 view of the same predictions.

* balanced multi-class accuracy — the mean per-class recall of the arg-max diagnosis
  (the ISIC 2019 challenge metric), over the classes present in the scored images;
* per class: images, one-vs-rest ROC AUC from the class probability, recall;
* the confusion matrix between true and arg-max diagnoses.

Pure functions over arrays (tested against ``isic-challenge-scoring``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score


def balanced_multiclass_accuracy(truth: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall of the arg-max prediction over the classes present in ``truth``.

    Args:
        truth: ``(N,)`` true class indices.
        probs: ``(N, K)`` class probabilities.
    """
    truth = np.asarray(truth, dtype=int)
    pred = np.asarray(probs).argmax(axis=1)
    recalls = [float((pred[truth == c] == c).mean()) for c in np.unique(truth)]
    return float(np.mean(recalls))


def diagnosis_metrics(truth: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                      malignant: Sequence[int]) -> dict[str, Any]:
    """Every multi-class metric of the report.

    Args:
        truth: ``(N,)`` true class indices (``DiagnosisClasses.index``).
        probs: ``(N, K)`` class probabilities (``p_<class>`` columns of predictions.csv).
        classes: Class names (K).
        malignant: 0/1 malignant flag per class.

    Returns:
        ``{"classes", "balanced_accuracy", "accuracy", "per_class": [...], "confusion":
        {"labels", "matrix"}}``; a class's AUC is None when the scored images hold no case
        of it (or only cases of it).
    """
    truth = np.asarray(truth, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    per_class = []
    for k, name in enumerate(classes):
        is_k = truth == k
        n_k = int(is_k.sum())
        auc = (float(roc_auc_score(is_k.astype(int), probs[:, k]))
               if 0 < n_k < len(truth) else None)
        per_class.append({"diagnosis": name, "malignant": bool(malignant[k]), "n": n_k,
                          "auc_ovr": auc,
                          "recall": float((pred[is_k] == k).mean()) if n_k else None,
                          "predicted": int((pred == k).sum())})
    cm = confusion_matrix(truth, pred, labels=list(range(len(classes))))
    return {
        "classes": list(classes),
        "balanced_accuracy": balanced_multiclass_accuracy(truth, probs) if len(truth) else None,
        "accuracy": float((pred == truth).mean()) if len(truth) else None,
        "per_class": per_class,
        "confusion": {"labels": list(classes), "matrix": cm.tolist(),
                      "rows": "true diagnosis", "columns": "arg-max prediction"},
    }
