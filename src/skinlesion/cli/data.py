"""``skinlesion prepare`` and ``skinlesion show-batch``: the data commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from skinlesion.cli._common import err_console, fail, print_json
from skinlesion.cli._progress import RichProgress
from skinlesion.data.layouts.base import SourceError
from skinlesion.data.layouts.detect import FORMAT_NAMES

if TYPE_CHECKING:

    from skinlesion.data.prepare import PrepareError, PrepareResult


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app``."""
    app.command("prepare")(prepare_command)
    app.command("show-batch")(show_batch_command)


# === Parameter types ===


def _parse_split(value: str) -> tuple[float, float, float]:
    from skinlesion.data.splits import parse_fractions

    try:
        return parse_fractions(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _parse_label_map(value: str) -> dict[str, int | None]:
    from skinlesion.data.labels import parse_label_map

    try:
        return parse_label_map(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _check_format(value: str) -> str:
    if value not in FORMAT_NAMES:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(FORMAT_NAMES)}")
    return value


# === Commands ===


def prepare_command(
    sources: list[Path] = typer.Argument(
        ..., help="Dataset folders or CSV files (several combine into one manifest).",
        metavar="SOURCE", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Data folder to write (DATA_DIR)."),
    fmt: str = typer.Option("auto", "--format", "-f", callback=_check_format,
                            help=f"Layout of every SOURCE: {' | '.join(FORMAT_NAMES)}."),
    label_map: list[str] = typer.Option(
        [], "--label-map", "-l", metavar="NAME=0|1|exclude,...",
        help="Extra or changed diagnosis/folder → label mappings, e.g. "
             "nevus=0,seborrheic_keratosis=0,melanoma=1 (repeatable)."),
    split: str = typer.Option("80/10/10", "--split", metavar="TRAIN/VAL/TEST",
                              help="Split fractions for rows the source does not split itself."),
    seed: int = typer.Option(1, "--seed", help="Split seed (same seed + input = same split)."),
    folds: int | None = typer.Option(None, "--folds", min=2,
                                     help="Also write a grouped, stratified `fold` column "
                                          "(0..K-1) over train+val."),
    size: int = typer.Option(512, "--size", min=16,
                             help="Shorter side of the saved images in px (never upscaled)."),
    quality: int = typer.Option(95, "--quality", min=50, max=100, help="JPEG quality."),
    workers: int | None = typer.Option(None, "--workers", "-j", min=1,
                                       help="Processes for resizing (default: all cores)."),
    metadata: list[Path] = typer.Option(
        [], "--metadata", "-m", metavar="CSV",
        help="Metadata sidecar joined on image id (image_id plus age/age_approx, sex, "
             "anatom_site_general/localization, patient_id, lesion_id); fills values the "
             "sources leave empty (repeatable)."),
    strict: bool = typer.Option(False, "--strict",
                                help="Fail (exit 1, no manifest) if any row is rejected."),
    tfrecords: int = typer.Option(
        0, "--tfrecords", min=0, metavar="N",
        help="Also write the images as N TFRecord shards per split (patient-grouped, same "
             "malignant share per shard) in DATA_DIR/tfrecords, for `train --tfrecords`."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Ingest ISIC-style datasets into DATA_DIR: manifest.csv, resized images, a report.

    Layouts are detected from the files (see docs/DATA.md): class folders, the ISIC 2016/2017/2019/2020 ground-truth tables, HAM10000, an ISIC Archive download, or any CSV with a path and a label column. A folder's metadata table (an image id plus age, sex, site or lesion columns, e.g. metadata.csv beside labels.csv) is joined automatically.

    Splits are grouped by patient and lesion id and stratified by label and source. Rows that cannot be used are skipped and listed in DATA_DIR/prepare_report.json.
    """
    from skinlesion.data.manifest import ManifestError
    from skinlesion.data.prepare import PrepareError, PrepareSettings, prepare

    settings = PrepareSettings(
        fmt=fmt, label_map=_parse_label_map(",".join(label_map)) if label_map else {},
        fractions=_parse_split(split), seed=seed, folds=folds, size=size, quality=quality,
        workers=workers, strict=strict)
    try:
        with RichProgress(quiet=as_json) as progress:
            result = prepare(sources, out, settings, progress=progress, metadata=metadata)
    except PrepareError as exc:
        _exit_strict(exc, as_json)
    except (SourceError, ManifestError, ValueError) as exc:
        fail(str(exc), code=2)
    if tfrecords:
        from skinlesion.data.tfrecords import write_tfrecords

        with RichProgress(quiet=as_json) as progress:
            index = write_tfrecords(out, tfrecords, seed=seed, progress=progress)
    if as_json:
        print_json({**result.report, **({"tfrecords": index} if tfrecords else {})})
    else:
        _print_prepared(result, out, index if tfrecords else None)


def _exit_strict(exc: PrepareError, as_json: bool) -> NoReturn:
    """Exit 1 after a ``--strict`` failure; with ``--json`` the report goes to stdout first."""
    if as_json:
        print_json(json.loads(exc.report_path.read_text(encoding="utf-8")))
    fail(exc.summary, code=1)


def _print_prepared(result: PrepareResult, out: Path, index: dict[str, Any] | None) -> None:
    """The human summary on stderr (counts, metadata, the first warnings, the TFRecord
    shards when ``index`` is given) and the manifest path on stdout."""
    from skinlesion.utils.safe_text import terminal_text

    colour = "yellow" if result.report["counts"]["rejected"] else "green"
    err_console.print(f"[{colour}]prepared[/] {result.summary}", highlight=False, soft_wrap=True)
    issues = result.report["counts"]["metadata_issues"]
    err_console.print(f"[{'yellow' if issues else 'green'}]metadata[/] "
                      f"{result.metadata_summary.removeprefix('metadata ')}"
                      f"{f' (see {result.report_path.name})' if issues else ''}",
                      highlight=False, soft_wrap=True)
    for warning in result.report["warnings"][:5]:
        err_console.print(f"[yellow]warning:[/] {terminal_text(warning)}", highlight=False)
    if len(result.report["warnings"]) > 5:
        err_console.print(f"[yellow]… {len(result.report['warnings']) - 5} more warnings in "
                          f"{result.report_path}[/]", highlight=False)
    if index is not None:
        counts = ", ".join(f"{name} {len(e['shards'])} × ~{e['images'] // len(e['shards'])}"
                           for name, e in index["splits"].items())
        err_console.print(f"[green]wrote[/] TFRecord shards ({counts} images) → "
                          f"{out / 'tfrecords'}", highlight=False)
    typer.echo(str(result.manifest_path))


def show_batch_command(
    data_dir: Path = typer.Argument(..., help="Prepared data folder (holds manifest.csv)."),
    out: Path = typer.Option(Path("batch.png"), "--out", "-o",
                             help="Image to write (.png, .jpg, .pdf, .svg)."),
    split: str = typer.Option("train", "--split", help="train | val | test | all."),
    n: int = typer.Option(25, "--n", min=1, max=100, help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Which random batch."),
) -> None:
    """Save a grid of random prepared images titled with their labels (a sanity check)."""
    from skinlesion.data.manifest import ManifestError
    from skinlesion.data.preview import save_batch_grid

    try:
        path = save_batch_grid(data_dir, out, split=None if split == "all" else split, n=n,
                               seed=seed, cols=5 if n >= 5 else n)
    except (ManifestError, ValueError) as exc:
        fail(str(exc), code=2)
    err_console.print(f"[green]wrote[/] {path}", highlight=False)
    typer.echo(str(path))
