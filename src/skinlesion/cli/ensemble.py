"""``skinlesion ensemble``: average several runs into one run directory."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from skinlesion.cli._common import err_console, fail, print_json
from skinlesion.cli._progress import RichProgress


def register(app: typer.Typer) -> None:
    """Add the ``ensemble`` command to ``app``."""
    app.command("ensemble")(ensemble_command)


def ensemble_command(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", show_default=False,
                                      help="Two or more finished training runs."),
    out: Path = typer.Option(..., "--out", "-o", help="The ensemble's run directory."),
    data_dir: Path = typer.Option(..., "--data", help="Prepared data folder; its validation "
                                  "split fits the ensemble's threshold."),
    target_sensitivity: float = typer.Option(0.90, "--target-sensitivity", min=0.01, max=1.0,
                                             help="Validation sensitivity the threshold must reach."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in OUT."),
    as_json: bool = typer.Option(False, "--json", help="Print the spec as JSON on stdout."),
) -> None:
    """Average the members' probabilities into one run (evaluate, predict, serve, export it as any run).

    Members may differ in backbone and input size (the image is resized in-graph for each); members that use clinical metadata must share one encoding. The threshold is fitted on the validation split of --data.
    """
    from skinlesion.data.manifest import ManifestError
    from skinlesion.runspec import RunError
    from skinlesion.workflows.ensemble import build_ensemble

    try:
        with contextlib.redirect_stdout(sys.stderr), RichProgress(quiet=as_json) as progress:
            spec = build_ensemble(runs, out, data_dir=data_dir,
                                  target_sensitivity=target_sensitivity, overwrite=overwrite,
                                  progress=progress)
    except (RunError, ManifestError, ValueError) as exc:
        fail(str(exc), code=2)
    if as_json:
        print_json(spec.to_dict())
    else:
        err_console.print(f"[green]ensemble[/] of {len(runs)} runs → {out}  val AUC "
                          f"{spec.val_metrics['roc_auc']:.3f}, threshold {spec.threshold:.3f}")
        typer.echo(str(out))
