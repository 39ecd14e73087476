"""Helpers shared by the CLI modules: consoles, errors, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

err_console = Console(stderr=True)
"""Human messages and progress bars go to stderr; machine output to stdout."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code``.

    The message is shown as text: control characters (a file name's ESC sequence) as
    ``\x1b`` escapes, rich markup (``[bold]``) literally.
    """
    from skinlesion.utils.safe_text import terminal_text

    err_console.print(f"[bold red]error:[/] {terminal_text(message)}", highlight=False)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
