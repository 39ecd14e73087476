"""``skinlesion`` console entry point.

Each command group lives in its own module under ``skinlesion.cli`` and exposes
``register(app)``. Command modules import TensorFlow only inside the command
functions, so ``skinlesion --help`` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import typer

from skinlesion import INTENDED_USE, __version__

# Order = order in `skinlesion --help`. Each name is a module skinlesion.cli.<name>.
_COMMAND_MODULES: tuple[str, ...] = (
    "data",
    "download",
    "train",
    "ensemble",
    "evaluate",
    "predict",
    "backbones",
    "serve",
    "export",
)

app = typer.Typer(
    name="skinlesion",
    help=f"Benign vs malignant skin-lesion classification by transfer learning.\n\n{INTENDED_USE}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"skinlesion {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Configure logging (the library itself never prints)."""
    from skinlesion.utils.quiet import quiet_tensorflow, show_tensorflow_logs

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, handlers=[_log_handler()], force=True)
    # TensorFlow's C++/absl start-up lines (cuInit, oneDNN, absl::InitializeLog) look like
    # failures and are not: silent by default, shown with -v.
    if verbose:
        show_tensorflow_logs()
    else:
        quiet_tensorflow()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _log_handler() -> logging.Handler:
    # Rich's handler on a terminal; plain lines when piped, so a log file or CI output is not
    # wrapped at 80 columns in the middle of a path.
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        from skinlesion.cli._common import err_console

        return RichHandler(show_path=False, console=err_console)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


for _name in _COMMAND_MODULES:
    importlib.import_module(f"skinlesion.cli.{_name}").register(app)


def _tidy_help(command: Any) -> Any:
    """Help text a newcomer reads without a legend.

    Plain on/off flags get no ``<bool>`` type column, and every argument is shown by an
    upper-case name (``{DATA_DIR}`` like ``{SOURCE}``, not ``{data_dir}``).
    """
    # Duck-typed: Typer builds on its own copy of click, so isinstance checks against click's
    # classes would not match.
    for param in command.params:
        kind = getattr(param, "param_type_name", "")
        if kind == "option" and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif kind == "argument" and param.metavar is None:
            param.metavar = (param.name or "").upper()
    make_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)
    return command


def cli() -> Any:
    """The click command behind ``skinlesion``, with tidied help."""
    return _tidy_help(typer.main.get_command(app))


def main() -> None:
    """Run the CLI."""
    cli()()


if __name__ == "__main__":
    main()
