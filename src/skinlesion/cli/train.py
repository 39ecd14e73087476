"""``skinlesion train`` and ``skinlesion demo``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer

from skinlesion.cli._common import err_console, fail, print_json


def register(app: typer.Typer) -> None:
    """Add the training commands to ``app``."""
    app.command("train")(train_command)
    app.command("demo")(demo_command)


def train_command(
    data_dir: Path = typer.Argument(..., help="Prepared data folder (holds manifest.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    config: Path | None = typer.Option(None, "--config", help="YAML config; flags override it."),
    recipe: str | None = typer.Option(
        None, "--recipe",
        help="Named recipe: finetune (default), frozen, tutorial1, tutorial2."),
    mode: str | None = typer.Option(None, "--mode", help="frozen | finetune."),
    backbone: str | None = typer.Option(None, "--backbone", "-b",
                                        help="Registry name (see `skinlesion backbones`)."),
    weights: str | None = typer.Option(None, "--weights",
                                       help="imagenet | none | PATH to a weights file."),
    input_size: int | None = typer.Option(None, "--input-size", help="Model input size in px."),
    head_epochs: int | None = typer.Option(None, "--head-epochs"),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs"),
    head_lr: float | None = typer.Option(None, "--head-lr"),
    finetune_lr: float | None = typer.Option(None, "--finetune-lr"),
    unfreeze_groups: int | None = typer.Option(None, "--unfreeze-groups",
                                               help="Backbone groups unfrozen from the top (-1 all)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Per-replica batch size."),
    imbalance: str | None = typer.Option(None, "--imbalance",
                                         help="class_weight | balanced_sampling | none."),
    loss: str | None = typer.Option(None, "--loss", help="bce | focal."),
    label_smoothing: float | None = typer.Option(None, "--label-smoothing"),
    monitor: str | None = typer.Option(None, "--monitor", help="Best-checkpoint metric (val_auc)."),
    patience: int | None = typer.Option(None, "--patience", help="Early stopping (0 = off)."),
    target_sensitivity: float | None = typer.Option(
        None, "--target-sensitivity", help="Validation sensitivity the threshold must reach (0.90)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Fixed decision threshold."),
    seed: int | None = typer.Option(None, "--seed"),
    strategy: str | None = typer.Option(None, "--strategy",
                                        help="auto | none | mirrored | multiworker."),
    precision: str | None = typer.Option(None, "--precision",
                                         help="float32 | mixed_float16 | mixed_bfloat16."),
    jit: bool | None = typer.Option(None, "--jit/--no-jit", help="XLA compilation."),
    tfrecords: bool | None = typer.Option(
        None, "--tfrecords/--no-tfrecords",
        help="Read the training split from DATA_DIR/tfrecords (prepare --tfrecords N)."),
    limit: int | None = typer.Option(None, "--limit", help="At most N images per split."),
    fold: int | None = typer.Option(
        None, "--fold", help="Cross-validation: validate on this manifest fold (prepare --folds K)."),
    target: str | None = typer.Option(
        None, "--target",
        help="binary | diagnosis (softmax over the manifest's diagnoses; P(malignant) = sum "
             "of the malignant classes)."),
    min_class_images: int | None = typer.Option(
        None, "--min-class-images",
        help="With --target diagnosis: rarer classes merge into other_benign/other_malignant."),
    metadata: str | None = typer.Option(
        None, "--metadata",
        help="Fuse clinical metadata with the image: a subset of age,sex,site ('' = none)."),
    metadata_missing: str | None = typer.Option(
        None, "--metadata-missing", help="Unknown metadata as: flags | impute."),
    metadata_dropout: float | None = typer.Option(
        None, "--metadata-dropout",
        help="Training only: chance of hiding each known metadata field (0–1)."),
    color_constancy: bool | None = typer.Option(
        None, "--color-constancy/--no-color-constancy",
        help="Shades-of-Gray colour constancy (p = 6) inside the model."),
    settings: list[str] | None = typer.Option(
        None, "--set",
        help="KEY=VALUE for any config field, repeatable (e.g. --set dropout=0.3 --set "
             "augment.zoom=0); see docs/TRAINING.md. The options above win over --set."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    export_tflite: bool = typer.Option(
        True, "--export-tflite/--no-export-tflite",
        help="After training, write RUN_DIR/export/tflite (float32 TFLite + its parity with "
             "Keras on the test split) so predict/evaluate/serve --runtime auto use it."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train a classifier on a prepared data folder and write RUN_DIR."""
    from skinlesion.runspec import CONFIG_FILE
    from skinlesion.training.config import load_config, parse_assignments, recipe_overrides

    overrides: dict[str, Any] = {}
    try:
        if recipe:
            overrides.update(recipe_overrides(recipe))
        overrides.update(parse_assignments(settings or []))
        if resume and config is None and (out / CONFIG_FILE).is_file():
            config = out / CONFIG_FILE
        overrides.update({k: v for k, v in {
            "data_dir": str(data_dir), "out": str(out), "mode": mode, "backbone": backbone,
            "weights": weights, "input_size": input_size, "head_epochs": head_epochs,
            "finetune_epochs": finetune_epochs, "head_lr": head_lr, "finetune_lr": finetune_lr,
            "unfreeze_groups": unfreeze_groups, "batch_size": batch_size, "imbalance": imbalance,
            "loss": loss, "label_smoothing": label_smoothing, "monitor": monitor,
            "patience": patience, "target_sensitivity": target_sensitivity, "threshold": threshold,
            "seed": seed, "strategy": strategy, "precision": precision, "jit": jit, "limit": limit,
            "tfrecords": tfrecords, "fold": fold, "target": target, "min_class_images": min_class_images, "metadata": metadata,
            "metadata_missing": metadata_missing, "metadata_dropout": metadata_dropout,
            "color_constancy": color_constancy,
        }.items() if v is not None})
        cfg = load_config(config, overrides)
        if cfg.model.backbone:
            from skinlesion.models.registry import get_backbone

            get_backbone(cfg.model.backbone)
    except (ValueError, KeyError) as exc:
        fail(str(exc), code=2)
    result = _run_training(cfg, resume=resume, overwrite=overwrite, quiet=as_json)
    summary = _summary(result)
    if export_tflite:
        summary["tflite_export"] = _export_tflite(result.run_dir, quiet=as_json)
    if as_json:
        print_json(summary)
    else:
        err_console.print(f"[green]trained[/] {result.run_dir}  val AUC "
                          f"{summary['val_metrics'].get('roc_auc', float('nan')):.3f}, threshold "
                          f"{result.spec.threshold:.3f} ({result.spec.threshold_rule})")
        typer.echo(str(result.run_dir))


def _run_training(cfg: Any, *, resume: bool, overwrite: bool, quiet: bool) -> Any:
    from skinlesion.training.trainer import RunExistsError, TrainingDivergedError, train

    def say(msg: str) -> None:
        err_console.print(f"[dim]·[/] {msg}", highlight=False)

    try:
        # Keras prints its progress bar on stdout; stdout is for machine output.
        with contextlib.redirect_stdout(sys.stderr):
            return train(cfg, resume=resume, overwrite=overwrite, verbose=0 if quiet else 2,
                         progress=None if quiet else say)
    except RunExistsError as exc:
        fail(str(exc), code=3)
    except TrainingDivergedError as exc:
        fail(str(exc), code=4)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), code=2)


def _export_tflite(run_dir: Path, *, quiet: bool) -> dict[str, Any]:
    """Write the float32 TFLite runtime and its parity record; a failure only warns."""
    import time

    from rich.markup import escape

    from skinlesion.inference.runtimes import find_artefact
    from skinlesion.workflows.export import export_run

    def say(msg: str) -> None:
        if not quiet:
            err_console.print(f"[dim]· tflite export: {msg}[/]", highlight=False)

    t = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = export_run(run_dir, "tflite", progress=say)
    except Exception as exc:  # the run is trained and saved; the fast runtime is optional
        err_console.print(f"[yellow]warning:[/] no TFLite export ({escape(str(exc))}); predict, "
                          "evaluate and serve will use Keras", highlight=False)
        return {"written": False, "error": str(exc), "seconds": time.perf_counter() - t}
    seconds = time.perf_counter() - t
    art = find_artefact(run_dir, "tflite")
    verified = bool(art and art.verified)
    if not quiet:
        what = art.parity_summary() if art else "no parity recorded"
        tail = "runtime auto will use it" if verified else \
            f"runtime auto will NOT use it ({'; '.join(art.problems) if art else 'missing'})"
        err_console.print(f"[dim]·[/] wrote {escape(str(result.model_file))} in {seconds:.1f} s; "
                          f"{escape(what)}; {escape(tail)}", highlight=False)
    return {"written": True, "path": str(result.model_file), "seconds": seconds,
            "verified_for_auto": verified, "parity": result.parity}


def _summary(result: Any) -> dict[str, Any]:
    return {
        "run_dir": str(result.run_dir), "best_epoch": result.best_epoch,
        "best_monitor": result.best_monitor, "threshold": result.spec.threshold,
        "threshold_rule": result.spec.threshold_rule,
        "youden_threshold": result.spec.youden_threshold, "val_metrics": result.val_metrics,
        "timings_s": result.timings, "peak_memory_mb": round(result.peak_memory_mb, 1),
    }


def demo_command(
    out: Path = typer.Option(Path("skinlesion-demo"), "--out", "-o",
                             help="Folder for the demo's data, run and report."),
    overwrite: bool = typer.Option(True, "--overwrite/--keep",
                                   help="Replace an earlier demo in OUT."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Prepare → train → evaluate on the bundled sample of 200 real ISIC images; print the report path."""
    from skinlesion.workflows.demo import run_demo

    def say(msg: str) -> None:
        if not as_json:
            err_console.print(f"[dim]·[/] {msg}", highlight=False)

    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run_demo(out, overwrite=overwrite, progress=say)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), code=2)
    if as_json:
        print_json(result)
    else:
        err_console.print(f"[green]demo finished[/] in {result['seconds']:.0f} s — test ROC AUC "
                          f"{result['test_roc_auc']:.3f} on {result['test_n']} images "
                          "(a tiny demo split: see the report's confidence interval)")
        err_console.print(f"report: {result['report']}")
        typer.echo(result["report"])
