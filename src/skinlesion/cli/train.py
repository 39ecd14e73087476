"""``skinlesion train`` and ``skinlesion demo``."""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from skinlesion.cli._common import err_console, fail, print_json
from skinlesion.cli._progress import RichProgress
from skinlesion.training.config import FIELDS, resolve_key


def register(app: typer.Typer) -> None:
    """Add the training commands to ``app``."""
    app.command("train")(train_command)
    app.command("demo")(demo_command)


@dataclass(frozen=True)
class ConfigOption:
    """A dedicated ``train`` option for a config field.

    Attributes:
        key: The config field (flat name or dotted key, see
            ``skinlesion.training.config.FIELDS``): the option is ``--<flat name with
            dashes>`` (``--no-...`` too for a bool) and its type is the field's.
        help: Help text.
        short: A short alias (``-b``).
    """

    key: str
    help: str | None = None
    short: str | None = None


# The dedicated config options of `train`, in --help order: one line each. Every field,
# these included, can also be set with --set KEY=VALUE.
CONFIG_OPTIONS: tuple[ConfigOption, ...] = (
    ConfigOption("mode", "frozen | finetune."),
    ConfigOption("backbone", "Registry name (see `skinlesion backbones`).", "-b"),
    ConfigOption("weights", "imagenet | none | PATH to a weights file."),
    ConfigOption("input_size", "Model input size in px."),
    ConfigOption("head_epochs"),
    ConfigOption("finetune_epochs"),
    ConfigOption("head_lr"),
    ConfigOption("finetune_lr"),
    ConfigOption("unfreeze_groups", "Backbone groups unfrozen from the top (-1 all)."),
    ConfigOption("batch_size", "Per-replica batch size."),
    ConfigOption("imbalance", "class_weight | balanced_sampling | none."),
    ConfigOption("loss", "bce | focal."),
    ConfigOption("label_smoothing"),
    ConfigOption("monitor", "Best-checkpoint metric (val_auc)."),
    ConfigOption("patience", "Early stopping (0 = off)."),
    ConfigOption("target_sensitivity", "Validation sensitivity the threshold must reach (0.90)."),
    ConfigOption("threshold", "Fixed decision threshold."),
    ConfigOption("seed"),
    ConfigOption("strategy", "auto | none | mirrored | multiworker."),
    ConfigOption("precision", "float32 | mixed_float16 | mixed_bfloat16."),
    ConfigOption("jit", "XLA compilation."),
    ConfigOption("tfrecords",
                 "Read the training split from DATA_DIR/tfrecords (prepare --tfrecords N)."),
    ConfigOption("limit", "At most N images per split."),
    ConfigOption("fold", "Cross-validation: validate on this manifest fold (prepare --folds K)."),
    ConfigOption("target", "binary | diagnosis (softmax over the manifest's diagnoses; "
                           "P(malignant) = sum of the malignant classes)."),
    ConfigOption("min_class_images",
                 "With --target diagnosis: rarer classes merge into other_benign/other_malignant."),
    ConfigOption("metadata",
                 "Fuse clinical metadata with the image: a subset of age,sex,site ('' = none)."),
    ConfigOption("metadata_missing", "Unknown metadata as: flags | impute."),
    ConfigOption("metadata_dropout",
                 "Training only: chance of hiding each known metadata field (0–1)."),
    ConfigOption("color_constancy", "Shades-of-Gray colour constancy (p = 6) inside the model."),
)


def _with_config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` one Typer option per :data:`CONFIG_OPTIONS` entry, after ``recipe``.

    Typer reads the function's signature; the generated options arrive in ``**options``
    under their flat config names (None = not given).
    """
    sig = inspect.signature(command)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    generated = []
    for opt in CONFIG_OPTIONS:
        field = FIELDS[resolve_key(opt.key)]
        name = "--" + field.flat.replace("_", "-")
        decls = [f"{name}/--no-{name[2:]}" if field.kind is bool else name]
        decls += [opt.short] if opt.short else []
        generated.append(inspect.Parameter(
            field.flat, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=field.kind | None,
            default=typer.Option(None, *decls, help=opt.help)))
    at = [p.name for p in params].index("recipe") + 1
    command.__dict__["__signature__"] = sig.replace(parameters=[*params[:at], *generated,
                                                                *params[at:]])
    return command


@_with_config_options
def train_command(
    data_dir: Path = typer.Argument(..., help="Prepared data folder (holds manifest.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    config: Path | None = typer.Option(None, "--config", help="YAML config; flags override it."),
    recipe: str | None = typer.Option(
        None, "--recipe",
        help="Named recipe: finetune (default), frozen, tutorial1, tutorial2."),
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
    **options: Any,
) -> None:
    """Train a classifier on a prepared data folder and write RUN_DIR."""
    from skinlesion.runspec import CONFIG_FILE
    from skinlesion.training.config import (
        load_config,
        merge_overrides,
        parse_assignments,
        recipe_overrides,
    )

    try:
        if resume and config is None and (out / CONFIG_FILE).is_file():
            config = out / CONFIG_FILE
        # defaults < --config < --recipe < --set < the dedicated options
        cfg = load_config(config, merge_overrides(
            recipe_overrides(recipe) if recipe else {}, parse_assignments(settings or []),
            {**options, "data_dir": str(data_dir), "out": str(out)}))
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
    from skinlesion.training.errors import RunExistsError, TrainingDivergedError
    from skinlesion.training.trainer import train

    try:
        # Keras prints its progress bar on stdout; stdout is for machine output.
        with contextlib.redirect_stdout(sys.stderr), RichProgress(quiet=quiet) as progress:
            return train(cfg, resume=resume, overwrite=overwrite, verbose=0 if quiet else 2,
                         progress=progress)
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

    t = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr), \
                RichProgress(quiet=quiet, label="tflite export") as progress:
            result = export_run(run_dir, "tflite", progress=progress)
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

    try:
        with contextlib.redirect_stdout(sys.stderr), RichProgress(quiet=as_json) as progress:
            result = run_demo(out, overwrite=overwrite, progress=progress)
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
