"""``skinlesion download``: fetch a known dataset, or an ISIC Archive selection, ready for
``skinlesion prepare``.

    skinlesion download --list [--json]
    skinlesion download NAME --out DIR
    skinlesion download archive --search 'diagnosis_1:"Malignant"' --collections 70 \\
        --limit 500 --out DIR
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from skinlesion.cli._common import err_console, print_json
from skinlesion.cli._progress import RichProgress

if TYPE_CHECKING:
    from skinlesion.download.registry import DatasetRegistry

ARCHIVE = "archive"
"""The NAME that selects an ISIC Archive download through isic-cli."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr and exit; URLs are not wrapped and brackets not markup."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _spec_json(spec: Any) -> dict[str, Any]:
    from dataclasses import asdict

    files = [asdict(f) for f in spec.files]
    if spec.dataverse is not None:
        files += [{**asdict(f), "dataverse": spec.dataverse.landing_page}
                  for f in spec.dataverse.files]
    return {"name": spec.name, "title": spec.title, "files": files,
            "total_size": spec.approx_total_size, "licence": spec.licence,
            "licence_url": spec.licence_url, "citation": spec.citation,
            "source_page": spec.source_page, "prepare_format": spec.prepare_format,
            "notes": spec.notes}


def _show_list(registry: DatasetRegistry, as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from skinlesion.download.registry import format_size

    if as_json:
        print_json([_spec_json(spec) for spec in registry])
        return
    table = Table(title="Datasets for `skinlesion download NAME --out DIR`",
                  caption="Details (URLs, citations, prepare formats): --list --json, "
                          "docs/DOWNLOAD.md")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("files", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("licence", no_wrap=True)
    for spec in registry:
        size = (format_size(spec.approx_total_size) if spec.approx_total_size is not None
                else "from API")
        table.add_row(spec.name, "\n".join(spec.file_names), size, spec.licence)
    table.add_row(ARCHIVE, "ISIC Archive selection via isic-cli: images + metadata.csv "
                  "(--search, --collections, --limit)", "per query", "per image")
    Console().print(table)


def _child_stdout() -> Any:
    # isic-cli's messages are for humans: send them to our stderr so that `--json` on
    # stdout stays parseable. Test runners replace sys.stderr with objects lacking a
    # file descriptor; the child then inherits ours.
    try:
        sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return None
    return sys.stderr


def _download_archive(out: Path, search: str | None, collections: str | None, limit: int,
                      force: bool, as_json: bool) -> None:
    from skinlesion.download.archive import ArchiveQuery, download_archive, parse_collections
    from skinlesion.download.errors import DownloadError

    try:
        query = ArchiveQuery(search=search or "", collections=parse_collections(collections),
                             limit=limit)
    except ValueError as exc:
        fail(str(exc))
    if not query.search and not query.collections and query.limit == 0:
        err_console.print("[yellow]No --search, --collections or --limit: this asks isic-cli "
                          "for the whole ISIC Archive.[/]")
    try:
        result = download_archive(query, out, stdout=_child_stdout(), force=force)
    except DownloadError as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_json())
    state = "already complete" if result.already_complete else "complete"
    err_console.print(
        f"ISIC Archive selection {state} in {result.root} "
        f"({result.marker.get('images')} images, metadata.csv; licences: "
        f"{', '.join(result.marker.get('licences') or []) or 'see metadata.csv'}).\n"
        f"Next: skinlesion prepare {result.root} --format archive --out DATA_DIR",
        highlight=False)


def download(
    name: str | None = typer.Argument(
        None, metavar="NAME",
        help=f"Dataset to download (see --list), or '{ARCHIVE}' for an ISIC Archive selection."),
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help=f"Parent folder: the dataset goes to OUT/NAME/ (for '{ARCHIVE}': OUT itself)."),
    list_: bool = typer.Option(False, "--list", help="List the known datasets and exit."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    force: bool = typer.Option(False, "--force",
                               help="Ignore the completion marker and check/finish again."),
    delete_archives: bool = typer.Option(False, "--delete-archives",
                                         help="Delete the zips once they are extracted."),
    retries: int = typer.Option(6, "--retries", min=1,
                                help="Tries per file after a dropped connection or a 5xx."),
    no_etag_check: bool = typer.Option(False, "--no-etag-check",
                                       help="Do not compare downloads with S3 MD5 ETags."),
    search: str | None = typer.Option(None, "--search", "-s",
                                      help=f"{ARCHIVE}: isic-cli search, e.g. "
                                           "'diagnosis_1:\"Malignant\"'."),
    collections: str | None = typer.Option(None, "--collections", "-c",
                                           help=f"{ARCHIVE}: comma-separated collection ids."),
    limit: int = typer.Option(0, "--limit", "-l", min=0,
                              help=f"{ARCHIVE}: at most N images (0: all)."),
) -> None:
    """Download a dataset, resumable and verified, ready for `skinlesion prepare`."""
    from skinlesion.download.catalog import default_registry
    from skinlesion.download.dataset import download_dataset
    from skinlesion.download.errors import DownloadError
    from skinlesion.download.registry import UnknownDatasetError, format_size
    from skinlesion.download.transfer import RetryPolicy

    registry = default_registry()
    if list_:
        _show_list(registry, as_json)
        return
    if name is None:
        fail(f"give a dataset NAME ({', '.join(registry.names())}, {ARCHIVE}) or --list")
    if out is None:
        fail("--out DIR is required: the folder to download into")
    if name.strip().lower() == ARCHIVE:
        _download_archive(out, search, collections, limit, force, as_json)
        return
    if search or collections or limit:
        fail(f"--search, --collections and --limit apply to `download {ARCHIVE}` only")

    try:
        spec = registry.get(name)
    except UnknownDatasetError as exc:
        fail(f"{exc} (or '{ARCHIVE}')")
    err_console.print(f"{spec.title}\nlicence: {spec.licence} ({spec.licence_url})\n"
                      f"cite: {spec.citation}", highlight=False)
    try:
        with RichProgress(keep_bars=True) as progress:
            result = download_dataset(spec.name, out, registry=registry,
                                      retry=RetryPolicy(attempts=retries),
                                      progress=progress, force=force,
                                      delete_archives=delete_archives,
                                      verify_etag=not no_etag_check)
    except DownloadError as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_json())
    files = result.marker.get("files", [])
    total = sum(int(f.get("size", 0)) for f in files)
    state = "already complete, nothing to do" if result.already_complete else "complete"
    err_console.print(
        f"{spec.name} {state}: {result.root} ({len(files)} files, {format_size(total)}).\n"
        f"Next: skinlesion prepare {result.root} --format {spec.prepare_format} "
        "--out DATA_DIR", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``download`` command to ``app``."""
    app.command("download")(download)
