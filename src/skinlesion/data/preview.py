"""A look at the data: a grid of prepared images titled with their labels.

The check tutorial 1 did with ``show_batch``: before training, look at a random
batch and see that malignant/benign and the diagnosis match the pictures. Uses a
bare :class:`matplotlib.figure.Figure` (no pyplot, no GUI backend), so it runs
headless and never touches global matplotlib state.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from skinlesion.data.images import ImageError, open_image
from skinlesion.data.manifest import manifest_path, read_manifest
from skinlesion.utils.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

LABEL_NAMES = {0: "benign", 1: "malignant"}
_COLOURS = {0: "#1b6ca8", 1: "#b2182b"}
_DISCLAIMER = "Research and education only; not a diagnostic device."


def sample_batch(manifest: pd.DataFrame, n: int = 25, split: str | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """A seeded random sample of ``n`` rows (of one split if given).

    Raises:
        ValueError: if the split has no rows.
    """
    rows = manifest if split is None else manifest[manifest["split"] == split]
    if rows.empty:
        available = sorted(manifest["split"].unique()) if "split" in manifest else []
        raise ValueError(f"no images in split {split!r}; splits present: {available}")
    return rows.sample(n=min(n, len(rows)), random_state=seed).reset_index(drop=True)


def plot_batch(batch: pd.DataFrame, data_dir: str | os.PathLike[str], cols: int = 5,
               title: str | None = None, thumb: int = 256) -> Figure:
    """Draw ``batch`` as a grid, each image titled "malignant · melanoma" (or benign …).

    Args:
        batch: Manifest rows to show.
        data_dir: The data folder the rows' paths are relative to.
        cols: Images per row.
        title: Figure title.
        thumb: Longest side of each thumbnail, in pixels.

    Returns:
        The figure (save it with ``fig.savefig``).
    """
    from matplotlib.figure import Figure

    root = manifest_path(data_dir).parent
    n = len(batch)
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(2.6 * cols, 2.8 * rows + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (_, row) in zip(axes.flat, batch.iterrows(), strict=False):
        label = int(row["label"])
        try:
            img = open_image(root / str(row["path"]), draft_size=thumb)
            img.thumbnail((thumb, thumb))
            ax.imshow(np.asarray(img))
        except ImageError as exc:
            logger.warning("%s", exc)
            ax.text(0.5, 0.5, f"unreadable\n{exc.reason}", ha="center", va="center",
                    fontsize=8, wrap=True, transform=ax.transAxes)
        diagnosis = str(row.get("diagnosis", "") or "")
        text = LABEL_NAMES[label] + (f" · {diagnosis}" if diagnosis and diagnosis != LABEL_NAMES[label]
                                     else "")
        ax.set_title(f"{text}\n{row['image_id']}", fontsize=9, color=_COLOURS[label])
    fig.suptitle(title or "", fontsize=12)
    fig.supxlabel(_DISCLAIMER, fontsize=8, color="#555555")
    return fig


def save_batch_grid(data_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    split: str | None = "train", n: int = 25, seed: int = 0, cols: int = 5) -> Path:
    """Sample ``n`` images of ``split`` from the manifest of ``data_dir`` and save the grid.

    The image format follows ``out``'s extension (PNG, JPEG, PDF, SVG); the file is
    written atomically.

    Raises:
        ManifestError: if the manifest is missing or invalid.
        ValueError: if the split has no rows.
    """
    manifest = read_manifest(data_dir)
    batch = sample_batch(manifest, n=n, split=split, seed=seed)
    pool = manifest if split is None else manifest[manifest["split"] == split]
    mal = int(pool["label"].sum())
    title = (f"{Path(data_dir).resolve().name}: {len(batch)} of {len(pool):,} "
             f"{split or 'all'} images ({mal:,} malignant, {len(pool) - mal:,} benign), seed {seed}")
    fig = plot_batch(batch, data_dir, cols=cols, title=title)
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt)
    return out
