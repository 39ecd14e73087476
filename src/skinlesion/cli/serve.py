"""``skinlesion serve``: the HTTP API and web page for one run (FastAPI + uvicorn)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from skinlesion import INTENDED_USE
from skinlesion.cli._common import RUNTIME_HELP, check_runtime, err_console, fail
from skinlesion.utils.safe_text import terminal_text

if TYPE_CHECKING:
    from skinlesion.inference.predictor import Predictor

# The service stack (FastAPI, uvicorn, the Predictor and its runtimes) is imported inside
# the functions that run it: cli/main.py imports every command module to build --help.

OPTIONS_ENV = "SKINLESION_SERVE_OPTIONS"
"""How ``--workers N`` hands the app's options to uvicorn's worker processes (JSON)."""


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
    client_timeout: float = typer.Option(
        15.0, "--client-timeout", min=0.1,
        help="Seconds a client may take to send its request headers, or pause while sending "
             "a body, before it is disconnected with 408 (slow-client guard)."),
    runtime: str = typer.Option("auto", "--runtime", callback=check_runtime, help=RUNTIME_HELP),
    max_batch: int = typer.Option(8, "--max-batch", min=1,
                                  help="Concurrent requests predicted in one model call, at most."),
    max_wait_ms: float = typer.Option(
        2.0, "--max-wait-ms", min=0.0,
        help="How long an idle server holds a request to batch it with others (ms)."),
    max_pending: int = typer.Option(
        64, "--max-pending", min=1,
        help="Requests admitted at once (decoding, queued, predicting); more get 503 with "
             "Retry-After."),
    workers: int = typer.Option(
        1, "--workers", min=1,
        help="Server processes, each with its own copy of the model (memory: see "
             "docs/DEPLOYMENT.md). On a small CPU one process that batches is faster."),
    body_deadline: float = typer.Option(
        60.0, "--body-deadline", min=1.0,
        help="Seconds a client may take to send a whole request body (408 beyond)."),
    min_body_rate: float = typer.Option(
        1024.0, "--min-body-rate", min=0.0,
        help="Slowest accepted average upload rate in bytes/s, after 5 s (408 below; 0: off)."),
    max_connections: int = typer.Option(
        256, "--max-connections", min=2,
        help="Open connections uvicorn accepts before answering 503 (limit_concurrency); "
             "requests in flight above half of it get a JSON 503 with Retry-After."),
    api_key_file: Path | None = typer.Option(
        None, "--api-key-file", exists=True, dir_okay=False,
        help="Require this API key (first line of the file) as 'Authorization: Bearer KEY' or "
             "'X-API-Key: KEY'. Also read from $SKINLESION_API_KEY. Required unless --host is "
             "loopback."),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host",
        help="Host header value accepted (repeatable; '*.example.org' allowed). Default: the "
             "loopback names and --host. Required when --host is a wildcard (0.0.0.0, ::)."),
    allowed_origin: list[str] = typer.Option(
        [], "--allowed-origin",
        help="Another web origin (https://app.example.org) whose pages may POST here "
             "(repeatable); other cross-origin POSTs get 403."),
    rate_limit: float | None = typer.Option(
        None, "--rate-limit", min=0.0,
        help="POST /v1/predict requests per minute per client address (429 beyond; 0: off). "
             "Default: off on loopback, 60 otherwise."),
    admin_model_card: bool = typer.Option(
        False, "--admin-model-card",
        help="GET /v1/model shows the whole spec: library versions, git commit, data "
             "fingerprint, validation metrics (default: only what a client needs)."),
) -> None:
    """Serve POST /v1/predict, GET /v1/health, GET /v1/model and a web page at / .

    The model loads once at start-up. OpenAPI documentation is at /docs. Research and education only: not a diagnostic device.
    """
    predictor: Predictor | None = _load_checked(run_dir, runtime)
    options: dict[str, Any] = {
        "max_upload_mb": max_upload_mb, "max_pixels": max_pixels,
        "read_timeout_s": client_timeout, "runtime": runtime, "max_batch": max_batch,
        "max_wait_ms": max_wait_ms, "max_pending": max_pending,
        "body_deadline_s": body_deadline, "min_rate_bps": min_body_rate or None,
        "max_requests": max(1, max_connections // 2), "admin_model_card": admin_model_card,
        **_exposure_options(host, api_key_file, allowed_host, allowed_origin, rate_limit)}
    if workers > 1:
        predictor = None  # worker processes load their own copies: this one was only the check
    _serve(predictor, run_dir, options, workers=workers, host=host, port=port,
           log_level=log_level, max_connections=max_connections)


def _load_checked(run_dir: Path, runtime: str) -> Predictor:
    """Load the run's model, or exit with status 2 and one line saying why."""
    from skinlesion.inference.predictor import Predictor
    from skinlesion.inference.runtimes import RuntimeUnavailable, select_runtime
    from skinlesion.runspec import RunError, require_run

    try:
        require_run(run_dir)
        choice = select_runtime(run_dir, runtime)
        # Load before uvicorn starts: a model that cannot load is a clear error and exit
        # status 2 here, not a start-up traceback from inside the server (worker processes
        # load their own copy; this one is only the check).
        predictor = Predictor.from_run(run_dir, runtime=runtime)
    except (RunError, RuntimeUnavailable) as exc:
        fail(str(exc), code=2)
    if choice.note:
        err_console.print(f"[dim]{terminal_text(choice.note)}[/]", highlight=False)
    return predictor


def _exposure_options(host: str, api_key_file: Path | None, allowed_host: list[str],
                      allowed_origin: list[str], rate_limit: float | None) -> dict[str, Any]:
    """``create_app``'s API key, allowed hosts and origins and rate limit for binding ``host``.

    Exits with status 2 when a non-loopback ``host`` has no API key, or a wildcard one no
    ``--allowed-host``.
    """
    from skinlesion.service.security import LOOPBACK_HOSTS, is_loopback, read_api_key

    try:
        api_key = read_api_key(str(api_key_file) if api_key_file else None,
                               os.environ.get("SKINLESION_API_KEY"))
    except ValueError as exc:
        fail(str(exc), code=2)
    loopback = is_loopback(host)
    if not loopback and not api_key:
        fail(f"binding {host} exposes the service beyond this machine: give an API key "
             "(--api-key-file FILE or $SKINLESION_API_KEY), and serve it behind a TLS proxy",
             code=2)
    wildcard = host in ("0.0.0.0", "::", "")
    if wildcard and not allowed_host:
        fail(f"binding {host}: name the host names clients use with --allowed-host (the Host "
             "header check stops DNS rebinding)", code=2)
    rate = rate_limit if rate_limit is not None else (None if loopback else 60.0)
    return {"api_key": api_key, "allowed_hosts": list(allowed_host) or [*LOOPBACK_HOSTS, host],
            "allowed_origins": list(allowed_origin), "rate_per_minute": rate or None}


def _announce(run_dir: Path, host: str, port: int) -> None:
    """Say where the service listens (and warn when that is beyond this machine)."""
    from skinlesion.service.security import is_loopback

    if not is_loopback(host):
        err_console.print(f"[yellow]warning:[/] binding {host}: the service speaks plain HTTP; "
                          "put a TLS reverse proxy in front of it.", highlight=False)
    err_console.print(f"serving {run_dir} on http://{host}:{port}/  (API docs: /docs)",
                      highlight=False)
    err_console.print(f"[dim]{INTENDED_USE}[/]", highlight=False)


def _serve(predictor: Predictor | None, run_dir: Path, options: dict[str, Any], *,
           workers: int, host: str, port: int, log_level: str, max_connections: int) -> None:
    """Say where the service listens, then run uvicorn: this process serving ``predictor``,
    or (``predictor`` None) ``workers`` processes that each load ``run_dir`` themselves."""
    import uvicorn

    from skinlesion.service.app import create_app

    _announce(run_dir, host, port)
    server: dict[str, Any] = {"host": host, "port": port, "log_level": log_level,
                              "limit_concurrency": max_connections}
    if predictor is None:
        # Worker processes import the app by name: hand them the options through the
        # environment they inherit.
        os.environ[OPTIONS_ENV] = json.dumps({"run_dir": os.fspath(run_dir), **options})
        uvicorn.run("skinlesion.cli.serve:app_from_env", factory=True, workers=workers,
                    http="skinlesion.cli.serve:EnvHeaderDeadlineH11", **server)
        return
    uvicorn.run(create_app(predictor, **options),
                http=header_deadline_protocol(options["read_timeout_s"]), **server)


def app_from_env() -> Any:
    """The app of one ``--workers`` process, built from ``$SKINLESION_SERVE_OPTIONS``."""
    from skinlesion.service.app import create_app

    options = json.loads(os.environ[OPTIONS_ENV])
    return create_app(options.pop("run_dir"), **options)


def __getattr__(name: str) -> Any:
    # ``EnvHeaderDeadlineH11``: the header-deadline protocol for worker processes (built on
    # first access so importing this module does not import uvicorn).
    if name == "EnvHeaderDeadlineH11":
        options = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
        return header_deadline_protocol(float(options.get("read_timeout_s") or 15.0))
    raise AttributeError(name)


def header_deadline_protocol(seconds: float) -> Any:
    """uvicorn's h11 protocol with a deadline for every request's headers.

    uvicorn has none: a client that connects and sends nothing, or half a request line,
    holds its connection (and a file descriptor) forever — the "slowloris" attack. Here
    the clock starts when the connection opens, or when the first byte of a later request
    on a kept-alive connection arrives, and stops once the request head is complete; past
    ``seconds`` the client gets ``408`` and the connection is closed. (Stalls inside a
    body are the app's ``read_timeout_s``.)
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = b'{"detail": "request headers not received in time"}'
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))

    class HeaderDeadlineH11(H11Protocol):  # type: ignore[misc]
        _deadline: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state is h11.IDLE:
                self._arm()  # a new request starts on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the head is in: the app's body timeout takes over

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return HeaderDeadlineH11
