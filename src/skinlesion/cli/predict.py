"""``skinlesion predict``: P(malignant) and a decision for image files, folders and globs."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from skinlesion.cli._common import (
    RUNTIME_HELP,
    check_runtime,
    err_console,
    fail,
    load_predictor,
    print_json,
)
from skinlesion.cli._progress import RichProgress

if TYPE_CHECKING:
    from skinlesion.inference.predictor import PredictionRow, Predictor


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command to ``app``."""
    app.command("predict")(predict_command)


def _check_tta(value: int) -> int:
    from skinlesion.inference.tta import TTA_CHOICES

    if value not in TTA_CHOICES:
        raise typer.BadParameter(f"{value}: choose one of {', '.join(map(str, TTA_CHOICES))}")
    return value


def predict_command(
    run_dir: Path = typer.Argument(..., help="A finished training run (model.keras + model_spec.json).",
                                   show_default=False),
    inputs: list[str] = typer.Argument(..., metavar="PATH...", show_default=False,
                                       help="Image files, folders (searched recursively) or glob "
                                            "patterns such as 'photos/**/*.jpg'."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Write the rows to this CSV (path, probability, decision, "
                                         "error; written atomically)."),
    tta: int = typer.Option(1, "--tta", callback=_check_tta,
                            help="Test-time augmentation: average 1, 2, 4 or 8 flip/transpose views."),
    cam: Path | None = typer.Option(None, "--cam",
                                    help="Also save a Grad-CAM heatmap overlay PNG per image here."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Images per forward pass."),
    metadata: Path | None = typer.Option(
        None, "--metadata",
        help="CSV of clinical metadata (path/filename or image_id, and age, sex, site) for a "
             "model trained with --metadata; images without a row count as unknown."),
    runtime: str = typer.Option("auto", "--runtime", callback=check_runtime, help=RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Predict P(malignant) for images with a trained run, batched, with a progress bar.

    Each row holds the path, the probability, the decision at the run's stored threshold (benign / malignant, or inconclusive inside the run's optional band) and an error for a file that could not be read; one bad file never stops the others.

    Exit status: 0 when at least one image was predicted, 1 when none could be, 2 when RUN_DIR is not a usable run. Research and education only: not a diagnostic device.
    """
    from skinlesion import INTENDED_USE
    from skinlesion.inference.predictor import find_images
    from skinlesion.utils.safe_text import terminal_text

    paths, problems = find_images(inputs)
    for msg in problems:
        err_console.print(f"[yellow]warning:[/] {terminal_text(msg)}", highlight=False)
    if not paths:
        fail("no images to predict", code=1)
    predictor = load_predictor(run_dir, runtime)
    meta_rows = _metadata_rows(metadata, paths, predictor) if metadata is not None else None
    cam_writer = _CamWriter(predictor, cam, batch_size) if cam is not None else None
    rows = _predict_all(predictor, paths, tta=tta, batch_size=batch_size, metadata=meta_rows,
                        cam_writer=cam_writer)

    from skinlesion.inference.outputs import prediction_record, write_predictions_csv

    heatmaps = cam_writer.written if cam_writer is not None else None
    records = [prediction_record(row, heatmaps) for row in rows]
    if out is not None:
        write_predictions_csv(out, records)
    counts = Counter(r.decision or "failed" for r in rows)
    summary = {"images": len(rows), **{k: counts.get(k, 0) for k in
                                       ("benign", "malignant", "inconclusive", "out_of_scope",
                                        "failed")}}
    if as_json:
        print_json({
            "run": str(run_dir), "model_id": predictor.model_id, "backbone": predictor.spec.backbone,
            "threshold": predictor.threshold, "inconclusive_band": predictor.spec.inconclusive_band,
            "runtime": predictor.runtime_name, "tta": tta, "intended_use": INTENDED_USE, "summary": summary, "rows": records,
        })
    elif out is None:
        _print_table(records)
    _print_summary(summary, rows, predictor, out, cam)
    err_console.print(f"[dim]{INTENDED_USE}[/]", highlight=False)
    if summary["failed"] + summary["out_of_scope"] == len(rows):
        raise typer.Exit(1)


def _metadata_rows(metadata: Path, paths: list[Path], predictor: Predictor
                   ) -> list[dict[str, Any] | None]:
    """The ``--metadata`` CSV's row for each image (unknown when it has none)."""
    from skinlesion.inference.metadata_input import MetadataTable, MetadataTableError

    try:
        table = MetadataTable(metadata)
    except MetadataTableError as exc:
        fail(str(exc), code=2)
    meta_rows, matched = table.records(paths)
    if not predictor.uses_metadata:
        err_console.print(f"[yellow]warning:[/] this model does not use clinical metadata; "
                          f"{metadata} is ignored", highlight=False)
    else:
        err_console.print(f"metadata: {matched} of {len(paths)} image(s) found in {metadata} "
                          f"(fields {', '.join(table.fields) or 'none'}); the others count "
                          "as unknown", highlight=False)
    return meta_rows


def _predict_all(predictor: Predictor, paths: list[Path], *, tta: int, batch_size: int,
                 metadata: list[dict[str, Any] | None] | None, cam_writer: _CamWriter | None,
                 ) -> list[PredictionRow]:
    """Every image through the Predictor, with a progress bar (and Grad-CAM files)."""
    rows: list[PredictionRow] = []
    with RichProgress() as progress:
        for row in predictor.iter_predict_files(paths, tta=tta, batch_size=batch_size,
                                                progress=progress, metadata=metadata):
            rows.append(row)
            if cam_writer is not None:
                cam_writer.add(row)
        if cam_writer is not None:
            cam_writer.flush()
    return rows


# === Output ===

def _print_table(records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from skinlesion.utils.safe_text import terminal_text

    table = Table("path", "probability", "decision", "error", box=None, pad_edge=False)
    style = {"malignant": "bold red", "inconclusive": "yellow", "benign": "green"}
    for rec in records:
        p = rec["probability"]
        decision = rec["decision"] or ""
        # File names and errors may hold ESC sequences or rich markup: shown, never run.
        table.add_row(terminal_text(rec["path"]), "" if p is None else f"{p:.4f}",
                      f"[{style.get(decision, '')}]{decision}[/]" if decision else "",
                      terminal_text(rec["error"] or ""))
    Console().print(table)


def _print_summary(summary: dict[str, int], rows: list[PredictionRow], predictor: Predictor,
                   out: Path | None, cam: Path | None) -> None:
    err_console.print(
        f"{summary['images']} image(s): {summary['benign']} benign, {summary['malignant']} malignant, "
        f"{summary['inconclusive']} inconclusive, {summary['out_of_scope']} out of scope, "
        f"{summary['failed']} failed "
        f"(threshold {predictor.threshold:.3f}, model {predictor.model_id})", highlight=False)
    from skinlesion.utils.safe_text import terminal_text

    failed = [r for r in rows if r.error]
    for r in failed[:10]:
        err_console.print(f"  [red]failed:[/] {terminal_text(r.path)}: {terminal_text(r.error)}",
                          highlight=False)
    if len(failed) > 10:
        err_console.print(f"  … and {len(failed) - 10} more (see the error column)")
    if out is not None:
        err_console.print(f"wrote {out}", highlight=False)
    if cam is not None:
        err_console.print(f"heatmaps in {cam}", highlight=False)


class _CamWriter:
    """Grad-CAM overlays for predicted rows, computed in batches, saved as PNGs."""

    def __init__(self, predictor: Predictor, folder: Path, batch_size: int) -> None:
        from skinlesion.inference.outputs import HeatmapNames

        self.predictor = predictor
        self.batch_size = batch_size
        self.pending: list[PredictionRow] = []
        self.written: dict[str, str] = {}
        self._names = HeatmapNames(folder)  # a.cam.png, a-2.cam.png for a second a.jpg

    def add(self, row: PredictionRow) -> None:
        if row.error is None:
            self.pending.append(row)
            if len(self.pending) >= self.batch_size:
                self.flush()

    def flush(self) -> None:
        import numpy as np

        from skinlesion.data.pipeline import to_model_input
        from skinlesion.inference.gradcam import heatmap_panel, save_png
        from skinlesion.inference.predictor import ImageError

        photos, xs, rows = [], [], []
        for row in self.pending:
            try:
                img = self.predictor.decode(row.path, check_scope=False)
            except ImageError:  # vanished since it was predicted: the row already has a result
                continue
            photos.append(img)
            xs.append(to_model_input(img, self.predictor.input_size))
            rows.append(row)
        self.pending = []
        if not xs:
            return
        maps = self.predictor.heatmaps(np.stack(xs))
        for row, img, heat in zip(rows, photos, maps, strict=True):
            target = self._names.next(row.path)
            title = (f"{Path(row.path).name}: P(malignant) {row.probability:.1%} → "
                     f"{row.decision} (threshold {self.predictor.threshold:.1%})")
            save_png(target, heatmap_panel(img, heat, title=title))
            self.written[row.path] = os.fspath(target)
