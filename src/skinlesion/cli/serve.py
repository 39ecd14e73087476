"""``skinlesion serve``: the HTTP API and web page for one run (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from skinlesion.cli._common import err_console, fail


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve_command)


def serve_command(
    run_dir: Path = typer.Argument(..., help="A finished training run (model.keras + model_spec.json).",
                                   show_default=False),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Interface to bind. The default serves this machine only; "
                                  "use 0.0.0.0 deliberately, behind a reverse proxy with TLS."),
    port: int = typer.Option(8000, "--port", "-p", min=0, max=65535, help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.1,
                                        help="Largest accepted upload (413 above it)."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", min=1,
                                   help="Largest accepted image in pixels (422 above it)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve POST /v1/predict, GET /v1/health, GET /v1/model and a web page at / .

    The model loads once at start-up. OpenAPI documentation is at /docs. Research and education only: not a diagnostic device.
    """
    import uvicorn

    from skinlesion import INTENDED_USE
    from skinlesion.runspec import RunError, require_run
    from skinlesion.service.app import create_app

    try:
        require_run(run_dir)
    except RunError as exc:
        fail(str(exc), code=2)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding {host}: the service has no authentication "
                          "or TLS; expose it only behind a reverse proxy you control.",
                          highlight=False)
    err_console.print(f"serving {run_dir} on http://{host}:{port}/  (API docs: /docs)",
                      highlight=False)
    err_console.print(f"[dim]{INTENDED_USE}[/]", highlight=False)
    app = create_app(run_dir, max_upload_mb=max_upload_mb, max_pixels=max_pixels)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
