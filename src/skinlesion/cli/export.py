"""``skinlesion export``: SavedModel, TFLite or ONNX, checked against the Keras model."""

from __future__ import annotations

from pathlib import Path

import typer

from skinlesion.cli._common import err_console, fail, print_json
from skinlesion.cli._progress import RichProgress

_FORMATS = ("savedmodel", "tflite", "onnx")
_QUANTIZATIONS = ("float16", "int8")


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""
    app.command("export")(export_command)


def _check_choice(choices: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r}: choose one of {', '.join(choices)}")
        return value

    return check


def export_command(
    run_dir: Path = typer.Argument(..., help="A finished training run.", show_default=False),
    fmt: str = typer.Option(..., "--format", "-f", callback=_check_choice(_FORMATS),
                            help="savedmodel (TF Serving) | tflite (phones) | onnx (ONNX Runtime)."),
    quantize: str | None = typer.Option(None, "--quantize", "-q",
                                        callback=_check_choice(_QUANTIZATIONS),
                                        help="TFLite only: float16 (half-size weights) or int8 "
                                             "(calibrated on the training split)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Export folder [default: RUN_DIR/export/FORMAT[-QUANT]]."),
    check_images: Path | None = typer.Option(
        None, "--check-images",
        help="Images for the parity check: a prepared data folder, a folder with labels.csv, "
             "or any image folder [default: the run's data, test split]."),
    calibration_data: Path | None = typer.Option(
        None, "--calibration-data",
        help="int8 calibration images [default: the run's data, train split]."),
    check_count: int = typer.Option(200, "--check-count", min=1, help="Images in the parity check."),
    calibration_count: int = typer.Option(100, "--calibration-count", min=1,
                                          help="Images for int8 calibration."),
    skip_check: bool = typer.Option(False, "--skip-check", help="Export without a parity check."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Export a run and check it against the Keras model on real images.

    The export folder holds the model, a copy of model_spec.json (threshold, input size) and parity.json: max/mean absolute probability difference, decision agreement and AUC difference against the Keras model. Every format takes raw 0–255 RGB ('image') and returns P(malignant) ('probability').

    Exit status: 0 when exported and within tolerance, 1 when the parity check failed (the export is kept for inspection), 2 for unusable input.
    """
    from skinlesion.inference.export import ExportError
    from skinlesion.runspec import RunError
    from skinlesion.workflows.export import export_run

    try:
        with err_console.status("exporting", spinner="dots") if err_console.is_terminal \
                else _null(), RichProgress() as progress:
            result = export_run(run_dir, fmt, quantize=quantize, out=out, check_images=check_images,
                                calibration_data=calibration_data, check_count=check_count,
                                calibration_count=calibration_count, skip_check=skip_check,
                                progress=progress)
    except (ExportError, RunError) as exc:
        fail(str(exc), code=2)

    parity = result.parity
    if as_json:
        print_json({"path": str(result.path), "model_file": str(result.model_file),
                    "format": result.format, "quantize": result.quantize,
                    "size_bytes": result.size_bytes, "parity": parity})
    err_console.print(f"wrote {result.model_file} ({result.size_bytes / 2**20:.1f} MB)",
                      highlight=False)
    if parity is None:
        err_console.print("[yellow]parity not checked[/] (--skip-check)")
        return
    auc = ("" if parity["auc_diff"] is None else
           f", AUC {parity['auc_export']:.4f} vs Keras {parity['auc_keras']:.4f} "
           f"(diff {parity['auc_diff']:+.4f})")
    verdict = "[green]ok[/]" if parity["passed"] else "[bold red]FAILED[/]"
    err_console.print(
        f"parity {verdict} on {parity['n_images']} images ({parity['precision']}): max |Δp| "
        f"{parity['max_abs_diff']:.2e}, mean {parity['mean_abs_diff']:.2e}, "
        f"decision agreement {parity['decision_agreement']:.1%}{auc}", highlight=False)
    if not parity["passed"]:
        err_console.print(f"[red]not met:[/] {'; '.join(parity['failed_criteria'])} "
                          f"(kept for inspection in {result.path})", highlight=False)
        raise typer.Exit(1)


def _null():  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext()
