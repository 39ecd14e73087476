"""Small display helpers for notebooks: HTML tables, inline figures, training curves.

Objects of :mod:`skinlesion.api` render themselves in Jupyter through
``_repr_html_``; this module holds the pieces they share. Everything here draws on
a bare :class:`matplotlib.figure.Figure` (no pyplot state, any backend) and embeds
figures as base64 PNG ``<img>`` tags, so a saved notebook shows them on a
code-hosting site without re-running.

Plot helpers follow scikit-learn's ``*Display`` style: ``HistoryDisplay.from_history(...)``
or ``display.plot(ax=None)`` draw on ``ax`` (a new figure when ``None``) and return the
display, whose ``ax_`` and ``figure_`` hold what was drawn.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INLINE_DPI = 90
"""Resolution of figures embedded in ``_repr_html_`` (small: notebooks are stored with them)."""


# === HTML pieces ===


def escape(value: Any) -> str:
    """``value`` as HTML-escaped text."""
    return html.escape(str(value), quote=True)


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``—`` for None/NaN, other values as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return "—" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def fmt_ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    """A confidence interval as ``lo–hi`` (``—`` when absent)."""
    if not ci or len(ci) != 2 or any(v is None for v in ci):
        return "—"
    return f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def html_table(rows: Iterable[tuple[Any, Any]], *, header: tuple[str, str] | None = None) -> str:
    """A two-column key/value HTML table (values are escaped unless already ``Markup``)."""
    out = ['<table style="border-collapse:collapse;margin:4px 0">']
    if header:
        out.append("<tr>" + "".join(f'<th style="text-align:left;padding:2px 10px">{escape(h)}</th>'
                                    for h in header) + "</tr>")
    for key, value in rows:
        cell = value.html if isinstance(value, Markup) else escape(value)
        out.append(f'<tr><td style="text-align:left;padding:2px 10px;color:#555">{escape(key)}</td>'
                   f'<td style="text-align:left;padding:2px 10px">{cell}</td></tr>')
    out.append("</table>")
    return "".join(out)


@dataclass(frozen=True)
class Markup:
    """Already-safe HTML passed through :func:`html_table` unescaped."""

    html: str


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = INLINE_DPI) -> bytes:
    """``fig`` rendered as PNG or JPEG bytes (JPEG for photos: a tenth of the size)."""

    buf = io.BytesIO()
    extra: dict[str, Any] = {"pil_kwargs": {"quality": 85}} if fmt == "jpeg" else {}
    fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white", **extra)
    return buf.getvalue()


def figure_base64(fig: Figure, dpi: int = INLINE_DPI, fmt: str = "png") -> str:
    """``fig`` as a base64 PNG (or JPEG) string."""
    return base64.b64encode(figure_bytes(fig, fmt, dpi)).decode("ascii")


def img_tag(fig: Figure, *, alt: str = "", dpi: int = INLINE_DPI, width: int | None = None,
            fmt: str = "png") -> str:
    """An ``<img>`` tag embedding ``fig`` as a base64 PNG (or ``fmt="jpeg"`` for photos)."""
    size = f' width="{width}"' if width else ""
    return (f'<img alt="{escape(alt)}"{size} style="display:inline-block;margin:2px" '
            f'src="data:image/{fmt};base64,{figure_base64(fig, dpi, fmt)}"/>')


class PhotoFigure:
    """A matplotlib figure of photos that Jupyter shows as JPEG.

    Notebooks store their outputs; a PNG of 25 dermoscopic photos weighs megabytes, a
    JPEG a tenth of that. ``figure`` is the plain matplotlib figure (``savefig`` is
    passed through).

    Args:
        figure: The figure.
        dpi: Resolution of the inline image. Defaults to 72.
    """

    def __init__(self, figure: Figure, dpi: int = 72) -> None:
        self.figure = figure
        self.dpi = dpi

    def savefig(self, *args: Any, **kwargs: Any) -> None:
        """``figure.savefig``."""
        self.figure.savefig(*args, **kwargs)

    def _repr_jpeg_(self) -> bytes:
        return figure_bytes(self.figure, "jpeg", self.dpi)

    def __repr__(self) -> str:
        return f"PhotoFigure({self.figure!r})"


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (5.6, 4.0)) -> Axes:
    """``ax``, or the axes of a new bare figure."""
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").add_subplot()


# === Training curves ===


@dataclass
class HistoryDisplay:
    """Training curves of one metric, train and validation, per epoch (sklearn Display style).

    Attributes:
        history: The run's ``history.csv`` as a DataFrame (``epoch``, ``stage``, metrics).
        metric: The metric plotted (``auc``, ``loss``, ...); ``val_<metric>`` is drawn too.
        ax_: The axes drawn on (after ``plot``).
        figure_: The figure of ``ax_``.
        lines_: The plotted lines.
    """

    history: pd.DataFrame
    metric: str = "auc"
    ax_: Axes | None = None
    figure_: Figure | None = None
    lines_: list[Any] = field(default_factory=list)

    @classmethod
    def from_history(cls, history: pd.DataFrame, metric: str = "auc", *,
                     ax: Axes | None = None) -> HistoryDisplay:
        """Build the display from a history table and plot it.

        Args:
            history: Per-epoch metrics (``history.csv``).
            metric: Metric name without the ``val_`` prefix. Defaults to ``"auc"``.
            ax: Axes to draw on (a new figure if ``None``).

        Returns:
            The display, plotted.

        Raises:
            ValueError: if neither ``metric`` nor ``val_<metric>`` is in the history,
                naming the columns that are.
        """
        return cls(history, metric).plot(ax=ax)

    def plot(self, ax: Axes | None = None) -> HistoryDisplay:
        """Draw the curves on ``ax`` (a new figure if ``None``) and return ``self``."""
        h = self.history
        cols = [c for c in (self.metric, f"val_{self.metric}") if c in h.columns]
        if not cols:
            names = sorted({c.removeprefix("val_") for c in h.columns
                            if c not in ("epoch", "stage")})
            raise ValueError(f"no {self.metric!r} in the training history; metrics: {names}")
        ax = new_axes(ax)
        x = np.arange(1, len(h) + 1)
        self.lines_ = []
        for col in cols:
            style = "-" if col.startswith("val_") else "--"
            label = "validation" if col.startswith("val_") else "train"
            (line,) = ax.plot(x, h[col].to_numpy(dtype=float), style, label=label)
            self.lines_.append(line)
        if "stage" in h.columns and h["stage"].nunique() > 1:
            # Mark where one training stage (head, fine-tuning) hands over to the next.
            stages = h["stage"].astype(str).to_numpy()
            for i in range(1, len(stages)):
                if stages[i] != stages[i - 1]:
                    ax.axvline(i + 0.5, color="#888888", lw=0.8, ls=":")
                    ax.text(i + 0.6, 0.02, stages[i], transform=ax.get_xaxis_transform(),
                            fontsize=8, color="#555555")
        ax.set_xlabel("epoch (all stages)")
        ax.set_ylabel(self.metric)
        ax.set_title(f"Training history: {self.metric}", fontsize=11, loc="left",
                     fontweight="bold")
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=8)
        self.ax_, self.figure_ = ax, ax.figure  # type: ignore[assignment]
        return self


def history_figure(history: pd.DataFrame, metrics: Sequence[str] = ("auc", "loss")) -> Figure:
    """One figure with a panel per metric present in ``history`` (for ``Run._repr_html_``)."""
    from matplotlib.figure import Figure

    present = [m for m in metrics if m in history.columns or f"val_{m}" in history.columns]
    fig = Figure(figsize=(4.2 * max(1, len(present)), 3.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(present)), squeeze=False)[0]
    for ax, metric in zip(axes, present, strict=False):
        HistoryDisplay(history, metric).plot(ax=ax)
    return fig


# === A single prediction ===


@dataclass
class PredictionDisplay:
    """A photo, its Grad-CAM overlay, and the probability against the threshold.

    Attributes:
        image: ``(H, W, 3)`` uint8 photo.
        overlay: ``(H, W, 3)`` uint8 photo with the heatmap blended in, or None.
        probability: P(malignant).
        threshold: The operating threshold.
        decision: The decision at the threshold.
        title: Shown above the photo.
        figure_: The figure drawn (after ``plot``).
        axes_: Its axes.
    """

    image: np.ndarray
    overlay: np.ndarray | None
    probability: float
    threshold: float
    decision: str
    title: str = ""
    figure_: Figure | None = None
    axes_: list[Axes] = field(default_factory=list)

    def plot(self, ax: Axes | Sequence[Axes] | None = None) -> PredictionDisplay:
        """Draw photo, heatmap (if any) and a probability bar.

        Args:
            ax: One axes (the photo, or the overlay when there is one), a sequence of up
                to three axes (photo, overlay, bar), or ``None`` for a new figure.

        Returns:
            ``self``.
        """
        from matplotlib.figure import Figure

        panels = 3 if self.overlay is not None else 2
        if ax is None:
            fig = Figure(figsize=(2.8 * panels, 3.0), layout="constrained")
            axes = list(fig.subplots(1, panels, squeeze=False)[0])
        elif isinstance(ax, Sequence):
            axes = list(ax)
        else:
            axes = [ax]
        images = [(self.image, self.title or "photo")]
        if self.overlay is not None:
            images.append((self.overlay, "Grad-CAM"))
        if len(axes) == 1 and self.overlay is not None:
            images = images[1:]
        for a, (img, title) in zip(axes, images, strict=False):
            a.imshow(img)
            a.set_title(title, fontsize=9)
            a.set_axis_off()
        if len(axes) > len(images):
            self._bar(axes[len(images)])
        self.axes_ = axes
        self.figure_ = axes[0].figure  # type: ignore[assignment]
        return self

    def _bar(self, ax: Axes) -> None:
        colour = "#c0392b" if self.probability >= self.threshold else "#2e86c1"
        ax.barh([0], [self.probability], color=colour, height=0.4)
        ax.set_ylim(-0.5, 0.7)
        ax.axvline(self.threshold, color="#111111", lw=1.5, ls="--")
        ax.text(self.threshold, 0.93, f" threshold {self.threshold:.3f}", fontsize=8,
                transform=ax.get_xaxis_transform(), va="top")
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.set_xlabel("P(malignant)")
        ax.set_title(f"{self.probability:.3f} → {self.decision}", fontsize=10)


def thumbnail(rgb: np.ndarray, max_side: int = 256) -> np.ndarray:
    """``rgb`` shrunk so its longer side is at most ``max_side`` (uint8)."""

    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    img.thumbnail((max_side, max_side))
    return np.asarray(img)


def counts_table(df: pd.DataFrame, by: str = "split") -> str:
    """HTML table of images and malignant counts per value of ``by`` (for data summaries)."""
    rows = ['<table style="border-collapse:collapse;margin:4px 0"><tr>'
            + "".join(f'<th style="padding:2px 10px;text-align:right">{h}</th>'
                      for h in (escape(by), "images", "malignant", "benign", "patients"))
            + "</tr>"]
    order = [s for s in ("train", "val", "test") if s in set(df[by])] + sorted(
        set(df[by]) - {"train", "val", "test"}, key=str)
    for value in order:
        part = df[df[by] == value]
        pat = part["patient_id"].astype(str).replace("", np.nan).dropna() \
            if "patient_id" in part else []
        cells = (value, len(part), int(part["label"].sum()), int((part["label"] == 0).sum()),
                 len(set(pat)) if len(pat) else "—")
        rows.append("<tr>" + "".join(f'<td style="padding:2px 10px;text-align:right">'
                                     f"{escape(fmt_number(c))}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)
