"""``skinlesion`` console entry point.

Each command group lives in its own module under ``skinlesion.cli`` and exposes
``register(app)``. Command modules import TensorFlow only inside the command
functions, so ``skinlesion --help`` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import os

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
    from rich.logging import RichHandler

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(
        show_path=False, console=_stderr_console())], force=True)
    # TensorFlow's C++ logs drown the useful lines; keep them unless -vv.
    if verbose < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _stderr_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True)


for _name in _COMMAND_MODULES:
    importlib.import_module(f"skinlesion.cli.{_name}").register(app)


def main() -> None:
    """Run the CLI."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()


if __name__ == "__main__":
    main()
