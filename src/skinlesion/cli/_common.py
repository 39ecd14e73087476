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
    """Print ``message`` on stderr after a red ``error:`` and exit with ``code``.

    The message is escaped: text in square brackets (``'skinlesion[export]'``, a list of
    file names) is shown as written, never read as rich markup.
    """
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
