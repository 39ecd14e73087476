"""Helpers shared by the CLI modules: consoles, errors, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True, soft_wrap=True)
"""Human messages and progress bars go to stderr; machine output to stdout.

``soft_wrap``: a long line is left for the terminal to wrap, never broken by rich at 80
columns when piped (a path cut in two cannot be copied)."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code``.

    The message is shown as text: control characters (a file name's ESC sequence) as
    ``\x1b`` escapes, rich markup (``[bold]``) literally.
    """
    from skinlesion.utils.safe_text import terminal_text

    err_console.print(f"[bold red]error:[/] {terminal_text(message)}", highlight=False)
    raise typer.Exit(code)


RUNTIME_HELP = ("Model runtime: auto (the fastest export whose parity with Keras is recorded "
                "in the run, else keras) | keras | tflite | onnx | tflite-int8 (only when asked; "
                "its measured parity is shown). See docs/DEPLOYMENT.md.")


def check_runtime(value: str) -> str:
    """Typer callback: ``value`` must be ``auto`` or a runtime name."""
    from skinlesion.inference.runtimes import RUNTIME_CHOICES

    if value not in RUNTIME_CHOICES:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    return value


def load_predictor(run_dir: Any, runtime: str, *, quiet: bool = False) -> Any:
    """``Predictor.from_run`` with the runtime's one-line note on stderr; exit 2 on a bad run."""
    from skinlesion.inference.predictor import Predictor
    from skinlesion.runspec import RunError

    try:
        predictor = Predictor.from_run(run_dir, runtime=runtime)
    except RunError as exc:
        fail(str(exc), code=2)
    if predictor.runtime_note and not quiet:
        err_console.print(f"[dim]{escape(predictor.runtime_note)}[/]", highlight=False)
    return predictor


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
