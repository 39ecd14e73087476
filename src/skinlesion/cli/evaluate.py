"""``skinlesion evaluate`` and ``skinlesion compare``: metrics, plots and the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from skinlesion import INTENDED_USE
from skinlesion.cli._common import (
    RUNTIME_HELP,
    check_runtime,
    err_console,
    fail,
    load_predictor,
    print_json,
)
from skinlesion.cli._progress import RichProgress

SPLITS = ("test", "val", "train", "all")


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to ``app``."""
    app.command("evaluate")(evaluate_command)
    app.command("compare")(compare_command)


# === Parameter types ===


def _check_threshold(value: str) -> str:
    from skinlesion.evaluation.operating_point import ThresholdRule

    try:
        return str(ThresholdRule.parse(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _check_split(value: str) -> str:
    if value not in SPLITS:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(SPLITS)}")
    return value


def _check_tta(value: int) -> int:
    if value not in (1, 2, 4, 8):
        raise typer.BadParameter(f"{value}: TTA views must be 1, 2, 4 or 8")
    return value


_THRESHOLD_HELP = ("stored (model_spec.json) | youden | sens=0.95 | a number. youden and sens= "
                   "are chosen on the manifest's validation split, never on the scored images.")


# === Commands ===


def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A finished training run (model.keras + "
                                             "model_spec.json)."),
    data: Path = typer.Option(..., "--data", "-d", help="Prepared data folder (manifest.csv)."),
    split: str = typer.Option("test", "--split", callback=_check_split,
                              help="Manifest split to score: test | val | train | all."),
    threshold: str = typer.Option("stored", "--threshold", "-t", callback=_check_threshold,
                                  help=_THRESHOLD_HELP),
    tta: int = typer.Option(1, "--tta", callback=_check_tta,
                            help="Test-time augmentation: dihedral views averaged (1, 2, 4, 8)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=0,
                                  help="Stratified bootstrap replicates for the 95 % CIs "
                                       "(0 = none)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder "
                                                              "(default RUN_DIR/eval)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
    exclude_overlap: bool = typer.Option(
        False, "--exclude-overlap",
        help="Leave out images the run was trained or validated on (matched by hash and id); "
             "by default they are scored and flagged."),
    runtime: str = typer.Option("auto", "--runtime", callback=check_runtime, help=RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
) -> None:
    """Score RUN_DIR on a manifest split; write metrics, predictions, plots and report.html.

    Reports ROC AUC with a bootstrap CI, the ISIC 2024 partial AUC above 80 % TPR, average precision, every rate at the operating threshold, specificity at 90/95 % sensitivity, calibration, per-source/sex/age/site subgroups and a gallery of the most confident errors. See docs/EVALUATION.md.
    """
    from skinlesion.data.manifest import ManifestError
    from skinlesion.runspec import RunError, require_run
    from skinlesion.workflows.evaluate import evaluate_run

    try:
        require_run(run_dir)
        predictor = load_predictor(run_dir, runtime, quiet=as_json)
        with RichProgress(quiet=as_json) as progress:
            result = evaluate_run(run_dir, data, split=split, threshold=threshold, tta=tta,
                                  bootstrap=bootstrap, out=out, seed=seed,
                                  batch_size=batch_size, progress=progress,
                                  exclude_overlap=exclude_overlap, predictor=predictor)
    except (RunError, ManifestError, ValueError) as exc:
        fail(str(exc), code=2)
    report = result.report_path
    if as_json:
        print_json({**result.metrics, "report": str(report)})
        err_console.print(f"report: {report}", highlight=False)
        return
    _print_summary(result.metrics)
    typer.echo(str(report))


def compare_command(
    runs: list[Path] = typer.Argument(..., help="Two or more finished runs.", metavar="RUN...",
                                      show_default=False),
    data: Path = typer.Option(..., "--data", "-d", help="Prepared data folder (manifest.csv)."),
    split: str = typer.Option("test", "--split", callback=_check_split,
                              help="Manifest split to score."),
    threshold: str = typer.Option("stored", "--threshold", "-t", callback=_check_threshold,
                                  help=_THRESHOLD_HELP),
    tta: int = typer.Option(1, "--tta", callback=_check_tta, help="TTA views (1, 2, 4, 8)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=0,
                                  help="Replicates for AUC CIs and the paired bootstrap."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Output folder (default FIRST_RUN/eval/compare)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    exclude_overlap: bool = typer.Option(
        False, "--exclude-overlap",
        help="Leave out images any run was trained or validated on (matched by hash and id)."),
    as_json: bool = typer.Option(False, "--json", help="Print compare.json on stdout."),
) -> None:
    """Compare runs on the same images: metrics side by side, paired DeLong tests of AUC.

    Writes compare.json, compare.html, predictions.csv and an overlaid ROC plot. Images that any run cannot read are left out for every run, so all are scored on the same images.
    """
    from skinlesion.data.manifest import ManifestError
    from skinlesion.runspec import RunError, require_run
    from skinlesion.workflows.compare import compare_runs

    if len(runs) < 2:
        fail("compare needs at least two runs", code=2)
    try:
        for run in runs:
            require_run(run)
        with RichProgress(quiet=as_json) as progress:
            result = compare_runs(runs, data, split=split, threshold=threshold, tta=tta,
                                  bootstrap=bootstrap, out=out, seed=seed, progress=progress,
                                  exclude_overlap=exclude_overlap)
    except (RunError, ManifestError, ValueError) as exc:
        fail(str(exc), code=2)
    if as_json:
        print_json({**result.comparison, "report": str(result.report_path)})
        err_console.print(f"report: {result.report_path}", highlight=False)
        return
    from rich.table import Table

    c = result.comparison
    table = Table(title=f"{c['counts']['n']} shared images", title_justify="left")
    table.add_column("run")
    for col in ("AUC", "95 % CI", "spec@sens95", "sens", "spec"):
        table.add_column(col, justify="right")
    for name, m in c["models"].items():
        s95 = m["fixed_rates"].get("specificity_at_sensitivity_0.95") or {}
        table.add_row(name, _f(m["roc_auc"]),
                      _ci(m.get("roc_auc_ci95")) if m.get("roc_auc_ci_reliable", True)
                      else "not reliable",
                      _f(s95.get("specificity")), _f(m["at_threshold"]["sensitivity"]),
                      _f(m["at_threshold"]["specificity"]))
    err_console.print(table)
    for pair in c["pairs"]:
        d = pair.get("delong")
        if d:
            err_console.print(f"{pair['a']} − {pair['b']}: ΔAUC {d['difference']:+.3f} "
                              f"(95 % CI {_ci(d['ci'])}), DeLong p = {_f(d['p_value'], 4)}",
                              highlight=False)
    for name, overlap in (c.get("overlap") or {}).items():
        if overlap.get("warning"):
            style = "yellow" if overlap.get("excluded") else "bold red"
            err_console.print(f"[{style}]overlap ({escape(name)}):[/] "
                              f"{escape(overlap['warning'])}", highlight=False)
    err_console.print(f"[dim]{INTENDED_USE}[/]", highlight=False)
    typer.echo(str(result.report_path))


# === Output ===


def _f(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(value: Any) -> str:
    if not value:
        return "—"
    return f"{value[0]:.3f}{' to ' if value[0] < 0 else '–'}{value[1]:.3f}"


def _print_summary(m: dict[str, Any]) -> None:
    from rich.table import Table

    rk, at, op = m["ranking"], m["at_threshold"], m["operating_point"]
    s95 = m["fixed_rates"].get("specificity_at_sensitivity_0.95") or {}
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    counts = m["counts"]
    table.add_row("images", f"{counts['n']} scored ({counts['n_positive']} malignant, "
                            f"{100 * (counts['prevalence'] or 0):.1f} %)"
                  + (f", [red]{m['errors']['count']} unreadable[/]" if m["errors"]["count"]
                     else ""))
    auc_ci = (f"95 % CI {_ci(rk.get('roc_auc_ci95'))}" if rk.get("roc_auc_ci_reliable", True)
              else f"no reliable CI: {rk.get('roc_auc_ci_note')}")
    table.add_row("ROC AUC", f"{_f(rk['roc_auc'])}  ({auc_ci})")
    table.add_row("pAUC >80 % TPR", f"{_f(rk['pauc_tpr80'])}  (of 0.2)")
    table.add_row("avg precision", _f(rk["average_precision"]))
    table.add_row("threshold", f"{op['threshold']:.3f}  ({op.get('description', op['rule'])})")
    table.add_row("sensitivity", f"{_f(at['sensitivity'])}  (95 % CI "
                                 f"{_ci(at.get('sensitivity_ci95'))})")
    table.add_row("specificity", f"{_f(at['specificity'])}  (95 % CI "
                                 f"{_ci(at.get('specificity_ci95'))})")
    table.add_row("spec @ sens 95 %", f"{_f(s95.get('specificity'))}  (threshold read off these "
                                      "images: optimistic)" if s95 else "—")
    table.add_row("Brier / ECE", f"{_f(m['calibration']['brier'])} / "
                                 f"{_f(m['calibration']['ece'])}")
    err_console.print(table)
    if op.get("warning"):
        err_console.print(f"[yellow]warning:[/] {escape(op['warning'])}", highlight=False)
    overlap = m.get("overlap") or {}
    if overlap.get("warning"):
        style = "yellow" if overlap.get("excluded") else "bold red"
        err_console.print(f"[{style}]overlap:[/] {escape(overlap['warning'])}", highlight=False)
    err_console.print(f"[dim]{INTENDED_USE}[/]", highlight=False)
