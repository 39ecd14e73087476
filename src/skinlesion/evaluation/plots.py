"""Evaluation plots: compute, then display.

Every function draws one figure's worth of content on ``ax`` (or ``fig`` for the
multi-panel gallery), creating a figure when none is given, and returns the
scikit-learn ``*Display`` it used or the axes. Figures are created with
``matplotlib.figure.Figure`` rather than pyplot, so plotting keeps no global
state and works on any backend (the tests use Agg); :func:`figure_png` turns
a figure into PNG bytes for the report.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    confusion_matrix,
    roc_curve,
)

from skinlesion.data.images import open_image
from skinlesion.evaluation.metrics import as_arrays

if TYPE_CHECKING:
    from skinlesion.evaluation.metrics import EvalResult

FIGSIZE = (5.6, 4.4)
MALIGNANT_COLOR = "#c0392b"
BENIGN_COLOR = "#2e86c1"
OPERATING_COLOR = "#111111"
ERROR_COLORS = {"FN": "#c0392b", "FP": "#d68910"}


def _plain_text(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Draw with mathtext off: ids, sources and run names are data, never TeX.

    A label such as ``$\\undefinedmacro$`` otherwise makes matplotlib's mathtext parser
    raise while the figure is saved, and ``evaluate`` would end without a report.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper


def _axes(ax: Axes | None, figsize: tuple[float, float] = FIGSIZE) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _finish(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.grid(True, alpha=0.25)


@_plain_text
def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render ``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


# === Threshold-free curves ===


def plot_roc(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, *,
             band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
             operating_ci: Mapping[str, Sequence[float]] | None = None,
             auc_ci: Sequence[float] | None = None, ax: Axes | None = None) -> RocCurveDisplay:
    """ROC curve with its bootstrap band and the operating point.

    Args:
        y_true: 0/1 labels.
        y_prob: Predicted P(malignant).
        threshold: Operating threshold, marked on the curve.
        band: ``(fpr_grid, tpr_low, tpr_high)`` from ``BootstrapResult.roc_band()``.
        operating_ci: ``{"sensitivity_ci": [lo, hi], "specificity_ci": [lo, hi]}`` drawn as
            error bars on the operating point.
        auc_ci: ``[lo, hi]`` added to the legend.
        ax: Axes to draw on (a new figure if ``None``).

    Returns:
        The ``RocCurveDisplay``.
    """
    y, p = as_arrays(y_true, y_prob)
    ax = _axes(ax)
    name = "ROC" if auc_ci is None else f"ROC, 95 % CI {auc_ci[0]:.3f}–{auc_ci[1]:.3f}"
    display = RocCurveDisplay.from_predictions(y, p, ax=ax, name=name, plot_chance_level=True)
    display.line_.set_color(MALIGNANT_COLOR)
    if band is not None:
        grid, lo, hi = band
        ax.fill_between(grid, lo, hi, color=MALIGNANT_COLOR, alpha=0.15, lw=0,
                        label="95 % bootstrap band")
    pred = p >= threshold
    sens = pred[y == 1].mean()
    fpr = pred[y == 0].mean()
    xerr = yerr = None
    if operating_ci is not None:
        s_lo, s_hi = operating_ci["sensitivity_ci"]
        sp_lo, sp_hi = operating_ci["specificity_ci"]
        yerr = [[max(sens - s_lo, 0)], [max(s_hi - sens, 0)]]
        xerr = [[max(fpr - (1 - sp_hi), 0)], [max((1 - sp_lo) - fpr, 0)]]
    ax.errorbar([fpr], [sens], xerr=xerr, yerr=yerr, fmt="o", color=OPERATING_COLOR, ms=7,
                capsize=3, zorder=5,
                label=f"threshold {threshold:.3g}: sens {sens:.2f}, spec {1 - fpr:.2f}")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("Sensitivity (true-positive rate)")
    _finish(ax, "ROC curve")
    return display


def plot_precision_recall(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, *,
                          ax: Axes | None = None) -> PrecisionRecallDisplay:
    """Precision–recall curve, prevalence baseline and the operating point."""
    y, p = as_arrays(y_true, y_prob)
    ax = _axes(ax)
    display = PrecisionRecallDisplay.from_predictions(y, p, ax=ax, name="PR",
                                                      plot_chance_level=True)
    display.line_.set_color(MALIGNANT_COLOR)
    pred = p >= threshold
    if pred.any() and y.any():
        ax.plot([pred[y == 1].mean()], [y[pred].mean()], "o", color=OPERATING_COLOR, ms=7,
                label=f"threshold {threshold:.3g}", zorder=5)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("Recall (sensitivity)")
    ax.set_ylabel("Precision (PPV)")
    _finish(ax, "Precision–recall (baseline = prevalence)")
    return display


# === At the operating threshold ===


def plot_confusion_matrix(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, *,
                          class_names: Sequence[str] = ("benign", "malignant"),
                          ax: Axes | None = None) -> ConfusionMatrixDisplay:
    """Confusion matrix normalised by true class (rows sum to 1) as a heatmap."""
    y, p = as_arrays(y_true, y_prob)
    ax = _axes(ax, (4.8, 4.2))
    display = ConfusionMatrixDisplay.from_predictions(
        y, (p >= threshold).astype(int), labels=[0, 1], display_labels=list(class_names),
        normalize="true", cmap="Blues", values_format=".2f", ax=ax, colorbar=True,
        im_kw={"vmin": 0.0, "vmax": 1.0})
    # Show the counts under the fractions: 0.95 of 3 images is not 0.95 of 300.
    counts = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    for (t, c), text in np.ndenumerate(display.text_):
        text.set_text(f"{display.confusion_matrix[t, c]:.2f}\n({int(counts[t, c])} images)")
    ax.set_title(f"Confusion matrix at threshold {threshold:.3g}\n(each row sums to 1)",
                 fontsize=11, loc="left", fontweight="bold")
    return display


def plot_reliability(y_true: ArrayLike, y_prob: ArrayLike, *, n_bins: int = 10,
                     ax: Axes | None = None) -> CalibrationDisplay:
    """Reliability diagram (observed malignant share per predicted-probability bin)."""
    y, p = as_arrays(y_true, y_prob)
    ax = _axes(ax)
    display = CalibrationDisplay.from_predictions(y, p, n_bins=n_bins, strategy="uniform",
                                                  ax=ax, name="model", color=MALIGNANT_COLOR)
    counts, edges = np.histogram(p, bins=n_bins, range=(0.0, 1.0))
    twin = ax.twinx()
    twin.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#7f8c8d",
             alpha=0.18, zorder=0)
    twin.set_ylabel("Images per bin", color="#7f8c8d")
    twin.tick_params(axis="y", colors="#7f8c8d")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("Mean predicted P(malignant)")
    ax.set_ylabel("Observed fraction malignant")
    ax.legend(loc="upper left", fontsize=8)
    _finish(ax, "Reliability diagram")
    return display


def plot_score_histograms(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, *,
                          bins: int = 25, ax: Axes | None = None) -> Axes:
    """Distribution of P(malignant) for each true class, with the threshold."""
    y, p = as_arrays(y_true, y_prob)
    ax = _axes(ax)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for cls, name, color in ((0, "benign", BENIGN_COLOR), (1, "malignant", MALIGNANT_COLOR)):
        if (y == cls).any():
            ax.hist(p[y == cls], bins=edges.tolist(), density=True, alpha=0.5, color=color,
                    label=f"{name} (n = {(y == cls).sum()})", edgecolor="white", lw=0.5)
    ax.axvline(threshold, color=OPERATING_COLOR, ls="--", lw=1.2,
               label=f"threshold {threshold:.3g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Predicted P(malignant)")
    ax.set_ylabel("Density")
    ax.legend(fontsize=8)
    _finish(ax, "Scores by true class")
    return ax


def plot_threshold_curves(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, *,
                          ax: Axes | None = None) -> Axes:
    """Sensitivity and specificity as functions of the threshold."""
    y, p = as_arrays(y_true, y_prob)
    ax = _axes(ax)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    # roc_curve's first threshold is +inf (nothing called malignant); draw it at 1.
    thr = np.clip(thr, 0.0, 1.0)
    ax.step(thr, tpr, where="post", color=MALIGNANT_COLOR, label="sensitivity")
    ax.step(thr, 1 - fpr, where="post", color=BENIGN_COLOR, label="specificity")
    ax.axvline(threshold, color=OPERATING_COLOR, ls="--", lw=1.2,
               label=f"threshold {threshold:.3g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("Threshold on P(malignant)")
    ax.set_ylabel("Rate")
    ax.legend(fontsize=8, loc="center right")
    _finish(ax, "Sensitivity and specificity vs threshold")
    return ax


# === Subgroups and comparisons ===


@_plain_text
def plot_subgroup_auc(subgroups: Mapping[str, Any], overall_auc: float | None = None, *,
                      ax: Axes | None = None) -> Axes:
    """Forest plot: AUC and its CI for every subgroup (hollow marker = too small)."""
    rows = [(grouping["title"], row) for grouping in subgroups.get("groupings", {}).values()
            for row in grouping["groups"]]
    ax = _axes(ax, (10.0, max(2.4, 0.3 * len(rows) + 1.3)))
    labels, y_pos = [], []
    for i, (title, row) in enumerate(rows):
        y_pos.append(-i)
        labels.append(f"{title}: {_short(row['group'])} (n={row['n']})")
        if row["roc_auc"] is None:
            ax.text(0.5, -i, "AUC undefined", va="center", ha="center", fontsize=8,
                    color="#7f8c8d")
            continue
        # An interval flagged unreliable (too few cases, zero width) is not drawn as one.
        ci = row.get("roc_auc_ci") if row.get("roc_auc_ci_reliable", True) else None
        xerr = None if not ci else [[row["roc_auc"] - ci[0]], [ci[1] - row["roc_auc"]]]
        ax.errorbar([row["roc_auc"]], [-i], xerr=xerr, fmt="o", capsize=3,
                    color=MALIGNANT_COLOR,
                    mfc="white" if row["too_small"] else MALIGNANT_COLOR)
    if overall_auc is not None:
        ax.axvline(overall_auc, color=OPERATING_COLOR, ls="--", lw=1, label="overall AUC")
        ax.legend(fontsize=8, loc="lower left")
    ax.axvline(0.5, color="#95a5a6", ls=":", lw=1)
    ax.set_yticks(y_pos, labels, fontsize=8)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("ROC AUC with 95 % bootstrap CI (hollow: too small to say much)")
    _finish(ax, "AUC by subgroup")
    return ax


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


@_plain_text
def plot_roc_comparison(y_true: ArrayLike, probabilities: Mapping[str, ArrayLike], *,
                        ax: Axes | None = None) -> list[RocCurveDisplay]:
    """Overlaid ROC curves of several models on the same images."""
    y = np.asarray(y_true).astype(int)
    ax = _axes(ax, (6.0, 5.0))
    displays = []
    for i, (name, p) in enumerate(probabilities.items()):
        displays.append(RocCurveDisplay.from_predictions(
            y, np.asarray(p, dtype=float), ax=ax, name=name,
            plot_chance_level=(i == len(probabilities) - 1)))
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("Sensitivity (true-positive rate)")
    _finish(ax, "ROC curves on the same images")
    return displays


# === Images ===


def _thumbnail(path: str, size: int) -> np.ndarray:

    img = open_image(path, draft_size=size)
    img.thumbnail((size, size))
    return np.asarray(img)


_STAGE_COLORS = ("#2e86c1", "#c0392b", "#27ae60", "#8e44ad")


def plot_training_curves(history: pd.DataFrame) -> Figure:
    """Loss and ROC AUC per epoch from ``history.csv``: train solid, validation dashed.

    Each stage (``head``, ``frozen``, ``finetune``) has its own colour on one global
    epoch axis, so a fine-tuning stage is seen continuing from where the head left off.

    Args:
        history: ``RUN_DIR/history.csv`` (``stage``, ``epoch``, ``loss``, ``val_loss``,
            ``auc``, ``val_auc``; missing columns are skipped).

    Returns:
        A figure with two panels (loss, AUC).
    """
    fig = Figure(figsize=(FIGSIZE[0] * 2, FIGSIZE[1]))
    axes = fig.subplots(1, 2)
    stages = history["stage"] if "stage" in history else pd.Series("train", index=history.index)
    epochs = history["epoch"] if "epoch" in history else pd.Series(range(len(history)))
    for ax, metric, label in ((axes[0], "loss", "Loss"), (axes[1], "auc", "ROC AUC")):
        for i, stage in enumerate(dict.fromkeys(stages)):
            rows = (stages == stage).to_numpy()
            color = _STAGE_COLORS[i % len(_STAGE_COLORS)]
            for column, style, who in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                if column in history:
                    ax.plot(epochs[rows], history.loc[rows, column], style, color=color, lw=1.3,
                            label=f"{stage} {who}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        _finish(ax, f"{label} per epoch")
    fig.tight_layout()
    return fig


@_plain_text
def plot_error_gallery(errors: pd.DataFrame, *, n: int = 12, columns: int = 4,
                       thumb_size: int = 192, fig: Figure | None = None,
                       load: Callable[[str, int], np.ndarray] = _thumbnail) -> Figure:
    """Thumbnails of the most confident errors: false negatives first, then false positives.

    Args:
        errors: Misclassified images with ``path``, ``image_id``, ``label``, ``probability``
            and ``kind`` (``"FN"`` or ``"FP"``), already in display order
            (see :func:`skinlesion.evaluation.evaluate.confident_errors`).
        n: Number of thumbnails.
        columns: Thumbnails per row.
        thumb_size: Longest side of a thumbnail in pixels.
        fig: Figure to draw on (a new one if ``None``).
        load: ``(path, size) -> RGB array``; a failure shows a placeholder, never stops the plot.

    Returns:
        The figure.
    """
    shown = errors.head(n)
    rows = max(1, math.ceil(len(shown) / columns))
    if fig is None:
        fig = Figure(figsize=(2.6 * columns, 2.9 * rows), layout="constrained")
    if shown.empty:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "No errors at this threshold", ha="center", va="center", fontsize=14)
        ax.axis("off")
        return fig
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), shown.iterrows(), strict=False):
        try:
            ax.imshow(load(str(row["path"]), thumb_size))
        except Exception as exc:  # one unreadable thumbnail must not lose the gallery
            ax.text(0.5, 0.5, f"cannot open\n{type(exc).__name__}", ha="center", va="center",
                    fontsize=8, transform=ax.transAxes)
        kind = str(row["kind"])
        ax.set_title(f"{kind}  P(malignant) = {row['probability']:.3f}\n"
                     f"{_short(str(row['image_id']), 24)}", fontsize=8,
                     color=ERROR_COLORS.get(kind, "black"))
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color(ERROR_COLORS.get(kind, "black"))
            spine.set_linewidth(3)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("on")
    fig.suptitle("Most confident errors (FN = missed malignant, FP = benign called malignant)",
                 fontsize=11, fontweight="bold")
    return fig



# === The report's figure set ===

FIGURE_TITLES: dict[str, str] = {
    "roc": "ROC curve",
    "precision_recall": "Precision–recall curve",
    "confusion_matrix": "Confusion matrix",
    "reliability": "Reliability diagram",
    "score_histograms": "Score distributions",
    "threshold_curves": "Sensitivity and specificity vs threshold",
    "subgroup_auc": "AUC by subgroup",
    "error_gallery": "Most confident errors",
    "training_curves": "Training curves",
}
"""Every figure the evaluation writes (``<name>.png``) and embeds in the report."""


@_plain_text
def evaluation_figures(result: EvalResult, errors: pd.DataFrame, *,
                       gallery_size: int = 12) -> dict[str, Figure]:
    """Draw every figure of an :class:`~skinlesion.evaluation.metrics.EvalResult`.

    Args:
        result: The evaluation result (``predictions``, ``metrics``, ``curves``).
        errors: The misclassified images in gallery order (``confident_errors``).
        gallery_size: Thumbnails in the error gallery.

    Returns:
        Name → figure, in :data:`FIGURE_TITLES` order (``subgroup_auc`` only with subgroups).
    """
    df = result.predictions
    y = df["label"].to_numpy(dtype=int)
    p = df["probability"].to_numpy(dtype=float)
    t = result.threshold
    names = tuple(result.metrics.get("run", {}).get("class_names") or ("benign", "malignant"))
    both = 0 < y.sum() < y.size
    figs: dict[str, Figure] = {}
    if both:
        figs["roc"] = plot_roc(y, p, t, band=result.curves.get("roc_band"),
                               operating_ci=result.curves.get("operating_ci"),
                               auc_ci=result.curves.get("auc_ci")).figure_
        figs["precision_recall"] = plot_precision_recall(y, p, t).figure_
    figs["confusion_matrix"] = plot_confusion_matrix(y, p, t, class_names=names).figure_
    if both:
        figs["reliability"] = plot_reliability(y, p).figure_
    figs["score_histograms"] = _figure_of(plot_score_histograms(y, p, t))
    if both:
        figs["threshold_curves"] = _figure_of(plot_threshold_curves(y, p, t))
    if result.metrics.get("subgroups", {}).get("groupings"):
        figs["subgroup_auc"] = _figure_of(plot_subgroup_auc(
            result.metrics["subgroups"], result.metrics["ranking"].get("roc_auc")))
    gallery = errors.copy()
    if "file" in gallery:
        gallery["path"] = gallery["file"]
    elif "path" not in gallery:
        gallery["path"] = ""
    if "image_id" not in gallery:
        gallery["image_id"] = gallery.index.astype(str)
    figs["error_gallery"] = plot_error_gallery(gallery, n=gallery_size)
    history = result.curves.get("history")
    if isinstance(history, pd.DataFrame) and not history.empty:
        figs["training_curves"] = plot_training_curves(history)
    return figs


def _figure_of(ax: Axes) -> Figure:
    return cast(Figure, ax.figure)
